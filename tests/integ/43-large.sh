#!/bin/bash
# large: a ~5 MB message (whitespace-heavy text and base64, both
# canonicalizations) signs and verifies with signetctl, dkimpy and
# Mail::DKIM; a ~50 MB one signs and verifies with signetctl, its bh= matches
# an independent hash, and a changed byte near the end fails.  Each signing
# or verification stays under a time bound far above what a streaming
# implementation needs (catches quadratic behaviour, not slowness).
. "$(dirname "$0")/lib.sh"
need_dkimpy
need_maildkim
need openssl

LIMIT=${SIGNET_LARGE_LIMIT:-30} # seconds for one 50 MB sign or verify
keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" big large.example
mk_ed25519_key "$T/ed.pem" "$keys" bige large.example

# gen FILE MB - a message of about MB megabytes: text lines with runs of
# spaces and tabs and trailing whitespace, then base64, then blank lines.
gen() {
	"$PY" - "$1" "$2" <<'EOF' || fail "generator"
import base64, random, sys
path, mb = sys.argv[1], int(sys.argv[2])
r = random.Random(mb)
words = [b"alpha", b"beta  ", b"gamma\t", b"delta \t ", b"x" * 70, b"", b" "]
chunk = []
for i in range(4000):
    line = b" ".join(r.choice(words) for _ in range(r.randint(0, 14)))
    chunk.append(line[:990])
text = b"\n".join(chunk) + b"\n"
b64 = base64.encodebytes(r.randbytes(len(text) // 2))
with open(path, "wb") as f:
    f.write(b"From: Big <big@large.example>\nTo: someone@example.net\nSubject: large %d MB\n"
            b"Date: Wed, 04 Jan 2023 10:00:00 +0000\nMessage-ID: <large%d@large.example>\n\n" % (mb, mb))
    n = 0
    while n < mb * 1000000:
        f.write(text)
        f.write(b64)
        n += len(text) + len(b64)
    f.write(b"last line\n" + b"\n" * 50)
EOF
}

# --- 5 MB: every verifier ----------------------------------------------------
gen "$T/m5.eml" 5
for c in relaxed/relaxed simple/simple; do
	for k in rsa ed; do
		if [ $k = rsa ]; then s=big; else s=bige; fi
		out=$T/m5.$k.${c/\//-}.eml
		timed_run "$CTL" dkim sign -d large.example -s $s -k "$T/$k.pem" -c $c "$T/m5.eml"
		[ "$RC" = 0 ] || { show; fail "sign 5 MB $k $c: exit $RC"; }
		note "sign 5 MB $k $c: ${MSECS} ms"
		[ "$SECS" -lt $LIMIT ] || fail "sign 5 MB took ${SECS}s"
		cp "$T/out" "$out"
		ctl_verify_pass "$keys" "$out" 1
	done
done
sigcheck --canon relaxed/relaxed "$T/m5.eml" "$T/m5.rsa.relaxed-relaxed.eml" "$T/m5.eml" "$T/m5.ed.relaxed-relaxed.eml"
sigcheck --canon simple/simple "$T/m5.eml" "$T/m5.rsa.simple-simple.eml" "$T/m5.eml" "$T/m5.ed.simple-simple.eml"
dkimpy_verify --keys "$keys" "$T"/m5.*.eml >"$T/py.out" || { cat "$T/py.out" >&2; fail "dkimpy: 5 MB"; }
maildkim_verify --keys "$keys" "$T"/m5.rsa.*.eml >"$T/pl.out" || { cat "$T/pl.out" >&2; fail "Mail::DKIM: 5 MB"; }
rm -f "$T"/m5.*

# --- 50 MB: signetctl --------------------------------------------------------
gen "$T/m50.eml" 50
timed_run "$CTL" dkim sign -d large.example -s big -k "$T/rsa.pem" -c relaxed/relaxed "$T/m50.eml"
[ "$RC" = 0 ] || { show; fail "sign 50 MB: exit $RC"; }
note "sign 50 MB: ${MSECS} ms"
[ "$SECS" -lt $LIMIT ] || fail "sign 50 MB took ${SECS}s (limit $LIMIT)"
mv "$T/out" "$T/s50.eml"
sz=$(stat -c %s "$T/s50.eml")
[ "$sz" -gt 50000000 ] || fail "signed 50 MB message is only $sz bytes"

# bh= against an independent relaxed body hash (a streaming perl one; dkimpy
# is too slow for 50 MB).
want=$(perl -e '
	use Digest::SHA; my $h = Digest::SHA->new(256); my ($inbody, $blank) = (0, 0);
	open(my $fh, "<:raw", $ARGV[0]) or die;
	while (my $l = <$fh>) {
		$l =~ s/\r?\n\z//;
		if (!$inbody) { $inbody = 1 if $l eq ""; next; }
		$l =~ s/[ \t]+/ /g; $l =~ s/ \z//;
		if ($l eq "") { $blank++; next; }
		$h->add("\r\n" x $blank, $l, "\r\n"); $blank = 0;
	}
	print $h->b64digest, "=\n";' "$T/m50.eml")
got=$(sed -n '1,/^[^ \t]/p' "$T/s50.eml" | tr -d '\r\n\t ' | grep -o 'bh=[^;]*' | head -n1 | cut -d= -f2-)
[ "$got" = "$want" ] || fail "50 MB: bh=$got, independent relaxed body hash $want"

timed_run "$CTL" dkim verify --keys "$keys" "$T/s50.eml"
[ "$RC" = 0 ] && grep -q '^pass ' "$T/out" || { show; fail "verify 50 MB: exit $RC"; }
note "verify 50 MB: ${MSECS} ms"
[ "$SECS" -lt $LIMIT ] || fail "verify 50 MB took ${SECS}s (limit $LIMIT)"
timed_run "$CTL" dkim verify --keys "$keys" <"$T/s50.eml"
[ "$RC" = 0 ] || { show; fail "verify 50 MB from stdin: exit $RC"; }

# One byte changed near the end (in "last line"): fail.
perl -pi -e 's/^last line/last linE/' "$T/s50.eml"
ctl_verify_fail "$keys" "$T/s50.eml"
exit 0
