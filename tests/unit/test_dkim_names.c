/*
 * test_dkim_names.c - unit tests of dkim/names.c: enc(domain) and its
 * inverse, the selectorN-enc(domain) names with the hashed form at the
 * 63-octet boundary, and the verifier-side alignment check (issue 5).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim.h"
#include "tests/unit/test.h"

/* A small deterministic generator (xorshift64*), so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned
rng(unsigned n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (unsigned)((rng_state * 0x2545f4914f6cdd1dULL) >> 33) % n;
}

/* enc_shape_ok - no leading/trailing '-', dash runs of 1 or an even length. */
static int
enc_shape_ok(const char *e)
{
	size_t i = 0, run, n = strlen(e);

	if (n == 0 || e[0] == '-' || e[n - 1] == '-')
		return 0;
	while (i < n) {
		for (run = 0; i < n && e[i] == '-'; i++)
			run++;
		if (run > 1 && run % 2 != 0)
			return 0;
		if (run == 0)
			i++;
	}
	return 1;
}

/* gen_label - a random valid label of len octets (1..63) into out. */
static void
gen_label(char *out, size_t len)
{
	static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	size_t i = 0;

	if (len >= 5 && rng(4) == 0) {          /* an A-label */
		memcpy(out, "xn--", 4);
		i = 4;
	}
	for (; i < len; i++) {
		if (i > 0 && i + 1 < len && rng(3) == 0)
			out[i] = '-';           /* runs of dashes happen */
		else
			out[i] = alnum[rng(sizeof(alnum) - 1)];
	}
	out[len] = '\0';
}

/* gen_domain - a random valid host name of at most max octets (>= 1). */
static void
gen_domain(char *out, size_t max)
{
	char label[64];
	size_t len = 0, want;

	for (;;) {
		switch (rng(4)) {
		case 0: want = 1; break;
		case 1: want = 63; break;
		default: want = 1 + rng(20); break;
		}
		if (len > 0 && len + 1 + 1 > max)
			break;
		if (len > 0 && len + 1 + want > max)
			want = max - len - 1;
		if (len == 0 && want > max)
			want = max;
		gen_label(label, want);
		if (len > 0)
			out[len++] = '.';
		memcpy(out + len, label, want);
		len += want;
		out[len] = '\0';
		if (rng(3) == 0)
			break;
	}
}

/* check_roundtrip - every property a valid domain must have. */
static void
check_roundtrip(const char *dom)
{
	char enc[DKIM_ENC_BUFSIZE], back[256], up[300], sel[DKIM_SELECTOR_BUFSIZE];
	char enc2[DKIM_ENC_BUFSIZE];
	size_t i, n = strlen(dom);
	int slot;

	if (dkim_domain_encode(dom, enc, sizeof(enc)) != 0)
		T_FAIL("encode refused the valid \"%s\"", dom);
	if (!enc_shape_ok(enc))
		T_FAIL("enc(%s) = \"%s\" has a bad shape", dom, enc);
	T_OK(dkim_domain_decode(enc, back, sizeof(back)));
	T_STREQ(back, dom);
	/* upper case and a trailing dot encode the same */
	for (i = 0; i < n; i++)
		up[i] = rng(2) ? (char)(dom[i] >= 'a' && dom[i] <= 'z' ?
		    dom[i] - 32 : dom[i]) : dom[i];
	up[n] = '.';
	up[n + 1] = '\0';
	T_OK(dkim_domain_encode(up, enc2, sizeof(enc2)));
	T_STREQ(enc2, enc);
	for (slot = 1; slot <= 2; slot++) {
		int s2 = 0, rc;

		T_OK(dkim_selector_name(slot, dom, sel, sizeof(sel)));
		T_TRUE(strlen(sel) <= 63);
		rc = dkim_selector_parse(sel, &s2, back, sizeof(back));
		T_EQ(s2, slot);
		if (strlen(enc) <= DKIM_ENC_PLAIN_MAX) {
			T_EQ(strlen(sel), 10 + strlen(enc));
			T_TRUE(strcmp(sel + 10, enc) == 0);
			T_OK(rc);
			T_STREQ(back, dom);
		} else {
			T_EQ(strlen(sel), 38);
			T_TRUE(strncmp(sel + 9, "---", 3) == 0);
			T_EQ(rc, DKIM_EHASHED_NAME);
			T_EQ(dkim_domain_decode(sel + 10, back, sizeof(back)),
			    DKIM_EHASHED_NAME);
		}
	}
}

