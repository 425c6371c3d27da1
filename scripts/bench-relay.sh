#!/usr/bin/env bash
# bench-relay.sh: durable relay end to end, mailsurge's reference MTA against Postfix.
#
# WHAT IT MEASURES
#   The same load from Postfix's load generator
#       smtp-source -d -s 20 -m 10000 -l 1024 -t user@example.com <relay>:2525
#   (20 parallel SMTP sessions that stay connected (-d), 10000 messages in total, 1024-byte
#   bodies) is sent to two relays on this machine, each forwarding everything for example.com
#   to one Postfix smtp-sink (127.0.5.3:2525):
#     * Postfix 3.x from Debian's package, run as a private instance (127.0.5.1:2525), and
#     * `mailsurge mta --config node.yaml` (127.0.5.2:2525).
#   A run is timed from the start of smtp-source until the sink has received all 10000
#   messages (end to end: accept, make durable, queue, deliver). The figure of merit is
#   postfix_time / mailsurge_time per repetition; the script prints the MEDIAN of those
#   ratios, against Postfix as shipped AND against Postfix tuned for throughput (below).
#   Target (SPEC's performance bar): >= 10 against the TUNED Postfix, both durable.
#   A fourth relay in every repetition is the same mailsurge node on the SHARED QUEUE
#   (`spool: nats`, SPEC §9): the node answers 250 only after a nats-server that syncs every
#   write (sync_interval: always, started by `mailsurge queue` with its store in the same
#   scratch directory) acknowledged the publish, and delivers by pulling from that queue.
#   Its ratio to the tuned Postfix has the target >= 3; its ratio to the local spool is
#   printed beside it. Its CPU column counts the node AND nats-server. After the timed runs an
#   untimed counting pass runs each mailsurge relay once under `strace -f -c` (fsync,
#   fdatasync) to print the syncs per message of the local spool and of nats-server.
#
# TUNED POSTFIX (a third relay run per repetition, same instance layout plus these settings;
# each is Postfix's documented knob for the limit it lifts):
#       in_flow_delay = 0                    postconf(5) in_flow_delay: "Time to pause before
#                                            accepting a new message, when the message arrival
#                                            rate exceeds the message delivery rate ... Specify
#                                            0 to disable the feature" (default 1s).
#       initial_destination_concurrency = 20 postconf(5) / SCHEDULER_README "Concurrency
#                                            scheduling": the slow start begins at 5 parallel
#                                            deliveries; start at the limit (20) instead.
#       smtp_connection_cache_destinations = [127.0.5.3]:2525
#                                            CONNECTION_CACHE_README: per-destination caching
#                                            keeps connections to the sink open even when the
#                                            queue is not backed up (on-demand caching, the
#                                            default, only caches under backlog).
#       default_destination_concurrency_limit and smtp_destination_concurrency_limit stay 20,
#       the outbound connections mailsurge gets (limits.domain_connections = 20). Durability
#       cannot be tuned away: cleanup(8) fsyncs every queue file and that is compiled in.
#
# FAIRNESS (what each side does)
#   Durability: both relays acknowledge a message (250 after the final dot) only once it is on
#   disk. Postfix's cleanup(8) fsync()s every queue file before the 250; that is compiled in
#   and cannot be turned off. mailsurge's spool group-commits with fdatasync (250 only after
#   the batch is durable). Both spools live in the same scratch directory on the same real
#   file system (default under /var/tmp; tmpfs/ramfs is refused: fsync would be a no-op).
#   Concurrency: 20 inbound sessions for both (Postfix: one smtpd process per session,
#   default_process_limit = 100 >= 20; mailsurge: async tasks on its tokio runtime).
#   Outbound to the sink: at most 20 connections for both, reused for many messages
#   (Postfix: smtp_destination_concurrency_limit = 20, its default, with its default slow
#   start from initial_destination_concurrency = 5 and its default connection cache;
#   mailsurge: limits.domain_connections = 20, connections reused up to 1000 messages).
#   Postfix instance (config_directory, queue_directory, data_directory all private, in the
#   scratch directory; /etc/postfix and the system instance are not touched; written by
#   scripts/lib/postfix-instance.sh, with this script's routing and limits):
#       compatibility_level = 3.6            current defaults, no backwards-compatibility mode
#       inet_interfaces = loopback-only, inet_protocols = ipv4
#                                            (master.cf listens on 127.0.5.1:2525 only)
#       mynetworks = 127.0.0.0/8             smtp-source may relay (smtpd_relay_restrictions
#                                            left at its default: permit_mynetworks, ...)
#       mydestination =, local_recipient_maps =, alias_maps =, alias_database =
#                                            pure relay: no local delivery at all
#       transport_maps = inline:{example.com=smtp:[127.0.5.3]:2525}
#                                            the same route as mailsurge's `routes:`; the
#                                            brackets mean no MX lookup
#       default_transport = error:...        any other domain bounces; nothing leaves loopback
#       smtp_dns_support_level = disabled    no DNS at all
#       myhostname = relay.bench.invalid     no lookup of the machine's name
#       maillog_file = <run dir>/maillog     logging through postlogd (no syslogd needed); the
#                                            counterpart of mailsurge's events file
#       master.cf: Debian's stock services with their stock limits, minus those a relay
#       without TLS or local delivery never starts (tlsmgr, local, virtual, lmtp, the pipe(8)
#       examples), with chroot = n (the private queue directory has no chroot jail), and the
#       smtpd inet service on 127.0.5.1:2525 instead of port 25.
#   Everything else is Postfix's default, including in_flow_delay = 1s (its input flow
#   control), qmgr and cleanup settings, smtp_connection_cache_on_demand = yes, and no TLS
#   (smtp-sink offers none). mailsurge node config: the one written below (responses:
#   deliverability, an events file, retry settings irrelevant when nothing fails).
#   Each timed run starts a fresh sink (fresh counter) and a freshly started relay with an
#   EMPTY queue/spool in a new directory (start-up is not timed). `sync` runs before each
#   timed run so that write-back from the previous run does not land in this one. Within a
#   repetition the three runs (Postfix, tuned Postfix, mailsurge) are back to back and their
#   order rotates every repetition, so each takes each place once in three, to spread the
#   noise of a shared machine. Everything stays on loopback (127.0.5.0/24).
#
# VALIDITY
#   smtp-source (without -A) aborts with "fatal: ..." and a non-zero exit on the first reply
#   that is not the expected positive one, so exit 0 and an empty stderr mean every message
#   was accepted. The sink (smtp-sink -c) counts messages; its counter must reach 10000 within
#   RUN_TIMEOUT and be exactly 10000 once the relay has stopped (no duplicates). Postfix: its
#   log must show 10000 `status=sent` and no deferred/bounced/expired, and its queue must be
#   empty. mailsurge: its events file must hold 10000 "delivered" events and no deferred or
#   bounced ones. A run failing any check is reported INVALID and the remaining repetitions
#   are skipped.
#
# HOW TO RUN
#   scripts/bench-relay.sh                   # from anywhere; needs root (Postfix's master runs
#   REPEATS=5 scripts/bench-relay.sh         #   as root; the package is installed if missing)
#   Environment:
#     REPEATS        repetitions (default 3); each is one Postfix run and one mailsurge run
#     MAILSURGE_BIN  mailsurge binary to test (default: target/release/mailsurge, built with
#                    `cargo build --release` if missing; honours CARGO_TARGET_DIR)
#     RUN_TIMEOUT    seconds before a single run counts as hung (default 600)
#     SPOOL_PARENT   where the scratch directory (queues, spools, logs) goes (default
#                    /var/tmp); must be a real disk file system
#     KEEP_WORK=1    keep the scratch directory (configs, logs) and print its path
#   Not root: prints "SKIPPED: ..." and exits 0. Debian's `postfix` package is installed when
#   missing (DEBIAN_FRONTEND=noninteractive; no apt-get: "SKIPPED: ...", exit 0); if its
#   postinst starts the system instance (port 25), that instance is left alone: this script
#   uses 127.0.5.x:2525 only.
#
# READING THE OUTPUT
#   First a reference run, "direct": the same smtp-source load straight into the sink, no
#   relay. It is the floor of this harness (not part of any ratio): a relay whose time is
#   close to it is limited by the load generator, not by itself.
#   Then one line per timed run: repetition, relay, end-to-end seconds and messages/s, when
#   smtp-source was done (ingress), the relay's CPU seconds during the run (Postfix: all
#   processes of the instance; mailsurge: all threads) with CPU% of one core (the machine has
#   `nproc` cores), the sink's CPU, and the whole machine's busy/iowait share over the run
#   (of all cores). A relay near 100% x cores, or a machine near 100% busy, is CPU-bound;
#   high iowait points at the disk (fsync). "sink sessions" is how many connections the relay
#   opened to the sink. Postfix's own warnings are counted and the first one shown (with
#   one busy destination its qmgr warns that the destination uses up all active queue
#   entries; that is expected here). Then: the ratio of each repetition, their median, and
#   TARGET MET/MISSED against the tuned Postfix. Exit status: 0 when the runs were valid and the
#   target was met; 1 when it was missed, a run was INVALID or something broke.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib/postfix-instance.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/postfix-instance.sh" # and lib/common.sh

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

