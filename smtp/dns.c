/*
 * dns.c - next-hop resolution for the delivery client (RFC 5321 5.1): turn
 * a destination (a recipient domain, or a relayhost written "[host]:port"
 * or "host:port" as in Postfix) into the ordered list of hosts to try and
 * their addresses.  Lookups go through c-ares on the worker's libuv loop:
 * every socket c-ares opens gets a uv_poll handle (sock_state_cb), and one
 * uv_timer drives c-ares's retransmissions and timeouts.
 *
 * A query runs in two phases: the MX lookup (skipped for "[host]"), then
 * A and AAAA lookups of every MX host at once.  Finished queries wait on a
 * list until a zero-delay timer hands them to their callbacks, so user
 * callbacks never run inside c-ares (which may then be freed or given new
 * queries from a callback) nor before smtp_resolve_nexthop returns.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <ares.h>
#include <uv.h>

#include "smtp/smtp.h"
#include "smtp/dns_int.h"

#define DEF_TIMEOUT_MS  2000
#define DEF_TRIES       3
#define MAX_SERVERS     16

/* what a c-ares lookup was for */
enum lk_type { LK_MX, LK_A, LK_AAAA };

struct nh_query;

/* the argument of one ares_query */
struct nh_lookup {
	struct nh_query *q;
	int hop;                  /* index in q->res.hops (A/AAAA) */
	enum lk_type type;
};

/* what the A and AAAA lookups of one hop found */
struct hop_work {
	int st4, st6;             /* ARES_* of each lookup */
	size_t n4, n6;
	struct in_addr a4[SMTP_NEXTHOP_MAXADDRS];
	struct in6_addr a6[SMTP_NEXTHOP_MAXADDRS];
};

struct nh_query {
	struct smtp_resolver *r;
	struct nh_query *prev, *next;   /* r->pending (doubly), r->done (FIFO) */
	smtp_nexthop_cb cb;
	void *arg;
	unsigned refs;            /* lookups in flight, plus holds while issuing */
	int addr_phase;           /* 1 once the A/AAAA lookups were issued */
	int final;                /* 1 once res.status is decided */
	struct nh_lookup lk[1 + 2 * SMTP_NEXTHOP_MAXHOPS];
	struct hop_work hw[SMTP_NEXTHOP_MAXHOPS];
	struct smtp_nexthop res;
};

struct resolver_poll {
	uv_poll_t handle;
	ares_socket_t fd;
	struct smtp_resolver *r;
	struct resolver_poll *next;
};

struct smtp_resolver {
	uv_loop_t *loop;
	ares_channel channel;
	int have_channel;
	uv_timer_t timer;          /* c-ares timeouts */
	uv_timer_t kick;           /* hands finished queries to their callbacks */
	struct resolver_poll *polls;
	struct nh_query *pending;  /* lookups in flight */
	struct nh_query *done, *done_tail;
	int closing;
	unsigned open_handles;     /* r is freed when the last one has closed */
};

static void query_unref(struct nh_query *);
static void resolver_arm_timer(struct smtp_resolver *);

/* ---- helpers for the result ------------------------------------------------ */

static void
set_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* set_errf - format into err if there is one */
static void
set_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void
dest_errf(char *err, size_t errlen, const char *dest, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* dest_errf - "\"DEST\": message", a long DEST cut to its first 64 bytes */
static void
dest_errf(char *err, size_t errlen, const char *dest, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	set_errf(err, errlen, "\"%.64s%s\": %s", dest,
	    strlen(dest) > 64 ? "..." : "", msg);
}

static void
res_fail(struct smtp_nexthop *res, enum smtp_nexthop_status st,
    const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* res_fail - decide a failed outcome with its dsn and reason */
static void
res_fail(struct smtp_nexthop *res, enum smtp_nexthop_status st,
    const char *dsn, const char *fmt, ...)
{
	va_list ap;

	res->status = st;
	snprintf(res->dsn, sizeof(res->dsn), "%s", dsn);
	va_start(ap, fmt);
	vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
	va_end(ap);
}

/* set_sockaddr - fill ss with an IPv4 or IPv6 address and port */
static void
set_sockaddr(struct sockaddr_storage *ss, int family, const void *addr,
    uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, sizeof(sin->sin_addr));
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, sizeof(sin6->sin6_addr));
	}
}

