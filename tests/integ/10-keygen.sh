#!/bin/bash
# keygen: `signetctl dkim keygen` writes a usable private key (PEM, mode 0600
# whatever the umask) and prints the matching DNS TXT value; the key signs a
# message that dkimpy and signetctl verify with that TXT value; bad sizes,
# algorithms and options are refused with a message and leave no key file.
. "$(dirname "$0")/lib.sh"
need openssl
need_dkimpy

umask 022
keys=$T/keys
mkdir -p "$keys"
printf 'From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: keygen round trip\n\nHello.\n' >"$T/msg.eml"

# txt_tag TXTFILE TAG - the value of one tag of a TXT record.
txt_tag() {
	"$PY" - "$1" "$2" <<'EOF'
import sys
txt = open(sys.argv[1]).read().strip()
tags = {}
for part in txt.split(";"):
    if part.strip():
        k, _, v = part.partition("=")
        tags[k.strip()] = "".join(v.split())
print(tags.get(sys.argv[2], "<none>"))
EOF
}

# check_key NAME ALG BITS - key file, TXT value, round trip.
check_key() {
	local name=$1 alg=$2 bits=$3 key=$T/$1.pem txt=$T/$1.txt
	note "key $name: $alg $bits"
	[ -e "$key" ] || fail "$name: no key file written"
	[ "$(stat -c %a "$key")" = 600 ] || fail "$name: key file mode is $(stat -c %a "$key"), not 600 (umask 022)"
	grep -q -- '-----BEGIN .*PRIVATE KEY-----' "$key" || fail "$name: key file is not a PEM private key"
	openssl pkey -in "$key" -noout 2>/dev/null || fail "$name: openssl cannot read the key file"

	# stdout: exactly the TXT value, one line.
	[ "$(grep -c . "$txt")" = 1 ] || { cat "$txt" >&2; fail "$name: stdout is not exactly one TXT line"; }
	grep -Eq '^v=DKIM1;' "$txt" || { cat "$txt" >&2; fail "$name: TXT value does not start with v=DKIM1;"; }
	[ "$(txt_tag "$txt" k)" = "$alg" ] || { cat "$txt" >&2; fail "$name: TXT k= is not $alg"; }
	local p
	p=$(txt_tag "$txt" p)
	printf '%s' "$p" | base64 -d >"$T/$name.p.der" 2>/dev/null || fail "$name: p= is not base64: $p"

	if [ "$alg" = rsa ]; then
		local txtbits
		txtbits=$(openssl pkey -in "$key" -noout -text 2>/dev/null | sed -n 's/.*Private-Key: (\([0-9]*\) bit.*/\1/p')
		[ "$txtbits" = "$bits" ] || fail "$name: key has $txtbits bits, wanted $bits"
		# p= must be the public half of this key (SubjectPublicKeyInfo, or
		# PKCS#1 RSAPublicKey, which verifiers accept too).
		openssl pkey -in "$key" -pubout -outform DER -out "$T/$name.spki.der" 2>/dev/null
		if ! cmp -s "$T/$name.p.der" "$T/$name.spki.der"; then
			openssl rsa -RSAPublicKey_in -inform DER -in "$T/$name.p.der" -pubout -outform DER \
				-out "$T/$name.p2.der" 2>/dev/null &&
				cmp -s "$T/$name.p2.der" "$T/$name.spki.der" ||
				fail "$name: TXT p= is not the public key of the key file"
			note "$name: p= is PKCS#1 RSAPublicKey, not SubjectPublicKeyInfo"
		fi
	else
		openssl pkey -in "$key" -noout -text 2>/dev/null | grep -q ED25519 || fail "$name: key file is not Ed25519"
		[ "$(stat -c %s "$T/$name.p.der")" = 32 ] || fail "$name: ed25519 p= is not 32 raw bytes (RFC 8463)"
		openssl pkey -in "$key" -pubout -outform DER 2>/dev/null | tail -c 32 | cmp -s - "$T/$name.p.der" ||
			fail "$name: TXT p= is not the public key of the key file"
	fi

	# Round trip: the TXT as printed is the key record.
	cp "$txt" "$keys/$name._domainkey.example.org.txt"
	expect_ok "$CTL" dkim sign -d example.org -s "$name" -k "$key" "$T/msg.eml"
	cp "$T/out" "$T/$name.signed.eml"
	dkimpy_verify --keys "$keys" "$T/$name.signed.eml" || fail "$name: dkimpy does not verify a message signed with the new key"
	ctl_verify_pass "$keys" "$T/$name.signed.eml" 1
}

