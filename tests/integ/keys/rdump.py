#!/usr/bin/python3
"""rdump.py - dump everything in a Redis database, as plain lines, with a
minimal RESP client (no redis module needed).

usage: rdump.py HOST:PORT [DB]
       rdump.py HOST:PORT DB audit

dump: one line per stored value:  KEY<TAB>TYPE<TAB>FIELD<TAB>VALUE
(FIELD is the hash field, the list index, "-" for strings and set members),
values with non-printable bytes shown with python escapes.  SCAN is used,
as `redis-cli --scan` does.

audit: the dump, then checks that no private key is stored in the clear:
no value contains "PRIVATE KEY" or "BEGIN"; every field named sN.priv
starts with "gcm1:"; no value other than an sN.pubkey field starts with
"MII" (base64 DER) or holds a run of 200+ base64 characters outside the
gcm1 envelope or a p= tag.  Prints "audit: ok N keys M values" or one
"audit: BAD ..." line per problem (exit 1).
"""
import re
import socket
import sys


class Resp:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port), timeout=10)
        self.f = self.s.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        if not line:
            raise EOFError("connection closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)


def show(b):
    s = b.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def dump(r):
    rows = []
    cursor = b"0"
    keys = []
    while True:
        cursor, batch = r.cmd("SCAN", cursor, "COUNT", "1000")
        keys.extend(batch)
        if cursor == b"0":
            break
    for k in sorted(set(keys)):
        t = r.cmd("TYPE", k).decode()
        if t == "string":
            rows.append((k, t, b"-", r.cmd("GET", k)))
        elif t == "hash":
            h = r.cmd("HGETALL", k)
            for i in range(0, len(h), 2):
                rows.append((k, t, h[i], h[i + 1]))
        elif t == "list":
            for i, v in enumerate(r.cmd("LRANGE", k, "0", "-1")):
                rows.append((k, t, str(i).encode(), v))
        elif t == "set":
            for v in sorted(r.cmd("SMEMBERS", k)):
                rows.append((k, t, b"-", v))
        elif t == "zset":
            z = r.cmd("ZRANGE", k, "0", "-1", "WITHSCORES")
            for i in range(0, len(z), 2):
                rows.append((k, t, z[i + 1], z[i]))
        elif t == "none":
            continue  # expired meanwhile
        else:
            rows.append((k, t, b"-", b"(type not dumped)"))
    return rows


B64RUN = re.compile(rb"[A-Za-z0-9+/]{200,}")


def audit(rows):
    bad = []
    keys = set()
    for k, t, f, v in rows:
        keys.add(k)
        where = "%s %s %s" % (show(k), t, show(f))
        if v is None:
            continue
        if b"PRIVATE KEY" in v or b"BEGIN" in v:
            bad.append("%s: PEM marker in value" % where)
        fname = f.decode("utf-8", "replace")
        if re.fullmatch(r"s[0-9]+\.priv", fname):
            if not v.startswith(b"gcm1:"):
                bad.append("%s: private key not in a gcm1: envelope: %s..." % (where, show(v[:12])))
            continue
        if re.fullmatch(r"s[0-9]+\.pubkey", fname):
            continue
        if v.startswith(b"MII"):
            bad.append("%s: value starts with MII (base64 DER)" % where)
        # a long base64 run is a key; allowed only as the p= of a TXT record
        # (or inside a gcm1: envelope, wherever one is kept)
        if v.startswith(b"gcm1:"):
            continue
        for m in B64RUN.finditer(v):
            pre = v[max(0, m.start() - 2):m.start()]
            if pre != b"p=":
                bad.append("%s: %d base64 characters in the clear" % (where, m.end() - m.start()))
                break
    return keys, bad


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    host, _, port = argv[0].rpartition(":")
    db = argv[1] if len(argv) > 1 else "0"
    r = Resp(host, int(port))
    r.cmd("SELECT", db)
    rows = dump(r)
    for k, t, f, v in rows:
        print("%s\t%s\t%s\t%s" % (show(k), t, show(f), show(v) if v is not None else "(nil)"))
    if len(argv) > 2 and argv[2] == "audit":
        keys, bad = audit(rows)
        for b in bad:
            print("audit: BAD " + b)
        if bad:
            return 1
        print("audit: ok %d keys %d values" % (len(keys), len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
