#!/bin/bash
# smtp-limits: each limit answers clearly and leaves the session usable (or
# closes it with 421): message size (SIZE= at MAIL and the real size of DATA
# and BDAT, 552 5.3.4), recipients per message (452 4.5.3, the message goes
# to the first ones), command lines over 512 octets (500 5.5.2), text lines
# over 1000 octets, connections per client and in total (421), too many
# errors (421), smtpd_timeout and smtpd_data_timeout (421 4.4.2, no partial
# queue file), and smtpd_idle_timeout for sessions that talk without
# progress (NOOPs, a command line trickled byte by byte).
. "$(dirname "$0")/lib_smtp.sh"
need_dkimpy
need_maildkim

smtp_setup
smtp_conf "$T/signet.conf" "message_size_limit = 20000" "smtpd_recipient_limit = 3" \
	"smtpd_client_connection_count_limit = 3" "max_connections = 5"
signet_start "$T/signet.conf"

smtp_py <<'EOF' || fail "limits dialogue (see above)"
import os, time, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])
T = os.environ["T"]
ids = []

def body(n, line=76):
    """about n bytes of body in lines of `line` octets (CRLF included)"""
    out = []
    i = 0
    while sum(len(x) for x in out) < n:
        s = b"%06d " % i
        out.append(s + b"x" * (line - len(s) - 2) + b"\r\n")
        i += 1
    return b"".join(out)