TEST(dkim_names_examples)
{
	static const struct { const char *dom, *enc; } ex[] = {
		{ "fabrikam.com", "fabrikam-com" },
		{ "my-domain.co.uk", "my--domain-co-uk" },
		{ "xn--bcher-kva.example", "xn----bcher--kva-example" },
		{ "microsoft.com", "microsoft-com" },
		{ "FabriKam.COM.", "fabrikam-com" },
		{ "a", "a" },
		{ "a.b", "a-b" },
		{ "a--b.c", "a----b-c" },
		{ "0.9", "0-9" },
	};
	char out[DKIM_ENC_BUFSIZE], back[256];
	size_t i;

	for (i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
		T_OK(dkim_domain_encode(ex[i].dom, out, sizeof(out)));
		T_STREQ(out, ex[i].enc);
		T_OK(dkim_domain_decode(ex[i].enc, back, sizeof(back)));
		T_OK(dkim_domain_normalize(ex[i].dom, out, sizeof(out)));
		T_STREQ(back, out);
	}
	T_OK(dkim_selector_name(1, "fabrikam.com", out, sizeof(out)));
	T_STREQ(out, "selector1-fabrikam-com");
	T_OK(dkim_selector_name(2, "Microsoft.com", out, sizeof(out)));
	T_STREQ(out, "selector2-microsoft-com");
	T_OK(dkim_selector_name(1, "xn--bcher-kva.example", out, sizeof(out)));
	T_STREQ(out, "selector1-xn----bcher--kva-example");
}

TEST(dkim_names_invalid)
{
	static const char *const bad[] = {
		"", ".", "..", "a..b", ".a", "a.b..", "-a.com", "a-.com",
		"a.-b", "a.b-", "a_b.com", "_dmarc.a.com", "a b.com", "a\tb",
		"b\xc3\xbc" "cher.example", "\x80.com", "a.com\xff",
		"a@b.com", "a/b", "a:b", "*.a.com",
		/* 64-octet label */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
	};
	char name[300], out[DKIM_ENC_BUFSIZE], sel[DKIM_SELECTOR_BUFSIZE];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (dkim_domain_encode(bad[i], out, sizeof(out)) != DKIM_EINVAL)
			T_FAIL("encode accepted \"%s\"", bad[i]);
		T_EQ(dkim_selector_name(1, bad[i], sel, sizeof(sel)),
		    DKIM_EINVAL);
	}
	T_EQ(dkim_domain_encode(NULL, out, sizeof(out)), DKIM_EINVAL);
	/* 253 octets is fine, 254 is not (with or without a trailing dot) */
	memset(name, 'a', 253);
	for (i = 63; i < 253; i += 64)
		name[i] = '.';
	name[253] = '\0';
	T_OK(dkim_domain_encode(name, out, sizeof(out)));
	name[253] = '.';
	name[254] = '\0';
	T_OK(dkim_domain_encode(name, out, sizeof(out)));
	name[253] = 'a';
	T_EQ(dkim_domain_encode(name, out, sizeof(out)), DKIM_EINVAL);
	/* slots */
	T_EQ(dkim_selector_name(0, "a.com", sel, sizeof(sel)), DKIM_EINVAL);
	T_EQ(dkim_selector_name(3, "a.com", sel, sizeof(sel)), DKIM_EINVAL);
	/* buffers */
	T_EQ(dkim_domain_encode("fabrikam.com", out, 12), -ENOBUFS);
	T_OK(dkim_domain_encode("fabrikam.com", out, 13));
	T_EQ(dkim_domain_encode("a-b", out, 4), -ENOBUFS);
	T_EQ(dkim_domain_decode("fabrikam-com", out, 12), -ENOBUFS);
	T_EQ(dkim_selector_name(1, "fabrikam.com", sel, 22), -ENOBUFS);
	T_OK(dkim_selector_name(1, "fabrikam.com", sel, 23));
}

