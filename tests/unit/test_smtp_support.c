/*
 * test_smtp_support.c - unit tests of the pieces under the SMTP session:
 * address lists (netlist.c), the credentials file and SASL decoding
 * (auth.c, with hashes made here by libcrypt and base64 made here by
 * OpenSSL's encoder, not by the decoder under test), PROXY v1/v2 headers
 * whole and a byte at a time (proxy.c), and TLS (tls.c): self-signed
 * generation into a temporary directory, then complete handshakes between
 * an OpenSSL client on its own memory BIOs and smtp__tls, passing bytes
 * through buffers in both directions.
 */
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "smtp/smtp_int.h"
#include "tests/unit/test.h"

/* ---- helpers ------------------------------------------------------------- */

struct tbuf {
	char *p;
	size_t len, cap;
};

/* tbuf_add - append bytes, growing the buffer */
static void
tbuf_add(struct tbuf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		if ((b->p = realloc(b->p, b->cap)) == NULL)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/* sa_of - a sockaddr for a text address ("1.2.3.4" or "::1") */
static struct sockaddr_storage
sa_of(const char *s)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	else
		T_FAIL("bad test address %s", s);
	return ss;
}

/* nl_match - does list l match the text address s? */
static int
nl_match(const struct smtp_netlist *l, const char *s)
{
	struct sockaddr_storage ss = sa_of(s);

	return smtp_netlist_match(l, (struct sockaddr *)&ss);
}

/* addr_str - "addr port" of a parsed PROXY address, or "unspec" */
static const char *
addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
		snprintf(buf, len, "%s %u", a, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
		snprintf(buf, len, "%s %u", a, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "unspec %d", ss->ss_family);
	}
	return buf;
}

/* make_tmpdir - a fresh directory under TMPDIR; the caller removes it */
static void
make_tmpdir(char *dir, size_t len)
{
	const char *t = getenv("TMPDIR");

	snprintf(dir, len, "%s/signet-smtp-XXXXXX", t != NULL ? t : "/tmp");
	if (mkdtemp(dir) == NULL)
		T_FAIL("mkdtemp: %s", strerror(errno));
}

/* write_text - create path with the given contents */
static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
		T_FAIL("writing %s: %s", path, strerror(errno));
}

/* ---- netlist ------------------------------------------------------------- */

TEST(smtp_netlist_basic)
{
	struct smtp_netlist *l;
	char err[256];

	T_OK(smtp_netlist_parse("127.0.0.0/8, [::1]/128 10.0.0.1,,\t"
	    "2001:db8::/32  192.168.0.0/23", &l, err, sizeof(err)));
	T_TRUE(nl_match(l, "127.0.0.1"));
	T_TRUE(nl_match(l, "127.255.255.255"));
	T_TRUE(!nl_match(l, "128.0.0.1"));
	T_TRUE(!nl_match(l, "126.255.255.255"));
	T_TRUE(nl_match(l, "::1"));
	T_TRUE(!nl_match(l, "::2"));
	T_TRUE(!nl_match(l, "::"));
	T_TRUE(nl_match(l, "10.0.0.1"));
	T_TRUE(!nl_match(l, "10.0.0.2"));
	T_TRUE(!nl_match(l, "10.0.0.0"));
	T_TRUE(nl_match(l, "2001:db8::1"));
	T_TRUE(nl_match(l, "2001:db8:ffff:ffff::1"));
	T_TRUE(!nl_match(l, "2001:db9::1"));
	T_TRUE(nl_match(l, "192.168.0.0"));
	T_TRUE(nl_match(l, "192.168.1.255"));
	T_TRUE(!nl_match(l, "192.168.2.0"));
	/* IPv4-mapped clients match IPv4 entries. */
	T_TRUE(nl_match(l, "::ffff:127.0.0.5"));
	T_TRUE(nl_match(l, "::ffff:10.0.0.1"));
	T_TRUE(!nl_match(l, "::ffff:10.0.0.2"));
	T_TRUE(nl_match(l, "::ffff:192.168.1.1"));
	/* ... but an IPv4-compatible or NAT64 form is not IPv4. */
	T_TRUE(!nl_match(l, "::10.0.0.1"));
	T_TRUE(!nl_match(l, "64:ff9b::a00:1"));
	smtp_netlist_free(l);
}

TEST(smtp_netlist_edges)
{
	struct smtp_netlist *l;
	struct sockaddr_un sun;
	char err[256];

	/* /0 per family. */
	T_OK(smtp_netlist_parse("0.0.0.0/0", &l, err, sizeof(err)));
	T_TRUE(nl_match(l, "1.2.3.4"));
	T_TRUE(nl_match(l, "255.255.255.255"));
	T_TRUE(nl_match(l, "::ffff:8.8.8.8"));
	T_TRUE(!nl_match(l, "::1"));
	smtp_netlist_free(l);
	T_OK(smtp_netlist_parse("::/0", &l, err, sizeof(err)));
	T_TRUE(nl_match(l, "::1"));
	T_TRUE(nl_match(l, "ffff::ffff"));
	T_TRUE(!nl_match(l, "1.2.3.4"));
	T_TRUE(!nl_match(l, "::ffff:1.2.3.4"));
	smtp_netlist_free(l);

	/* /32 and /128 written out; brackets around IPv4 too. */
	T_OK(smtp_netlist_parse("[192.0.2.7]/32 2001:db8::7/128", &l, err,
	    sizeof(err)));
	T_TRUE(nl_match(l, "192.0.2.7"));
	T_TRUE(!nl_match(l, "192.0.2.6"));
	T_TRUE(nl_match(l, "2001:db8::7"));
	T_TRUE(!nl_match(l, "2001:db8::6"));
	smtp_netlist_free(l);

	/* An entry written as IPv4-mapped IPv6 matches IPv4 clients. */
	T_OK(smtp_netlist_parse("::ffff:198.51.100.0/120", &l, err,
	    sizeof(err)));
	T_TRUE(nl_match(l, "198.51.100.200"));
	T_TRUE(nl_match(l, "::ffff:198.51.100.1"));
	T_TRUE(!nl_match(l, "198.51.101.1"));
	smtp_netlist_free(l);

	/* Empty lists are valid and match nothing. */
	T_OK(smtp_netlist_parse("  , ", &l, err, sizeof(err)));
	T_TRUE(!nl_match(l, "127.0.0.1"));
	smtp_netlist_free(l);
	T_OK(smtp_netlist_parse("", &l, err, sizeof(err)));
	smtp_netlist_free(l);

	/* NULL list, non-IP socket. */
	T_TRUE(!nl_match(NULL, "127.0.0.1"));
	T_OK(smtp_netlist_parse("0.0.0.0/0 ::/0", &l, err, sizeof(err)));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	T_EQ(smtp_netlist_match(l, (struct sockaddr *)&sun), 0);
	smtp_netlist_free(l);
	smtp_netlist_free(NULL);
}