pf_bench_env # REPEATS, RUN_TIMEOUT, SPOOL_PARENT, KEEP_WORK
SESSIONS=20
MESSAGES=10000
LENGTH=1024
RCPT=user@example.com
DOMAIN=example.com
OUT_CONNECTIONS=20 # Postfix smtp_destination_concurrency_limit = mailsurge domain_connections
PF_ADDR=127.0.5.1
MS_ADDR=127.0.5.2
SINK_ADDR=127.0.5.3
NATS_ADDR=127.0.5.4
PORT=2525
TARGET=10 # against the tuned Postfix
NATS_TARGET=3 # the shared queue against the tuned Postfix


# --- tools -------------------------------------------------------------------------------
pf_require smtp-source smtp-sink # root and Postfix, or SKIPPED; sets PF_DAEMON_DIR
if ! perl -MTime::HiRes -e 1 2>/dev/null; then
  echo "== installing perl (the sink's counter is read with Time::HiRes)"
  apt_install perl
fi
require_tools ss timeout awk perl mkfifo strace

mailsurge_bin missing # BIN: MAILSURGE_BIN, or the release binary (built if missing)

# --- scratch space and cleanup ----------------------------------------------------------
pf_scratch_dir "$SPOOL_PARENT" bench-relay # WORK (mode 755), WORK_FSTYPE; tmpfs/ramfs refused
RUN_DIR=""
MS_PID=""
QUEUE_PID=""
NATS_PID=""
SINK_PID=""
HELPER_PID=""
DONE_FD=""

