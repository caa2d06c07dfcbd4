/*
 * auth.c - what SMTP AUTH (RFC 4954) needs below the session: the
 * credentials file, password checks and the SASL decoding.  The file holds
 * "user:hash" lines, where hash is a crypt(3) string such as yescrypt
 * ("$y$...") or SHA-512-crypt ("$6$..."); it is read once into a sorted
 * array.  smtp_authdb_check runs crypt_rn on a private struct crypt_data,
 * so any thread may call it, and spends the same crypt call whether or not
 * the user exists, so response times do not reveal valid user names.  The
 * SASL side decodes PLAIN (RFC 4616) and the base64 lines of LOGIN with a
 * strict base64 decoder (RFC 4648 4: alphabet, padding and unused bits
 * checked).  Decoded passwords are wiped (OPENSSL_cleanse) before the
 * buffers that held them go away.
 */
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "smtp/smtp_int.h"

#define AUTH_LINE_MAX 4096   /* a longer line in the file is an error */

/* A setting crypt_rn accepts, for databases without any user. */
#define DUMMY_SETTING "$6$Zb3TGlPLQFrbQm1J$"

struct authuser {
	char *name;
	char *hash;
};

struct smtp_authdb {
	size_t n;
	struct authuser *u;   /* sorted by name */
	char *dummy;          /* hash spent on unknown users */
};

/* user_cmp - qsort/bsearch order of struct authuser by name */
static int
user_cmp(const void *a, const void *b)
{
	return strcmp(((const struct authuser *)a)->name,
	    ((const struct authuser *)b)->name);
}

/* user_key_cmp - bsearch a user name (key) in the sorted array */
static int
user_key_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct authuser *)elem)->name);
}

/* valid_user - a user name: printable, no ':' and no white space */
static int
valid_user(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		/* Bytes >= 0x80 are allowed: RFC 4616 names are UTF-8. */
		if (c <= ' ' || c == ':' || c == 0x7f)
			return 0;
	}
	return 1;
}

/* count_char - how many times c occurs in s */
static size_t
count_char(const char *s, char c)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += *s == c;
	return n;
}

/* add_user - append name/hash to db (array grown by doubling) */
static int
add_user(struct smtp_authdb *db, size_t *cap, const char *name, size_t nlen,
    const char *hash, size_t hlen)
{
	struct authuser *nu;

	if (db->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;

		if ((nu = realloc(db->u, ncap * sizeof(*nu))) == NULL)
			return -ENOMEM;
		db->u = nu;
		*cap = ncap;
	}
	nu = &db->u[db->n];
	if ((nu->name = strndup(name, nlen)) == NULL)
		return -ENOMEM;
	if ((nu->hash = strndup(hash, hlen)) == NULL) {
		free(nu->name);
		return -ENOMEM;
	}
	db->n++;
	return 0;
}

/*
 * parse_line - one line of the file (without its newline) into db.
 * 0 (also for comments and blank lines), -EINVAL with a message in why,
 * or -ENOMEM.
 */
static int
parse_line(struct smtp_authdb *db, size_t *cap, char *line, char *why,
    size_t whylen)
{
	char *s = line, *colon, *hash, *end;
	size_t ndollar;

	/* Tolerate CRLF files and surrounding white space. */
	end = s + strlen(s);
	while (end > s && (end[-1] == '\r' || end[-1] == ' ' ||
	    end[-1] == '\t'))
		*--end = '\0';
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '\0' || *s == '#')
		return 0;

	if ((colon = strchr(s, ':')) == NULL) {
		snprintf(why, whylen, "expected user:hash");
		return -EINVAL;
	}
	hash = colon + 1;
	if (!valid_user(s, (size_t)(colon - s))) {
		snprintf(why, whylen, "bad user name");
		return -EINVAL;
	}
	if (strchr(hash, ':') != NULL) {
		snprintf(why, whylen, "expected user:hash, found more fields");
		return -EINVAL;
	}
	/*
	 * "$id$[params$]salt$hash": a bare setting ("$6$salt$") passes
	 * crypt_checksalt but no password would ever match it.  yescrypt
	 * always has the params field.
	 */
	ndollar = strncmp(hash, "$y$", 3) == 0 ||
	    strncmp(hash, "$gy$", 4) == 0 ? 4 : 3;
	if (hash[0] == '$' && (count_char(hash, '$') < ndollar ||
	    hash[strlen(hash) - 1] == '$')) {
		snprintf(why, whylen, "incomplete crypt(3) hash");
		return -EINVAL;
	}
	switch (crypt_checksalt(hash)) {
	case CRYPT_SALT_OK:
		break;
	case CRYPT_SALT_METHOD_LEGACY:
		/* DES, MD5-crypt, ...; also any string without "$id$". */
		snprintf(why, whylen, "weak or unrecognised hash (use "
		    "yescrypt \"$y$\" or SHA-512-crypt \"$6$\")");
		return -EINVAL;
	default:
		snprintf(why, whylen, "not a crypt(3) hash this system "
		    "supports");
		return -EINVAL;
	}
	return add_user(db, cap, s, (size_t)(colon - s), hash, strlen(hash));
}

