/*
 * smtp_int.h - helpers shared between the files of smtp/ (smtp__ prefix).
 * Nothing outside smtp/ includes this.
 */
#ifndef SIGNET_SMTP_INT_H
#define SIGNET_SMTP_INT_H

#include <sys/socket.h>

#include "smtp/smtp.h"

/* ---- tls.c: one TLS session driven through memory BIOs ------------------ */

/*
 * The session reads ciphertext from the socket and hands it to
 * smtp__tls_feed; decrypted bytes come back through on_plain, and bytes that
 * must go to the socket (handshake, alerts, records) through on_cipher.
 * Writes of plaintext go through smtp__tls_write the same way.  No socket
 * I/O happens inside tls.c.
 */
struct smtp__tls;

typedef void (*smtp__tls_data_cb)(void *arg, const char *p, size_t len);

/* smtp__tls_new - a server-side session on ctx; NULL on OOM. */
struct smtp__tls *smtp__tls_new(SSL_CTX *ctx, smtp__tls_data_cb on_plain,
    smtp__tls_data_cb on_cipher, void *arg);
/*
 * smtp__tls_feed - ciphertext from the peer.  0, or -1 on a fatal TLS error
 * (reason in err; any alert to send has already gone to on_cipher).
 */
int smtp__tls_feed(struct smtp__tls *t, const char *p, size_t len, char *err,
    size_t errlen);
/* smtp__tls_write - plaintext to send once the handshake is done.  0 or -1. */
int smtp__tls_write(struct smtp__tls *t, const char *p, size_t len);
/* smtp__tls_ready - 1 once the handshake has completed. */
int smtp__tls_ready(const struct smtp__tls *t);
/* smtp__tls_version / _cipher - for the logs ("TLSv1.3", cipher name). */
const char *smtp__tls_version(const struct smtp__tls *t);
const char *smtp__tls_cipher(const struct smtp__tls *t);
/* smtp__tls_shutdown - queue a close_notify through on_cipher. */
void smtp__tls_shutdown(struct smtp__tls *t);
void smtp__tls_free(struct smtp__tls *t);

/* ---- proxy.c: HAProxy PROXY protocol v1 and v2 -------------------------- */

/*
 * smtp__proxy_parse - look at the first bytes of a connection.  Returns the
 * header length consumed (> 0) with src/dst filled (family AF_UNSPEC for
 * "UNKNOWN"/LOCAL), 0 if more bytes are needed, -1 if this is not a valid
 * PROXY header.
 */
long smtp__proxy_parse(const char *p, size_t len, struct sockaddr_storage *src,
    struct sockaddr_storage *dst);

/* ---- auth.c: SASL PLAIN and LOGIN decoding (RFC 4616, RFC 4954) --------- */

/*
 * smtp__sasl_plain - decode a base64 PLAIN response "authzid\0user\0pass".
 * 0, -1 if malformed, -2 if authzid names someone else (not offered).  user and pass are NUL-terminated, truncated never:
 * too long is malformed.
 */
int smtp__sasl_plain(const char *b64, size_t len, char *user, size_t userlen,
    char *pass, size_t passlen);
/* smtp__b64_decode_str - decode a base64 line (LOGIN steps); -1 if bad. */
int smtp__b64_decode_str(const char *b64, size_t len, char *out, size_t outlen);

#endif
