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

/* ---- next-hop resolution (RFC 5321 5.1) ---------------------------------- */

/*
 * Where the delivery client connects for one destination.  A destination is
 * written as Postfix writes a nexthop or relayhost:
 *   example.com         MX lookup (RFC 5321 5.1), default port
 *   example.com:587     MX lookup, every MX host on port 587
 *   [mx.example.com]    no MX lookup: the A/AAAA records of that host
 *   [mx.example.com]:25 the same on an explicit port
 *   [192.0.2.1]:25, [::1], [IPv6:2001:db8::1]   an address: no DNS at all
 * The first form is also what a recipient domain is, and the bracketed
 * address is what an address-literal recipient (user@[192.0.2.1]) is.
 * Lookups run with c-ares on the worker's libuv loop; one struct
 * smtp_resolver per loop, never shared between threads.
 */

#define SMTP_NEXTHOP_NAMELEN   256   /* a DNS name (253) and its NUL, rounded */
#define SMTP_NEXTHOP_MAXHOPS   10    /* MX hosts kept, best first */
#define SMTP_NEXTHOP_MAXADDRS  8     /* addresses kept per host */

/* A parsed destination (see smtp_nexthop_parse). */
struct smtp_nexthop_dest {
	char host[SMTP_NEXTHOP_NAMELEN]; /* lower case, no brackets, no final dot */
	uint16_t port;
	int mx;                  /* 1: look up MX records of host */
	int literal;             /* host is an IP address: no lookup at all */
};

/*
 * smtp_nexthop_parse - split dest into host, port and whether MX records
 * are looked up (see the forms above); port is used when dest names none.
 * A bare IPv4 address is taken as a literal; a bare IPv6 address must be
 * bracketed.  0, or -EINVAL with a message naming the problem in err
 * ("[mx.example:25: missing ']'", "example.com:0: bad port ...").
 */
int smtp_nexthop_parse(const char *dest, uint16_t port,
    struct smtp_nexthop_dest *out, char *err, size_t errlen);

enum smtp_nexthop_status {
	SMTP_NEXTHOP_OK,         /* at least one hop has addresses */
	SMTP_NEXTHOP_TEMPFAIL,   /* DNS failure (SERVFAIL, timeout, ...): defer */
	SMTP_NEXTHOP_PERMFAIL,   /* NXDOMAIN, or no host with an address: bounce */
	SMTP_NEXTHOP_NULLMX,     /* RFC 7505 null MX: the domain takes no mail */
	SMTP_NEXTHOP_CANCELLED,  /* the resolver was freed first */
};

/* smtp_nexthop_strstatus - "ok", "temporary", "permanent", "nullmx", "cancelled". */
const char *smtp_nexthop_strstatus(enum smtp_nexthop_status st);

#define SMTP_HOP_TEMPFAIL  0x01  /* this host's A/AAAA lookup failed temporarily */
#define SMTP_HOP_IMPLICIT  0x02  /* no MX record: the domain itself (RFC 5321 5.1) */

/* One host to try, with its addresses (port set) in the order to try them. */
struct smtp_hop {
	char host[SMTP_NEXTHOP_NAMELEN];
	unsigned pref;           /* MX preference; 0 for implicit MX and [host] */
	unsigned flags;          /* SMTP_HOP_* */
	size_t naddrs;           /* 0 exactly when SMTP_HOP_TEMPFAIL is set */
	struct sockaddr_storage addrs[SMTP_NEXTHOP_MAXADDRS];
	char reason[256];        /* with SMTP_HOP_TEMPFAIL: why, for the log */
};

/*
 * The outcome of one smtp_resolve_nexthop.  hops[] are in the order to try:
 * ascending MX preference, random order among equal preferences, and at
 * most SMTP_NEXTHOP_MAXHOPS of them.  MX hosts that do not exist or have
 * no address are left out (RFC 5321 5.1); hosts whose lookup failed
 * temporarily stay, flagged SMTP_HOP_TEMPFAIL with no address, so that
 * delivery defers instead of bouncing when the hosts it could reach refuse
 * the mail.  Addresses alternate IPv4 and IPv6, IPv4 first.  An MX whose
 * exchange is the root (".") is a null MX when it stands alone; next to
 * real hosts it is skipped.
 * Status OK means some hop has an address.  Otherwise hops may still list
 * tempfailed hosts, and reason and dsn say what went wrong in Postfix's
 * words, e.g. "Host or domain name not found. Name service error for
 * name=nx.example type=MX: Host not found" (5.4.4), "... Host not found,
 * try again" (4.4.3), "Domain example.com does not accept mail (nullMX)"
 * (5.1.10).  The struct has no pointers: copy it to keep it.
 */
