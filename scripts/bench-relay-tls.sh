#!/usr/bin/env bash
# bench-relay-tls.sh: the durable relay benchmark with STARTTLS on both hops (SPEC §13),
# mailsurge's reference MTA against Postfix, with the plaintext ratio of the same harness beside.
#
# WHAT IT MEASURES
#   Postfix's smtp-source and smtp-sink speak no TLS, so this harness uses a load generator and
#   a sink that do, the same for both relays:
#       mailsurge gen --rate max --count 10000 --connections 20 --size 1KiB [--starttls]
#   (closed loop like smtp-source -d -s 20; --starttls: every session upgrades first, and a
#   relay that does not offer STARTTLS fails the run), and a sink that is a standalone
#   `mailsurge inbox` accepting everything, with `tls: optional` (STARTTLS offered with its
#   own self-signed certificate) in the TLS mode and no TLS in the plaintext mode. Its receipt
#   for each message carries the time its 250 went out.
#   Two relays on this machine, each forwarding everything for example.com to the sink:
#     * Postfix 3.x from Debian's package as a private instance (127.0.6.1:2525), TUNED as in
#       scripts/bench-relay.sh (in_flow_delay = 0, initial_destination_concurrency = 20,
#       smtp_connection_cache_destinations = the sink; 20 outbound connections), and
#     * `mailsurge mta --config node.yaml` (127.0.6.2:2525; limits.domain_connections = 20).
#   TLS mode adds, for Postfix (postconf(5), TLS_README):
#       smtpd_tls_security_level = may      STARTTLS offered to clients (opportunistic)
#       smtpd_tls_cert_file/key_file        the self-signed certificate below
#       smtp_tls_security_level = may       STARTTLS toward the sink whenever it offers it
#       smtp_tls_connection_reuse = yes     TUNED: without it Postfix caches no TLS connection
#                                            and opens one session (one handshake) per message
#                                            to the sink; with it, tlsproxy(8) keeps them open
#                                            like the plaintext connection cache (postconf(5),
#                                            TLS_README "Client-side TLS connection reuse")
#       smtpd_tls_loglevel = smtp_tls_loglevel = 1   (one log line per TLS session, checked)
#       + the tlsmgr and tlsproxy services (Debian's master.cf lines)
#   and for mailsurge the node config's `tls: { cert, key, opportunistic: true }`: Postfix's
#   `may` on both sides. Both relays present the SAME self-signed certificate (RSA 2048, made
#   here with openssl, the kind Debian's snakeoil is), so their handshakes cost the same.
#   Every other setting is each side's default; durability as in bench-relay.sh (both answer
#   250 only after an fsync; spools in one scratch directory on a real disk).
#   A run is timed from the start of the generator to the sink's last receipt (end to end:
#   accept, make durable, deliver). The figure of merit per repetition and mode is
#   postfix_time / mailsurge_time; the script prints the MEDIAN per mode.
#   Target: TLS ratio >= 5. The plaintext ratio printed beside it is this harness's; the
#   plaintext gate (>= 10 against tuned Postfix with smtp-source/smtp-sink) is
#   scripts/bench-relay.sh.
#   Each repetition runs the four relay runs (plain/TLS x Postfix/mailsurge) back to back, with
#   a fresh sink, a fresh relay and an empty queue each, in an order that rotates.
#
# VALIDITY
#   gen must exit 0 with accepted == 10000; the sink must hold exactly 10000 receipts (no
#   duplicates) within RUN_TIMEOUT; in TLS mode every session the sink saw must have been TLS
#   (its stop report: TLS sessions == connections), and every generator session was TLS (gen
#   --starttls fails otherwise). Postfix: 10000 `status=sent` in its log, an empty queue, and
#   in TLS mode TLS-established lines for both directions. mailsurge: 10000 delivered events,
#   none deferred or bounced. A failed check makes the run INVALID (exit 1).
#
# HOW TO RUN
#   scripts/bench-relay-tls.sh               # root (Postfix's master); installs postfix/openssl
#   REPEATS=5 scripts/bench-relay-tls.sh
#   Environment: REPEATS (default 3), MAILSURGE_BIN, RUN_TIMEOUT (default 600 s),
#   SPOOL_PARENT (default /var/tmp; tmpfs refused), KEEP_WORK=1. Not root: SKIPPED, exit 0.
#   Loopback only (127.0.6.0/24).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/postfix-instance.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/postfix-instance.sh" # and lib/common.sh

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

