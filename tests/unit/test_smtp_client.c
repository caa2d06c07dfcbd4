/*
 * test_smtp_client.c - the delivery client's pure parts: the reply parser
 * (multi-line, enhanced codes, garbage, limits), EHLO keywords, the
 * dot-stuffing streamer across chunk boundaries, the verdict table; and
 * loop tests: a refused connection defers every recipient, and the
 * connection cache against a small scripted server on the same loop
 * (reuse, RSET, reconnecting when a cached connection died, the server
 * closing an idle one, the idle timeout, shutdown).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtp/smtp.h"
#include "tests/unit/test.h"

/* parse_all - feed s to a fresh parser, all at once; bytes used, or -1 */
static long
parse_all(struct smtp_reply *r, const char *s)
{
	size_t len = strlen(s), off = 0;
	long n;

	memset(r, 0, sizeof(*r));
	while (off < len) {
		if ((n = smtp_reply_parse(r, s + off, len - off, NULL, NULL)) < 0)
			return -1;
		if (n == 0)
			break;
		off += (size_t)n;
		if (r->done)
			break;
	}
	return (long)off;
}

TEST(smtp_client_reply_single)
{
	struct smtp_reply r;

	T_EQ(parse_all(&r, "250 2.1.0 Ok\r\n"), 14);
	T_TRUE(r.done);
	T_EQ(r.code, 250);
	T_STREQ(r.status, "2.1.0");
	T_STREQ(r.text, "2.1.0 Ok");

	/* just the code; a bare LF ends a line too */
	T_EQ(parse_all(&r, "354\n"), 4);
	T_TRUE(r.done);
	T_EQ(r.code, 354);
	T_STREQ(r.status, "");
	T_STREQ(r.text, "");

	/* no enhanced code; one whose class is not the reply's; a bad one */
	parse_all(&r, "220 mx.example ESMTP\r\n");
	T_STREQ(r.status, "");
	parse_all(&r, "250 5.1.1 odd\r\n");
	T_STREQ(r.status, "");
	parse_all(&r, "550 5.1 short\r\n");
	T_STREQ(r.status, "");
	parse_all(&r, "550 5.1.1000 long detail\r\n");
	T_STREQ(r.status, "");
	parse_all(&r, "550 5.1.1x\r\n");
	T_STREQ(r.status, "");
	parse_all(&r, "451 4.7.650 greylisted\r\n");
	T_STREQ(r.status, "4.7.650");
	parse_all(&r, "554 5.7.1\r\n");
	T_STREQ(r.status, "5.7.1");
}

TEST(smtp_client_reply_multiline)
{
	static const char s[] =
	    "250-mx.example Hello\r\n"
	    "250-PIPELINING\r\n"
	    "250-SIZE 10240000\r\n"
	    "250 8BITMIME\r\n"
	    "250 next reply\r\n";
	struct smtp_reply r;
	const char *t;
	size_t tl, off = 0;
	long n;
	int lines = 0;

	memset(&r, 0, sizeof(r));
	for (;;) {
		n = smtp_reply_parse(&r, s + off, sizeof(s) - 1 - off, &t, &tl);
		T_TRUE(n > 0);
		off += (size_t)n;
		lines++;
		if (lines == 2)
			T_MEMEQ(t, tl, "PIPELINING", (size_t)10);
		if (r.done)
			break;
		T_EQ(r.code, 250);
	}
	T_EQ(lines, 4);
	T_EQ(r.nlines, 4);
	T_STREQ(r.text, "mx.example Hello PIPELINING SIZE 10240000 8BITMIME");
	/* the next call starts a new reply by itself */
	n = smtp_reply_parse(&r, s + off, sizeof(s) - 1 - off, &t, &tl);
	T_EQ(n, 16);
	T_TRUE(r.done);
	T_STREQ(r.text, "next reply");

	/* enhanced code from the first line only */
	T_TRUE(parse_all(&r, "550-5.1.1 first\r\n550 5.7.1 second\r\n") > 0);
	T_STREQ(r.status, "5.1.1");
	T_STREQ(r.text, "5.1.1 first 5.7.1 second");
}

