/*
 * client.c - the delivery client: one outbound SMTP transaction on a libuv
 * loop (see "delivery client" in smtp.h for the contract and what happens
 * when the server lacks an extension the message needs).  Like Postfix's
 * smtp_loop, the session keeps a send_state (the next command to write)
 * and a recv_state (the command whose reply comes next); they are equal
 * outside a pipelined MAIL/RCPT/DATA batch.  Replies are parsed by a
 * line-at-a-time parser whose state lives in struct smtp_reply; TLS is a
 * client-side OpenSSL session over two memory BIOs, as tls.c does for the
 * server, so no socket I/O happens inside OpenSSL.  The message body is
 * read from the queue file with queue_reader_read, one chunk per
 * uv_queue_work: the pool thread does bounded file I/O and returns, the
 * loop dot-stuffs the chunk onto the socket, and asks for the next chunk
 * only while less than CL_WIRE_LOW bytes wait to be written.  So a slow
 * server costs queued memory, never a pool thread (those are shared with
 * DKIM signing).  The final dot goes out only after the whole file was
 * read and its digest checked.  Nothing here blocks the loop.
 *
 * The connection cache (smtp.h) keeps the struct smtp_client itself: when a
 * transaction ends well enough, the client reports, drops what belonged to
 * the delivery (d, the results) and waits in its cache's idle list in
 * CL_S_IDLE, still reading so that a server that hangs up is noticed.  The
 * next matching delivery takes it out of the list and starts at MAIL.  If
 * the connection turns out to be dead before its first reply, the delivery
 * moves to a new client (cl_reconnect) and the old one closes silently.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "smtp/server_int.h"

#define CL_RBUF       4096              /* plaintext replies (one line must fit) */
#define CL_IBUF       (16384 + 512)     /* one socket read: a TLS record */
#define CL_WRITE_BUFS 64
#define CL_CMD_MAX    (SMTP__DSN_LINE_MAX + 512)
#define CL_CHUNK_MAX  65536             /* message bytes per read on the pool */
#define CL_WIRE_LOW   (128 * 1024)      /* read the next chunk below this socket backlog */

/* Postfix's defaults (smtp_*_timeout) */
#define CL_DEF_CONNECT_MS  (30 * 1000)
#define CL_DEF_GREETING_MS (300 * 1000)
#define CL_DEF_CMD_MS      (300 * 1000)
#define CL_DEF_DATA_MS     (180 * 1000)
#define CL_DEF_DOT_MS      (600 * 1000)
#define CL_QUIT_IDLE_MS    (10 * 1000)  /* the reply to QUIT on an idle connection */

enum cl_state {
	CL_S_CONNECT,
	CL_S_GREETING,
	CL_S_EHLO,
	CL_S_HELO,
	CL_S_STARTTLS,
	CL_S_TLS,        /* handshake in progress */
	CL_S_MAIL,
	CL_S_RCPT,
	CL_S_DATA,
	CL_S_BODY,       /* message bytes going out; no reply expected */
	CL_S_DOT,
	CL_S_RSET,       /* after a failed transaction, before caching */
	CL_S_IDLE,       /* in the cache, no delivery */
	CL_S_QUIT,
	CL_S_DONE
};

/*
 * The queue file reader: one queue_reader_read per uv_queue_work.  The
 * fields belong to the pool thread while busy is set, to the loop otherwise.
 */
struct cl_pump {
	uv_work_t work;
	struct queue_reader *qr;        /* opened by the first work */
	char *buf;                      /* CL_CHUNK_MAX bytes */
	long n;                         /* the last read: bytes, 0 at the end, -errno */
	int busy;                       /* a work is queued or running */
	int eof;                        /* the reader said 0 (digest checked) */
	const char *path;
};

struct smtp_client {
	uv_loop_t *loop;
	const struct smtp_delivery *d;
	smtp_client_cb cb;
	void *arg;

	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t creq;
	uv_write_t wreq;
	int refs;                       /* open handles and work in flight */
	int closing;

	struct sockaddr_storage ss;
	char addr[INET6_ADDRSTRLEN + 8];
	char name[SMTP__DOMAIN_MAX + INET6_ADDRSTRLEN + 16]; /* host[addr]:port */

	enum cl_state send_state;
	enum cl_state recv_state;
	size_t send_rcpt, recv_rcpt;    /* next RCPT to send / whose reply comes next */
	unsigned outstanding;           /* commands sent, replies not yet read */
	int pipelining;
	int esmtp;
	int empty_dot;                  /* the dot after a 354 with nobody accepted */
	int end_sent;
	int drop_input;                 /* plaintext after "220" to STARTTLS */
	size_t accepted;

	/* input */
	char ibuf[CL_IBUF];
	char rbuf[CL_RBUF];
	size_t rlen;
	struct smtp_reply rep;

	/* output: plaintext commands/message, then bytes for the socket */
	struct smtp__ochain pout;
	struct smtp__ochain wire;
	struct smtp__oblock *inflight;
	size_t inflight_bytes;
	int writing;

	/* TLS */
	SSL *ssl;
	BIO *rbio, *wbio;
	int tls_ready;

	struct smtp_dotstuff ds;
	struct cl_pump pump;

	/* outcome */
	struct smtp_result res;
	struct smtp_rcpt_result *rr;
	struct smtp_reply mail_rep, data_rep, dot_rep;
	struct smtp_reply local;        /* what ended it when no reply did */
	int local_set;
	enum smtp_verdict local_verdict;
	const char *stage;

	/* connection cache */
	struct smtp_client_cache *cache;  /* holds a reference; NULL: none */
	struct smtp_client *cprev, *cnext; /* the idle list, when idle */
	int idle;
	int conn_slot;                  /* counted in cache->nconns */
	int open_reported;              /* SMTP_CONN_OPEN went out */
	int reuse_pending;              /* reused, no reply yet: may reconnect */
	int mail_sent;                  /* MAIL went out in this transaction */
	char dest[SMTP_NEXTHOP_NAMELEN]; /* the key: dest, ss, tls, helo; "": none */
	char helo[SMTP__DOMAIN_MAX + 1];
	enum smtp_tls_level tls;
};

struct smtp_client_cache {
	uv_loop_t *loop;
	struct smtp_client_cache_opts o;
	struct smtp_client *head, *tail; /* idle connections, oldest first */
	size_t nidle;
	size_t nconns;                  /* open connections of its deliveries */
	int refs;                       /* clients pointing here, +1 until freed */
	int dead;                       /* smtp_client_cache_free ran */
};

static void cl_close(struct smtp_client *);
static void cl_flush(struct smtp_client *);
static void cl_pump_cmds(struct smtp_client *);
static void cl_pump_next(struct smtp_client *);
static void cl_fail(struct smtp_client *, int, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));
static int cl_reconnect(struct smtp_client *);
static void cl_tx_end(struct smtp_client *);
static void cl_park(struct smtp_client *);
static void cl_cache_unlink(struct smtp_client *);

/* ---- reply parsing ------------------------------------------------------- */

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* digits - 1 to 3 digits at p (at most len); their count, or 0 */
static size_t
digits(const char *p, size_t len)
{
	size_t n = 0;

	while (n < len && n < 4 && is_digit(p[n]))
		n++;
	return n >= 1 && n <= 3 ? n : 0;
}

/*
 * enhanced_status - RFC 3463 "class.subject.detail" at the start of t,
 * followed by a space or the end; its class must be the reply's (RFC 2034
 * 4).  Written to out, or out left empty.
 */
static void
enhanced_status(const char *t, size_t tl, int code, char *out, size_t outlen)
{
	size_t i = 0, n;

	if (tl < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') ||
	    t[0] - '0' != code / 100 || t[1] != '.')
		return;
	i = 2;
	if ((n = digits(t + i, tl - i)) == 0)
		return;
	i += n;
	if (i >= tl || t[i] != '.')
		return;
	i++;
	if ((n = digits(t + i, tl - i)) == 0)
		return;
	i += n;
	if (i < tl && t[i] != ' ')
		return;
	if (i >= outlen)
		return;
	memcpy(out, t, i);
	out[i] = '\0';
}

