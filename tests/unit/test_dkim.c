/*
 * test_dkim.c - unit tests of dkim/: canonicalization against golden
 * vectors made by an independent implementation (tests/vectors/dkim, from
 * dkimpy), chunk-split invariance, SIMD == scalar, header parsing, signature
 * formatting and folding, and sign -> verify round trips, including the
 * RFC 8463 Appendix A vector.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim.h"
#include "tests/unit/test.h"

/* ---- helpers ------------------------------------------------------------ */

struct buf {
	char *p;
	size_t len, cap;
};

static void
buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->p == NULL || b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void
sink(void *arg, const char *p, size_t n)
{
	buf_add(arg, p, n);
}

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct buf b = { 0 };
	char tmp[8192];
	size_t n;

	if (f == NULL)
		return NULL;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_add(&b, tmp, n);
	fclose(f);
	buf_add(&b, "", 1);
	*len = b.len - 1;
	return b.p;
}

/* canon_chunks - stream body through the canonicalizer, cut at cuts[]. */
static struct buf
canon_chunks(enum dkim_canon c, const char *p, size_t len, const size_t *cuts,
    int ncuts)
{
	struct dkim_bodycanon bc;
	struct buf out = { 0 };
	size_t prev = 0;
	int i;

	dkim_bodycanon_init(&bc, c, sink, &out);
	for (i = 0; i < ncuts; i++) {
		dkim_bodycanon_update(&bc, p + prev, cuts[i] - prev);
		prev = cuts[i];
	}
	dkim_bodycanon_update(&bc, p + prev, len - prev);
	dkim_bodycanon_final(&bc);
	buf_add(&out, "", 0);
	return out;
}

/* check_all_ways - every SIMD level, whole and at every single split. */
static void
check_all_ways(enum dkim_canon c, const char *p, size_t len, const char *want,
    size_t wlen)
{
	enum dkim_simd lv;

	for (lv = DKIM_SIMD_SCALAR; lv < DKIM_SIMD_AUTO; lv++) {
		size_t cut;

		dkim_simd_set(lv);
		for (cut = 0; cut <= len; cut++) {
			struct buf o = canon_chunks(c, p, len, &cut, 1);

			if (o.len != wlen || memcmp(o.p, want, wlen) != 0) {
				fprintf(stderr, "simd %s cut %zu canon %d\n",
				    dkim_simd_name(lv), cut, c);
				T_MEMEQ(o.p, o.len, want, wlen);
			}
			free(o.p);
		}
	}
	dkim_simd_set(DKIM_SIMD_AUTO);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* ---- canonicalization ---------------------------------------------------- */

TEST(dkim_canon_body_vectors)
{
	char dir[1024], path[1400];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/tests/vectors/dkim", test_srcdir());
	T_TRUE((d = opendir(dir)) != NULL);
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name), inlen, rlen, olen;
		char *in, *ref, *o;
		int c;

		if (strncmp(de->d_name, "body-", 5) != 0 || l < 3 ||
		    strcmp(de->d_name + l - 3, ".in") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		T_TRUE((in = read_file(path, &inlen)) != NULL);
		for (c = 0; c < 2; c++) {
			snprintf(path, sizeof(path), "%s/%.*s.%s.ref", dir,
			    (int)(l - 3), de->d_name, c ? "relaxed" : "simple");
			T_TRUE((ref = read_file(path, &rlen)) != NULL);
			o = dkim_canon_body_ref(c, in, inlen, &olen);
			if (olen != rlen || memcmp(o, ref, rlen) != 0)
				fprintf(stderr, "reference canon: %s\n", path);
			T_MEMEQ(o, olen, ref, rlen);
			check_all_ways(c, in, inlen, ref, rlen);
			free(o);
			free(ref);
			n++;
		}
		free(in);
	}
	closedir(d);
	T_TRUE(n >= 40);
}

