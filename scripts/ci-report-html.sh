#!/usr/bin/env bash
# ci-report-html.sh (optional CI suite): does report.html open offline in a real browser?
#
# WHAT IT CHECKS
#   1. A short chaos run (two regions, a region kill and restore, added provider latency; the
#      scenario is written below, ~20 s wall) from the release binary, so the page has every
#      section: thresholds, faults, a fault timeline and all charts.
#   2. `mailsurge report RUN_DIR` re-renders it: report.html, summary.json, report.md and the
#      charts are deleted first, then must come back, with summary.json byte-identical.
#   3. report.html is self-contained: every src/href is a #fragment or a data: URL (no
#      http://, https://, // or sibling files), no CSS url()/@import of anything else.
#   4. Headless Chromium renders it from file:// with a proxy that refuses everything (so a
#      page that needed the network would show it):
#        chromium --headless --no-sandbox --disable-gpu --screenshot=PNG --window-size=1400,3000
#      and the screenshot is not blank: a PNG of 1400x3000 whose pixels (decoded with python3's
#      zlib, no PIL) hold many colours and a fair share of non-white ink.
#   The screenshot and the run directory are kept in $REPORT_HTML_KEEP when that is set.
#
# HOW TO RUN
#   scripts/ci-report-html.sh            # as root installs Debian's chromium when missing
#   MAILSURGE_BIN=target/release/mailsurge scripts/ci-report-html.sh
#   Without chromium and not root (or without python3): prints `SKIPPED: <reason>`, exit 0.
#   Loopback only. Exit 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

