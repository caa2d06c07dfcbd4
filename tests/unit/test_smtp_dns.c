/*
 * test_smtp_dns.c - unit tests of next-hop resolution (dns.c) that need no
 * DNS server: the destination syntax ("[host]:port", "host:port", ...),
 * MX ordering with a scripted random source and with the real one, the
 * null-MX test, the c-ares status mapping, the name-server list, and the
 * resolver's life cycle on a real libuv loop: literal destinations (no
 * DNS), a silent name server on loopback (a bound UDP socket that never
 * answers) for timeouts and cancellation, and freeing or resolving again
 * from inside a callback.  Real answers are tested in
 * tests/integ/60-dns-resolver.sh against nsd.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ares.h>
#include <uv.h>

#include "smtp/dns_int.h"
#include "smtp/smtp.h"
#include "tests/unit/test.h"

/* ---- destination syntax ------------------------------------------------------ */

/* parse_ok - parse dest (default port 25) and check every field */
static void
parse_ok(const char *dest, const char *host, unsigned port, int mx, int literal)
{
	struct smtp_nexthop_dest d;
	char err[256] = "";

	if (smtp_nexthop_parse(dest, 25, &d, err, sizeof(err)) != 0)
		T_FAIL("\"%s\": unexpected error: %s", dest, err);
	T_STREQ(d.host, host);
	T_EQ(d.port, port);
	T_EQ(d.mx, mx);
	T_EQ(d.literal, literal);
}

/* parse_bad - dest is refused with a message containing what */
static void
parse_bad(const char *dest, uint16_t port, const char *what)
{
	struct smtp_nexthop_dest d;
	char err[256] = "";

	T_EQ(smtp_nexthop_parse(dest, port, &d, err, sizeof(err)), -EINVAL);
	if (strstr(err, what) == NULL)
		T_FAIL("\"%s\": error \"%s\" does not mention \"%s\"", dest, err, what);
}

TEST(smtp_dns_parse_forms)
{
	parse_ok("example.com", "example.com", 25, 1, 0);
	parse_ok("Example.COM", "example.com", 25, 1, 0);
	parse_ok("example.com.", "example.com", 25, 1, 0);
	parse_ok("example.com:587", "example.com", 587, 1, 0);
	parse_ok("[mx.example.com]", "mx.example.com", 25, 0, 0);
	parse_ok("[mx.example.com]:2525", "mx.example.com", 2525, 0, 0);
	parse_ok("[_smtp-1.example.com.]:65535", "_smtp-1.example.com", 65535, 0, 0);
	parse_ok("[127.0.0.1]", "127.0.0.1", 25, 0, 1);
	parse_ok("[127.0.0.1]:26", "127.0.0.1", 26, 0, 1);
	parse_ok("127.0.0.1", "127.0.0.1", 25, 0, 1);
	parse_ok("192.0.2.7:2525", "192.0.2.7", 2525, 0, 1);
	parse_ok("[::1]", "::1", 25, 0, 1);
	parse_ok("[::1]:10025", "::1", 10025, 0, 1);
	parse_ok("[IPv6:2001:DB8::1]:25", "2001:db8::1", 25, 0, 1);
	parse_ok("[ipv6:::1]", "::1", 25, 0, 1);
	parse_ok("localhost", "localhost", 25, 1, 0);
}

