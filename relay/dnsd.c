/*
 * dnsd.c - the built-in authoritative DNS server (dns_listen) for the
 * _domainkey.<initial domain> zones, over UDP and TCP.
 *
 * relay_dnsd_respond is the whole protocol and does no I/O: it parses one
 * query strictly (RFC 1035 section 4, EDNS0 after RFC 6891), asks the key
 * index (cfg->lookup) about the lower-cased name and builds the answer:
 * TXT records below the apex, SOA and NS at the apex, NXDOMAIN and NODATA
 * with the SOA in the authority section (RFC 2308), REFUSED outside every
 * zone (and for zone transfers and classes other than IN and ANY),
 * FORMERR, NOTIMP and BADVERS for what it won't parse or do.  Names in
 * the answer are compressed against the question and one another.  A
 * UDP answer that does not fit the client's size (512, or its EDNS0
 * payload size clamped to [512, 4096]) goes out with TC=1 and no records.
 *
 * The server part binds one UDP socket and one TCP listener on the same
 * address.  UDP: one response per datagram.  TCP (RFC 7766): messages
 * framed by a two-octet length, any number per connection, pipelined
 * (answered in order); a connection is closed after DNSD_IDLE_MS without
 * traffic, at most DNSD_CONNS_MAX are open at once (more are accepted and
 * closed at once), and a client that does not read its answers stops being
 * read once DNSD_OUT_HIGH octets wait for it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "relay/keys.h"

#define DNS_HDR_LEN       12
#define DNS_NAME_MAX      255           /* octets, wire form */
#define DNS_LABEL_MAX     63
#define DNS_TEXT_MAX      (4 * DNS_NAME_MAX + 1) /* presentation, escaped */

#define DNS_T_NS          2
#define DNS_T_SOA         6
#define DNS_T_TXT         16
#define DNS_T_OPT         41
#define DNS_T_IXFR        251
#define DNS_T_AXFR        252
#define DNS_T_ANY         255
#define DNS_C_IN          1
#define DNS_C_ANY         255

#define DNS_F_QR          0x8000
#define DNS_F_OPCODE      0x7800
#define DNS_F_AA          0x0400
#define DNS_F_TC          0x0200
#define DNS_F_RD          0x0100
#define DNS_F_CD          0x0010

#define DNS_R_NOERROR     0
#define DNS_R_FORMERR     1
#define DNS_R_SERVFAIL    2
#define DNS_R_NXDOMAIN    3
#define DNS_R_NOTIMP      4
#define DNS_R_REFUSED     5
#define DNS_R_BADVERS     16            /* extended (EDNS0) */

#define DNSD_EDNS_SIZE    1232          /* what we advertise */
#define DNSD_UDP_MIN      512
#define DNSD_UDP_MAX      4096
#define DNSD_TCP_MAX      65535

#define DNSD_SOA_REFRESH  3600
#define DNSD_SOA_RETRY    600
#define DNSD_SOA_EXPIRE   1209600

#define DNSD_PTRS         64            /* compression targets remembered */

#define DNSD_IDLE_MS      10000
#define DNSD_CONNS_MAX    256
#define DNSD_BACKLOG      128
#define DNSD_IN_MAX       (2 + DNSD_TCP_MAX) /* one whole framed message */
#define DNSD_IN_FIRST     1024          /* input buffer to start with */
#define DNSD_OUT_HIGH     (256 * 1024)  /* unsent octets: stop reading */
#define DNSD_UDP_PENDING  128           /* queued UDP sends at most */

/* ---- parsing the query ---------------------------------------------------- */

struct dnsd_query {
	uint16_t id, flags;
	int have_q;                /* the question parsed */
	size_t qend;               /* the question is q[12..qend) */
	uint8_t qname[DNS_NAME_MAX]; /* wire form, as received */
	size_t qnamelen;
	uint16_t qtype, qclass;
	int edns;                  /* an OPT record came */
	unsigned udpsize;          /* its payload size, clamped */
	unsigned ednsver;
	int dobit;
};

#define DNSD_PARSE_OK     0
#define DNSD_PARSE_BADQ   1    /* no usable question: echo the header */
#define DNSD_PARSE_BAD    2    /* a good question, the rest malformed */

static uint16_t
get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static int
dnsd_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/*
 * dnsd_qname - the question's name at *offp: labels only (a question has
 * nothing earlier to point at, so a pointer or an extended label type is
 * malformed), at most DNS_NAME_MAX octets.  Copies it to wire (length in
 * *wlen) and moves *offp past it.  0 or -1.
 */
static int
dnsd_qname(const uint8_t *q, size_t qlen, size_t *offp, uint8_t *wire,
    size_t *wlen)
{
	size_t off = *offp, n = 0, l;

	for (;;) {
		if (off >= qlen)
			return -1;
		l = q[off];
		if (l & 0xc0)
			return -1;
		if (l > qlen - off - 1 || n + 1 + l > DNS_NAME_MAX)
			return -1;
		memcpy(wire + n, q + off, 1 + l);
		n += 1 + l;
		off += 1 + l;
		if (l == 0)
			break;
	}
	*wlen = n;
	*offp = off;
	return 0;
}

/*
 * dnsd_skip_name - step over a possibly compressed name at *offp.  Every
 * pointer must point before the start of the stretch it was read in, so
 * following them always ends (no loops); pointers into the header, extended
 * label types and names over DNS_NAME_MAX octets are malformed.  0 or -1.
 */
