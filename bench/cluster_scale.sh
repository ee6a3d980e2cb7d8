#!/usr/bin/env bash
# Issue 14's measurement: what a Herald cluster (adapter = "redis") costs per node as it
# scales out. Every run starts its own Redis on free ports (never 6379) and N fresh nodes,
# and measures a window of DURATION seconds after WARMUP seconds of publishing, each node's
# CPU (/proc/PID/stat) and the Redis servers' read by herald-bench (`fanout --warmup`):
#
# - concentrated, N = 1 3 5: SUBSCRIBERS (1,000) subscribers on as many public channels (one
#   each, as per-user private channels would be), all on node A, RATE (5,000) events/s
#   published over HTTP to A. The nodes that hold no subscriber should cost nothing; the
#   report's idle_cpu_ratio is (their CPU summed) / (A's CPU).
# - spread, N = 1 2 4 6: the load per node held constant. Each node holds SPREAD_SUBSCRIBERS
#   (1,000) subscribers on channels of their own (one each) and is published
#   SPREAD_RATE (1,000) events/s for them, so it makes SPREAD_RATE deliveries/s whatever N;
#   the cluster as a whole takes N times that. A flat cost per delivery on every node, and
#   a flat Redis cost per event, is what scaling out should look like.
#
# Redis (REDIS=...):
# - single: one redis-server.
# - cluster: a Redis Cluster of three masters (redis-server --cluster-enabled yes, joined by
#   redis-cli --cluster create --cluster-yes), given to Herald as
#   redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3; events go out with SPUBLISH on
#   the shard of their channel's slot. Redis CPU is the sum over the three servers.
#
# NODE_WORKERS sets each node's runtime threads (TOKIO_WORKER_THREADS; default: one per
# core). Six nodes of two threads each share these two cores, so a run with more nodes
# also measures more threads contending for the same cores; one thread per node is the
# closer model of nodes that each have their own.
#
# Each run prints one JSON line and appends it to OUT (default
# bench/results/cluster_scale.jsonl, or cluster_scale-redis-cluster.jsonl with REDIS=cluster,
# emptied first); the medians are printed at the end (bench/cluster_scale_medians.py).
#
# Usage: [REDIS=single|cluster] [SCENARIOS="concentrated spread"] [CONCENTRATED_NODES="1 3 5"]
#        [SPREAD_NODES="1 2 4 6"] [DURATION=20] [WARMUP=5] [RATE=5000] [SUBSCRIBERS=1000]
#        [SPREAD_RATE=1000] [SPREAD_SUBSCRIBERS=1000] [PAYLOAD=100] [OUT=FILE] [NO_BUILD=1]
#        [NODE_WORKERS=n] [HERALD_BIN=path]
#        bench/cluster_scale.sh [rounds]   (default 3)
# HERALD_BIN runs another build of the server (a "before" copy, for interleaved A/B runs);
# its path is recorded in each line.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3}
redis_kind=${REDIS:-single}
scenarios=${SCENARIOS:-concentrated spread}
duration=${DURATION:-20} warmup=${WARMUP:-5} payload=${PAYLOAD:-100}
case $redis_kind in
  single) default_out=bench/results/cluster_scale.jsonl ;;
  cluster) default_out=bench/results/cluster_scale-redis-cluster.jsonl ;;
  *) echo "REDIS must be single or cluster, not '$redis_kind'" >&2; exit 2 ;;
esac
out=${OUT:-$default_out}
herald_bin=${HERALD_BIN:-target/release/herald}
[ -n "${NO_BUILD:-}" ] || nice -n 19 cargo build --release -q -p herald-cli -p herald-bench
mkdir -p "$(dirname "$out")"
: > "$out"
tmp=$(mktemp -d)
node_pids=() redis_pids=()
stop_all() {
  local p
  for p in "${node_pids[@]}" "${redis_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${node_pids[@]}" "${redis_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  node_pids=() redis_pids=()
}
trap 'stop_all; rm -rf "$tmp"' EXIT

# wait_redis PORT: until it answers PING (5 s).
wait_redis() {
  for _ in $(seq 50); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "redis-server on port $1 did not answer" >&2
  return 1
}

# start_redis: a fresh Redis of the chosen kind; sets redis_pids and redis_url.
start_redis() {
  local port ports=() dir
  if [ "$redis_kind" = single ]; then
    port=$(free_port 10000)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      > "$tmp/redis-$port.log" 2>&1 &
    redis_pids+=($!)
    wait_redis "$port"
    redis_url=redis://127.0.0.1:$port/0
    return
  fi
  # REDIS=cluster: three masters, no replicas, the 16384 slots split between them.
  for _ in 1 2 3; do
    port=$(free_port 10000)
    dir=$tmp/redis-$port
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --dir "$dir" \
      > "$dir/redis.log" 2>&1 &
    redis_pids+=($!)
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_redis "$port"; done
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
    > "$tmp/cluster-create.log" 2>&1 \
    || { echo "redis-cli --cluster create failed: $(tail -3 "$tmp/cluster-create.log")" >&2; return 1; }
  local ok=
  for _ in $(seq 100); do
    redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && ok=1 && break
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "the Redis Cluster on ${ports[*]} did not reach cluster_state:ok" >&2; return 1; }
  redis_url=redis+cluster://$(IFS=,; echo "${ports[*]/#/127.0.0.1:}")
}

