#!/usr/bin/env bash
# Fan-out and trigger cost with webhooks on against off, one binary: "on" gives app 1 an
# endpoint for every event type (a local sink answering 200) and the durable queue under a
# fresh data_dir; "off" no endpoint. Runs alternate so that drift on the shared machine hits
# both equally. One JSON line per run goes to bench/results/webhooks-ab.jsonl, tagged
# "webhooks":"on"/"off"; the medians are printed at the end.
# Usage: bench/webhooks_ab.sh [rounds] [seconds]   (default 3 rounds of 10 s runs)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
rounds=${1:-3} seconds=${2:-10}
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/webhooks-ab.jsonl
mkdir -p bench/results
: > "$out"
work=$(mktemp -d)
trap 'kill "$sink" 2>/dev/null || true; rm -rf "$work"' EXIT

# The receiver: answers 200 to every POST.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$port" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
sink=$!

printf '[[apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\n' > "$work/off.toml"
{ cat "$work/off.toml"; printf '[[apps.webhooks]]\nurl = "http://127.0.0.1:%s/hook"\n' "$port"; } > "$work/on.toml"

run() { # on|off args...
  local tag=$1; shift
  HERALD_DATA_DIR="$work/data-$tag-$RANDOM" start_herald target/release/herald --config "$work/$tag.toml"
  local pid=$HERALD_PID addr=$HERALD_ADDR
  target/release/herald-bench --addr "$addr" --pid "$pid" "$@" 2>/dev/null \
    | sed "s/^{/{\"webhooks\":\"$tag\",/" | tee -a "$out"
  kill -TERM "$pid"; wait "$pid" || true
}

for _ in $(seq "$rounds"); do
  for tag in off on; do
    run "$tag" fanout --subscribers 1000 --channels 10 --rate 500 --seconds "$seconds" --payload 100
    run "$tag" trigger --concurrency 32 --seconds "$seconds"
  done
done
python3 bench/medians.py "$out" webhooks off on