static int
dnsd_skip_name(const uint8_t *q, size_t qlen, size_t *offp)
{
	size_t off = *offp, seg = *offp, end = 0, total = 0, l, ptr;

	for (;;) {
		if (off >= qlen)
			return -1;
		l = q[off];
		if ((l & 0xc0) == 0xc0) {
			if (off + 1 >= qlen)
				return -1;
			ptr = (l & 0x3f) << 8 | q[off + 1];
			if (ptr < DNS_HDR_LEN || ptr >= seg)
				return -1;
			if (end == 0)
				end = off + 2;
			seg = off = ptr;
			continue;
		}
		if (l & 0xc0)
			return -1;
		if (l > qlen - off - 1)
			return -1;
		total += 1 + l;
		if (total > DNS_NAME_MAX)
			return -1;
		off += 1 + l;
		if (l == 0)
			break;
	}
	*offp = end != 0 ? end : off;
	return 0;
}

/*
 * dnsd_parse - the header, the one question, then every record of the
 * other sections (stepped over, except an OPT in the additional section,
 * which must be alone, owned by the root and well formed inside).  Nothing
 * may follow the last record.  DNSD_PARSE_OK, _BADQ or _BAD.
 */
static int
dnsd_parse(const uint8_t *q, size_t qlen, struct dnsd_query *qr)
{
	size_t off, start, rdlen, o;
	unsigned an, ns, ar, i;
	uint16_t type;
	uint32_t ttl;

	memset(qr, 0, sizeof(*qr));
	qr->id = get16(q);
	qr->flags = get16(q + 2);
	if (get16(q + 4) != 1)
		return DNSD_PARSE_BADQ;
	an = get16(q + 6);
	ns = get16(q + 8);
	ar = get16(q + 10);
	off = DNS_HDR_LEN;
	if (dnsd_qname(q, qlen, &off, qr->qname, &qr->qnamelen) != 0)
		return DNSD_PARSE_BADQ;
	if (qlen - off < 4)
		return DNSD_PARSE_BADQ;
	qr->qtype = get16(q + off);
	qr->qclass = get16(q + off + 2);
	off += 4;
	qr->qend = off;
	qr->have_q = 1;

	for (i = 0; i < an + ns + ar; i++) {
		start = off;
		if (dnsd_skip_name(q, qlen, &off) != 0 || qlen - off < 10)
			return DNSD_PARSE_BAD;
		type = get16(q + off);
		ttl = get32(q + off + 4);
		rdlen = get16(q + off + 8);
		off += 10;
		if (qlen - off < rdlen)
			return DNSD_PARSE_BAD;
		if (type == DNS_T_OPT) {
			/* RFC 6891 6.1.1: one, in the additional section,
			 * owned by the root */
			if (i < an + ns || qr->edns || off - 10 != start + 1)
				return DNSD_PARSE_BAD;
			for (o = 0; o < rdlen; ) {
				if (rdlen - o < 4 ||
				    rdlen - o - 4 < get16(q + off + o + 2))
					return DNSD_PARSE_BAD;
				o += 4 + get16(q + off + o + 2);
			}
			qr->edns = 1;
			qr->udpsize = get16(q + off - 8);
			if (qr->udpsize < DNSD_UDP_MIN)
				qr->udpsize = DNSD_UDP_MIN;
			if (qr->udpsize > DNSD_UDP_MAX)
				qr->udpsize = DNSD_UDP_MAX;
			qr->ednsver = ttl >> 16 & 0xff;
			qr->dobit = ttl >> 15 & 1;
		}
		off += rdlen;
	}
	if (off != qlen)
		return DNSD_PARSE_BAD;
	return DNSD_PARSE_OK;
}

/* ---- names ---------------------------------------------------------------- */

/*
 * dnsd_name_text - wire name to lower-case presentation form without the
 * trailing dot ("" for the root), escaping '.', '\' and octets outside
 * printable ASCII (RFC 4343), so no two names give the same text.  out
 * holds DNS_TEXT_MAX octets.
 */
static void
dnsd_name_text(const uint8_t *wire, char *out)
{
	size_t n = 0, i, l;
	int c;

	while ((l = *wire++) != 0) {
		if (n != 0)
			out[n++] = '.';
		for (i = 0; i < l; i++) {
			c = dnsd_lower(wire[i]);
			if (c == '.' || c == '\\') {
				out[n++] = '\\';
				out[n++] = (char)c;
			} else if (c < 0x21 || c > 0x7e) {
				n += (size_t)snprintf(out + n, 5, "\\%03d", c);
			} else
				out[n++] = (char)c;
		}
		wire += l;
	}
	out[n] = '\0';
}

/*
 * dnsd_text_name - a name in presentation form (an optional trailing dot,
 * "\." and "\DDD" escapes) to wire form in wire[DNS_NAME_MAX]; "" and "."
 * are the root.  Returns the wire length, or 0 for an empty label, a label
 * over 63 octets or a name over 255.
 */
