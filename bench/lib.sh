# Sourced by the bench scripts.
# start_herald BIN [ARGS...]: starts `BIN serve --port 0 ARGS...` in the background and
# waits (up to 5 s) until it listens; sets HERALD_PID and HERALD_ADDR.
start_herald() {
  local bin=$1 log
  shift
  log=$(mktemp)
  "$bin" serve --port 0 "$@" > "$log" 2>/dev/null &
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
