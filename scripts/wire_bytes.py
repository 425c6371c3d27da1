"""Usage: wire_bytes.py DUMP_DIR -> "MEAN COUNT".

Mean DATA bytes on the wire per message, from smtp-sink -d dump files: the sink's own
preface (X-Client-*, X-*-Args and its Received header) is removed; lines are counted with
CRLF as sent."""
import sys, os, glob
def data_bytes(path):
    lines = open(path, 'rb').read().split(b'\n')
    if lines and lines[-1] == b'':
        lines.pop()
    i = 0
    while i < len(lines) and lines[i].split(b':')[0] in (b'X-Client-Addr', b'X-Client-Proto', b'X-Helo-Args', b'X-Mail-Args', b'X-Rcpt-Args'):
        i += 1
    if i < len(lines) and lines[i].startswith(b'Received:') and b'smtp-sink' in b''.join(lines[i:i+3]):
        i += 1
        while i < len(lines) and lines[i][:1] in (b' ', b'\t'):
            i += 1
    return sum(len(l.rstrip(b'\r')) + 2 for l in lines[i:])
files = [f for f in glob.glob(os.path.join(sys.argv[1], '*')) if os.path.isfile(f)]
sizes = [data_bytes(f) for f in files]
if not sizes:
    print("0 0")
    sys.exit(0)
print(f"{sum(sizes)/len(sizes):.1f} {len(sizes)}")
