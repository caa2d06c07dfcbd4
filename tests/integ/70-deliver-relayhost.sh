#!/bin/bash
# deliver-relayhost: relayhost = [127.0.0.1]:SINK_PORT, a recording sink
# (deliver/dsink.py) offering STARTTLS.  A message from the signed domain,
# with an 8-bit UTF-8 body and lines starting with a dot, is delivered: the
# sink gets exactly the DKIM-Signature (and Received) fields + the bytes the client sent
# (no downgrade, dot-stuffing undone), dkimpy and Mail::DKIM verify it, the
# transaction ran over TLS, the log line says tls=... status=sent, and the
# queue file is gone.  Then smtp_tls_security_level = encrypt against a
# sink without STARTTLS defers instead of sending in clear.
. "$(dirname "$0")/lib_deliver.sh"
need_dkimpy
need_maildkim
deliver_setup

sink_start relay 127.0.0.1 "$SINK_PORT" --tls "$TLSDIR/cert.pem" "$TLSDIR/key.pem"
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT"
signet_start "$T/signet.conf"

# --- one message, byte-exact --------------------------------------------------------
printf '%s\r\n' \
	"From: Sender <sender@signed.example>" \
	"To: <rcpt@rcpt.example>" \
	"Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=" \
	"Date: Mon, 02 Mar 2026 10:00:00 +0000" \
	"Message-ID: <deliver-70-1@signed.example>" \
	"MIME-Version: 1.0" \
	"Content-Type: text/plain; charset=utf-8" \
	"Content-Transfer-Encoding: 8bit" \
	"" \
	"Grüße aus Köln — ünïcödé ✓" \
	".a line starting with a dot" \
	"." \
	".." \
	"   trailing blanks   " \
	"" \
	"last line" >"$T/msg.eml"

smtp_py "$T/msg.eml" <<'EOF' >"$T/send.out" 2>&1 || { cat "$T/send.out" >&2; fail "smtplib send"; }
import os, smtplib, sys
msg = open(sys.argv[1], "rb").read()
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=20)
s.ehlo("client.test")
assert s.has_extn("8bitmime"), "signet does not offer 8BITMIME"
s.mail("sender@signed.example", ["BODY=8BITMIME"])
code, text = s.rcpt("rcpt@rcpt.example")
assert code == 250, (code, text)
code, text = s.data(msg)
assert code == 250, (code, text)
print(text.decode())
s.quit()
EOF
QID=$(sed -n 's/.*queued as \([0-9A-Za-z]*\).*/\1/p' "$T/send.out")
[ -n "$QID" ] || { cat "$T/send.out" >&2; fail "no queue id in the 250 reply"; }
note "queued as $QID"

wait_sink relay 1 20
wait_queue_empty 10
[ "$(sink_count relay)" = 1 ] || { rec "$T/relay.jsonl" show >&2; fail "the sink got more than one transaction"; }
rec "$T/relay.jsonl" data 0 "$T/got.eml" || fail "no message at the sink"

# envelope and transport
rec "$T/relay.jsonl" show >"$T/show"
grep -q 'mail=MAIL FROM:<sender@signed.example>' "$T/show" || { cat "$T/show" >&2; fail "wrong MAIL FROM at the sink"; }
grep -q 'BODY=8BITMIME' "$T/show" || { cat "$T/show" >&2; fail "MAIL FROM without BODY=8BITMIME for an 8-bit message"; }
grep -q 'accepted=rcpt@rcpt.example ' "$T/show" || { cat "$T/show" >&2; fail "wrong recipients at the sink"; }
grep -q 'tls=TLSv1\.[23] ' "$T/show" || { cat "$T/show" >&2; fail "the delivery did not use STARTTLS"; }

# bytes: DKIM-Signature fields, then exactly the message sent
"$PY" - "$T/got.eml" "$T/msg.eml" <<'EOF' || fail "the delivered message is not the signature + the original bytes"
import re, sys
got = open(sys.argv[1], "rb").read()
orig = open(sys.argv[2], "rb").read()
if not got.endswith(orig):
    sys.exit("the delivered message does not end with the original bytes")
pre = got[:len(got) - len(orig)]
fields = re.split(rb"\r\n(?![ \t])", pre)
assert fields[-1] == b"", "prefix does not end with CRLF"
ndkim = 0
for f in fields[:-1]:
    if f.lower().startswith(b"dkim-signature:"):
        ndkim += 1
    elif not f.lower().startswith(b"received:"):
        sys.exit("unexpected prefix field (only DKIM-Signature and Received may be added): %r" % f[:80])
if ndkim != 2:
    sys.exit("%d DKIM-Signature fields, wanted 2" % ndkim)
EOF
dkimpy_verify --keys "$KEYS" "$T/got.eml" >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "dkimpy does not verify the delivered message"; }
maildkim_verify --keys "$KEYS" "$T/got.eml" >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "Mail::DKIM does not verify the delivered message"; }

# the log line
wait_log "^.*$QID: to=<rcpt@rcpt.example>, relay=[^ ]*\[127\.0\.0\.1\]:$SINK_PORT, delay=[0-9.]+, tls=TLSv1\.[23], status=sent \(250 " 5
[ -e "$SPOOL/active/$QID" ] && fail "queue file $QID still in active/ after delivery"

# --- swaks, several recipients: one transaction --------------------------------------
expect_queued --to "a@rcpt.example,b@rcpt.example,c@rcpt.example"
wait_sink relay 2 20
wait_queue_empty 10
rec "$T/relay.jsonl" show | tail -n 1 >"$T/show"
grep -q 'accepted=a@rcpt.example,b@rcpt.example,c@rcpt.example ' "$T/show" ||
	{ cat "$T/show" >&2; fail "three recipients of one domain not in one transaction"; }
rec "$T/relay.jsonl" data -1 "$T/got2.eml"
dkimpy_verify --keys "$KEYS" "$T/got2.eml" >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "dkimpy: second message"; }
maildkim_verify --keys "$KEYS" "$T/got2.eml" >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "Mail::DKIM: second message"; }
for r in a b c; do
	expect_log "$QID: to=<$r@rcpt.example>, .*status=sent"
done
signet_stop

# --- encrypt against a sink without STARTTLS: deferred, never sent in clear ------------
sink_start clear 127.0.0.1 "$PORT6"
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$PORT6" "smtp_tls_security_level = encrypt"
signet_start "$T/signet.conf"
expect_queued --to "enc@rcpt.example"
wait_log "$QID: to=<enc@rcpt.example>, .*status=deferred" 15
sleep 1
[ "$(sink_count clear --all)" = 0 ] || fail "a message was sent in clear with smtp_tls_security_level = encrypt"
[ -f "$SPOOL/active/$QID" ] || fail "the deferred message $QID is not in the queue"
signet_stop
note "ok"