TEST(dkim_names_decode_invalid)
{
	static const char *const bad[] = {
		"", "-", "-a", "a-", "a---b", "a-----b", "a--", "--a",
		"A-com", "fabrikam-COM", "a_b", "a.b", "a b", "a--b-", "-a-b",
		"b\xc3\xbc" "cher", "--abcdefghijklmnopqrstuvwxy",   /* 25 */
		"--abcdefghijklmnopqrstuvwxyz2",                     /* 27 */
		"--abcdefghijklmnopqrstuvwxy1",                      /* '1' */
		"--ABCDEFGHIJKLMNOPQRSTUVWXYZ",
		/* a 64-octet label */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-com",
	};
	char out[300], big[600];
	size_t i;
	int slot;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (dkim_domain_decode(bad[i], out, sizeof(out)) != DKIM_EINVAL)
			T_FAIL("decode accepted \"%s\"", bad[i]);
	T_EQ(dkim_domain_decode(NULL, out, sizeof(out)), DKIM_EINVAL);
	/* an enc of a 254-octet name */
	memset(big, 'a', 254);
	for (i = 63; i < 254; i += 64)
		big[i] = '-';
	big[254] = '\0';
	T_EQ(dkim_domain_decode(big, out, sizeof(out)), DKIM_EINVAL);
	memset(big, 'a', 500);
	big[500] = '\0';
	T_EQ(dkim_domain_decode(big, out, sizeof(out)), DKIM_EINVAL);
	/* selectors that are not managed names */
	T_EQ(dkim_selector_parse("selector1", &slot, out, sizeof(out)),
	    DKIM_EINVAL);
	T_EQ(dkim_selector_parse("selector1-", &slot, out, sizeof(out)),
	    DKIM_EINVAL);
	T_EQ(dkim_selector_parse("selector3-a-com", &slot, out, sizeof(out)),
	    DKIM_EINVAL);
	T_EQ(dkim_selector_parse("selector1--a-com", &slot, out, sizeof(out)),
	    DKIM_EINVAL);
	T_EQ(dkim_selector_parse("s2026-a-com", &slot, out, sizeof(out)),
	    DKIM_EINVAL);
	/* selectors are DNS labels: case does not matter */
	T_OK(dkim_selector_parse("Selector2-Fabrikam-Com", &slot, out,
	    sizeof(out)));
	T_EQ(slot, 2);
	T_STREQ(out, "fabrikam.com");
	T_STREQ(dkim_names_strerror(DKIM_EHASHED_NAME),
	    "hashed name: the domain is not recoverable from it");
	T_STREQ(dkim_names_strerror(DKIM_EINVAL), dkim_strerror(DKIM_EINVAL));
}

TEST(dkim_names_roundtrip_random)
{
	char dom[256];
	int i;

	for (i = 0; i < 20000; i++) {
		gen_domain(dom, i % 5 == 0 ? 253 : 1 + rng(80));
		check_roundtrip(dom);
	}
}

TEST(dkim_names_roundtrip_shapes)
{
	char dom[256], label[64];
	size_t len, i;

	/* single characters, alone and in many labels */
	check_roundtrip("a");
	check_roundtrip("7");
	check_roundtrip("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z");
	/* 63-octet labels: letters, dashes, an A-label */
	memset(label, 'z', 63);
	label[63] = '\0';
	snprintf(dom, sizeof(dom), "%s.example", label);
	check_roundtrip(dom);
	for (i = 1; i < 62; i++)
		label[i] = '-';
	snprintf(dom, sizeof(dom), "%s.%s", label, label);
	check_roundtrip(dom);
	memcpy(label, "xn--", 4);
	snprintf(dom, sizeof(dom), "%s.com", label);
	check_roundtrip(dom);
	/* 253-octet names of several shapes */
	for (i = 0; i < 200; i++) {
		size_t left = 253, want;

		len = 0;
		while (left > 0) {
			if (len > 0) {
				dom[len++] = '.';
				left--;         /* left >= 1: never 1 below */
			}
			want = 1 + rng(63);
			if (want > left)
				want = left > 63 ? 63 : left;
			if (left - want == 1)   /* "x." can't end a name */
				want = want > 1 ? want - 1 : want + 1;
			gen_label(label, want);
			memcpy(dom + len, label, want);
			len += want;
			left -= want;
		}
		dom[len] = '\0';
		T_EQ(strlen(dom), 253);
		check_roundtrip(dom);
	}
}

