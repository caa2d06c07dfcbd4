#!/bin/bash
# smtp-config: `signet -t -c relay.conf` (the documented example at the top
# of the repo) and `signet -t` (the embedded default) print "configuration
# OK"; a broken file prints every error as FILE:LINE and exits 1, and the
# daemon refuses to start with it.  SIGHUP reloads: a new dkim_sign line and
# a new certificate take effect for new sessions while an open session goes
# on undisturbed; a broken file on SIGHUP keeps the running configuration.
# SIGTERM closes the listeners at once, lets the transaction in progress
# finish with 250, and the daemon exits 0.
. "$(dirname "$0")/lib_smtp.sh"
need_dkimpy
need_maildkim

smtp_setup
mkdir -p "$T/cwd"

# --- signet -t ------------------------------------------------------------------------
[ -f "$ROOT/relay.conf" ] || fail "no relay.conf at the top of the repo"
(cd "$T/cwd" && timeout 20 "$SIGNET" -t -c "$ROOT/relay.conf") >"$T/out" 2>"$T/err"
RC=$?
[ "$RC" -lt 124 ] || { show; fail "signet -t -c relay.conf did not exit within 20 s (exit $RC)"; }
[ "$RC" = 0 ] && grep -q 'configuration OK' "$T/out" "$T/err" ||
	{ show; fail "signet -t -c relay.conf: exit $RC, wanted 0 and 'configuration OK'"; }
(cd "$T/cwd" && timeout 20 "$SIGNET" -t) >"$T/out" 2>"$T/err"
RC=$?
[ "$RC" -lt 124 ] || { show; fail "signet -t did not exit within 20 s (exit $RC)"; }
[ "$RC" = 0 ] && grep -q 'configuration OK' "$T/out" "$T/err" ||
	{ show; fail "signet -t (embedded default): exit $RC, wanted 0 and 'configuration OK'"; }
smtp_conf "$T/good.conf"
expect_ok timeout 20 "$SIGNET" -t -c "$T/good.conf"
grep -q 'configuration OK' "$T/out" "$T/err" || { show; fail "signet -t: no 'configuration OK'"; }
# relay.conf names every setting the tests use
for s in listen admin_listen spool_dir myhostname mynetworks message_size_limit \
	smtpd_recipient_limit smtpd_client_connection_count_limit smtpd_timeout \
	smtpd_tls_cert_file smtpd_tls_key_file smtpd_forbid_bare_newline dkim_sign \
	workers signing_threads smtpd_proxy_trusted_networks; do
	grep -Eq "^#? *$s *=" "$ROOT/relay.conf" || fail "relay.conf does not document $s"
done

# a file with an error on lines 3, 5, 7, 9, 11, 13, 15 and 16
cat >"$T/broken.conf" <<EOF
# line 1: comment
listen = 127.0.0.1:$PORT
no_such_setting = 1
spool_dir = $SPOOL
message_size_limit = lots
myhostname = signet.test
mynetworks = 127.0.0.1/33
workers = 2
dkim_sign = signed.example rsa1 $T/no-such-key.pem
# line 10
this line has no equals sign
spool_dir = $SPOOL
listen = 127.0.0.1:notaport
mynetworks = 127.0.0.1/32
smtpd_forbid_bare_newline = sometimes
dkim_sign = signed.example
EOF
run timeout 20 "$SIGNET" -t -c "$T/broken.conf"
[ "$RC" = 1 ] || { show; fail "signet -t on a broken file: exit $RC, wanted 1"; }
cat "$T/out" "$T/err" >"$T/both"
grep -q 'configuration OK' "$T/both" && fail "broken file: 'configuration OK' printed"
for l in 3 5 7 9 11 13 15 16; do
	grep -q "^$T/broken.conf:$l: ." "$T/both" ||
		{ cat "$T/both" >&2; fail "no '$T/broken.conf:$l: message' error line"; }
done
for l in 2 4 6 8 10; do
	grep -q "^$T/broken.conf:$l:" "$T/both" && { cat "$T/both" >&2; fail "an error reported on the good line $l"; }
