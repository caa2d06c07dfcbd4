#!/usr/bin/python3
"""sinkscan.py - read what postfix's smtp-sink received (perf/bench_delivery.sh).

The sink runs as `smtp-sink -c -d DIR/cur/m. ...`: -c makes it print
"sess=S quit=Q mesg=M\\r" on stdout each time a message ends (the final
"."), and -d makes it write each message to its own file, which it closes
when the "." arrives.  arrivals.py notes when each file is closed: the time
the message finished arriving at the sink.  A file it missed falls back on
its mtime (the kernel's coarse clock: up to one tick, 4 ms here, early),
and the scan says how many did.

usage:
  sinkscan.py count OUT                 messages completed so far (mesg=)
  sinkscan.py wait OUT TARGET STALL MAX wait until mesg >= TARGET; give up
                                        after STALL seconds without progress
                                        or MAX seconds in all; prints
                                        "mesg=M" and exits 1 if short
  sinkscan.py scan DIR ARRIVALS [LOG TAG]
                                        over every dump file in DIR, with the
                                        close times in ARRIVALS (arrivals.py;
                                        "-": none) prints files=N distinct=D
                                        (different Message-IDs) signed=S
                                        first_ns=T0 last_ns=T mtime=M (files
                                        timed by their mtime) overflow=0|1
                                        and with a probe LOG (probe.py) for
                                        probes of TAG:
                                        probes=K found=F lat50 lat99 latmax
                                        acc50 acc99 (ms)
"""
import math
import os
import re
import sys
import time

MESG = re.compile(rb"mesg=(\d+)")
MSGID = re.compile(rb"^message-id:[ \t]*(.*)$", re.M | re.I)
PROBE = re.compile(rb"^X-Bench-Probe: (\S+) (\d+)$", re.M)


def count(out):
    try:
        with open(out, "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(max(0, n - 200))
            tail = f.read()
    except OSError:
        return 0
    m = MESG.findall(tail)
    return int(m[-1]) if m else 0


def pct(v, q):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(math.ceil(q * len(v))) - 1))]


def scan(d, arrivals, log=None, tag=None):
    files = signed = by_mtime = overflow = 0
    first = last = None
    arrived = {}
    ids = set()
    closed = {}
    if arrivals != "-" and os.path.exists(arrivals):
        for line in open(arrivals, "rb"):
            p = line.split()
            if p == [b"overflow"]:
                overflow = 1
            elif len(p) == 2:
                closed[p[0].decode()] = int(p[1])
    for e in os.scandir(d):
        if not e.is_file():
            continue
        with open(e.path, "rb") as f:
            data = f.read()
        files += 1
        t = closed.get(e.name)
        if t is None:
            t = e.stat().st_mtime_ns
            by_mtime += 1
        first = t if first is None or t < first else first
        last = t if last is None or t > last else last
        head = data.split(b"\n\n", 1)[0]
        m = MSGID.search(head)
        ids.add(m.group(1).strip() if m else e.name.encode())
        flat = re.sub(rb"\s+", b"", head)
        if b"DKIM-Signature:" in flat and b"d=bench.example;" in flat:
            signed += 1
        if log:
            m = PROBE.search(head)
            if m and m.group(1).decode() == tag:
                arrived[int(m.group(2))] = t
    out = "files=%d distinct=%d signed=%d first_ns=%d last_ns=%d mtime=%d overflow=%d" % (
        files, len(ids), signed, first or 0, last or 0, by_mtime, overflow)
    if log:
        lat, acc = [], []
        sent = 0
        for line in open(log):
            p = line.split()
            if len(p) != 3:
                continue
            sent += 1
            seq, t_mail, t_acc = int(p[0]), int(p[1]), int(p[2])
            acc.append((t_acc - t_mail) / 1e6)
            if seq in arrived:
                lat.append((arrived[seq] - t_mail) / 1e6)
        out += " probes=%d found=%d lat50=%.2f lat99=%.2f latmax=%.2f acc50=%.2f acc99=%.2f" % (
            sent, len(lat), pct(lat, 0.5), pct(lat, 0.99), max(lat) if lat else float("nan"),
            pct(acc, 0.5), pct(acc, 0.99))
    print(out)


def main(a):
    if a[:1] == ["count"]:
        print(count(a[1]))
    elif a[:1] == ["wait"]:
        out, target, stall, mx = a[1], int(a[2]), float(a[3]), float(a[4])
        t0 = time.monotonic()
        last, last_t = -1, t0
        while True:
            n = count(out)
            now = time.monotonic()
            if n >= target:
                break
            if n != last:
                last, last_t = n, now
            if now - last_t > stall or now - t0 > mx:
                print("mesg=%d" % n)
                return 1
            time.sleep(0.05)
        print("mesg=%d" % n)
    elif a[:1] == ["scan"]:
        scan(a[1], a[2], a[3] if len(a) > 3 else None, a[4] if len(a) > 4 else None)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
