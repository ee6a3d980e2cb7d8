#!/usr/bin/env python3
"""Samples where the machine's CPU goes, for bench/million.sh's broadcast.

Usage: cpu_timeline.py OUT INTERVAL GROUP=PID,PID... [GROUP=...]
Every INTERVAL seconds, until killed, appends one JSON line to OUT: the time (Unix ns),
the machine's CPU ticks by kind from /proc/stat (user, system, softirq, idle, ...), and for
each group of processes its user and system ticks (utime and stime from /proc/PID/stat).
Ticks are 1/100 s. `window` below turns two samples into shares.
"""
import json
import sys
import time

KINDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def machine():
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:1 + len(KINDS)]
    return dict(zip(KINDS, map(int, fields)))


def process(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]), int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0, 0


def sample(groups):
    out = {"t_ns": time.time_ns(), "machine": machine(), "groups": {}}
    for name, pids in groups.items():
        user = system = 0
        for pid in pids:
            u, s = process(pid)
            user += u
            system += s
        out["groups"][name] = {"user": user, "system": system}
    return out


def window(samples, start_ns, end_ns):
    """CPU seconds by kind and by group between the samples nearest start and end."""
    before = [s for s in samples if s["t_ns"] <= start_ns]
    after = [s for s in samples if s["t_ns"] >= end_ns]
    if not before or not after:
        return None
    a, b = before[-1], after[0]
    secs = (b["t_ns"] - a["t_ns"]) / 1e9
    res = {"secs": round(secs, 2)}
    res["machine_cpu_s"] = {k: round((b["machine"][k] - a["machine"][k]) / 100, 2) for k in KINDS}
    res["groups_cpu_s"] = {
        g: {k: round((b["groups"][g][k] - a["groups"][g][k]) / 100, 2) for k in ("user", "system")}
        for g in a["groups"]
    }
    return res


def main():
    out, interval = sys.argv[1], float(sys.argv[2])
    groups = {}
    for arg in sys.argv[3:]:
        name, pids = arg.split("=", 1)
        groups[name] = [p for p in pids.split(",") if p]
    with open(out, "a") as f:
        while True:
            f.write(json.dumps(sample(groups)) + "\n")
            f.flush()
            time.sleep(interval)


if __name__ == "__main__":
    main()