TEST(dkim_canon_header_vectors)
{
	char dir[1024], path[1400];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "%s/tests/vectors/dkim", test_srcdir());
	T_TRUE((d = opendir(dir)) != NULL);
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name), inlen, rlen, olen;
		char *in, *ref, *o;

		if (strncmp(de->d_name, "hdr-", 4) != 0 ||
		    strcmp(de->d_name + l - 3, ".in") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		T_TRUE((in = read_file(path, &inlen)) != NULL);
		snprintf(path, sizeof(path), "%s/%.*s.relaxed.ref", dir,
		    (int)(l - 3), de->d_name);
		T_TRUE((ref = read_file(path, &rlen)) != NULL);
		o = malloc(inlen + 1);
		olen = dkim_canon_header(DKIM_CANON_RELAXED, in, inlen, o);
		if (olen != rlen || memcmp(o, ref, rlen) != 0)
			fprintf(stderr, "%s\n", path);
		T_MEMEQ(o, olen, ref, rlen);
		olen = dkim_canon_header(DKIM_CANON_SIMPLE, in, inlen, o);
		T_MEMEQ(o, olen, in, inlen);
		free(in);
		free(ref);
		free(o);
		n++;
	}
	closedir(d);
	T_TRUE(n >= 5);
}

TEST(dkim_relaxed_empty_body)
{
	check_all_ways(DKIM_CANON_RELAXED, "", 0, "", 0);
	check_all_ways(DKIM_CANON_RELAXED, "\r\n\r\n \r\n", 7, "", 0);
	check_all_ways(DKIM_CANON_SIMPLE, "", 0, "\r\n", 2);
	check_all_ways(DKIM_CANON_SIMPLE, "\r\n\r\n", 4, "\r\n", 2);
}

/* random_body - bytes drawn mostly from the characters that matter. */
static void
random_body(char *p, size_t n)
{
	static const char alpha[] = "  \t\r\n\r\naZ.-";
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = rng();

		if (r % 16 == 0)
			p[i] = (char)(r >> 8);
		else
			p[i] = alpha[(r >> 8) % (sizeof(alpha) - 1)];
	}
}

TEST(dkim_canon_split_invariance)
{
	char body[200];
	int round;

	for (round = 0; round < 300; round++) {
		size_t len = (size_t)(rng() % sizeof(body)), wlen;
		int c;

		random_body(body, len);
		for (c = 0; c < 2; c++) {
			char *want = dkim_canon_body_ref(c, body, len, &wlen);

			check_all_ways(c, body, len, want, wlen);
			free(want);
		}
	}
}

TEST(dkim_canon_simd_equals_scalar)
{
	static const char *const pats[] = { " ", "  ", " \t", "\r\n", " \r\n",
		"\r", "\n", "\t\r\n", "word ", "a  ", "\r\r\n", "x" };
	size_t len = 1 << 16;
	char *body = malloc(len);
	int round, c;

	for (round = 0; round < 40; round++) {
		size_t i = 0, cuts[16], wlen;
		int nc = (int)(rng() % 16), k;

		/* adversarial: runs of one pattern crossing 16/32-byte lanes */
		while (i < len) {
			const char *pt = pats[rng() % (sizeof(pats) / sizeof(pats[0]))];
			size_t rep = (size_t)(rng() % 70), pl = strlen(pt);

			while (rep-- > 0 && i + pl <= len) {
				memcpy(body + i, pt, pl);
				i += pl;
			}
			if (i + pl > len)
				break;
		}
		if (round % 2)
			random_body(body, i);
		for (k = 0; k < nc; k++)
			cuts[k] = (size_t)(rng() % (i + 1));
		/* cuts must not decrease */
		for (k = 1; k < nc; k++)
			if (cuts[k] < cuts[k - 1])
				cuts[k] = cuts[k - 1];
		for (c = 0; c < 2; c++) {
			char *want = dkim_canon_body_ref(c, body, i, &wlen);
			enum dkim_simd lv;

			for (lv = DKIM_SIMD_SCALAR; lv < DKIM_SIMD_AUTO; lv++) {
				struct buf o;

				dkim_simd_set(lv);
				o = canon_chunks(c, body, i, cuts, nc);
				T_MEMEQ(o.p, o.len, want, wlen);
				free(o.p);
			}
			free(want);
		}
	}
	dkim_simd_set(DKIM_SIMD_AUTO);
	free(body);
}