TEST(dkim_names_boundary)
{
	char dom[256], sel[DKIM_SELECTOR_BUFSIZE], out[256];
	int slot;

	/* enc of 53 octets: the longest plain selector, exactly 63 octets */
	memset(dom, 'a', 49);
	memcpy(dom + 49, ".com", 5);            /* 53 octets, enc 53 */
	T_OK(dkim_selector_name(1, dom, sel, sizeof(sel)));
	T_EQ(strlen(sel), 63);
	T_TRUE(strncmp(sel, "selector1-aaaa", 14) == 0);
	T_STREQ(sel + 59, "-com");
	T_OK(dkim_selector_parse(sel, &slot, out, sizeof(out)));
	T_STREQ(out, dom);
	/* one octet more: the shortest hashed one */
	memset(dom, 'a', 54);
	dom[54] = '\0';
	T_OK(dkim_selector_name(2, dom, sel, sizeof(sel)));
	T_STREQ(sel, "selector2---upybw2jzevqsowbkzcxj7nd2ha");
	T_EQ(dkim_selector_parse(sel, &slot, out, sizeof(out)),
	    DKIM_EHASHED_NAME);
	T_EQ(slot, 2);
	/* dashes count double: 52 octets with one dash make enc 53 */
	memset(dom, 'b', 52);
	dom[10] = '-';
	dom[52] = '\0';
	T_OK(dkim_selector_name(1, dom, sel, sizeof(sel)));
	T_EQ(strlen(sel), 63);
	dom[11] = '-';                          /* two dashes: enc 54 */
	T_OK(dkim_selector_name(1, dom, sel, sizeof(sel)));
	T_EQ(strlen(sel), 38);
	T_TRUE(strncmp(sel, "selector1---", 12) == 0);
	/* the hash is over the normalized name: case and dot don't matter */
	T_OK(dkim_selector_name(1,
	    "THIS-is-a-rather-long-department-name.subsidiary.example.com.",
	    sel, sizeof(sel)));
	T_STREQ(sel, "selector1---5e5qwurwrcoi2lq7pxyikxqugw");
}

TEST(dkim_names_hashed_never_plain)
{
	char dom[256], sel[DKIM_SELECTOR_BUFSIZE], out[256];
	int i, n = 0;

	for (i = 0; i < 5000; i++) {
		gen_domain(dom, 253);
		T_OK(dkim_selector_name(1, dom, sel, sizeof(sel)));
		if (strlen(sel) != 38 || strncmp(sel, "selector1---", 12) != 0)
			continue;
		n++;
		/* no plain enc starts with '-' */
		T_EQ(dkim_domain_decode(sel + 10, out, sizeof(out)),
		    DKIM_EHASHED_NAME);
		T_EQ(dkim_domain_decode(sel + 9, out, sizeof(out)),
		    DKIM_EINVAL);
		T_EQ(dkim_domain_decode(sel + 11, out, sizeof(out)),
		    DKIM_EINVAL);
	}
	T_TRUE(n > 100);
}

