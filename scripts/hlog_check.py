#!/usr/bin/env python3
"""hlog_check.py: read mailsurge's latency.hlog files with HdrHistogram's own Python port.

Run by scripts/ci-hlog-interop.sh inside a venv holding the PyPI package `hdrhistogram`
(module `hdrh`); see that script for the why. Everything is decoded by
`hdrh.log.HistogramLogReader`, never by mailsurge code.

    hlog_check.py --run RUN_DIR [--run RUN_DIR ...] [--run-undelivered RUN_DIR]
                  [--merged MERGED.hlog --merge-stdout FILE] [--foreign LOG --foreign-merged OUT]

Per run directory (latency.hlog + summary.json):
  * the reader yields every interval line of the file (it silently skips lines it cannot
    parse, so the lines are counted independently), > 0 of them, each with its tag;
  * interval timestamps are absolute (StartTime/BaseTime understood) and near `started_at`;
  * each line's Interval_Max column (ms, MaxValueDivisor 1000) is the decoded histogram's max;
  * per tag (`delivery`, `uncorrected`) the accumulated count equals `counts.delivered`.
    Undelivered eligible mail (expired + queued + lost = accepted - bounced - suppressed -
    delivered) is +inf in summary.json and has no finite value, so it is NOT in the hlog;
    percentiles are therefore compared over n = delivered + undelivered, exactly as the
    summary takes them: rank = ceil(q*n); rank > delivered means +inf (`null`); otherwise the
    value at that rank of the finite histogram;
  * --run-undelivered: a run that must have both bounced (not eligible) and undelivered (+inf)
    mail, so the accounting above is exercised, not only assumed;
  * p50/p90/p99/p999/max (delivery) and uncorrected p50/p99 from hdrh equal summary.json's
    within one HdrHistogram bucket (3 significant digits) plus the summary's 0.001 ms rounding.
    hdrh's get_value_at_percentile rounds the target count (int(x + 0.5)) where mailsurge
    (the Rust crate) takes ceil, so the percentile is passed as 100*rank/count to hit the
    same rank; hdrh's plain get_value_at_percentile(q) is printed alongside for reference.
With --foreign LOG --foreign-merged OUT (the other direction: a log written by hdrh's
HistogramLogWriter the way HdrHistogram writers do by default, absolute timestamps and a
StartTime line but no BaseTime, made with --write-foreign, then `mailsurge merge LOG --out OUT`):
  * OUT holds the same count, and each interval sits at the absolute second it was written at.
With --merged (the output of `mailsurge merge` on the runs' logs):
  * per tag: total count = sum of the inputs', and the merged histogram equals the sum of the
    inputs' histograms bucket by bucket (so every percentile agrees); percentiles printed;
  * `mailsurge merge`'s printed count, interval count and p50/p99 agree with hdrh.
Prints every figure it compares; exits 1 on any mismatch.
"""

import argparse
import datetime
import json
import math
import os
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

# mailsurge's histogram bounds (src/measure/latency.rs): 1 us .. 1 day, 3 significant digits.
LOWEST, HIGHEST, SIGFIG = 1, 86_400_000_000, 3
TAGS = ("delivery", "uncorrected")
failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)
    return ok


def new_hist():
    return HdrHistogram(LOWEST, HIGHEST, SIGFIG)


def raw_interval_lines(path):
    """Interval lines as any reader must see them: not comments, not the legend."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and not line.startswith('"StartTimestamp"'):
                out.append(line)
    return out


def read_hlog(path, check_max=True):
    """{tag: {"hist", "intervals", "starts"}} accumulated from hdrh's reader."""
    raw = raw_interval_lines(path)
    reader = HistogramLogReader(path, new_hist())
    tags = {}
    got = []
    try:
        while True:
            h = reader.get_next_interval_histogram()
            if h is None:
                break
            got.append(h)
    finally:
        reader.close()
    check(len(got) == len(raw) and len(got) > 0,
          f"{path}: hdrh read {len(got)} intervals of {len(raw)} interval lines (> 0)")
    for line, h in zip(raw, got):
        tag = h.get_tag()
        fields = line.split(",")
        if fields[0].startswith("Tag="):
            fields = fields[1:]
        # Interval_Max is written as max_us / 1000 with 3 decimals: exact in microseconds.
        col_us = round(float(fields[2]) * 1000)
        if check_max and col_us != h.get_max_value():
            check(False, f"{path}: {tag} interval at {fields[0]} s: Interval_Max column "
                         f"{fields[2]} ms != decoded max {h.get_max_value()} us")
        t = tags.setdefault(tag, {"hist": new_hist(), "intervals": 0, "starts": []})
        t["hist"].add(h)
        t["intervals"] += 1
        t["starts"].append(h.get_start_time_stamp() / 1000.0)
    for tag, t in tags.items():
        s = t["starts"]
        check(all(a < b for a, b in zip(s, s[1:])),
              f"{path}: {tag or '(untagged)'}: {t['intervals']} intervals, start times strictly "
              "increasing")
    return tags


