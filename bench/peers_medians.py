#!/usr/bin/env python3
"""Medians of bench/peers.sh's runs, one column per server, as a Markdown table.

Usage: bench/peers_medians.py FILE
"""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
servers = list(dict.fromkeys(r["server"] for r in rows))


def med(server, mode, f):
    vals = []
    for r in rows:
        if r["server"] == server and r["mode"] == mode:
            try:
                v = f(r)
            except (KeyError, TypeError):
                v = None
            if v is not None:
                vals.append(v)
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


ms = lambda key: lambda r: r["latency"][key] / 1000
MEASUREMENTS = [
    ("fan-out 50k deliveries/s: lost", "fanout", lambda r: r["lost"]),
    ("fan-out: p50 (ms)", "fanout", ms("p50_us")),
    ("fan-out: p99 (ms)", "fanout", ms("p99_us")),
    ("fan-out: server CPU per delivery (µs)", "fanout", lambda r: r["server_cpu_us_per_delivery"]),
    ("trigger: requests/s", "trigger", lambda r: r["requests_per_s"]),
    ("trigger: errors", "trigger", lambda r: r["errors"]),
    ("trigger: server CPU per request (µs)", "trigger", lambda r: r["server_cpu_us_per_request"]),
    ("idle connection: server memory (B)", "connections", lambda r: r["server_bytes_per_connection"]),
    ("connects per second", "connections", lambda r: r["connects_per_s"]),
    ("density, 18,000 idle: connections held", "density", lambda r: r["connections"]),
    ("density: server memory per connection (B)", "density", lambda r: r["server_bytes_per_connection"]),
    ("density: server memory in all (MB)", "density", lambda r: r["server_rss_after_bytes"] / 1e6),
    ("room 5,000 × 20 events/s: lost", "room", lambda r: r["lost"]),
    ("room: p50 (ms)", "room", ms("p50_us")),
    ("room: p99 (ms)", "room", ms("p99_us")),
    ("room: server CPU per delivery (µs)", "room", lambda r: r["server_cpu_us_per_delivery"]),
    ("room: server memory peak (MB)", "room", lambda r: r["server_rss_peak_bytes"] / 1e6),
    ("presence churn 100 × 100, 1,000/s: lost member_added", "presence-churn", lambda r: r["lost"]),
    ("churn: join to member_added p50 (ms)", "presence-churn", ms("p50_us")),
    ("churn: join to member_added p99 (ms)", "presence-churn", ms("p99_us")),
    ("churn: server CPU per join or leave (µs)", "presence-churn", lambda r: r["server_cpu_us_per_join_or_leave"]),
    ("churn: server CPU per member event delivered (µs)", "presence-churn", lambda r: r["server_cpu_us_per_delivery"]),
    ("storm: all resubscribed (ms)", "storm", lambda r: r["all_resubscribed_ms"]),
    ("storm: refused", "storm", lambda r: r["refused"]),
    ("storm: lost after resubscribing", "storm", lambda r: r["lost_after_resubscribe"]),
]
print("| measurement | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))
for name, mode, f in MEASUREMENTS:
    cells = [med(s, mode, f) for s in servers]
    if all(n == 0 for _, n in cells):
        continue
    shown = ["—" if v is None else f"{v:,.2f}".rstrip("0").rstrip(".") for v, _ in cells]
    print(f"| {name} | " + " | ".join(shown) + " |")
