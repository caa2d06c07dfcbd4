#!/bin/bash
# options: signetctl dkim sign's options and input forms.  stdin and FILE,
# LF and CRLF input give byte-identical output (RSA and Ed25519 signing are
# deterministic); the defaults (rsa-sha256 for an RSA key, relaxed/relaxed,
# t= now); -t and -x (x = t + x; an expired signature fails in dkimpy and in
# signetctl); -H picks the signed fields (From still oversigned) and a long
# h= folds within 78 columns; a traditional "BEGIN RSA PRIVATE KEY" PEM
# signs; a key record file without a final newline or with CRLF is read.
. "$(dirname "$0")/lib.sh"
need_dkimpy
need_maildkim
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" r opt.example
mk_ed25519_key "$T/ed.pem" "$keys" e opt.example
m=$CORPUS/folded-headers.eml

# stdin == FILE, LF == CRLF, twice == once.
for k in rsa ed; do
	expect_ok "$CTL" dkim sign -d opt.example -s x -k "$T/$k.pem" -t 1700000000 "$m"
	cp "$T/out" "$T/$k.file.eml"
	run "$CTL" dkim sign -d opt.example -s x -k "$T/$k.pem" -t 1700000000 <"$m"
	[ "$RC" = 0 ] || { show; fail "$k: sign from stdin: exit $RC"; }
	cmp -s "$T/out" "$T/$k.file.eml" || fail "$k: stdin and FILE give different output"
	to_crlf "$m" "$T/crlf.eml"
	expect_ok "$CTL" dkim sign -d opt.example -s x -k "$T/$k.pem" -t 1700000000 "$T/crlf.eml"
	cmp -s "$T/out" "$T/$k.file.eml" || fail "$k: LF and CRLF input give different output"
	expect_ok "$CTL" dkim sign -d opt.example -s x -k "$T/$k.pem" -t 1700000000 "$m"
	cmp -s "$T/out" "$T/$k.file.eml" || fail "$k: two runs give different output"
done
cp "$CORPUS/no-final-newline.eml" "$T/nfn.eml"
to_crlf "$T/nfn.eml" "$T/nfn-crlf.eml"
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -t 1700000000 "$T/nfn.eml"
cp "$T/out" "$T/nfn.signed"
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -t 1700000000 "$T/nfn-crlf.eml"
cmp -s "$T/out" "$T/nfn.signed" || fail "no final newline: LF and CRLF input give different output"

# Defaults: a= from the key, c=relaxed/relaxed, t= now.
t0=$(date +%s)
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" "$m"
t1=$(date +%s)
cp "$T/out" "$T/dflt.eml"
sigcheck --alg rsa-sha256 --canon relaxed/relaxed --domain opt.example --selector r "$m" "$T/dflt.eml"
t=$(tr -d '\r\n\t ' <"$T/dflt.eml" | grep -o ';t=[0-9]*' | head -n1 | cut -d= -f2)
[ -n "$t" ] && [ "$t" -ge "$t0" ] && [ "$t" -le "$t1" ] || fail "default t=$t is not now ($t0..$t1)"
dkimpy_verify --keys "$keys" "$T/dflt.eml" >/dev/null || fail "dkimpy: default RSA signature"
ctl_verify_pass "$keys" "$T/dflt.eml" 1

# -x: x= is t + x; valid until then, expired after.
now=$(date +%s)
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -t "$now" -x 3600 "$m"
cp "$T/out" "$T/x.eml"
sigcheck --time "$now" --expire 3600 "$m" "$T/x.eml"
dkimpy_verify --keys "$keys" "$T/x.eml" >/dev/null || fail "dkimpy: a signature valid for another hour fails"
ctl_verify_pass "$keys" "$T/x.eml" 1
old=$((now - 172800)) # two days: past dkimpy's 10-hour leeway
expect_ok "$CTL" dkim sign -d opt.example -s e -k "$T/ed.pem" -t "$old" -x 3600 "$m"
cp "$T/out" "$T/expired.eml"
sigcheck --time "$old" --expire 3600 "$m" "$T/expired.eml"
dkimpy_verify --keys "$keys" --expect-fail "$T/expired.eml" >/dev/null || fail "dkimpy accepts an expired signature"
ctl_verify_fail "$keys" "$T/expired.eml"