def rank_of(q, n):
    """The summary's rank (src/measure/latency.rs Dist::quantile_ms), same f64 arithmetic."""
    return int(max(math.ceil(min(max(q, 0.0), 1.0) * n), 1.0))


def value_at_rank(h, k):
    """hdrh's value at cumulative count k (its get_value_at_percentile, aimed at rank k)."""
    total = h.get_total_count()
    pct = 100.0 * k / total
    assert h.get_target_count_at_percentile(pct) == k, (k, total)
    return h.get_value_at_percentile(pct)


def bucket_us(h, v):
    return h.get_highest_equivalent_value(v) - h.get_lowest_equivalent_value(v) + 1


def fmt_ms(v):
    return "inf" if v is None else f"{v:.3f} ms"


def compare_quantile(label, h, q, n, summary_ms):
    finite = h.get_total_count()
    r = rank_of(q, n)
    if r > finite:
        return check(summary_ms is None,
                     f"{label}: rank {r} of {n} falls among the {n - finite} undelivered (+inf); "
                     f"summary {fmt_ms(summary_ms)}")
    # The summary asks the Rust crate for quantile r/finite, which it turns back into a count
    # with f64 ceil; reproduce that too (it can land one rank higher).
    ranks = [r]
    r_rust = int(max(math.ceil(min(r / finite, 1.0) * finite), 1))
    if r_rust != r:
        ranks.append(r_rust)
    plain = h.get_value_at_percentile(q * 100.0) / 1000.0
    if summary_ms is None:
        return check(False, f"{label}: hdrh {value_at_rank(h, r) / 1000:.3f} ms (rank {r} of {n}) "
                            f"but summary says +inf")
    for k in ranks:
        v = value_at_rank(h, k)
        tol = bucket_us(h, v) / 1000.0 + 0.0005
        if abs(v / 1000.0 - summary_ms) <= tol:
            note = "" if k == r else f" [summary's f64 rounding took rank {k}, not {r}]"
            return check(True, f"{label}: hdrh {v / 1000:.3f} ms (rank {k} of {n}, bucket "
                               f"{bucket_us(h, v)} us) = summary {summary_ms:.3f} ms; "
                               f"hdrh plain p{q * 100:g} {plain:.3f} ms{note}")
    v = value_at_rank(h, r)
    return check(False, f"{label}: hdrh {v / 1000:.3f} ms (rank {r} of {n}) != summary "
                        f"{summary_ms:.3f} ms (tolerance {bucket_us(h, v) / 1000 + 0.0005:.4f} ms)")


