#!/usr/bin/env bash
# Runs the benchmark suite against a fresh release `herald serve` and writes
# bench/results/latest.jsonl (one JSON line per run), then summarises it into
# bench/results/summary.md and bench/results/latency-vs-rate.svg.
# Usage: bench/run.sh [runs-per-measurement]   (default 3; medians are reported)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/latest.jsonl
mkdir -p bench/results
: > "$out"

start_server() {
  target/release/herald serve --port 0 > /tmp/herald-bench-server.out 2>/dev/null &
  server_pid=$!
  for _ in $(seq 50); do
    addr=$(grep -m1 -o 'listening on [^ ]*' /tmp/herald-bench-server.out 2>/dev/null | sed 's/listening on //') || true
    [ -n "${addr:-}" ] && break
    sleep 0.1
  done
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; }
bench() { target/release/herald-bench --addr "$addr" --pid "$server_pid" "$@" 2>/dev/null | tee -a "$out"; }

for _ in $(seq "$runs"); do
  start_server; bench fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 100; stop_server
  start_server; bench trigger --concurrency 32 --seconds 10; stop_server
  start_server; bench connections --count 10000; stop_server
  # A third of the subscribers stop reading (4 KB receive windows): the others' latency and
  # the server's memory, against the same run without them.
  for stalled in 0 100; do
    start_server; bench fanout --subscribers 200 --channels 10 --rate 500 --seconds 10 --payload 2000 --stalled "$stalled"; stop_server
  done
done
# Latency against delivery rate (1,000 subscribers, 10 channels).
for rate in 100 250 500 1000 2000; do
  start_server; bench fanout --subscribers 1000 --channels 10 --rate "$rate" --seconds 5 --payload 100; stop_server
done
python3 bench/summarize.py "$out"