/*
 * The scanner classifies 64-byte blocks and 4 KiB windows of each chunk;
 * put every kind of event right before, on and after those boundaries and
 * at the end of the body, and cut the body there too.
 */
TEST(dkim_canon_block_boundaries)
{
	static const char *const evs[] = { "  x", " \r\nx", "\tx", " \t\r\n",
		"\r\n\r\n\r\nx", "\r\n \r\nx", "\rx", "\r\n\r\n", " ",
		"\r", "\r\n\r\n \tx", "\r\n\r\n\r\n", "\r\n\r\n \r\n" };
	static const size_t bases[] = { 64, 128, 4096, 8192 };
	size_t len = 8192 + 80, b, e, wlen;
	char *body = malloc(len);
	int d, c, tail;

	for (tail = 0; tail <= 3; tail += 3)
	for (b = 0; b < sizeof(bases) / sizeof(bases[0]); b++)
		for (e = 0; e < sizeof(evs) / sizeof(evs[0]); e++)
			for (d = -4; d <= 3; d++) {
				size_t at = bases[b] + (size_t)(long)d, el = strlen(evs[e]);
				size_t i, blen = at + el + (size_t)tail, cuts[8];
				enum dkim_simd lv;
				int k;

				for (i = 0; i < blen; i++)
					body[i] = i % 9 == 8 ? ' ' : (i % 71 == 70 ? '\n' :
					    (i % 71 == 69 ? '\r' : 'a'));
				memcpy(body + at, evs[e], el);
				if (blen > len)
					T_FAIL("body too long");
				for (c = 0; c < 2; c++) {
					char *want = dkim_canon_body_ref(c, body, blen, &wlen);

					for (lv = DKIM_SIMD_SCALAR; lv < DKIM_SIMD_AUTO; lv++) {
						dkim_simd_set(lv);
						for (k = 0; k < 10; k++) {
							struct buf o;
							size_t cut = k < 8 ? at + (size_t)k - 3 :
							    (k == 8 ? bases[b] : blen);

							cuts[0] = cut > blen ? blen : cut;
							o = canon_chunks(c, body, blen, cuts, 1);
							if (o.len != wlen || memcmp(o.p, want, wlen) != 0)
								fprintf(stderr, "simd %s base %zu ev %zu d %d cut %zu\n",
								    dkim_simd_name(lv), bases[b], e, d, cuts[0]);
							T_MEMEQ(o.p, o.len, want, wlen);
							free(o.p);
						}
					}
					free(want);
				}
				/* whole-body splits where the body is small */
				if (blen < 200) {
					for (c = 0; c < 2; c++) {
						char *want = dkim_canon_body_ref(c, body, blen, &wlen);

						check_all_ways(c, body, blen, want, wlen);
						free(want);
					}
				}
			}
	dkim_simd_set(DKIM_SIMD_AUTO);
	free(body);
}

/*
 * Runs longer than the AVX-512 level's 8 KiB staging buffer: empty lines
 * (held back only when nothing but empty lines follows) and WSP (pending
 * across many blocks), in the middle and at the end of the body, with the
 * body whole and cut inside the runs.
 */