long
smtp_reply_parse(struct smtp_reply *r, const char *p, size_t len,
    const char **text, size_t *textlen)
{
	const char *nl, *t;
	size_t ll, tl, n;
	int code;

	if (r->done)
		memset(r, 0, sizeof(*r));
	if ((nl = memchr(p, '\n', len)) == NULL)
		return len > SMTP_REPLY_LINE_MAX + 1 ? -1 : 0;
	ll = (size_t)(nl - p);
	if (ll > 0 && p[ll - 1] == '\r')
		ll--;
	if (ll > SMTP_REPLY_LINE_MAX)
		return -1;
	/* RFC 5321 4.2: Reply-code [ SP / "-" textstring ] CRLF */
	if (ll < 3 || p[0] < '2' || p[0] > '5' || !is_digit(p[1]) ||
	    !is_digit(p[2]))
		return -1;
	if (ll > 3 && p[3] != ' ' && p[3] != '-')
		return -1;
	code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	if (r->nlines == 0)
		r->code = code;
	else if (code != r->code)
		return -1;            /* RFC 5321 4.2.1: one code per reply */
	if (++r->nlines > SMTP_REPLY_LINES_MAX)
		return -1;
	t = ll > 3 ? p + 4 : p + 3;
	tl = ll > 3 ? ll - 4 : 0;
	if (r->nlines == 1)
		enhanced_status(t, tl, code, r->status, sizeof(r->status));
	if (r->textlen > 0 && r->textlen < sizeof(r->text) - 1)
		r->text[r->textlen++] = ' ';
	n = sizeof(r->text) - 1 - r->textlen;
	if (n > tl)
		n = tl;
	memcpy(r->text + r->textlen, t, n);
	r->textlen += n;
	r->text[r->textlen] = '\0';
	r->done = ll == 3 || p[3] == ' ';
	if (text != NULL)
		*text = t;
	if (textlen != NULL)
		*textlen = tl;
	return (long)(nl - p + 1);
}

/* kw_eq - case-insensitive: the keyword k (length kl) is z */
static int
kw_eq(const char *k, size_t kl, const char *z)
{
	return strlen(z) == kl && strncasecmp(k, z, kl) == 0;
}