/* lower - ASCII lower-case s in place */
static void
lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* ---- status codes --------------------------------------------------------- */

enum smtp_nexthop_status
smtp__dns_classify(int st)
{
	switch (st) {
	case ARES_SUCCESS:
		return SMTP_NEXTHOP_OK;
	case ARES_ENOTFOUND:
	case ARES_ENODATA:
		return SMTP_NEXTHOP_PERMFAIL;
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return SMTP_NEXTHOP_CANCELLED;
	default:
		/* SERVFAIL, REFUSED, timeouts, bad responses, no memory */
		return SMTP_NEXTHOP_TEMPFAIL;
	}
}

const char *
smtp__dns_strerror(int st)
{
	switch (st) {
	case ARES_SUCCESS:
		return "Success";
	case ARES_ENOTFOUND:
		return "Host not found";
	case ARES_ENODATA:
		return "Host found but no data record of requested type";
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return "Lookup cancelled";
	case ARES_ESERVFAIL:
		return "Host not found, try again (server failure)";
	case ARES_EREFUSED:
		return "Host not found, try again (query refused)";
	case ARES_ETIMEOUT:
		return "Host not found, try again (timeout)";
	case ARES_ECONNREFUSED:
		/* also what c-ares says when every server failed */
		return "Host not found, try again (no usable name server)";
	default:
		return "Host not found, try again";
	}
}

const char *
smtp_nexthop_strstatus(enum smtp_nexthop_status st)
{
	switch (st) {
	case SMTP_NEXTHOP_OK:
		return "ok";
	case SMTP_NEXTHOP_TEMPFAIL:
		return "temporary";
	case SMTP_NEXTHOP_PERMFAIL:
		return "permanent";
	case SMTP_NEXTHOP_NULLMX:
		return "nullmx";
	case SMTP_NEXTHOP_CANCELLED:
		return "cancelled";
	}
	return "unknown";
}

/* ---- MX ordering (RFC 5321 5.1) --------------------------------------------- */

/* default_rand - uniform in [0, n) from the system's CSPRNG */
static unsigned
default_rand(void *arg, unsigned n)
{
	(void)arg;
	return arc4random_uniform(n);
}

size_t
smtp__dns_mx_order(struct smtp__dns_mx *mx, size_t n, smtp__dns_rand_fn rnd,
    void *arg)
{
	struct smtp__dns_mx tmp;
	size_t i, j, k, out;

	if (rnd == NULL)
		rnd = default_rand;
	/* a stable insertion sort: answers are short */
	for (i = 1; i < n; i++) {
		tmp = mx[i];
		for (j = i; j > 0 && mx[j - 1].pref > tmp.pref; j--)
			mx[j] = mx[j - 1];
		mx[j] = tmp;
	}
	/* the same host twice: keep its best preference only */
	out = 0;
	for (i = 0; i < n; i++) {
		for (k = 0; k < out; k++)
			if (strcasecmp(mx[k].host, mx[i].host) == 0)
				break;
		if (k < out)
			continue;
		if (out != i)
			mx[out] = mx[i];
		out++;
	}
	/* Fisher-Yates within each run of equal preference */
	for (i = 0; i < out; i = j) {
		for (j = i + 1; j < out && mx[j].pref == mx[i].pref; j++)
			;
		for (k = j - 1; k > i; k--) {
			size_t r = i + rnd(arg, (unsigned)(k - i + 1));

			if (r != k) {
				tmp = mx[k];
				mx[k] = mx[r];
				mx[r] = tmp;
			}
		}
	}
	return out;
}

/* is_root - an MX exchange that names the root ("" from c-ares, or ".") */
static int
is_root(const char *host)
{
	return host[0] == '\0' || strcmp(host, ".") == 0;
}

int
smtp__dns_is_nullmx(const struct smtp__dns_mx *mx, size_t n)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (!is_root(mx[i].host))
			return 0;
	return 1;
}

/* ---- destination syntax ------------------------------------------------------ */

/* parse_port - strict decimal 1..65535; -1 if bad */
static int
parse_port(const char *s)
{
	long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	return v == 0 ? -1 : (int)v;
}

/*
 * check_hostname - letters, digits, '-' and '_' in dot-separated labels of
 * 1 to 63 octets, 253 in all (RFC 1035 2.3.4; '_' because real MX names
 * carry it).  NULL if fine, else what is wrong.
 */
