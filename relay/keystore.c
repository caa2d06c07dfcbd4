/*
 * keystore.c - the key store: tenants and managed domains (struct
 * dkim_mdomain in its storage form, dkim_mdomain_fields), their history,
 * transition locks and change notification.  This file holds the common
 * part (names, the key-encryption key, AES-256-GCM sealing of private keys,
 * decoding records) and the file store; keystore_redis.c the Redis store.
 *
 * File store (the embedded default, keystore = DIR or file:DIR), all under
 * DIR (mode 0700):
 *
 *   domains/<domain>   one "field value" line per field, mode 0600
 *   tenants/<name>     name initial_domain users networks version
 *   history/<domain>   "<unix time> <node> <event>" lines, the last 100
 *   locks/<name>       "token expiry_ms" of a transition lock
 *   serial             decimal counter, bumped by every write
 *   lock               the flock() every writer holds
 *
 * Every write takes flock(LOCK_EX) on DIR/lock, checks the stored version
 * (compare-and-set), writes a temporary file in the same directory, fsyncs
 * it, renames it over the old one and fsyncs the directory, then bumps
 * serial.  Readers take no lock: rename() means they see the old file or
 * the new one, never part of one.  The file store keeps each private key
 * (sN.priv, base64 PKCS#8 DER) in the clear inside its 0600 file on the
 * node's own disk, as OpenDKIM keeps its key files; only Redis, shared over
 * the network, gets the keys encrypted.
 *
 * Names used as file names are checked first: domains must be host names
 * (dkim_domain_normalize, so no '/' and no leading '.'), tenants
 * [a-z0-9][a-z0-9._-]{0,62}; nothing can escape DIR.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "relay/keys.h"
#include "relay/keystore_int.h"

#define GCM_PREFIX "gcm1:"
#define GCM_NONCE 12
#define GCM_TAG 16

/* ---- small helpers ------------------------------------------------------ */

void
ks_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ks_kvs_addn - append a copy of (f, v); 0 or -ENOMEM. */
int
ks_kvs_addn(struct ks_kvs *k, const char *f, size_t flen, const char *v,
    size_t vlen)
{
	struct ks_kv *nv;
	size_t ncap;

	if (k->n == k->cap) {
		ncap = k->cap ? k->cap * 2 : 48;
		if ((nv = realloc(k->v, ncap * sizeof(*nv))) == NULL)
			return -ENOMEM;
		k->v = nv;
		k->cap = ncap;
	}
	if ((k->v[k->n].f = strndup(f, flen)) == NULL)
		return -ENOMEM;
	if ((k->v[k->n].v = malloc(vlen + 1)) == NULL) {
		free(k->v[k->n].f);
		return -ENOMEM;
	}
	memcpy(k->v[k->n].v, v, vlen);
	k->v[k->n].v[vlen] = '\0';
	k->n++;
	return 0;
}

int
ks_kvs_add(struct ks_kvs *k, const char *f, const char *v)
{
	return ks_kvs_addn(k, f, strlen(f), v, strlen(v));
}

/* ks_kvs_get - the value of the last field f, or NULL. */
const char *
ks_kvs_get(const struct ks_kvs *k, const char *f)
{
	size_t i;

	for (i = k->n; i > 0; i--)
		if (strcmp(k->v[i - 1].f, f) == 0)
			return k->v[i - 1].v;
	return NULL;
}

/* ks_kvs_free - free every entry, wiping values (private keys). */
void
ks_kvs_free(struct ks_kvs *k)
{
	size_t i;

	for (i = 0; i < k->n; i++) {
		free(k->v[i].f);
		dkim_wipe_free(k->v[i].v, strlen(k->v[i].v));
	}
	free(k->v);
	memset(k, 0, sizeof(*k));
}

/* kvs_field_cb - dkim_field_cb appending to a struct ks_kvs. */
static int
kvs_field_cb(void *arg, const char *field, const char *value)
{
	return ks_kvs_add(arg, field, value);
}

/* norm_domain - normalize domain into out (DKIM_DOMAIN_MAX): 0 or -EINVAL
 * with err. */
static int
norm_domain(const char *domain, char *out, char *err, size_t errlen)
{
	if (domain == NULL ||
	    dkim_domain_normalize(domain, out, DKIM_DOMAIN_MAX) != 0) {
		ks_err(err, errlen, "bad domain name \"%s\"",
		    domain != NULL ? domain : "");
		return -EINVAL;
	}
	return 0;
}

/* tenant_name_ok - 1 when s matches [a-z0-9][a-z0-9._-]{0,62}. */
static int
tenant_name_ok(const char *s)
{
	size_t i;

	if (s == NULL || !(islower((unsigned char)s[0]) ||
	    isdigit((unsigned char)s[0])))
		return 0;
	for (i = 1; s[i] != '\0'; i++) {
		if (i >= DKIM_TENANT_MAX - 1)
			return 0;
		if (!islower((unsigned char)s[i]) &&
		    !isdigit((unsigned char)s[i]) && s[i] != '.' &&
		    s[i] != '_' && s[i] != '-')
			return 0;
	}
	return 1;
}

/* lock_name_ok - 1 when s is usable as a lock name (a domain, or any
 * [a-z0-9][a-z0-9._:-]* of at most 253 bytes). */
static int
lock_name_ok(const char *s)
{
	size_t i;

	if (s == NULL || !(islower((unsigned char)s[0]) ||
	    isdigit((unsigned char)s[0])))
		return 0;
	for (i = 1; s[i] != '\0'; i++) {
		if (i >= DKIM_DOMAIN_MAX - 1)
			return 0;
		if (!islower((unsigned char)s[i]) &&
		    !isdigit((unsigned char)s[i]) && s[i] != '.' &&
		    s[i] != '_' && s[i] != '-' && s[i] != ':')
			return 0;
	}
	return 1;
}

/* oneline - 1 when s has no CR or LF (values are stored one per line). */
static int
oneline(const char *s)
{
	return s == NULL || strpbrk(s, "\r\n") == NULL;
}

/* now_ms - wall-clock milliseconds (lock expiry, shared between hosts). */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* history_line - "<unix time> <node> <event>" with CR/LF made blanks;
 * malloc'd, NULL on OOM. */
static char *
history_line(const struct relay_keystore *ks, const char *event)
{
	char *s, *p;

	if (asprintf(&s, "%" PRId64 " %s %s", relay_clock_now(), ks->node,
	    event) == -1)
		return NULL;
	for (p = s; *p != '\0'; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	return s;
}

/* ---- the key-encryption key and AES-256-GCM ------------------------------ */

/* hexval - the value of hex digit c, or -1. */
static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * load_secret - read the 32-byte key-encryption key from path: raw 32
 * bytes, 64 hex digits or base64 of 32 bytes (a trailing newline allowed).
 * Refuses a file group or others may access.  0 or -errno with err.
 */
static int
load_secret(const char *path, unsigned char kek[KS_KEK_LEN], char *err,
    size_t errlen)
{
	unsigned char buf[256], *dec = NULL;
	size_t len = 0, declen = 0, i;
	struct stat st;
	ssize_t n;
	int fd, r = -EINVAL;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		r = -errno;
		ks_err(err, errlen, "keystore_secret_file %s: %s", path,
		    strerror(errno));
		return r;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		ks_err(err, errlen, "keystore_secret_file %s: not a regular "
		    "file", path);
		close(fd);
		return -EINVAL;
	}
	if ((st.st_mode & 077) != 0) {
		ks_err(err, errlen, "keystore_secret_file %s is accessible by "
		    "group or others (mode %04o); chmod 600 it", path,
		    (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	for (;;) {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			r = -errno;
			ks_err(err, errlen, "keystore_secret_file %s: %s",
			    path, strerror(errno));
			goto done;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf)) {
			ks_err(err, errlen, "keystore_secret_file %s: too "
			    "long for a 32-byte key", path);
			goto done;
		}
	}
	if (len == KS_KEK_LEN ||
	    (len == KS_KEK_LEN + 1 && buf[KS_KEK_LEN] == '\n')) {
		memcpy(kek, buf, KS_KEK_LEN);
		r = 0;
		goto done;
	}
	while (len > 0 && isspace(buf[len - 1]))
		len--;
	if (len == 2 * KS_KEK_LEN) {
		for (i = 0; i < KS_KEK_LEN; i++) {
			int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);

			if (hi < 0 || lo < 0)
				break;
			kek[i] = (unsigned char)(hi << 4 | lo);
		}
		if (i == KS_KEK_LEN) {
			r = 0;
			goto done;
		}
	}
	buf[len] = '\0';
	if (dkim_b64_decode((const char *)buf, &dec, &declen) == 0 &&
	    declen == KS_KEK_LEN) {
		memcpy(kek, dec, KS_KEK_LEN);
		r = 0;
		goto done;
	}
	ks_err(err, errlen, "keystore_secret_file %s: expected 32 raw bytes, "
	    "64 hex digits or the base64 of 32 bytes", path);
done:
	if (dec != NULL)
		dkim_wipe_free(dec, declen);
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	if (r != 0)
		OPENSSL_cleanse(kek, KS_KEK_LEN);
	return r;
}

