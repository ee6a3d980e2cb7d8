#!/usr/bin/env python3
"""Medians of two tagged sets of herald-bench runs, side by side.

Usage: bench/medians.py FILE FIELD A B
Rows of FILE (one JSON line per run) whose FIELD is A, against those where it is B
(`build` old/new from bench/ab.sh, `tls` false/true from bench/tls.sh). A mode with no
runs in FILE is left out.
"""
import json
import statistics
import sys

path, field, a, b = sys.argv[1:5]
rows = [json.loads(l) for l in open(path) if l.strip()]


def tag(r):
    v = r.get(field)
    return v if isinstance(v, str) else json.dumps(v)


def get(r, key):
    if key.startswith("latency."):
        return r.get("latency", {}).get(key[8:])
    return r.get(key)


def med(which, mode, key):
    vals = [get(r, key) for r in rows if tag(r) == which and r.get("mode") == mode]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")


KEYS = [
    ("fanout", ["server_cpu_us_per_delivery", "latency.p50_us", "latency.p99_us", "lost", "harness_cpu_s"]),
    ("trigger", ["requests_per_s", "server_cpu_us_per_request", "latency.p99_us", "harness_cpu_s"]),
    ("connections", ["connects_per_s", "server_bytes_per_connection"]),
]
for mode, keys in KEYS:
    if not any(r.get("mode") == mode for r in rows):
        continue
    for key in keys:
        print(f"{mode:12} {key:28} {a} {med(a, mode, key):>10.2f}   {b} {med(b, mode, key):>10.2f}")
