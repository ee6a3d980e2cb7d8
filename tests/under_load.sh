#!/usr/bin/env bash
# The whole suite RUNS times (default 3) beside two busy loops on a machine of two cores:
# a test that fails only here is a race (docs/testing.md, "Under load"). Each run goes to
# its end (--no-fail-fast); logs and results go to target/under-load/.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
out=target/under-load
mkdir -p "$out"
: > "$out/summary"
busy=()
stop() { kill "${busy[@]}" 2>/dev/null; }
trap stop EXIT
for i in $(seq 1 "$runs"); do
  busy=()
  for _ in 1 2; do ( while :; do :; done ) & busy+=($!); done
  start=$(date +%s)
  cargo test --workspace --no-fail-fast > "$out/run$i.log" 2>&1
  status=$?
  stop
  echo "run $i: exit $status in $(( $(date +%s) - start )) s" | tee -a "$out/summary"
done
! grep -q 'exit [^0]' "$out/summary"