TEST(smtp_netlist_bad)
{
	static const char *bad[] = {
		"10.0.0.0/33", "::/129", "1.2.3", "1.2.3.256", "abc",
		"10.0.0.1/8",          /* host bits set */
		"2001:db8::1/32",
		"[10.0.0.1", "10.0.0.1]", "[::1]x", "[::1]/", "10.0.0.0/",
		"10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08", "1.2.3.4/8x",
		"1.2.3.4/32/32", "fe80::1%eth0", "01.2.3.4", "1.2.3.4.5",
		"::1::2", "[]", "/8",
		"1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb/128",
	};
	struct smtp_netlist *l;
	char err[256], list[256];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		l = (struct smtp_netlist *)&l;   /* must be reset to NULL */
		snprintf(list, sizeof(list), "127.0.0.1, %s ::1", bad[i]);
		err[0] = '\0';
		if (smtp_netlist_parse(list, &l, err, sizeof(err)) != -EINVAL)
			T_FAIL("\"%s\" was accepted", bad[i]);
		T_TRUE(l == NULL);
		/* The message names the item (a long one by its start). */
		if (strstr(err, strlen(bad[i]) > 20 ? "1111:2222" : bad[i])
		    == NULL)
			T_FAIL("error for \"%s\" does not name it: %s", bad[i],
			    err);
	}
	T_OK(smtp_netlist_parse("10.0.0.0/8", &l, err, sizeof(err)));
	smtp_netlist_free(l);
}

/* ---- credentials --------------------------------------------------------- */

/* make_hash - crypt(3) hash of pw with a fresh setting of method prefix */
static char *
make_hash(const char *prefix, const char *pw)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	char *h;

	if (crypt_gensalt_rn(prefix, 0, NULL, 0, setting,
	    sizeof(setting)) == NULL)
		T_FAIL("crypt_gensalt_rn(%s): %s", prefix, strerror(errno));
	if ((cd = calloc(1, sizeof(*cd))) == NULL)
		abort();
	if (crypt_rn(pw, setting, cd, sizeof(*cd)) == NULL)
		T_FAIL("crypt_rn(%s): %s", setting, strerror(errno));
	if ((h = strdup(cd->output)) == NULL)
		abort();
	free(cd);
	T_TRUE(strncmp(h, prefix, strlen(prefix)) == 0);
	return h;
}

TEST(smtp_authdb_check)
{
	struct smtp_authdb *db;
	char dir[256], path[300], text[2048], err[512];
	char *h6 = make_hash("$6$", "alice secret");
	char *hy = make_hash("$y$", "b\xc3\xb6" "b-pw");

	make_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/passwd", dir);
	snprintf(text, sizeof(text),
	    "# Signet SMTP AUTH users\n"
	    "\n"
	    "alice:%s\n"
	    "   # indented comment\n"
	    "  bob@example.com:%s  \r\n"
	    "\t\n", h6, hy);
	write_text(path, text);
	T_OK(smtp_authdb_load(path, &db, err, sizeof(err)));

	T_EQ(smtp_authdb_check(db, "alice", "alice secret"), 1);
	T_EQ(smtp_authdb_check(db, "alice", "alice secreT"), 0);
	T_EQ(smtp_authdb_check(db, "alice", "alice secret "), 0);
	T_EQ(smtp_authdb_check(db, "alice", ""), 0);
	T_EQ(smtp_authdb_check(db, "Alice", "alice secret"), 0);
	T_EQ(smtp_authdb_check(db, "bob@example.com", "b\xc3\xb6" "b-pw"), 1);
	T_EQ(smtp_authdb_check(db, "bob@example.com", "alice secret"), 0);
	/* Unknown users fail, also with a password some user has. */
	T_EQ(smtp_authdb_check(db, "carol", "alice secret"), 0);
	T_EQ(smtp_authdb_check(db, "", "alice secret"), 0);
	T_EQ(smtp_authdb_check(NULL, "alice", "alice secret"), 0);
	smtp_authdb_free(db);
	smtp_authdb_free(NULL);

	/* An empty file is a database without users. */
	write_text(path, "# nobody yet\n");
	T_OK(smtp_authdb_load(path, &db, err, sizeof(err)));
	T_EQ(smtp_authdb_check(db, "alice", "alice secret"), 0);
	smtp_authdb_free(db);

	unlink(path);
	rmdir(dir);
	free(h6);
	free(hy);
}

TEST(smtp_authdb_errors)
{
	static const struct {
		const char *line, *msg;
	} bad[] = {
		{ "nocolon", "expected user:hash" },
		{ ":HASH", "bad user name" },
		{ "al ice:HASH", "bad user name" },
		{ "alice:HASH:0:0", "more fields" },
		{ "alice:", "not a crypt(3) hash" },
		{ "alice:notahash", "weak or unrecognised hash" },
		{ "alice:$6$", "incomplete crypt(3) hash" },
		{ "alice:$6$saltsaltsalt$", "incomplete crypt(3) hash" },
		{ "alice:$y$j9T$F5Jx5fExrKuPp53xLKQ..1", "incomplete" },
		{ "alice:$9$abc$def", "not a crypt(3) hash" },
		{ "alice:!", "not a crypt(3) hash" },
		{ "alice:$1$abcdefgh$NTp8jtWHd1cG0HQkn6ZCv0",
		    "weak or unrecognised hash" },
		{ "alice:ab01FAX.bQRSU", "weak or unrecognised hash" },
	};
	struct smtp_authdb *db;
	char dir[256], path[300], text[2048], want[400], err[512];
	char *h6 = make_hash("$6$", "x");
	size_t i;

	make_tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/passwd", dir);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char line[256];
		const char *h = strstr(bad[i].line, "HASH");

		/* Put a real hash where the case has HASH. */
		if (h != NULL)
			snprintf(line, sizeof(line), "%.*s%s%s",
			    (int)(h - bad[i].line), bad[i].line, h6, h + 4);
		else
			snprintf(line, sizeof(line), "%s", bad[i].line);
		snprintf(text, sizeof(text), "# users\n\nok:%s\n%s\n", h6,
		    line);
		write_text(path, text);
		db = (struct smtp_authdb *)&db;
		err[0] = '\0';
		if (smtp_authdb_load(path, &db, err, sizeof(err)) != -EINVAL)
			T_FAIL("\"%s\" was accepted", line);
		T_TRUE(db == NULL);
		snprintf(want, sizeof(want), "%s:4: ", path);
		if (strncmp(err, want, strlen(want)) != 0 ||
		    strstr(err, bad[i].msg) == NULL)
			T_FAIL("\"%s\": error \"%s\", wanted \"%s...%s\"",
			    line, err, want, bad[i].msg);
	}

	/* The same user twice. */
	snprintf(text, sizeof(text), "dup:%s\nother:%s\ndup:%s\n", h6, h6, h6);
	write_text(path, text);
	T_EQ(smtp_authdb_load(path, &db, err, sizeof(err)), -EINVAL);
	T_TRUE(strstr(err, "dup") != NULL);

	/* A NUL byte inside a line. */
	{
		FILE *f = fopen(path, "w");

		T_TRUE(f != NULL);
		fwrite("ok:$6$\0x\n", 1, 9, f);
		fclose(f);
	}
	T_EQ(smtp_authdb_load(path, &db, err, sizeof(err)), -EINVAL);
	T_TRUE(strstr(err, ":1: ") != NULL);

	unlink(path);
	T_EQ(smtp_authdb_load(path, &db, err, sizeof(err)), -ENOENT);
	T_TRUE(strstr(err, path) != NULL);
	rmdir(dir);
	free(h6);
}

