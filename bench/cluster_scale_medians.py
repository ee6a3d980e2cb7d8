#!/usr/bin/env python3
"""Medians of bench/cluster_scale.sh's runs as Markdown tables, one per scenario.

concentrated: every subscriber on node A, every event published to A; the other nodes
should cost nothing (idle / A). spread: the same load on every node; each node's CPU per
delivery (the median node and the worst) and Redis's CPU per event should stay flat as N
grows. A cell is the median over the rounds; a per-node cell first takes each round's
median (or worst) node, then the median of that over the rounds.

Usage: bench/cluster_scale_medians.py FILE
"""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]


def med(rs, f):
    vals = [v for v in (f(r) for r in rs) if v is not None]
    return statistics.median(vals) if vals else None


def cell(v, fmt="{:,.2f}"):
    return "—" if v is None else fmt.format(v)


def runs(scenario):
    by_n = {}
    for r in rows:
        if r["scenario"] == scenario:
            by_n.setdefault(r["nodes"], []).append(r)
    return sorted(by_n.items())


redis = sorted({r["redis"] for r in rows})
concentrated = runs("concentrated")
if concentrated:
    print(f"concentrated (Redis: {', '.join(redis)}): all subscribers on node A, all events published to A")
    print()
    print("| nodes | rounds | events/s | deliveries/s | lost | A CPU s | idle nodes CPU s | idle / A | "
          "A µs/delivery | Redis CPU s per 10 s | Redis µs/event | harness CPU s | machine busy | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, rs in concentrated:
        ratio = med(rs, lambda r: r["idle_cpu_ratio"])
        print(f"| {n} | {len(rs)} | {cell(med(rs, lambda r: r['events_per_s']), '{:,.0f}')} "
              f"| {cell(med(rs, lambda r: r['deliveries_per_s']), '{:,.0f}')} "
              f"| {cell(med(rs, lambda r: r['lost']), '{:,.0f}')} "
              f"| {cell(med(rs, lambda r: r['a_cpu_s']))} "
              f"| {cell(med(rs, lambda r: r['idle_nodes_cpu_s']))} "
              f"| {'—' if n == 1 or ratio is None else f'{ratio * 100:.1f} %'} "
              f"| {cell(med(rs, lambda r: r['node_cpu_us_per_delivery'][0]))} "
              f"| {cell(med(rs, lambda r: r['redis_cpu_s_per_10s']))} "
              f"| {cell(med(rs, lambda r: r['redis_cpu_us_per_event']))} "
              f"| {cell(med(rs, lambda r: r['harness_cpu_s']))} "
              f"| {cell(med(rs, lambda r: r['machine_busy'] * 100), '{:.0f} %')} "
              f"| {cell(med(rs, lambda r: r['latency']['p99_us'] / 1000))} |")
    print()

spread = runs("spread")
if spread:
    def node_us(r, pick):
        vals = [v for v in r["node_cpu_us_per_delivery"] if v is not None]
        return pick(vals) if vals else None

    base = med(spread[0][1], lambda r: node_us(r, statistics.median)) if spread[0][0] == 1 else None
    print(f"spread (Redis: {', '.join(redis)}): the same subscribers and events per node on every node")
    print()
    print("| nodes | rounds | events/s (all) | deliveries/s per node | lost | node µs/delivery (median node) | "
          "worst node | worst vs 1 node | Redis CPU s per 10 s | Redis µs/event | harness CPU s | machine busy | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, rs in spread:
        worst = med(rs, lambda r: node_us(r, max))
        vs = f"{(worst / base - 1) * 100:+.0f} %" if base and worst else "—"
        print(f"| {n} | {len(rs)} | {cell(med(rs, lambda r: r['events_per_s']), '{:,.0f}')} "
              f"| {cell(med(rs, lambda r: r['deliveries_per_s'] / r['nodes']), '{:,.0f}')} "
              f"| {cell(med(rs, lambda r: r['lost']), '{:,.0f}')} "
              f"| {cell(med(rs, lambda r: node_us(r, statistics.median)))} "
              f"| {cell(worst)} | {vs} "
              f"| {cell(med(rs, lambda r: r['redis_cpu_s_per_10s']))} "
              f"| {cell(med(rs, lambda r: r['redis_cpu_us_per_event']))} "
              f"| {cell(med(rs, lambda r: r['harness_cpu_s']))} "
              f"| {cell(med(rs, lambda r: r['machine_busy'] * 100), '{:.0f} %')} "
              f"| {cell(med(rs, lambda r: r['latency']['p99_us'] / 1000))} |")
