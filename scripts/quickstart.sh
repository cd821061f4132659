#!/usr/bin/env bash
# Quick start: Switchyard (examples/quickstart.toml) in front of
# - a SIMULATED GPU fleet (`switchyard sim`): two H100s serving llama-3.1-8b,
#   an A100 and an L4 serving qwen2.5-7b, streaming at simulated speed (no
#   GPU is used; every name, label and log line says "sim"/"SIMULATED");
# - a FAKE external provider that speaks the OpenAI and Anthropic wire
#   formats and answers deterministically (where work overflows);
# - a real local embedding model (all-MiniLM-L6-v2 on the CPU).
# No GPU and no API keys needed. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./models/fetch.sh   # the local embedding model, verified by hash (skipped when present)
cargo build --release -p switchyard-gateway
bin=target/release/switchyard
# Keys the fake accepts; real providers read theirs the same way.
export FAKE_OPENAI_API_KEY=sk-fake-openai FAKE_ANTHROPIC_API_KEY=sk-ant-fake
"$bin" fake-upstream --listen 127.0.0.1:9901 --token-delay-ms 30 &
fake=$!
"$bin" sim --listen 127.0.0.1:9910 \
  --engine h100:llama-3.1-8b --engine h100:llama-3.1-8b \
  --engine a100:qwen2.5-7b --engine l4:qwen2.5-7b &
sim=$!
trap 'kill "$fake" "$sim" 2>/dev/null || true' EXIT INT TERM
echo "FAKE upstream on 127.0.0.1:9901 (pid $fake); SIMULATED GPUs on 127.0.0.1:9910-9913 (pid $sim)" >&2
echo "Switchyard on http://127.0.0.1:8080/v1; fleet at http://127.0.0.1:8080/api/v1/fleet" >&2
"$bin" serve --config examples/quickstart.toml