int
smtp_authdb_load(const char *path, struct smtp_authdb **out, char *err,
    size_t errlen)
{
	struct smtp_authdb *db = NULL;
	char *line = NULL, why[128];
	size_t linecap = 0, cap = 0, lineno = 0, i;
	ssize_t n;
	FILE *f = NULL;
	int rc;

	*out = NULL;
	if ((f = fopen(path, "re")) == NULL) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if ((db = calloc(1, sizeof(*db))) == NULL)
		goto oom;

	errno = 0;
	while ((n = getline(&line, &linecap, f)) != -1) {
		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if ((size_t)n != strlen(line)) {
			rc = -EINVAL;
			snprintf(err, errlen, "%s:%zu: NUL byte in line", path,
			    lineno);
			goto fail;
		}
		if (n > AUTH_LINE_MAX) {
			rc = -EINVAL;
			snprintf(err, errlen, "%s:%zu: line too long", path,
			    lineno);
			goto fail;
		}
		rc = parse_line(db, &cap, line, why, sizeof(why));
		if (rc == -ENOMEM)
			goto oom;
		if (rc != 0) {
			snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
			goto fail;
		}
	}
	if (ferror(f)) {
		rc = errno ? -errno : -EIO;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		goto fail;
	}

	if (db->n > 0)
		qsort(db->u, db->n, sizeof(db->u[0]), user_cmp);
	for (i = 1; i < db->n; i++) {
		if (strcmp(db->u[i - 1].name, db->u[i].name) == 0) {
			rc = -EINVAL;
			snprintf(err, errlen, "%s: user \"%s\" listed twice",
			    path, db->u[i].name);
			goto fail;
		}
	}
	/*
	 * Unknown users are checked against a real entry's hash, so they
	 * cost what a known user costs with the method in use here.
	 */
	db->dummy = strdup(db->n > 0 ? db->u[0].hash : DUMMY_SETTING);
	if (db->dummy == NULL)
		goto oom;

	free(line);
	fclose(f);
	*out = db;
	return 0;

oom:
	rc = -ENOMEM;
	snprintf(err, errlen, "%s: out of memory", path);
fail:
	free(line);
	if (f != NULL)
		fclose(f);
	smtp_authdb_free(db);
	return rc;
}

int
smtp_authdb_check(const struct smtp_authdb *db, const char *user,
    const char *pass)
{
	const struct authuser *u = NULL;
	struct crypt_data *cd;
	const char *hash, *res;
	int ok = 0;

	if (db == NULL || user == NULL || pass == NULL)
		return 0;
	if (db->n > 0)
		u = bsearch(user, db->u, db->n, sizeof(db->u[0]), user_key_cmp);
	hash = u != NULL ? u->hash : db->dummy;

	/* struct crypt_data is ~32 KiB: too big for a loop thread's stack. */
	if ((cd = calloc(1, sizeof(*cd))) == NULL)
		return 0;
	res = crypt_rn(pass, hash, cd, (int)sizeof(*cd));
	if (res != NULL && strlen(res) == strlen(hash) &&
	    CRYPTO_memcmp(res, hash, strlen(hash)) == 0)
		ok = 1;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	/* The dummy may be a real user's hash: a match there means nothing. */
	return u != NULL && ok;
}

void
smtp_authdb_free(struct smtp_authdb *db)
{
	size_t i;

	if (db == NULL)
		return;
	for (i = 0; i < db->n; i++) {
		free(db->u[i].name);
		OPENSSL_cleanse(db->u[i].hash, strlen(db->u[i].hash));
		free(db->u[i].hash);
	}
	free(db->u);
	free(db->dummy);
	free(db);
}

