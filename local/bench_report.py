"""Prints the BENCHMARKS.md tables from the JSON results local/bench.sh wrote."""

import glob
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


def last_json_line(path):
    lines = [line for line in open(path) if line.strip()]
    return json.loads(lines[-1])


setup = load("setup.json") or {}
store = {"file": "SQLite store", "memory": "memory store"}.get(setup.get("db_type", "file"), setup.get("db_type"))
words = setup.get("words", 40)

print(f"### Server overhead (model paced at 20 tokens/s per stream, {words} tokens, {store})\n")
print("| concurrent streams | direct tokens/s | through /api/stream tokens/s | ratio | success (server) | first event p50 / p99 (server) | server CPU ms per 1,000 events |")
print("|---|---|---|---|---|---|---|")
levels = sorted(int(p.split("-")[-1][:-5]) for p in glob.glob(os.path.join(out, "overhead-server-*.json")))
for c in levels:
    direct, server = load(f"overhead-direct-{c}.json"), load(f"overhead-server-{c}.json")
    cpu = server["server_cpu"][0]["cpu_ms_per_1000_events"] if server.get("server_cpu") else float("nan")
    print(f"| {c:,} | {direct['tokens_per_s']:,.0f} | {server['tokens_per_s']:,.0f} | "
          f"{server['tokens_per_s'] / direct['tokens_per_s']:.3f} | {server['success_rate'] * 100:.1f} % | "
          f"{server['first_event_ms']['p50']:.1f} / {server['first_event_ms']['p99']:.1f} ms | {cpu:.1f} |")

direct, server = load("throughput-direct.json"), load("throughput-server.json")
if direct and server:
    cpu = server["server_cpu"][0]
    print("\n### Throughput (unpaced model, 100 concurrent streams, 2,000 requests)\n")
    print("| path | events/s | tokens/s | requests/s | success |")
    print("|---|---|---|---|---|")
    for name, r in (("direct from the model", direct), ("through /api/stream", server)):
        print(f"| {name} | {r['events_per_s']:,.0f} | {r['tokens_per_s']:,.0f} | {r['requests_per_s']:,.1f} | {r['success_rate'] * 100:.1f} % |")
    print(f"\nServer CPU: {cpu['cpu_s']:.2f} s for {server['events']:,} events = "
          f"**{cpu['cpu_ms_per_1000_events']:.1f} ms of CPU per 1,000 streamed events**; "
          f"1,000 streams at 20 tokens/s need {cpu['cpu_ms_per_1000_events'] * 20 / 1000:.2f} cores.")

requests = load("requests-server.json")
if requests:
    cpu = requests["server_cpu"][0]
    first = requests["first_event_ms"]
    print("\n### Per-request cost (200 concurrent streams, 9-token answers of 11 events, 50 ms per token)\n")
    print(f"{requests['requests']:,} requests, {requests['success_rate'] * 100:.1f} % success: server CPU "
          f"**{1000 * cpu['cpu_s'] / requests['requests']:.2f} ms per request**; first event p50 / p95 / p99 "
          f"{first['p50']:.0f} / {first['p95']:.0f} / {first['p99']:.0f} ms (the model's first token comes at 50 ms).")
    if "system_cpu_s" in cpu:
        print(f"Of it in the kernel: {1000 * cpu['system_cpu_s'] / requests['requests']:.2f} ms per request; "
              f"{cpu['context_switches'] / requests['requests']:.1f} context switches per request.")

instructions = load("instructions.json")
if instructions:
    print("\n### Instructions per request (callgrind; 300 short answers, 10 at a time)\n")
    print(f"{instructions['requests']:,} requests: **{instructions['instructions'] / instructions['requests'] / 1e6:.2f} M "
          f"user-space instructions per request** in the server.")

traced = load("throughput-server-traced.json")
if server and traced:
    off, on = server["server_cpu"][0], traced["server_cpu"][0]
    print("\n### Traces (the same run, spans exported over OTLP/HTTP)\n")
    print("| traces | events/s | server CPU ms per 1,000 events |")
    print("|---|---|---|")
    print(f"| off | {server['events_per_s']:,.0f} | {off['cpu_ms_per_1000_events']:.1f} |")
    print(f"| on | {traced['events_per_s']:,.0f} | {on['cpu_ms_per_1000_events']:.1f} |")

print(f"\n### Open streams and memory (sage-local, {store})\n")
print("| streams requested | opened | open at end | RSS before | RSS with the streams | RSS per open stream |")
print("|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "hold-*.jsonl")), key=lambda p: int(p.split("-")[-1][:-6])):
    s = last_json_line(path)
    mib = lambda b: f"{(b or 0) / 2**20:.0f} MiB"
    per = s.get("server_rss_per_open_stream_bytes") or 0
    print(f"| {s['requested']:,} | {s['opened']:,} | {s['open_at_end']:,} | {mib(s.get('server_rss_baseline_bytes'))} | "
          f"{mib(s.get('server_rss_end_bytes'))} | {per / 1024:.1f} KiB |")

print("\n### Cold start (release binaries, our Runtime API emulator, memory store)\n")
print("| binary | size (stripped) | init (first `next`) median | first response byte median | full response median | max full |")
print("|---|---|---|---|---|---|")
for fn in ("stream", "health", "mcp-admin", "session"):
    r = load(f"cold-{fn}.json")
    if not r:
        continue
    s = r["summary"]
    fmt = lambda x: f"{x['median']:.1f} ms" if x else "–"
    print(f"| sage-{fn} | {r['bootstrap_bytes'] / 2**20:.1f} MiB | {fmt(s['init_ms'])} | {fmt(s['first_byte_ms'])} | "
          f"{fmt(s['full_ms'])} | {s['full_ms']['max']:.1f} ms |")
local = load("cold-local.json")
if local:
    f = local["first_response_ms"]
    print(f"| sage-local (process start → first `/api/health` answer) | – | – | – | {f['median']:.1f} ms | {f['max']:.1f} ms |")

print("\n### Store cost per event\n")
print("| backend | batch | wall µs/event | CPU µs/event (client) | CPU µs/event (database server) | events/s |")
print("|---|---|---|---|---|---|")
for backend in ("sqlite", "mysql", "dynamodb"):
    for batch in (1, 64):
        r = load(f"store-{backend}-{batch}.json")
        if not r:
            continue
        server = r.get("server_cpu_us_per_event")
        print(f"| {backend} | {batch} | {r['wall_us_per_event']:,.0f} | {r['cpu_us_per_event']:,.1f} | "
              f"{'–' if server is None else f'{server:,.1f}'} | {r['events_per_s']:,.0f} |")
