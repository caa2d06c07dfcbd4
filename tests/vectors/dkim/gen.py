#!/usr/bin/python3
# gen.py - (re)make the golden canonicalization vectors with dkimpy, an
# independent implementation: each body-*.in gets body-*.simple.ref and
# body-*.relaxed.ref, each hdr-*.in (one field, no final CRLF) gets
# hdr-*.relaxed.ref.  Run from this directory; commit the results.
import glob
from dkim.canonicalization import Simple, Relaxed

BODIES = {
    "empty": b"",
    "crlf": b"\r\n",
    "crlf3": b"\r\n\r\n\r\n",
    "noeol": b"abc",
    "noeol-wsp": b"abc  \t",
    "trail-wsp": b"abc \t \r\ndef\t\r\n",
    "wsp-runs": b"a  b\t\tc \t d\r\n",
    "lead-wsp": b" leading\r\n\t\ttabbed\r\n",
    "wsp-only-lines": b"   \r\n\t\r\n",
    "wsp-line-middle": b"a\r\n \t \r\nb\r\n",
    "empty-end": b"text\r\n\r\n\r\n\r\n",
    "empty-end-wsp": b"text\r\n\r\n \r\n\t\r\n",
    "empty-middle": b"a\r\n\r\n\r\nb\r\n",
    "noeol-after-empty": b"a\r\n\r\nb",
    "unterminated-wsp-line": b"a\r\n\r\n  ",
    "bare-cr": b"a\rb\r\n",
    "bare-lf": b"a\nb\r\n",
    "cr-cr-lf": b"a \r\r\n",
    "trailing-cr": b"a\r\n\r",
    "dots": b".\r\n..leading dots\r\n",
    "utf8": "gr\u00fc\u00dfe  \u00e0 tous \r\n".encode("utf-8"),
    "long": b"x" * 990 + b"\r\n",
}

HEADERS = {
    "simple": b"Subject: hello",
    "case": b"SuBjEcT: Hello World",
    "folded": b"Subject: a\r\n\tfolded\r\n  header  ",
    "wsp-colon": b"Subject \t: \t value",
    "nospace": b"To:a@example.com",
    "empty-value": b"X-Empty:",
    "wsp-runs": b"X-Runs: a \t b  \t\t c",
    "colons": b"h: from : to :\r\n subject:date",
}

for name, body in BODIES.items():
    open("body-%s.in" % name, "wb").write(body)
    open("body-%s.simple.ref" % name, "wb").write(Simple.canonicalize_body(body))
    open("body-%s.relaxed.ref" % name, "wb").write(Relaxed.canonicalize_body(body))

for name, field in HEADERS.items():
    open("hdr-%s.in" % name, "wb").write(field)
    n, v = field.split(b":", 1)
    (cn, cv), = Relaxed.canonicalize_headers([(n, v)])
    open("hdr-%s.relaxed.ref" % name, "wb").write(cn + b":" + cv.rstrip(b"\r\n"))
