/*
 * verify.c - the streaming DKIM verifier (RFC 6376 6).
 *
 * When the header block is complete, every DKIM-Signature field (up to
 * DKIM_MAX_SIGS) is parsed and one body hash is set up per distinct body
 * canonicalization and l= length; the body then streams through them.  At
 * the end each signature is checked: tags, body hash, key record (through
 * the caller's lookup callback, so this module does no DNS), header hash and
 * the signature itself.  Signet uses it for `signetctl dkim verify` and in
 * its tests; the relay itself only signs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "dkim/dkim_int.h"

struct span {
	size_t a, b;  /* offsets in the header buffer; a == b: empty */
	int set;
};

struct vsig {
	size_t field;          /* index in hdrs.f */
	char reason[256];      /* set on a syntax error */
	struct span v, a, b, bh, c, d, h, i, l, q, s, t, x;
	enum dkim_alg alg;
	enum dkim_canon hc, bc;
	uint64_t lim;          /* l= or (uint64_t)-1 */
	long long tv, xv;
	int bhi;               /* index of its body hash */
};

struct dkim_verifier {
	struct dkim__hdrs hdrs;
	dkim_key_lookup_cb lookup;
	void *arg;
	struct vsig sigs[DKIM_MAX_SIGS];
	int nsigs;
	int nextra;            /* signatures past DKIM_MAX_SIGS, not checked */
	struct dkim__bodyhash bh[DKIM_MAX_SIGS];
	int nbh;
	int in_body;
	int err;
};

struct dkim_verifier *
dkim_verifier_new(dkim_key_lookup_cb lookup, void *arg)
{
	struct dkim_verifier *v = calloc(1, sizeof(*v));

	if (v == NULL)
		return NULL;
	dkim__hdrs_init(&v->hdrs);
	v->lookup = lookup;
	v->arg = arg;
	return v;
}

/* trim - a span without surrounding FWS. */
static struct span
trim(const char *buf, struct span s)
{
	while (s.a < s.b && dkim__is_fws(buf[s.a]))
		s.a++;
	while (s.b > s.a && dkim__is_fws(buf[s.b - 1]))
		s.b--;
	return s;
}

/* span_eq - does the trimmed span equal str (case-insensitively if ci)? */
static int
span_eq(const char *buf, struct span s, const char *str, int ci)
{
	size_t n = strlen(str);

	s = trim(buf, s);
	if (s.b - s.a != n)
		return 0;
	return ci ? strncasecmp(buf + s.a, str, n) == 0 :
	    memcmp(buf + s.a, str, n) == 0;
}

/* span_cpy - copy the trimmed span into out (truncated, NUL-terminated). */
static void
span_cpy(const char *buf, struct span s, char *out, size_t outlen)
{
	size_t n;

	s = trim(buf, s);
	n = s.b - s.a;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, buf + s.a, n);
	out[n] = '\0';
}

/* span_num - parse a decimal tag value; -1 if it is not one. */
static long long
span_num(const char *buf, struct span s)
{
	long long v = 0;
	size_t k;

	s = trim(buf, s);
	if (s.a == s.b || s.b - s.a > 18)
		return -1;
	for (k = s.a; k < s.b; k++) {
		if (buf[k] < '0' || buf[k] > '9')
			return -1;
		v = v * 10 + (buf[k] - '0');
	}
	return v;
}

#define SIGFAIL(g, ...)                                                     \
	do {                                                                \
		snprintf((g)->reason, sizeof((g)->reason), __VA_ARGS__);    \
		return -1;                                                  \
	} while (0)

/*
 * parse_sig - RFC 6376 3.5 tag list of one DKIM-Signature field into g.
 * Returns 0, or -1 with g->reason set.
 */