struct smtp_nexthop {
	enum smtp_nexthop_status status;
	char dsn[8];             /* RFC 3463 code: "2.0.0", "4.4.3", "5.4.4", "5.1.10" */
	char reason[512];        /* empty when OK */
	struct smtp_nexthop_dest dest;
	size_t nhops;
	struct smtp_hop hops[SMTP_NEXTHOP_MAXHOPS];
};

/* Called exactly once per successful smtp_resolve_nexthop. */
typedef void (*smtp_nexthop_cb)(void *arg, const struct smtp_nexthop *res);

struct smtp_resolver;

struct smtp_resolver_opts {
	/*
	 * "127.0.0.1:5353,[::1]:53,192.0.2.53" (commas and/or spaces; port 53
	 * when none); NULL or "": the nameservers of /etc/resolv.conf.
	 */
	const char *servers;
	unsigned timeout_ms;     /* first try per server; 0: 2000 (doubles per round) */
	unsigned tries;          /* rounds over the servers; 0: 3 */
};

/*
 * smtp_resolver_new - a resolver on loop.  opts may be NULL (all defaults).
 * 0, or -EINVAL (bad servers list) / -ENOMEM / -EIO (c-ares could not
 * start) with the reason in err.
 */
int smtp_resolver_new(uv_loop_t *loop, const struct smtp_resolver_opts *opts,
    struct smtp_resolver **out, char *err, size_t errlen);

/*
 * smtp_resolver_free - cancel every query whose callback has not run: each
 * callback runs once, before this returns, with SMTP_NEXTHOP_CANCELLED.
 * The loop handles are then closed; their memory goes in the close
 * callbacks, so run the loop once more before uv_loop_close.  May be called
 * from a resolver callback.  NULL is a no-op.
 */
void smtp_resolver_free(struct smtp_resolver *r);

/*
 * smtp_resolve_nexthop - resolve dest (any form above; port when dest has
 * none) and call cb(arg, result) from the loop, never before this returns.
 * The result is lent to cb and gone once it returns.  0, or -EINVAL (dest
 * does not parse: smtp_nexthop_parse says why), -ECANCELED (the resolver is
 * being freed) or -ENOMEM; after an error cb never runs.
 */
int smtp_resolve_nexthop(struct smtp_resolver *r, const char *dest,
    uint16_t port, smtp_nexthop_cb cb, void *arg);

/* ---- delivery client ---------------------------------------------------- */

/*
 * One outbound SMTP transaction (smtp/client.c): connect to one address,
 * greeting, EHLO (HELO when EHLO gets 5xx), STARTTLS by policy, EHLO
 * again, MAIL, RCPT for each recipient, DATA, the message, QUIT.  With
 * PIPELINING, MAIL + every RCPT + DATA go out in one write (RFC 2920) and
 * the replies are matched in order.  The message is the signature record
 * followed by the message bytes of the queue file, dot-stuffed and never
 * otherwise changed: no 8-bit downgrade, no rewrapping.  The queue file is
 * read on libuv's thread pool, a bounded amount ahead of the socket.
 *
 * When the server lacks an extension the message needs:
 *  - 8-bit body (BODY=8BITMIME at reception) and no 8BITMIME: sent anyway,
 *    unchanged and without BODY= (as Postfix does; a downgrade would break
 *    the DKIM signature and nearly every server takes 8-bit).
 *  - SMTPUTF8 requested at reception and no SMTPUTF8: not sent; every
 *    recipient bounces with 5.6.7 (as Postfix does; RFC 6531 3.4).
 *  - SIZE announced and smaller than the message: not sent; every
 *    recipient bounces with 5.3.4 (RFC 1870).
 * TLS policy: SMTP_TLS_MAY uses STARTTLS when offered and goes on in
 * plaintext only when it is not offered; once offered, a refused STARTTLS
 * or a failed handshake defers (Postfix would retry in plaintext on a new
 * connection; that is left to the caller).  SMTP_TLS_ENCRYPT defers when
 * STARTTLS is missing or fails.  TLS 1.2 or newer; the certificate is not
 * verified at either level (opportunistic / mandatory encryption without
 * authentication, Postfix's "may" and "encrypt").
 *
 * Connection cache (Postfix's smtp_connection_cache_on_demand and
 * smtp_connection_cache_time_limit): a delivery that names a cache and a
 * destination (d->cache, d->dest) leaves its connection open after the
 * transaction when the session is still in a known state: straight after
 * a 2xx to the final dot or a local bounce (nothing to undo), after a
 * 250 to RSET otherwise.  The connection then waits, idle, for the next
 * delivery with the same destination, address, TLS level and EHLO name,
 * for at most the cache's idle time; after that it gets QUIT.  A delivery
 * that finds one sends MAIL at once (no greeting, EHLO or STARTTLS; the
 * EHLO keywords and TLS of the first session still hold).  When the
 * server has closed it meanwhile, or the first reply on it is a lost
 * connection, a timeout or 421, the delivery goes on transparently on a
 * new connection: its callback runs once, as for any delivery.  An idle
 * connection that the server closes, or that sends anything, is closed.
 */