static const char *
check_hostname(const char *h)
{
	size_t len = strlen(h), label = 0;
	const char *p;

	if (len == 0)
		return "empty host name";
	if (len > 253)
		return "host name longer than 253 characters";
	for (p = h; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0)
				return "empty label in host name";
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
			return "bad character in host name";
		if (++label > 63)
			return "label longer than 63 characters in host name";
	}
	if (label == 0)
		return "empty label in host name";
	return NULL;
}

/* is_ip - 1 if s is an IPv4 or IPv6 address text */
static int
is_ip(const char *s)
{
	struct in6_addr a;

	return inet_pton(AF_INET, s, &a) == 1 || inet_pton(AF_INET6, s, &a) == 1;
}

int
smtp_nexthop_parse(const char *dest, uint16_t port,
    struct smtp_nexthop_dest *out, char *err, size_t errlen)
{
	char host[SMTP_NEXTHOP_NAMELEN];
	const char *portstr = NULL, *why, *colon;
	size_t hlen;
	int p;

	memset(out, 0, sizeof(*out));
	if (dest == NULL || *dest == '\0') {
		set_errf(err, errlen, "empty destination");
		return -EINVAL;
	}
	if (strlen(dest) >= SMTP_NEXTHOP_NAMELEN + 8) {
		dest_errf(err, errlen, dest, "destination too long");
		return -EINVAL;
	}
	if (dest[0] == '[') {
		const char *close = strchr(dest, ']');

		if (close == NULL) {
			dest_errf(err, errlen, dest, "missing ']'");
			return -EINVAL;
		}
		if (close[1] == ':')
			portstr = close + 2;
		else if (close[1] != '\0') {
			dest_errf(err, errlen, dest, "unexpected text after ']' "
			    "(want [host] or [host]:port)");
			return -EINVAL;
		}
		hlen = (size_t)(close - dest - 1);
		if (hlen == 0) {
			dest_errf(err, errlen, dest, "empty host in brackets");
			return -EINVAL;
		}
		if (hlen >= sizeof(host)) {
			dest_errf(err, errlen, dest, "host name too long");
			return -EINVAL;
		}
		memcpy(host, dest + 1, hlen);
		host[hlen] = '\0';
		/* RFC 5321 4.1.3: the IPv6 address literal tag */
		if (strncasecmp(host, "IPv6:", 5) == 0) {
			struct in6_addr a6;

			memmove(host, host + 5, strlen(host + 5) + 1);
			if (inet_pton(AF_INET6, host, &a6) != 1) {
				dest_errf(err, errlen, dest, "not an IPv6 address "
				    "after \"IPv6:\"");
				return -EINVAL;
			}
		}
		out->mx = 0;
	} else {
		colon = strchr(dest, ':');
		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			dest_errf(err, errlen, dest, "an IPv6 address must be "
			    "in brackets, as [%s]", dest);
			return -EINVAL;
		}
		hlen = colon != NULL ? (size_t)(colon - dest) : strlen(dest);
		if (hlen >= sizeof(host)) {
			dest_errf(err, errlen, dest, "host name too long");
			return -EINVAL;
		}
		memcpy(host, dest, hlen);
		host[hlen] = '\0';
		if (colon != NULL)
			portstr = colon + 1;
		out->mx = 1;
	}
	if (portstr != NULL) {
		if ((p = parse_port(portstr)) < 0) {
			dest_errf(err, errlen, dest, "bad port \"%s\" "
			    "(a number from 1 to 65535)", portstr);
			return -EINVAL;
		}
		out->port = (uint16_t)p;
	} else
		out->port = port;
	if (out->port == 0) {
		dest_errf(err, errlen, dest, "no port");
		return -EINVAL;
	}
	if (is_ip(host)) {
		/* an address has no MX records, bracketed or not */
		out->literal = 1;
		out->mx = 0;
	} else {
		hlen = strlen(host);
		if (hlen > 1 && host[hlen - 1] == '.')
			host[hlen - 1] = '\0';     /* absolute name */
		if ((why = check_hostname(host)) != NULL) {
			dest_errf(err, errlen, dest, "%s", why);
			return -EINVAL;
		}
	}
	lower(host);
	memcpy(out->host, host, strlen(host) + 1);
	return 0;
}

/* ---- the loop side: sockets and timers ------------------------------------ */

