/*
 * names.c - the names of managed keys (issue 5): enc(domain), the
 * selectorN-enc(domain) selectors with their hashed form for long domains,
 * and the verifier-side "implicit DMARC alignment" check of the Office 365
 * model.  The scheme is documented in dkim.h; this file keeps to it.
 *
 * Everything here is pure string work on caller-owned buffers, apart from
 * one SHA-256 for the hashed form.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "dkim/dkim.h"

#define NAMES_HOST_MAX 253       /* octets of a host name, no trailing dot */
#define NAMES_LABEL_MAX 63       /* octets of one label */
#define NAMES_PREFIX_LEN 10      /* strlen("selector1-") */

/* names_lower - ASCII lower case; other bytes unchanged. */
static char
names_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* names_ldh - a lower-case letter, a digit or '-'. */
static int
names_ldh(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

const char *
dkim_names_strerror(int err)
{
	if (err == DKIM_EHASHED_NAME)
		return "hashed name: the domain is not recoverable from it";
	return dkim_strerror(err);
}

int
dkim_domain_normalize(const char *domain, char *out, size_t outlen)
{
	char buf[NAMES_HOST_MAX + 1];
	size_t len, i, label = 0;

	if (domain == NULL)
		return DKIM_EINVAL;
	len = strlen(domain);
	if (len > 0 && domain[len - 1] == '.')
		len--;                          /* one trailing dot: absolute */
	if (len == 0 || len > NAMES_HOST_MAX)
		return DKIM_EINVAL;
	for (i = 0; i < len; i++) {
		buf[i] = names_lower(domain[i]);
		if (buf[i] == '.') {
			/* empty label, or one ending in '-' */
			if (label == 0 || buf[i - 1] == '-')
				return DKIM_EINVAL;
			label = 0;
			continue;
		}
		/* 8-bit bytes (U-labels), '_', blanks: all refused here */
		if (!names_ldh(buf[i]))
			return DKIM_EINVAL;
		if (buf[i] == '-' && label == 0)
			return DKIM_EINVAL;
		if (++label > NAMES_LABEL_MAX)
			return DKIM_EINVAL;
	}
	if (buf[len - 1] == '-' || buf[len - 1] == '.')
		return DKIM_EINVAL;             /* "a-", or "a.." before */
	buf[len] = '\0';
	if (len + 1 > outlen)
		return -ENOBUFS;
	memcpy(out, buf, len + 1);
	return 0;
}

/* names_encode - step 2 on a normalized name; 0 or -ENOBUFS. */
static int
names_encode(const char *norm, char *out, size_t outlen)
{
	size_t o = 0;
	const char *p;

	for (p = norm; *p != '\0'; p++) {
		if (*p == '-') {
			if (o + 2 >= outlen)
				return -ENOBUFS;
			out[o++] = '-';
			out[o++] = '-';
		} else {
			if (o + 1 >= outlen)
				return -ENOBUFS;
			out[o++] = *p == '.' ? '-' : *p;
		}
	}
	if (o >= outlen)
		return -ENOBUFS;
	out[o] = '\0';
	return 0;
}

int
dkim_domain_encode(const char *domain, char *out, size_t outlen)
{
	char norm[NAMES_HOST_MAX + 1];
	int rc;

	if ((rc = dkim_domain_normalize(domain, norm, sizeof(norm))) != 0)
		return rc;
	return names_encode(norm, out, outlen);
}

/* names_is_hashed - "--" followed by exactly 26 base32 characters. */
static int
names_is_hashed(const char *x)
{
	size_t i;

	if (x[0] != '-' || x[1] != '-')
		return 0;
	for (i = 0; i < DKIM_ENC_HASH_CHARS; i++) {
		char c = x[2 + i];

		if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7')))
			return 0;
	}
	return x[2 + DKIM_ENC_HASH_CHARS] == '\0';
}

int
dkim_domain_decode(const char *enc, char *out, size_t outlen)
{
	char dom[NAMES_HOST_MAX + 2], norm[NAMES_HOST_MAX + 1];
	char back[DKIM_ENC_BUFSIZE];
	size_t o = 0;
	const char *p;

	if (enc == NULL || *enc == '\0')
		return DKIM_EINVAL;
	if (names_is_hashed(enc))
		return DKIM_EHASHED_NAME;
	for (p = enc; *p != '\0'; p++) {
		if (o >= sizeof(dom) - 1)
			return DKIM_EINVAL;             /* longer than any host */
		if (*p == '-' && p[1] == '-') {
			dom[o++] = '-';
			p++;
		} else
			dom[o++] = *p == '-' ? '.' : *p;
	}
	dom[o] = '\0';
	/*
	 * Only canonical encodings decode: the name must be a host name,
	 * already normalized (no trailing dot, lower case), and encode back
	 * to exactly enc.  That refuses "a---b", "-a", "a-", "A-com", ...
	 */
	if (dkim_domain_normalize(dom, norm, sizeof(norm)) != 0 ||
	    strcmp(norm, dom) != 0 ||
	    names_encode(norm, back, sizeof(back)) != 0 ||
	    strcmp(back, enc) != 0)
		return DKIM_EINVAL;
	if (o + 1 > outlen)
		return -ENOBUFS;
	memcpy(out, norm, o + 1);
	return 0;
}

/*
 * names_hash - "--" + the first 26 characters of base32 (RFC 4648, lower
 * case, no padding) of SHA-256(norm) into out (29 bytes).  0 or
 * DKIM_ECRYPTO.
 */
static int
names_hash(const char *norm, char *out)
{
	static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t i, bit;

	if (EVP_Digest(norm, strlen(norm), md, &mdlen, EVP_sha256(), NULL) != 1
	    || mdlen != 32)
		return DKIM_ECRYPTO;
	out[0] = '-';
	out[1] = '-';
	/* 26 groups of 5 bits, most significant bit first (130 of 256) */
	for (i = 0; i < DKIM_ENC_HASH_CHARS; i++) {
		unsigned v = 0, k;

		for (k = 0; k < 5; k++) {
			bit = i * 5 + k;
			v = v << 1 | ((md[bit / 8] >> (7 - bit % 8)) & 1);
		}
		out[2 + i] = b32[v];
	}
	out[2 + DKIM_ENC_HASH_CHARS] = '\0';
	return 0;
}

/*
 * names_selector_part - what follows "selectorN-" for the domain: the plain
 * enc when it has at most DKIM_ENC_PLAIN_MAX octets, else "--" + hash.
 * out holds DKIM_ENC_BUFSIZE.  0, DKIM_EINVAL or DKIM_ECRYPTO.
 */
static int
names_selector_part(const char *domain, char *out, int *hashed)
{
	char norm[NAMES_HOST_MAX + 1];
	int rc;

	if ((rc = dkim_domain_normalize(domain, norm, sizeof(norm))) != 0)
		return rc;
	if ((rc = names_encode(norm, out, DKIM_ENC_BUFSIZE)) != 0)
		return rc;
	*hashed = strlen(out) > DKIM_ENC_PLAIN_MAX;
	if (*hashed)
		return names_hash(norm, out);
	return 0;
}

int
dkim_selector_name(int slot, const char *domain, char *out, size_t outlen)
{
	char part[DKIM_ENC_BUFSIZE];
	int rc, hashed, n;

	if (slot != 1 && slot != 2)
		return DKIM_EINVAL;
	if ((rc = names_selector_part(domain, part, &hashed)) != 0)
		return rc;
	n = snprintf(out, outlen, "selector%d-%s", slot, part);
	if (n < 0 || (size_t)n >= outlen)
		return -ENOBUFS;
	return 0;
}

/*
 * names_selector_split - "selector1-X" / "selector2-X" (any case) gives the
 * slot and a pointer to X within s; -1 when s is not of that shape.
 */
static int
names_selector_split(const char *s, const char **x)
{
	if (strncasecmp(s, "selector", 8) != 0 ||
	    (s[8] != '1' && s[8] != '2') || s[9] != '-' || s[10] == '\0')
		return -1;
	*x = s + NAMES_PREFIX_LEN;
	return s[8] - '0';
}

int
dkim_selector_parse(const char *selector, int *slot, char *domain,
    size_t domainlen)
{
	char x[NAMES_LABEL_MAX + 1];
	const char *p;
	size_t i;
	int n;

	if (selector == NULL || strlen(selector) > NAMES_LABEL_MAX ||
	    (n = names_selector_split(selector, &p)) < 0)
		return DKIM_EINVAL;
	for (i = 0; p[i] != '\0'; i++)
		x[i] = names_lower(p[i]);
	x[i] = '\0';
	*slot = n;
	return dkim_domain_decode(x, domain, domainlen);
}

/* ---- alignment ------------------------------------------------------------ */

/* names_under - is name (normalized) parent or strictly below parent? */
static int
names_under(const char *name, const char *parent)
{
	size_t nl = strlen(name), pl = strlen(parent);

	return nl > pl && name[nl - pl - 1] == '.' &&
	    strcmp(name + nl - pl, parent) == 0;
}

int
dkim_alignment_check(const char *from_domain, const char *d,
    const char *s, const char *initial_suffix, char *why, size_t whylen)
{
	char from[NAMES_HOST_MAX + 1], dn[NAMES_HOST_MAX + 1];
	char sfx[NAMES_HOST_MAX + 1], want[DKIM_ENC_BUFSIZE];
	char got[NAMES_LABEL_MAX + 1], named[NAMES_HOST_MAX + 1];
	const char *x;
	size_t i;
	int slot, hashed;

	if (why == NULL)
		whylen = 0;                     /* no reason wanted */
#define WHY(...) do { if (whylen > 0) snprintf(why, whylen, __VA_ARGS__); } \
	while (0)
	if (from_domain == NULL ||
	    dkim_domain_normalize(from_domain, from, sizeof(from)) != 0) {
		WHY("the From domain is not a valid host name: not aligned");
		return 0;
	}
	if (d == NULL || dkim_domain_normalize(d, dn, sizeof(dn)) != 0) {
		WHY("d= is not a valid domain: not aligned");
		return 0;
	}
	/* DMARC relaxed alignment, without a public suffix list. */
	if (strcmp(dn, from) == 0) {
		WHY("d=%s is the From domain: aligned", dn);
		return 1;
	}
	if (strchr(dn, '.') != NULL && names_under(from, dn)) {
		WHY("d=%s is a parent of the From domain %s: aligned", dn, from);
		return 1;
	}
	if (initial_suffix == NULL || *initial_suffix == '\0') {
		WHY("d=%s is neither the From domain %s nor its parent, and no "
		    "initial suffix is given: not aligned", dn, from);
		return 0;
	}
	if (*initial_suffix == '.')
		initial_suffix++;               /* ".onmicrosoft.com" */
	if (dkim_domain_normalize(initial_suffix, sfx, sizeof(sfx)) != 0) {
		WHY("the initial suffix is not a valid domain: not aligned");
		return 0;
	}
	if (!names_under(dn, sfx)) {
		WHY("d=%s is neither the From domain %s nor its parent, nor under "
		    "the initial suffix %s: not aligned", dn, from, sfx);
		return 0;
	}
	if (s == NULL || strlen(s) > NAMES_LABEL_MAX ||
	    (slot = names_selector_split(s, &x)) < 0) {
		WHY("d=%s is under the initial suffix %s, but s=%s is not "
		    "selector1- or selector2- and a name: not aligned", dn, sfx,
		    s != NULL ? s : "");
		return 0;
	}
	for (i = 0; x[i] != '\0'; i++)
		got[i] = names_lower(x[i]);
	got[i] = '\0';
	if (names_selector_part(from, want, &hashed) != 0) {
		WHY("cannot compute the selector of %s: not aligned", from);
		return 0;
	}
	if (strcmp(got, want) == 0) {
		WHY("d=%s is under the initial suffix %s, s=%s names %s%s: "
		    "implicitly aligned", dn, sfx, s, hashed ? "the hash of " : "",
		    from);
		return 1;
	}
	if (dkim_domain_decode(got, named, sizeof(named)) == 0)
		WHY("d=%s is under the initial suffix %s, but s=%s names %s, not "
		    "the From domain %s: not aligned", dn, sfx, s, named, from);
	else
		WHY("d=%s is under the initial suffix %s, but s=%s does not name "
		    "the From domain %s (wanted selector%d-%s): not aligned", dn,
		    sfx, s, from, slot, want);
	return 0;
#undef WHY
}