TEST(dkim_names_alignment)
{
	char why[512];

	/* the seed's example (003) */
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector1-fabrikam-com", "onmicrosoft.com", why, sizeof(why)), 1);
	T_STREQ(why, "d=contoso.onmicrosoft.com is under the initial suffix "
	    "onmicrosoft.com, s=selector1-fabrikam-com names fabrikam.com: "
	    "implicitly aligned");
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.signet.example",
	    "selector2-fabrikam-com", ".signet.example", why, sizeof(why)), 1);
	T_EQ(dkim_alignment_check("FABRIKAM.com.", "Contoso.OnMicrosoft.com",
	    "Selector1-Fabrikam-Com", "onmicrosoft.COM", why, sizeof(why)), 1);
	/* without a suffix only plain alignment counts */
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector1-fabrikam-com", NULL, why, sizeof(why)), 0);
	T_TRUE(strstr(why, "no initial suffix") != NULL);
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector1-fabrikam-com", "", why, sizeof(why)), 0);
	/* counter-examples */
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector1-contoso-com", "onmicrosoft.com", why, sizeof(why)), 0);
	T_STREQ(why, "d=contoso.onmicrosoft.com is under the initial suffix "
	    "onmicrosoft.com, but s=selector1-contoso-com names contoso.com, "
	    "not the From domain fabrikam.com: not aligned");
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.example.net",
	    "selector1-fabrikam-com", "onmicrosoft.com", why, sizeof(why)), 0);
	T_TRUE(strstr(why, "nor under the initial suffix") != NULL);
	T_EQ(dkim_alignment_check("fabrikam.com", "onmicrosoft.com",
	    "selector1-fabrikam-com", "onmicrosoft.com", why, sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "evil-onmicrosoft.com",
	    "selector1-fabrikam-com", "onmicrosoft.com", why, sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector3-fabrikam-com", "onmicrosoft.com", why, sizeof(why)), 0);
	T_TRUE(strstr(why, "is not selector1- or selector2-") != NULL);
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector1", "onmicrosoft.com", why, sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "contoso.onmicrosoft.com",
	    "selector1-fabrikam.com", "onmicrosoft.com", why, sizeof(why)), 0);
	/* dashes: Office 365's lossy form of my-domain.com is not ours */
	T_EQ(dkim_alignment_check("my-domain.com", "c.onmicrosoft.com",
	    "selector1-my-domain-com", "onmicrosoft.com", why, sizeof(why)), 0);
	T_TRUE(strstr(why, "names my.domain.com") != NULL);
	T_EQ(dkim_alignment_check("my-domain.com", "c.onmicrosoft.com",
	    "selector1-my--domain-com", "onmicrosoft.com", why, sizeof(why)), 1);
	/* a sub-domain From is not the parent's managed name */
	T_EQ(dkim_alignment_check("mail.fabrikam.com", "c.onmicrosoft.com",
	    "selector1-fabrikam-com", "onmicrosoft.com", why, sizeof(why)), 0);
	/* plain relaxed alignment */
	T_EQ(dkim_alignment_check("fabrikam.com", "fabrikam.com", "selector1",
	    NULL, why, sizeof(why)), 1);
	T_STREQ(why, "d=fabrikam.com is the From domain: aligned");
	T_EQ(dkim_alignment_check("mail.fabrikam.com", "Fabrikam.com.", "s",
	    NULL, why, sizeof(why)), 1);
	T_STREQ(why, "d=fabrikam.com is a parent of the From domain "
	    "mail.fabrikam.com: aligned");
	T_EQ(dkim_alignment_check("fabrikam.com", "mail.fabrikam.com", "s",
	    NULL, why, sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "com", "s", NULL, why,
	    sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "xfabrikam.com", "s",
	    "onmicrosoft.com", why, sizeof(why)), 0);
	/* garbage */
	T_EQ(dkim_alignment_check("fabrikam.com", "bad..d", "s", NULL, why,
	    sizeof(why)), 0);
	T_EQ(dkim_alignment_check(NULL, "a.com", "s", NULL, why, sizeof(why)),
	    0);
	T_EQ(dkim_alignment_check("b\xc3\xbc" "cher.de", "a.com", "s", NULL,
	    why, sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "c.onmicrosoft.com", NULL,
	    "onmicrosoft.com", why, sizeof(why)), 0);
	T_EQ(dkim_alignment_check("fabrikam.com", "fabrikam.com", "s", NULL,
	    NULL, 0), 1);
}

TEST(dkim_names_alignment_hashed)
{
	static const char dom[] =
	    "this-is-a-rather-long-department-name.subsidiary.example.com";
	char sel[DKIM_SELECTOR_BUFSIZE], why[512];

	T_OK(dkim_selector_name(2, dom, sel, sizeof(sel)));
	T_EQ(dkim_alignment_check(dom, "contoso.signet.example", sel,
	    "signet.example", why, sizeof(why)), 1);
	T_TRUE(strstr(why, "names the hash of this-is-a") != NULL);
	T_EQ(dkim_alignment_check("other.example", "contoso.signet.example",
	    sel, "signet.example", why, sizeof(why)), 0);
	T_TRUE(strstr(why, "does not name the From domain other.example") !=
	    NULL);
	/* the plain form of a long name is not accepted: it can't be a label */
	T_EQ(dkim_alignment_check(dom, "contoso.signet.example",
	    "selector1-this--is--a--rather--long--department--name-subsidiary"
	    "-example-com", "signet.example", why, sizeof(why)), 0);
}
