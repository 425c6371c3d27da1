#!/usr/bin/env python3
"""Randomized SMTP abuse against live mailsurge servers (driven by scripts/fuzz.sh).

Opens many short connections to each target and sends, chosen at random per connection:
mutated valid conversations, random bytes, over-long lines, absurd SIZE values, pipelined
junk, non-ASCII paths, DATA with bare CR/LF and dot tricks, and abrupt closes. Bounded by
--seconds and --max-connections; it never waits on a reply for more than a second. Prints one
summary line per target. Exit 0 unless a target stopped accepting connections.
"""
import argparse
import random
import socket
import sys
import time

VALID = [
    b"EHLO fuzz.test\r\n",
    b"MAIL FROM:<a@fuzz.test>\r\n",
    b"RCPT TO:<user1@example.com>\r\n",
    b"DATA\r\n",
    b"Subject: x\r\n\r\nhello\r\n.\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
]


def mutate(b: bytes, rng: random.Random) -> bytes:
    b = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 3)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        else:
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes(rng.choice([b"\r", b"\n", b".", b"\x00", b"\xff", b"<", b">", b":"]))
    return bytes(b)


def script(rng: random.Random) -> list:
    kind = rng.randint(0, 8)
    if kind == 0:
        return [mutate(l, rng) for l in VALID]
    if kind == 1:
        return [bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))]
    if kind == 2:
        return [b"EHLO x\r\n", b"MAIL FROM:<a@b> SIZE=" + str(rng.choice([10**30, 2**64, 2**63 - 1, -1])).encode() + b"\r\n"]
    if kind == 3:
        return [b"EHLO x\r\n", b"A" * rng.randint(2000, 200000) + b"\r\n", b"NOOP\r\n"]
    if kind == 4:
        return [b"".join(rng.choice(VALID) for _ in range(rng.randint(5, 60)))]
    if kind == 5:
        return [b"EHLO x\r\n", b"MAIL FROM:<\xff\xfe@x>\r\n", b"RCPT TO:<\xc3\x28@x>\r\n", "RCPT TO:<jos\u00e9@x>\r\n".encode()]
    if kind == 6:
        body = rng.choice([b"a\rb\r\n", b"a\nb\r\n", b"..\r\n.x\r\n", b"\r\n.\r\nMAIL FROM:<smuggled@x>\r\n"])
        return VALID[:4] + [body * rng.randint(1, 50) + b"\r\n.\r\n", b"QUIT\r\n"]
    if kind == 7:
        return VALID[:4] + [b"x" * rng.randint(1, 1 << 20)]  # DATA never ended
    return [mutate(rng.choice(VALID), rng) for _ in range(rng.randint(1, 20))]


def one(addr, rng: random.Random) -> bool:
    try:
        s = socket.create_connection(addr, timeout=2)
    except OSError:
        return False
    s.settimeout(0.2)
    try:
        for chunk in script(rng):
            if rng.random() < 0.3:
                # Split at a random point, as a slow or odd client would.
                cut = rng.randint(0, len(chunk))
                s.sendall(chunk[:cut])
                s.sendall(chunk[cut:])
            else:
                s.sendall(chunk)
            if rng.random() < 0.5:
                try:
                    s.recv(65536)
                except socket.timeout:
                    pass
            if rng.random() < 0.05:
                break  # abrupt close
    except OSError:
        pass  # the server may close on us: that is its right
    finally:
        s.close()
    return True


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target", action="append", required=True, help="name=host:port")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--max-connections", type=int, default=200000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rng = random.Random(a.seed)
    targets = []
    for t in a.target:
        name, hp = t.split("=", 1)
        host, port = hp.rsplit(":", 1)
        targets.append((name, (host, int(port)), [0, 0]))
    end = time.time() + a.seconds
    n = 0
    while time.time() < end and n < a.max_connections:
        name, addr, stats = targets[n % len(targets)]
        ok = one(addr, rng)
        stats[0 if ok else 1] += 1
        n += 1
    bad = 0
    for name, addr, (ok, refused) in targets:
        print(f"{name}: {ok} connections, {refused} refused at connect")
        # Still serving after the abuse?
        if not one(addr, random.Random(0)):
            print(f"{name}: NOT accepting connections any more")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