def check_run(run_dir, want_undelivered=False):
    hlog = os.path.join(run_dir, "latency.hlog")
    summary = json.load(open(os.path.join(run_dir, "summary.json"), encoding="utf-8"))
    c, d = summary["counts"], summary["delivery_ms"]
    print(f"== run {run_dir} (seed {summary['seed']}, verdict {summary['verdict']})")
    eligible = c["accepted"] - c["bounced"] - c["suppressed"]
    undelivered = eligible - c["delivered"]
    check(undelivered == c["expired"] + c["queued"] + c["lost"] and undelivered >= 0,
          f"summary: eligible {eligible} = delivered {c['delivered']} + undelivered "
          f"{undelivered} (expired {c['expired']} + queued {c['queued']} + lost {c['lost']})")
    if want_undelivered:
        check(undelivered > 0 and c["bounced"] > 0,
              f"this run has undelivered ({undelivered}) and bounced ({c['bounced']}) mail")
    tags = read_hlog(hlog)
    check(set(tags) == set(TAGS), f"tags in the log: {sorted(tags)} (expected {list(TAGS)})")
    if "delivery" in tags:
        started = datetime.datetime.fromisoformat(summary["started_at"].replace("Z", "+00:00"))
        first = tags["delivery"]["starts"][0]
        check(abs(first - started.timestamp()) < 120,
              f"first interval starts at epoch {first:.3f} s, {first - started.timestamp():+.3f} s "
              f"from started_at {summary['started_at']} (absolute timestamps)")
    for tag in TAGS:
        if tag not in tags:
            continue
        h = tags[tag]["hist"]
        check(h.get_total_count() == c["delivered"],
              f"{tag}: hdrh total count {h.get_total_count()} over {tags[tag]['intervals']} "
              f"intervals = counts.delivered {c['delivered']} (+inf undelivered {undelivered} "
              f"are not in the hlog)")
    n = eligible
    if "delivery" in tags:
        h = tags["delivery"]["hist"]
        for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            compare_quantile(f"delivery {key}", h, q, n, d[key])
        hmax = h.get_max_value() / 1000.0 if undelivered == 0 and h.get_total_count() else None
        check(hmax == d["max"] or (hmax is not None and d["max"] is not None
                                   and abs(hmax - d["max"]) <= 0.0005),
              f"delivery max: hdrh {fmt_ms(hmax)} = summary {fmt_ms(d['max'])}")
    if "uncorrected" in tags:
        h = tags["uncorrected"]["hist"]
        for key, q in (("uncorrected_p50", 0.5), ("uncorrected_p99", 0.99)):
            compare_quantile(f"uncorrected {key[12:]}", h, q, n, d[key])
    return tags


def parse_merge_stdout(path):
    """`mailsurge merge` lines: TAG N values over S s  p50 X ms  p90 X ms  p99 X ms  max X ms."""
    out = {}
    for line in open(path, encoding="utf-8"):
        w = line.split()
        if len(w) >= 14 and w[2] == "values" and w[3] == "over":
            out[w[0]] = {"n": int(w[1]), "secs": int(w[4]), "p50": float(w[7]),
                         "p90": float(w[10]), "p99": float(w[13])}
    return out


def same_buckets(a, b):
    if a.counts_len != b.counts_len:
        return False
    return all(a.get_count_at_index(i) == b.get_count_at_index(i) for i in range(a.counts_len))


def check_merge(merged_path, inputs, stdout_path):
    print(f"== merged {merged_path} ({len(inputs)} inputs)")
    merged = read_hlog(merged_path)
    printed = parse_merge_stdout(stdout_path) if stdout_path else {}
    for tag in TAGS:
        parts = [t[tag]["hist"] for t in inputs if tag in t]
        acc = new_hist()
        for p in parts:
            acc.add(p)
        if not check(tag in merged, f"{tag}: present in the merged log"):
            continue
        m = merged[tag]["hist"]
        counts = " + ".join(str(p.get_total_count()) for p in parts)
        check(m.get_total_count() == acc.get_total_count(),
              f"{tag}: merged total {m.get_total_count()} = {counts} = {acc.get_total_count()}")
        check(same_buckets(m, acc), f"{tag}: merged histogram = sum of the inputs, bucket by bucket")
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            r = rank_of(q, m.get_total_count())
            vm, va = value_at_rank(m, r), value_at_rank(acc, r)
            check(vm == va, f"{tag} {name}: merged {vm / 1000:.3f} ms = inputs summed "
                            f"{va / 1000:.3f} ms (rank {r})")
        check(m.get_max_value() == acc.get_max_value(),
              f"{tag} max: merged {m.get_max_value() / 1000:.3f} ms = inputs summed "
              f"{acc.get_max_value() / 1000:.3f} ms")
        if stdout_path:
            p = printed.get(tag)
            if not check(p is not None, f"{tag}: `mailsurge merge` printed a line for it"):
                continue
            check(p["n"] == m.get_total_count() and p["secs"] == merged[tag]["intervals"],
                  f"{tag}: `mailsurge merge` printed {p['n']} values over {p['secs']} s; hdrh "
                  f"{m.get_total_count()} values in {merged[tag]['intervals']} intervals")
            for name, q in (("p50", 0.5), ("p99", 0.99)):
                v = value_at_rank(m, rank_of(q, m.get_total_count()))
                tol = bucket_us(m, v) / 1000.0 + 0.05  # printed with 1 decimal
                check(abs(v / 1000.0 - p[name]) <= tol,
                      f"{tag} {name}: `mailsurge merge` printed {p[name]:.1f} ms, hdrh "
                      f"{v / 1000:.3f} ms")


