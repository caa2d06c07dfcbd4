#!/usr/bin/python3
"""idle_conns.py - open N idle SMTP connections and hold them.

usage: idle_conns.py PORT N [READY_FILE]

Connects N sockets to 127.0.0.1:PORT (non-blocking, a few hundred at a
time), waits for each one's 220 greeting, then writes "ready OPEN GREETED"
to READY_FILE (or stdout) and holds every connection until SIGTERM.  Raise `ulimit -n` above N first.  Prints a line if some
connections failed or were not greeted within 60 s.
"""
import os
import selectors
import signal
import socket
import sys
import time


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    ready = sys.argv[3] if len(sys.argv) > 3 else None
    sel = selectors.DefaultSelector()
    socks = []
    greeted = 0
    failed = 0
    pending = {}
    deadline = time.monotonic() + 60
    i = 0
    while (i < n or pending) and time.monotonic() < deadline:
        while i < n and len(pending) < 500:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            except OSError:
                failed += 1
                s.close()
                i += 1
                continue
            pending[s.fileno()] = [s, b""]
            sel.register(s, selectors.EVENT_READ)
            i += 1
        for key, _ in sel.select(timeout=0.5):
            s, buf = pending[key.fd]
            try:
                d = s.recv(512)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            if not d:
                failed += 1
                sel.unregister(s)
                del pending[key.fd]
                s.close()
                continue
            buf += d
            pending[key.fd][1] = buf
            if b"\r\n" in buf:
                sel.unregister(s)
                del pending[key.fd]
                if buf.startswith(b"220"):
                    greeted += 1
                    socks.append(s)
                else:
                    failed += 1
                    s.close()
    msg = "ready %d %d\n" % (len(socks) + len(pending), greeted)
    if failed or pending:
        sys.stderr.write("idle_conns: %d failed, %d not greeted in time\n" % (failed, len(pending)))
    if ready:
        with open(ready + ".tmp", "w") as f:
            f.write(msg)
        os.rename(ready + ".tmp", ready)
    else:
        sys.stdout.write(msg)
        sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
