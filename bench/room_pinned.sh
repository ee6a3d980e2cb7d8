#!/usr/bin/env bash
# The big room's latency split between the server and the harness (issue 31 item 3): the
# room run of bench/room.sh (5,000 subscribers on one channel, 20 events/s of 100 B), with
# the server and the harness sharing both cores ("shared", as in every other run) and with
# each given a core of its own ("split": the server on CPU 0, the harness on CPU 1, by
# taskset), and with both on CPU 0 ("one": no wake-up ever crosses to the other core, at
# half the CPU). In "split" the server writes a burst on one core while the harness reads
# it on the other, so what the latency loses or gains shows what the two processes' taking
# turns on the same cores costs; "one" shows what waking a thread on the other, idle,
# core costs. Runs alternate; one JSON line per run, tagged "placement", goes
# to bench/results/room-pinned.jsonl; the medians are printed at the end.
# Usage: bench/room_pinned.sh [runs] [herald binary]   (default 3, target/release/herald)
# PLACEMENTS (default "shared split one") picks placements; HARNESS (default
# target/release/herald-bench) is the harness binary, whose file name tags each line.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3} bin=${2:-target/release/herald}
harness=${HARNESS:-target/release/herald-bench}
placements=${PLACEMENTS:-shared split one}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p herald-cli -p herald-bench
out=${OUT:-bench/results/room-pinned.jsonl}
mkdir -p bench/results
: > "$out"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

run() { # placement server-cpus harness-cpus
  local placement=$1 server_cpus=$2 harness_cpus=$3 pid addr
  start_herald "$bin"
  pid=$HERALD_PID addr=$HERALD_ADDR
  taskset -a -p -c "$server_cpus" "$pid" > /dev/null
  taskset -c "$harness_cpus" "$harness" --addr "$addr" --pid "$pid" \
    room --subscribers 5000 --rate 20 --seconds 10 --payload 100 \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); r["placement"]=sys.argv[1]; r["harness"]=sys.argv[2]; print(json.dumps(r))' \
      "$placement" "$(basename "$harness")" | tee -a "$out"
  kill -TERM "$pid"; wait "$pid" || true
}

for _ in $(seq "$runs"); do
  for placement in $placements; do
    case $placement in
      shared) run shared 0,1 0,1 ;;
      split) run split 0 1 ;;
      one) run one 0 0 ;;
    esac
  done
done
python3 - "$out" <<'EOF'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for placement in ("shared", "split", "one"):
    rs = [r for r in rows if r["placement"] == placement]
    if not rs:
        continue
    line = []
    for name, get in (("p50 ms", lambda r: r["latency"]["p50_us"] / 1000),
                      ("p99 ms", lambda r: r["latency"]["p99_us"] / 1000),
                      ("server CPU µs per delivery", lambda r: r["server_cpu_us_per_delivery"]),
                      ("harness CPU s", lambda r: r["harness_cpu_s"]),
                      ("lost", lambda r: r["lost"])):
        vals = [get(r) for r in rs]
        line.append(f"{name} {statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})")
    print(f"{placement}, {len(rs)} runs: " + "; ".join(line))
EOF
