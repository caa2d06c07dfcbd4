#!/bin/bash
# cross: messages signed by dkimpy verify with `signetctl dkim verify --keys`:
# every corpus message, RSA-2048 and Ed25519, all four canonicalizations
# (dkimpy's default h=, From oversigned), plus l= and i= tags, every field
# signed, RSA-1024 and RSA-4096 keys.  Tampered copies (a signed header value,
# a body byte, a second From) fail.  Per RFC 8301, rsa-sha1 and an RSA key
# under 1024 bits fail.
. "$(dirname "$0")/lib.sh"
need_dkimpy
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" py2048 cross.example
mk_rsa_key "$T/rsa1024.pem" 1024 "$keys" py1024 cross.example
mk_rsa_key "$T/rsa4096.pem" 4096 "$keys" py4096 cross.example
mk_ed25519_key "$T/ed.pem" "$keys" pyed cross.example
# RFC 8301: too short a key.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:512 -out "$T/rsa512.pem" 2>/dev/null || fail "openssl 512"
printf 'v=DKIM1; k=rsa; p=%s\n' "$(openssl pkey -in "$T/rsa512.pem" -pubout -outform DER | base64 -w0)" \
	>"$keys/py512._domainkey.cross.example.txt"
mkdir -p "$T/good" "$T/bad" "$T/refused"

"$PY" - "$T" "$CORPUS" <<'EOF' || fail "dkimpy signing"
import glob, os, re, sys
import dkim
T, corpus = sys.argv[1], sys.argv[2]
rsa = open(T + "/rsa.pem", "rb").read()
seed = open(T + "/ed.pem.seed", "rb").read().strip()
n = 0
def put(d, name, sig, msg):
    global n
    with open("%s/%s/%s.eml" % (T, d, name), "wb") as f:
        f.write(sig + msg)
    n += 1
for path in sorted(glob.glob(corpus + "/*.eml")):
    name = os.path.basename(path)[:-4]
    msg = re.sub(rb"\r?\n", b"\r\n", open(path, "rb").read())
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    for c in (b"simple/simple", b"simple/relaxed", b"relaxed/simple", b"relaxed/relaxed"):
        canon = tuple(c.split(b"/"))
        cc = c.decode().replace("/", "-")
        put("good", "%s.rsa.%s" % (name, cc),
            dkim.sign(msg, b"py2048", b"cross.example", rsa, canonicalize=canon), msg)
        put("good", "%s.ed25519.%s" % (name, cc),
            dkim.sign(msg, b"pyed", b"cross.example", seed, canonicalize=canon,
                      signature_algorithm=b"ed25519-sha256"), msg)
    # l= (body length) and an explicit i=
    put("good", name + ".len", dkim.sign(msg, b"py2048", b"cross.example", rsa, length=True,
        identity=b"sender@sub.cross.example", canonicalize=(b"relaxed", b"relaxed")), msg)
    # every field signed (Received etc. excepted by dkimpy), through a DKIM object
    d = dkim.DKIM(msg)
    put("good", name + ".all", d.sign(b"pyed", b"cross.example", seed, signature_algorithm=b"ed25519-sha256",
        include_headers=d.all_sign_headers() + [b"from"]), msg)
msg = re.sub(rb"\r?\n", b"\r\n", open(corpus + "/mime-multipart.eml", "rb").read())
put("good", "k1024", dkim.sign(msg, b"py1024", b"cross.example", open(T + "/rsa1024.pem", "rb").read()), msg)
put("good", "k4096", dkim.sign(msg, b"py4096", b"cross.example", open(T + "/rsa4096.pem", "rb").read()), msg)
put("refused", "sha1", dkim.sign(msg, b"py2048", b"cross.example", rsa, signature_algorithm=b"rsa-sha1"), msg)
put("refused", "k512", dkim.sign(msg, b"py512", b"cross.example", open(T + "/rsa512.pem", "rb").read()), msg)
print(n)
EOF

ngood=$(ls "$T"/good | wc -l)
[ "$ngood" -ge 200 ] || fail "only $ngood dkimpy-signed messages"
# dkimpy agrees with itself (a sanity check of the keys dir).
dkimpy_verify --keys "$keys" "$T"/good/*.eml >"$T/py.out" ||
	{ grep -v '^pass' "$T/py.out" >&2; fail "dkimpy does not verify its own signatures"; }

nbad=0
for f in "$T"/good/*.eml; do
	run "$CTL" dkim verify --keys "$keys" "$f"
	if [ "$RC" != 0 ] || ! grep -q '^pass ' "$T/out" || grep -q '^fail ' "$T/out"; then
		echo "signetctl rejects dkimpy's $(basename "$f") (exit $RC): $(head -c 300 "$T/out"; head -c 300 "$T/err")" >&2
		nbad=$((nbad + 1))
	fi
done
[ $nbad = 0 ] || fail "signetctl verify rejects $nbad of $ngood messages signed by dkimpy"

"$PY" "$INTEG/tamper.py" "$T/bad" "$T"/good/*.eml >/dev/null || fail "tamper.py"
# With l=0 (an empty canonical body) added body bytes are outside the signature.
for f in "$T"/good/*.len.eml; do
	tr -d '\r\n\t ' <"$f" | grep -q ';l=0;' && rm -f "$T/bad/$(basename "$f" .eml).body.eml"
done
dkimpy_verify --keys "$keys" --expect-fail "$T"/bad/*.eml >"$T/py.out" ||
	{ grep '^pass ' "$T/py.out" >&2; fail "dkimpy passes a tampered message (tamper.py broken?)"; }
nbad=0
for f in "$T"/bad/*.eml; do
	ctl_verify "$keys" "$f"
	if [ "$RC" != 1 ] || grep -q '^pass ' "$T/out"; then
		echo "signetctl accepts tampered $(basename "$f") (exit $RC)" >&2
		nbad=$((nbad + 1))
	fi
done
[ $nbad = 0 ] || fail "signetctl verify accepts $nbad tampered messages"

for f in "$T"/refused/*.eml; do
	ctl_verify_fail "$keys" "$f"
	grep -q '^fail ' "$T/out" || { show; fail "$(basename "$f"): no fail line"; }
done
exit 0
