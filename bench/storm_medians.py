#!/usr/bin/env python3
"""Medians (and ranges) of bench/storm.sh's runs, per server and storm size, against
issue 17's target: every client resubscribed within 3 s, none refused, none lost.

Usage: bench/storm_medians.py FILE
"""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
columns = sorted({(r["server"], r["storm_clients"]) for r in rows},
                 key=lambda c: (c[0] != "herald", c[0], c[1]))


def get(r, key):
    for part in key.split("."):
        r = r.get(part) if isinstance(r, dict) else None
    return r


def cell(column, key, scale):
    vals = [get(r, key) for r in rows if (r["server"], r["storm_clients"]) == column]
    missing = vals.count(None)
    vals = [v * scale for v in vals if v is not None]
    if not vals:
        return "—"
    digits = 1 if max(abs(v) for v in vals) < 100 and any(v != int(v) for v in vals) else 0
    show = lambda v: f"{v:,.{digits}f}"
    text = show(statistics.median(vals))
    if len(vals) > 1 and min(vals) != max(vals):
        text += f" ({show(min(vals))}–{show(max(vals))})"
    if missing:
        text += f", {missing} not all back"
    return text


ROWS = [
    ("runs", None, 1, ""),
    ("all resubscribed (ms)", "all_resubscribed_ms", 1, "≤ 3,000"),
    ("all closed (ms)", "all_closed_ms", 1, ""),
    ("refused reconnections", "refused", 1, "0"),
    ("lost after resubscribing", "lost_after_resubscribe", 1, "0"),
    ("events due after resubscribing", "expected_after_resubscribe", 1, ""),
    ("close to resubscribed p50 (ms)", "reconnect.p50_us", 1e-3, ""),
    ("close to resubscribed p99 (ms)", "reconnect.p99_us", 1e-3, ""),
    ("first event delay p50 (ms)", "first_event_delay.p50_us", 1e-3, ""),
    ("first event delay p99 (ms)", "first_event_delay.p99_us", 1e-3, ""),
    ("first event latency p50 (ms)", "first_event_latency.p50_us", 1e-3, ""),
    ("first event latency p99 (ms)", "first_event_latency.p99_us", 1e-3, ""),
    ("delivery latency p99, whole run (ms)", "latency.p99_us", 1e-3, ""),
    ("server CPU over the storm (s)", "server_cpu_s", 1, ""),
    ("server CPU per reconnection (µs)", "server_cpu_us_per_reconnection", 1, ""),
    ("server RSS held (MB)", "server_rss_before_bytes", 1e-6, ""),
    ("server RSS peak (MB)", "server_rss_peak_bytes", 1e-6, ""),
    ("server fds before / after", None, 1, ""),
    ("harness CPU over the storm (s)", "harness_cpu_s", 1, ""),
]
print("| measurement | " + " | ".join(f"{s} {n:,}" for s, n in columns) + " | target |")
print("|---|" + "---|" * len(columns) + "---|")
for name, key, scale, target in ROWS:
    if name == "runs":
        cells = [str(sum((r["server"], r["storm_clients"]) == c for r in rows)) for c in columns]
    elif key is None:
        cells = [cell(c, "server_fds_before", 1) + " / " + cell(c, "server_fds_after", 1) for c in columns]
    else:
        cells = [cell(c, key, scale) for c in columns]
    print(f"| {name} | " + " | ".join(cells) + f" | {target} |")
codes = {}
for r in rows:
    key = (r["server"], r["storm_clients"])
    for code, count in r["close_codes"].items():
        codes.setdefault(key, {}).setdefault(code, 0)
        codes[key][code] += count
    for reason, count in r.get("refused_by", {}).items():
        codes.setdefault(key, {}).setdefault("refused " + reason, 0)
        codes[key]["refused " + reason] += count
for (server, n), seen in codes.items():
    print(f"{server} {n:,}: close codes and refusals over all runs: {seen}")
