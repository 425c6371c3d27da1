#!/usr/bin/env bash
# ci-postfix-external.sh: the external-MTA recipe (docs/external-mta.md), run against a real
# Postfix, and mailsurge's black-box accounting checked against Postfix's own log.
#
# WHY
#   With `mta: kind: external` mailsurge cannot see the MTA's queue or logs: it counts
#   `delivered` from its inboxes' receipts, `bounced`/`expired` from the RFC 3464 DSNs the MTA
#   mails to the bounce domain, and every accepted message with neither as `lost`. The Rust
#   tests (tests/external_mta.rs) play the external MTA with mailsurge's own reference MTA, so
#   they cannot catch a real MTA's DSNs, routing or queue behaviour disagreeing with the
#   harness. This suite does the documented recipe end to end with Debian's Postfix and
#   compares mailsurge's figures with what Postfix says it did.
#
# WHAT IT DOES
#   1. Starts a PRIVATE Postfix instance (config, queue and data directories in a scratch
#      directory on a real disk; /etc/postfix, the system instance and port 25 are never
#      touched) listening on the scenario's `submit:` address (127.0.6.1:2525), configured as
#      the recipe says:
#        mynetworks = 127.0.0.0/8       the generator may relay (default smtpd_relay_restrictions)
#        mydestination =, relay_domains =, local_recipient_maps =, alias_maps =   pure relay
#        transport_maps = inline:{ <each scenario domain>.mailsurge.test = smtp:[<its provider's listen ip>]:<port>,
#                                  bounces.mailsurge.test = smtp:[127.0.6.250]:2525 }
#                                       read from scenarios/external-postfix.yaml; brackets = no MX;
#                                       the generator sends an external MTA each domain with the
#                                       reserved suffix .mailsurge.test (SPEC §12; none when the
#                                       scenario says `real_domains: true`)
#        default_transport = error:...  nothing else is routable; smtp_dns_support_level = disabled
#        maximal_queue_lifetime = 10s, bounce_queue_lifetime = 10s
#        minimal_backoff_time = 2s, maximal_backoff_time = 4s, queue_run_delay = 2s
#                                       deferred mail is retried every 2-4 s and returned to
#                                       sender ~10-16 s after it arrived: expiries happen (and
#                                       their DSNs arrive) inside the scenario's 35 s drain
#        delay_warning_time = 0h        no delay DSNs (Postfix's default; see READING THE OUTPUT)
#      (scripts/lib/postfix-instance.sh, shared with scripts/bench-relay.sh, writes what every
#      private instance has: the private directories, loopback only, the relay lines above, and
#      master.cf with Debian's stock services, chroot = n, smtpd on the submit address only;
#      this script adds the routing and queue lines.)
#   2. Runs `mailsurge run scenarios/external-postfix.yaml --out <dir> --quiet`: 20 s of
#      ~20 msg/s Poisson traffic to three providers whose inboxes (mock-inboxes/
#      external-postfix.yaml) reject recipients user<N> with N ending in 3 (550 5.1.1: Postfix
#      bounces them) and temp-fail those ending in 7 (451 4.3.0 on every attempt: Postfix
#      retries, then expires them); the drain ends once every accepted message has a receipt or
#      a DSN. Then stops Postfix (always, from an EXIT trap) and checks.
#   3. Checks (each prints ok/FAIL):
#      - mailsurge exit status 0 (its thresholds lost == 0, duplicates == 0 and its SLO held);
#      - summary.json: accepted == generated, delivered > 0, bounced > 0, expired > 0,
#        lost == 0, queued == 0, duplicates == 0;
#      - against Postfix's maillog (per recipient; the scenario sends one recipient per
#        message, so per message too):
#          accepted  == distinct queue IDs of mail from the bounce domain (qmgr `from=<t…>`)
#          delivered == `status=sent` lines to the providers
#          bounced   == `status=bounced` lines (to a provider)
#          expired   == `status=expired, returned to sender` lines (from=<t…>, not from=<>)
#                       — Postfix logs an expiry once per MESSAGE, with no recipient;
#        and the recipients themselves agree (sorted lists, repeats included): those of
#        mailsurge's `bounced` events vs Postfix's `status=bounced` lines, those of its `expired`
#        events vs the last `status=deferred` recipient of each expired queue ID;
#      - the DSN path: Postfix's `sender non-delivery notification` lines (one DSN per
#        returned message) == bounced + expired, each of those DSNs logged `status=sent` to
#        the bounce inbox, and the bounce inbox's own count ("bounce inbox: N messages" on
#        mailsurge's stderr) equal to the DSNs Postfix sent; no DSN unattributed, no delay
#        notices;
#      - Postfix's queue is empty afterwards, and its log holds no fatal/panic lines.
#
# HOW TO RUN
#   scripts/ci-postfix-external.sh           # from anywhere; ~40 s; needs root (Postfix's master
#                                            #   runs as root; the package is installed if missing)
#   Environment:
#     MAILSURGE_BIN  binary to test (default: ${CARGO_TARGET_DIR:-target}/release/mailsurge,
#                    brought up to date with `cargo build --release` when cargo is available)
#     SPOOL_PARENT   where the scratch directory (Postfix queue, report) goes (default /var/tmp;
#                    must not be tmpfs/ramfs: Postfix fsyncs its queue files)
#     KEEP_WORK=1    keep the scratch directory (main.cf, maillog, report) and print its path
#   Not root: prints "SKIPPED: <reason>" and exits 0. As root, Debian's `postfix` package (and
#   jq) is installed when missing (DEBIAN_FRONTEND=noninteractive, `apt-get update` when
#   needed); if its postinst starts the system instance on port 25 it is left alone.
#   Addresses: 127.0.6.1 (Postfix), 127.0.6.11-13 (inboxes), 127.0.6.250 (bounce inbox), all
#   port 2525; the suite stops with an error if one is in use. Loopback only.
#
# READING THE OUTPUT
#   A header (binary, Postfix version, the transport map it built), mailsurge's stderr (its
#   addresses, progress every 5 s, "bounce inbox: ..."), then one line per check and a summary:
#     mailsurge  generated/accepted/delivered/bounced/expired/queued/lost/duplicates, p50/p90
#                and SLO compliance, the run's wall time;
#     postfix    accepted (queue IDs), sent, bounced, expired, deferred (retry attempts; each
#                expiring message is deferred ~5 times), non-delivery DSNs created and DSNs
#                delivered to the bounce inbox, warnings.
#   SLO compliance is ~88%, not ~100%, by design: expired mail is eligible and undelivered.
#   What is compared and why: Postfix logs bounces per recipient (`status=bounced`) but an
#   expiry per message (`status=expired, returned to sender`, from= only), and writes ONE DSN
#   per returned message covering all its failed recipients; mailsurge counts per recipient
#   from the DSN's per-recipient blocks. With one recipient per message all three agree; with
#   several, compare mailsurge's figures with the per-recipient lines, not the DSN count.
#   Delay DSNs (delay_warning_time) would add `deferred` events and make a recipient still
#   waiting at the end `queued` instead of `lost`; this recipe leaves them off.
#   Exit status: 0 every check passed (or SKIPPED); 1 a check failed or something broke (the
#   scratch directory is then kept for inspection).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/postfix-instance.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/postfix-instance.sh" # and lib/common.sh

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

