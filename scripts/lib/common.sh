# shellcheck shell=bash
# scripts/lib/common.sh: helpers shared by the scripts in scripts/ (sourced, never run):
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# (lib/postfix-instance.sh sources it too.)
# Defines functions and MAILSURGE_REPO (the repository root) only; it changes no shell option
# and runs nothing. Not named ci-*.sh on purpose: .ci/run runs every scripts/ci-*.sh.

MAILSURGE_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# --- the binary under test ------------------------------------------------------------------
# mailsurge_bin WHEN [quiet]: sets BIN to the mailsurge binary to test; exits 1 with
# "error: mailsurge binary ... not found or not executable" when there is none.
#   MAILSURGE_BIN, when set, is used as it is (never built). Otherwise the release binary
#   ${CARGO_TARGET_DIR:-<repo>/target}/release/mailsurge, built from this source tree (when
#   cargo is available) as WHEN says:
#     always   every time, `cargo build --release --quiet` (cargo rebuilds only what changed):
#              the CI suites test the tree they come with. Prints "== cargo build --release".
#     missing  only when the binary does not exist yet: the benchmarks measure what is there.
#              Prints "== building the release binary (cargo build --release)" and cargo's
#              progress; with `quiet`, prints nothing and builds with --quiet.
#   A failed build ends the script with cargo's exit status.
mailsurge_bin() {
  local when="$1" quiet="${2:-}"
  if [[ -n "${MAILSURGE_BIN:-}" ]]; then
    BIN="$MAILSURGE_BIN"
  else
    BIN="${CARGO_TARGET_DIR:-$MAILSURGE_REPO/target}/release/mailsurge"
    if command -v cargo >/dev/null; then
      if [[ "$when" == always ]]; then
        echo "== cargo build --release"
        (cd "$MAILSURGE_REPO" && cargo build --release --quiet) || exit $?
      elif [[ "$when" == missing && ! -x "$BIN" ]]; then
        if [[ "$quiet" == quiet ]]; then
          (cd "$MAILSURGE_REPO" && cargo build --release --quiet) || exit $?
        else
          echo "== building the release binary (cargo build --release)"
          (cd "$MAILSURGE_REPO" && cargo build --release) || exit $?
        fi
      fi
    fi
  fi
  [[ -x "$BIN" ]] || { echo "error: mailsurge binary $BIN not found or not executable" >&2; exit 1; }
}

# --- tools and packages ---------------------------------------------------------------------
require_tools() { # command...: exits 1 with "error: X is required" for the first one missing
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "error: $t is required" >&2; exit 1; }
  done
}

apt_install() { # packages...; `apt-get update` only when there are no lists or the install fails
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt-get install -y -q "$@" >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q "$@" >/dev/null
  fi
}

# --- checks and scratch space (the ci-*.sh suites) ------------------------------------------
# skip REASON...: an optional suite that cannot run here says why and succeeds.
skip() {
  echo "SKIPPED: $*"
  exit 0
}

# check DESCRIPTION COMMAND...: runs COMMAND; prints "  ok    DESCRIPTION" or "  FAIL  ..." and
# then sets FAILED=1. The suite decides at the end what FAILED means.
check() {
  local what="$1"
  shift
  if "$@"; then
    printf '  ok    %s\n' "$what"
  else
    printf '  FAIL  %s\n' "$what"
    FAILED=1
  fi
}

# keep_or_remove DIR: from a suite's EXIT trap: keeps DIR (and prints its path) when KEEP_WORK=1
# or FAILED=1, so a failure can be inspected; removes it otherwise.
keep_or_remove() {
  if [[ "${KEEP_WORK:-0}" == 1 || "${FAILED:-0}" == 1 ]]; then
    echo "scratch directory kept: $1"
  else
    rm -rf "$1"
  fi
}

# --- processes ------------------------------------------------------------------------------
pid_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; } # pid: resident set size in KiB
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; } # pid: peak resident set size in KiB

