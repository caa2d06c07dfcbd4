/*
 * sign.c - the streaming DKIM signer (RFC 6376 5) and the pieces of header
 * hashing it shares with the verifier.
 *
 * A signer holds up to DKIM_MAX_SIGS signatures.  The header block is kept
 * (bounded); the body streams through one canonicalizer + SHA-256 per body
 * canonicalization in use, so an RSA and an Ed25519 signature with the same
 * c= share one body hash.  dkim_signer_finish() then picks the signed fields
 * bottom-up (RFC 6376 5.4.2), oversigns From, builds the DKIM-Signature
 * field folded at DKIM_LINE_MAX columns and signs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dkim/dkim_int.h"

const char dkim_default_headers[] =
    "From:Reply-To:Subject:Date:To:Cc:Message-ID:In-Reply-To:References:"
    "MIME-Version:Content-Type:Content-Transfer-Encoding:Content-ID:"
    "Content-Description:Sender:Resent-Date:Resent-From:Resent-Sender:"
    "Resent-To:Resent-Cc:Resent-Message-ID:List-Id:List-Help:"
    "List-Unsubscribe:List-Unsubscribe-Post:List-Subscribe:List-Post:"
    "List-Owner:List-Archive:Feedback-ID";

struct sig {
	char *domain, *selector, *headers;
	struct dkim_key *key;
	enum dkim_alg alg;
	enum dkim_canon hcanon, bcanon;
	time_t t;
	long x;
};

struct dkim_signer {
	struct dkim__hdrs hdrs;
	struct sig sigs[DKIM_MAX_SIGS];
	int nsigs;
	struct dkim__bodyhash bh[2];   /* by body canonicalization */
	int bh_used[2];
	int in_body;
	int err;                       /* sticky */
	dkim_headers_cb on_headers;
	void *on_headers_arg;
};

/* ---- growable string ---------------------------------------------------- */

int
dkim__str_add(struct dkim__str *s, const char *p, size_t n)
{
	if (s->err)
		return s->err;
	if (s->len + n + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 256;
		char *nb;

		while (cap < s->len + n + 1)
			cap *= 2;
		if ((nb = realloc(s->p, cap)) == NULL)
			return s->err = DKIM_ENOMEM;
		s->p = nb;
		s->cap = cap;
	}
	memcpy(s->p + s->len, p, n);
	s->len += n;
	s->p[s->len] = '\0';
	return 0;
}

int
dkim__str_addz(struct dkim__str *s, const char *p)
{
	return dkim__str_add(s, p, strlen(p));
}

/* ---- header hashing ------------------------------------------------------ */

int
dkim__hash_fields(struct dkim__hdrs *h, const char *hlist, size_t hlen,
    enum dkim_canon hc, EVP_MD_CTX *md)
{
	size_t i, maxlen = 0, pos = 0;
	char *scratch;

	for (i = 0; i < h->nf; i++) {
		h->f[i].used = 0;
		if (h->f[i].len > maxlen)
			maxlen = h->f[i].len;
	}
	if ((scratch = malloc(maxlen + 1)) == NULL)
		return DKIM_ENOMEM;
	while (pos < hlen) {
		size_t a = pos, b;

		while (pos < hlen && hlist[pos] != ':')
			pos++;
		b = pos++;
		while (a < b && dkim__is_fws(hlist[a]))
			a++;
		while (b > a && dkim__is_fws(hlist[b - 1]))
			b--;
		if (a == b)
			continue;
		/* RFC 6376 5.4.2: the last unused instance, bottom-up */
		for (i = h->nf; i-- > 0;) {
			struct dkim__field *f = &h->f[i];
			size_t n;

			if (f->used || !dkim__hdr_name_eq(h, i, hlist + a, b - a))
				continue;
			f->used = 1;
			n = dkim_canon_header(hc, h->buf + f->off, f->len, scratch);
			EVP_DigestUpdate(md, scratch, n);
			EVP_DigestUpdate(md, "\r\n", 2);
			break;
		}
		/* a name with no instance left contributes nothing */
	}
	free(scratch);
	return 0;
}

/* ---- signer ------------------------------------------------------------- */

struct dkim_signer *
dkim_signer_new(void)
{
	struct dkim_signer *s = calloc(1, sizeof(*s));

	if (s != NULL)
		dkim__hdrs_init(&s->hdrs);
	return s;
}