for spec in "rsa1024 rsa 1024" "rsa2048 rsa 2048" "rsa4096 rsa 4096"; do
	set -- $spec
	expect_ok "$CTL" dkim keygen -a rsa -b "$3" -o "$T/$1.pem"
	cp "$T/out" "$T/$1.txt"
	check_key "$1" rsa "$3"
done

expect_ok "$CTL" dkim keygen -a ed25519 -o "$T/ed.pem"
cp "$T/out" "$T/ed.txt"
check_key ed ed25519 256

# Defaults (no -a, no -b): some usable key, TXT matching it.
expect_ok "$CTL" dkim keygen -o "$T/dflt.pem"
cp "$T/out" "$T/dflt.txt"
dalg=$(txt_tag "$T/dflt.txt" k)
case $dalg in
rsa) check_key dflt rsa "$(openssl pkey -in "$T/dflt.pem" -noout -text 2>/dev/null | sed -n 's/.*Private-Key: (\([0-9]*\) bit.*/\1/p')" ;;
ed25519) check_key dflt ed25519 256 ;;
*) fail "default keygen: TXT k= is '$dalg'" ;;
esac

# Refusals: a message on stderr, and no key file left behind.
for bad in "-a rsa -b 512" "-a rsa -b 8192" "-a rsa -b 1023x" "-a dsa" "-a rsa -b"; do
	rm -f "$T/bad.pem"
	expect_nonzero "$CTL" dkim keygen $bad -o "$T/bad.pem"
	[ -s "$T/err" ] || fail "keygen $bad: failed without a message on stderr"
	[ ! -e "$T/bad.pem" ] || fail "keygen $bad: left a key file behind"
done
expect_nonzero "$CTL" dkim keygen -a rsa -b 2048
[ -s "$T/err" ] || fail "keygen without -o: no message on stderr"
expect_nonzero "$CTL" dkim keygen -a rsa -b 2048 -o "$T/no/such/dir/k.pem"
[ -s "$T/err" ] || fail "keygen into a missing directory: no message on stderr"

# Over an existing world-readable file: either refused (file untouched) or
# replaced by a 0600 key.
mkdir -p "$T/pre"
echo "old content" >"$T/pre/k.pem"
chmod 644 "$T/pre/k.pem"
run "$CTL" dkim keygen -a ed25519 -o "$T/pre/k.pem"
if [ "$RC" = 0 ]; then
	[ "$(stat -c %a "$T/pre/k.pem")" = 600 ] || fail "keygen over a 0644 file left mode $(stat -c %a "$T/pre/k.pem")"
	openssl pkey -in "$T/pre/k.pem" -noout 2>/dev/null || fail "keygen over an existing file: not a key"
else
	[ "$(cat "$T/pre/k.pem")" = "old content" ] || fail "keygen refused to overwrite but changed the file"
fi
# No temporary files left beside the keys.
extra=$(ls -A "$T/pre" | grep -v '^k\.pem$')
[ -z "$extra" ] || fail "keygen left files behind: $extra"

# Two keygens give two different keys.
cmp -s "$T/rsa2048.txt" "$T/rsa1024.txt" && fail "two RSA keys with the same TXT"
expect_ok "$CTL" dkim keygen -a ed25519 -o "$T/ed2.pem"
cmp -s "$T/out" "$T/ed.txt" && fail "two Ed25519 keygens gave the same key"
exit 0
