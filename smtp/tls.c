/*
 * tls.c - TLS for the SMTP server with OpenSSL 3: the server SSL_CTX
 * (TLS 1.2 and up, certificate chain and key from PEM files, or a
 * self-signed pair made on first start) and one TLS session per SMTP
 * session, driven entirely through two memory BIOs.  The session code reads
 * the socket and hands ciphertext to smtp__tls_feed; OpenSSL reads it from
 * the rbio, and everything it wants sent (handshake, records, alerts) is
 * taken from the wbio and passed to on_cipher after every step.  Nothing
 * here touches a socket or blocks, so one libuv loop can carry thousands of
 * sessions.  Callbacks get bytes that are valid only during the call (the
 * caller copies them) and must not free the session; they may call
 * smtp__tls_write and smtp__tls_shutdown.  OpenSSL's error queue is per
 * thread and shared by every session on the loop, so each call clears it
 * before it starts and leaves it empty when it returns.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "smtp/smtp_int.h"

#define SELFSIGNED_DAYS 3650     /* 10 years */
#define SELFSIGNED_RSA_BITS 2048 /* RSA: every SMTP client still speaks it */
#define TLS_READ_CHUNK 16384     /* one TLS record of plaintext */

struct smtp__tls {
	SSL *ssl;                /* owns rbio and wbio */
	BIO *rbio;               /* ciphertext from the peer */
	BIO *wbio;               /* ciphertext for the peer */
	smtp__tls_data_cb on_plain;
	smtp__tls_data_cb on_cipher;
	void *arg;
	int ready;               /* handshake done */
	int dead;                /* fatal error: refuse everything */
	int peer_closed;         /* close_notify received */
};

/* ---- errors -------------------------------------------------------------- */

/*
 * ssl_err - "what: <OpenSSL's reason>" into err, taking the earliest error
 * on the queue (the cause; later entries are consequences), then clear it.
 */
static void
ssl_err(char *err, size_t errlen, const char *what)
{
	char buf[256];
	unsigned long e = ERR_get_error();

	if (e != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(err, errlen, "%s: %s", what, buf);
	} else {
		snprintf(err, errlen, "%s", what);
	}
	ERR_clear_error();
}

/* ---- self-signed certificate --------------------------------------------- */

/* valid_hostname - letters, digits, '-', '_' and '.'; 1 to 253 bytes */
static int
valid_hostname(const char *h)
{
	size_t i, n;

	if (h == NULL || (n = strlen(h)) == 0 || n > 253)
		return 0;
	for (i = 0; i < n; i++) {
		char c = h[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

/* add_san - subjectAltName: DNS:hostname (RFC 5280 4.2.1.6) */
static int
add_san(X509 *x, const char *hostname)
{
	GENERAL_NAMES *gens = NULL;
	GENERAL_NAME *gn = NULL;
	ASN1_IA5STRING *ia5 = NULL;
	int rc = -1;

	if ((gens = sk_GENERAL_NAME_new_null()) == NULL ||
	    (gn = GENERAL_NAME_new()) == NULL ||
	    (ia5 = ASN1_IA5STRING_new()) == NULL)
		goto fail;
	if (!ASN1_STRING_set(ia5, hostname, (int)strlen(hostname)))
		goto fail;
	GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
	ia5 = NULL;
	if (!sk_GENERAL_NAME_push(gens, gn))
		goto fail;
	gn = NULL;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
	    X509V3_ADD_DEFAULT) != 1)
		goto fail;
	rc = 0;
fail:
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	return rc;
}

/* add_ext - one extension from its OpenSSL configuration text */
static int
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if ((ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		return -1;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/*
 * make_selfsigned - a new RSA key and a self-signed X.509 v3 server
 * certificate for hostname, valid from now for SELFSIGNED_DAYS.
 */
static int
make_selfsigned(const char *hostname, EVP_PKEY **pkeyp, X509 **xp)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	X509_NAME *name;
	BIGNUM *bn = NULL;
	ASN1_INTEGER *serial;
	int rc = -1;

	if ((pkey = EVP_RSA_gen(SELFSIGNED_RSA_BITS)) == NULL)
		goto fail;
	if ((x = X509_new()) == NULL || !X509_set_version(x, X509_VERSION_3))
		goto fail;
	/* RFC 5280 4.1.2.2: a positive serial, at most 20 octets: 127 bits. */
	if ((bn = BN_new()) == NULL ||
	    !BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    (serial = X509_get_serialNumber(x)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, serial) == NULL)
		goto fail;
	if (X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), SELFSIGNED_DAYS, 0,
	    NULL) == NULL)
		goto fail;
	if (!X509_set_pubkey(x, pkey))
		goto fail;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)hostname, -1, -1, 0) ||
	    !X509_set_issuer_name(x, name))
		goto fail;
	if (add_san(x, hostname) != 0 ||
	    add_ext(x, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
	    add_ext(x, NID_key_usage,
	    "critical,digitalSignature,keyEncipherment") != 0 ||
	    add_ext(x, NID_ext_key_usage, "serverAuth") != 0 ||
	    add_ext(x, NID_subject_key_identifier, "hash") != 0)
		goto fail;
	if (X509_sign(x, pkey, EVP_sha256()) == 0)
		goto fail;
	*pkeyp = pkey;
	*xp = x;
	pkey = NULL;
	x = NULL;
	rc = 0;
fail:
	BN_free(bn);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return rc;
}