/* key_aad - the associated data binding a sealed key to its place. */
static int
key_aad(char *out, size_t outlen, const char *domain, int slot, uint32_t gen)
{
	int n;

	n = snprintf(out, outlen, "signet-key|%s|%d|%" PRIu32, domain, slot,
	    gen);
	return n < 0 || (size_t)n >= outlen ? -1 : n;
}

/*
 * ks_seal - encrypt pt (a PKCS#8 DER private key) for domain's slot of
 * generation gen: "gcm1:" + base64(nonce || ciphertext || tag), AES-256-GCM
 * under the store's key with the AAD "signet-key|<domain>|<slot>|<gen>".
 * malloc'd into *out; 0, -ENOKEY, -ENOMEM or -EIO.
 */
int
ks_seal(const struct relay_keystore *ks, const char *domain, int slot,
    uint32_t gen, const unsigned char *pt, size_t ptlen, char **out)
{
	EVP_CIPHER_CTX *ctx = NULL;
	unsigned char *buf = NULL;
	char aad[DKIM_DOMAIN_MAX + 64], *b64 = NULL;
	size_t blen;
	int n, alen, r = -EIO;

	*out = NULL;
	if (!ks->have_kek)
		return -ENOKEY;
	if (ptlen > INT_MAX - 64 ||
	    (alen = key_aad(aad, sizeof(aad), domain, slot, gen)) < 0)
		return -EINVAL;
	blen = GCM_NONCE + ptlen + GCM_TAG;
	if ((buf = malloc(blen)) == NULL)
		return -ENOMEM;
	if (RAND_bytes(buf, GCM_NONCE) != 1)
		goto done;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE,
	    NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, ks->kek, buf) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad,
	    alen) != 1 ||
	    EVP_EncryptUpdate(ctx, buf + GCM_NONCE, &n, pt, (int)ptlen) != 1 ||
	    (size_t)n != ptlen ||
	    EVP_EncryptFinal_ex(ctx, buf + GCM_NONCE + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG,
	    buf + GCM_NONCE + ptlen) != 1)
		goto done;
	if ((b64 = dkim_b64_encode(buf, blen)) == NULL) {
		r = -ENOMEM;
		goto done;
	}
	if (asprintf(out, "%s%s", GCM_PREFIX, b64) == -1) {
		*out = NULL;
		r = -ENOMEM;
		goto done;
	}
	r = 0;
done:
	free(b64);
	EVP_CIPHER_CTX_free(ctx);
	dkim_wipe_free(buf, blen);
	return r;
}

/*
 * unseal - the reverse of ks_seal: the DER into *pt (malloc'd, wipe it).
 * 0, -EINVAL (not a sealed value), -EBADMSG (authentication failed: wrong
 * key, or the value belongs to another domain, slot or generation).
 */
static int
unseal(const struct relay_keystore *ks, const char *domain, int slot,
    uint32_t gen, const char *value, unsigned char **pt, size_t *ptlen)
{
	EVP_CIPHER_CTX *ctx = NULL;
	unsigned char *raw = NULL, *out = NULL;
	char aad[DKIM_DOMAIN_MAX + 64];
	size_t rawlen = 0, clen;
	int n, alen, r = -EBADMSG;

	*pt = NULL;
	*ptlen = 0;
	if (!ks->have_kek)
		return -ENOKEY;
	if (strncmp(value, GCM_PREFIX, strlen(GCM_PREFIX)) != 0 ||
	    dkim_b64_decode(value + strlen(GCM_PREFIX), &raw, &rawlen) != 0)
		return -EINVAL;
	if (rawlen < GCM_NONCE + GCM_TAG + 1 || rawlen > INT_MAX ||
	    (alen = key_aad(aad, sizeof(aad), domain, slot, gen)) < 0) {
		r = -EINVAL;
		goto done;
	}
	clen = rawlen - GCM_NONCE - GCM_TAG;
	if ((out = malloc(clen)) == NULL) {
		r = -ENOMEM;
		goto done;
	}
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE,
	    NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, ks->kek, raw) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad,
	    alen) != 1 ||
	    EVP_DecryptUpdate(ctx, out, &n, raw + GCM_NONCE, (int)clen) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG,
	    raw + GCM_NONCE + clen) != 1 ||
	    EVP_DecryptFinal_ex(ctx, out + n, &n) != 1)
		goto done;
	*pt = out;
	*ptlen = clen;
	out = NULL;
	r = 0;
done:
	EVP_CIPHER_CTX_free(ctx);
	if (out != NULL)
		dkim_wipe_free(out, clen);
	dkim_wipe_free(raw, rawlen);
	return r;
}

/*
 * ks_priv_decode - a stored sN.priv value into DER: base64 in the file
 * store, sealed in Redis.  0 or -errno with err (never key material).
 */
int
ks_priv_decode(const struct relay_keystore *ks, const char *domain, int slot,
    uint32_t gen, const char *value, unsigned char **der, size_t *derlen,
    char *err, size_t errlen)
{
	int r;

	*der = NULL;
	*derlen = 0;
	if (!ks->redis) {
		if (dkim_b64_decode(value, der, derlen) != 0 || *derlen == 0) {
			ks_err(err, errlen, "%s: selector%d: the stored "
			    "private key is not base64", domain, slot);
			return -EIO;
		}
		return 0;
	}
	r = unseal(ks, domain, slot, gen, value, der, derlen);
	if (r == -EBADMSG)
		ks_err(err, errlen, "%s: %s: selector%d generation %" PRIu32
		    ": cannot decrypt: wrong keystore_secret_file? (or the "
		    "value was altered or moved)", ks->label, domain, slot, gen);
	else if (r == -EINVAL)
		ks_err(err, errlen, "%s: %s: selector%d: the stored private "
		    "key is not an encrypted (gcm1:) value", ks->label, domain,
		    slot);
	else if (r != 0)
		ks_err(err, errlen, "%s: %s: selector%d: cannot decrypt: %s",
		    ks->label, domain, slot, strerror(-r));
	return r == -EINVAL ? -EIO : r;
}

/* ---- records ------------------------------------------------------------- */

/* slot_field - "sN.<what>" into buf. */
static const char *
slot_field(char *buf, size_t len, int slot, const char *what)
{
	snprintf(buf, len, "s%d.%s", slot, what);
	return buf;
}

