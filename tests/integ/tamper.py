#!/usr/bin/python3
"""tamper.py - make broken copies of signed messages.

usage: tamper.py OUTDIR FILE...

For each FILE (a message whose first field is the DKIM-Signature to break)
writes into OUTDIR:
  NAME.hdr.eml    one non-space character of the (signed) From value changed
  NAME.body.eml   one body byte changed (a byte added if the body has none
                  that matters to relaxed canonicalization)
  NAME.from2.eml  a second From field added above the signed one
and prints the paths written.  Exit 1 if a copy came out identical.
"""
import os
import re
import sys


def split(msg):
    i = msg.find(b"\r\n\r\n")
    if i < 0:
        return msg, None
    return msg[:i + 2], msg[i + 4:]


def join(head, body):
    return head + b"\r\n" + body if body is not None else head


def from_field_span(head):
    """(start, end) of the first From field's value's first line."""
    m = re.search(rb"(?im)^from[ \t]*:", head)
    if not m:
        raise SystemExit("no From field")
    end = head.index(b"\r\n", m.end())
    return m.end(), end


def main(argv):
    outdir, files = argv[0], argv[1:]
    bad = 0
    for path in files:
        msg = open(path, "rb").read()
        msg = re.sub(rb"\r?\n", b"\r\n", msg)
        name = os.path.splitext(os.path.basename(path))[0]
        head, body = split(msg)
        out = {}

        # Header: change a non-space character of the From value (first line,
        # or the first continuation line if the first line's value is empty).
        s, e = from_field_span(head)
        seg = head[s:e]
        if not seg.strip():
            s = e + 2
            e = head.index(b"\r\n", s)
            seg = head[s:e]
        j = max(k for k, c in enumerate(seg) if c not in b" \t")
        c = seg[j:j + 1]
        repl = b"Q" if c != b"Q" else b"R"
        out["hdr"] = head[:s] + seg[:j] + repl + seg[j + 1:] + head[e:]
        out["hdr"] = join(out["hdr"], body)

        # Body: change one byte that is not whitespace, in the middle.
        b = body or b""
        idx = [k for k, ch in enumerate(b) if ch not in b" \t\r\n"]
        if idx:
            k = idx[len(idx) // 2]
            nb = b[:k] + (b"x" if b[k:k + 1] != b"x" else b"y") + b[k + 1:]
        else:
            nb = b"x" + b
        out["body"] = join(head, nb) if body is not None else head + b"\r\n" + nb + b"\r\n"

        # A second From above the signed one.
        fs = re.search(rb"(?im)^from[ \t]*:", head).start()
        out["from2"] = join(head[:fs] + b"From: Mallory <mallory@evil.example>\r\n" + head[fs:], body)

        for kind, data in out.items():
            if data == msg:
                print("tamper.py: %s: %s copy unchanged" % (path, kind), file=sys.stderr)
                bad = 1
            p = os.path.join(outdir, "%s.%s.eml" % (name, kind))
            with open(p, "wb") as f:
                f.write(data)
            print(p)
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
