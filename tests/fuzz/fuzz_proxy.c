/*
 * fuzz_proxy.c - libFuzzer target for the PROXY protocol parser
 * (smtp__proxy_parse, smtp/proxy.c).
 *
 * The input is the start of a connection.  It is parsed whole, and every
 * prefix of it from an exact-size copy, so a read past the bytes given
 * trips ASan.  Nothing may crash or leak.  The oracles, each an abort(): a
 * result is -1, 0 or a length within the input; a header that parses gives
 * the same length and addresses when only its own bytes are given, and
 * every shorter prefix of it says "need more" (0), never "bad" or "done";
 * the addresses are AF_INET, AF_INET6 or AF_UNSPEC; and a v1 line and a v2
 * header rebuilt from the parsed addresses parse back to the same
 * addresses.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* die - print a reason and abort, so libFuzzer saves the input */
static void
die(const char *what)
{
	fprintf(stderr, "fuzz_proxy: %s\n", what);
	abort();
}

/* parse_copy - smtp__proxy_parse on an exact-size heap copy of p[0..len) */
static long
parse_copy(const void *p, size_t len, struct sockaddr_storage *src,
    struct sockaddr_storage *dst)
{
	char *copy = malloc(len ? len : 1);
	long r;

	if (copy == NULL)
		abort();
	memcpy(copy, p, len);
	r = smtp__proxy_parse(copy, len, src, dst);
	free(copy);
	return r;
}

/* same_addr - equal family, address and port */
static int
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;

	if (a->ss_family != b->ss_family)
		return 0;
	switch (a->ss_family) {
	case AF_UNSPEC:
		return 1;
	case AF_INET:
		return a4->sin_port == b4->sin_port &&
		    memcmp(&a4->sin_addr, &b4->sin_addr, 4) == 0;
	case AF_INET6:
		return a6->sin6_port == b6->sin6_port &&
		    memcmp(&a6->sin6_addr, &b6->sin6_addr, 16) == 0;
	}
	return 0;
}

/* rebuild_v1 - the v1 line for src/dst (same family or both AF_UNSPEC) */
static size_t
rebuild_v1(char *out, size_t outlen, const struct sockaddr_storage *src,
    const struct sockaddr_storage *dst)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int n;

	if (src->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)src;
		const struct sockaddr_in *b = (const void *)dst;

		inet_ntop(AF_INET, &a->sin_addr, s, sizeof(s));
		inet_ntop(AF_INET, &b->sin_addr, d, sizeof(d));
		n = snprintf(out, outlen, "PROXY TCP4 %s %s %u %u\r\n", s, d,
		    ntohs(a->sin_port), ntohs(b->sin_port));
	} else if (src->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)src;
		const struct sockaddr_in6 *b = (const void *)dst;

		inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof(s));
		inet_ntop(AF_INET6, &b->sin6_addr, d, sizeof(d));
		n = snprintf(out, outlen, "PROXY TCP6 %s %s %u %u\r\n", s, d,
		    ntohs(a->sin6_port), ntohs(b->sin6_port));
	} else {
		n = snprintf(out, outlen, "PROXY UNKNOWN\r\n");
	}
	if (n < 0 || (size_t)n >= outlen)
		die("rebuilt v1 line does not fit");
	return (size_t)n;
}

/* rebuild_v2 - the v2 header for src/dst (LOCAL for AF_UNSPEC) */
static size_t
rebuild_v2(uint8_t *out, const struct sockaddr_storage *src,
    const struct sockaddr_storage *dst)
{
	size_t alen = 0;

	memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
	if (src->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)src;
		const struct sockaddr_in *b = (const void *)dst;

		out[12] = 0x21;
		out[13] = 0x11;
		memcpy(out + 16, &a->sin_addr, 4);
		memcpy(out + 20, &b->sin_addr, 4);
		memcpy(out + 24, &a->sin_port, 2);
		memcpy(out + 26, &b->sin_port, 2);
		alen = 12;
	} else if (src->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)src;
		const struct sockaddr_in6 *b = (const void *)dst;

		out[12] = 0x21;
		out[13] = 0x21;
		memcpy(out + 16, &a->sin6_addr, 16);
		memcpy(out + 32, &b->sin6_addr, 16);
		memcpy(out + 48, &a->sin6_port, 2);
		memcpy(out + 50, &b->sin6_port, 2);
		alen = 36;
	} else {
		out[12] = 0x20;
		out[13] = 0x00;
	}
	out[14] = 0;
	out[15] = (uint8_t)alen;
	return 16 + alen;
}

/* check_rebuilt - a rebuilt header parses whole to the same addresses */
static void
check_rebuilt(const void *h, size_t len, const struct sockaddr_storage *src,
    const struct sockaddr_storage *dst, const char *what)
{
	struct sockaddr_storage s2, d2;
	long r = parse_copy(h, len, &s2, &d2);

	if (r != (long)len) {
		fprintf(stderr, "fuzz_proxy: %s: parse returned %ld for %zu "
		    "bytes\n", what, r, len);
		die("rebuilt header does not parse");
	}
	if (!same_addr(src, &s2) || !same_addr(dst, &d2))
		die("rebuilt header parses to other addresses");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage src, dst, s2, d2;
	char line[128];
	uint8_t v2[16 + 36];
	size_t i, n;
	long r, r2;

	r = parse_copy(data, size, &src, &dst);
	if (r < -1 || r > (long)size)
		die("result out of range");
	/* Without a length to stop at, only need-more / bad along the way. */
	if (r <= 0) {
		for (i = 0; i < size && i <= 1100; i++) {
			r2 = parse_copy(data, i, NULL, NULL);
			if (r2 > 0)
				die("a prefix of a non-header parsed");
			/* Once bad, more bytes cannot make it good. */
			if (r2 == -1 && r == 0)
				die("a prefix was bad, the whole needs more");
		}
		return 0;
	}

	n = (size_t)r;
	if (src.ss_family != dst.ss_family ||
	    (src.ss_family != AF_INET && src.ss_family != AF_INET6 &&
	    src.ss_family != AF_UNSPEC))
		die("bad address families");
	r2 = parse_copy(data, n, &s2, &d2);
	if (r2 != r || !same_addr(&src, &s2) || !same_addr(&dst, &d2))
		die("the header alone parses differently");
	for (i = 0; i < n; i++)
		if (parse_copy(data, i, NULL, NULL) != 0)
			die("a prefix of a valid header is not need-more");

	check_rebuilt(line, rebuild_v1(line, sizeof(line), &src, &dst), &src,
	    &dst, "v1");
	check_rebuilt(v2, rebuild_v2(v2, &src, &dst), &src, &dst, "v2");
	return 0;
}