TEST(dkim_canon_long_runs)
{
	static const char *const tails[] = { "x\r\n", "", " \r\n", "x", "\r",
		" ", "\r\n" };
	size_t len = 3 * 20000 + 64, wlen;
	char *body = malloc(len);
	size_t t, i;
	int kind, c;

	for (kind = 0; kind < 4; kind++)
		for (t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
			size_t n = 0, run = kind < 2 ? 20000 : 9001;
			size_t cuts[3];
			enum dkim_simd lv;

			memcpy(body + n, "ab  c\r\n", 7);
			n += 7;
			for (i = 0; i < run; i++)
				body[n++] = kind % 2 == 0 ? "\r\n"[i % 2] :
				    (i % 3 ? ' ' : '\t');
			memcpy(body + n, "d\r\n", 3);
			n += 3;
			for (i = 0; i < run; i++)
				body[n++] = kind % 2 == 0 ? "\r\n"[i % 2] : ' ';
			memcpy(body + n, tails[t], strlen(tails[t]));
			n += strlen(tails[t]);
			cuts[0] = 7 + run / 2;
			cuts[1] = 7 + run + 1;
			cuts[2] = n - 1;
			for (c = 0; c < 2; c++) {
				char *want = dkim_canon_body_ref(c, body, n, &wlen);

				for (lv = DKIM_SIMD_SCALAR; lv < DKIM_SIMD_AUTO; lv++) {
					struct buf o;
					int nc;

					dkim_simd_set(lv);
					for (nc = 0; nc <= 3; nc++) {
						o = canon_chunks(c, body, n, cuts, nc);
						if (o.len != wlen || memcmp(o.p, want, wlen) != 0)
							fprintf(stderr, "simd %s kind %d tail %zu cuts %d\n",
							    dkim_simd_name(lv), kind, t, nc);
						T_MEMEQ(o.p, o.len, want, wlen);
						free(o.p);
					}
				}
				free(want);
			}
		}
	dkim_simd_set(DKIM_SIMD_AUTO);
	free(body);
}

/* ---- signing and verification ------------------------------------------- */

struct keyset {
	const char *domain, *selector, *txt;
};

static int
lookup(void *arg, const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	const struct keyset *k;

	for (k = arg; k->domain != NULL; k++)
		if (strcmp(k->domain, domain) == 0 &&
		    strcmp(k->selector, selector) == 0) {
			*txt = strdup(k->txt);
			return 0;
		}
	snprintf(err, errlen, "no such key");
	return DKIM_ENOKEY;
}

/* verify_msg - verify msg fed in chunks of size step; number of passes. */
static int
verify_msg(const char *msg, size_t len, size_t step, struct keyset *keys,
    struct dkim_verify_result *res, int *nres)
{
	struct dkim_verifier *v = dkim_verifier_new(lookup, keys);
	size_t i;
	int n, k, pass = 0;

	T_TRUE(v != NULL);
	for (i = 0; i < len; i += step)
		T_OK(dkim_verifier_write(v, msg + i, len - i < step ? len - i : step));
	n = dkim_verifier_finish(v, time(NULL), res, 8);
	T_TRUE(n >= 0);
	for (k = 0; k < n; k++)
		pass += res[k].pass;
	*nres = n;
	dkim_verifier_free(v);
	return pass;
}

/* sign_msg - sign msg (chunks of step) with params; returns signed message. */
static char *
sign_msg(const char *msg, size_t len, size_t step,
    const struct dkim_sign_params *p, int np, size_t *outlen, int *rc)
{
	struct dkim_signer *s = dkim_signer_new();
	char *sig = NULL, *out;
	size_t i, siglen = 0;
	int k;

	T_TRUE(s != NULL);
	for (k = 0; k < np; k++)
		T_OK(dkim_signer_add(s, &p[k]));
	*rc = 0;
	for (i = 0; i < len && *rc == 0; i += step)
		*rc = dkim_signer_write(s, msg + i, len - i < step ? len - i : step);
	if (*rc == 0)
		*rc = dkim_signer_finish(s, &sig, &siglen);
	dkim_signer_free(s);
	if (*rc != 0)
		return NULL;
	out = malloc(siglen + len + 1);
	memcpy(out, sig, siglen);
	memcpy(out + siglen, msg, len);
	out[siglen + len] = '\0';
	*outlen = siglen + len;
	free(sig);
	return out;
}

