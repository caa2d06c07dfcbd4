#!/usr/bin/python3
"""probe.py - send timestamped messages at a fixed rate (open loop).

usage: probe.py --port PORT --rate R [--seconds S] [--conns C] [--size BYTES]
                --tag TAG --log FILE [--ready FILE]

Sends one message every 1/R seconds to 127.0.0.1:PORT over C (32)
persistent SMTP sessions (no pipelining), for S seconds or, without
--seconds, until SIGTERM.  With --ready it opens the sessions, creates
FILE and waits for SIGUSR1 before it starts.  A message is started at its scheduled time on a
free session; when every session is busy it starts late, and the summary
says how many started more than 5 ms late.  Each message is about BYTES
(10240) bytes, From <a@bench.example>, and its first header field is

    X-Bench-Probe: TAG SEQ

which perf/bench_delivery/sinkscan.py finds in the sink's dump files.

FILE gets one line per message that got 250 at end of DATA:

    SEQ T_MAIL T_ACCEPT

T_MAIL is the wall clock (time.time_ns(), the clock of file mtimes) just
before MAIL FROM is written: the submission time.  T_ACCEPT is the wall
clock when the 250 reply to the end of DATA arrived.  At the end it prints
"sent N ok M failed F late L" on stdout.
"""
import argparse
import asyncio
import signal
import sys
import time


def body_of(size, tag, seq):
    hdr = (
        "X-Bench-Probe: %s %d\r\n"
        "From: <a@bench.example>\r\n"
        "To: <b@rcpt.example>\r\n"
        "Subject: delivery probe %s %d\r\n"
        "Message-ID: <probe.%s.%d@bench.test>\r\n"
        "Date: %s\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n" % (tag, seq, tag, seq, tag, seq, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()))
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, probe text line.\r\n"
    n = max(1, (size - len(hdr)) // len(line))
    return hdr + line * n


class Session:
    def __init__(self, port):
        self.port = port
        self.r = self.w = None

    async def reply(self):
        code = None
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("connection closed")
            code = int(line[:3])
            if line[3:4] != b"-":
                return code

    async def open(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        if await self.reply() != 220:
            raise ConnectionError("no 220")
        self.w.write(b"EHLO probe.bench.test\r\n")
        if await self.reply() != 250:
            raise ConnectionError("EHLO refused")

    async def send(self, data):
        self.w.write(b"MAIL FROM:<a@bench.example>\r\n")
        if await self.reply() != 250:
            return False
        self.w.write(b"RCPT TO:<b@rcpt.example>\r\n")
        if await self.reply() != 250:
            await self.rset()
            return False
        self.w.write(b"DATA\r\n")
        if await self.reply() != 354:
            await self.rset()
            return False
        self.w.write(data + b".\r\n")
        return await self.reply() == 250

    async def rset(self):
        self.w.write(b"RSET\r\n")
        await self.reply()

    async def close(self):
        try:
            self.w.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 2)
            self.w.close()
        except Exception:
            pass


async def main(a):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    free = asyncio.Queue()
    for _ in range(a.conns):
        s = Session(a.port)
        await s.open()
        free.put_nowait(s)
    log = open(a.log, "w")
    if a.ready:
        open(a.ready, "w").close()
        await go.wait()
    stats = {"sent": 0, "ok": 0, "failed": 0, "late": 0}
    tasks = set()

    async def one(seq, sched):
        s = await free.get()
        data = body_of(a.size, a.tag, seq)
        t_mail = time.time_ns()
        if t_mail - sched > 5_000_000:
            stats["late"] += 1
        stats["sent"] += 1
        try:
            ok = await s.send(data)
        except Exception:
            ok = False
            s = Session(a.port)
            try:
                await s.open()
            except Exception:
                s = None
        t_acc = time.time_ns()
        if ok:
            stats["ok"] += 1
            log.write("%d %d %d\n" % (seq, t_mail, t_acc))
        else:
            stats["failed"] += 1
        if s is not None:
            free.put_nowait(s)

    period = 1e9 / a.rate
    start = time.time_ns() + 20_000_000
    end = start + a.seconds * 1e9 if a.seconds else None
    seq = 0
    while not stop.is_set():
        sched = start + seq * period
        if end is not None and sched >= end:
            break
        delay = (sched - time.time_ns()) / 1e9
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
        t = asyncio.create_task(one(seq, sched))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        seq += 1
    if tasks:
        await asyncio.wait(tasks, timeout=120)
    log.close()
    while not free.empty():
        await free.get_nowait().close()
    print("sent %(sent)d ok %(ok)d failed %(failed)d late %(late)d" % stats)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--tag", default="p")
    p.add_argument("--log", required=True)
    p.add_argument("--ready")
    sys.exit(asyncio.run(main(p.parse_args())))
