# shellcheck shell=bash
# scripts/lib/postfix-instance.sh: a PRIVATE Postfix instance for scripts that need a real MTA
# (scripts/bench-relay.sh, scripts/ci-postfix-external.sh). Sourced, never run; it sources
# lib/common.sh itself:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/postfix-instance.sh"
#
# An instance lives in one directory DIR of the caller's scratch space:
#   DIR/etc (config_directory: main.cf, master.cf), DIR/queue (queue_directory), DIR/data
#   (data_directory), DIR/maillog (maillog_file, written through postlogd: no syslogd needed)
#   and DIR/control.log (output of `postfix check/start/stop`).
# /etc/postfix, the system instance and port 25 are never touched. The caller owns what makes
# its instance its own (routing, queue and concurrency settings, and the comments saying why)
# and passes those main.cf lines to pf_write_config; everything here is what every private
# instance shares.
#
# Use:
#   pf_require [TOOL...]                   root, Postfix installed, PF_DAEMON_DIR set (or exit)
#   pf_scratch_dir PARENT NAME             WORK=PARENT/NAME.XXXXXX on a real disk, WORK_FSTYPE
#   pf_write_config DIR NAME LISTEN HEADER <<EOF ... EOF   (the caller's main.cf lines)
#   pf_start DIR LISTEN                    sets PF_DIR and PF_MASTER; returns 1 on failure
#   pf_queue_left DIR                      waits for an empty queue, prints the files left
#   pf_stop                                stops the running instance (safe from an EXIT trap)

# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PF_DIR=""    # directory of the running instance ("" = none); pf_stop stops it
PF_MASTER="" # pid of its master process, once pf_start has seen it come up

# pf_require [TOOL...]: makes sure a private instance can run here, or ends the script.
#   Not root: prints "SKIPPED: <reason>" and exits 0 (Postfix's master runs as root).
#   postfix, postconf or a TOOL (e.g. smtp-source) missing: installs Debian's postfix package
#   (DEBIAN_FRONTEND=noninteractive, `apt-get update` when needed; no apt-get: "SKIPPED: ...",
#   exit 0); if its postinst starts the system instance on port 25, that is left alone.
#   Then checks the user postfix and group postdrop and sets PF_DAEMON_DIR (Postfix's
#   daemon_directory, which a private main.cf must name). Adds /usr/sbin:/sbin to PATH.
pf_require() {
  PATH="$PATH:/usr/sbin:/sbin"
  if [[ $EUID -ne 0 ]]; then
    if ! command -v postfix >/dev/null; then
      echo "SKIPPED: Postfix (Debian package postfix) is not installed and installing needs root"
    else
      echo "SKIPPED: a private Postfix instance needs root (its master process runs as root)"
    fi
    exit 0
  fi
  local t missing=0
  for t in postfix postconf "$@"; do
    command -v "$t" >/dev/null || missing=1
  done
  if ((missing)); then
    echo "== installing Debian's postfix package"
    if ! command -v apt-get >/dev/null; then
      echo "SKIPPED: Postfix is not installed and there is no apt-get to install it"
      exit 0
    fi
    apt_install postfix
    for t in postfix postconf "$@"; do
      command -v "$t" >/dev/null || { echo "error: postfix installed but $t not found" >&2; exit 1; }
    done
  fi
  require_tools getent
  getent passwd postfix >/dev/null || { echo "error: user postfix missing (broken postfix install?)" >&2; exit 1; }
  getent group postdrop >/dev/null || { echo "error: group postdrop missing (broken postfix install?)" >&2; exit 1; }
  PF_DAEMON_DIR="$(postconf -dh daemon_directory)"
}

