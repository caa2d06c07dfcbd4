#!/bin/bash
# random: seeded "whitespace soup" messages (runs of spaces and tabs at every
# offset around the 16/32/64-byte widths of the SIMD scanners, trailing
# whitespace, whitespace-only and empty lines, long lines) signed by
# signetctl in relaxed/relaxed and simple/simple verify with dkimpy, their
# bh= matches dkimpy's canonicalizer (sigcheck) and signetctl verifies them.
# SIGNET_RANDOM_SEED picks another seed (printed on failure).
. "$(dirname "$0")/lib.sh"
need_dkimpy
need openssl

seed=${SIGNET_RANDOM_SEED:-6376}
note "seed $seed"
keys=$T/keys
mk_ed25519_key "$T/ed.pem" "$keys" soup random.example
mkdir -p "$T/in" "$T/signed"

"$PY" - "$T/in" "$seed" <<'EOF' || fail "generator"
import random, sys
out, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
WS = [" ", "\t", "  ", " \t", "\t ", "   ", "\t\t", " " * 17, "\t" * 9]
def line():
    kind = r.random()
    if kind < 0.1:
        return ""
    if kind < 0.2:
        return "".join(r.choice(WS) for _ in range(r.randint(1, 6)))
    width = r.choice([1, 7, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 95, 127, 128, 129, 200, 500, 990])
    s = []
    while sum(map(len, s)) < width:
        s.append(r.choice(WS) if r.random() < 0.35 else "x" * r.randint(1, 40))
    t = "".join(s)[:width]
    if r.random() < 0.3:
        t += r.choice(WS)
    return t
for i in range(60):
    hdr = ["From: Soup %d <soup%d@random.example>" % (i, i),
           "To:%sreader@example.net" % r.choice(["", " ", "\t", "   "]),
           "Subject:%ssoup%s%d%s" % (r.choice(WS), r.choice(WS), i, r.choice(["", " ", "\t "])),
           "Date: Tue, 03 Jan 2023 1%d:00:00 +0000" % (i % 10)]
    if r.random() < 0.5:
        hdr.append("X-Fold: a\n%sb%s\n%sc" % (r.choice(WS), r.choice(WS), r.choice(WS)))
    body = [line() for _ in range(r.randint(0, 80))]
    body += [r.choice(["", " ", "\t"]) for _ in range(r.randint(0, 5))]
    with open("%s/soup%02d.eml" % (out, i), "w") as f:
        f.write("\n".join(hdr) + "\n\n" + "\n".join(body) + ("\n" if body else ""))
EOF

for c in relaxed/relaxed simple/simple; do
	pairs=()
	for m in "$T"/in/*.eml; do
		out=$T/signed/$(basename "$m" .eml).${c/\//-}.eml
		run "$CTL" dkim sign -d random.example -s soup -k "$T/ed.pem" -c $c -t 1700000000 "$m"
		[ "$RC" = 0 ] || { show; fail "sign $(basename "$m") $c (seed $seed)"; }
		cp "$T/out" "$out"
		pairs+=("$m" "$out")
	done
	sigcheck --alg ed25519-sha256 --canon $c "${pairs[@]}" || fail "seed $seed"
done

# every scanner (scalar, SSE4.2, AVX2, AVX-512) must give byte-identical output:
# Ed25519 signatures are deterministic, so the whole signed file must match
for m in "$T"/in/*.eml; do
	want=$T/signed/$(basename "$m" .eml).relaxed-relaxed.eml
	for lv in scalar sse4.2 avx2 avx512; do
		SIGNET_SIMD=$lv "$CTL" dkim sign -d random.example -s soup -k "$T/ed.pem" \
			-c relaxed/relaxed -t 1700000000 "$m" >"$T/simd.out" ||
			fail "sign with SIGNET_SIMD=$lv"
		cmp -s "$T/simd.out" "$want" ||
			fail "SIGNET_SIMD=$lv output differs for $(basename "$m") (seed $seed)"
	done
done

dkimpy_verify --keys "$keys" "$T"/signed/*.eml >"$T/py.out" ||
	{ grep -v '^pass ' "$T/py.out" >&2; fail "dkimpy rejects some signetctl signatures (seed $seed)"; }
for f in "$T"/signed/*.eml; do
	ctl_verify_pass "$keys" "$f" 1
done
exit 0