pf_bench_env # REPEATS, RUN_TIMEOUT, SPOOL_PARENT, KEEP_WORK
SESSIONS=20
MESSAGES=10000
DOMAIN=example.com
OUT_CONNECTIONS=20
PF_ADDR=127.0.6.1
MS_ADDR=127.0.6.2
SINK_ADDR=127.0.6.3
PORT=2525
TARGET=5


pf_require # root and Postfix, or SKIPPED; sets PF_DAEMON_DIR
command -v openssl >/dev/null || apt_install openssl
require_tools ss timeout awk openssl python3
mailsurge_bin missing # BIN

pf_scratch_dir "$SPOOL_PARENT" bench-relay-tls # WORK
RUN_DIR=""
MS_PID=""
SINK_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  pf_stop
  if [[ -n "$MS_PID" ]]; then stop_pid "$MS_PID" 150; fi
  if [[ -n "$SINK_PID" ]]; then stop_pid "$SINK_PID" 50; fi
  keep_or_remove "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

for a in "$PF_ADDR" "$MS_ADDR" "$SINK_ADDR"; do
  if port_taken "$a:$PORT"; then
    echo "error: $a:$PORT (or the wildcard address on port $PORT) is already in use" >&2
    exit 1
  fi
done

# One self-signed certificate for both relays, readable by root only.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=relay.bench.invalid" \
  -addext "subjectAltName=IP:$PF_ADDR,IP:$MS_ADDR" \
  -keyout "$WORK/relay.key" -out "$WORK/relay.pem" 2>/dev/null
chmod 600 "$WORK/relay.key"

# --- the sink -------------------------------------------------------------------------------------
start_sink() { # mode
  local dir="$RUN_DIR/sink" tls=none i
  [[ "$1" == tls ]] && tls=optional
  mkdir -p "$dir"
  printf 'provider: sink\ntls: %s\n' "$tls" >"$dir/rules.yaml"
  "$BIN" inbox --rules "$dir/rules.yaml" --listen "$SINK_ADDR:$PORT" --receipts "$dir/receipts.jsonl" \
    >"$dir/out.log" 2>"$dir/err.log" &
  SINK_PID=$!
  for ((i = 0; i < 100; i++)); do
    [[ "$(listening_pid "$SINK_ADDR:$PORT")" == "$SINK_PID" ]] && return 0
    pid_alive "$SINK_PID" || break
    sleep 0.05
  done
  echo "error: the sink did not come up on $SINK_ADDR:$PORT" >&2
  cat "$dir/err.log" >&2
  return 1
}

stop_sink() { # prints "connections tls_sessions" from the sink's stop report
  stop_pid "$SINK_PID" 50
  SINK_PID=""
  awk '/^  connections / { c = $2 } /^  TLS sessions / { t = $3 } END { print c + 0, t + 0 }' "$RUN_DIR/sink/err.log"
}

receipts() { wc -l <"$RUN_DIR/sink/receipts.jsonl" 2>/dev/null || echo 0; }

last_receipt_s() { # the latest receipt's time, in seconds since the epoch
  grep -o '"t_ns":[0-9]*' "$RUN_DIR/sink/receipts.jsonl" | cut -d: -f2 | sort -n | tail -n 1 |
    awk '{ printf "%.6f", $1 / 1e9 }'
}

