#!/usr/bin/env bash
# The chat page's weight (HTML + JS + CSS, gzip) and time to interactive in headless Chromium,
# against a release sage-local with auth on (BENCHMARKS.md). Needs Debian's chromium and
# `npm ci` in tests/browser (tests/run.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p sage-local
DIR=$(mktemp -d)
PASSWORD=Bench-admin-pass-1
./target/release/sage-local --port 18700 --db_path "$DIR/db" --workspace "$DIR/ws" \
  --no_auth false --jwt_key 0123456789abcdef0123456789abcdef --admin_password "$PASSWORD" \
  >"$DIR/log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 1 60); do curl -sf localhost:18700/api/health >/dev/null && break; sleep 0.5; done
(cd tests/browser && BASE_URL=http://127.0.0.1:18700 SAGE_PASSWORD="$PASSWORD" node bench.mjs)
