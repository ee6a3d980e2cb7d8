#!/usr/bin/env bash
# bench/million.sh in a network namespace of its own whose TCP established-connection hash
# table has EHASH buckets (default 2,097,152), to measure what the table's size costs a
# million connections on loopback. Linux sizes the table at boot from the memory (262,144
# buckets on this machine: chains of about 7 for the run's 1.95 million sockets, walked on
# every segment received); a namespace created while `net.ipv4.tcp_child_ehash_entries` is
# set gets a table of that size instead (Linux 6.1 and later). On a host, the boot
# parameter `thash_entries` sets the main table. Everything else is million.sh's.
# Usage: [EHASH=2097152] [million.sh's variables] bench/million_netns.sh   (root)
set -euo pipefail
cd "$(dirname "$0")/.."
EHASH=${EHASH:-2097152}
ns=herald-million-$$
old=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  sysctl -q -w net.ipv4.tcp_child_ehash_entries="$old" > /dev/null || true
}
trap cleanup EXIT
sysctl -q -w net.ipv4.tcp_child_ehash_entries="$EHASH" > /dev/null
ip netns add "$ns"
sysctl -q -w net.ipv4.tcp_child_ehash_entries="$old" > /dev/null
ip -n "$ns" link set lo up
echo "{\"netns\":\"$ns\",\"tcp_ehash_entries\":$(ip netns exec "$ns" sysctl -n net.ipv4.tcp_ehash_entries)}"
ip netns exec "$ns" bench/million.sh
