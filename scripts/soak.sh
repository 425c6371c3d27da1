#!/usr/bin/env bash
# Soak (issue 13's long-run soak): the smoke topology (one region of two nodes, two providers) for
# SOAK_MINUTES at SOAK_RATE, with gmail blackholed for SOAK_BLACKHOLE from minute
# SOAK_BLACKHOLE_AT, so mail queues deep and then drains. Every 10 s it samples the RSS and open
# file descriptors of the run and of each node; at the end it checks:
#   - accounting exact (the run's verdict, lost == 0, the identity) and the queue peak reached;
#   - each node's RSS growth per message queued at the peak <= SOAK_NODE_BYTES (default 100);
#   - open fds flat: each process's spread of fd counts <= SOAK_FD_SPREAD (default 64);
#   - the run process's peak RSS (VmHWM: it measures every recipient after the traffic) at most
#     SOAK_RUN_BYTES (default 1024) per generated message.
#
#   scripts/soak.sh                                      # 20 min at 3000/s, 5-minute blackhole
#   SOAK_MINUTES=3 SOAK_RATE=1000/s SOAK_BLACKHOLE=60s SOAK_BLACKHOLE_AT=30s scripts/soak.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
MINUTES="${SOAK_MINUTES:-20}"
RATE="${SOAK_RATE:-3000/s}"
HOLE="${SOAK_BLACKHOLE:-5m}"
HOLE_AT="${SOAK_BLACKHOLE_AT:-5m}"
NODE_BYTES="${SOAK_NODE_BYTES:-100}"
FD_SPREAD="${SOAK_FD_SPREAD:-64}"
RUN_BYTES="${SOAK_RUN_BYTES:-1024}"
MIN_PEAK="${SOAK_MIN_PEAK:-500000}"
require_tools python3 zstdcat
mailsurge_bin missing quiet
WORK="$(mktemp -d)"
OUT="${SOAK_OUT:-$WORK/run}"
cleanup() { [[ -n "${RUN_PID:-}" ]] && kill "$RUN_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

cat >"$WORK/soak.yaml" <<YAML
name: soak
seed: 7
duration: ${MINUTES}m
drain: 10m
slo: { delivery_time: 10m, target: 99% }
thresholds:
  - lost == 0
regions:
  - { name: local, nodes: 2 }
mta:
  retry: { initial: 1s, factor: 2, max_delay: 20s, jitter: 20%, give_up: 2h }
  egress_pools: { shared: [127.0.1.1, 127.0.1.2] }
providers:
  - { name: gmail,   domains: [gmail.com],   rules: generic }
  - { name: generic, domains: [example.com], rules: generic }
traffic:
  rate: $RATE
  domains: { gmail.com: 60%, example.com: 40% }
  size: 4KiB
  connections: 16
chaos:
  - { at: $HOLE_AT, action: kill, target: provider/gmail, mode: blackhole, for: $HOLE }
YAML
echo "== mailsurge run: ${MINUTES} min at $RATE, gmail blackholed for $HOLE from $HOLE_AT -> $OUT"
"$BIN" run "$WORK/soak.yaml" --out "$OUT" --quiet >"$WORK/run.out" 2>"$WORK/run.err" &
RUN_PID=$!
SAMPLES="$WORK/samples.csv"
echo "t,pid,kind,rss_kb,fds,hwm_kb" >"$SAMPLES"
start=$(date +%s)
while pid_alive "$RUN_PID"; do
  now=$(( $(date +%s) - start ))
  for p in "$RUN_PID" $(children_of "$RUN_PID"); do
    [[ -r /proc/$p/status ]] || continue
    kind=run
    # A node: `mailsurge mta --config <out>/nodes/<name>/node.yaml`.
    node="$(tr '\0' ' ' <"/proc/$p/cmdline" | sed -n 's|.* mta --config .*/nodes/\([^/]*\)/node.yaml.*|\1|p')"
    [[ -n "$node" ]] && kind="node:$node"
    fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
    echo "$now,$p,$kind,$(rss_kb "$p" 2>/dev/null || echo 0),$fds,$(hwm_kb "$p" 2>/dev/null || echo 0)" >>"$SAMPLES"
  done
  # The run's peak comes after the traffic (merge and measurement): sample it every second.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pid_alive "$RUN_PID" || break
    hwm="$(hwm_kb "$RUN_PID" 2>/dev/null || echo 0)"
    [[ "${hwm:-0}" -gt "${RUN_HWM:-0}" ]] && RUN_HWM="$hwm"
    sleep 1
  done
done
wait "$RUN_PID" && rc=0 || rc=$?
RUN_PID=
tail -n 3 "$WORK/run.out"
cp "$SAMPLES" "$OUT/soak-samples.csv"
python3 "$(dirname "$0")/soak_check.py" --run "$OUT" --samples "$SAMPLES" --exit "$rc" \
  --node-bytes "$NODE_BYTES" --fd-spread "$FD_SPREAD" --min-peak "$MIN_PEAK" \
  --run-hwm-kb "${RUN_HWM:-0}" --run-bytes "$RUN_BYTES"
