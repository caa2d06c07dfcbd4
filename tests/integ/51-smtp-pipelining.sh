#!/bin/bash
# smtp-pipelining: RFC 2920 - three whole transactions (MAIL, RCPT, DATA,
# text, end of data) and RSET/NOOP/QUIT sent in one write get every reply,
# in order, and three distinct signed queue files; a refused RCPT in the
# middle of a pipeline does not desynchronise it.  RFC 3030 CHUNKING: BDAT
# chunks (pipelined too), BDAT 0 LAST, BDAT n LAST; BDAT content is taken
# verbatim (no dot-unstuffing, "\r\n.\r\n" inside is data); a BDAT refused
# for bad order still has its chunk consumed; DATA after BDAT is refused.
# The replies to one pipelined group leave in one write (strace).
. "$(dirname "$0")/lib_smtp.sh"
need_dkimpy
need_maildkim

smtp_setup
smtp_conf "$T/signet.conf"
signet_start "$T/signet.conf"

smtp_py <<'EOF' || fail "pipelining dialogue (see above)"
import os, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])
T = os.environ["T"]
ids = []

def msg(n, body):
    return smtpt.make_message(frm="p%d@signed.example" % n, to="r%d@rcpt.example" % n,
                              subject="pipelined %d" % n, msgid="<pipe-%d@client.test>" % n,
                              body=body)

def run():
    # --- DATA transactions, all in one write ------------------------------
    c = smtpt.Conn(port, name="pipeline")
    c.expect_greeting()
    r = c.ehlo()
    check("PIPELINING" in r.keywords(), "no PIPELINING", c)
    w = b""
    want = []
    for n in range(1, 4):
        w += b"MAIL FROM:<p%d@signed.example>\r\n" % n
        want.append((250, "2.1.0"))
        if n == 2:
            w += b"RCPT TO:<bad address>\r\n"          # refused, pipeline goes on
            want.append((501, "5."))
        w += b"RCPT TO:<r%d@rcpt.example>\r\n" % n
        want.append((250, "2.1.5"))
        w += b"RCPT TO:<r%d-bis@rcpt.example>\r\n" % n
        want.append((250, "2.1.5"))
        w += b"DATA\r\n"
        want.append((354, None))
        body = b"line one of %d\r\n.dot line\r\nMAIL FROM:<evil@x>\r\n\r\nlast\r\n" % n
        w += smtpt.dot_stuff(msg(n, body)) + b".\r\n"
        want.append((250, "2.0.0"))
    w += b"RSET\r\nNOOP\r\nQUIT\r\n"
    want += [(250, "2.0.0"), (250, "2.0.0"), (221, "2.0.0")]
    c.send(w)
    for i, (code, enh) in enumerate(want):
        r = c.expect_reply(code, enh, what="pipelined reply %d" % (i + 1))
        if code == 250 and enh == "2.0.0" and len(ids) < 3:
            q = smtpt.queue_id(r)
            if q:
                ids.append(q)
    check(len(ids) == 3 and len(set(ids)) == 3, "wanted 3 distinct queue ids, got %r" % ids, c)
    check(c.wait_eof(5), "no close after QUIT", c)
    c.close()

    # --- BDAT ----------------------------------------------------------------
    c = smtpt.Conn(port, name="bdat")
    c.expect_greeting()
    r = c.ehlo()
    check("CHUNKING" in r.keywords(), "no CHUNKING", c)
    # BDAT before MAIL: refused, and its 12 bytes are consumed, not parsed
    c.send(b"BDAT 12\r\nNOOP\r\nNOOP\r\n")
    c.expect_reply(503, "5.5.1", "BDAT before MAIL")
    c.expect("NOOP", 250, "2.0.0")
    # chunks, the last one empty (BDAT 0 LAST)
    m = msg(4, b"chunked body\r\n.\r\n..two dots stay two\r\n")
    c.expect("MAIL FROM:<p4@signed.example> BODY=BINARYMIME", (250, 555, 501), None)
    c.expect("RSET", 250)
    c.expect("MAIL FROM:<p4@signed.example>", 250, "2.1.0")
    c.expect("RCPT TO:<r4@rcpt.example>", 250, "2.1.5")
    a, b = m[:37], m[37:]
    c.send(b"BDAT %d\r\n" % len(a) + a)
    c.expect_reply(250, "2.0.0", "BDAT chunk 1")
    c.send(b"BDAT %d\r\n" % len(b) + b)
    c.expect_reply(250, "2.0.0", "BDAT chunk 2")
    c.expect("DATA", 503, "5.5.1")                      # no DATA after BDAT
    c.send(b"BDAT 0 LAST\r\n")
    r = c.expect_reply(250, "2.0.0", "BDAT 0 LAST")
    q = smtpt.queue_id(r)
    check(q, "BDAT LAST: no queue id", c)
    ids.append(q)
    open(os.path.join(T, "bdat4.eml"), "wb").write(m)
    # one BDAT n LAST, pipelined with MAIL and RCPT, then more commands
    m = msg(5, b"single chunk\r\n")
    c.send(b"MAIL FROM:<p5@signed.example>\r\nRCPT TO:<r5@rcpt.example>\r\n"
           b"BDAT %d LAST\r\n" % len(m) + m + b"NOOP\r\n")
    c.expect_reply(250, "2.1.0", "MAIL (pipelined)")
    c.expect_reply(250, "2.1.5", "RCPT (pipelined)")
    r = c.expect_reply(250, "2.0.0", "BDAT n LAST (pipelined)")
    q = smtpt.queue_id(r)
    check(q, "BDAT n LAST: no queue id", c)
    ids.append(q)
    open(os.path.join(T, "bdat5.eml"), "wb").write(m)
    c.expect_reply(250, "2.0.0", "NOOP after BDAT LAST")
    # many small chunks in one write
    m = msg(6, b"".join(b"chunk line %03d\r\n" % i for i in range(200)))
    w = b"MAIL FROM:<p6@signed.example>\r\nRCPT TO:<r6@rcpt.example>\r\n"
    pos, n = 0, 0
    while pos < len(m):
        piece = m[pos:pos + 97]
        pos += len(piece)
        last = b" LAST" if pos >= len(m) else b""
        w += b"BDAT %d%s\r\n" % (len(piece), last) + piece
        n += 1
    c.send(w)
    c.expect_reply(250, "2.1.0", "MAIL")
    c.expect_reply(250, "2.1.5", "RCPT")
    for i in range(n):
        r = c.expect_reply(250, "2.0.0", "BDAT chunk %d of %d" % (i + 1, n))
    q = smtpt.queue_id(r)
    check(q, "last BDAT: no queue id", c)
    ids.append(q)
    open(os.path.join(T, "bdat6.eml"), "wb").write(m)
    # a malformed BDAT
    c.expect("MAIL FROM:<p7@signed.example>", 250)
    c.expect("RCPT TO:<r7@rcpt.example>", 250)
    c.expect("BDAT x", 501, "5.5.")
    c.expect("RSET", 250)
    c.expect("QUIT", 221)
    c.close()
    open(os.path.join(T, "ids"), "w").write("\n".join(ids) + "\n")