/*
 * ks_domain_decode - a stored record (fields of dkim_mdomain_fields) into
 * *out, which is initialized here; with_keys also decodes both sN.priv.
 * domain is the name the record was stored under: the record must say the
 * same.  0 or -EIO with err (out cleared).
 */
int
ks_domain_decode(const struct relay_keystore *ks, const struct ks_kvs *kv,
    const char *domain, int with_keys, struct dkim_mdomain *out, char *err,
    size_t errlen)
{
	const char *v;
	char why[160], fb[32];
	size_t i;
	int s, r;

	dkim_mdomain_init(out);
	for (i = 0; i < kv->n; i++) {
		if (strcmp(kv->v[i].f, "s1.priv") == 0 ||
		    strcmp(kv->v[i].f, "s2.priv") == 0)
			continue;
		r = dkim_mdomain_set_field(out, kv->v[i].f, kv->v[i].v);
		if (r < 0) {
			ks_err(err, errlen, "%s: stored field %s has a bad "
			    "value", domain, kv->v[i].f);
			goto fail;
		}
	}
	if (strcmp(out->domain, domain) != 0) {
		ks_err(err, errlen, "%s: the stored record names domain "
		    "\"%s\"", domain, out->domain);
		goto fail;
	}
	why[0] = '\0';
	if (dkim_mdomain_check(out, why, sizeof(why)) != 0) {
		ks_err(err, errlen, "%s: stored record is inconsistent: %s",
		    domain, why);
		goto fail;
	}
	if (!with_keys)
		return 0;
	for (s = 1; s <= 2; s++) {
		struct dkim_slot *sl = &out->slot[s - 1];

		if ((v = ks_kvs_get(kv, slot_field(fb, sizeof(fb), s,
		    "priv"))) == NULL || *v == '\0') {
			ks_err(err, errlen, "%s: no private key stored for "
			    "selector%d", domain, s);
			goto fail;
		}
		if ((r = ks_priv_decode(ks, domain, s, sl->generation, v,
		    &sl->priv, &sl->privlen, err, errlen)) != 0) {
			dkim_mdomain_clear(out);
			return r;
		}
	}
	return 0;
fail:
	dkim_mdomain_clear(out);
	return -EIO;
}

/* domain_encode - d's fields into kv, with the private keys d holds
 * (sealed for Redis, base64 for files).  0 or -errno with err. */
static int
domain_encode(const struct relay_keystore *ks, const struct dkim_mdomain *d,
    struct ks_kvs *kv, char *err, size_t errlen)
{
	char fb[32], *v;
	int s, r;

	if ((r = dkim_mdomain_fields(d, 0, kvs_field_cb, kv)) != 0) {
		ks_err(err, errlen, "%s: cannot encode the record: %s",
		    d->domain, r < -900 ? dkim_strerror(r) : strerror(-r));
		return r < -900 ? -ENOMEM : r;
	}
	for (s = 1; s <= 2; s++) {
		const struct dkim_slot *sl = &d->slot[s - 1];

		if (sl->priv == NULL)
			continue;
		if (ks->redis)
			r = ks_seal(ks, d->domain, s, sl->generation, sl->priv,
			    sl->privlen, &v);
		else
			r = (v = dkim_b64_encode(sl->priv, sl->privlen)) ==
			    NULL ? -ENOMEM : 0;
		if (r != 0) {
			ks_err(err, errlen, "%s: selector%d: cannot %s the "
			    "private key: %s", d->domain, s, ks->redis ?
			    "encrypt" : "encode", strerror(-r));
			return r;
		}
		r = ks_kvs_add(kv, slot_field(fb, sizeof(fb), s, "priv"), v);
		dkim_wipe_free(v, strlen(v));
		if (r != 0)
			return r;
	}
	return 0;
}

/* ks_tenant_decode - a stored tenant record into *out (zeroed first). */
int
ks_tenant_decode(const struct ks_kvs *kv, const char *name,
    struct relay_tenant *out, char *err, size_t errlen)
{
	const char *v;
	char *end;

	memset(out, 0, sizeof(*out));
	if ((v = ks_kvs_get(kv, "name")) == NULL || strcmp(v, name) != 0) {
		ks_err(err, errlen, "tenant %s: the stored record names "
		    "another tenant", name);
		return -EIO;
	}
	snprintf(out->name, sizeof(out->name), "%s", v);
	if ((v = ks_kvs_get(kv, "initial_domain")) != NULL)
		snprintf(out->initial_domain, sizeof(out->initial_domain),
		    "%s", v);
	out->users = strdup((v = ks_kvs_get(kv, "users")) ? v : "");
	out->networks = strdup((v = ks_kvs_get(kv, "networks")) ? v : "");
	if (out->users == NULL || out->networks == NULL) {
		relay_tenant_clear(out);
		return -ENOMEM;
	}
	if ((v = ks_kvs_get(kv, "version")) == NULL || *v == '\0') {
		ks_err(err, errlen, "tenant %s: the stored record has no "
		    "version", name);
		relay_tenant_clear(out);
		return -EIO;
	}
	errno = 0;
	out->version = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0') {
		ks_err(err, errlen, "tenant %s: bad stored version", name);
		relay_tenant_clear(out);
		return -EIO;
	}
	return 0;
}

/* tenant_encode - t's fields (with version) into kv. */
static int
tenant_encode(const struct relay_tenant *t, uint64_t version,
    struct ks_kvs *kv)
{
	char vb[32];

	snprintf(vb, sizeof(vb), "%" PRIu64, version);
	if (ks_kvs_add(kv, "name", t->name) != 0 ||
	    ks_kvs_add(kv, "initial_domain", t->initial_domain) != 0 ||
	    ks_kvs_add(kv, "users", t->users ? t->users : "") != 0 ||
	    ks_kvs_add(kv, "networks", t->networks ? t->networks : "") != 0 ||
	    ks_kvs_add(kv, "version", vb) != 0)
		return -ENOMEM;
	return 0;
}

void
relay_tenant_clear(struct relay_tenant *t)
{
	if (t == NULL)
		return;
	free(t->users);
	free(t->networks);
	t->users = t->networks = NULL;
}

/* ---- file store: files ---------------------------------------------------- */

/* fs_path - DIR/sub/name (sub or name may be NULL) into buf; 0 or
 * -ENAMETOOLONG. */