/* dns_name_ok - letters, digits, '-', '_' and '.', labels of 1..63 octets. */
static int
dns_name_ok(const char *s)
{
	size_t label = 0, n = 0;

	for (; *s != '\0'; s++, n++) {
		char c = *s;

		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return n > 0 && n <= 253 && label > 0;
}

int
dkim_signer_add(struct dkim_signer *s, const struct dkim_sign_params *p)
{
	struct sig *g;
	int rc;

	if (s->in_body)
		return DKIM_ESTATE;
	if (p->domain == NULL || p->selector == NULL || p->key == NULL ||
	    *p->domain == '\0' || *p->selector == '\0')
		return DKIM_EINVAL;
	if (!dns_name_ok(p->domain) || !dns_name_ok(p->selector))
		return DKIM_EINVAL;
	if (dkim_key_alg(p->key) != p->alg)
		return DKIM_EALG;
	if (s->nsigs == DKIM_MAX_SIGS)
		return DKIM_ETOO_MANY;
	g = &s->sigs[s->nsigs];
	memset(g, 0, sizeof(*g));
	g->domain = strdup(p->domain);
	g->selector = strdup(p->selector);
	g->headers = strdup(p->headers != NULL ? p->headers : dkim_default_headers);
	if (g->domain == NULL || g->selector == NULL || g->headers == NULL) {
		rc = DKIM_ENOMEM;
		goto fail;
	}
	g->key = dkim_key_ref(p->key);
	g->alg = p->alg;
	g->hcanon = p->hcanon;
	g->bcanon = p->bcanon;
	g->t = p->t;
	g->x = p->x;
	if (!s->bh_used[g->bcanon]) {
		if ((rc = dkim__bodyhash_init(&s->bh[g->bcanon], g->bcanon,
		    (uint64_t)-1)) != 0) {
			dkim_key_free(g->key);
			goto fail;
		}
		s->bh_used[g->bcanon] = 1;
	}
	s->nsigs++;
	return 0;
fail:
	free(g->domain);
	free(g->selector);
	free(g->headers);
	memset(g, 0, sizeof(*g));
	return rc;
}

void
dkim_signer_on_headers(struct dkim_signer *s, dkim_headers_cb cb, void *arg)
{
	s->on_headers = cb;
	s->on_headers_arg = arg;
}

int
dkim_from_domain(const char *v, size_t len, char *out, size_t outlen)
{
	const char *end = v + len, *lt = NULL, *a, *b, *at = NULL;
	int quoted = 0;
	size_t n, k;

	/* the first angle-addr outside quotes, else the value is an addr-spec */
	for (a = v; a < end; a++) {
		if (*a == '"' && (a == v || a[-1] != '\\'))
			quoted = !quoted;
		else if (*a == '<' && !quoted) {
			lt = a;
			break;
		} else if (*a == ',' && !quoted)
			break;
	}
	if (lt != NULL) {
		a = lt + 1;
		for (b = a; b < end && *b != '>'; b++)
			;
	} else {
		for (a = v; a < end && dkim__is_fws(*a); a++)
			;
		for (b = a; b < end && *b != ',' && *b != '(' && !dkim__is_fws(*b); b++)
			;
	}
	for (const char *q = a; q < b; q++)
		if (*q == '@')
			at = q;
	if (at == NULL)
		return DKIM_EINVAL;
	a = at + 1;
	while (b > a && dkim__is_fws(b[-1]))
		b--;
	n = (size_t)(b - a);
	if (n == 0 || n >= outlen)
		return DKIM_EINVAL;
	for (k = 0; k < n; k++) {
		char c = a[k];

		if (c == '<' || c == '>' || c == '"' || c == ' ' || c == '\t')
			return DKIM_EINVAL;
		out[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	out[n] = '\0';
	return 0;
}

/* headers_done - the header block is complete: let the caller pick keys. */
static int
headers_done(struct dkim_signer *s)
{
	char dom[256];
	const char *d = NULL;
	size_t i;
	int rc;

	s->in_body = 1;
	if (s->on_headers == NULL)
		return 0;
	for (i = 0; i < s->hdrs.nf; i++) {
		const struct dkim__field *f = &s->hdrs.f[i];
		const char *val;

		if (!dkim__hdr_name_eq(&s->hdrs, i, "From", 4))
			continue;
		val = memchr(s->hdrs.buf + f->off, ':', f->len);
		val++;
		if (dkim_from_domain(val, (size_t)(s->hdrs.buf + f->off + f->len - val),
		    dom, sizeof(dom)) == 0)
			d = dom;
		break;
	}
	/* dkim_signer_add refuses once in_body is set; allow it in the callback */
	s->in_body = 0;
	rc = s->on_headers(s->on_headers_arg, s, d);
	s->in_body = 1;
	return rc;
}

int
dkim_signer_write(struct dkim_signer *s, const char *p, size_t len)
{
	int i, rc;

	if (s->err)
		return s->err;
	if (!s->in_body) {
		long n = dkim__hdr_feed(&s->hdrs, p, len);

		if (n < 0)
			return s->err = (int)n;
		if (!s->hdrs.done)
			return 0;
		if ((rc = headers_done(s)) != 0)
			return s->err = rc;
		p += n;
		len -= (size_t)n;
	}
	for (i = 0; i < 2; i++)
		if (s->bh_used[i])
			dkim__bodyhash_update(&s->bh[i], p, len);
	return 0;
}

/* count_fields - how many fields of the message are named name. */
static size_t
count_fields(const struct dkim__hdrs *h, const char *name, size_t n)
{
	size_t i, c = 0;

	for (i = 0; i < h->nf; i++)
		c += dkim__hdr_name_eq(h, i, name, n);
	return c;
}

/*
 * build_hlist - the h= value: each candidate once per instance in the
 * message, From once more (oversigned, RFC 6376 8.15), duplicates in the
 * candidate list ignored.  NUL-separated names in *out.
 */
static int
build_hlist(const struct dkim__hdrs *h, const char *cand, struct dkim__str *out)
{
	struct dkim__str seen = { 0 };
	const char *p = cand;
	size_t nfrom = count_fields(h, "From", 4);
	int rc = 0;

	if (nfrom == 0)
		return DKIM_ENOFROM;
	/* From comes first whether listed or not */
	for (size_t k = 0; k <= nfrom; k++)
		dkim__str_add(out, "From", 5);
	dkim__str_add(&seen, ":from:", 6);
	while (*p != '\0') {
		const char *a = p, *b;
		char key[260];
		size_t n, c;

		while (*p != '\0' && *p != ':')
			p++;
		b = p;
		if (*p == ':')
			p++;
		while (a < b && dkim__is_fws(*a))
			a++;
		while (b > a && dkim__is_fws(b[-1]))
			b--;
		n = (size_t)(b - a);
		if (n == 0 || n > 250)
			continue;
		key[0] = ':';
		for (size_t k = 0; k < n; k++)
			key[k + 1] = (char)((a[k] >= 'A' && a[k] <= 'Z') ? a[k] + 32 : a[k]);
		key[n + 1] = ':';
		key[n + 2] = '\0';
		if (seen.p != NULL && strstr(seen.p, key) != NULL)
			continue;
		dkim__str_add(&seen, key + 1, n + 1);
		for (c = count_fields(h, a, n); c > 0; c--) {
			dkim__str_add(out, a, n);
			dkim__str_add(out, "", 1);
		}
	}
	if (out->err || seen.err)
		rc = DKIM_ENOMEM;
	free(seen.p);
	return rc;
}

/* fold_token - append " token", or CRLF SP token when the line would pass 78. */
static void
fold_token(struct dkim__str *s, size_t *col, const char *tok, size_t n, int sep)
{
	if (*col + (sep ? 1 : 0) + n > DKIM_LINE_MAX) {
		dkim__str_add(s, "\r\n ", 3);
		*col = 1;
	} else if (sep) {
		dkim__str_add(s, " ", 1);
		(*col)++;
	}
	dkim__str_add(s, tok, n);
	*col += n;
}

/* sign_one - append one complete DKIM-Signature field to out. */
static int
sign_one(struct dkim_signer *s, struct sig *g, struct dkim__str *out)
{
	struct dkim__str hl = { 0 }, f = { 0 };
	unsigned char digest[32], sigbuf[512];
	char tok[512], b64[1024];
	size_t col, siglen = 0, n, i;
	EVP_MD_CTX *md = NULL;
	unsigned int dlen;
	time_t t = g->t ? g->t : time(NULL);
	const char *name;
	int rc;

	if ((rc = build_hlist(&s->hdrs, g->headers, &hl)) != 0)
		goto fail;

	dkim__str_addz(&f, "DKIM-Signature:");
	col = f.len;
	n = (size_t)snprintf(tok, sizeof(tok), "v=1;");
	fold_token(&f, &col, tok, n, 1);
	n = (size_t)snprintf(tok, sizeof(tok), "a=%s;", dkim_alg_name(g->alg));
	fold_token(&f, &col, tok, n, 1);
	n = (size_t)snprintf(tok, sizeof(tok), "c=%s/%s;",
	    g->hcanon == DKIM_CANON_RELAXED ? "relaxed" : "simple",
	    g->bcanon == DKIM_CANON_RELAXED ? "relaxed" : "simple");
	fold_token(&f, &col, tok, n, 1);
	n = (size_t)snprintf(tok, sizeof(tok), "d=%s;", g->domain);
	fold_token(&f, &col, tok, n < sizeof(tok) ? n : sizeof(tok) - 1, 1);
	n = (size_t)snprintf(tok, sizeof(tok), "s=%s;", g->selector);
	fold_token(&f, &col, tok, n < sizeof(tok) ? n : sizeof(tok) - 1, 1);
	n = (size_t)snprintf(tok, sizeof(tok), "t=%lld;", (long long)t);
	fold_token(&f, &col, tok, n, 1);
	if (g->x > 0) {
		n = (size_t)snprintf(tok, sizeof(tok), "x=%lld;",
		    (long long)t + g->x);
		fold_token(&f, &col, tok, n, 1);
	}
	/* h=: break only after a colon (FWS is allowed there) */
	for (name = hl.p, i = 0; name != NULL && name < hl.p + hl.len;
	    name += strlen(name) + 1, i++) {
		int last = name + strlen(name) + 1 >= hl.p + hl.len;

		n = (size_t)snprintf(tok, sizeof(tok), "%s%s%s", i == 0 ? "h=" : "",
		    name, last ? ";" : ":");
		fold_token(&f, &col, tok, n, i == 0);
	}
	dkim__b64_encode(s->bh[g->bcanon].digest, 32, b64);
	n = (size_t)snprintf(tok, sizeof(tok), "bh=%s;", b64);
	fold_token(&f, &col, tok, n, 1);
	/* b= starts its own line so the signed text is unambiguous */
	dkim__str_add(&f, "\r\n b=", 5);
	col = 3;
	if (f.err) {
		rc = DKIM_ENOMEM;
		goto fail;
	}

	/* RFC 6376 3.7: hash the signed fields, then this field with empty b= */
	if ((md = EVP_MD_CTX_new()) == NULL) {
		rc = DKIM_ENOMEM;
		goto fail;
	}
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = DKIM_ECRYPTO;
		goto fail;
	}
	{
		/* the h= value, colon-joined, for dkim__hash_fields */
		struct dkim__str joined = { 0 };

		for (name = hl.p; name < hl.p + hl.len; name += strlen(name) + 1) {
			dkim__str_addz(&joined, name);
			dkim__str_add(&joined, ":", 1);
		}
		if (joined.err) {
			free(joined.p);
			rc = DKIM_ENOMEM;
			goto fail;
		}
		rc = dkim__hash_fields(&s->hdrs, joined.p, joined.len, g->hcanon, md);
		free(joined.p);
		if (rc != 0)
			goto fail;
	}
	{
		char *canon = malloc(f.len + 1);

		if (canon == NULL) {
			rc = DKIM_ENOMEM;
			goto fail;
		}
		n = dkim_canon_header(g->hcanon, f.p, f.len, canon);
		EVP_DigestUpdate(md, canon, n);
		free(canon);
	}
	if (EVP_DigestFinal_ex(md, digest, &dlen) != 1) {
		rc = DKIM_ECRYPTO;
		goto fail;
	}
	if ((rc = dkim__sign_digest(g->key, digest, sigbuf, &siglen)) != 0)
		goto fail;
	n = dkim__b64_encode(sigbuf, siglen, b64);
	for (i = 0; i < n;) {
		size_t room = DKIM_LINE_MAX - col, k = n - i < room ? n - i : room;

		if (room == 0) {
			dkim__str_add(&f, "\r\n ", 3);
			col = 1;
			continue;
		}
		dkim__str_add(&f, b64 + i, k);
		col += k;
		i += k;
	}
	dkim__str_add(&f, "\r\n", 2);
	dkim__str_add(out, f.p, f.len);
	rc = f.err || out->err ? DKIM_ENOMEM : 0;
fail:
	EVP_MD_CTX_free(md);
	free(hl.p);
	free(f.p);
	return rc;
}

int
dkim_signer_finish(struct dkim_signer *s, char **out, size_t *outlen)
{
	struct dkim__str res = { 0 };
	int i, rc;

	*out = NULL;
	*outlen = 0;
	if (s->err)
		return s->err;
	if (!s->in_body) {
		if ((rc = dkim__hdr_end(&s->hdrs)) != 0)
			return s->err = rc;
		if ((rc = headers_done(s)) != 0)
			return s->err = rc;
	}
	for (i = 0; i < 2; i++)
		if (s->bh_used[i] && (rc = dkim__bodyhash_final(&s->bh[i])) != 0)
			return s->err = rc;
	for (i = 0; i < s->nsigs; i++)
		if ((rc = sign_one(s, &s->sigs[i], &res)) != 0) {
			free(res.p);
			return s->err = rc;
		}
	if (res.p == NULL && dkim__str_add(&res, "", 0) != 0)
		return s->err = DKIM_ENOMEM;
	s->err = DKIM_ESTATE; /* finish only once */
	*out = res.p;
	*outlen = res.len;
	return 0;
}

void
dkim_signer_free(struct dkim_signer *s)
{
	int i;

	if (s == NULL)
		return;
	for (i = 0; i < s->nsigs; i++) {
		free(s->sigs[i].domain);
		free(s->sigs[i].selector);
		free(s->sigs[i].headers);
		dkim_key_free(s->sigs[i].key);
	}
	for (i = 0; i < 2; i++)
		if (s->bh_used[i])
			dkim__bodyhash_reset(&s->bh[i]);
	dkim__hdrs_reset(&s->hdrs);
	free(s);
}