smtpt.main(run)
EOF

mapfile -t ids <"$T/ids"
[ "${#ids[@]}" = 6 ] || fail "wanted 6 queue ids, got ${#ids[@]}"
[ "$(spool_count)" = 6 ] || fail "$(spool_count) queue files, wanted 6"
for n in 1 2 3; do
	id=${ids[$((n - 1))]}
	expect_signed "$id" 2
	envelope_has "$id" "p$n@signed\.example"
	envelope_has "$id" "r$n@rcpt\.example"
	envelope_has "$id" "r$n-bis@rcpt\.example"
	grep -q "^Message-ID: <pipe-$n@client.test>" "$T/$id.eml" || fail "message $n is not in queue file $id"
	grep -q '^\.dot line' "$T/$id.eml" || fail "message $n: dot line not unstuffed"
	grep -q '^MAIL FROM:<evil@x>' "$T/$id.eml" || fail "message $n: body line lost"
done
# BDAT messages are stored byte for byte (after the signatures)
for n in 4 5 6; do
	id=${ids[$((n - 1))]}
	expect_signed "$id" 2
	"$PY" - "$SPOOL/active/$id" "$T/bdat$n.eml" <<'EOF' || fail "BDAT message $n not stored verbatim"
import sys
sys.path.insert(0, __import__("os").environ["SMTPDIR"])
import qfile
q = qfile.parse(sys.argv[1])
got = b"".join(q["msg"])
want = open(sys.argv[2], "rb").read()
if got != want:
    print("stored %d bytes, sent %d; first difference at %d" % (len(got), len(want),
          next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))))
    sys.exit(1)
EOF
done

# RFC 2920: the replies to a pipelined group go out in one batch (one write)
need strace
strace -f -p "$SIGNET_PID" -e trace=write,writev,sendmsg,sendto -s 400 -o "$T/strace.out" 2>"$T/strace.err" &
ST_PID=$!
smtp_track "$ST_PID"
i=0
until grep -q 'attached' "$T/strace.err" 2>/dev/null; do
	[ $i -lt 50 ] || { cat "$T/strace.err" >&2; fail "strace did not attach to signet"; }
	sleep 0.1
	i=$((i + 1))
done
sleep 0.3
smtp_py <<'EOF' || fail "pipelined group (see above)"
import os, smtpt
c = smtpt.Conn(int(os.environ["PORT"]), name="batch")
c.expect_greeting()
c.ehlo()
c.send(b"MAIL FROM:<b@signed.example>\r\nRCPT TO:<r1@rcpt.example>\r\n"
       b"RCPT TO:<r2@rcpt.example>\r\nRCPT TO:<r3@rcpt.example>\r\nDATA\r\n")
for code in (250, 250, 250, 250, 354):
    c.expect_reply(code)
c.expect(b".", 250)
c.close()
EOF
sleep 0.3
kill -INT "$ST_PID" 2>/dev/null
wait "$ST_PID" 2>/dev/null
grep -F '250 2.1.0' "$T/strace.out" | grep -Fq '354 ' ||
	{ grep -E 'write|send' "$T/strace.out" | grep -E '250|354' >&2; fail "the replies to one pipelined group were not sent in one write"; }

signet_alive
signet_stop
note "ok"