done
# the daemon itself refuses it and does not listen
run timeout 10 "$SIGNET" -c "$T/broken.conf"
[ "$RC" != 0 ] && [ "$RC" -lt 124 ] || { show; fail "signet -c broken.conf: exit $RC, wanted a clean failure"; }
port_listening "$PORT" && fail "something listens on $PORT after a refused start"

# --- SIGHUP -----------------------------------------------------------------------------------
cp "$TLSDIR/cert.pem" "$TLSDIR/cert1.pem"
cp "$TLSDIR/key.pem" "$TLSDIR/key1.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$TLSDIR/key2.pem" -out "$TLSDIR/cert2.pem" -days 2 -subj /CN=signet2.test >/dev/null 2>&1 ||
	fail "openssl req (second certificate)"
smtp_conf "$T/conf1" "smtpd_tls_cert_file = $TLSDIR/cert1.pem" "smtpd_tls_key_file = $TLSDIR/key1.pem"
smtp_conf "$T/conf2" "smtpd_tls_cert_file = $TLSDIR/cert2.pem" "smtpd_tls_key_file = $TLSDIR/key2.pem" \
	"dkim_sign = signed.example rsa1 $KDIR/rsa1.pem" "dkim_sign = signed.example ed1 $KDIR/ed1.pem" \
	"dkim_sign = other.example rsa1 $KDIR/other.pem"
cp "$T/conf1" "$T/signet.conf"
signet_start "$T/signet.conf"
export CONF=$T/signet.conf
smtp_py <<'EOF' || fail "SIGHUP reload (see above)"
import hashlib, os, shutil, signal, ssl, socket, time, smtpt
from smtpt import check, Fail
import qfile
port = int(os.environ["PORT"])
pid = int(os.environ["SIGNET_PID"])
T, SPOOL, CONF = os.environ["T"], os.environ["SPOOL"], os.environ["CONF"]

def send_other(tag):
    c = smtpt.Conn(port, name=tag)
    c.expect_greeting()
    c.ehlo()
    r = c.mail_transaction("x@other.example", ["r@rcpt.example"],
                           smtpt.make_message(frm="x@other.example", subject=tag))
    c.expect("QUIT", 221)
    c.close()
    qid = smtpt.queue_id(r)
    q = qfile.parse(os.path.join(SPOOL, "active", qid))
    return qid, (q["sig"] or b"").decode()

def cert_hash():
    c = smtpt.Conn(port, name="cert")
    c.expect_greeting()
    c.ehlo()
    c.starttls()
    h = hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()
    c.close()
    return h

def run():
    # session A, opened before the reload, stays open across it
    a = smtpt.Conn(port, name="session A")
    a.expect_greeting()
    a.ehlo()
    a.expect("MAIL FROM:<a@signed.example>", 250)
    a.expect("RCPT TO:<r@rcpt.example>", 250)
    qid, sig = send_other("before reload")
    check("d=other.example" not in "".join(sig.split()),
          "other.example signed before it was configured", None)
    h1 = cert_hash()
    shutil.copy(os.path.join(T, "conf2"), CONF)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while True:
        qid, sig = send_other("after reload")
        if "d=other.example" in "".join(sig.split()):
            break
        check(time.monotonic() < deadline, "15 s after SIGHUP, other.example is still not signed", None)
        time.sleep(0.3)
    open(os.path.join(T, "other.qid"), "w").write(qid)
    check(cert_hash() != h1, "the certificate did not change on SIGHUP", None)
    # session A goes on
    a.expect("NOOP", 250)
    a.expect("DATA", 354)
    a.send(smtpt.dot_stuff(smtpt.make_message(frm="a@signed.example", subject="session A")) + b".\r\n")
    r = a.expect_reply(250, "2.0.0", "end of DATA in the session opened before SIGHUP")
    open(os.path.join(T, "a.qid"), "w").write(smtpt.queue_id(r))
    a.expect("QUIT", 221)
    a.close()

    # a broken file on SIGHUP: the daemon keeps running with what it has
    open(CONF, "a").write("no_such_setting = 1\nmessage_size_limit = lots\n")
    os.kill(pid, signal.SIGHUP)
    time.sleep(1.5)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise Fail("signet exited on SIGHUP with a broken configuration file")
    qid, sig = send_other("after a bad reload")
    check("d=other.example" in "".join(sig.split()), "a bad reload dropped the good configuration", None)
    shutil.copy(os.path.join(T, "conf2"), CONF)

