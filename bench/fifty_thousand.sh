#!/usr/bin/env bash
# 50,000 connections held on this machine. The sandbox this was measured in caps every
# process at 20,000 open files (a hard limit the server cannot raise), so three herald nodes
# of one cluster (sharing a fresh redis-server) hold a third each, and three harness
# processes open them. Prints one JSON line per node and the total.
# Usage: bench/fifty_thousand.sh [total]   (default 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-50000}
per=$(( (total + 2) / 3 ))
cargo build --release -q -p herald-cli -p herald-bench
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no > /dev/null &
sleep 0.3
printf 'adapter = "redis"\nredis_url = "redis://127.0.0.1:%s/0"\n' "$port" > "$tmp/node.toml"
pids=(); addrs=()
for n in 0 1 2; do
  target/release/herald serve --port 0 --config "$tmp/node.toml" > "$tmp/$n.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do
    addr=$(grep -m1 -o 'listening on [^ ]*' "$tmp/$n.out" 2>/dev/null | sed 's/listening on //') || true
    [ -n "${addr:-}" ] && break
    sleep 0.1
  done
  addrs+=("$addr")
done
for n in 0 1 2; do
  target/release/herald-bench --addr "${addrs[$n]}" --pid "${pids[$n]}" connections --count "$per" \
    2>/dev/null > "$tmp/bench-$n.json" &
done
wait $(jobs -p | tail -3) 2>/dev/null || true
for n in 0 1 2; do cat "$tmp/bench-$n.json"; done | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
for r in rows: print(json.dumps(r))
held = sum(r["connections"] for r in rows)
grown = sum(r["server_rss_after_bytes"] - r["server_rss_before_bytes"] for r in rows)
print(json.dumps({"mode": "connections", "nodes": len(rows), "connections": held,
                  "server_bytes_per_connection": round(grown / max(held, 1))}))'