/* EHLO keywords the client understands (struct smtp_ext.flags) */
#define SMTP_EXT_PIPELINING          0x001   /* RFC 2920 */
#define SMTP_EXT_SIZE                0x002   /* RFC 1870 */
#define SMTP_EXT_8BITMIME            0x004   /* RFC 6152 */
#define SMTP_EXT_SMTPUTF8            0x008   /* RFC 6531 */
#define SMTP_EXT_STARTTLS            0x010   /* RFC 3207 */
#define SMTP_EXT_DSN                 0x020   /* RFC 3461 */
#define SMTP_EXT_ENHANCEDSTATUSCODES 0x040   /* RFC 2034 */
#define SMTP_EXT_CHUNKING            0x080   /* RFC 3030 */

struct smtp_ext {
	unsigned flags;          /* SMTP_EXT_* */
	uint64_t size;           /* SIZE limit; 0: none announced */
};

/*
 * smtp_ehlo_line - add what one EHLO reply line announces (its text after
 * "250-", not the first line, which is the server's name) to x.  Unknown
 * keywords are ignored; can't fail.
 */
void smtp_ehlo_line(struct smtp_ext *x, const char *text, size_t len);

#define SMTP_REPLY_TEXT_MAX  512   /* reply text kept (RFC 5321 4.5.3.1.5) */
#define SMTP_REPLY_LINE_MAX  2048  /* a longer reply line is a protocol error */
#define SMTP_REPLY_LINES_MAX 100   /* so is a reply of more lines */

/*
 * A server reply, or the client's own reason when code is 0.  text is the
 * text of every line after its code (enhanced code included), joined by
 * single spaces and cut at SMTP_REPLY_TEXT_MAX - 1 octets.
 */
struct smtp_reply {
	int code;                /* 250, 354, 451, ...; 0: not from the server */
	char status[16];         /* RFC 3463 enhanced code ("5.1.1"), "" if none */
	char text[SMTP_REPLY_TEXT_MAX];
	/* parser state */
	size_t textlen;
	unsigned nlines;
	int done;
};

/*
 * smtp_reply_parse - feed the reply parser one line from p..p+len (a
 * reply may be split anywhere; r keeps the state, and starts a new reply
 * by itself after a complete one).  Returns the octets of the line
 * consumed (CRLF or a bare LF included) and sets r->done when it was the
 * last line; 0 when p holds no complete line yet; -1 when the line is not
 * a reply line (no 3-digit 2xx-5xx code, bad separator, a code different
 * from the first line's), is longer than SMTP_REPLY_LINE_MAX, or is one
 * line too many.  *text and *textlen get that line's text (for EHLO keywords).
 * The enhanced code is taken from the first line when its class matches
 * the reply's (RFC 3463, RFC 2034).
 */
long smtp_reply_parse(struct smtp_reply *r, const char *p, size_t len,
    const char **text, size_t *textlen);

/*
 * Dot-stuffing (RFC 5321 4.5.2) of a message streamed in pieces split
 * anywhere: a '.' at the start of a line (after LF, or first) is doubled;
 * every other byte goes through unchanged.  emit gets slices that are
 * valid only during the call.
 */