static int
parse_sig(const struct dkim__hdrs *hd, struct vsig *g)
{
	const struct dkim__field *f = &hd->f[g->field];
	const char *buf = hd->buf;
	size_t p = f->off + f->namelen, end = f->off + f->len;
	char tmp[64];

	while (p < end && buf[p] != ':')
		p++;
	p++;
	while (p < end) {
		size_t na, nb;
		struct span val, *slot = NULL;

		while (p < end && dkim__is_fws(buf[p]))
			p++;
		if (p == end)
			break;
		na = p;
		while (p < end && (buf[p] == '_' || (buf[p] >= 'a' && buf[p] <= 'z') ||
		    (buf[p] >= 'A' && buf[p] <= 'Z') || (buf[p] >= '0' && buf[p] <= '9')))
			p++;
		nb = p;
		while (p < end && dkim__is_fws(buf[p]))
			p++;
		if (na == nb || p == end || buf[p] != '=')
			SIGFAIL(g, "malformed tag list");
		p++;
		val.a = p;
		while (p < end && buf[p] != ';')
			p++;
		val.b = p;
		val.set = 1;
		if (p < end)
			p++;
#define TAG(name, fld)                                                      \
	if (nb - na == sizeof(name) - 1 && memcmp(buf + na, name, nb - na) == 0) \
		slot = &g->fld;
		TAG("v", v) TAG("a", a) TAG("b", b) TAG("bh", bh) TAG("c", c)
		TAG("d", d) TAG("h", h) TAG("i", i) TAG("l", l) TAG("q", q)
		TAG("s", s) TAG("t", t) TAG("x", x)
#undef TAG
		if (slot == NULL)
			continue; /* unknown tags are ignored (RFC 6376 3.2) */
		if (slot->set)
			SIGFAIL(g, "duplicate tag %.*s", (int)(nb - na), buf + na);
		*slot = val;
	}
	if (!g->v.set || !span_eq(buf, g->v, "1", 0))
		SIGFAIL(g, "missing or unsupported v=");
	if (!g->a.set || !g->b.set || !g->bh.set || !g->d.set || !g->h.set ||
	    !g->s.set)
		SIGFAIL(g, "missing required tag");
	span_cpy(buf, g->a, tmp, sizeof(tmp));
	if (dkim_alg_parse(tmp, &g->alg) != 0)
		SIGFAIL(g, "unsupported algorithm %s", tmp);
	g->hc = g->bc = DKIM_CANON_SIMPLE;
	if (g->c.set) {
		span_cpy(buf, g->c, tmp, sizeof(tmp));
		if (dkim_canon_parse(tmp, &g->hc, &g->bc) != 0)
			SIGFAIL(g, "unsupported canonicalization %s", tmp);
	}
	if (g->q.set && !span_eq(buf, g->q, "dns/txt", 1))
		SIGFAIL(g, "unsupported query method");
	g->lim = (uint64_t)-1;
	if (g->l.set) {
		long long l = span_num(buf, g->l);

		if (l < 0)
			SIGFAIL(g, "bad l=");
		g->lim = (uint64_t)l;
	}
	g->tv = g->t.set ? span_num(buf, g->t) : -1;
	g->xv = g->x.set ? span_num(buf, g->x) : -1;
	if ((g->t.set && g->tv < 0) || (g->x.set && g->xv < 0))
		SIGFAIL(g, "bad t= or x=");
	if (g->t.set && g->x.set && g->xv < g->tv)
		SIGFAIL(g, "x= is before t=");
	return 0;
}

/* setup_sigs - find and parse the signatures; set up their body hashes. */
static int
setup_sigs(struct dkim_verifier *v)
{
	size_t i;
	int k, rc;

	for (i = 0; i < v->hdrs.nf; i++) {
		struct vsig *g;

		if (!dkim__hdr_name_eq(&v->hdrs, i, "DKIM-Signature", 14))
			continue;
		if (v->nsigs == DKIM_MAX_SIGS) {
			v->nextra++;
			continue;
		}
		g = &v->sigs[v->nsigs++];
		memset(g, 0, sizeof(*g));
		g->field = i;
		g->bhi = -1;
		if (parse_sig(&v->hdrs, g) != 0)
			continue;
		for (k = 0; k < v->nbh; k++)
			if (v->bh[k].bc.canon == g->bc && v->bh[k].limit == g->lim)
				break;
		if (k == v->nbh) {
			if ((rc = dkim__bodyhash_init(&v->bh[k], g->bc, g->lim)) != 0)
				return rc;
			v->nbh++;
		}
		g->bhi = k;
	}
	return 0;
}