# --- the relays -----------------------------------------------------------------------------------
start_postfix() { # mode
  local d="$RUN_DIR/postfix" tls="" pf_tls=0
  if [[ "$1" == tls ]]; then
    pf_tls=1
    tls="smtpd_tls_security_level = may
smtpd_tls_cert_file = $WORK/relay.pem
smtpd_tls_key_file = $WORK/relay.key
smtp_tls_security_level = may
smtp_tls_connection_reuse = yes
smtpd_tls_loglevel = 1
smtp_tls_loglevel = 1"
  fi
  PF_TLS="$pf_tls" pf_write_config "$d" benchtls "$PF_ADDR:$PORT" \
    "Private Postfix instance for scripts/bench-relay-tls.sh: a tuned relay to a mailsurge inbox." <<PFCONF
transport_maps = inline:{$DOMAIN=smtp:[$SINK_ADDR]:$PORT}
default_transport = error:5.3.0 no route outside $DOMAIN in this benchmark
smtp_dns_support_level = disabled
default_process_limit = 100
smtp_destination_concurrency_limit = $OUT_CONNECTIONS
in_flow_delay = 0
initial_destination_concurrency = $OUT_CONNECTIONS
smtp_connection_cache_destinations = [$SINK_ADDR]:$PORT
$tls
PFCONF
  pf_start "$d" "$PF_ADDR:$PORT"
}

start_mailsurge() { # mode
  local d="$RUN_DIR/mailsurge" tls="" i
  mkdir -p "$d"
  [[ "$1" == tls ]] && tls="tls: { cert: $WORK/relay.pem, key: $WORK/relay.key, opportunistic: true }"
  cat >"$d/node.yaml" <<NODE
node: bench-1
region: bench
listen: $MS_ADDR:$PORT
relay_networks: [127.0.0.0/8]
spool: { kind: local, dir: spool }
routes: { $DOMAIN: [$SINK_ADDR:$PORT] }
events: events.jsonl
limits: { domain_connections: $OUT_CONNECTIONS }
$tls
NODE
  "$BIN" mta --config "$d/node.yaml" >"$d/stdout.log" 2>"$d/stderr.log" &
  MS_PID=$!
  for ((i = 0; i < 200; i++)); do
    grep -q '^READY' "$d/stdout.log" 2>/dev/null && return 0
    pid_alive "$MS_PID" || break
    sleep 0.05
  done
  echo "error: the mailsurge node did not come up" >&2
  cat "$d/stderr.log" >&2
  return 1
}