/* ---- base64 and SASL ----------------------------------------------------- */

/* b64_val - the 6-bit value of a base64 alphabet character, or -1 */
static int
b64_val(unsigned char c)
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
 * b64_decode - strict RFC 4648 4 base64: length a multiple of 4, '=' only
 * as the last one or two characters, unused bits zero.  Writes at most
 * outcap bytes; -1 if malformed or too long, else the decoded length.
 */
static long
b64_decode(const char *in, size_t len, unsigned char *out, size_t outcap)
{
	size_t i, o = 0, pad = 0;
	int v[4], k;

	if (len % 4 != 0)
		return -1;
	if (len > 0 && in[len - 1] == '=')
		pad = len > 1 && in[len - 2] == '=' ? 2 : 1;
	if (len / 4 * 3 - pad > outcap)
		return -1;
	for (i = 0; i < len; i += 4) {
		int last = i + 4 == len;

		for (k = 0; k < 4; k++) {
			if (last && k >= 4 - (int)pad)
				v[k] = 0;
			else if ((v[k] = b64_val((unsigned char)in[i + k])) < 0)
				return -1;
		}
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (last && pad == 2) {
			/* RFC 4648 3.5: the 4 unused bits must be zero. */
			if ((v[1] & 0x0f) != 0)
				return -1;
			break;
		}
		out[o++] = (unsigned char)((v[1] & 0x0f) << 4 | v[2] >> 2);
		if (last && pad == 1) {
			if ((v[2] & 0x03) != 0)
				return -1;
			break;
		}
		out[o++] = (unsigned char)((v[2] & 0x03) << 6 | v[3]);
	}
	return (long)o;
}

int
smtp__b64_decode_str(const char *b64, size_t len, char *out, size_t outlen)
{
	long n;

	if (outlen == 0)
		return -1;
	/* Room for the terminating NUL; an embedded NUL is malformed. */
	n = b64_decode(b64, len, (unsigned char *)out, outlen - 1);
	if (n < 0 || memchr(out, '\0', (size_t)n) != NULL) {
		OPENSSL_cleanse(out, outlen);
		out[0] = '\0';
		return -1;
	}
	out[n] = '\0';
	return 0;
}

int
smtp__sasl_plain(const char *b64, size_t len, char *user, size_t userlen,
    char *pass, size_t passlen)
{
	unsigned char *buf;
	const char *authz, *authc, *pw;
	size_t cap = len / 4 * 3, zlen, clen, plen;
	const unsigned char *nul1, *nul2;
	long n;
	int rc = -1;

	if (userlen == 0 || passlen == 0)
		return -1;
	user[0] = pass[0] = '\0';
	if ((buf = malloc(cap + 1)) == NULL)
		return -1;
	if ((n = b64_decode(b64, len, buf, cap)) < 0)
		goto done;

	/* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd */
	if ((nul1 = memchr(buf, '\0', (size_t)n)) == NULL)
		goto done;
	nul2 = memchr(nul1 + 1, '\0', (size_t)n - (size_t)(nul1 + 1 - buf));
	if (nul2 == NULL)
		goto done;
	authz = (const char *)buf;
	authc = (const char *)nul1 + 1;
	pw = (const char *)nul2 + 1;
	zlen = (size_t)(nul1 - buf);
	clen = (size_t)(nul2 - nul1 - 1);
	plen = (size_t)n - (size_t)(nul2 + 1 - buf);

	/* authcid and passwd are 1*SAFE: non-empty, no further NUL. */
	if (clen == 0 || plen == 0 || memchr(pw, '\0', plen) != NULL)
		goto done;
	/* Acting for someone else is not offered (RFC 4616 2 allows that). */
	if (zlen != 0 && (zlen != clen || memcmp(authz, authc, clen) != 0)) {
		rc = -2;
		goto done;
	}
	if (clen >= userlen || plen >= passlen)
		goto done;
	memcpy(user, authc, clen);
	user[clen] = '\0';
	memcpy(pass, pw, plen);
	pass[plen] = '\0';
	rc = 0;

done:
	OPENSSL_cleanse(buf, cap + 1);
	free(buf);
	return rc;
}
