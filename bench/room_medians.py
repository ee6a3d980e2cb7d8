#!/usr/bin/env python3
"""Medians (and ranges) of bench/room.sh's runs, against issue 17's targets.

Usage: bench/room_medians.py FILE
The presence overhead per join or leave is the churn's server CPU per join or leave less
its fan-out: its member_added/removed deliveries per join or leave times the room's
median server CPU per delivery.
"""
import json
import statistics
import sys

ALL = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
SERVERS = list(dict.fromkeys(r.get("server", "herald") for r in ALL))


def get(r, key):
    for part in key.split("."):
        r = r.get(part) if isinstance(r, dict) else None
    return r


def stat(mode, key):
    vals = [v for v in (get(r, key) for r in ROWS if r.get("mode") == mode) if v is not None]
    if not vals:
        return float("nan"), "no runs"
    return statistics.median(vals), f"{min(vals):.2f}..{max(vals):.2f} over {len(vals)}"


TARGETS = {
    ("room", "latency.p50_us"): "<= 12000",
    ("room", "latency.p99_us"): "<= 25000",
    ("room", "server_cpu_us_per_delivery"): "<= 4.5",
    ("room", "lost"): "0",
    ("presence-churn", "latency.p99_us"): "<= 10000",
    ("presence-churn", "lost"): "0",
}
KEYS = [
    ("room", ["deliveries_per_s", "latency.p50_us", "latency.p90_us", "latency.p99_us", "latency.p999_us",
              "latency.max_us", "server_cpu_us_per_delivery", "lost", "server_rss_peak_bytes", "harness_cpu_s"]),
    ("presence-churn", ["joins", "leaves", "deliveries", "latency.p50_us", "latency.p99_us", "latency.max_us",
                        "leave_latency.p99_us", "server_cpu_us_per_join_or_leave", "server_cpu_us_per_delivery",
                        "lost", "lost_removed", "errors", "server_rss_peak_bytes", "harness_cpu_s"]),
]
def report():
    for mode, keys in KEYS:
        for key in keys:
            m, spread = stat(mode, key)
            target = TARGETS.get((mode, key), "")
            print(f"{mode:15} {key:33} {m:>12.2f}   ({spread})  {target}")

    room_cpu, _ = stat("room", "server_cpu_us_per_delivery")
    over = []
    for r in ROWS:
        if r.get("mode") == "presence-churn" and r.get("server_cpu_s") is not None:
            changes = max(1, r["joins"] + r["leaves"])
            over.append(r["server_cpu_us_per_join_or_leave"] - r["deliveries"] / changes * room_cpu)
    if over:
        print(f"{'presence-churn':15} {'cpu_us_per_change_over_fanout':33} {statistics.median(over):>12.2f}"
              f"   ({min(over):.2f}..{max(over):.2f} over {len(over)})  <= 40")


for server in SERVERS:
    ROWS = [r for r in ALL if r.get("server", "herald") == server]
    print(f"== {server}")
    report()