SCENARIO="scenarios/external-postfix.yaml"
SPOOL_PARENT="${SPOOL_PARENT:-/var/tmp}"
KEEP_WORK="${KEEP_WORK:-0}"

# --- tools -------------------------------------------------------------------------------
# shellcheck disable=SC2119  # no tools beyond postfix and postconf
pf_require # root and Postfix, or SKIPPED; sets PF_DAEMON_DIR
if ! command -v jq >/dev/null || ! command -v zstdcat >/dev/null; then
  echo "== installing jq and zstd (summary.json and events.jsonl.zst are read with them)"
  apt_install jq zstd
fi
require_tools ss awk jq zstdcat sort diff

mailsurge_bin always # BIN: MAILSURGE_BIN, or the release binary brought up to date

# --- the scenario's addresses (the scenario file is the single source of truth) ---------------
"$BIN" validate "$SCENARIO" >/dev/null || { echo "error: $SCENARIO does not validate" >&2; exit 1; }
# `submit: IP:PORT`, `bounces: { domain: D, listen: IP:PORT }` and one flow-style line per
# provider `{ name: N, domains: [a, b], ..., listen: IP:PORT }`.
SUBMIT="$(grep -oE '^[[:space:]]*submit:[[:space:]]*[0-9.]+:[0-9]+' "$SCENARIO" | grep -oE '[0-9.]+:[0-9]+$' || true)"
BOUNCE_LINE="$(grep -E '^[[:space:]]*bounces:' "$SCENARIO" || true)"
BOUNCE_DOMAIN="$(grep -oE 'domain:[[:space:]]*[A-Za-z0-9.-]+' <<<"$BOUNCE_LINE" | awk '{ print $2 }' || true)"
BOUNCE_LISTEN="$(grep -oE 'listen:[[:space:]]*[0-9.]+:[0-9]+' <<<"$BOUNCE_LINE" | awk '{ print $2 }' || true)"
ROUTES=() # "domain ip port"
while IFS= read -r line; do
  listen="$(grep -oE 'listen:[[:space:]]*[0-9.]+:[0-9]+' <<<"$line" | awk '{ print $2 }')"
  doms="$(sed -E 's/.*domains:[[:space:]]*\[([^]]*)\].*/\1/' <<<"$line" | tr ',' ' ')"
  for d in $doms; do ROUTES+=("$d ${listen%:*} ${listen##*:}"); done