def run():
    c = smtpt.Conn(port, name="size")
    c.expect_greeting()
    r = c.ehlo()
    check(r.params("SIZE") == ["20000"], "EHLO SIZE is %r, wanted 20000" % r.params("SIZE"), c)
    c.expect("MAIL FROM:<a@signed.example> SIZE=30000", 552, "5.3.4")
    c.expect("MAIL FROM:<a@signed.example> SIZE=20000", 250, "2.1.0")
    c.expect("RSET", 250)
    # actual size over the limit: DATA
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.expect("DATA", 354)
    c.send(smtpt.dot_stuff(smtpt.make_message(frm="a@signed.example", body=body(30000))) + b".\r\n")
    c.expect_reply(552, "5.3.4", "end of a 30 KB DATA")
    c.expect("NOOP", 250)
    # a message under the limit still goes through
    r = c.mail_transaction("a@signed.example", ["r@rcpt.example"],
                           smtpt.make_message(frm="a@signed.example", body=body(15000)))
    ids.append(smtpt.queue_id(r))
    # actual size over the limit: BDAT (the whole chunk is read and dropped)
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    m = smtpt.make_message(frm="a@signed.example", body=body(30000))
    c.send(b"BDAT %d LAST\r\n" % len(m) + m)
    c.expect_reply(552, "5.3.4", "BDAT of 30 KB")
    c.expect("RSET", 250)
    c.expect("NOOP", 250)
    # several BDAT chunks adding up to more than the limit
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    w = b""
    for i in range(3):
        w += b"BDAT 9000\r\n" + m[i * 9000:(i + 1) * 9000]
    w += b"BDAT 0 LAST\r\n"
    c.send(w)
    rs = c.replies(4, timeout=5)
    check(len(rs) == 4, "4 replies wanted to 4 BDATs", c)
    check(any(r.code == 552 and r.enh == "5.3.4" for r in rs), "no 552 5.3.4 for 27000 bytes of BDAT", c)
    check(not any(smtpt.queue_id(r) for r in rs), "an over-size BDAT message was queued", c)
    c.expect("RSET", 250)
    c.expect("QUIT", 221)
    c.close()

    # recipients
    c = smtpt.Conn(port, name="recipients")
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<a@signed.example>", 250)
    for i in range(1, 4):
        c.expect("RCPT TO:<r%d@rcpt.example>" % i, 250, "2.1.5")
    c.expect("RCPT TO:<r4@rcpt.example>", 452, "4.5.3")
    c.expect("RCPT TO:<r5@rcpt.example>", 452, "4.5.3")
    c.expect("DATA", 354)
    c.send(smtpt.dot_stuff(smtpt.make_message(frm="a@signed.example")) + b".\r\n")
    r = c.expect_reply(250, "2.0.0", "end of DATA")
    ids.append(smtpt.queue_id(r))
    open(os.path.join(T, "rcpt.qid"), "w").write(smtpt.queue_id(r))

    # command line length: 512 octets with CRLF is fine, 513 is not
    c.expect("NOOP " + "a" * (512 - 7), 250, "2.0.0")
    c.expect("NOOP " + "a" * (513 - 7), 500, "5.5.2")
    c.expect("NOOP", 250, "2.0.0")
    c.expect("MAIL FROM:<" + "a" * 2000 + "@signed.example>", 500, "5.5.2")
    c.expect("NOOP", 250, "2.0.0")
    # a 200 KB line: refused, not buffered, the session stays in sync
    c.send(b"NOOP " + b"b" * 200000 + b"\r\n")
    c.expect_reply(500, "5.5.2", "200 KB command line")
    c.expect("NOOP", 250, "2.0.0")

    # text line length: 1000 octets with CRLF is fine, longer is refused
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.expect("DATA", 354)
    c.send(smtpt.dot_stuff(smtpt.make_message(frm="a@signed.example",
           body=b"y" * 998 + b"\r\nshort\r\n")) + b".\r\n")
    r = c.expect_reply(250, "2.0.0", "a 1000-octet text line")
    ids.append(smtpt.queue_id(r))
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.expect("DATA", 354)
    c.send(smtpt.dot_stuff(smtpt.make_message(frm="a@signed.example",
           body=b"z" * 1200 + b"\r\nshort\r\n")) + b".\r\n")
    r = c.expect_reply("5", "5.", "a 1202-octet text line")
    c.expect("NOOP", 250, "2.0.0")
    c.expect("QUIT", 221)
    c.close()

    # too many errors -> 421, then the connection is closed
    c = smtpt.Conn(port, name="errors")
    c.expect_greeting()
    c.ehlo()
    got = None
    for i in range(150):
        try:
            r = c.cmd("XYZZY%d" % i)
        except OSError:
            r = None
        if r is None or r.code == 421:
            got = (i, r)
            break
        check(r.code in (500, 502), "unknown command: got %r" % r.lines, c)
    check(got is not None, "150 unknown commands and no 421", c)
    check(got[1] is not None and got[1].code == 421 and (got[1].enh or "").startswith("4."),
          "too many errors: closed without a 421 4.x.x", c)
    check(c.wait_eof(5), "not closed after 421", c)
    c.close()

    # connections per client (3) and in total (5); let the server notice
    # that the sessions above are gone first
    time.sleep(0.5)
    held = []
    for i in range(3):
        x = smtpt.Conn(port, name="held-%d" % i)
        x.expect_greeting()
        held.append(x)
    x = smtpt.Conn(port, name="4th-from-127.0.0.1")
    x.expect_reply(421, "4.", "4th connection from one client")
    check(x.wait_eof(5), "4th connection not closed", x)
    x.close()
    for i in range(2):
        x = smtpt.Conn(port, bind="127.0.0.2", name="held-b-%d" % i)
        x.expect_greeting()
        held.append(x)
    x = smtpt.Conn(port, bind="127.0.0.3", name="6th-connection")
    x.expect_reply(421, "4.", "6th connection (max_connections = 5)")
    check(x.wait_eof(5), "6th connection not closed", x)
    x.close()
    # the held ones still work; closing one frees a slot
    for x in held:
        x.expect("NOOP", 250)
    held[0].expect("QUIT", 221)
    held[0].close()
    time.sleep(0.5)
    x = smtpt.Conn(port, name="after-a-quit")
    x.expect_greeting()
    x.expect("QUIT", 221)
    for x in held[1:]:
        x.close()
    open(os.path.join(T, "ids"), "w").write("\n".join(ids) + "\n")

smtpt.main(run)
EOF

n=$(wc -l <"$T/ids")
[ "$n" = 3 ] || fail "wanted 3 queue ids, got $n"
[ "$(spool_count)" = 3 ] || fail "$(spool_count) queue files, wanted 3 (refused messages must leave none)"
while read -r id; do
	expect_signed "$id" 2
