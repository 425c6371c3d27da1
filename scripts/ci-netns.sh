#!/usr/bin/env bash
# ci-netns.sh: the network allow-list (SPEC §12) with a real address that is not loopback.
#
# WHY
#   mailsurge refuses any address off loopback unless `network.allow` (or --allow-network)
#   holds it. The Rust tests check the refusal and the validation with `validate` only: they
#   never listen on or connect to anything off loopback, since the test machine's other
#   addresses are not theirs to use. This suite makes an address of its own, 10.203.0.0/24 in a
#   private network namespace, and plays a real run there: the inboxes listen on it, the
#   reference MTA's nodes route to it and send from it. Nothing leaves the namespace.
#
# WHAT IT DOES
#   1. Creates the namespace mailsurge-t<PID> with lo up and one link (a dummy interface, or a
#      veth pair inside the namespace where the dummy driver is missing) holding 10.203.0.1,
#      .2, .3 (inboxes) and .11, .12 (an egress pool), all /24.
#   2. Inside it (`ip netns exec`), runs a short scenario of scenarios/smoke.yaml's shape (5 s
#      at 40/s, two nodes, two providers) whose providers listen on 10.203.0.2:2525 and
#      10.203.0.3:2525 and whose `shared` egress pool is 10.203.0.11-12, with
#      `network: { allow: [10.203.0.0/24] }`. It must exit 0, its run.log must show the
#      inboxes on those addresses, its scenario.yaml must record the allow-list, and (with
#      zstdcat) every receipt must come from the pool's addresses.
#   3. The same scenario without the `network:` section: `run` must exit 2 naming
#      `10.203.0.2`, its file:line:col and --allow-network, and start nothing (no report).
#   4. That scenario with `--allow-network 10.203.0.0/24`: `validate` exits 0.
#   The namespace (and everything run in it) goes at exit, from an EXIT trap.
#
# HOW TO RUN
#   scripts/ci-netns.sh                      # ~30 s after the build; root (CI runs as root)
#   Environment:
#     MAILSURGE_BIN  binary to test (default: ${CARGO_TARGET_DIR:-target}/release/mailsurge,
#                    brought up to date with `cargo build --release` first)
#     KEEP_WORK=1    keep the scratch directory (scenarios, reports) and print its path
#   Not root, no `ip` (iproute2), or network namespaces not available here: prints
#   "SKIPPED: <reason>" and exits 0. Each run is bounded by `timeout` (RUN_TIMEOUT, 120 s).
#   Exit status: 0 every check passed (or SKIPPED); 1 a check failed.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KEEP_WORK="${KEEP_WORK:-0}"
RUN_TIMEOUT="${RUN_TIMEOUT:-120}"
NET=10.203.0
NS="mailsurge-t$$"

[[ "$(id -u)" == 0 ]] || skip "not root (network namespaces need root; CI runs as root)"
command -v ip >/dev/null || skip "no \`ip\` command (iproute2)"
require_tools timeout grep

mailsurge_bin always # BIN: MAILSURGE_BIN, or the release binary brought up to date

work="$(mktemp -d)"
FAILED=0
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  keep_or_remove "$work"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; FAILED=1; exit 130' INT TERM HUP

# --- the namespace -----------------------------------------------------------------------------
if ! err="$(ip netns add "$NS" 2>&1)"; then
  skip "cannot create a network namespace here: $err"
fi
ip -n "$NS" link set lo up
if ip -n "$NS" link add ms0 type dummy 2>/dev/null; then
  link=ms0
elif ip -n "$NS" link add ms0 type veth peer name ms1 2>/dev/null; then
  link=ms0
  ip -n "$NS" link set ms1 up
else
  skip "neither a dummy nor a veth interface can be created in a namespace"
fi
for host in 1 2 3 11 12; do
  ip -n "$NS" addr add "$NET.$host/24" dev "$link"
done
ip -n "$NS" link set "$link" up
in_ns() { timeout "$RUN_TIMEOUT" ip netns exec "$NS" "$@"; }

echo "== network namespace $NS: $link with $NET.{1,2,3,11,12}/24, lo up"
echo "binary: $BIN"