stop_mailsurge() {
  # Graceful stop (SIGTERM: finishes in-flight work, flushes events), SIGKILL after 15 s.
  local pid="$MS_PID"
  [[ -n "$pid" ]] || return 0
  MS_PID=""
  stop_pid "$pid" 150
}

stop_queue() { # `mailsurge queue` stops its nats-server on SIGTERM
  local pid="$QUEUE_PID"
  [[ -n "$pid" ]] || return 0
  QUEUE_PID="" NATS_PID=""
  stop_pid "$pid" 150
}

stop_sink() {
  if [[ -n "$SINK_PID" ]]; then
    kill -TERM "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
  fi
  if [[ -n "$HELPER_PID" ]]; then
    # The helper ends at EOF of the sink's output; give it a moment, then stop it.
    wait_gone "$HELPER_PID" 50 || kill -TERM "$HELPER_PID" 2>/dev/null || true
    wait "$HELPER_PID" 2>/dev/null || true
    HELPER_PID=""
  fi
  if [[ -n "$DONE_FD" ]]; then
    exec {DONE_FD}<&-
    DONE_FD=""
  fi
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  pf_stop
  stop_mailsurge
  stop_queue
  stop_sink
  if [[ "$KEEP_WORK" == 1 ]]; then
    echo "scratch directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

for a in "$PF_ADDR" "$MS_ADDR" "$SINK_ADDR"; do
  if port_taken "$a:$PORT"; then
    echo "error: $a:$PORT (or the wildcard address on port $PORT) is already in use" >&2
    exit 1
  fi
done

TCK="$(getconf CLK_TCK)"
NCPU="$(nproc)"

proc_ticks() { # pid [with-children: 1] -> utime+stime (+cutime+cstime) in ticks
  local s f
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return 0; }
  s="${s##*) }"
  read -r -a f <<<"$s"
  if [[ "${2:-0}" == 1 ]]; then
    echo $((f[11] + f[12] + f[13] + f[14]))
  else
    echo $((f[11] + f[12]))
  fi
}

postfix_ticks() { # the whole instance: master (with reaped children) + live children
  local m="$1" total c
  total="$(proc_ticks "$m" 1)"
  for c in $(children_of "$m"); do
    total=$((total + $(proc_ticks "$c")))
  done
  echo "$total"
}

machine_ticks() { # "busy iowait total" over all cores (busy = user+nice+system+irq+softirq)
  awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8; t = 0; for (i = 2; i <= NF; i++) t += $i; print b, $6, t; exit }' /proc/stat
}