TEST(smtp_dns_parse_errors)
{
	char label[80], name[300];
	size_t i;

	parse_bad("", 25, "empty destination");
	parse_bad("[mx.example.com", 25, "missing ']'");
	parse_bad("[mx.example.com]x", 25, "unexpected text after ']'");
	parse_bad("[mx.example.com]:", 25, "bad port");
	parse_bad("[]", 25, "empty host");
	parse_bad("::1", 25, "must be in brackets");
	parse_bad("2001:db8::1:25", 25, "must be in brackets");
	parse_bad("example.com:0", 25, "bad port \"0\"");
	parse_bad("example.com:65536", 25, "bad port");
	parse_bad("example.com:", 25, "bad port");
	parse_bad("example.com:smtp", 25, "bad port \"smtp\"");
	parse_bad("example.com:+25", 25, "bad port");
	parse_bad("exa mple.com", 25, "bad character");
	parse_bad("exa/mple.com", 25, "bad character");
	parse_bad("a..b", 25, "empty label");
	parse_bad(".example.com", 25, "empty label");
	parse_bad(".", 25, "empty label");
	parse_bad("[IPv6:mx.example.com]", 25, "not an IPv6 address");
	parse_bad("[IPv6:127.0.0.1]", 25, "not an IPv6 address");
	parse_bad("example.com", 0, "no port");
	memset(label, 'a', 64);
	label[64] = '\0';
	snprintf(name, sizeof(name), "%s.example.com", label);
	parse_bad(name, 25, "longer than 63");
	for (i = 0; i < 5; i++)
		memcpy(name + i * 60, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.", 60);
	name[254] = '\0';
	parse_bad(name, 25, "longer than 253");
	memset(name, 'a', 299);
	name[299] = '\0';
	parse_bad(name, 25, "too long");
}

/* ---- MX order ------------------------------------------------------------------ */

/* a scripted random source: returns the next value mod n */
struct script {
	const unsigned *v;
	size_t n, at;
};

static unsigned
script_rand(void *arg, unsigned n)
{
	struct script *s = arg;

	T_TRUE(n > 0);
	if (s->at >= s->n)
		return 0;
	return s->v[s->at++] % n;
}

/* mx_set - fill mx[] from "host/pref" pairs */
static size_t
mx_set(struct smtp__dns_mx *mx, const char *const *hosts, const unsigned *prefs,
    size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		snprintf(mx[i].host, sizeof(mx[i].host), "%s", hosts[i]);
		mx[i].pref = prefs[i];
	}
	return n;
}

TEST(smtp_dns_mx_sort)
{
	static const char *const hosts[] = { "c", "a", "b", "d", "e" };
	static const unsigned prefs[] = { 30, 10, 20, 40, 5 };
	struct smtp__dns_mx mx[5];
	size_t n;

	n = mx_set(mx, hosts, prefs, 5);
	T_EQ(smtp__dns_mx_order(mx, n, script_rand,
	    &(struct script){ NULL, 0, 0 }), 5);
	T_STREQ(mx[0].host, "e");
	T_STREQ(mx[1].host, "a");
	T_STREQ(mx[2].host, "b");
	T_STREQ(mx[3].host, "c");
	T_STREQ(mx[4].host, "d");
	T_EQ(mx[0].pref, 5);
	T_EQ(mx[4].pref, 40);
	/* empty and single lists */
	T_EQ(smtp__dns_mx_order(mx, 0, NULL, NULL), 0);
	T_EQ(smtp__dns_mx_order(mx, 1, NULL, NULL), 1);
	T_STREQ(mx[0].host, "e");
}

TEST(smtp_dns_mx_shuffle_scripted)
{
	/* three at 10, one at 5, two at 20 */
	static const char *const hosts[] = { "x1", "x2", "x3", "best", "y1", "y2" };
	static const unsigned prefs[] = { 10, 10, 10, 5, 20, 20 };
	/*
	 * Fisher-Yates from the top of each run: run 10 (x1 x2 x3) draws
	 * for k=2 then k=1, run 20 (y1 y2) draws once.  0, 0 rotates
	 * x1 x2 x3 -> x2 x3 x1... computed by hand below.
	 */
	static const unsigned draws[] = { 0, 0, 0 };
	struct smtp__dns_mx mx[6];
	struct script s = { draws, 3, 0 };
	size_t n;

	n = mx_set(mx, hosts, prefs, 6);
	T_EQ(smtp__dns_mx_order(mx, n, script_rand, &s), 6);
	T_EQ(s.at, 3);      /* one draw per swap position, none for "best" */
	T_STREQ(mx[0].host, "best");
	/* x1 x2 x3: k=2 swaps with 0 -> x3 x2 x1; k=1 swaps with 0 -> x2 x3 x1 */
	T_STREQ(mx[1].host, "x2");
	T_STREQ(mx[2].host, "x3");
	T_STREQ(mx[3].host, "x1");
	/* y1 y2: k=1 swaps with 0 -> y2 y1 */
	T_STREQ(mx[4].host, "y2");
	T_STREQ(mx[5].host, "y1");
	T_EQ(mx[3].pref, 10);
	T_EQ(mx[4].pref, 20);
}