void
smtp_ehlo_line(struct smtp_ext *x, const char *text, size_t len)
{
	static const struct {
		const char *kw;
		unsigned flag;
	} kws[] = {
		{ "PIPELINING", SMTP_EXT_PIPELINING },
		{ "SIZE", SMTP_EXT_SIZE },
		{ "8BITMIME", SMTP_EXT_8BITMIME },
		{ "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
		{ "STARTTLS", SMTP_EXT_STARTTLS },
		{ "DSN", SMTP_EXT_DSN },
		{ "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES },
		{ "CHUNKING", SMTP_EXT_CHUNKING },
	};
	size_t kl = 0, i;
	uint64_t v = 0;

	while (len > 0 && text[0] == ' ') {
		text++;
		len--;
	}
	while (kl < len && text[kl] != ' ')
		kl++;
	for (i = 0; i < sizeof(kws) / sizeof(kws[0]); i++)
		if (kw_eq(text, kl, kws[i].kw))
			break;
	if (i == sizeof(kws) / sizeof(kws[0]))
		return;
	x->flags |= kws[i].flag;
	if (kws[i].flag != SMTP_EXT_SIZE)
		return;
	/* RFC 1870 4: "SIZE" [SP number]; 0 or none: no fixed limit */
	for (i = kl; i < len && text[i] == ' '; i++)
		;
	for (; i < len && is_digit(text[i]); i++) {
		if (v > (UINT64_MAX - 9) / 10) {
			v = 0;        /* absurd: no usable limit */
			break;
		}
		v = v * 10 + (uint64_t)(text[i] - '0');
	}
	x->size = v;
}

/* ---- dot-stuffing (RFC 5321 4.5.2) ----------------------------------------- */

void
smtp_dotstuff_init(struct smtp_dotstuff *ds)
{
	ds->bol = 1;
	ds->crlf = 1;
	ds->cr = 0;
}

void
smtp_dotstuff(struct smtp_dotstuff *ds, const char *p, size_t len,
    smtp_emit_cb emit, void *arg)
{
	size_t i, start = 0;

	if (len == 0)
		return;
	for (i = 0; i < len; i++) {
		if (ds->bol && p[i] == '.') {
			/* the bytes so far, then one extra dot; the dot itself follows */
			if (i > start)
				emit(arg, p + start, i - start);
			emit(arg, ".", 1);
			start = i;
		}
		ds->bol = p[i] == '\n';
		ds->crlf = ds->bol && ds->cr;
		ds->cr = p[i] == '\r';
	}
	if (len > start)
		emit(arg, p + start, len - start);
}

void
smtp_dotstuff_end(struct smtp_dotstuff *ds, smtp_emit_cb emit, void *arg)
{
	if (!ds->crlf)
		emit(arg, "\r\n", 2);
	emit(arg, ".\r\n", 3);
	smtp_dotstuff_init(ds);
}

/* ---- verdicts ------------------------------------------------------------------ */

const char *
smtp_verdict_name(enum smtp_verdict v)
{
	switch (v) {
	case SMTP_VERDICT_SENT:
		return "sent";
	case SMTP_VERDICT_BOUNCED:
		return "bounced";
	case SMTP_VERDICT_DEFERRED:
		break;
	}
	return "deferred";
}

/* step - a step that did not give want: its verdict, or -1 if it did */
static int
step(int code, int want)
{
	if (code / 100 == want)
		return -1;
	return code / 100 == 5 ? SMTP_VERDICT_BOUNCED : SMTP_VERDICT_DEFERRED;
}

enum smtp_verdict
smtp_verdict(int mail, int rcpt, int data, int dot)
{
	int v;

	if ((v = step(mail, 2)) >= 0 || (v = step(rcpt, 2)) >= 0 ||
	    (v = step(data, 3)) >= 0 || (v = step(dot, 2)) >= 0)
		return (enum smtp_verdict)v;
	return SMTP_VERDICT_SENT;
}

/* ---- small helpers --------------------------------------------------------------- */

static const char *
cl_strstate(enum cl_state st)
{
	switch (st) {
	case CL_S_CONNECT: return "connect";
	case CL_S_GREETING: return "greeting";
	case CL_S_EHLO: return "EHLO";
	case CL_S_HELO: return "HELO";
	case CL_S_STARTTLS: return "STARTTLS";
	case CL_S_TLS: return "STARTTLS";
	case CL_S_MAIL: return "MAIL";
	case CL_S_RCPT: return "RCPT";
	case CL_S_DATA: return "DATA";
	case CL_S_BODY: return "message";
	case CL_S_DOT: return "end of data";
	case CL_S_RSET: return "RSET";
	case CL_S_IDLE: return "idle";
	case CL_S_QUIT: return "QUIT";
	case CL_S_DONE: return "done";
	}
	return "?";
}

/* cl_while - Postfix's words for where a connection was lost */
static const char *
cl_while(enum cl_state st)
{
	switch (st) {
	case CL_S_CONNECT: return "while connecting";
	case CL_S_GREETING: return "while receiving the initial server greeting";
	case CL_S_EHLO:
	case CL_S_HELO: return "while performing the EHLO handshake";
	case CL_S_STARTTLS:
	case CL_S_TLS: return "while performing the STARTTLS handshake";
	case CL_S_MAIL: return "while sending MAIL FROM";
	case CL_S_RCPT: return "while sending RCPT TO";
	case CL_S_DATA: return "while sending DATA command";
	case CL_S_BODY: return "while sending message body";
	case CL_S_DOT: return "while sending end of data -- message may be sent more than once";
	case CL_S_RSET: return "while sending RSET";
	case CL_S_IDLE: return "while cached";
	case CL_S_QUIT: return "while sending QUIT";
	case CL_S_DONE: break;
	}
	return "";
}

static void cl_log(struct smtp_client *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void
cl_log(struct smtp_client *c, int prio, const char *fmt, ...)
{
	void (*fn)(void *, int, const char *) = NULL;
	void *arg = NULL;
	char buf[1024];
	va_list ap;

	/* without a delivery (idle, cached) the cache's hook */
	if (c->d != NULL) {
		fn = c->d->log;
		arg = c->d->log_arg;
	} else if (c->cache != NULL) {
		fn = c->cache->o.log;
		arg = c->cache->o.arg;
	}
	if (fn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fn(arg, prio, buf);
}

/* cl_enter - the sole writer of the two states; logs old -> new */
static void
cl_enter(struct smtp_client *c, enum cl_state send, enum cl_state recv)
{
	if (c->send_state != send || c->recv_state != recv)
		cl_log(c, LOG_DEBUG, "%s: send %s -> %s, recv %s -> %s",
		    c->name, cl_strstate(c->send_state), cl_strstate(send),
		    cl_strstate(c->recv_state), cl_strstate(recv));
	c->send_state = send;
	c->recv_state = recv;
}

static unsigned
ms_or(unsigned v, unsigned dflt)
{
	return v != 0 ? v : dflt;
}

static void cl_idle_quit(struct smtp_client *);

static void
cl_timer_cb(uv_timer_t *t)
{
	struct smtp_client *c = t->data;

	if (c->recv_state == CL_S_IDLE) {
		/* smtp_connection_cache_time_limit is up */
		cl_idle_quit(c);
		return;
	}
	cl_fail(c, UV_ETIMEDOUT, "4.4.2", "conversation with %s timed out %s",
	    c->name, cl_while(c->recv_state));
}

/* cl_timer - (re)arm the stage timeout */
static void
cl_timer(struct smtp_client *c, unsigned ms)
{
	if (!c->closing)
		uv_timer_start(&c->timer, cl_timer_cb, ms, 0);
}

static void
cl_timer_cmd(struct smtp_client *c)
{
	cl_timer(c, c->d != NULL ? ms_or(c->d->timeouts.cmd_ms, CL_DEF_CMD_MS) :
	    CL_QUIT_IDLE_MS);
}

/* set_local - the client's own reason (code 0 unless from a reply) */
static void
set_local(struct smtp_client *c, enum smtp_verdict v, const struct smtp_reply *r,
    const char *status, const char *text)
{
	if (c->local_set)
		return;
	c->local_set = 1;
	c->local_verdict = v;
	memset(&c->local, 0, sizeof(c->local));
	if (r != NULL) {
		c->local = *r;
		if (c->local.status[0] == '\0')
			snprintf(c->local.status, sizeof(c->local.status),
			    "%d.0.0", r->code / 100);
		return;
	}
	snprintf(c->local.status, sizeof(c->local.status), "%s", status);
	snprintf(c->local.text, sizeof(c->local.text), "%s", text);
	c->local.textlen = strlen(c->local.text);
	c->local.done = 1;
}

/* cl_conn_lost - an error that says the connection is gone (or mute) */
static int
cl_conn_lost(int err)
{
	return err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE ||
	    err == UV_ECONNABORTED || err == UV_ENOTCONN || err == UV_ETIMEDOUT;
}

/*
 * cl_fail - the session cannot go on: record why (first reason wins),
 * defer every recipient not decided by a reply yet and close at once.
 * After the transaction is over (QUIT) nothing changes any more.
 */
static void
cl_fail(struct smtp_client *c, int err, const char *status, const char *fmt, ...)
{
	char text[SMTP_REPLY_TEXT_MAX];
	va_list ap;

	if (c->closing)
		return;
	if (c->reuse_pending && cl_conn_lost(err) && cl_reconnect(c))
		return;
	if (c->d == NULL && c->recv_state == CL_S_IDLE) {
		va_start(ap, fmt);
		vsnprintf(text, sizeof(text), fmt, ap);
		va_end(ap);
		cl_log(c, LOG_DEBUG, "%s: %s", c->name, text);
	} else if (c->recv_state != CL_S_QUIT && c->recv_state != CL_S_DONE) {
		va_start(ap, fmt);
		vsnprintf(text, sizeof(text), fmt, ap);
		va_end(ap);
		if (c->res.error == 0)
			c->res.error = err;
		if (c->stage == NULL)
			c->stage = cl_strstate(c->recv_state);
		set_local(c, SMTP_VERDICT_DEFERRED, NULL, status, text);
		cl_log(c, LOG_INFO, "%s: %s", c->name, text);
	}
	cl_close(c);
}

/* ---- output ---------------------------------------------------------------------- */

static void
cl_emit(void *arg, const char *p, size_t len)
{
	struct smtp_client *c = arg;

	smtp__ochain_add(&c->pout, p, len);
}

static void cl_cmd(struct smtp_client *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
/* cl_cmd - queue one command line (CRLF added) */
static void
cl_cmd(struct smtp_client *c, const char *fmt, ...)
{
	char line[CL_CMD_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	cl_log(c, LOG_DEBUG, "%s: > %.*s", c->name, n, line);
	line[n++] = '\r';
	line[n++] = '\n';
	smtp__ochain_add(&c->pout, line, (size_t)n);
}

/* cl_tls_drain - everything OpenSSL wrote goes to the socket chain */
static void
cl_tls_drain(struct smtp_client *c)
{
	char buf[CL_IBUF];
	int n;

	while (BIO_ctrl_pending(c->wbio) > 0) {
		if ((n = BIO_read(c->wbio, buf, sizeof(buf))) <= 0)
			break;
		smtp__ochain_add(&c->wire, buf, (size_t)n);
	}
}

static void cl_flush(struct smtp_client *);

static void
cl_write_cb(uv_write_t *req, int status)
{
	struct smtp_client *c = req->data;

	smtp__oblock_free_list(c->inflight);
	c->inflight = NULL;
	c->inflight_bytes = 0;
	c->writing = 0;
	if (c->closing)
		return;
	if (status < 0) {
		cl_fail(c, status, "4.4.2", "lost connection with %s %s: %s",
		    c->name, cl_while(c->recv_state), uv_strerror(status));
		return;
	}
	if (c->recv_state == CL_S_BODY) {
		/* progress: the data timeout counts from the last write */
		cl_timer(c, ms_or(c->d->timeouts.data_ms, CL_DEF_DATA_MS));
		cl_pump_next(c);
	}
	cl_flush(c);
}

/*
 * cl_flush - queued plaintext goes out: as it is, or through TLS (one
 * record per block, so a pipelined batch is one record); then one
 * uv_write of several buffers unless a write is in flight.
 */
static void
cl_flush(struct smtp_client *c)
{
	uv_buf_t bufs[CL_WRITE_BUFS];
	struct smtp__oblock *b;
	unsigned n, i;
	int rc;

	if (c->closing)
		return;
	if (c->pout.bytes > 0) {
		if (c->ssl != NULL) {
			ERR_clear_error();
			for (b = c->pout.head; b != NULL; b = b->next) {
				/* Into a memory BIO SSL_write writes all or fails. */
				if (b->len > 0 && SSL_write(c->ssl, b->data,
				    (int)b->len) <= 0) {
					smtp__ochain_reset(&c->pout);
					ERR_clear_error();
					cl_fail(c, UV_EPROTO, "4.7.5",
					    "TLS write error with %s", c->name);
					return;
				}
				cl_tls_drain(c);
			}
			smtp__ochain_reset(&c->pout);
		} else
			smtp__ochain_move(&c->wire, &c->pout);
	}
	if (c->writing || c->wire.bytes == 0)
		return;
	c->inflight = smtp__ochain_take(&c->wire, bufs, CL_WRITE_BUFS, &n);
	for (i = 0; i < n; i++)
		c->inflight_bytes += bufs[i].len;
	c->writing = 1;
	c->wreq.data = c;
	if ((rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, bufs, n,
	    cl_write_cb)) < 0) {
		c->writing = 0;
		smtp__oblock_free_list(c->inflight);
		c->inflight = NULL;
		c->inflight_bytes = 0;
		cl_fail(c, rc, "4.4.2", "lost connection with %s %s: %s",
		    c->name, cl_while(c->recv_state), uv_strerror(rc));
	}
}

/* ---- the message body: queue file -> thread pool -> loop -> socket --------------- */

/* pump_work - on a pool thread: open the file the first time, read one chunk */
static void
pump_work(uv_work_t *w)
{
	struct smtp_client *c = w->data;
	struct cl_pump *pp = &c->pump;
	int rc;

	if (pp->qr == NULL && (rc = queue_reader_open(pp->path, &pp->qr)) != 0) {
		pp->n = rc;
		return;
	}
	pp->n = queue_reader_read(pp->qr, pp->buf, CL_CHUNK_MAX);
	if (pp->n <= 0) {
		/* the end or an error: the file is of no more use */
		queue_reader_close(pp->qr);
		pp->qr = NULL;
	}
}

static void cl_maybe_free(struct smtp_client *);

/* pump_after - on the loop: the chunk goes to the socket, or the end of data */
static void
pump_after(uv_work_t *w, int status)
{
	struct smtp_client *c = w->data;
	struct cl_pump *pp = &c->pump;

	pp->busy = 0;
	c->refs--;
	if (c->closing) {
		cl_maybe_free(c);
		return;
	}
	if (status < 0)
		pp->n = status;
	if (pp->n < 0) {
		/*
		 * The reader may have passed bytes on before it found a bad
		 * digest, so the dot must not follow: closing the connection
		 * without it aborts the transaction (RFC 5321 3.8).
		 */
		cl_fail(c, (int)pp->n, "4.3.0", "error reading queue file %s: %s",
		    pp->path, strerror((int)-pp->n));
		return;
	}
	if (pp->n == 0) {
		pp->eof = 1;
		smtp_dotstuff_end(&c->ds, cl_emit, c);
		c->end_sent = 1;
		cl_enter(c, CL_S_DOT, CL_S_DOT);
		cl_timer(c, ms_or(c->d->timeouts.dot_ms, CL_DEF_DOT_MS));
		cl_flush(c);
		return;
	}
	smtp_dotstuff(&c->ds, pp->buf, (size_t)pp->n, cl_emit, c);
	cl_flush(c);
	cl_pump_next(c);
}

/*
 * cl_pump_next - ask the pool for the next chunk, unless one is on its way,
 * the file is done, or the socket is behind (cl_write_cb asks again).
 */
static void
cl_pump_next(struct smtp_client *c)
{
	struct cl_pump *pp = &c->pump;
	int rc;

	if (c->closing || pp->buf == NULL || pp->busy || pp->eof ||
	    c->end_sent)
		return;
	if (c->wire.bytes + c->inflight_bytes + c->pout.bytes >= CL_WIRE_LOW)
		return;
	pp->work.data = c;
	if ((rc = uv_queue_work(c->loop, &pp->work, pump_work, pump_after)) < 0) {
		cl_fail(c, rc, "4.3.0", "cannot read queue file: %s",
		    uv_strerror(rc));
		return;
	}
	pp->busy = 1;
	c->refs++;
}

/* cl_body_start - after 354: the signature record, then the queue file */
static void
cl_body_start(struct smtp_client *c)
{
	struct cl_pump *pp = &c->pump;

	cl_enter(c, CL_S_BODY, CL_S_BODY);
	cl_timer(c, ms_or(c->d->timeouts.data_ms, CL_DEF_DATA_MS));
	smtp_dotstuff_init(&c->ds);
	if (c->d->qf->sig != NULL && c->d->qf->siglen > 0)
		smtp_dotstuff(&c->ds, c->d->qf->sig, c->d->qf->siglen, cl_emit, c);
	pp->path = c->d->path;
	if (pp->buf == NULL && (pp->buf = malloc(CL_CHUNK_MAX)) == NULL) {
		cl_fail(c, UV_ENOMEM, "4.3.0", "cannot read queue file: %s",
		    uv_strerror(UV_ENOMEM));
		return;
	}
	cl_flush(c);
	cl_pump_next(c);
}

/* ---- TLS (client side, memory BIOs) ----------------------------------------- */

SSL_CTX *
smtp_tls_client_ctx_new(char *err, size_t errlen)
{
	SSL_CTX *ctx;
	unsigned long e;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		e = ERR_get_error();
		snprintf(err, errlen, "client TLS context: %s",
		    e != 0 ? ERR_reason_error_string(e) : "failed");
		SSL_CTX_free(ctx);
		ERR_clear_error();
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

/* sni_ok - a DNS name (not an address) worth sending as SNI (RFC 6066 3) */
static int
sni_ok(const char *h)
{
	struct in6_addr a6;
	struct in_addr a4;
	size_t n;

	if (h == NULL || (n = strlen(h)) == 0 || n > 253)
		return 0;
	if (inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1)
		return 0;
	return strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-._") == n;
}

static void
cl_tls_error(struct smtp_client *c, int r, const char *what)
{
	unsigned long e = ERR_get_error();
	int se = SSL_get_error(c->ssl, r);

	cl_tls_drain(c);      /* an alert, if any */
	cl_flush(c);
	cl_fail(c, UV_EPROTO, "4.7.5", "Cannot start TLS: %s with %s: %s", what,
	    c->name, e != 0 ? ERR_reason_error_string(e) :
	    se == SSL_ERROR_SYSCALL ? "unexpected end of data" : "TLS error");
	ERR_clear_error();
}

/* cl_tls_start - after "220" to STARTTLS: send the ClientHello */
static void
cl_tls_start(struct smtp_client *c)
{
	int r;

	ERR_clear_error();
	if ((c->ssl = SSL_new(c->d->tls_ctx)) == NULL ||
	    (c->rbio = BIO_new(BIO_s_mem())) == NULL ||
	    (c->wbio = BIO_new(BIO_s_mem())) == NULL) {
		BIO_free(c->rbio);
		BIO_free(c->wbio);
		c->rbio = c->wbio = NULL;
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
		cl_fail(c, UV_ENOMEM, "4.7.5", "Cannot start TLS: out of memory");
		return;
	}
	BIO_set_mem_eof_return(c->rbio, -1);
	SSL_set_bio(c->ssl, c->rbio, c->wbio);
	SSL_set_connect_state(c->ssl);
	SSL_set_min_proto_version(c->ssl, TLS1_2_VERSION);
	/* Opportunistic or mandatory encryption, never authentication here. */
	SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
	if (sni_ok(c->d->host))
		SSL_set_tlsext_host_name(c->ssl, c->d->host);
	cl_enter(c, CL_S_TLS, CL_S_TLS);
	cl_timer_cmd(c);
	r = SSL_do_handshake(c->ssl);
	if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
		cl_tls_error(c, r, "handshake");
		return;
	}
	cl_tls_drain(c);
	ERR_clear_error();
	cl_flush(c);
}

static void cl_on_plain(struct smtp_client *, const char *, size_t);
static void cl_tls_ready(struct smtp_client *);

/* cl_tls_feed - ciphertext from the socket */
static void
cl_tls_feed(struct smtp_client *c, const char *p, size_t len)
{
	char buf[16384];
	int r;

	ERR_clear_error();
	if (BIO_write(c->rbio, p, (int)len) != (int)len) {
		cl_fail(c, UV_ENOMEM, "4.7.5", "TLS buffer error with %s", c->name);
		return;
	}
	if (!c->tls_ready) {
		r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
				cl_tls_error(c, r, "handshake");
				return;
			}
			cl_tls_drain(c);
			ERR_clear_error();
			cl_flush(c);
			return;
		}
		cl_tls_drain(c);
		cl_tls_ready(c);
		if (c->closing)
			return;
	}
	while (!c->closing) {
		r = SSL_read(c->ssl, buf, sizeof(buf));
		if (r > 0) {
			cl_on_plain(c, buf, (size_t)r);
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			cl_tls_drain(c);
			ERR_clear_error();
			cl_flush(c);
			return;
		case SSL_ERROR_ZERO_RETURN:
			ERR_clear_error();
			cl_fail(c, UV_EOF, "4.4.2", "lost connection with %s %s",
			    c->name, cl_while(c->recv_state));
			return;
		default:
			cl_tls_error(c, r, "read");
			return;
		}
	}
}

/* ---- the protocol ------------------------------------------------------------- */

/* cl_send_ehlo - EHLO (again after TLS: RFC 3207 4.2 forgets the old one) */
static void
cl_send_ehlo(struct smtp_client *c)
{
	memset(&c->res.ext, 0, sizeof(c->res.ext));
	cl_cmd(c, "EHLO %s", c->d->helo);
	cl_enter(c, CL_S_EHLO, CL_S_EHLO);
	cl_timer_cmd(c);
	cl_flush(c);
}

static void
cl_tls_ready(struct smtp_client *c)
{
	c->tls_ready = 1;
	snprintf(c->res.tls_version, sizeof(c->res.tls_version), "%s",
	    SSL_get_version(c->ssl));
	snprintf(c->res.tls_cipher, sizeof(c->res.tls_cipher), "%s",
	    SSL_get_cipher_name(c->ssl));
	cl_log(c, LOG_INFO, "%s: TLS connection established: %s with cipher %s",
	    c->name, c->res.tls_version, c->res.tls_cipher);
	cl_send_ehlo(c);
}

/* cl_quit - the transaction is settled: say goodbye */
static void
cl_quit(struct smtp_client *c)
{
	cl_cmd(c, "QUIT");
	cl_enter(c, CL_S_QUIT, CL_S_QUIT);
	cl_timer_cmd(c);
	cl_flush(c);
}

/* cl_site_fail - a greeting/EHLO/HELO/STARTTLS reply that ends the session */
static void
cl_site_fail(struct smtp_client *c, enum smtp_verdict v, const struct smtp_reply *r)
{
	c->stage = cl_strstate(c->recv_state);
	c->res.reply = *r;
	set_local(c, v, r, NULL, NULL);
	cl_log(c, LOG_INFO, "%s: %s refused: %d %s", c->name, c->stage, r->code,
	    r->text);
	cl_quit(c);
}

/* cl_local_bounce - the message cannot go to this server at all */
static void
cl_local_bounce(struct smtp_client *c, const char *status, const char *text)
{
	c->stage = cl_strstate(c->recv_state);
	set_local(c, SMTP_VERDICT_BOUNCED, NULL, status, text);
	cl_log(c, LOG_INFO, "%s: %s", c->name, text);
	cl_tx_end(c);
}

/* xtext - RFC 3461 4 encoding of s into out */
static void
xtext(const char *s, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	unsigned char ch;

	for (; *s != '\0' && o + 4 < outlen; s++) {
		ch = (unsigned char)*s;
		if (ch < 33 || ch > 126 || ch == '+' || ch == '=') {
			out[o++] = '+';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		} else
			out[o++] = (char)ch;
	}
	out[o] = '\0';
}

/* msg_size - what goes out as the message: signature record + message */
static uint64_t
msg_size(const struct smtp_client *c)
{
	return c->d->qf->msg_size + (c->d->qf->sig != NULL ? c->d->qf->siglen : 0);
}

/* cl_begin_tx - EHLO/HELO done: check what the message needs, then MAIL */
static void
cl_begin_tx(struct smtp_client *c)
{
	const struct queue_envelope *env = &c->d->qf->env;
	const struct smtp_ext *x = &c->res.ext;
	char text[SMTP_REPLY_TEXT_MAX];

	c->pipelining = (x->flags & SMTP_EXT_PIPELINING) && !c->d->no_pipelining;
	c->res.pipelined = c->pipelining;
	/* RFC 6531 3.4, as Postfix: no SMTPUTF8, no delivery */
	if (env->smtputf8 && !(x->flags & SMTP_EXT_SMTPUTF8)) {
		snprintf(text, sizeof(text), "SMTPUTF8 is required, but was "
		    "not offered by host %s", c->name);
		cl_local_bounce(c, "5.6.7", text);
		return;
	}
	/* RFC 1870 6.1: don't send what the server said it won't take */
	if ((x->flags & SMTP_EXT_SIZE) && x->size > 0 && msg_size(c) > x->size) {
		snprintf(text, sizeof(text), "message size %" PRIu64 " exceeds "
		    "size limit %" PRIu64 " of server %s", msg_size(c), x->size,
		    c->name);
		cl_local_bounce(c, "5.3.4", text);
		return;
	}
	/*
	 * An 8-bit body to a server without 8BITMIME goes out unchanged and
	 * without BODY= (Postfix does the same): converting it would break
	 * the signature, and nearly every server takes 8-bit anyway.
	 */
	if (env->body_8bit && !(x->flags & SMTP_EXT_8BITMIME))
		cl_log(c, LOG_INFO, "%s: 8-bit message sent to a server "
		    "without 8BITMIME", c->name);
	cl_enter(c, CL_S_MAIL, CL_S_MAIL);
	c->send_rcpt = c->recv_rcpt = 0;
	c->outstanding = 0;
	cl_pump_cmds(c);
}

static void
cl_send_mail(struct smtp_client *c)
{
	const struct queue_envelope *env = &c->d->qf->env;
	const struct smtp_ext *x = &c->res.ext;
	char params[SMTP__DSN_LINE_MAX], envid[3 * SMTP__ENVID_MAX + 4];
	size_t o = 0;

	params[0] = '\0';
#define ADDP(...) do { \
	int n_ = snprintf(params + o, sizeof(params) - o, __VA_ARGS__); \
	if (n_ > 0 && (size_t)n_ < sizeof(params) - o) \
		o += (size_t)n_; \
} while (0)
	if (x->flags & SMTP_EXT_SIZE)
		ADDP(" SIZE=%" PRIu64, msg_size(c));
	if (env->body_8bit && (x->flags & SMTP_EXT_8BITMIME))
		ADDP(" BODY=8BITMIME");
	if (env->smtputf8 && (x->flags & SMTP_EXT_SMTPUTF8))
		ADDP(" SMTPUTF8");
	if (x->flags & SMTP_EXT_DSN) {
		if (env->ret == QUEUE_RET_FULL)
			ADDP(" RET=FULL");
		else if (env->ret == QUEUE_RET_HDRS)
			ADDP(" RET=HDRS");
		if (env->envid != NULL) {
			xtext(env->envid, envid, sizeof(envid));
			ADDP(" ENVID=%s", envid);
		}
	}
	cl_cmd(c, "MAIL FROM:<%s>%s", env->mail_from != NULL ? env->mail_from : "",
	    params);
}

static void
cl_send_rcpt(struct smtp_client *c, const struct queue_rcpt *r)
{
	char params[SMTP__DSN_LINE_MAX], enc[3 * SMTP__ORCPT_MAX + 4];
	const char *semi;
	size_t o = 0;

	params[0] = '\0';
	if (c->res.ext.flags & SMTP_EXT_DSN) {
		if (r->notify & QUEUE_NOTIFY_NEVER)
			ADDP(" NOTIFY=NEVER");
		else if (r->notify != 0)
			ADDP(" NOTIFY=%s%s%s%s%s",
			    r->notify & QUEUE_NOTIFY_SUCCESS ? "SUCCESS" : "",
			    (r->notify & QUEUE_NOTIFY_SUCCESS) &&
			    (r->notify & (QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY)) ? "," : "",
			    r->notify & QUEUE_NOTIFY_FAILURE ? "FAILURE" : "",
			    (r->notify & QUEUE_NOTIFY_FAILURE) &&
			    (r->notify & QUEUE_NOTIFY_DELAY) ? "," : "",
			    r->notify & QUEUE_NOTIFY_DELAY ? "DELAY" : "");
		/* stored as "addr-type;address", the address decoded */
		if (r->orcpt != NULL && (semi = strchr(r->orcpt, ';')) != NULL) {
			xtext(semi + 1, enc, sizeof(enc));
			ADDP(" ORCPT=%.*s;%s", (int)(semi - r->orcpt), r->orcpt, enc);
		}
	}
#undef ADDP
	cl_cmd(c, "RCPT TO:<%s>%s", r->addr, params);
}

/*
 * cl_pump_cmds - send what may be sent now: with PIPELINING, MAIL, every
 * RCPT and DATA in one go (RFC 2920 3.1: DATA is the last command of the
 * group); without it, the next command once the last reply is in.
 */
static void
cl_pump_cmds(struct smtp_client *c)
{
	for (;;) {
		if (c->closing || (!c->pipelining && c->outstanding > 0))
			break;
		if (c->send_state == CL_S_MAIL) {
			cl_send_mail(c);
			c->mail_sent = 1;
			c->outstanding++;
			cl_enter(c, CL_S_RCPT, c->recv_state);
			c->send_rcpt = 0;
			continue;
		}
		if (c->send_state == CL_S_RCPT) {
			if (c->send_rcpt < c->d->nrcpt) {
				cl_send_rcpt(c, &c->d->rcpt[c->send_rcpt++]);
				c->outstanding++;
				continue;
			}
			cl_enter(c, CL_S_DATA, c->recv_state);
			continue;
		}
		if (c->send_state == CL_S_DATA) {
			/* one at a time, we know by now whether DATA is worth it */
			if (!c->pipelining && c->accepted == 0) {
				cl_tx_end(c);
				return;
			}
			cl_cmd(c, "DATA");
			c->outstanding++;
			/* the body waits for 354 */
			cl_enter(c, CL_S_BODY, c->recv_state);
		}
		break;
	}
	cl_timer_cmd(c);
	cl_flush(c);
}

/* cl_on_reply - one complete reply for recv_state */
static void
cl_on_reply(struct smtp_client *c, const struct smtp_reply *r)
{
	struct smtp_rcpt_result *rr;
	int cls = r->code / 100;

	cl_log(c, LOG_DEBUG, "%s: < %d %s", c->name, r->code, r->text);
	if (c->reuse_pending && r->code == 421 && cl_reconnect(c))
		return;
	if (c->recv_state != CL_S_IDLE)
		c->reuse_pending = 0;
	switch (c->recv_state) {
	case CL_S_GREETING:
		if (cls != 2) {
			/* Postfix's smtp_skip_5xx_greeting: try elsewhere later */
			cl_site_fail(c, SMTP_VERDICT_DEFERRED, r);
			return;
		}
		snprintf(c->res.greeting, sizeof(c->res.greeting), "%.*s",
		    (int)strcspn(r->text, " "), r->text);
		cl_send_ehlo(c);
		return;
	case CL_S_EHLO:
	case CL_S_HELO:
		if (cls != 2) {
			if (c->recv_state == CL_S_EHLO && cls == 5) {
				/* RFC 5321 3.2: an old server; try HELO */
				memset(&c->res.ext, 0, sizeof(c->res.ext));
				c->esmtp = 0;
				cl_cmd(c, "HELO %s", c->d->helo);
				cl_enter(c, CL_S_HELO, CL_S_HELO);
				cl_timer_cmd(c);
				cl_flush(c);
				return;
			}
			cl_site_fail(c, cls == 5 ? SMTP_VERDICT_BOUNCED :
			    SMTP_VERDICT_DEFERRED, r);
			return;
		}
		c->esmtp = c->recv_state == CL_S_EHLO;
		if (c->ssl == NULL && c->d->tls != SMTP_TLS_NONE &&
		    c->d->tls_ctx != NULL &&
		    (c->res.ext.flags & SMTP_EXT_STARTTLS)) {
			cl_cmd(c, "STARTTLS");
			cl_enter(c, CL_S_STARTTLS, CL_S_STARTTLS);
			cl_timer_cmd(c);
			cl_flush(c);
			return;
		}
		if (c->ssl == NULL && c->d->tls == SMTP_TLS_ENCRYPT) {
			c->stage = "STARTTLS";
			set_local(c, SMTP_VERDICT_DEFERRED, NULL, "4.7.4",
			    "TLS is required, but was not offered by host");
			snprintf(c->local.text, sizeof(c->local.text),
			    "TLS is required, but was not offered by host %s",
			    c->name);
			cl_log(c, LOG_INFO, "%s: %s", c->name, c->local.text);
			cl_quit(c);
			return;
		}
		cl_begin_tx(c);
		return;
	case CL_S_STARTTLS:
		if (cls != 2) {
			/* offered, then refused: see smtp.h, not a fallback */
			cl_site_fail(c, SMTP_VERDICT_DEFERRED, r);
			return;
		}
		/*
		 * RFC 3207 4.2 / CVE-2011-0411: anything that came after the
		 * 220 in plaintext was not from inside TLS; throw it away.
		 */
		c->rlen = 0;
		c->drop_input = 1;
		cl_tls_start(c);
		return;
	case CL_S_MAIL:
		c->outstanding--;
		c->mail_rep = *r;
		if (cls != 2 && !c->pipelining) {
			cl_tx_end(c);
			return;
		}
		cl_enter(c, c->send_state, CL_S_RCPT);
		c->recv_rcpt = 0;
		cl_pump_cmds(c);
		return;
	case CL_S_RCPT:
		c->outstanding--;
		rr = &c->rr[c->recv_rcpt++];
		rr->reply = *r;
		if (cls == 2 && c->mail_rep.code / 100 == 2)
			c->accepted++;
		if (c->recv_rcpt == c->d->nrcpt)
			cl_enter(c, c->send_state, CL_S_DATA);
		if (!c->pipelining && c->mail_rep.code / 100 != 2) {
			cl_tx_end(c);
			return;
		}
		cl_pump_cmds(c);
		return;
	case CL_S_DATA:
		c->outstanding--;
		c->data_rep = *r;
		if (r->code == 354 && c->accepted > 0) {
			cl_body_start(c);
			return;
		}
		if (r->code == 354) {
			/*
			 * Pipelined, nobody accepted, and the server still wants
			 * the message (RFC 2920 3.1 says it must not): an empty
			 * message ends it.
			 */
			c->empty_dot = 1;
			cl_cmd(c, ".");
			cl_enter(c, CL_S_DOT, CL_S_DOT);
			cl_timer_cmd(c);
			cl_flush(c);
			return;
		}
		cl_tx_end(c);
		return;
	case CL_S_DOT:
		if (!c->empty_dot)
			c->dot_rep = *r;
		cl_tx_end(c);
		return;
	case CL_S_RSET:
		if (cls == 2)
			cl_park(c);
		else
			cl_quit(c);
		return;
	case CL_S_IDLE:
		/* often 421 before a close: the server is done with us */
		cl_fail(c, UV_ECONNRESET, "4.4.2", "%s closed the cached "
		    "connection: %d %s", c->name, r->code, r->text);
		return;
	case CL_S_QUIT:
		cl_enter(c, CL_S_DONE, CL_S_DONE);
		cl_close(c);
		return;
	case CL_S_BODY:
	case CL_S_CONNECT:
	case CL_S_TLS:
	case CL_S_DONE:
		break;
	}
	/* A reply nothing asked for (often 421 before a close). */
	cl_fail(c, UV_EPROTO, "4.5.0", "unexpected reply from %s %s: %d %s",
	    c->name, cl_while(c->recv_state), r->code, r->text);
}

/* cl_on_plain - plaintext from the server: replies, line by line */
static void
cl_on_plain(struct smtp_client *c, const char *p, size_t n)
{
	const char *t;
	size_t k, tl;
	long used;

	while (n > 0 && !c->closing) {
		if ((k = sizeof(c->rbuf) - c->rlen) == 0) {
			cl_fail(c, UV_EPROTO, "4.5.0", "reply line too long "
			    "from %s %s", c->name, cl_while(c->recv_state));
			return;
		}
		if (k > n)
			k = n;
		memcpy(c->rbuf + c->rlen, p, k);
		c->rlen += k;
		p += k;
		n -= k;
		while (!c->closing && c->rlen > 0) {
			used = smtp_reply_parse(&c->rep, c->rbuf, c->rlen, &t, &tl);
			if (used < 0) {
				cl_fail(c, UV_EPROTO, "4.5.0", "malformed reply "
				    "from %s %s", c->name,
				    cl_while(c->recv_state));
				return;
			}
			if (used == 0)
				break;
			if (c->recv_state == CL_S_EHLO && c->rep.nlines > 1)
				smtp_ehlo_line(&c->res.ext, t, tl);
			/* t points into rbuf: done with it before the move */
			memmove(c->rbuf, c->rbuf + used, c->rlen - (size_t)used);
			c->rlen -= (size_t)used;
			if (c->rep.done)
				cl_on_reply(c, &c->rep);
			if (c->drop_input) {
				/* the rest of this read, too (see CL_S_STARTTLS) */
				c->drop_input = 0;
				c->rlen = 0;
				return;
			}
		}
	}
}

static void
cl_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct smtp_client *c = h->data;

	*buf = uv_buf_init(c->ibuf, sizeof(c->ibuf));
}

static void
cl_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct smtp_client *c = st->data;

	if (c->closing || nread == 0)
		return;
	if (nread < 0) {
		if (nread == UV_EOF)
			cl_fail(c, UV_EOF, "4.4.2", "lost connection with %s %s",
			    c->name, cl_while(c->recv_state));
		else
			cl_fail(c, (int)nread, "4.4.2", "lost connection with "
			    "%s %s: %s", c->name, cl_while(c->recv_state),
			    uv_strerror((int)nread));
		return;
	}
	if (c->ssl != NULL)
		cl_tls_feed(c, buf->base, (size_t)nread);
	else
		cl_on_plain(c, buf->base, (size_t)nread);
}

