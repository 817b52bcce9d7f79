#!/usr/bin/env bash
# Reruns every benchmark of BENCHMARKS.md on this machine and prints the results tables.
# Release builds; the scripted model (sage-mock-llm) stands in for the LLM. Raw JSON results
# land in target/bench/. Needs MariaDB on 127.0.0.1:3306 and moto (bash tests/run.sh sets both up).
# QUICK=1 runs a shorter version (fewer requests, 1,000 streams at most); SKIP_BUILD=1 uses the
# release binaries already built; SECTIONS picks some of "overhead requests throughput traces hold
# cold store", or the opt-in "instructions" (e.g. SECTIONS="throughput cold" bash local/bench.sh); BIN and OUT name other folders for the
# binaries and the results (to compare two builds side by side). PIN=1 pins the server to CPU 0
# and the model and the load generator to CPU 1 (taskset), so that the server's share of the
# machine is one core of its own. DB_TYPE=memory starts sage-local on the memory store instead
# of SQLite in the sections that load it (all but `instructions`, `cold` and `store`), to see
# what storing the events costs; WORDS sets the overhead section's answer length (40 words).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench}
BIN=${BIN:-$ROOT/target/release}
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.jsonl
printf '{"db_type": "%s", "words": %s}\n' "${DB_TYPE:-file}" "${WORDS:-40}" >"$OUT/setup.json"
QUICK=${QUICK:-0}
SECTIONS=${SECTIONS:-overhead requests throughput traces hold cold store}
section() { [[ " $SECTIONS " == *" $1 "* ]]; }
if [ "${PIN:-0}" = 1 ]; then
  ON_SERVER_CPU=(taskset -c 0); ON_OTHER_CPU=(taskset -c 1)
else
  ON_SERVER_CPU=(); ON_OTHER_CPU=()
fi
ulimit -n "$(ulimit -Hn)" || true

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p sage-local -p sage-mock-llm -p sage-load
  # One function per build, so that each links only the backends its Cargo.toml names.
  for function in sage-health sage-session sage-mcp-admin sage-stream; do
    cargo build --release -p "$function"
  done
fi

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
log() { printf '\n==> %s\n' "$*" >&2; }

# start_pair DELAY_MS: the scripted model and a fresh sage-local (SQLite store, or DB_TYPE's)
# using it.
start_pair() {
  MOCK_PORT=$(free_port); SHIM_PORT=$(free_port)
  DATA=$(mktemp -d)
  "${ON_OTHER_CPU[@]}" "$BIN/sage-mock-llm" --port "$MOCK_PORT" --token-delay-ms "$1" >/dev/null 2>&1 &
  MOCK_PID=$!; PIDS+=("$MOCK_PID")
  "${ON_SERVER_CPU[@]}" "$BIN/sage-local" --host 127.0.0.1 --port "$SHIM_PORT" --db_type "${DB_TYPE:-file}" --db_path "$DATA" \
    --workspace "$DATA/ws" --default_llm_api_key bench \
    --default_llm_api_base_url "http://127.0.0.1:$MOCK_PORT/v1" >"$OUT/shim.log" 2>&1 &
  SHIM_PID=$!; PIDS+=("$SHIM_PID")
  wait_port "$MOCK_PORT"; wait_port "$SHIM_PORT"
}
stop_pair() { kill "$MOCK_PID" "$SHIM_PID" 2>/dev/null || true; wait "$MOCK_PID" "$SHIM_PID" 2>/dev/null || true; }

# 1. Server overhead: the same client straight from the model, then through /api/stream.
if section overhead; then
#    Paced like a model (50 ms per token, 40 tokens: 20 tokens/s per stream).
if [ "$QUICK" = 1 ]; then LEVELS="1 100 1000"; else LEVELS="1 100 1000 5000"; fi
for c in $LEVELS; do
  n=$((c * 2)); [ "$n" -lt 10 ] && n=10
  ramp=$(python3 -c "print(min(4.0, $c / 1000))")
  log "overhead at $c concurrent streams ($n requests)"
  start_pair 50
  "${ON_OTHER_CPU[@]}" "$BIN/sage-load" stream --target llm --url "http://127.0.0.1:$MOCK_PORT" -c "$c" -n "$n" \
    --message "words:${WORDS:-40}" --ramp-s "$ramp" --timeout-s 300 --json >"$OUT/overhead-direct-$c.json"
  "${ON_OTHER_CPU[@]}" "$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c "$c" -n "$n" --message "words:${WORDS:-40}" \
    --ramp-s "$ramp" --timeout-s 300 --server-pid "$SHIM_PID" --json >"$OUT/overhead-server-$c.json"
  stop_pair