TEST(smtp_dns_mx_dedupe)
{
	static const char *const hosts[] = { "mx2", "MX1", "mx1", "mx2", "mx3" };
	static const unsigned prefs[] = { 20, 30, 10, 20, 30 };
	struct smtp__dns_mx mx[5];
	size_t n;

	n = mx_set(mx, hosts, prefs, 5);
	n = smtp__dns_mx_order(mx, n, script_rand, &(struct script){ NULL, 0, 0 });
	T_EQ(n, 3);
	T_STREQ(mx[0].host, "mx1");
	T_EQ(mx[0].pref, 10);
	T_STREQ(mx[1].host, "mx2");
	T_STREQ(mx[2].host, "mx3");
}

TEST(smtp_dns_mx_shuffle_random)
{
	static const char *const hosts[] = { "first", "a", "b", "c", "last" };
	static const unsigned prefs[] = { 1, 7, 7, 7, 9 };
	struct smtp__dns_mx mx[5];
	unsigned seen[3] = { 0, 0, 0 };
	int i;

	/* with the real random source every host of the run comes first */
	for (i = 0; i < 300; i++) {
		mx_set(mx, hosts, prefs, 5);
		T_EQ(smtp__dns_mx_order(mx, 5, NULL, NULL), 5);
		T_STREQ(mx[0].host, "first");
		T_STREQ(mx[4].host, "last");
		T_EQ(mx[1].pref, 7);
		T_EQ(mx[3].pref, 7);
		T_TRUE(mx[1].host[0] >= 'a' && mx[1].host[0] <= 'c');
		seen[mx[1].host[0] - 'a']++;
	}
	/* each has probability 1/3: below 50 of 300 is ~1e-9 */
	for (i = 0; i < 3; i++)
		if (seen[i] < 50)
			T_FAIL("host %c first only %u times of 300", 'a' + i, seen[i]);
}

TEST(smtp_dns_nullmx)
{
	struct smtp__dns_mx mx[2];

	memset(mx, 0, sizeof(mx));
	T_EQ(smtp__dns_is_nullmx(mx, 0), 0);
	T_EQ(smtp__dns_is_nullmx(mx, 1), 1);         /* "" from c-ares */
	snprintf(mx[0].host, sizeof(mx[0].host), ".");
	T_EQ(smtp__dns_is_nullmx(mx, 1), 1);
	snprintf(mx[1].host, sizeof(mx[1].host), "mx.example.com");
	mx[1].pref = 10;
	T_EQ(smtp__dns_is_nullmx(mx, 2), 0);         /* root next to a host */
	T_EQ(smtp__dns_is_nullmx(mx + 1, 1), 0);
}

