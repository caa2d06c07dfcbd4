#!/usr/bin/python3
"""rec.py - query the records of dsink.py (one JSON line per transaction).

    rec.py FILE... count [--all] [--from RE] [--to ADDR]
        transactions that got a 2xx to the final dot (--all: every one);
        --from: the MAIL line matches RE; --to: ADDR among the accepted
    rec.py FILE... rcpts            "ADDR N": times each address was in an
                                    accepted (2xx) transaction
    rec.py FILE... msgids           the Message-ID of each 2xx transaction
    rec.py FILE... data K OUT [--from RE] [--to ADDR]
                                    the message of the K-th (0-based; -1 the
                                    last) matching 2xx transaction into OUT
    rec.py FILE... show [--from RE] [--to ADDR]
                                    matching 2xx transactions, one summary line each
Missing files count as empty.
"""
import base64
import json
import re
import sys


def load(files):
    out = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line:
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            pass  # a line cut by a kill
        except FileNotFoundError:
            pass
    out.sort(key=lambda r: r.get("t", 0))
    return out


def main():
    argv = sys.argv[1:]
    cmds = ("count", "rcpts", "msgids", "data", "show")
    i = next(k for k, a in enumerate(argv) if a in cmds)
    files, cmd, rest = argv[:i], argv[i], argv[i + 1:]
    frm = to = None
    allr = False
    pos = []
    j = 0
    while j < len(rest):
        if rest[j] == "--from":
            frm = rest[j + 1]
            j += 2
        elif rest[j] == "--to":
            to = rest[j + 1].lower()
            j += 2
        elif rest[j] == "--all":
            allr = True
            j += 1
        else:
            pos.append(rest[j])
            j += 1
    recs = load(files)

    def ok(r):
        if not allr and not (r.get("reply") or "").startswith("2"):
            return False
        if frm is not None and not re.search(frm, r.get("mail", "")):
            return False
        if to is not None and to not in [a.lower() for a in r.get("accepted", [])]:
            return False
        return True

    sel = [r for r in recs if ok(r)]
    if cmd == "count":
        print(len(sel))
    elif cmd == "rcpts":
        n = {}
        for r in sel:
            for a in r.get("accepted", []):
                n[a.lower()] = n.get(a.lower(), 0) + 1
        for a in sorted(n):
            print(a, n[a])
    elif cmd == "msgids":
        for r in sel:
            print(r.get("msgid"))
    elif cmd == "data":
        k = int(pos[0])
        if not sel or k >= len(sel) or k < -len(sel):
            print("no such transaction (%d matching)" % len(sel), file=sys.stderr)
            return 1
        with open(pos[1], "wb") as f:
            f.write(base64.b64decode(sel[k]["data"]))
    elif cmd == "show":
        for r in sel:
            print("conn=%s addr=%s tls=%s mail=%s accepted=%s msgid=%s reply=%s" % (
                r.get("conn"), r.get("addr"), r.get("tls"), r.get("mail"),
                ",".join(r.get("accepted", [])), r.get("msgid"), r.get("reply")))
    return 0


sys.exit(main())
