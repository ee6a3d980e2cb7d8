#!/usr/bin/env bash
# permessage-deflate (RFC 7692): the same fan-out with clients that do not offer it ("plain")
# and with clients that do ("deflate"), and the memory of 10,000 idle connections both ways.
# Fan-out: 1,000 subscribers, 10 channels, 500 events/s of 1 KB for 10 s. The events are
# --payload-kind json: varied objects (ids, numbers, words) that compress about 2.6x at
# 1 KB, as real chat and dashboard events do; the default padding (one letter repeated)
# would compress to nothing and flatter compression (crates/herald-bench/src/payload.rs).
#
# Herald compresses by default, so the same default `herald serve` serves both clients: a
# plain client gets plain frames, a deflate client (--deflate, which fails the run if the
# server does not negotiate) gets frames of 256 B and more compressed. With SOCKUDO_BIN set,
# sockudo runs too, with WEBSOCKET_COMPRESSION=shared (override: SOCKUDO_COMPRESSION; its
# default is disabled). sockudo 5.2.0's modes: shared, window1kb and window2kb answer with
# no context takeover both ways, as Herald does; dedicated and window4kb to window32kb keep
# the server's context between messages, which the harness (a fresh inflater per message)
# refuses with a clear error. Its deflate client takes --deflate-optional, so the report's
# "deflate" says whether sockudo negotiated.
#
# Each measurement starts a fresh server, and runs alternate plain and deflate (and the
# servers) so that drift on the shared machine hits all. A run that fails (--deflate against
# a server that declines) prints why and is left out. One JSON line per run goes to
# bench/results/deflate.jsonl (OUT names another), tagged "server" and "client"; the
# medians are printed at the end.
# Usage: [SOCKUDO_BIN=/path/to/sockudo] bench/deflate.sh [runs]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3}
cargo build --release -q -p herald-cli -p herald-bench
out=${OUT:-bench/results/deflate.jsonl}
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

fanout=(fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 1000 --payload-kind json)
idle=(connections --count 10000)

start() { # server; sets pid and addr
  case $1 in
    herald)
      start_herald target/release/herald
      pid=$HERALD_PID addr=$HERALD_ADDR ;;
    sockudo)
      start_sockudo "$SOCKUDO_BIN" "$tmp" 16001 WEBSOCKET_COMPRESSION="${SOCKUDO_COMPRESSION:-shared}"
      pid=$SOCKUDO_PID addr=127.0.0.1:16001 ;;
  esac
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
bench() { # server client args...
  local server=$1 client=$2 flags=()
  shift 2
  case $server/$client in
    herald/deflate) flags=(--deflate) ;;
    sockudo/deflate) flags=(--deflate-optional) ;;
  esac
  if ! target/release/herald-bench --addr "$addr" --pid "$pid" "${flags[@]}" "$@" \
    2>"$tmp/err" > "$tmp/run.json"; then
    echo "$server $client $1 failed: $(tail -1 "$tmp/err")" >&2
    return
  fi
  python3 -c 'import json,sys; r=json.load(open(sys.argv[3])); r["server"]=sys.argv[1]; r["client"]=sys.argv[2]; print(json.dumps(r))' \
    "$server" "$client" "$tmp/run.json" | tee -a "$out"
}

servers=herald
[ -n "${SOCKUDO_BIN:-}" ] && servers="herald sockudo"
for _ in $(seq "$runs"); do
  for server in $servers; do
    for client in plain deflate; do
      start "$server"; bench "$server" "$client" "${fanout[@]}"; stop
      start "$server"; bench "$server" "$client" "${idle[@]}"; stop
    done
  done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
columns = [c for c in ("herald plain", "herald deflate", "sockudo plain", "sockudo deflate")
           if any(f'{r["server"]} {r["client"]}' == c for r in rows)]
def agg(column, mode, f, how):
    vals = [f(r) for r in rows if f'{r["server"]} {r["client"]}' == column and r["mode"] == mode]
    vals = [v for v in vals if v is not None]
    return how(vals) if vals else None
median = statistics.median
print("| measurement | " + " | ".join(columns) + " |")
print("|---|" + "---|" * len(columns))
for name, mode, f, how in [
    ("fan-out: runs that negotiated deflate", "fanout", lambda r: int(r["deflate"]), sum),
    ("fan-out: wire bytes per delivery", "fanout", lambda r: r["wire_bytes_per_delivery"], median),
    ("fan-out: lost", "fanout", lambda r: r["lost"], median),
    ("fan-out: p50 (ms)", "fanout", lambda r: r["latency"]["p50_us"] / 1000, median),
    ("fan-out: p99 (ms)", "fanout", lambda r: r["latency"]["p99_us"] / 1000, median),
    ("fan-out: server CPU per delivery (µs)", "fanout", lambda r: r["server_cpu_us_per_delivery"], median),
    ("fan-out: server peak memory (MB)", "fanout", lambda r: r["server_rss_peak_bytes"] / 1e6, median),
    ("fan-out: harness CPU (s)", "fanout", lambda r: r["harness_cpu_s"], median),
    ("idle connections: runs that negotiated deflate", "connections", lambda r: int(r["deflate"]), sum),
    ("idle connection: server memory (B)", "connections", lambda r: r["server_bytes_per_connection"], median),
    ("connects per second", "connections", lambda r: r["connects_per_s"], median),
]:
    vals = [agg(c, mode, f, how) for c in columns]
    print(f"| {name} | " + " | ".join("—" if v is None else f"{v:,.2f}".rstrip("0").rstrip(".") for v in vals) + " |")
PY
