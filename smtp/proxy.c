/*
 * proxy.c - the HAProxy PROXY protocol header (versions 1 and 2, as in
 * HAProxy's doc/proxy-protocol.txt) that a load balancer puts in front of
 * the SMTP stream so that mynetworks and the logs see the real client.  The
 * session calls smtp__proxy_parse on whatever it has read so far, before
 * any SMTP byte; the parser keeps no state, looks only at the bytes it is
 * given and says "need more" (0) until the header is whole.  It says "not a
 * PROXY header" (-1) as early as it can: as soon as the first bytes can
 * start neither signature, or a field already seen is invalid, so a client
 * that talks SMTP straight away is refused at once.  Version 1 is one text
 * line of at most 107 bytes with strictly checked addresses and ports;
 * version 2 is a 16-byte binary header, an address block and TLVs, which
 * are checked for framing and otherwise skipped.  A v2 header may be at
 * most PROXY_V2_MAX bytes, so the caller's read buffer must hold that many.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "smtp/smtp_int.h"

#define PROXY_V1_MAX 107      /* "worst case" line length, CRLF included */
#define PROXY_V2_HDR 16       /* signature, ver_cmd, fam, len */
#define PROXY_V2_MAX 1024     /* our bound on a v2 header, TLVs included */

/* v2 ver_cmd and fam nibbles (proxy-protocol.txt 2.2) */
#define V2_VERSION 0x2
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
#define V2_AF_UNSPEC 0x0
#define V2_AF_INET 0x1
#define V2_AF_INET6 0x2
#define V2_PROTO_STREAM 0x1
#define V2_ADDR_INET 12       /* src, dst (4 each), sport, dport (2 each) */
#define V2_ADDR_INET6 36      /* src, dst (16 each), sport, dport */

static const char v1_sig[] = "PROXY ";
static const char v2_sig[12] = "\r\n\r\n\0\r\nQUIT\n";

/* min_sz - the smaller of two sizes */
static size_t
min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* clear_out - set both results to AF_UNSPEC */
static void
clear_out(struct sockaddr_storage *src, struct sockaddr_storage *dst)
{
	if (src != NULL) {
		memset(src, 0, sizeof(*src));
		src->ss_family = AF_UNSPEC;
	}
	if (dst != NULL) {
		memset(dst, 0, sizeof(*dst));
		dst->ss_family = AF_UNSPEC;
	}
}

/* set_addr - fill ss from a raw address and a port in host order */
static void
set_addr(struct sockaddr_storage *ss, int family, const void *addr,
    unsigned port)
{
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;

	if (ss == NULL)
		return;
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		memcpy(&sin->sin_addr, addr, 4);
	} else {
		sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		memcpy(&sin6->sin6_addr, addr, 16);
	}
}

/* ---- version 1 ----------------------------------------------------------- */

/* v1_char_ok - may this byte appear in a v1 line before its CR? */
static int
v1_char_ok(unsigned char c)
{
	/* "UNKNOWN" lines may carry anything printable after the keyword. */
	return c >= ' ' && c < 0x7f;
}

/*
 * v1_token - the next token of line[*pos..end): up to a single space (which
 * is consumed) or end.  Copies it NUL-terminated into buf; -1 if it is
 * empty or does not fit.
 */
static int
v1_token(const char *line, size_t *pos, size_t end, int last, char *buf,
    size_t buflen)
{
	size_t i = *pos, n;

	while (i < end && line[i] != ' ')
		i++;
	n = i - *pos;
	if (n == 0 || n >= buflen)
		return -1;
	/* Exactly one space between fields; the last one ends the line. */
	if (last ? i != end : i == end)
		return -1;
	memcpy(buf, line + *pos, n);
	buf[n] = '\0';
	*pos = last ? i : i + 1;
	return 0;
}

/* v1_port - strict decimal port: 1 to 5 digits, no leading zero, <= 65535 */
static int
v1_port(const char *s, unsigned *port)
{
	unsigned long v = 0;
	size_t i, n = strlen(s);

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = (unsigned)v;
	return 0;
}

/*
 * v1_parse - "PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n" or
 * "PROXY UNKNOWN[ anything]\r\n" (proxy-protocol.txt 2.1).
 */
static long
v1_parse(const char *p, size_t len, struct sockaddr_storage *src,
    struct sockaddr_storage *dst)
{
	unsigned char a_src[16], a_dst[16];
	char proto[8], s_src[INET6_ADDRSTRLEN], s_dst[INET6_ADDRSTRLEN];
	char s_sport[8], s_dport[8];
	size_t i, end, pos, lim = min_sz(len, PROXY_V1_MAX);
	unsigned sport, dport;
	int family;

	/* Find the CR of the CRLF, refusing early on anything impossible. */
	for (i = 0; i < lim; i++) {
		if (p[i] == '\r')
			break;
		if (!v1_char_ok((unsigned char)p[i]))
			return -1;
	}
	if (i == lim)
		return len >= PROXY_V1_MAX ? -1 : 0;
	if (i + 1 == len)
		return 0;
	if (i + 1 >= PROXY_V1_MAX || p[i + 1] != '\n')
		return -1;
	end = i;