static int
fs_path(const struct relay_keystore *ks, char *buf, size_t len,
    const char *sub, const char *name)
{
	int n;

	if (sub != NULL && name != NULL)
		n = snprintf(buf, len, "%s/%s/%s", ks->dir, sub, name);
	else if (sub != NULL)
		n = snprintf(buf, len, "%s/%s", ks->dir, sub);
	else
		n = snprintf(buf, len, "%s", ks->dir);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* fs_read - the whole file at path, NUL-terminated and malloc'd into
 * *out (length in *len).  0 or -errno (-ENOENT when missing). */
static int
fs_read(const char *path, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL, *nb;
	size_t cap = 0, n = 0;
	ssize_t k;
	int fd, r;

	*out = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return -errno;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EIO;
	}
	cap = (size_t)st.st_size + 1;
	for (;;) {
		if (n + 1 >= cap || buf == NULL) {
			cap = cap < 256 ? 256 : cap * 2;
			if ((nb = malloc(cap)) == NULL) {
				r = -ENOMEM;
				goto fail;
			}
			if (buf != NULL) {
				memcpy(nb, buf, n);
				dkim_wipe_free(buf, n);
			}
			buf = nb;
		}
		k = read(fd, buf + n, cap - n - 1);
		if (k == -1 && errno == EINTR)
			continue;
		if (k == -1) {
			r = -errno;
			goto fail;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
fail:
	close(fd);
	if (buf != NULL)
		dkim_wipe_free(buf, cap);
	return r;
}

/* fs_sync_dir - fsync the directory at path; 0 or -errno. */
static int
fs_sync_dir(const char *path)
{
	int fd, r = 0;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -errno;
	if (fsync(fd) == -1)
		r = -errno;
	close(fd);
	return r;
}

/*
 * fs_write_atomic - replace dir/name by data: a temporary file in dir
 * (mode 0600), written, fsynced, renamed over name, then dir fsynced.
 * 0 or -errno.
 */
static int
fs_write_atomic(const char *dir, const char *name, const char *data,
    size_t len)
{
	static unsigned counter;
	char tmp[PATH_MAX], dst[PATH_MAX];
	unsigned char rnd[4];
	size_t off = 0;
	ssize_t k;
	int fd, r, n;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		memset(rnd, 0, sizeof(rnd));
	n = snprintf(tmp, sizeof(tmp), "%s/.tmp.%ld.%u.%02x%02x%02x%02x.%s",
	    dir, (long)getpid(), __atomic_add_fetch(&counter, 1,
	    __ATOMIC_RELAXED), rnd[0], rnd[1], rnd[2], rnd[3], name);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return -ENAMETOOLONG;
	n = snprintf(dst, sizeof(dst), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(dst))
		return -ENAMETOOLONG;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1)
		return -errno;
	while (off < len) {
		k = write(fd, data + off, len - off);
		if (k == -1 && errno == EINTR)
			continue;
		if (k == -1) {
			r = -errno;
			goto fail;
		}
		off += (size_t)k;
	}
	if (fchmod(fd, 0600) == -1 || fsync(fd) == -1) {
		r = -errno;
		goto fail;
	}
	if (close(fd) == -1) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	if (rename(tmp, dst) == -1) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	return fs_sync_dir(dir);
fail:
	close(fd);
	unlink(tmp);
	return r;
}

/* fs_lock - flock(LOCK_EX) on DIR/lock: the fd to pass to fs_unlock, or
 * -errno with err. */
static int
fs_lock(const struct relay_keystore *ks, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd, r;

	if ((r = fs_path(ks, path, sizeof(path), "lock", NULL)) != 0)
		return r;
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0600)) == -1) {
		r = -errno;
		ks_err(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	while (flock(fd, LOCK_EX) == -1) {
		if (errno == EINTR)
			continue;
		r = -errno;
		ks_err(err, errlen, "flock %s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

static void
fs_unlock(int fd)
{
	if (fd >= 0)
		close(fd);        /* releases the flock */
}

/* fs_serial - the number in DIR/serial (0 when missing); 0 or -errno. */
static int
fs_serial(const struct relay_keystore *ks, uint64_t *out)
{
	char path[PATH_MAX], *buf;
	size_t len;
	int r;

	*out = 0;
	if ((r = fs_path(ks, path, sizeof(path), "serial", NULL)) != 0)
		return r;
	if ((r = fs_read(path, &buf, &len)) == -ENOENT)
		return 0;
	if (r != 0)
		return r;
	*out = strtoull(buf, NULL, 10);
	free(buf);
	return 0;
}

/* fs_bump - add one to DIR/serial (under the store lock). */
static int
fs_bump(const struct relay_keystore *ks)
{
	char b[32];
	uint64_t v;
	int r;

	if ((r = fs_serial(ks, &v)) != 0)
		return r;
	snprintf(b, sizeof(b), "%" PRIu64 "\n", v + 1);
	return fs_write_atomic(ks->dir, "serial", b, strlen(b));
}

/* fs_parse - "field value" lines of buf into kv (value: the rest of the
 * line after the first blank).  0 or -ENOMEM. */
static int
fs_parse(const char *buf, struct ks_kvs *kv)
{
	const char *p = buf, *nl, *sp;
	size_t len;

	while (*p != '\0') {
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if (len > 0) {
			sp = memchr(p, ' ', len);
			if (sp == NULL) {
				if (ks_kvs_addn(kv, p, len, "", 0) != 0)
					return -ENOMEM;
			} else if (ks_kvs_addn(kv, p, (size_t)(sp - p), sp + 1,
			    len - (size_t)(sp - p) - 1) != 0)
				return -ENOMEM;
		}
		p += len;
		if (*p == '\n')
			p++;
	}
	return 0;
}

/* fs_load - parse the record at DIR/sub/name into kv: 0, -ENOENT, -errno
 * with err. */
static int
fs_load(const struct relay_keystore *ks, const char *sub, const char *name,
    struct ks_kvs *kv, char *err, size_t errlen)
{
	char path[PATH_MAX], *buf;
	size_t len;
	int r;

	if ((r = fs_path(ks, path, sizeof(path), sub, name)) != 0) {
		ks_err(err, errlen, "%s: name too long", name);
		return r;
	}
	if ((r = fs_read(path, &buf, &len)) != 0) {
		if (r != -ENOENT)
			ks_err(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	r = fs_parse(buf, kv);
	dkim_wipe_free(buf, len);
	return r;
}

/* fs_store - write kv as "field value" lines to DIR/sub/name. */
static int
fs_store(const struct relay_keystore *ks, const char *sub, const char *name,
    const struct ks_kvs *kv, char *err, size_t errlen)
{
	char dir[PATH_MAX], *buf, *p;
	size_t len = 0, i, fl, vl;
	int r;

	for (i = 0; i < kv->n; i++) {
		if (!oneline(kv->v[i].f) || !oneline(kv->v[i].v) ||
		    strchr(kv->v[i].f, ' ') != NULL) {
			ks_err(err, errlen, "%s: field %s: line breaks are not "
			    "allowed", name, kv->v[i].f);
			return -EINVAL;
		}
		len += strlen(kv->v[i].f) + strlen(kv->v[i].v) + 2;
	}
	if ((buf = malloc(len + 1)) == NULL)
		return -ENOMEM;
	for (p = buf, i = 0; i < kv->n; i++) {
		fl = strlen(kv->v[i].f);
		vl = strlen(kv->v[i].v);
		memcpy(p, kv->v[i].f, fl);
		p += fl;
		*p++ = ' ';
		memcpy(p, kv->v[i].v, vl);
		p += vl;
		*p++ = '\n';
	}
	if ((r = fs_path(ks, dir, sizeof(dir), sub, NULL)) == 0)
		r = fs_write_atomic(dir, name, buf, len);
	dkim_wipe_free(buf, len + 1);
	if (r != 0)
		ks_err(err, errlen, "%s/%s/%s: %s", ks->dir, sub, name,
		    strerror(-r));
	return r;
}

/* fs_history_add - append line to DIR/history/name keeping the last
 * KS_HISTORY_MAX lines (under the store lock). */
static int
fs_history_add(const struct relay_keystore *ks, const char *name,
    const char *line, char *err, size_t errlen)
{
	char path[PATH_MAX], dir[PATH_MAX], *buf = NULL, *out, *p;
	size_t len = 0, n = 0, ll = strlen(line);
	int r;

	if ((r = fs_path(ks, path, sizeof(path), "history", name)) != 0 ||
	    (r = fs_path(ks, dir, sizeof(dir), "history", NULL)) != 0)
		return r;
	if ((r = fs_read(path, &buf, &len)) != 0 && r != -ENOENT) {
		ks_err(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	/* keep the last KS_HISTORY_MAX - 1 lines of buf */
	if (buf != NULL) {
		while (len > 0 && buf[len - 1] == '\n')
			buf[--len] = '\0';
		p = buf + len;
		while (p > buf) {
			if (p[-1] == '\n' && ++n == KS_HISTORY_MAX - 1)
				break;
			p--;
		}
	} else
		p = NULL;
	if (p != NULL && *p != '\0') {
		size_t keep = strlen(p);

		if ((out = malloc(keep + ll + 2)) == NULL) {
			free(buf);
			return -ENOMEM;
		}
		memcpy(out, p, keep);
		out[keep] = '\n';
		memcpy(out + keep + 1, line, ll);
		out[keep + 1 + ll] = '\n';
		len = keep + ll + 2;
	} else {
		if ((out = malloc(ll + 1)) == NULL) {
			free(buf);
			return -ENOMEM;
		}
		memcpy(out, line, ll);
		out[ll] = '\n';
		len = ll + 1;
	}
	free(buf);
	r = fs_write_atomic(dir, name, out, len);
	free(out);
	if (r != 0)
		ks_err(err, errlen, "%s: %s", path, strerror(-r));
	return r;
}

/* fs_version - the "version" field of kv as a number (0 when absent). */
static uint64_t
fs_version(const struct ks_kvs *kv)
{
	const char *v = ks_kvs_get(kv, "version");

	return v != NULL ? strtoull(v, NULL, 10) : 0;
}

/*
 * fs_put - compare-and-set DIR/sub/name to kv under the store lock.  For
 * domains (d not NULL), slots whose private key d lacks keep the stored
 * one when its generation is d's.  hist (may be NULL) goes to the history.
 */
static int
fs_put(const struct relay_keystore *ks, const char *sub, const char *name,
    struct ks_kvs *kv, const struct dkim_mdomain *d, uint64_t expect,
    const char *hist, char *err, size_t errlen)
{
	struct ks_kvs cur = { 0 };
	char fb[32], gb[32];
	const char *g, *p, *pk, *cpk;
	int fd, r, s;

	if ((fd = fs_lock(ks, err, errlen)) < 0)
		return fd;
	r = fs_load(ks, sub, name, &cur, err, errlen);
	if (r != 0 && r != -ENOENT)
		goto done;
	if (expect == 0 ? r == 0 : (r == -ENOENT || fs_version(&cur) !=
	    expect)) {
		ks_err(err, errlen, "%s: changed by someone else (stored "
		    "version %" PRIu64 ", expected %" PRIu64 ")", name,
		    r == 0 ? fs_version(&cur) : 0, expect);
		r = -ESTALE;
		goto done;
	}
	r = 0;
	for (s = 1; d != NULL && s <= 2; s++) {
		if (d->slot[s - 1].priv != NULL)
			continue;
		snprintf(gb, sizeof(gb), "%" PRIu32, d->slot[s - 1].generation);
		g = ks_kvs_get(&cur, slot_field(fb, sizeof(fb), s,
		    "generation"));
		p = ks_kvs_get(&cur, slot_field(fb, sizeof(fb), s, "priv"));
		if (g == NULL || p == NULL || strcmp(g, gb) != 0) {
			ks_err(err, errlen, "%s: selector%d: no private key "
			    "given and none of generation %s stored", name, s,
			    gb);
			r = -EINVAL;
			goto done;
		}
		/*
		 * The version alone can't tell a record removed and made
		 * again (versions restart at 1, generations too) from the
		 * one the writer read: the stored key must be the one of the
		 * public key written, or the record would pair a public key
		 * with another's private key.
		 */
		pk = ks_kvs_get(kv, slot_field(fb, sizeof(fb), s, "pubkey"));
		cpk = ks_kvs_get(&cur, fb);
		if (pk == NULL || cpk == NULL || strcmp(pk, cpk) != 0) {
			ks_err(err, errlen, "%s: changed by someone else "
			    "(removed and provisioned again)", name);
			r = -ESTALE;
			goto done;
		}
		slot_field(fb, sizeof(fb), s, "priv");
		if ((r = ks_kvs_add(kv, fb, p)) != 0)
			goto done;
	}
	if ((r = fs_store(ks, sub, name, kv, err, errlen)) != 0)
		goto done;
	/*
	 * The record is in: whatever happens to the history line, bump the
	 * serial, or watchers would not see the change until the next write.
	 */
	if (hist != NULL)
		r = fs_history_add(ks, name, hist, err, errlen);
	if ((s = fs_bump(ks)) != 0 && r == 0) {
		r = s;
		ks_err(err, errlen, "%s/serial: %s", ks->dir, strerror(-r));
	}
done:
	ks_kvs_free(&cur);
	fs_unlock(fd);
	return r;
}

/* fs_list - cb for every record in DIR/sub (names starting with '.' are
 * temporary files).  check says which names are valid. */
static int
fs_list(const struct relay_keystore *ks, const char *sub,
    int (*check)(const char *), int (*cb)(void *arg, const char *name),
    void *arg, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *dp;
	int r = 0;

	if ((r = fs_path(ks, path, sizeof(path), sub, NULL)) != 0)
		return r;
	if ((dp = opendir(path)) == NULL) {
		r = -errno;
		ks_err(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.' || !check(de->d_name))
			continue;
		if ((r = cb(arg, de->d_name)) != 0)
			break;
	}
	closedir(dp);
	return r;
}

/* domain_name_ok - 1 when s is a normalized domain name. */
static int
domain_name_ok(const char *s)
{
	char n[DKIM_DOMAIN_MAX];

	return dkim_domain_normalize(s, n, sizeof(n)) == 0 &&
	    strcmp(n, s) == 0;
}

/* ---- file store: watch ---------------------------------------------------- */

struct ks_fent {
	char *name;
	uint64_t ino;
	int64_t mtime;             /* ns */
};
struct ks_snap {
	struct ks_fent *v;
	size_t n;
};

static void
snap_free(struct ks_snap *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++)
		free(s->v[i].name);
	free(s->v);
	free(s);
}

static int
fent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ks_fent *)a)->name,
	    ((const struct ks_fent *)b)->name);
}

/* snap_take - name, inode and mtime of every record in DIR/sub, sorted. */
static int
snap_take(const struct relay_keystore *ks, const char *sub,
    struct ks_snap **out)
{
	char path[PATH_MAX];
	struct ks_snap *s;
	struct ks_fent *nv;
	struct dirent *de;
	struct stat st;
	size_t cap = 0;
	DIR *dp;
	int r;

	*out = NULL;
	if ((r = fs_path(ks, path, sizeof(path), sub, NULL)) != 0)
		return r;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return -ENOMEM;
	if ((dp = opendir(path)) == NULL) {
		r = -errno;
		free(s);
		return r;
	}
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(dp), de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) == -1)
			continue;             /* deleted meanwhile */
		if (s->n == cap) {
			cap = cap ? cap * 2 : 64;
			if ((nv = realloc(s->v, cap * sizeof(*nv))) == NULL)
				goto oom;
			s->v = nv;
		}
		if ((s->v[s->n].name = strdup(de->d_name)) == NULL)
			goto oom;
		s->v[s->n].ino = (uint64_t)st.st_ino;
		s->v[s->n].mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 +
		    st.st_mtim.tv_nsec;
		s->n++;
	}
	closedir(dp);
	if (s->n > 1)
		qsort(s->v, s->n, sizeof(*s->v), fent_cmp);
	*out = s;
	return 0;
oom:
	closedir(dp);
	snap_free(s);
	return -ENOMEM;
}

/*
 * snap_diff - names added, removed or rewritten between a and b, into
 * ch[] (at most max, each pointing into a or b); returns how many, or
 * max + 1 when there are more.
 */
static size_t
snap_diff(const struct ks_snap *a, const struct ks_snap *b, const char **ch,
    size_t max)
{
	size_t i = 0, j = 0, n = 0;
	int c;

	while (i < a->n || j < b->n) {
		if (i == a->n)
			c = 1;
		else if (j == b->n)
			c = -1;
		else
			c = strcmp(a->v[i].name, b->v[j].name);
		if (c == 0) {
			if (a->v[i].ino != b->v[j].ino ||
			    a->v[i].mtime != b->v[j].mtime) {
				if (n == max)
					return max + 1;
				ch[n++] = b->v[j].name;
			}
			i++;
			j++;
		} else {
			if (n == max)
				return max + 1;
			ch[n++] = c < 0 ? a->v[i++].name : b->v[j++].name;
		}
	}
	return n;
}

/* fs_watch - relay_keystore_watch for the file store. */
static int
fs_watch(struct relay_keystore *ks, unsigned timeout_ms,
    void (*cb)(void *arg, const char *domain), void *arg)
{
	struct ks_snap *nd = NULL, *nt = NULL;
	const char *ch[KS_WATCH_MAX];
	int64_t deadline = relay_mono_ms() + timeout_ms, left;
	uint64_t serial;
	size_t n, i;
	int r;

	if (!ks->w_started) {
		if ((r = fs_serial(ks, &serial)) != 0 ||
		    (r = snap_take(ks, "domains", &nd)) != 0 ||
		    (r = snap_take(ks, "tenants", &nt)) != 0) {
			snap_free(nd);
			relay_sleep_ms(timeout_ms);
			return r;
		}
		ks->w_serial = serial;
		ks->w_domains = nd;
		ks->w_tenants = nt;
		ks->w_started = 1;
		cb(arg, NULL);
		return 0;
	}
	for (;;) {
		if ((r = fs_serial(ks, &serial)) != 0) {
			relay_sleep_ms(deadline - relay_mono_ms());
			return r;
		}
		if (serial != ks->w_serial)
			break;
		if ((left = deadline - relay_mono_ms()) <= 0)
			return 0;
		relay_sleep_ms(left < 150 ? left : 150);
	}
	/* serial first, then the scans: nothing written after is missed */
	ks->w_serial = serial;
	if ((r = snap_take(ks, "domains", &nd)) != 0 ||
	    (r = snap_take(ks, "tenants", &nt)) != 0) {
		snap_free(nd);
		return r;
	}
	if (snap_diff(ks->w_tenants, nt, ch, 0) > 0 ||
	    (n = snap_diff(ks->w_domains, nd, ch, KS_WATCH_MAX)) >
	    KS_WATCH_MAX)
		cb(arg, NULL);
	else
		for (i = 0; i < n; i++)
			cb(arg, ch[i]);
	snap_free(ks->w_domains);
	snap_free(ks->w_tenants);
	ks->w_domains = nd;
	ks->w_tenants = nt;
	return 0;
}

/* ---- file store: locks ----------------------------------------------------- */

/* fs_lock_take - the transition lock for name in DIR/locks. */
static int
fs_lock_take(struct relay_keystore *ks, const char *name, unsigned ttl_ms,
    const char *token, char *err, size_t errlen)
{
	char path[PATH_MAX], dir[PATH_MAX], *buf = NULL, line[128];
	long long exp;
	size_t len;
	int fd, r;

	if ((r = fs_path(ks, path, sizeof(path), "locks", name)) != 0 ||
	    (r = fs_path(ks, dir, sizeof(dir), "locks", NULL)) != 0)
		return r;
	if ((fd = fs_lock(ks, err, errlen)) < 0)
		return fd;
	r = fs_read(path, &buf, &len);
	if (r == 0 && sscanf(buf, "%*s %lld", &exp) == 1 && exp > now_ms()) {
		ks_err(err, errlen, "lock %s is held by another process "
		    "for %lld ms more", name, exp - (long long)now_ms());
		r = -EBUSY;
		goto done;
	}
	if (r != 0 && r != -ENOENT) {
		ks_err(err, errlen, "%s: %s", path, strerror(-r));
		goto done;
	}
	snprintf(line, sizeof(line), "%s %lld\n", token,
	    (long long)(now_ms() + ttl_ms));
	if ((r = fs_write_atomic(dir, name, line, strlen(line))) != 0)
		ks_err(err, errlen, "%s: %s", path, strerror(-r));
done:
	free(buf);
	fs_unlock(fd);
	return r;
}

/* fs_lock_release - remove DIR/locks/name if token still holds it. */
static void
fs_lock_release(struct relay_keystore *ks, const char *name,
    const char *token)
{
	char path[PATH_MAX], dir[PATH_MAX], *buf = NULL, *sp;
	size_t len, tl = strlen(token);
	int fd;

	if (fs_path(ks, path, sizeof(path), "locks", name) != 0 ||
	    fs_path(ks, dir, sizeof(dir), "locks", NULL) != 0)
		return;
	if ((fd = fs_lock(ks, NULL, 0)) < 0)
		return;
	if (fs_read(path, &buf, &len) == 0 && (sp = strchr(buf, ' ')) !=
	    NULL && (size_t)(sp - buf) == tl && memcmp(buf, token, tl) == 0) {
		unlink(path);
		fs_sync_dir(dir);
	}
	free(buf);
	fs_unlock(fd);
}

/* ---- the interface -------------------------------------------------------- */

/* mkdirs - mkdir -p path with mode 0700 for what is created. */
static int
mkdirs(const char *path)
{
	char buf[PATH_MAX], *p;
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) == -1 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) == -1 && errno != EEXIST)
		return -errno;
	return 0;
}

