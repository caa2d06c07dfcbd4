/*
 * test_smtp_parse.c - unit tests of smtp/parse.c and smtp/reply.c: the
 * resumable DATA/BDAT parser (the SMTP smuggling sequences of issue 3, exact
 * dot-unstuffing, line length, the three bare-newline modes, and the same
 * results whatever the input split: whole, byte at a time, random), checked
 * against simple oracles on random input; command-line parsing (paths with
 * quoted local parts and literals, MAIL/RCPT parameters, xtext, BDAT); the
 * output chain and reply lines.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "smtp/server_int.h"
#include "tests/unit/test.h"

/* ---- helpers ------------------------------------------------------------ */

struct obuf {
	char *p;
	size_t len, cap;
	unsigned calls;
};

static void
obuf_add(void *arg, const char *p, size_t n)
{
	struct obuf *b = arg;

	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		if ((b->p = realloc(b->p, b->cap)) == NULL)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	b->calls++;
}

/* A tiny deterministic PRNG, so a failure replays. */
static uint64_t rng_state;

static uint32_t
rng(void)
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(rng_state >> 33);
}

enum split { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

struct dres {
	struct obuf out;
	size_t consumed;
	int done;
	int flags;
};

/*
 * run_data - feed in[0..len) to a fresh parser, cut as `split` says, the way
 * server.c does: stop at the terminator.  BDAT (raw) ends with data_end.
 */
static void
run_data(const char *in, size_t len, int raw, enum smtp_bare_newline bare,
    enum split split, struct dres *r)
{
	struct smtp__data d;
	size_t pos = 0;

	memset(r, 0, sizeof(*r));
	smtp__data_init(&d, raw, bare);
	while (pos < len && d.state != SMTP__D_DONE) {
		size_t n = len - pos, used;

		if (split == SPLIT_BYTES)
			n = 1;
		else if (split == SPLIT_RANDOM)
			n = 1 + rng() % (n < 17 ? n : 17);
		used = smtp__data_feed(&d, in + pos, n, obuf_add, &r->out);
		T_TRUE(used <= n);
		if (d.state != SMTP__D_DONE)
			T_EQ(used, n);
		pos += used;
	}
	if (raw)
		smtp__data_end(&d, obuf_add, &r->out);
	r->consumed = pos;
	r->done = d.state == SMTP__D_DONE;
	r->flags = d.flags;
	T_EQ(d.out_len, r->out.len);
	if (r->out.p == NULL)
		obuf_add(&r->out, "", 0);
}

static void
dres_free(struct dres *r)
{
	free(r->out.p);
}

/* run_all - every split gives the same result as the whole input. */
static void
run_all(const char *in, size_t len, int raw, enum smtp_bare_newline bare,
    struct dres *whole)
{
	enum split s;
	int i;