static const char msg1[] =
    "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: Bob <bob@example.net>,\r\n\tCarol <carol@example.net>\r\n"
    "Subject: test  message \r\n"
    "subject: second subject\r\n"
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <1@example.com>\r\n"
    "\r\n"
    "Hello  there, \r\n"
    "\tindented\r\n"
    "\r\n\r\n";

TEST(dkim_sign_roundtrip_all_canons)
{
	struct dkim_key *ed, *rsa;
	char *txt_ed, *txt_rsa;
	int hc, bc;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &ed));
	T_OK(dkim_key_generate(DKIM_ALG_RSA_SHA256, 1024, &rsa));
	txt_ed = dkim_key_txt(ed);
	txt_rsa = dkim_key_txt(rsa);
	T_TRUE(strncmp(txt_ed, "v=DKIM1; k=ed25519; p=", 22) == 0);
	T_TRUE(strncmp(txt_rsa, "v=DKIM1; k=rsa; p=", 18) == 0);
	for (hc = 0; hc < 2; hc++)
		for (bc = 0; bc < 2; bc++) {
			struct keyset keys[] = { { "example.com", "ed", txt_ed },
				{ "example.com", "rsa", txt_rsa }, { NULL, NULL, NULL } };
			struct dkim_sign_params p[2] = {
				{ "example.com", "rsa", rsa, DKIM_ALG_RSA_SHA256,
				    hc, bc, NULL, 0, 3600 },
				{ "example.com", "ed", ed, DKIM_ALG_ED25519_SHA256,
				    hc, bc, NULL, 0, 0 },
			};
			struct dkim_verify_result res[8];
			size_t len, step;
			char *m;
			int rc, n;

			for (step = 1; step <= sizeof(msg1); step = step * 3 + 1) {
				m = sign_msg(msg1, sizeof(msg1) - 1, step, p, 2, &len, &rc);
				T_OK(rc);
				T_EQ(verify_msg(m, len, 7, keys, res, &n), 2);
				T_EQ(n, 2);
				/* tamper with the body: both fail on the body hash */
				m[len - 5] = 'X';
				T_EQ(verify_msg(m, len, 4096, keys, res, &n), 0);
				T_STREQ(res[0].reason, "body hash mismatch");
				free(m);
			}
		}
	free(txt_ed);
	free(txt_rsa);
	dkim_key_free(ed);
	dkim_key_free(rsa);
}