	pos = sizeof(v1_sig) - 1;
	if (end - pos >= 7 && memcmp(p + pos, "UNKNOWN", 7) == 0 &&
	    (end - pos == 7 || p[pos + 7] == ' ')) {
		/* The receiver must ignore whatever follows UNKNOWN. */
		clear_out(src, dst);
		return (long)(end + 2);
	}
	if (v1_token(p, &pos, end, 0, proto, sizeof(proto)) != 0)
		return -1;
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else
		return -1;
	if (v1_token(p, &pos, end, 0, s_src, sizeof(s_src)) != 0 ||
	    v1_token(p, &pos, end, 0, s_dst, sizeof(s_dst)) != 0 ||
	    v1_token(p, &pos, end, 0, s_sport, sizeof(s_sport)) != 0 ||
	    v1_token(p, &pos, end, 1, s_dport, sizeof(s_dport)) != 0)
		return -1;
	/* inet_pton is strict: dotted quad without leading zeros for IPv4. */
	if (inet_pton(family, s_src, a_src) != 1 ||
	    inet_pton(family, s_dst, a_dst) != 1)
		return -1;
	if (v1_port(s_sport, &sport) != 0 || v1_port(s_dport, &dport) != 0)
		return -1;
	set_addr(src, family, a_src, sport);
	set_addr(dst, family, a_dst, dport);
	return (long)(end + 2);
}

/* ---- version 2 ----------------------------------------------------------- */

/* v2_tlvs_ok - do the TLVs in p[0..len) exactly fill it? (2.2.7) */
static int
v2_tlvs_ok(const unsigned char *p, size_t len)
{
	size_t pos = 0, vlen;

	while (pos < len) {
		if (len - pos < 3)
			return 0;
		vlen = (size_t)p[pos + 1] << 8 | p[pos + 2];
		if (len - pos - 3 < vlen)
			return 0;
		pos += 3 + vlen;
	}
	return 1;
}

/* v2_parse - the binary header (proxy-protocol.txt 2.2) */
static long
v2_parse(const unsigned char *p, size_t len, struct sockaddr_storage *src,
    struct sockaddr_storage *dst)
{
	size_t total, alen, need;
	unsigned cmd, fam, proto;

	/* The version/command byte can be judged alone. */
	if (len < 13)
		return 0;
	if (p[12] >> 4 != V2_VERSION)
		return -1;
	cmd = p[12] & 0x0f;
	if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
		return -1;
	if (len < 14)
		return 0;
	fam = p[13] >> 4;
	proto = p[13] & 0x0f;
	/*
	 * With PROXY, take TCP over IPv4 or IPv6, or UNSPEC (the sender does
	 * not know the client: like v1 UNKNOWN).  UNIX sockets and datagrams
	 * mean nothing to an SMTP listener.  LOCAL ignores the address block.
	 */
	need = 0;
	if (cmd == V2_CMD_PROXY) {
		if (fam == V2_AF_INET && proto == V2_PROTO_STREAM)
			need = V2_ADDR_INET;
		else if (fam == V2_AF_INET6 && proto == V2_PROTO_STREAM)
			need = V2_ADDR_INET6;
		else if (fam != V2_AF_UNSPEC)
			return -1;
	}
	if (len < PROXY_V2_HDR)
		return 0;
	alen = (size_t)p[14] << 8 | p[15];
	total = PROXY_V2_HDR + alen;
	if (alen < need || total > PROXY_V2_MAX)
		return -1;
	if (len < total)
		return 0;

	clear_out(src, dst);
	if (need == 0)
		return (long)total;
	if (!v2_tlvs_ok(p + PROXY_V2_HDR + need, alen - need))
		return -1;
	if (fam == V2_AF_INET) {
		const unsigned char *a = p + PROXY_V2_HDR;

		set_addr(src, AF_INET, a, (unsigned)a[8] << 8 | a[9]);
		set_addr(dst, AF_INET, a + 4, (unsigned)a[10] << 8 | a[11]);
	} else {
		const unsigned char *a = p + PROXY_V2_HDR;

		set_addr(src, AF_INET6, a, (unsigned)a[32] << 8 | a[33]);
		set_addr(dst, AF_INET6, a + 16, (unsigned)a[34] << 8 | a[35]);
	}
	return (long)total;
}

long
smtp__proxy_parse(const char *p, size_t len, struct sockaddr_storage *src,
    struct sockaddr_storage *dst)
{
	size_t n;

	if (len == 0)
		return 0;
	/* The first byte tells the versions apart: 'P' or '\r'. */
	if (p[0] == v1_sig[0]) {
		n = min_sz(len, sizeof(v1_sig) - 1);
		if (memcmp(p, v1_sig, n) != 0)
			return -1;
		if (len < sizeof(v1_sig) - 1)
			return 0;
		return v1_parse(p, len, src, dst);
	}
	n = min_sz(len, sizeof(v2_sig));
	if (memcmp(p, v2_sig, n) != 0)
		return -1;
	return v2_parse((const unsigned char *)p, len, src, dst);
}
