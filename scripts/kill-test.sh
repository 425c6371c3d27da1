#!/usr/bin/env bash
# Durability: SIGKILL a reference-MTA node under load and restart it on the same spool,
# MAILSURGE_KILL_ROUNDS times (default 10). Every message that got a 250 must reach the inbox;
# duplicates are allowed (at-least-once) and printed. Loopback only.
#
#   scripts/kill-test.sh            # 10 rounds
#   MAILSURGE_KILL_ROUNDS=50 scripts/kill-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export MAILSURGE_KILL_ROUNDS="${MAILSURGE_KILL_ROUNDS:-10}"
cargo test --release --quiet --test mta_kill -- --nocapture 2>&1 | grep -E "kill test|test result|panicked|acknowledged"
