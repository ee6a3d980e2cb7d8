#!/usr/bin/env bash
# The soak (issue 17): herald-bench soak for SECONDS against a fresh release `herald serve`
# whose app posts its webhooks (channel_occupied/vacated, member_added/removed,
# client_event) to the harness's sink. Writes bench/results/soak.jsonl (one sample every
# 10 s, then the summary line) and bench/results/soak.svg.
#
# Usage: bench/soak.sh [seconds] [extra herald-bench soak flags...]   (default 3600)
# SERVER=sockudo SOCKUDO_BIN=/path/to/sockudo bench/soak.sh 600, or SERVER=soketi
# SOKETI_BIN=.../node_modules/.bin/soketi, runs it against that peer instead (results in
# soak-sockudo.* / soak-soketi.*; their webhooks are not configured, the sink stays idle).
# NO_BUILD=1 skips the cargo build (binaries already in target/release). SOAK_TAG=x writes
# soak[-server]-x.* instead. HERALD_BIN and HARNESS_BIN run other builds of the server and
# the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
seconds=${1:-3600}
shift || true
server=${SERVER:-herald}
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p herald-cli -p herald-bench
mkdir -p bench/results
name=soak
[ "$server" = herald ] || name=soak-$server
# SOAK_TAG=x names the files soak[-server]-x.*, so a run beside the peers keeps the hour's.
name=$name${SOAK_TAG:+-$SOAK_TAG}
out=bench/results/$name.jsonl
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# A fixed sink port, so the server's config can name it before the harness starts.
hook_port=${WEBHOOK_PORT:-17999}
port=${PORT:-16101}
case $server in
  herald)
    cat > "$tmp/herald.toml" <<EOF
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"

[[apps.webhooks]]
url = "http://127.0.0.1:$hook_port/hook"
event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"]
EOF
    "${HERALD_BIN:-target/release/herald}" serve --config "$tmp/herald.toml" --port "$port" > "$tmp/herald.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
      (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    ;;
  sockudo)
    : "${SOCKUDO_BIN:?set SOCKUDO_BIN to a sockudo binary}"
    # Its default app refuses client events unless told otherwise.
    start_sockudo "$SOCKUDO_BIN" "$tmp" "$port" SOCKUDO_ENABLE_CLIENT_MESSAGES=true
    pid=$SOCKUDO_PID
    ;;
  soketi)
    : "${SOKETI_BIN:?set SOKETI_BIN to node_modules/.bin/soketi of an install}"
    # The soak signs nobody in: with user authentication on (start_soketi's default, for
    # the storm) soketi closes every connection after 30 s with 4009.
    start_soketi "$SOKETI_BIN" "$tmp" "$port" SOKETI_DEFAULT_APP_USER_AUTHENTICATION=false
    pid=$SOKETI_PID
    ;;
  *) echo "SERVER must be herald, sockudo or soketi" >&2; exit 2 ;;
esac

echo "soak: $server (pid $pid) on 127.0.0.1:$port for $seconds s, started $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
${HARNESS_BIN:-target/release/herald-bench} --addr "127.0.0.1:$port" --pid "$pid" soak --seconds "$seconds" \
  --webhook-port "$hook_port" --samples "$out" "$@" > "$tmp/summary.json"
# The samples go straight to $out, so a run stopped early still leaves its curve.
python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); r["server"]=sys.argv[1]; print(json.dumps(r))' \
  "$server" "$tmp/summary.json" > "$tmp/summary.line"
cat "$tmp/summary.line" >> "$out"
echo "soak: finished $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 bench/soak_chart.py "$out" "bench/results/$name.svg" > "bench/results/$name.md"
cat "$tmp/summary.line"
