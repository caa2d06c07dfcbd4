#!/usr/bin/python3
"""sink.py - a recording SMTP server for the delivery-client tests.

    sink.py --port P --record FILE [--ready FILE]
            [--hide KEYWORD]... [--size N] [--tls CERT KEY] [--dsn] [--smtputf8]
            [--reply STAGE[:MATCH]=REPLY]... [--close STAGE] [--delay-mail MS]
            [--close-idle MS] [--close-mail N]

Listens on 127.0.0.1:P.  Every connection appends one JSON line to FILE
when it ends: the commands in order, whether TLS was on (and the version),
and for each transaction the MAIL line, RCPT lines, which recipients were
accepted, the DATA bytes exactly as they came over the wire (dot-stuffed,
terminator excluded, base64 "raw") and unstuffed (base64 "data"), and
"pipelined": the commands that had already arrived when the MAIL reply
was due (the reply is held back --delay-mail ms, default 200, to see).

Offers PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES by default (minus
--hide), STARTTLS with --tls, DSN and SMTPUTF8 on request.  --reply
answers STAGE (GREETING, EHLO, HELO, STARTTLS, MAIL, RCPT, DATA, DOT;
MATCH: a substring of the command line) with REPLY instead of the usual;
--close STAGE drops the connection without a reply when STAGE arrives
(BODY: after the first line of message data).  --close-idle hangs up when
no command comes within MS after a finished transaction (a server's idle
timeout); --close-mail hangs up when the Nth MAIL of a connection arrives
(a cached connection that died just before it was reused).  Counting the
lines of FILE counts the connections.
"""
import argparse
import asyncio
import base64
import json
import ssl
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--record", required=True)
ap.add_argument("--ready")
ap.add_argument("--hide", action="append", default=[])
ap.add_argument("--size", type=int, default=0)
ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
ap.add_argument("--dsn", action="store_true")
ap.add_argument("--smtputf8", action="store_true")
ap.add_argument("--reply", action="append", default=[])
ap.add_argument("--close", action="append", default=[])
ap.add_argument("--delay-mail", type=int, default=200)
ap.add_argument("--close-idle", type=int, default=0)
ap.add_argument("--close-mail", type=int, default=0)
args = ap.parse_args()

replies = []
for r in args.reply:
    k, v = r.split("=", 1)
    stage, _, match = k.partition(":")
    replies.append((stage.upper(), match, v))

sslctx = None
if args.tls:
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(args.tls[0], args.tls[1])


def reply_for(stage, line, default):
    for st, match, rep in replies:
        if st == stage and (not match or match.encode() in line):
            return rep
    return default


def b64(b):
    return base64.b64encode(b).decode()


async def handle(reader, writer):
    conn = {"cmds": [], "tls": None, "txns": [], "closed_by_sink": False}
    txn = None
    tls_on = False

    def send(s):
        writer.write(s.encode() + b"\r\n")

    async def flush():
        await writer.drain()

    def close():
        conn["closed_by_sink"] = True
        writer.transport.abort()

    try:
        g = reply_for("GREETING", b"", "220 sink.test ESMTP recorder")
        send(g)
        await flush()
        while True:
            if args.close_idle and txn is not None and txn.get("done"):
                try:
                    line = await asyncio.wait_for(reader.readline(), args.close_idle / 1000)
                except asyncio.TimeoutError:
                    close()
                    break
            else:
                line = await reader.readline()
            if not line:
                break
            conn["cmds"].append(line.decode("utf-8", "replace").rstrip("\r\n"))
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode("ascii", "replace")
            stage = {"MAIL": "MAIL", "RCPT": "RCPT"}.get(verb, verb)
            if stage in args.close:
                close()
                break
            if verb in ("EHLO", "HELO"):
                txn = None
                default = "250 sink.test"
                if verb == "EHLO":
                    ext = ["PIPELINING", "SIZE %d" % args.size if args.size else "SIZE",
                           "8BITMIME", "ENHANCEDSTATUSCODES"]
                    if args.dsn:
                        ext.append("DSN")
                    if args.smtputf8:
                        ext.append("SMTPUTF8")
                    if sslctx and not tls_on:
                        ext.append("STARTTLS")
                    ext = [e for e in ext if e.split()[0] not in args.hide]
                    lines = ["sink.test Hello"] + ext
                    default = "\r\n".join(
                        "250%s%s" % ("-" if i < len(lines) - 1 else " ", l)
                        for i, l in enumerate(lines))
                send(reply_for(verb, line, default))
            elif verb == "STARTTLS":
                rep = reply_for("STARTTLS", line, "220 2.0.0 Ready to start TLS")
                send(rep)
                await flush()
                if rep.startswith("220") and sslctx and not tls_on:
                    await writer.start_tls(sslctx)
                    tls_on = True
                    so = writer.get_extra_info("ssl_object")
                    conn["tls"] = so.version() if so else "?"
            elif verb == "MAIL":
                if args.close_mail and len(conn["txns"]) + 1 == args.close_mail:
                    close()
                    break
                txn = {"mail": line.decode("utf-8", "replace").rstrip("\r\n"),
                       "rcpt": [], "accepted": [], "pipelined": []}
                conn["txns"].append(txn)
                rep = reply_for("MAIL", line, "250 2.1.0 Ok")
                if not rep.startswith("2"):
                    txn["mail_failed"] = True
                await asyncio.sleep(args.delay_mail / 1000)
                buf = bytes(reader._buffer)  # what the client sent ahead
                txn["pipelined"] = [l.decode("utf-8", "replace") for l in buf.split(b"\r\n") if l]
                send(rep)
            elif verb == "RCPT":
                rl = line.decode("utf-8", "replace").rstrip("\r\n")
                if txn is None or txn.get("mail_failed"):
                    send("503 5.5.1 Error: need MAIL command")
                    continue
                txn["rcpt"].append(rl)
                rep = reply_for("RCPT", line, "250 2.1.5 Ok")
                if rep.startswith("2"):
                    txn["accepted"].append(rl)
                send(rep)
            elif verb == "DATA":
                if txn is None or not txn["accepted"]:
                    send("554 5.5.1 Error: no valid recipients")
                    continue
                rep = reply_for("DATA", line, "354 End data with <CR><LF>.<CR><LF>")
                send(rep)
                if not rep.startswith("354"):
                    continue
                await flush()
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
                    if "BODY" in args.close:
                        close()
                        closed = True
                        break
                txn["raw"] = b64(bytes(raw))
                txn["data"] = b64(bytes(data))
                if closed:
                    txn["incomplete"] = True
                    break
                if "DOT" in args.close:
                    close()
                    break
                send(reply_for("DOT", line, "250 2.0.0 Ok: queued as SINK%d" % len(conn["txns"])))
                txn["done"] = True
            elif verb == "RSET":
                txn = None
                send("250 2.0.0 Ok")
            elif verb == "NOOP":
                send("250 2.0.0 Ok")
            elif verb == "QUIT":
                send("221 2.0.0 Bye")
                await flush()
                break
            else:
                send("502 5.5.2 Error: command not recognized")
            await flush()
    except (ConnectionError, ssl.SSLError) as e:
        conn["error"] = str(e)
    finally:
        with open(args.record, "a") as f:
            f.write(json.dumps(conn) + "\n")
        try:
            writer.close()
        except Exception:
            pass


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", args.port)
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("ready\n")
    async with srv:
        await srv.serve_forever()


try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(0)
