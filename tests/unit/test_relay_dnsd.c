/*
 * test_relay_dnsd.c - the built-in authoritative DNS server (relay/dnsd.c).
 *
 * relay_dnsd_respond gets hand-built query packets and a small table-driven
 * lookup (zone _domainkey.contoso.signet.example with a short TXT, a
 * 1000-octet TXT and a name without TXT); its answers are read back by a
 * parser of this file's own (names decompressed with a hop limit).  Then
 * the real server runs on a libuv loop in a thread on 127.0.0.1 and is
 * queried by dig (bind9-dnsutils) over UDP and TCP, by raw sockets for
 * pipelined and split TCP messages and the connection limit, and waits
 * out the idle timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "relay/keys.h"
#include "tests/unit/test.h"

#define ZONE "_domainkey.contoso.signet.example"
#define SHORT_TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"
#define SERIAL 2024061501u
#define TTL 300u
#define NEG_TTL 60u

/* ---- the lookup ---------------------------------------------------------- */

static char big_txt[1001];
static char last_qname[1100];
static int lookups;

/* big_text - 1000 octets, every 255-octet stretch different */
static const char *
big_text(void)
{
	int i;

	if (big_txt[0] == '\0') {
		for (i = 0; i < 1000; i++)
			big_txt[i] = (char)('a' + (i * 7 + i / 255) % 26);
		big_txt[1000] = '\0';
	}
	return big_txt;
}

/* tlookup - the table: the zone, s1 (short TXT), big (1000 octets), notxt
 * (exists, no TXT); anything else under the zone does not exist. */
static void
tlookup(void *arg, const char *qname, struct relay_dnsd_answer *ans)
{
	size_t n = strlen(qname), z = strlen(ZONE);

	lookups++;
	snprintf(last_qname, sizeof(last_qname), "%s", qname);
	if (strcmp(qname, ZONE) != 0 &&
	    (n <= z || qname[n - z - 1] != '.' ||
	    strcmp(qname + n - z, ZONE) != 0))
		return;
	snprintf(ans->zone, sizeof(ans->zone), "%s", ZONE);
	ans->serial = SERIAL;
	if (strcmp(qname, ZONE) == 0)
		ans->exists = 1;
	else if (strcmp(qname, "s1." ZONE) == 0) {
		ans->exists = 1;
		ans->txt = strdup(SHORT_TXT);
	} else if (strcmp(qname, "big." ZONE) == 0) {
		ans->exists = 1;
		ans->txt = strdup(big_text());
	} else if (strcmp(qname, "notxt." ZONE) == 0)
		ans->exists = 1;
}

static char *ns_items[] = { "ns1.signet.example", "ns2.signet.example." };
static struct relay_strlist ns_list = { ns_items, 2 };

static struct relay_dnsd_config tcfg = {
	.listen = "127.0.0.1:0",
	.ns = &ns_list,
	.hostmaster = "hostmaster@signet.example",
	.ttl = TTL,
	.negative_ttl = NEG_TTL,
	.lookup = tlookup,
	.arg = NULL,
};

/* ---- building queries ----------------------------------------------------- */

/* put_name - text name to uncompressed wire at p; returns the length */
static size_t
put_name(uint8_t *p, const char *name)
{
	size_t n = 0, l;
	const char *dot;

	while (*name != '\0') {
		dot = strchr(name, '.');
		l = dot != NULL ? (size_t)(dot - name) : strlen(name);
		p[n++] = (uint8_t)l;
		memcpy(p + n, name, l);
		n += l;
		name += l;
		if (*name == '.')
			name++;
	}
	p[n++] = 0;
	return n;
}

/*
 * mkquery - a query: id 0x1234 (or id), flags as given (RD by default),
 * one question, an OPT with payload size edns (0: no OPT) and version.
 */
static size_t
mkquery_full(uint8_t *p, uint16_t id, uint16_t flags, const char *name,
    uint16_t qtype, uint16_t qclass, unsigned edns, unsigned ver)
{
	size_t n;

	memset(p, 0, 12);
	p[0] = (uint8_t)(id >> 8);
	p[1] = (uint8_t)id;
	p[2] = (uint8_t)(flags >> 8);
	p[3] = (uint8_t)flags;
	p[5] = 1;
	p[11] = edns ? 1 : 0;
	n = 12 + put_name(p + 12, name);
	p[n++] = (uint8_t)(qtype >> 8);
	p[n++] = (uint8_t)qtype;
	p[n++] = (uint8_t)(qclass >> 8);
	p[n++] = (uint8_t)qclass;
	if (edns) {
		p[n++] = 0;                   /* root */
		p[n++] = 0;
		p[n++] = 41;
		p[n++] = (uint8_t)(edns >> 8);
		p[n++] = (uint8_t)edns;
		p[n++] = 0;                   /* extended rcode */
		p[n++] = (uint8_t)ver;
		p[n++] = 0x80;                /* DO */
		p[n++] = 0;
		p[n++] = 0;                   /* rdlen */
		p[n++] = 0;
	}
	return n;
}

static size_t
mkquery(uint8_t *p, const char *name, uint16_t qtype, unsigned edns)
{
	return mkquery_full(p, 0x1234, 0x0100, name, qtype, 1, edns, 0);
}

/* ---- reading answers (independent of dnsd.c) -------------------------------- */

struct trr {
	char name[300];
	uint16_t type, class;
	uint32_t ttl;
	size_t rdoff, rdlen;
	/* decoded */
	char txt[70000];
	int nstrings;
	char target[300];             /* NS; SOA mname */
	char rname[300];
	uint32_t soa[5];
};

struct tresp {
	uint16_t id, flags, qd, an, ns, ar;
	int rcode;                    /* with the OPT's extended bits */
	char qname[300];
	uint16_t qtype, qclass;
	struct trr rr[16];
	int nrr;
	int opt;                      /* index of the OPT, -1 */
	int compressed;               /* some name used a pointer */
};

