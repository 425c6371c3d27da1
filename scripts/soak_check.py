#!/usr/bin/env python3
"""Judges a soak run (scripts/soak.sh): accounting from summary.json, the queue's peak from
events.jsonl.zst (accepted minus finished recipients over time), and the RSS/fd samples."""
import argparse
import collections
import csv
import json
import subprocess
import sys

TERMINAL = {"delivered", "bounced", "expired", "dropped"}


def queue_peaks(run: str):
    """Most recipients accepted and not yet finished at any moment: over all nodes, and per
    node (the node whose `accepted` queued them)."""
    p = subprocess.Popen(["zstdcat", f"{run}/events.jsonl.zst"], stdout=subprocess.PIPE, text=True)
    seen, done = {}, set()
    depth = peak = 0
    node_depth = collections.Counter()
    node_peak = collections.Counter()
    for line in p.stdout:
        if '"accepted"' not in line and not any(f'"{k}"' in line for k in TERMINAL):
            continue
        e = json.loads(line)
        key = (e["id"], e.get("rcpt"))
        if e["event"] == "accepted" and key not in seen:
            node = e.get("node", "")
            seen[key] = node
            depth += 1
            peak = max(peak, depth)
            node_depth[node] += 1
            node_peak[node] = max(node_peak[node], node_depth[node])
        elif e["event"] in TERMINAL and key in seen and key not in done:
            done.add(key)
            depth -= 1
            node_depth[seen[key]] -= 1
    p.wait()
    return peak, node_peak


def main() -> int:
    a = argparse.ArgumentParser()
    a.add_argument("--run", required=True)
    a.add_argument("--samples", required=True)
    a.add_argument("--exit", type=int, required=True)
    a.add_argument("--node-bytes", type=float, default=100)
    a.add_argument("--fd-spread", type=int, default=64)
    a.add_argument("--min-peak", type=int, default=0)
    a.add_argument("--run-hwm-kb", type=int, default=0)
    a.add_argument("--run-bytes", type=float, default=1024)
    o = a.parse_args()
    bad = []
    s = json.load(open(f"{o.run}/summary.json"))
    c = s["counts"]
    print(f"verdict {s['verdict']} (exit {o.exit}); generated {c['generated']} accepted {c['accepted']} "
          f"delivered {c['delivered']} expired {c['expired']} queued {c['queued']} lost {c['lost']} duplicates {c['duplicates']}")
    if c["lost"] != 0 or o.exit != 0:
        bad.append("accounting: the run did not pass with lost == 0")
    peak, node_peak = queue_peaks(o.run)
    print(f"queue peak: {peak} recipients queued at once ("
          + ", ".join(f"{n} {v}" for n, v in sorted(node_peak.items())) + ")")
    if peak < o.min_peak:
        bad.append(f"the queue peaked at {peak}, below the {o.min_peak} asked for")
    rows = list(csv.DictReader(open(o.samples)))
    by = collections.defaultdict(list)
    for r in rows:
        by[(r["kind"], r["pid"])].append((int(r["t"]), int(r["rss_kb"]), int(r["fds"])))
    for (kind, pid), v in sorted(by.items()):
        rss = [x[1] for x in v]
        fds = [x[2] for x in v]
        # Growth over the first sample after start-up (the second one: nodes are up by then).
        base = rss[1] if len(rss) > 1 else rss[0]
        growth = (max(rss) - base) * 1024
        line = (f"{kind} {pid}: RSS {base // 1024} -> max {max(rss) // 1024} MB; fds {min(fds)}..{max(fds)} "
                f"({len(v)} samples)")
        if kind.startswith("node") and peak:
            # Each node against its own queue's peak (older samples name no node: an even share).
            name = kind.partition(":")[2]
            own = node_peak.get(name) or peak / max(1, len(node_peak))
            per = growth / own
            line += f"; {per:.0f} B of RSS growth per queued message"
            if per > o.node_bytes:
                bad.append(f"node {pid}: {per:.0f} B per queued message > {o.node_bytes:.0f}")
        if max(fds) - min(fds) > o.fd_spread:
            bad.append(f"{kind} {pid}: open fds varied by {max(fds) - min(fds)} > {o.fd_spread}")
        print(line)
    if o.run_hwm_kb and c["generated"]:
        per = o.run_hwm_kb * 1024 / c["generated"]
        print(f"run process peak RSS {o.run_hwm_kb // 1024} MB = {per:.0f} B per generated message")
        if per > o.run_bytes:
            bad.append(f"the run process peaked at {per:.0f} B per message > {o.run_bytes:.0f}")
    for b in bad:
        print(f"FAIL: {b}")
    if not bad:
        print("PASS: accounting exact, node and run RSS bounded per message, fds flat")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
