#!/usr/bin/env bash
# One big-room event's life (issue 31 item 3): 5,000 subscribers on one channel, events far
# enough apart (RATE, default 4 a second) that each is fanned out alone, and bpftrace
# (bench/room_timeline.bt, on the sock:sock_send_length and sock_recv_length tracepoints)
# placing every server write and every harness read in 2 ms buckets from the publish that
# caused it. Shows which share of an event's latency is the server's (when it writes) and
# which the harness's (how long after a write it reads). Prints the harness's JSON line and
# the two histograms. Needs root and bpftrace (Debian: bpftrace); it mounts tracefs if it
# is not mounted.
# Usage: bench/room_timeline.sh [herald binary] [harness binary]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bin=${1:-target/release/herald} harness=${2:-target/release/herald-bench}
rate=${RATE:-4}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p herald-cli -p herald-bench
[ -e /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing
ulimit -l unlimited 2>/dev/null || true
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
start_herald "$bin"
"$harness" --addr "$HERALD_ADDR" --pid "$HERALD_PID" \
  room --subscribers 5000 --rate "$rate" --seconds 20 --payload 100 > "$tmp/run.json" &
bench_pid=$!
# Past the subscriptions (5,000 take a few seconds), inside the publishing.
sleep 6
# bpftrace prints its maps on SIGINT; timeout then exits 124.
timeout -s INT 8 bpftrace bench/room_timeline.bt "$HERALD_PID" "$bench_pid" 2>/dev/null || true
wait "$bench_pid"
cat "$tmp/run.json"
kill -TERM "$HERALD_PID"; wait "$HERALD_PID" 2>/dev/null || true