/* resolver_handle_closed - the last closed handle frees the resolver */
static void
resolver_handle_closed(uv_handle_t *h)
{
	struct smtp_resolver *r = h->data;

	if (h->type == UV_POLL)
		free(((char *)h) - offsetof(struct resolver_poll, handle));
	if (--r->open_handles == 0)
		free(r);
}

/* poll_cb - a c-ares socket is ready (or failed: c-ares finds out how) */
static void
poll_cb(uv_poll_t *h, int status, int events)
{
	struct resolver_poll *p = (struct resolver_poll *)h;
	struct smtp_resolver *r = p->r;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	if (status < 0) {
		rfd = p->fd;
		wfd = p->fd;
	} else {
		if (events & UV_READABLE)
			rfd = p->fd;
		if (events & UV_WRITABLE)
			wfd = p->fd;
	}
	ares_process_fd(r->channel, rfd, wfd);
	resolver_arm_timer(r);
}

/* sock_state_cb - c-ares wants fd watched for these events, or forgotten */
static void
sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct smtp_resolver *r = data;
	struct resolver_poll *p, **pp;
	int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);

	for (pp = &r->polls; (p = *pp) != NULL; pp = &p->next)
		if (p->fd == fd)
			break;
	if (events == 0) {
		if (p != NULL) {
			*pp = p->next;
			uv_poll_stop(&p->handle);
			uv_close((uv_handle_t *)&p->handle, resolver_handle_closed);
		}
		return;
	}
	if (p == NULL) {
		if ((p = calloc(1, sizeof(*p))) == NULL)
			return;     /* the query times out */
		if (uv_poll_init_socket(r->loop, &p->handle, fd) != 0) {
			free(p);
			return;
		}
		p->fd = fd;
		p->r = r;
		p->handle.data = r;
		p->next = r->polls;
		r->polls = p;
		r->open_handles++;
	}
	uv_poll_start(&p->handle, events, poll_cb);
}

/* timer_cb - let c-ares retransmit and time out */
static void
timer_cb(uv_timer_t *t)
{
	struct smtp_resolver *r = t->data;

	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolver_arm_timer(r);
}

/* resolver_arm_timer - wake up when c-ares's next deadline passes */
static void
resolver_arm_timer(struct smtp_resolver *r)
{
	struct timeval tv, *tvp;
	uint64_t ms;

	if (r->closing)
		return;
	tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp == NULL) {
		uv_timer_stop(&r->timer);
		return;
	}
	ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	uv_timer_start(&r->timer, timer_cb, ms, 0);
}

/* kick_cb - run the callbacks of finished queries, oldest first */
static void
kick_cb(uv_timer_t *t)
{
	struct smtp_resolver *r = t->data;
	struct nh_query *q;

	/* a callback may free the resolver: it then delivers the rest itself */
	while (!r->closing && (q = r->done) != NULL) {
		r->done = q->next;
		if (r->done == NULL)
			r->done_tail = NULL;
		q->cb(q->arg, &q->res);
		free(q);
	}
}

/* ---- queries ------------------------------------------------------------------ */

