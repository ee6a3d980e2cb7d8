#!/usr/bin/env bash
# A million connections on one machine (issue 31): NODES herald nodes of one cluster on a
# fresh redis-server, each held PER_NODE connections by a harness process of its own
# (`herald-bench hold`), every connection subscribed to one big channel (`million`) and some
# to small ones (`small-0`…). A process here may hold at most 20,000 descriptors (a hard
# limit), hence the many processes. Nodes start in stages (REDIS_AT); after each stage a
# short publish loop on the small channels (which every node has subscribers of) measures
# Redis's CPU per event at that node count. Then, with everything held, BIG_EVENTS events
# go to the big channel, BIG_GAP seconds apart, while the small channels get SMALL_RATE
# events per second; every harness process counts what reached it.
#
# Prints JSON lines (stages, publish loops, totals) on stdout and a summary on stderr;
# raises the system settings it needs and restores them, and stops everything it started,
# on any exit.
#
# Where the broadcast's time goes: bench/cpu_timeline.py samples the machine's CPU (user,
# system, softirq, idle) and the nodes', harnesses' and Redis's every half second, and each
# big event's line says what each spent between its publish and its last delivery, and how
# the harness processes' first and last arrivals spread. With PERF=1, `perf record -a -g`
# runs for PERF_SECS (default BIG_GAP) from the first big event, and its report by process
# and by symbol is printed and kept in PERF_OUT (default bench/results/million-perf.txt).
#
# Usage: NODES=5 PER_NODE=2000 REDIS_AT="2 5" bench/million.sh   (a check, under a minute)
#        NODES=50 PER_NODE=19500 bench/million.sh         (the million; the machine is busy)
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-50}
PER_NODE=${PER_NODE:-19500}
REDIS_AT=${REDIS_AT:-"5 20 50"}
SMALL_CHANNELS=${SMALL_CHANNELS:-10}
# Every node gets two subscribers of each small channel by default.
SMALL_EVERY=${SMALL_EVERY:-$(( PER_NODE / (SMALL_CHANNELS * 2) > 0 ? PER_NODE / (SMALL_CHANNELS * 2) : 1 ))}
SMALL_RATE=${SMALL_RATE:-20}
BIG_EVENTS=${BIG_EVENTS:-3}
BIG_GAP=${BIG_GAP:-10}
REDIS_EVENTS=${REDIS_EVENTS:-2000}
REDIS_RATE=${REDIS_RATE:-400}
IDLE_SECS=${IDLE_SECS:-5}
SUBSCRIBE_TIMEOUT=${SUBSCRIBE_TIMEOUT:-900}
# The machine is shared: a stage starts only if MemAvailable would stay above this after it
# (at BYTES_PER_CONNECTION for node, harness and kernel together), and the run stops if it
# falls below MIN_AVAILABLE_MB while connecting. Every process started also volunteers
# first for the OOM killer.
MIN_AVAILABLE_MB=${MIN_AVAILABLE_MB:-1500}
BYTES_PER_CONNECTION=${BYTES_PER_CONNECTION:-15000}
RELEASE=${RELEASE:-target/release}
if [ "$PER_NODE" -gt 19600 ]; then
  echo "PER_NODE=$PER_NODE: a process holds at most $(ulimit -Hn) descriptors here" >&2
  exit 2
fi
[ -z "${NO_BUILD:-}" ] && cargo build --release -q -p herald-cli -p herald-bench

