#!/usr/bin/python3
"""dkimpy-verify.py - verify every DKIM signature of messages with dkimpy,
keys taken offline from a directory.

usage: dkimpy-verify.py --keys DIR [--expect-fail] FILE...

DIR holds <selector>._domainkey.<domain>.txt files with the TXT text.
Prints one line per signature:  pass|fail FILE d=... s=... a=... reason
Exit 0 only if every FILE has at least one signature and all pass; with
--expect-fail, only if every FILE has at least one signature and none passes.
Run with the Debian /usr/bin/python3 (python3-dkim, python3-nacl).
"""
import logging
import os
import sys

import dkim
from dkim.util import parse_tag_value


class Grab(logging.Handler):
    def __init__(self):
        super().__init__()
        self.msgs = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def main(argv):
    keys = None
    expect_fail = False
    files = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--keys":
            keys = argv[i + 1]
            i += 2
            continue
        if a == "--expect-fail":
            expect_fail = True
        else:
            files.append(a)
        i += 1
    if keys is None or not files:
        print(__doc__, file=sys.stderr)
        return 2

    def dnsfunc(name, timeout=5):
        n = name.decode("ascii", "replace").rstrip(".")
        path = os.path.join(keys, n + ".txt")
        try:
            with open(path, "rb") as f:
                return f.read().strip()
        except OSError:
            return None

    ok = True
    for path in files:
        with open(path, "rb") as f:
            msg = f.read()
        grab = Grab()
        log = logging.getLogger("dkimpy-verify")
        log.handlers = [grab]
        log.propagate = False
        log.setLevel(logging.DEBUG)
        try:
            headers, _ = dkim.rfc822_parse(msg)
        except Exception as e:  # noqa: BLE001 - any parse error is a failure
            print("fail %s parse error: %s" % (path, e))
            ok = False
            continue
        sigs = [v for k, v in headers if k.lower() == b"dkim-signature"]
        if not sigs:
            print("fail %s no DKIM-Signature" % path)
            ok = False
            continue
        npass = 0
        for idx, raw in enumerate(sigs):
            try:
                tags = parse_tag_value(b"".join(raw.split()))
            except Exception:  # noqa: BLE001
                tags = {}
            d = tags.get(b"d", b"?").decode("ascii", "replace")
            s = tags.get(b"s", b"?").decode("ascii", "replace")
            alg = tags.get(b"a", b"?").decode("ascii", "replace")
            grab.msgs = []
            try:
                res = dkim.DKIM(msg, logger=log, minkey=1024).verify(idx=idx, dnsfunc=dnsfunc)
            except Exception as e:  # noqa: BLE001
                res = False
                grab.msgs.append("%s: %s" % (type(e).__name__, e))
            if res:
                npass += 1
                print("pass %s d=%s s=%s a=%s ok" % (path, d, s, alg))
            else:
                why = [m for m in grab.msgs if m] or ["verification failed"]
                print("fail %s d=%s s=%s a=%s %s" % (path, d, s, alg,
                      " | ".join(why[-2:]).replace("\n", " ")[:300]))
        if expect_fail:
            ok = ok and npass == 0
        else:
            ok = ok and npass == len(sigs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
