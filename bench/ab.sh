#!/usr/bin/env bash
# Compares two herald binaries under the same harness, alternating runs so that drift on the
# shared machine hits both equally: fan-out (1,000 subscribers, 10 channels, 500 events/s)
# and triggers (32 publishers). One JSON line per run goes to bench/results/ab.jsonl, tagged
# with the binary; the medians are printed at the end.
# Usage: bench/ab.sh OLD_HERALD NEW_HERALD [rounds]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
old=$1 new=$2 rounds=${3:-3}
cargo build --release -q -p herald-bench
out=bench/results/ab.jsonl
mkdir -p bench/results
: > "$out"

run() { # binary tag args...
  local bin=$1 tag=$2; shift 2
  start_herald "$bin"
  local pid=$HERALD_PID addr=$HERALD_ADDR
  target/release/herald-bench --addr "$addr" --pid "$pid" "$@" 2>/dev/null \
    | sed "s/^{/{\"build\":\"$tag\",/" | tee -a "$out"
  kill -TERM "$pid"; wait "$pid" || true
}

for _ in $(seq "$rounds"); do
  for pair in "old:$old" "new:$new"; do
    tag=${pair%%:*} bin=${pair#*:}
    run "$bin" "$tag" fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 100
    run "$bin" "$tag" trigger --concurrency 32 --seconds 10
  done
done
python3 bench/medians.py "$out" build old new
