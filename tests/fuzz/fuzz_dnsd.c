/*
 * fuzz_dnsd.c - libFuzzer target for the built-in DNS server's packet
 * handling (relay_dnsd_respond, relay/dnsd.c).
 *
 * The input's first octet picks the mode (UDP or TCP) and the output limit
 * (from 0 to 65535 in a few steps); the rest is the packet, given from an
 * exact-size heap copy so a read past it trips ASan.  The lookup answers by
 * the name: names under _domainkey.example.com exist unless their first
 * label starts with 'n', get a TXT whose length comes from the name (up to
 * a few KiB, so truncation and multi-string records happen), and the zone
 * itself is the apex; a name under bad.example answers with a zone that is
 * not a suffix of it or is not a name at all.  Oracles, each an abort(): the
 * response fits outmax (and 512 octets for UDP without a usable OPT, 4096
 * with one), echoes the ID, has QR set, and parses (header counts match the
 * records, every name decompresses within the message, nothing after the
 * last record); answering the same packet twice gives the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_ZONE "_domainkey.example.com"

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_dnsd: %s\n", what);
	abort();
}

/* fz_lookup - answers from the shape of the name alone */
static void
fz_lookup(void *arg, const char *qname, struct relay_dnsd_answer *ans)
{
	size_t n = strlen(qname), z = strlen(FZ_ZONE), len, i;

	if (n >= 11 && strcmp(qname + n - 11, "bad.example") == 0) {
		snprintf(ans->zone, sizeof(ans->zone), "%s",
		    qname[0] == 'a' ? "other.example" : "..");
		ans->exists = 1;
		ans->txt = strdup("x");
		return;
	}
	if (strcmp(qname, FZ_ZONE) == 0) {
		snprintf(ans->zone, sizeof(ans->zone), "%s", FZ_ZONE);
		ans->exists = 1;
		ans->serial = 7;
		return;
	}
	if (n <= z || qname[n - z - 1] != '.' ||
	    strcmp(qname + n - z, FZ_ZONE) != 0)
		return;
	snprintf(ans->zone, sizeof(ans->zone), "%s", FZ_ZONE);
	ans->serial = (uint32_t)n;
	if (qname[0] == 'n')
		return;
	ans->exists = 1;
	if (qname[0] == 'e')
		return;                 /* exists, no TXT */
	len = (size_t)(unsigned char)qname[0] * 13 + n * 7;
	if ((ans->txt = malloc(len + 1)) == NULL)
		die("out of memory");
	for (i = 0; i < len; i++)
		ans->txt[i] = (char)('0' + i % 43);
	ans->txt[len] = '\0';
}

static char *fz_ns_items[] = { "ns1.example.net", "ns2.example.com.",
    "bad..name" };
static struct relay_strlist fz_ns = { fz_ns_items, 3 };

static const struct relay_dnsd_config fz_cfg = {
	.listen = "127.0.0.1:5353",
	.ns = &fz_ns,
	.hostmaster = "dns.admin@example.net",
	.ttl = 300,
	.negative_ttl = 60,
	.lookup = fz_lookup,
	.arg = NULL,
};

/* fz_name - step over a name of the response (pointers must stay inside
 * and end: at most 128 hops). */
static int
fz_name(const uint8_t *m, size_t len, size_t *off)
{
	size_t o = *off, l, total = 0;
	int hops = 0, jumped = 0;

	for (;;) {
		if (o >= len)
			return -1;
		l = m[o];
		if ((l & 0xc0) == 0xc0) {
			if (o + 1 >= len || ++hops > 128)
				return -1;
			if (!jumped)
				*off = o + 2;
			jumped = 1;
			o = (l & 0x3f) << 8 | m[o + 1];
			continue;
		}
		if (l & 0xc0)
			return -1;
		total += 1 + l;
		if (total > 255 || o + 1 + l > len)
			return -1;
		if (l == 0) {
			if (!jumped)
				*off = o + 1;
			return 0;
		}
		o += 1 + l;
	}
}

/* fz_check - the response parses as a DNS message */
static void
fz_check(const uint8_t *m, size_t len)
{
	size_t off = 12, i, total, rdlen;

	if (len < 12)
		die("response shorter than a header");
	if (m[4] != 0 || m[5] > 1)
		die("qdcount not 0 or 1");
	if (m[5] == 1) {
		if (fz_name(m, len, &off) != 0 || len - off < 4)
			die("bad question in response");
		off += 4;
	}
	total = (size_t)(m[6] << 8 | m[7]) + (size_t)(m[8] << 8 | m[9]) +
	    (size_t)(m[10] << 8 | m[11]);
	for (i = 0; i < total; i++) {
		if (fz_name(m, len, &off) != 0 || len - off < 10)
			die("bad record in response");
		rdlen = (size_t)(m[off + 8] << 8 | m[off + 9]);
		off += 10;
		if (len - off < rdlen)
			die("rdata past the end of the response");
		off += rdlen;
	}
	if (off != len)
		die("octets after the last record");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[8] = { 0, 11, 12, 60, 512, 1500, 4096,
	    65535 };
	static uint8_t out[65535], out2[65535];
	size_t outmax, n, n2, cap;
	uint8_t *q;
	int tcp;

	if (size < 1)
		return 0;
	tcp = data[0] & 1;
	outmax = limits[(data[0] >> 1) & 7];
	data++;
	size--;
	if ((q = malloc(size ? size : 1)) == NULL)
		die("out of memory");
	memcpy(q, data, size);

	n = relay_dnsd_respond(&fz_cfg, q, size, tcp, out, outmax);
	if (n > outmax)
		die("response longer than outmax");
	if (n > 0) {
		if (size < 12)
			die("answered a packet shorter than a header");
		if (q[2] & 0x80)
			die("answered a response");
		if (out[0] != q[0] || out[1] != q[1])
			die("ID not echoed");
		if (!(out[2] & 0x80))
			die("QR not set");
		/* UDP: 512 unless the response carries our OPT, then the
		 * client's size, at most 4096 */
		cap = tcp ? 65535 : (out[10] == 0 && out[11] == 0 ? 512 :
		    4096);
		if (n > cap)
			die("UDP response over the client's size");
		fz_check(out, n);
	} else if (size >= 12 && outmax >= 12 && !(q[2] & 0x80))
		die("a query got no answer");
	n2 = relay_dnsd_respond(&fz_cfg, q, size, tcp, out2, outmax);
	if (n2 != n || memcmp(out, out2, n) != 0)
		die("two answers to the same packet differ");
	free(q);
	return 0;
}