/* fs_sweep - remove temporary files older than ten minutes from path
 * (left by a writer that died between writing and renaming; they may hold
 * key material). */
static void
fs_sweep(const char *path)
{
	struct dirent *de;
	struct stat st;
	time_t now = time(NULL);
	DIR *dp;

	if ((dp = opendir(path)) == NULL)
		return;
	while ((de = readdir(dp)) != NULL) {
		if (strncmp(de->d_name, ".tmp.", 5) != 0)
			continue;
		if (fstatat(dirfd(dp), de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
		    st.st_mtime < now - 600)
			unlinkat(dirfd(dp), de->d_name, 0);
	}
	closedir(dp);
}

/* fs_open - set up the file store at dir. */
static int
fs_open(struct relay_keystore *ks, const char *dir, char *err, size_t errlen)
{
	static const char *subs[] = { "domains", "tenants", "history",
	    "locks" };
	char path[PATH_MAX];
	struct stat st;
	size_t i, len;
	int r, fd;

	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len == 0) {
		ks_err(err, errlen, "keystore: empty directory name");
		return -EINVAL;
	}
	if ((ks->dir = strndup(dir, len)) == NULL)
		return -ENOMEM;
	if ((r = mkdirs(ks->dir)) != 0) {
		ks_err(err, errlen, "keystore %s: %s", ks->dir, strerror(-r));
		return r;
	}
	if (stat(ks->dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		ks_err(err, errlen, "keystore %s: not a directory", ks->dir);
		return -ENOTDIR;
	}
	for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if ((r = fs_path(ks, path, sizeof(path), subs[i], NULL)) != 0)
			return r;
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			r = -errno;
			ks_err(err, errlen, "keystore %s: %s", path,
			    strerror(errno));
			return r;
		}
		fs_sweep(path);
	}
	fs_sweep(ks->dir);
	if ((fd = fs_lock(ks, err, errlen)) < 0)
		return fd;
	fs_unlock(fd);
	if (access(ks->dir, W_OK) == -1) {
		r = -errno;
		ks_err(err, errlen, "keystore %s: %s", ks->dir,
		    strerror(errno));
		return r;
	}
	return 0;
}

