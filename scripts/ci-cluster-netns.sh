#!/usr/bin/env bash
# ci-cluster-netns.sh: a distributed run (SPEC §12) over real, non-loopback addresses, each
# agent in a network namespace of its own — three "hosts" on one private network.
#
# WHY
#   tests/cluster.rs runs the coordinator and three agents on one host, each agent on its own
#   loopback range. That proves the protocol, not that a run works when the agents are on
#   different hosts: every address must be one the others can reach, the MTA must relay for a
#   generator on another host, and nothing may fall back to 127.0.0.1. Network namespaces give
#   each agent its own network stack, so an accidental loopback address connects nowhere.
#
# WHAT IT DOES
#   1. Creates a hub namespace with a bridge holding 10.210.0.1/24 (nats-server and the
#      coordinator run there) and three agent namespaces, gen (10.210.0.11), inb (10.210.0.12)
#      and mta (10.210.0.13), each with lo and a veth on the bridge. Nothing else is reachable.
#   2. Starts nats-server (JetStream) on 10.210.0.1:4222 and one `mailsurge agent` per
#      namespace with --addresses <its address>/32 and --allow-network 10.210.0.0/24.
#   3. Refusals: the coordinator without the allow-list exits 2 naming the server's address; an
#      agent whose --addresses lies outside its --allow-network exits 2 naming the address.
#   4. A run of a small scenario (8 s at 60/s, two providers, one region of two nodes, its
#      egress pool the mta namespace's own address): exit 0; run.log shows the inboxes on
#      10.210.0.12 and the nodes on 10.210.0.13; every receipt came from 10.210.0.13; every
#      recipient domain carries the .mailsurge.test suffix; generated = delivered, lost 0;
#      run.json lists the three agents with their clock offsets; and no node process is left
#      in the mta namespace.
#   Every process in the namespaces, and the namespaces, go at exit (EXIT trap).
#
# HOW TO RUN
#   scripts/ci-cluster-netns.sh            # ~40 s after the build; root (CI runs as root)
#   Environment:
#     MAILSURGE_BIN  binary to test (default: ${CARGO_TARGET_DIR:-target}/release/mailsurge,
#                    brought up to date with `cargo build --release` first)
#     KEEP_WORK=1    keep the scratch directory and print its path
#   Not root, no `ip`, no namespaces/bridge/veth here, or no nats-server (scripts/install-nats.sh
#   installs it; this script runs it if it is missing): prints "SKIPPED: <reason>", exits 0.
#   Exit status: 0 every check passed (or SKIPPED); 1 a check failed.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KEEP_WORK="${KEEP_WORK:-0}"
RUN_TIMEOUT="${RUN_TIMEOUT:-120}"
NET=10.210.0
HUB="ms-hub-$$"
AGENTS=(gen:11 inb:12 mta:13)

[[ "$(id -u)" == 0 ]] || skip "not root (network namespaces need root; CI runs as root)"
command -v ip >/dev/null || skip "no \`ip\` command (iproute2)"
require_tools timeout grep
NATS="$REPO/.tools/nats/bin/nats-server"
[[ -x "$NATS" ]] || bash scripts/install-nats.sh >/dev/null 2>&1 || true
[[ -x "$NATS" ]] || skip "no nats-server (scripts/install-nats.sh could not install it)"

mailsurge_bin always # BIN: MAILSURGE_BIN, or the release binary brought up to date

work="$(mktemp -d)"
FAILED=0
namespaces=("$HUB")
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  for ns in "${namespaces[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  keep_or_remove "$work"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; FAILED=1; exit 130' INT TERM HUP

# --- the network: a hub with a bridge, an agent namespace per "host" ---------------------------
if ! err="$(ip netns add "$HUB" 2>&1)"; then
  skip "cannot create a network namespace here: $err"
fi
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge 2>/dev/null || skip "no bridge interface in a namespace"
ip -n "$HUB" addr add "$NET.1/24" dev br0
ip -n "$HUB" link set br0 up
for a in "${AGENTS[@]}"; do
  name="${a%%:*}" host="${a#*:}" ns="ms-${a%%:*}-$$"
  ip netns add "$ns"
  namespaces+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$HUB" link add "v-$name" type veth peer name eth0 netns "$ns" 2>/dev/null || skip "no veth pair between namespaces"
  ip -n "$HUB" link set "v-$name" master br0 up
  ip -n "$ns" addr add "$NET.$host/24" dev eth0
  ip -n "$ns" link set eth0 up
done
in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }
echo "== namespaces: $HUB ($NET.1, bridge) and ${AGENTS[*]} on $NET.0/24"
echo "binary: $BIN"

# --- nats-server and the agents -------------------------------------------------------------------
in_ns "$HUB" "$NATS" -js -a "$NET.1" -p 4222 -sd "$work/js" >"$work/nats.log" 2>&1 &
URL="nats://$NET.1:4222"
for _ in $(seq 1 50); do
  grep -q "Server is ready" "$work/nats.log" 2>/dev/null && break
  sleep 0.1
done
for a in "${AGENTS[@]}"; do
  name="${a%%:*}" host="${a#*:}"
  in_ns "ms-$name-$$" "$BIN" agent --nats "$URL" --name "$name" --addresses "$NET.$host/32" \
    --allow-network "$NET.0/24" --dir "$work/agent-$name" >"$work/agent-$name.log" 2>&1 &