static size_t
dnsd_text_name(const char *s, uint8_t *wire)
{
	size_t pos = 0, lenpos, llen;
	unsigned v;
	int c;

	if (s[0] == '.' && s[1] == '\0')
		s++;
	while (*s != '\0') {
		if (pos >= DNS_NAME_MAX - 2)
			return 0;
		lenpos = pos++;
		llen = 0;
		while (*s != '\0' && *s != '.') {
			c = (unsigned char)*s++;
			if (c == '\\') {
				if (s[0] >= '0' && s[0] <= '9' &&
				    s[1] >= '0' && s[1] <= '9' &&
				    s[2] >= '0' && s[2] <= '9') {
					v = (unsigned)(s[0] - '0') * 100 +
					    (unsigned)(s[1] - '0') * 10 +
					    (unsigned)(s[2] - '0');
					if (v > 255)
						return 0;
					c = (int)v;
					s += 3;
				} else if (*s != '\0')
					c = (unsigned char)*s++;
				else
					return 0;
			}
			if (llen == DNS_LABEL_MAX || pos >= DNS_NAME_MAX - 1)
				return 0;
			wire[pos++] = (uint8_t)c;
			llen++;
		}
		if (llen == 0)
			return 0;
		wire[lenpos] = (uint8_t)llen;
		if (*s == '.')
			s++;
	}
	wire[pos++] = 0;
	return pos;
}

/*
 * dnsd_mailbox_name - the SOA RNAME for hostmaster: a mail address
 * "local@domain" becomes the name whose first label is the whole local
 * part (RFC 1035 8; dots in it stay inside the label), anything else is a
 * name as it stands.  Empty or malformed: "hostmaster.<zone>".  Returns
 * the wire length.
 */
static size_t
dnsd_mailbox_name(const char *hostmaster, const uint8_t *zone,
    size_t zonelen, uint8_t *wire)
{
	uint8_t dom[DNS_NAME_MAX];
	const char *at;
	size_t l, n;

	if (hostmaster != NULL && *hostmaster != '\0') {
		if ((at = strchr(hostmaster, '@')) == NULL) {
			if ((n = dnsd_text_name(hostmaster, wire)) > 1)
				return n;
		} else if ((l = (size_t)(at - hostmaster)) > 0 &&
		    l <= DNS_LABEL_MAX &&
		    (n = dnsd_text_name(at + 1, dom)) > 1 &&
		    1 + l + n <= DNS_NAME_MAX) {
			wire[0] = (uint8_t)l;
			memcpy(wire + 1, hostmaster, l);
			memcpy(wire + 1 + l, dom, n);
			return 1 + l + n;
		}
	}
	if (zonelen + 11 > DNS_NAME_MAX)
		return 0;
	wire[0] = 10;
	memcpy(wire + 1, "hostmaster", 10);
	memcpy(wire + 11, zone, zonelen);
	return zonelen + 11;
}

/* dnsd_labels - the number of labels of a wire name (0: the root). */
static int
dnsd_labels(const uint8_t *wire)
{
	int n = 0;

	for (; *wire != 0; wire += 1 + *wire)
		n++;
	return n;
}

/* dnsd_name_eq - two wire names equal, ASCII case ignored. */
static int
dnsd_name_eq(const uint8_t *a, const uint8_t *b)
{
	size_t i;

	for (;;) {
		if (*a != *b)
			return 0;
		if (*a == 0)
			return 1;
		for (i = 1; i <= *a; i++)
			if (dnsd_lower(a[i]) != dnsd_lower(b[i]))
				return 0;
		a += 1 + *a;
		b += 1 + *b;
	}
}

/* ---- building the response ------------------------------------------------ */

/*
 * A response being written into a fixed buffer: full is set (and nothing
 * more written) once something doesn't fit.  targets are offsets of names
 * (and their suffixes) already in the message, for compression.
 */
struct dnsd_msg {
	uint8_t *p;
	size_t len, cap;
	int full;
	uint16_t an, ns, ar;
	uint16_t targets[DNSD_PTRS];
	int ntargets;
};

static void
msg_put(struct dnsd_msg *m, const void *src, size_t n)
{
	if (m->full || n > m->cap - m->len) {
		m->full = 1;
		return;
	}
	memcpy(m->p + m->len, src, n);
	m->len += n;
}

static void
msg_u8(struct dnsd_msg *m, unsigned v)
{
	uint8_t b = (uint8_t)v;

	msg_put(m, &b, 1);
}

static void
msg_u16(struct dnsd_msg *m, unsigned v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	msg_put(m, b, 2);
}

static void
msg_u32(struct dnsd_msg *m, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
	    (uint8_t)(v >> 8), (uint8_t)v };

	msg_put(m, b, 4);
}

/* msg_target - remember that a name (suffix) starts at off. */
static void
msg_target(struct dnsd_msg *m, size_t off)
{
	if (!m->full && off < 0x4000 && m->ntargets < DNSD_PTRS)
		m->targets[m->ntargets++] = (uint16_t)off;
}

/*
 * msg_name_at - whether the (possibly compressed) name at offset off of
 * the message so far equals name (wire, uncompressed), case ignored.  The
 * message is our own, but the walk is bounded all the same.
 */
static int
msg_name_at(const struct dnsd_msg *m, size_t off, const uint8_t *name)
{
	int hops = 0;
	size_t l, i;

	for (;;) {
		if (off >= m->len)
			return 0;
		l = m->p[off];
		if ((l & 0xc0) == 0xc0) {
			if (off + 1 >= m->len || ++hops > DNSD_PTRS)
				return 0;
			off = (l & 0x3f) << 8 | m->p[off + 1];
			continue;
		}
		if (l != *name || off + 1 + l > m->len)
			return 0;
		if (l == 0)
			return 1;
		for (i = 1; i <= l; i++)
			if (dnsd_lower(m->p[off + i]) != dnsd_lower(name[i]))
				return 0;
		off += 1 + l;
		name += 1 + l;
	}
}

/*
 * msg_name - write a wire name, replacing its longest suffix already in
 * the message by a pointer (RFC 1035 4.1.4).
 */