# --- the sink ---------------------------------------------------------------------------
# smtp-sink -c prints "sess=N quit=N mesg=N\r" (flushed) after every message and session end.
# Its stdout goes through a FIFO to a small Perl reader that records the time at which the
# message counter reaches MESSAGES (written to the DONE FIFO the script waits on, so nothing
# polls) and, at EOF, the final "mesg sess" counters.
# shellcheck disable=SC2016  # Perl code, expanded by Perl
SINK_READER='
use strict; use warnings; use Time::HiRes qw(time);
my ($want, $done, $final) = @ARGV;
my ($buf, $mesg, $sess, $signalled) = ("", 0, 0, 0);
while (sysread(STDIN, my $chunk, 65536)) {
  $buf .= $chunk;
  while ($buf =~ s/^([^\r]*)\r//) {
    my $rec = $1;
    next unless $rec =~ /sess=(\d+) quit=\d+ mesg=(\d+)/;
    ($sess, $mesg) = ($1, $2);
    if (!$signalled && $mesg >= $want) {
      my $t = time;
      open(my $fh, ">", $done) or die "open $done: $!";
      printf $fh "%.6f %d\n", $t, $mesg;
      close $fh;
      $signalled = 1;
    }
  }
}
open(my $fh, ">", $final) or die "open $final: $!";
print $fh "$mesg $sess\n";
close $fh;
'

start_sink() {
  local dir="$1"
  mkfifo "$dir/sink.fifo" "$dir/done.fifo"
  # Opened read-write so that neither side blocks on open and a late reader loses nothing.
  exec {DONE_FD}<>"$dir/done.fifo"
  perl -e "$SINK_READER" "$MESSAGES" "$dir/done.fifo" "$dir/sink.final" <"$dir/sink.fifo" &
  HELPER_PID=$!
  smtp-sink -u nobody -c "$SINK_ADDR:$PORT" 1000 >"$dir/sink.fifo" 2>"$dir/sink.err" &
  SINK_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ "$(listening_pid "$SINK_ADDR:$PORT")" == "$SINK_PID" ]]; then return 0; fi
    pid_alive "$SINK_PID" || break
    sleep 0.05
  done
  echo "error: smtp-sink did not come up on $SINK_ADDR:$PORT" >&2
  sed 's/^/    /' "$dir/sink.err" >&2
  return 1
}

# --- the relays -------------------------------------------------------------------------
RELAY_PID="" # the process whose CPU is measured (mailsurge, or Postfix's master)

start_postfix() { # [tuned]
  local d="$RUN_DIR/postfix" tuning=""
  if [[ "${1:-}" == tuned ]]; then
    tuning="# Tuned for throughput (see the script's header for the source of each).
in_flow_delay = 0
initial_destination_concurrency = $OUT_CONNECTIONS
smtp_connection_cache_destinations = [$SINK_ADDR]:$PORT"
  fi
  pf_write_config "$d" bench "$PF_ADDR:$PORT" \
    "Private Postfix instance for scripts/bench-relay.sh: a pure relay to smtp-sink." <<EOF
transport_maps = inline:{$DOMAIN=smtp:[$SINK_ADDR]:$PORT}
default_transport = error:5.3.0 no route outside $DOMAIN in this benchmark
smtp_dns_support_level = disabled
# Both are Postfix's defaults, stated here because the comparison depends on them.
default_process_limit = 100
smtp_destination_concurrency_limit = $OUT_CONNECTIONS
$tuning
EOF
  pf_start "$d" "$PF_ADDR:$PORT" || return 1
  RELAY_PID="$PF_MASTER"
}

# The shared queue's server, as `run` starts it: `mailsurge queue` prints READY nats://ADDR.
start_queue() {
  local d="$RUN_DIR/queue" line="" i
  mkdir -p "$d"
  "$BIN" queue --dir "$d" --listen "$NATS_ADDR" >"$d/stdout.log" 2>"$d/stderr.log" &
  QUEUE_PID=$!
  for ((i = 0; i < 1200; i++)); do # a first use may install nats-server (PyPI) first
    { read -r line <"$d/stdout.log"; } 2>/dev/null || true
    [[ -n "$line" ]] && break
    pid_alive "$QUEUE_PID" || break
    sleep 0.05
  done
  if [[ "$line" != "READY nats://"* ]]; then
    echo "error: mailsurge queue did not come up (stdout: '${line}')" >&2
    tail -n 15 "$d/stderr.log" >&2
    return 1
  fi
  NATS_URL="$(awk '{ print $2 }' <<<"$line")"
  NATS_VERSION="$(awk '{ print $4 }' <<<"$line")"
  NATS_PID="$(children_of "$QUEUE_PID" | head -n 1)"
}