done
fi

# 2. Throughput and server CPU per 1,000 events: an unpaced model, 100 streams.
if section throughput; then
log "throughput with an unpaced model"
start_pair 0
"$BIN/sage-load" stream --target llm --url "http://127.0.0.1:$MOCK_PORT" -c 100 -n 2000 \
  --message words:40 --json >"$OUT/throughput-direct.json"
"$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c 100 -n 2000 --message words:40 \
  --server-pid "$SHIM_PID" --json >"$OUT/throughput-server.json"
stop_pair
fi

# 2a. Per-request cost, in the shape of Sage's own load test: short answers (9 tokens, 11 events),
#     paced at 50 ms per token, 200 concurrent streams; one warm-up pass, then the measured one.
if section requests; then
log "per-request cost: 200 concurrent short answers"
start_pair 50
"${ON_OTHER_CPU[@]}" "$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c 200 -n 1000 \
  --message words:9 --json >/dev/null
"${ON_OTHER_CPU[@]}" "$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c 200 -n 3000 \
  --message words:9 --server-pid "$SHIM_PID" --json >"$OUT/requests-server.json"
stop_pair
fi

# 2a'. The same cost in user-space instructions (callgrind), which repeat to within 0.2 % from run
#     to run where CPU seconds vary by 5 % or more: 300 short answers, 10 at a time, after 50 to
#     warm up. Opt-in (SECTIONS=instructions): valgrind slows the server about fifty times.
if section instructions; then
log "instructions per request (callgrind)"
MOCK_PORT=$(free_port); SHIM_PORT=$(free_port); DATA=$(mktemp -d)
"$BIN/sage-mock-llm" --port "$MOCK_PORT" --token-delay-ms 5 >/dev/null 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
valgrind --tool=callgrind --callgrind-out-file="$DATA/callgrind.out" \
  "$BIN/sage-local" --host 127.0.0.1 --port "$SHIM_PORT" --db_type file --db_path "$DATA" \
  --workspace "$DATA/ws" --default_llm_api_key bench \
  --default_llm_api_base_url "http://127.0.0.1:$MOCK_PORT/v1" >"$OUT/shim.log" 2>&1 &
SHIM_PID=$!; PIDS+=("$SHIM_PID")
wait_port "$MOCK_PORT"
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$SHIM_PORT") 2>/dev/null && break; sleep 0.1; done
"$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c 10 -n 50 --message words:9 --json >/dev/null
callgrind_control -z "$SHIM_PID" >/dev/null 2>&1
"$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c 10 -n 300 --message words:9 \
  --json >"$OUT/instructions-load.json"
callgrind_control -d "$SHIM_PID" >/dev/null 2>&1
python3 -c 'import json, sys
total = int(next(l for l in open(sys.argv[1]) if l.startswith("summary:")).split()[1])
load = json.load(open(sys.argv[2]))
print(json.dumps({"instructions": total, "requests": load["successes"]}))' \
  "$DATA/callgrind.out.1" "$OUT/instructions-load.json" >"$OUT/instructions.json"
stop_pair; rm -rf "$DATA"
fi

# 2b. The cost of traces: the same throughput run with spans exported over OTLP/HTTP to a sink
#     that accepts every batch (a few lines of Python answering 200).
if section traces; then
log "throughput with traces on"
SINK_PORT=$(free_port)
python3 -c '
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
' "$SINK_PORT" &
PIDS+=("$!"); wait_port "$SINK_PORT"
SAGE_TRACE_JAEGER_URL="http://127.0.0.1:$SINK_PORT" start_pair 0
"$BIN/sage-load" stream --url "http://127.0.0.1:$SHIM_PORT" -c 100 -n 2000 --message words:40 \
  --server-pid "$SHIM_PID" --json >"$OUT/throughput-server-traced.json"
