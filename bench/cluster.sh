#!/usr/bin/env bash
# The cost of the Redis path: the same fan-out (1,000 subscribers, 10 channels, 500 events/s,
# 100-byte payload, 10 s) and trigger run (32 publishers, 10 s) against one node, then
# against two nodes sharing a fresh redis-server: subscribers spread over both, events
# published to the first.
# Writes bench/results/cluster.jsonl and prints medians.
# Usage: bench/cluster.sh [runs]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/cluster.jsonl
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_secs() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }

# start_node NAME [CONFIG]: starts a node, sets NAME_pid and NAME_addr.
start_node() {
  local name=$1 config=${2:-/dev/null}
  target/release/herald serve --port 0 --config "$config" > "$tmp/$name.out" 2>/dev/null &
  eval "${name}_pid=$!"
  for _ in $(seq 100); do
    local addr
    addr=$(grep -m1 -o 'listening on [^ ]*' "$tmp/$name.out" 2>/dev/null | sed 's/listening on //') || true
    if [ -n "${addr:-}" ]; then eval "${name}_addr=$addr"; return; fi
    sleep 0.1
  done
  echo "node $name did not start" >&2; exit 1
}
# cluster_bench ARGS...: one harness run against node a (CPU of both nodes summed),
# labelled, with Redis's own CPU per delivery or request.
cluster_bench() {
  local before after
  before=$(cpu_secs "$redis_pid")
  target/release/herald-bench --addr "$a_addr" --pid "$a_pid,$b_pid" "$@" 2>/dev/null > "$tmp/run.json"
  after=$(cpu_secs "$redis_pid")
  python3 - "$tmp/run.json" "$before" "$after" <<'PY' | tee -a "$out"
import json, sys
r = json.load(open(sys.argv[1]))
r["setup"] = "two nodes + redis"
r["redis_cpu_s"] = round(float(sys.argv[3]) - float(sys.argv[2]), 2)
units = r.get("deliveries") or r.get("requests") or 1
r["redis_cpu_us_per_unit"] = round(r["redis_cpu_s"] * 1e6 / units, 2)
print(json.dumps(r))
PY
}
stop() { for pid in "$@"; do kill -TERM "$pid"; wait "$pid" || true; done; }
fanout=(fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 100)
trigger=(trigger --concurrency 32 --seconds 10)
label() { python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["setup"]=sys.argv[1]; print(json.dumps(r))' "$1"; }

for _ in $(seq "$runs"); do
  start_node single
  target/release/herald-bench --addr "$single_addr" --pid "$single_pid" "${fanout[@]}" 2>/dev/null \
    | label single | tee -a "$out"
  target/release/herald-bench --addr "$single_addr" --pid "$single_pid" "${trigger[@]}" 2>/dev/null \
    | label single | tee -a "$out"
  stop "$single_pid"

  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > /dev/null &
  redis_pid=$!
  sleep 0.3
  printf 'adapter = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\n' "$redis_port" > "$tmp/cluster.toml"
  start_node a "$tmp/cluster.toml"
  start_node b "$tmp/cluster.toml"
  cluster_bench "${fanout[@]}" --subscribe-to "$a_addr,$b_addr"
  cluster_bench "${trigger[@]}"
  stop "$a_pid" "$b_pid" "$redis_pid"
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda rs, f: statistics.median(f(r) for r in rs)
print("| fan-out, 50k deliveries/s | lost | p50 ms | p99 ms | herald CPU µs/delivery | redis CPU µs/delivery |")
print("|---|---|---|---|---|---|")
for setup in ("single", "two nodes + redis"):
    rs = [r for r in rows if r["setup"] == setup and r["mode"] == "fanout"]
    redis = f"{med(rs, lambda r: r['redis_cpu_us_per_unit']):.2f}" if setup != "single" else "—"
    print(f"| {setup} | {med(rs, lambda r: r['lost']):.0f} | {med(rs, lambda r: r['latency']['p50_us'])/1000:.2f} | "
          f"{med(rs, lambda r: r['latency']['p99_us'])/1000:.2f} | {med(rs, lambda r: r['server_cpu_us_per_delivery']):.2f} | {redis} |")
print()
print("| trigger, 32 publishers | requests/s | p99 ms | herald CPU µs/request | redis CPU µs/request |")
print("|---|---|---|---|---|")
for setup in ("single", "two nodes + redis"):
    rs = [r for r in rows if r["setup"] == setup and r["mode"] == "trigger"]
    redis = f"{med(rs, lambda r: r['redis_cpu_us_per_unit']):.2f}" if setup != "single" else "—"
    print(f"| {setup} | {med(rs, lambda r: r['requests_per_s']):,.0f} | {med(rs, lambda r: r['latency']['p99_us'])/1000:.2f} | "
          f"{med(rs, lambda r: r['server_cpu_us_per_request']):.2f} | {redis} |")
PY