TEST(dkim_sign_format_and_folding)
{
	struct dkim_key *ed;
	struct dkim_sign_params p = { "a-rather-long-signing-domain.example.com",
		"selector1-a-rather-long-signing-domain-example-com", NULL,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
		NULL, 1700000000, 86400 };
	struct dkim_signer *s;
	char *out, *line, *save = NULL;
	size_t len;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &ed));
	p.key = ed;
	s = dkim_signer_new();
	T_OK(dkim_signer_add(s, &p));
	T_OK(dkim_signer_write(s, msg1, sizeof(msg1) - 1));
	T_OK(dkim_signer_finish(s, &out, &len));
	T_TRUE(strncmp(out, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;", 57) == 0);
	T_TRUE(len > 2 && out[len - 2] == '\r' && out[len - 1] == '\n');
	T_TRUE(strstr(out, " t=1700000000;") != NULL);
	T_TRUE(strstr(out, " x=1700086400;") != NULL);
	/* From oversigned (1 present + 1), both Subjects, one To */
	T_TRUE(strstr(out, "h=From:From:Subject:Subject:Date:To:Message-ID;") != NULL);
	T_TRUE(strstr(out, "l=") == NULL);
	T_TRUE(strstr(out, "Received") == NULL);
	for (line = strtok_r(out, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		size_t n = strlen(line);

		T_TRUE(n >= 1 && line[n - 1] == '\r');
		if (n - 1 > 78)
			T_FAIL("line of %zu columns: %s", n - 1, line);
		if (line != out)
			T_TRUE(line[0] == ' ');
	}
	free(out);
	dkim_signer_free(s);
	dkim_key_free(ed);
}

TEST(dkim_sign_errors)
{
	struct dkim_key *ed;
	struct dkim_sign_params p = { "example.com", "s", NULL,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
		NULL, 0, 0 };
	struct dkim_signer *s;
	char *out, *big;
	size_t len;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &ed));
	p.key = ed;
	/* no From */
	s = dkim_signer_new();
	T_OK(dkim_signer_add(s, &p));
	T_OK(dkim_signer_write(s, "To: x@y\r\n\r\nbody\r\n", 17));
	T_EQ(dkim_signer_finish(s, &out, &len), DKIM_ENOFROM);
	dkim_signer_free(s);
	/* a header line without a colon */
	s = dkim_signer_new();
	T_OK(dkim_signer_add(s, &p));
	T_EQ(dkim_signer_write(s, "From: a@b\r\nbogus line\r\n\r\n", 25), DKIM_EBADHEADER);
	T_EQ(dkim_signer_finish(s, &out, &len), DKIM_EBADHEADER);
	dkim_signer_free(s);
	/* continuation before any field */
	s = dkim_signer_new();
	T_OK(dkim_signer_add(s, &p));
	T_EQ(dkim_signer_write(s, " x: y\r\n", 7), DKIM_EBADHEADER);
	dkim_signer_free(s);
	/* a header block over the limit */
	big = malloc(DKIM_HEADER_MAX + 100);
	memset(big, 'a', DKIM_HEADER_MAX + 100);
	memcpy(big, "From: a@b\r\nX: ", 14);
	s = dkim_signer_new();
	T_OK(dkim_signer_add(s, &p));
	T_EQ(dkim_signer_write(s, big, DKIM_HEADER_MAX + 100), DKIM_EHEADER_TOO_BIG);
	dkim_signer_free(s);
	free(big);
	/* algorithm that does not match the key */
	s = dkim_signer_new();
	p.alg = DKIM_ALG_RSA_SHA256;
	T_EQ(dkim_signer_add(s, &p), DKIM_EALG);
	dkim_signer_free(s);
	dkim_key_free(ed);
}

TEST(dkim_sign_headers_only_message)
{
	struct dkim_key *ed;
	char *txt;
	struct dkim_sign_params p = { "example.com", "s", NULL,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE,
		"From:Subject", 0, 0 };
	static const char *const msgs[] = {
		"From: a@example.com\r\nSubject: x",
		"From: a@example.com\r\nSubject: x\r\n",
		"From: a@example.com\r\nSubject: x\r\n\r\n",
		"From: a@example.com\r\nSubject: x\r\n folded",
	};
	struct dkim_verify_result res[8];
	size_t i;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &ed));
	txt = dkim_key_txt(ed);
	p.key = ed;
	for (i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		struct keyset keys[] = { { "example.com", "s", txt }, { NULL, NULL, NULL } };
		size_t len;
		int rc, n, c;

		for (c = 0; c < 2; c++) {
			char *m;

			p.hcanon = p.bcanon = c;
			m = sign_msg(msgs[i], strlen(msgs[i]), 5, &p, 1, &len, &rc);
			T_OK(rc);
			T_EQ(verify_msg(m, len, 3, keys, res, &n), 1);
			free(m);
		}
	}
	free(txt);
	dkim_key_free(ed);
}