start_mailsurge() { # [nats]
  local d="$RUN_DIR/mailsurge" spool="{ kind: local, dir: spool }"
  mkdir -p "$d"
  if [[ "${1:-}" == nats ]]; then
    start_queue || return 1
    spool="{ kind: nats, url: \"$NATS_URL\" }"
  fi
  cat >"$d/node.yaml" <<EOF
node: bench-1
region: bench
listen: $MS_ADDR:$PORT
relay_networks: [127.0.0.0/8]
spool: $spool
routes: { $DOMAIN: [$SINK_ADDR:$PORT] }
retry: { initial: 1s, factor: 2, max_delay: 20s, jitter: 20%, give_up: 2m }
responses: deliverability
events: events.jsonl
limits: { domain_connections: $OUT_CONNECTIONS }
EOF
  "$BIN" mta --config "$d/node.yaml" >"$d/stdout.log" 2>"$d/stderr.log" &
  MS_PID=$!
  local line="" i
  # The node prints "READY <addr> recovered=N" once it listens.
  for ((i = 0; i < 300; i++)); do
    { read -r line <"$d/stdout.log"; } 2>/dev/null || true
    [[ -n "$line" ]] && break
    pid_alive "$MS_PID" || break
    sleep 0.05
  done
  if [[ "$line" != "READY $MS_ADDR:$PORT recovered=0" ]]; then
    echo "error: mailsurge mta did not come up (stdout: '${line}')" >&2
    sed 's/^/    /' "$d/stderr.log" | tail -n 15 >&2
    return 1
  fi
  RELAY_PID="$MS_PID"
}

# --- one timed run ----------------------------------------------------------------------
SOURCE_ARGS=(-d -s "$SESSIONS" -m "$MESSAGES" -l "$LENGTH" -t "$RCPT")
RUN_SECS=""
RUN_OK=0

relay_ticks() { # CPU ticks of the relay under test so far
  case $1 in
    postfix | tuned) postfix_ticks "$RELAY_PID" ;;
    mailsurge) proc_ticks "$RELAY_PID" ;;
    msnats) echo $(($(proc_ticks "$RELAY_PID") + $(proc_ticks "$NATS_PID"))) ;;
    *) echo 0 ;;
  esac
}