TEST(smtp_dns_classify)
{
	T_EQ(smtp__dns_classify(ARES_SUCCESS), SMTP_NEXTHOP_OK);
	T_EQ(smtp__dns_classify(ARES_ENOTFOUND), SMTP_NEXTHOP_PERMFAIL);
	T_EQ(smtp__dns_classify(ARES_ENODATA), SMTP_NEXTHOP_PERMFAIL);
	T_EQ(smtp__dns_classify(ARES_ESERVFAIL), SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(smtp__dns_classify(ARES_EREFUSED), SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(smtp__dns_classify(ARES_ETIMEOUT), SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(smtp__dns_classify(ARES_ECONNREFUSED), SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(smtp__dns_classify(ARES_EBADRESP), SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(smtp__dns_classify(ARES_ENOMEM), SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(smtp__dns_classify(ARES_ECANCELLED), SMTP_NEXTHOP_CANCELLED);
	T_EQ(smtp__dns_classify(ARES_EDESTRUCTION), SMTP_NEXTHOP_CANCELLED);
	T_STREQ(smtp__dns_strerror(ARES_ENOTFOUND), "Host not found");
	T_STREQ(smtp__dns_strerror(ARES_ENODATA),
	    "Host found but no data record of requested type");
	T_TRUE(strncmp(smtp__dns_strerror(ARES_ESERVFAIL),
	    "Host not found, try again", 25) == 0);
	T_STREQ(smtp_nexthop_strstatus(SMTP_NEXTHOP_OK), "ok");
	T_STREQ(smtp_nexthop_strstatus(SMTP_NEXTHOP_TEMPFAIL), "temporary");
	T_STREQ(smtp_nexthop_strstatus(SMTP_NEXTHOP_PERMFAIL), "permanent");
	T_STREQ(smtp_nexthop_strstatus(SMTP_NEXTHOP_NULLMX), "nullmx");
	T_STREQ(smtp_nexthop_strstatus(SMTP_NEXTHOP_CANCELLED), "cancelled");
}

/* ---- the resolver on a loop -------------------------------------------------- */

TEST(smtp_dns_resolver_servers)
{
	static const char *const good[] = {
		"127.0.0.1", "127.0.0.1:5353,[::1]:53", "::1", "[::1]",
		" 192.0.2.1:53 , 192.0.2.2\t", "",
	};
	static const struct { const char *s, *what; } bad[] = {
		{ "ns.example.com", "not an IPv4 or IPv6 address" },
		{ "[::1", "unbalanced" },
		{ "[::1]x", "unbalanced" },
		{ "127.0.0.1:0", "bad port" },
		{ "127.0.0.1:x", "bad port" },
		{ "1,2,3", "not an IPv4" },
	};
	struct smtp_resolver_opts o = { NULL, 0, 0 };
	struct smtp_resolver *r;
	uv_loop_t loop;
	char err[256];
	size_t i;

	T_OK(uv_loop_init(&loop));
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		o.servers = good[i];
		err[0] = '\0';
		if (smtp_resolver_new(&loop, &o, &r, err, sizeof(err)) != 0)
			T_FAIL("\"%s\": %s", good[i], err);
		smtp_resolver_free(r);
	}
	T_OK(smtp_resolver_new(&loop, NULL, &r, err, sizeof(err)));
	smtp_resolver_free(r);
	smtp_resolver_free(NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.servers = bad[i].s;
		err[0] = '\0';
		r = (struct smtp_resolver *)&o;
		T_EQ(smtp_resolver_new(&loop, &o, &r, err, sizeof(err)), -EINVAL);
		T_TRUE(r == NULL);
		if (strstr(err, bad[i].what) == NULL)
			T_FAIL("\"%s\": \"%s\" lacks \"%s\"", bad[i].s, err, bad[i].what);
	}
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));
}

/* what the callbacks saw */
struct seen {
	int calls;
	struct smtp_nexthop res;
	struct smtp_resolver *r;
	int free_in_cb;         /* free r from the callback */
	const char *again;      /* resolve this from the callback */
	struct seen *next_seen;
};

static void
seen_cb(void *arg, const struct smtp_nexthop *res)
{
	struct seen *s = arg;

	s->calls++;
	s->res = *res;
	if (s->free_in_cb)
		smtp_resolver_free(s->r);
	if (s->again != NULL)
		T_OK(smtp_resolve_nexthop(s->r, s->again, 25, seen_cb, s->next_seen));
}

/* addr_is - res hop i address j is text:port */
static void
addr_is(const struct smtp_hop *h, size_t j, const char *text, unsigned port)
{
	char buf[INET6_ADDRSTRLEN];
	const struct sockaddr_storage *ss = &h->addrs[j];

	T_TRUE(j < h->naddrs);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
		T_EQ(ntohs(sin->sin_port), port);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		T_EQ(ss->ss_family, AF_INET6);
		inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
		T_EQ(ntohs(sin6->sin6_port), port);
	}
	T_STREQ(buf, text);
}

TEST(smtp_dns_resolve_literal)
{
	struct smtp_resolver_opts o = { "127.0.0.1:9", 100, 1 };
	struct smtp_resolver *r;
	struct seen a, b, c;
	uv_loop_t loop;
	char err[256];

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	T_OK(uv_loop_init(&loop));
	T_OK(smtp_resolver_new(&loop, &o, &r, err, sizeof(err)));
	T_OK(smtp_resolve_nexthop(r, "[127.0.0.9]:2525", 25, seen_cb, &a));
	T_OK(smtp_resolve_nexthop(r, "[IPv6:::1]", 25, seen_cb, &b));
	T_OK(smtp_resolve_nexthop(r, "192.0.2.1", 587, seen_cb, &c));
	/* never before smtp_resolve_nexthop returns */
	T_EQ(a.calls + b.calls + c.calls, 0);
	T_EQ(smtp_resolve_nexthop(r, "[bad", 25, seen_cb, &a), -EINVAL);
	T_OK(uv_run(&loop, UV_RUN_ONCE));
	T_EQ(a.calls, 1);
	T_EQ(b.calls, 1);
	T_EQ(c.calls, 1);
	T_EQ(a.res.status, SMTP_NEXTHOP_OK);
	T_STREQ(a.res.dsn, "2.0.0");
	T_STREQ(a.res.reason, "");
	T_EQ(a.res.nhops, 1);
	T_STREQ(a.res.hops[0].host, "127.0.0.9");
	T_EQ(a.res.hops[0].naddrs, 1);
	addr_is(&a.res.hops[0], 0, "127.0.0.9", 2525);
	T_EQ(b.res.status, SMTP_NEXTHOP_OK);
	addr_is(&b.res.hops[0], 0, "::1", 25);
	addr_is(&c.res.hops[0], 0, "192.0.2.1", 587);
	T_EQ(c.res.dest.mx, 0);
	T_EQ(c.res.dest.literal, 1);
	smtp_resolver_free(r);
	T_EQ(a.calls + b.calls + c.calls, 3);   /* nothing left to cancel */
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));
}