FOREIGN_START = 1_700_000_000  # 2023-11-14T22:13:20Z
FOREIGN_VALUES = ([1000, 2000, 3000], [1500, 40_000], [250, 2_500_000, 7000, 7000])


def write_foreign(path):
    """A log as HdrHistogram writers produce it with no base time: absolute timestamps."""
    from hdrh.log import HistogramLogWriter

    with open(path, "w", encoding="utf-8") as f:
        w = HistogramLogWriter(f)
        w.output_log_format_version()
        # (hdrh's output_start_time is broken in 0.10.x; write its line by hand.)
        w.output_comment(f"[StartTime: {FOREIGN_START:.3f} (seconds since epoch), "
                         "Tue Nov 14 22:13:20 UTC 2023]")
        w.output_legend()
        for i, values in enumerate(FOREIGN_VALUES):
            h = new_hist()
            for v in values:
                h.record_value(v)
            start = FOREIGN_START + i + 0.25
            w.output_interval_histogram(h, start, start + 1.0, 1000.0)


def check_foreign(foreign, merged_path):
    print(f"== hdrh-written {foreign} through `mailsurge merge` -> {merged_path}")
    theirs = read_hlog(foreign, check_max=False)  # hdrh writes whole ms there (//)
    ours = read_hlog(merged_path)
    want = sum(len(v) for v in FOREIGN_VALUES)
    got = sum(t["hist"].get_total_count() for t in ours.values())
    check(got == want == theirs[None]["hist"].get_total_count(),
          f"values: written {want}, merged log holds {got}")
    starts = [int(s) for t in ours.values() for s in t["starts"]]
    expect = [FOREIGN_START + i for i in range(len(FOREIGN_VALUES))]
    check(starts == expect, f"interval seconds: merged {starts}, written {expect} (absolute timestamps "
                            f"without a BaseTime line are read as absolute)")
    if None in ours:
        check(same_buckets(ours[None]["hist"], theirs[None]["hist"]),
              "merged histogram = the written one, bucket by bucket")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-foreign", metavar="LOG", help="only write an hdrh log to LOG and exit")
    ap.add_argument("--run", action="append", default=[], help="run directory")
    ap.add_argument("--run-undelivered", action="append", default=[],
                    help="run directory that must contain bounced and undelivered mail")
    ap.add_argument("--foreign", help="the log --write-foreign wrote")
    ap.add_argument("--foreign-merged", help="`mailsurge merge --out` of --foreign")
    ap.add_argument("--merged", help="merged hlog from `mailsurge merge` of the runs' logs")
    ap.add_argument("--merge-stdout", help="what `mailsurge merge` printed")
    a = ap.parse_args()
    if a.write_foreign:
        write_foreign(a.write_foreign)
        return 0
    if not a.run and not a.run_undelivered:
        ap.error("--run is required")
    try:
        inputs = [check_run(d) for d in a.run]
        for d in a.run_undelivered:
            check_run(d, want_undelivered=True)
        if a.merged:
            check_merge(a.merged, inputs, a.merge_stdout)
        if a.foreign:
            check_foreign(a.foreign, a.foreign_merged)
    except Exception as e:  # hdrh rejecting the file is the failure this suite exists for
        print(f"FAIL: hdrh could not read a log: {type(e).__name__}: {e}")
        return 1
    if failures:
        print(f"FAIL: {len(failures)} mismatch(es)")
        return 1
    print("PASS: hdrh (HdrHistogram's Python port) reads mailsurge's logs and agrees with "
          "summary.json and `mailsurge merge`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
