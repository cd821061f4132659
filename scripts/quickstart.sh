#!/usr/bin/env bash
# Quick start: Switchyard (examples/quickstart.toml) in front of a FAKE
# upstream that speaks the OpenAI and Anthropic wire formats and answers
# deterministically, plus a real local embedding model (all-MiniLM-L6-v2 on
# the CPU). No GPU and no API keys needed. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
./models/fetch.sh   # the local embedding model, verified by hash (skipped when present)
cargo build --release -p switchyard-gateway
bin=target/release/switchyard
# Keys the fake accepts; real providers read theirs the same way.
export FAKE_OPENAI_API_KEY=sk-fake-openai FAKE_ANTHROPIC_API_KEY=sk-ant-fake
"$bin" fake-upstream --listen 127.0.0.1:9901 --token-delay-ms 30 &
fake=$!
trap 'kill "$fake" 2>/dev/null || true' EXIT INT TERM
echo "FAKE upstream on 127.0.0.1:9901 (pid $fake); Switchyard on http://127.0.0.1:8080/v1" >&2
"$bin" serve --config examples/quickstart.toml
