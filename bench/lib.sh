# Sourced by the bench scripts.
# start_herald BIN [ARGS...]: starts `BIN serve --port 0 ARGS...` in the background and
# waits (up to 5 s) until it listens; sets HERALD_PID and HERALD_ADDR (empty if it did not
# get there). Its stderr goes to HERALD_STDERR (a file) when set, else nowhere.
start_herald() {
  local bin=$1 log
  shift
  log=$(mktemp)
  "$bin" serve --port 0 "$@" > "$log" 2>"${HERALD_STDERR:-/dev/null}" &
  HERALD_PID=$! HERALD_ADDR=
  for _ in $(seq 50); do
    HERALD_ADDR=$(grep -m1 -o 'listening on [^ ]*' "$log" 2>/dev/null | sed 's/listening on //') || true
    [ -n "$HERALD_ADDR" ] && break
    sleep 0.1
  done
  rm -f "$log"
}

# start_sockudo BIN DIR PORT [VAR=VALUE...]: starts sockudo in DIR (its working directory and
# log, DIR/sockudo.log) on PORT, metrics on PORT+1, with its default app set to Herald's
# credentials and the limits that would refuse the runs (100 connections, events and reads
# per second, the HTTP rate limiter) raised or off, plus the VAR=VALUE settings; waits (up
# to 10 s) until it listens. Sets SOCKUDO_PID.
start_sockudo() {
  local bin=$1 dir=$2 port=$3
  shift 3
  (cd "$dir" && exec env SOCKUDO_DEFAULT_APP_ID=1 SOCKUDO_DEFAULT_APP_KEY=app-key \
    SOCKUDO_DEFAULT_APP_SECRET=app-secret SOCKUDO_DEFAULT_APP_ENABLED=true \
    SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=100000 SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=1000000 \
    SOCKUDO_DEFAULT_APP_MAX_READ_REQUESTS_PER_SECOND=1000000 \
    RATE_LIMITER_ENABLED=false PORT="$port" METRICS_PORT=$((port + 1)) "$@" \
    "$bin" > "$dir/sockudo.log" 2>&1) &
  SOCKUDO_PID=$!
  for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
}

# start_soketi BIN DIR PORT [VAR=VALUE...]: starts soketi (BIN: node_modules/.bin/soketi of an
# install made with `npm install --ignore-scripts @soketi/soketi@1.6.1` and the override
# `"uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"`) in DIR
# (log: DIR/soketi.log) on PORT, metrics on PORT+1, with its default app set to Herald's
# credentials, client events and user authentication on (its limits are off by default),
# plus the VAR=VALUE settings; waits (up to 10 s) until it listens. Sets SOKETI_PID to the
# node process that serves (soketi runs in one process by default).
start_soketi() {
  local bin=$1 dir=$2 port=$3
  shift 3
  (cd "$dir" && exec env SOKETI_DEFAULT_APP_ID=1 SOKETI_DEFAULT_APP_KEY=app-key \
    SOKETI_DEFAULT_APP_SECRET=app-secret SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES=true \
    SOKETI_DEFAULT_APP_USER_AUTHENTICATION=true SOKETI_PORT="$port" \
    SOKETI_METRICS_SERVER_PORT=$((port + 1)) "$@" \
    node "$(readlink -f "$bin")" start > "$dir/soketi.log" 2>&1) &
  SOKETI_PID=$!
  for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  sleep 0.5
}

# free_port [OFFSET]: a port below the ephemeral range (where the harness's client sockets
# take theirs) that is free with port + OFFSET too (default 1: the peers' metrics listeners;
# 10000 for a Redis Cluster node's bus).
free_port() {
  python3 -c '
import random, socket, sys
offset = int(sys.argv[1])
while True:
    port = random.randrange(20000, 32000, 2)
    try:
        for p in (port, port + offset):
            socket.socket().bind(("0.0.0.0", p))
    except OSError:
        continue
    print(port)
    break' "${1:-1}"
}

# listens PID PORT: whether PID itself is the process listening on PORT (a port that only
# answers may belong to another run's server).
listens() { ss -ltnpH "sport = :$2" 2>/dev/null | grep "pid=$1," > /dev/null; }

# servers_to_run: herald, then sockudo and soketi when SOCKUDO_BIN and SOKETI_BIN name them.
servers_to_run() {
  local servers=herald
  [ -n "${SOCKUDO_BIN:-}" ] && servers="$servers sockudo"
  [ -n "${SOKETI_BIN:-}" ] && servers="$servers soketi"
  echo "$servers"
}

# start_server SERVER HERALD_BIN DIR: starts herald (HERALD_BIN serve --port 0), sockudo or
# soketi (SOCKUDO_BIN, SOKETI_BIN; their logs in DIR) and sets SERVER_PID and SERVER_ADDR.
# A peer gets a free port below the ephemeral range (the harness's client sockets leave
# ephemeral ports in TIME_WAIT, which a server without SO_REUSEADDR could not bind) and must
# be the process listening there, three tries: a port may be held by another run's server.
# Returns 1 if no try took.
start_server() {
  local server=$1 herald_bin=$2 dir=$3 port
  for _ in 1 2 3; do
    case $server in
      herald) start_herald "$herald_bin"; SERVER_PID=$HERALD_PID SERVER_ADDR=$HERALD_ADDR; return 0 ;;
      sockudo) port=$(free_port); start_sockudo "$SOCKUDO_BIN" "$dir" "$port"; SERVER_PID=$SOCKUDO_PID ;;
      soketi) port=$(free_port); start_soketi "$SOKETI_BIN" "$dir" "$port"; SERVER_PID=$SOKETI_PID ;;
    esac
    SERVER_ADDR=127.0.0.1:$port
    listens "$SERVER_PID" "$port" && return 0
    echo "$server (pid $SERVER_PID) is not the process listening on $port" >&2
    kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true
  done
  return 1
}