done < <(grep -E '^[[:space:]]*- \{ *name:.*domains:.*listen:' "$SCENARIO")
if [[ -z "$SUBMIT" || -z "$BOUNCE_DOMAIN" || -z "$BOUNCE_LISTEN" || ${#ROUTES[@]} -eq 0 ]]; then
  echo "error: cannot read submit/bounces/provider listen addresses from $SCENARIO" >&2
  exit 1
fi
# Recipient domains as the generator sends them to an external MTA: with the reserved suffix
# (docs/external-mta.md), unless the scenario keeps them real; a domain already under it (the
# default bounce domain) is not suffixed twice.
SUFFIX=".mailsurge.test"
if grep -qE '^[[:space:]]*real_domains:[[:space:]]*true' "$SCENARIO"; then SUFFIX=""; fi
sut_domain() { if [[ -n "$SUFFIX" && "$1" != *"$SUFFIX" ]]; then echo "$1$SUFFIX"; else echo "$1"; fi; }
BOUNCE_DOMAIN="$(sut_domain "$BOUNCE_DOMAIN")"
PF_ADDR="${SUBMIT%:*}"
PF_PORT="${SUBMIT##*:}"
TRANSPORT=""
for r in "${ROUTES[@]}"; do
  read -r d ip port <<<"$r"
  TRANSPORT+="$(sut_domain "$d")=smtp:[$ip]:$port, "
done
TRANSPORT+="$BOUNCE_DOMAIN=smtp:[${BOUNCE_LISTEN%:*}]:${BOUNCE_LISTEN##*:}"

# --- scratch space and cleanup ----------------------------------------------------------
pf_scratch_dir "$SPOOL_PARENT" ci-postfix-external # WORK (mode 755), WORK_FSTYPE; tmpfs/ramfs refused
PF="$WORK/postfix"
FAILED=0

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  pf_stop
  keep_or_remove "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; FAILED=1; exit 130' INT TERM HUP

for a in "$SUBMIT" "$BOUNCE_LISTEN" $(for r in "${ROUTES[@]}"; do read -r _ ip port <<<"$r"; echo "$ip:$port"; done | sort -u); do
  if port_taken "$a"; then
    echo "error: $a (or the wildcard address on its port) is already in use" >&2
    exit 1
  fi
done

# --- the Postfix instance ---------------------------------------------------------------------
pf_write_config "$PF" mailsurge "$SUBMIT" "Private Postfix instance for scripts/ci-postfix-external.sh: the external-MTA recipe of
docs/external-mta.md for $SCENARIO." <<EOF
# Routing: each scenario domain to its provider's fixed listen address, and the envelope
# sender's domain (where Postfix mails its DSNs) to mailsurge's bounce inbox. Brackets: no MX
# lookup. Anything else fails at once; no DNS at all.
transport_maps = inline:{$TRANSPORT}
default_transport = error:5.3.0 no route outside the mailsurge scenario
smtp_dns_support_level = disabled

# Queue lifetimes short enough for expiries (and their DSNs) to happen inside the run:
# deferred mail is retried every 2-4 s and returned to sender once it is 10 s old (at the
# first retry after that). DSNs that cannot be delivered give up as fast.
maximal_queue_lifetime = 10s
bounce_queue_lifetime = 10s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 2s
# No delay DSNs (the default, stated): Postfix's delay template also warns about sub-hour
# values ("zero result in delay template conversion").
delay_warning_time = 0h
EOF

echo "== external MTA recipe: mailsurge run $SCENARIO against a private Postfix"
echo "binary:    $BIN (built $(date -r "$BIN" '+%F %T'); source tree now: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'))"
echo "package:   Postfix $(postconf -dh mail_version) (Debian $(dpkg-query -W -f '${Version}' postfix 2>/dev/null || echo '?'))"
echo "postfix:   private instance on $PF_ADDR:$PF_PORT, queue in $PF/queue ($WORK_FSTYPE)"
echo "transport: $TRANSPORT"
echo "queue:     maximal_queue_lifetime=10s bounce_queue_lifetime=10s backoff 2s..4s queue_run_delay=2s"

if ! pf_start "$PF" "$SUBMIT"; then
  FAILED=1
  exit 1
fi

# --- the run ---------------------------------------------------------------------------------
OUT="$WORK/report"
echo
echo "== $BIN run $SCENARIO --out $OUT --quiet"
t0="$EPOCHREALTIME"
set +e
# stderr (addresses, progress every 5 s, the bounce inbox's count) shown live and kept.
"$BIN" run "$SCENARIO" --out "$OUT" --quiet 2>&1 >"$WORK/run.stdout" | tee "$WORK/run.stderr" | sed 's/^/  | /'
rc="${PIPESTATUS[0]}"
set -e
t1="$EPOCHREALTIME"
sed 's/^/  > /' "$WORK/run.stdout"
wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"

# Postfix may still be removing queue files of the last DSNs it delivered: wait (≤ 10 s) for an
# empty queue, then stop the instance so that the log is complete.
pf_left="$(pf_queue_left "$PF")"
pf_stop

# --- checks ------------------------------------------------------------------------------------
echo
echo "== checks"
# check (lib/common.sh): description, command...; `is EXPR` for arithmetic on the variables above.
is() { (($1)); }
same() { diff -q "$1" "$2" >/dev/null; }
S="$OUT/summary.json"
if [[ ! -s "$S" ]]; then
  echo "  FAIL  no $S (mailsurge exit status $rc); see its stderr above"
  FAILED=1
  exit 1
fi
cnt() { jq -r ".counts.$1" "$S"; }
generated="$(cnt generated)" accepted="$(cnt accepted)" delivered="$(cnt delivered)"
bounced="$(cnt bounced)" expired="$(cnt expired)" queued="$(cnt queued)" lost="$(cnt lost)"
duplicates="$(cnt duplicates)"

# Postfix's maillog, per the comparison above. A `to=`/`from=` in the bounce domain is a DSN
# (or the generator's envelope sender), anything else a provider recipient.
LOG="$PF/maillog"
BD="$BOUNCE_DOMAIN"
# shellcheck disable=SC2016  # awk program
pf="$(awk -v bd="@$BD>" '
  function field(name,   i) { for (i = 1; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2); return "" }
  / postfix-mailsurge\/qmgr\[/ && / from=<t[0-9]+@/ && index($0, bd) { q = $6; sub(/:$/, "", q); acc[q] = 1 }
  / status=sent / { to = field("to"); if (index(to, bd)) dsn_sent++; else sent++ }
  / status=bounced / { to = field("to"); if (index(to, bd)) dsn_bounced++; else bounced++ }
  / status=deferred / { to = field("to"); if (index(to, bd)) dsn_deferred++; else deferred++ }
  / status=expired, returned to sender/ { if (index($0, "from=<>")) dsn_expired++; else expired++ }
  / sender non-delivery notification: / { ndn++ }
  / sender delay notification: / { delay++ }
  / warning: / { warn++ }
  / (fatal|panic): / { fatal++ }
  END {
    n = 0; for (q in acc) n++
    printf "%d %d %d %d %d %d %d %d %d %d %d %d %d\n", n, sent, bounced, expired, deferred, ndn, delay,
      dsn_sent, dsn_bounced + 0, dsn_deferred + 0, dsn_expired + 0, warn, fatal
  }' "$LOG")"
read -r pf_acc pf_sent pf_bounced pf_expired pf_deferred pf_ndn pf_delay pf_dsn_sent pf_dsn_bounced \
  pf_dsn_deferred pf_dsn_expired pf_warn pf_fatal <<<"$pf"

# Recipient lists, sorted, repeats kept: mailsurge's DSN-derived events vs Postfix's log.
EV="$WORK/events.jsonl"
zstdcat "$OUT/events.jsonl.zst" >"$EV"
jq -r 'select(.event == "bounced") | .rcpt | ascii_downcase' "$EV" | sort >"$WORK/ms.bounced"
jq -r 'select(.event == "expired") | .rcpt | ascii_downcase' "$EV" | sort >"$WORK/ms.expired"
# shellcheck disable=SC2016  # awk program
awk -v bd="@$BD>" '
  function field(name,   i) { for (i = 1; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2); return "" }
  function qid(   q) { q = $6; sub(/:$/, "", q); return q }
  / status=bounced / { to = field("to"); if (!index(to, bd)) { gsub(/[<>,]/, "", to); print tolower(to) > (out ".bounced") } }
  / status=deferred / { to = field("to"); if (!index(to, bd)) { gsub(/[<>,]/, "", to); last[qid()] = tolower(to) } }
  / status=expired, returned to sender/ && !/from=<>/ { print last[qid()] > (out ".expired") }
' out="$WORK/pf" "$LOG"
touch "$WORK/pf.bounced" "$WORK/pf.expired"
sort -o "$WORK/pf.bounced" "$WORK/pf.bounced"
sort -o "$WORK/pf.expired" "$WORK/pf.expired"

inbox_line="$(grep -oE 'bounce inbox: [0-9]+ messages, [0-9]+ bounced, [0-9]+ expired, [0-9]+ delay notices, [0-9]+ unattributed' "$WORK/run.stderr" | tail -n 1 || true)"
bi_msgs="$(grep -oE '[0-9]+ messages' <<<"$inbox_line" | cut -d' ' -f1 || true)"
bi_unattr="$(grep -oE '[0-9]+ unattributed' <<<"$inbox_line" | cut -d' ' -f1 || true)"
bi_msgs="${bi_msgs:-?}" bi_unattr="${bi_unattr:-?}"

check "mailsurge exit status 0 (thresholds and SLO held)           [$rc]" is "rc == 0"
check "accepted == generated                                       [$accepted / $generated]" is "accepted == generated && generated > 0"
check "delivered > 0, bounced > 0, expired > 0                     [$delivered, $bounced, $expired]" is "delivered > 0 && bounced > 0 && expired > 0"
check "lost == 0, queued == 0, duplicates == 0                     [$lost, $queued, $duplicates]" is "lost == 0 && queued == 0 && duplicates == 0"
check "delivered+bounced+expired == accepted                       [$((delivered + bounced + expired)) / $accepted]" is "delivered + bounced + expired == accepted"
check "Postfix accepted (queue IDs) == mailsurge accepted          [$pf_acc / $accepted]" is "pf_acc == accepted"
check "Postfix status=sent to providers == delivered               [$pf_sent / $delivered]" is "pf_sent == delivered"
check "Postfix status=bounced == bounced                           [$pf_bounced / $bounced]" is "pf_bounced == bounced"
check "Postfix status=expired (per message) == expired             [$pf_expired / $expired]" is "pf_expired == expired"
check "bounced recipients identical (sorted lists)" same "$WORK/ms.bounced" "$WORK/pf.bounced"
check "expired recipients identical (sorted lists)" same "$WORK/ms.expired" "$WORK/pf.expired"
check "Postfix non-delivery DSNs == bounced+expired                [$pf_ndn / $((bounced + expired))]" is "pf_ndn == bounced + expired"
check "every DSN delivered to the bounce inbox, none failed        [sent $pf_dsn_sent, deferred $pf_dsn_deferred, bounced $pf_dsn_bounced, expired $pf_dsn_expired]" \
  is "pf_dsn_sent == pf_ndn + pf_delay && pf_dsn_deferred == 0 && pf_dsn_bounced == 0 && pf_dsn_expired == 0"
check "bounce inbox received them all, none unattributed           [${bi_msgs} / $pf_dsn_sent, unattributed ${bi_unattr}]" \
  test "$bi_msgs/$bi_unattr" = "$pf_dsn_sent/0"
check "no delay DSNs (delay_warning_time is off)                   [$pf_delay]" is "pf_delay == 0"
check "Postfix queue empty afterwards                              [$pf_left files]" is "pf_left == 0"
check "no fatal/panic in Postfix's log                             [$pf_fatal]" is "pf_fatal == 0"
if ((FAILED)); then
  for k in bounced expired; do
    if ! diff -q "$WORK/ms.$k" "$WORK/pf.$k" >/dev/null; then
      echo "  $k recipients, mailsurge (<) vs Postfix (>), first differences:"
      diff "$WORK/ms.$k" "$WORK/pf.$k" | grep '^[<>]' | head -n 10 | sed 's/^/    /' || true
    fi
  done
  echo "  last Postfix problems:"
  grep -E 'warning|error|fatal|panic' "$LOG" | tail -n 5 | sed 's/^/    /' || true
fi

# --- summary -----------------------------------------------------------------------------------
echo
echo "== summary"
ms_ms() { jq -r "(.delivery_ms.$1 // \"∞\") | tostring" "$S"; } # null = some eligible mail undelivered
echo "  mailsurge  generated $generated accepted $accepted delivered $delivered bounced $bounced expired $expired queued $queued lost $lost duplicates $duplicates"
echo "             p50 $(ms_ms p50) ms  p90 $(ms_ms p90) ms  slo $(jq -r '.slo.compliance * 1000 | round / 10' "$S")% (target $(jq -r '.slo.target * 100' "$S")%)  verdict $(jq -r .verdict "$S")  run wall $wall s"
echo "  postfix    accepted $pf_acc sent $pf_sent bounced $pf_bounced expired $pf_expired deferred $pf_deferred (retries)  DSNs: created $pf_ndn, delivered to the bounce inbox $pf_dsn_sent  warnings $pf_warn"
if ((FAILED)); then
  echo "  FAIL"
  exit 1
fi
echo "  PASS"