/* fsync_dir - fsync the directory holding path, so a rename is durable */
static void
fsync_dir(const char *path)
{
	char buf[PATH_MAX];
	int fd;

	if (strlen(path) >= sizeof(buf))
		return;
	strcpy(buf, path);
	if ((fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return;
	/* Some file systems cannot fsync a directory; the rename stands. */
	(void)fsync(fd);
	close(fd);
}

/*
 * write_tmp - create "path.XXXXXX" with mode, write the PEM of key (if
 * set) or cert into it and fsync it.  The temporary name goes to tmp for
 * the caller to rename or unlink.  0 or -errno / -EIO.
 */
static int
write_tmp(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert,
    char *tmp, size_t tmplen)
{
	FILE *f = NULL;
	int fd = -1, rc;

	if ((size_t)snprintf(tmp, tmplen, "%s.XXXXXX", path) >= tmplen)
		return -ENAMETOOLONG;
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		rc = -errno;
		tmp[0] = '\0';
		return rc;
	}
	/* mkostemp made it 0600; the umask plays no part in either mode. */
	if (fchmod(fd, mode) != 0) {
		rc = -errno;
		goto fail;
	}
	if ((f = fdopen(fd, "w")) == NULL) {
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (key != NULL ? !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL,
	    NULL) : !PEM_write_X509(f, cert)) {
		rc = -EIO;
		goto fail;
	}
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		rc = -errno;
		goto fail;
	}
	if (fclose(f) != 0) {
		f = NULL;
		rc = -errno;
		goto fail;
	}
	return 0;
fail:
	if (f != NULL)
		fclose(f);
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	tmp[0] = '\0';
	return rc;
}

/*
 * write_selfsigned - generate the pair and put it in place: both files are
 * written to temporary names first and renamed at the end, key first, so a
 * crash never leaves a half-written file under either name.
 */
static int
write_selfsigned(const char *cert_file, const char *key_file,
    const char *hostname, char *err, size_t errlen)
{
	char tkey[PATH_MAX] = "", tcert[PATH_MAX] = "";
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	int rc = -1, e;

	if (make_selfsigned(hostname, &pkey, &x) != 0) {
		ssl_err(err, errlen, "generating a self-signed certificate");
		goto fail;
	}
	if ((e = write_tmp(key_file, 0600, pkey, NULL, tkey,
	    sizeof(tkey))) != 0) {
		snprintf(err, errlen, "writing %s: %s", key_file,
		    strerror(-e));
		goto fail;
	}
	if ((e = write_tmp(cert_file, 0644, NULL, x, tcert,
	    sizeof(tcert))) != 0) {
		snprintf(err, errlen, "writing %s: %s", cert_file,
		    strerror(-e));
		goto fail;
	}
	if (rename(tkey, key_file) != 0) {
		snprintf(err, errlen, "writing %s: %s", key_file,
		    strerror(errno));
		goto fail;
	}
	tkey[0] = '\0';
	if (rename(tcert, cert_file) != 0) {
		snprintf(err, errlen, "writing %s: %s", cert_file,
		    strerror(errno));
		goto fail;
	}
	tcert[0] = '\0';
	fsync_dir(key_file);
	fsync_dir(cert_file);
	rc = 0;
fail:
	if (tkey[0] != '\0')
		unlink(tkey);
	if (tcert[0] != '\0')
		unlink(tcert);
	X509_free(x);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return rc;
}

