/*
 * test_smtp_client.c - the delivery client's pure parts: the reply parser
 * (multi-line, enhanced codes, garbage, limits), EHLO keywords, the
 * dot-stuffing streamer across chunk boundaries, the verdict table; and
 * one loop test: a refused connection defers every recipient.
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
