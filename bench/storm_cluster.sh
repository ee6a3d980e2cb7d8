#!/usr/bin/env bash
# Reconnect storms on a two-node Herald cluster (adapter = "redis", a fresh redis-server),
# the storm of bench/storm.sh at sizes one node cannot take here:
#
# - "herald-cluster": 20,000 clients, issue 17's size. This sandbox caps every process at
#   20,000 open files, so two harness processes hold 10,000 each, each on its own node
#   with its own channel and user names (--prefix a-, b-), publishing and terminating
#   through that node; both storm at the same wall-clock time (--storm-at-unix-ms). Their
#   two reports are merged into one line: counts and server CPU and memory summed, times
#   measured from the earlier storm start, percentiles the worse of the two (an upper bound:
#   the histograms are not merged).
# - "herald-drain": the drain. 18,500 clients on node A, events published through node B;
#   SIGTERM to A, whose clients get 4200 and reconnect to B (--via drain). Server CPU and
#   memory are B's.
#
# Nodes run with terminate_close_code = 4200 and max_open_connections = 19950, as in
# bench/storm.sh, and the cluster defaults otherwise (cluster_ops_per_app = 25000 state
# changes waiting for Redis per app and node: a drain brings 2 per client, a sign-in and a
# subscription, to node B at once; CLUSTER_OPS sets it instead, and tags the servers
# "herald-cluster ops=N"). One JSON line per run goes to bench/results/storm_cluster.jsonl
# (storm_cluster-opsN.jsonl with CLUSTER_OPS); the medians are printed at the end.
# HERALD_BIN runs another build of the server (a "before" copy, for interleaved A/B runs;
# tagged in each line's "herald_bin"); NO_BUILD=1 skips the release build; OUT names the
# results file.
# Usage: [CLUSTER_CLIENTS=20000] [DRAIN_CLIENTS=18500] [CLUSTER_OPS=N] [HERALD_BIN=path]
#        [NO_BUILD=1] [OUT=file] bench/storm_cluster.sh [runs]   (default 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
half=$(( ${CLUSTER_CLIENTS:-20000} / 2 )) drain_clients=${DRAIN_CLIENTS:-18500}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p herald-cli -p herald-bench
herald_bin=${HERALD_BIN:-target/release/herald}
ops=${CLUSTER_OPS:-}
out=${OUT:-bench/results/storm_cluster${ops:+-ops$ops}.jsonl}
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$tmp/redis.log" &
sleep 0.3
cat > "$tmp/node.toml" <<EOF
adapter = "redis"
redis_url = "redis://127.0.0.1:$redis_port/0"
max_open_connections = 19950
admin_port = 0
${ops:+cluster_ops_per_app = $ops}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
terminate_close_code = 4200
EOF

node() { # name; starts a node, sets node_pid and node_addr
  "$herald_bin" serve --port 0 --config "$tmp/node.toml" > "$tmp/$1.out" 2>"$tmp/$1.err" &
  node_pid=$! node_addr=
  for _ in $(seq 100); do
    node_addr=$(grep -m1 -o 'listening on [^ ]*' "$tmp/$1.out" "$tmp/$1.err" 2>/dev/null | sed 's/.*listening on //') || true
    [ -n "$node_addr" ] && break
    sleep 0.1
  done
}
stop() { for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }
flush() { redis-cli -p "$redis_port" flushall > /dev/null; }
storm=(--channels 50 --users 100 --rate 50 --settle 5)

cluster_run() {
  flush
  node a; local pa=$node_pid aa=$node_addr
  node b; local pb=$node_pid ab=$node_addr
  # Far enough ahead for both setups (10,000 connections each, ~1 s apiece here).
  local at=$(( $(date +%s%3N) + 8000 ))
  target/release/herald-bench --addr "$aa" --pid "$pa" storm --clients "$half" --prefix a- \
    --storm-at-unix-ms "$at" "${storm[@]}" > "$tmp/a.json" 2> "$tmp/a.log" &
  local ja=$!
  target/release/herald-bench --addr "$ab" --pid "$pb" storm --clients "$half" --prefix b- \
    --storm-at-unix-ms "$at" "${storm[@]}" > "$tmp/b.json" 2> "$tmp/b.log" &
  local jb=$!
  local ok=1
  wait "$ja" || ok=0
  wait "$jb" || ok=0
  stop "$pa" "$pb"
  if [ $ok = 0 ]; then
    echo "cluster storm failed: $(tail -1 "$tmp/a.log") / $(tail -1 "$tmp/b.log")" >&2
    return
  fi
  python3 - "$tmp/a.json" "$tmp/b.json" "${ops:+ ops=$ops}" "$herald_bin" <<'PY' | tee -a "$out"
import json, sys
parts = [json.load(open(p)) for p in sys.argv[1:3]]
start = min(p["storm_started_unix_ms"] for p in parts)
merged = dict(parts[0])
def total(key):
    vals = [p.get(key) for p in parts]
    return None if None in vals else round(sum(vals), 2)
for key in ("storm_clients", "closed", "closed_before_storm", "resubscribed", "not_resubscribed",
            "refused", "events_sent", "publish_errors", "deliveries", "expected_after_resubscribe",
            "lost_after_resubscribe", "duplicates", "setup_refused", "trigger_errors", "server_cpu_s",
            "harness_cpu_s", "server_rss_before_bytes", "server_rss_peak_bytes",
            "server_rss_after_bytes", "server_fds_before", "server_fds_after"):
    merged[key] = total(key)
for key in ("all_closed_ms", "all_resubscribed_ms", "last_resubscribed_ms"):
    vals = [p.get(key) for p in parts]
    merged[key] = None if None in vals else round(
        max(p["storm_started_unix_ms"] - start + p[key] for p in parts), 1)
for key in ("reconnect", "first_event_delay", "first_event_latency", "latency"):
    merged[key] = {q: max(p[key][q] for p in parts) for q in parts[0][key]}
for key in ("close_codes", "refused_by"):
    merged[key] = {}
    for p in parts:
        for k, v in p[key].items():
            merged[key][k] = merged[key].get(k, 0) + v
merged["server_cpu_us_per_reconnection"] = round(
    merged["server_cpu_s"] * 1e6 / max(1, merged["resubscribed"]), 1)
merged["storm_skew_ms"] = max(p["storm_started_unix_ms"] for p in parts) - start
merged["nodes"] = 2
merged["server"] = "herald-cluster" + sys.argv[3]
merged["herald_bin"] = sys.argv[4]
print(json.dumps(merged))
PY
}

drain_run() {
  flush
  node a; local pa=$node_pid aa=$node_addr
  node b; local pb=$node_pid ab=$node_addr
  if target/release/herald-bench --addr "$ab" --pid "$pb" storm --clients "$drain_clients" --via drain \
    --connect-to "$aa" --reconnect-to "$ab" --drain-pid "$pa" --hold 3 "${storm[@]}" \
    > "$tmp/d.json" 2> "$tmp/d.log"; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["server"]="herald-drain"+sys.argv[2]; r["nodes"]=2; r["herald_bin"]=sys.argv[3]; print(json.dumps(r))' \
      "$tmp/d.json" "${ops:+ ops=$ops}" "$herald_bin" | tee -a "$out"
  else
    echo "drain storm failed: $(tail -1 "$tmp/d.log")" >&2
  fi
  stop "$pa" "$pb"
}

echo "load before: $(uptime)" >&2
for _ in $(seq "$runs"); do
  cluster_run
  drain_run
done
echo "load after: $(uptime)" >&2
python3 bench/storm_medians.py "$out"
