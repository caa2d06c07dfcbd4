/*
 * server.c - Signet's inbound SMTP server: listeners, sessions and the
 * session state machine (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
 * SMTPUTF8, CHUNKING, ENHANCEDSTATUSCODES, DSN, STARTTLS and AUTH).
 *
 * One struct smtp_server per worker loop; each opens its own SO_REUSEPORT
 * socket on every listen address.  A session owns one read buffer (rpos /
 * wpos; libuv's alloc_cb lends its free tail), a chain of reply blocks and,
 * under TLS, a memory-BIO TLS session from tls.c.  Input is consumed in
 * order by smtp_process(): command lines go through the command table
 * (smtp_check_* then smtp_do_*), message bytes through the resumable parser
 * of parse.c straight into the spool and the DKIM signer.  At end of data
 * the session waits in SMTP_S_SPOOLING (reading paused) while the signature
 * is made on libuv's thread pool and the queue file is committed; "250"
 * goes out from the commit callback.  Replies are queued and flushed when
 * the input runs dry or a command has to wait, so pipelined commands are
 * answered in order and in batches (RFC 2920).
 *
 * Connection counts (total and per client address) are shared by every
 * worker of the process through one small mutex-protected table.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "smtp/server_int.h"
#include "smtp/smtp_int.h"

#define SMTP_RBUF_CMD     4096          /* read buffer while in commands */
#define SMTP_RBUF_DATA    (64 * 1024)   /* ... while a message streams */
#define SMTP_RBUF_MIN     1024          /* free room handed to a read */
#define SMTP_PROXY_MAX    (16 * 1024)   /* PROXY header we wait for */
#define SMTP_SCRATCH      (64 * 1024)   /* per-server TLS ciphertext reads */
#define SMTP_OUT_HIWAT    (256 * 1024)  /* stop reading while this much waits to go out */
#define SMTP_SPOOL_HIWAT  (8u << 20)    /* spool bytes in flight: pause the client */
#define SMTP_SPOOL_LOWAT  (2u << 20)
#define SMTP_SPOOL_POLL_MS 5
#define SMTP_LINGER_MS    2000          /* read and drop after the last reply */
#define SMTP_WRITE_BUFS   16
#define SMTP_BACKLOG      1024

/* ---- states, commands, sessions --------------------------------------------- */

enum smtp_state {
	SMTP_S_PROXY,      /* waiting for the PROXY header */
	SMTP_S_TLS,        /* TLS handshake (on connect or after STARTTLS) */
	SMTP_S_GREETING,   /* greeted; waiting for EHLO/HELO */
	SMTP_S_HELO,       /* no transaction */
	SMTP_S_MAIL,       /* MAIL accepted */
	SMTP_S_RCPT,       /* at least one RCPT accepted */
	SMTP_S_DATA,       /* message text after 354 */
	SMTP_S_BDAT,       /* a BDAT transaction (between or inside chunks) */
	SMTP_S_AUTH,       /* SASL exchange or password check */
	SMTP_S_SPOOLING,   /* end of data: signing and commit; input paused */
	SMTP_S_QUIT        /* last reply queued; closing */
};

enum smtp_io {
	SMTP_IO_DATAIN,    /* new input in the read buffer */
	SMTP_IO_LOWAT,     /* every queued byte was written */
	SMTP_IO_TIMEOUT,
	SMTP_IO_EOF,
	SMTP_IO_ERROR
};

#define SMTP_PAUSE_WAIT   0x01   /* signing, commit or password check */
#define SMTP_PAUSE_OUTPUT 0x02   /* the client is not reading its replies */
#define SMTP_PAUSE_SPOOL  0x04   /* the spool is behind */

struct smtp_cfgref {
	const struct smtp_config *cfg;
	unsigned refs;
	void (*release)(const struct smtp_config *old);
};

struct smtp_listener {
	uv_tcp_t tcp;
	struct smtp_server *srv;
	struct smtp_listen conf;
	int keep;                       /* reconfigure: still listed */
};

struct smtp_server {
	uv_loop_t *loop;
	struct queue_spool *spool;
	struct smtp_cfgref *cref;       /* for new sessions */
	struct smtp_listener **ls;
	size_t nls;
	struct smtp_session *sessions;
	unsigned nsessions;
	unsigned handles;               /* listeners and the stop timer, not yet closed */
	int stopping, done;
	uv_timer_t stop_timer;
	int stop_timer_open;
	void (*stop_cb)(void *arg);
	void *stop_arg;
	char *scratch;                  /* TLS ciphertext: consumed within read_cb */
};

struct smtp_siginfo {
	char domain[256];
	char selector[128];
	enum dkim_alg alg;
};

/* The message being received: exists from DATA/first BDAT to the final reply. */
struct smtp_msg {
	struct queue_msg *q;            /* NULL once committed or aborted */
	struct dkim_signer *signer;
	char id[QUEUE_ID_LEN + 1];
	struct smtp__data dp;
	uint64_t size;                  /* message octets after unstuffing */
	int toobig;
	int discard;                    /* refused: stop writing */
	int dkim_err;                   /* sticky error of the signer */
	int refused;                    /* the signing-key lookup said no */
	int headers_seen;               /* smtp_on_headers has run */
	char last[2];                   /* the last two octets written */
	char reason[200];
	struct smtp_siginfo sigs[DKIM_MAX_SIGS];
	int nsigs;
	uint64_t t_eod;                 /* uv_hrtime() at end of data */
	int sign_rc;
	char *sig;
	size_t siglen;
};

/* SASL exchange and the password check on the thread pool. */
struct smtp_authreq {
	const struct smtp_authdb *db;
	int mech;                       /* SMTP_AUTH_* */
	int step;
	int ok;
	char user[256];
	char pass[512];
};

#define SMTP_AUTH_PLAIN 1
#define SMTP_AUTH_LOGIN 2
#define SMTP_AUTH_STEP_RESPONSE 1       /* PLAIN: waiting for the response */
#define SMTP_AUTH_STEP_USER 2           /* LOGIN: waiting for the user name */
#define SMTP_AUTH_STEP_PASS 3           /* LOGIN: waiting for the password */
#define SMTP_AUTH_STEP_CHECK 4          /* crypt running */

#define SMTP_NCMD 16

struct smtp_session {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_work_t work;
	uv_shutdown_t sreq;
	struct smtp_server *srv;
	struct smtp_session *prev, *next;
	struct smtp_cfgref *cref;
	const struct smtp_config *cfg;
	int l_tls, l_proxy;             /* the listener's options */

	enum smtp_state state;
	unsigned pause;                 /* SMTP_PAUSE_* */
	unsigned handles;               /* open: tcp, timer */
	unsigned busy;                  /* thread-pool work or commit in flight */
	unsigned closing : 1, reading : 1, writing : 1, in_process : 1,
	    quit : 1, lingering : 1, eof : 1, greeted : 1, esmtp : 1,
	    in_chunk : 1, chunk_last : 1, skip_line : 1, slot_total : 1,
	    slot_client : 1, on_list : 1;

	/* input */
	char *rbuf;
	size_t rcap, rpos, wpos;
	uint64_t skip;                  /* octets of a refused BDAT chunk to drop */
	uint64_t chunk_left;

	/* output */
	struct smtp__ochain reply, wire;
	struct smtp__oblock *inflight;

	struct smtp__tls *tls;

	/* the client */
	struct sockaddr_storage peer, client;
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	char env_addr[INET6_ADDRSTRLEN + 2];    /* "ip" or "[ipv6]" */
	unsigned char limit_key[17];
	char helo[SMTP__DOMAIN_MAX + 1];
	char *auth_user;
	struct smtp_authreq *auth;

	/* counters */
	unsigned errors, junk;
	int cmd_code;                   /* first reply code of the current command */
	unsigned short ncmd[SMTP_NCMD + 1], nok[SMTP_NCMD + 1];
	uint64_t progress;              /* uv_now() of the last useful step */

	/* the transaction */
	struct queue_envelope env;      /* mail_from, envid, ret, flags, rcpts */
	size_t rcpt_cap;
	unsigned rcpt_tried;
	int have_mail;
	uint64_t size_decl;
	struct smtp_msg *msg;
};

typedef int (*smtp_check_fn)(struct smtp_session *, struct smtp__slice);
typedef void (*smtp_cmd_fn)(struct smtp_session *, struct smtp__slice);

#define SMTP_CMD_JUNK    0x01    /* counts toward smtpd_junk_command_limit */
#define SMTP_CMD_IN_BDAT 0x02    /* allowed between BDAT chunks */

struct smtp_cmd {
	const char *name;
	int flags;
	smtp_check_fn check;     /* wrong state: reply 503 and return -1 */
	smtp_cmd_fn fn;
};

static const char *smtp_cmd_name(size_t i);

static void smtp_on_event(struct smtp_session *, enum smtp_io, long);
static void smtp_process(struct smtp_session *);
static void smtp_flush(struct smtp_session *);
static void smtp_close(struct smtp_session *, const char *);
static void smtp_close_after_write(struct smtp_session *);
static void smtp_resume(struct smtp_session *, unsigned);
static void smtp_reading(struct smtp_session *);
static void smtp_timer_arm(struct smtp_session *);
static void smtp_msg_eod(struct smtp_session *);
static void smtp_server_maybe_done(struct smtp_server *);
static void smtp_stop_session(struct smtp_session *, int);
static int smtp_reply(struct smtp_session *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- small helpers -------------------------------------------------------- */

/* smtp_xstrdup - strdup that aborts on OOM. */
static char *
smtp_xstrdup(const char *z)
{
	char *p = strdup(z);

	if (p == NULL)
		abort();
	return p;
}

static void *
smtp_xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);

	if (p == NULL)
		abort();
	return p;
}

static const char *
smtp_strstate(enum smtp_state st)
{
	switch (st) {
	case SMTP_S_PROXY: return "PROXY";
	case SMTP_S_TLS: return "TLS";
	case SMTP_S_GREETING: return "GREETING";
	case SMTP_S_HELO: return "HELO";
	case SMTP_S_MAIL: return "MAIL";
	case SMTP_S_RCPT: return "RCPT";
	case SMTP_S_DATA: return "DATA";
	case SMTP_S_BDAT: return "BDAT";
	case SMTP_S_AUTH: return "AUTH";
	case SMTP_S_SPOOLING: return "SPOOLING";
	case SMTP_S_QUIT: return "QUIT";
	}
	return "?";
}

static const char *
smtp_hostname(const struct smtp_config *cfg)
{
	return cfg->hostname != NULL && cfg->hostname[0] != '\0' ? cfg->hostname : "localhost";
}

static void
smtp_vlog(const struct smtp_config *cfg, int prio, const char *fmt, va_list ap)
{
	char buf[2048];

	if (cfg == NULL || cfg->log == NULL)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	cfg->log(cfg->arg, prio, buf);
}

