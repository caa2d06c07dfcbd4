#!/bin/bash
# smtp-tls-auth: STARTTLS (swaks --tls, openssl s_client -starttls smtp) and
# a TLS-on-connect listener (swaks --tlsc), TLS 1.2 or newer only; AUTH
# PLAIN and LOGIN (SHA-512-crypt and yescrypt hashes) offered and accepted
# only after TLS, refused with 535 5.7.8 for a wrong password; a client
# outside mynetworks (bound to 127.0.0.2) gets 554 5.7.1 at RCPT unless it
# authenticated; commands pipelined after STARTTLS are not carried into TLS.
. "$(dirname "$0")/lib_smtp.sh"
need swaks openssl
need_dkimpy
need_maildkim

smtp_setup
smtp_conf "$T/signet.conf" "$(listen_plain)" "$(listen_tls)"
signet_start "$T/signet.conf" "$PORT" "$TLS_PORT"

# --- STARTTLS with swaks -----------------------------------------------------
expect_queued --tls
grep -q 'TLS started' "$T/out" || { show; fail "swaks --tls: no 'TLS started'"; }
expect_signed "$QID" 2

# --- TLS on connect ------------------------------------------------------------
expect_queued --tlsc --port "$TLS_PORT"
grep -q 'TLS started' "$T/out" || { show; fail "swaks --tlsc: no 'TLS started'"; }
expect_signed "$QID" 2

# --- openssl s_client -starttls smtp ----------------------------------------------
{
	sleep 1
	printf 'EHLO client.test\n'
	sleep 1
	printf 'QUIT\n'
	sleep 1
} | timeout 15 openssl s_client -starttls smtp -connect "127.0.0.1:$PORT" \
	-servername signet.test -crlf -ign_eof >"$T/out" 2>"$T/err"
grep -Eq '^(New|Protocol).*TLSv1\.[23]' "$T/out" || { show; fail "s_client -starttls smtp: no TLSv1.2/1.3 session"; }
grep -Eq '^250[- ]AUTH( .*)? PLAIN' "$T/out" && grep -Eq '^250[- ]AUTH( .*)? LOGIN' "$T/out" ||
	grep -Eq '^250[- ]AUTH.*(PLAIN.*LOGIN|LOGIN.*PLAIN)' "$T/out" ||
	{ show; fail "after STARTTLS, EHLO does not offer AUTH PLAIN LOGIN"; }
grep -Eq '^250[- ]STARTTLS' "$T/out" && { show; fail "STARTTLS offered again inside TLS"; }
grep -q '^221' "$T/out" || { show; fail "s_client: no 221 to QUIT"; }

# s_client straight to the TLS-on-connect port: the greeting comes inside TLS
{ sleep 1; printf 'QUIT\n'; sleep 1; } | timeout 15 openssl s_client -connect "127.0.0.1:$TLS_PORT" \
	-servername signet.test -crlf -ign_eof >"$T/out" 2>"$T/err"
grep -q '^220 ' "$T/out" || { show; fail "s_client to the tls listener: no 220 greeting"; }

# TLS 1.1 and 1.0 are refused (the client is allowed to offer them here)
for v in tls1 tls1_1; do
	echo QUIT | timeout 15 openssl s_client -"$v" -cipher 'DEFAULT:@SECLEVEL=0' \
		-connect "127.0.0.1:$TLS_PORT" >"$T/out" 2>"$T/err"
	grep -Eq '^(New|Protocol).*TLSv1(\.1)?[^.0-9]' "$T/out" && grep -q '^220 ' "$T/out" &&
		{ show; fail "a -$v handshake succeeded: TLS older than 1.2 must be refused"; }
done