/* silent_server - a bound loopback UDP socket that never answers; its port */
static int
silent_server(unsigned *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd;

	fd = socket(AF_INET, SOCK_DGRAM, 0);
	T_TRUE(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	T_OK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)));
	T_OK(getsockname(fd, (struct sockaddr *)&sin, &len));
	*port = ntohs(sin.sin_port);
	return fd;
}

TEST(smtp_dns_resolve_timeout)
{
	static const char want[] = "Host or domain name not found. Name "
	    "service error for name=example.com type=MX: Host not found, try again";
	struct smtp_resolver_opts o = { NULL, 100, 2 };
	struct smtp_resolver *r;
	struct seen a, b;
	char servers[64], err[256];
	unsigned port;
	uint64_t t0, dt;
	uv_loop_t loop;
	int fd;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	fd = silent_server(&port);
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", port);
	o.servers = servers;
	T_OK(uv_loop_init(&loop));
	T_OK(smtp_resolver_new(&loop, &o, &r, err, sizeof(err)));
	T_OK(smtp_resolve_nexthop(r, "example.com", 25, seen_cb, &a));
	T_OK(smtp_resolve_nexthop(r, "[mx.example.com]:26", 25, seen_cb, &b));
	t0 = uv_hrtime();
	uv_run(&loop, UV_RUN_DEFAULT);
	dt = (uv_hrtime() - t0) / 1000000;
	/* 100 ms, then 200 ms: well under 2 s */
	if (dt > 2000)
		T_FAIL("timeouts took %llu ms", (unsigned long long)dt);
	T_EQ(a.calls, 1);
	T_EQ(a.res.status, SMTP_NEXTHOP_TEMPFAIL);
	T_STREQ(a.res.dsn, "4.4.3");
	T_EQ(a.res.nhops, 0);
	T_TRUE(strncmp(a.res.reason, want, strlen(want)) == 0);
	/* "[host]": no MX lookup; the host stays, flagged */
	T_EQ(b.calls, 1);
	T_EQ(b.res.status, SMTP_NEXTHOP_TEMPFAIL);
	T_EQ(b.res.nhops, 1);
	T_STREQ(b.res.hops[0].host, "mx.example.com");
	T_EQ(b.res.hops[0].flags & SMTP_HOP_TEMPFAIL, SMTP_HOP_TEMPFAIL);
	T_EQ(b.res.hops[0].naddrs, 0);
	T_TRUE(strstr(b.res.reason, "name=mx.example.com type=A:") != NULL);
	T_TRUE(strstr(b.res.hops[0].reason, "name=mx.example.com type=A:") != NULL);
	smtp_resolver_free(r);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));
	close(fd);
}