TEST(smtp_client_reply_split)
{
	static const char s[] = "451-4.3.0 one\r\n451-two\r\n451 4.3.0 three\r\n";
	size_t len = sizeof(s) - 1, cut, i, have, off;
	struct smtp_reply r;
	char buf[128];
	long n;

	/* every split point, bytes arriving in two pieces into a buffer */
	for (cut = 0; cut <= len; cut++) {
		memset(&r, 0, sizeof(r));
		have = 0;
		off = 0;
		for (i = 0; i < 2; i++) {
			size_t add = i == 0 ? cut : len - cut;

			memcpy(buf + have, s + (i == 0 ? 0 : cut), add);
			have += add;
			n = 0;
			while (!r.done && (n = smtp_reply_parse(&r, buf + off,
			    have - off, NULL, NULL)) > 0) {
				off += (size_t)n;
				if (r.done)
					break;
			}
			T_TRUE(n >= 0);
		}
		T_TRUE(r.done);
		T_EQ(off, len);
		T_EQ(r.code, 451);
		T_STREQ(r.status, "4.3.0");
		T_STREQ(r.text, "4.3.0 one two 4.3.0 three");
	}
	/* an incomplete line is not consumed */
	memset(&r, 0, sizeof(r));
	T_EQ(smtp_reply_parse(&r, "250 Ok", 6, NULL, NULL), 0);
	T_EQ(r.nlines, 0);
}

TEST(smtp_client_reply_garbage)
{
	static const char *bad[] = {
		"hello\r\n", "25\r\n", "2x0 Ok\r\n", "250x Ok\r\n",
		"150 not smtp\r\n", "650 no such class\r\n", "\r\n",
		"250_Ok\r\n", "-250 Ok\r\n",
	};
	struct smtp_reply r;
	size_t i;
	char *big;
	long n;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&r, 0, sizeof(r));
		if (smtp_reply_parse(&r, bad[i], strlen(bad[i]), NULL, NULL) != -1)
			T_FAIL("accepted \"%s\"", bad[i]);
	}
	/* a different code inside a multi-line reply */
	T_EQ(parse_all(&r, "250-a\r\n251 b\r\n"), -1);

	/* a line over the limit, with and without its end */
	big = malloc(SMTP_REPLY_LINE_MAX + 16);
	T_TRUE(big != NULL);
	memset(big, 'x', SMTP_REPLY_LINE_MAX + 16);
	memcpy(big, "250 ", 4);
	memset(&r, 0, sizeof(r));
	T_EQ(smtp_reply_parse(&r, big, SMTP_REPLY_LINE_MAX + 1, NULL, NULL), 0);
	T_EQ(smtp_reply_parse(&r, big, SMTP_REPLY_LINE_MAX + 2, NULL, NULL), -1);
	memcpy(big + SMTP_REPLY_LINE_MAX + 1, "\r\n", 2);
	T_EQ(smtp_reply_parse(&r, big, SMTP_REPLY_LINE_MAX + 3, NULL, NULL), -1);
	/* exactly at the limit: taken, the text cut to what fits */
	memcpy(big + SMTP_REPLY_LINE_MAX, "\r\n", 2);
	n = smtp_reply_parse(&r, big, SMTP_REPLY_LINE_MAX + 2, NULL, NULL);
	T_EQ(n, SMTP_REPLY_LINE_MAX + 2);
	T_EQ(strlen(r.text), SMTP_REPLY_TEXT_MAX - 1);
	free(big);

	/* too many lines */
	memset(&r, 0, sizeof(r));
	for (i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		T_EQ(smtp_reply_parse(&r, "250-x\r\n", 7, NULL, NULL), 7);
	T_EQ(smtp_reply_parse(&r, "250 x\r\n", 7, NULL, NULL), -1);
}

