#!/usr/bin/env bash
# Herald beside its peers under the same harness and the same commands: fan-out (1,000
# subscribers, 10 channels, 500 events/s, 100 B, 10 s), trigger (32 publishers, 10 s),
# 10,000 idle connections, the big room (5,000 subscribers on one channel, 20 events/s) and
# presence churn (100 channels of 100 members, 1,000 joins+leaves/s). Each measurement starts
# a fresh server; runs alternate between the servers. Writes bench/results/peers.jsonl
# (one line per run, tagged "server") and prints the medians.
#
# Usage: [SOCKUDO_BIN=...] [SOKETI_BIN=...] bench/peers.sh [runs]   (default 3)
# - sockudo: `cargo install sockudo` (needs protoc: apt-get install protobuf-compiler). It
#   runs with its defaults, the default app set to Herald's credentials, and its limits
#   (100 connections, events and reads per second, the HTTP rate limiter) raised or off, as
#   they would refuse the runs (bench/lib.sh start_sockudo).
# - soketi: `npm install --ignore-scripts @soketi/soketi@1.6.1` with the package.json
#   override `"uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"`
#   (its own dependency comes from GitHub, which this machine cannot reach); SOKETI_BIN is
#   that install's node_modules/.bin/soketi. Its limits are off by default; client events
#   and user authentication are turned on (bench/lib.sh start_soketi).
# - density: DENSITY_COUNT (default 18,000) idle connections, the most Herald's default cap
#   allows under this machine's 20,000 descriptors per process (a tenth kept spare); the
#   same count for every server, to compare what each holds them in.
# Either peer is left out when its variable is unset. MODES (default: all six) picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3}
cargo build --release -q -p herald-cli -p herald-bench
out=${OUT:-bench/results/peers.jsonl}
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
servers=$(servers_to_run)
modes=${MODES:-fanout trigger connections room churn density}

start() { # server; sets pid and addr
  start_server "$1" target/release/herald "$tmp" || exit 1
  pid=$SERVER_PID addr=$SERVER_ADDR
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
bench() { # server args...   (MODE_TAG=name renames the line's mode)
  local server=$1
  shift
  if ! target/release/herald-bench --addr "$addr" --pid "$pid" "$@" 2>"$tmp/err" > "$tmp/run.json"; then
    echo "$server $1 failed: $(tail -1 "$tmp/err")" >&2
    for log in "$tmp/sockudo.log" "$tmp/soketi.log"; do
      [ -f "$log" ] && sed "s/\x1b\[[0-9;]*m//g" "$log" | grep -E "ERROR|WARN|Error" | tail -3 >&2
    done
    return 0
  fi
  python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); r["server"]=sys.argv[1]; r["mode"]=sys.argv[3] or r["mode"]; print(json.dumps(r))' \
    "$server" "$tmp/run.json" "${MODE_TAG:-}" | tee -a "$out"
}
measure() { # server mode
  start "$1"
  case $2 in
    fanout) bench "$1" fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 100 ;;
    trigger) bench "$1" trigger --concurrency 32 --seconds 10 ;;
    connections) bench "$1" connections --count 10000 ;;
    room) bench "$1" room --subscribers 5000 --rate 20 --seconds 10 --payload 100 ;;
    churn) bench "$1" presence-churn --channels 100 --members 100 --churn 1000 --seconds 10 ;;
    density) MODE_TAG=density bench "$1" connections --count "${DENSITY_COUNT:-18000}" ;;
  esac
  stop
}

for _ in $(seq "$runs"); do
  for mode in $modes; do
    for server in $servers; do measure "$server" "$mode"; done
  done
done
python3 bench/peers_medians.py "$out"
