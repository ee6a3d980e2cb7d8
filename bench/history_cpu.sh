#!/bin/bash
# History on against off: server CPU per trigger (issue 27 item 5), alternating, 3 runs each.
# Needs the release binaries: cargo build --release -p herald-cli -p herald-bench
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/herald
BENCH=$ROOT/target/release/herald-bench
OUT=${OUT:-$ROOT/bench/results/history-cpu-2.jsonl}
: > $OUT
for run in 1 2 3; do
  for mode in off on; do
    dir=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    extra=""
    [ $mode = on ] && extra='history_max_events = 100'
    printf '[[apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\n%s\n' "$extra" > $dir/herald.toml
    HERALD_DATA_DIR=$dir/data $BIN serve --port $port --config $dir/herald.toml > $dir/log 2>&1 &
    pid=$!
    for _ in $(seq 1 50); do grep -q 'listening on' $dir/log && break; sleep 0.1; done
    line=$($BENCH --addr 127.0.0.1:$port --pid $pid trigger --concurrency 32 --seconds 8 2>/dev/null | tail -1)
    echo "{\"history\":\"$mode\",\"run\":$run,\"result\":$line}" >> $OUT
    echo "$mode run $run: $(echo "$line" | grep -o '"server_cpu_us_per_request":[0-9.]*') $(echo "$line" | grep -o '"requests_per_s":[0-9.]*')"
    kill $pid; wait $pid 2>/dev/null
    rm -rf $dir
  done
done