TEST(smtp_client_ehlo_keywords)
{
	static const char *lines[] = {
		"PIPELINING", "size 35882577", "8BITMIME", "SMTPUTF8",
		"STARTTLS", "DSN", "ENHANCEDSTATUSCODES", "CHUNKING",
		"AUTH PLAIN LOGIN", "ETRN", "8BITMIMEX", "X-UNKNOWN foo",
	};
	struct smtp_ext x;
	size_t i;

	memset(&x, 0, sizeof(x));
	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		smtp_ehlo_line(&x, lines[i], strlen(lines[i]));
	T_EQ(x.flags, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME |
	    SMTP_EXT_SMTPUTF8 | SMTP_EXT_STARTTLS | SMTP_EXT_DSN |
	    SMTP_EXT_ENHANCEDSTATUSCODES | SMTP_EXT_CHUNKING);
	T_EQ(x.size, 35882577);

	memset(&x, 0, sizeof(x));
	smtp_ehlo_line(&x, "SIZE", 4);
	T_EQ(x.flags, SMTP_EXT_SIZE);
	T_EQ(x.size, 0);
	smtp_ehlo_line(&x, "SIZE 0", 6);
	T_EQ(x.size, 0);
	smtp_ehlo_line(&x, "SIZE 99999999999999999999999", 28);
	T_EQ(x.size, 0);
	/* only len bytes count */
	memset(&x, 0, sizeof(x));
	smtp_ehlo_line(&x, "DSNX", 3);
	T_EQ(x.flags, SMTP_EXT_DSN);
	smtp_ehlo_line(&x, "", 0);
	T_EQ(x.flags, SMTP_EXT_DSN);
}

/* ---- dot-stuffing ---------------------------------------------------------- */

struct obuf {
	char *p;
	size_t len, cap;
};

static void
obuf_emit(void *arg, const char *p, size_t len)
{
	struct obuf *o = arg;

	if (o->len + len > o->cap) {
		o->cap = (o->len + len) * 2 + 64;
		o->p = realloc(o->p, o->cap);
		if (o->p == NULL)
			abort();
	}
	memcpy(o->p + o->len, p, len);
	o->len += len;
}

/* stuff - the whole of in, in pieces of the given sizes (cycled) */
static void
stuff(const char *in, size_t len, const size_t *cuts, size_t ncuts,
    struct obuf *o)
{
	struct smtp_dotstuff ds;
	size_t off = 0, i = 0, k;

	o->len = 0;
	smtp_dotstuff_init(&ds);
	while (off < len) {
		k = cuts[i++ % ncuts];
		if (k > len - off)
			k = len - off;
		smtp_dotstuff(&ds, in + off, k, obuf_emit, o);
		off += k;
	}
	smtp_dotstuff_end(&ds, obuf_emit, o);
}

/* unstuff - the receiver's side (RFC 5321 4.5.2): drop ".\r\n", undouble */
static size_t
unstuff(const char *p, size_t len, char *out)
{
	size_t i, o = 0;
	int bol = 1;

	if (len < 3 || memcmp(p + len - 3, ".\r\n", 3) != 0)
		abort();
	for (i = 0; i < len - 3; i++) {
		if (bol && p[i] == '.') {
			bol = 0;
			continue;
		}
		out[o++] = p[i];
		bol = p[i] == '\n';
	}
	return o;
}

