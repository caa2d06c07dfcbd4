#!/usr/bin/python3
"""dsink.py - a recording SMTP sink for the delivery scenarios (7x).

    dsink.py --addr A --port P --record FILE [--ready FILE] [--tls CERT KEY]
             [--hide KEYWORD]... [--dsn] [--reply STAGE[:MATCH]=REPLY[*N]]...

Listens on A:P (any 127.0.0.x, port 25 too when run as root).  Unlike
client/sink.py it writes one JSON line per transaction as soon as the
transaction ends (at the reply to the final dot, or when the connection
drops mid-transaction), flushed and fsynced *before* the reply is sent, so
that "the client got 250" implies "the record is on disk" even when the
client is then killed.  A record has: conn (a per-process connection
number), peer, addr (the sink's own address), tls (version or null), helo,
mail (the MAIL line), rcpt (RCPT lines), accepted (their addresses, those
given a 2xx), data (base64 of the message, unstuffed), raw (base64, as on
the wire), msgid (the Message-ID, or null), reply (the reply given to the
final dot, or null when the connection dropped), t (time).

Offers PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 (minus
--hide), DSN with --dsn, STARTTLS with --tls.  --reply answers STAGE
(GREETING, EHLO, MAIL, RCPT, DATA, DOT; MATCH is a substring of the command
line) with REPLY; with *N only the first N times that rule matches (over
the life of the process), after which the normal reply is given.
--delay-dot MS waits MS milliseconds after the final dot before recording
and replying (a slow server: more transactions in flight).  A
GREETING reply starting with 4 or 5 is followed by closing the connection.
"""
import argparse
import asyncio
import base64
import json
import os
import re
import ssl
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--addr", default="127.0.0.1")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--record", required=True)
ap.add_argument("--ready")
ap.add_argument("--hide", action="append", default=[])
ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
ap.add_argument("--dsn", action="store_true")
ap.add_argument("--reply", action="append", default=[])
ap.add_argument("--delay-dot", type=int, default=0)
args = ap.parse_args()

rules = []
for r in args.reply:
    k, v = r.split("=", 1)
    stage, _, match = k.partition(":")
    n = None
    m = re.match(r"^(.*)\*(\d+)$", v)
    if m:
        v, n = m.group(1), int(m.group(2))
    rules.append({"stage": stage.upper(), "match": match.encode(), "reply": v, "left": n})

sslctx = None
if args.tls:
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(args.tls[0], args.tls[1])

recf = open(args.record, "a", buffering=1)
nconn = 0


def reply_for(stage, line, default):
    for r in rules:
        if r["stage"] == stage and (not r["match"] or r["match"] in line):
            if r["left"] is None:
                return r["reply"]
            if r["left"] > 0:
                r["left"] -= 1
                return r["reply"]
    return default


def record(rec):
    recf.write(json.dumps(rec) + "\n")
    recf.flush()
    os.fsync(recf.fileno())


def addr_of(line):
    m = re.search(rb"<([^>]*)>", line)
    return m.group(1).decode("utf-8", "replace") if m else ""


def msgid_of(data):
    hdr = data.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"(?im)^message-id:[ \t]*(?:\r\n[ \t]+)?(<[^>]*>)", hdr)
    return m.group(1).decode("utf-8", "replace") if m else None


async def handle(reader, writer):
    global nconn
    nconn += 1
    peer = writer.get_extra_info("peername")
    base = {"conn": nconn, "peer": "%s:%s" % (peer[0], peer[1]) if peer else None,
            "addr": "%s:%d" % (args.addr, args.port), "tls": None, "helo": None}
    txn = None
    tls_on = False

    def send(s):
        writer.write(s.encode() + b"\r\n")

    def txn_record(reply):
        rec = dict(base)
        rec.update(txn)
        rec["reply"] = reply
        rec["t"] = time.time()
        record(rec)

    try:
        g = reply_for("GREETING", b"", "220 dsink.test ESMTP recorder")
        send(g)
        await writer.drain()
        if not g.startswith("2"):
            return
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode("ascii", "replace")
            if verb in ("EHLO", "HELO"):
                txn = None
                base["helo"] = line.decode("utf-8", "replace").rstrip("\r\n")
                default = "250 dsink.test"
                if verb == "EHLO":
                    ext = ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
                    if args.dsn:
                        ext.append("DSN")
                    if sslctx and not tls_on:
                        ext.append("STARTTLS")
                    ext = [e for e in ext if e.split()[0] not in args.hide]
                    lines = ["dsink.test Hello"] + ext
                    default = "\r\n".join(
                        "250%s%s" % ("-" if i < len(lines) - 1 else " ", l)
                        for i, l in enumerate(lines))
                send(reply_for(verb, line, default))
            elif verb == "STARTTLS":
                send("220 2.0.0 Ready to start TLS")
                await writer.drain()
                if sslctx and not tls_on:
                    await writer.start_tls(sslctx)
                    tls_on = True
                    so = writer.get_extra_info("ssl_object")
                    base["tls"] = so.version() if so else "?"
                continue
            elif verb == "MAIL":
                rep = reply_for("MAIL", line, "250 2.1.0 Ok")
                txn = None
                if rep.startswith("2"):
                    txn = {"mail": line.decode("utf-8", "replace").rstrip("\r\n"),
                           "rcpt": [], "accepted": []}
                send(rep)
            elif verb == "RCPT":
                if txn is None:
                    send("503 5.5.1 Error: need MAIL command")
                else:
                    txn["rcpt"].append(line.decode("utf-8", "replace").rstrip("\r\n"))
                    rep = reply_for("RCPT", line, "250 2.1.5 Ok")
                    if rep.startswith("2"):
                        txn["accepted"].append(addr_of(line))
                    send(rep)
            elif verb == "DATA":
                if txn is None or not txn["accepted"]:
                    send("554 5.5.1 Error: no valid recipients")
                else:
                    rep = reply_for("DATA", line, "354 End data with <CR><LF>.<CR><LF>")
                    send(rep)
                    if rep.startswith("354"):
                        await writer.drain()
                        raw = bytearray()
                        data = bytearray()
                        closed = False
                        while True:
                            dl = await reader.readline()
                            if not dl:
                                closed = True
                                break
                            if dl == b".\r\n":
                                break
                            raw += dl
                            data += dl[1:] if dl.startswith(b".") else dl
                        txn["data"] = base64.b64encode(bytes(data)).decode()
                        txn["raw"] = base64.b64encode(bytes(raw)).decode()
                        txn["msgid"] = msgid_of(bytes(data))
                        if closed:
                            txn_record(None)
                            txn = None
                            break
                        if args.delay_dot:
                            await asyncio.sleep(args.delay_dot / 1000)
                        rep = reply_for("DOT", line, "250 2.0.0 Ok: queued")
                        txn_record(rep)
                        send(rep)
                    txn = None
            elif verb == "RSET":
                txn = None
                send("250 2.0.0 Ok")
            elif verb == "NOOP":
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                await writer.drain()
                break
            else:
                send("502 5.5.2 Error: command not recognized")
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    srv = await asyncio.start_server(handle, args.addr, args.port, reuse_address=True,
                                     limit=1 << 20)
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("ready\n")
    async with srv:
        await srv.serve_forever()


try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(0)