TEST(dkim_verify_tamper_headers)
{
	struct dkim_key *ed;
	char *txt, *m, *m2;
	struct dkim_sign_params p = { "example.com", "s", NULL,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
		NULL, 0, 0 };
	struct dkim_verify_result res[8];
	size_t len;
	int rc, n;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &ed));
	txt = dkim_key_txt(ed);
	p.key = ed;
	{
		struct keyset keys[] = { { "example.com", "s", txt }, { NULL, NULL, NULL } };

		m = sign_msg(msg1, sizeof(msg1) - 1, 64, &p, 1, &len, &rc);
		T_OK(rc);
		T_EQ(verify_msg(m, len, 64, keys, res, &n), 1);
		/* a changed Subject */
		*strstr(m, "second subject") = 'S';
		T_EQ(verify_msg(m, len, 64, keys, res, &n), 0);
		T_STREQ(res[0].reason, "signature mismatch");
		*strstr(m, "Second subject") = 's';
		/* a From added on top: oversigning catches it */
		m2 = malloc(len + 40);
		{
			char *body = strstr(m, "Received:");
			size_t off = (size_t)(body - m);

			memcpy(m2, m, off);
			memcpy(m2 + off, "From: mallory@evil.example\r\n", 28);
			memcpy(m2 + off + 28, m + off, len - off);
		}
		T_EQ(verify_msg(m2, len + 28, 64, keys, res, &n), 0);
		T_STREQ(res[0].reason, "signature mismatch");
		/* an unknown selector */
		keys[0].selector = "other";
		T_EQ(verify_msg(m, len, 64, keys, res, &n), 0);
		T_TRUE(strncmp(res[0].reason, "no key", 6) == 0);
		free(m2);
		free(m);
	}
	free(txt);
	dkim_key_free(ed);
}