int
relay_keystore_open(const char *url, const char *secret_file,
    const char *node, struct relay_keystore **out, char *err, size_t errlen)
{
	struct relay_keystore *ks;
	char host[100];
	int r;

	*out = NULL;
	if (url == NULL || *url == '\0') {
		ks_err(err, errlen, "keystore: empty setting");
		return -EINVAL;
	}
	if ((ks = calloc(1, sizeof(*ks))) == NULL)
		return -ENOMEM;
	pthread_mutex_init(&ks->mu, NULL);
	if (node != NULL && *node != '\0')
		snprintf(ks->node, sizeof(ks->node), "%s", node);
	else {
		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(ks->node, sizeof(ks->node), "%s:%ld", host,
		    (long)getpid());
	}
	for (char *p = ks->node; *p != '\0'; p++)
		if (isspace((unsigned char)*p))
			*p = '_';
	ks->redis = strncmp(url, "redis://", 8) == 0;
	if (secret_file != NULL && *secret_file != '\0') {
		if ((r = load_secret(secret_file, ks->kek, err, errlen)) != 0)
			goto fail;
		ks->have_kek = 1;
	}
	if (ks->redis) {
		if (!ks->have_kek) {
			ks_err(err, errlen, "keystore %s: keystore_secret_file "
			    "is required with a Redis key store", url);
			r = -EINVAL;
			goto fail;
		}
		r = ksr_open(ks, url + 8, err, errlen);
	} else
		r = fs_open(ks, strncmp(url, "file:", 5) == 0 ? url + 5 : url,
		    err, errlen);
	if (r != 0)
		goto fail;
	*out = ks;
	return 0;
fail:
	relay_keystore_close(ks);
	return r;
}

