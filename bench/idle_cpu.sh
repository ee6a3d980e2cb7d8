#!/bin/bash
# What a second of idle costs the server: a fresh `herald serve` holds N idle WebSocket
# connections (bench/idle_hold.py), and its CPU time is read over SECONDS (default 60),
# starting 5 s after the last connect: utime+stime from /proc/PID/stat (10 ms ticks) and the
# sum of its threads' schedstat (nanoseconds). Prints one line per run.
#
#   bench/idle_cpu.sh N [SECONDS] [RUNS]      (HERALD_BIN, default target/release/herald)
set -euo pipefail
N=$1; SECS=${2:-60}; RUNS=${3:-3}
BIN=${HERALD_BIN:-target/release/herald}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sched_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }
for run in $(seq "$RUNS"); do
    PORT=$((20000 + RANDOM % 10000))
    "$BIN" serve --port "$PORT" >"$WORK/serve.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 50); do grep -q "listening on" "$WORK/serve.log" && break; sleep 0.2; done
    python3 "$HERE/idle_hold.py" "$N" "$PORT" >"$WORK/hold.log" 2>&1 &
    HOLDER=$!
    for _ in $(seq 600); do grep -q ready "$WORK/hold.log" && break; sleep 0.5; done
    if ! grep -q ready "$WORK/hold.log"; then
        echo "the connections did not open: $(tail -3 "$WORK/hold.log")" >&2
        kill "$HOLDER" "$SERVER"; exit 1
    fi
    sleep 5
    t0=$(cpu_ticks $SERVER); s0=$(sched_ns $SERVER); w0=$(date +%s.%N)
    sleep "$SECS"
    t1=$(cpu_ticks $SERVER); s1=$(sched_ns $SERVER); w1=$(date +%s.%N)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")
    tck=$(getconf CLK_TCK)
    printf '{"connections": %d, "run": %d, "cpu_ms_per_s": %.3f, "schedstat_ms_per_s": %.3f, "rss_kib": %d}\n' \
        "$N" "$run" "$(echo "($t1 - $t0) * 1000 / $tck / ($w1 - $w0)" | bc -l)" \
        "$(echo "($s1 - $s0) / 1000000 / ($w1 - $w0)" | bc -l)" "$rss"
    kill "$HOLDER" "$SERVER"
    wait "$SERVER" 2>/dev/null || true
done