stop_pair
fi

# 3. Open streams and memory: streams held open (a token a second), server RSS sampled.
if section hold; then
if [ "$QUICK" = 1 ]; then HOLDS="1000"; else HOLDS="1000 5000 9000"; fi
for c in $HOLDS; do
  log "holding $c open streams"
  start_pair 1000
  sleep 1
  "$BIN/sage-load" hold --url "http://127.0.0.1:$SHIM_PORT" -c "$c" --seconds 30 \
    --ramp-s "$(python3 -c "print(max(1.0, $c / 1000))")" --message words:600 \
    --server-pid "$SHIM_PID" --json >"$OUT/hold-$c.jsonl"
  stop_pair
done
fi

# 4. Cold start: each function binary under our Runtime API emulator, and sage-local.
if section cold; then
log "cold starts"
MOCK_PORT=$(free_port)
"$BIN/sage-mock-llm" --port "$MOCK_PORT" >/dev/null 2>&1 &
PIDS+=("$!"); wait_port "$MOCK_PORT"
COMMON_ENV=(--env SAGE_DB_TYPE=memory --env SAGE_DEFAULT_LLM_API_KEY=bench
  --env "SAGE_DEFAULT_LLM_API_BASE_URL=http://127.0.0.1:$MOCK_PORT/v1"
  --env SAGE_PRESET_RUNNING_CONFIG_PATH=/nonexistent --env SAGE_MCP_CONFIG_PATH=/nonexistent)
for pair in stream:function-url-stream health:function-url-health \
            mcp-admin:function-url-mcp-list session:function-url-conversations; do
  fn=${pair%%:*}; event=${pair#*:}
  "$BIN/sage-load" cold-start --bootstrap "$BIN/sage-$fn" --event "tests/fixtures/$event.json" \
    --runs 10 "${COMMON_ENV[@]}" --json >"$OUT/cold-$fn.json"
done
python3 - "$BIN/sage-local" "$OUT/cold-local.json" <<'EOF'
import json, socket, subprocess, sys, tempfile, time
binary, out = sys.argv[1], sys.argv[2]
times = []
for _ in range(10):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    data = tempfile.mkdtemp()
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--db_path", data,
                             "--default_llm_api_key", "k"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", port), 0.05)
            c.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if c.recv(12).startswith(b"HTTP/1.1 200"):
                break
        except OSError:
            time.sleep(0.001)
    times.append((time.perf_counter() - start) * 1000)
    proc.kill(); proc.wait()
times.sort()
json.dump({"first_response_ms": {"min": times[0], "median": times[len(times) // 2], "max": times[-1]}}, open(out, "w"))
EOF
fi

# 5. Store cost per event, per backend and batch size.
if section store; then
log "store cost"
MOTO=${SAGE_TEST_DYNAMODB_ENDPOINT:-}
if [ -z "$MOTO" ]; then
  MOTO_PORT=$(free_port); "$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
  PIDS+=("$!"); wait_port "$MOTO_PORT"; MOTO=http://127.0.0.1:$MOTO_PORT
fi
MARIADB_PID=$(pgrep -o mariadbd || true)
for backend in sqlite mysql dynamodb; do
  for batch in 1 64; do
    events=5000; [ "$backend" = dynamodb ] && events=640
    extra=(); [ "$backend" = mysql ] && [ -n "$MARIADB_PID" ] && extra=(--server-pid "$MARIADB_PID")
    "$BIN/sage-load" store --backend "$backend" --events "$events" --batch "$batch" \
      --dynamodb-endpoint "$MOTO" "${extra[@]}" --json >"$OUT/store-$backend-$batch.json"
  done
done
fi

{ ls -l "$BIN"/sage-{stream,health,mcp-admin,session,local} 2>/dev/null || true; } | awk '{print $5, $9}' >"$OUT/sizes.txt"
python3 "$ROOT/local/bench_report.py" "$OUT"