TEST(smtp_client_dotstuff_basic)
{
	static const size_t whole[] = { 1 << 20 };
	struct obuf o = { 0 };

#define CHECK(in, want) do { \
	stuff(in, sizeof(in) - 1, whole, 1, &o); \
	T_MEMEQ(o.p, o.len, want, sizeof(want) - 1); \
} while (0)
	CHECK("", ".\r\n");
	CHECK("a\r\n", "a\r\n.\r\n");
	CHECK(".\r\n", "..\r\n.\r\n");
	CHECK("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n");
	CHECK("..x\r\n", "...x\r\n.\r\n");
	CHECK("x.y\r\n.", "x.y\r\n..\r\n.\r\n");     /* no final CRLF: one added */
	CHECK("a\n.b\n", "a\n..b\n\r\n.\r\n");       /* bare LF starts a line too */
	CHECK("a\r.b\r\n", "a\r.b\r\n.\r\n");        /* bare CR does not */
	CHECK("a\r", "a\r\r\n.\r\n");
	CHECK("\xff\xfe\x80.\r\n\x00.", "\xff\xfe\x80.\r\n\x00.\r\n.\r\n");
#undef CHECK
	free(o.p);
}

TEST(smtp_client_dotstuff_chunks)
{
	static const char msg[] =
	    ".starts with a dot\r\n"
	    "line\r\n"
	    ".\r\n"
	    "..\r\n"
	    "\r\n"
	    ".x.y.\r\n"
	    "end.\r\n"
	    ".";
	static const size_t cuts[][3] = {
		{ 1, 1, 1 }, { 2, 3, 5 }, { 7, 1, 2 }, { 19, 1, 1 },
		{ 20, 6, 1 }, { 21, 4, 9 }, { 1000, 1, 1 },
	};
	size_t len = sizeof(msg) - 1, i, cut, n;
	struct obuf ref = { 0 }, o = { 0 };
	char back[256];

	stuff(msg, len, (const size_t[]){ len }, 1, &ref);
	/* the receiver gets back exactly the message (plus the CRLF it lacked) */
	n = unstuff(ref.p, ref.len, back);
	T_EQ(n, len + 2);
	T_MEMEQ(back, len, msg, len);
	T_MEMEQ(back + len, (size_t)2, "\r\n", (size_t)2);
	for (i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		stuff(msg, len, cuts[i], 3, &o);
		T_MEMEQ(o.p, o.len, ref.p, ref.len);
	}
	/* every single split point: a chunk starting with the dot of a line */
	for (cut = 0; cut <= len; cut++) {
		size_t two[2] = { cut, len };

		if (cut == 0)
			continue;
		stuff(msg, len, two, 2, &o);
		T_MEMEQ(o.p, o.len, ref.p, ref.len);
	}
	free(ref.p);
	free(o.p);
}

