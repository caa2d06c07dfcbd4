#!/bin/bash
# opendkim: OpenDKIM (Debian package opendkim; `opendkim -t FILE` test mode,
# keys from a TestPublicKeys file, no DNS) verifies corpus messages signed by
# signetctl: RSA-2048 in relaxed/relaxed and relaxed/simple, Ed25519 in
# relaxed/relaxed, and a message with both; a changed body byte fails.
# Simple header canonicalization only on a plain message: the test mode
# rebuilds header fields milter-style ("Name: value"), which breaks
# simple-header signatures of fields like "Subject:x" or folded ones, dkimpy's
# as much as signetctl's.
# OPENDKIM names the binary (default: opendkim on PATH, or /usr/sbin/opendkim).
. "$(dirname "$0")/lib.sh"
need openssl

ODK=${OPENDKIM:-$(command -v opendkim || echo /usr/sbin/opendkim)}
[ -x "$ODK" ] || fail "missing component: opendkim (Debian package opendkim: add it to scripts/deps.sh)"

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" odr odk.example
mk_ed25519_key "$T/ed.pem" "$keys" ode odk.example
for f in "$keys"/*.txt; do
	printf '%s %s\n' "$(basename "$f" .txt)" "$(tr -d '\r\n' <"$f")"
done >"$T/pubkeys"
cat >"$T/opendkim.conf" <<EOF
Syslog no
Mode v
TestPublicKeys $T/pubkeys
MinimumKeyBits 1024
EOF

# odk_verify FILE - opendkim's verdict for each signature, from the
# Authentication-Results it would add: "pass" per line in $T/odk.res.
odk_verify() {
	"$ODK" -vv -x "$T/opendkim.conf" -t "$1" >"$T/odk.out" 2>"$T/odk.err"
	ODK_RC=$?
	grep -o 'dkim=[a-z]*' "$T/odk.out" | cut -d= -f2 >"$T/odk.res"
}

# Sanity: opendkim really verifies here, and really fails a bad signature.
printf 'From: a@odk.example\nTo: b@example.net\nSubject: sanity\n\nbody\n' >"$T/sanity.eml"
expect_ok "$CTL" dkim sign -d odk.example -s odr -k "$T/rsa.pem" "$T/sanity.eml"
cp "$T/out" "$T/sanity.signed.eml"
odk_verify "$T/sanity.signed.eml"
[ "$ODK_RC" = 0 ] && [ "$(cat "$T/odk.res")" = pass ] ||
	{ cat "$T/odk.out" "$T/odk.err" >&2; fail "opendkim does not pass a simple RSA signature"; }
for c in simple/simple simple/relaxed; do
	expect_ok "$CTL" dkim sign -d odk.example -s odr -k "$T/rsa.pem" -c $c "$T/sanity.eml"
	cp "$T/out" "$T/sanity.c.eml"
	odk_verify "$T/sanity.c.eml"
	[ "$(cat "$T/odk.res")" = pass ] || { cat "$T/odk.out" "$T/odk.err" >&2; fail "opendkim: $c"; }
done
sed 's/^body/bodY/' "$T/sanity.signed.eml" >"$T/sanity.bad.eml"
odk_verify "$T/sanity.bad.eml"
[ "$(cat "$T/odk.res")" = fail ] || { cat "$T/odk.out" "$T/odk.err" >&2; fail "opendkim passes a changed body"; }

nbad=0
for m in "$CORPUS"/*.eml; do
	name=$(basename "$m" .eml)
	for v in "odr rsa relaxed/simple" "odr rsa relaxed/relaxed" "ode ed relaxed/relaxed"; do
		set -- $v
		run "$CTL" dkim sign -d odk.example -s $1 -k "$T/$2.pem" -c $3 "$m"
		[ "$RC" = 0 ] || { show; fail "sign $name $2 $3"; }
		cp "$T/out" "$T/s.eml"
		odk_verify "$T/s.eml"
		if [ "$(cat "$T/odk.res")" != pass ]; then
			echo "opendkim: $name $2 $3: $(tr '\n' ' ' <"$T/odk.res") $(grep -i 'verification' "$T/odk.err" "$T/odk.out" | head -2)" >&2
			nbad=$((nbad + 1))
		fi
	done
	# Both signatures on one message.
	expect_ok "$CTL" dkim sign -d odk.example -s ode -k "$T/ed.pem" "$T/s.eml"
	cp "$T/out" "$T/s2.eml"
	odk_verify "$T/s2.eml"
	if [ "$(sort "$T/odk.res" | tr '\n' ' ')" != "pass pass " ]; then
		echo "opendkim: $name two signatures: $(tr '\n' ' ' <"$T/odk.res")" >&2
		nbad=$((nbad + 1))
	fi
done
[ $nbad = 0 ] || fail "opendkim rejects $nbad signetctl-signed corpus messages"
exit 0