static void smtp_cfg_log(const struct smtp_config *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void
smtp_cfg_log(const struct smtp_config *cfg, int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	smtp_vlog(cfg, prio, fmt, ap);
	va_end(ap);
}

static void smtp_log(struct smtp_session *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void
smtp_log(struct smtp_session *s, int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	smtp_vlog(s->cfg, prio, fmt, ap);
	va_end(ap);
}

static void
smtp_event(struct smtp_session *s, enum smtp_event ev, double v, const char *label)
{
	if (s->cfg->event != NULL)
		s->cfg->event(s->cfg->arg, ev, v, label);
}

static unsigned
smtp_limit_or(unsigned v, unsigned dflt)
{
	return v != 0 ? v : dflt;
}

/* smtp_set_client - the address the session is about (after PROXY). */
static void
smtp_set_client(struct smtp_session *s, const struct sockaddr_storage *ss)
{
	const void *a;

	s->client = *ss;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		a = &in6->sin6_addr;
		s->port = ntohs(in6->sin6_port);
	} else {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;

		a = &in4->sin_addr;
		s->port = ntohs(in4->sin_port);
	}
	if (ss->ss_family != AF_INET && ss->ss_family != AF_INET6) {
		snprintf(s->ip, sizeof(s->ip), "unknown");
		s->port = 0;
	} else if (inet_ntop(ss->ss_family, a, s->ip, sizeof(s->ip)) == NULL)
		snprintf(s->ip, sizeof(s->ip), "unknown");
	if (ss->ss_family == AF_INET6)
		snprintf(s->env_addr, sizeof(s->env_addr), "[%s]", s->ip);
	else
		snprintf(s->env_addr, sizeof(s->env_addr), "%s", s->ip);
}

/* smtp_proto - RFC 3848 protocol name for Received: and the logs. */
static const char *
smtp_proto(const struct smtp_session *s)
{
	if (!s->esmtp)
		return "SMTP";
	if (s->tls != NULL)
		return s->auth_user != NULL ? "ESMTPSA" : "ESMTPS";
	return s->auth_user != NULL ? "ESMTPA" : "ESMTP";
}

/* smtp_in_tx - a transaction (or an exchange) the server lets finish on stop. */
static int
smtp_in_tx(const struct smtp_session *s)
{
	switch (s->state) {
	case SMTP_S_MAIL:
	case SMTP_S_RCPT:
	case SMTP_S_DATA:
	case SMTP_S_BDAT:
	case SMTP_S_AUTH:
	case SMTP_S_SPOOLING:
		return 1;
	default:
		return 0;
	}
}

static int
smtp_relay_ok(const struct smtp_session *s)
{
	return s->auth_user != NULL ||
	    smtp_netlist_match(s->cfg->mynetworks, (const struct sockaddr *)&s->client);
}

/* ---- per-node connection counts (shared by every worker) ---------------------- */

struct smtp_limit_ent {
	struct smtp_limit_ent *next;
	unsigned char key[17];
	unsigned count;
};

#define SMTP_LIMIT_BUCKETS 1024

static pthread_mutex_t smtp_limit_mu = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_limit_ent *smtp_limit_tab[SMTP_LIMIT_BUCKETS];
static unsigned smtp_limit_total;

/* smtp_limit_key - family byte + 16 address bytes. */
static void
smtp_limit_key(const struct sockaddr_storage *ss, unsigned char key[17])
{
	memset(key, 0, 17);
	key[0] = (unsigned char)ss->ss_family;
	if (ss->ss_family == AF_INET)
		memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	else if (ss->ss_family == AF_INET6)
		memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
}

static unsigned
smtp_limit_hash(const unsigned char key[17])
{
	uint32_t h = 2166136261u;
	int i;

	for (i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % SMTP_LIMIT_BUCKETS;
}

/* smtp_limit_total_get - one more connection unless max (0: none) is reached. */
static int
smtp_limit_total_get(unsigned max)
{
	int rc = 0;

	pthread_mutex_lock(&smtp_limit_mu);
	if (max != 0 && smtp_limit_total >= max)
		rc = -1;
	else
		smtp_limit_total++;
	pthread_mutex_unlock(&smtp_limit_mu);
	return rc;
}

static void
smtp_limit_total_put(void)
{
	pthread_mutex_lock(&smtp_limit_mu);
	smtp_limit_total--;
	pthread_mutex_unlock(&smtp_limit_mu);
}

/* smtp_limit_client_get - one more from this address unless max is reached. */
static int
smtp_limit_client_get(const unsigned char key[17], unsigned max)
{
	struct smtp_limit_ent *e;
	unsigned h = smtp_limit_hash(key);
	int rc = 0;

	pthread_mutex_lock(&smtp_limit_mu);
	for (e = smtp_limit_tab[h]; e != NULL; e = e->next)
		if (memcmp(e->key, key, 17) == 0)
			break;
	if (e == NULL) {
		e = smtp_xcalloc(1, sizeof(*e));
		memcpy(e->key, key, 17);
		e->next = smtp_limit_tab[h];
		smtp_limit_tab[h] = e;
	}
	if (max != 0 && e->count >= max)
		rc = -1;
	else
		e->count++;
	pthread_mutex_unlock(&smtp_limit_mu);
	return rc;
}

static void
smtp_limit_client_put(const unsigned char key[17])
{
	struct smtp_limit_ent **pp, *e;

	pthread_mutex_lock(&smtp_limit_mu);
	for (pp = &smtp_limit_tab[smtp_limit_hash(key)]; (e = *pp) != NULL; pp = &e->next)
		if (memcmp(e->key, key, 17) == 0) {
			if (--e->count == 0) {
				*pp = e->next;
				free(e);
			}
			break;
		}
	pthread_mutex_unlock(&smtp_limit_mu);
}

/* ---- configuration references ----------------------------------------------- */

static struct smtp_cfgref *
smtp_cfgref_new(const struct smtp_config *cfg)
{
	struct smtp_cfgref *r = smtp_xcalloc(1, sizeof(*r));

	r->cfg = cfg;
	r->refs = 1;
	return r;
}

static void
smtp_cfgref_drop(struct smtp_cfgref *r)
{
	if (r == NULL || --r->refs > 0)
		return;
	if (r->release != NULL)
		r->release(r->cfg);
	free(r);
}

/* ---- state ------------------------------------------------------------------- */

/* smtp_enter_state - the only writer of s->state. */
static void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	if (s->state == st)
		return;
	smtp_log(s, LOG_DEBUG, "[%s]:%u: %s -> %s", s->ip, s->port,
	    smtp_strstate(s->state), smtp_strstate(st));
	s->state = st;
}

/* smtp_progress - the client did something useful (idle timeout). */
static void
smtp_progress(struct smtp_session *s)
{
	s->progress = uv_now(s->srv->loop);
}

/* ---- output -------------------------------------------------------------------- */

static int
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	int code;

	if (s->closing || s->quit)
		return 0;
	va_start(ap, fmt);
	code = smtp__reply_vadd(&s->reply, fmt, ap);
	va_end(ap);
	if (s->cmd_code == 0)
		s->cmd_code = code;
	/* smtpd_hard_error_limit: 4xx/5xx, but not 421 nor 452 (flow control) */
	if (code >= 400 && code != 421 && code != 452)
		s->errors++;
	return code;
}

/* smtp_reply_quit - a last reply (421, 221), then close once it is out. */
static void smtp_reply_quit(struct smtp_session *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
static void
smtp_reply_quit(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;
	int code;

	if (s->closing || s->quit)
		return;
	va_start(ap, fmt);
	code = smtp__reply_vadd(&s->reply, fmt, ap);
	va_end(ap);
	if (s->cmd_code == 0)
		s->cmd_code = code;
	smtp_close_after_write(s);
}

static void
smtp_write_cb(uv_write_t *req, int status)
{
	struct smtp_session *s = req->data;

	smtp__oblock_free_list(s->inflight);
	s->inflight = NULL;
	s->writing = 0;
	if (s->closing)
		return;
	if (status < 0) {
		smtp_on_event(s, SMTP_IO_ERROR, status);
		return;
	}
	if (s->wire.bytes > 0) {
		smtp_flush(s);
		return;
	}
	smtp_on_event(s, SMTP_IO_LOWAT, 0);
}

/* smtp_write - start writing the wire chain unless a write is in flight. */
static void
smtp_write(struct smtp_session *s)
{
	uv_buf_t bufs[SMTP_WRITE_BUFS];
	unsigned n;
	int rc;

	if (s->writing || s->closing || s->wire.bytes == 0)
		return;
	s->inflight = smtp__ochain_take(&s->wire, bufs, SMTP_WRITE_BUFS, &n);
	s->writing = 1;
	s->wreq.data = s;
	if ((rc = uv_write(&s->wreq, (uv_stream_t *)&s->tcp, bufs, n, smtp_write_cb)) < 0) {
		s->writing = 0;
		smtp__oblock_free_list(s->inflight);
		s->inflight = NULL;
		smtp_close(s, uv_strerror(rc));
	}
}

/*
 * smtp_flush - queued replies go out: as they are, or through TLS (one
 * record per block, so a pipelined batch is one record).
 */
static void
smtp_flush(struct smtp_session *s)
{
	struct smtp__oblock *b;

	if (s->closing)
		return;
	if (s->reply.bytes > 0) {
		if (s->tls != NULL) {
			for (b = s->reply.head; b != NULL; b = b->next)
				if (smtp__tls_write(s->tls, b->data, b->len) < 0) {
					smtp__ochain_reset(&s->reply);
					smtp_close(s, "TLS write error");
					return;
				}
			smtp__ochain_reset(&s->reply);
		} else
			smtp__ochain_move(&s->wire, &s->reply);
	}
	smtp_write(s);
}

/* ---- closing -------------------------------------------------------------------- */

static void
smtp_msg_free(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;

	if (m == NULL)
		return;
	queue_msg_abort(m->q);
	dkim_signer_free(m->signer);
	free(m->sig);
	free(m);
	s->msg = NULL;
}

static void
smtp_auth_free(struct smtp_session *s)
{
	if (s->auth == NULL)
		return;
	OPENSSL_cleanse(s->auth, sizeof(*s->auth));
	free(s->auth);
	s->auth = NULL;
}

static void
smtp_tx_reset(struct smtp_session *s)
{
	queue_envelope_free(&s->env);
	memset(&s->env, 0, sizeof(s->env));
	s->rcpt_cap = 0;
	s->rcpt_tried = 0;
	s->have_mail = 0;
	s->size_decl = 0;
	s->in_chunk = 0;
	s->chunk_left = 0;
	s->chunk_last = 0;
	smtp_msg_free(s);
}

/* smtp_session_free - both handles closed and nothing in flight. */
static void
smtp_session_free(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;

	if (s->handles > 0 || s->busy > 0)
		return;
	smtp_tx_reset(s);
	smtp_auth_free(s);
	if (s->tls != NULL)
		smtp__tls_free(s->tls);
	smtp__ochain_reset(&s->reply);
	smtp__ochain_reset(&s->wire);
	smtp__oblock_free_list(s->inflight);
	free(s->rbuf);
	free(s->auth_user);
	if (s->on_list) {
		if (s->prev != NULL)
			s->prev->next = s->next;
		else
			srv->sessions = s->next;
		if (s->next != NULL)
			s->next->prev = s->prev;
		srv->nsessions--;
	}
	smtp_cfgref_drop(s->cref);
	free(s);
	smtp_server_maybe_done(srv);
}

static void
smtp_handle_closed(uv_handle_t *h)
{
	struct smtp_session *s = h->data;

	s->handles--;
	smtp_session_free(s);
}

/* smtp_disconnect_log - Postfix-style "disconnect from ... ehlo=1 mail=1 ...". */
static void
smtp_disconnect_log(struct smtp_session *s, const char *why)
{
	char buf[512];
	size_t i, n = 0;
	unsigned all = 0, ok = 0;

	buf[0] = '\0';
	for (i = 0; i <= SMTP_NCMD && n < sizeof(buf) - 40; i++) {
		const char *name = smtp_cmd_name(i);
		char lname[16];
		size_t k;

		if (s->ncmd[i] == 0)
			continue;
		for (k = 0; name[k] != '\0' && k < sizeof(lname) - 1; k++)
			lname[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
		lname[k] = '\0';
		if (s->nok[i] == s->ncmd[i])
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s=%u", lname, s->ncmd[i]);
		else
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s=%u/%u", lname,
			    s->nok[i], s->ncmd[i]);
		all += s->ncmd[i];
		ok += s->nok[i];
	}
	if (all == ok)
		snprintf(buf + n, sizeof(buf) - n, " commands=%u", all);
	else
		snprintf(buf + n, sizeof(buf) - n, " commands=%u/%u", ok, all);
	smtp_log(s, LOG_INFO, "disconnect from [%s]:%u%s%s%s (sessions %u)", s->ip, s->port,
	    buf, why != NULL ? " reason=" : "", why != NULL ? why : "",
	    s->srv->nsessions - 1);
}

/* smtp_close - close now (pending output is dropped). */
static void
smtp_close(struct smtp_session *s, const char *why)
{
	if (s->closing)
		return;
	s->closing = 1;
	smtp_disconnect_log(s, why);
	smtp_event(s, SMTP_EV_CONN_CLOSE, 1, NULL);
	if (s->slot_total)
		smtp_limit_total_put();
	if (s->slot_client)
		smtp_limit_client_put(s->limit_key);
	s->slot_total = s->slot_client = 0;
	if (s->reading)
		uv_read_stop((uv_stream_t *)&s->tcp);
	s->reading = 0;
	uv_timer_stop(&s->timer);
	uv_close((uv_handle_t *)&s->tcp, smtp_handle_closed);
	uv_close((uv_handle_t *)&s->timer, smtp_handle_closed);
}

static void
smtp_shutdown_cb(uv_shutdown_t *req, int status)
{
	struct smtp_session *s = req->data;

	if (s->closing)
		return;
	if (status < 0 || s->eof)
		smtp_close(s, NULL);
}

/*
 * smtp_linger - every reply is out: send FIN, then read and drop whatever
 * the client still sends for a moment, so that closing does not turn into
 * an RST that could destroy our last reply in the client's buffers.
 */
static void
smtp_linger(struct smtp_session *s)
{
	int rc;

	if (s->closing || s->lingering)
		return;
	if (s->eof) {
		smtp_close(s, NULL);
		return;
	}
	s->lingering = 1;
	s->rpos = s->wpos = 0;
	s->sreq.data = s;
	if ((rc = uv_shutdown(&s->sreq, (uv_stream_t *)&s->tcp, smtp_shutdown_cb)) < 0) {
		smtp_close(s, NULL);
		return;
	}
	smtp_timer_arm(s);
	smtp_reading(s);
}

/* smtp_close_after_write - no more input; close once the output is gone. */
static void
smtp_close_after_write(struct smtp_session *s)
{
	if (s->closing || s->quit)
		return;
	s->quit = 1;
	smtp_enter_state(s, SMTP_S_QUIT);
	if (s->tls != NULL && smtp__tls_ready(s->tls)) {
		smtp_flush(s);
		if (s->closing)
			return;
		smtp__tls_shutdown(s->tls);
	}
	smtp_flush(s);
	if (s->closing)
		return;
	if (!s->writing && s->wire.bytes == 0)
		smtp_linger(s);
	else
		smtp_timer_arm(s);      /* a client that never reads is dropped */
}

/* ---- reading, pausing, timers -------------------------------------------------- */

/* smtp_rbuf_reserve - at least min free octets at the tail of the read buffer. */
static void
smtp_rbuf_reserve(struct smtp_session *s, size_t min)
{
	size_t want = (s->state == SMTP_S_DATA || s->state == SMTP_S_BDAT) ?
	    SMTP_RBUF_DATA : SMTP_RBUF_CMD;
	size_t used = s->wpos - s->rpos;
	char *nb;

	if (s->rbuf != NULL && s->rcap - s->wpos >= min && s->rcap >= want)
		return;
	if (s->rpos > 0) {
		memmove(s->rbuf, s->rbuf + s->rpos, used);
		s->rpos = 0;
		s->wpos = used;
	}
	if (s->rbuf != NULL && s->rcap - s->wpos >= min && s->rcap >= want)
		return;
	if (want < used + min)
		want = used + min;
	if (want < s->rcap)
		want = s->rcap;
	if ((nb = realloc(s->rbuf, want)) == NULL)
		abort();
	s->rbuf = nb;
	s->rcap = want;
}

/* smtp_rbuf_tidy - an idle session keeps no read buffer. */
static void
smtp_rbuf_tidy(struct smtp_session *s)
{
	if (s->rpos < s->wpos)
		return;
	s->rpos = s->wpos = 0;
	if (s->state != SMTP_S_DATA && s->state != SMTP_S_BDAT && s->rbuf != NULL) {
		free(s->rbuf);
		s->rbuf = NULL;
		s->rcap = 0;
	}
}

static void
smtp_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct smtp_session *s = h->data;

	if (s->tls != NULL || s->lingering) {
		*buf = uv_buf_init(s->srv->scratch, SMTP_SCRATCH);
		return;
	}
	smtp_rbuf_reserve(s, SMTP_RBUF_MIN);
	*buf = uv_buf_init(s->rbuf + s->wpos, (unsigned int)(s->rcap - s->wpos));
}