/* rd_name - decompress the name at *off into text (dots, no trailing) */
static int
rd_name(const uint8_t *m, size_t len, size_t *off, char *out, int *ptr)
{
	size_t o = *off, n = 0, l;
	int hops = 0, jumped = 0;

	out[0] = '\0';
	for (;;) {
		if (o >= len)
			return -1;
		l = m[o];
		if ((l & 0xc0) == 0xc0) {
			if (o + 1 >= len || ++hops > 20)
				return -1;
			if (!jumped)
				*off = o + 2;
			jumped = 1;
			*ptr = 1;
			o = (l & 0x3f) << 8 | m[o + 1];
			continue;
		}
		if (l > 63 || o + 1 + l > len || n + l + 2 > 290)
			return -1;
		if (l == 0) {
			if (!jumped)
				*off = o + 1;
			out[n] = '\0';
			return 0;
		}
		if (n > 0)
			out[n++] = '.';
		memcpy(out + n, m + o + 1, l);
		n += l;
		o += 1 + l;
	}
}

/* parse_resp - the whole response; T_FAIL on anything malformed */
static void
parse_resp(const uint8_t *m, size_t len, struct tresp *r)
{
	size_t off, i, total, o;
	struct trr *rr;
	int ptr = 0;

	memset(r, 0, sizeof(*r));
	r->opt = -1;
	if (len < 12)
		T_FAIL("response of %zu octets", len);
	r->id = (uint16_t)(m[0] << 8 | m[1]);
	r->flags = (uint16_t)(m[2] << 8 | m[3]);
	r->rcode = r->flags & 0xf;
	r->qd = (uint16_t)(m[4] << 8 | m[5]);
	r->an = (uint16_t)(m[6] << 8 | m[7]);
	r->ns = (uint16_t)(m[8] << 8 | m[9]);
	r->ar = (uint16_t)(m[10] << 8 | m[11]);
	off = 12;
	if (r->qd > 1)
		T_FAIL("qdcount %u", r->qd);
	if (r->qd == 1) {
		if (rd_name(m, len, &off, r->qname, &ptr) != 0 || off + 4 > len)
			T_FAIL("bad question");
		r->qtype = (uint16_t)(m[off] << 8 | m[off + 1]);
		r->qclass = (uint16_t)(m[off + 2] << 8 | m[off + 3]);
		off += 4;
	}
	total = (size_t)r->an + r->ns + r->ar;
	if (total > 16)
		T_FAIL("%zu records", total);
	for (i = 0; i < total; i++) {
		rr = &r->rr[r->nrr++];
		if (rd_name(m, len, &off, rr->name, &r->compressed) != 0 ||
		    off + 10 > len)
			T_FAIL("bad record %zu", i);
		rr->type = (uint16_t)(m[off] << 8 | m[off + 1]);
		rr->class = (uint16_t)(m[off + 2] << 8 | m[off + 3]);
		rr->ttl = (uint32_t)m[off + 4] << 24 | (uint32_t)m[off + 5] << 16 |
		    (uint32_t)m[off + 6] << 8 | m[off + 7];
		rr->rdlen = (size_t)(m[off + 8] << 8 | m[off + 9]);
		off += 10;
		rr->rdoff = off;
		if (off + rr->rdlen > len)
			T_FAIL("rdata past the end");
		o = off;
		switch (rr->type) {
		case 16:
			while (o < off + rr->rdlen) {
				size_t l = m[o], tl = strlen(rr->txt);

				if (o + 1 + l > off + rr->rdlen)
					T_FAIL("character-string past rdata");
				memcpy(rr->txt + tl, m + o + 1, l);
				rr->txt[tl + l] = '\0';
				rr->nstrings++;
				o += 1 + l;
			}
			break;
		case 2:
			if (rd_name(m, len, &o, rr->target, &r->compressed) != 0 ||
			    o != off + rr->rdlen)
				T_FAIL("bad NS rdata");
			break;
		case 6:
			if (rd_name(m, len, &o, rr->target, &r->compressed) != 0 ||
			    rd_name(m, len, &o, rr->rname, &r->compressed) != 0 ||
			    o + 20 != off + rr->rdlen)
				T_FAIL("bad SOA rdata");
			for (int k = 0; k < 5; k++, o += 4)
				rr->soa[k] = (uint32_t)m[o] << 24 |
				    (uint32_t)m[o + 1] << 16 |
				    (uint32_t)m[o + 2] << 8 | m[o + 3];
			break;
		case 41:
			if (i < (size_t)r->an + r->ns || r->opt >= 0)
				T_FAIL("misplaced OPT");
			r->opt = r->nrr - 1;
			r->rcode |= (int)(rr->ttl >> 24) << 4;
			break;
		}
		off += rr->rdlen;
	}
	if (off != len)
		T_FAIL("%zu octets after the last record", len - off);
}

/* ask - respond to q in the given mode and parse the answer */
static size_t
ask(const uint8_t *q, size_t qlen, int tcp, size_t outmax, struct tresp *r)
{
	static uint8_t out[65535];
	size_t n;

	n = relay_dnsd_respond(&tcfg, q, qlen, tcp, out, outmax);
	if (n == 0)
		T_FAIL("no response");
	if (n > outmax)
		T_FAIL("response of %zu octets, limit %zu", n, outmax);
	parse_resp(out, n, r);
	return n;
}

#define F_AA 0x0400
#define F_TC 0x0200
#define F_QR 0x8000
#define F_RD 0x0100

/* check_soa - r's only authority record is the negative-answer SOA */
static void
check_neg_soa(const struct tresp *r)
{
	const struct trr *s;

	T_EQ(r->ns, 1);
	s = &r->rr[r->an];
	T_EQ(s->type, 6);
	T_STREQ(s->name, ZONE);
	T_EQ(s->ttl, NEG_TTL < TTL ? NEG_TTL : TTL);
	T_STREQ(s->target, "ns1.signet.example");
	T_STREQ(s->rname, "hostmaster.signet.example");
	T_EQ(s->soa[0], SERIAL);
	T_EQ(s->soa[1], 3600);
	T_EQ(s->soa[2], 600);
	T_EQ(s->soa[3], 1209600);
	T_EQ(s->soa[4], NEG_TTL);
}