TEST(smtp_client_verdicts)
{
	static const struct {
		int mail, rcpt, data, dot;
		enum smtp_verdict want;
	} t[] = {
		{ 250, 250, 354, 250, SMTP_VERDICT_SENT },
		{ 250, 251, 354, 250, SMTP_VERDICT_SENT },
		{ 250, 250, 354, 451, SMTP_VERDICT_DEFERRED },
		{ 250, 250, 354, 554, SMTP_VERDICT_BOUNCED },
		{ 250, 250, 354, 0, SMTP_VERDICT_DEFERRED },   /* lost after the dot */
		{ 250, 250, 451, 0, SMTP_VERDICT_DEFERRED },
		{ 250, 250, 554, 0, SMTP_VERDICT_BOUNCED },
		{ 250, 250, 0, 0, SMTP_VERDICT_DEFERRED },
		{ 250, 250, 250, 250, SMTP_VERDICT_DEFERRED }, /* DATA must be 3xx */
		{ 250, 550, 354, 250, SMTP_VERDICT_BOUNCED },
		{ 250, 450, 354, 250, SMTP_VERDICT_DEFERRED },
		{ 250, 0, 0, 0, SMTP_VERDICT_DEFERRED },
		{ 550, 503, 503, 0, SMTP_VERDICT_BOUNCED },    /* MAIL decides */
		{ 451, 550, 0, 0, SMTP_VERDICT_DEFERRED },
		{ 0, 0, 0, 0, SMTP_VERDICT_DEFERRED },
		{ 250, 354, 354, 250, SMTP_VERDICT_DEFERRED }, /* garbage */
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (smtp_verdict(t[i].mail, t[i].rcpt, t[i].data, t[i].dot) !=
		    t[i].want)
			T_FAIL("row %zu: %d %d %d %d: got %s, want %s", i,
			    t[i].mail, t[i].rcpt, t[i].data, t[i].dot,
			    smtp_verdict_name(smtp_verdict(t[i].mail, t[i].rcpt,
			    t[i].data, t[i].dot)), smtp_verdict_name(t[i].want));
	T_STREQ(smtp_verdict_name(SMTP_VERDICT_SENT), "sent");
	T_STREQ(smtp_verdict_name(SMTP_VERDICT_DEFERRED), "deferred");
	T_STREQ(smtp_verdict_name(SMTP_VERDICT_BOUNCED), "bounced");
}

/* ---- on a loop: connection refused ------------------------------------------- */

struct done {
	int calls;
	int connected, error;
	size_t ndeferred;
	enum smtp_verdict v[2];
	char status[2][16];
};

static void
on_done(void *arg, const struct smtp_result *res)
{
	struct done *d = arg;
	size_t i;

	d->calls++;
	d->connected = res->connected;
	d->error = res->error;
	d->ndeferred = res->ndeferred;
	for (i = 0; i < res->nrcpt && i < 2; i++) {
		d->v[i] = res->rcpt[i].verdict;
		snprintf(d->status[i], sizeof(d->status[i]), "%s",
		    res->rcpt[i].reply.status);
	}
}

TEST(smtp_client_connect_refused)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	struct queue_rcpt rc[2];
	struct queue_file qf;
	struct smtp_delivery d;
	struct done done;
	uv_loop_t loop;
	int fd;

	/* a port nobody listens on: bind, learn it, close */
	T_TRUE((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	T_OK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)));
	T_OK(getsockname(fd, (struct sockaddr *)&sin, &sl));
	close(fd);

	memset(&qf, 0, sizeof(qf));
	qf.env.mail_from = (char *)"sender@example.org";
	memset(rc, 0, sizeof(rc));
	rc[0].addr = (char *)"a@example.com";
	rc[1].addr = (char *)"b@example.com";
	memset(&d, 0, sizeof(d));
	d.addr = (struct sockaddr *)&sin;
	d.host = "mx.example.com";
	d.helo = "signet.test";
	d.path = "/nonexistent";
	d.qf = &qf;
	d.rcpt = rc;
	d.nrcpt = 2;
	d.timeouts.connect_ms = 5000;
	memset(&done, 0, sizeof(done));
	T_OK(uv_loop_init(&loop));

	/* argument checks: no callback ever */
	d.nrcpt = 0;
	T_EQ(smtp_client_deliver(&loop, &d, on_done, &done), -EINVAL);
	d.nrcpt = 2;
	d.tls = SMTP_TLS_ENCRYPT;
	T_EQ(smtp_client_deliver(&loop, &d, on_done, &done), -EINVAL);
	d.tls = SMTP_TLS_MAY;

	T_OK(smtp_client_deliver(&loop, &d, on_done, &done));
	T_EQ(done.calls, 0);            /* never before it returns */
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(done.calls, 1);
	T_EQ(done.connected, 0);
	T_EQ(done.error, UV_ECONNREFUSED);
	T_EQ(done.ndeferred, 2);
	T_EQ(done.v[0], SMTP_VERDICT_DEFERRED);
	T_EQ(done.v[1], SMTP_VERDICT_DEFERRED);
	T_STREQ(done.status[0], "4.4.1");
	T_OK(uv_loop_close(&loop));
}

/* ---- on a loop: the connection cache -------------------------------------------- */

/*
 * A scripted server: 220, EHLO without PIPELINING, MAIL 250, every RCPT
 * 550 (so no message file is ever read), RSET 250, QUIT 221.
 */
