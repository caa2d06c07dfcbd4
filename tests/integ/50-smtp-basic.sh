#!/bin/bash
# smtp-basic: a message sent with swaks to a signed domain gets
# "250 2.0.0 Ok: queued as ID" and lands, signed (RSA + Ed25519), in
# spool/active/ID, where dkimpy and Mail::DKIM verify it; the envelope keeps
# sender, recipients and DSN parameters.  EHLO advertises the extensions (no
# AUTH before TLS); VRFY, HELP, NOOP, RSET, QUIT, unknown commands and
# commands out of order get the right replies with enhanced status codes.
. "$(dirname "$0")/lib_smtp.sh"
need swaks
need_dkimpy
need_maildkim

smtp_setup
smtp_conf "$T/signet.conf"
signet_start "$T/signet.conf"

# --- a message with swaks ---------------------------------------------------
expect_queued --h-From '"Sender" <sender@signed.example>'
note "queued as $QID"
[ ${#QID} -ge 8 ] || fail "queue id '$QID' looks too short"
# the queue id says when it was made: 10 hex digits of unix seconds first
qt=$((16#${QID:0:10}))
now=$(date +%s)
[ $((now - qt)) -ge -5 ] && [ $((now - qt)) -le 60 ] ||
	fail "queue id $QID: time part $qt is not now ($now)"
# one log line tells the message's story: sender, size, signatures
grep -F "$QID" "$SIGNET_LOG" | grep -F 'from=<sender@signed.example>' | grep -Eq 'size=[0-9]+' ||
	{ grep -F "$QID" "$SIGNET_LOG" >&2; fail "no log line for $QID with from=<...> and size="; }
grep -F "$QID" "$SIGNET_LOG" | grep -F 'signed.example' | grep -q 'rsa1' ||
	{ grep -F "$QID" "$SIGNET_LOG" >&2; fail "no log line for $QID naming the signing domain and selector"; }
expect_qfile "$QID"
expect_signed "$QID" 2
grep -q "Hello from $SCENARIO" "$T/$QID.eml" || fail "the body is not in the spooled message"
grep -iq '^DKIM-Signature:.*' "$T/$QID.eml" || fail "no DKIM-Signature"
tr -d '\r\n\t ' <"$T/$QID.eml" | grep -q 'd=signed.example;' || fail "no d=signed.example"
envelope_has "$QID" 'sender@signed\.example'
envelope_has "$QID" 'rcpt@rcpt\.example'
envelope_has "$QID" 'client\.test'
[ "$(spool_count)" = 1 ] || fail "$(spool_count) queue files, wanted 1"

# The same with several recipients: one queue file listing all of them.
expect_queued --to 'r1@rcpt.example,r2@rcpt.example,r3@other.example'
expect_qfile "$QID"
for r in r1@rcpt.example r2@rcpt.example r3@other.example; do
	envelope_has "$QID" "$r"
done
expect_signed "$QID" 2

# --- the dialogue -------------------------------------------------------------
smtp_py <<'EOF' || fail "SMTP dialogue (see above)"
import os, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])

def run():
    c = smtpt.Conn(port, name="dialogue")
    g = c.expect_greeting()
    check("signet.test" in g.lines[0], "greeting does not name myhostname signet.test", c)
    r = c.ehlo()
    check("signet.test" in r.lines[0], "EHLO reply does not start with signet.test", c)
    kws = r.keywords()
    for k in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING",
              "ENHANCEDSTATUSCODES", "DSN", "STARTTLS"):
        check(k in kws, "EHLO does not advertise %s" % k, c)
    check("AUTH" not in kws, "AUTH advertised before TLS", c)
    size = r.params("SIZE")
    check(size and size[0].isdigit() and int(size[0]) > 0,
          "SIZE should carry the limit (message_size_limit default 10240000)", c)
    # every reply (but the greeting and EHLO) carries an enhanced status code
    for line, code, enh in [
            ("NOOP", 250, "2.0.0"),
            ("RSET", 250, "2.0.0"),
            ("VRFY postmaster", 252, "2."),
            ("HELP", (214, 211), "2."),
            ("XYZZY", (500, 502), "5.5."),
            ("RCPT TO:<r@rcpt.example>", 503, "5.5.1"),    # before MAIL
            ("DATA", 503, "5.5.1"),                        # before MAIL
            ("MAIL FROM:<a@signed.example>", 250, "2.1.0"),
            ("MAIL FROM:<a@signed.example>", 503, "5.5.1"),  # nested MAIL
            ("DATA", (503, 554), "5.5."),                  # no recipient yet
            ("RCPT TO:<r@rcpt.example>", 250, "2.1.5"),
            ("RSET", 250, "2.0.0"),
            ("RCPT TO:<r@rcpt.example>", 503, "5.5.1"),    # RSET ended it
            ("MAIL FROM:<a@signed.example", 501, "5."),    # syntax
            ("MAIL TO:<a@signed.example>", 501, "5."),
            ("NOOP", 250, "2.0.0")]:
        c.expect(line, code, enh)
    # commands are case-insensitive
    c.expect("mail from:<a@signed.example>", 250, "2.1.0")
    c.expect("rcpt to:<r@rcpt.example>", 250, "2.1.5")
    c.expect("rset", 250, "2.0.0")
    # the null reverse-path is allowed (bounces)
    c.expect("MAIL FROM:<>", 250, "2.1.0")
    c.expect("RSET", 250)
    # HELO also works and resets the session
    c.expect("HELO client.test", 250)
    c.expect("QUIT", 221, "2.0.0")
    check(c.wait_eof(5), "connection not closed after QUIT", c)
    c.close()

    # DSN, 8BITMIME, SMTPUTF8 parameters are accepted and kept
    c = smtpt.Conn(port, name="dsn")
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<dsn@signed.example> RET=HDRS ENVID=QQ314159 BODY=8BITMIME SMTPUTF8 SIZE=500",
             250, "2.1.0")
    c.expect("RCPT TO:<d1@rcpt.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig-d1@rcpt.example",
             250, "2.1.5")
    c.expect("RCPT TO:<d2@rcpt.example> NOTIFY=NEVER", 250, "2.1.5")
    c.expect("RCPT TO:<d3@rcpt.example> NOTIFY=BOGUS", 501, "5.5.")
    c.expect("DATA", 354)
    c.send(smtpt.dot_stuff(smtpt.make_message(frm="dsn@signed.example",
           body="8bit: caf\xc3\xa9\r\n.leading dot\r\n".encode("latin-1"))) + b".\r\n")
    r = c.expect_reply(250, "2.0.0", "end of DATA")
    qid = smtpt.queue_id(r)
    check(qid, "no queue id in %r" % r.lines, c)
    open(os.path.join(os.environ["T"], "dsn.qid"), "w").write(qid)
    # unknown MAIL parameter
    c.expect("MAIL FROM:<a@signed.example> FROBNICATE=1", (555, 501), "5.5.")
    c.expect("QUIT", 221)
    c.close()

smtpt.main(run)
EOF
QID=$(cat "$T/dsn.qid")
expect_qfile "$QID"
envelope_has "$QID" 'QQ314159'
envelope_has "$QID" 'orig-d1@rcpt\.example'
envelope_has "$QID" 'd2@rcpt\.example'
qfile envelope "$SPOOL/active/$QID" | grep -q 'd3@rcpt' && fail "the refused recipient d3 is in the envelope"
expect_signed "$QID" 2
grep -q '^\.leading dot' "$T/$QID.eml" || fail "dot-unstuffing: '.leading dot' line not restored"
grep -q '^\.\.leading dot' "$T/$QID.eml" && fail "dot-unstuffing: the stuffed dot was kept"

signet_alive
signet_stop
note "ok"