# start_node NAME: a node on the current Redis; sets node_addr and adds its pid to node_pids.
# Herald prints its address once the node is ready (a cluster node: once it has joined
# through Redis), so a node that cannot use the URL fails here after start_herald's 5 s,
# with its own last words, instead of hanging the run.
start_node() {
  local name=$1
  printf 'adapter = "redis"\nredis_url = "%s"\nredis_prefix = "scale"\nadmin_port = 0\n' \
    "$redis_url" > "$tmp/node.toml"
  if [ -n "${NODE_WORKERS:-}" ]; then
    TOKIO_WORKER_THREADS=$NODE_WORKERS HERALD_STDERR=$tmp/$name.err \
      start_herald "$herald_bin" --config "$tmp/node.toml"
  else
    HERALD_STDERR=$tmp/$name.err start_herald "$herald_bin" --config "$tmp/node.toml"
  fi
  node_pids+=("$HERALD_PID")
  node_addr=$HERALD_ADDR
  [ -n "$node_addr" ] && return 0
  echo "node $name did not start with redis_url $redis_url:" >&2
  tail -3 "$tmp/$name.err" >&2
  return 1
}

# one_run SCENARIO N ROUND: a fresh Redis and N fresh nodes, one harness run, one JSON line.
one_run() {
  local scenario=$1 nodes=$2 round=$3 i addrs=() load_before load_after
  start_redis
  for i in $(seq "$nodes"); do
    start_node "n$i" || exit 3
    addrs+=("$node_addr")
  done
  local all pids
  all=$(IFS=,; echo "${addrs[*]}") pids=$(IFS=,; echo "${node_pids[*]}")
  local layout
  case $scenario in
    concentrated)
      layout=(--subscribers "${SUBSCRIBERS:-1000}" --channels "${SUBSCRIBERS:-1000}"
        --rate "${RATE:-5000}" --subscribe-to "${addrs[0]}") ;;
    spread)
      local subs=$(( ${SPREAD_SUBSCRIBERS:-1000} * nodes ))
      layout=(--subscribers "$subs" --channels "$subs" --rate $(( ${SPREAD_RATE:-1000} * nodes ))
        --subscribe-to "$all" --publish-to "$all") ;;
  esac
  load_before=$(cat /proc/loadavg)
  if ! target/release/herald-bench --addr "${addrs[0]}" --pid "$pids" fanout "${layout[@]}" \
    --seconds "$duration" --warmup "$warmup" --payload "$payload" \
    --redis-pid "$(IFS=,; echo "${redis_pids[*]}")" > "$tmp/run.json" 2> "$tmp/run.err"; then
    echo "$scenario N=$nodes: herald-bench failed: $(tail -2 "$tmp/run.err")" >&2
    stop_all
    return
  fi
  load_after=$(cat /proc/loadavg)
  stop_all
  python3 - "$tmp/run.json" "$scenario" "$nodes" "$round" "$redis_kind" "$load_before" "$load_after" \
    "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo -dirty)" "$herald_bin" <<'PY' | tee -a "$out"
import json, os, sys
r = json.load(open(sys.argv[1]))
scenario, nodes, rnd, redis, load_before, load_after, commit, herald_bin = sys.argv[2:]
nodes = int(nodes)
w = r["window"]
cpu = w["server_cpu_s_by_pid"]
# deliveries_by_node follows --subscribe-to, which lists the nodes in --pid order.
delivered = w["deliveries_by_node"] + [0] * (nodes - len(w["deliveries_by_node"]))
per_delivery = [round(c * 1e6 / d, 2) if d else None for c, d in zip(cpu, delivered)]
secs = w["seconds"]
line = {
    "scenario": scenario, "nodes": nodes, "redis": redis, "round": int(rnd), "commit": commit,
    "herald_bin": herald_bin,
    "node_workers": int(os.environ["NODE_WORKERS"]) if os.environ.get("NODE_WORKERS") else None,
    "subscribers": r["subscribers"], "channels": r["channels"],
    "rate_events_per_s": r["rate_events_per_s"], "payload_bytes": r["payload_bytes"],
    "window_s": secs, "events_sent": w["events_sent"], "events_per_s": w["events_per_s"],
    "deliveries": w["deliveries"], "deliveries_per_s": round(w["deliveries"] / secs),
    "lost": r["lost"], "deliveries_expected": r["deliveries_expected"],
    "node_cpu_s": cpu, "node_deliveries": delivered, "node_cpu_us_per_delivery": per_delivery,
    "redis_cpu_s": w["redis_cpu_s"], "redis_cpu_s_per_10s": round(w["redis_cpu_s"] * 10 / secs, 3),
    "redis_cpu_us_per_event": w["redis_cpu_us_per_event"],
    "harness_cpu_s": w["harness_cpu_s"],
    # Everything measured, against the two cores' capacity over the window.
    "machine_busy": round((sum(cpu) + w["redis_cpu_s"] + w["harness_cpu_s"]) / (2 * secs), 3),
    "latency": r["latency"], "loadavg_before": load_before, "loadavg_after": load_after,
}
if scenario == "concentrated":
    line["a_cpu_s"] = cpu[0]
    line["idle_nodes_cpu_s"] = round(sum(cpu[1:]), 3)
    line["idle_cpu_ratio"] = round(sum(cpu[1:]) / cpu[0], 4) if cpu[0] else None
print(json.dumps(line))
PY
}

echo "load before: $(cat /proc/loadavg)" >&2
for round in $(seq "$rounds"); do
  for scenario in $scenarios; do
    case $scenario in
      concentrated) sizes=${CONCENTRATED_NODES:-1 3 5} ;;
      spread) sizes=${SPREAD_NODES:-1 2 4 6} ;;
      *) echo "unknown scenario '$scenario'" >&2; exit 2 ;;
    esac
    for n in $sizes; do one_run "$scenario" "$n" "$round"; done
  done
done
echo "load after: $(cat /proc/loadavg)" >&2
python3 bench/cluster_scale_medians.py "$out"
