#!/usr/bin/python3
"""dq.py - one DNS query with dnspython, the answer as JSON (for asserts).

usage: dq.py ADDR:PORT NAME TYPE [--tcp] [--noedns | --bufsize N] [--rd]

Sends one query (RD clear unless --rd) over UDP, or TCP with --tcp; with
EDNS0 (payload --bufsize, default 1232) unless --noedns.  Prints one JSON
object: rcode (text), flags (list: qr aa tc rd ra ...), qname (as echoed),
answer / authority / additional: lists of {name, ttl, type, data}, and
for TXT data also strings (the character-strings, decoded) and lens (their
lengths), size (the response's wire length).  Exit 0 when an answer
arrived, 1 on timeout or a malformed response, 2 on usage.
"""
import json
import sys

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


def rrs(section):
    out = []
    for rrset in section:
        for rd in rrset:
            e = {"name": str(rrset.name), "ttl": rrset.ttl,
                 "type": dns.rdatatype.to_text(rrset.rdtype), "data": rd.to_text()}
            if rrset.rdtype == dns.rdatatype.TXT:
                e["strings"] = [s.decode("latin-1") for s in rd.strings]
                e["lens"] = [len(s) for s in rd.strings]
                e["text"] = "".join(e["strings"])
            out.append(e)
    return out


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, _, port = argv[0].rpartition(":")
    name, rtype = argv[1], argv[2]
    tcp = "--tcp" in argv
    edns = 0
    bufsize = 1232
    if "--noedns" in argv:
        edns = -1
    if "--bufsize" in argv:
        bufsize = int(argv[argv.index("--bufsize") + 1])
    q = dns.message.make_query(name, rtype, use_edns=edns, payload=bufsize)
    if "--rd" not in argv:
        q.flags &= ~dns.flags.RD
    try:
        if tcp:
            r = dns.query.tcp(q, host, port=int(port), timeout=3)
        else:
            r = dns.query.udp(q, host, port=int(port), timeout=3, ignore_trailing=False)
    except Exception as e:
        print(json.dumps({"error": "%s: %s" % (e.__class__.__name__, e)}))
        return 1
    flags = dns.flags.to_text(r.flags).lower().split()
    print(json.dumps({
        "rcode": dns.rcode.to_text(r.rcode()),
        "flags": flags,
        "qname": str(r.question[0].name) if r.question else None,
        "answer": rrs(r.answer),
        "authority": rrs(r.authority),
        "additional": rrs(r.additional),
        "size": len(r.to_wire()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