static void
smtp_tls_ready_check(struct smtp_session *s)
{
	if (s->state != SMTP_S_TLS || !smtp__tls_ready(s->tls))
		return;
	smtp_log(s, LOG_INFO, "TLS connection established from [%s]:%u: %s with cipher %s",
	    s->ip, s->port, smtp__tls_version(s->tls), smtp__tls_cipher(s->tls));
	smtp_progress(s);
	smtp_enter_state(s, SMTP_S_GREETING);
	if (!s->greeted) {
		s->greeted = 1;
		smtp_reply(s, "220 %s ESMTP Signet", smtp_hostname(s->cfg));
	}
}

static void
smtp_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct smtp_session *s = st->data;
	char err[256];

	if (nread == 0 || s->closing)
		return;
	if (nread < 0) {
		smtp_on_event(s, nread == UV_EOF ? SMTP_IO_EOF : SMTP_IO_ERROR, (long)nread);
		return;
	}
	smtp_event(s, SMTP_EV_BYTES_IN, (double)nread, NULL);
	if (s->lingering)
		return;
	if (s->tls != NULL) {
		err[0] = '\0';
		if (smtp__tls_feed(s->tls, buf->base, (size_t)nread, err, sizeof(err)) < 0) {
			smtp_log(s, LOG_INFO, "TLS error from [%s]:%u: %s", s->ip, s->port,
			    err[0] != '\0' ? err : "handshake failed");
			s->quit = 1;       /* the alert (if any) is the last thing sent */
			smtp_enter_state(s, SMTP_S_QUIT);
			smtp_flush(s);
			if (!s->closing && !s->writing && s->wire.bytes == 0)
				smtp_linger(s);
			return;
		}
		smtp_tls_ready_check(s);
	} else
		s->wpos += (size_t)nread;
	smtp_on_event(s, SMTP_IO_DATAIN, (long)nread);
}

/* smtp_reading - read exactly when the session can use input. */
static void
smtp_reading(struct smtp_session *s)
{
	int want = !s->closing && !s->eof && (s->lingering || (s->pause == 0 && !s->quit));

	if (want && !s->reading) {
		if (uv_read_start((uv_stream_t *)&s->tcp, smtp_alloc_cb, smtp_read_cb) == 0)
			s->reading = 1;
	} else if (!want && s->reading) {
		uv_read_stop((uv_stream_t *)&s->tcp);
		s->reading = 0;
	}
}

static void
smtp_pause(struct smtp_session *s, unsigned why)
{
	s->pause |= why;
	if (!s->in_process) {
		smtp_reading(s);
		smtp_timer_arm(s);
	}
}

static void
smtp_resume(struct smtp_session *s, unsigned why)
{
	s->pause &= ~why;
	if (s->in_process || s->closing)
		return;
	smtp_timer_arm(s);
	smtp_process(s);
}

static void
smtp_timer_cb(uv_timer_t *t)
{
	struct smtp_session *s = t->data;

	if (s->closing)
		return;
	if (s->lingering) {
		smtp_close(s, NULL);
		return;
	}
	if (s->pause & SMTP_PAUSE_SPOOL) {
		if (s->msg == NULL || s->msg->q == NULL ||
		    queue_msg_pending(s->msg->q) <= SMTP_SPOOL_LOWAT)
			smtp_resume(s, SMTP_PAUSE_SPOOL);
		else
			uv_timer_start(&s->timer, smtp_timer_cb, SMTP_SPOOL_POLL_MS, 0);
		return;
	}
	smtp_on_event(s, SMTP_IO_TIMEOUT, 0);
}

/* smtp_timer_arm - the timeout that applies now, from now. */
static void
smtp_timer_arm(struct smtp_session *s)
{
	const struct smtp_config *cfg = s->cfg;
	uint64_t ms, now, idle;

	if (s->closing)
		return;
	if (s->lingering) {
		uv_timer_start(&s->timer, smtp_timer_cb, SMTP_LINGER_MS, 0);
		return;
	}
	if (s->pause & SMTP_PAUSE_SPOOL) {
		uv_timer_start(&s->timer, smtp_timer_cb, SMTP_SPOOL_POLL_MS, 0);
		return;
	}
	if (s->pause & SMTP_PAUSE_WAIT) {
		/* our turn, not the client's */
		uv_timer_stop(&s->timer);
		return;
	}
	if (s->state == SMTP_S_DATA || (s->state == SMTP_S_BDAT && s->in_chunk))
		ms = 1000ull * smtp_limit_or(cfg->data_timeout_s, 300);
	else
		ms = 1000ull * smtp_limit_or(cfg->cmd_timeout_s, 300);
	if (cfg->idle_timeout_s != 0 && !s->quit) {
		now = uv_now(s->srv->loop);
		idle = s->progress + 1000ull * cfg->idle_timeout_s;
		if (idle <= now)
			ms = 1;
		else if (idle - now < ms)
			ms = idle - now;
	}
	uv_timer_start(&s->timer, smtp_timer_cb, ms, 0);
}

/* ---- the message: spool and signer --------------------------------------------- */

/* smtp_on_headers - the header block is in: pick keys by the From domain. */
static int
smtp_on_headers(void *arg, struct dkim_signer *sg, const char *from_domain)
{
	struct smtp_session *s = arg;
	struct smtp_msg *m = s->msg;
	const struct smtp_config *cfg = s->cfg;
	struct dkim_sign_params sp[DKIM_MAX_SIGS];
	struct smtp_sign_request rq;
	char reason[sizeof(m->reason)];
	int n, i, rc = 0;

	m->headers_seen = 1;
	if (cfg->sign_lookup == NULL)
		return 0;
	memset(sp, 0, sizeof(sp));
	memset(&rq, 0, sizeof(rq));
	rq.from_domain = from_domain;
	rq.auth_user = s->auth_user;
	rq.client = (const struct sockaddr *)&s->client;
	rq.queue_id = m->id;
	reason[0] = '\0';
	n = cfg->sign_lookup(cfg->arg, &rq, sp, DKIM_MAX_SIGS, reason, sizeof(reason));
	if (n < 0) {
		size_t k;

		m->refused = 1;
		snprintf(m->reason, sizeof(m->reason), "%s",
		    reason[0] != '\0' ? reason : "Message refused by signing policy");
		for (k = 0; m->reason[k] != '\0'; k++)
			if ((unsigned char)m->reason[k] < 32)
				m->reason[k] = ' ';
		return DKIM_EINVAL;
	}
	if (n > DKIM_MAX_SIGS)
		n = DKIM_MAX_SIGS;
	for (i = 0; i < n; i++) {
		if (rc == 0 && (rc = dkim_signer_add(sg, &sp[i])) == 0 && m->nsigs < DKIM_MAX_SIGS) {
			struct smtp_siginfo *si = &m->sigs[m->nsigs++];

			snprintf(si->domain, sizeof(si->domain), "%s", sp[i].domain ? sp[i].domain : "");
			snprintf(si->selector, sizeof(si->selector), "%s",
			    sp[i].selector ? sp[i].selector : "");
			si->alg = sp[i].alg;
		}
		dkim_key_free(sp[i].key);
	}
	if (rc != 0)
		smtp_log(s, LOG_ERR, "%s: cannot add a signature: %s", m->id, dkim_strerror(rc));
	return rc;
}

/* smtp_msg_out - message octets from the parser: to the spool and the signer. */
static void
smtp_msg_out(void *arg, const char *p, size_t len)
{
	struct smtp_session *s = arg;
	struct smtp_msg *m = s->msg;
	uint64_t limit = s->cfg->message_size_limit;
	int rc;

	m->size += len;
	if (limit != 0 && m->size > limit)
		m->toobig = 1;
	if (m->discard || m->toobig)
		return;
	queue_msg_write(m->q, p, len);
	if (len >= 2) {
		m->last[0] = p[len - 2];
		m->last[1] = p[len - 1];
	} else {
		m->last[0] = m->last[1];
		m->last[1] = p[0];
	}
	if (m->dkim_err == 0 && (rc = dkim_signer_write(m->signer, p, len)) != 0)
		m->dkim_err = rc;
}

/*
 * smtp_msg_end_headers - the message ended inside its header block (no
 * empty line, no body).  End the block for the signer here, on the loop, so
 * that the key lookup never runs on the thread pool from inside
 * dkim_signer_finish.  An absent body is an empty body (RFC 6376 3.4.3,
 * 3.4.4): what gets signed does not change.
 */