static void
cl_connect_cb(uv_connect_t *req, int status)
{
	struct smtp_client *c = req->data;
	int rc;

	if (c->closing)
		return;
	if (status < 0) {
		cl_fail(c, status, "4.4.1", "connect to %s: %s", c->name,
		    uv_strerror(status));
		return;
	}
	c->res.connected = 1;
	cl_log(c, LOG_DEBUG, "%s: connected", c->name);
	if (c->cache != NULL) {
		c->open_reported = 1;
		if (c->cache->o.event != NULL)
			c->cache->o.event(c->cache->o.arg, SMTP_CONN_OPEN);
	}
	if ((rc = uv_read_start((uv_stream_t *)&c->tcp, cl_alloc_cb,
	    cl_read_cb)) < 0) {
		cl_fail(c, rc, "4.4.2", "lost connection with %s: %s", c->name,
		    uv_strerror(rc));
		return;
	}
	cl_enter(c, CL_S_GREETING, CL_S_GREETING);
	cl_timer(c, ms_or(c->d->timeouts.greeting_ms, CL_DEF_GREETING_MS));
}

/* ---- the end ------------------------------------------------------------------ */

/* cl_results - every recipient's verdict and the reason for it */
static void
cl_results(struct smtp_client *c)
{
	struct smtp_result *res = &c->res;
	const struct smtp_reply *why;
	struct smtp_rcpt_result *rr;
	size_t i;
	int mail = c->mail_rep.code, data = c->data_rep.code,
	    dot = c->dot_rep.code;

	if (res->reply.code == 0 && res->reply.text[0] == '\0') {
		if (mail != 0 && mail / 100 != 2)
			res->reply = c->mail_rep;
		else if (data != 0 && data != 354)
			res->reply = c->data_rep;
		else if (dot != 0)
			res->reply = c->dot_rep;
		else if (c->local_set)
			res->reply = c->local;
	}
	for (i = 0; i < c->d->nrcpt; i++) {
		rr = &c->rr[i];
		why = NULL;
		if (mail / 100 != 2)
			why = mail != 0 ? &c->mail_rep : NULL;
		else if (rr->reply.code / 100 != 2)
			why = rr->reply.code != 0 ? &rr->reply : NULL;
		else if (data != 354)
			why = data != 0 ? &c->data_rep : NULL;
		else
			why = dot != 0 ? &c->dot_rep : NULL;
		if (why == NULL) {
			/* the session never got there: the client's reason */
			rr->verdict = c->local_set ? c->local_verdict :
			    SMTP_VERDICT_DEFERRED;
			if (c->local_set)
				rr->reply = c->local;
			else {
				memset(&rr->reply, 0, sizeof(rr->reply));
				snprintf(rr->reply.status, sizeof(rr->reply.status), "4.4.2");
				snprintf(rr->reply.text, sizeof(rr->reply.text),
				    "lost connection with %s", c->name);
			}
		} else {
			rr->verdict = smtp_verdict(mail, rr->reply.code, data, dot);
			if (why != &rr->reply)
				rr->reply = *why;
			if (rr->reply.status[0] == '\0')
				snprintf(rr->reply.status, sizeof(rr->reply.status),
				    "%d.0.0", rr->reply.code / 100);
		}
		switch (rr->verdict) {
		case SMTP_VERDICT_SENT: res->nsent++; break;
		case SMTP_VERDICT_BOUNCED: res->nbounced++; break;
		case SMTP_VERDICT_DEFERRED: res->ndeferred++; break;
		}
	}
	res->stage = c->stage != NULL ? c->stage : cl_strstate(c->recv_state);
	res->nrcpt = c->d->nrcpt;
	res->rcpt = c->rr;
}