static void
msg_name(struct dnsd_msg *m, const uint8_t *name)
{
	const uint8_t *s;
	int i;

	for (s = name; *s != 0; s += 1 + *s) {
		for (i = 0; i < m->ntargets; i++) {
			if (!msg_name_at(m, m->targets[i], s))
				continue;
			for (; name < s; name += 1 + *name) {
				msg_target(m, m->len);
				msg_put(m, name, 1 + *name);
			}
			msg_u16(m, 0xc000 | m->targets[i]);
			return;
		}
	}
	for (; *name != 0; name += 1 + *name) {
		msg_target(m, m->len);
		msg_put(m, name, 1 + *name);
	}
	msg_u8(m, 0);
}

/* msg_rr - owner, type, class IN, ttl; returns where RDLENGTH goes. */
static size_t
msg_rr(struct dnsd_msg *m, const uint8_t *owner, unsigned type, uint32_t ttl)
{
	size_t at;

	msg_name(m, owner);
	msg_u16(m, type);
	msg_u16(m, DNS_C_IN);
	msg_u32(m, ttl);
	at = m->len;
	msg_u16(m, 0);
	return at;
}

/* msg_rdlen - fill in RDLENGTH at at, now that the RDATA is written. */
static void
msg_rdlen(struct dnsd_msg *m, size_t at)
{
	size_t n;

	if (m->full)
		return;
	n = m->len - at - 2;
	if (n > 0xffff) {
		m->full = 1;
		return;
	}
	m->p[at] = (uint8_t)(n >> 8);
	m->p[at + 1] = (uint8_t)n;
}

/* msg_start - the header (counts filled in later) and the question. */
static void
msg_start(struct dnsd_msg *m, const uint8_t *q, const struct dnsd_query *qr,
    uint8_t *out, size_t cap)
{
	size_t off;

	memset(m, 0, sizeof(*m));
	m->p = out;
	m->cap = cap;
	m->len = DNS_HDR_LEN;
	if (!qr->have_q)
		return;
	msg_put(m, q + DNS_HDR_LEN, qr->qend - DNS_HDR_LEN);
	for (off = 0; qr->qname[off] != 0; off += 1 + qr->qname[off])
		msg_target(m, DNS_HDR_LEN + off);
}

/* msg_opt - our OPT record: payload size, extended RCODE, DO echoed. */
static void
msg_opt(struct dnsd_msg *m, const struct dnsd_query *qr, int rcode)
{
	msg_u8(m, 0);
	msg_u16(m, DNS_T_OPT);
	msg_u16(m, DNSD_EDNS_SIZE);
	msg_u32(m, (uint32_t)(rcode >> 4 & 0xff) << 24 |
	    (qr->dobit ? 0x8000u : 0));
	msg_u16(m, 0);
	if (!m->full)
		m->ar++;
}

/* msg_header - write the header over the first 12 octets. */
static void
msg_header(struct dnsd_msg *m, const struct dnsd_query *qr, int rcode,
    int aa, int tc)
{
	uint16_t flags;
	uint8_t *p = m->p;

	flags = DNS_F_QR | (qr->flags & (DNS_F_OPCODE | DNS_F_RD | DNS_F_CD)) |
	    (aa ? DNS_F_AA : 0) | (tc ? DNS_F_TC : 0) | (rcode & 0xf);
	p[0] = (uint8_t)(qr->id >> 8);
	p[1] = (uint8_t)qr->id;
	p[2] = (uint8_t)(flags >> 8);
	p[3] = (uint8_t)flags;
	p[4] = 0;
	p[5] = qr->have_q && m->len > DNS_HDR_LEN ? 1 : 0;
	p[6] = (uint8_t)(m->an >> 8);
	p[7] = (uint8_t)m->an;
	p[8] = (uint8_t)(m->ns >> 8);
	p[9] = (uint8_t)m->ns;
	p[10] = (uint8_t)(m->ar >> 8);
	p[11] = (uint8_t)m->ar;
}

/*
 * msg_finish - add the OPT when the query had one and write the header.
 * When the records did not fit, start over with the question (and OPT)
 * alone and TC=1; when not even that fits, the header alone.  Returns the
 * length.
 */
static size_t
msg_finish(struct dnsd_msg *m, const uint8_t *q, const struct dnsd_query *qr,
    int rcode, int aa)
{
	struct dnsd_query bare;

	if (qr->edns)
		msg_opt(m, qr, rcode);
	if (!m->full) {
		msg_header(m, qr, rcode, aa, 0);
		return m->len;
	}
	msg_start(m, q, qr, m->p, m->cap);
	if (qr->edns)
		msg_opt(m, qr, rcode);
	if (m->full) {
		bare = *qr;
		bare.have_q = 0;
		msg_start(m, q, &bare, m->p, m->cap);
		msg_header(m, &bare, rcode, aa, 1);
		return m->len;
	}
	msg_header(m, qr, rcode, aa, 1);
	return m->len;
}

/* ---- the records ------------------------------------------------------------ */

/* The names a zone's records use, in wire form. */
struct dnsd_zone {
	uint8_t apex[DNS_NAME_MAX];
	size_t apexlen;
	uint8_t mname[DNS_NAME_MAX];
	uint8_t rname[DNS_NAME_MAX];
	uint32_t serial;
};

