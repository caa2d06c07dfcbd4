#!/usr/bin/python3
"""arrivals.py - timestamp the sink's dump files as they are closed.

usage: arrivals.py DIR LOG READY

smtp-sink -d closes a message's dump file when the final "." arrives.
This watches DIR with inotify (IN_CLOSE_WRITE) and notes the wall clock
(time.time_ns(), the clock probe.py stamps submissions with) as each event
is read.  Run it with a real-time priority (chrt -f): it sleeps in read(2)
and wakes at once, so the stamp is within tens of microseconds of the
close.  (The files' own mtimes are not good enough: the kernel stamps them
with its coarse clock, one tick = 4 ms here.)

Creates READY once the watch is in place; on SIGTERM writes "NAME T_NS"
lines to LOG (and "overflow" if the kernel's event queue overflowed) and
exits.
"""
import ctypes
import ctypes.util
import os
import signal
import struct
import sys
import time

IN_CLOSE_WRITE = 0x00000008
IN_Q_OVERFLOW = 0x00004000
IN_CLOEXEC = 0o2000000


class Stop(Exception):
    pass


def main(a):
    d, log, ready = a
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(IN_CLOEXEC)
    if fd < 0:
        sys.exit("inotify_init1: %s" % os.strerror(ctypes.get_errno()))
    if libc.inotify_add_watch(fd, os.fsencode(d), IN_CLOSE_WRITE) < 0:
        sys.exit("inotify_add_watch %s: %s" % (d, os.strerror(ctypes.get_errno())))

    def stop(*_):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    seen = []
    overflow = False
    open(ready, "w").close()
    hdr = struct.Struct("iIII")
    try:
        while True:
            buf = os.read(fd, 1 << 16)
            t = time.time_ns()
            i = 0
            while i < len(buf):
                _, mask, _, n = hdr.unpack_from(buf, i)
                name = buf[i + 16:i + 16 + n].rstrip(b"\0")
                i += 16 + n
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                elif name:
                    seen.append((name, t))
    except Stop:
        pass
    with open(log, "wb") as f:
        for name, t in seen:
            f.write(b"%s %d\n" % (name, t))
        if overflow:
            f.write(b"overflow\n")


if __name__ == "__main__":
    main(sys.argv[1:])
