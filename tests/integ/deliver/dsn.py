#!/usr/bin/python3
"""dsn.py - describe a delivery status notification (RFC 3464).

    dsn.py FILE

Prints, one per line:
    type TYPE REPORT-TYPE          the top-level Content-Type and report-type
    part N TYPE                    each MIME part's type
    rcpt ADDR action=A status=S    per recipient of the message/delivery-status part
    envid ENVID                    Original-Envelope-Id, when present
    orcpt ADDR                     Original-Recipient, when present
Exit 1 if the file is not a multipart/report.
"""
import email
import email.policy
import sys

m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.compat32)
print("type %s %s" % (m.get_content_type(), m.get_param("report-type")))
if m.get_content_type() != "multipart/report":
    sys.exit(1)
for i, p in enumerate(m.get_payload()):
    print("part %d %s" % (i, p.get_content_type()))
    if p.get_content_type() == "message/delivery-status":
        blocks = p.get_payload()
        for b in blocks:
            if b.get("Original-Envelope-Id"):
                print("envid %s" % b.get("Original-Envelope-Id").strip())
            fr = b.get("Final-Recipient")
            if fr:
                addr = fr.split(";", 1)[-1].strip()
                print("rcpt %s action=%s status=%s" % (addr, (b.get("Action") or "").strip(),
                                                     (b.get("Status") or "").strip()))
            orc = b.get("Original-Recipient")
            if orc:
                print("orcpt %s" % orc.split(";", 1)[-1].strip())
