#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit and end-to-end tests
# (real binary, fake upstreams), then the official `openai` Python SDK
# against the real binary. Needs .venv (see .ci/run, or:
# python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
./models/fetch.sh   # the embedding model the embedder tests load (verified by hash)
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo nextest run --workspace --locked --no-fail-fast
SWITCHYARD_BIN="$PWD/target/debug/switchyard" .venv/bin/python -m pytest tests/python -q
