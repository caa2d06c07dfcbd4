/*
 * dkim_int.h - helpers shared between the files of dkim/ (dkim__ prefix).
 * Nothing outside dkim/ includes this.
 */
#ifndef SIGNET_DKIM_INT_H
#define SIGNET_DKIM_INT_H

#include <openssl/evp.h>
#include <stdatomic.h>

#include "dkim/dkim.h"

struct dkim_key {
	EVP_PKEY *pkey;
	enum dkim_alg alg;
	int bits;
	atomic_int refs;
};

struct dkim_pubkey {
	EVP_PKEY *pkey;
	enum dkim_alg alg;   /* from k= (rsa default) */
	int testing;         /* t=y */
	int strict;          /* t=s */
	int sha256_ok;       /* h= absent or lists sha256 */
	int email_ok;        /* s= absent, "*" or lists email */
};

/* dkim__is_fws - folding whitespace around and inside tag values (RFC 6376 2.8). */
static inline int
dkim__is_fws(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * dkim__b64_encode - standard base64 with padding into out, which holds at
 * least 4 * ((len + 2) / 3) + 1 bytes; NUL-terminated.  Returns the length.
 */
size_t dkim__b64_encode(const unsigned char *in, size_t len, char *out);
/*
 * dkim__b64_decode - decode, skipping whitespace (FWS is allowed inside
 * base64 tag values).  Returns the decoded length, or -1 on bad input or if
 * more than outmax bytes would result.
 */
long dkim__b64_decode(const char *in, size_t len, unsigned char *out, size_t outmax);

/*
 * dkim__sign_digest - sign a 32-byte SHA-256 digest: RSASSA-PKCS1-v1_5 with
 * SHA-256 for RSA, PureEdDSA over the digest for Ed25519 (RFC 8463 3).
 * sig must hold 512 bytes.  0 or DKIM_ECRYPTO.  Thread-safe.
 */
int dkim__sign_digest(const struct dkim_key *key, const unsigned char *digest,
    unsigned char *sig, size_t *siglen);
/* dkim__verify_digest - the inverse; 0 when the signature is good, else DKIM_ECRYPTO. */
int dkim__verify_digest(const struct dkim_pubkey *pk, const unsigned char *digest,
    const unsigned char *sig, size_t siglen);

/*
 * Body hash: one body canonicalizer feeding one SHA-256.  limit is the l=
 * byte count for the verifier, (uint64_t)-1 for none.  Small output pieces
 * are staged so that SHA-256 sees large updates.
 */
struct dkim__bodyhash {
	struct dkim_bodycanon bc;
	EVP_MD_CTX *md;
	uint64_t limit, hashed;
	unsigned char digest[32];
	size_t stage_len;
	char stage[4096];
};

int dkim__bodyhash_init(struct dkim__bodyhash *bh, enum dkim_canon canon,
    uint64_t limit);
void dkim__bodyhash_update(struct dkim__bodyhash *bh, const char *p, size_t len);
/* dkim__bodyhash_final - end of body; the digest is then in bh->digest. */
int dkim__bodyhash_final(struct dkim__bodyhash *bh);
/* dkim__bodyhash_reset - free the hash context; NULL md ok. */
void dkim__bodyhash_reset(struct dkim__bodyhash *bh);

/*
 * Header block parser shared by the signer and the verifier.  Bytes are
 * appended with dkim__hdr_feed until it reports the end of the header block
 * (the empty line); the fields are then in buf with offsets in f[].
 */
struct dkim__field {
	size_t off;      /* start of the field in buf */
	size_t len;      /* field length without its final CRLF */
	size_t namelen;  /* length of the name (before the colon, WSP trimmed) */
	int used;        /* taken by h= processing already */
};

struct dkim__hdrs {
	char *buf;
	size_t len, cap;
	struct dkim__field *f;
	size_t nf, fcap;
	size_t line_start;  /* offset in buf of the line being collected */
	int done;           /* empty line seen */
	int err;            /* sticky */
};

void dkim__hdrs_init(struct dkim__hdrs *h);
void dkim__hdrs_reset(struct dkim__hdrs *h);
/*
 * dkim__hdr_feed - consume header bytes from p; returns how many were
 * consumed (all of them unless the header block ended inside p: then the
 * count includes the empty line's CRLF), or a negative DKIM_E* error.
 */
long dkim__hdr_feed(struct dkim__hdrs *h, const char *p, size_t len);
/* dkim__hdr_end - end of input without an empty line: close the last field. */
int dkim__hdr_end(struct dkim__hdrs *h);
/* dkim__hdr_name_eq - does field i have this name (case-insensitive)? */
int dkim__hdr_name_eq(const struct dkim__hdrs *h, size_t i, const char *name,
    size_t namelen);

/* A growable NUL-terminated string; the first error sticks in err. */
struct dkim__str {
	char *p;
	size_t len, cap;
	int err;
};

int dkim__str_add(struct dkim__str *s, const char *p, size_t n);
int dkim__str_addz(struct dkim__str *s, const char *p);

/*
 * dkim__hash_fields - feed md the canonicalized fields named in the
 * colon-separated list hlist (FWS around names ignored), each name taking
 * the last instance not yet taken (RFC 6376 5.4.2), each followed by CRLF.
 */
int dkim__hash_fields(struct dkim__hdrs *h, const char *hlist, size_t hlen,
    enum dkim_canon hc, EVP_MD_CTX *md);

#endif