struct smtp_dotstuff {
	int bol;                 /* the next byte starts a line */
	int crlf;                /* the stream so far ends with CRLF (or is empty) */
	int cr;                  /* the last byte was CR */
};
typedef void (*smtp_emit_cb)(void *arg, const char *p, size_t len);
/* smtp_dotstuff_init - ready for a new message; can't fail. */
void smtp_dotstuff_init(struct smtp_dotstuff *ds);
/* smtp_dotstuff - stuff len bytes of message; can't fail. */
void smtp_dotstuff(struct smtp_dotstuff *ds, const char *p, size_t len,
    smtp_emit_cb emit, void *arg);
/*
 * smtp_dotstuff_end - the end of data: CRLF first when the message does
 * not end with CRLF (the only byte the client ever adds), then ".\r\n".
 */
void smtp_dotstuff_end(struct smtp_dotstuff *ds, smtp_emit_cb emit, void *arg);

enum smtp_verdict {
	SMTP_VERDICT_DEFERRED,   /* try again later */
	SMTP_VERDICT_SENT,       /* the server took responsibility */
	SMTP_VERDICT_BOUNCED,    /* failed for good */
};

/* smtp_verdict_name - "deferred", "sent", "bounced" (Postfix status=). */
const char *smtp_verdict_name(enum smtp_verdict v);

/*
 * smtp_verdict - one recipient's fate from the reply codes of its
 * transaction: to MAIL, to its RCPT, to DATA and to the final dot, each 0
 * when the session never got it.  The first step that did not succeed
 * decides: 5xx bounces, anything else (4xx, no reply, garbage) defers; a
 * 2xx to the dot is sent.  Can't fail.
 */
enum smtp_verdict smtp_verdict(int mail, int rcpt, int data, int dot);

enum smtp_tls_level {
	SMTP_TLS_NONE,           /* never STARTTLS */
	SMTP_TLS_MAY,            /* STARTTLS when offered (the default) */
	SMTP_TLS_ENCRYPT,        /* STARTTLS or defer */
};

/*
 * smtp_tls_client_ctx_new - a client SSL_CTX for STARTTLS: TLS 1.2 and up,
 * no certificate verification (see above), no compression or
 * renegotiation.  NULL with the reason in err.
 */
SSL_CTX *smtp_tls_client_ctx_new(char *err, size_t errlen);

/* Timeouts in milliseconds; 0 takes Postfix's default (in brackets). */
struct smtp_client_timeouts {
	unsigned connect_ms;     /* TCP connect [30 s, smtp_connect_timeout] */
	unsigned greeting_ms;    /* the 220 greeting [300 s, smtp_helo_timeout] */
	unsigned cmd_ms;         /* each reply to EHLO ... DATA, QUIT [300 s] */
	unsigned data_ms;        /* each write of message data [180 s, smtp_data_xfer_timeout] */
	unsigned dot_ms;         /* the reply to the final dot [600 s, smtp_data_done_timeout] */
};

/* What a cache tells its owner about the connections it sees (metrics). */
enum smtp_conn_event {
	SMTP_CONN_OPEN,          /* a delivery's TCP connection was made */
	SMTP_CONN_CLOSE,         /* one was closed (idle cached ones too) */
};

struct smtp_client_cache_opts {
	unsigned idle_ms;        /* how long a connection may wait; 0: never cached */
	/*
	 * Open connections (idle ones included) of the cache's deliveries;
	 * when a new connection would make more, the oldest idle one is
	 * closed first.  0: no limit.  Active deliveries are never closed.
	 */
	unsigned max_conns;
	void (*event)(void *arg, enum smtp_conn_event ev);   /* NULL: none */
	void (*log)(void *arg, int prio, const char *msg);   /* for idle connections */
	void *arg;
};

struct smtp_client_cache;

/*
 * smtp_client_cache_new - an empty cache on loop (one per loop; not
 * thread-safe).  opts is copied.  0 or -ENOMEM.
 */
int smtp_client_cache_new(uv_loop_t *loop, const struct smtp_client_cache_opts *opts,
    struct smtp_client_cache **out);
/*
 * smtp_client_cache_set_idle - a new idle time for connections cached from
 * now on (a reload); 0 also closes every idle connection now.
 */
