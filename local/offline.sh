#!/usr/bin/env bash
# Try Sage offline: the scripted model (sage-mock-llm) on :8090 and the shim on :8080 using it.
# Extra arguments go to sage-local. TOKEN_DELAY_MS sets the model's pace (default 50 ms).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sage-mock-llm -p sage-local
./target/release/sage-mock-llm --port 8090 --token-delay-ms "${TOKEN_DELAY_MS:-50}" &
MOCK_PID=$!
trap 'kill $MOCK_PID 2>/dev/null' EXIT
./target/release/sage-local \
  --default_llm_api_key offline \
  --default_llm_api_base_url http://127.0.0.1:8090/v1 \
  --default_llm_model_name mock-model \
  "$@"
