#!/usr/bin/env bash
# Redis's cost per event in a cluster with channel history on against off (issue 27): two
# nodes on a fresh redis-server, the app with or without `history_max_events = 100`,
# alternating. Per setting and round: a fan-out (1,000 subscribers spread over both nodes,
# 10 channels, 500 events/s published to node A, 100-byte payload) and a trigger run (32
# publishers on one channel, no subscribers). Redis's CPU is read from INFO (used_cpu_sys
# + used_cpu_user) around each run (for the fan-out that includes the 1,000 subscriptions;
# the harness also charges Redis's CPU from /proc over the publishing window alone); after
# the last fan-out with history on, the memory of one channel's kept events (MEMORY USAGE
# of its stream and hash).
# Writes bench/results/cluster_history.jsonl and prints medians.
# Usage: bench/cluster_history.sh [rounds] [seconds]   (defaults 3 and 6; PROFILE=debug
# runs the debug binaries as they are, to try the script out)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
secs=${2:-6}
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -q -p herald-cli -p herald-bench; fi
out=${OUT:-bench/results/cluster_history.jsonl}
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

redis_cpu() { redis-cli -p "$redis_port" INFO cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.3f\n", s}'; }
# start_node NAME CONFIG: sets NAME_pid and NAME_addr (lib.sh's start_herald).
start_node() {
  start_herald "target/$profile/herald" --config "$2"
  [ -n "$HERALD_ADDR" ] || { echo "node $1 did not start" >&2; exit 1; }
  eval "$1_pid=$HERALD_PID $1_addr=$HERALD_ADDR"
}
stop() { for pid in "$@"; do kill -TERM "$pid"; wait "$pid" || true; done; }

# run SETTING ARGS...: one harness run against node A, with Redis's CPU per event.
run() {
  local setting=$1 before after
  shift
  before=$(redis_cpu)
  target/$profile/herald-bench --addr "$a_addr" --pid "$a_pid,$b_pid" "$@" 2>/dev/null > "$tmp/run.json"
  after=$(redis_cpu)
  python3 - "$tmp/run.json" "$before" "$after" "$setting" <<'PY' | tee -a "$out"
import json, sys
r = json.load(open(sys.argv[1]))
r["history"] = sys.argv[4]
r["redis_cpu_s"] = round(float(sys.argv[3]) - float(sys.argv[2]), 3)
events = r.get("events_sent") or r.get("requests") or 1
r["redis_cpu_us_per_event"] = round(r["redis_cpu_s"] * 1e6 / events, 2)
print(json.dumps(r))
PY
}

for _ in $(seq "$rounds"); do
  for setting in off on; do
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > /dev/null &
    redis_pid=$!
    sleep 0.3
    extra=""
    [ "$setting" = on ] && extra="history_max_events = 100"
    printf 'adapter = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\n[[apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\n%s\n' \
      "$redis_port" "$extra" > "$tmp/cluster.toml"
    start_node a "$tmp/cluster.toml"
    start_node b "$tmp/cluster.toml"
    run "$setting" fanout --subscribers 1000 --channels 10 --rate 500 --seconds "$secs" --payload 100 \
      --subscribe-to "$a_addr,$b_addr" --warmup 2 --redis-pid "$redis_pid"
    if [ "$setting" = on ]; then
      redis-cli -p "$redis_port" --scan --pattern '*}:h:*' | head -1 > "$tmp/stream"
      stream=$(cat "$tmp/stream")
      meta=${stream/\}:h:/\}:hm:}
      python3 - "$(redis-cli -p "$redis_port" XLEN "$stream")" \
        "$(redis-cli -p "$redis_port" MEMORY USAGE "$stream" SAMPLES 0)" \
        "$(redis-cli -p "$redis_port" MEMORY USAGE "$meta")" <<'PY' | tee -a "$out"
import json, sys
n, stream, meta = (int(x) for x in sys.argv[1:4])
print(json.dumps({"mode": "memory", "history": "on", "events_kept": n, "stream_bytes": stream,
                  "meta_bytes": meta, "bytes_per_event": round((stream + meta) / max(n, 1), 1)}))
PY
    fi
    run "$setting" trigger --concurrency 32 --seconds "$secs"
    stop "$a_pid" "$b_pid" "$redis_pid"
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda rs, f: statistics.median(f(r) for r in rs)
for mode in ("fanout", "trigger"):
    for setting in ("off", "on"):
        rs = [r for r in rows if r["mode"] == mode and r["history"] == setting]
        if not rs:
            continue
        per = [r["redis_cpu_us_per_event"] for r in rs]
        line = f"{mode} history {setting}: redis µs/event {per} median {statistics.median(per)}"
        if mode == "fanout":
            window = [r["window"]["redis_cpu_us_per_event"] for r in rs]
            line += f"; in the publishing window {window} median {statistics.median(window)}"
            line += f"; lost {[r['lost'] for r in rs]}; p50 {med(rs, lambda r: r['latency']['p50_us'])} µs"
        else:
            line += f"; req/s median {med(rs, lambda r: r['requests_per_s'])}; p50 {med(rs, lambda r: r['latency']['p50_us'])} µs"
        print(line)
for r in rows:
    if r["mode"] == "memory":
        print(f"memory: {r}")
PY