void smtp_client_cache_set_idle(struct smtp_client_cache *cc, unsigned idle_ms);
/* smtp_client_cache_idle - idle connections in the cache now. */
size_t smtp_client_cache_idle(const struct smtp_client_cache *cc);
/*
 * smtp_client_cache_free - close every idle connection at once (no QUIT:
 * for shutdown) and free the cache; the close events are emitted before it
 * returns and the hooks are never called again.  Deliveries still running
 * end normally and close their connection instead of caching it.  The
 * handles go in close callbacks: run the loop once more before
 * uv_loop_close.  NULL is a no-op.
 */
void smtp_client_cache_free(struct smtp_client_cache *cc);

/*
 * One transaction to deliver.  Everything pointed to must stay valid until
 * the callback has run.
 */
struct smtp_delivery {
	const struct sockaddr *addr;      /* IPv4 or IPv6, with the port */
	const char *host;                 /* server name for logs and SNI; NULL: the address */
	const char *helo;                 /* our EHLO name */
	enum smtp_tls_level tls;
	SSL_CTX *tls_ctx;                 /* client context (smtp_tls_client_ctx_new); NULL: no TLS */
	const char *path;                 /* the queue file */
	const struct queue_file *qf;      /* its queue_file_read: envelope, signature, size */
	const struct queue_rcpt *rcpt;    /* the recipients for this server (a subset */
	size_t nrcpt;                     /* of qf->env.rcpt, or all of them); >= 1 */
	struct smtp_client_timeouts timeouts;
	int no_pipelining;                /* one command at a time even if offered */
	void (*log)(void *arg, int prio, const char *msg); /* syslog priority; NULL: quiet */
	void *log_arg;
	struct smtp_client_cache *cache;  /* NULL: one connection for this delivery */
	const char *dest;                 /* the next hop ("example.com", relayhost), the
	                                   * cache key with addr; NULL: no caching */
};

struct smtp_rcpt_result {
	enum smtp_verdict verdict;
	/*
	 * What decided it: the server's reply to this RCPT, to MAIL, DATA or
	 * the final dot, or (code 0) the client's reason with a status such
	 * as 4.4.1 (connect failed), 4.4.2 (lost connection, timeout), 4.7.4
	 * / 4.7.5 (TLS), 5.3.4 (SIZE), 5.6.7 (SMTPUTF8).
	 */
	struct smtp_reply reply;
};

/* The outcome; lent to the callback, gone when it returns. */
struct smtp_result {
	int connected;           /* the TCP connection was made */
	int error;               /* 0, or why the session ended early: UV_ETIMEDOUT,
	                          * UV_ECONNREFUSED, ..., UV_EOF (lost connection),
	                          * UV_EPROTO (bad reply or TLS failure), or a
	                          * queue file error (-errno, -EINVAL) */
	const char *stage;       /* where it ended: "connect", "greeting", "EHLO", "HELO",
	                          * "STARTTLS", "MAIL", "RCPT", "DATA", "message", "end of data", "QUIT",
	                          * "done" (all went to the end) */
	char greeting[256];      /* the server's name from its 220 greeting */
	char tls_version[32];    /* "TLSv1.3"; "" without TLS */
	char tls_cipher[64];
	struct smtp_ext ext;     /* from the last EHLO */
	int pipelined;           /* PIPELINING was used */
	int reused;              /* it ran on a cached connection (no greeting, EHLO) */
	int cached;              /* the connection stays open in the cache */
	/*
	 * The reply that ended the transaction for every recipient: a failed
	 * greeting, EHLO/HELO, STARTTLS, MAIL or DATA, or the reply to the
	 * final dot; code 0 with status and text: the client's own reason;
	 * all zero when the recipients' own replies decided.
	 */
	struct smtp_reply reply;
	size_t nrcpt;            /* as d->nrcpt, in the same order */
	const struct smtp_rcpt_result *rcpt;
	size_t nsent, ndeferred, nbounced;
};

typedef void (*smtp_client_cb)(void *arg, const struct smtp_result *res);

/*
 * smtp_client_deliver - run one transaction for d on loop, on a cached
 * connection when d->cache holds one for d->dest and d->addr; cb(arg,
 * result) runs once, from the loop, after the connection is closed or
 * cached, never before this returns.  0, or -EINVAL (no recipient, no address, ENCRYPT without
 * a TLS context, ...) / -ENOMEM / a libuv error, after which cb never runs.
 */
int smtp_client_deliver(uv_loop_t *loop, const struct smtp_delivery *d,
    smtp_client_cb cb, void *arg);

#endif