# --- AUTH with swaks -------------------------------------------------------------
LI=(--local-interface 127.0.0.2)
expect_queued "${LI[@]}" --tls --auth PLAIN --auth-user "$AUTH_USER" --auth-password "$AUTH_PASS"
grep -q '<~ *235 2\.7\.0' "$T/out" || { show; fail "AUTH PLAIN: no 235 2.7.0"; }
envelope_has "$QID" "$AUTH_USER"
envelope_has "$QID" '127\.0\.0\.2'
expect_signed "$QID" 2
expect_queued "${LI[@]}" --tls --auth LOGIN --auth-user "$AUTH_USER2" --auth-password "$AUTH_PASS2"
grep -q '<~ *235 2\.7\.0' "$T/out" || { show; fail "AUTH LOGIN (yescrypt user): no 235 2.7.0"; }
envelope_has "$QID" "$AUTH_USER2"
expect_queued "${LI[@]}" --tlsc --port "$TLS_PORT" --auth PLAIN --auth-user "$AUTH_USER" --auth-password "$AUTH_PASS"
n=$(spool_count)

for mech in PLAIN LOGIN; do
	swaks_send "${LI[@]}" --tls --auth "$mech" --auth-user "$AUTH_USER" --auth-password "wrong password"
	[ "$RC" != 0 ] || { show; fail "AUTH $mech with a wrong password: swaks succeeded"; }
	grep -q '<~\** *535 5\.7\.8' "$T/out" || { show; fail "AUTH $mech with a wrong password: no 535 5.7.8"; }
	[ -z "$QID" ] || fail "a message was queued after a failed AUTH"
done
swaks_send "${LI[@]}" --tls --auth PLAIN --auth-user nosuchuser --auth-password "$AUTH_PASS"
grep -q '535 5\.7\.8' "$T/out" || { show; fail "AUTH for an unknown user: no 535 5.7.8"; }

# --- relaying refused outside mynetworks -----------------------------------------
swaks_send "${LI[@]}"
grep -q '554 5\.7\.1' "$T/out" || { show; fail "relay from 127.0.0.2 without AUTH: no 554 5.7.1"; }
[ -z "$QID" ] || fail "relay from 127.0.0.2 without AUTH was queued"
swaks_send "${LI[@]}" --tls
grep -q '554 5\.7\.1' "$T/out" || { show; fail "relay from 127.0.0.2 with TLS, without AUTH: no 554 5.7.1"; }
swaks_send "${LI[@]}" --tlsc --port "$TLS_PORT"
grep -q '554 5\.7\.1' "$T/out" || { show; fail "relay from 127.0.0.2 on the tls listener without AUTH: no 554 5.7.1"; }
# swaks without --tls may not even try AUTH: it must fail, never relay
swaks_send "${LI[@]}" --auth PLAIN --auth-user "$AUTH_USER" --auth-password "$AUTH_PASS"
[ "$RC" != 0 ] && [ -z "$QID" ] || { show; fail "AUTH without TLS led to a relayed message"; }
[ "$(spool_count)" = "$n" ] || fail "refused sessions left queue files ($(spool_count), wanted $n)"

# --- the same by hand -------------------------------------------------------------------
smtp_py <<'EOF' || fail "TLS/AUTH dialogue (see above)"
import base64, os, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])
user, pw = os.environ["AUTH_USER"], os.environ["AUTH_PASS"]
plain = base64.b64encode(("\0%s\0%s" % (user, pw)).encode()).decode()
b64 = lambda s: base64.b64encode(s.encode()).decode()