tmp=$(mktemp -d)
pids=()      # every process started, stopped on exit
saved=()     # "key=value" of each sysctl changed, restored on exit
ctl=()       # write ends of the harness processes' control FIFOs
cleanup() {
  set +e
  for fd in "${ctl[@]}"; do eval "exec $fd>&-" 2>/dev/null; done
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  [ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  for kv in "${saved[@]}"; do sysctl -q -w "$kv" > /dev/null 2>&1 || echo "could not restore $kv" >&2; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# raise KEY VALUE: sets the sysctl if it exists and is lower (first field compared), keeping
# the old value to restore.
raise() {
  local key=$1 value=$2 path=/proc/sys/${1//.//} old
  [ -w "$path" ] || { echo "{\"sysctl\":\"$key\",\"skipped\":\"not writable\"}"; return 0; }
  old=$(tr '\t' ' ' < "$path")
  if [ "${old%% *}" -lt "${value%% *}" ]; then
    saved+=("$key=$old")
    sysctl -q -w "$key=$value" > /dev/null && echo "{\"sysctl\":\"$key\",\"from\":\"$old\",\"to\":\"$value\"}"
  fi
}
raise net.core.somaxconn 65535
raise net.ipv4.tcp_max_syn_backlog 65535
# Loopback deliveries queue in the per-CPU backlog: a burst to a million sockets must not
# overflow it (each overflow a retransmit, 200 ms or more).
raise net.core.netdev_max_backlog 100000
# Pages of socket buffers TCP may use before it squeezes them: 4, 6 and 8 GiB.
raise net.ipv4.tcp_mem "1048576 1572864 2097152"
# Two sockets per connection, both ends on this machine.
raise fs.file-max $(( NODES * PER_NODE * 2 + 1000000 ))
raise net.netfilter.nf_conntrack_max $(( NODES * PER_NODE * 2 + 100000 ))
# Ephemeral ports are not widened: the harness binds its sockets to 127.a.b.1, 50,000
# source addresses, so each uses about 20 ports even at a million.

# volunteer PID: the OOM killer takes this process before anyone else's.
volunteer() { echo 1000 > "/proc/$1/oom_score_adj" 2>/dev/null || true; }
available_mb() { awk '$1 == "MemAvailable:" { print int($2 / 1024) }' /proc/meminfo; }
meminfo() { awk -v k="$1:" '$1 == k { print $2 * 1024 }' /proc/meminfo; }
sock_mem() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) * 4096 }' /proc/net/sockstat; }
rss() { awk '$1 == "VmRSS:" { print $2 * 1024 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# cpu_ticks PID...: user + system CPU of the processes together, in clock ticks (1/100 s).
cpu_ticks() {
  local p sum=0
  for p in "$@"; do
    sum=$(( sum + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$sum"
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --maxclients 10000 > "$tmp/redis.log" &
redis_pid=$!
pids+=("$redis_pid"); volunteer "$redis_pid"
for _ in $(seq 50); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done
cat > "$tmp/node.toml" <<EOF
adapter = "redis"
redis_url = "redis://127.0.0.1:$port/0"
admin_port = 0
max_open_connections = $(( PER_NODE + 300 ))
EOF
slab_before=$(meminfo Slab)
sockmem_before=$(sock_mem)

addrs=(); node_pids=(); node_rss0=(); harness_pids=()
started_all=$(date +%s.%N)
connect_secs=0
smalls=$(seq -s, -f 'small-%g' 0 $(( SMALL_CHANNELS - 1 )))
# Stages every STAGE_STEP nodes and at each REDIS_AT count, so a run the memory guard stops
# still ends with as many as fitted.
STAGE_STEP=${STAGE_STEP:-10}
stages=$( (for s in $REDIS_AT $(seq "$STAGE_STEP" "$STAGE_STEP" "$NODES"); do
  [ "$s" -lt "$NODES" ] && echo "$s"; done; echo "$NODES") | sort -n | uniq)

# report_all: asks every harness process for its report and waits for all of them; their
# report lines land in $tmp/reports.
report_all() {
  local i want
  for i in "${!ctl[@]}"; do echo report >&"${ctl[$i]}"; done
  for i in "${!ctl[@]}"; do
    want=$(( ${want_reports[$i]:-0} + 1 ))
    for _ in $(seq 600); do
      [ "$(grep -c '"phase":"report"' "$tmp/hold-$i.out" || true)" -ge "$want" ] && break
      sleep 0.1
    done
    want_reports[$i]=$want
  done
  for i in "${!ctl[@]}"; do grep '"phase":"report"' "$tmp/hold-$i.out" | tail -1 >> "$tmp/reports"; done
}
want_reports=()

n=0
stopped_at=
for stage in $stages; do
  need_mb=$(( (stage - n) * PER_NODE / 1000 * BYTES_PER_CONNECTION / 1000 ))
  if [ $(( $(available_mb) - need_mb )) -lt "$MIN_AVAILABLE_MB" ]; then
    stopped_at="before $stage nodes: $(available_mb) MB available, about $need_mb MB needed"
    echo "{\"stopped\":\"$stopped_at\"}"
    NODES=$n
    break
  fi
  first_new=$n
  while [ "$n" -lt "$stage" ]; do
    "$RELEASE/herald" serve --port 0 --config "$tmp/node.toml" > "$tmp/node-$n.out" 2> "$tmp/node-$n.err" &
    node_pids+=($!); pids+=($!); volunteer $!
    addr=
    for _ in $(seq 100); do
      addr=$(grep -m1 -o 'listening on [^ ]*' "$tmp/node-$n.out" 2>/dev/null | sed 's/listening on //') || true
      [ -n "$addr" ] && break
      sleep 0.1
    done
    [ -n "$addr" ] || { echo "node $n did not start:" >&2; tail -5 "$tmp/node-$n.err" >&2; exit 1; }
    addrs+=("$addr")
    n=$(( n + 1 ))
  done
  sleep 1
  for i in $(seq "$first_new" $(( n - 1 ))); do node_rss0[$i]=$(rss "${node_pids[$i]}"); done
  t0=$(date +%s.%N)
  for i in $(seq "$first_new" $(( n - 1 ))); do
    mkfifo "$tmp/ctl-$i"
    "$RELEASE/herald-bench" --addr "${addrs[$i]}" hold --count "$PER_NODE" --channel million \
      --small-channels "$SMALL_CHANNELS" --small-every "$SMALL_EVERY" --first $(( i * PER_NODE )) --own-channel "own-$i" \
      < "$tmp/ctl-$i" > "$tmp/hold-$i.out" 2> "$tmp/hold-$i.err" &
    harness_pids+=($!); pids+=($!); volunteer $!
    exec {fd}> "$tmp/ctl-$i"
    ctl[$i]=$fd
  done
  for i in $(seq "$first_new" $(( n - 1 ))); do
    until grep -q '"phase":"subscribed"' "$tmp/hold-$i.out" 2>/dev/null; do
      kill -0 "${harness_pids[$i]}" 2>/dev/null || { echo "harness $i died:" >&2; tail -5 "$tmp/hold-$i.err" >&2; exit 1; }
      if [ "$(available_mb)" -lt "$MIN_AVAILABLE_MB" ]; then
        echo "{\"stopped\":\"$(available_mb) MB available while connecting stage $stage\"}"; exit 1
      fi
      if python3 -c "import sys,time; sys.exit(time.time() - $t0 < $SUBSCRIBE_TIMEOUT)"; then
        echo "harness $i not subscribed after ${SUBSCRIBE_TIMEOUT}s" >&2; exit 1
      fi
      sleep 0.2
    done
  done
  t1=$(date +%s.%N)
  connect_secs=$(python3 -c "print($connect_secs + $t1 - $t0)")
  for i in $(seq "$first_new" $(( n - 1 ))); do grep '"phase":"subscribed"' "$tmp/hold-$i.out"; done > "$tmp/stage-$stage"
  python3 - "$tmp/stage-$stage" "$stage" "$t0" "$t1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
held = sum(r["connections"] for r in rows)
secs = float(sys.argv[4]) - float(sys.argv[3])
print(json.dumps({"stage_nodes": int(sys.argv[2]), "new_connections": held,
                  "failed": sum(r["failed"] for r in rows), "secs": round(secs, 2),
                  "connects_per_s": round(held / secs)}))
EOF
  if echo " $REDIS_AT " | grep -q " $stage "; then
    # Once on the small channels (every node has subscribers of each), once on a channel
    # only the last node has, published from the first.
    for to in "$smalls" "own-$(( n - 1 ))"; do
    redis-cli -p "$port" info commandstats > "$tmp/cmd-before"
    "$RELEASE/herald-bench" --addr "${addrs[0]}" publish --channels "$to" \
      --events "$REDIS_EVENTS" --rate "$REDIS_RATE" --redis-pid "$redis_pid" --idle 3 \
      2>/dev/null > "$tmp/loop.json"
    redis-cli -p "$port" info commandstats > "$tmp/cmd-after"
    # The loop's JSON line, with what Redis ran per event published (commands and their
    # microseconds), from its command statistics.
    python3 - "$tmp/loop.json" "$tmp/cmd-before" "$tmp/cmd-after" "$stage" "$to" <<'EOF2'
import json, re, sys
r = json.load(open(sys.argv[1])); r['redis_loop_nodes'] = int(sys.argv[4]); r.pop('sent', None)
r['interested_nodes'] = 1 if sys.argv[5].startswith('own-') else int(sys.argv[4])
def stats(path):
    out = {}
    for line in open(path):
        m = re.match(r'cmdstat_([^:]+):calls=(\d+),usec=(\d+)', line.strip())
        if m: out[m[1]] = (int(m[2]), int(m[3]))
    return out
b, a = stats(sys.argv[2]), stats(sys.argv[3])
n = max(r['published'], 1)
per = {k: {'calls': round((v[0] - b.get(k, (0, 0))[0]) / n, 2), 'usec': round((v[1] - b.get(k, (0, 0))[1]) / n, 1)}
       for k, v in a.items() if v[0] - b.get(k, (0, 0))[0] > n / 10}
r['redis_commands_per_event'] = per
print(json.dumps(r))
EOF2
    done
  fi
done
[ "$NODES" -gt 0 ] || exit 1
total=$(( NODES * PER_NODE ))
sleep 2
slab_after=$(meminfo Slab)
sockmem_after=$(sock_mem)
rss_after=()
for i in "${!node_pids[@]}"; do rss_after[$i]=$(rss "${node_pids[$i]}"); done
harness_rss=0
for p in "${harness_pids[@]}"; do harness_rss=$(( harness_rss + $(rss "$p") )); done
tcp_inuse=$(awk '$1 == "TCP:" { print $3 }' /proc/net/sockstat)
# What holding everything costs while nothing happens: the nodes' timers and sweepers, the
# heartbeats, Redis.
idle_nodes0=$(cpu_ticks "${node_pids[@]}"); idle_redis0=$(cpu_ticks "$redis_pid")
sleep "$IDLE_SECS"
idle_nodes=$(( $(cpu_ticks "${node_pids[@]}") - idle_nodes0 )); idle_redis=$(( $(cpu_ticks "$redis_pid") - idle_redis0 ))

# The broadcast: small channels throughout, big events BIG_GAP apart from the second second.
report_all
join() { local IFS=,; echo "$*"; }
# tcp_counters: retransmitted segments, tail loss probes and RTO timeouts so far (this
# network namespace), and the packets the per-CPU backlogs dropped (the machine).
tcp_counters() {
  nstat -az TcpRetransSegs TcpExtTCPLossProbes TcpExtTCPTimeouts 2>/dev/null \
    | awk '$1 ~ /^Tcp/ { printf "%s=%s ", $1, $2 }'
  awk '{ d += strtonum("0x" $2) } END { print "BacklogDrops=" d }' /proc/net/softnet_stat
}
tcp_before=$(tcp_counters)
python3 bench/cpu_timeline.py "$tmp/cpu.jsonl" 0.5 "nodes=$(join "${node_pids[@]}")" \
  "harness=$(join "${harness_pids[@]}")" "redis=$redis_pid" &
pids+=($!)
small_secs=$(( 2 + BIG_EVENTS * BIG_GAP ))
"$RELEASE/herald-bench" --addr "${addrs[0]}" publish --channels "$smalls" \
  --events $(( SMALL_RATE * small_secs )) --rate "$SMALL_RATE" --first 1000000 \
  > "$tmp/small.json" 2>/dev/null &
small_pid=$!; pids+=("$small_pid")
sleep 2
big_rate=$(python3 -c "print(1 / $BIG_GAP)")
if [ -n "${PERF:-}" ]; then
  perf record -a -g -F 199 -o "$tmp/perf.data" -- sleep "${PERF_SECS:-$BIG_GAP}" > /dev/null 2>&1 &
  perf_pid=$!
fi
"$RELEASE/herald-bench" --addr "${addrs[$(( NODES / 2 ))]}" publish --channels million \
  --events "$BIG_EVENTS" --rate "$big_rate" > "$tmp/big.json" 2>/dev/null
wait "$small_pid" || true
if [ -n "${PERF:-}" ]; then
  wait "$perf_pid" || true
  perf_out=${PERF_OUT:-bench/results/million-perf.txt}
  # `head` closes its pipe early: no pipefail here.
  ( set +o pipefail
    echo "# perf record -a -g -F 199 for ${PERF_SECS:-$BIG_GAP} s from the first big event"
    echo "## by process name and object"
    perf report -i "$tmp/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^$' | grep '%' | head -20
    echo "## by symbol (top 40)"
    perf report -i "$tmp/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%' | head -40
  ) > "$perf_out"
  cat "$perf_out" >&2
fi
# Reports count what arrived since the last one: gather them until every big event has
# reached every connection, or a minute more has passed.
: > "$tmp/reports"
for _ in 1 2 3 4 5 6 7; do
  sleep "$BIG_GAP"
  report_all
  python3 - "$tmp/reports" "$BIG_EVENTS" "$NODES" <<'EOF2' && break
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
last = rows[-int(sys.argv[3]):]
held = sum(r["connections"] for r in last)
got = {}
for r in rows:
    for b in r["big"]:
        got[b["n"]] = got.get(b["n"], 0) + b["count"]
sys.exit(0 if all(got.get(n, 0) >= held for n in range(int(sys.argv[2]))) else 1)
EOF2
done

tcp_after=$(tcp_counters)
python3 - "$tmp/reports" "$tmp/big.json" "$tmp/small.json" "$tmp/cpu.jsonl" <<EOF
import json, sys
sys.path.insert(0, "bench")
from cpu_timeline import window
timeline = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
spread = lambda xs: {"min": round(min(xs), 1), "p50": round(sorted(xs)[len(xs) // 2], 1), "max": round(max(xs), 1)} if xs else None
reports = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
big = json.load(open(sys.argv[2])); small = json.load(open(sys.argv[3]))
total = $total
last = reports[-$NODES:]
held = sum(r["connections"] for r in last)
closed = sum(r["closed"] for r in last)
close_codes = {}
for r in last:
    for code, n in r.get("close_codes", {}).items():
        close_codes[code] = close_codes.get(code, 0) + n
events = []
for sent in big["sent"]:
    rows = [b for r in reports for b in r["big"] if b["n"] == sent["n"]]
    got = sum(b["count"] for b in rows)
    last = max((b["last_ns"] for b in rows), default=0)
    first = min((b["first_ns"] for b in rows), default=0)
    all_ms = round((last - sent["sent_ns"]) / 1e6, 1) if rows else None
    events.append({"n": sent["n"], "delivered": got, "lost": held - got,
                   "first_ms": round((first - sent["sent_ns"]) / 1e6, 1) if rows else None,
                   "all_ms": all_ms,
                   "process_first_ms": spread([(b["first_ns"] - sent["sent_ns"]) / 1e6 for b in rows]),
                   "process_last_ms": spread([(b["last_ns"] - sent["sent_ns"]) / 1e6 for b in rows]),
                   "cpu": window(timeline, sent["sent_ns"], sent["sent_ns"] + int((all_ms or 0) * 1e6))})
lat = sorted(x for r in reports for x in r["small_latency_us"])
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000 if lat else None
rss0 = [$(IFS=,; echo "${node_rss0[*]}")]
rss1 = [$(IFS=,; echo "${rss_after[*]}")]
user = sum(rss1) - sum(rss0)
kernel = ($slab_after - $slab_before) + ($sockmem_after - $sockmem_before)
out = {
  "million": True, "nodes": $NODES, "per_node": $PER_NODE, "connections": held,
  "expected": total, "closed_during_run": closed, "close_codes": close_codes, "stopped_early": "$stopped_at" or None,
  "connect_secs": round($connect_secs, 1), "connects_per_s": round(held / $connect_secs),
  "node_rss_baseline_bytes": sum(rss0), "node_rss_after_bytes": sum(rss1),
  "user_bytes_per_connection": round(user / max(held, 1)),
  "harness_bytes_per_connection": round($harness_rss / max(held, 1)),
  "slab_delta_bytes": $slab_after - $slab_before, "tcp_buffer_delta_bytes": $sockmem_after - $sockmem_before,
  "kernel_bytes_per_connection": round(kernel / max(held, 1)),
  "kernel_note": "both ends (server and harness sockets) of each connection, Slab + TCP buffers",
  "tcp_sockets_in_use": $tcp_inuse,
  "idle_nodes_cpu_share": round($idle_nodes / 100 / $IDLE_SECS, 3),
  "idle_redis_cpu_share": round($idle_redis / 100 / $IDLE_SECS, 3),
  "big_events": events,
  "tcp_during_broadcast": {k: int(v) - int(dict(x.split("=") for x in "$tcp_before".split())[k])
                           for k, v in (x.split("=") for x in "$tcp_after".split())},
  "small_deliveries": len(lat), "small_published": small["published"],
  "small_p50_ms": q(0.50), "small_p99_ms": q(0.99), "small_max_ms": lat[-1] / 1000 if lat else None,
}
print(json.dumps(out))
s = out
print(f"{s['connections']:,} connections over {s['nodes']} nodes ({s['closed_during_run']} closed, by code {s['close_codes']}: 0 is no Close frame), "
      f"{s['connects_per_s']:,}/s to all subscribed ({s['connect_secs']} s)\n"
      f"  node memory {s['user_bytes_per_connection']} B per connection over the fresh baselines; "
      f"harness {s['harness_bytes_per_connection']} B\n"
      f"  kernel {s['kernel_bytes_per_connection']} B per connection (both ends: slab {s['slab_delta_bytes']/2**20:.0f} MiB, "
      f"TCP buffers {s['tcp_buffer_delta_bytes']/2**20:.0f} MiB)\n"
      + f"  idle: the nodes use {s['idle_nodes_cpu_share']:.1%} of a core together, Redis {s['idle_redis_cpu_share']:.1%}\n"
      + "".join(f"  big event {e['n']}: {e['delivered']:,} delivered ({e['lost']} lost), first after {e['first_ms']} ms, all after {e['all_ms']} ms\n"
                f"    harness processes' first arrivals {e['process_first_ms']} ms, last {e['process_last_ms']} ms\n"
                f"    CPU meanwhile: {e['cpu']}\n" for e in events)
      + f"  TCP during the broadcast: {s['tcp_during_broadcast']}\n"
      + f"  small channels meanwhile: {s['small_deliveries']} deliveries, p50 {s['small_p50_ms']} ms, p99 {s['small_p99_ms']} ms, max {s['small_max_ms']} ms",
      file=sys.stderr)
EOF
for i in "${!node_pids[@]}"; do
  grep -i 'warn\|error' "$tmp/node-$i.err" | head -3 | sed "s/^/node $i: /" >&2 || true
done