# -H: the fields asked for, From oversigned, nothing else.
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -H From:To:Subject "$m"
cp "$T/out" "$T/h.eml"
sigcheck --headers From:To:Subject "$m" "$T/h.eml"
h=$(sed -n '1,/^[^ \t]/p' "$T/h.eml" | tr -d '\r\n\t ' | grep -o ';h=[^;]*' | head -n1 | cut -d= -f2 | tr 'A-Z' 'a-z')
[ "$(printf '%s' "$h" | tr ':' '\n' | sort | tr '\n' ' ')" = "from from subject to " ] ||
	fail "-H From:To:Subject gave h=$h, wanted from, to, subject and from again"
dkimpy_verify --keys "$keys" "$T/h.eml" >/dev/null || fail "dkimpy: -H signature"
maildkim_verify --keys "$keys" "$T/h.eml" >/dev/null || fail "Mail::DKIM: -H signature"
ctl_verify_pass "$keys" "$T/h.eml" 1
# A changed unsigned field (Date) does not matter; a changed signed one does.
sed 's/^Date: Mon, 02 Jan 2023/Date: Tue, 03 Jan 2023/' "$T/h.eml" >"$T/h-date.eml"
cmp -s "$T/h.eml" "$T/h-date.eml" && fail "Date change did nothing"
ctl_verify_pass "$keys" "$T/h-date.eml" 1
sed 's/^To: Bob/To: Rob/' "$T/h.eml" >"$T/h-to.eml"
cmp -s "$T/h.eml" "$T/h-to.eml" && fail "To change did nothing"
ctl_verify_fail "$keys" "$T/h-to.eml"
# A field that is absent may be named; the signature still verifies.
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -H From:X-Absent:Subject "$m"
cp "$T/out" "$T/h2.eml"
sigcheck "$m" "$T/h2.eml"
dkimpy_verify --keys "$keys" "$T/h2.eml" >/dev/null || fail "dkimpy: -H with an absent field"
ctl_verify_pass "$keys" "$T/h2.eml" 1

# A long h= (30 fields asked for and present) folds within 78 columns.
{
	echo "From: a@opt.example"
	H=From
	for i in $(seq 1 30); do
		echo "X-Header-Number-$i: v$i"
		H="$H:X-Header-Number-$i"
	done
	printf '\nbody\n'
} >"$T/many.eml"
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -H "$H" "$T/many.eml"
cp "$T/out" "$T/many.signed.eml"
sigcheck --headers "$H" "$T/many.eml" "$T/many.signed.eml"
dkimpy_verify --keys "$keys" "$T/many.signed.eml" >/dev/null || fail "dkimpy: long h="
maildkim_verify --keys "$keys" "$T/many.signed.eml" >/dev/null || fail "Mail::DKIM: long h="

# A traditional RSA PEM ("BEGIN RSA PRIVATE KEY") signs too.
openssl rsa -in "$T/rsa.pem" -traditional -out "$T/trad.pem" 2>/dev/null || fail "openssl rsa -traditional"
chmod 600 "$T/trad.pem"
grep -q 'BEGIN RSA PRIVATE KEY' "$T/trad.pem" || fail "openssl did not write a traditional PEM"
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/trad.pem" -t 1700000000 "$m"
cp "$T/out" "$T/trad.eml"
ctl_verify_pass "$keys" "$T/trad.eml" 1
expect_ok "$CTL" dkim sign -d opt.example -s r -k "$T/rsa.pem" -t 1700000000 "$m"
cmp -s "$T/out" "$T/trad.eml" || fail "the same key as PKCS#8 and as traditional PEM signs differently"

# Key record files without a final newline, or with CRLF, are read.
mkdir -p "$T/k2" "$T/k3"
printf '%s' "$(cat "$keys/r._domainkey.opt.example.txt")" >"$T/k2/r._domainkey.opt.example.txt"
to_crlf "$keys/r._domainkey.opt.example.txt" "$T/k3/r._domainkey.opt.example.txt"
ctl_verify_pass "$T/k2" "$T/dflt.eml" 1
ctl_verify_pass "$T/k3" "$T/dflt.eml" 1

# verify reads stdin without FILE.
run "$CTL" dkim verify --keys "$keys" <"$T/dflt.eml"
[ "$RC" = 0 ] && grep -q '^pass ' "$T/out" || { show; fail "verify from stdin"; }
exit 0