/* add_soa - the zone's SOA with this TTL (answer or authority section). */
static void
add_soa(struct dnsd_msg *m, const struct relay_dnsd_config *cfg,
    const struct dnsd_zone *z, uint32_t ttl, int authority)
{
	size_t at;

	at = msg_rr(m, z->apex, DNS_T_SOA, ttl);
	msg_name(m, z->mname);
	msg_name(m, z->rname);
	msg_u32(m, z->serial);
	msg_u32(m, DNSD_SOA_REFRESH);
	msg_u32(m, DNSD_SOA_RETRY);
	msg_u32(m, DNSD_SOA_EXPIRE);
	msg_u32(m, cfg->negative_ttl);
	msg_rdlen(m, at);
	if (!m->full) {
		if (authority)
			m->ns++;
		else
			m->an++;
	}
}

/* add_ns - one NS record per valid cfg->ns item; returns how many. */
static int
add_ns(struct dnsd_msg *m, const struct relay_dnsd_config *cfg,
    const struct dnsd_zone *z)
{
	uint8_t target[DNS_NAME_MAX];
	size_t i, at;
	int n = 0;

	for (i = 0; cfg->ns != NULL && i < cfg->ns->n; i++) {
		if (cfg->ns->v[i] == NULL ||
		    dnsd_text_name(cfg->ns->v[i], target) <= 1)
			continue;
		at = msg_rr(m, z->apex, DNS_T_NS, cfg->ttl);
		msg_name(m, target);
		msg_rdlen(m, at);
		if (!m->full)
			m->an++;
		n++;
	}
	return n;
}

/* add_txt - a TXT record of text split into 255-octet character-strings. */
static void
add_txt(struct dnsd_msg *m, const struct relay_dnsd_config *cfg,
    const uint8_t *owner, const char *txt)
{
	size_t at, len = strlen(txt), c;

	at = msg_rr(m, owner, DNS_T_TXT, cfg->ttl);
	if (len == 0)
		msg_u8(m, 0);
	while (len > 0 && !m->full) {
		c = len > 255 ? 255 : len;
		msg_u8(m, (unsigned)c);
		msg_put(m, txt, c);
		txt += c;
		len -= c;
	}
	msg_rdlen(m, at);
	if (!m->full)
		m->an++;
}

/* dnsd_count_ns - how many cfg->ns items are usable names. */
static int
dnsd_count_ns(const struct relay_dnsd_config *cfg)
{
	uint8_t w[DNS_NAME_MAX];
	size_t i;
	int n = 0;

	for (i = 0; cfg->ns != NULL && i < cfg->ns->n; i++)
		if (cfg->ns->v[i] != NULL && dnsd_text_name(cfg->ns->v[i], w) > 1)
			n++;
	return n;
}

/*
 * dnsd_zone_names - the apex, MNAME (the first usable NS item, else the
 * apex) and RNAME of zone text.  0, or -1 when zone is not a name.
 */
static int
dnsd_zone_names(const struct relay_dnsd_config *cfg, const char *zone,
    uint32_t serial, struct dnsd_zone *z)
{
	size_t i;

	if ((z->apexlen = dnsd_text_name(zone, z->apex)) <= 1)
		return -1;
	memcpy(z->mname, z->apex, z->apexlen);
	for (i = 0; cfg->ns != NULL && i < cfg->ns->n; i++)
		if (cfg->ns->v[i] != NULL &&
		    dnsd_text_name(cfg->ns->v[i], z->mname) > 1)
			break;
	if (i == (cfg->ns != NULL ? cfg->ns->n : 0))
		memcpy(z->mname, z->apex, z->apexlen);
	if (dnsd_mailbox_name(cfg->hostmaster, z->apex, z->apexlen,
	    z->rname) == 0)
		memcpy(z->rname, z->apex, z->apexlen);
	z->serial = serial;
	return 0;
}

/*
 * dnsd_in_zone - whether the wire name qname is apex or below it; *top is
 * set when it is the apex itself.
 */
static int
dnsd_in_zone(const uint8_t *qname, const uint8_t *apex, int *top)
{
	int n = dnsd_labels(qname), k = dnsd_labels(apex);

	if (k > n)
		return 0;
	*top = n == k;
	for (; n > k; n--)
		qname += 1 + *qname;
	return dnsd_name_eq(qname, apex);
}

/*
 * relay_dnsd_respond - see keys.h.  Parses, asks cfg->lookup, then writes
 * the answer (or the truncated one) into out.
 */
