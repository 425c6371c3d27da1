#!/usr/bin/env bash
# bench-gen.sh: is `mailsurge gen` at least 1.5x Postfix's smtp-source?
#
# WHAT IT MEASURES
#   Both generators push the same closed-loop load into the same smtp-sink:
#       smtp-source -d -s 20 -m 100000 -l 1024 ADDR
#       mailsurge gen --target ADDR --rate max --count 100000 --connections 20 --size 1KiB
#   (20 reused connections, 100k messages of 1 KiB), timed with a wall clock around each
#   command. A fresh smtp-sink (`-u nobody ADDR 1000`, no counters or delays: its fastest
#   mode) serves every run. The order alternates per repetition; the script prints each time
#   and the MEDIAN of smtp_source_time / gen_time. Target (issue 6): >= 1.5.
#   A gen run counts only if its summary.json shows 100000 accepted and 0 rejected;
#   smtp-source only if it exits 0 with an empty stderr (it aborts on any refusal).
#
# HOW TO RUN
#   scripts/bench-gen.sh                 # REPEATS=5; installs postfix's tools if missing
#   REPEATS=3 MAILSURGE_BIN=target/release/mailsurge scripts/bench-gen.sh
#   Loopback only (127.0.7.1). Exit 0 when the runs were valid (target met or not), 1 if not.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$(dirname "$0")/.."
REPEATS="${REPEATS:-5}"
COUNT=100000
ADDR=127.0.7.1:2525

if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: smtp-source/smtp-sink missing and not root to install postfix"; exit 0
  fi
  apt_install postfix
fi
mailsurge_bin missing quiet # BIN: MAILSURGE_BIN, or target/release/mailsurge (built if missing)
work="$(mktemp -d)"
sink_pid=""
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

start_sink() {
  if ss -ltn | grep -q "${ADDR} "; then echo "INVALID: $ADDR already in use"; exit 1; fi
  smtp-sink -u nobody "$ADDR" 1000 & sink_pid=$!
  for _ in $(seq 50); do ss -ltn | grep -q "${ADDR} " && return; sleep 0.05; done
  echo "INVALID: smtp-sink did not start"; exit 1
}
stop_sink() { kill "$sink_pid" 2>/dev/null; wait "$sink_pid" 2>/dev/null || true; sink_pid=""; }

time_source() {
  local t0 t1
  t0=$EPOCHREALTIME
  if ! smtp-source -d -s 20 -m "$COUNT" -l 1024 "$ADDR" 2>"$work/err"; then
    echo "INVALID: smtp-source failed: $(head -c 300 "$work/err")" >&2; exit 1
  fi
  t1=$EPOCHREALTIME
  [ -s "$work/err" ] && { echo "INVALID: smtp-source stderr: $(head -c 300 "$work/err")" >&2; exit 1; }
  python3 -c "print(f'{$t1-$t0:.3f}')"
}

time_gen() {
  local t0 t1 out="$work/gen-$1"
  t0=$EPOCHREALTIME
  "$BIN" gen --target "$ADDR" --rate max --count "$COUNT" --connections 20 --size 1KiB --out "$out" --quiet >/dev/null
  t1=$EPOCHREALTIME
  python3 - "$out/summary.json" "$COUNT" <<'PY' || exit 1
import json, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[2])
if s["counts"]["accepted"] != n or s["counts"]["rejected_at_submit"] != 0:
    print(f"INVALID: gen accepted {s['counts']['accepted']} of {n}", file=sys.stderr); sys.exit(1)
PY
  python3 -c "print(f'{$t1-$t0:.3f}')"
}

ratios=()
for r in $(seq 1 "$REPEATS"); do
  if (( r % 2 )); then order="source gen"; else order="gen source"; fi
  for who in $order; do
    start_sink
    if [ "$who" = source ]; then ts=$(time_source); else tg=$(time_gen "$r"); fi
    stop_sink
  done
  ratio=$(python3 -c "print(f'{$ts/$tg:.3f}')")
  printf 'rep %d  smtp-source %7ss (%6.0f msg/s)   mailsurge gen %7ss (%6.0f msg/s)   ratio %s\n' \
    "$r" "$ts" "$(python3 -c "print($COUNT/$ts)")" "$tg" "$(python3 -c "print($COUNT/$tg)")" "$ratio"
  ratios+=("$ratio")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
verdict=$(python3 -c "print('PASS' if $median >= 1.5 else 'FAIL')")
echo "median smtp-source/gen time ratio: $median (target >= 1.5) $verdict   [ratios: ${ratios[*]}]"