struct fsrv {
	uv_tcp_t tcp;
	int port;
	int conns, open;           /* accepted in all, open now */
	int mails, rsets, quits;
	int close_on_mail;         /* hang up on the next MAIL, once */
	struct fconn *list;
};

struct fconn {
	uv_tcp_t tcp;
	struct fsrv *s;
	struct fconn *next;
	char buf[1024];
	size_t len;
	int closing;
};

static void
fs_write_cb(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void
fs_send(struct fconn *fc, const char *text)
{
	size_t n = strlen(text);
	uv_write_t *w = malloc(sizeof(*w) + n);
	uv_buf_t b;

	T_TRUE(w != NULL);
	memcpy(w + 1, text, n);
	b = uv_buf_init((char *)(w + 1), (unsigned)n);
	T_OK(uv_write(w, (uv_stream_t *)&fc->tcp, &b, 1, fs_write_cb));
}

static void
fs_closed(uv_handle_t *h)
{
	struct fconn *fc = h->data, **pp;

	for (pp = &fc->s->list; *pp != fc; pp = &(*pp)->next)
		;
	*pp = fc->next;
	fc->s->open--;
	free(fc);
}

static void
fs_hangup(struct fconn *fc)
{
	if (!fc->closing) {
		fc->closing = 1;
		uv_close((uv_handle_t *)&fc->tcp, fs_closed);
	}
}

static void
fs_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct fconn *fc = h->data;

	*b = uv_buf_init(fc->buf + fc->len, (unsigned)(sizeof(fc->buf) - fc->len));
}

/* fs_line - one command */
static void
fs_line(struct fconn *fc, const char *l)
{
	struct fsrv *s = fc->s;

	if (strncmp(l, "EHLO", 4) == 0)
		fs_send(fc, "250-fake.test\r\n250 ENHANCEDSTATUSCODES\r\n");
	else if (strncmp(l, "MAIL", 4) == 0) {
		s->mails++;
		if (s->close_on_mail) {
			s->close_on_mail = 0;
			fs_hangup(fc);
			return;
		}
		fs_send(fc, "250 2.1.0 ok\r\n");
	} else if (strncmp(l, "RCPT", 4) == 0)
		fs_send(fc, "550 5.1.1 no such user\r\n");
	else if (strncmp(l, "RSET", 4) == 0) {
		s->rsets++;
		fs_send(fc, "250 2.0.0 ok\r\n");
	} else if (strncmp(l, "QUIT", 4) == 0) {
		s->quits++;
		fs_send(fc, "221 2.0.0 bye\r\n");
		fs_hangup(fc);
	} else
		fs_send(fc, "502 5.5.2 what\r\n");
}

static void
fs_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct fconn *fc = st->data;
	char *nl, line[1024];
	size_t k;

	if (n < 0) {
		fs_hangup(fc);
		return;
	}
	fc->len += (size_t)n;
	while (!fc->closing && (nl = memchr(fc->buf, '\n', fc->len)) != NULL) {
		k = (size_t)(nl - fc->buf) + 1;
		memcpy(line, fc->buf, k);
		line[k] = '\0';
		memmove(fc->buf, fc->buf + k, fc->len - k);
		fc->len -= k;
		fs_line(fc, line);
	}
}

static void
fs_accept(uv_stream_t *ls, int status)
{
	struct fsrv *s = ls->data;
	struct fconn *fc = calloc(1, sizeof(*fc));

	T_OK(status);
	T_TRUE(fc != NULL);
	fc->s = s;
	T_OK(uv_tcp_init(ls->loop, &fc->tcp));
	fc->tcp.data = fc;
	T_OK(uv_accept(ls, (uv_stream_t *)&fc->tcp));
	fc->next = s->list;
	s->list = fc;
	s->conns++;
	s->open++;
	T_OK(uv_read_start((uv_stream_t *)&fc->tcp, fs_alloc, fs_read));
	fs_send(fc, "220 fake.test ESMTP\r\n");
}