size_t
relay_dnsd_respond(const struct relay_dnsd_config *cfg, const uint8_t *q,
    size_t qlen, int tcp, uint8_t *out, size_t outmax)
{
	struct relay_dnsd_answer ans;
	struct dnsd_query qr;
	struct dnsd_msg m;
	struct dnsd_zone z;
	char qtext[DNS_TEXT_MAX];
	size_t limit, n;
	uint32_t negttl;
	int rc, top, rcode = DNS_R_NOERROR;

	if (q == NULL || out == NULL || qlen < DNS_HDR_LEN ||
	    outmax < DNS_HDR_LEN)
		return 0;
	if (get16(q + 2) & DNS_F_QR)
		return 0;
	if (outmax > DNSD_TCP_MAX)
		outmax = DNSD_TCP_MAX;

	if ((get16(q + 2) & DNS_F_OPCODE) != 0) {
		memset(&qr, 0, sizeof(qr));
		qr.id = get16(q);
		qr.flags = get16(q + 2);
		msg_start(&m, q, &qr, out, outmax);
		return msg_finish(&m, q, &qr, DNS_R_NOTIMP, 0);
	}
	rc = dnsd_parse(q, qlen, &qr);
	limit = outmax;
	if (!tcp) {
		n = qr.edns && rc == DNSD_PARSE_OK ? qr.udpsize : DNSD_UDP_MIN;
		if (limit > n)
			limit = n;
	}
	if (rc != DNSD_PARSE_OK) {
		qr.edns = 0;
		msg_start(&m, q, &qr, out, limit);
		return msg_finish(&m, q, &qr, DNS_R_FORMERR, 0);
	}
	msg_start(&m, q, &qr, out, limit);
	if (qr.edns && qr.ednsver != 0)
		return msg_finish(&m, q, &qr, DNS_R_BADVERS, 0);
	if ((qr.qclass != DNS_C_IN && qr.qclass != DNS_C_ANY) ||
	    qr.qtype == DNS_T_AXFR || qr.qtype == DNS_T_IXFR ||
	    cfg == NULL || cfg->lookup == NULL)
		return msg_finish(&m, q, &qr, DNS_R_REFUSED, 0);

	dnsd_name_text(qr.qname, qtext);
	memset(&ans, 0, sizeof(ans));
	cfg->lookup(cfg->arg, qtext, &ans);
	ans.zone[sizeof(ans.zone) - 1] = '\0';
	if (ans.zone[0] == '\0' ||
	    dnsd_zone_names(cfg, ans.zone, ans.serial, &z) != 0 ||
	    !dnsd_in_zone(qr.qname, z.apex, &top)) {
		free(ans.txt);
		return msg_finish(&m, q, &qr, DNS_R_REFUSED, 0);
	}

	negttl = cfg->ttl < cfg->negative_ttl ? cfg->ttl : cfg->negative_ttl;
	if (top) {
		switch (qr.qtype) {
		case DNS_T_SOA:
			add_soa(&m, cfg, &z, cfg->ttl, 0);
			break;
		case DNS_T_ANY:
			add_soa(&m, cfg, &z, cfg->ttl, 0);
			add_ns(&m, cfg, &z);
			break;
		case DNS_T_NS:
			if (dnsd_count_ns(cfg) > 0)
				add_ns(&m, cfg, &z);
			else	/* no usable dns_ns: NODATA */
				add_soa(&m, cfg, &z, negttl, 1);
			break;
		default:
			add_soa(&m, cfg, &z, negttl, 1);
			break;
		}
	} else if (!ans.exists) {
		rcode = DNS_R_NXDOMAIN;
		add_soa(&m, cfg, &z, negttl, 1);
	} else if ((qr.qtype == DNS_T_TXT || qr.qtype == DNS_T_ANY) &&
	    ans.txt != NULL)
		add_txt(&m, cfg, qr.qname, ans.txt);
	else
		add_soa(&m, cfg, &z, negttl, 1);
	free(ans.txt);
	return msg_finish(&m, q, &qr, rcode, 1);
}

/* ---- the server --------------------------------------------------------------- */

struct relay_dnsd;

struct dnsd_conn {
	struct relay_dnsd *d;
	struct dnsd_conn *prev, *next;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uint8_t *in;               /* grows up to DNSD_IN_MAX octets */
	size_t inlen, incap;
	size_t outbytes;           /* written, not yet done */
	int nclosed;               /* handles closed: freed at 2 */
	int reading, eof, closing;
};

struct dnsd_write {
	uv_write_t req;
	struct dnsd_conn *c;
	size_t len;
	uint8_t data[];
};

struct dnsd_send {
	uv_udp_send_t req;
	struct relay_dnsd *d;
	uint8_t data[];
};

struct relay_dnsd {
	uv_loop_t *loop;
	const struct relay_dnsd_config *cfg;
	uv_udp_t udp;
	uv_tcp_t listener;
	struct dnsd_conn *conns;
	unsigned nconns;
	unsigned udp_pending;
	unsigned open;             /* handles and connections not closed */
	int stopping;
	uint8_t udp_in[65536];
	uint8_t out[2 + DNSD_TCP_MAX]; /* a response (TCP: after its length) */
};

/*
 * dnsd_addr_parse - "ADDR:PORT" or "[V6ADDR]:PORT" (IP literals, port 1 to
 * 65535) into *ss.  0 or -EINVAL.  (relay_addr_parse lives in config.c,
 * which the fuzzing build of this file alone can't pull in.)
 */
static int
dnsd_addr_parse(const char *s, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *p, *port;
	size_t hl;
	unsigned long v;
	char *end;
	int v6;

	if (s == NULL)
		return -EINVAL;
	if (*s == '[') {
		if ((p = strchr(s, ']')) == NULL || p[1] != ':')
			return -EINVAL;
		s++;
		hl = (size_t)(p - s);
		port = p + 2;
		v6 = 1;
	} else {
		if ((p = strrchr(s, ':')) == NULL || memchr(s, ':', (size_t)(p - s)))
			return -EINVAL;
		hl = (size_t)(p - s);
		port = p + 1;
		v6 = 0;
	}
	if (hl == 0 || hl >= sizeof(host) || *port < '0' || *port > '9')
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = '\0';
	errno = 0;
	v = strtoul(port, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	if (v6 ? uv_ip6_addr(host, (int)v, (struct sockaddr_in6 *)ss) :
	    uv_ip4_addr(host, (int)v, (struct sockaddr_in *)ss))
		return -EINVAL;
	return 0;
}

/* dnsd_unref - one handle or connection of d is gone; free d when last. */
static void
dnsd_unref(struct relay_dnsd *d)
{
	if (--d->open == 0 && d->stopping)
		free(d);
}

static void
dnsd_handle_closed(uv_handle_t *h)
{
	dnsd_unref(h->data);
}

static void
dnsd_free_handle(uv_handle_t *h)
{
	free(h);
}

/* ---- UDP ---- */

static void
dnsd_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct relay_dnsd *d = h->data;

	*buf = uv_buf_init((char *)d->udp_in, sizeof(d->udp_in));
}