def run():
    c = smtpt.Conn(port, bind="127.0.0.2", name="auth")
    c.expect_greeting()
    r = c.ehlo()
    check("AUTH" not in r.keywords(), "AUTH offered before TLS", c)
    r = c.cmd("AUTH PLAIN " + plain)
    check(r is not None and r.code in (503, 530, 538, 502, 504),
          "AUTH before TLS: wanted 503/530/538, got %r" % (r.lines if r else None), c)
    c.expect("MAIL FROM:<x@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 554, "5.7.1")
    c.expect("RSET", 250)
    c.starttls()
    r = c.ehlo()
    kws = r.keywords()
    check("AUTH" in kws, "no AUTH after STARTTLS", c)
    mechs = [m.upper() for m in r.params("AUTH")]
    check("PLAIN" in mechs and "LOGIN" in mechs, "AUTH mechanisms %r lack PLAIN or LOGIN" % mechs, c)
    check("STARTTLS" not in kws, "STARTTLS offered inside TLS", c)
    c.expect("STARTTLS", (503, 554, 502), "5.")
    # LOGIN, wrong password
    c.expect("AUTH LOGIN", 334)
    c.expect(b64(user), 334)
    c.expect(b64("nope"), 535, "5.7.8")
    # cancelled
    c.expect("AUTH LOGIN", 334)
    c.expect("*", 501, "5.")
    # bad base64
    c.expect("AUTH PLAIN !!!notbase64", (501, 535), "5.")
    c.expect("MAIL FROM:<x@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 554, "5.7.1")
    c.expect("RSET", 250)
    # PLAIN with the initial response as a separate line
    c.expect("AUTH PLAIN", 334)
    c.expect(plain, 235, "2.7.0")
    c.expect("AUTH PLAIN " + plain, 503, "5.5.1")   # already authenticated
    r = c.mail_transaction("x@signed.example", ["r@rcpt.example"],
                           smtpt.make_message(frm="x@signed.example"))
    check(smtpt.queue_id(r), "no queue id", c)
    c.expect("QUIT", 221)
    c.close()

    # AUTH inside a MAIL transaction is refused
    c = smtpt.Conn(port, bind="127.0.0.2", name="auth-in-transaction")
    c.expect_greeting()
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.expect("MAIL FROM:<x@signed.example>", 250)
    c.expect("AUTH PLAIN " + plain, 503, "5.5.1")
    c.expect("QUIT", 221)
    c.close()

    # STARTTLS command injection (CVE-2011-0411 class): bytes sent after
    # STARTTLS in the same write must be discarded, not run inside TLS.
    c = smtpt.Conn(port, name="starttls-injection")
    c.expect_greeting()
    c.ehlo()
    c.send(b"STARTTLS\r\nRSET\r\n")
    r = c.reply()
    if r is not None and r.code == 220:
        try:
            c._wrap()
        except OSError:
            pass  # the server may also drop the connection: fine
        else:
            c.send(b"EHLO client.test\r\n")
            r = c.reply()
            check(r is None or (r.code != 250 or len(r.lines) > 1),
                  "a command pipelined after STARTTLS was executed inside TLS", c)
    c.close()

smtpt.main(run)
EOF
[ "$(spool_count)" = $((n + 1)) ] || fail "$(spool_count) queue files, wanted $((n + 1))"
grep -F '554 5.7.1' "$SIGNET_LOG" | grep -q '127\.0\.0\.2' ||
	fail "the relay refusals for 127.0.0.2 are not logged with their reason"
signet_alive
signet_stop

# --- no certificate yet: a self-signed one is made on first start ------------------
smtp_conf "$T/selfsigned.conf" "$(listen_plain)" "$(listen_tls)" \
	"smtpd_tls_cert_file = $T/gen/cert.pem" "smtpd_tls_key_file = $T/gen/key.pem" \
	"smtpd_tls_self_signed = yes"
mkdir -p "$T/gen"
signet_start "$T/selfsigned.conf" "$PORT" "$TLS_PORT"
[ -s "$T/gen/cert.pem" ] && [ -s "$T/gen/key.pem" ] || fail "no self-signed certificate written"
[ "$(stat -c %a "$T/gen/key.pem")" = 600 ] || fail "the generated key has mode $(stat -c %a "$T/gen/key.pem"), not 600"
openssl x509 -in "$T/gen/cert.pem" -noout -subject -ext subjectAltName >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "openssl cannot read the generated certificate"; }
grep -q 'signet\.test' "$T/out" || { cat "$T/out" >&2; fail "the generated certificate does not name myhostname"; }
expect_queued --tls
expect_queued --tlsc --port "$TLS_PORT"
signet_stop
note "ok"