static void
smtp_msg_end_headers(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;
	int crlf = m->size == 0 || (m->last[0] == '\r' && m->last[1] == '\n');
	int rc;

	if (m->headers_seen || m->discard || m->dkim_err != 0)
		return;
	if ((rc = dkim_signer_write(m->signer, "\r\n\r\n", crlf ? 2 : 4)) != 0)
		m->dkim_err = rc;
}

/* smtp_msg_refusing - the message will be refused: stop writing it at once. */
static int
smtp_msg_refusing(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;
	int bad = m->toobig || m->dkim_err != 0 || (m->dp.flags & SMTP__DATA_F_LONG) ||
	    ((m->dp.flags & SMTP__DATA_F_BARE) && m->dp.bare == SMTP_BARE_REJECT);

	if (bad && !m->discard) {
		m->discard = 1;
		queue_msg_abort(m->q);
		m->q = NULL;
	}
	return bad;
}

/* smtp_msg_start - DATA or the first BDAT: queue file, signer, parser. */
static int
smtp_msg_start(struct smtp_session *s, int raw)
{
	struct smtp_msg *m = smtp_xcalloc(1, sizeof(*m));
	struct queue_envelope e = s->env;
	int rc;

	e.helo = s->helo;
	e.client_addr = s->env_addr;
	e.auth_user = s->auth_user;
	e.arrival = time(NULL);
	if ((rc = queue_msg_new(s->srv->spool, &e, &m->q)) < 0) {
		smtp_log(s, LOG_ERR, "[%s]:%u: cannot create a queue file: %s", s->ip, s->port,
		    strerror(-rc));
		free(m);
		return rc;
	}
	snprintf(m->id, sizeof(m->id), "%s", queue_msg_id(m->q));
	if ((m->signer = dkim_signer_new()) == NULL) {
		queue_msg_abort(m->q);
		free(m);
		return -ENOMEM;
	}
	dkim_signer_on_headers(m->signer, smtp_on_headers, s);
	smtp__data_init(&m->dp, raw, s->cfg->bare_newline);
	s->msg = m;
	if (s->auth_user != NULL)
		smtp_log(s, LOG_INFO, "%s: client=[%s]:%u, sasl_username=%s", m->id, s->ip,
		    s->port, s->auth_user);
	else
		smtp_log(s, LOG_INFO, "%s: client=[%s]:%u", m->id, s->ip, s->port);
	return 0;
}

/*
 * smtp_reject - a refusal with its log line (Postfix "reject:") and event:
 * stage is "RCPT", "MAIL", "END-OF-MESSAGE"...; label names the reason for
 * the metrics.
 */
static void smtp_reject(struct smtp_session *, const char *, const char *,
    const char *, const char *, ...) __attribute__((format(printf, 5, 6)));