/* ---- answers ------------------------------------------------------------------ */

TEST(relay_dnsd_txt)
{
	uint8_t q[512];
	struct tresp r;
	size_t n;

	n = mkquery(q, "s1." ZONE, 16, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.id, 0x1234);
	T_EQ(r.flags & (F_QR | F_AA | F_TC | F_RD), F_QR | F_AA | F_RD);
	T_EQ(r.flags & 0x0080, 0);            /* no RA */
	T_EQ(r.rcode, 0);
	T_EQ(r.qd, 1);
	T_STREQ(r.qname, "s1." ZONE);
	T_EQ(r.qtype, 16);
	T_EQ(r.an, 1);
	T_EQ(r.ns, 0);
	T_EQ(r.ar, 0);
	T_EQ(r.rr[0].type, 16);
	T_EQ(r.rr[0].class, 1);
	T_EQ(r.rr[0].ttl, TTL);
	T_STREQ(r.rr[0].name, "s1." ZONE);
	T_STREQ(r.rr[0].txt, SHORT_TXT);
	T_EQ(r.rr[0].nstrings, 1);
	T_TRUE(r.compressed);                 /* owner points at the question */

	/* ANY is answered like TXT; class ANY accepted */
	n = mkquery_full(q, 7, 0, "s1." ZONE, 255, 255, 0, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.id, 7);
	T_EQ(r.flags & (F_AA | F_RD), F_AA);
	T_EQ(r.an, 1);
	T_STREQ(r.rr[0].txt, SHORT_TXT);
}

TEST(relay_dnsd_case)
{
	uint8_t q[512];
	struct tresp r;
	size_t n;

	n = mkquery(q, "S1._DomainKey.Contoso.SIGNET.example", 16, 0);
	ask(q, n, 0, 512, &r);
	T_STREQ(last_qname, "s1." ZONE);
	T_EQ(r.rcode, 0);
	T_EQ(r.flags & F_AA, F_AA);
	T_STREQ(r.qname, "S1._DomainKey.Contoso.SIGNET.example");
	T_STREQ(r.rr[0].txt, SHORT_TXT);
	/* the trailing dot is not passed on; weird octets are escaped */
	n = mkquery(q, "a\\b." ZONE, 16, 0);
	ask(q, n, 0, 512, &r);
	T_STREQ(last_qname, "a\\\\b." ZONE);
	T_EQ(r.rcode, 3);
	n = mkquery(q, "x." ZONE, 16, 0);
	q[13] = '.';                        /* the label "." */
	ask(q, n, 0, 512, &r);
	T_STREQ(last_qname, "\\.." ZONE);
	T_EQ(r.rcode, 3);
	q[13] = 0;
	ask(q, n, 0, 512, &r);
	T_STREQ(last_qname, "\\000." ZONE);
	T_EQ(r.rcode, 3);
}

TEST(relay_dnsd_big_txt)
{
	uint8_t q[512];
	struct tresp r;
	size_t n, len;

	/* UDP, no EDNS: 512 octets at most, so truncated */
	n = mkquery(q, "big." ZONE, 16, 0);
	len = ask(q, n, 0, 65535, &r);
	T_TRUE(len <= 512);
	T_EQ(r.flags & F_TC, F_TC);
	T_EQ(r.flags & F_AA, F_AA);
	T_EQ(r.rcode, 0);
	T_EQ(r.qd, 1);
	T_STREQ(r.qname, "big." ZONE);
	T_EQ(r.an + r.ns + r.ar, 0);

	/* with EDNS 4096 it fits; OPT echoed with our size */
	n = mkquery(q, "big." ZONE, 16, 4096);
	len = ask(q, n, 0, 65535, &r);
	T_TRUE(len > 1000 && len <= 4096);
	T_EQ(r.flags & F_TC, 0);
	T_EQ(r.an, 1);
	T_EQ(r.ar, 1);
	T_EQ(r.opt, 1);
	T_EQ(r.rr[1].class, 1232);
	T_EQ(r.rr[1].ttl, 0x8000);          /* DO echoed, version 0 */
	T_EQ(r.rr[0].nstrings, 4);
	T_EQ(strlen(r.rr[0].txt), 1000);
	T_STREQ(r.rr[0].txt, big_text());

	/* EDNS 512 truncates, still with the OPT; a size under 512 is 512 */
	n = mkquery(q, "big." ZONE, 16, 512);
	len = ask(q, n, 0, 65535, &r);
	T_EQ(r.flags & F_TC, F_TC);
	T_EQ(r.an, 0);
	T_EQ(r.ar, 1);
	T_EQ(r.opt, 0);
	n = mkquery(q, "s1." ZONE, 16, 100);
	ask(q, n, 0, 65535, &r);
	T_EQ(r.flags & F_TC, 0);
	T_EQ(r.an, 1);

	/* TCP: no 512 limit, without EDNS too */
	n = mkquery(q, "big." ZONE, 16, 0);
	ask(q, n, 1, 65535, &r);
	T_EQ(r.flags & F_TC, 0);
	T_EQ(r.an, 1);
	T_STREQ(r.rr[0].txt, big_text());
	/* ... but outmax holds */
	len = ask(q, n, 1, 600, &r);
	T_TRUE(len <= 600);
	T_EQ(r.flags & F_TC, F_TC);
	T_EQ(r.an, 0);
	/* a buffer too small for the question: the header alone */
	len = ask(q, n, 1, 20, &r);
	T_EQ(len, 12);
	T_EQ(r.flags & F_TC, F_TC);
	T_EQ(r.qd, 0);
}

