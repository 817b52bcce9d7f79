#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts what the tests use when it is
# missing, then runs every test. Usage: bash tests/run.sh [extra cargo nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
log() { printf '\n==> %s\n' "$*" >&2; }

python_env() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c 'import mcp, sys; from mcp.server.fastmcp import FastMCP' 2>/dev/null \
     || ! [ -x "$VENV/bin/cargo-lambda" ]; then
    log "installing the Python MCP SDK (mcp<2) and cargo-lambda into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp>=1.10,<2" "cargo-lambda>=1.8"
  fi
  export SAGE_TEST_PYTHON=$VENV/bin/python
  export PATH=$VENV/bin:$PATH
}

# ---- deploy_tools (issue 5): the SAM CLI and cfn-lint for tests/template.rs ------------------
deploy_tools() {
  if ! [ -x "$VENV/bin/sam" ] || ! [ -x "$VENV/bin/cfn-lint" ]; then
    log "installing aws-sam-cli and cfn-lint into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli>=1.170" "cfn-lint>=1.58"
  fi
  export SAM_CLI_TELEMETRY=0
}
# ---- end deploy_tools ----------------------------------------------------------------------

node_peers() {
  if ! command -v node >/dev/null 2>&1; then
    log "installing Node.js (for npm @modelcontextprotocol/server-everything)"
    apt-get update -qq && apt-get install -y -qq nodejs npm
  fi
  if [ ! -f tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js ]; then
    log "installing the npm MCP peer (server-everything)"
    (cd tests/peers && npm ci --silent --no-audit --no-fund)
  fi
}

rust_tools() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

python_env
deploy_tools
node_peers
rust_tools

log "building every binary (the tests start sage-local and sage-stream as processes)"
cargo build --workspace --bins

log "running the test suite"
export CI=${CI:-false}
cargo nextest run --workspace --no-fail-fast "$@"