void
relay_keystore_close(struct relay_keystore *ks)
{
	if (ks == NULL)
		return;
	if (ks->redis)
		ksr_close(ks);
	snap_free(ks->w_domains);
	snap_free(ks->w_tenants);
	free(ks->dir);
	pthread_mutex_destroy(&ks->mu);
	OPENSSL_cleanse(ks, sizeof(*ks));
	free(ks);
}

int
relay_keystore_is_redis(const struct relay_keystore *ks)
{
	return ks->redis;
}

int
relay_keystore_ping(struct relay_keystore *ks, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int r;

	if (ks->redis)
		return ksr_ping(ks, err, errlen);
	if ((r = fs_path(ks, path, sizeof(path), "domains", NULL)) != 0)
		return r;
	if (access(path, R_OK | W_OK | X_OK) == -1) {
		r = -errno;
		ks_err(err, errlen, "keystore %s: %s", path, strerror(errno));
		return r;
	}
	return 0;
}

/* rkey - the Redis key "signet:<kind>:<name>" into buf. */
static const char *
rkey(char *buf, size_t len, const char *kind, const char *name)
{
	snprintf(buf, len, "signet:%s:%s", kind, name);
	return buf;
}

int
relay_keystore_get_domain(struct relay_keystore *ks, const char *domain,
    int with_keys, struct dkim_mdomain *out, char *err, size_t errlen)
{
	struct ks_kvs kv = { 0 };
	char name[DKIM_DOMAIN_MAX], key[DKIM_DOMAIN_MAX + 32];
	int r;

	dkim_mdomain_init(out);
	if ((r = norm_domain(domain, name, err, errlen)) != 0)
		return r;
	if (ks->redis)
		r = ksr_get(ks, rkey(key, sizeof(key), "domain", name), &kv,
		    err, errlen);
	else
		r = fs_load(ks, "domains", name, &kv, err, errlen);
	if (r == -ENOENT)
		ks_err(err, errlen, "%s: no such managed domain", name);
	if (r == 0)
		r = ks_domain_decode(ks, &kv, name, with_keys, out, err,
		    errlen);
	ks_kvs_free(&kv);
	return r;
}

int
relay_keystore_put_domain(struct relay_keystore *ks, struct dkim_mdomain *d,
    uint64_t expect_version, const char *event, char *err, size_t errlen)
{
	struct ks_kvs kv = { 0 };
	char name[DKIM_DOMAIN_MAX], gb[2][16], fb[32], *hist = NULL;
	const char *gencheck[2], *pubcheck[2];
	uint64_t saved = d->version;
	int r, s;

	if ((r = norm_domain(d->domain, name, err, errlen)) != 0)
		return r;
	if (strcmp(name, d->domain) != 0) {
		ks_err(err, errlen, "%s: domain not normalized", d->domain);
		return -EINVAL;
	}
	if (d->tenant[0] != '\0' && !tenant_name_ok(d->tenant)) {
		ks_err(err, errlen, "%s: bad tenant name \"%s\"", name,
		    d->tenant);
		return -EINVAL;
	}
	if (event != NULL && (hist = history_line(ks, event)) == NULL)
		return -ENOMEM;
	d->version = expect_version + 1;
	r = domain_encode(ks, d, &kv, err, errlen);
	d->version = saved;
	if (r != 0)
		goto done;
	if (ks->redis) {
		for (s = 0; s < 2; s++) {
			snprintf(gb[s], sizeof(gb[s]), "%" PRIu32,
			    d->slot[s].generation);
			gencheck[s] = d->slot[s].priv != NULL ? "" : gb[s];
			pubcheck[s] = ks_kvs_get(&kv, slot_field(fb, sizeof(fb),
			    s + 1, "pubkey"));
			if (pubcheck[s] == NULL)
				pubcheck[s] = "";
		}
		r = ksr_put(ks, 0, name, &kv, expect_version, gencheck,
		    pubcheck, hist, err, errlen);
	} else
		r = fs_put(ks, "domains", name, &kv, d, expect_version, hist,
		    err, errlen);
	if (r == 0)
		d->version = expect_version + 1;
done:
	free(hist);
	ks_kvs_free(&kv);
	return r;
}

int
relay_keystore_del_domain(struct relay_keystore *ks, const char *domain,
    char *err, size_t errlen)
{
	char name[DKIM_DOMAIN_MAX], path[PATH_MAX], dir[PATH_MAX];
	int r, fd;

	if ((r = norm_domain(domain, name, err, errlen)) != 0)
		return r;
	if (ks->redis)
		return ksr_del_domain(ks, name, err, errlen);
	if ((r = fs_path(ks, path, sizeof(path), "domains", name)) != 0 ||
	    (r = fs_path(ks, dir, sizeof(dir), "domains", NULL)) != 0)
		return r;
	if ((fd = fs_lock(ks, err, errlen)) < 0)
		return fd;
	if (unlink(path) == -1) {
		r = -errno;
		if (r == -ENOENT)
			ks_err(err, errlen, "%s: no such managed domain", name);
		else
			ks_err(err, errlen, "%s: %s", path, strerror(errno));
	} else if ((r = fs_sync_dir(dir)) == 0 && (r = fs_bump(ks)) != 0)
		ks_err(err, errlen, "%s/serial: %s", ks->dir, strerror(-r));
	fs_unlock(fd);
	return r;
}

int
relay_keystore_get_key(struct relay_keystore *ks, const char *domain,
    int slot, uint32_t gen, struct dkim_key **out, char *err, size_t errlen)
{
	struct ks_kvs kv = { 0 };
	char name[DKIM_DOMAIN_MAX], fb[32], *rgen = NULL, *rpriv = NULL;
	const char *g, *p;
	unsigned char *der = NULL;
	size_t derlen = 0;
	char gb[16];
	int r;

	*out = NULL;
	if ((r = norm_domain(domain, name, err, errlen)) != 0)
		return r;
	if (slot != 1 && slot != 2) {
		ks_err(err, errlen, "%s: no selector%d", name, slot);
		return -EINVAL;
	}
	if (ks->redis) {
		r = ksr_get_key(ks, name, slot, &rgen, &rpriv, err, errlen);
		g = rgen;
		p = rpriv;
	} else {
		r = fs_load(ks, "domains", name, &kv, err, errlen);
		g = ks_kvs_get(&kv, slot_field(fb, sizeof(fb), slot,
		    "generation"));
		p = ks_kvs_get(&kv, slot_field(fb, sizeof(fb), slot, "priv"));
	}
	if (r == 0 && (g == NULL || p == NULL))
		r = -ENOENT;
	if (r == -ENOENT) {
		ks_err(err, errlen, "%s: no key stored for selector%d", name,
		    slot);
		goto done;
	}
	if (r != 0)
		goto done;
	snprintf(gb, sizeof(gb), "%" PRIu32, gen);
	if (strcmp(g, gb) != 0) {
		ks_err(err, errlen, "%s: selector%d holds generation %s, not "
		    "%s", name, slot, g, gb);
		r = -ESTALE;
		goto done;
	}
	if ((r = ks_priv_decode(ks, name, slot, gen, p, &der, &derlen, err,
	    errlen)) != 0)
		goto done;
	if ((r = dkim_key_from_der(der, derlen, out)) != 0) {
		ks_err(err, errlen, "%s: selector%d: the stored key is "
		    "unusable: %s", name, slot, dkim_strerror(r));
		r = -EIO;
	}
done:
	if (der != NULL)
		dkim_wipe_free(der, derlen);
	if (rpriv != NULL)
		dkim_wipe_free(rpriv, strlen(rpriv));
	free(rgen);
	ks_kvs_free(&kv);
	return r;
}