static void
fs_start(uv_loop_t *loop, struct fsrv *s, struct sockaddr_in *sin)
{
	int sl = sizeof(*sin);

	memset(s, 0, sizeof(*s));
	T_OK(uv_tcp_init(loop, &s->tcp));
	s->tcp.data = s;
	T_OK(uv_ip4_addr("127.0.0.1", 0, sin));
	T_OK(uv_tcp_bind(&s->tcp, (struct sockaddr *)sin, 0));
	T_OK(uv_listen((uv_stream_t *)&s->tcp, 16, fs_accept));
	T_OK(uv_tcp_getsockname(&s->tcp, (struct sockaddr *)sin, &sl));
}

struct cdone {
	int calls, reused, cached, error;
	size_t nbounced;
	char status[16];
};

static void
on_cdone(void *arg, const struct smtp_result *res)
{
	struct cdone *d = arg;

	d->calls++;
	d->reused = res->reused;
	d->cached = res->cached;
	d->error = res->error;
	d->nbounced = res->nbounced;
	snprintf(d->status, sizeof(d->status), "%s", res->rcpt[0].reply.status);
}

struct cevents {
	int open, close;
};

static void
on_cevent(void *arg, enum smtp_conn_event ev)
{
	struct cevents *e = arg;

	if (ev == SMTP_CONN_OPEN)
		e->open++;
	else
		e->close++;
}

/* deliver_one - one delivery to the end; its result in *done */
static void
deliver_one(uv_loop_t *loop, const struct smtp_delivery *d, struct cdone *done)
{
	memset(done, 0, sizeof(*done));
	T_OK(smtp_client_deliver(loop, d, on_cdone, done));
	T_EQ(done->calls, 0);
	while (done->calls == 0)
		uv_run(loop, UV_RUN_ONCE);
	T_EQ(done->calls, 1);
	T_EQ(done->nbounced, 1);
	T_STREQ(done->status, "5.1.1");
}

/* t_log - client logs on stderr when SIGNET_TEST_VERBOSE is set */
static void
t_log(void *arg, int prio, const char *msg)
{
	(void)arg;
	if (getenv("SIGNET_TEST_VERBOSE") != NULL)
		fprintf(stderr, "  [log %d] %s\n", prio, msg);
}

static void
fs_closed_listener(uv_handle_t *h)
{
	(void)h;
}

