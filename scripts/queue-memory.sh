#!/usr/bin/env bash
# Memory per queued message in the reference MTA: a node whose only inbox defers every
# recipient (451) takes QUEUE_MESSAGES messages of 4 KiB from `mailsurge gen`, all of which stay
# queued waiting for a retry; the node's RSS is read before and after. Prints bytes per queued
# message (RSS growth / messages). Loopback only; bounded by the count. With QUEUE_SPOOL=nats the
# node is on the shared queue (a nats-server started by `mailsurge queue`): deferred mail waits in
# the queue, not in the node, so it also prints nats-server's RSS growth and its store's bytes.
#
#   scripts/queue-memory.sh                   # 100000 messages
#   QUEUE_MESSAGES=500000 scripts/queue-memory.sh
#   QUEUE_SPOOL=nats scripts/queue-memory.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
N="${QUEUE_MESSAGES:-100000}"
mailsurge_bin missing quiet
WORK="$(mktemp -d)"
cleanup() { kill "${INBOX_PID:-}" "${NODE_PID:-}" "${QUEUE_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat >"$WORK/defer.yaml" <<'YAML'
provider: defer
rules:
  - { stage: rcpt, reply: "451 4.3.0 Try again later" }
YAML
INBOX=127.0.9.11:2525
if [[ "${QUEUE_SPOOL:-local}" == nats ]]; then
  mkdir -p "$WORK/queue"
  "$BIN" queue --dir "$WORK/queue" --listen 127.0.9.14 >"$WORK/queue.out" 2>"$WORK/queue.err" &
  QUEUE_PID=$!
  for _ in $(seq 1 600); do grep -q '^READY' "$WORK/queue.out" 2>/dev/null && break; sleep 0.1; done
  url="$(awk '/^READY/ { print $2 }' "$WORK/queue.out")"
  [[ -n "$url" ]] || { echo "error: mailsurge queue did not come up" >&2; cat "$WORK/queue.err" >&2; exit 1; }
  export NODE_SPOOL="{ kind: nats, url: \"$url\" }"
  NATS_PID="$(children_of "$QUEUE_PID" | head -n 1)"
  nats_before="$(rss_kb "$NATS_PID")"
fi
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
echo "queued: ${deferred:-0} of $N messages deferred and waiting"
echo "node RSS: $((before / 1024)) MB -> $((after / 1024)) MB"
echo "bytes per queued message: $(( (after - before) * 1024 / N ))"
if [[ -n "${NATS_PID:-}" ]]; then
  nats_after="$(rss_kb "$NATS_PID")"
  store_kb="$(du -sk "$WORK/queue/store" | cut -f1)"
  echo "nats-server RSS: $((nats_before / 1024)) MB -> $((nats_after / 1024)) MB ($(( (nats_after - nats_before) * 1024 / N )) B per queued message)"
  echo "queue store on disk: $((store_kb / 1024)) MB ($(( store_kb * 1024 / N )) B per message, 4 KiB bodies)"
else
  spool_mb="$(du -sm "$WORK/spool" | cut -f1)"
  echo "spool on disk: ${spool_mb} MB ($(( spool_mb * 1048576 / N )) B per message)"
fi
