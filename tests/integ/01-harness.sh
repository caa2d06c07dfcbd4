#!/bin/bash
# harness: the checkers the other scenarios lean on can fail.  With
# signatures made by dkimpy (not signetctl): sigcheck.py flags LF line ends,
# a line over 78 columns, an l= tag, From not oversigned, a wrong bh=, an
# altered message and wrong tag values; dkimpy-verify.py and
# maildkim-verify.pl pass good and fail bad signatures (and --expect-fail
# inverts); tamper.py's copies fail.  A broken harness would turn every
# scenario green.
. "$(dirname "$0")/lib.sh"
need_dkimpy
need_maildkim
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 1024 "$keys" h harness.example
m=$CORPUS/trailing-ws.eml

"$PY" - "$T" "$m" <<'EOF' || fail "dkimpy signing"
import re, sys
import dkim
T, path = sys.argv[1], sys.argv[2]
key = open(T + "/rsa.pem", "rb").read()
msg = re.sub(rb"\r?\n", b"\r\n", open(path, "rb").read())
def sign(**kw):
    kw.setdefault("canonicalize", (b"relaxed", b"relaxed"))
    return dkim.sign(msg, b"h", b"harness.example", key, **kw)
good = sign(include_headers=[b"from", b"to", b"subject", b"from"])
open(T + "/good.eml", "wb").write(good + msg)
open(T + "/lf.eml", "wb").write((good + msg).replace(b"\r\n", b"\n"))
open(T + "/notover.eml", "wb").write(sign(include_headers=[b"from", b"to"]) + msg)
open(T + "/len.eml", "wb").write(sign(include_headers=[b"from", b"from"], length=True) + msg)
long = good.replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; " + b"z" * 80 + b"=1;", 1)
open(T + "/long.eml", "wb").write(long + msg)
open(T + "/altered.eml", "wb").write(good + msg.replace(b"line", b"lime", 1))
bh = re.search(rb"bh=([^;]*);", good).group(1)
open(T + "/badbh.eml", "wb").write(good.replace(bh, b"A" * 43 + b"=") + msg)
EOF

sigok() {
	"$PY" "$INTEG/sigcheck.py" "$@" 2>"$T/sc.err" || { cat "$T/sc.err" >&2; fail "sigcheck rejects a good signature: $*"; }
}
sigbad() {
	local want=$1
	shift
	"$PY" "$INTEG/sigcheck.py" "$@" 2>"$T/sc.err" && fail "sigcheck accepts $*"
	grep -q -- "$want" "$T/sc.err" || { cat "$T/sc.err" >&2; fail "sigcheck: no '$want' for $*"; }
}
sigok --alg rsa-sha256 --canon relaxed/relaxed --domain harness.example --selector h --headers From:To:Subject "$m" "$T/good.eml"
sigbad "bare LF" "$m" "$T/lf.eml"
sigbad "oversigned" "$m" "$T/notover.eml"
sigbad "l= tag present" "$m" "$T/len.eml"
sigbad "columns" "$m" "$T/long.eml"
sigbad "message altered" "$m" "$T/altered.eml"
sigbad "body hash" "$m" "$T/badbh.eml"
sigbad "a=rsa-sha256, wanted" --alg ed25519-sha256 "$m" "$T/good.eml"
sigbad "c=relaxed/relaxed, wanted" --canon simple/simple "$m" "$T/good.eml"
sigbad "d=harness.example, wanted" --domain other.example "$m" "$T/good.eml"
sigbad "s=h, wanted" --selector x "$m" "$T/good.eml"
sigbad "t=" --time 1 "$m" "$T/good.eml"
sigbad "no x= tag" --expire 60 "$m" "$T/good.eml"
sigbad "h= lacks date" --headers From:Date "$m" "$T/good.eml"

# The verifier wrappers.
for v in dkimpy_verify maildkim_verify; do
	$v --keys "$keys" "$T/good.eml" >/dev/null || fail "$v fails a good signature"
	$v --keys "$keys" --expect-fail "$T/good.eml" >/dev/null && fail "$v --expect-fail accepts a good signature"
	$v --keys "$keys" "$T/altered.eml" >/dev/null && fail "$v passes an altered body"
	$v --keys "$keys" --expect-fail "$T/altered.eml" >/dev/null || fail "$v --expect-fail rejects a bad signature"
	$v --keys "$keys" "$T/good.eml" "$T/altered.eml" >/dev/null && fail "$v passes a list with one bad message"
	$v --keys "$keys" "$m" >/dev/null && fail "$v passes an unsigned message"
	$v --keys "$keys" --expect-fail "$m" >/dev/null && fail "$v --expect-fail accepts an unsigned message"
	$v --keys "$T/no-such-dir" "$T/good.eml" >/dev/null && fail "$v passes without the key"
done

# tamper.py: three copies, each failing in dkimpy.
mkdir -p "$T/bad"
"$PY" "$INTEG/tamper.py" "$T/bad" "$T/good.eml" >"$T/list" || fail "tamper.py"
[ "$(wc -l <"$T/list")" = 3 ] || fail "tamper.py did not write three copies"
dkimpy_verify --keys "$keys" --expect-fail "$T"/bad/*.eml >/dev/null || fail "a tamper.py copy still verifies"

# fail exits 1 with the location; need fails on a missing component.
(fail "probe") 2>"$T/f.err" && fail "fail did not exit non-zero"
grep -q '01-harness.sh:[0-9]' "$T/f.err" || fail "fail does not name the scenario line"
(need no-such-command-signet) 2>/dev/null && fail "need accepts a missing command"
exit 0
