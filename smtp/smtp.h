/*
 * smtp.h - Signet's SMTP server (inbound sessions); later also the delivery
 * client.
 *
 * One struct smtp_server runs on each worker's libuv loop.  Every worker
 * opens its own listening socket on each configured address with
 * SO_REUSEPORT, so the kernel spreads connections across the loops.  A
 * session streams DATA/BDAT through the DKIM signer and into the spool as it
 * arrives; at the end the signature is computed on libuv's thread pool
 * (uv_queue_work: RSA must never block a loop), the queue file is committed
 * (group fsync) and only then does the client get 250.
 *
 * The module uses dkim/ and queue/; it never reaches into relay/.  What the
 * daemon provides comes in through struct smtp_config: the signing-key
 * lookup, an event hook for metrics and a log hook.
 */
#ifndef SIGNET_SMTP_H
#define SIGNET_SMTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include <openssl/ssl.h>

#include "dkim/dkim.h"
#include "queue/queue.h"

/* ---- address lists (mynetworks, proxy_trusted_networks) ------------------ */

struct smtp_netlist;

/*
 * smtp_netlist_parse - parse "127.0.0.0/8, [::1]/128 10.0.0.1" (commas
 * and/or spaces; a bare address is a /32 or /128).  0, or -EINVAL with a
 * message naming the bad item in err.
 */
int smtp_netlist_parse(const char *s, struct smtp_netlist **out, char *err,
    size_t errlen);
/* smtp_netlist_match - 1 if the address is in the list.  NULL list: 0. */
int smtp_netlist_match(const struct smtp_netlist *l, const struct sockaddr *sa);
void smtp_netlist_free(struct smtp_netlist *l);

/* ---- credentials for SMTP AUTH ---------------------------------------- */

struct smtp_authdb;

/*
 * smtp_authdb_load - a file of "user:crypt(3)-hash" lines (yescrypt,
 * SHA-512-crypt, ...; '#' comments).  0, or -errno / -EINVAL with
 * "FILE:LINE: message" in err.
 */
int smtp_authdb_load(const char *path, struct smtp_authdb **out, char *err,
    size_t errlen);
/* smtp_authdb_check - 1 if user/password match.  Thread-safe (crypt_r). */
int smtp_authdb_check(const struct smtp_authdb *db, const char *user,
    const char *pass);
void smtp_authdb_free(struct smtp_authdb *db);

/* ---- TLS ------------------------------------------------------------- */

/*
 * smtp_tls_ctx_new - a server SSL_CTX (TLS 1.2+) from PEM files.  When the
 * files do not exist and selfsigned is set, a self-signed certificate for
 * hostname is generated and written there first (key mode 0600).  NULL on
 * error with the reason in err.
 */
SSL_CTX *smtp_tls_ctx_new(const char *cert_file, const char *key_file,
    const char *hostname, int selfsigned, char *err, size_t errlen);

/* ---- configuration ---------------------------------------------------- */

enum smtp_bare_newline { SMTP_BARE_REJECT, SMTP_BARE_NORMALIZE, SMTP_BARE_ALLOW };

struct smtp_listen {
	char addr[128];          /* "127.0.0.1:2525", "[::1]:25" */
	int tls;                 /* TLS on connect (port 465 style) */
	int proxy;               /* expect a PROXY v1/v2 header first */
};

/* What the signing-key lookup is asked for each message. */
struct smtp_sign_request {
	const char *from_domain;          /* lower case; NULL if no From */
	const char *auth_user;            /* or NULL */
	const struct sockaddr *client;    /* after PROXY */
	const char *queue_id;
};

/*
 * Fill out[0..max) with the signatures to make; each out[i].key is a new
 * reference that the server drops after dkim_signer_add.  Returns how many
 * (0: send unsigned), or -1 to refuse the message (the server answers
 * 550 5.7.1 with `reason` if set).  Runs on the loop; must not block.
 */
typedef int (*smtp_sign_lookup_fn)(void *arg, const struct smtp_sign_request *rq,
    struct dkim_sign_params *out, int max, char *reason, size_t reasonlen);

enum smtp_event {
	SMTP_EV_CONN_OPEN,        /* value 1 */
	SMTP_EV_CONN_CLOSE,       /* value 1 */
	SMTP_EV_ACCEPTED,         /* value: message bytes */
	SMTP_EV_REJECTED,         /* label: reason ("relay", "size", "bare_newline", ...) */
	SMTP_EV_BYTES_IN,         /* value: bytes */
	SMTP_EV_SIGNED,           /* label: "alg domain", value 1 */
	SMTP_EV_SIGN_SECONDS,     /* value: seconds from end of data to signatures */
	SMTP_EV_DATA_TO_250,      /* value: seconds from end of data to 250 */
};

struct smtp_config {
	const char *hostname;             /* greeting and EHLO name */
	struct smtp_listen *listen;
	size_t nlisten;
	const struct smtp_netlist *mynetworks;
	const struct smtp_netlist *proxy_trusted; /* PROXY only from these */
	const struct smtp_authdb *authdb; /* NULL: AUTH not offered */
	SSL_CTX *tls;                     /* NULL: no STARTTLS / TLS listeners */
	uint64_t message_size_limit;      /* bytes, 0 = none (Postfix default 10240000) */
	unsigned recipient_limit;         /* smtpd_recipient_limit (1000) */
	unsigned conn_limit;              /* total connections per node */
	unsigned conn_per_client;         /* smtpd_client_connection_count_limit (50) */
	unsigned cmd_timeout_s;           /* waiting for a command (300) */
	unsigned data_timeout_s;          /* waiting for DATA bytes (300) */
	unsigned idle_timeout_s;          /* whole session without progress */
	unsigned hard_error_limit;        /* smtpd_hard_error_limit (20) */
	unsigned junk_command_limit;      /* smtpd_junk_command_limit (100) */
	enum smtp_bare_newline bare_newline; /* smtpd_forbid_bare_newline */
	smtp_sign_lookup_fn sign_lookup;
	void (*event)(void *arg, enum smtp_event ev, double value, const char *label);
	void (*log)(void *arg, int prio, const char *msg);
	void *arg;
};

struct smtp_server;

/*
 * smtp_server_start - open every listener of cfg on loop (SO_REUSEPORT) and
 * accept sessions whose messages go to spool.  cfg must stay valid until
 * smtp_server_stop's callback or smtp_server_reconfigure.  0 or -errno with
 * the failing address logged.
 */
int smtp_server_start(uv_loop_t *loop, const struct smtp_config *cfg,
    struct queue_spool *spool, struct smtp_server **out);
/*
 * smtp_server_reconfigure - new sessions use cfg from now on; sessions
 * already running keep the configuration they started with until they end.
 * The old cfg is released through release(old) once no session uses it.
 */
void smtp_server_reconfigure(struct smtp_server *srv, const struct smtp_config *cfg,
    void (*release)(const struct smtp_config *old));
/*
 * smtp_server_stop - stop accepting at once; sessions finish their current
 * transaction (a message being spooled is committed) until deadline_ms, then
 * are closed with 421.  cb(arg) runs when every session and handle is gone.
 */
void smtp_server_stop(struct smtp_server *srv, unsigned deadline_ms,
    void (*cb)(void *arg), void *arg);
/* smtp_server_sessions - sessions open right now on this server. */
unsigned smtp_server_sessions(const struct smtp_server *srv);

#endif