	run_data(in, len, raw, bare, SPLIT_WHOLE, whole);
	for (s = SPLIT_BYTES; s <= SPLIT_RANDOM; s++)
		for (i = 0; i < (s == SPLIT_RANDOM ? 20 : 1); i++) {
			struct dres r;

			run_data(in, len, raw, bare, s, &r);
			T_MEMEQ(r.out.p, r.out.len, whole->out.p, whole->out.len);
			T_EQ(r.consumed, whole->consumed);
			T_EQ(r.done, whole->done);
			T_EQ(r.flags, whole->flags);
			dres_free(&r);
		}
}

#define S(lit) (lit), (sizeof(lit) - 1)
#define T_MEMEQS(a, alen, lit) T_MEMEQ(a, alen, lit, sizeof(lit) - 1)

/* ---- DATA: termination and unstuffing ------------------------------------- */

TEST(smtp_data_basic)
{
	static const char in[] = "Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.c>\r\n";
	struct dres r;

	rng_state = 1;
	run_all(S(in), 0, SMTP_BARE_REJECT, &r);
	T_TRUE(r.done);
	T_EQ(r.flags, 0);
	T_EQ(r.consumed, strstr(in, "MAIL") - in);
	T_MEMEQS(r.out.p, r.out.len, "Subject: x\r\n\r\nbody\r\n");
	/* a read of many lines goes out in one piece */
	dres_free(&r);
	run_data(S(in), 0, SMTP_BARE_REJECT, SPLIT_WHOLE, &r);
	T_EQ(r.out.calls, 1);
	dres_free(&r);
}

TEST(smtp_data_empty_message)
{
	struct dres r;

	rng_state = 2;
	run_all(S(".\r\nQUIT\r\n"), 0, SMTP_BARE_REJECT, &r);
	T_TRUE(r.done);
	T_EQ(r.consumed, 3);
	T_EQ(r.out.len, 0);
	dres_free(&r);
}

TEST(smtp_data_unstuffing)
{
	static const char in[] = "..a\r\n.b\r\n...\r\n..\r\nx.y\r\n .\r\n..\r\n.\r\n";
	struct dres r;

	rng_state = 3;
	run_all(S(in), 0, SMTP_BARE_REJECT, &r);
	T_TRUE(r.done);
	T_EQ(r.consumed, sizeof(in) - 1);
	T_MEMEQS(r.out.p, r.out.len, ".a\r\nb\r\n..\r\n.\r\nx.y\r\n .\r\n.\r\n");
	T_EQ(r.flags, 0);
	dres_free(&r);
}

TEST(smtp_data_not_a_terminator)
{
	/* only <CRLF>.<CRLF>: ". \r\n", ".x", "\r\n. \r\n" are text */
	static const char in[] = "a\r\n. \r\n.x\r\n.\r\r\n.\r\n";
	struct dres r;

	rng_state = 4;
	run_all(S(in), 0, SMTP_BARE_ALLOW, &r);
	T_TRUE(r.done);
	T_EQ(r.consumed, sizeof(in) - 1);
	T_MEMEQS(r.out.p, r.out.len, "a\r\n \r\nx\r\n\r\r\n");
	dres_free(&r);
}

TEST(smtp_data_pending_cr)
{
	struct smtp__data d;
	struct obuf o = { 0 };

	/* CR at the end of one read, LF at the start of the next */
	smtp__data_init(&d, 0, SMTP_BARE_REJECT);
	T_EQ(smtp__data_feed(&d, S("abc\r"), obuf_add, &o), 4);
	T_EQ(d.state, SMTP__D_CR);
	T_EQ(smtp__data_feed(&d, S("\n.\r"), obuf_add, &o), 3);
	T_EQ(d.state, SMTP__D_DOTCR);
	T_EQ(smtp__data_feed(&d, S("\nNOOP\r\n"), obuf_add, &o), 1);
	T_EQ(d.state, SMTP__D_DONE);
	T_MEMEQS(o.p, o.len, "abc\r\n");
	T_EQ(d.flags, 0);
	/* once done, nothing more is taken */
	T_EQ(smtp__data_feed(&d, S("NOOP\r\n"), obuf_add, &o), 0);
	free(o.p);
}

/* ---- DATA: SMTP smuggling (issue 3, Proof) ------------------------------- */

static const struct {
	const char *seq;
	size_t len;
	int bare;          /* has a bare CR or LF */
} smuggle[] = {
	{ S("\n.\n"), 1 },
	{ S("\n.\r\n"), 1 },
	{ S("\r.\r"), 1 },
	{ S("\r.\n"), 1 },
	{ S("\n.\r"), 1 },
	{ S("\r\n.\n"), 1 },
	{ S("\r\n.\r"), 1 },
	{ S("\r\n.\r\r\n"), 1 },
	{ S("\r\r\n.\r\r\n"), 1 },
	{ S("\r\n\x00.\r\n"), 0 },
};

/* smuggle_msg - a message with seq inside, then a second transaction's text. */
static char *
smuggle_msg(size_t k, size_t *len, size_t *inner_end)
{
	static const char head[] = "From: <a@signed.example>\r\nSubject: s\r\n\r\nhello";
	static const char evil[] = "MAIL FROM:<evil@evil.example>\r\n"
	    "RCPT TO:<victim@rcpt.example>\r\nDATA\r\n"
	    "From: <ceo@signed.example>\r\n\r\nsmuggled\r\n";
	static const char tail[] = "\r\n.\r\nQUIT\r\n";
	char *m = malloc(sizeof(head) + smuggle[k].len + sizeof(evil) + sizeof(tail));
	size_t n = 0;

	if (m == NULL)
		abort();
	memcpy(m + n, head, sizeof(head) - 1);
	n += sizeof(head) - 1;
	memcpy(m + n, smuggle[k].seq, smuggle[k].len);
	n += smuggle[k].len;
	memcpy(m + n, evil, sizeof(evil) - 1);
	n += sizeof(evil) - 1;
	memcpy(m + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	*inner_end = n - 6;   /* just after "\r\n.\r\n" */
	*len = n;
	return m;
}

/* has_bare - a CR not followed by LF or an LF not preceded by CR. */
static int
has_bare(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			return 1;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return 1;
	}
	return 0;
}

TEST(smtp_data_smuggling)
{
	enum smtp_bare_newline modes[] = { SMTP_BARE_REJECT, SMTP_BARE_NORMALIZE, SMTP_BARE_ALLOW };
	size_t k, m;

	rng_state = 5;
	for (k = 0; k < sizeof(smuggle) / sizeof(smuggle[0]); k++)
		for (m = 0; m < 3; m++) {
			size_t len, inner_end;
			char *in = smuggle_msg(k, &len, &inner_end);
			struct dres r;

			run_all(in, len, 0, modes[m], &r);
			/* one message: it ends at the real terminator only */
			if (!r.done || r.consumed != inner_end)
				T_FAIL("sequence %zu mode %zu: consumed %zu of %zu (done %d), wanted %zu",
				    k, m, r.consumed, len, r.done, inner_end);
			T_TRUE(memmem(r.out.p, r.out.len, "smuggled", 8) != NULL);
			T_TRUE(memmem(r.out.p, r.out.len, "MAIL FROM:<evil", 15) != NULL);
			if (modes[m] == SMTP_BARE_REJECT)
				T_EQ(r.flags & SMTP__DATA_F_BARE, smuggle[k].bare ? SMTP__DATA_F_BARE : 0);
			else
				T_EQ(r.flags & SMTP__DATA_F_BARE, 0);
			if (modes[m] == SMTP_BARE_NORMALIZE)
				T_EQ(has_bare(r.out.p, r.out.len), 0);
			if (modes[m] == SMTP_BARE_ALLOW)
				T_EQ(has_bare(r.out.p, r.out.len), smuggle[k].bare);
			dres_free(&r);
			free(in);
		}
}

/* ---- DATA: bare newline modes --------------------------------------------- */

TEST(smtp_data_bare_modes)
{
	static const char in[] = "a\nb\rc\r\r\n\n.x\r\n.\r\n";
	struct dres r;

	rng_state = 6;
	run_all(S(in), 0, SMTP_BARE_REJECT, &r);
	T_TRUE(r.done);
	T_EQ(r.consumed, sizeof(in) - 1);
	T_EQ(r.flags, SMTP__DATA_F_BARE);
	dres_free(&r);

	run_all(S(in), 0, SMTP_BARE_NORMALIZE, &r);
	T_TRUE(r.done);
	T_EQ(r.flags, 0);
	/* a bare newline does not start a line: ".x" after it keeps its dot */
	T_MEMEQS(r.out.p, r.out.len, "a\r\nb\r\nc\r\n\r\n\r\n.x\r\n");
	dres_free(&r);

	run_all(S(in), 0, SMTP_BARE_ALLOW, &r);
	T_TRUE(r.done);
	T_EQ(r.flags, 0);
	T_MEMEQS(r.out.p, r.out.len, "a\nb\rc\r\r\n\n.x\r\n");
	dres_free(&r);
}

TEST(smtp_data_bare_cr_after_dot)
{
	/* "\r\n.\r" then not LF: the dot was stuffing and the CR is bare */
	struct dres r;

	rng_state = 7;
	run_all(S("a\r\n.\rb\r\n.\r\n"), 0, SMTP_BARE_NORMALIZE, &r);
	T_TRUE(r.done);
	T_MEMEQS(r.out.p, r.out.len, "a\r\n\r\nb\r\n");
	dres_free(&r);
	run_all(S("a\r\n.\rb\r\n.\r\n"), 0, SMTP_BARE_REJECT, &r);
	T_EQ(r.flags, SMTP__DATA_F_BARE);
	T_MEMEQS(r.out.p, r.out.len, "a\r\n\rb\r\n");
	dres_free(&r);
}

/* ---- DATA: line length ------------------------------------------------------ */

static void
line_case(const char *prefix, size_t n, int want_long)
{
	size_t pl = strlen(prefix), len = pl + n + 5;
	char *in = malloc(len);
	struct dres r;

	if (in == NULL)
		abort();
	memcpy(in, prefix, pl);
	memset(in + pl, 'x', n);
	memcpy(in + pl + n, "\r\n.\r\n", 5);
	run_all(in, len, 0, SMTP_BARE_REJECT, &r);
	T_TRUE(r.done);
	T_EQ(!!(r.flags & SMTP__DATA_F_LONG), want_long);
	dres_free(&r);
	free(in);
}

TEST(smtp_data_line_length)
{
	rng_state = 8;
	line_case("", 998, 0);
	line_case("", 999, 1);
	line_case("a\r\n", 998, 0);
	line_case("a\r\n", 5000, 1);
	/* RFC 5321 4.5.3.1.6: the stuffing dot does not count */
	line_case(".", 998, 0);
	line_case(".", 999, 1);
	/* bare LF (ALLOW/REJECT) does not end a line; a real CRLF does */
	line_case("b\n", 996, 0);
	line_case("b\n", 997, 1);
}

/* ---- BDAT (raw) ------------------------------------------------------------- */

TEST(smtp_bdat_raw)
{
	static const char in[] = "a\r\n.\r\n..b\r\n";
	struct dres r;

	rng_state = 9;
	run_all(S(in), 1, SMTP_BARE_REJECT, &r);
	T_EQ(r.done, 0);
	T_EQ(r.consumed, sizeof(in) - 1);
	T_MEMEQS(r.out.p, r.out.len, in);
	T_EQ(r.flags, 0);
	dres_free(&r);

	/* a CR ending the last chunk is bare */
	run_all(S("x\r"), 1, SMTP_BARE_REJECT, &r);
	T_EQ(r.flags, SMTP__DATA_F_BARE);
	T_MEMEQS(r.out.p, r.out.len, "x\r");
	dres_free(&r);
	run_all(S("x\r"), 1, SMTP_BARE_NORMALIZE, &r);
	T_EQ(r.flags, 0);
	T_MEMEQS(r.out.p, r.out.len, "x\r\n");
	dres_free(&r);
	run_all(S("x\ny\r\n"), 1, SMTP_BARE_REJECT, &r);
	T_EQ(r.flags, SMTP__DATA_F_BARE);
	dres_free(&r);
}

TEST(smtp_bdat_chunks_join)
{
	/* a CRLF split across two chunks is one line end */
	struct smtp__data d;
	struct obuf o = { 0 };

	smtp__data_init(&d, 1, SMTP_BARE_REJECT);
	T_EQ(smtp__data_feed(&d, S("a\r"), obuf_add, &o), 2);
	T_EQ(smtp__data_feed(&d, S("\nb\r\n"), obuf_add, &o), 4);
	smtp__data_end(&d, obuf_add, &o);
	T_EQ(d.flags, 0);
	T_MEMEQS(o.p, o.len, "a\r\nb\r\n");
	free(o.p);
}

/* ---- DATA: random input against oracles --------------------------------------- */

/* find_term - where "<CRLF>.<CRLF>" ends in (CRLF + in), counted in in; 0 if none. */
static size_t
find_term(const char *in, size_t len)
{
	size_t i;

	if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
		return 3;
	for (i = 0; i + 5 <= len; i++)
		if (memcmp(in + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	return 0;
}

/* unstuff_oracle - split on CRLF, drop each line's leading dot, join. */
static void
unstuff_oracle(const char *in, size_t len, struct obuf *o)
{
	size_t i = 0, s;

	while (i < len) {
		for (s = i; i + 1 < len && !(in[i] == '\r' && in[i + 1] == '\n'); i++)
			;
		if (i + 1 >= len)
			i = len;
		if (in[s] == '.')
			s++;
		obuf_add(o, in + s, i - s);
		if (i < len) {
			obuf_add(o, "\r\n", 2);
			i += 2;
		}
	}
	obuf_add(o, "", 0);
}

TEST(smtp_data_random)
{
	static const char alpha[] = "\r\n.a\0";
	enum smtp_bare_newline modes[] = { SMTP_BARE_REJECT, SMTP_BARE_NORMALIZE, SMTP_BARE_ALLOW };
	char in[300];
	int iter;

	rng_state = 10;
	for (iter = 0; iter < 3000; iter++) {
		size_t len = rng() % sizeof(in), i, term;
		unsigned m;

		for (i = 0; i < len; i++)
			in[i] = alpha[rng() % 5];
		term = find_term(in, len);
		for (m = 0; m < 3; m++) {
			struct dres r;

			run_all(in, len, 0, modes[m], &r);
			T_EQ(r.done, term != 0);
			T_EQ(r.consumed, term ? term : len);
			if (term && modes[m] == SMTP_BARE_ALLOW) {
				struct obuf o = { 0 };

				unstuff_oracle(in, term - 3, &o);
				T_MEMEQ(r.out.p, r.out.len, o.p, o.len);
				free(o.p);
			}
			if (term && modes[m] == SMTP_BARE_REJECT)
				T_EQ(!!(r.flags & SMTP__DATA_F_BARE), has_bare(in, term));
			if (modes[m] == SMTP_BARE_NORMALIZE)
				T_EQ(has_bare(r.out.p, r.out.len), 0);
			dres_free(&r);
			/* BDAT: verbatim under ALLOW, whatever the content */
			if (modes[m] == SMTP_BARE_ALLOW) {
				run_all(in, len, 1, modes[m], &r);
				T_MEMEQ(r.out.p, r.out.len, in, len);
				dres_free(&r);
			}
		}
	}
}

/* ---- command lines --------------------------------------------------------- */

TEST(smtp_cmd_split)
{
	struct smtp__slice v, a;

	smtp__cmd_split(S("MAIL FROM:<a@b.c>  SIZE=10  "), &v, &a);
	T_TRUE(smtp__slice_eq(v, "mail"));
	T_MEMEQS(a.p, a.len, "FROM:<a@b.c>  SIZE=10");
	smtp__cmd_split(S("QUIT"), &v, &a);
	T_TRUE(smtp__slice_eq(v, "QUIT"));
	T_EQ(a.len, 0);
	smtp__cmd_split(S(""), &v, &a);
	T_EQ(v.len, 0);
	T_EQ(a.len, 0);
	T_EQ(smtp__cmd_line_max(S("NOOP")), 512);
	T_EQ(smtp__cmd_line_max(S("rcpt to:<a@b>")), SMTP__DSN_LINE_MAX);
	T_EQ(smtp__cmd_line_max(S("AUTH PLAIN")), SMTP__SASL_LINE_MAX);
}

static void
path_ok(const char *in, int flags, const char *want, long want_len, int want_utf8)
{
	char out[SMTP__PATH_MAX + 1];
	int u = -1;
	long n = smtp__parse_path(in, strlen(in), flags, out, sizeof(out), &u);

	if (n != want_len)
		T_FAIL("parse_path(\"%s\") = %ld, wanted %ld", in, n, want_len);
	T_STREQ(out, want);
	T_EQ(u, want_utf8);
}

static void
path_bad(const char *in, int flags)
{
	char out[SMTP__PATH_MAX + 1];
	int u;
	long n = smtp__parse_path(in, strlen(in), flags, out, sizeof(out), &u);

	if (n != -1)
		T_FAIL("parse_path(\"%s\") = %ld, wanted -1", in, n);
}

TEST(smtp_parse_path)
{
	char big[400];

	path_ok("<a@b.c>", 0, "a@b.c", 7, 0);
	path_ok("<a@b.c> SIZE=10", 0, "a@b.c", 7, 0);
	path_ok("<>", SMTP__PATH_NULL_OK, "", 2, 0);
	path_ok("<first.last+tag@sub-1.example.COM>", 0, "first.last+tag@sub-1.example.COM", 34, 0);
	path_ok("<\"john doe\"@example.com>", 0, "\"john doe\"@example.com", 24, 0);
	path_ok("<\"a\\\"b@c\"@x.y>", 0, "\"a\\\"b@c\"@x.y", 14, 0);
	path_ok("<@r1.example,@r2.example:u@d.example>", 0, "u@d.example", 37, 0);
	path_ok("<u@[127.0.0.1]>", 0, "u@[127.0.0.1]", 15, 0);
	path_ok("<u@[IPv6:2001:db8::1]>", 0, "u@[IPv6:2001:db8::1]", 22, 0);
	path_ok("<!#$%&'*+-/=?^_`{|}~@x.y>", 0, "!#$%&'*+-/=?^_`{|}~@x.y", 25, 0);
	path_ok("<d\xc3\xa9j\xc3\xa0@caf\xc3\xa9.example>", 0,
	    "d\xc3\xa9j\xc3\xa0@caf\xc3\xa9.example", 22, 1);

	path_bad("a@b.c", 0);
	path_bad("<a@b.c", 0);
	path_bad("<>", 0);
	path_bad("<a>", 0);
	path_bad("<postmaster>", 0);
	path_bad("<a@>", 0);
	path_bad("<@b.c>", 0);
	path_bad("<.a@b.c>", 0);
	path_bad("<a.@b.c>", 0);
	path_bad("<a..b@c.d>", 0);
	path_bad("<a b@c.d>", 0);
	path_bad("<bad address>", 0);
	path_bad("<a@-b.c>", 0);
	path_bad("<a@b-.c>", 0);
	path_bad("<a@b..c>", 0);
	path_bad("<a@b.c.>", 0);
	path_bad("<a@b_c.d>", 0);
	path_bad("<a@[1.2.3]>", 0);
	path_bad("<a@[IPv6:zz::1]>", 0);
	path_bad("<\"unterminated@b.c>", 0);
	path_bad("<\"\"@b.c>", 0);
	path_bad("<\"a\x01\"@b.c>", 0);
	path_bad("<a@b.c\x01>", 0);
	path_bad("<a\xff@b.c>", 0);         /* not UTF-8 */
	path_bad("<a\xc0\xaf@b.c>", 0);     /* overlong */
	path_bad("<@r1.example:>", 0);
	path_bad("<@r1.example,r2:u@d.example>", 0);
	/* a 64-octet label, a path over 256 octets */
	memset(big, 0, sizeof(big));
	strcpy(big, "<a@");
	memset(big + 3, 'b', 64);
	strcat(big, ".c>");
	path_bad(big, 0);
	memset(big, 0, sizeof(big));
	big[0] = '<';
	memset(big + 1, 'a', 250);
	strcat(big, "@bb.com>");
	path_bad(big, 0);
	/* 256 exactly is fine */
	memset(big, 0, sizeof(big));
	big[0] = '<';
	memset(big + 1, 'a', 250);
	strcat(big, "@b.com>");
	{
		char out[SMTP__PATH_MAX + 1];
		int u;

		T_EQ(smtp__parse_path(big, strlen(big), 0, out, sizeof(out), &u), 258);
	}
}

TEST(smtp_xtext)
{
	char out[32];

	T_EQ(smtp__xtext_decode(S("QQ314159"), out, sizeof(out)), 8);
	T_STREQ(out, "QQ314159");
	T_EQ(smtp__xtext_decode(S("a+2Bb+3Dc"), out, sizeof(out)), 5);
	T_STREQ(out, "a+b=c");
	T_EQ(smtp__xtext_decode(S("a+20b"), out, sizeof(out)), 3);
	T_EQ(smtp__xtext_decode(S("a+0Db"), out, sizeof(out)), -1);   /* CR */
	T_EQ(smtp__xtext_decode(S("a+0"), out, sizeof(out)), -1);
	T_EQ(smtp__xtext_decode(S("a+GG"), out, sizeof(out)), -1);
	T_EQ(smtp__xtext_decode(S("a=b"), out, sizeof(out)), -1);
	T_EQ(smtp__xtext_decode(S("a b"), out, sizeof(out)), -1);
	T_EQ(smtp__xtext_decode(S("0123456789"), out, 10), -1);      /* no room for NUL */
}

TEST(smtp_mail_params)
{
	struct smtp__mail_params mp;
	char err[256];

	T_OK(smtp__parse_mail_params(S(""), &mp, err, sizeof(err)));
	T_EQ(mp.has_size, 0);
	T_OK(smtp__parse_mail_params(S("SIZE=100 body=8bitmime SMTPUTF8 RET=HDRS ENVID=QQ+2B314"),
	    &mp, err, sizeof(err)));
	T_EQ(mp.has_size, 1);
	T_EQ(mp.size, 100);
	T_EQ(mp.body_8bit, 1);
	T_EQ(mp.smtputf8, 1);
	T_EQ(mp.ret, QUEUE_RET_HDRS);
	T_EQ(mp.has_envid, 1);
	T_STREQ(mp.envid, "QQ+314");
	T_OK(smtp__parse_mail_params(S("BODY=7BIT RET=FULL AUTH=<>"), &mp, err, sizeof(err)));
	T_EQ(mp.ret, QUEUE_RET_FULL);
	T_OK(smtp__parse_mail_params(S("SIZE=18446744073709551600"), &mp, err, sizeof(err)));
	T_TRUE(mp.size == 18446744073709551600ULL);

	T_EQ(smtp__parse_mail_params(S("SIZE=abc"), &mp, err, sizeof(err)), 501);
	T_TRUE(strncmp(err, "501 5.5.4 ", 10) == 0);
	T_EQ(smtp__parse_mail_params(S("SIZE=99999999999999999999"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("SIZE"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("SIZE=1 SIZE=2"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("BODY=BINARYMIME"), &mp, err, sizeof(err)), 555);
	T_TRUE(strncmp(err, "555 5.5.4 ", 10) == 0);
	T_EQ(smtp__parse_mail_params(S("FROBNICATE=1"), &mp, err, sizeof(err)), 555);
	T_EQ(smtp__parse_mail_params(S("RET=X"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("SMTPUTF8=1"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("ENVID=a+0Db"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("ENVID="), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("-X=1"), &mp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_mail_params(S("SIZE=1=2"), &mp, err, sizeof(err)), 501);
}

TEST(smtp_rcpt_params)
{
	struct smtp__rcpt_params rp;
	char err[256];

	T_OK(smtp__parse_rcpt_params(S("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bx@y.z"),
	    &rp, err, sizeof(err)));
	T_EQ(rp.notify, QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE);
	T_EQ(rp.has_orcpt, 1);
	T_STREQ(rp.orcpt, "rfc822;orig+x@y.z");
	T_OK(smtp__parse_rcpt_params(S("notify=never"), &rp, err, sizeof(err)));
	T_EQ(rp.notify, QUEUE_NOTIFY_NEVER);
	T_OK(smtp__parse_rcpt_params(S("NOTIFY=DELAY"), &rp, err, sizeof(err)));
	T_EQ(rp.notify, QUEUE_NOTIFY_DELAY);

	T_EQ(smtp__parse_rcpt_params(S("NOTIFY=BOGUS"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("NOTIFY=NEVER,SUCCESS"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("NOTIFY=SUCCESS,SUCCESS"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("NOTIFY=SUCCESS,"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("NOTIFY="), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("ORCPT=noseparator"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("ORCPT=;a@b"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("ORCPT=rfc822;"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("ORCPT=rfc822;a+0Ab"), &rp, err, sizeof(err)), 501);
	T_EQ(smtp__parse_rcpt_params(S("SIZE=1"), &rp, err, sizeof(err)), 555);
}

TEST(smtp_bdat_args)
{
	uint64_t n;
	int last;

	T_OK(smtp__parse_bdat(S("100"), &n, &last));
	T_EQ(n, 100);
	T_EQ(last, 0);
	T_OK(smtp__parse_bdat(S("0 LAST"), &n, &last));
	T_EQ(n, 0);
	T_EQ(last, 1);
	T_OK(smtp__parse_bdat(S("7  last"), &n, &last));
	T_EQ(last, 1);
	T_EQ(smtp__parse_bdat(S(""), &n, &last), -1);
	T_EQ(smtp__parse_bdat(S("x"), &n, &last), -1);
	T_EQ(smtp__parse_bdat(S("-1"), &n, &last), -1);
	T_EQ(smtp__parse_bdat(S("10 LASTX"), &n, &last), -1);
	T_EQ(smtp__parse_bdat(S("10 LAST x"), &n, &last), -1);
	T_EQ(smtp__parse_bdat(S("10x"), &n, &last), -1);
	T_EQ(smtp__parse_bdat(S("99999999999999999999"), &n, &last), -1);
}

TEST(smtp_helo)
{
	T_TRUE(smtp__helo_ok(S("client.test")));
	T_TRUE(smtp__helo_ok(S("[127.0.0.1]")));
	T_EQ(smtp__helo_ok(S("")), 0);
	T_EQ(smtp__helo_ok(S("a b")), 0);
	T_EQ(smtp__helo_ok(S("a\x01")), 0);
	T_EQ(smtp__helo_ok(S("caf\xc3\xa9")), 0);
}

/* ---- output ------------------------------------------------------------------ */

static int
reply_add(struct smtp__ochain *c, const char *fmt, ...)
{
	va_list ap;
	int code;

	va_start(ap, fmt);
	code = smtp__reply_vadd(c, fmt, ap);
	va_end(ap);
	return code;
}

TEST(smtp_reply_chain)
{
	struct smtp__ochain c = { 0 }, d = { 0 };
	struct smtp__oblock *l;
	uv_buf_t bufs[4];
	unsigned n;
	char big[3000];

	T_EQ(reply_add(&c, "250 2.0.0 Ok: queued as %s", "ABC"), 250);
	T_EQ(reply_add(&c, "%s", "no code"), 0);
	T_EQ(c.bytes, strlen("250 2.0.0 Ok: queued as ABC\r\nno code\r\n"));
	T_MEMEQS(c.head->data, c.head->len, "250 2.0.0 Ok: queued as ABC\r\nno code\r\n");
	/* a reply line is cut to 512 octets with its CRLF */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	smtp__ochain_reset(&c);
	T_EQ(reply_add(&c, "550 5.0.0 %s", big), 550);
	T_EQ(c.bytes, 512);
	T_MEMEQS(c.head->data + 510, 2, "\r\n");
	/* big appends get blocks of their own; take and move */
	smtp__ochain_add(&c, big, sizeof(big) - 1);
	smtp__ochain_add(&d, "abc", 3);
	smtp__ochain_move(&d, &c);
	T_EQ(c.bytes, 0);
	T_TRUE(c.head == NULL);
	T_EQ(d.bytes, 3 + 512 + sizeof(big) - 1);
	l = smtp__ochain_take(&d, bufs, 2, &n);
	T_EQ(n, 2);
	T_EQ(bufs[0].len + bufs[1].len + d.bytes, 3 + 512 + sizeof(big) - 1);
	smtp__oblock_free_list(l);
	l = smtp__ochain_take(&d, bufs, 4, &n);
	T_TRUE(d.head == NULL && d.tail == NULL && d.bytes == 0 && d.nblocks == 0);
	smtp__oblock_free_list(l);
	l = smtp__ochain_take(&d, bufs, 4, &n);
	T_EQ(n, 0);
	T_TRUE(l == NULL);
}

TEST(smtp_date)
{
	char buf[40];

	setenv("TZ", "UTC", 1);
	tzset();
	smtp__rfc5322_date(0, buf, sizeof(buf));
	T_STREQ(buf, "Thu, 01 Jan 1970 00:00:00 +0000");
	setenv("TZ", "EST5", 1);
	tzset();
	smtp__rfc5322_date(1763834580, buf, sizeof(buf));
	T_STREQ(buf, "Sat, 22 Nov 2025 13:03:00 -0500");
}
