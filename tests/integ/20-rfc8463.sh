#!/bin/bash
# rfc8463: the RFC 8463 Appendix A.3 message (an Ed25519 and an RSA signature,
# keys of A.2) verifies with signetctl; one changed body byte or header value
# makes both signatures fail; signetctl signs the same message with the A.2
# Ed25519 key so that dkimpy verifies it, with the RFC's body hash.
. "$(dirname "$0")/lib.sh"
need_dkimpy
need openssl

R=$CORPUS/rfc8463
keys=$R/keys
cp "$R/signed.eml" "$T/signed.eml"

# 0. The transcription is right: dkimpy verifies both signatures.
dkimpy_verify --keys "$keys" "$T/signed.eml" >"$T/py.out" ||
	{ cat "$T/py.out" >&2; fail "dkimpy does not verify tests/corpus/rfc8463/signed.eml: transcription error"; }
[ "$(grep -c '^pass ' "$T/py.out")" = 2 ] || fail "dkimpy: not two passing signatures"

# 1. signetctl verifies both: exit 0, two pass lines naming the right s=/a=.
ctl_verify_pass "$keys" "$T/signed.eml" 2
grep_out '^pass d=football\.example\.com s=brisbane a=ed25519-sha256( |$)'
grep_out '^pass d=football\.example\.com s=test a=rsa-sha256( |$)'
# The same from stdin, and with LF line ends.
run "$CTL" dkim verify --keys "$keys" <"$T/signed.eml"
[ "$RC" = 0 ] && [ "$(grep -c '^pass ' "$T/out")" = 2 ] || { show; fail "verify from stdin: exit $RC"; }
to_lf "$T/signed.eml" "$T/signed-lf.eml"
ctl_verify_pass "$keys" "$T/signed-lf.eml" 2

# 2. One body byte changed: both fail, exit 1.
sed 's/hungry/Hungry/' "$T/signed.eml" >"$T/body.eml"
cmp -s "$T/body.eml" "$T/signed.eml" && fail "tampering did nothing"
dkimpy_verify --keys "$keys" --expect-fail "$T/body.eml" >/dev/null || fail "dkimpy accepts the tampered body"
ctl_verify_fail "$keys" "$T/body.eml"
[ "$(grep -c '^fail ' "$T/out")" = 2 ] || { show; fail "tampered body: not two fail lines"; }

# A whitespace-only change inside a line is invisible to relaxed/relaxed.
sed 's/^We lost the game.  Are/We lost the game. \t Are/' "$T/signed.eml" >"$T/ws.eml"
cmp -s "$T/ws.eml" "$T/signed.eml" && fail "whitespace change did nothing"
ctl_verify_pass "$keys" "$T/ws.eml" 2

# 3. A signed header value changed: both fail.
sed 's/^Subject: Is dinner ready?/Subject: Is lunch ready?/' "$T/signed.eml" >"$T/hdr.eml"
cmp -s "$T/hdr.eml" "$T/signed.eml" && fail "header tampering did nothing"
ctl_verify_fail "$keys" "$T/hdr.eml"
[ "$(grep -c '^fail ' "$T/out")" = 2 ] || { show; fail "tampered header: not two fail lines"; }

# 4. A second From (From is signed twice in h=, so oversigned): both fail.
sed 's/^From: Joe SixPack/From: Mallory <m@evil.example>\r\nFrom: Joe SixPack/' "$T/signed.eml" >"$T/from2.eml"
ctl_verify_fail "$keys" "$T/from2.eml"

# 5. No keys: fail, exit 1.
mkdir -p "$T/nokeys"
ctl_verify_fail "$T/nokeys" "$T/signed.eml"

# 6. Only one of the two keys: one pass, one fail, exit 1.
mkdir -p "$T/onekey"
cp "$keys/test._domainkey.football.example.com.txt" "$T/onekey/"
ctl_verify "$T/onekey" "$T/signed.eml"
[ "$RC" = 1 ] || { show; fail "one key missing: exit $RC, wanted 1"; }
grep_out '^pass d=football\.example\.com s=test a=rsa-sha256'
grep_out '^fail d=football\.example\.com s=brisbane a=ed25519-sha256'

# 7. signetctl signs with the A.2 Ed25519 key (PEM built from the seed).
install -m 600 "$R/brisbane.pem" "$T/brisbane.pem"
[ "$(openssl pkey -in "$T/brisbane.pem" -pubout -outform DER | tail -c 32 | base64 -w0)" = \
	"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" ] || fail "brisbane.pem is not the RFC 8463 key"
expect_ok "$CTL" dkim sign -a ed25519-sha256 -d football.example.com -s brisbane \
	-c relaxed/relaxed -t 1528637909 -k "$T/brisbane.pem" "$R/unsigned.eml"
cp "$T/out" "$T/mine.eml"
sigcheck --alg ed25519-sha256 --canon relaxed/relaxed --domain football.example.com \
	--selector brisbane --time 1528637909 "$R/unsigned.eml" "$T/mine.eml"
grep -q 'bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=' "$T/mine.eml" ||
	{ head -12 "$T/mine.eml" >&2; fail "body hash differs from RFC 8463's bh=2jUSOH9N..."; }
dkimpy_verify --keys "$keys" "$T/mine.eml" >"$T/py.out" ||
	{ cat "$T/py.out" >&2; fail "dkimpy does not verify signetctl's RFC 8463 signature"; }
ctl_verify_pass "$keys" "$T/mine.eml" 1

# Ed25519 signing is deterministic: the same input gives the same bytes.
expect_ok "$CTL" dkim sign -a ed25519-sha256 -d football.example.com -s brisbane \
	-c relaxed/relaxed -t 1528637909 -k "$T/brisbane.pem" "$R/unsigned.eml"
cmp -s "$T/out" "$T/mine.eml" || fail "two Ed25519 signatures of the same message differ"

# The default algorithm for an Ed25519 key is ed25519-sha256, c= relaxed/relaxed.
expect_ok "$CTL" dkim sign -d football.example.com -s brisbane -t 1528637909 -k "$T/brisbane.pem" "$R/unsigned.eml"
cp "$T/out" "$T/dflt.eml"
sigcheck --alg ed25519-sha256 --canon relaxed/relaxed "$R/unsigned.eml" "$T/dflt.eml"
dkimpy_verify --keys "$keys" "$T/dflt.eml" >/dev/null || fail "dkimpy does not verify the default-algorithm signature"

# Signing the already-signed A.3 message adds a third signature; all verify.
expect_ok "$CTL" dkim sign -d football.example.com -s brisbane -t 1528637909 -k "$T/brisbane.pem" "$T/signed.eml"
cp "$T/out" "$T/three.eml"
sigcheck --alg ed25519-sha256 "$T/signed.eml" "$T/three.eml"
ctl_verify_pass "$keys" "$T/three.eml" 3
dkimpy_verify --keys "$keys" "$T/three.eml" >"$T/py.out" || { cat "$T/py.out" >&2; fail "dkimpy: three signatures"; }
exit 0