/* query_finish - every lookup is back: the outcome goes on the done list */
static void
query_finish(struct nh_query *q)
{
	struct smtp_resolver *r = q->r;
	struct smtp_nexthop *res = &q->res;
	size_t i, j, keep, n;
	int have_perm = 0, any_addr = 0;

	if (!q->final && q->addr_phase) {
		keep = 0;
		for (i = 0; i < res->nhops; i++) {
			struct smtp_hop *h = &res->hops[i];
			struct hop_work *w = &q->hw[i];
			int st, type_a;

			/* alternate IPv4 and IPv6, IPv4 first */
			n = 0;
			for (j = 0; n < SMTP_NEXTHOP_MAXADDRS &&
			    (j < w->n4 || j < w->n6); j++) {
				if (j < w->n4)
					set_sockaddr(&h->addrs[n++], AF_INET,
					    &w->a4[j], res->dest.port);
				if (j < w->n6 && n < SMTP_NEXTHOP_MAXADDRS)
					set_sockaddr(&h->addrs[n++], AF_INET6,
					    &w->a6[j], res->dest.port);
			}
			h->naddrs = n;
			/* the A lookup names the failure unless it went well */
			type_a = w->st4 != ARES_SUCCESS;
			st = type_a ? w->st4 : w->st6;
			if (n == 0 && (smtp__dns_classify(w->st4) == SMTP_NEXTHOP_TEMPFAIL ||
			    smtp__dns_classify(w->st6) == SMTP_NEXTHOP_TEMPFAIL)) {
				if (smtp__dns_classify(w->st4) != SMTP_NEXTHOP_TEMPFAIL) {
					type_a = 0;
					st = w->st6;
				} else {
					type_a = 1;
					st = w->st4;
				}
				h->flags |= SMTP_HOP_TEMPFAIL;
			}
			if (n == 0)
				snprintf(h->reason, sizeof(h->reason),
				    "Name service error for name=%s type=%s: %s",
				    h->host, type_a ? "A" : "AAAA",
				    smtp__dns_strerror(st));
			if (n == 0 && !(h->flags & SMTP_HOP_TEMPFAIL)) {
				/* RFC 5321 5.1: a host without address is skipped */
				if (!have_perm) {
					have_perm = 1;
					snprintf(res->reason, sizeof(res->reason),
					    "Host or domain name not found. %s",
					    h->reason);
				}
				continue;
			}
			if (n > 0)
				any_addr = 1;
			if (keep != i)
				res->hops[keep] = *h;
			keep++;
		}
		res->nhops = keep;
		if (any_addr) {
			res->status = SMTP_NEXTHOP_OK;
			snprintf(res->dsn, sizeof(res->dsn), "2.0.0");
			res->reason[0] = '\0';
		} else if (keep > 0) {
			res_fail(res, SMTP_NEXTHOP_TEMPFAIL, "4.4.3",
			    "Host or domain name not found. %s", res->hops[0].reason);
		} else {
			/* the reason of the first host is already there */
			res->status = SMTP_NEXTHOP_PERMFAIL;
			snprintf(res->dsn, sizeof(res->dsn), "5.4.4");
		}
		q->final = 1;
	}
	if (!q->final)
		res_fail(res, SMTP_NEXTHOP_TEMPFAIL, "4.4.3",
		    "internal error: lookup ended without an outcome");
	if (r->closing)
		res_fail(res, SMTP_NEXTHOP_CANCELLED, "4.4.3",
		    "DNS lookup cancelled (resolver shut down)");

	/* pending -> done */
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->pending = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	q->prev = NULL;
	q->next = NULL;
	if (r->done_tail != NULL)
		r->done_tail->next = q;
	else
		r->done = q;
	r->done_tail = q;
	if (!r->closing)
		uv_timer_start(&r->kick, kick_cb, 0, 0);
}

/* query_unref - a lookup (or a hold) is over; the last one finishes */
static void
query_unref(struct nh_query *q)
{
	if (--q->refs == 0)
		query_finish(q);
}

static void lookup_cb(void *arg, int status, int timeouts,
    unsigned char *abuf, int alen);

/* query_lookup - send one DNS query of q */
static void
query_lookup(struct nh_query *q, struct nh_lookup *lk, const char *name,
    int type)
{
	q->refs++;
	ares_query(q->r->channel, name, 1 /* C_IN */, type, lookup_cb, lk);
}

/* query_addr_phase - look up A and AAAA of every hop at once */
static void
query_addr_phase(struct nh_query *q)
{
	size_t i;

	q->addr_phase = 1;
	for (i = 0; i < q->res.nhops; i++) {
		struct nh_lookup *lk4 = &q->lk[1 + 2 * i], *lk6 = &q->lk[2 + 2 * i];

		q->hw[i].st4 = q->hw[i].st6 = ARES_ENODATA;
		lk4->q = lk6->q = q;
		lk4->hop = lk6->hop = (int)i;
		lk4->type = LK_A;
		lk6->type = LK_AAAA;
		query_lookup(q, lk4, q->res.hops[i].host, 1 /* T_A */);
		query_lookup(q, lk6, q->res.hops[i].host, 28 /* T_AAAA */);
	}
}