/* ---- SASL and base64 ----------------------------------------------------- */

/* b64 - base64 of n bytes by OpenSSL's encoder, into a static buffer */
static const char *
b64(const void *p, size_t n)
{
	static char out[1024];

	T_TRUE(n < 600);
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* plain - smtp__sasl_plain on the base64 of the n raw bytes */
static int
plain(const char *raw, size_t n, char *user, size_t ulen, char *pass,
    size_t plen)
{
	const char *e = b64(raw, n);

	return smtp__sasl_plain(e, strlen(e), user, ulen, pass, plen);
}

#define RAW(s) s, sizeof(s) - 1

TEST(smtp_sasl_plain)
{
	char user[64], pass[64], tiny[4], tiny2[4];
	static const char rfc[] = "AHRpbQB0YW5zdGFhZnRhbnN0YWFm";

	/* RFC 4616 4: "\0tim\0tanstaaftanstaaf" */
	T_OK(smtp__sasl_plain(rfc, strlen(rfc), user, sizeof(user), pass,
	    sizeof(pass)));
	T_STREQ(user, "tim");
	T_STREQ(pass, "tanstaaftanstaaf");

	T_OK(plain(RAW("tim\0tim\0pw"), user, sizeof(user), pass,
	    sizeof(pass)));
	T_STREQ(user, "tim");
	T_STREQ(pass, "pw");
	T_OK(plain(RAW("\0j\xc3\xb6rg@example.org\0p w \xe2\x82\xac"), user,
	    sizeof(user), pass, sizeof(pass)));
	T_STREQ(user, "j\xc3\xb6rg@example.org");
	T_STREQ(pass, "p w \xe2\x82\xac");

	/* authzid must be empty or the same as authcid (-2: a refusal, 535). */
	T_EQ(plain(RAW("admin\0tim\0pw"), user, sizeof(user), pass,
	    sizeof(pass)), -2);
	T_EQ(plain(RAW("tim2\0tim\0pw"), user, sizeof(user), pass,
	    sizeof(pass)), -2);
	T_EQ(plain(RAW("ti\0tim\0pw"), user, sizeof(user), pass,
	    sizeof(pass)), -2);
	/* Missing or extra NULs, empty fields. */
	T_EQ(plain(RAW("tim\0pw"), user, sizeof(user), pass, sizeof(pass)),
	    -1);
	T_EQ(plain(RAW("timpw"), user, sizeof(user), pass, sizeof(pass)), -1);
	T_EQ(plain(RAW("\0tim\0p\0w"), user, sizeof(user), pass,
	    sizeof(pass)), -1);
	T_EQ(plain(RAW("\0\0pw"), user, sizeof(user), pass, sizeof(pass)),
	    -1);
	T_EQ(plain(RAW("\0tim\0"), user, sizeof(user), pass, sizeof(pass)),
	    -1);
	T_EQ(plain(RAW(""), user, sizeof(user), pass, sizeof(pass)), -1);
	T_EQ(smtp__sasl_plain("", 0, user, sizeof(user), pass, sizeof(pass)),
	    -1);
	T_EQ(smtp__sasl_plain("=", 1, user, sizeof(user), pass, sizeof(pass)),
	    -1);
	/* Too long is malformed, never truncated. */
	T_EQ(plain(RAW("\0timo\0pw"), tiny, sizeof(tiny), pass, sizeof(pass)),
	    -1);
	T_EQ(plain(RAW("\0tim\0pass"), user, sizeof(user), tiny, sizeof(tiny)),
	    -1);
	T_OK(plain(RAW("\0tim\0pas"), tiny, sizeof(tiny), tiny2,
	    sizeof(tiny2)));
	T_STREQ(tiny, "tim");
	T_STREQ(tiny2, "pas");
	/* Bad base64 around a good message. */
	T_EQ(smtp__sasl_plain(rfc, strlen(rfc) - 1, user, sizeof(user), pass,
	    sizeof(pass)), -1);
	T_EQ(smtp__sasl_plain("AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n", 30, user,
	    sizeof(user), pass, sizeof(pass)), -1);
	T_EQ(smtp__sasl_plain("AHRpbQB0YW5zdGFh ZnRhbnN0YWFm", 29, user,
	    sizeof(user), pass, sizeof(pass)), -1);
}

TEST(smtp_b64_decode)
{
	unsigned char raw[64];
	char out[80], small[5];
	size_t n, i;
	const char *e;

	T_OK(smtp__b64_decode_str("dGVzdA==", 8, out, sizeof(out)));
	T_STREQ(out, "test");
	T_OK(smtp__b64_decode_str("dGVzdDE=", 8, out, sizeof(out)));
	T_STREQ(out, "test1");
	T_OK(smtp__b64_decode_str("dGVzdDEy", 8, out, sizeof(out)));
	T_STREQ(out, "test12");
	T_OK(smtp__b64_decode_str("", 0, out, sizeof(out)));
	T_STREQ(out, "");
	/* Exactly enough room, and one byte short of it. */
	T_OK(smtp__b64_decode_str("dGVzdA==", 8, small, 5));
	T_STREQ(small, "test");
	T_EQ(smtp__b64_decode_str("dGVzdDE=", 8, small, 5), -1);
	T_EQ(smtp__b64_decode_str("dGVzdA==", 8, small, 0), -1);

	static const char *bad[] = {
		"dGVzdA=", "dGVzdA", "dGVzd", "dGVzdA===", "====", "A===",
		"dG=zdA==", "dGVz=A==", "=GVz", "dGVzdB==", "dGVzdDF=",
		"dGVz dA=", "dGVz\ndA=", "dGVz-A==", "dGVz_A==", "dGVzdA=a",
		"AA==",     /* a NUL byte */
		"dGVzdA==dGVzdA==",
	};
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (smtp__b64_decode_str(bad[i], strlen(bad[i]), out,
		    sizeof(out)) != -1)
			T_FAIL("\"%s\" was accepted", bad[i]);

	/* Every length 0..48 and byte value: padding of each kind. */
	for (n = 0; n <= 48; n++) {
		for (i = 0; i < n; i++)
			raw[i] = (unsigned char)(1 + (i * 37 + n * 11) % 255);
		e = b64(raw, n);
		T_OK(smtp__b64_decode_str(e, strlen(e), out, sizeof(out)));
		T_MEMEQ(out, strlen(out), raw, n);
	}
}

/* ---- PROXY protocol ------------------------------------------------------ */

/* proxy_ok - p[0..len) is a header of hlen bytes, also fed a byte at a time */
static void
proxy_ok(const char *p, size_t len, long hlen, const char *want_src,
    const char *want_dst)
{
	struct sockaddr_storage src, dst;
	char a[80], b[80];
	char *copy;
	size_t i;
	long r;

	r = smtp__proxy_parse(p, len, &src, &dst);
	if (r != hlen)
		T_FAIL("parse returned %ld, wanted %ld", r, hlen);
	T_STREQ(addr_str(&src, a, sizeof(a)), want_src);
	T_STREQ(addr_str(&dst, b, sizeof(b)), want_dst);
	/* Every shorter prefix, in an exact-size copy for ASan: need more. */
	for (i = 0; i < (size_t)hlen; i++) {
		if ((copy = malloc(i + 1)) == NULL)
			abort();
		memcpy(copy, p, i);
		r = smtp__proxy_parse(copy, i, &src, &dst);
		free(copy);
		if (r != 0)
			T_FAIL("prefix of %zu bytes: %ld, wanted 0", i, r);
	}
	if ((copy = malloc((size_t)hlen)) == NULL)
		abort();
	memcpy(copy, p, (size_t)hlen);
	T_EQ(smtp__proxy_parse(copy, (size_t)hlen, NULL, NULL), hlen);
	free(copy);
}

/* proxy_bad - p is refused, at the latest once all of it is there */
static void
proxy_bad(const char *p, size_t len)
{
	struct sockaddr_storage src, dst;
	long r = smtp__proxy_parse(p, len, &src, &dst);

	if (r != -1)
		T_FAIL("accepted (%ld) a bad header of %zu bytes", r, len);
}

#define PX_OK(s, src, dst) proxy_ok(s, sizeof(s) - 1, sizeof(s) - 1, src, dst)
#define PX_BAD(s) proxy_bad(s, sizeof(s) - 1)

TEST(smtp_proxy_v1)
{
	char line[200];
	size_t n;

	PX_OK("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\n", "1.2.3.4 1111",
	    "5.6.7.8 25");
	PX_OK("PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
	    "255.255.255.255 65535", "0.0.0.0 0");
	PX_OK("PROXY TCP6 2001:db8::1 ::1 40000 587\r\n", "2001:db8::1 40000",
	    "::1 587");
	PX_OK("PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n",
	    "::ffff:192.0.2.1 1", "::ffff:192.0.2.2 2");
	PX_OK("PROXY UNKNOWN\r\n", "unspec 0", "unspec 0");
	PX_OK("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
	    "unspec 0", "unspec 0");
	/* SMTP after the header is not consumed. */
	proxy_ok("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\r\nEHLO x\r\n", 44, 36,
	    "1.2.3.4 1111", "5.6.7.8 25");

	/* The longest line allowed is 107 bytes, CRLF included. */
	n = (size_t)snprintf(line, sizeof(line), "PROXY UNKNOWN %091d\r\n", 0);
	T_EQ(n, 107);
	proxy_ok(line, n, 107, "unspec 0", "unspec 0");
	n = (size_t)snprintf(line, sizeof(line), "PROXY UNKNOWN %092d\r\n", 0);
	proxy_bad(line, n);
	/* ... and without a CRLF, 107 bytes are enough to give up. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	T_EQ(smtp__proxy_parse(line, 106, NULL, NULL), 0);
	proxy_bad(line, 107);

	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25\rX");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25 \r\n");
	PX_BAD("PROXY TCP4 1.2.3.4  5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY  TCP4 1.2.3.4 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111 25 26\r\n");
	PX_BAD("PROXY TCP4 01.2.3.4 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.256 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY TCP4 ::1 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY TCP6 1.2.3.4 ::1 1111 25\r\n");
	PX_BAD("PROXY TCP6 fe80::1%eth0 ::1 1111 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111 025\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 +1 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 0x1 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 111111 25\r\n");
	PX_BAD("PROXY TCP5 1.2.3.4 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY tcp4 1.2.3.4 5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY UNKNOWNX\r\n");
	PX_BAD("PROXY \r\n");
	PX_BAD("PROXY TCP4 1.2.3.4\t5.6.7.8 1111 25\r\n");
	PX_BAD("PROXY TCP4 1.2.3.4 5.6.7.8 1111 2\0" "5\r\n");
	PX_BAD("proxy TCP4 1.2.3.4 5.6.7.8 1111 25\r\n");

	/* Refused at the first byte that rules out both signatures. */
	PX_BAD("E");
	PX_BAD("EHLO example.com\r\n");
	PX_BAD("PROX\n");
	PX_BAD("PROXYX");
	PX_BAD("PROXY TCP4 1.2\n");
	T_EQ(smtp__proxy_parse("PRO", 3, NULL, NULL), 0);
	T_EQ(smtp__proxy_parse("PROXY TCP4 1.2", 14, NULL, NULL), 0);
	T_EQ(smtp__proxy_parse("", 0, NULL, NULL), 0);
}

/* v2 - build a v2 header: ver_cmd, fam, then body (address block + TLVs) */
static size_t
v2(unsigned char *out, unsigned ver_cmd, unsigned fam, const void *body,
    size_t blen, size_t declared)
{
	memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
	out[12] = (unsigned char)ver_cmd;
	out[13] = (unsigned char)fam;
	out[14] = (unsigned char)(declared >> 8);
	out[15] = (unsigned char)declared;
	memcpy(out + 16, body, blen);
	return 16 + blen;
}

TEST(smtp_proxy_v2)
{
	static const unsigned char in4[] = {
		1, 2, 3, 4, 5, 6, 7, 8, 0x04, 0x57, 0x00, 0x19,
	};
	unsigned char in6[36 + 3 + 5 + 3], body[1100], h[1200];
	size_t n;

	/* TCP over IPv4. */
	n = v2(h, 0x21, 0x11, in4, sizeof(in4), sizeof(in4));
	proxy_ok((char *)h, n, 16 + 12, "1.2.3.4 1111", "5.6.7.8 25");
	/* Followed by SMTP. */
	memcpy(h + n, "EHLO x\r\n", 8);
	proxy_ok((char *)h, n + 8, 16 + 12, "1.2.3.4 1111", "5.6.7.8 25");

	/* TCP over IPv6 with TLVs: NOOP of 0 bytes, AUTHORITY "mx.ex". */
	memset(in6, 0, sizeof(in6));
	in6[0] = 0x20;
	in6[1] = 0x01;
	in6[2] = 0x0d;
	in6[3] = 0xb8;
	in6[15] = 1;
	in6[31] = 1;
	in6[32] = 0xc3;
	in6[33] = 0x50;
	in6[34] = 0x02;
	in6[35] = 0x4b;
	memcpy(in6 + 36, "\x04\x00\x00" "\x02\x00\x05" "mx.ex", 11);
	n = v2(h, 0x21, 0x21, in6, sizeof(in6), sizeof(in6));
	proxy_ok((char *)h, n, (long)n, "2001:db8::1 50000", "::1 587");

	/* LOCAL (health checks): no addresses, the block is skipped. */
	n = v2(h, 0x20, 0x00, "", 0, 0);
	proxy_ok((char *)h, n, 16, "unspec 0", "unspec 0");
	n = v2(h, 0x20, 0x11, in4, sizeof(in4), sizeof(in4));
	proxy_ok((char *)h, n, 28, "unspec 0", "unspec 0");
	/* PROXY with UNSPEC: the sender does not know either. */
	n = v2(h, 0x21, 0x00, "abc", 3, 3);
	proxy_ok((char *)h, n, 19, "unspec 0", "unspec 0");
	/* The largest header we take. */
	memset(body, 0, sizeof(body));
	memcpy(body, in4, sizeof(in4));
	body[12] = 0x04;
	body[13] = (1024 - 16 - 12 - 3) >> 8;
	body[14] = (1024 - 16 - 12 - 3) & 0xff;
	n = v2(h, 0x21, 0x11, body, 1024 - 16, 1024 - 16);
	proxy_ok((char *)h, n, 1024, "1.2.3.4 1111", "5.6.7.8 25");

	/* Refused as soon as the deciding byte is in. */
	n = v2(h, 0x11, 0x11, in4, sizeof(in4), 12);    /* version 1 */
	proxy_bad((char *)h, 13);
	n = v2(h, 0x31, 0x11, in4, sizeof(in4), 12);    /* version 3 */
	proxy_bad((char *)h, 13);
	n = v2(h, 0x22, 0x11, in4, sizeof(in4), 12);    /* command 2 */
	proxy_bad((char *)h, 13);
	n = v2(h, 0x21, 0x31, in4, sizeof(in4), 12);    /* AF_UNIX */
	proxy_bad((char *)h, 14);
	n = v2(h, 0x21, 0x12, in4, sizeof(in4), 12);    /* DGRAM */
	proxy_bad((char *)h, 14);
	n = v2(h, 0x21, 0x10, in4, sizeof(in4), 12);    /* INET, no proto */
	proxy_bad((char *)h, 14);
	n = v2(h, 0x21, 0x41, in4, sizeof(in4), 12);    /* family 4 */
	proxy_bad((char *)h, 14);
	n = v2(h, 0x21, 0x11, in4, sizeof(in4), 8);     /* block too short */
	proxy_bad((char *)h, 16);
	n = v2(h, 0x21, 0x21, in4, sizeof(in4), 12);    /* v6 needs 36 */
	proxy_bad((char *)h, 16);
	n = v2(h, 0x21, 0x11, in4, sizeof(in4), 0xffff);/* beyond our bound */
	proxy_bad((char *)h, 16);
	n = v2(h, 0x21, 0x11, body, 1025 - 16, 1025 - 16);
	proxy_bad((char *)h, 16);
	/* TLVs that do not fit the block. */
	memcpy(body, in4, 12);
	memcpy(body + 12, "\x04\x00\x05" "ab", 5);
	n = v2(h, 0x21, 0x11, body, 17, 17);
	proxy_bad((char *)h, n);
	memcpy(body + 12, "\x04\x00", 2);
	n = v2(h, 0x21, 0x11, body, 14, 14);
	proxy_bad((char *)h, n);
	/* A signature that breaks off early. */
	proxy_bad("\r\n\r\n\0\r\nQUIX\n", 12);
	proxy_bad("\r\n\r\nX", 5);
	proxy_bad("\r\r", 2);
	T_EQ(smtp__proxy_parse("\r\n\r\n\0\r", 6, NULL, NULL), 0);
	(void)n;
}

/* ---- TLS ----------------------------------------------------------------- */

#define HOST "mx.signet.test"

struct tls_dir {
	char dir[256], cert[300], key[300];
};

/* tls_dir_new - a temporary directory with a self-signed pair for HOST */
static SSL_CTX *
tls_dir_new(struct tls_dir *d)
{
	SSL_CTX *ctx;
	char err[512];

	make_tmpdir(d->dir, sizeof(d->dir));
	snprintf(d->cert, sizeof(d->cert), "%s/cert.pem", d->dir);
	snprintf(d->key, sizeof(d->key), "%s/key.pem", d->dir);
	ctx = smtp_tls_ctx_new(d->cert, d->key, HOST, 1, err, sizeof(err));
	if (ctx == NULL)
		T_FAIL("smtp_tls_ctx_new: %s", err);
	return ctx;
}

/* tls_dir_free - remove what tls_dir_new made */
static void
tls_dir_free(struct tls_dir *d)
{
	unlink(d->cert);
	unlink(d->key);
	rmdir(d->dir);
}

TEST(smtp_tls_selfsigned)
{
	struct tls_dir d;
	struct stat st;
	SSL_CTX *ctx;
	X509 *x;
	FILE *f;
	GENERAL_NAMES *gens;
	const GENERAL_NAME *gn;
	char err[512], key1[4096], key2[4096];
	int days, secs;
	size_t n1, n2;

	ctx = tls_dir_new(&d);
	SSL_CTX_free(ctx);

	T_OK(stat(d.key, &st));
	T_EQ(st.st_mode & 07777, 0600);
	T_OK(stat(d.cert, &st));
	T_EQ(st.st_mode & 07777, 0644);

	/* The certificate: SAN DNS:HOST, 10 years, matches its key. */
	T_TRUE((f = fopen(d.cert, "r")) != NULL);
	T_TRUE((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL);
	fclose(f);
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	T_TRUE(gens != NULL);
	T_EQ(sk_GENERAL_NAME_num(gens), 1);
	gn = sk_GENERAL_NAME_value(gens, 0);
	T_EQ(gn->type, GEN_DNS);
	T_MEMEQ(ASN1_STRING_get0_data(gn->d.dNSName),
	    (size_t)ASN1_STRING_length(gn->d.dNSName), HOST, strlen(HOST));
	GENERAL_NAMES_free(gens);
	T_EQ(X509_check_host(x, HOST, 0, 0, NULL), 1);
	T_EQ(X509_check_host(x, "other." HOST, 0, 0, NULL), 0);
	T_TRUE(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x),
	    X509_get0_notAfter(x)));
	T_EQ(days, 3650);
	T_EQ(X509_get_version(x), X509_VERSION_3);
	T_EQ(X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0), 1);
	X509_free(x);

	/* A second start loads the same pair, no new key. */
	T_TRUE((f = fopen(d.key, "r")) != NULL);
	n1 = fread(key1, 1, sizeof(key1), f);
	fclose(f);
	ctx = smtp_tls_ctx_new(d.cert, d.key, HOST, 1, err, sizeof(err));
	T_TRUE(ctx != NULL);
	SSL_CTX_free(ctx);
	T_TRUE((f = fopen(d.key, "r")) != NULL);
	n2 = fread(key2, 1, sizeof(key2), f);
	fclose(f);
	T_MEMEQ(key1, n1, key2, n2);

	/* Only the key left: refused, and the key is not replaced. */
	unlink(d.cert);
	T_TRUE(smtp_tls_ctx_new(d.cert, d.key, HOST, 1, err,
	    sizeof(err)) == NULL);
	T_TRUE(strstr(err, d.key) != NULL);
	T_OK(stat(d.key, &st));
	T_TRUE(stat(d.cert, &st) != 0);
	/* Missing files without selfsigned: the error names the file. */
	T_TRUE(smtp_tls_ctx_new(d.cert, d.key, HOST, 0, err,
	    sizeof(err)) == NULL);
	T_TRUE(strstr(err, d.cert) != NULL);
	unlink(d.key);
	/* A host name that cannot go in a certificate. */
	T_TRUE(smtp_tls_ctx_new(d.cert, d.key, "bad host", 1, err,
	    sizeof(err)) == NULL);
	T_TRUE(strstr(err, "bad host") != NULL);
	T_TRUE(smtp_tls_ctx_new(d.cert, d.key, NULL, 1, err,
	    sizeof(err)) == NULL);
	T_TRUE(stat(d.key, &st) != 0 && stat(d.cert, &st) != 0);
	/* A key that does not belong to the certificate. */
	{
		struct tls_dir d2;

		SSL_CTX_free(tls_dir_new(&d2));
		tls_dir_free(&d);
		ctx = tls_dir_new(&d);
		SSL_CTX_free(ctx);
		T_TRUE(smtp_tls_ctx_new(d.cert, d2.key, HOST, 0, err,
		    sizeof(err)) == NULL);
		T_TRUE(err[0] != '\0');
		tls_dir_free(&d2);
	}
	/* Not PEM at all. */
	write_text(d.cert, "not a certificate\n");
	T_TRUE(smtp_tls_ctx_new(d.cert, d.key, HOST, 1, err,
	    sizeof(err)) == NULL);
	T_TRUE(strstr(err, d.cert) != NULL);
	tls_dir_free(&d);
	T_EQ(ERR_peek_error(), 0);
}

