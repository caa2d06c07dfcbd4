#!/usr/bin/python3
"""dkimdns.py - verify DKIM signatures with dkimpy, keys fetched through real
DNS (a recursive resolver on loopback, e.g. the scenario's unbound).

usage: dkimdns.py --dns ADDR:PORT [--expect-fail] [--want-d D] [--want-s S]
                  [--nsigs N] FILE...

The TXT lookup asks ADDR:PORT (dnspython, recursion desired, no system
configuration) and follows CNAMEs through it.  Prints one line per
signature:  pass|fail FILE d=... s=... reason
Exit 0 only if every FILE has N signatures (default 1) and, for each,
every signature passes (with --expect-fail: none passes) and carries
d=D / s=S when given (case-insensitive).  Exit 1 otherwise, 2 on usage.
"""
import logging
import sys

import dkim
import dns.exception
import dns.rdatatype
import dns.resolver
from dkim.util import parse_tag_value


class Grab(logging.Handler):
    def __init__(self):
        super().__init__()
        self.msgs = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def resolver_for(spec):
    host, _, port = spec.rpartition(":")
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host.strip("[]")]
    r.port = int(port)
    r.timeout = 3
    r.lifetime = 6
    r.cache = None
    return r


def main(argv):
    dnsspec = None
    expect_fail = False
    want_d = want_s = None
    nsigs = 1
    files = []
    i = 0
    try:
        while i < len(argv):
            a = argv[i]
            if a == "--dns":
                dnsspec = argv[i + 1]
                i += 1
            elif a == "--want-d":
                want_d = argv[i + 1].lower()
                i += 1
            elif a == "--want-s":
                want_s = argv[i + 1].lower()
                i += 1
            elif a == "--nsigs":
                nsigs = int(argv[i + 1])
                i += 1
            elif a == "--expect-fail":
                expect_fail = True
            else:
                files.append(a)
            i += 1
    except (IndexError, ValueError):
        dnsspec = None
    if dnsspec is None or not files:
        print(__doc__, file=sys.stderr)
        return 2
    res = resolver_for(dnsspec)
    lookups = []

    def dnsfunc(name, timeout=5):
        n = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            ans = res.resolve(n, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            lookups.append("%s NXDOMAIN" % n)
            return None
        except dns.exception.DNSException as e:
            lookups.append("%s error %s" % (n, e.__class__.__name__))
            return None
        chain = []
        for rrset in ans.response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME:
                chain.append(str(rrset[0].target))
        txt = None
        for rrset in ans.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                txt = b"".join(rrset[0].strings)
                break
        lookups.append("%s%s %s" % (n, "".join(" -> " + c for c in chain),
                                    "TXT" if txt is not None else "NODATA"))
        return txt

    ok = True
    for path in files:
        with open(path, "rb") as f:
            msg = f.read()
        d = dkim.DKIM(msg, logger=logging.getLogger("dkimdns"))
        grab = Grab()
        d.logger.addHandler(grab)
        d.logger.setLevel(logging.DEBUG)
        sigs = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
        if len(sigs) != nsigs:
            print("fail %s %d DKIM-Signature fields, wanted %d" % (path, len(sigs), nsigs))
            ok = False
            continue
        for idx, raw in enumerate(sigs):
            try:
                tags = parse_tag_value(raw)
            except Exception:
                tags = {}
            sd = tags.get(b"d", b"?").decode("ascii", "replace")
            ss = tags.get(b"s", b"?").decode("ascii", "replace")
            grab.msgs.clear()
            del lookups[:]
            try:
                good = d.verify(idx=idx, dnsfunc=dnsfunc)
            except Exception as e:  # dkimpy raises on malformed input
                good = False
                grab.msgs.append("exception %r" % (e,))
            why = "; ".join(grab.msgs[-2:] + lookups)[:600]
            print("%s %s d=%s s=%s %s" % ("pass" if good else "fail", path, sd, ss, why))
            if expect_fail:
                if good:
                    ok = False
            elif not good:
                ok = False
            if want_d is not None and sd.lower() != want_d:
                print("  wrong d=: %s, wanted %s" % (sd, want_d))
                ok = False
            if want_s is not None and ss.lower() != want_s:
                print("  wrong s=: %s, wanted %s" % (ss, want_s))
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