/* cc_unref - drop one reference to the cache; the last one frees it */
static void
cc_unref(struct smtp_client_cache *cc)
{
	if (--cc->refs == 0)
		free(cc);
}

static void
cl_free(struct smtp_client *c)
{
	smtp__ochain_reset(&c->pout);
	smtp__ochain_reset(&c->wire);
	smtp__oblock_free_list(c->inflight);
	SSL_free(c->ssl);       /* and its BIOs */
	queue_reader_close(c->pump.qr);
	free(c->pump.buf);
	free(c->rr);
	if (c->cache != NULL)
		cc_unref(c->cache);
	free(c);
}

/* cl_report - the results to the delivery's callback (which is used up) */
static void
cl_report(struct smtp_client *c)
{
	smtp_client_cb cb = c->cb;

	c->cb = NULL;
	cl_results(c);
	cl_log(c, LOG_INFO, "%s: done at %s: %zu sent, %zu deferred, %zu bounced%s",
	    c->name, c->res.stage, c->res.nsent, c->res.ndeferred,
	    c->res.nbounced, c->res.cached ? ", connection cached" : "");
	cb(c->arg, &c->res);
}

/* cl_maybe_free - once nothing refers to the client: the callback, then free */
static void
cl_maybe_free(struct smtp_client *c)
{
	if (c->refs > 0)
		return;
	if (c->cb != NULL)
		cl_report(c);
	cl_free(c);
}

