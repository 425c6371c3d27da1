#!/usr/bin/env bash
# Randomized SMTP abuse against a live mock inbox and a live reference-MTA node, for minutes:
# mutated conversations, random bytes, over-long lines, absurd SIZE, non-ASCII paths, DATA
# tricks, abrupt closes (scripts/smtp_fuzz.py). Fails if a process died, panicked, stopped
# accepting connections, or grew its RSS past FUZZ_MAX_RSS_GROWTH_MB. Loopback only.
#
#   scripts/fuzz.sh                 # 120 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
SECONDS_TOTAL="${FUZZ_SECONDS:-120}"
MAX_GROWTH_MB="${FUZZ_MAX_RSS_GROWTH_MB:-64}"
require_tools python3
mailsurge_bin missing quiet

WORK="$(mktemp -d)"
cleanup() { kill "${INBOX_PID:-}" "${NODE_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

INBOX=127.0.9.1:2525
start_inbox_and_node "$WORK" "$INBOX" generic 127.0.9.2:2525 127.0.9.3

rss_mb() { echo $(( $(rss_kb "$1") / 1024 )); }
# Warm up (buffers, pools), then take the baseline.
python3 "$(dirname "$0")/smtp_fuzz.py" --seconds 5 --target inbox="$INBOX" --target mta=127.0.9.2:2525 >/dev/null
base_inbox="$(rss_mb "$INBOX_PID")"; base_node="$(rss_mb "$NODE_PID")"
echo "== fuzzing for ${SECONDS_TOTAL}s (RSS at start: inbox ${base_inbox} MB, mta ${base_node} MB)"
status=0
python3 "$(dirname "$0")/smtp_fuzz.py" --seconds "$SECONDS_TOTAL" --seed "${FUZZ_SEED:-$RANDOM}" \
  --target inbox="$INBOX" --target mta=127.0.9.2:2525 || status=1
for p in "inbox $INBOX_PID $base_inbox" "mta $NODE_PID $base_node"; do
  read -r name pid base <<<"$p"
  if ! pid_alive "$pid"; then echo "FAIL: $name died"; status=1; continue; fi
  now="$(rss_mb "$pid")"
  growth=$(( now - base ))
  echo "$name: RSS ${base} MB -> ${now} MB (growth ${growth} MB, limit ${MAX_GROWTH_MB} MB)"
  if (( growth > MAX_GROWTH_MB )); then echo "FAIL: $name RSS grew too much"; status=1; fi
done
if grep -l "panicked" "$WORK"/*.err; then echo "FAIL: a process panicked"; status=1; fi
[[ $status == 0 ]] && echo "PASS: no panic, both still serving, RSS bounded"
exit "$status"