/* RFC 8463 Appendix A.3, with the keys of A.2 */
static const char rfc8463[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n"
    "\r\n";

static struct keyset rfc8463_keys[] = {
	{ "football.example.com", "brisbane",
	    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" },
	{ "football.example.com", "test",
	    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
	    "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
	    "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
	    "Ip3G+2kryOTIKT+l/K4w3QIDAQAB" },
	{ NULL, NULL, NULL }
};

TEST(dkim_rfc8463_vector)
{
	struct dkim_verify_result res[8];
	char *m = strdup(rfc8463);
	size_t len = sizeof(rfc8463) - 1;
	int n;

	T_EQ(verify_msg(m, len, 1, rfc8463_keys, res, &n), 2);
	T_EQ(n, 2);
	T_STREQ(res[0].alg, "ed25519-sha256");
	T_STREQ(res[1].selector, "test");
	/* one byte of the body changed: both fail */
	*strstr(m, "hungry") = 'H';
	T_EQ(verify_msg(m, len, 4096, rfc8463_keys, res, &n), 0);
	T_EQ(n, 2);
	free(m);
}

/* the RFC's own Ed25519 key re-signs the same message to the same bh= */
TEST(dkim_rfc8463_resign)
{
	static const char pem[] =
	    "-----BEGIN PRIVATE KEY-----\n"
	    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
	    "-----END PRIVATE KEY-----\n";
	const char *body = strstr(rfc8463, "From: Joe");
	struct dkim_sign_params p = { "football.example.com", "brisbane", NULL,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
		"from:to:subject:date:message-id", 1528637909, 0 };
	struct dkim_verify_result res[8];
	struct dkim_key *k;
	char err[128], *m, *txt;
	size_t len;
	int rc, n;

	T_OK(dkim_key_load_pem(pem, sizeof(pem) - 1, &k, err, sizeof(err)));
	txt = dkim_key_txt(k);
	T_STREQ(txt, rfc8463_keys[0].txt);
	p.key = k;
	m = sign_msg(body, strlen(body), 100, &p, 1, &len, &rc);
	T_OK(rc);
	T_TRUE(strstr(m, "bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;") != NULL);
	T_EQ(verify_msg(m, len, 100, rfc8463_keys, res, &n), 1);
	free(m);
	free(txt);
	dkim_key_free(k);
}

TEST(dkim_from_domain_forms)
{
	static const char *const ok[][2] = {
		{ " Alice <alice@Example.COM>", "example.com" },
		{ "alice@example.org", "example.org" },
		{ " \"Smith, J @ home\" <j@sub.example.net>", "sub.example.net" },
		{ "a@one.example, b@two.example", "one.example" },
		{ "\r\n bob@folded.example (comment)", "folded.example" },
	};
	static const char *const bad[] = { " no address here", " <>", " <user@>" };
	char out[256];
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		T_OK(dkim_from_domain(ok[i][0], strlen(ok[i][0]), out, sizeof(out)));
		T_STREQ(out, ok[i][1]);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		T_EQ(dkim_from_domain(bad[i], strlen(bad[i]), out, sizeof(out)), DKIM_EINVAL);
}

struct pick {
	struct dkim_key *key;
	char seen[256];
	int calls;
};

static int
pick_key(void *arg, struct dkim_signer *s, const char *from_domain)
{
	struct pick *pk = arg;
	struct dkim_sign_params p = { NULL, "sel", pk->key,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
		NULL, 0, 0 };

	pk->calls++;
	snprintf(pk->seen, sizeof(pk->seen), "%s", from_domain ? from_domain : "(none)");
	if (from_domain == NULL)
		return 0;
	p.domain = from_domain;
	return dkim_signer_add(s, &p);
}

TEST(dkim_sign_keys_chosen_by_from)
{
	struct pick pk = { 0 };
	struct dkim_verify_result res[8];
	char *txt, *sig, *m;
	size_t siglen, i, len = sizeof(msg1) - 1;
	int n;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &pk.key));
	txt = dkim_key_txt(pk.key);
	{
		struct keyset keys[] = { { "example.com", "sel", txt }, { NULL, NULL, NULL } };
		struct dkim_signer *s = dkim_signer_new();

		dkim_signer_on_headers(s, pick_key, &pk);
		/* one byte at a time: the header end straddles every call */
		for (i = 0; i < len; i++)
			T_OK(dkim_signer_write(s, msg1 + i, 1));
		T_OK(dkim_signer_finish(s, &sig, &siglen));
		T_EQ(pk.calls, 1);
		T_STREQ(pk.seen, "example.com");
		m = malloc(siglen + len);
		memcpy(m, sig, siglen);
		memcpy(m + siglen, msg1, len);
		T_EQ(verify_msg(m, siglen + len, 11, keys, res, &n), 1);
		free(m);
		free(sig);
		dkim_signer_free(s);
	}
	/* no From: the callback sees NULL and the result is empty */
	{
		struct dkim_signer *s = dkim_signer_new();

		dkim_signer_on_headers(s, pick_key, &pk);
		T_OK(dkim_signer_write(s, "To: x@y\r\n\r\nhi\r\n", 16));
		T_OK(dkim_signer_finish(s, &sig, &siglen));
		T_STREQ(pk.seen, "(none)");
		T_EQ(siglen, 0);
		free(sig);
		dkim_signer_free(s);
	}
	free(txt);
	dkim_key_free(pk.key);
}

TEST(dkim_verify_expired)
{
	struct dkim_key *ed;
	struct dkim_sign_params p = { "example.com", "s", NULL,
		DKIM_ALG_ED25519_SHA256, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
		NULL, 1000000000, 60 };
	struct dkim_verify_result res[8];
	char *txt, *m;
	size_t len;
	int rc, n;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &ed));
	txt = dkim_key_txt(ed);
	p.key = ed;
	{
		struct keyset keys[] = { { "example.com", "s", txt }, { NULL, NULL, NULL } };

		m = sign_msg(msg1, sizeof(msg1) - 1, 100, &p, 1, &len, &rc);
		T_OK(rc);
		T_EQ(verify_msg(m, len, 100, keys, res, &n), 0);
		T_STREQ(res[0].reason, "signature expired");
		free(m);
	}
	free(txt);
	dkim_key_free(ed);
}