TEST(smtp_client_cache)
{
	struct smtp_client_cache_opts co;
	struct smtp_client_cache *cc;
	struct sockaddr_in sin;
	struct queue_rcpt rc[1];
	struct queue_file qf;
	struct smtp_delivery d;
	struct cevents ev;
	struct cdone done;
	struct fconn *fc;
	struct fsrv s;
	uv_loop_t loop;
	uint64_t t0;

	T_OK(uv_loop_init(&loop));
	fs_start(&loop, &s, &sin);
	memset(&ev, 0, sizeof(ev));
	memset(&co, 0, sizeof(co));
	co.idle_ms = 60000;
	co.event = on_cevent;
	co.log = t_log;
	co.arg = &ev;
	T_OK(smtp_client_cache_new(&loop, &co, &cc));

	memset(&qf, 0, sizeof(qf));
	qf.env.mail_from = (char *)"sender@example.org";
	memset(rc, 0, sizeof(rc));
	rc[0].addr = (char *)"nobody@example.com";
	memset(&d, 0, sizeof(d));
	d.addr = (struct sockaddr *)&sin;
	d.host = "fake.test";
	d.helo = "signet.test";
	d.tls = SMTP_TLS_NONE;
	d.path = "/nonexistent";       /* never read: no recipient is taken */
	d.qf = &qf;
	d.rcpt = rc;
	d.nrcpt = 1;
	d.timeouts.cmd_ms = 5000;
	d.log = t_log;
	d.cache = cc;
	d.dest = "example.com";

	/* The first delivery connects; its connection stays, after RSET. */
	deliver_one(&loop, &d, &done);
	T_EQ(done.reused, 0);
	T_EQ(done.cached, 1);
	T_EQ(smtp_client_cache_idle(cc), 1);
	T_EQ(s.conns, 1);
	T_EQ(s.rsets, 1);
	T_EQ(ev.open, 1);

	/* Another destination, or another EHLO name: not that connection. */
	d.dest = "example.net";
	deliver_one(&loop, &d, &done);
	T_EQ(done.reused, 0);
	T_EQ(s.conns, 2);
	T_EQ(smtp_client_cache_idle(cc), 2);
	d.dest = "example.com";

	/* The same destination and address: MAIL at once on connection 1. */
	deliver_one(&loop, &d, &done);
	T_EQ(done.reused, 1);
	T_EQ(s.conns, 2);
	T_EQ(s.mails, 3);
	T_EQ(smtp_client_cache_idle(cc), 2);

	/* It died before the first reply: a new connection, one callback. */
	s.close_on_mail = 1;
	deliver_one(&loop, &d, &done);
	T_EQ(done.reused, 0);
	T_EQ(done.error, 0);
	T_EQ(s.conns, 3);
	T_EQ(ev.open, 3);
	T_EQ(ev.close, 1);
	T_EQ(smtp_client_cache_idle(cc), 2);

	/* The server closes idle connections: they leave the cache. */
	for (fc = s.list; fc != NULL; fc = fc->next)
		fs_hangup(fc);
	while (smtp_client_cache_idle(cc) > 0)
		uv_run(&loop, UV_RUN_ONCE);
	T_EQ(ev.close, 3);
	deliver_one(&loop, &d, &done);
	T_EQ(done.reused, 0);
	T_EQ(s.conns, 4);

	/* The idle time is up: QUIT. */
	smtp_client_cache_set_idle(cc, 200);
	d.dest = "example.org";
	deliver_one(&loop, &d, &done);    /* cached with 200 ms */
	T_EQ(s.conns, 5);
	T_EQ(smtp_client_cache_idle(cc), 2);
	t0 = uv_now(&loop);
	while (smtp_client_cache_idle(cc) > 1)
		uv_run(&loop, UV_RUN_ONCE);
	T_TRUE(uv_now(&loop) - t0 >= 150);
	while (ev.close < 4)
		uv_run(&loop, UV_RUN_ONCE);
	T_EQ(s.quits, 1);

	/* No cache time: QUIT after the transaction, as without a cache. */
	smtp_client_cache_set_idle(cc, 0);
	T_EQ(smtp_client_cache_idle(cc), 0);
	smtp_client_cache_set_idle(cc, 60000);
	deliver_one(&loop, &d, &done);
	T_EQ(smtp_client_cache_idle(cc), 1);

	/* Shutdown: idle connections close at once, events before return. */
	smtp_client_cache_free(cc);
	T_EQ(ev.open, ev.close);

	/* max_conns: a new connection closes the oldest idle one first. */
	co.max_conns = 1;
	T_OK(smtp_client_cache_new(&loop, &co, &cc));
	d.cache = cc;
	deliver_one(&loop, &d, &done);
	T_EQ(smtp_client_cache_idle(cc), 1);
	d.dest = "example.com";
	deliver_one(&loop, &d, &done);
	T_EQ(done.reused, 0);
	T_EQ(smtp_client_cache_idle(cc), 1);
	T_EQ(ev.open - ev.close, 1);
	smtp_client_cache_free(cc);
	T_EQ(ev.open, ev.close);
	uv_close((uv_handle_t *)&s.tcp, fs_closed_listener);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(s.open, 0);
	T_OK(uv_loop_close(&loop));
}