TEST(relay_dnsd_negative)
{
	uint8_t q[512];
	struct tresp r;
	size_t n;

	/* NXDOMAIN */
	n = mkquery(q, "nope." ZONE, 16, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 3);
	T_EQ(r.flags & F_AA, F_AA);
	T_EQ(r.an, 0);
	check_neg_soa(&r);
	T_TRUE(r.compressed);
	n = mkquery(q, "deep.er.nope." ZONE, 1, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 3);
	check_neg_soa(&r);

	/* NODATA: other type at a name with TXT; TXT at a name without */
	n = mkquery(q, "s1." ZONE, 1, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.flags & F_AA, F_AA);
	T_EQ(r.an, 0);
	check_neg_soa(&r);
	n = mkquery(q, "notxt." ZONE, 16, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.an, 0);
	check_neg_soa(&r);
	/* with EDNS: SOA then OPT */
	n = mkquery(q, "nope." ZONE, 16, 1232);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 3);
	check_neg_soa(&r);
	T_EQ(r.ar, 1);
	T_EQ(r.opt, 1);
}

TEST(relay_dnsd_apex)
{
	uint8_t q[512];
	struct tresp r;
	size_t n;

	n = mkquery(q, ZONE, 6, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.flags & F_AA, F_AA);
	T_EQ(r.an, 1);
	T_EQ(r.ns, 0);
	T_EQ(r.rr[0].type, 6);
	T_EQ(r.rr[0].ttl, TTL);
	T_STREQ(r.rr[0].name, ZONE);
	T_STREQ(r.rr[0].target, "ns1.signet.example");
	T_STREQ(r.rr[0].rname, "hostmaster.signet.example");
	T_EQ(r.rr[0].soa[0], SERIAL);
	T_EQ(r.rr[0].soa[4], NEG_TTL);

	n = mkquery(q, ZONE, 2, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.an, 2);
	T_EQ(r.rr[0].type, 2);
	T_EQ(r.rr[0].ttl, TTL);
	T_STREQ(r.rr[0].name, ZONE);
	T_STREQ(r.rr[0].target, "ns1.signet.example");
	T_STREQ(r.rr[1].target, "ns2.signet.example");

	n = mkquery(q, ZONE, 16, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.an, 0);
	check_neg_soa(&r);

	n = mkquery(q, ZONE, 255, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.an, 3);
	T_EQ(r.rr[0].type, 6);
	T_EQ(r.rr[1].type, 2);
	T_EQ(r.rr[2].type, 2);

	/* the apex in another case */
	n = mkquery(q, "_DOMAINKEY.contoso.Signet.Example", 6, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.an, 1);
	T_EQ(r.rr[0].soa[0], SERIAL);
}

TEST(relay_dnsd_refused)
{
	uint8_t q[512];
	struct tresp r;
	size_t n;

	n = mkquery(q, "www.example.org", 16, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 5);
	T_EQ(r.flags & F_AA, 0);
	T_EQ(r.qd, 1);
	T_EQ(r.an + r.ns + r.ar, 0);
	/* a name that merely ends like the zone */
	n = mkquery(q, "x" ZONE, 16, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 5);
	/* the parent of the zone */
	n = mkquery(q, "contoso.signet.example", 6, 1232);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 5);
	T_EQ(r.opt, 0);
	/* class CH */
	n = mkquery_full(q, 1, 0, "s1." ZONE, 16, 3, 0, 0);
	lookups = 0;
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 5);
	T_EQ(lookups, 0);
	/* zone transfers */
	n = mkquery(q, ZONE, 252, 0);
	ask(q, n, 1, 65535, &r);
	T_EQ(r.rcode, 5);
	/* the root */
	n = mkquery(q, "", 2, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 5);
}

