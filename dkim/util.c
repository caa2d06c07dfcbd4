/*
 * util.c - small pieces of the DKIM engine with no state: error strings,
 * algorithm and canonicalization names (the a= and c= tags of RFC 6376
 * 3.5), and the base64 codec used for b=, bh= and the p= of key records.
 * The decoder skips the whitespace RFC 6376 3.5 allows inside base64 tag
 * values and rejects anything else that is not base64.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "dkim/dkim_int.h"

static const char *const dkim_errstr[] = {
#define XX(name, s) s,
	DKIM_ERRNO_MAP(XX)
#undef XX
};

#define DKIM_NERR (sizeof(dkim_errstr) / sizeof(dkim_errstr[0]))

const char *
dkim_strerror(int err)
{
	const char *s;

	if (err == DKIM_OK)
		return "success";
	if (err > DKIM__ERRNO_BASE && err <= DKIM__ERRNO_BASE + (int)DKIM_NERR)
		return dkim_errstr[err - DKIM__ERRNO_BASE - 1];
	/* dkim_key_write_pem returns -errno. */
	if (err < 0 && err > -4096 && (s = strerrordesc_np(-err)) != NULL)
		return s;
	return "unknown error";
}

const char *
dkim_alg_name(enum dkim_alg alg)
{
	switch (alg) {
	case DKIM_ALG_RSA_SHA256:
		return "rsa-sha256";
	case DKIM_ALG_ED25519_SHA256:
		return "ed25519-sha256";
	}
	return "unknown";
}

/*
 * RFC 6376 3.2: tag values are case-sensitive unless the tag says
 * otherwise, and neither a= nor c= does.
 */
int
dkim_alg_parse(const char *s, enum dkim_alg *out)
{
	if (s == NULL)
		return DKIM_EINVAL;
	if (strcmp(s, "rsa-sha256") == 0)
		*out = DKIM_ALG_RSA_SHA256;
	else if (strcmp(s, "ed25519-sha256") == 0)
		*out = DKIM_ALG_ED25519_SHA256;
	else
		return DKIM_EINVAL;
	return 0;
}

/* dkim_canon_word - "simple" or "relaxed", exactly len bytes of s. */
static int
dkim_canon_word(const char *s, size_t len, enum dkim_canon *out)
{
	if (len == 6 && memcmp(s, "simple", 6) == 0)
		*out = DKIM_CANON_SIMPLE;
	else if (len == 7 && memcmp(s, "relaxed", 7) == 0)
		*out = DKIM_CANON_RELAXED;
	else
		return DKIM_EINVAL;
	return 0;
}

/* RFC 6376 3.5 c=: "H/B", or "H" alone meaning the body is simple. */
int
dkim_canon_parse(const char *s, enum dkim_canon *hc, enum dkim_canon *bc)
{
	enum dkim_canon h, b = DKIM_CANON_SIMPLE;
	const char *slash;

	if (s == NULL)
		return DKIM_EINVAL;
	slash = strchr(s, '/');
	if (slash == NULL) {
		if (dkim_canon_word(s, strlen(s), &h) != 0)
			return DKIM_EINVAL;
	} else if (dkim_canon_word(s, (size_t)(slash - s), &h) != 0 ||
	    dkim_canon_word(slash + 1, strlen(slash + 1), &b) != 0)
		return DKIM_EINVAL;
	*hc = h;
	*bc = b;
	return 0;
}

static const char dkim_b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
dkim__b64_encode(const unsigned char *in, size_t len, char *out)
{
	size_t i, o = 0;
	unsigned v;

	for (i = 0; i + 3 <= len; i += 3) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = dkim_b64chars[v >> 18 & 63];
		out[o++] = dkim_b64chars[v >> 12 & 63];
		out[o++] = dkim_b64chars[v >> 6 & 63];
		out[o++] = dkim_b64chars[v & 63];
	}
	if (len - i == 1) {
		v = (unsigned)in[i] << 16;
		out[o++] = dkim_b64chars[v >> 18 & 63];
		out[o++] = dkim_b64chars[v >> 12 & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (len - i == 2) {
		v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
		out[o++] = dkim_b64chars[v >> 18 & 63];
		out[o++] = dkim_b64chars[v >> 12 & 63];
		out[o++] = dkim_b64chars[v >> 6 & 63];
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/* dkim_b64_val - the 6-bit value of a base64 character, or -1. */
static int
dkim_b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Padding: a final group of 2 or 3 characters may be followed by "==" or
 * "=" respectively, or by nothing (some key records omit it); any other use
 * of '=' and a lone final character are errors.
 */
long
dkim__b64_decode(const char *in, size_t len, unsigned char *out, size_t outmax)
{
	size_t i, o = 0;
	unsigned acc = 0;
	int n = 0, pad = 0, v;
	unsigned char c;

	for (i = 0; i < len; i++) {
		c = (unsigned char)in[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad > 0 || (v = dkim_b64_val(c)) < 0)
			return -1;
		acc = acc << 6 | (unsigned)v;
		if (++n == 4) {
			if (outmax - o < 3)
				return -1;
			out[o++] = (unsigned char)(acc >> 16);
			out[o++] = (unsigned char)(acc >> 8);
			out[o++] = (unsigned char)acc;
			acc = 0;
			n = 0;
		}
	}
	switch (n) {
	case 0:
		if (pad != 0)
			return -1;
		break;
	case 2:
		if ((pad != 0 && pad != 2) || outmax - o < 1)
			return -1;
		out[o++] = (unsigned char)(acc >> 4);
		break;
	case 3:
		if ((pad != 0 && pad != 1) || outmax - o < 2)
			return -1;
		out[o++] = (unsigned char)(acc >> 10);
		out[o++] = (unsigned char)(acc >> 2);
		break;
	default:
		return -1;
	}
	return (long)o;
}

/* dkim_b64_encode - base64 of p in a malloc'd string; NULL on OOM. */
char *
dkim_b64_encode(const unsigned char *p, size_t len)
{
	char *out;

	if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
		return NULL;
	if ((out = malloc(4 * ((len + 2) / 3) + 1)) == NULL)
		return NULL;
	dkim__b64_encode(p, len, out);
	return out;
}

/*
 * dkim_b64_decode - decode s (whitespace skipped) into a malloc'd *out of
 * *outlen bytes (a NUL follows them, not counted).  0, DKIM_EINVAL or
 * DKIM_ENOMEM.
 */
int
dkim_b64_decode(const char *s, unsigned char **out, size_t *outlen)
{
	unsigned char *buf;
	size_t len, max;
	long n;

	*out = NULL;
	*outlen = 0;
	if (s == NULL)
		return DKIM_EINVAL;
	len = strlen(s);
	max = len / 4 * 3 + 3;
	if ((buf = malloc(max + 1)) == NULL)
		return DKIM_ENOMEM;
	if ((n = dkim__b64_decode(s, len, buf, max)) < 0) {
		OPENSSL_cleanse(buf, max + 1);
		free(buf);
		return DKIM_EINVAL;
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = (size_t)n;
	return 0;
}