static void
dnsd_udp_sent(uv_udp_send_t *req, int status)
{
	struct dnsd_send *s = (struct dnsd_send *)req;

	s->d->udp_pending--;
	free(s);
}

/* dnsd_udp_recv - answer one datagram (queued when the socket is busy). */
static void
dnsd_udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
    const struct sockaddr *addr, unsigned flags)
{
	struct relay_dnsd *d = h->data;
	struct dnsd_send *s;
	uv_buf_t b;
	size_t n;
	int rc;

	if (nread <= 0 || addr == NULL || d->stopping ||
	    (flags & UV_UDP_PARTIAL))
		return;
	n = relay_dnsd_respond(d->cfg, (const uint8_t *)buf->base,
	    (size_t)nread, 0, d->out, DNSD_UDP_MAX);
	if (n == 0)
		return;
	b = uv_buf_init((char *)d->out, (unsigned)n);
	rc = uv_udp_try_send(h, &b, 1, addr);
	if (rc >= 0 || (rc != UV_EAGAIN && rc != UV_ENOSYS))
		return;
	if (d->udp_pending >= DNSD_UDP_PENDING ||
	    (s = malloc(sizeof(*s) + n)) == NULL)
		return;
	s->d = d;
	memcpy(s->data, d->out, n);
	b = uv_buf_init((char *)s->data, (unsigned)n);
	if (uv_udp_send(&s->req, h, &b, 1, addr, dnsd_udp_sent) != 0) {
		free(s);
		return;
	}
	d->udp_pending++;
}

/* ---- TCP ---- */

static void dnsd_conn_update(struct dnsd_conn *c);
static int dnsd_conn_start_read(struct dnsd_conn *c);

static void
dnsd_conn_closed(uv_handle_t *h)
{
	struct dnsd_conn *c = h->data;
	struct relay_dnsd *d = c->d;

	if (++c->nclosed < 2)
		return;
	free(c->in);
	free(c);
	dnsd_unref(d);
}

/* dnsd_conn_close - unlink c and close its handles (pending writes are
 * cancelled first by libuv, so c is freed after their callbacks). */
static void
dnsd_conn_close(struct dnsd_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->d->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->d->nconns--;
	uv_close((uv_handle_t *)&c->tcp, dnsd_conn_closed);
	uv_close((uv_handle_t *)&c->timer, dnsd_conn_closed);
}

static void
dnsd_conn_idle(uv_timer_t *t)
{
	dnsd_conn_close(t->data);
}

static void
dnsd_conn_touch(struct dnsd_conn *c)
{
	uv_timer_start(&c->timer, dnsd_conn_idle, DNSD_IDLE_MS, 0);
}

static void
dnsd_conn_written(uv_write_t *req, int status)
{
	struct dnsd_write *w = (struct dnsd_write *)req;
	struct dnsd_conn *c = w->c;

	c->outbytes -= w->len;
	free(w);
	if (c->closing)
		return;
	if (status < 0) {
		dnsd_conn_close(c);
		return;
	}
	dnsd_conn_touch(c);
	dnsd_conn_update(c);
}

/* dnsd_conn_send - queue one framed response (len octets at data). */
static int
dnsd_conn_send(struct dnsd_conn *c, const uint8_t *data, size_t len)
{
	struct dnsd_write *w;
	uv_buf_t b;

	if ((w = malloc(sizeof(*w) + len)) == NULL)
		return -ENOMEM;
	w->c = c;
	w->len = len;
	memcpy(w->data, data, len);
	b = uv_buf_init((char *)w->data, (unsigned)len);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1,
	    dnsd_conn_written) != 0) {
		free(w);
		return -EIO;
	}
	c->outbytes += len;
	return 0;
}

/*
 * dnsd_conn_update - answer every whole message in the input buffer (while
 * the client keeps up with its answers), then decide whether to read on,
 * pause, or close (end of input and everything written).
 */
static void
dnsd_conn_update(struct dnsd_conn *c)
{
	struct relay_dnsd *d = c->d;
	size_t off = 0, mlen, n;

	while (c->inlen - off >= 2 && c->outbytes < DNSD_OUT_HIGH) {
		mlen = get16(c->in + off);
		if (c->inlen - off - 2 < mlen)
			break;
		n = relay_dnsd_respond(d->cfg, c->in + off + 2, mlen, 1,
		    d->out + 2, DNSD_TCP_MAX);
		off += 2 + mlen;
		if (n == 0)
			continue;
		d->out[0] = (uint8_t)(n >> 8);
		d->out[1] = (uint8_t)n;
		if (dnsd_conn_send(c, d->out, n + 2) != 0) {
			dnsd_conn_close(c);
			return;
		}
	}
	if (off > 0) {
		memmove(c->in, c->in + off, c->inlen - off);
		c->inlen -= off;
	}
	if (c->eof) {
		if (c->outbytes == 0 &&
		    (c->inlen < 2 || c->inlen - 2 < get16(c->in)))
			dnsd_conn_close(c);
		return;
	}
	if (c->outbytes >= DNSD_OUT_HIGH && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = 0;
	}
	if (c->outbytes < DNSD_OUT_HIGH && !c->reading &&
	    dnsd_conn_start_read(c) != 0)
		dnsd_conn_close(c);
}

