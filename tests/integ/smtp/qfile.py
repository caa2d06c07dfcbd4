#!/usr/bin/python3
"""qfile.py - read Signet queue files (format version 1, queue/queue.h).

usage:
  qfile.py check FILE...        exit 0 if every file is complete and intact
                                (magic, version, framing, final X record whose
                                SHA-256 covers every byte before it); one line
                                per bad file on stdout
  qfile.py message FILE         the message as it would be sent: the S record
                                text, then the M bytes, on stdout
  qfile.py envelope FILE        the E record text on stdout
  qfile.py sig FILE             the S record text (empty if unsigned)
  qfile.py json FILE...         one JSON object per file: id, ok, error,
                                envelope (list of [key, value]), sender,
                                rcpts, sig, size, message_sha256, message_ids
  qfile.py export DIR OUTDIR    write OUTDIR/<ID>.eml (message) for every
                                intact file of DIR; print "ID ok|bad REASON"

Queue file: "SIGNETQ\\0" u32le version, then records u8 type, u32le length,
payload: 'E' envelope ("key value\\n" lines), 'M' message bytes (any number),
'S' DKIM-Signature field(s), 'X' 32-byte SHA-256 of the file before the X
record, which must end the file.
"""
import hashlib
import json
import os
import re
import struct
import sys

MAGIC = b"SIGNETQ\0"
VERSION = 1


class Bad(Exception):
    pass


def parse(path):
    """Return dict(env=bytes, msg=[bytes], sig=bytes|None) or raise Bad."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:8] != MAGIC:
        raise Bad("bad magic")
    (ver,) = struct.unpack_from("<I", data, 8)
    if ver != VERSION:
        raise Bad("version %d" % ver)
    pos = 12
    env = None
    msg = []
    sig = None
    end = False
    order = []
    while pos < len(data):
        if end:
            # delivery state: checksummed 'R' records may follow X
            # (queue.h); a torn last one is ignored
            if data[pos:pos + 1] != b"R" or pos + 5 > len(data):
                raise Bad("bytes after the X record")
            (ln,) = struct.unpack_from("<I", data, pos + 1)
            if pos + 5 + ln > len(data):
                break
            if ln < 8 or hashlib.sha256(data[pos:pos + 5 + ln - 8]).digest()[:8] != data[pos + 5 + ln - 8:pos + 5 + ln]:
                if pos + 5 + ln == len(data):
                    break
                raise Bad("bad R record at %d" % pos)
            pos += 5 + ln
            continue
        if pos + 5 > len(data):
            raise Bad("truncated record header at %d" % pos)
        t = data[pos:pos + 1]
        (ln,) = struct.unpack_from("<I", data, pos + 1)
        body = data[pos + 5:pos + 5 + ln]
        if len(body) != ln:
            raise Bad("truncated %r record at %d (%d of %d bytes)" % (t, pos, len(body), ln))
        order.append(t)
        if t == b"E":
            if env is not None:
                raise Bad("two E records")
            env = body
        elif t == b"M":
            msg.append(body)
        elif t == b"S":
            sig = (sig or b"") + body
        elif t == b"X":
            if ln != 32:
                raise Bad("X record of %d bytes" % ln)
            if hashlib.sha256(data[:pos]).digest() != body:
                raise Bad("checksum mismatch")
            end = True
        else:
            raise Bad("unknown record type %r at %d" % (t, pos))
        pos += 5 + ln
    if not end:
        raise Bad("no X record (incomplete)")
    if env is None:
        raise Bad("no E record")
    if order[0] != b"E":
        raise Bad("first record is %r, not E" % order[0])
    return {"env": env, "msg": msg, "sig": sig}


def env_pairs(env):
    out = []
    for line in env.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        k, _, v = line.partition(" ")
        out.append([k, v])
    return out


SENDER_KEYS = ("from", "mail_from", "mailfrom", "sender", "return_path", "mail")
RCPT_KEYS = ("rcpt", "to", "recipient", "rcpt_to")


def strip_brackets(v):
    v = v.strip()
    # "addr NOTIFY=..." or "<addr>": keep the address only
    v = v.split(" ")[0]
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    return v


def info(path):
    d = {"file": path, "id": os.path.basename(path), "ok": False, "error": None}
    try:
        q = parse(path)
    except (Bad, OSError) as e:
        d["error"] = str(e)
        return d, None
    pairs = env_pairs(q["env"])
    d["ok"] = True
    d["envelope"] = pairs
    senders = [strip_brackets(v) for k, v in pairs if k.lower() in SENDER_KEYS]
    d["sender"] = senders[0] if senders else None
    d["rcpts"] = [strip_brackets(v) for k, v in pairs if k.lower() in RCPT_KEYS]
    m = b"".join(q["msg"])
    d["size"] = len(m)
    d["message_sha256"] = hashlib.sha256(m).hexdigest()
    d["sig"] = (q["sig"] or b"").decode("utf-8", "replace")
    hdr = m.split(b"\r\n\r\n", 1)[0]
    d["message_ids"] = [x.decode("utf-8", "replace") for x in
                        re.findall(rb"(?im)^message-id:[ \t]*(?:\r\n[ \t]+)?(<[^>\r\n]*>)", hdr)]
    return d, q


def message_bytes(q):
    return (q["sig"] or b"") + b"".join(q["msg"])


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "check":
        ok = True
        for p in args:
            try:
                parse(p)
            except (Bad, OSError) as e:
                print("bad %s: %s" % (p, e))
                ok = False
        return 0 if ok else 1
    if cmd in ("message", "envelope", "sig"):
        try:
            q = parse(args[0])
        except (Bad, OSError) as e:
            print("qfile.py: %s: %s" % (args[0], e), file=sys.stderr)
            return 1
        out = {"message": message_bytes(q), "envelope": q["env"], "sig": q["sig"] or b""}[cmd]
        sys.stdout.buffer.write(out)
        return 0
    if cmd == "json":
        for p in args:
            d, _ = info(p)
            print(json.dumps(d))
        return 0
    if cmd == "export":
        src, dst = args[0], args[1]
        os.makedirs(dst, exist_ok=True)
        ok = True
        for name in sorted(os.listdir(src)):
            p = os.path.join(src, name)
            try:
                q = parse(p)
            except (Bad, OSError) as e:
                print("%s bad %s" % (name, e))
                ok = False
                continue
            with open(os.path.join(dst, name + ".eml"), "wb") as f:
                f.write(message_bytes(q))
            print("%s ok" % name)
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
