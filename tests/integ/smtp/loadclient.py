#!/usr/bin/python3
"""loadclient.py - an SMTP load client that knows which messages got 250.

usage: loadclient.py --port P [--host H] [--conns N] [--size BYTES]
                     [--count N] [--duration S] [--acked FILE]
                     [--latency FILE] [--pause-file F] [--stop-file F]
                     [--from ADDR] [--to ADDR] [--tag T] [--per-session N]

N threads each open a session and send messages (MAIL, RCPT and DATA
pipelined, then the text), --per-session messages per connection (0: until
an error), each with a unique Message-ID <TAG-THREAD-SEQ@loadclient>.  Every
"250 2.0.0 ... queued as ID" is appended to --acked as "MSGID QUEUEID" and
flushed at once, so the file lists exactly the messages the server
acknowledged, even if the server is killed.  Errors (refused connection,
reset, timeout, 4xx/5xx) make the thread reconnect after a short pause.
While --pause-file exists no new connection is made; when --stop-file
exists (or --duration / --count is reached) the threads finish.
--latency writes one line per accepted message: seconds from the end of
the DATA text (the final ".") to the 250 reply.  A summary line goes to
stdout: "sent N acked N errors N secs S".
"""
import argparse
import os
import socket
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--duration", type=float, default=0)
    ap.add_argument("--acked")
    ap.add_argument("--latency")
    ap.add_argument("--pause-file")
    ap.add_argument("--stop-file")
    ap.add_argument("--from", dest="frm", default="load@signed.example")
    ap.add_argument("--to", default="rcpt@rcpt.example")
    ap.add_argument("--tag", default="load%d" % os.getpid())
    ap.add_argument("--per-session", type=int, default=0)
    a = ap.parse_args()

    lock = threading.Lock()
    acked_f = open(a.acked, "a", buffering=1) if a.acked else None
    lat_f = open(a.latency, "a", buffering=1) if a.latency else None
    st = {"sent": 0, "acked": 0, "errors": 0}
    t_end = time.monotonic() + a.duration if a.duration else None
    line = b"X" * 76 + b"\r\n"
    body = line * max(1, a.size // len(line))

    def done():
        if a.stop_file and os.path.exists(a.stop_file):
            return True
        if t_end and time.monotonic() >= t_end:
            return True
        if a.count and st["sent"] >= a.count:
            return True
        return False

    def read_reply(f):
        lines = []
        while True:
            l = f.readline()
            if not l:
                raise EOFError("EOF")
            lines.append(l.rstrip(b"\r\n"))
            if len(l) < 4 or l[3:4] != b"-":
                return int(lines[-1][:3]), lines

    def worker(n):
        seq = 0
        while not done():
            if a.pause_file and os.path.exists(a.pause_file):
                time.sleep(0.02)
                continue
            s = None
            try:
                s = socket.create_connection((a.host, a.port), timeout=10)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                f = s.makefile("rb")
                code, _ = read_reply(f)
                if code != 220:
                    raise IOError("greeting %d" % code)
                s.sendall(b"EHLO loadclient.test\r\n")
                code, _ = read_reply(f)
                if code != 250:
                    raise IOError("EHLO %d" % code)
                k = 0
                while not done() and (not a.per_session or k < a.per_session):
                    if a.pause_file and os.path.exists(a.pause_file):
                        break
                    with lock:
                        if a.count and st["sent"] >= a.count:
                            break
                        st["sent"] += 1
                    seq += 1
                    k += 1
                    msgid = "<%s-%d-%d@loadclient>" % (a.tag, n, seq)
                    s.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" %
                              (a.frm.encode(), a.to.encode()))
                    for what in ("MAIL", "RCPT", "DATA"):
                        code, _ = read_reply(f)
                        want = 354 if what == "DATA" else 250
                        if code != want:
                            raise IOError("%s %d" % (what, code))
                    hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: load %d %d\r\n"
                           "Message-ID: %s\r\n\r\n" % (a.frm, a.to, n, seq, msgid)).encode()
                    s.sendall(hdr + body)
                    t0 = time.monotonic()
                    s.sendall(b".\r\n")
                    code, lines = read_reply(f)
                    dt = time.monotonic() - t0
                    if code != 250:
                        raise IOError("end of data %d" % code)
                    qid = lines[-1].rsplit(b" ", 1)[-1].decode()
                    with lock:
                        st["acked"] += 1
                        if acked_f:
                            acked_f.write("%s %s\n" % (msgid, qid))
                        if lat_f:
                            lat_f.write("%.6f\n" % dt)
                try:
                    s.sendall(b"QUIT\r\n")
                    read_reply(f)
                except (OSError, EOFError):
                    pass
            except (OSError, EOFError, ValueError, IOError):
                with lock:
                    st["errors"] += 1
                time.sleep(0.05)
            finally:
                if s:
                    s.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("sent %d acked %d errors %d secs %.2f" %
          (st["sent"], st["acked"], st["errors"], time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
