"""Draws a soak's samples (herald-bench soak, one JSON line per sample; the summary line is
skipped) as an SVG: server RSS (MB), open file descriptors and fan-out p99 (ms) against
minutes, one panel each on a shared time axis. Standard library only.

Usage: python3 bench/soak_chart.py samples.jsonl out.svg"""
import json
import statistics
import sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
samples = [r for r in rows if "elapsed_s" in r]
summary = next((r for r in rows if r.get("mode") == "soak"), {})
if not samples:
    sys.exit(f"{src}: no samples")

minutes = [s["elapsed_s"] / 60 for s in samples]
# One panel per series: each has its own scale, and none is drowned by the others.
panels = [
    ("server RSS (MB)", [(s.get("rss_bytes") or 0) / 1e6 for s in samples], "#1f77b4", 1),
    ("open file descriptors", [s.get("fds") or 0 for s in samples], "#2ca02c", 0),
    ("fan-out p99 (ms)", [s.get("p99_ms") or 0 for s in samples], "#d62728", 1),
]
w, left, right, top, panel_h, gap = 720, 70, 20, 50, 130, 30
h = top + len(panels) * (panel_h + gap) + 30
max_x = max(minutes[-1], 1e-9)
sx = lambda x: left + (w - left - right) * x / max_x

server = summary.get("server", "")
title = "Soak" + (f" ({server})" if server else "")
if summary:
    title += (
        f": {summary.get('deliveries_per_s', 0):,.0f} deliveries/s, "
        f"{summary.get('connection_churn_per_s', 0)} connections/s churned, "
        f"{summary.get('lost', 0)} lost"
    )
svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
    f'<rect width="{w}" height="{h}" fill="white"/>',
    f'<text x="{w/2}" y="25" text-anchor="middle" font-size="14">{title}</text>',
]
for i, (name, values, colour, digits) in enumerate(panels):
    y0 = top + i * (panel_h + gap)
    hi = max(values) * 1.1 or 1
    # From zero, so a flat line looks flat and a small drift looks small.
    sy = lambda v: y0 + panel_h - panel_h * v / hi
    svg.append(f'<line x1="{left}" y1="{y0+panel_h}" x2="{w-right}" y2="{y0+panel_h}" stroke="black"/>')
    svg.append(f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{y0+panel_h}" stroke="black"/>')
    svg.append(f'<text x="{left+8}" y="{y0+12}" fill="{colour}">{name}</text>')
    for k in range(3):
        v = hi * k / 2
        svg.append(f'<text x="{left-6}" y="{sy(v)+4:.1f}" text-anchor="end">{v:.{digits}f}</text>')
        svg.append(f'<line x1="{left}" y1="{sy(v):.1f}" x2="{w-right}" y2="{sy(v):.1f}" stroke="#ddd"/>')
    pts = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in zip(minutes, values))
    svg.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
axis_y = top + len(panels) * (panel_h + gap) - gap
step = next(s for s in (1, 2, 5, 10, 15, 30, 60) if max_x / s <= 12)
t = 0
while t <= max_x + 1e-9:
    svg.append(f'<text x="{sx(t):.1f}" y="{axis_y+16}" text-anchor="middle">{t:g}</text>')
    t += step
svg.append(f'<text x="{w/2}" y="{axis_y+32}" text-anchor="middle">minutes</text>')
svg.append("</svg>")
dst.write_text("\n".join(svg) + "\n")

# A Markdown table for BENCHMARKS.md: one row per stretch of the run (every 5 minutes for
# an hour, every minute for a short run), its last sample's RSS and fds, and the worst
# p99 and the summed loss of the samples in it.
stretch = 300 if samples[-1]["elapsed_s"] >= 1800 else 60
table = [
    "| minute | RSS (MB) | fds | p50, worst sample (ms) | p99, median sample (ms) | p99, worst sample (ms) | deliveries/s | lost | server CPU |",
    "|---|---|---|---|---|---|---|---|---|",
]
import math

# Sample times drift a little past the tick (300.1 s), so a stretch is 295-300+ s, not exact.
stretch_of = lambda s: math.ceil(s["elapsed_s"] / stretch - 0.02)
group = []
for i, s in enumerate(samples):
    group.append(s)
    if i + 1 == len(samples) or stretch_of(samples[i + 1]) != stretch_of(s):
        last = group[-1]
        table.append(
            f"| {round(last['elapsed_s'] / 60, 1):g} | {(last.get('rss_bytes') or 0) / 1e6:.1f} | {last.get('fds')} "
            f"| {max(g['p50_ms'] for g in group):.2f} | {statistics.median(g['p99_ms'] for g in group):.2f} "
            f"| {max(g['p99_ms'] for g in group):.2f} "
            f"| {sum(g['deliveries_per_s'] for g in group) / len(group):,.0f} "
            f"| {sum(g['lost'] for g in group)} "
            f"| {sum(g.get('server_cpu_pct') or 0 for g in group) / len(group):.0f}% |"
        )
        group = []
print("\n".join(table))
