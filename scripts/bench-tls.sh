#!/usr/bin/env bash
# bench-tls.sh: what STARTTLS costs the generator: `gen --starttls` against plaintext `gen`, in
# one run, against one standalone mock inbox that offers STARTTLS (SPEC §13).
#
# Rounds alternate plaintext and TLS (ROUNDS, default 3) so drift on a noisy box hits both;
# each round is closed-loop `--rate max --count COUNT` over CONNECTIONS connections, each
# connection reused for many messages (one handshake per connection, as a real submitter).
# Prints each round's messages/s and the median ratio TLS/plaintext.
#
#   scripts/bench-tls.sh            # ~1 min; ROUNDS=5 COUNT=20000 CONNECTIONS=8 to change
# Loopback only; the inbox is started and stopped here.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ROUNDS="${ROUNDS:-3}"
COUNT="${COUNT:-20000}"
CONNECTIONS="${CONNECTIONS:-8}"
mailsurge_bin always

work="$(mktemp -d)"
inbox_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  [[ -n "$inbox_pid" ]] && stop_pid "$inbox_pid" 20
  rm -rf "$work"
}
trap cleanup EXIT

printf 'provider: bench\ntls: optional\n' >"$work/tls.yaml"
start_standalone_inbox "$work" "$work/tls.yaml" 127.0.8.40:0
inbox_pid="$INBOX_PID"
target="$INBOX_ADDR"
echo "inbox (STARTTLS offered) on $target; $ROUNDS rounds of $COUNT messages over $CONNECTIONS connections"

rate() { # extra gen args: messages/s of one closed-loop round
  "$BIN" gen --target "$target" --rate max --count "$COUNT" --connections "$CONNECTIONS" --domain example.com \
    --out "$work/gen-$RANDOM" --quiet "$@" 2>&1 | sed -n 's/.* in [0-9.]*s (\([0-9.]*\)\/s).*/\1/p'
}
plain=() tls=() ratios=()
for r in $(seq 1 "$ROUNDS"); do
  p="$(rate)"
  t="$(rate --starttls)"
  ratio="$(awk -v t="$t" -v p="$p" 'BEGIN { printf "%.3f", t / p }')"
  printf 'round %d: plaintext %8s msg/s   starttls %8s msg/s   ratio %s\n' "$r" "$p" "$t" "$ratio"
  plain+=("$p") tls+=("$t") ratios+=("$ratio")
done
echo "median: plaintext $(median "${plain[@]}") msg/s, starttls $(median "${tls[@]}") msg/s, starttls/plaintext $(median "${ratios[@]}")"