static void
cl_handle_closed(uv_handle_t *h)
{
	struct smtp_client *c = h->data;

	c->refs--;
	cl_maybe_free(c);
}

/* cl_uncount - the connection no longer counts as open (events, limit) */
static void
cl_uncount(struct smtp_client *c)
{
	struct smtp_client_cache *cc = c->cache;

	if (cc == NULL)
		return;
	if (c->open_reported && cc->o.event != NULL)
		cc->o.event(cc->o.arg, SMTP_CONN_CLOSE);
	c->open_reported = 0;
	if (c->conn_slot)
		cc->nconns--;
	c->conn_slot = 0;
}

/* cl_close - close everything; the callback runs when it is all gone */
static void
cl_close(struct smtp_client *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (c->idle)
		cl_cache_unlink(c);
	cl_uncount(c);
	uv_timer_stop(&c->timer);
	/* a read not started yet need not run (pump_after gets UV_ECANCELED) */
	if (c->pump.busy)
		uv_cancel((uv_req_t *)&c->pump.work);
	uv_close((uv_handle_t *)&c->tcp, cl_handle_closed);
	uv_close((uv_handle_t *)&c->timer, cl_handle_closed);
}

/* ---- the connection cache ------------------------------------------------------- */

int
smtp_client_cache_new(uv_loop_t *loop, const struct smtp_client_cache_opts *opts,
    struct smtp_client_cache **out)
{
	struct smtp_client_cache *cc;