TEST(smtp_dns_resolve_cancel)
{
	struct smtp_resolver_opts o = { NULL, 5000, 3 };
	struct smtp_resolver *r;
	struct seen a, b, c;
	char servers[64], err[256];
	unsigned port;
	uv_loop_t loop;
	int fd;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	fd = silent_server(&port);
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", port);
	o.servers = servers;
	T_OK(uv_loop_init(&loop));
	T_OK(smtp_resolver_new(&loop, &o, &r, err, sizeof(err)));
	T_OK(smtp_resolve_nexthop(r, "example.com", 25, seen_cb, &a));
	T_OK(smtp_resolve_nexthop(r, "[mx.example.org]", 25, seen_cb, &b));
	T_OK(smtp_resolve_nexthop(r, "[127.0.0.1]", 25, seen_cb, &c));
	/* the queries are on the wire; nothing answers */
	uv_run(&loop, UV_RUN_NOWAIT);
	T_EQ(c.calls, 1);                 /* a literal is done at once */
	T_EQ(a.calls + b.calls, 0);
	smtp_resolver_free(r);
	/* each pending query, exactly once, before free returned */
	T_EQ(a.calls, 1);
	T_EQ(b.calls, 1);
	T_EQ(c.calls, 1);
	T_EQ(a.res.status, SMTP_NEXTHOP_CANCELLED);
	T_EQ(b.res.status, SMTP_NEXTHOP_CANCELLED);
	T_TRUE(strstr(a.res.reason, "cancelled") != NULL);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(a.calls + b.calls + c.calls, 3);
	T_OK(uv_loop_close(&loop));
	close(fd);
}

TEST(smtp_dns_free_in_callback)
{
	struct smtp_resolver_opts o = { NULL, 5000, 3 };
	struct smtp_resolver *r;
	struct seen a, b, c;
	char servers[64], err[256];
	unsigned port;
	uv_loop_t loop;
	int fd;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	fd = silent_server(&port);
	snprintf(servers, sizeof(servers), "127.0.0.1:%u", port);
	o.servers = servers;
	T_OK(uv_loop_init(&loop));
	T_OK(smtp_resolver_new(&loop, &o, &r, err, sizeof(err)));
	/* a literal answers first and frees the resolver under the others */
	a.r = r;
	a.free_in_cb = 1;
	T_OK(smtp_resolve_nexthop(r, "[127.0.0.1]", 25, seen_cb, &a));
	T_OK(smtp_resolve_nexthop(r, "[127.0.0.2]", 25, seen_cb, &b));
	T_OK(smtp_resolve_nexthop(r, "example.net", 25, seen_cb, &c));
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(a.calls, 1);
	T_EQ(a.res.status, SMTP_NEXTHOP_OK);
	T_EQ(b.calls, 1);
	T_EQ(b.res.status, SMTP_NEXTHOP_CANCELLED);
	T_EQ(c.calls, 1);
	T_EQ(c.res.status, SMTP_NEXTHOP_CANCELLED);
	T_OK(uv_loop_close(&loop));
	close(fd);
}

TEST(smtp_dns_resolve_in_callback)
{
	struct smtp_resolver_opts o = { "127.0.0.1:9", 100, 1 };
	struct smtp_resolver *r;
	struct seen a, b;
	uv_loop_t loop;
	char err[256];

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	T_OK(uv_loop_init(&loop));
	T_OK(smtp_resolver_new(&loop, &o, &r, err, sizeof(err)));
	a.r = r;
	a.again = "[::1]:2526";
	a.next_seen = &b;
	T_OK(smtp_resolve_nexthop(r, "[127.0.0.3]", 25, seen_cb, &a));
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(a.calls, 1);
	T_EQ(b.calls, 1);
	addr_is(&b.res.hops[0], 0, "::1", 2526);
	smtp_resolver_free(r);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));
}
