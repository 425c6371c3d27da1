#!/usr/bin/env bash
# ci-tls-swaks.sh: STARTTLS against mailsurge's servers with a client that is not mailsurge's.
#
# WHY
#   The Rust tests drive STARTTLS with mailsurge's own client and raw sockets. A client written
#   by someone else catches what those share by construction: swaks (Debian package `swaks`,
#   Perl, IO::Socket::SSL/OpenSSL) is the tool mail engineers reach for.
#
# WHAT IT DOES
#   1. A standalone mock inbox whose rule table says `tls: required` (127.0.8.1):
#      swaks --tls completes STARTTLS, gets 250 for the message, and the inbox writes a receipt;
#      swaks without --tls gets 530 5.7.0 at MAIL.
#   2. A standalone reference-MTA node with a `tls:` section (its certificate taken from a short
#      smoke run's node, issued by that run's CA) relaying to that inbox: swaks --tls completes
#      STARTTLS and gets 250, and the message reaches the inbox — which only takes mail over TLS,
#      so the node's own egress STARTTLS worked too.
#   3. A second node that takes mail only from clients that log in after STARTTLS
#      (`relay_networks: []`, `auth: { users, tls_only: true }`): swaks --tls --auth PLAIN and
#      --auth LOGIN get 235 and 250 and the messages reach the inbox; a wrong password gets 535;
#      no login gets 530 at MAIL; AUTH in the clear is not offered.
#
# HOW TO RUN
#   scripts/ci-tls-swaks.sh            # ~30 s after the build
#   Environment: MAILSURGE_BIN (default: the release binary, brought up to date first),
#   KEEP_WORK=1 (keep the scratch directory).
#   Without swaks, installs Debian's `swaks` when root (CI); otherwise prints "SKIPPED: <reason>"
#   and exits 0. Exit 1 when a check fails. Loopback only.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KEEP_WORK="${KEEP_WORK:-0}"

if ! command -v swaks >/dev/null; then
  [[ "$(id -u)" == 0 ]] || skip "swaks is not installed and installing it needs root (apt-get install swaks)"
  apt_install swaks libnet-ssleay-perl libio-socket-ssl-perl || skip "apt-get install swaks failed"
fi
command -v swaks >/dev/null || skip "no swaks"
require_tools timeout grep

mailsurge_bin always # BIN: MAILSURGE_BIN, or the release binary brought up to date

work="$(mktemp -d)"
FAILED=0
pids=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  for p in "${pids[@]}"; do stop_pid "$p" 20 || true; done
  keep_or_remove "$work"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; FAILED=1; exit 130' INT TERM HUP

# --- 1. the inbox ---------------------------------------------------------------------------------
printf 'provider: tlsisp\ntls: required\n' >"$work/tls.yaml"
start_standalone_inbox "$work" "$work/tls.yaml" 127.0.8.1:0 --receipts "$work/receipts.jsonl"
pids+=("$INBOX_PID")
inbox="$INBOX_ADDR"
echo "inbox (tls: required) on $inbox"
swaks_to() { # server, extra args...: swaks, bounded, output to stdout
  local server="$1"
  shift
  timeout 30 swaks --server "${server%:*}" --port "${server##*:}" --from a@sender.test \
    --to user1@tlsisp.test --helo swaks.test --header "X-Mailsurge-Id: swaks.$RANDOM" "$@" 2>&1
}
set +e
tls_out="$(swaks_to "$inbox" --tls)"
tls_rc=$?
plain_out="$(swaks_to "$inbox")"
set -e
echo "$tls_out" | grep -E "^(<~|<-|~>) +(220|250|530)|STARTTLS|TLS started" | sed 's/^/  > /' | head -12
check "swaks --tls to the inbox exits 0                         [$tls_rc]" test "$tls_rc" = 0
check "  STARTTLS started" grep -q "TLS started" <<<"$tls_out"
check "  the message got 250 after the dot" grep -qE "^<~ +250 " <<<"$tls_out"
check "swaks without --tls gets 530 5.7.0 at MAIL" grep -qE "^<\*\* +530 5\.7\.0" <<<"$plain_out"
sleep 0.3
check "the inbox wrote one receipt                           [$(wc -l <"$work/receipts.jsonl" 2>/dev/null || echo 0)]" \
  test "$(wc -l <"$work/receipts.jsonl" 2>/dev/null || echo 0)" = 1

receipts_reach() { # N: waits (up to 5 s) for N receipts; prints how many there are
  for _ in $(seq 1 50); do
    [[ "$(wc -l <"$work/receipts.jsonl")" == "$1" ]] && break
    sleep 0.1
  done
  wc -l <"$work/receipts.jsonl"
}

