#!/bin/bash
# errors: signetctl refuses cleanly.  sign: no From (a message naming From),
# missing / unusable key, bad or missing options, an algorithm that does not
# match the key, a missing input file, a header block over DKIM_HEADER_MAX:
# exit 2, a message on stderr, nothing on stdout.  verify: an unsigned
# message, a missing / revoked / wrong-type key, a malformed or truncated
# DKIM-Signature: exit 1 (never a pass, never a crash).
. "$(dirname "$0")/lib.sh"
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" r err.example
mk_ed25519_key "$T/ed.pem" "$keys" e err.example
m=$CORPUS/trailing-ws.eml

# sign_refused WHY ARGS... - exit 2, stderr says something, stdout empty.
sign_refused() {
	local why=$1
	shift
	run "$CTL" dkim sign "$@"
	if [ "$RC" != 2 ]; then
		show
		fail "sign ($why): exit $RC, wanted 2"
	fi
	[ -s "$T/err" ] || fail "sign ($why): no message on stderr"
	[ ! -s "$T/out" ] || { show; fail "sign ($why): wrote to stdout"; }
}

# No From (also none in odd spellings).
printf 'To: bob@example.net\nSubject: no from\nX-From: not a from\nFromage: no\n\nbody\n' >"$T/nofrom.eml"
sign_refused "no From" -d err.example -s r -k "$T/rsa.pem" "$T/nofrom.eml"
stderr_says 'from'
printf '\nFrom: only in the body\n' >"$T/nohdr.eml"
sign_refused "From only in the body" -d err.example -s r -k "$T/rsa.pem" "$T/nohdr.eml"
: >"$T/empty.eml"
sign_refused "empty message" -d err.example -s r -k "$T/rsa.pem" "$T/empty.eml"

# Keys.
sign_refused "missing key" -d err.example -s r -k "$T/no-such-key.pem" "$m"
sign_refused "key is a directory" -d err.example -s r -k "$T" "$m"
printf 'not a key\n' >"$T/garbage.pem"
chmod 600 "$T/garbage.pem"
sign_refused "garbage key" -d err.example -s r -k "$T/garbage.pem" "$m"
: >"$T/emptykey.pem"
sign_refused "empty key file" -d err.example -s r -k "$T/emptykey.pem" "$m"
openssl pkey -in "$T/rsa.pem" -pubout -out "$T/pub.pem" 2>/dev/null
sign_refused "public key only" -d err.example -s r -k "$T/pub.pem" "$m"
head -c 400 "$T/rsa.pem" >"$T/trunc.pem"
sign_refused "truncated key" -d err.example -s r -k "$T/trunc.pem" "$m"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ec.pem" 2>/dev/null || fail "openssl EC"
sign_refused "EC key" -d err.example -s r -k "$T/ec.pem" "$m"
# Unreadable for a non-root user (root reads anything, so only then).
if [ "$(id -u)" != 0 ]; then
	cp "$T/rsa.pem" "$T/unreadable.pem"
	chmod 000 "$T/unreadable.pem"
	sign_refused "unreadable key" -d err.example -s r -k "$T/unreadable.pem" "$m"
fi

# Algorithm / key mismatch.
sign_refused "ed25519-sha256 with an RSA key" -d err.example -s r -k "$T/rsa.pem" -a ed25519-sha256 "$m"
sign_refused "rsa-sha256 with an Ed25519 key" -d err.example -s e -k "$T/ed.pem" -a rsa-sha256 "$m"

# Options.
sign_refused "unknown option" -d err.example -s r -k "$T/rsa.pem" -Z "$m"
sign_refused "unknown long option" -d err.example -s r -k "$T/rsa.pem" --frobnicate "$m"
sign_refused "bad -a" -d err.example -s r -k "$T/rsa.pem" -a rsa-sha1 "$m"
sign_refused "bad -a" -d err.example -s r -k "$T/rsa.pem" -a md5 "$m"
sign_refused "bad -c" -d err.example -s r -k "$T/rsa.pem" -c fancy/relaxed "$m"
sign_refused "bad -c" -d err.example -s r -k "$T/rsa.pem" -c relaxed/fancy "$m"
sign_refused "bad -t" -d err.example -s r -k "$T/rsa.pem" -t yesterday "$m"
sign_refused "bad -x" -d err.example -s r -k "$T/rsa.pem" -x soon "$m"
# -H without From: refused, or From signed (and oversigned) all the same.
run "$CTL" dkim sign -d err.example -s r -k "$T/rsa.pem" -H To:Subject "$m"
case $RC in
2) [ -s "$T/err" ] && [ ! -s "$T/out" ] || { show; fail "-H without From: exit 2 but no message or output"; } ;;
0) cp "$T/out" "$T/hnofrom.eml"
   sigcheck "$m" "$T/hnofrom.eml" ;;
*) show; fail "-H without From: exit $RC" ;;
esac
sign_refused "no -d" -s r -k "$T/rsa.pem" "$m"
sign_refused "no -s" -d err.example -k "$T/rsa.pem" "$m"
sign_refused "no -k" -d err.example -s r "$m"
sign_refused "option without its value" -d err.example -s r -k
sign_refused "missing input file" -d err.example -s r -k "$T/rsa.pem" "$T/no-such-message.eml"
sign_refused "two input files" -d err.example -s r -k "$T/rsa.pem" "$m" "$m"

