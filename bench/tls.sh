#!/usr/bin/env bash
# TLS against plain: the same fan-out, trigger and held-connection runs against a fresh
# release `herald serve` without and with TLS, alternating so that drift on the shared
# machine hits both. The certificate is a throwaway one for 127.0.0.1, signed by a
# throwaway CA (openssl), which the harness trusts with --ca. One JSON line per run goes
# to bench/results/tls.jsonl (its "tls" field says which); the medians are printed at the end.
# Usage: bench/tls.sh [rounds]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release -q -p herald-cli -p herald-bench
out=bench/results/tls.jsonl
mkdir -p bench/results
: > "$out"

pki=$(mktemp -d)
trap 'rm -rf "$pki"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=herald-bench-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$pki/key.pem" -out "$pki/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$pki/ext.cnf"
openssl x509 -req -in "$pki/leaf.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 2 -extfile "$pki/ext.cnf" -out "$pki/cert.pem" 2>/dev/null

run() { # plain|tls args...
  local transport=$1; shift
  local env=() tls=()
  if [ "$transport" = tls ]; then
    env=(HERALD_TLS_CERT="$pki/cert.pem" HERALD_TLS_KEY="$pki/key.pem")
    tls=(--tls --ca "$pki/ca.pem")
  fi
  env "${env[@]}" target/release/herald serve --port 0 > /tmp/herald-tls-bench.out 2>/dev/null &
  local pid=$! addr=
  for _ in $(seq 50); do
    addr=$(grep -m1 -o 'listening on [^ ]*' /tmp/herald-tls-bench.out 2>/dev/null | sed 's/listening on //') || true
    [ -n "$addr" ] && break
    sleep 0.1
  done
  target/release/herald-bench --addr "$addr" --pid "$pid" "${tls[@]}" "$@" 2>/dev/null | tee -a "$out"
  kill -TERM "$pid"; wait "$pid" || true
}

for _ in $(seq "$rounds"); do
  for transport in plain tls; do
    run "$transport" fanout --subscribers 1000 --channels 10 --rate 500 --seconds 10 --payload 100
    run "$transport" trigger --concurrency 32 --seconds 10
    run "$transport" connections --count 5000
  done
done
python3 bench/medians.py "$out" tls false true