/* mx_done - the MX answer: decide, or go on to the addresses */
static void
mx_done(struct nh_query *q, int status, const unsigned char *abuf, int alen)
{
	struct smtp_nexthop *res = &q->res;
	struct ares_mx_reply *reply = NULL, *m;
	struct smtp__dns_mx *mx = NULL;
	size_t n = 0, i, used;

	if (status == ARES_SUCCESS) {
		status = ares_parse_mx_reply(abuf, alen, &reply);
		if (status == ARES_SUCCESS) {
			for (m = reply; m != NULL; m = m->next)
				n++;
			if ((mx = calloc(n, sizeof(*mx))) == NULL)
				status = ARES_ENOMEM;
		}
		if (status != ARES_SUCCESS && reply != NULL) {
			ares_free_data(reply);
			reply = NULL;
		}
	}
	switch (status) {
	case ARES_SUCCESS:
		break;
	case ARES_ENODATA:
		/* RFC 5321 5.1: no MX record, the domain is its own host */
		snprintf(res->hops[0].host, sizeof(res->hops[0].host), "%s",
		    res->dest.host);
		res->hops[0].pref = 0;
		res->hops[0].flags = SMTP_HOP_IMPLICIT;
		res->nhops = 1;
		query_addr_phase(q);
		return;
	default:
		res_fail(res, smtp__dns_classify(status) == SMTP_NEXTHOP_PERMFAIL ?
		    SMTP_NEXTHOP_PERMFAIL : SMTP_NEXTHOP_TEMPFAIL,
		    smtp__dns_classify(status) == SMTP_NEXTHOP_PERMFAIL ? "5.4.4" : "4.4.3",
		    "Host or domain name not found. Name service error for "
		    "name=%s type=MX: %s", res->dest.host, smtp__dns_strerror(status));
		q->final = 1;
		return;
	}
	for (i = 0, m = reply; m != NULL; m = m->next, i++) {
		snprintf(mx[i].host, sizeof(mx[i].host), "%s", m->host);
		lower(mx[i].host);
		mx[i].pref = m->priority;
	}
	ares_free_data(reply);
	if (smtp__dns_is_nullmx(mx, n)) {
		/* RFC 7505 3: the domain accepts no mail at all */
		res_fail(res, SMTP_NEXTHOP_NULLMX, "5.1.10",
		    "Domain %s does not accept mail (nullMX)", res->dest.host);
		q->final = 1;
		free(mx);
		return;
	}
	/* a root exchange next to real ones is not a host: skip it */
	for (i = 0, used = 0; i < n; i++)
		if (!is_root(mx[i].host))
			mx[used++] = mx[i];
	n = smtp__dns_mx_order(mx, used, NULL, NULL);
	if (n > SMTP_NEXTHOP_MAXHOPS)
		n = SMTP_NEXTHOP_MAXHOPS;
	for (i = 0; i < n; i++) {
		memcpy(res->hops[i].host, mx[i].host, sizeof(res->hops[i].host));
		res->hops[i].pref = mx[i].pref;
	}
	res->nhops = n;
	free(mx);
	query_addr_phase(q);
}

/* addr_done - one A or AAAA answer of one hop */
static void
addr_done(struct nh_query *q, struct nh_lookup *lk, int status,
    const unsigned char *abuf, int alen)
{
	struct hop_work *w = &q->hw[lk->hop];
	int i, n = SMTP_NEXTHOP_MAXADDRS;

	if (lk->type == LK_A) {
		struct ares_addrttl t[SMTP_NEXTHOP_MAXADDRS];

		if (status == ARES_SUCCESS &&
		    (status = ares_parse_a_reply(abuf, alen, NULL, t, &n)) == ARES_SUCCESS) {
			for (i = 0; i < n; i++)
				w->a4[i] = t[i].ipaddr;
			w->n4 = (size_t)n;
			if (n == 0)
				status = ARES_ENODATA;
		}
		w->st4 = status;
	} else {
		struct ares_addr6ttl t[SMTP_NEXTHOP_MAXADDRS];

		if (status == ARES_SUCCESS &&
		    (status = ares_parse_aaaa_reply(abuf, alen, NULL, t, &n)) == ARES_SUCCESS) {
			for (i = 0; i < n; i++)
				memcpy(&w->a6[i], &t[i].ip6addr, sizeof(w->a6[i]));
			w->n6 = (size_t)n;
			if (n == 0)
				status = ARES_ENODATA;
		}
		w->st6 = status;
	}
}

