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
