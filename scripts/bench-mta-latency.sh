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

run() { # $1 = rate scale, $2 = out dir; prints "slo_pass p50 p99 uncorrected_p50"
  "$BIN" run scenarios/smoke.yaml --rate-scale "$1" --out "$2" --quiet >/dev/null 2>&1 || true
  field "$2/summary.json" "s['slo']['pass'], s['delivery_ms']['p50'], s['delivery_ms']['p99'], s['delivery_ms']['uncorrected_p50']"
}

capacity=0
for step in $STEPS; do
  read -r pass p50 p99 unc <<<"$(run "$step" "$work/cap-$step" | tr -d '(),')"
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
  read -r pass p50 p99 unc <<<"$(run "$half" "$work/half-$r" | tr -d '(),')"
  printf 'run %d  p50 %s ms  p99 %s ms  MTA-added p50 (uncorrected) %s ms\n' "$r" "$p50" "$p99" "$unc"
  results+=("$unc")
done
median=$(printf '%s\n' "${results[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
verdict=$(python3 -c "print('PASS' if $median <= 5 else 'FAIL')")
echo "median MTA-added p50: $median ms (target <= 5 ms) $verdict"