int
dkim_verifier_write(struct dkim_verifier *v, const char *p, size_t len)
{
	int k, rc;

	if (v->err)
		return v->err;
	if (!v->in_body) {
		long n = dkim__hdr_feed(&v->hdrs, p, len);

		if (n < 0)
			return v->err = (int)n;
		if (!v->hdrs.done)
			return 0;
		v->in_body = 1;
		if ((rc = setup_sigs(v)) != 0)
			return v->err = rc;
		p += n;
		len -= (size_t)n;
	}
	for (k = 0; k < v->nbh; k++)
		dkim__bodyhash_update(&v->bh[k], p, len);
	return 0;
}

/* domain_within - is sub equal to dom or a subdomain of it? */
static int
domain_within(const char *sub, const char *dom)
{
	size_t ls = strlen(sub), ld = strlen(dom);

	if (ls == ld)
		return strcasecmp(sub, dom) == 0;
	return ls > ld && sub[ls - ld - 1] == '.' &&
	    strcasecmp(sub + ls - ld, dom) == 0;
}

#undef SIGFAIL
#define FAIL(...)                                                           \
	do {                                                                \
		snprintf(r->reason, sizeof(r->reason), __VA_ARGS__);        \
		goto done;                                                  \
	} while (0)

/* check_one - verify one parsed signature into r. */
static void
check_one(struct dkim_verifier *v, struct vsig *g, time_t now,
    struct dkim_verify_result *r)
{
	const char *buf = v->hdrs.buf;
	const struct dkim__field *f = &v->hdrs.f[g->field];
	unsigned char bh[64], sig[1024], digest[32];
	char err[200] = "", *txt = NULL, *copy = NULL, *canon = NULL;
	struct dkim_pubkey *pk = NULL;
	EVP_MD_CTX *md = NULL;
	struct span hs;
	size_t n, k;
	long bhlen, siglen;
	unsigned int dlen;
	int rc, from = 0;

	if (g->reason[0] != '\0')
		FAIL("%s", g->reason);
	/* h= must cover From (RFC 6376 5.4) */
	hs = trim(buf, g->h);
	for (k = hs.a; k < hs.b;) {
		struct span nm = { k, k, 1 };

		while (nm.b < hs.b && buf[nm.b] != ':')
			nm.b++;
		if (span_eq(buf, nm, "from", 1))
			from = 1;
		k = nm.b + 1;
	}
	if (!from)
		FAIL("From not signed");
	if (g->i.set) {
		char auid[256], *at;

		span_cpy(buf, g->i, auid, sizeof(auid));
		if ((at = strrchr(auid, '@')) == NULL || !domain_within(at + 1, r->domain))
			FAIL("i= not within d=");
	}
	if (g->x.set && (long long)now > g->xv)
		FAIL("signature expired");
	bhlen = dkim__b64_decode(buf + g->bh.a, g->bh.b - g->bh.a, bh, sizeof(bh));
	if (bhlen != 32)
		FAIL("bad bh=");
	if (CRYPTO_memcmp(bh, v->bh[g->bhi].digest, 32) != 0)
		FAIL("body hash mismatch");
	siglen = dkim__b64_decode(buf + g->b.a, g->b.b - g->b.a, sig, sizeof(sig));
	if (siglen <= 0)
		FAIL("bad b=");

