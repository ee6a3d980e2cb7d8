#!/usr/bin/env bash
# Herald against a peer under the same harness and the same commands: fan-out (1,000
# subscribers, 10 channels, 500 events/s, 100 B, 10 s), trigger (32 publishers, 10 s) and
# 10,000 idle connections. Each measurement starts a fresh server; runs alternate between the
# servers. Writes bench/results/peers.jsonl and prints medians.
#
# Usage: SOCKUDO_BIN=/path/to/sockudo bench/peers.sh [runs]   (default 3)
# sockudo installs with `cargo install sockudo` (needs protoc: apt-get install
# protobuf-compiler). It runs with its defaults, the default app set to Herald's
# credentials, and its limits (100 connections, events and reads per second, the HTTP rate
# limiter) raised or off, as they would refuse the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
: "${SOCKUDO_BIN:?set SOCKUDO_BIN to a sockudo binary}"
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/peers.jsonl
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# Fixed ports below the ephemeral range: the harness's 10,000 client sockets leave ephemeral
# ports in TIME_WAIT, which a server without SO_REUSEADDR could not bind.
port=16001
start() {
  local server=$1
  case $server in
    herald) target/release/herald serve --port "$port" > /dev/null 2>&1 & ;;
    sockudo)
      (cd "$tmp" && SOCKUDO_DEFAULT_APP_ID=1 SOCKUDO_DEFAULT_APP_KEY=app-key \
        SOCKUDO_DEFAULT_APP_SECRET=app-secret SOCKUDO_DEFAULT_APP_ENABLED=true \
        SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=100000 SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=1000000 \
        SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS_PER_SECOND=1000000 \
        RATE_LIMITER_ENABLED=false PORT="$port" METRICS_PORT=16002 \
        exec "$SOCKUDO_BIN" > "$tmp/sockudo.log" 2>&1) & ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
bench() {
  local server=$1; shift
  if ! target/release/herald-bench --addr "127.0.0.1:$port" --pid "$pid" "$@" 2>"$tmp/err" > "$tmp/run.json"; then
    echo "$server $1 failed: $(tail -1 "$tmp/err")" >&2
    [ -f "$tmp/sockudo.log" ] && sed "s/\x1b\[[0-9;]*m//g" "$tmp/sockudo.log" | grep -E "ERROR|WARN" | tail -3 >&2
    return
  fi
  python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); r["server"]=sys.argv[1]; print(json.dumps(r))' \
    "$server" "$tmp/run.json" | tee -a "$out"
}

for _ in $(seq "$runs"); do
  for server in ${SERVERS:-herald sockudo}; do
    start "$server"; bench "$server" fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 100; stop
    start "$server"; bench "$server" trigger --concurrency 32 --seconds 10; stop
    start "$server"; bench "$server" connections --count 10000; stop
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(server, mode, f):
    vals = [f(r) for r in rows if r["server"] == server and r["mode"] == mode]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
print("| measurement | herald | sockudo |")
print("|---|---|---|")
for name, mode, f in [
    ("fan-out: lost", "fanout", lambda r: r["lost"]),
    ("fan-out: p50 (ms)", "fanout", lambda r: r["latency"]["p50_us"] / 1000),
    ("fan-out: p99 (ms)", "fanout", lambda r: r["latency"]["p99_us"] / 1000),
    ("fan-out: server CPU per delivery (µs)", "fanout", lambda r: r["server_cpu_us_per_delivery"]),
    ("trigger: requests/s", "trigger", lambda r: r["requests_per_s"]),
    ("trigger: errors", "trigger", lambda r: r["errors"]),
    ("trigger: server CPU per request (µs)", "trigger", lambda r: r["server_cpu_us_per_request"]),
    ("idle connection: server memory (B)", "connections", lambda r: r["server_bytes_per_connection"]),
    ("connects per second", "connections", lambda r: r["connects_per_s"]),
]:
    vals = [med(s, mode, f) for s in ("herald", "sockudo")]
    print(f"| {name} | " + " | ".join("—" if v is None else f"{v:,.2f}".rstrip("0").rstrip(".") for v in vals) + " |")
PY