smtpt.main(run)
EOF
expect_signed "$(cat "$T/other.qid")" 1
expect_signed "$(cat "$T/a.qid")" 2
signet_alive "after SIGHUPs"

# --- SIGTERM --------------------------------------------------------------------------------------
smtp_py <<'EOF' || fail "SIGTERM with a transaction in progress (see above)"
import os, signal, socket, time, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])
pid = int(os.environ["SIGNET_PID"])
T = os.environ["T"]

def run():
    idle = smtpt.Conn(port, name="idle session")
    idle.expect_greeting()
    c = smtpt.Conn(port, name="in DATA")
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<term@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.expect("DATA", 354)
    m = smtpt.dot_stuff(smtpt.make_message(frm="term@signed.example", subject="sigterm",
                                           body=b"first half\r\n" * 200))
    c.send(m[:len(m) // 2])
    time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    # the listener is closed: no new session is greeted
    try:
        n = smtpt.Conn(port, name="new after SIGTERM", timeout=3)
        r = n.reply(3)
        check(r is None or r.code != 220, "a new connection was greeted with 220 after SIGTERM", n)
        n.close()
    except (ConnectionRefusedError, socket.timeout, TimeoutError, ConnectionResetError):
        pass
    c.send(m[len(m) // 2:] + b".\r\n")
    r = c.expect_reply(250, "2.0.0", "end of DATA after SIGTERM")
    open(os.path.join(T, "term.qid"), "w").write(smtpt.queue_id(r))
    r = c.cmd("QUIT")
    check(r is None or r.code in (221, 421), "QUIT after SIGTERM: %r" % (r.lines if r else None), c)
    c.close()
    check(idle.wait_eof(30), "the idle session was not closed after SIGTERM", idle)
    idle.close()

smtpt.main(run)
EOF
signet_wait 30
expect_signed "$(cat "$T/term.qid")" 2

# --- the embedded default on a fresh machine: no -c, an empty directory -----------------
# It listens on 127.0.0.1:2525 (admin 9025), spools to ./var/spool and makes a
# self-signed certificate.  Those ports are fixed: wait until nobody else uses them.
i=0
while port_listening 2525 || port_listening 9025; do
	[ $i -lt 300 ] || fail "127.0.0.1:2525 or :9025 is busy (another signet?) for 30 s"
	sleep 0.1
	i=$((i + 1))
done
mkdir -p "$T/fresh"
echo "=== $(date +%T.%N) signet (embedded default) in $T/fresh" >>"$SIGNET_LOG"
(cd "$T/fresh" && exec "$SIGNET") >>"$SIGNET_LOG" 2>&1 </dev/null &
SIGNET_PID=$!
smtp_track "$SIGNET_PID"
wait_port 2525 15 || { signet_alive "with the embedded default"; fail "nothing listens on 127.0.0.1:2525 (embedded default)"; }
wait_port 9025 5 || fail "no admin listener on 127.0.0.1:9025 (embedded default)"
PORT=2525 expect_queued
PORT=2525 expect_queued --tls
# the embedded default delivers: the message is either still queued, intact,
# or the log shows the delivery attempt (the test domain has no MX)
if [ -f "$T/fresh/var/spool/active/$QID" ]; then
	qfile check "$T/fresh/var/spool/active/$QID" >/dev/null || fail "embedded default: queue file not intact"
else
	i=0
	until grep -q "$QID: to=<" "$SIGNET_LOG"; do
		[ $i -lt 100 ] || fail "embedded default: $QID neither queued in ./var/spool/active nor delivered"
		sleep 0.1
		i=$((i + 1))
	done
fi
[ -s "$T/fresh/var/tls/cert.pem" ] || fail "embedded default: no self-signed certificate in ./var/tls"
curl -fsS --max-time 10 -o "$T/m.fresh" http://127.0.0.1:9025/metrics
grep -q '^signet_messages_accepted_total 2$' "$T/m.fresh" ||
	fail "embedded default: /metrics on 9025 does not count the 2 messages"
signet_stop
note "ok"