# A header block over DKIM_HEADER_MAX (1 MiB).
"$PY" -c '
import sys
with open(sys.argv[1], "w") as f:
    f.write("From: big@err.example\n")
    for i in range(20000):
        f.write("X-Filler-%05d: %s\n" % (i, "y" * 60))
    f.write("\nbody\n")
' "$T/bighdr.eml"
sign_refused "header block over 1 MiB" -d err.example -s r -k "$T/rsa.pem" "$T/bighdr.eml"

# Other sub-commands.
expect_nonzero "$CTL" dkim frobnicate
expect_nonzero "$CTL" dkim
[ -s "$T/err" ] || fail "'signetctl dkim' alone: no usage message"

# --- verify ------------------------------------------------------------------
expect_ok "$CTL" dkim sign -d err.example -s r -k "$T/rsa.pem" "$m"
cp "$T/out" "$T/good.eml"
ctl_verify_pass "$keys" "$T/good.eml" 1

ctl_verify_fail "$keys" "$m" # unsigned
ctl_verify_fail "$keys" "$T/nofrom.eml"
mkdir -p "$T/none" "$T/revoked" "$T/wrongtype" "$T/junk" "$T/other"
ctl_verify_fail "$T/none" "$T/good.eml"
grep_out '^fail d=err\.example s=r a=rsa-sha256'
printf 'v=DKIM1; k=rsa; p=\n' >"$T/revoked/r._domainkey.err.example.txt"
ctl_verify_fail "$T/revoked" "$T/good.eml"
cp "$keys/e._domainkey.err.example.txt" "$T/wrongtype/r._domainkey.err.example.txt"
ctl_verify_fail "$T/wrongtype" "$T/good.eml"
printf 'v=DKIM1; k=rsa; p=@@@not-base64@@@\n' >"$T/junk/r._domainkey.err.example.txt"
ctl_verify_fail "$T/junk" "$T/good.eml"
mk_rsa_key "$T/other.pem" 2048 "$T/other" r err.example
ctl_verify_fail "$T/other" "$T/good.eml" # another key under the same name
run "$CTL" dkim verify --keys "$keys" "$T/no-such-message.eml"
[ "$RC" != 0 ] && [ "$RC" -lt 124 ] || { show; fail "verify of a missing file: exit $RC"; }

# Malformed signatures: each must fail (exit 1), not crash, not pass.
"$PY" - "$T/good.eml" "$T/mal" <<'EOF' || fail "malformed-signature generator"
import os, re, sys
msg = open(sys.argv[1], "rb").read()
out = sys.argv[2]
os.makedirs(out)
end = re.search(rb"\r\n(?![ \t])", msg).end()
sig, rest = msg[:end], msg[end:]
cases = {
    "no-b": re.sub(rb";\s*b=[^;]*$", b"", sig.rstrip(b"\r\n")) + b"\r\n",
    "empty-b": re.sub(rb"(;\s*)b=[^;]*$", rb"\1b=", sig.rstrip(b"\r\n")) + b"\r\n",
    "no-bh": re.sub(rb"bh=[^;]*;", b"", sig),
    "no-d": re.sub(rb"(?<![a-z])d=[^;]*;", b"", sig),
    "no-h": re.sub(rb"(?<![a-z])h=[^;]*;", b"", sig),
    "h-without-from": re.sub(rb"(?<![a-z])h=[^;]*;", b"h=to:subject;", sig),
    "v2": sig.replace(b"v=1", b"v=2"),
    "bad-a": re.sub(rb"a=rsa-sha256", b"a=rsa-sha512", sig),
    "bad-c": re.sub(rb"c=[^;]*;", b"c=fancy/relaxed;", sig),
    "dup-tag": sig.replace(b"v=1;", b"v=1; v=1;"),
    "i-outside-d": sig.replace(b"v=1;", b"v=1; i=@evil.example;"),
    "l-huge": sig.replace(b"v=1;", b"v=1; l=99999999999999999999999;"),
    "garbage": b"DKIM-Signature: ;;;;====;;; \x01\x02 \r\n",
    "empty": b"DKIM-Signature:\r\n",
    "no-equals": b"DKIM-Signature: v 1; a rsa-sha256\r\n",
    "truncated": sig[: len(sig) // 2] + b"\r\n",
    "t-not-number": re.sub(rb"t=\d+", b"t=soon", sig),
}
for k, v in cases.items():
    if v == sig:
        sys.exit("case %s changed nothing" % k)
    open("%s/%s.eml" % (out, k), "wb").write(v + rest)
EOF
for f in "$T"/mal/*.eml; do
	ctl_verify "$keys" "$f"
	if [ "$RC" != 1 ] || grep -q '^pass ' "$T/out"; then
		show
		fail "malformed signature $(basename "$f" .eml): exit $RC, wanted 1 and no pass"
	fi
done
exit 0