find_chromium() { command -v chromium || command -v chromium-browser || true; }
CHROMIUM="$(find_chromium)"
if [[ -z "$CHROMIUM" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "SKIPPED: chromium is not installed and installing it needs root"; exit 0
  fi
  if ! command -v apt-get >/dev/null; then
    echo "SKIPPED: chromium is not installed and there is no apt-get"; exit 0
  fi
  echo "== apt-get install chromium"
  export DEBIAN_FRONTEND=noninteractive
  # `apt-get update` only when there are no package lists or the install fails with them.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt-get install -y -q chromium >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q chromium >/dev/null
  fi
  CHROMIUM="$(find_chromium)"
  [[ -n "$CHROMIUM" ]] || { echo "FAIL: chromium installed but not on PATH"; exit 1; }
fi
command -v python3 >/dev/null || { echo "SKIPPED: python3 is needed to check the screenshot"; exit 0; }

# The binary under test: MAILSURGE_BIN as it is, else the release build of this tree.
if [[ -n "${MAILSURGE_BIN:-}" ]]; then
  BIN="$MAILSURGE_BIN"
else
  BIN="${CARGO_TARGET_DIR:-$repo/target}/release/mailsurge"
  if command -v cargo >/dev/null; then
    echo "== cargo build --release"
    cargo build --release --quiet
  fi
fi
[[ -x "$BIN" ]] || { echo "error: mailsurge binary $BIN not found or not executable" >&2; exit 1; }

work="$(mktemp -d)"
cleanup() {
  if [[ -n "${REPORT_HTML_KEEP:-}" ]]; then
    mkdir -p "$REPORT_HTML_KEEP"
    cp -r "$work"/run "$work"/report.png "$REPORT_HTML_KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*"; exit 1; }

cat >"$work/report-html.yaml" <<'EOF'
# ci-report-html.sh: a short run with chaos, so report.html has a fault timeline.
name: report-html
seed: 7
duration: 16s
drain: 10s
slo: { delivery_time: 2s, target: 98% }
thresholds:
  - p50 < 500ms
  - p99 < 2s
  - lost == 0
regions:
  - { name: east, nodes: 1 }
  - { name: west, nodes: 1 }
mta:
  retry: { initial: 500ms, factor: 2, max_delay: 2s, jitter: 20%, give_up: 30s }
  egress_pools: { shared: [127.0.1.1, 127.0.1.2] }
providers:
  - { name: gmail,   domains: [gmail.com],   rules: gmail }
  - { name: generic, domains: [example.com], rules: generic }
traffic:
  rate: 80/s
  arrival: poisson
  domains: { gmail.com: 50%, example.com: 50% }
  size: 4KiB
  connections: 8
chaos:
  - { at: 4s,  action: kill,    target: region/east }
  - { at: 10s, action: restore, target: region/east }
  - { at: 6s,  action: latency, target: provider/gmail, add: 300ms, for: 4s }
EOF

run="$work/run"
echo "== mailsurge run (chaos, ~20 s)"
set +e
"$BIN" run "$work/report-html.yaml" --out "$run" --quiet >"$work/run.out" 2>&1
code=$?
set -e
[[ $code == 0 || $code == 1 ]] || { cat "$work/run.out"; fail "mailsurge run exited $code"; }
[[ -s "$run/report.html" ]] || fail "the run wrote no report.html"

echo "== mailsurge report (re-render from raw data)"
cp "$run/summary.json" "$work/summary.orig.json"
rm -rf "$run/report.html" "$run/summary.json" "$run/report.md" "$run/charts"
set +e
"$BIN" report "$run" >"$work/report.out" 2>&1
rcode=$?
set -e
[[ $rcode == "$code" ]] || { cat "$work/report.out"; fail "mailsurge report exited $rcode, the run $code"; }
cmp -s "$work/summary.orig.json" "$run/summary.json" || fail "re-rendered summary.json differs from the run's"
for f in report.html report.md charts/delivery-time.svg; do [[ -s "$run/$f" ]] || fail "$f not re-rendered"; done

echo "== report.html is self-contained"
python3 - "$run/report.html" <<'EOF'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
bad = []
for m in re.finditer(r'''(?i)\b(?:src|href|xlink:href|srcset|poster|action)\s*=\s*(["']?)([^"'\s>]*)''', html):
    v = m.group(2)
    if not (v.startswith("#") or v.startswith("data:")):
        bad.append(m.group(0))
for m in re.finditer(r'''(?i)url\(\s*["']?([^"')]*)''', html):
    if not (m.group(1).startswith("#") or m.group(1).startswith("data:")):
        bad.append(m.group(0))
if re.search(r"(?i)@import|<script|<link\b|<iframe|<object|<embed", html):
    bad.append("@import/<script>/<link>/<iframe>/<object>/<embed>")
for needed in ("id=\"faults\"", "kill region/east", "chaos action", "<svg"):
    if needed not in html:
        bad.append("missing " + needed)
if html.count("<svg") < 7:  # six charts and the fault timeline
    bad.append(f"only {html.count('<svg')} inline SVGs")
if bad:
    print("FAIL: report.html is not self-contained or incomplete:", *sorted(set(bad))[:10], sep="\n  ")
    sys.exit(1)
print(f"ok: {len(html)} bytes, {html.count('<svg')} inline SVGs, no external references")
EOF

echo "== chromium --headless screenshot"
png="$work/report.png"
# A proxy that refuses every connection: file:// needs none, anything else would fail visibly.
timeout 180 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --no-first-run --disable-extensions --user-data-dir="$work/profile" \
  --proxy-server="127.0.0.1:9" --proxy-bypass-list="<-loopback>" \
  --screenshot="$png" --window-size=1400,3000 "file://$run/report.html" >"$work/chromium.log" 2>&1 ||
  { tail -20 "$work/chromium.log"; fail "chromium could not take a screenshot"; }
[[ -s "$png" ]] || { tail -20 "$work/chromium.log"; fail "no screenshot written"; }

python3 - "$png" <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("FAIL: the screenshot is not a PNG")
pos, idat, hdr = 8, [], None
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        hdr = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat.append(body)
    pos += 12 + n
w, h, depth, ctype, _, _, interlace = hdr
if (w, h) != (1400, 3000):
    sys.exit(f"FAIL: screenshot is {w}x{h}, expected 1400x3000")
if depth != 8 or ctype not in (2, 6) or interlace:
    sys.exit(f"FAIL: unexpected PNG format (depth {depth}, colour type {ctype}, interlace {interlace})")
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(b"".join(idat))
stride = w * bpp
prev = bytearray(stride)
colours, ink, step = set(), 0, 7  # every 7th pixel of every row is plenty
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    if f == 1:
        for i in range(bpp, stride):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif f == 2:
        line = bytearray((a + b) & 255 for a, b in zip(line, prev))
    elif f == 3:
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
    elif f == 4:
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, w, step):
        px = bytes(line[x * bpp:x * bpp + 3])
        colours.add(px)
        if sum(px) < 600:  # clearly darker than the page's white and light greys
            ink += 1
    prev = line
share = ink / (h * len(range(0, w, step)))
print(f"screenshot: {len(data) // 1024} KiB, {len(colours)} colours sampled, {share:.1%} ink")
if len(data) < 50_000 or len(colours) < 50 or share < 0.01:
    sys.exit("FAIL: the screenshot looks blank")
EOF
echo "PASS: report.html is self-contained and renders in chromium ($code = the run's exit code)"