/* lookup_cb - c-ares answered (or gave up on) one lookup */
static void
lookup_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct nh_lookup *lk = arg;
	struct nh_query *q = lk->q;

	(void)timeouts;
	if (q->r->closing || smtp__dns_classify(status) == SMTP_NEXTHOP_CANCELLED)
		q->final = 1;   /* query_finish makes it CANCELLED */
	else if (lk->type == LK_MX)
		mx_done(q, status, abuf, alen);
	else
		addr_done(q, lk, status, abuf, alen);
	query_unref(q);
}

int
smtp_resolve_nexthop(struct smtp_resolver *r, const char *dest, uint16_t port,
    smtp_nexthop_cb cb, void *arg)
{
	struct nh_query *q;
	int rc;

	if (r->closing)
		return -ECANCELED;
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return -ENOMEM;
	if ((rc = smtp_nexthop_parse(dest, port, &q->res.dest, NULL, 0)) < 0) {
		free(q);
		return rc;
	}
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	q->next = r->pending;
	if (r->pending != NULL)
		r->pending->prev = q;
	r->pending = q;
	q->refs = 1;   /* held until every first lookup is sent */
	if (q->res.dest.literal) {
		struct smtp_hop *h = &q->res.hops[0];
		struct in6_addr a;

		snprintf(h->host, sizeof(h->host), "%s", q->res.dest.host);
		if (inet_pton(AF_INET, h->host, &a) == 1)
			set_sockaddr(&h->addrs[0], AF_INET, &a, q->res.dest.port);
		else {
			inet_pton(AF_INET6, h->host, &a);
			set_sockaddr(&h->addrs[0], AF_INET6, &a, q->res.dest.port);
		}
		h->naddrs = 1;
		q->res.nhops = 1;
		q->res.status = SMTP_NEXTHOP_OK;
		snprintf(q->res.dsn, sizeof(q->res.dsn), "2.0.0");
		q->final = 1;
	} else if (q->res.dest.mx) {
		q->lk[0].q = q;
		q->lk[0].type = LK_MX;
		query_lookup(q, &q->lk[0], q->res.dest.host, 15 /* T_MX */);
	} else {
		/* "[host]": that host only, no MX lookup (as Postfix) */
		snprintf(q->res.hops[0].host, sizeof(q->res.hops[0].host), "%s",
		    q->res.dest.host);
		q->res.nhops = 1;
		query_addr_phase(q);
	}
	query_unref(q);
	resolver_arm_timer(r);
	return 0;
}

/* ---- the resolver -------------------------------------------------------------- */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status = ARES_SUCCESS;