/* The server side as the session sees it: what came out of smtp__tls. */
struct srv {
	struct smtp__tls *t;
	struct tbuf plain;     /* decrypted from the client */
	struct tbuf cipher;    /* to send to the client */
	int echo;              /* reply "ok N\r\n" from inside on_plain */
};

/* The client: an OpenSSL SSL on its own memory BIOs. */
struct cli {
	SSL *ssl;
	BIO *rb, *wb;
	struct tbuf plain;     /* decrypted from the server */
	int closed;            /* close_notify seen */
	int failed;
};

/* srv_plain - smtp__tls's on_plain */
static void
srv_plain(void *arg, const char *p, size_t len)
{
	struct srv *s = arg;
	char reply[32];
	int n;

	tbuf_add(&s->plain, p, len);
	if (s->echo) {
		n = snprintf(reply, sizeof(reply), "ok %zu\r\n", len);
		T_OK(smtp__tls_write(s->t, reply, (size_t)n));
	}
}

/* srv_cipher - smtp__tls's on_cipher */
static void
srv_cipher(void *arg, const char *p, size_t len)
{
	struct srv *s = arg;

	T_TRUE(len > 0);
	tbuf_add(&s->cipher, p, len);
}

/* cli_new - a client for HOST trusting the certificate in cert_file */
static void
cli_new(struct cli *c, SSL_CTX **cctxp, const char *cert_file, int max_ver)
{
	SSL_CTX *cctx;

	memset(c, 0, sizeof(*c));
	T_TRUE((cctx = SSL_CTX_new(TLS_client_method())) != NULL);
	T_EQ(SSL_CTX_load_verify_locations(cctx, cert_file, NULL), 1);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	if (max_ver == TLS1_1_VERSION) {
		SSL_CTX_set_security_level(cctx, 0);
		SSL_CTX_set_cipher_list(cctx, "DEFAULT:@SECLEVEL=0");
		SSL_CTX_set_min_proto_version(cctx, TLS1_VERSION);
	}
	if (max_ver != 0)
		T_EQ(SSL_CTX_set_max_proto_version(cctx, max_ver), 1);
	T_TRUE((c->ssl = SSL_new(cctx)) != NULL);
	T_TRUE((c->rb = BIO_new(BIO_s_mem())) != NULL);
	T_TRUE((c->wb = BIO_new(BIO_s_mem())) != NULL);
	BIO_set_mem_eof_return(c->rb, -1);
	SSL_set_bio(c->ssl, c->rb, c->wb);
	SSL_set_connect_state(c->ssl);
	T_EQ(SSL_set1_host(c->ssl, HOST), 1);
	T_EQ(SSL_set_tlsext_host_name(c->ssl, HOST), 1);
	*cctxp = cctx;
}

