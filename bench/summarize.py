"""Turns bench/results/latest.jsonl into a Markdown table of medians and an SVG chart of
fan-out latency against delivery rate. Standard library only."""
import json
import statistics
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.jsonl")
runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
out_dir = path.parent


def med(rows, *keys):
    values = []
    for r in rows:
        v = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            values.append(v)
    return statistics.median(values) if values else None


def plain(r):
    return r.get("stalled_subscribers", 0) == 0 and r.get("nodes", 1) == 1


fanout = [r for r in runs if r["mode"] == "fanout" and r["rate_events_per_s"] == 500 and r["subscribers"] == 1000 and plain(r)]
# 200 readers over 10 channels, 500 events/s of 2 KB, without and with 100 stalled subscribers.
calm = [r for r in runs if r["mode"] == "fanout" and r["subscribers"] == 200 and r.get("stalled_subscribers", 0) == 0]
stalled = [r for r in runs if r["mode"] == "fanout" and r.get("stalled_subscribers", 0) > 0]
fanout = fanout[: max(1, len(fanout))]
trigger = [r for r in runs if r["mode"] == "trigger"]
conns = [r for r in runs if r["mode"] == "connections"]

lines = ["| measurement | median | runs |", "|---|---|---|"]
def row(name, value, unit, n):
    if value is not None:
        lines.append(f"| {name} | {value:g} {unit} | {n} |")

row("fan-out 1,000 subs / 10 ch / 500 ev/s: lost", med(fanout, "lost"), "deliveries", len(fanout))
row("fan-out: deliveries per second", med(fanout, "deliveries_per_s"), "/s", len(fanout))
row("fan-out: p50 latency", med(fanout, "latency", "p50_us"), "µs", len(fanout))
row("fan-out: p99 latency", med(fanout, "latency", "p99_us"), "µs", len(fanout))
row("fan-out: p99.9 latency", med(fanout, "latency", "p999_us"), "µs", len(fanout))
row("fan-out: server CPU per delivery", med(fanout, "server_cpu_us_per_delivery"), "µs", len(fanout))
row("trigger, 32 publishers: requests per second", med(trigger, "requests_per_s"), "/s", len(trigger))
row("trigger: server CPU per request", med(trigger, "server_cpu_us_per_request"), "µs", len(trigger))
row("trigger: p99 latency", med(trigger, "latency", "p99_us"), "µs", len(trigger))
row("10,000 idle connections: server memory per connection", med(conns, "server_bytes_per_connection"), "B", len(conns))
row("connections: connects per second", med(conns, "connects_per_s"), "/s", len(conns))
row("200 readers, 2 KB events: p99 latency", med(calm, "latency", "p99_us"), "µs", len(calm))
row("the same with 100 stalled subscribers: p99 latency", med(stalled, "latency", "p99_us"), "µs", len(stalled))
row("200 readers: server memory peak over its start", med([dict(r, g=r["server_rss_peak_bytes"] - r["server_rss_before_bytes"]) for r in calm], "g"), "B", len(calm))
row("with 100 stalled: server memory peak over its start", med([dict(r, g=r["server_rss_peak_bytes"] - r["server_rss_before_bytes"]) for r in stalled], "g"), "B", len(stalled))
row("with 100 stalled: lost deliveries to the readers", med(stalled, "lost"), "", len(stalled))
(out_dir / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))

by_rate = {}
for r in runs:
    if r["mode"] == "fanout" and r.get("deliveries_per_s") and r["subscribers"] == 1000 and plain(r):
        by_rate.setdefault(r["rate_events_per_s"], []).append(r)
# One point per offered rate: the median of its runs.
points = sorted(
    (
        med(rs, "deliveries_per_s"),
        med(rs, "latency", "p50_us") / 1000,
        med(rs, "latency", "p99_us") / 1000,
    )
    for rs in by_rate.values()
)
if points:
    w, h, m = 640, 360, 60
    max_x = max(p[0] for p in points) * 1.05
    max_y = max(p[2] for p in points) * 1.15 or 1
    sx = lambda x: m + (w - 2 * m) * x / max_x
    sy = lambda y: h - m - (h - 2 * m) * y / max_y
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h-m}" x2="{w-m}" y2="{h-m}" stroke="black"/>',
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h-m}" stroke="black"/>',
           f'<text x="{w/2}" y="{h-15}" text-anchor="middle">deliveries per second (1,000 subscribers, 10 channels)</text>',
           f'<text x="15" y="{h/2}" transform="rotate(-90 15 {h/2})" text-anchor="middle">latency (ms)</text>',
           f'<text x="{w/2}" y="25" text-anchor="middle" font-size="14">Herald fan-out latency against rate</text>']
    for i in range(5):
        yv = max_y * i / 4
        svg.append(f'<text x="{m-8}" y="{sy(yv)+4}" text-anchor="end">{yv:.1f}</text>')
        xv = max_x * i / 4
        svg.append(f'<text x="{sx(xv)}" y="{h-m+16}" text-anchor="middle">{xv/1000:.0f}k</text>')
    for idx, (name, colour) in enumerate([("p50", "#1f77b4"), ("p99", "#d62728")], start=1):
        pts = " ".join(f"{sx(p[0]):.1f},{sy(p[idx]):.1f}" for p in points)
        svg.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        for p in points:
            svg.append(f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[idx]):.1f}" r="3" fill="{colour}"/>')
        svg.append(f'<text x="{m+12}" y="{m+idx*16}" fill="{colour}">{name}</text>')
    svg.append("</svg>")
    (out_dir / "latency-vs-rate.svg").write_text("\n".join(svg) + "\n")