	*out = NULL;
	if ((cc = calloc(1, sizeof(*cc))) == NULL)
		return -ENOMEM;
	cc->loop = loop;
	if (opts != NULL)
		cc->o = *opts;
	cc->refs = 1;
	*out = cc;
	return 0;
}

size_t
smtp_client_cache_idle(const struct smtp_client_cache *cc)
{
	return cc != NULL ? cc->nidle : 0;
}

void
smtp_client_cache_set_idle(struct smtp_client_cache *cc, unsigned idle_ms)
{
	cc->o.idle_ms = idle_ms;
	while (idle_ms == 0 && cc->head != NULL)
		cl_idle_quit(cc->head);
}

void
smtp_client_cache_free(struct smtp_client_cache *cc)
{
	if (cc == NULL)
		return;
	/* shutdown: no QUIT, the loop is about to end */
	while (cc->head != NULL)
		cl_close(cc->head);
	cc->dead = 1;
	cc->o.event = NULL;
	cc->o.log = NULL;
	cc_unref(cc);
}

/* cl_cache_unlink - out of the idle list */
static void
cl_cache_unlink(struct smtp_client *c)
{
	struct smtp_client_cache *cc = c->cache;

	if (!c->idle)
		return;
	if (c->cprev != NULL)
		c->cprev->cnext = c->cnext;
	else
		cc->head = c->cnext;
	if (c->cnext != NULL)
		c->cnext->cprev = c->cprev;
	else
		cc->tail = c->cprev;
	c->cprev = c->cnext = NULL;
	c->idle = 0;
	cc->nidle--;
}

/* cl_idle_quit - an idle connection leaves the cache politely */
static void
cl_idle_quit(struct smtp_client *c)
{
	cl_cache_unlink(c);
	cl_log(c, LOG_DEBUG, "%s: closing idle cached connection", c->name);
	cl_quit(c);
}

/* cl_cacheable - the session may wait in the cache after this transaction */
static int
cl_cacheable(const struct smtp_client *c)
{
	const struct smtp_client_cache *cc = c->cache;

	return cc != NULL && !cc->dead && cc->o.idle_ms > 0 &&
	    c->dest[0] != '\0' && !c->closing && c->rlen == 0 &&
	    c->outstanding == 0 && !c->pump.busy && !c->drop_input &&
	    (c->ssl == NULL || c->tls_ready);
}

/*
 * cl_tx_end - the transaction is settled: into the cache (RSET first
 * when something is left to undo), or QUIT.
 */
static void
cl_tx_end(struct smtp_client *c)
{
	if (!cl_cacheable(c)) {
		cl_quit(c);
		return;
	}
	if (!c->mail_sent || (c->dot_rep.code / 100 == 2 && !c->empty_dot)) {
		cl_park(c);
		return;
	}
	cl_cmd(c, "RSET");
	cl_enter(c, CL_S_RSET, CL_S_RSET);
	cl_timer_cmd(c);
	cl_flush(c);
}

/*
 * cl_park - report to the delivery, forget it, then wait in the cache.  The
 * callback runs before the connection is in the list: a delivery it starts
 * cannot find this one, which is still busy reporting.
 */
static void
cl_park(struct smtp_client *c)
{
	struct smtp_client_cache *cc = c->cache;

	cl_enter(c, CL_S_DONE, CL_S_DONE);
	uv_timer_stop(&c->timer);
	c->res.cached = 1;
	cl_report(c);
	c->d = NULL;
	c->arg = NULL;
	free(c->rr);
	c->rr = NULL;
	if (c->closing)
		return;
	if (cc->dead) {
		cl_close(c);
		return;
	}
	if (cc->o.idle_ms == 0) {
		cl_quit(c);
		return;
	}
	cl_enter(c, CL_S_IDLE, CL_S_IDLE);
	c->cprev = cc->tail;
	c->cnext = NULL;
	if (cc->tail != NULL)
		cc->tail->cnext = c;
	else
		cc->head = c;
	cc->tail = c;
	c->idle = 1;
	cc->nidle++;
	cl_timer(c, cc->o.idle_ms);
}

/* cl_make_room - close the oldest idle connections above max_conns */
static void
cl_make_room(struct smtp_client_cache *cc)
{
	while (cc->o.max_conns > 0 && cc->nconns >= cc->o.max_conns &&
	    cc->head != NULL)
		cl_close(cc->head);
}

