#!/usr/bin/env bash
# bench-mta-latency.sh: how much delivery time does the reference MTA add at half capacity?
#
# WHAT IT MEASURES
#   Runs scenarios/smoke.yaml (2 reference-MTA nodes, fsync on, inboxes with the generic
#   profile, which adds no scripted latency) at rising `--rate-scale` steps to find the highest
#   rate that still meets the scenario's SLO (its capacity on this machine), then runs it
#   REPEATS times at half that rate. It prints, per run, the delivery p50/p99 from the intended
#   send time and the *uncorrected* p50 (from the moment submission started to the inbox
#   receipt) — the latter is what the MTA adds: ingress, durable spool, queueing and the
#   outbound SMTP transaction. Target (issue 5): median MTA-added p50 <= 5 ms.
#   Everything stays on loopback.
#
# HOW TO RUN
#   scripts/bench-mta-latency.sh                 # REPEATS=3, steps 10 20 30 40 50 60
#   REPEATS=5 STEPS="10 20 40 80" scripts/bench-mta-latency.sh
#   Prints TARGET MET or TARGET MISSED; exits 1 when missed or when any run failed to measure
#   (INVALID: exit 2/3, no summary.json, verdict error/aborted, or a threshold failing at half).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$(dirname "$0")/.."
REPEATS="${REPEATS:-3}"
STEPS="${STEPS:-10 20 30 40 50 60}"
mailsurge_bin missing quiet # BIN: MAILSURGE_BIN, or target/release/mailsurge (built if missing)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
base_rate=100   # smoke.yaml's rate in messages/s

field() { python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($2)" "$1"; }

# run SCALE DIR [strict]: prints "slo_pass p50 p99 uncorrected_p50" of one run. A run that did not
# measure (exit 2 or 3, no summary, verdict error/aborted) prints INVALID and ends the script
# with 1: a failed run is not a data point. With `strict`, a threshold failure (exit 1) is
# INVALID too (at half capacity every threshold must hold); without it, exit 1 is a probe that
# went over capacity, which is what the probes look for.
run() {
  local rc=0
  "$BIN" run scenarios/smoke.yaml --rate-scale "$1" --out "$2" --quiet >"$2.log" 2>&1 || rc=$?
  if ((rc >= 2)) || [[ ! -s "$2/summary.json" ]] || { ((rc == 1)) && [[ "${3:-}" == strict ]]; }; then
    echo "INVALID: run at --rate-scale $1 exited $rc: $(grep -v '^t=' "$2.log" | tail -n 3 | tr '\n' ' ')" >&2
    exit 1
  fi
  field "$2/summary.json" "s['verdict'] in ('pass', 'fail') or sys.exit('INVALID: verdict ' + s['verdict']), s['slo']['pass'], s['delivery_ms']['p50'], s['delivery_ms']['p99'], s['delivery_ms']['uncorrected_p50']" | cut -d' ' -f2-
}

capacity=0
for step in $STEPS; do
  line="$(run "$step" "$work/cap-$step")" || exit 1
  read -r pass p50 p99 unc <<<"$(tr -d '(),' <<<"$line")"
  printf 'capacity probe  %5d msg/s  slo %-5s p50 %8s ms  p99 %8s ms\n' $((step * base_rate)) "$pass" "$p50" "$p99"
  [ "$pass" = "True" ] || break
  capacity=$step
done
if [ "$capacity" = 0 ]; then
  echo "the lowest step already misses the SLO; lower STEPS"; exit 1
fi
half=$(python3 -c "print($capacity / 2)")
echo "capacity ~$((capacity * base_rate)) msg/s (last step meeting the SLO); measuring at half: $(python3 -c "print(int($half * $base_rate))") msg/s"
results=()
for r in $(seq 1 "$REPEATS"); do
  line="$(run "$half" "$work/half-$r" strict)" || exit 1
  read -r pass p50 p99 unc <<<"$(tr -d '(),' <<<"$line")"
  printf 'run %d  p50 %s ms  p99 %s ms  MTA-added p50 (uncorrected) %s ms\n' "$r" "$p50" "$p99" "$unc"
  results+=("$unc")
done
echo "median MTA-added p50 over $REPEATS runs: [${results[*]}] ms"
bench_verdict "median MTA-added p50 (ms)" "$(median "${results[@]}")" 5 "<=" || exit 1
