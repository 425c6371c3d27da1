#!/usr/bin/env bash
# ci-hlog-interop.sh: do OTHER HdrHistogram tools read mailsurge's latency.hlog, and agree?
#
# WHY
#   latency.hlog is sold as the standard HdrHistogram interval-log format (V2 compressed
#   histograms, tags `delivery` and `uncorrected`, values in microseconds, Interval_Max column
#   in ms via MaxValueDivisor 1000) so a run can be fed to HdrHistogram tooling and logs from
#   several hosts merged. mailsurge writes and reads it with the same Rust crate, so its own
#   tests cannot catch a dialect only that crate understands. This suite reads the files with
#   an independent implementation: HdrHistogram's Python port (PyPI `hdrhistogram`, module
#   `hdrh`, pinned below), whose HistogramLogReader follows the Java HistogramLogReader.
#
# WHAT IT DOES
#   1. Runs scenarios/smoke.yaml twice from the release binary (--seed 101 and 202, separate
#      --out), then `mailsurge merge A/latency.hlog B/latency.hlog --out merged.hlog`.
#   2. scripts/hlog_check.py (in a throwaway venv) reads every log with
#      hdrh.log.HistogramLogReader, accumulates the intervals per tag and checks, per run:
#      intervals > 0 and none skipped by the reader; absolute timestamps; the Interval_Max
#      column; total count = summary.json `counts.delivered`; p50/p90/p99/p99.9/max and the
#      uncorrected p50/p99 = summary.json's within one HdrHistogram bucket (3 significant
#      digits) + the summary's 0.001 ms rounding. For the merged log: count = sum of the two,
#      histogram = the inputs' sum bucket by bucket (hence equal percentiles), and the figures
#      `mailsurge merge` printed agree.
#   3. A third run, of a small scenario written here (one provider that bounces 3% and
#      answers 451 to everything from 7.5 s on, drain 2 s), must end with bounced mail (not
#      eligible) and undelivered mail (+inf); it gets the per-run checks above (it fails its
#      SLO by design: exit 1 is expected).
#   4. The other direction: hdrh's HistogramLogWriter writes a log the way HdrHistogram
#      writers do with no base time (absolute timestamps, StartTime, no BaseTime line);
#      `mailsurge merge` must keep its count and put each interval at the right epoch second.
#   Undelivered eligible mail (+inf in summary.json, `null` percentiles) has no finite value,
#   so the hlog leaves it out: the log's count is `delivered`, not eligible, and percentiles
#   are compared at the summary's rank over eligible = delivered + expired + queued + lost
#   (a rank past `delivered` must be `null` in the summary). hdrh's get_value_at_percentile
#   rounds the target count where the Rust crate takes ceil; the checker aims hdrh at the
#   summary's rank and prints hdrh's plain percentile beside it.
#
# HOW TO RUN
#   scripts/ci-hlog-interop.sh        # ~40 s; needs python3 with venv/pip and PyPI access
#   MAILSURGE_BIN=/path/to/mailsurge scripts/ci-hlog-interop.sh
#   Environment:
#     MAILSURGE_BIN  binary to test (default: ${CARGO_TARGET_DIR:-target}/release/mailsurge,
#                    brought up to date with `cargo build --release` first)
#     HDRH_VERSION   PyPI hdrhistogram version (default 0.10.8)
#   Without python3, its venv module or pip, or if the pip install fails: prints
#   "SKIPPED: <reason>" and exits 0. Exit 1 on any mismatch (hdrh rejecting a file included),
#   with every compared figure printed. Loopback only, like every mailsurge run.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
HDRH_VERSION="${HDRH_VERSION:-0.10.8}"

mailsurge_bin always # BIN: MAILSURGE_BIN, or the release binary brought up to date

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

# --- hdrh in a throwaway venv (skip, loudly, when Python tooling or PyPI is missing) --------
command -v python3 >/dev/null || { echo "SKIPPED: python3 not found"; exit 0; }
if ! python3 -m venv "$work/venv" >"$work/venv.log" 2>&1; then
  echo "SKIPPED: python3 -m venv failed (Debian: apt-get install python3-venv): $(tail -n 1 "$work/venv.log")"
  exit 0
fi
PY="$work/venv/bin/python"
"$PY" -m pip --version >/dev/null 2>&1 || { echo "SKIPPED: pip not available in the venv"; exit 0; }
echo "== pip install hdrhistogram==$HDRH_VERSION (venv in $work)"
if ! "$PY" -m pip install -q --disable-pip-version-check "hdrhistogram==$HDRH_VERSION" >"$work/pip.log" 2>&1; then
  echo "SKIPPED: pip install hdrhistogram==$HDRH_VERSION failed: $(tail -n 1 "$work/pip.log")"
  exit 0
fi
"$PY" -c "import hdrh.log" || { echo "error: hdrhistogram installed but hdrh.log does not import" >&2; exit 1; }

# --- two smoke runs and their merge ------------------------------------------------------------
run() { # run SEED DIR [SCENARIO]: exit 0 (pass) or 1 (a threshold failed) both leave a report
  local rc=0
  "$BIN" run "${3:-scenarios/smoke.yaml}" --seed "$1" --out "$2" --quiet >"$2.log" 2>&1 || rc=$?
  if (( rc > 1 )) || [[ ! -s "$2/latency.hlog" || ! -s "$2/summary.json" ]]; then
    echo "error: mailsurge run (seed $1) exited $rc without a report:" >&2
    tail -n 20 "$2.log" >&2
    exit 1
  fi
  echo "   seed $1: $(grep -m 1 -E '^[a-z-]+: (PASS|FAIL)' "$2.log" || echo "exit $rc")"
}
echo "== mailsurge run scenarios/smoke.yaml, twice"
run 101 "$work/a"
run 202 "$work/b"
echo "== mailsurge run: bounces and undelivered mail (a scenario written here)"
cat >"$work/failing.yaml" <<'EOF'
provider: failing
rules:
  - { stage: message, probability: 3%, reply: "550 5.7.1 Message rejected" }
  - { stage: message, window: { from: 7500ms, until: 1h }, reply: "451 4.3.0 Temporary system failure" }
EOF
cat >"$work/undelivered.yaml" <<EOF
name: hlog-undelivered
seed: 303
duration: 8s
drain: 2s
slo: { delivery_time: 2s, target: 99% }
regions:
  - { name: local, nodes: 2 }
mta:
  retry: { initial: 500ms, factor: 2, max_delay: 4s, jitter: 20%, give_up: 30s }
  egress_pools: { shared: [127.0.1.1, 127.0.1.2] }
  responses: deliverability
providers:
  - { name: failing, domains: [example.com], rules: $work/failing.yaml }
traffic:
  rate: 100/s
  arrival: poisson
  domains: { example.com: 100% }
  size: 4KiB
  connections: 8
EOF
run 303 "$work/c" "$work/undelivered.yaml"

echo "== mailsurge merge a/latency.hlog b/latency.hlog"
"$BIN" merge "$work/a/latency.hlog" "$work/b/latency.hlog" --out "$work/merged.hlog" | tee "$work/merge.txt"

echo "== mailsurge merge on a log written by hdrh"
"$PY" scripts/hlog_check.py --write-foreign "$work/foreign.hlog"
"$BIN" merge "$work/foreign.hlog" --out "$work/foreign-merged.hlog"

"$PY" scripts/hlog_check.py --run "$work/a" --run "$work/b" --run-undelivered "$work/c" \
  --merged "$work/merged.hlog" --merge-stdout "$work/merge.txt" \
  --foreign "$work/foreign.hlog" --foreign-merged "$work/foreign-merged.hlog"