/* cli_step - let the client handshake or read whatever has arrived */
static void
cli_step(struct cli *c)
{
	char buf[4096];
	int r;

	if (c->failed)
		return;
	if (!SSL_is_init_finished(c->ssl)) {
		r = SSL_do_handshake(c->ssl);
		if (r != 1) {
			if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ)
				c->failed = 1;
			ERR_clear_error();
			return;
		}
	}
	while (!c->closed) {
		r = SSL_read(c->ssl, buf, sizeof(buf));
		if (r > 0) {
			tbuf_add(&c->plain, buf, (size_t)r);
			continue;
		}
		r = SSL_get_error(c->ssl, r);
		if (r == SSL_ERROR_ZERO_RETURN)
			c->closed = 1;
		else if (r != SSL_ERROR_WANT_READ)
			c->failed = 1;
		ERR_clear_error();
		break;
	}
}

/*
 * pump - move bytes both ways until neither side has anything to say.
 * chunk: how many bytes of client ciphertext each smtp__tls_feed gets
 * (0: all there is).  Returns the first non-zero smtp__tls_feed result.
 */
static int
pump(struct cli *c, struct srv *s, size_t chunk, char *err, size_t errlen)
{
	char buf[8192];
	size_t off, n;
	int r, moved, rc = 0, rounds;

	for (rounds = 0; rounds < 10000; rounds++) {
		cli_step(c);
		moved = 0;
		while ((r = BIO_read(c->wb, buf, sizeof(buf))) > 0) {
			moved = 1;
			for (off = 0; off < (size_t)r && rc == 0; off += n) {
				n = chunk != 0 ? chunk : (size_t)r;
				if (n > (size_t)r - off)
					n = (size_t)r - off;
				rc = smtp__tls_feed(s->t, buf + off, n, err,
				    errlen);
			}
		}
		if (s->cipher.len > 0) {
			moved = 1;
			T_EQ(BIO_write(c->rb, s->cipher.p, (int)s->cipher.len),
			    (int)s->cipher.len);
			s->cipher.len = 0;
		}
		if (!moved || rc != 0)
			return rc;
	}
	T_FAIL("pump does not settle");
	return -1;
}

