#!/usr/bin/python3
"""send.py - submit one message to Signet ($PORT) with DSN parameters.

    send.py --from ADDR [--mail-opt OPT]... --rcpt ADDR[,OPT...]...
            [--msgid ID] [--subject S] [--body TEXT]

--from '' is the null sender.  --rcpt "x@y,NOTIFY=NEVER" gives RCPT
parameters.  Prints the queue id of the "250 ... queued as ID" reply; exits
1 (with the reply) on anything but 250 to MAIL, each RCPT and the data.
"""
import argparse
import os
import smtplib
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--from", dest="frm", required=True)
ap.add_argument("--mail-opt", action="append", default=[])
ap.add_argument("--rcpt", action="append", required=True)
ap.add_argument("--msgid")
ap.add_argument("--subject", default="delivery test")
ap.add_argument("--body", default="Hello from send.py.\r\nSecond line.\r\n")
ap.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
a = ap.parse_args()

msgid = a.msgid or "<%d.%f@send.py>" % (os.getpid(), time.time())
hdr_from = a.frm or "mailer-daemon@signed.example"
msg = ("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: %s\r\n\r\n%s" % (
    hdr_from, ", ".join("<%s>" % r.split(",")[0] for r in a.rcpt), a.subject,
    time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()), msgid,
    a.body.replace("\\n", "\n").replace("\r\n", "\n").replace("\n", "\r\n"))).encode()

s = smtplib.SMTP("127.0.0.1", a.port, timeout=20)
s.ehlo("client.test")
code, text = s.mail(a.frm, a.mail_opt)
if code != 250:
    sys.exit("MAIL: %d %s" % (code, text))
for r in a.rcpt:
    parts = r.split(",")
    code, text = s.rcpt(parts[0], parts[1:])
    if code != 250:
        sys.exit("RCPT %s: %d %s" % (parts[0], code, text))
code, text = s.data(msg)
if code != 250:
    sys.exit("DATA: %d %s" % (code, text))
text = text.decode()
s.quit()
qid = text.rsplit(" ", 1)[-1]
print(qid)