	if (v->lookup == NULL)
		FAIL("no key lookup");
	rc = v->lookup(v->arg, r->domain, r->selector, &txt, err, sizeof(err));
	if (rc != 0 || txt == NULL)
		FAIL("no key: %s", err[0] ? err : dkim_strerror(rc));
	rc = dkim_pubkey_parse(txt, strlen(txt), &pk, err, sizeof(err));
	if (rc == DKIM_ENOKEY)
		FAIL("key revoked");
	if (rc != 0)
		FAIL("bad key record: %s", err);
	if (pk->alg != g->alg)
		FAIL("key type does not match a=");
	if (!pk->sha256_ok)
		FAIL("key h= excludes sha256");
	if (!pk->email_ok)
		FAIL("key s= excludes email");
	if (pk->strict && g->i.set) {
		char auid[256], *at;

		span_cpy(buf, g->i, auid, sizeof(auid));
		at = strrchr(auid, '@');
		if (at == NULL || strcasecmp(at + 1, r->domain) != 0)
			FAIL("key t=s forbids a subdomain in i=");
	}

	/* header hash: signed fields, then this field with b= emptied */
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
		FAIL("out of memory");
	if (dkim__hash_fields(&v->hdrs, buf + hs.a, hs.b - hs.a, g->hc, md) != 0)
		FAIL("out of memory");
	if ((copy = malloc(f->len + 1)) == NULL || (canon = malloc(f->len + 1)) == NULL)
		FAIL("out of memory");
	n = g->b.a - f->off;
	memcpy(copy, buf + f->off, n);
	memcpy(copy + n, buf + g->b.b, f->off + f->len - g->b.b);
	n += f->off + f->len - g->b.b;
	n = dkim_canon_header(g->hc, copy, n, canon);
	EVP_DigestUpdate(md, canon, n);
	if (EVP_DigestFinal_ex(md, digest, &dlen) != 1)
		FAIL("hash failed");
	if (dkim__verify_digest(pk, digest, sig, (size_t)siglen) != 0)
		FAIL("signature mismatch");
	r->pass = 1;
	snprintf(r->reason, sizeof(r->reason), "ok");
done:
	EVP_MD_CTX_free(md);
	dkim_pubkey_free(pk);
	free(txt);
	free(copy);
	free(canon);
}
#undef FAIL

int
dkim_verifier_finish(struct dkim_verifier *v, time_t now,
    struct dkim_verify_result *res, int nres)
{
	int k, rc, out = 0;

	if (v->err)
		return v->err;
	if (!v->in_body) {
		if ((rc = dkim__hdr_end(&v->hdrs)) != 0)
			return v->err = rc;
		v->in_body = 1;
		if ((rc = setup_sigs(v)) != 0)
			return v->err = rc;
	}
	for (k = 0; k < v->nbh; k++)
		if ((rc = dkim__bodyhash_final(&v->bh[k])) != 0)
			return v->err = rc;
	for (k = 0; k < v->nsigs && out < nres; k++) {
		struct vsig *g = &v->sigs[k];
		struct dkim_verify_result *r = &res[out++];

		memset(r, 0, sizeof(*r));
		if (g->d.set)
			span_cpy(v->hdrs.buf, g->d, r->domain, sizeof(r->domain));
		if (g->s.set)
			span_cpy(v->hdrs.buf, g->s, r->selector, sizeof(r->selector));
		if (g->a.set)
			span_cpy(v->hdrs.buf, g->a, r->alg, sizeof(r->alg));
		check_one(v, g, now, r);
	}
	if (v->nextra > 0 && out < nres) {
		/* never let unchecked signatures pass silently */
		struct dkim_verify_result *r = &res[out++];

		memset(r, 0, sizeof(*r));
		snprintf(r->reason, sizeof(r->reason),
		    "%d more DKIM-Signature fields not checked (limit %d)",
		    v->nextra, DKIM_MAX_SIGS);
	}
	v->err = DKIM_ESTATE;
	return out;
}

void
dkim_verifier_free(struct dkim_verifier *v)
{
	int k;

	if (v == NULL)
		return;
	for (k = 0; k < v->nbh; k++)
		dkim__bodyhash_reset(&v->bh[k]);
	dkim__hdrs_reset(&v->hdrs);
	free(v);
}