/* tls_pair - a connected client and server over a fresh self-signed pair */
static void
tls_pair(struct tls_dir *d, SSL_CTX **sctx, SSL_CTX **cctx, struct cli *c,
    struct srv *s, int max_ver, size_t chunk)
{
	char err[512] = "";

	*sctx = tls_dir_new(d);
	cli_new(c, cctx, d->cert, max_ver);
	memset(s, 0, sizeof(*s));
	T_TRUE((s->t = smtp__tls_new(*sctx, srv_plain, srv_cipher, s)) != NULL);
	T_EQ(smtp__tls_ready(s->t), 0);
	if (pump(c, s, chunk, err, sizeof(err)) != 0)
		T_FAIL("handshake: %s", err);
	T_TRUE(!c->failed);
	T_TRUE(SSL_is_init_finished(c->ssl));
	T_EQ(smtp__tls_ready(s->t), 1);
	/* The client checked the chain and the name (SAN) on its own. */
	T_EQ(SSL_get_verify_result(c->ssl), X509_V_OK);
	T_TRUE(SSL_version(c->ssl) >= TLS1_2_VERSION);
}

/* tls_pair_free - free what tls_pair made */
static void
tls_pair_free(struct tls_dir *d, SSL_CTX *sctx, SSL_CTX *cctx,
    struct cli *c, struct srv *s)
{
	smtp__tls_free(s->t);
	SSL_free(c->ssl);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	free(s->plain.p);
	free(s->cipher.p);
	free(c->plain.p);
	tls_dir_free(d);
}