timed_run() {
  local rep="$1" who="$2" addr label
  RUN_DIR="$WORK/rep$rep-$who"
  mkdir -p "$RUN_DIR"
  case $who in
    postfix) addr="$PF_ADDR" label="postfix" ;;
    tuned) addr="$PF_ADDR" label="pf-tuned" ;;
    mailsurge) addr="$MS_ADDR" label="mailsurge" ;;
    msnats) addr="$MS_ADDR" label="ms-nats" ;;
    direct) addr="$SINK_ADDR" label="direct" ;; # reference: no relay, straight into the sink
  esac
  RUN_OK=0
  RUN_SECS=""
  start_sink "$RUN_DIR" || return 1
  case $who in
    postfix) start_postfix || return 1 ;;
    tuned) start_postfix tuned || return 1 ;;
    mailsurge) start_mailsurge || return 1 ;;
    msnats) start_mailsurge nats || return 1 ;;
  esac
  sync
  # The counting pass: every fsync/fdatasync of the process that makes a 250 durable.
  local tracer="" traced=""
  if [[ -n "${COUNT_SYNCS:-}" ]]; then
    traced="$RELAY_PID"
    [[ $who == msnats ]] && traced="$NATS_PID"
    strace -f -c -e trace=fsync,fdatasync -o "$RUN_DIR/syncs" -p "$traced" 2>/dev/null &
    tracer=$!
    sleep 0.5 # attached before the load starts
  fi

  local err="$RUN_DIR/source.err" rc=0 relay0 relay1 sink0 sink1 m0 m1 t0 t1 t_src done_line="" t_end=""
  relay0="$(relay_ticks "$who")"
  sink0="$(proc_ticks "$SINK_PID")"
  m0="$(machine_ticks)"
  t0="$EPOCHREALTIME"
  timeout --foreground "$RUN_TIMEOUT" smtp-source "${SOURCE_ARGS[@]}" "$addr:$PORT" >/dev/null 2>"$err" || rc=$?
  t_src="$EPOCHREALTIME"
  # Ctrl-C reaches smtp-source too; `timeout` then exits 128+signal, which bash does not treat
  # as its own interruption, so stop here explicitly (the EXIT trap cleans up).
  if ((rc == 129 || rc == 130 || rc == 143)); then
    echo "interrupted" >&2
    exit "$rc"
  fi
  local left
  left="$(awk -v a="$t0" -v b="$t_src" -v T="$RUN_TIMEOUT" 'BEGIN { l = T - (b - a); print (l < 1) ? 1 : int(l) }')"
  if ((rc == 0)); then
    # The sink reader writes "<time> <count>" to the DONE FIFO when the count reaches MESSAGES.
    read -r -t "$left" -u "$DONE_FD" done_line || true
  fi
  t1="$EPOCHREALTIME"
  m1="$(machine_ticks)"
  sink1="$(proc_ticks "$SINK_PID")"
  relay1="$(relay_ticks "$who")"
  t_end="${done_line%% *}"

  local problems=()
  if ((rc == 124)); then
    problems+=("smtp-source timed out after ${RUN_TIMEOUT}s")
  elif ((rc != 0)); then
    problems+=("smtp-source exit status $rc")
  fi
  if [[ -s "$err" ]]; then problems+=("smtp-source: $(head -n 3 "$err" | tr '\n' ' ')"); fi
  if ((rc == 0)) && [[ -z "$t_end" ]]; then
    problems+=("the sink did not receive $MESSAGES messages within ${RUN_TIMEOUT}s")
  fi

  # Let Postfix finish removing delivered queue files (the sink counts at the dot, before
  # the relay has processed the 250), then stop the relay and the sink.
  if [[ $who == postfix || $who == tuned ]]; then
    local n_queued
    n_queued="$(pf_queue_left "$RUN_DIR/postfix")"
    if ((n_queued)); then problems+=("$n_queued queue files left in the Postfix queue"); fi
    pf_stop
  elif [[ $who == mailsurge || $who == msnats ]]; then
    stop_mailsurge
    stop_queue
  fi
  if [[ -n "$tracer" ]]; then
    wait "$tracer" 2>/dev/null || true # detaches when the traced process exits
    SYNCS="$(awk '$NF == "fsync" || $NF == "fdatasync" { n += $4 } END { print n + 0 }' "$RUN_DIR/syncs")"
  fi
  stop_sink

  local final_mesg=0 final_sess=0
  if [[ -s "$RUN_DIR/sink.final" ]]; then read -r final_mesg final_sess <"$RUN_DIR/sink.final"; fi
  if [[ -n "$t_end" ]] && ((final_mesg != MESSAGES)); then
    problems+=("the sink received $final_mesg messages in total, expected exactly $MESSAGES")
  fi
  local extra=""
  if [[ $who == postfix || $who == tuned ]]; then
    local log="$RUN_DIR/postfix/maillog" sent bad warn
    sent="$(count_matches 'status=sent' "$log")"
    bad="$(count_matches -E 'status=(deferred|bounced|expired)' "$log")"
    if ((sent != MESSAGES)); then problems+=("Postfix logged $sent status=sent, expected $MESSAGES"); fi
    if ((bad)); then problems+=("Postfix logged $bad deferred/bounced/expired deliveries"); fi
    warn="$(count_matches 'warning:' "$log")"
    if ((warn)); then extra="  postfix warnings: $warn (e.g. $(grep -m1 -o 'warning:.*' "$log" | cut -c1-80))"; fi
  elif [[ $who == mailsurge || $who == msnats ]]; then
    local ev="$RUN_DIR/mailsurge/events.jsonl" delivered bad
    delivered="$(count_matches '"event":"delivered"' "$ev")"
    bad="$(count_matches -E '"event":"(deferred|bounced|expired|dropped)"' "$ev")"
    if ((delivered != MESSAGES)); then problems+=("mailsurge logged $delivered delivered events, expected $MESSAGES"); fi
    if ((bad)); then problems+=("mailsurge logged $bad deferred/bounced/expired/dropped events"); fi
  fi

  local end_ref="${t_end:-$t1}"
  RUN_SECS="$(awk -v a="$t0" -v b="$end_ref" 'BEGIN { printf "%.3f", b - a }')"
  local rate="invalid" ingress cpu sinkcpu machine
  if ((${#problems[@]} == 0)); then
    rate="$(awk -v s="$RUN_SECS" -v m="$MESSAGES" 'BEGIN { printf "%.0f", m / s }')"
  fi
  ingress="$(awk -v a="$t0" -v b="$t_src" 'BEGIN { printf "%.2f", b - a }')"
  cpu="$(awk -v a="$relay0" -v b="$relay1" -v w="$RUN_SECS" -v t="$TCK" 'BEGIN { c = (b - a) / t; printf "%.1fs (%3.0f%%)", c, 100 * c / w }')"
  if [[ $who == direct ]]; then cpu="-"; fi
  sinkcpu="$(awk -v a="$sink0" -v b="$sink1" -v t="$TCK" 'BEGIN { printf "%.1fs", (b - a) / t }')"
  machine="$(awk -v x="$m0" -v y="$m1" 'BEGIN { split(x, a, " "); split(y, b, " "); t = b[3] - a[3]; if (t <= 0) t = 1;
    printf "busy %2.0f%% iowait %2.0f%%", 100 * (b[1] - a[1]) / t, 100 * (b[2] - a[2]) / t }')"
  printf '  rep %s  %-9s %8.3f s %6s msg/s  ingress %6.2f s  relay cpu %-13s sink cpu %-5s machine %s  sink sessions %s\n' \
    "$rep" "$label" "$RUN_SECS" "$rate" "$ingress" "$cpu" "$sinkcpu" "$machine" "$final_sess"
  if [[ -n "$extra" ]]; then echo "       $extra"; fi
  if ((${#problems[@]})); then
    echo "  INVALID run ($label): this measurement means nothing:"
    printf '    - %s\n' "${problems[@]}"
    if [[ $who == postfix || $who == tuned ]]; then
      grep -v 'status=sent' "$RUN_DIR/postfix/maillog" 2>/dev/null | grep -E 'warning|error|fatal|panic|status=' | tail -n 5 | sed 's/^/    postfix: /' || true
    elif [[ $who == mailsurge || $who == msnats ]]; then
      tail -n 5 "$RUN_DIR/mailsurge/stderr.log" 2>/dev/null | sed 's/^/    mailsurge: /' || true
    fi
    return 0
  fi
  RUN_OK=1
  if [[ "$KEEP_WORK" != 1 ]]; then rm -rf "$RUN_DIR"; fi
}

count_matches() { # grep args... -> number of matching lines (0 when none or no file)
  local n
  n="$(grep -c "$@" 2>/dev/null)" || true
  echo "${n:-0}"
}


# --- header -------------------------------------------------------------------------------
sys_pf="not running"
if [[ -r /var/spool/postfix/pid/master.pid ]]; then
  read -r p </var/spool/postfix/pid/master.pid || true
  p="${p// /}"
  if pid_alive "$p"; then sys_pf="running (pid $p; left alone, this script uses $PF_ADDR/$MS_ADDR/$SINK_ADDR:$PORT)"; fi
fi
echo "== durable relay end to end: Postfix vs mailsurge mta, into smtp-sink"
echo "binary:    $BIN (built $(date -r "$BIN" '+%F %T'); source tree now: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'))"
echo "package:   Postfix $(postconf -dh mail_version) (Debian $(dpkg-query -W -f '${Version}' postfix 2>/dev/null || echo '?')); system instance: $sys_pf"
echo "machine:   cpus $NCPU   load $(cut -d' ' -f1-3 /proc/loadavg)   spools on $SPOOL_PARENT ($WORK_FSTYPE, $(df -P "$SPOOL_PARENT" | awk 'NR == 2 { print $1 }'))"
echo "source:    smtp-source ${SOURCE_ARGS[*]} <relay>:$PORT"
echo "sink:      smtp-sink -u nobody -c $SINK_ADDR:$PORT 1000   (fresh per run)"
echo "postfix:   private instance on $PF_ADDR:$PORT, transport $DOMAIN -> smtp:[$SINK_ADDR]:$PORT, fsync per queue file,"
echo "           smtp_destination_concurrency_limit=$OUT_CONNECTIONS (default), default_process_limit=100 (default)"
echo "pf-tuned:  the same plus in_flow_delay=0, initial_destination_concurrency=$OUT_CONNECTIONS, smtp_connection_cache_destinations=[$SINK_ADDR]:$PORT"
echo "mailsurge: $BIN mta --config node.yaml   listen $MS_ADDR:$PORT, route $DOMAIN -> $SINK_ADDR:$PORT,"
echo "           group-commit fdatasync spool, limits.domain_connections=$OUT_CONNECTIONS"
echo "ms-nats:   the same node with spool: nats, on \`mailsurge queue\` (nats-server, sync_interval: always,"
echo "           store in the scratch directory) on $NATS_ADDR; CPU counts the node and nats-server"
echo "repeats:   $REPEATS (the order rotates every repetition)   targets: median tuned-postfix/mailsurge >= $TARGET,"
echo "           tuned-postfix/ms-nats >= $NATS_TARGET"

# --- runs -----------------------------------------------------------------------------------
broken=0
RATIOS="" TUNED_RATIOS="" NATS_RATIOS="" NATS_LOCAL=""
echo
echo "reference: smtp-source straight into smtp-sink, no relay (the harness's floor; not part of the ratio)"
if ! timed_run "-" direct || ((!RUN_OK)); then
  echo "  INVALID: the load generator and the sink alone do not work here; nothing to compare"
  exit 1
fi
echo "timed runs:"
ORDERS=("postfix tuned mailsurge msnats" "msnats mailsurge postfix tuned" "tuned msnats mailsurge postfix")
for ((rep = 1; rep <= REPEATS; rep++)); do
  # The order rotates every repetition.
  read -r -a order <<<"${ORDERS[$(((rep - 1) % 3))]}"
  pf_s="" tu_s="" ms_s="" mn_s="" ok=1
  for who in "${order[@]}"; do
    if ! timed_run "$rep" "$who"; then
      echo "  run failed to start ($who); see above"
      ok=0
      break
    fi
    ((RUN_OK)) || { ok=0; break; }
    case $who in
      postfix) pf_s="$RUN_SECS" ;;
      tuned) tu_s="$RUN_SECS" ;;
      msnats) mn_s="$RUN_SECS" ;;
      *) ms_s="$RUN_SECS" ;;
    esac
  done
  if ((!ok)); then
    broken=1
    echo "  skipping the remaining repetitions"
    break
  fi
  r="$(awk -v p="$pf_s" -v m="$ms_s" 'BEGIN { printf "%.2f", p / m }')"
  t="$(awk -v p="$tu_s" -v m="$ms_s" 'BEGIN { printf "%.2f", p / m }')"
  n="$(awk -v p="$tu_s" -v m="$mn_s" 'BEGIN { printf "%.2f", p / m }')"
  l="$(awk -v p="$ms_s" -v m="$mn_s" 'BEGIN { printf "%.2f", m / p }')"
  echo "  rep $rep  ratio postfix/mailsurge = $r   tuned-postfix/mailsurge = $t   tuned-postfix/ms-nats = $n   ms-nats/mailsurge time = $l"
  RATIOS+="$r "
  TUNED_RATIOS+="$t "
  NATS_RATIOS+="$n "
  NATS_LOCAL+="$l "