static void
dnsd_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct dnsd_conn *c = h->data;
	size_t cap;
	uint8_t *p;

	/* room for at least a little, and for the whole of a long message
	 * whose length has come */
	cap = c->incap;
	if (c->inlen >= 2 && 2 + (size_t)get16(c->in) > cap)
		cap = 2 + (size_t)get16(c->in);
	if (cap - c->inlen < 512)
		cap = c->inlen + 512;
	if (cap > DNSD_IN_MAX)
		cap = DNSD_IN_MAX;
	if (cap > c->incap && (p = realloc(c->in, cap)) != NULL) {
		c->in = p;
		c->incap = cap;
	}
	*buf = uv_buf_init((char *)c->in + c->inlen,
	    (unsigned)(c->incap - c->inlen));
}

static void
dnsd_conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct dnsd_conn *c = s->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread != UV_EOF) {
			dnsd_conn_close(c);
			return;
		}
		uv_read_stop(s);
		c->reading = 0;
		c->eof = 1;
		dnsd_conn_update(c);
		return;
	}
	c->inlen += (size_t)nread;
	dnsd_conn_touch(c);
	dnsd_conn_update(c);
}

/* dnsd_conn_start_read - (re)start reading with our callbacks. */
static int
dnsd_conn_start_read(struct dnsd_conn *c)
{
	c->reading = 1;
	return uv_read_start((uv_stream_t *)&c->tcp, dnsd_conn_alloc,
	    dnsd_conn_read);
}

/* dnsd_reject - accept a connection over the limit and close it. */
static void
dnsd_reject(struct relay_dnsd *d)
{
	uv_tcp_t *t;

	if ((t = malloc(sizeof(*t))) == NULL)
		return;
	if (uv_tcp_init(d->loop, t) != 0) {
		free(t);
		return;
	}
	(void)uv_accept((uv_stream_t *)&d->listener, (uv_stream_t *)t);
	uv_close((uv_handle_t *)t, dnsd_free_handle);
}

static void
dnsd_accept(uv_stream_t *ls, int status)
{
	struct relay_dnsd *d = ls->data;
	struct dnsd_conn *c;

	if (status < 0 || d->stopping)
		return;
	if (d->nconns >= DNSD_CONNS_MAX ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		dnsd_reject(d);
		return;
	}
	c->incap = DNSD_IN_FIRST;
	if ((c->in = malloc(c->incap)) == NULL ||
	    uv_tcp_init(d->loop, &c->tcp) != 0) {
		free(c->in);
		free(c);
		dnsd_reject(d);
		return;
	}
	c->d = d;
	c->tcp.data = c;
	(void)uv_timer_init(d->loop, &c->timer);
	c->timer.data = c;
	d->open++;
	d->nconns++;
	c->next = d->conns;
	if (d->conns != NULL)
		d->conns->prev = c;
	d->conns = c;
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0 ||
	    dnsd_conn_start_read(c) != 0) {
		dnsd_conn_close(c);
		return;
	}
	dnsd_conn_touch(c);
}

/* ---- start and stop ---- */

int
relay_dnsd_start(uv_loop_t *loop, const struct relay_dnsd_config *cfg,
    struct relay_dnsd **out, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct relay_dnsd *d;
	int rc;

	*out = NULL;
	if (dnsd_addr_parse(cfg->listen, &ss) != 0) {
		snprintf(err, errlen, "dns_listen: \"%s\" is not ADDRESS:PORT",
		    cfg->listen != NULL ? cfg->listen : "");
		return -EINVAL;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		snprintf(err, errlen, "dns_listen: out of memory");
		return -ENOMEM;
	}
	d->loop = loop;
	d->cfg = cfg;
	if ((rc = uv_udp_init(loop, &d->udp)) != 0) {
		free(d);
		snprintf(err, errlen, "dns_listen %s: %s", cfg->listen,
		    uv_strerror(rc));
		return rc;
	}
	d->udp.data = d;
	d->open++;
	if ((rc = uv_tcp_init(loop, &d->listener)) != 0) {
		d->stopping = 1;
		uv_close((uv_handle_t *)&d->udp, dnsd_handle_closed);
		snprintf(err, errlen, "dns_listen %s: %s", cfg->listen,
		    uv_strerror(rc));
		return rc;
	}
	d->listener.data = d;
	d->open++;
	if ((rc = uv_udp_bind(&d->udp, (const struct sockaddr *)&ss, 0)) != 0 ||
	    (rc = uv_udp_recv_start(&d->udp, dnsd_udp_alloc,
	    dnsd_udp_recv)) != 0 ||
	    (rc = uv_tcp_bind(&d->listener, (const struct sockaddr *)&ss,
	    0)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)&d->listener, DNSD_BACKLOG,
	    dnsd_accept)) != 0) {
		snprintf(err, errlen, "dns_listen %s: %s", cfg->listen,
		    uv_strerror(rc));
		relay_dnsd_stop(d);
		return rc;
	}
	*out = d;
	return 0;
}

void
relay_dnsd_stop(struct relay_dnsd *d)
{
	if (d == NULL || d->stopping)
		return;
	d->stopping = 1;
	while (d->conns != NULL)
		dnsd_conn_close(d->conns);
	uv_close((uv_handle_t *)&d->udp, dnsd_handle_closed);
	uv_close((uv_handle_t *)&d->listener, dnsd_handle_closed);
}