/* fill - n bytes of a recognisable pattern */
static char *
fill(size_t n, unsigned seed)
{
	char *p = malloc(n);
	size_t i;

	if (p == NULL)
		abort();
	for (i = 0; i < n; i++)
		p[i] = (char)(' ' + (i * 7 + seed + i / 251) % 90);
	return p;
}

TEST(smtp_tls_handshake)
{
	struct tls_dir d;
	SSL_CTX *sctx, *cctx;
	struct cli c;
	struct srv s;
	char err[512], buf[4096];
	const size_t big = 200000;
	int r;
	char *up = fill(big, 1), *down = fill(big, 2);

	tls_pair(&d, &sctx, &cctx, &c, &s, 0, 0);
	T_STREQ(smtp__tls_version(s.t), "TLSv1.3");
	T_STREQ(smtp__tls_version(s.t), SSL_get_version(c.ssl));
	T_STREQ(smtp__tls_cipher(s.t), SSL_get_cipher_name(c.ssl));

	/* Client to server, small then large (many records). */
	T_EQ(SSL_write(c.ssl, "EHLO client.test\r\n", 18), 18);
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_MEMEQ(s.plain.p, s.plain.len, "EHLO client.test\r\n", 18);
	s.plain.len = 0;
	T_EQ(SSL_write(c.ssl, up, (int)big), (int)big);
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_MEMEQ(s.plain.p, s.plain.len, up, big);

	/* Server to client. */
	T_OK(smtp__tls_write(s.t, "250 ok\r\n", 8));
	T_OK(smtp__tls_write(s.t, "", 0));
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_MEMEQ(c.plain.p, c.plain.len, "250 ok\r\n", 8);
	c.plain.len = 0;
	T_OK(smtp__tls_write(s.t, down, big));
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_MEMEQ(c.plain.p, c.plain.len, down, big);
	c.plain.len = 0;

	/* Replies written from inside on_plain arrive, in order. */
	s.echo = 1;
	s.plain.len = 0;
	T_EQ(SSL_write(c.ssl, "NOOP\r\n", 6), 6);
	T_EQ(SSL_write(c.ssl, "RSET\r\n", 6), 6);
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_MEMEQ(s.plain.p, s.plain.len, "NOOP\r\nRSET\r\n", 12);
	T_MEMEQ(c.plain.p, c.plain.len, "ok 6\r\nok 6\r\n", 12);
	s.echo = 0;

	/*
	 * A stale error on this thread's queue (left by another session on
	 * the same loop) must not upset this one.
	 */
	s.plain.len = 0;
	T_EQ(SSL_write(c.ssl, "QUIT\r\n", 6), 6);
	T_TRUE((r = BIO_read(c.wb, buf, sizeof(buf))) > 0);
	ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET_LENGTH);
	T_OK(smtp__tls_feed(s.t, buf, (size_t)r, err, sizeof(err)));
	T_EQ(ERR_peek_error(), 0);
	T_MEMEQ(s.plain.p, s.plain.len, "QUIT\r\n", 6);

	/* Our close_notify reaches the client. */
	smtp__tls_shutdown(s.t);
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_TRUE(c.closed);
	/* The client's close_notify is not an error; later data is ignored. */
	T_TRUE(SSL_shutdown(c.ssl) >= 0);
	s.plain.len = 0;
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_OK(smtp__tls_feed(s.t, "junk", 4, err, sizeof(err)));
	T_EQ(s.plain.len, 0);

	tls_pair_free(&d, sctx, cctx, &c, &s);
	free(up);
	free(down);
}