/* ares_global_init - c-ares's library init, once per process, never undone */
static void
ares_global_init(void)
{
	ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/*
 * parse_servers - "127.0.0.1:5353,[::1]:53 192.0.2.53" into nodes[0..*n),
 * linked in order.  0, or -EINVAL with the bad item in err.
 */
static int
parse_servers(const char *s, struct ares_addr_port_node *nodes, size_t *n,
    char *err, size_t errlen)
{
	char item[80], addr[64];
	const char *p = s, *end, *close, *portstr;
	size_t len, count = 0;
	int port;

	for (;;) {
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		for (end = p; *end != '\0' && *end != ',' && *end != ' ' &&
		    *end != '\t'; end++)
			;
		len = (size_t)(end - p);
		if (len >= sizeof(item)) {
			set_errf(err, errlen, "\"%.20s...\": too long", p);
			return -EINVAL;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		p = end;
		if (count == MAX_SERVERS) {
			set_errf(err, errlen, "more than %d name servers", MAX_SERVERS);
			return -EINVAL;
		}
		portstr = NULL;
		if (item[0] == '[') {
			if ((close = strchr(item, ']')) == NULL ||
			    (close[1] != '\0' && close[1] != ':')) {
				set_errf(err, errlen, "\"%s\": unbalanced brackets", item);
				return -EINVAL;
			}
			len = (size_t)(close - item - 1);
			if (close[1] == ':')
				portstr = close + 2;
			memcpy(addr, item + 1, len < sizeof(addr) ? len : 0);
			addr[len < sizeof(addr) ? len : 0] = '\0';
		} else {
			const char *colon = strchr(item, ':');

			if (colon != NULL && strchr(colon + 1, ':') == NULL) {
				len = (size_t)(colon - item);
				portstr = colon + 1;
			} else
				len = strlen(item);     /* IPv4, or bare IPv6 */
			memcpy(addr, item, len < sizeof(addr) ? len : 0);
			addr[len < sizeof(addr) ? len : 0] = '\0';
		}
		memset(&nodes[count], 0, sizeof(nodes[count]));
		if (inet_pton(AF_INET, addr, &nodes[count].addr.addr4) == 1)
			nodes[count].family = AF_INET;
		else if (inet_pton(AF_INET6, addr, &nodes[count].addr.addr6) == 1)
			nodes[count].family = AF_INET6;
		else {
			set_errf(err, errlen, "\"%s\": not an IPv4 or IPv6 address "
			    "(name servers are given by address)", item);
			return -EINVAL;
		}
		port = 53;
		if (portstr != NULL && (port = parse_port(portstr)) < 0) {
			set_errf(err, errlen, "\"%s\": bad port \"%s\"", item, portstr);
			return -EINVAL;
		}
		nodes[count].udp_port = port;
		nodes[count].tcp_port = port;
		if (count > 0)
			nodes[count - 1].next = &nodes[count];
		count++;
	}
	*n = count;
	return 0;
}

int
smtp_resolver_new(uv_loop_t *loop, const struct smtp_resolver_opts *opts,
    struct smtp_resolver **out, char *err, size_t errlen)
{
	struct ares_addr_port_node nodes[MAX_SERVERS];
	struct ares_options o;
	struct smtp_resolver *r;
	size_t nservers = 0;
	int rc;

	*out = NULL;
	if (opts != NULL && opts->servers != NULL &&
	    (rc = parse_servers(opts->servers, nodes, &nservers, err, errlen)) < 0)
		return rc;
	pthread_once(&ares_once, ares_global_init);
	if (ares_init_status != ARES_SUCCESS) {
		set_errf(err, errlen, "c-ares: %s", ares_strerror(ares_init_status));
		return -EIO;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL) {
		set_errf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r->loop = loop;
	memset(&o, 0, sizeof(o));
	o.sock_state_cb = sock_state_cb;
	o.sock_state_cb_data = r;
	o.timeout = opts != NULL && opts->timeout_ms > 0 ?
	    (int)opts->timeout_ms : DEF_TIMEOUT_MS;
	o.tries = opts != NULL && opts->tries > 0 ? (int)opts->tries : DEF_TRIES;
	rc = ares_init_options(&r->channel, &o,
	    ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		set_errf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(r);
		return rc == ARES_ENOMEM ? -ENOMEM : -EIO;
	}
	if (nservers > 0 &&
	    (rc = ares_set_servers_ports(r->channel, nodes)) != ARES_SUCCESS) {
		set_errf(err, errlen, "c-ares: setting name servers: %s",
		    ares_strerror(rc));
		ares_destroy(r->channel);
		free(r);
		return rc == ARES_ENOMEM ? -ENOMEM : -EIO;
	}
	r->have_channel = 1;
	uv_timer_init(loop, &r->timer);
	uv_timer_init(loop, &r->kick);
	r->timer.data = r;
	r->kick.data = r;
	r->open_handles = 2;
	*out = r;
	return 0;
}

void
smtp_resolver_free(struct smtp_resolver *r)
{
	struct resolver_poll *p;
	struct nh_query *q;

	if (r == NULL || r->closing)
		return;
	r->closing = 1;
	/* every lookup in flight ends now: its query lands on the done list */
	ares_cancel(r->channel);
	while ((q = r->pending) != NULL) {
		/* cannot happen after ares_cancel; never leave one behind */
		q->refs = 1;
		q->final = 1;
		query_unref(q);
	}
	while ((q = r->done) != NULL) {
		r->done = q->next;
		if (r->done == NULL)
			r->done_tail = NULL;
		res_fail(&q->res, SMTP_NEXTHOP_CANCELLED, "4.4.3",
		    "DNS lookup cancelled (resolver shut down)");
		q->cb(q->arg, &q->res);
		free(q);
	}
	ares_destroy(r->channel);   /* closes its sockets through sock_state_cb */
	r->have_channel = 0;
	while ((p = r->polls) != NULL) {
		r->polls = p->next;
		uv_poll_stop(&p->handle);
		uv_close((uv_handle_t *)&p->handle, resolver_handle_closed);
	}
	uv_timer_stop(&r->timer);
	uv_timer_stop(&r->kick);
	uv_close((uv_handle_t *)&r->timer, resolver_handle_closed);
	uv_close((uv_handle_t *)&r->kick, resolver_handle_closed);
}
