#!/usr/bin/env bash
# Big room and presence churn (issue 17): `room` (5,000 subscribers on one public channel,
# 20 events/s of 100 B over HTTP: bursts of 5,000 deliveries) and `presence-churn` (100
# presence channels of 100 members, 1,000 joins+leaves per second), each run N times
# against a fresh `herald serve --port 0` with its default configuration (100 members fit
# the default max_presence_members = 100: the churner is one of them). One JSON line per
# run goes to bench/results/room.jsonl, tagged "server"; the medians and ranges are printed
# at the end, per server.
# Peers (same harness, same commands, runs alternating): with SOCKUDO_BIN set, sockudo
# (bench/lib.sh start_sockudo: its limits raised, presence members left at its default of
# 100); with SOKETI_BIN set (node_modules/.bin/soketi, see bench/lib.sh start_soketi),
# soketi, whose limits are off by default and whose presence channels hold 100 members.
# Usage: [SOCKUDO_BIN=...] [SOKETI_BIN=...] bench/room.sh [runs] [herald binary]
#        (default 3, target/release/herald)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3} bin=${2:-target/release/herald}
cargo build --release -q -p herald-cli -p herald-bench
out=${OUT:-bench/results/room.jsonl}
mkdir -p bench/results
: > "$out"

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
servers=$(servers_to_run)

run() { # server args...
  local server=$1 pid addr
  shift
  start_server "$server" "$bin" "$tmp" || return 0
  pid=$SERVER_PID addr=$SERVER_ADDR
  if target/release/herald-bench --addr "$addr" --pid "$pid" "$@" 2>"$tmp/err" > "$tmp/run.json"; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); r["server"]=sys.argv[1]; print(json.dumps(r))' \
      "$server" "$tmp/run.json" | tee -a "$out"
  else
    echo "$server $1 failed: $(tail -1 "$tmp/err")" >&2
  fi
  kill -TERM "$pid"; wait "$pid" || true
}

for _ in $(seq "$runs"); do
  for server in $servers; do
    run "$server" room --subscribers 5000 --rate 20 --seconds 10 --payload 100
    run "$server" presence-churn --channels 100 --members 100 --churn 1000 --seconds 10
  done
done
python3 bench/room_medians.py "$out"