int
relay_keystore_history(struct relay_keystore *ks, const char *domain,
    int (*cb)(void *arg, const char *line), void *arg, char *err,
    size_t errlen)
{
	char name[DKIM_DOMAIN_MAX], key[DKIM_DOMAIN_MAX + 32], path[PATH_MAX];
	char *buf, *p, *nl;
	size_t len;
	int r;

	if ((r = norm_domain(domain, name, err, errlen)) != 0)
		return r;
	if (ks->redis)
		return ksr_strings(ks, "LRANGE", rkey(key, sizeof(key),
		    "history", name), cb, arg, err, errlen);
	if ((r = fs_path(ks, path, sizeof(path), "history", name)) != 0)
		return r;
	if ((r = fs_read(path, &buf, &len)) == -ENOENT)
		return 0;
	if (r != 0) {
		ks_err(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	for (p = buf; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p) - 1;
		else
			*nl = '\0';
		if (*p != '\0' && (r = cb(arg, p)) != 0)
			break;
		if (nl[1] == '\0')
			break;
	}
	free(buf);
	return r;
}

int
relay_keystore_list_domains(struct relay_keystore *ks,
    int (*cb)(void *arg, const char *domain), void *arg, char *err,
    size_t errlen)
{
	if (ks->redis)
		return ksr_strings(ks, "SMEMBERS", "signet:domains", cb, arg,
		    err, errlen);
	return fs_list(ks, "domains", domain_name_ok, cb, arg, err, errlen);
}

/* tenant_name_ok_cb - tenant_name_ok for fs_list. */
static int
tenant_name_ok_cb(const char *s)
{
	return tenant_name_ok(s);
}

int
relay_keystore_get_tenant(struct relay_keystore *ks, const char *name,
    struct relay_tenant *out, char *err, size_t errlen)
{
	struct ks_kvs kv = { 0 };
	char key[DKIM_TENANT_MAX + 32];
	int r;

	memset(out, 0, sizeof(*out));
	if (!tenant_name_ok(name)) {
		ks_err(err, errlen, "bad tenant name \"%s\"", name ? name : "");
		return -EINVAL;
	}
	if (ks->redis)
		r = ksr_get(ks, rkey(key, sizeof(key), "tenant", name), &kv,
		    err, errlen);
	else
		r = fs_load(ks, "tenants", name, &kv, err, errlen);
	if (r == -ENOENT)
		ks_err(err, errlen, "tenant %s: no such tenant", name);
	if (r == 0)
		r = ks_tenant_decode(&kv, name, out, err, errlen);
	ks_kvs_free(&kv);
	return r;
}

int
relay_keystore_put_tenant(struct relay_keystore *ks, struct relay_tenant *t,
    uint64_t expect_version, char *err, size_t errlen)
{
	struct ks_kvs kv = { 0 };
	char idn[DKIM_DOMAIN_MAX];
	const char *none[2] = { "", "" };
	int r;

	if (!tenant_name_ok(t->name)) {
		ks_err(err, errlen, "bad tenant name \"%s\"", t->name);
		return -EINVAL;
	}
	if (t->initial_domain[0] != '\0' &&
	    (dkim_domain_normalize(t->initial_domain, idn, sizeof(idn)) != 0 ||
	    strcmp(idn, t->initial_domain) != 0)) {
		ks_err(err, errlen, "tenant %s: bad initial domain \"%s\"",
		    t->name, t->initial_domain);
		return -EINVAL;
	}
	if (!oneline(t->users) || !oneline(t->networks)) {
		ks_err(err, errlen, "tenant %s: line breaks in users or "
		    "networks", t->name);
		return -EINVAL;
	}
	if ((r = tenant_encode(t, expect_version + 1, &kv)) != 0)
		goto done;
	if (ks->redis)
		r = ksr_put(ks, 1, t->name, &kv, expect_version, none, none,
		    NULL, err, errlen);
	else
		r = fs_put(ks, "tenants", t->name, &kv, NULL, expect_version,
		    NULL, err, errlen);
	if (r == 0)
		t->version = expect_version + 1;
done:
	ks_kvs_free(&kv);
	return r;
}

int
relay_keystore_list_tenants(struct relay_keystore *ks,
    int (*cb)(void *arg, const char *name), void *arg, char *err,
    size_t errlen)
{
	if (ks->redis)
		return ksr_strings(ks, "SMEMBERS", "signet:tenants", cb, arg,
		    err, errlen);
	return fs_list(ks, "tenants", tenant_name_ok_cb, cb, arg, err,
	    errlen);
}

int
relay_keystore_lock(struct relay_keystore *ks, const char *name,
    unsigned ttl_ms, char token[RELAY_LOCK_TOKEN], char *err, size_t errlen)
{
	unsigned char rnd[16];
	size_t i;

	token[0] = '\0';
	if (!lock_name_ok(name)) {
		ks_err(err, errlen, "bad lock name \"%s\"", name ? name : "");
		return -EINVAL;
	}
	if (ttl_ms == 0)
		ttl_ms = 1;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		ks_err(err, errlen, "no random bytes for a lock token");
		return -EIO;
	}
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(token + 2 * i, 3, "%02x", rnd[i]);
	if (ks->redis)
		return ksr_lock(ks, name, ttl_ms, token, err, errlen);
	return fs_lock_take(ks, name, ttl_ms, token, err, errlen);
}

void
relay_keystore_unlock(struct relay_keystore *ks, const char *name,
    const char token[RELAY_LOCK_TOKEN])
{
	if (!lock_name_ok(name) || token == NULL || token[0] == '\0')
		return;
	if (ks->redis)
		ksr_unlock(ks, name, token);
	else
		fs_lock_release(ks, name, token);
}

int
relay_keystore_watch(struct relay_keystore *ks, unsigned timeout_ms,
    void (*cb)(void *arg, const char *domain), void *arg)
{
	if (ks->redis)
		return ksr_watch(ks, timeout_ms, cb, arg);
	return fs_watch(ks, timeout_ms, cb, arg);
}

/* ---- lists of names ------------------------------------------------------ */

int
relay_names_add(void *arg, const char *name)
{
	struct relay_names *l = arg;

	if (l->n == l->cap) {
		l->cap = l->cap != 0 ? l->cap * 2 : 64;
		l->v = relay_xrealloc(l->v, l->cap, sizeof(char *));
	}
	l->v[l->n++] = relay_xstrdup(name);
	return 0;
}

/* names_cmp - qsort comparison of two names. */
static int
names_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void
relay_names_sort(struct relay_names *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(char *), names_cmp);
}

void
relay_names_free(struct relay_names *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}