/* exists - 1 if path exists, 0 if not, -errno if that can't be told */
static int
exists(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0)
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

SSL_CTX *
smtp_tls_ctx_new(const char *cert_file, const char *key_file,
    const char *hostname, int selfsigned, char *err, size_t errlen)
{
	SSL_CTX *ctx = NULL;
	int have_cert, have_key;
	static const unsigned char sid_ctx[] = "signet-smtpd";

	ERR_clear_error();
	if (cert_file == NULL || key_file == NULL) {
		snprintf(err, errlen, "no certificate or key file configured");
		return NULL;
	}
	if (selfsigned) {
		if ((have_cert = exists(cert_file)) < 0) {
			snprintf(err, errlen, "%s: %s", cert_file,
			    strerror(-have_cert));
			return NULL;
		}
		if ((have_key = exists(key_file)) < 0) {
			snprintf(err, errlen, "%s: %s", key_file,
			    strerror(-have_key));
			return NULL;
		}
		/*
		 * Only when both are missing: a lone key may be the
		 * administrator's own, and must not be replaced.
		 */
		if (have_cert != have_key) {
			snprintf(err, errlen, "%s exists but %s does not; "
			    "remove it to generate a new self-signed pair",
			    have_cert ? cert_file : key_file,
			    have_cert ? key_file : cert_file);
			return NULL;
		}
		if (!have_cert) {
			if (!valid_hostname(hostname)) {
				snprintf(err, errlen, "cannot make a "
				    "certificate for host name \"%s\"",
				    hostname != NULL ? hostname : "");
				return NULL;
			}
			if (write_selfsigned(cert_file, key_file, hostname,
			    err, errlen) != 0)
				return NULL;
		}
	}

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		ssl_err(err, errlen, "SSL_CTX_new");
		goto fail;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		ssl_err(err, errlen, "setting TLS 1.2 as the minimum");
		goto fail;
	}
	/*
	 * No renegotiation (a client could make us do handshakes for free),
	 * our cipher order, and I/O buffers released while a session is
	 * idle: with thousands of idle connections they add up.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);

	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ssl_err(err, errlen, cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_err(err, errlen, key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(err, errlen, "the key does not match the certificate");
		goto fail;
	}
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

/* ---- one session over memory BIOs ---------------------------------------- */

struct smtp__tls *
smtp__tls_new(SSL_CTX *ctx, smtp__tls_data_cb on_plain,
    smtp__tls_data_cb on_cipher, void *arg)
{
	struct smtp__tls *t;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	t->on_plain = on_plain;
	t->on_cipher = on_cipher;
	t->arg = arg;
	if ((t->ssl = SSL_new(ctx)) == NULL ||
	    (t->rbio = BIO_new(BIO_s_mem())) == NULL ||
	    (t->wbio = BIO_new(BIO_s_mem())) == NULL)
		goto fail;
	/* An empty rbio means "no more yet" (WANT_READ), not end of file. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_accept_state(t->ssl);
	return t;
fail:
	/* Before SSL_set_bio the BIOs are still ours. */
	BIO_free(t->rbio);
	BIO_free(t->wbio);
	SSL_free(t->ssl);
	free(t);
	ERR_clear_error();
	return NULL;
}

/* drain - hand everything OpenSSL has written to on_cipher */
static void
drain(struct smtp__tls *t)
{
	char buf[TLS_READ_CHUNK + 512];
	int n;

	while (BIO_ctrl_pending(t->wbio) > 0) {
		if ((n = BIO_read(t->wbio, buf, sizeof(buf))) <= 0)
			break;
		t->on_cipher(t->arg, buf, (size_t)n);
	}
}

/*
 * fatal - mark the session dead, send any alert OpenSSL queued, and put
 * the reason for the result r of an SSL call in err.
 */