done <"$T/ids"
id=$(cat "$T/rcpt.qid")
for r in r1 r2 r3; do envelope_has "$id" "$r@rcpt\.example"; done
qfile envelope "$SPOOL/active/$id" | grep -Eq 'r[45]@rcpt' && fail "a recipient over the limit is in the envelope"
signet_alive
signet_stop

# --- timeouts (a second daemon with smtpd_timeout = 2s) ---------------------------
rm -rf "$SPOOL"
mkdir -p "$SPOOL"
smtp_conf "$T/signet2.conf" "smtpd_timeout = $(secs 2)" "smtpd_data_timeout = $(secs 2)" \
	"smtpd_idle_timeout = $(secs 6)"
signet_start "$T/signet2.conf"
smtp_py <<'EOF' || fail "timeout dialogue (see above)"
import os, time, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])

def idle(c, what):
    t0 = time.monotonic()
    r = c.expect_reply(421, "4.4.2", what, timeout=10)
    dt = time.monotonic() - t0
    check(1.5 <= dt <= 6, "%s: 421 after %.1f s with smtpd_timeout = 2s" % (what, dt), c)
    check(c.wait_eof(5), "%s: not closed after 421" % what, c)
    c.close()

def run():
    c = smtpt.Conn(port, name="idle-after-greeting")
    c.expect_greeting()
    idle(c, "idle after the greeting")
    c = smtpt.Conn(port, name="idle-in-transaction")
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<a@signed.example>", 250)
    idle(c, "idle in a transaction")
    c = smtpt.Conn(port, name="idle-in-data")
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.expect("DATA", 354)
    c.send(smtpt.make_message(frm="a@signed.example", body=b"half a message\r\n" * 500))
    idle(c, "idle in DATA")
    c = smtpt.Conn(port, name="idle-in-bdat")
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.send(b"BDAT 10000\r\n" + b"x" * 5000)
    idle(c, "idle in a BDAT chunk")
    # a client that keeps talking is not timed out by smtpd_timeout...
    c = smtpt.Conn(port, name="busy")
    c.expect_greeting()
    for i in range(5):
        time.sleep(0.8)
        c.expect("NOOP", 250)
    c.expect("QUIT", 221)
    c.close()
    # ...but smtpd_idle_timeout (6s) ends sessions that make no progress:
    # NOOPs forever, or a command line trickled a byte at a time
    import threading
    out = {}
    def noops():
        c = smtpt.Conn(port, name="noops")
        c.expect_greeting()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            r = c.cmd("NOOP")
            if r is None or r.code != 250:
                out["noops"] = (r, time.monotonic() - t0, c)
                return
            time.sleep(0.5)
        out["noops"] = (None, 15, c)
    def trickle():
        c = smtpt.Conn(port, name="trickle")
        c.expect_greeting()
        t0 = time.monotonic()
        r = None
        while time.monotonic() - t0 < 15:
            try:
                c.sock.sendall(b"N")
                r = c.reply(0.5)
                break
            except (OSError, TimeoutError):
                pass
        out["trickle"] = (r, time.monotonic() - t0, c)
    ts = [threading.Thread(target=f) for f in (noops, trickle)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for k, (r, dt, c) in sorted(out.items()):
        check(r is not None and r.code == 421 and r.enh == "4.4.2",
              "%s: wanted 421 4.4.2 from smtpd_idle_timeout, got %r after %.1f s" %
              (k, r.lines if r else None, dt), c)
        check(4.5 <= dt <= 10, "%s: 421 after %.1f s with smtpd_idle_timeout = 6s" % (k, dt), c)

smtpt.main(run)
EOF
sleep 0.5
[ "$(spool_count)" = 0 ] || fail "a timed-out message left a queue file in active/"
[ "$(spool_tmp_count)" = 0 ] || { ls -la "$SPOOL/tmp" >&2; fail "a timed-out message left a file in tmp/"; }
signet_alive
signet_stop
note "ok"