TEST(relay_dnsd_formerr)
{
	uint8_t q[600], out[512];
	struct tresp r;
	size_t n, i;

	/* garbage: 12 octets of header claiming a question, nothing more */
	memcpy(q, "\xab\xcd\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
	ask(q, 12, 0, 512, &r);
	T_EQ(r.id, 0xabcd);
	T_EQ(r.rcode, 1);
	T_EQ(r.qd, 0);
	T_EQ(r.flags & F_AA, 0);

	/* every truncation of a good query */
	n = mkquery(q, "s1." ZONE, 16, 1232);
	for (i = 12; i < n; i++) {
		ask(q, i, 0, 512, &r);
		T_EQ(r.rcode, 1);
		T_EQ(r.an, 0);
	}
	/* trailing octets: FORMERR with the question */
	n = mkquery(q, "s1." ZONE, 16, 0);
	q[n] = 0;
	ask(q, n + 1, 0, 512, &r);
	T_EQ(r.rcode, 1);
	T_EQ(r.qd, 1);

	/* qdcount 0 and 2 */
	n = mkquery(q, "s1." ZONE, 16, 0);
	q[5] = 0;
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 1);
	q[5] = 2;
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 1);
	T_EQ(r.qd, 0);

	/* a pointer in the question, a pointer loop, an extended label */
	n = mkquery(q, "s1." ZONE, 16, 0);
	memcpy(q + 12, "\x02s1\xc0\x0c\x00\x10\x00\x01", 10);
	ask(q, 22, 0, 512, &r);
	T_EQ(r.rcode, 1);
	T_EQ(r.qd, 0);
	memcpy(q + 12, "\xc0\x0c\x00\x10\x00\x01", 6);
	ask(q, 18, 0, 512, &r);
	T_EQ(r.rcode, 1);
	memcpy(q + 12, "\x41xxxx\x00\x00\x10\x00\x01", 11);
	ask(q, 23, 0, 512, &r);
	T_EQ(r.rcode, 1);

	/* a name over 255 octets: 5 labels of 63 */
	memset(q, 0, sizeof(q));
	q[0] = 1;
	q[5] = 1;
	for (i = 0; i < 5; i++) {
		q[12 + i * 64] = 63;
		memset(q + 13 + i * 64, 'a', 63);
	}
	n = 12 + 5 * 64 + 1;
	q[n + 1] = 16;
	q[n + 3] = 1;
	ask(q, n + 4, 0, 512, &r);
	T_EQ(r.rcode, 1);
	/* 4 labels (and the root: 257 octets) is still too long; 3 fit */
	memcpy(q + 12 + 4 * 64, "\x00\x00\x10\x00\x01", 5);
	ask(q, 12 + 4 * 64 + 5, 0, 512, &r);
	T_EQ(r.rcode, 1);
	memcpy(q + 12 + 3 * 64, "\x00\x00\x10\x00\x01", 5);
	ask(q, 12 + 3 * 64 + 5, 0, 512, &r);
	T_EQ(r.rcode, 5);

	/* an additional record whose name loops through pointers */
	n = mkquery(q, "s1." ZONE, 16, 0);
	q[11] = 1;
	memcpy(q + n, "\xc0\x0c", 2);      /* good pointer: record is A */
	memcpy(q + n + 2, "\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00", 10);
	ask(q, n + 12, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.an, 1);
	q[n] = 0xc0;
	q[n + 1] = (uint8_t)n;              /* points at itself */
	ask(q, n + 12, 0, 512, &r);
	T_EQ(r.rcode, 1);
	T_EQ(r.qd, 1);
	q[n + 1] = (uint8_t)(n + 4);        /* forward */
	ask(q, n + 12, 0, 512, &r);
	T_EQ(r.rcode, 1);
	q[n + 1] = 2;                       /* into the header */
	ask(q, n + 12, 0, 512, &r);
	T_EQ(r.rcode, 1);

	/* two OPT records; an OPT not owned by the root; bad options */
	n = mkquery(q, "s1." ZONE, 16, 1232);
	memcpy(q + n, q + n - 11, 11);
	q[11] = 2;
	ask(q, n + 11, 0, 512, &r);
	T_EQ(r.rcode, 1);
	T_EQ(r.opt, -1);
	n = mkquery(q, "s1." ZONE, 16, 1232);
	q[n - 11] = 0xc0;                   /* owner: a pointer */
	memmove(q + n - 9, q + n - 10, 10);
	q[n - 10] = 0x0c;
	ask(q, n + 1, 0, 512, &r);
	T_EQ(r.rcode, 1);
	n = mkquery(q, "s1." ZONE, 16, 1232);
	q[n - 1] = 3;                       /* rdlen 3: a torn option */
	memcpy(q + n, "\x00\x0a\x00", 3);
	ask(q, n + 3, 0, 512, &r);
	T_EQ(r.rcode, 1);
	q[n - 1] = 6;                       /* a cookie option of 8 in 2 */
	memcpy(q + n, "\x00\x0a\x00\x08\x01\x02", 6);
	ask(q, n + 6, 0, 512, &r);
	T_EQ(r.rcode, 1);
	q[n - 1] = 12;                      /* well-formed: ignored */
	memcpy(q + n, "\x00\x0a\x00\x08\x01\x02\x03\x04\x05\x06\x07\x08", 12);
	ask(q, n + 12, 0, 512, &r);
	T_EQ(r.rcode, 0);
	T_EQ(r.an, 1);

	/* no answer at all: too short to echo, or a response */
	T_EQ(relay_dnsd_respond(&tcfg, q, 11, 0, out, sizeof(out)), 0);
	T_EQ(relay_dnsd_respond(&tcfg, q, 0, 0, out, sizeof(out)), 0);
	n = mkquery_full(q, 1, 0x8000, "s1." ZONE, 16, 1, 0, 0);
	T_EQ(relay_dnsd_respond(&tcfg, q, n, 0, out, sizeof(out)), 0);
	T_EQ(relay_dnsd_respond(&tcfg, q, n, 1, out, sizeof(out)), 0);
	n = mkquery(q, "s1." ZONE, 16, 0);
	T_EQ(relay_dnsd_respond(&tcfg, q, n, 0, out, 11), 0);
}

TEST(relay_dnsd_notimp_badvers)
{
	uint8_t q[512];
	struct tresp r;
	size_t n;

	n = mkquery_full(q, 9, 2 << 11 | 0x0100, "s1." ZONE, 16, 1, 0, 0);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 4);
	T_EQ((r.flags >> 11) & 0xf, 2);
	T_EQ(r.flags & F_QR, F_QR);
	T_EQ(r.qd, 0);
	/* NOTIFY (4) and UPDATE (5) too */
	n = mkquery_full(q, 9, 5 << 11, ZONE, 6, 1, 0, 0);
	ask(q, n, 1, 512, &r);
	T_EQ(r.rcode, 4);

	n = mkquery_full(q, 9, 0, "s1." ZONE, 16, 1, 1232, 1);
	ask(q, n, 0, 512, &r);
	T_EQ(r.rcode, 16);
	T_EQ(r.flags & 0xf, 0);
	T_EQ(r.an, 0);
	T_EQ(r.opt, 0);
	T_EQ((r.rr[0].ttl >> 16) & 0xff, 0);  /* our version: 0 */
}

TEST(relay_dnsd_config_edges)
{
	struct relay_dnsd_config c = tcfg;
	static char *bad[] = { "bad..name", "ns9.signet.example" };
	struct relay_strlist l = { bad, 2 }, none = { NULL, 0 };
	uint8_t q[512];
	struct tresp r;
	size_t n;

	/* hostmaster as a name; the first usable NS is MNAME */
	c.hostmaster = "dns-admin.signet.example.";
	c.ns = &l;
	n = mkquery(q, ZONE, 6, 0);
	{
		static uint8_t out[4096];
		size_t len = relay_dnsd_respond(&c, q, n, 0, out, 512);

		parse_resp(out, len, &r);
	}
	T_EQ(r.an, 1);
	T_STREQ(r.rr[0].target, "ns9.signet.example");
	T_STREQ(r.rr[0].rname, "dns-admin.signet.example");

	/* a dotted local part stays one label; no NS at all */
	c.hostmaster = "dns.admin@signet.example";
	c.ns = &none;
	{
		static uint8_t out[4096];
		size_t len = relay_dnsd_respond(&c, q, n, 0, out, 512);

		T_TRUE(memmem(out, len, "\x09" "dns.admin", 10) != NULL);
		parse_resp(out, len, &r);
		T_STREQ(r.rr[0].target, ZONE);
		n = mkquery(q, ZONE, 2, 0);
		len = relay_dnsd_respond(&c, q, n, 0, out, 512);
		parse_resp(out, len, &r);
		T_EQ(r.rcode, 0);
		T_EQ(r.an, 0);
		T_EQ(r.ns, 1);
	}
	/* no lookup: REFUSED */
	c.lookup = NULL;
	n = mkquery(q, "s1." ZONE, 16, 0);
	{
		static uint8_t out[512];
		size_t len = relay_dnsd_respond(&c, q, n, 0, out, 512);

		parse_resp(out, len, &r);
		T_EQ(r.rcode, 5);
	}
}

