/*
 * netlist.c - address lists such as mynetworks and proxy_trusted_networks:
 * parsed once from the configuration into a flat array of (family, address,
 * prefix length), then matched against each client address on connect.
 * Items are IPv4 or IPv6 CIDR blocks, bare addresses (a /32 or /128) and the
 * bracketed form Postfix also takes ("[::1]/128"), separated by commas
 * and/or white space.  An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a
 * dual-stack socket reports for an IPv4 client) is matched as the IPv4
 * address it carries, against entries written either way.  Lists are
 * short, so matching is a linear scan of the array.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

#define ITEM_MAX 64   /* longest item: IPv6 text, brackets and "/128" */

struct net {
	int family;           /* AF_INET or AF_INET6 */
	unsigned prefix;      /* bits that must match */
	uint8_t addr[16];     /* 4 bytes used for AF_INET; host bits are zero */
};

struct smtp_netlist {
	size_t n;
	struct net nets[];
};

static const uint8_t v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

/* is_sep - item separator: comma or white space */
static int
is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* prefix_eq - do a and b agree in their first bits bits? */
static int
prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	unsigned bytes = bits / 8, rest = bits % 8;
	uint8_t mask;

	if (memcmp(a, b, bytes) != 0)
		return 0;
	if (rest == 0)
		return 1;
	mask = (uint8_t)(0xff << (8 - rest));
	return ((a[bytes] ^ b[bytes]) & mask) == 0;
}

/*
 * host_bits_set - does addr have any bit set past the first bits of alen?
 * masked gets the address with those bits cleared.
 */
static int
host_bits_set(const uint8_t *addr, size_t alen, unsigned bits,
    uint8_t *masked)
{
	unsigned i;

	memcpy(masked, addr, alen);
	for (i = bits; i < alen * 8; i++)
		masked[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
	return memcmp(masked, addr, alen) != 0;
}

/* parse_prefix - strict decimal prefix length in [0, max]; -1 if bad */
static int
parse_prefix(const char *s, unsigned max)
{
	unsigned v = 0;
	size_t i, n = strlen(s);

	/* No sign, no leading zero (except "0" itself), at most 3 digits. */
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v <= max ? (int)v : -1;
}

/*
 * parse_item - one "addr", "addr/len", "[addr]" or "[addr]/len" into *n.
 * 0, or -1 with the reason in err.
 */
static int
parse_item(const char *item, struct net *n, char *err, size_t errlen)
{
	char buf[ITEM_MAX + 1], *addr = buf, *slash, *close;
	char net[INET6_ADDRSTRLEN];
	uint8_t masked[16];
	int pfx;

	if (strlen(item) > ITEM_MAX) {
		snprintf(err, errlen, "\"%.20s...\": too long", item);
		return -1;
	}
	strcpy(buf, item);
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash++ = '\0';
	if (buf[0] == '[') {
		if ((close = strchr(buf, ']')) == NULL || close[1] != '\0') {
			snprintf(err, errlen, "\"%s\": unbalanced brackets",
			    item);
			return -1;
		}
		*close = '\0';
		addr = buf + 1;
	} else if (strchr(buf, ']') != NULL) {
		snprintf(err, errlen, "\"%s\": unbalanced brackets", item);
		return -1;
	}

	memset(n, 0, sizeof(*n));
	if (inet_pton(AF_INET, addr, n->addr) == 1) {
		n->family = AF_INET;
		n->prefix = 32;
	} else if (inet_pton(AF_INET6, addr, n->addr) == 1) {
		n->family = AF_INET6;
		n->prefix = 128;
	} else {
		snprintf(err, errlen, "\"%s\": not an IPv4 or IPv6 address",
		    item);
		return -1;
	}
	if (slash != NULL) {
		if ((pfx = parse_prefix(slash, n->prefix)) < 0) {
			snprintf(err, errlen, "\"%s\": bad prefix length "
			    "(0 to %u)", item, n->prefix);
			return -1;
		}
		n->prefix = (unsigned)pfx;
	}
	/*
	 * Like Postfix, refuse "10.0.0.1/8": it is most likely a typo, and
	 * silently widening or narrowing it would change who may relay.
	 */
	if (host_bits_set(n->addr, n->family == AF_INET ? 4 : 16, n->prefix,
	    masked)) {
		inet_ntop(n->family, masked, net, sizeof(net));
		snprintf(err, errlen, "\"%s\": host bits set past the /%u "
		    "prefix (did you mean %s/%u?)", item, n->prefix, net,
		    n->prefix);
		return -1;
	}
	/*
	 * An IPv4-mapped IPv6 block of /96 or longer is an IPv4 block; keep
	 * it as one so it matches the IPv4 clients it names.
	 */
	if (n->family == AF_INET6 && n->prefix >= 96 &&
	    memcmp(n->addr, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(n->addr, n->addr + 12, 4);
		memset(n->addr + 4, 0, 12);
		n->family = AF_INET;
		n->prefix -= 96;
	}
	return 0;
}

int
smtp_netlist_parse(const char *s, struct smtp_netlist **out, char *err,
    size_t errlen)
{
	struct smtp_netlist *l = NULL;
	char item[ITEM_MAX + 2], why[256];
	size_t n = 0, i, len;
	const char *p;
	int rc = -EINVAL;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (s == NULL)
		s = "";

	/* Upper bound on the item count: one per separator run, plus one. */
	for (p = s; *p != '\0'; p++)
		if (!is_sep(*p) && (p == s || is_sep(p[-1])))
			n++;
	l = calloc(1, sizeof(*l) + n * sizeof(l->nets[0]));
	if (l == NULL) {
		rc = -ENOMEM;
		if (err != NULL)
			snprintf(err, errlen, "out of memory");
		goto fail;
	}

	for (p = s; *p != '\0'; p += len) {
		while (is_sep(*p))
			p++;
		if (*p == '\0')
			break;
		for (len = 0; p[len] != '\0' && !is_sep(p[len]); len++)
			;
		/* Copy at most ITEM_MAX + 1 so that too long is still seen. */
		i = len > ITEM_MAX + 1 ? ITEM_MAX + 1 : len;
		memcpy(item, p, i);
		item[i] = '\0';
		if (parse_item(item, &l->nets[l->n], why, sizeof(why)) != 0) {
			if (err != NULL)
				snprintf(err, errlen, "bad network %s", why);
			goto fail;
		}
		l->n++;
	}
	*out = l;
	return 0;

fail:
	free(l);
	return rc;
}

int
smtp_netlist_match(const struct smtp_netlist *l, const struct sockaddr *sa)
{
	const struct sockaddr_in6 *sin6;
	uint8_t addr[16];
	int family;
	size_t i;

	if (l == NULL || sa == NULL)
		return 0;
	switch (sa->sa_family) {
	case AF_INET:
		family = AF_INET;
		memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		break;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)sa;
		memcpy(addr, &sin6->sin6_addr, 16);
		family = AF_INET6;
		/* ::ffff:a.b.c.d from a dual-stack socket is an IPv4 client. */
		if (memcmp(addr, v4mapped, sizeof(v4mapped)) == 0) {
			memmove(addr, addr + 12, 4);
			family = AF_INET;
		}
		break;
	default:
		return 0;
	}
	for (i = 0; i < l->n; i++)
		if (l->nets[i].family == family &&
		    prefix_eq(l->nets[i].addr, addr, l->nets[i].prefix))
			return 1;
	return 0;
}

void
smtp_netlist_free(struct smtp_netlist *l)
{
	free(l);
}