# --- the scenarios -----------------------------------------------------------------------------
denied="$work/netns-denied.yaml"
allowed="$work/netns-allowed.yaml"
cat >"$denied" <<EOF
# scripts/ci-netns.sh: scenarios/smoke.yaml's shape, its inboxes and one egress pool on
# $NET.0/24 (an address of a private network namespace), not loopback.
name: netns
seed: 42
duration: 5s
drain: 5s
slo:
  delivery_time: 2s
  target: 99%
thresholds:
  - p99 < 2s
  - slo >= 99%
  - lost == 0
  - duplicates == 0
  - rejected_at_submit == 0
regions:
  - { name: local, nodes: 2 }
mta:
  retry: { initial: 500ms, factor: 2, max_delay: 4s, jitter: 20%, give_up: 30s }
  egress_pools:
    shared: [$NET.11, $NET.12]
    dedicated: [127.0.1.10]
  responses: deliverability
providers:
  - { name: gmail,   domains: [gmail.com],   rules: generic, listen: $NET.2:2525 }
  - { name: generic, domains: [example.com], rules: generic, listen: $NET.3:2525 }
traffic:
  rate: 40/s
  arrival: poisson
  domains: { gmail.com: 60%, example.com: 40% }
  size: 4KiB
  tenants: 5
  connections: 4
EOF
{
  cat "$denied"
  printf 'network:\n  allow: [%s.0/24]\n' "$NET"
} >"$allowed"

# --- 1. inside the allow-list: a real run -------------------------------------------------------
out="$work/allowed"
echo
echo "== $BIN run $(basename "$allowed") --out $out --quiet   (in $NS)"
set +e
in_ns "$BIN" run "$allowed" --out "$out" --quiet >"$work/allowed.stdout" 2>"$work/allowed.stderr"
rc=$?
set -e
sed 's/^/  > /' "$work/allowed.stdout"
check "run with network.allow exits 0                              [$rc]" test "$rc" = 0
check "inbox gmail listened on $NET.2:2525 (run.log)" grep -qE "inbox gmail +$NET\.2:2525" "$out/run.log"
check "inbox generic listened on $NET.3:2525 (run.log)" grep -qE "inbox generic +$NET\.3:2525" "$out/run.log"
check "its scenario.yaml records the allow-list" grep -q "$NET.0/24" "$out/scenario.yaml"
if command -v zstdcat >/dev/null && [[ -s "$out/events.jsonl.zst" ]]; then
  received="$(zstdcat "$out/events.jsonl.zst" | grep -c '"event":"received"' || true)"
  from_pool="$(zstdcat "$out/events.jsonl.zst" | grep '"event":"received"' | grep -cE "\"source_ip\":\"$NET\.1[12]\"" || true)"
  check "every delivery came from the $NET.11-12 pool            [$from_pool / $received]" \
    test "$received" -gt 0 -a "$from_pool" = "$received"
else
  echo "  (no zstdcat: the delivery source addresses are not checked)"
fi
if [[ "$rc" != 0 ]]; then
  sed 's/^/  | /' "$work/allowed.stderr" | tail -n 20
fi

# --- 2. outside it: refused before anything starts ------------------------------------------------
echo
echo "== $BIN run $(basename "$denied")   (no network.allow; in $NS)"
set +e
in_ns "$BIN" run "$denied" --out "$work/denied" --quiet >/dev/null 2>"$work/denied.stderr"
rc=$?
set -e
sed 's/^/  | /' "$work/denied.stderr"
check "run without network.allow exits 2                           [$rc]" test "$rc" = 2
check "the refusal names $NET.2, its file:line:col and --allow-network" \
  grep -qE "netns-denied\.yaml:[0-9]+:[0-9]+: .*\`$NET\.2\` .*--allow-network $NET\.0/24" "$work/denied.stderr"
check "nothing was started (no report)" test ! -e "$work/denied/summary.json"

# --- 3. --allow-network instead of the file's list ---------------------------------------------------
set +e
in_ns "$BIN" validate "$denied" --allow-network "$NET.0/24" >/dev/null 2>"$work/flag.stderr"
rc=$?
set -e
check "validate --allow-network $NET.0/24 exits 0                [$rc]" test "$rc" = 0

echo
if ((FAILED)); then
  echo "FAIL"
  exit 1
fi
echo "PASS"
