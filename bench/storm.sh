#!/usr/bin/env bash
# Reconnect storm (issue 17): `herald-bench storm` holds N clients, each signed in
# (pusher:signin, signed by the harness) as one of 100 users and subscribed to one of 50
# public channels, then calls terminate_connections for all 100 users at once; every client
# reconnects, signs in and resubscribes at once, whatever its close code. Events (50/s over
# the channels) flow for 3 s before, during, and 5 s after. Reported: time until every
# client is back (all_resubscribed_ms), refusals (refused, refused_by), close codes, events
# lost after a client was back (lost_after_resubscribe), the first event's delay, server CPU
# over the storm, peak RSS, fds. Target on a 2-core machine shared with the harness: 20,000
# clients back within 3 s, none refused, none lost.
#
# The cap: this sandbox holds every process to 20,000 open files (ulimit -Hn, which cannot
# be raised), the server and the one harness process alike, so one node cannot hold 20,000
# clients. Beside the clients, the harness keeps 100 terminate and 4 publishing connections
# and the server its listeners; and in a storm the server still holds some closed clients'
# old sockets (it counts a socket until it reads the client's end of stream) while their
# new ones arrive. Each size in STORM_CLIENTS (default "18500 19000") is run: at 19,000 the
# old sockets outnumbered the ~850 spare connections in some runs, and Herald refused the
# excess with 503 (max_open_connections); 18,500 left enough in every run. Herald runs with
# terminate_close_code = 4200 (pusher-js reconnects at once; the default 4009 would keep it
# away) and max_open_connections = 19950 (the default keeps 10% of the open-file limit
# back, 18,000 here). bench/storm_cluster.sh runs 20,000 clients over two cluster nodes and
# two harness processes, and a node's drain.
#
# With SOCKUDO_BIN set, sockudo runs the same storms, with user authentication on
# (SOCKUDO_DEFAULT_APP_ENABLE_USER_AUTHENTICATION; off by default, which refuses every
# pusher:signin) and the limits bench/lib.sh raises. Its terminate_connections closes with
# 4009 (not configurable), and answers once the user's sockets are closed. With SOKETI_BIN
# set (node_modules/.bin/soketi of @soketi/soketi), soketi runs them too, with Herald's
# credentials and user authentication on (SOKETI_DEFAULT_APP_USER_AUTHENTICATION); its
# terminate_connections sends pusher:error 4009 and closes with 4009. The peers listen on
# free ports below the ephemeral range picked for each run; a server that is not itself
# the process listening there (a soak of another checkout held one) is restarted on another
# port, three times at most, so the storm never lands on someone else's server.
#
# Each run starts a fresh server; sizes and servers alternate so drift on the shared machine
# hits all. One JSON line per run goes to bench/results/storm.jsonl, tagged "server"; the
# medians are printed at the end, with the load average before and after.
# Usage: [SOCKUDO_BIN=/path/to/sockudo] [SOKETI_BIN=/path/to/soketi]
#        [STORM_CLIENTS="18500 19000"] bench/storm.sh [runs]   (default 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${1:-3}
sizes=${STORM_CLIENTS:-18500 19000}
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/storm.jsonl
mkdir -p bench/results
: > "$out"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
cat > "$tmp/herald.toml" <<'EOF'
max_open_connections = 19950
admin_port = 0
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
terminate_close_code = 4200
EOF

# free_port and listens come from bench/lib.sh.
port=
start() { # server; sets pid and addr; tries three ports before giving up
  for _ in 1 2 3; do
    start_once "$1" && return
    echo "$1 (pid $pid) is not the process listening on $port: $(tail -3 "$tmp/$1.log" 2>/dev/null)" >&2
    stop
  done
  exit 1
}
start_once() {
  case $1 in
    herald)
      start_herald target/release/herald --config "$tmp/herald.toml"
      pid=$HERALD_PID addr=$HERALD_ADDR ;;
    sockudo)
      # sockudo also serves metrics on port + 1.
      port=$(free_port)
      start_sockudo "$SOCKUDO_BIN" "$tmp" "$port" SOCKUDO_DEFAULT_APP_ENABLE_USER_AUTHENTICATION=true
      pid=$SOCKUDO_PID addr=127.0.0.1:$port ;;
    soketi)
      port=$(free_port)
      (cd "$tmp" && exec env SOKETI_DEFAULT_APP_ID=1 SOKETI_DEFAULT_APP_KEY=app-key \
        SOKETI_DEFAULT_APP_SECRET=app-secret SOKETI_DEFAULT_APP_USER_AUTHENTICATION=true \
        SOKETI_PORT="$port" SOKETI_METRICS_SERVER_PORT=$((port + 1)) \
        "$SOKETI_BIN" start > "$tmp/soketi.log" 2>&1) &
      pid=$! addr=127.0.0.1:$port
      for _ in $(seq 100); do listens "$pid" "$port" && break; sleep 0.1; done
      sleep 0.5 ;;
  esac
  [ "$1" = herald ] || listens "$pid" "$port"
}
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
bench() { # server clients
  if ! target/release/herald-bench --addr "$addr" --pid "$pid" storm --clients "$2" \
    --channels 50 --users 100 --rate 50 --hold 3 --settle 5 2>"$tmp/err" > "$tmp/run.json"; then
    echo "$1 storm of $2 failed: $(tail -1 "$tmp/err")" >&2
    return
  fi
  python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); r["server"]=sys.argv[1]; print(json.dumps(r))' \
    "$1" "$tmp/run.json" | tee -a "$out"
}

servers=herald
[ -n "${SOCKUDO_BIN:-}" ] && servers="$servers sockudo"
[ -n "${SOKETI_BIN:-}" ] && servers="$servers soketi"
echo "load before: $(uptime)" >&2
for _ in $(seq "$runs"); do
  for clients in $sizes; do
    for server in $servers; do
      start "$server"; bench "$server" "$clients"; stop
    done
  done
done
echo "load after: $(uptime)" >&2
python3 bench/storm_medians.py "$out"