/* ---- the real server ------------------------------------------------------------ */

struct tserver {
	uv_loop_t loop;
	uv_async_t stop;
	struct relay_dnsd_config cfg;
	char listen[64];
	struct relay_dnsd *d;
	int rc;
	char err[256];
	int ready;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int loop_close_rc;
};

static void
srv_stop_cb(uv_async_t *a)
{
	struct tserver *s = a->data;

	relay_dnsd_stop(s->d);
	uv_close((uv_handle_t *)a, NULL);
}

static void *
srv_thread(void *arg)
{
	struct tserver *s = arg;

	uv_loop_init(&s->loop);
	uv_async_init(&s->loop, &s->stop, srv_stop_cb);
	s->stop.data = s;
	s->rc = relay_dnsd_start(&s->loop, &s->cfg, &s->d, s->err,
	    sizeof(s->err));
	pthread_mutex_lock(&s->mu);
	s->ready = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	if (s->rc != 0)
		uv_close((uv_handle_t *)&s->stop, NULL);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	s->loop_close_rc = uv_loop_close(&s->loop);
	return NULL;
}

/* free_port - a port free for both TCP and UDP on 127.0.0.1 */
static int
free_port(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int t, u, port;

	for (int tries = 0; tries < 20; tries++) {
		t = socket(AF_INET, SOCK_STREAM, 0);
		u = socket(AF_INET, SOCK_DGRAM, 0);
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(t, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
		    getsockname(t, (struct sockaddr *)&sa, &sl) != 0)
			T_FAIL("bind: %s", strerror(errno));
		port = ntohs(sa.sin_port);
		if (bind(u, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(t);
			close(u);
			return port;
		}
		close(t);
		close(u);
	}
	T_FAIL("no free port");
}

/* run - a shell command's output (and its exit status in *status) */
static char *
run(const char *cmd, int *status)
{
	static char buf[65536];
	size_t n = 0, r;
	FILE *f;
	int st;

	if ((f = popen(cmd, "r")) == NULL)
		T_FAIL("popen %s: %s", cmd, strerror(errno));
	while (n < sizeof(buf) - 1 &&
	    (r = fread(buf + n, 1, sizeof(buf) - 1 - n, f)) > 0)
		n += r;
	buf[n] = '\0';
	st = pclose(f);
	if (status != NULL)
		*status = st;
	return buf;
}

/* expect - cmd's output contains every one of the NULL-ended strings */
static char *
dig(int port, const char *args)
{
	char cmd[512];
	int st;
	char *out;

	snprintf(cmd, sizeof(cmd), "dig @127.0.0.1 -p %d +norec +time=3 "
	    "+tries=1 %s 2>&1", port, args);
	out = run(cmd, &st);
	if (st != 0)
		T_FAIL("%s: exit %d:\n%s", cmd, st, out);
	return out;
}

static void
has(const char *out, const char *what)
{
	if (strstr(out, what) == NULL)
		T_FAIL("expected \"%s\" in:\n%s", what, out);
}

static void
hasnt(const char *out, const char *what)
{
	if (strstr(out, what) != NULL)
		T_FAIL("did not expect \"%s\" in:\n%s", what, out);
}

/* tcp_connect - a blocking TCP socket to 127.0.0.1:port, 5 s timeouts */
static int
tcp_connect(int port)
{
	struct sockaddr_in sa;
	struct timeval tv = { 5, 0 };
	int fd;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		T_FAIL("connect: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* read_full - exactly n octets, or T_FAIL */
static void
read_full(int fd, uint8_t *p, size_t n)
{
	ssize_t r;

	while (n > 0) {
		r = read(fd, p, n);
		if (r <= 0)
			T_FAIL("read: %s", r == 0 ? "EOF" : strerror(errno));
		p += r;
		n -= (size_t)r;
	}
}

/* read_msg - one length-framed response */
static size_t
read_msg(int fd, uint8_t *p)
{
	uint8_t l[2];
	size_t n;

	read_full(fd, l, 2);
	n = (size_t)(l[0] << 8 | l[1]);
	read_full(fd, p, n);
	return n;
}

/* closed_within - the peer closes fd within ms milliseconds */
static int
closed_within(int fd, int ms)
{
	struct pollfd pfd = { fd, POLLIN, 0 };
	char c;

	if (poll(&pfd, 1, ms) != 1)
		return 0;
	return read(fd, &c, 1) <= 0;
}

#define FLOOD 2000

struct flood {
	int fd;
	uint8_t buf[FLOOD * 64];
	size_t len;
};

/* flood_writer - write the queries (the server pauses reading while its
 * answers pile up, so this blocks now and then) */
static void *
flood_writer(void *arg)
{
	struct flood *f = arg;
	size_t off = 0;
	ssize_t r;

	while (off < f->len) {
		r = write(f->fd, f->buf + off, f->len - off);
		if (r <= 0)
			return (void *)1;
		off += (size_t)r;
	}
	return NULL;
}

/*
 * flood - FLOOD pipelined queries for the 1000-octet TXT from a thread
 * while this one reads nothing for a second, then every answer, in order.
 */
static void
flood(int port)
{
	static struct flood f;
	static uint8_t resp[65536];
	struct tresp r;
	pthread_t th;
	void *ret;
	size_t n, i;

	f.fd = tcp_connect(port);
	f.len = 0;
	for (i = 0; i < FLOOD; i++) {
		n = mkquery_full(f.buf + f.len + 2, (uint16_t)i, 0, "big." ZONE,
		    16, 1, 0, 0);
		f.buf[f.len] = 0;
		f.buf[f.len + 1] = (uint8_t)n;
		f.len += 2 + n;
	}
	T_OK(pthread_create(&th, NULL, flood_writer, &f));
	sleep(1);
	for (i = 0; i < FLOOD; i++) {
		n = read_msg(f.fd, resp);
		parse_resp(resp, n, &r);
		T_EQ(r.id, i);
		T_EQ(r.an, 1);
		T_EQ(strlen(r.rr[0].txt), 1000);
	}
	T_OK(pthread_join(th, &ret));
	T_TRUE(ret == NULL);
	close(f.fd);
}

/* long_query - a 60000-octet query (an EDNS padding option) over TCP */
static void
long_query(int port)
{
	static uint8_t q[65536], resp[65536];
	struct tresp r;
	size_t n, pad = 60000;
	int fd;

	n = mkquery(q + 2, "s1." ZONE, 16, 4096);
	q[2 + n - 2] = (uint8_t)((pad + 4) >> 8);
	q[2 + n - 1] = (uint8_t)(pad + 4);
	q[2 + n] = 0;
	q[2 + n + 1] = 12;                  /* PADDING */
	q[2 + n + 2] = (uint8_t)(pad >> 8);
	q[2 + n + 3] = (uint8_t)pad;
	memset(q + 2 + n + 4, 0, pad);
	n += 4 + pad;
	q[0] = (uint8_t)(n >> 8);
	q[1] = (uint8_t)n;
	fd = tcp_connect(port);
	T_EQ(write(fd, q, n + 2), (ssize_t)(n + 2));
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_EQ(r.rcode, 0);
	T_STREQ(r.rr[0].txt, SHORT_TXT);
	close(fd);
}

TEST(relay_dnsd_server)
{
	static struct tserver s;
	static int many[300];
	static uint8_t q[4096], resp[65536];
	struct timespec t0, t1;
	struct tresp r;
	pthread_t th;
	int port, idle, fd, st, i, nmany;
	size_t n, n1, n2;
	char *out, args[1024], *p;

	run("command -v dig", &st);
	if (st != 0) {
		printf("SKIP relay_dnsd_server: dig not installed "
		    "(bind9-dnsutils)\n");
		return;
	}
	port = free_port();
	memset(&s, 0, sizeof(s));
	snprintf(s.listen, sizeof(s.listen), "127.0.0.1:%d", port);
	s.cfg = tcfg;
	s.cfg.listen = s.listen;
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	T_OK(pthread_create(&th, NULL, srv_thread, &s));
	pthread_mutex_lock(&s.mu);
	while (!s.ready)
		pthread_cond_wait(&s.cv, &s.mu);
	pthread_mutex_unlock(&s.mu);
	if (s.rc != 0)
		T_FAIL("relay_dnsd_start %s: %s", s.listen, s.err);

	/* an idle connection, opened first, closed after 10 s */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	idle = tcp_connect(port);

	/* UDP */
	out = dig(port, "TXT s1." ZONE);
	has(out, "status: NOERROR");
	has(out, "flags: qr aa;");
	has(out, "\"" SHORT_TXT "\"");
	has(out, "ANSWER: 1,");
	out = dig(port, "+noedns TXT S1._DOMAINKEY.contoso.signet.example");
	has(out, "flags: qr aa;");
	has(out, SHORT_TXT);
	out = dig(port, "TXT nope." ZONE);
	has(out, "status: NXDOMAIN");
	has(out, "AUTHORITY: 1,");
	has(out, "IN SOA\tns1.signet.example. hostmaster.signet.example. "
	    "2024061501 3600 600 1209600 60");
	has(out, "EDNS: version: 0");
	has(out, "udp: 1232");
	out = dig(port, "A www.example.org");
	has(out, "status: REFUSED");
	hasnt(out, " aa");
	out = dig(port, "NS " ZONE);
	has(out, "IN NS\tns1.signet.example.");
	has(out, "IN NS\tns2.signet.example.");
	out = dig(port, "+edns=1 TXT s1." ZONE);
	has(out, "BADVERS, retrying with EDNS version 0");

	/* the big TXT: truncated over UDP without EDNS, whole over TCP and
	 * with EDNS */
	out = dig(port, "+noedns +ignore TXT big." ZONE);
	has(out, "flags: qr aa tc;");
	has(out, "ANSWER: 0,");
	out = dig(port, "+tcp +short TXT big." ZONE);
	for (p = out, n = 0; *p != '\0'; p++)  /* strip quotes, blanks */
		if (*p != '"' && *p != ' ' && *p != '\n')
			out[n++] = *p;
	out[n] = '\0';
	T_STREQ(out, big_text());
	out = dig(port, "+bufsize=4096 TXT big." ZONE);
	hasnt(out, " tc");
	has(out, "ANSWER: 1,");
	/* dig retries over TCP on TC by itself */
	out = dig(port, "+noedns TXT big." ZONE);
	has(out, "ANSWER: 1,");

	/* several queries over one TCP connection */
	snprintf(args, sizeof(args), "+tcp +keepopen s1.%s TXT nope.%s TXT "
	    "%s SOA", ZONE, ZONE, ZONE);
	out = dig(port, args);
	has(out, SHORT_TXT);
	has(out, "status: NXDOMAIN");
	has(out, "ANSWER: 1,");

	/* dnspython over UDP and TCP (optional) */
	snprintf(args, sizeof(args), "/usr/bin/python3 -c '"
	    "import dns.message, dns.query\n"
	    "m = dns.message.make_query(\"big.%s\", \"TXT\")\n"
	    "r = dns.query.tcp(m, \"127.0.0.1\", port=%d, timeout=5)\n"
	    "print(len(b\"\".join(r.answer[0][0].strings)))\n"
	    "r = dns.query.udp(m, \"127.0.0.1\", port=%d, timeout=5)\n"
	    "print(r.flags & 0x200 != 0)\n' 2>&1", ZONE, port, port);
	out = run(args, &st);
	if (st == 0) {
		T_STREQ(out, "1000\nTrue\n");
	} else
		printf("(dnspython check skipped: %s)\n", out);

	/* pipelined: three queries in one write, then one split in two */
	fd = tcp_connect(port);
	n1 = mkquery(q + 2, "s1." ZONE, 16, 0);
	q[0] = 0;
	q[1] = (uint8_t)n1;
	n = 2 + n1;
	n2 = mkquery_full(q + n + 2, 0x2222, 0, "nope." ZONE, 16, 1, 0, 0);
	q[n] = 0;
	q[n + 1] = (uint8_t)n2;
	n += 2 + n2;
	n2 = mkquery_full(q + n + 2, 0x3333, 0, "big." ZONE, 16, 1, 0, 0);
	q[n] = 0;
	q[n + 1] = (uint8_t)n2;
	n += 2 + n2;
	T_EQ(write(fd, q, n), (ssize_t)n);
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_EQ(r.id, 0x1234);
	T_STREQ(r.rr[0].txt, SHORT_TXT);
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_EQ(r.id, 0x2222);
	T_EQ(r.rcode, 3);
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_EQ(r.id, 0x3333);
	T_EQ(r.flags & F_TC, 0);
	T_STREQ(r.rr[0].txt, big_text());
	T_EQ(write(fd, q, 5), 5);
	usleep(100000);
	T_EQ(write(fd, q + 5, n1 + 2 - 5), (ssize_t)(n1 + 2 - 5));
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_STREQ(r.rr[0].txt, SHORT_TXT);
	/* a zero-length message and a response packet get nothing; the
	 * connection goes on */
	q[0] = q[1] = 0;
	n2 = mkquery_full(q + 4, 0x4444, 0x8000, "s1." ZONE, 16, 1, 0, 0);
	q[2] = 0;
	q[3] = (uint8_t)n2;
	n = 4 + n2;
	n2 = mkquery_full(q + n + 2, 0x5555, 0, "s1." ZONE, 16, 1, 0, 0);
	q[n] = 0;
	q[n + 1] = (uint8_t)n2;
	n += 2 + n2;
	T_EQ(write(fd, q, n), (ssize_t)n);
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_EQ(r.id, 0x5555);
	/* half-close: the answer still comes, then EOF */
	n1 = mkquery(q + 2, "s1." ZONE, 16, 0);
	q[1] = (uint8_t)n1;
	T_EQ(write(fd, q, n1 + 2), (ssize_t)(n1 + 2));
	shutdown(fd, SHUT_WR);
	n = read_msg(fd, resp);
	parse_resp(resp, n, &r);
	T_EQ(r.id, 0x1234);
	T_TRUE(closed_within(fd, 2000));
	close(fd);

	flood(port);
	long_query(port);

	/* the connection limit: with the idle one, 256 are served; the
	 * next is closed at once */
	usleep(100000);
	for (nmany = 0; nmany < 255; nmany++)
		many[nmany] = tcp_connect(port);
	fd = tcp_connect(port);
	T_TRUE(closed_within(fd, 3000));
	close(fd);
	T_TRUE(!closed_within(many[254], 200));
	/* one of them still answers */
	n1 = mkquery(q + 2, "s1." ZONE, 16, 0);
	q[0] = 0;
	q[1] = (uint8_t)n1;
	T_EQ(write(many[0], q, n1 + 2), (ssize_t)(n1 + 2));
	n = read_msg(many[0], resp);
	parse_resp(resp, n, &r);
	T_EQ(r.an, 1);
	for (i = 0; i < nmany; i++)
		close(many[i]);
	usleep(200000);
	/* room again */
	fd = tcp_connect(port);
	T_EQ(write(fd, q, n1 + 2), (ssize_t)(n1 + 2));
	n = read_msg(fd, resp);
	close(fd);

	/* the idle connection is closed after about 10 s */
	T_TRUE(closed_within(idle, 15000));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	T_TRUE(t1.tv_sec - t0.tv_sec >= 9);
	close(idle);

	/* a second server on the same address fails with a reason */
	{
		struct relay_dnsd *d2;
		uv_loop_t l2;
		char err[256];

		uv_loop_init(&l2);
		T_TRUE(relay_dnsd_start(&l2, &s.cfg, &d2, err, sizeof(err)) < 0);
		has(err, s.listen);
		T_TRUE(d2 == NULL);
		uv_run(&l2, UV_RUN_DEFAULT);
		T_OK(uv_loop_close(&l2));
	}

	uv_async_send(&s.stop);
	T_OK(pthread_join(th, NULL));
	T_OK(s.loop_close_rc);
}

TEST(relay_dnsd_listen_syntax)
{
	struct relay_dnsd_config c = tcfg;
	static const char *bad[] = { "127.0.0.1", "127.0.0.1:", ":53",
	    "127.0.0.1:0", "127.0.0.1:65536", "::1:53", "[::1]53", "[::1]",
	    "localhost:53", "127.0.0.1:5x", NULL };
	struct relay_dnsd *d;
	uv_loop_t loop;
	char err[256];
	int i;

	uv_loop_init(&loop);
	for (i = 0; bad[i] != NULL; i++) {
		c.listen = bad[i];
		err[0] = '\0';
		if (relay_dnsd_start(&loop, &c, &d, err, sizeof(err)) != -EINVAL)
			T_FAIL("\"%s\" accepted", bad[i]);
		has(err, "dns_listen");
		T_TRUE(d == NULL);
	}
	/* IPv6 loopback, when the host has it */
	{
		char addr[64];

		snprintf(addr, sizeof(addr), "[::1]:%d", free_port());
		c.listen = addr;
		if (relay_dnsd_start(&loop, &c, &d, err, sizeof(err)) == 0)
			relay_dnsd_stop(d);
		else
			printf("(no IPv6 loopback: %s)\n", err);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	T_OK(uv_loop_close(&loop));
}