# pf_bench_env: the environment every Postfix benchmark reads, checked (exit 2 when malformed):
#   REPEATS (default 3), RUN_TIMEOUT (seconds, default 600), SPOOL_PARENT (default /var/tmp),
#   KEEP_WORK (default 0).
pf_bench_env() {
  REPEATS="${REPEATS:-3}"
  RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
  SPOOL_PARENT="${SPOOL_PARENT:-/var/tmp}"
  KEEP_WORK="${KEEP_WORK:-0}"
  [[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || { echo "error: REPEATS must be a positive integer" >&2; exit 2; }
  [[ "$RUN_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || { echo "error: RUN_TIMEOUT must be a positive integer" >&2; exit 2; }
}

# pf_scratch_dir PARENT NAME: creates the scratch directory WORK=PARENT/NAME.XXXXXX (mode 755:
#   Postfix's daemons, user postfix, must reach the queue directory inside) and sets
#   WORK_FSTYPE. PARENT must be a directory on a real disk: on tmpfs/ramfs Postfix's fsync of
#   every queue file would be a no-op, so that is an error (exit 1).
pf_scratch_dir() {
  local parent="$1"
  [[ -d "$parent" ]] || { echo "error: SPOOL_PARENT $parent is not a directory" >&2; exit 1; }
  WORK_FSTYPE="$(df --output=fstype "$parent" | tail -n 1)"
  case "$WORK_FSTYPE" in
    tmpfs | ramfs)
      echo "error: $parent is $WORK_FSTYPE: fsync would be a no-op there; set SPOOL_PARENT to a directory on a disk" >&2
      exit 1
      ;;
  esac
  WORK="$(mktemp -d "$parent/$2.XXXXXX")"
  chmod 755 "$WORK"
}

pf_master_pid() { # DIR -> pid of the instance's master, from its pid file (1 if none)
  local p=""
  [[ -r "$1/queue/pid/master.pid" ]] || return 1
  read -r p <"$1/queue/pid/master.pid" || true
  p="${p// /}"
  [[ -n "$p" ]] && echo "$p"
}

# pf_write_config DIR NAME LISTEN HEADER: creates DIR/etc, DIR/queue, DIR/data and writes
#   DIR/etc/main.cf and DIR/etc/master.cf.
#   main.cf: HEADER as comment lines (what the instance is for), then the settings every
#   private instance shares:
#       compatibility_level = 3.6            current defaults, no backwards-compatibility mode
#       config_directory, queue_directory, data_directory in DIR; daemon_directory as installed
#       maillog_file = DIR/maillog           logging through postlogd (no syslogd needed)
#       syslog_name = postfix-NAME, myhostname = relay.NAME.invalid, mydomain = NAME.invalid
#                                            (no lookup of the machine's name)
#       inet_interfaces = loopback-only, inet_protocols = ipv4
#       mynetworks = 127.0.0.0/8             loopback clients may relay (smtpd_relay_restrictions
#                                            left at its default: permit_mynetworks, ...)
#       mydestination =, relay_domains =, local_recipient_maps =, alias_maps =, alias_database =
#                                            pure relay: no local delivery at all
#     then the caller's own lines, read from stdin (routing, queue and limit settings).
#   master.cf: Debian's stock services with their stock limits, minus those a relay without
#     TLS or local delivery never starts (tlsmgr, local, virtual, lmtp, the pipe(8) examples),
#     with chroot = n (the private queue directory has no chroot jail), and the smtpd inet
#     service on LISTEN (IP:PORT) only, instead of port 25. PF_TLS=1 keeps Debian's tlsmgr
#     and tlsproxy lines too (TLS session cache and PRNG; TLS connection reuse), for an
#     instance that speaks STARTTLS.
pf_write_config() {
  local d="$1" name="$2" listen="$3" header="$4"
  mkdir -p "$d/etc" "$d/queue" "$d/data"
  chown postfix "$d/data"
  {
    printf '# %s\n' "${header//$'\n'/$'\n'# }"
    cat <<EOF
compatibility_level = 3.6
config_directory = $d/etc
queue_directory = $d/queue
data_directory = $d/data
daemon_directory = $PF_DAEMON_DIR
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-$name
maillog_file = $d/maillog
myhostname = relay.$name.invalid
mydomain = $name.invalid
myorigin = \$myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4

# Relay: loopback clients may relay; nothing is delivered locally.
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =

EOF
    cat
  } >"$d/etc/main.cf"
  # Debian's stock master.cf services, chroot = n, smtpd on LISTEN only.
  cat >"$d/etc/master.cf" <<EOF
$listen inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
proxywrite unix - - n -     1 proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
  if [[ "${PF_TLS:-0}" == 1 ]]; then
    printf '%s\n' "tlsmgr    unix  - - n 1000? 1 tlsmgr" "tlsproxy  unix  - - n -     0 tlsproxy" >>"$d/etc/master.cf"
  fi
}

# pf_start DIR LISTEN: `postfix check` and `postfix start` for the instance in DIR (written by
#   pf_write_config), then waits (up to 10 s) until its master listens on LISTEN (IP:PORT) and
#   its qmgr runs. Sets PF_DIR at once (so that pf_stop cleans up whatever started) and
#   PF_MASTER once it is up. On failure prints "error: ..." with the last lines of
#   DIR/control.log and DIR/maillog on stderr and returns 1.
pf_start() {
  local d="$1" listen="$2"
  PF_DIR="$d"
  PF_MASTER=""
  if ! postfix -c "$d/etc" check >"$d/control.log" 2>&1 || ! postfix -c "$d/etc" start >>"$d/control.log" 2>&1; then
    echo "error: the Postfix instance did not start:" >&2
    cat "$d/control.log" "$d/maillog" 2>/dev/null | tail -n 15 | sed 's/^/    /' >&2
    return 1
  fi
  local i master="" qmgr_up=0 c
  for ((i = 0; i < 200; i++)); do
    master="$(pf_master_pid "$d" || true)"
    if [[ -n "$master" ]] && [[ "$(listening_pid "$listen")" == "$master" ]]; then
      for c in $(children_of "$master"); do
        if [[ "$(cat "/proc/$c/comm" 2>/dev/null)" == qmgr ]]; then qmgr_up=1; fi
      done
      ((qmgr_up)) && break
    fi
    sleep 0.05
  done
  if ((!qmgr_up)); then
    echo "error: the Postfix instance did not come up on $listen" >&2
    tail -n 15 "$d/maillog" 2>/dev/null | sed 's/^/    /' >&2
    return 1
  fi
  PF_MASTER="$master"
}

# pf_queue_left DIR: waits (up to 10 s) until the instance's queue is empty (Postfix removes a
#   queue file only after the delivery's 250 has been processed) and prints how many queue
#   files are left (0 = empty).
pf_queue_left() {
  local i n=0
  for ((i = 0; i < 100; i++)); do
    n="$(find "$1/queue/"{incoming,active,deferred,hold,maildrop,corrupt} -type f 2>/dev/null | wc -l)"
    ((n == 0)) && break
    sleep 0.1
  done
  echo "$n"
}

# pf_stop: stops the instance pf_start started, if any (`postfix stop`; if the master is not
#   gone within 15 s: warns, `postfix abort`, then SIGKILL to the master and its children), so
#   that its maillog is complete. Idempotent; meant for EXIT traps too.
# shellcheck disable=SC2034  # PF_MASTER is read by the scripts that source this file
pf_stop() {
  [[ -n "$PF_DIR" ]] || return 0
  local d="$PF_DIR" master c
  master="$(pf_master_pid "$d" || true)"
  postfix -c "$d/etc" stop >>"$d/control.log" 2>&1 || true
  if [[ -n "$master" ]] && ! wait_gone "$master" 150; then
    echo "  warning: postfix stop did not finish; aborting the instance" >&2
    postfix -c "$d/etc" abort >>"$d/control.log" 2>&1 || true
    for c in $(children_of "$master"); do kill -KILL "$c" 2>/dev/null || true; done
    kill -KILL "$master" 2>/dev/null || true
    wait_gone "$master" 50 || true
  fi
  PF_DIR=""
  PF_MASTER=""
}
