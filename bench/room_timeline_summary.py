"""Percentiles of bench/room_timeline.sh's two histograms (server writes and harness reads,
in ms after the publish), from the bucket each percentile falls in (its upper edge)."""
import re
import sys

hists, name = {}, None
for line in open(sys.argv[1]):
    m = re.match(r"@(\w+):", line)
    if m:
        name = m.group(1)
        hists[name] = []
        continue
    m = re.match(r"\[(\d+), (\d+|\.\.\.)\)\s+(\d+)", line)
    if m and name:
        top = m.group(2)
        hists[name].append((float("inf") if top == "..." else int(top), int(m.group(3))))
for name in ("server_writes_ms", "harness_reads_ms"):
    buckets = hists.get(name, [])
    total = sum(n for _, n in buckets)
    out = []
    for q in (0.5, 0.9, 0.99):
        seen = 0
        for top, n in buckets:
            seen += n
            if seen >= q * total:
                out.append(f"p{round(q * 100)} <{top} ms")
                break
    print(f"{name}: {total} in all; " + ", ".join(out))