done
sleep 1

# --- the scenario ------------------------------------------------------------------------------------
cat >"$work/cluster.yaml" <<EOF
# scripts/ci-cluster-netns.sh: three agents in three network namespaces.
name: netns-cluster
seed: 42
duration: 8s
drain: 10s
slo: { delivery_time: 2s, target: 99% }
thresholds:
  - lost == 0
  - duplicates == 0
  - rejected_at_submit == 0
regions:
  - { name: central, nodes: 2 }
mta:
  retry: { initial: 500ms, factor: 2, max_delay: 4s, jitter: 20%, give_up: 30s }
  egress_pools:
    shared: [$NET.13]
providers:
  - { name: gmail,   domains: [gmail.com],   rules: generic }
  - { name: generic, domains: [example.com], rules: generic }
traffic:
  rate: 60/s
  arrival: poisson
  domains: { gmail.com: 60%, example.com: 40% }
  size: 4KiB
  connections: 8
placement:
  generators: [gen]
  providers: { "*": inb }
  regions: { central: mta }
EOF

# --- 1. refusals ---------------------------------------------------------------------------------------
set +e
in_ns "$HUB" timeout "$RUN_TIMEOUT" "$BIN" run "$work/cluster.yaml" --cluster "$URL" --allow-network "$NET.13/32" \
  --out "$work/denied" --quiet >/dev/null 2>"$work/denied.stderr"
rc=$?
in_ns "ms-gen-$$" timeout 10 "$BIN" agent --nats "$URL" --name stray --addresses 10.99.0.1/32 \
  --allow-network "$NET.0/24" >/dev/null 2>"$work/stray.stderr"
rc_stray=$?
set -e
sed 's/^/  > /' "$work/denied.stderr" "$work/stray.stderr"
check "run --cluster without the allow-list exits 2              [$rc]" test "$rc" = 2
check "  naming the server's address $NET.1" grep -qF "\`$NET.1\` (--cluster)" "$work/denied.stderr"
check "an agent with --addresses outside --allow-network exits 2  [$rc_stray]" test "$rc_stray" = 2
check "  naming 10.99.0.1" grep -q "10.99.0.1" "$work/stray.stderr"

# --- 2. the run ------------------------------------------------------------------------------------------
out="$work/run"
echo
echo "== $BIN run cluster.yaml --cluster $URL --allow-network $NET.0/24   (in $HUB)"
set +e
in_ns "$HUB" timeout "$RUN_TIMEOUT" "$BIN" run "$work/cluster.yaml" --cluster "$URL" --allow-network "$NET.0/24" \
  --out "$out" --quiet >"$work/run.stdout" 2>"$work/run.stderr"
rc=$?
set -e
sed 's/^/  > /' "$work/run.stdout"
grep -E "^(agent|inbox|node) " "$work/run.stderr" | sed 's/^/  > /' || true
check "the distributed run exits 0                                  [$rc]" test "$rc" = 0
check "inboxes listened on the inb namespace's $NET.12" grep -qE "inbox gmail +$NET\.12:" "$out/run.log"
check "nodes listened on the mta namespace's $NET.13" grep -qE "node +central-1 +$NET\.13:" "$out/run.log"
if command -v zstdcat >/dev/null && [[ -s "$out/events.jsonl.zst" ]]; then
  received="$(zstdcat "$out/events.jsonl.zst" | grep -c '"event":"received"' || true)"
  from_mta="$(zstdcat "$out/events.jsonl.zst" | grep '"event":"received"' | grep -c "\"source_ip\":\"$NET.13\"" || true)"
  suffixed="$(zstdcat "$out/events.jsonl.zst" | grep '"event":"received"' | grep -c '\.mailsurge\.test"' || true)"
  check "every delivery came from the mta namespace's address   [$from_mta / $received]" \
    test "$received" -gt 0 -a "$from_mta" = "$received"
  check "every recipient domain carries .mailsurge.test          [$suffixed / $received]" test "$suffixed" = "$received"
else
  echo "  (zstdcat missing: source addresses and domains not checked)"
fi
if [[ -s "$out/summary.json" ]]; then
  counts="$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; print(c["generated"], c["delivered"], c["lost"])' "$out/summary.json")"
  read -r generated delivered lost <<<"$counts"
  check "generated $generated = delivered $delivered, lost $lost" test "$generated" -gt 300 -a "$generated" = "$delivered" -a "$lost" = 0
  agents="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["cluster"]["agents"]))' "$out/run.json")"
  check "run.json lists the three agents                        [$agents]" test "$agents" = 3
else
  check "summary.json written" false
fi
left="$(ip netns pids "ms-mta-$$" | xargs -r -I{} cat /proc/{}/cmdline 2>/dev/null | tr '\0' ' ' | grep -c ' mta --config' || true)"
check "no node process left in the mta namespace             [$left]" test "$left" = 0

echo
if [[ "$FAILED" == 0 ]]; then
  echo "PASS: a distributed run across three network namespaces on $NET.0/24"
else
  echo "FAIL: see above"
  exit 1
fi
