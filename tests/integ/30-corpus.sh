#!/bin/bash
# corpus: every tests/corpus/*.eml, signed by signetctl with RSA-2048 and with
# Ed25519 in all four canonicalizations, is well formed (sigcheck: CRLF,
# first field, <= 78 columns, From oversigned, no l=, bh= right, message
# intact) and verifies with dkimpy, with Mail::DKIM (RSA only: Debian 12's has
# no Ed25519) and with signetctl verify.  A changed signed header value, a
# changed body byte or an added second From makes every verifier fail.
# tests/corpus/no-dkimpy/*.eml (syntax dkimpy cannot parse) go through
# Mail::DKIM and signetctl only.
. "$(dirname "$0")/lib.sh"
need_dkimpy
need_maildkim
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" rsa2048 signet.example
mk_ed25519_key "$T/ed.pem" "$keys" ed25519 signet.example
now=$(date +%s)

msgs=("$CORPUS"/*.eml)
[ ${#msgs[@]} -ge 15 ] || fail "corpus has only ${#msgs[@]} messages"
mkdir -p "$T/signed" "$T/bad"

n=0
for alg in rsa ed25519; do
	if [ $alg = rsa ]; then a=rsa-sha256 key=$T/rsa.pem sel=rsa2048; else a=ed25519-sha256 key=$T/ed.pem sel=ed25519; fi
	for c in simple/simple simple/relaxed relaxed/simple relaxed/relaxed; do
		pairs=()
		for m in "${msgs[@]}"; do
			name=$(basename "$m" .eml)
			out=$T/signed/$name.$alg.${c/\//-}.eml
			run "$CTL" dkim sign -d signet.example -s $sel -k "$key" -a $a -c $c -t "$now" "$m"
			[ "$RC" = 0 ] || { show; fail "sign $name $a $c: exit $RC"; }
			cp "$T/out" "$out"
			pairs+=("$m" "$out")
			n=$((n + 1))
		done
		sigcheck --alg $a --canon $c --domain signet.example --selector $sel --time "$now" "${pairs[@]}"
	done
done
note "signed $n messages"

# dkimpy: everything.
dkimpy_verify --keys "$keys" "$T"/signed/*.eml >"$T/py.out" ||
	{ grep -v '^pass ' "$T/py.out" >&2; fail "dkimpy does not verify every signed corpus message"; }
[ "$(grep -c '^pass ' "$T/py.out")" = $n ] || fail "dkimpy: $(grep -c '^pass ' "$T/py.out") passes, wanted $n"

# Mail::DKIM: the RSA ones.
maildkim_verify --keys "$keys" "$T"/signed/*.rsa.*.eml >"$T/pl.out" ||
	{ grep -v '^pass ' "$T/pl.out" >&2; fail "Mail::DKIM does not verify every RSA-signed corpus message"; }
[ "$(grep -c '^pass ' "$T/pl.out")" = $((n / 2)) ] || fail "Mail::DKIM: not $((n / 2)) passes"

# signetctl: everything.
for f in "$T"/signed/*.eml; do
	ctl_verify_pass "$keys" "$f" 1
done

# Tampering: every verifier fails every broken copy.
"$PY" "$INTEG/tamper.py" "$T/bad" "$T"/signed/*.eml >"$T/bad.list" || fail "tamper.py"
[ "$(wc -l <"$T/bad.list")" = $((3 * n)) ] || fail "tamper.py did not write $((3 * n)) files"
dkimpy_verify --keys "$keys" --expect-fail "$T"/bad/*.eml >"$T/py.out" ||
	{ grep '^pass ' "$T/py.out" >&2; fail "dkimpy passes a tampered message (tamper.py is broken?)"; }
maildkim_verify --keys "$keys" --expect-fail "$T"/bad/*.rsa.*.eml >"$T/pl.out" ||
	{ grep '^pass ' "$T/pl.out" >&2; fail "Mail::DKIM passes a tampered message"; }
nbad=0
for f in "$T"/bad/*.eml; do
	ctl_verify "$keys" "$f"
	if [ "$RC" != 1 ] || grep -q '^pass ' "$T/out"; then
		echo "signetctl accepts tampered $(basename "$f") (exit $RC): $(head -c 200 "$T/out")" >&2
		nbad=$((nbad + 1))
	fi
done
[ $nbad = 0 ] || fail "signetctl verify accepted $nbad tampered messages"

# tests/corpus/no-dkimpy/: obsolete syntax dkimpy cannot parse ("Subject :",
# RFC 5322 4.5.3): Mail::DKIM and signetctl only; the fields are signed, and
# a changed Subject fails.
for m in "$CORPUS"/no-dkimpy/*.eml; do
	name=$(basename "$m" .eml)
	for c in simple/simple simple/relaxed relaxed/simple relaxed/relaxed; do
		out=$T/nd.$name.${c/\//-}.eml
		expect_ok "$CTL" dkim sign -d signet.example -s rsa2048 -k "$T/rsa.pem" -c $c -H From:Subject:To:Date "$m"
		cp "$T/out" "$out"
		h=$(sed -n '1,/^[^ \t]/p' "$out" | tr -d '\r\n\t ' | grep -o ';h=[^;]*' | head -n1 | tr 'A-Z' 'a-z')
		for f in subject to date; do
			case ":${h#;h=}:" in *":$f:"*) ;; *) fail "$name $c: h=$h does not sign $f" ;; esac
		done
		maildkim_verify --keys "$keys" "$out" >"$T/pl.out" || { cat "$T/pl.out" >&2; fail "Mail::DKIM: $name $c"; }
		ctl_verify_pass "$keys" "$out" 1
		perl -pe 's/^Subject : space/Subject : spade/' "$out" >"$T/nd-bad.eml"
		cmp -s "$out" "$T/nd-bad.eml" && fail "$name: tampering did nothing"
		maildkim_verify --keys "$keys" --expect-fail "$T/nd-bad.eml" >/dev/null || fail "Mail::DKIM passes a changed Subject ($name $c)"
		ctl_verify_fail "$keys" "$T/nd-bad.eml"
	done
done
exit 0
