#!/bin/bash
# multi: a message signed twice by signetctl (RSA, then Ed25519 over the
# result) has two signatures, newest first, that all verifiers pass; each
# signature counts the From fields right (oversigned once).  Eight
# signatures (DKIM_MAX_SIGS), alternating keys and canonicalizations, all
# pass.  A changed body byte fails every signature.  Nine signatures whose
# oldest fails must not verify as "all pass".
. "$(dirname "$0")/lib.sh"
need_dkimpy
need_maildkim
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" r multi.example
mk_ed25519_key "$T/ed.pem" "$keys" e multi.example
m=$CORPUS/duplicate-headers.eml

expect_ok "$CTL" dkim sign -d multi.example -s r -k "$T/rsa.pem" -a rsa-sha256 "$m"
cp "$T/out" "$T/one.eml"
sigcheck --alg rsa-sha256 --selector r "$m" "$T/one.eml"
expect_ok "$CTL" dkim sign -d multi.example -s e -k "$T/ed.pem" -a ed25519-sha256 "$T/one.eml"
cp "$T/out" "$T/two.eml"
sigcheck --alg ed25519-sha256 --selector e "$T/one.eml" "$T/two.eml"
[ "$(grep -c '^DKIM-Signature:' "$T/two.eml")" = 2 ] || fail "not two DKIM-Signature fields"

ctl_verify_pass "$keys" "$T/two.eml" 2
grep_out '^pass d=multi\.example s=r a=rsa-sha256'
grep_out '^pass d=multi\.example s=e a=ed25519-sha256'
dkimpy_verify --keys "$keys" "$T/two.eml" >"$T/py.out" || { cat "$T/py.out" >&2; fail "dkimpy: two signatures"; }
[ "$(grep -c '^pass ' "$T/py.out")" = 2 ] || fail "dkimpy: not two passes"
maildkim_verify --keys "$keys" "$T/two.eml" >"$T/pl.out" || { cat "$T/pl.out" >&2; fail "Mail::DKIM: the RSA signature"; }
grep -q '^pass .* a=rsa-sha256' "$T/pl.out" || fail "Mail::DKIM: no RSA pass"

# The second signing only put a field in front of the first signed message.
cmp -s <(tail -c "$(stat -c %s "$T/one.eml")" "$T/two.eml") "$T/one.eml" ||
	fail "the second signing changed the first signed message"

# A changed body byte: both fail.
sed 's/two Subject/two Subjekt/' "$T/two.eml" >"$T/two-bad.eml"
cmp -s "$T/two.eml" "$T/two-bad.eml" && fail "tampering did nothing"
ctl_verify_fail "$keys" "$T/two-bad.eml"
[ "$(grep -c '^fail ' "$T/out")" = 2 ] || { show; fail "not two fail lines"; }
dkimpy_verify --keys "$keys" --expect-fail "$T/two-bad.eml" >/dev/null || fail "dkimpy passes the tampered message"

# Eight signatures.
cp "$m" "$T/m0.eml"
cs=(simple/simple relaxed/relaxed simple/relaxed relaxed/simple)
for i in 1 2 3 4 5 6 7 8; do
	if [ $((i % 2)) = 1 ]; then k=rsa s=r; else k=ed s=e; fi
	expect_ok "$CTL" dkim sign -d multi.example -s $s -k "$T/$k.pem" -c "${cs[$((i % 4))]}" "$T/m$((i - 1)).eml"
	cp "$T/out" "$T/m$i.eml"
	sigcheck --canon "${cs[$((i % 4))]}" "$T/m$((i - 1)).eml" "$T/m$i.eml"
done
ctl_verify_pass "$keys" "$T/m8.eml" 8
dkimpy_verify --keys "$keys" "$T/m8.eml" >"$T/py.out" || { cat "$T/py.out" >&2; fail "dkimpy: eight signatures"; }
maildkim_verify --keys "$keys" "$T/m8.eml" >"$T/pl.out" || { cat "$T/pl.out" >&2; fail "Mail::DKIM: eight signatures"; }

# Nine signatures, the oldest one unverifiable (no key for s=gone): verify
# checks "every signature", so it must not exit 0 as if all had passed
# (a fail line for it, or a refusal of the message).
expect_ok "$CTL" dkim sign -d multi.example -s gone -k "$T/rsa.pem" "$m"
cp "$T/out" "$T/n0.eml"
for i in 1 2 3 4 5 6 7 8; do
	expect_ok "$CTL" dkim sign -d multi.example -s e -k "$T/ed.pem" "$T/n$((i - 1)).eml"
	cp "$T/out" "$T/n$i.eml"
done
[ "$(grep -c '^DKIM-Signature:' "$T/n8.eml")" = 9 ] || fail "not nine signatures"
ctl_verify "$keys" "$T/n8.eml"
if [ "$RC" = 0 ]; then
	show
	fail "verify exits 0 on nine signatures whose 9th (s=gone, no key) fails: the ones past DKIM_MAX_SIGS are neither checked nor reported"
fi
exit 0