/* sa_eq - the same address and port */
static int
sa_eq(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)a,
	    *b4 = (const struct sockaddr_in *)b;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a,
	    *b6 = (const struct sockaddr_in6 *)b;

	if (a->ss_family != b->sa_family)
		return 0;
	if (b->sa_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	return a6->sin6_port == b6->sin6_port &&
	    memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0 &&
	    a6->sin6_scope_id == b6->sin6_scope_id;
}

/* cl_cache_find - the most recently cached connection for d, or NULL */
static struct smtp_client *
cl_cache_find(const struct smtp_delivery *d)
{
	struct smtp_client *c;

	if (d->cache == NULL || d->dest == NULL || d->cache->dead ||
	    d->cache->o.idle_ms == 0)
		return NULL;
	for (c = d->cache->tail; c != NULL; c = c->cprev)
		if (!c->closing && c->tls == d->tls && sa_eq(&c->ss, d->addr) &&
		    strcmp(c->dest, d->dest) == 0 && strcmp(c->helo, d->helo) == 0)
			return c;
	return NULL;
}

/* cl_tx_reset - a new transaction on a connection that knows its server */
static void
cl_tx_reset(struct smtp_client *c)
{
	struct smtp_result keep = c->res;

	memset(&c->res, 0, sizeof(c->res));
	c->res.connected = 1;
	memcpy(c->res.greeting, keep.greeting, sizeof(keep.greeting));
	memcpy(c->res.tls_version, keep.tls_version, sizeof(keep.tls_version));
	memcpy(c->res.tls_cipher, keep.tls_cipher, sizeof(keep.tls_cipher));
	c->res.ext = keep.ext;
	memset(&c->mail_rep, 0, sizeof(c->mail_rep));
	memset(&c->data_rep, 0, sizeof(c->data_rep));
	memset(&c->dot_rep, 0, sizeof(c->dot_rep));
	memset(&c->local, 0, sizeof(c->local));
	c->local_set = 0;
	c->stage = NULL;
	c->send_rcpt = c->recv_rcpt = 0;
	c->outstanding = 0;
	c->empty_dot = c->end_sent = c->mail_sent = 0;
	c->accepted = 0;
	c->pump.eof = 0;
	c->pump.n = 0;
}

/* cl_reuse_cb - a cached connection's delivery starts (after deliver returned) */
static void
cl_reuse_cb(uv_timer_t *t)
{
	struct smtp_client *c = t->data;

	cl_log(c, LOG_DEBUG, "%s: reusing cached connection", c->name);
	cl_begin_tx(c);
}

/* cl_reuse - hand the idle connection c to d */
static int
cl_reuse(struct smtp_client *c, const struct smtp_delivery *d,
    smtp_client_cb cb, void *arg)
{
	struct smtp_rcpt_result *rr;

	if ((rr = calloc(d->nrcpt, sizeof(*rr))) == NULL)
		return -ENOMEM;
	cl_cache_unlink(c);
	c->d = d;
	c->cb = cb;
	c->arg = arg;
	c->rr = rr;
	cl_tx_reset(c);
	c->res.reused = 1;
	c->reuse_pending = 1;
	/* still CL_S_IDLE: a hang-up before MAIL goes out reconnects too */
	uv_timer_start(&c->timer, cl_reuse_cb, 0, 0);
	return 0;
}

/* ---- the entry point ---------------------------------------------------------- */

/* cl_new - a client for d, not connected; NULL on OOM */
static struct smtp_client *
cl_new(uv_loop_t *loop, const struct smtp_delivery *d, smtp_client_cb cb,
    void *arg)
{
	struct smtp_client *c;
	const void *ap;
	int port;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	if ((c->rr = calloc(d->nrcpt, sizeof(*c->rr))) == NULL) {
		free(c);
		return NULL;
	}
	c->loop = loop;
	c->d = d;
	c->cb = cb;
	c->arg = arg;
	if (d->addr->sa_family == AF_INET) {
		memcpy(&c->ss, d->addr, sizeof(struct sockaddr_in));
		ap = &((const struct sockaddr_in *)d->addr)->sin_addr;
		port = ntohs(((const struct sockaddr_in *)d->addr)->sin_port);
	} else {
		memcpy(&c->ss, d->addr, sizeof(struct sockaddr_in6));
		ap = &((const struct sockaddr_in6 *)d->addr)->sin6_addr;
		port = ntohs(((const struct sockaddr_in6 *)d->addr)->sin6_port);
	}
	inet_ntop(d->addr->sa_family, ap, c->addr, sizeof(c->addr));
	/* Postfix: host[addr]:port */
	snprintf(c->name, sizeof(c->name), "%.*s[%s]:%d", SMTP__DOMAIN_MAX,
	    d->host != NULL ? d->host : "", c->addr, port);
	if (d->cache != NULL) {
		c->cache = d->cache;
		c->cache->refs++;
		c->tls = d->tls;
		/* a key that does not fit is no key: never cached */
		if (d->dest != NULL && strlen(d->dest) < sizeof(c->dest) &&
		    strlen(d->helo) < sizeof(c->helo)) {
			memcpy(c->dest, d->dest, strlen(d->dest) + 1);
			memcpy(c->helo, d->helo, strlen(d->helo) + 1);
		}
	}
	return c;
}

/*
 * cl_connect - start the TCP connection.  0, or an error after which the
 * client is freed without its callback.
 */
static int
cl_connect(struct smtp_client *c)
{
	int rc;

	if (c->cache != NULL)
		cl_make_room(c->cache);
	if ((rc = uv_tcp_init(c->loop, &c->tcp)) < 0) {
		cl_free(c);
		return rc;
	}
	c->tcp.data = c;
	c->refs = 1;
	if (c->cache != NULL) {
		c->conn_slot = 1;
		c->cache->nconns++;
	}
	if ((rc = uv_timer_init(c->loop, &c->timer)) < 0)
		goto fail;
	c->timer.data = c;
	c->refs = 2;
	c->creq.data = c;
	cl_enter(c, CL_S_CONNECT, CL_S_CONNECT);
	if ((rc = uv_tcp_connect(&c->creq, &c->tcp,
	    (const struct sockaddr *)&c->ss, cl_connect_cb)) < 0)
		goto fail;
	uv_tcp_nodelay(&c->tcp, 1);
	cl_timer(c, ms_or(c->d->timeouts.connect_ms, CL_DEF_CONNECT_MS));
	return 0;
fail:
	/*
	 * The handles exist: they are closed, and the client freed in the
	 * close callbacks, without cb (we return the error instead).
	 */
	c->cb = NULL;
	c->closing = 1;
	cl_uncount(c);
	uv_close((uv_handle_t *)&c->tcp, cl_handle_closed);
	if (c->refs == 2)
		uv_close((uv_handle_t *)&c->timer, cl_handle_closed);
	return rc;
}

/*
 * cl_reconnect - the cached connection of c died before its first reply:
 * the delivery starts over on a new connection, c closes without a word.
 * 0 when that cannot start (c then reports the failure itself).
 */
static int
cl_reconnect(struct smtp_client *c)
{
	struct smtp_client *nc;

	c->reuse_pending = 0;
	if (c->d == NULL || c->cb == NULL)
		return 0;
	/* c's slot is free for nc */
	cl_uncount(c);
	if ((nc = cl_new(c->loop, c->d, c->cb, c->arg)) == NULL ||
	    cl_connect(nc) != 0)
		return 0;
	cl_log(c, LOG_DEBUG, "%s: cached connection lost, connecting again",
	    c->name);
	c->cb = NULL;
	c->d = NULL;
	cl_close(c);
	return 1;
}

int
smtp_client_deliver(uv_loop_t *loop, const struct smtp_delivery *d,
    smtp_client_cb cb, void *arg)
{
	struct smtp_client *c;

	if (d == NULL || cb == NULL || d->addr == NULL || d->qf == NULL ||
	    d->path == NULL || d->rcpt == NULL || d->nrcpt == 0 ||
	    d->helo == NULL || d->helo[0] == '\0')
		return -EINVAL;
	if (d->addr->sa_family != AF_INET && d->addr->sa_family != AF_INET6)
		return -EINVAL;
	if (d->tls == SMTP_TLS_ENCRYPT && d->tls_ctx == NULL)
		return -EINVAL;
	if ((c = cl_cache_find(d)) != NULL)
		return cl_reuse(c, d, cb, arg);
	if ((c = cl_new(loop, d, cb, arg)) == NULL)
		return -ENOMEM;
	return cl_connect(c);
}
