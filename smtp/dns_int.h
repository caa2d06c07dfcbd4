/*
 * dns_int.h - the pieces of dns.c (next-hop resolution) that the unit tests
 * reach without a DNS server: MX ordering and the mapping of c-ares status
 * codes to next-hop outcomes.  Not for use outside smtp/.
 */
#ifndef SIGNET_SMTP_DNS_INT_H
#define SIGNET_SMTP_DNS_INT_H

#include <stddef.h>

#include "smtp/smtp.h"

/* One MX record as received. */
struct smtp__dns_mx {
	char host[SMTP_NEXTHOP_NAMELEN];
	unsigned pref;
};

/* A random number in [0, n), n > 0; arg is the caller's. */
typedef unsigned (*smtp__dns_rand_fn)(void *arg, unsigned n);

/*
 * smtp__dns_mx_order - RFC 5321 5.1: sort mx[0..n) by ascending preference,
 * drop later duplicates of a host name (case-insensitive; the best
 * preference stays) and shuffle each run of equal preference with rnd
 * (NULL: arc4random_uniform).  Returns the new count.  Can't fail.
 */
size_t smtp__dns_mx_order(struct smtp__dns_mx *mx, size_t n,
    smtp__dns_rand_fn rnd, void *arg);

/*
 * smtp__dns_is_nullmx - RFC 7505: is mx[0..n) a null MX?  True when there
 * is at least one record and every exchange is the root (c-ares gives ""
 * for it; "." is taken too).  A root exchange next to real hosts is not a
 * null MX: dns.c skips that record and uses the others.
 */
int smtp__dns_is_nullmx(const struct smtp__dns_mx *mx, size_t n);

/*
 * smtp__dns_classify - what a c-ares status (ARES_*) from a lookup means
 * for delivery: OK (ARES_SUCCESS), PERMFAIL (the name or the record does
 * not exist: ARES_ENOTFOUND, ARES_ENODATA), CANCELLED (ARES_ECANCELLED,
 * ARES_EDESTRUCTION), TEMPFAIL for everything else.
 */
enum smtp_nexthop_status smtp__dns_classify(int ares_status);

/*
 * smtp__dns_strerror - Postfix's wording for a c-ares status: "Host not
 * found", "Host found but no data record of requested type", "Host not
 * found, try again", ...
 */
const char *smtp__dns_strerror(int ares_status);

#endif
