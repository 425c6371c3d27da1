#!/usr/bin/env bash
# Memory per queued message in the reference MTA: a node whose only inbox defers every
# recipient (451) takes QUEUE_MESSAGES messages of 4 KiB from `mailsurge gen`, all of which stay
# queued waiting for a retry; the node's RSS is read before and after. Prints bytes per queued
# message (RSS growth / messages). Loopback only; bounded by the count.
#
#   scripts/queue-memory.sh                   # 100000 messages
#   QUEUE_MESSAGES=500000 scripts/queue-memory.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
N="${QUEUE_MESSAGES:-100000}"
mailsurge_bin missing quiet
WORK="$(mktemp -d)"
cleanup() { kill "${INBOX_PID:-}" "${NODE_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat >"$WORK/defer.yaml" <<'YAML'
provider: defer
rules:
  - { stage: rcpt, reply: "451 4.3.0 Try again later" }
YAML
INBOX=127.0.9.11:2525
# Retries far away: every message waits in the queue for the whole measurement.
start_inbox_and_node "$WORK" "$INBOX" "$WORK/defer.yaml" 127.0.9.12:2525 127.0.9.13 \
  "retry: { initial: 10m, factor: 2, max_delay: 20m, jitter: 0%, give_up: 2h }"
before="$(rss_kb "$NODE_PID")"
"$BIN" gen --target 127.0.9.12:2525 --rate max --count "$N" --size 4KiB --connections 16 --out "$WORK/gen" --quiet
# Every message gets one attempt (deferred), then waits for its retry in 10 minutes.
for _ in $(seq 1 120); do
  deferred="$(grep -c '"event":"deferred"' "$WORK/events.jsonl" 2>/dev/null || true)"
  [[ "${deferred:-0}" -ge "$N" ]] && break
  sleep 1
done
after="$(rss_kb "$NODE_PID")"
spool_mb="$(du -sm "$WORK/spool" | cut -f1)"
echo "queued: ${deferred:-0} of $N messages deferred and waiting"
echo "node RSS: $((before / 1024)) MB -> $((after / 1024)) MB"
echo "bytes per queued message: $(( (after - before) * 1024 / N ))"
echo "spool on disk: ${spool_mb} MB ($(( spool_mb * 1048576 / N )) B per message)"