start_mta() { # NAME: `mailsurge mta --config $work/NAME/node.yaml`; sets MTA_ADDR once it is READY
  "$BIN" mta --config "$work/$1/node.yaml" >"$work/$1.out" 2>"$work/$1.err" &
  pids+=("$!")
  for _ in $(seq 1 100); do
    grep -q READY "$work/$1.out" 2>/dev/null && break
    sleep 0.1
  done
  MTA_ADDR="$(grep -m1 READY "$work/$1.out" | awk '{print $2}')"
}

# --- 2. a reference-MTA node with STARTTLS, relaying to that inbox --------------------------------
"$BIN" run scenarios/smoke.yaml --duration 1s --out "$work/seed" --quiet >/dev/null 2>&1 || true
certs="$work/seed/nodes/local-1/tls"
if [[ ! -s "$certs/node.pem" ]]; then
  check "a smoke run left its node's certificate in $certs" false
else
  mkdir -p "$work/node"
  cp "$certs/node.pem" "$certs/node.key" "$work/node/"
  cat >"$work/node/node.yaml" <<EOF
node: swaks-1
region: swaks
listen: 127.0.8.20:0
relay_networks: [127.0.0.0/8]
spool: { kind: local, dir: spool }
routes: { tlsisp.test: [$inbox] }
retry: { initial: 200ms, factor: 2, max_delay: 1s, jitter: 0%, give_up: 10s }
events: events.jsonl
tls: { cert: node.pem, key: node.key, opportunistic: true }
EOF
  start_mta node
  node="$MTA_ADDR"
  echo "node (STARTTLS at ingress, opportunistic egress) on $node"
  set +e
  mta_out="$(swaks_to "$node" --tls)"
  mta_rc=$?
  set -e
  echo "$mta_out" | grep -E "^(<~|<-) +(220|250)|TLS started" | sed 's/^/  > /' | head -8
  check "swaks --tls to the node exits 0                          [$mta_rc]" test "$mta_rc" = 0
  check "  STARTTLS started" grep -q "TLS started" <<<"$mta_out"
  n="$(receipts_reach 2)"
  check "the node delivered it over TLS to the inbox (2 receipts) [$n]" test "$n" = 2

  # --- 3. a submission-only node: AUTH after STARTTLS ---------------------------------------------
  mkdir -p "$work/auth"
  cp "$certs/node.pem" "$certs/node.key" "$work/auth/"
  printf 'submit:s3cret:x\n' >"$work/auth/users"
  chmod 600 "$work/auth/users"
  sed -e 's/^node: .*/node: swaks-auth/' -e 's/127.0.8.20/127.0.8.21/' -e 's/^relay_networks: .*/relay_networks: []/' \
    "$work/node/node.yaml" >"$work/auth/node.yaml"
  printf 'auth: { users: users, tls_only: true }\n' >>"$work/auth/node.yaml"
  start_mta auth
  anode="$MTA_ADDR"
  echo "node (AUTH after STARTTLS only, no relay networks) on $anode"
  set +e
  plain_auth="$(swaks_to "$anode" --tls --auth PLAIN --auth-user submit --auth-password 's3cret:x')"
  plain_rc=$?
  login_auth="$(swaks_to "$anode" --tls --auth LOGIN --auth-user submit --auth-password 's3cret:x')"
  login_rc=$?
  wrong_auth="$(swaks_to "$anode" --tls --auth PLAIN --auth-user submit --auth-password nope)"
  no_auth="$(swaks_to "$anode" --tls)"
  clear_ehlo="$(swaks_to "$anode" --quit-after EHLO)"
  set -e
  echo "$plain_auth" | grep -E "^(<~|<-) +(235|250 2\.0\.0)|AUTH" | sed 's/^/  > /' | head -6
  check "swaks --tls --auth PLAIN: 235, then 250               [$plain_rc]" \
    bash -c "test $plain_rc = 0 && grep -qE '^<~ +235 ' <<<\"\$0\"" "$plain_auth"
  check "swaks --tls --auth LOGIN: 235, then 250               [$login_rc]" \
    bash -c "test $login_rc = 0 && grep -qE '^<~ +235 ' <<<\"\$0\"" "$login_auth"
  check "a wrong password gets 535 5.7.8" grep -qE "^<~\* +535 5\.7\.8" <<<"$wrong_auth"
  check "no login gets 530 5.7.0 at MAIL" grep -qE "^<~\* +530 5\.7\.0" <<<"$no_auth"
  check "AUTH is not offered in the clear (tls_only)" bash -c '! grep -q "AUTH" <<<"$0"' "$clear_ehlo"
  n="$(receipts_reach 4)"
  check "both authenticated messages reached the inbox (4 receipts) [$n]" test "$n" = 4
fi

echo
if [[ "$FAILED" == 0 ]]; then
  echo "PASS: swaks speaks STARTTLS with mailsurge's inbox and MTA, and AUTH PLAIN/LOGIN with the MTA; plaintext to a required inbox gets 530"
else
  echo "FAIL: see above"
  exit 1
fi