# start_inbox_and_node DIR INBOX_ADDR RULES NODE_ADDR POOL_IP [EXTRA_NODE_YAML]: a standalone
# mock inbox (rules: a shipped name or a path) and a reference-MTA node routing every domain to
# it, with their output in DIR; sets INBOX_PID and NODE_PID. Callers stop them. NODE_SPOOL, when
# set, is the node's `spool:` (default: a local spool in DIR/spool).
start_inbox_and_node() {
  local dir="$1" inbox="$2" rules="$3" node="$4" pool="$5" extra="${6:-}" spool='{ kind: local, dir: spool }'
  if [[ -n "${NODE_SPOOL:-}" ]]; then spool="$NODE_SPOOL"; fi
  "$BIN" inbox --rules "$rules" --listen "$inbox" >"$dir/inbox.out" 2>"$dir/inbox.err" &
  INBOX_PID=$!
  cat >"$dir/node.yaml" <<YAML
node: n-1
region: r
listen: $node
relay_networks: [127.0.0.0/8]
spool: $spool
routes: { "*": [$inbox] }
egress_pools: { p: [$pool] }
events: events.jsonl
$extra
YAML
  "$BIN" mta --config "$dir/node.yaml" >"$dir/node.out" 2>"$dir/node.err" &
  NODE_PID=$!
  sleep 1
}

# start_standalone_inbox DIR RULES LISTEN [ARGS...]: `mailsurge inbox --rules RULES --listen
# LISTEN ARGS...` with its output in DIR/inbox.{out,err}; waits (up to 5 s) for the line naming
# its address and sets INBOX_PID and INBOX_ADDR (empty if it never came up). Callers stop it.
start_standalone_inbox() {
  local dir="$1" rules="$2" listen="$3"
  shift 3
  "$BIN" inbox --rules "$rules" --listen "$listen" "$@" >"$dir/inbox.out" 2>"$dir/inbox.err" &
  INBOX_PID=$!
  for _ in $(seq 1 50); do
    [[ -s "$dir/inbox.out" ]] && break
    sleep 0.1
  done
  INBOX_ADDR="$(head -1 "$dir/inbox.out" | awk '{print $NF}')"
}

stop_pid() { # pid, tenths of a second: SIGTERM, SIGKILL if it still runs after that, then reap it
  kill -TERM "$1" 2>/dev/null || true
  wait_gone "$1" "$2" || kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

wait_gone() { # pid, tenths of a second: 0 once the process is gone, 1 if it still runs
  local i
  for ((i = 0; i < $2; i++)); do
    pid_alive "$1" || return 0
    sleep 0.1
  done
  return 1
}

children_of() { # pids whose parent is $1
  local p s f
  for p in /proc/[0-9]*; do
    { read -r s <"$p/stat"; } 2>/dev/null || continue
    s="${s##*) }"
    read -r -a f <<<"$s"
    [[ "${f[1]}" == "$1" ]] && echo "${p#/proc/}"
  done
  return 0
}

# --- listening sockets (TCP, from ss) ---------------------------------------------------------
port_taken() { # addr:port -> listening (or the wildcard address on its port)?
  local port="${1##*:}"
  ss -Hltn 2>/dev/null | awk '{ print $4 }' |
    grep -qx -e "$1" -e "0.0.0.0:$port" -e "\*:$port" -e "\[::\]:$port"
}

listening_pid() { # addr:port -> pid of the process listening on exactly addr:port (empty if none)
  ss -Hltnp "sport = :${1##*:}" 2>/dev/null | awk -v a="$1" '$4 == a' | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}

# --- benchmark verdicts -------------------------------------------------------------------------
# bench_verdict WHAT VALUE TARGET [OP]: prints "TARGET MET" or "TARGET MISSED" with the value and
# returns 0 or 1 (`bench_verdict ... || exit 1`): a benchmark whose target is missed fails.
# OP is how VALUE must compare with TARGET: ">=" (a ratio; the default) or "<=" (a latency).
bench_verdict() {
  local op="${4:->=}"
  if python3 -c "import sys; sys.exit(0 if $2 $op $3 else 1)"; then
    echo "TARGET MET: $1 $2 (target $op $3)"
  else
    echo "TARGET MISSED: $1 $2 (target $op $3)"
    return 1
  fi
}

# median NUMBER...: the median (the mean of the two middle ones for an even count).
median() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