static void
smtp_reject(struct smtp_session *s, const char *stage, const char *label,
    const char *rcpt, const char *fmt, ...)
{
	char line[SMTP__CMD_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	smtp_reply(s, "%s", line);
	smtp_log(s, LOG_INFO, "%s%sreject: %s from [%s]:%u: %s; from=<%s>%s%s%s proto=%s helo=<%s>",
	    s->msg != NULL ? s->msg->id : "", s->msg != NULL ? ": " : "", stage, s->ip,
	    s->port, line, s->env.mail_from != NULL ? s->env.mail_from : "",
	    rcpt != NULL ? " to=<" : "", rcpt != NULL ? rcpt : "", rcpt != NULL ? ">" : "",
	    smtp_proto(s), s->helo);
	smtp_event(s, SMTP_EV_REJECTED, 1, label);
}

/* smtp_msg_done - the final reply is queued: back to commands. */
static void
smtp_msg_done(struct smtp_session *s)
{
	smtp_tx_reset(s);
	smtp_enter_state(s, SMTP_S_HELO);
	smtp_progress(s);
	if (s->srv->stopping)
		smtp_stop_session(s, 0);
	if (s->pause & SMTP_PAUSE_WAIT)
		smtp_resume(s, SMTP_PAUSE_WAIT);
}

/*
 * smtp_msg_verdict - a refusal decided before signing, or 0.  Size first
 * (the client can fix it), then the framing problems, then the policy.
 */
static int
smtp_msg_verdict(struct smtp_session *s, const char *stage)
{
	struct smtp_msg *m = s->msg;

	if (!smtp_msg_refusing(s))
		return 0;
	if (m->toobig)
		smtp_reject(s, stage, "size", NULL, "552 5.3.4 Error: message file too big");
	else if ((m->dp.flags & SMTP__DATA_F_BARE) && m->dp.bare == SMTP_BARE_REJECT)
		smtp_reject(s, stage, "bare_newline", NULL,
		    "550 5.5.2 Message contains bare CR or LF");
	else if (m->dp.flags & SMTP__DATA_F_LONG)
		smtp_reject(s, stage, "line_length", NULL,
		    "554 5.5.2 Message has a text line longer than 1000 octets (RFC 5321 4.5.3.1.6)");
	else if (m->refused)
		smtp_reject(s, stage, "sign_refused", NULL, "550 5.7.1 %s", m->reason);
	else if (m->dkim_err == DKIM_EHEADER_TOO_BIG)
		smtp_reject(s, stage, "header", NULL, "552 5.3.4 Message header too big");
	else if (m->dkim_err == DKIM_EBADHEADER)
		smtp_reject(s, stage, "header", NULL, "550 5.6.0 Malformed message header");
	else
		smtp_reject(s, stage, "sign_error", NULL, "451 4.3.0 Error: signing failed: %s",
		    dkim_strerror(m->dkim_err));
	return 1;
}

/* smtp_received - the trace field (RFC 5321 4.4) for the S record. */
static int
smtp_received(struct smtp_session *s, char *out, size_t outlen)
{
	char date[40], lit[INET6_ADDRSTRLEN + 8];
	int n;

	smtp__rfc5322_date(time(NULL), date, sizeof(date));
	if (s->client.ss_family == AF_INET6)
		snprintf(lit, sizeof(lit), "[IPv6:%s]", s->ip);
	else
		snprintf(lit, sizeof(lit), "[%s]", s->ip);
	n = snprintf(out, outlen, "Received: from %s (%s)\r\n", s->helo, lit);
	if (n < 0 || (size_t)n >= outlen / 2)
		return -1;
	if (s->tls != NULL)
		n += snprintf(out + n, outlen - (size_t)n, "\t(using %s with cipher %s)\r\n",
		    smtp__tls_version(s->tls), smtp__tls_cipher(s->tls));
	n += snprintf(out + n, outlen - (size_t)n, "\tby %s (Signet) with %s id %s",
	    smtp_hostname(s->cfg), smtp_proto(s), s->msg->id);
	if (s->env.nrcpt == 1)
		n += snprintf(out + n, outlen - (size_t)n, "\r\n\tfor <%s>", s->env.rcpt[0].addr);
	n += snprintf(out + n, outlen - (size_t)n, "; %s\r\n", date);
	return n;
}

static double
smtp_since(uint64_t t0)
{
	return (double)(uv_hrtime() - t0) / 1e9;
}

static void
smtp_commit_cb(void *arg, int status, const char *id)
{
	struct smtp_session *s = arg;
	struct smtp_msg *m = s->msg;
	char sigs[DKIM_MAX_SIGS * 400];
	size_t n = 0;
	int i;

	s->busy--;
	if (status < 0) {
		smtp_log(s, LOG_ERR, "%s: queue file commit failed: %s", m->id, strerror(-status));
		if (!s->closing) {
			smtp_reject(s, "END-OF-MESSAGE", "spool", NULL,
			    "452 4.3.1 Error: insufficient system storage");
			smtp_msg_done(s);
			smtp_flush(s);
		}
		smtp_session_free(s);
		return;
	}
	sigs[0] = '\0';
	for (i = 0; i < m->nsigs && n < sizeof(sigs) - 400; i++)
		n += (size_t)snprintf(sigs + n, sizeof(sigs) - n, "%sd=%s s=%s a=%s",
		    i > 0 ? " + " : "", m->sigs[i].domain, m->sigs[i].selector,
		    dkim_alg_name(m->sigs[i].alg));
	smtp_log(s, LOG_INFO, "%s: from=<%s>, size=%llu, nrcpt=%zu, signed=%s%s", id,
	    s->env.mail_from, (unsigned long long)m->size, s->env.nrcpt,
	    m->nsigs > 0 ? sigs : "none", s->closing ? " (client gone before 250)" : "");
	for (i = 0; i < m->nsigs; i++) {
		char label[400];

		snprintf(label, sizeof(label), "%s %s", dkim_alg_name(m->sigs[i].alg),
		    m->sigs[i].domain);
		smtp_event(s, SMTP_EV_SIGNED, 1, label);
	}
	smtp_event(s, SMTP_EV_ACCEPTED, (double)m->size, NULL);
	smtp_event(s, SMTP_EV_DATA_TO_250, smtp_since(m->t_eod), NULL);
	if (!s->closing) {
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
		s->errors = s->junk = 0;       /* smtpd_hard_error_limit: "without delivering mail" */
		smtp_msg_done(s);
		smtp_flush(s);
	}
	smtp_session_free(s);
}

static void
smtp_sign_work(uv_work_t *w)
{
	struct smtp_session *s = w->data;
	struct smtp_msg *m = s->msg;

	m->sign_rc = dkim_signer_finish(m->signer, &m->sig, &m->siglen);
}

static void
smtp_sign_after(uv_work_t *w, int status)
{
	struct smtp_session *s = w->data;
	struct smtp_msg *m = s->msg;
	char recv[2048];
	char *text;
	size_t len;
	int rn;

	s->busy--;
	if (s->closing) {
		smtp_session_free(s);
		return;
	}
	smtp_event(s, SMTP_EV_SIGN_SECONDS, smtp_since(m->t_eod), NULL);
	if (status < 0 || m->sign_rc != 0) {
		if (m->sign_rc == DKIM_ENOFROM)
			smtp_reject(s, "END-OF-MESSAGE", "no_from", NULL,
			    "550 5.6.0 Message has no From header field");
		else
			smtp_reject(s, "END-OF-MESSAGE", "sign_error", NULL,
			    "451 4.3.0 Error: signing failed: %s",
			    status < 0 ? uv_strerror(status) : dkim_strerror(m->sign_rc));
		smtp_msg_done(s);
		smtp_flush(s);
		return;
	}
	/*
	 * The S record: the signatures, then our Received: (the message as
	 * stored in M records stays exactly what the client sent).
	 */
	rn = smtp_received(s, recv, sizeof(recv));
	if (rn < 0 || (size_t)rn >= sizeof(recv))
		rn = 0;
	len = m->siglen + (size_t)rn;
	if ((text = malloc(len + 1)) == NULL)
		abort();
	if (m->siglen > 0)
		memcpy(text, m->sig, m->siglen);
	memcpy(text + m->siglen, recv, (size_t)rn);
	text[len] = '\0';
	s->busy++;
	queue_msg_commit(m->q, text, len, smtp_commit_cb, s);
	m->q = NULL;
	free(text);
}

/* smtp_msg_eod - the whole message is in: refuse it, or sign and commit. */
static void
smtp_msg_eod(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;
	const char *stage = s->state == SMTP_S_BDAT ? "BDAT" : "END-OF-MESSAGE";
	int rc;

	m->t_eod = uv_hrtime();
	smtp_enter_state(s, SMTP_S_SPOOLING);
	smtp_pause(s, SMTP_PAUSE_WAIT);
	smtp_msg_end_headers(s);
	if (smtp_msg_verdict(s, stage)) {
		smtp_msg_done(s);
		return;
	}
	s->work.data = s;
	s->busy++;
	if ((rc = uv_queue_work(s->srv->loop, &s->work, smtp_sign_work, smtp_sign_after)) < 0) {
		s->busy--;
		smtp_reject(s, stage, "sign_error", NULL, "451 4.3.0 Error: signing failed: %s",
		    uv_strerror(rc));
		smtp_msg_done(s);
	}
}

/* smtp_spool_backlog - pause the client while the spool is far behind. */
static void
smtp_spool_backlog(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;

	if (m != NULL && m->q != NULL && queue_msg_pending(m->q) > SMTP_SPOOL_HIWAT)
		smtp_pause(s, SMTP_PAUSE_SPOOL);
}

/* ---- input: message text --------------------------------------------------------- */

static void
smtp_in_data(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;
	size_t n;

	n = smtp__data_feed(&m->dp, s->rbuf + s->rpos, s->wpos - s->rpos, smtp_msg_out, s);
	s->rpos += n;
	smtp_progress(s);
	smtp_msg_refusing(s);
	if (m->dp.state == SMTP__D_DONE)
		smtp_msg_eod(s);
	else
		smtp_spool_backlog(s);
}

/* smtp_chunk_end - a BDAT chunk is complete. */
static void
smtp_chunk_end(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;

	s->in_chunk = 0;
	if (s->chunk_last) {
		smtp__data_end(&m->dp, smtp_msg_out, s);
		smtp_msg_eod(s);
		return;
	}
	/* RFC 3030 2: a refused chunk ends the transaction */
	if (smtp_msg_verdict(s, "BDAT")) {
		smtp_tx_reset(s);
		smtp_enter_state(s, SMTP_S_HELO);
		return;
	}
	smtp_reply(s, "250 2.0.0 Ok: %llu octets", (unsigned long long)m->dp.out_len);
	smtp_spool_backlog(s);
}

static void
smtp_in_chunk(struct smtp_session *s)
{
	struct smtp_msg *m = s->msg;
	size_t n = s->wpos - s->rpos;

	if (n > s->chunk_left)
		n = (size_t)s->chunk_left;
	smtp__data_feed(&m->dp, s->rbuf + s->rpos, n, smtp_msg_out, s);
	s->rpos += n;
	s->chunk_left -= n;
	smtp_progress(s);
	smtp_msg_refusing(s);
	if (s->chunk_left == 0)
		smtp_chunk_end(s);
}

/* ---- AUTH (RFC 4954) ---------------------------------------------------------------- */

static void
smtp_auth_work(uv_work_t *w)
{
	struct smtp_session *s = w->data;
	struct smtp_authreq *a = s->auth;

	a->ok = smtp_authdb_check(a->db, a->user, a->pass) == 1;
}

static void smtp_check_limits(struct smtp_session *);

static void
smtp_auth_after(uv_work_t *w, int status)
{
	struct smtp_session *s = w->data;
	struct smtp_authreq *a = s->auth;
	const char *mech = a->mech == SMTP_AUTH_PLAIN ? "PLAIN" : "LOGIN";

	s->busy--;
	if (s->closing) {
		smtp_auth_free(s);
		smtp_session_free(s);
		return;
	}
	if (status == 0 && a->ok) {
		s->auth_user = smtp_xstrdup(a->user);
		smtp_log(s, LOG_INFO, "[%s]:%u: sasl_method=%s, sasl_username=%s", s->ip,
		    s->port, mech, a->user);
		smtp_reply(s, "235 2.7.0 Authentication successful");
		smtp_progress(s);
	} else {
		smtp_log(s, LOG_WARNING, "[%s]:%u: SASL %s authentication failed (user %s)",
		    s->ip, s->port, mech, a->user);
		smtp_event(s, SMTP_EV_REJECTED, 1, "auth");
		smtp_reply(s, "535 5.7.8 Error: authentication failed");
	}
	smtp_auth_free(s);
	smtp_enter_state(s, SMTP_S_HELO);
	smtp_check_limits(s);
	if (s->srv->stopping)
		smtp_stop_session(s, 0);
	smtp_resume(s, SMTP_PAUSE_WAIT);
	smtp_flush(s);
}

/* smtp_auth_check - run crypt(3) on the thread pool (yescrypt is slow). */
static void
smtp_auth_check(struct smtp_session *s)
{
	int rc;

	s->auth->step = SMTP_AUTH_STEP_CHECK;
	s->auth->db = s->cfg->authdb;
	smtp_pause(s, SMTP_PAUSE_WAIT);
	s->work.data = s;
	s->busy++;
	if ((rc = uv_queue_work(s->srv->loop, &s->work, smtp_auth_work, smtp_auth_after)) < 0) {
		s->busy--;
		smtp_auth_free(s);
		smtp_reply(s, "454 4.7.0 Temporary authentication failure");
		smtp_enter_state(s, SMTP_S_HELO);
		smtp_resume(s, SMTP_PAUSE_WAIT);
	}
}

/* smtp_auth_fail - a malformed or aborted exchange. */
static void
smtp_auth_fail(struct smtp_session *s, const char *reply)
{
	smtp_auth_free(s);
	smtp_reply(s, "%s", reply);
	smtp_enter_state(s, SMTP_S_HELO);
}

/* smtp_auth_response - one client response (PLAIN, or a LOGIN step). */
static void
smtp_auth_response(struct smtp_session *s, const char *p, size_t len)
{
	struct smtp_authreq *a = s->auth;
	int rc;

	if (len == 1 && p[0] == '*') {
		smtp_auth_fail(s, "501 5.7.0 Authentication aborted");
		return;
	}
	switch (a->step) {
	case SMTP_AUTH_STEP_RESPONSE:
		rc = smtp__sasl_plain(p, len, a->user, sizeof(a->user), a->pass,
		    sizeof(a->pass));
		if (rc == -2) {
			/* RFC 4954 6: not authorized to act as that identity */
			smtp_auth_fail(s, "535 5.7.8 Error: authentication failed");
			return;
		}
		if (rc < 0 || a->user[0] == '\0') {
			smtp_auth_fail(s, "501 5.5.2 Error: cannot decode the response");
			return;
		}
		smtp_auth_check(s);
		return;
	case SMTP_AUTH_STEP_USER:
		if (smtp__b64_decode_str(p, len, a->user, sizeof(a->user)) < 0 ||
		    a->user[0] == '\0') {
			smtp_auth_fail(s, "501 5.5.2 Error: cannot decode the response");
			return;
		}
		a->step = SMTP_AUTH_STEP_PASS;
		smtp_reply(s, "334 UGFzc3dvcmQ6");    /* "Password:" */
		return;
	case SMTP_AUTH_STEP_PASS:
		if (smtp__b64_decode_str(p, len, a->pass, sizeof(a->pass)) < 0) {
			smtp_auth_fail(s, "501 5.5.2 Error: cannot decode the response");
			return;
		}
		smtp_auth_check(s);
		return;
	default:
		abort();
	}
}

/* ---- commands --------------------------------------------------------------------- */

static int
smtp_check_helo(struct smtp_session *s, struct smtp__slice a)
{
	if (!smtp__helo_ok(a.p, a.len)) {
		smtp_reply(s, "501 5.5.4 Syntax: EHLO hostname");
		return -1;
	}
	return 0;
}

static void
smtp_helo_common(struct smtp_session *s, struct smtp__slice a, int esmtp)
{
	smtp_tx_reset(s);
	memcpy(s->helo, a.p, a.len);
	s->helo[a.len] = '\0';
	s->esmtp = esmtp;
	smtp_enter_state(s, SMTP_S_HELO);
	smtp_progress(s);
}

static void
smtp_do_ehlo(struct smtp_session *s, struct smtp__slice a)
{
	const struct smtp_config *cfg = s->cfg;
	const char *ext[12];
	char size[40];
	int n = 0, i;

	smtp_helo_common(s, a, 1);
	ext[n++] = "PIPELINING";
	if (cfg->message_size_limit != 0) {
		snprintf(size, sizeof(size), "SIZE %llu", (unsigned long long)cfg->message_size_limit);
		ext[n++] = size;
	} else
		ext[n++] = "SIZE";
	ext[n++] = "8BITMIME";
	ext[n++] = "SMTPUTF8";
	ext[n++] = "CHUNKING";
	ext[n++] = "ENHANCEDSTATUSCODES";
	ext[n++] = "DSN";
	if (cfg->tls != NULL && s->tls == NULL)
		ext[n++] = "STARTTLS";
	/* RFC 4954 4: credentials only over TLS */
	if (cfg->authdb != NULL && s->tls != NULL)
		ext[n++] = "AUTH PLAIN LOGIN";
	smtp_reply(s, "250-%s", smtp_hostname(cfg));
	for (i = 0; i < n; i++)
		smtp_reply(s, "250%c%s", i + 1 < n ? '-' : ' ', ext[i]);
}

static void
smtp_do_helo(struct smtp_session *s, struct smtp__slice a)
{
	smtp_helo_common(s, a, 0);
	smtp_reply(s, "250 %s", smtp_hostname(s->cfg));
}

static int
smtp_check_mail(struct smtp_session *s, struct smtp__slice a)
{
	if (s->state == SMTP_S_GREETING) {
		smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return -1;
	}
	if (s->have_mail) {
		smtp_reply(s, "503 5.5.1 Error: nested MAIL command");
		return -1;
	}
	return 0;
}

/* smtp_path_args - "FROM:" / "TO:" then the path and parameters in *path; 0 or -1. */
static int
smtp_path_args(struct smtp__slice a, const char *kw, struct smtp__slice *path)
{
	size_t k = strlen(kw);

	if (a.len < k || strncasecmp(a.p, kw, k) != 0)
		return -1;
	path->p = a.p + k;
	path->len = a.len - k;
	/* tolerate "MAIL FROM: <a@b>" as most servers do */
	while (path->len > 0 && path->p[0] == ' ') {
		path->p++;
		path->len--;
	}
	return 0;
}

static void
smtp_do_mail(struct smtp_session *s, struct smtp__slice a)
{
	struct smtp__mail_params mp;
	struct smtp__slice path;
	char addr[SMTP__PATH_MAX + 1], err[SMTP__CMD_LINE_MAX];
	uint64_t limit = s->cfg->message_size_limit;
	long n;
	int utf8, code;

	if (smtp_path_args(a, "FROM:", &path) < 0) {
		smtp_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	if ((n = smtp__parse_path(path.p, path.len, SMTP__PATH_NULL_OK, addr, sizeof(addr),
	    &utf8)) < 0 || ((size_t)n < path.len && path.p[n] != ' ')) {
		smtp_reply(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if ((code = smtp__parse_mail_params(path.p + n, path.len - (size_t)n, &mp, err,
	    sizeof(err))) != 0) {
		smtp_reply(s, "%s", err);
		return;
	}
	if (utf8 && !mp.smtputf8) {
		smtp_reply(s, "553 5.6.7 Error: SMTPUTF8 is required for a non-ASCII address");
		return;
	}
	if (mp.has_size && limit != 0 && mp.size > limit) {
		smtp_reject(s, "MAIL", "size", NULL, "552 5.3.4 Message size exceeds fixed limit");
		return;
	}
	s->env.mail_from = smtp_xstrdup(addr);
	s->env.envid = mp.has_envid ? smtp_xstrdup(mp.envid) : NULL;
	s->env.ret = (enum queue_ret)mp.ret;
	s->env.body_8bit = mp.body_8bit;
	s->env.smtputf8 = mp.smtputf8;
	s->size_decl = mp.size;
	s->have_mail = 1;
	smtp_enter_state(s, SMTP_S_MAIL);
	smtp_progress(s);
	smtp_reply(s, "250 2.1.0 Ok");
}

static int
smtp_check_rcpt(struct smtp_session *s, struct smtp__slice a)
{
	if (s->state != SMTP_S_MAIL && s->state != SMTP_S_RCPT) {
		smtp_reply(s, "503 5.5.1 Error: need MAIL command");
		return -1;
	}
	return 0;
}

static void
smtp_do_rcpt(struct smtp_session *s, struct smtp__slice a)
{
	struct smtp__rcpt_params rp;
	struct smtp__slice path;
	struct queue_rcpt *r;
	char addr[SMTP__PATH_MAX + 1], err[SMTP__CMD_LINE_MAX];
	long n;
	int utf8;

	s->rcpt_tried++;
	if (smtp_path_args(a, "TO:", &path) < 0) {
		smtp_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if ((n = smtp__parse_path(path.p, path.len, 0, addr, sizeof(addr), &utf8)) < 0 ||
	    ((size_t)n < path.len && path.p[n] != ' ')) {
		smtp_reply(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	if (smtp__parse_rcpt_params(path.p + n, path.len - (size_t)n, &rp, err,
	    sizeof(err)) != 0) {
		smtp_reply(s, "%s", err);
		return;
	}
	if (utf8 && !s->env.smtputf8) {
		smtp_reply(s, "553 5.6.7 Error: SMTPUTF8 is required for a non-ASCII address");
		return;
	}
	/* never an open relay: mynetworks or SMTP AUTH */
	if (!smtp_relay_ok(s)) {
		smtp_reject(s, "RCPT", "relay", addr, "554 5.7.1 <%s>: Relay access denied", addr);
		return;
	}
	if (s->env.nrcpt >= smtp_limit_or(s->cfg->recipient_limit, 1000)) {
		smtp_reject(s, "RCPT", "recipients", addr, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (s->env.nrcpt == s->rcpt_cap) {
		size_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : 4;
		struct queue_rcpt *nr = realloc(s->env.rcpt, cap * sizeof(*nr));

		if (nr == NULL)
			abort();
		s->env.rcpt = nr;
		s->rcpt_cap = cap;
	}
	r = &s->env.rcpt[s->env.nrcpt++];
	r->addr = smtp_xstrdup(addr);
	r->notify = rp.notify;
	r->orcpt = rp.has_orcpt ? smtp_xstrdup(rp.orcpt) : NULL;
	smtp_enter_state(s, SMTP_S_RCPT);
	smtp_progress(s);
	smtp_reply(s, "250 2.1.5 Ok");
}

/* smtp_check_tx_ready - MAIL and at least one RCPT, for DATA and BDAT. */
static int
smtp_check_tx_ready(struct smtp_session *s)
{
	if (s->state == SMTP_S_RCPT || s->state == SMTP_S_BDAT)
		return 0;
	if (!s->have_mail)
		smtp_reply(s, "503 5.5.1 Error: need MAIL command");
	else if (s->rcpt_tried > 0)
		smtp_reply(s, "554 5.5.1 Error: no valid recipients");
	else
		smtp_reply(s, "503 5.5.1 Error: need RCPT command");
	return -1;
}

static int
smtp_check_data(struct smtp_session *s, struct smtp__slice a)
{
	if (smtp_check_tx_ready(s) < 0)
		return -1;
	if (a.len > 0) {
		smtp_reply(s, "501 5.5.4 Syntax: DATA");
		return -1;
	}
	return 0;
}

static void
smtp_do_data(struct smtp_session *s, struct smtp__slice a)
{
	if (smtp_msg_start(s, 0) < 0) {
		smtp_reply(s, "451 4.3.0 Error: queue file write error");
		return;
	}
	smtp_enter_state(s, SMTP_S_DATA);
	smtp_progress(s);
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static int
smtp_check_bdat(struct smtp_session *s, struct smtp__slice a)
{
	uint64_t size;
	int last;

	if (smtp__parse_bdat(a.p, a.len, &size, &last) < 0) {
		smtp_reply(s, "501 5.5.4 Syntax: BDAT count [LAST]");
		return -1;
	}
	if (smtp_check_tx_ready(s) < 0) {
		/* RFC 3030 2: the chunk follows anyway; it is not a command */
		s->skip = size;
		return -1;
	}
	return 0;
}

static void
smtp_do_bdat(struct smtp_session *s, struct smtp__slice a)
{
	uint64_t size;
	int last;

	smtp__parse_bdat(a.p, a.len, &size, &last);
	if (s->state != SMTP_S_BDAT) {
		if (smtp_msg_start(s, 1) < 0) {
			smtp_reply(s, "451 4.3.0 Error: queue file write error");
			s->skip = size;
			smtp_tx_reset(s);
			smtp_enter_state(s, SMTP_S_HELO);
			return;
		}
		smtp_enter_state(s, SMTP_S_BDAT);
	}
	smtp_progress(s);
	if (s->cmd_code == 0)
		s->cmd_code = 250;        /* taken; the chunk's reply comes after it */
	s->chunk_left = size;
	s->chunk_last = last;
	s->in_chunk = 1;
	if (size == 0)
		smtp_chunk_end(s);
}

static int
smtp_check_noarg(struct smtp_session *s, struct smtp__slice a)
{
	if (a.len > 0) {
		smtp_reply(s, "501 5.5.4 Syntax: command takes no argument");
		return -1;
	}
	return 0;
}

static void
smtp_do_rset(struct smtp_session *s, struct smtp__slice a)
{
	smtp_tx_reset(s);
	smtp_enter_state(s, s->helo[0] != '\0' ? SMTP_S_HELO : SMTP_S_GREETING);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_do_noop(struct smtp_session *s, struct smtp__slice a)
{
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_do_quit(struct smtp_session *s, struct smtp__slice a)
{
	smtp_reply_quit(s, "221 2.0.0 Bye");
}

static void
smtp_do_vrfy(struct smtp_session *s, struct smtp__slice a)
{
	if (a.len == 0)
		smtp_reply(s, "501 5.5.4 Syntax: VRFY address");
	else
		smtp_reply(s, "252 2.0.0 Cannot VRFY user; try RCPT to attempt delivery");
}

static void
smtp_do_help(struct smtp_session *s, struct smtp__slice a)
{
	smtp_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT "
	    "VRFY HELP STARTTLS AUTH");
}

static void
smtp_do_notimpl(struct smtp_session *s, struct smtp__slice a)
{
	smtp_reply(s, "502 5.5.1 Error: command not implemented");
}

static void smtp_tls_on_plain(void *, const char *, size_t);
static void smtp_tls_on_cipher(void *, const char *, size_t);

/* smtp_tls_begin - a TLS session over this connection; 0 or -1 (closed). */
static int
smtp_tls_begin(struct smtp_session *s)
{
	s->tls = smtp__tls_new(s->cfg->tls, smtp_tls_on_plain, smtp_tls_on_cipher, s);
	if (s->tls == NULL) {
		smtp_log(s, LOG_ERR, "[%s]:%u: cannot start TLS", s->ip, s->port);
		smtp_close(s, "TLS setup failed");
		return -1;
	}
	smtp_enter_state(s, SMTP_S_TLS);
	return 0;
}

static int
smtp_check_starttls(struct smtp_session *s, struct smtp__slice a)
{
	if (s->cfg->tls == NULL) {
		smtp_reply(s, "502 5.5.1 Error: command not implemented");
		return -1;
	}
	if (s->tls != NULL) {
		smtp_reply(s, "503 5.5.1 Error: TLS already active");
		return -1;
	}
	if (s->state == SMTP_S_GREETING) {
		smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return -1;
	}
	if (smtp_in_tx(s)) {
		smtp_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return -1;
	}
	return smtp_check_noarg(s, a);
}

static void
smtp_do_starttls(struct smtp_session *s, struct smtp__slice a)
{
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	/* the 220 goes out in clear, before anything of the TLS session */
	smtp_flush(s);
	if (s->closing)
		return;
	/*
	 * RFC 3207 4.2 / CVE-2011-0411: whatever was pipelined after STARTTLS
	 * arrived in clear and is thrown away; the session starts over.
	 */
	s->rpos = s->wpos;
	smtp_tx_reset(s);
	s->helo[0] = '\0';
	s->esmtp = 0;
	smtp_progress(s);
	smtp_tls_begin(s);
}

static int
smtp_check_auth(struct smtp_session *s, struct smtp__slice a)
{
	if (s->cfg->authdb == NULL) {
		smtp_reply(s, "503 5.5.1 Error: authentication not enabled");
		return -1;
	}
	if (s->tls == NULL) {
		smtp_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		return -1;
	}
	if (s->state == SMTP_S_GREETING) {
		smtp_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return -1;
	}
	if (s->auth_user != NULL) {
		smtp_reply(s, "503 5.5.1 Error: already authenticated");
		return -1;
	}
	if (smtp_in_tx(s)) {
		smtp_reply(s, "503 5.5.1 Error: MAIL transaction in progress");
		return -1;
	}
	return 0;
}

static void
smtp_do_auth(struct smtp_session *s, struct smtp__slice a)
{
	struct smtp__slice mech, init;
	struct smtp_authreq *r;
	int have_init;

	smtp__cmd_split(a.p, a.len, &mech, &init);
	if (mech.len == 0) {
		smtp_reply(s, "501 5.5.4 Syntax: AUTH mechanism");
		return;
	}
	r = smtp_xcalloc(1, sizeof(*r));
	if (smtp__slice_eq(mech, "PLAIN"))
		r->mech = SMTP_AUTH_PLAIN;
	else if (smtp__slice_eq(mech, "LOGIN"))
		r->mech = SMTP_AUTH_LOGIN;
	else {
		free(r);
		smtp_reply(s, "504 5.5.4 Error: unsupported authentication mechanism");
		return;
	}
	s->auth = r;
	smtp_enter_state(s, SMTP_S_AUTH);
	have_init = init.len > 0;
	/* RFC 4954 4: "=" is an empty initial response */
	if (init.len == 1 && init.p[0] == '=')
		init.len = 0;
	if (r->mech == SMTP_AUTH_PLAIN) {
		r->step = SMTP_AUTH_STEP_RESPONSE;
		if (have_init)
			smtp_auth_response(s, init.p, init.len);
		else
			smtp_reply(s, "334 ");
	} else {
		r->step = SMTP_AUTH_STEP_USER;
		if (have_init)
			smtp_auth_response(s, init.p, init.len);
		else
			smtp_reply(s, "334 VXNlcm5hbWU6");    /* "Username:" */
	}
}

static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO", 0, smtp_check_helo, smtp_do_ehlo },
	{ "HELO", 0, smtp_check_helo, smtp_do_helo },
	{ "MAIL", 0, smtp_check_mail, smtp_do_mail },
	{ "RCPT", 0, smtp_check_rcpt, smtp_do_rcpt },
	{ "DATA", 0, smtp_check_data, smtp_do_data },
	{ "BDAT", SMTP_CMD_IN_BDAT, smtp_check_bdat, smtp_do_bdat },
	{ "RSET", SMTP_CMD_JUNK | SMTP_CMD_IN_BDAT, smtp_check_noarg, smtp_do_rset },
	{ "NOOP", SMTP_CMD_JUNK | SMTP_CMD_IN_BDAT, NULL, smtp_do_noop },
	{ "QUIT", SMTP_CMD_IN_BDAT, NULL, smtp_do_quit },
	{ "VRFY", SMTP_CMD_JUNK, NULL, smtp_do_vrfy },
	{ "HELP", SMTP_CMD_JUNK | SMTP_CMD_IN_BDAT, NULL, smtp_do_help },
	{ "STARTTLS", 0, smtp_check_starttls, smtp_do_starttls },
	{ "AUTH", 0, smtp_check_auth, smtp_do_auth },
	{ "EXPN", SMTP_CMD_JUNK, NULL, smtp_do_notimpl },
	{ "ETRN", SMTP_CMD_JUNK, NULL, smtp_do_notimpl },
	{ "TURN", SMTP_CMD_JUNK, NULL, smtp_do_notimpl },
};
static const size_t smtp_ncmds = sizeof(smtp_cmds) / sizeof(smtp_cmds[0]);
_Static_assert(sizeof(smtp_cmds) / sizeof(smtp_cmds[0]) <= SMTP_NCMD,
    "SMTP_NCMD too small for the command counters");

/* smtp_cmd_name - for the disconnect line; "unknown" past the table. */
static const char *
smtp_cmd_name(size_t i)
{
	return i < smtp_ncmds ? smtp_cmds[i].name : i == SMTP_NCMD ? "unknown" : "";
}

/* smtp_check_limits - smtpd_hard_error_limit and smtpd_junk_command_limit. */
static void
smtp_check_limits(struct smtp_session *s)
{
	const struct smtp_config *cfg = s->cfg;

	if (s->errors > smtp_limit_or(cfg->hard_error_limit, 20)) {
		smtp_log(s, LOG_INFO, "too many errors from [%s]:%u", s->ip, s->port);
		smtp_event(s, SMTP_EV_REJECTED, 1, "errors");
		smtp_reply_quit(s, "421 4.7.0 %s Error: too many errors", smtp_hostname(cfg));
	} else if (s->junk > smtp_limit_or(cfg->junk_command_limit, 100)) {
		smtp_log(s, LOG_INFO, "too many junk commands from [%s]:%u", s->ip, s->port);
		smtp_event(s, SMTP_EV_REJECTED, 1, "junk");
		smtp_reply_quit(s, "421 4.7.0 %s Error: too many junk commands",
		    smtp_hostname(cfg));
	}
}

/* smtp_dispatch - one command line: table lookup, check, do. */
static void
smtp_dispatch(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp__slice verb, args;
	const struct smtp_cmd *c = NULL;
	size_t i;

	smtp__cmd_split(line, len, &verb, &args);
	for (i = 0; i < smtp_ncmds; i++)
		if (smtp__slice_eq(verb, smtp_cmds[i].name)) {
			c = &smtp_cmds[i];
			break;
		}
	s->cmd_code = 0;
	if (c == NULL)
		i = SMTP_NCMD;
	if (s->ncmd[i] < USHRT_MAX)
		s->ncmd[i]++;
	if (c == NULL) {
		s->junk++;
		smtp_reply(s, "500 5.5.2 Error: command not recognized");
	} else if (s->state == SMTP_S_BDAT && !(c->flags & SMTP_CMD_IN_BDAT)) {
		smtp_reply(s, "503 5.5.1 Error: BDAT transaction in progress");
	} else {
		if (c->flags & SMTP_CMD_JUNK)
			s->junk++;
		if (c->check == NULL || c->check(s, args) == 0)
			c->fn(s, args);
	}
	if (s->cmd_code >= 200 && s->cmd_code < 400 && s->nok[i] < USHRT_MAX)
		s->nok[i]++;
	smtp_check_limits(s);
	if (s->srv->stopping)
		smtp_stop_session(s, 0);
}

/* ---- input: command lines and the PROXY header ------------------------------------- */

/* smtp_in_line - one command or SASL line from the buffer; 0 if incomplete. */
static int
smtp_in_line(struct smtp_session *s)
{
	char *p = s->rbuf + s->rpos;
	size_t avail = s->wpos - s->rpos, len, max;
	char *lf = memchr(p, '\n', avail);

	if (s->skip_line) {
		/* the rest of an overlong line */
		if (lf == NULL) {
			s->rpos = s->wpos;
			return 0;
		}
		s->rpos += (size_t)(lf - p) + 1;
		s->skip_line = 0;
		s->cmd_code = 0;
		smtp_reply(s, "500 5.5.2 Error: line too long");
		smtp_check_limits(s);
		return 1;
	}
	max = s->state == SMTP_S_AUTH ? SMTP__SASL_LINE_MAX : smtp__cmd_line_max(p, avail);
	if (lf == NULL) {
		if (avail > max) {
			s->skip_line = 1;
			s->rpos = s->wpos;
		}
		return 0;
	}
	len = (size_t)(lf - p) + 1;
	s->rpos += len;
	if (len > max) {
		s->cmd_code = 0;
		smtp_reply(s, "500 5.5.2 Error: line too long");
		smtp_check_limits(s);
		return 1;
	}
	/* CRLF ends a command line; a bare LF is tolerated here (not in DATA) */
	len--;
	if (len > 0 && p[len - 1] == '\r')
		len--;
	p[len] = '\0';
	if (memchr(p, '\r', len) != NULL || memchr(p, '\0', len) != NULL) {
		s->cmd_code = 0;
		smtp_reply(s, "500 5.5.2 Error: bad syntax");
		smtp_check_limits(s);
		return 1;
	}
	if (s->state == SMTP_S_AUTH) {
		smtp_auth_response(s, p, len);
		smtp_check_limits(s);
		return 1;
	}
	if (len == 0) {
		/* an empty line gets no reply (it would shift pipelined replies) */
		s->junk++;
		smtp_check_limits(s);
		return 1;
	}
	smtp_dispatch(s, p, len);
	return 1;
}

/* smtp_greet - the 220, or the connection-limit 421. */
static void
smtp_greet(struct smtp_session *s)
{
	const struct smtp_config *cfg = s->cfg;
	unsigned max = cfg->conn_per_client;

	/* mynetworks are not exempt (unlike Postfix's default): 0 turns it off */
	smtp_limit_key(&s->client, s->limit_key);
	if (smtp_limit_client_get(s->limit_key, max) < 0) {
		smtp_log(s, LOG_WARNING, "too many connections from [%s]:%u", s->ip, s->port);
		smtp_event(s, SMTP_EV_REJECTED, 1, "conn_limit");
		if (s->l_tls)
			smtp_close(s, "too many connections");
		else
			smtp_reply_quit(s, "421 4.7.0 %s Error: too many connections from %s",
			    smtp_hostname(cfg), s->ip);
		return;
	}
	s->slot_client = 1;
	if (s->l_tls) {
		smtp_tls_begin(s);
		return;
	}
	s->greeted = 1;
	smtp_enter_state(s, SMTP_S_GREETING);
	smtp_reply(s, "220 %s ESMTP Signet", smtp_hostname(cfg));
}

/* smtp_in_proxy - the PROXY v1/v2 header; 0 if more bytes are needed. */
static int
smtp_in_proxy(struct smtp_session *s)
{
	struct sockaddr_storage src, dst;
	size_t avail = s->wpos - s->rpos;
	long n;

	memset(&src, 0, sizeof(src));
	memset(&dst, 0, sizeof(dst));
	n = smtp__proxy_parse(s->rbuf + s->rpos, avail, &src, &dst);
	if (n == 0 && avail <= SMTP_PROXY_MAX)
		return 0;
	if (n <= 0) {
		smtp_log(s, LOG_WARNING, "[%s]:%u: bad PROXY header", s->ip, s->port);
		smtp_close(s, "bad PROXY header");
		return 0;
	}
	s->rpos += (size_t)n;
	if (src.ss_family == AF_INET || src.ss_family == AF_INET6) {
		char lb[INET6_ADDRSTRLEN + 8];

		snprintf(lb, sizeof(lb), "%s]:%u", s->ip, s->port);
		smtp_set_client(s, &src);
		smtp_log(s, LOG_INFO, "connect from [%s]:%u via proxy [%s", s->ip, s->port, lb);
	}
	smtp_greet(s);
	if (s->closing || s->quit)
		return 0;
	if (s->tls != NULL && s->rpos < s->wpos) {
		/* what followed the header is the start of the TLS handshake */
		size_t rest = s->wpos - s->rpos;
		char *tmp = malloc(rest), err[256];

		if (tmp == NULL)
			abort();
		memcpy(tmp, s->rbuf + s->rpos, rest);
		s->rpos = s->wpos = 0;
		err[0] = '\0';
		if (smtp__tls_feed(s->tls, tmp, rest, err, sizeof(err)) < 0) {
			free(tmp);
			smtp_log(s, LOG_INFO, "TLS error from [%s]:%u: %s", s->ip, s->port, err);
			smtp_close(s, "TLS error");
			return 0;
		}
		free(tmp);
		smtp_tls_ready_check(s);
	}
	return 1;
}

/* ---- TLS callbacks ---------------------------------------------------------------- */

static void
smtp_tls_on_plain(void *arg, const char *p, size_t len)
{
	struct smtp_session *s = arg;

	smtp_rbuf_reserve(s, len);
	memcpy(s->rbuf + s->wpos, p, len);
	s->wpos += len;
}

static void
smtp_tls_on_cipher(void *arg, const char *p, size_t len)
{
	struct smtp_session *s = arg;

	smtp__ochain_add(&s->wire, p, len);
}

/* ---- the input loop and events ---------------------------------------------------- */

/*
 * smtp_process - consume input in order until it runs dry or something has
 * to wait, then flush the replies (RFC 2920).
 */
static void
smtp_process(struct smtp_session *s)
{
	s->in_process = 1;
	while (!s->closing && !s->quit && s->pause == 0 && s->rpos < s->wpos) {
		if (s->skip > 0) {
			size_t n = s->wpos - s->rpos;

			if (n > s->skip)
				n = (size_t)s->skip;
			s->rpos += n;
			s->skip -= n;
			continue;
		}
		switch (s->state) {
		case SMTP_S_PROXY:
			if (!smtp_in_proxy(s))
				goto out;
			break;
		case SMTP_S_TLS:
		case SMTP_S_QUIT:
			s->rpos = s->wpos;
			break;
		case SMTP_S_DATA:
			smtp_in_data(s);
			break;
		case SMTP_S_BDAT:
			if (s->in_chunk) {
				smtp_in_chunk(s);
				break;
			}
			/* FALLTHROUGH */
		case SMTP_S_GREETING:
		case SMTP_S_HELO:
		case SMTP_S_MAIL:
		case SMTP_S_RCPT:
		case SMTP_S_AUTH:
			if (!smtp_in_line(s))
				goto out;
			break;
		case SMTP_S_SPOOLING:
			goto out;
		}
		if (s->reply.bytes + s->wire.bytes > SMTP_OUT_HIWAT)
			s->pause |= SMTP_PAUSE_OUTPUT;
	}
out:
	s->in_process = 0;
	if (s->closing)
		return;
	if (s->quit)
		s->rpos = s->wpos;
	smtp_rbuf_tidy(s);
	smtp_flush(s);
	if (s->closing)
		return;
	if ((s->pause & SMTP_PAUSE_OUTPUT) && !s->writing && s->wire.bytes == 0)
		s->pause &= ~SMTP_PAUSE_OUTPUT;
	smtp_reading(s);
	smtp_timer_arm(s);
}

/* smtp_on_event - every I/O event of a session ends up here. */
static void
smtp_on_event(struct smtp_session *s, enum smtp_io ev, long arg)
{
	switch (ev) {
	case SMTP_IO_DATAIN:
		smtp_process(s);
		break;
	case SMTP_IO_LOWAT:
		if (s->quit)
			smtp_linger(s);
		else if (s->pause & SMTP_PAUSE_OUTPUT)
			smtp_resume(s, SMTP_PAUSE_OUTPUT);
		break;
	case SMTP_IO_TIMEOUT:
		smtp_log(s, LOG_INFO, "timeout after %s from [%s]:%u", smtp_strstate(s->state),
		    s->ip, s->port);
		if (s->quit || s->state == SMTP_S_PROXY || s->state == SMTP_S_TLS) {
			smtp_close(s, "timeout");
			break;
		}
		smtp_event(s, SMTP_EV_REJECTED, 1, "timeout");
		smtp_reply_quit(s, "421 4.4.2 %s Error: timeout exceeded", smtp_hostname(s->cfg));
		break;
	case SMTP_IO_EOF:
		/* libuv stops reading at EOF */
		s->eof = 1;
		s->reading = 0;
		if (!s->quit && !s->lingering) {
			smtp_log(s, LOG_INFO, "lost connection after %s from [%s]:%u",
			    smtp_strstate(s->state), s->ip, s->port);
			s->quit = 1;
			smtp_enter_state(s, SMTP_S_QUIT);
		}
		/* what is still queued goes out first */
		if (!s->writing && s->wire.bytes == 0)
			smtp_close(s, s->lingering ? NULL : "lost connection");
		break;
	case SMTP_IO_ERROR:
		if (!s->quit)
			smtp_log(s, LOG_INFO, "[%s]:%u: %s after %s", s->ip, s->port,
			    uv_strerror((int)arg), smtp_strstate(s->state));
		smtp_close(s, uv_err_name((int)arg));
		break;
	default:
		abort();
	}
}

/* ---- accepting ------------------------------------------------------------------ */

static void
smtp_on_connection(uv_stream_t *ls, int status)
{
	struct smtp_listener *l = ls->data;
	struct smtp_server *srv = l->srv;
	const struct smtp_config *cfg = srv->cref->cfg;
	struct smtp_session *s;
	struct sockaddr_storage ss;
	int len = sizeof(ss), rc;

	if (status < 0) {
		smtp_cfg_log(cfg, LOG_WARNING, "accept on %s: %s", l->conf.addr, uv_strerror(status));
		return;
	}
	s = smtp_xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->tcp.data = s;
	s->timer.data = s;
	uv_tcp_init(srv->loop, &s->tcp);
	s->handles = 1;
	if ((rc = uv_accept(ls, (uv_stream_t *)&s->tcp)) < 0) {
		smtp_cfg_log(cfg, LOG_WARNING, "accept on %s: %s", l->conf.addr, uv_strerror(rc));
		s->closing = 1;
		uv_close((uv_handle_t *)&s->tcp, smtp_handle_closed);
		return;
	}
	uv_timer_init(srv->loop, &s->timer);
	s->handles = 2;
	s->cref = srv->cref;
	s->cref->refs++;
	s->cfg = cfg;
	s->l_tls = l->conf.tls;
	s->l_proxy = l->conf.proxy;
	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;
	s->on_list = 1;
	s->state = l->conf.proxy ? SMTP_S_PROXY : SMTP_S_GREETING;
	uv_tcp_nodelay(&s->tcp, 1);
	memset(&ss, 0, sizeof(ss));
	if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) < 0)
		ss.ss_family = AF_UNSPEC;
	s->peer = ss;
	smtp_set_client(s, &ss);
	smtp_progress(s);
	smtp_event(s, SMTP_EV_CONN_OPEN, 1, NULL);
	smtp_log(s, LOG_INFO, "connect from [%s]:%u on %s (sessions %u)", s->ip, s->port,
	    l->conf.addr, srv->nsessions);
	if (smtp_limit_total_get(cfg->conn_limit) < 0) {
		smtp_log(s, LOG_WARNING, "too many connections (%u): refusing [%s]:%u",
		    cfg->conn_limit, s->ip, s->port);
		smtp_event(s, SMTP_EV_REJECTED, 1, "conn_limit");
		if (l->conf.tls || l->conf.proxy)
			smtp_close(s, "too many connections");
		else
			smtp_reply_quit(s, "421 4.7.0 %s Error: too many connections",
			    smtp_hostname(cfg));
		smtp_timer_arm(s);
		return;
	}
	s->slot_total = 1;
	if (l->conf.tls && cfg->tls == NULL) {
		smtp_log(s, LOG_ERR, "%s: TLS listener without a certificate", l->conf.addr);
		smtp_close(s, "no TLS");
		return;
	}
	if (l->conf.proxy) {
		if (!smtp_netlist_match(cfg->proxy_trusted, (const struct sockaddr *)&s->peer)) {
			smtp_log(s, LOG_WARNING, "PROXY listener %s: [%s] is not a trusted proxy",
			    l->conf.addr, s->ip);
			smtp_close(s, "untrusted proxy");
			return;
		}
	} else
		smtp_greet(s);
	if (s->closing)
		return;
	smtp_flush(s);
	smtp_reading(s);
	smtp_timer_arm(s);
}

/* ---- listeners -------------------------------------------------------------------- */

/* smtp_parse_listen - "127.0.0.1:25", "[::1]:25", "*:25", ":25". */
static int
smtp_parse_listen(const char *spec, struct sockaddr_storage *ss)
{
	char host[128];
	const char *colon, *port;
	unsigned long pn;
	char *end;
	size_t hl;

	memset(ss, 0, sizeof(*ss));
	if (spec[0] == '[') {
		const char *rb = strchr(spec, ']');

		if (rb == NULL || rb[1] != ':')
			return -EINVAL;
		hl = (size_t)(rb - spec - 1);
		if (hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, spec + 1, hl);
		host[hl] = '\0';
		port = rb + 2;
	} else {
		if ((colon = strrchr(spec, ':')) == NULL)
			return -EINVAL;
		hl = (size_t)(colon - spec);
		if (hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, spec, hl);
		host[hl] = '\0';
		port = colon + 1;
	}
	errno = 0;
	pn = strtoul(port, &end, 10);
	if (*port == '\0' || *end != '\0' || pn > 65535 || errno != 0)
		return -EINVAL;
	if (spec[0] == '[') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		if (uv_ip6_addr(host, (int)pn, in6) != 0)
			return -EINVAL;
	} else {
		struct sockaddr_in *in4 = (struct sockaddr_in *)ss;

		if (host[0] == '\0' || strcmp(host, "*") == 0)
			snprintf(host, sizeof(host), "0.0.0.0");
		if (uv_ip4_addr(host, (int)pn, in4) != 0)
			return -EINVAL;
	}
	return 0;
}

/* smtp_listen_socket - a bound, listening socket (SO_REUSEPORT); fd or -errno. */
static int
smtp_listen_socket(const struct smtp_config *cfg, const struct smtp_listen *lc)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, rc;

	if ((rc = smtp_parse_listen(lc->addr, &ss)) < 0) {
		smtp_cfg_log(cfg, LOG_ERR, "listen %s: bad address", lc->addr);
		return rc;
	}
	sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, SMTP_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	rc = -errno;
	smtp_cfg_log(cfg, LOG_ERR, "listen %s: %s", lc->addr, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

static void
smtp_listener_closed(uv_handle_t *h)
{
	struct smtp_listener *l = h->data;
	struct smtp_server *srv = l->srv;

	free(l);
	srv->handles--;
	smtp_server_maybe_done(srv);
}

/* smtp_listener_add - put a listening fd on the loop; takes fd. */
static int
smtp_listener_add(struct smtp_server *srv, const struct smtp_listen *lc, int fd)
{
	struct smtp_listener *l = smtp_xcalloc(1, sizeof(*l)), **nls;
	int rc;

	l->srv = srv;
	l->conf = *lc;
	l->tcp.data = l;
	if ((nls = realloc(srv->ls, (srv->nls + 1) * sizeof(*nls))) == NULL)
		abort();
	srv->ls = nls;
	uv_tcp_init(srv->loop, &l->tcp);
	srv->handles++;
	srv->ls[srv->nls++] = l;
	if ((rc = uv_tcp_open(&l->tcp, fd)) < 0) {
		close(fd);
		goto fail;
	}
	if ((rc = uv_listen((uv_stream_t *)&l->tcp, SMTP_BACKLOG, smtp_on_connection)) < 0)
		goto fail;
	return 0;
fail:
	smtp_cfg_log(srv->cref->cfg, LOG_ERR, "listen %s: %s", lc->addr, uv_strerror(rc));
	srv->nls--;
	uv_close((uv_handle_t *)&l->tcp, smtp_listener_closed);
	return rc;
}

/* ---- the server ------------------------------------------------------------------- */

int
smtp_server_start(uv_loop_t *loop, const struct smtp_config *cfg,
    struct queue_spool *spool, struct smtp_server **out)
{
	struct smtp_server *srv;
	int *fds, rc = 0;
	size_t i;

	*out = NULL;
	/* every socket first, so a failure leaves nothing on the loop */
	fds = smtp_xcalloc(cfg->nlisten + 1, sizeof(*fds));
	for (i = 0; i < cfg->nlisten; i++)
		if ((fds[i] = smtp_listen_socket(cfg, &cfg->listen[i])) < 0) {
			rc = fds[i];
			while (i-- > 0)
				close(fds[i]);
			free(fds);
			return rc;
		}
	srv = smtp_xcalloc(1, sizeof(*srv));
	srv->loop = loop;
	srv->spool = spool;
	srv->cref = smtp_cfgref_new(cfg);
	if ((srv->scratch = malloc(SMTP_SCRATCH)) == NULL)
		abort();
	for (i = 0; i < cfg->nlisten; i++)
		if (rc == 0)
			rc = smtp_listener_add(srv, &cfg->listen[i], fds[i]);
		else
			close(fds[i]);
	free(fds);
	if (rc < 0) {
		/* handles closing: srv goes when they are closed */
		srv->stopping = 1;
		srv->done = 1;
		for (i = 0; i < srv->nls; i++)
			uv_close((uv_handle_t *)&srv->ls[i]->tcp, smtp_listener_closed);
		srv->nls = 0;
		return rc;
	}
	*out = srv;
	return 0;
}

void
smtp_server_reconfigure(struct smtp_server *srv, const struct smtp_config *cfg,
    void (*release)(const struct smtp_config *old))
{
	struct smtp_cfgref *old = srv->cref;
	size_t i, j, k;

	srv->cref = smtp_cfgref_new(cfg);
	old->release = release;
	smtp_cfgref_drop(old);
	if (srv->stopping)
		return;
	/* listeners: keep the addresses still listed, open new ones, close the rest */
	for (i = 0; i < srv->nls; i++)
		srv->ls[i]->keep = 0;
	for (j = 0; j < cfg->nlisten; j++) {
		for (i = 0; i < srv->nls; i++)
			if (strcmp(srv->ls[i]->conf.addr, cfg->listen[j].addr) == 0)
				break;
		if (i < srv->nls) {
			srv->ls[i]->conf = cfg->listen[j];
			srv->ls[i]->keep = 1;
		} else {
			int fd = smtp_listen_socket(cfg, &cfg->listen[j]);

			if (fd >= 0 && smtp_listener_add(srv, &cfg->listen[j], fd) == 0)
				srv->ls[srv->nls - 1]->keep = 1;
		}
	}
	for (i = k = 0; i < srv->nls; i++) {
		if (srv->ls[i]->keep)
			srv->ls[k++] = srv->ls[i];
		else {
			smtp_cfg_log(cfg, LOG_INFO, "no longer listening on %s", srv->ls[i]->conf.addr);
			uv_close((uv_handle_t *)&srv->ls[i]->tcp, smtp_listener_closed);
		}
	}
	srv->nls = k;
}

/*
 * smtp_stop_session - on stop: an idle session gets 421 now; one in a
 * transaction finishes it first (smtp_dispatch and smtp_msg_done call back
 * here), unless force (the deadline), which spares only a message being
 * spooled: it is committed and answered, then closed.
 */
static void
smtp_stop_session(struct smtp_session *s, int force)
{
	if (s->closing)
		return;
	if (s->quit) {
		if (force)
			smtp_close(s, "shutdown");
		return;
	}
	if (s->state == SMTP_S_SPOOLING || (!force && smtp_in_tx(s)))
		return;
	if (s->state == SMTP_S_PROXY || s->state == SMTP_S_TLS) {
		smtp_close(s, "shutdown");
		return;
	}
	smtp_reply_quit(s, "421 4.3.2 %s Service shutting down", smtp_hostname(s->cfg));
}

static void
smtp_stop_timer_closed(uv_handle_t *h)
{
	struct smtp_server *srv = h->data;

	srv->handles--;
	smtp_server_maybe_done(srv);
}

static void
smtp_stop_deadline(uv_timer_t *t)
{
	struct smtp_server *srv = t->data;
	struct smtp_session *s, *next;

	for (s = srv->sessions; s != NULL; s = next) {
		next = s->next;
		smtp_stop_session(s, 1);
	}
	smtp_server_maybe_done(srv);
}

static void
smtp_server_maybe_done(struct smtp_server *srv)
{
	void (*cb)(void *);
	void *arg;

	if (!srv->stopping || srv->nsessions > 0)
		return;
	if (srv->stop_timer_open) {
		srv->stop_timer_open = 0;
		uv_close((uv_handle_t *)&srv->stop_timer, smtp_stop_timer_closed);
		return;
	}
	if (srv->handles > 0)
		return;
	if (srv->done && srv->stop_cb == NULL) {
		/* a failed start: nobody waits */
		smtp_cfgref_drop(srv->cref);
		free(srv->ls);
		free(srv->scratch);
		free(srv);
		return;
	}
	if (srv->stop_cb == NULL)
		return;
	cb = srv->stop_cb;
	arg = srv->stop_arg;
	srv->stop_cb = NULL;
	smtp_cfgref_drop(srv->cref);
	free(srv->ls);
	free(srv->scratch);
	free(srv);
	cb(arg);
}

void
smtp_server_stop(struct smtp_server *srv, unsigned deadline_ms, void (*cb)(void *arg),
    void *arg)
{
	struct smtp_session *s, *next;
	size_t i;

	if (srv->stopping)
		return;
	srv->stopping = 1;
	srv->stop_cb = cb;
	srv->stop_arg = arg;
	for (i = 0; i < srv->nls; i++)
		uv_close((uv_handle_t *)&srv->ls[i]->tcp, smtp_listener_closed);
	srv->nls = 0;
	uv_timer_init(srv->loop, &srv->stop_timer);
	srv->stop_timer.data = srv;
	srv->stop_timer_open = 1;
	srv->handles++;
	uv_timer_start(&srv->stop_timer, smtp_stop_deadline, deadline_ms, 0);
	for (s = srv->sessions; s != NULL; s = next) {
		next = s->next;
		smtp_stop_session(s, 0);
	}
	smtp_server_maybe_done(srv);
}

unsigned
smtp_server_sessions(const struct smtp_server *srv)
{
	return srv->nsessions;
}