static int
fatal(struct smtp__tls *t, int r, const char *what, char *err, size_t errlen)
{
	int e = SSL_get_error(t->ssl, r);

	t->dead = 1;
	drain(t);
	if (e == SSL_ERROR_SSL)
		ssl_err(err, errlen, what);
	else if (e == SSL_ERROR_SYSCALL)
		snprintf(err, errlen, "%s: unexpected end of data", what);
	else
		snprintf(err, errlen, "%s: SSL error %d", what, e);
	ERR_clear_error();
	return -1;
}

int
smtp__tls_feed(struct smtp__tls *t, const char *p, size_t len, char *err,
    size_t errlen)
{
	char buf[TLS_READ_CHUNK];
	size_t off = 0;
	int r, n;

	if (t->dead) {
		snprintf(err, errlen, "TLS session already failed");
		return -1;
	}
	ERR_clear_error();
	/* A memory BIO takes everything, but an int at a time. */
	while (off < len) {
		n = len - off > INT_MAX ? INT_MAX : (int)(len - off);
		if (BIO_write(t->rbio, p + off, n) != n) {
			t->dead = 1;
			ssl_err(err, errlen, "buffering TLS input");
			return -1;
		}
		off += (size_t)n;
	}

	if (!t->ready) {
		r = SSL_do_handshake(t->ssl);
		if (r != 1) {
			if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ)
				return fatal(t, r, "TLS handshake", err,
				    errlen);
			/* Mid-handshake: send our flight, wait for theirs. */
			drain(t);
			ERR_clear_error();
			return 0;
		}
		t->ready = 1;
		/* Our last flight (and TLS 1.3 tickets) go before any data. */
		drain(t);
	}

	/*
	 * Records that came with the end of the handshake (a pipelined
	 * client), or later ones.  on_plain may write replies in between;
	 * drain after each step keeps their order on the wire.
	 */
	while (!t->peer_closed) {
		ERR_clear_error();
		r = SSL_read(t->ssl, buf, sizeof(buf));
		if (r > 0) {
			drain(t);
			t->on_plain(t->arg, buf, (size_t)r);
			if (t->dead)
				break;
			continue;
		}
		switch (SSL_get_error(t->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			/* A partial record waits in OpenSSL for more input. */
			drain(t);
			ERR_clear_error();
			return 0;
		case SSL_ERROR_ZERO_RETURN:
			/*
			 * close_notify: the peer sends no more.  Not an error;
			 * we may still write (RFC 8446 6.1), and TCP's FIN
			 * ends the session.  Later input is ignored.
			 */
			t->peer_closed = 1;
			break;
		default:
			return fatal(t, r, "TLS read", err, errlen);
		}
	}
	drain(t);
	ERR_clear_error();
	if (t->dead) {
		snprintf(err, errlen, "TLS session failed");
		return -1;
	}
	return 0;
}

int
smtp__tls_write(struct smtp__tls *t, const char *p, size_t len)
{
	size_t off = 0;
	int r, n;

	if (t->dead || !t->ready)
		return -1;
	ERR_clear_error();
	while (off < len) {
		n = len - off > INT_MAX ? INT_MAX : (int)(len - off);
		/* Into a memory BIO SSL_write never writes part of it. */
		if ((r = SSL_write(t->ssl, p + off, n)) <= 0) {
			t->dead = 1;
			drain(t);
			ERR_clear_error();
			return -1;
		}
		off += (size_t)r;
		drain(t);
	}
	return 0;
}

int
smtp__tls_ready(const struct smtp__tls *t)
{
	return t->ready;
}

const char *
smtp__tls_version(const struct smtp__tls *t)
{
	return SSL_get_version(t->ssl);
}

const char *
smtp__tls_cipher(const struct smtp__tls *t)
{
	return SSL_get_cipher_name(t->ssl);
}

void
smtp__tls_shutdown(struct smtp__tls *t)
{
	/* close_notify means nothing before the handshake has finished. */
	if (t->dead || !t->ready)
		return;
	ERR_clear_error();
	(void)SSL_shutdown(t->ssl);
	drain(t);
	ERR_clear_error();
}

void
smtp__tls_free(struct smtp__tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);
	free(t);
}
