#!/usr/bin/env bash
# Big room and presence churn (issue 17): `room` (5,000 subscribers on one public channel,
# 20 events/s of 100 B over HTTP: bursts of 5,000 deliveries) and `presence-churn` (100
# presence channels of 100 members, 1,000 joins+leaves per second), each run N times
# against a fresh `herald serve --port 0` with its default configuration (100 members fit
# the default max_presence_members = 100: the churner is one of them). One JSON line per
# run goes to bench/results/room.jsonl; the medians and ranges are printed at the end.
# Usage: bench/room.sh [runs] [herald binary]   (default 3, target/release/herald)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3} bin=${2:-target/release/herald}
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/room.jsonl
mkdir -p bench/results
: > "$out"

run() { # args...
  start_herald "$bin"
  local pid=$HERALD_PID addr=$HERALD_ADDR
  target/release/herald-bench --addr "$addr" --pid "$pid" "$@" 2>/dev/null | tee -a "$out"
  kill -TERM "$pid"; wait "$pid" || true
}

for _ in $(seq "$runs"); do
  run room --subscribers 5000 --rate 20 --seconds 10 --payload 100
  run presence-churn --channels 100 --members 100 --churn 1000 --seconds 10
done
python3 bench/room_medians.py "$out"