# --- one timed run --------------------------------------------------------------------------------
# run_one REPETITION RELAY MODE: prints one line and records TIME[relay-mode-rep].
declare -A TIME
INVALID=0
run_one() {
  local rep="$1" relay="$2" mode="$3" addr why="" rc=0 t0 t1 deadline accepted
  local sent=0 left=0 tls_in=0 tls_out=0 delivered=0 failed=0 n sessions sink_tls secs
  RUN_DIR="$WORK/r$rep-$relay-$mode"
  mkdir -p "$RUN_DIR"
  start_sink "$mode"
  if [[ "$relay" == postfix ]]; then
    start_postfix "$mode"
    addr="$PF_ADDR:$PORT"
  else
    start_mailsurge "$mode"
    addr="$MS_ADDR:$PORT"
  fi
  local gen_tls=()
  [[ "$mode" == tls ]] && gen_tls=(--starttls)
  sync
  t0="$(date +%s.%N)"
  timeout "$RUN_TIMEOUT" "$BIN" gen --target "$addr" --rate max --count "$MESSAGES" \
    --connections "$SESSIONS" --size 1KiB --domain "$DOMAIN" "${gen_tls[@]}" --quiet \
    --out "$RUN_DIR/gen" >"$RUN_DIR/gen.log" 2>&1 || rc=$?
  deadline=$((SECONDS + RUN_TIMEOUT))
  while (($(receipts) < MESSAGES)) && ((SECONDS < deadline)); do sleep 0.1; done
  t1="$(last_receipt_s)"
  accepted="$(python3 -c "import json; print(json.load(open('$RUN_DIR/gen/summary.json'))['counts']['accepted'])" 2>/dev/null || echo 0)"
  # The relay stops first (its log complete), then the sink (its counters final).
  if [[ "$relay" == postfix ]]; then
    left="$(pf_queue_left "$RUN_DIR/postfix")"
    pf_stop
    sent="$(grep -c 'status=sent' "$RUN_DIR/postfix/maillog" || true)"
    tls_in="$(grep -c 'TLS connection established from' "$RUN_DIR/postfix/maillog" || true)"
    tls_out="$(grep -c 'TLS connection established to' "$RUN_DIR/postfix/maillog" || true)"
  else
    stop_pid "$MS_PID" 150
    MS_PID=""
    delivered="$(grep -c '"event":"delivered"' "$RUN_DIR/mailsurge/events.jsonl" || true)"
    failed="$(grep -c '"event":"\(deferred\|bounced\)"' "$RUN_DIR/mailsurge/events.jsonl" || true)"
  fi
  n="$(receipts)"
  read -r sessions sink_tls < <(stop_sink)
  ((rc == 0)) || why+=" gen exit $rc ($(tail -n 1 "$RUN_DIR/gen.log"));"
  ((accepted == MESSAGES)) || why+=" gen accepted $accepted;"
  ((n == MESSAGES)) || why+=" sink has $n receipts;"
  if [[ "$relay" == postfix ]]; then
    ((sent == MESSAGES)) || why+=" maillog status=sent $sent;"
    ((left == 0)) || why+=" $left left in the queue;"
    if [[ "$mode" == tls ]]; then
      ((tls_in > 0)) || why+=" no inbound TLS in the maillog;"
      ((tls_out > 0)) || why+=" no outbound TLS in the maillog;"
    fi
  else
    ((delivered == MESSAGES)) || why+=" delivered events $delivered;"
    ((failed == 0)) || why+=" $failed deferred/bounced;"
  fi
  if [[ "$mode" == tls ]] && { ((sink_tls == 0)) || ((sink_tls != sessions)); }; then
    why+=" sink TLS sessions $sink_tls of $sessions;"
  fi
  if [[ -n "$why" ]]; then
    printf '  rep %d  %-9s %-5s INVALID:%s\n' "$rep" "$relay" "$mode" "$why"
    INVALID=1
    return 0
  fi
  secs="$(python3 -c "print(f'{max($t1 - $t0, 1e-6):.3f}')")"
  TIME["$relay-$mode-$rep"]="$secs"
  printf '  rep %d  %-9s %-5s %8.3f s  %6.0f msg/s  sink sessions %3d (TLS %d)\n' \
    "$rep" "$relay" "$mode" "$secs" "$(python3 -c "print($MESSAGES / $secs)")" "$sessions" "$sink_tls"
}

echo "== bench-relay-tls: $MESSAGES x 1 KiB, $SESSIONS sessions, gen -> relay -> mailsurge inbox; scratch $WORK ($WORK_FSTYPE)"
echo "   Postfix $(postconf -dh mail_version), $("$BIN" --version), $(nproc) cores"
order=(postfix-plain mailsurge-plain postfix-tls mailsurge-tls)
for ((rep = 1; rep <= REPEATS; rep++)); do
  for ((k = 0; k < 4; k++)); do
    item="${order[$(((k + rep - 1) % 4))]}"
    run_one "$rep" "${item%-*}" "${item#*-}"
    ((INVALID == 0)) || break 2
  done
done
((INVALID == 0)) || { echo "FAIL: an INVALID run; nothing compared"; exit 1; }

declare -A RATIO
for mode in plain tls; do
  r=()
  for ((rep = 1; rep <= REPEATS; rep++)); do
    r+=("$(python3 -c "print(round(${TIME[postfix-$mode-$rep]} / ${TIME[mailsurge-$mode-$rep]}, 2))")")
  done
  RATIO[$mode]="$(median "${r[@]}")"
  echo "ratio tuned-postfix/mailsurge ($mode): ${r[*]}  median ${RATIO[$mode]}"
done
echo "STARTTLS on both hops: ${RATIO[tls]}x tuned Postfix (plaintext, same harness: ${RATIO[plain]}x)"
bench_verdict "TLS relay ratio (median)" "${RATIO[tls]}" "$TARGET"