done

# --- summary -------------------------------------------------------------------------------
echo
echo "== summary (median of per-repetition postfix_time / mailsurge_time)"
if ((broken)); then
  echo "  INVALID (a run was rejected, lost messages, or did not start; see above)  ratios so far: ${RATIOS:-none} / tuned ${TUNED_RATIOS:-none}"
  exit 1
fi
# shellcheck disable=SC2086 # word splitting of the ratio lists is intended
printf '  Postfix as shipped:  median ratio %.2f   [ratios: %s]\n' "$(median $RATIOS)" "${RATIOS% }"
# shellcheck disable=SC2086
printf '  Postfix tuned:       median ratio %.2f   [ratios: %s]\n' "$(median $TUNED_RATIOS)" "${TUNED_RATIOS% }"
# shellcheck disable=SC2086
printf '  shared queue:        median tuned-postfix/ms-nats %.2f   [ratios: %s]\n' "$(median $NATS_RATIOS)" "${NATS_RATIOS% }"
# shellcheck disable=SC2086
printf '                       median ms-nats/mailsurge (local spool) time %.2f   [ratios: %s]\n' "$(median $NATS_LOCAL)" "${NATS_LOCAL% }"

echo
echo "== syncs per message (one untimed pass each under strace -f -c: fsync + fdatasync)"
COUNT_SYNCS=1
for who in mailsurge msnats; do
  SYNCS=""
  if timed_run "count" "$who" >/dev/null && ((RUN_OK)) && [[ -n "$SYNCS" ]]; then
    case $who in
      mailsurge) what="mailsurge local spool (the node)" ;;
      msnats) what="nats-server $NATS_VERSION (sync_interval: always)" ;;
    esac
    printf '  %-48s %7d syncs / %d messages = %.3f per message\n' "$what" "$SYNCS" "$MESSAGES" \
      "$(awk -v s="$SYNCS" -v m="$MESSAGES" 'BEGIN { print s / m }')"
  else
    echo "  $who: the counting pass failed (strace not permitted here?); no figure"
  fi
done
COUNT_SYNCS=""
echo
verdict=0
# shellcheck disable=SC2086
bench_verdict "median tuned-postfix/mailsurge time ratio" "$(median $TUNED_RATIOS)" "$TARGET" || verdict=1
# shellcheck disable=SC2086
bench_verdict "median tuned-postfix/ms-nats time ratio (shared queue)" "$(median $NATS_RATIOS)" "$NATS_TARGET" || verdict=1
exit "$verdict"
