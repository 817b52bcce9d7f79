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
  # tests/openapi.rs: the document's validator, and the generated-request fuzzer.
  if ! "$VENV/bin/python" -c 'import openapi_spec_validator' 2>/dev/null \
     || ! [ -x "$VENV/bin/schemathesis" ]; then
    log "installing openapi-spec-validator and schemathesis into $VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "openapi-spec-validator>=0.7,<0.10" "schemathesis>=4.3,<5"
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

# The chat page (tests/browser.rs): Debian's Chromium, Playwright, and a fresh build of local/web
# to compare with the committed local/web/dist that sage-local embeds.
web_page() {
  if ! [ -x /usr/bin/chromium ]; then
    log "installing Chromium (the page's browser tests)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  fi
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
  fi
  log "building local/web into target/web-dist"
  (cd local/web && npm ci --silent --no-audit --no-fund \
    && SAGE_WEB_OUT="$ROOT/target/web-dist" npm run build --silent >/dev/null)
}

code_sandbox() {
  if ! command -v bwrap >/dev/null 2>&1; then
    log "installing bubblewrap (the code tools' sandbox)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap
  fi
}

mariadb_server() {
  if mariadb -uroot -h127.0.0.1 -P3306 -e 'SELECT 1' >/dev/null 2>&1; then
    return
  fi
  if ! [ -x /usr/sbin/mariadbd ]; then
    log "installing MariaDB"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server
  fi
  log "starting MariaDB on 127.0.0.1:3306 (root, no password)"
  local datadir=$ROOT/.ci/mariadb
  if [ ! -d "$datadir/mysql" ]; then
    mkdir -p "$datadir"
    mariadb-install-db --user=root --datadir="$datadir" --auth-root-authentication-method=normal >/dev/null
  fi
  /usr/sbin/mariadbd --user=root --datadir="$datadir" --bind-address=127.0.0.1 --port=3306 \
    --socket="$datadir/mariadb.sock" --pid-file="$datadir/mariadb.pid" >"$datadir/server.log" 2>&1 &
  for _ in $(seq 1 60); do
    mariadb -uroot -h127.0.0.1 -P3306 -e 'SELECT 1' >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "MariaDB did not start; see $datadir/server.log" >&2
  exit 1
}

drop_test_databases() {
  mariadb -uroot -h127.0.0.1 -P3306 -N -e \
    "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'sage\\_test\\_%'" |
    while read -r db; do mariadb -uroot -h127.0.0.1 -P3306 -e "DROP DATABASE \`$db\`"; done
}

moto_server() {
  if ! [ -x "$VENV/bin/moto_server" ]; then
    log "installing moto (DynamoDB stand-in)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5.2.5"
  fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log "starting moto on 127.0.0.1:$port"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$ROOT/target/moto.log" 2>&1 &
  MOTO_PID=$!
  trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 60); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break
    sleep 0.5
  done
  export SAGE_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:$port
}

osmem_server() {
  if ! "$VENV/bin/python" -c 'import osmem_server' 2>/dev/null; then
    log "installing osmem-server (OpenSearch stand-in)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "osmem-server>=0.1.6"
  fi
  local port binary
  binary=$("$VENV/bin/python" -c 'import os, osmem_server; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log "starting osmem-server on 127.0.0.1:$port"
  "$binary" -addr "127.0.0.1:$port" -no-stdin-watch >"$ROOT/target/osmem.log" 2>&1 &
  OSMEM_PID=$!
  trap 'kill $MOTO_PID $OSMEM_PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 60); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break
    sleep 0.5
  done
  export SAGE_TEST_OPENSEARCH_URL=http://127.0.0.1:$port
}

# A fresh build and test run takes about 7 GiB under target/ in CI (the binaries and tests, and each
# function's own Lambda build); say so before the build fails halfway with ENOSPC.
disk_space() {
  local free_kb
  free_kb=$(df -Pk "$ROOT" | awk 'NR==2 {print $4}')
  log "free disk space under $ROOT: $((free_kb / 1024 / 1024)) GiB (a fresh run needs about 8 GiB)"
  if [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "warning: under 10 GiB free; the build may stop with 'No space left on device'" \
      "(cargo clean, or free space elsewhere, first)" >&2
  fi
}

rust_tools() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

disk_space
python_env
deploy_tools
node_peers
code_sandbox
rust_tools
mkdir -p target
web_page
mariadb_server
drop_test_databases
moto_server
osmem_server

# Binaries and tests in one build: the tests' dev-dependencies add features (tokio's test-util),
# and binaries built without them would be compiled, with all they use, a second time.
# A one-off build in CI gains nothing from incremental caches (about 1 GiB of them).
if [ "${CI:-false}" = true ]; then
  export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi
log "building every binary and test (the tests start sage-local and sage-stream as processes)"
cargo build --workspace --bins --tests

# One function per build: cargo unifies features across the packages of one build, and each
# function must link only the backends it names, so each must build on its own.
# The tests only need each function to build for Lambda's target with cargo-lambda, so they use
# the dev profile (0.5–2 min each here, the first the longest; the release profile's optimisation took 4-4.6 min each
# even without its LTO). BENCHMARKS.md measures the deployed sizes with the release profile;
# SAGE_TEST_FULL_RELEASE=1 builds that here.
if [ "${SAGE_TEST_FULL_RELEASE:-0}" = 1 ]; then
  log "cargo lambda build --release: each function's deployed bootstrap (tests/lambda_build.rs checks them)"
  lambda_profile=(--release)
else
  log "cargo lambda build: each function's bootstrap, dev profile (tests/lambda_build.rs checks them)"
  lambda_profile=()
fi
for function in sage-health sage-session sage-mcp-admin sage-stream sage-jobs sage-sandbox; do
  cargo lambda build "${lambda_profile[@]}" -p "$function"
done

log "running the test suite"
export CI=${CI:-false}
cargo nextest run --workspace --no-fail-fast "$@"