TEST(smtp_tls_bytewise)
{
	struct tls_dir d;
	SSL_CTX *sctx, *cctx;
	struct cli c;
	struct srv s;
	char err[512];

	/* Every ciphertext byte in its own feed: WANT_READ everywhere. */
	tls_pair(&d, &sctx, &cctx, &c, &s, 0, 1);
	T_EQ(SSL_write(c.ssl, "MAIL FROM:<a@b.test>\r\n", 22), 22);
	T_OK(pump(&c, &s, 1, err, sizeof(err)));
	T_MEMEQ(s.plain.p, s.plain.len, "MAIL FROM:<a@b.test>\r\n", 22);
	tls_pair_free(&d, sctx, cctx, &c, &s);
}

TEST(smtp_tls12)
{
	struct tls_dir d;
	SSL_CTX *sctx, *cctx;
	struct cli c;
	struct srv s;
	char err[512];

	tls_pair(&d, &sctx, &cctx, &c, &s, TLS1_2_VERSION, 7);
	T_STREQ(smtp__tls_version(s.t), "TLSv1.2");
	T_EQ(SSL_version(c.ssl), TLS1_2_VERSION);
	T_OK(smtp__tls_write(s.t, "220 ready\r\n", 11));
	T_EQ(SSL_write(c.ssl, "EHLO x\r\n", 8), 8);
	T_OK(pump(&c, &s, 0, err, sizeof(err)));
	T_MEMEQ(s.plain.p, s.plain.len, "EHLO x\r\n", 8);
	T_MEMEQ(c.plain.p, c.plain.len, "220 ready\r\n", 11);
	/* Renegotiation is refused. */
	T_EQ(SSL_renegotiate(c.ssl), 1);
	/* Our no_renegotiation warning makes the client give up. */
	err[0] = '\0';
	T_EQ(pump(&c, &s, 0, err, sizeof(err)), -1);
	T_TRUE(c.failed);
	T_TRUE(strstr(err, "alert") != NULL);
	tls_pair_free(&d, sctx, cctx, &c, &s);
}

TEST(smtp_tls_pipelined_finish)
{
	struct tls_dir d;
	SSL_CTX *sctx, *cctx;
	struct cli c;
	struct srv s;
	char err[512], buf[8192];
	int r;

	/*
	 * The client's Finished and its first command in one feed: the
	 * command must come out of the same smtp__tls_feed call.
	 */
	sctx = tls_dir_new(&d);
	cli_new(&c, &cctx, d.cert, 0);
	memset(&s, 0, sizeof(s));
	T_TRUE((s.t = smtp__tls_new(sctx, srv_plain, srv_cipher, &s)) != NULL);
	T_EQ(SSL_do_handshake(c.ssl), -1);                /* ClientHello */
	r = BIO_read(c.wb, buf, sizeof(buf));
	T_TRUE(r > 0);
	T_OK(smtp__tls_feed(s.t, buf, (size_t)r, err, sizeof(err)));
	T_TRUE(s.cipher.len > 0);                         /* server flight */
	T_EQ(smtp__tls_ready(s.t), 0);
	BIO_write(c.rb, s.cipher.p, (int)s.cipher.len);
	s.cipher.len = 0;
	T_EQ(SSL_do_handshake(c.ssl), 1);
	T_EQ(SSL_write(c.ssl, "EHLO fast\r\n", 11), 11);
	r = BIO_read(c.wb, buf, sizeof(buf));             /* Finished + EHLO */
	T_TRUE(r > 0);
	T_OK(smtp__tls_feed(s.t, buf, (size_t)r, err, sizeof(err)));
	T_EQ(smtp__tls_ready(s.t), 1);
	T_MEMEQ(s.plain.p, s.plain.len, "EHLO fast\r\n", 11);
	tls_pair_free(&d, sctx, cctx, &c, &s);
}

TEST(smtp_tls_failures)
{
	struct tls_dir d;
	SSL_CTX *sctx, *cctx;
	struct cli c;
	struct srv s;
	char err[512];

	/* Plain SMTP where a ClientHello should be. */
	sctx = tls_dir_new(&d);
	memset(&s, 0, sizeof(s));
	T_TRUE((s.t = smtp__tls_new(sctx, srv_plain, srv_cipher, &s)) != NULL);
	err[0] = '\0';
	T_EQ(smtp__tls_feed(s.t, "EHLO x\r\n", 8, err, sizeof(err)), -1);
	T_TRUE(strstr(err, "TLS handshake") != NULL);
	T_TRUE(strstr(err, "error:") != NULL);
	T_EQ(smtp__tls_feed(s.t, "\x16\x03\x01", 3, err, sizeof(err)), -1);
	T_EQ(smtp__tls_write(s.t, "x", 1), -1);
	smtp__tls_shutdown(s.t);
	T_EQ(ERR_peek_error(), 0);
	smtp__tls_free(s.t);
	smtp__tls_free(NULL);

	/* Writing before the handshake is refused. */
	T_TRUE((s.t = smtp__tls_new(sctx, srv_plain, srv_cipher, &s)) != NULL);
	T_EQ(smtp__tls_write(s.t, "x", 1), -1);
	smtp__tls_free(s.t);
	free(s.plain.p);
	free(s.cipher.p);

	/* A TLS 1.1 client gets an alert and the session fails. */
	cli_new(&c, &cctx, d.cert, TLS1_1_VERSION);
	memset(&s, 0, sizeof(s));
	T_TRUE((s.t = smtp__tls_new(sctx, srv_plain, srv_cipher, &s)) != NULL);
	err[0] = '\0';
	T_EQ(pump(&c, &s, 0, err, sizeof(err)), -1);
	T_TRUE(strstr(err, "TLS handshake") != NULL);
	cli_step(&c);
	T_TRUE(c.failed);
	T_EQ(smtp__tls_ready(s.t), 0);
	tls_pair_free(&d, sctx, cctx, &c, &s);

	/* A client that does not trust us aborts with an alert we decode. */
	sctx = tls_dir_new(&d);
	{
		struct tls_dir other;

		SSL_CTX_free(tls_dir_new(&other));
		cli_new(&c, &cctx, other.cert, 0);
		tls_dir_free(&other);
	}
	memset(&s, 0, sizeof(s));
	T_TRUE((s.t = smtp__tls_new(sctx, srv_plain, srv_cipher, &s)) != NULL);
	err[0] = '\0';
	T_EQ(pump(&c, &s, 0, err, sizeof(err)), -1);
	T_TRUE(c.failed);
	T_TRUE(strstr(err, "alert") != NULL);
	tls_pair_free(&d, sctx, cctx, &c, &s);
}
