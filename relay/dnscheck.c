/*
 * dnscheck.c - synchronous DNS lookups for managed keys: `signetctl dkim
 * enable` asks where a customer's selectorN._domainkey CNAMEs point, and
 * the rotation thread's publication gate asks which TXT record a verifier
 * would find at a name.
 *
 * Each call makes its own c-ares channel (so calls from several threads
 * never share state), sends one query with recursion desired to the
 * dns_resolvers servers (or those of /etc/resolv.conf), runs the channel
 * with poll(2) until the answer or the deadline, and reads the answer
 * section itself: the CNAME chain from the query name (each owner to its
 * target, up to DNS_CHAIN_MAX hops), then for TXT the first TXT record
 * owned by the end of the chain, its character-strings joined (RFC 6376
 * 3.6.2.2).  Outcomes are folded into three: an answer, "no such record"
 * (NXDOMAIN or NODATA: -ENOENT) and "try later" (SERVFAIL, REFUSED,
 * timeout, unreachable server: -EAGAIN), each with a one-line detail
 * naming what was found and the servers asked.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <ares.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <resolv.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/keys.h"

#define DNS_SERVERS_MAX 8       /* dns_resolvers items used */
#define DNS_CHAIN_MAX 16        /* CNAME hops followed in an answer */
#define DNS_TRIES 2             /* tries per server within the deadline */

/* ares_getsock's bits, without ARES_GETSOCK_WRITABLE's 1 << 31 overflow */
#define DNS_READABLE(bits, i) (((unsigned)(bits) >> (i)) & 1u)
#define DNS_WRITABLE(bits, i) \
	(((unsigned)(bits) >> ((i) + ARES_GETSOCK_MAXNUM)) & 1u)

/* What the query callback hands back to relay_dns_lookup. */
struct dns_query {
	int done;
	int status;                /* ARES_* */
	unsigned char *abuf;       /* copy of the answer; NULL if none */
	int alen;
};

static pthread_once_t dns_once = PTHREAD_ONCE_INIT;
static int dns_init_status = ARES_ENOTINITIALIZED;

/* dns_global_init - ares_library_init, once per process. */
static void
dns_global_init(void)
{
	dns_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

void
relay_dns_answer_clear(struct relay_dns_answer *a)
{
	if (a == NULL)
		return;
	free(a->txt);
	a->txt = NULL;
	a->cname[0] = '\0';
	a->detail[0] = '\0';
	a->status = 0;
}

/* dns_query_cb - keep c-ares' status and a copy of the answer packet. */
static void
dns_query_cb(void *arg, int status, int timeouts, unsigned char *abuf,
    int alen)
{
	struct dns_query *q = arg;

	q->done = 1;
	q->status = status;
	if (abuf != NULL && alen > 0 && (q->abuf = malloc(alen)) != NULL) {
		memcpy(q->abuf, abuf, alen);
		q->alen = alen;
	}
}

/*
 * dns_name_norm - copy a DNS name lower-cased without its trailing dot;
 * 0, or -1 when it does not fit.
 */
static int
dns_name_norm(const char *in, char *out, size_t outlen)
{
	size_t len = strlen(in), i;

	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len + 1 > outlen)
		return -1;
	for (i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[len] = '\0';
	return 0;
}

/*
 * dns_servers - parse the resolver items into nodes (linked) and describe
 * them in where ("127.0.0.1:5399", or "system resolver" for none).  Returns
 * the number of nodes, or -EINVAL naming the bad item in where.
 */
static int
dns_servers(const struct relay_strlist *resolvers,
    struct ares_addr_port_node *nodes, char *where, size_t wherelen)
{
	struct sockaddr_storage ss;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	size_t i, n = 0, off = 0;
	int w;

	snprintf(where, wherelen, "system resolver");
	if (resolvers == NULL)
		return 0;
	for (i = 0; i < resolvers->n && n < DNS_SERVERS_MAX; i++) {
		if (relay_resolver_parse(resolvers->v[i], &ss) != 0) {
			snprintf(where, wherelen, "bad dns_resolvers item \"%s\"",
			    resolvers->v[i]);
			return -EINVAL;
		}
		memset(&nodes[n], 0, sizeof(nodes[n]));
		if (ss.ss_family == AF_INET) {
			nodes[n].family = AF_INET;
			memcpy(&nodes[n].addr.addr4, &sin->sin_addr,
			    sizeof(sin->sin_addr));
			nodes[n].udp_port = ntohs(sin->sin_port);
		} else {
			nodes[n].family = AF_INET6;
			memcpy(&nodes[n].addr.addr6, &sin6->sin6_addr,
			    sizeof(sin6->sin6_addr));
			nodes[n].udp_port = ntohs(sin6->sin6_port);
		}
		nodes[n].tcp_port = nodes[n].udp_port;
		if (n > 0)
			nodes[n - 1].next = &nodes[n];
		/* the first few items name where the answer came from */
		if (off < wherelen && off < 64) {
			w = snprintf(where + off, wherelen - off, "%s%s",
			    n > 0 ? "," : "", resolvers->v[i]);
			off += w > 0 ? (size_t)w : 0;
		}
		n++;
	}
	return (int)n;
}

/*
 * dns_run - drive channel until q is done or deadline (monotonic ms)
 * passes; then cancel what is left, which completes q (ECANCELLED).
 */
static void
dns_run(ares_channel ch, struct dns_query *q, int64_t deadline)
{
	ares_socket_t socks[ARES_GETSOCK_MAXNUM];
	struct pollfd pfd[ARES_GETSOCK_MAXNUM];
	struct timeval maxtv, tv, *tvp;
	int64_t left;
	int bits, i, n, rc, ms;

	while (!q->done) {
		left = deadline - relay_mono_ms();
		if (left <= 0)
			break;
		bits = ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
		for (i = n = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			if (!DNS_READABLE(bits, i) &&
			    !DNS_WRITABLE(bits, i))
				continue;
			pfd[n].fd = socks[i];
			pfd[n].events = (DNS_READABLE(bits, i) ?
			    POLLIN : 0) | (DNS_WRITABLE(bits, i) ?
			    POLLOUT : 0);
			pfd[n].revents = 0;
			n++;
		}
		maxtv.tv_sec = left / 1000;
		maxtv.tv_usec = (left % 1000) * 1000;
		tvp = ares_timeout(ch, &maxtv, &tv);
		ms = (int)(tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000);
		rc = poll(pfd, (nfds_t)n, ms);
		if (rc == -1 && errno == EINTR)
			continue;
		if (rc == -1)
			break;
		if (rc == 0) {
			/* timeouts: c-ares retries or gives up */
			ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
			continue;
		}
		for (i = 0; i < n && !q->done; i++) {
			if (pfd[i].revents == 0)
				continue;
			ares_process_fd(ch, pfd[i].revents &
			    (POLLIN | POLLERR | POLLHUP) ? pfd[i].fd :
			    ARES_SOCKET_BAD, pfd[i].revents & POLLOUT ?
			    pfd[i].fd : ARES_SOCKET_BAD);
		}
	}
	if (!q->done) {
		ares_cancel(ch);
		if (!q->done) {
			q->done = 1;
			q->status = ARES_ETIMEOUT;
		} else if (q->status == ARES_ECANCELLED)
			q->status = ARES_ETIMEOUT;
	}
}

/*
 * dns_txt_join - the character-strings of a TXT RDATA joined into a
 * malloc'd string (NULL on OOM).  A string running past the RDATA ends
 * the record.
 */
static char *
dns_txt_join(const unsigned char *rd, size_t rdlen)
{
	size_t off, len = 0;
	char *out;

	if ((out = malloc(rdlen + 1)) == NULL)
		return NULL;
	for (off = 0; off < rdlen; off += rd[off] + 1u) {
		if (off + 1 + rd[off] > rdlen)
			break;
		memcpy(out + len, rd + off + 1, rd[off]);
		len += rd[off];
	}
	out[len] = '\0';
	return out;
}

/*
 * dns_parse - read the answer section of abuf: follow CNAMEs from qname
 * (filling ans->cname with the last target), and for TXT take the first
 * TXT record at the end of the chain into ans->txt.  Returns 1 when the
 * wanted type was found, 0 when not, -1 for a malformed packet, -ENOMEM.
 */
static int
dns_parse(const unsigned char *abuf, int alen, const char *qname, int type,
    struct relay_dns_answer *ans)
{
	char cur[NS_MAXDNAME], owner[NS_MAXDNAME], target[NS_MAXDNAME];
	ns_msg msg;
	ns_rr rr;
	int i, count, hops, moved, found = 0;

	if (ns_initparse(abuf, alen, &msg) < 0)
		return -1;
	count = ns_msg_count(msg, ns_s_an);
	if (dns_name_norm(qname, cur, sizeof(cur)) != 0)
		return -1;
	/* The chain: each pass moves cur along one CNAME. */
	for (hops = 0; hops < DNS_CHAIN_MAX; hops++) {
		moved = 0;
		for (i = 0; i < count; i++) {
			if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
				return -1;
			if (ns_rr_type(rr) != ns_t_cname ||
			    ns_rr_class(rr) != ns_c_in)
				continue;
			if (dns_name_norm(ns_rr_name(rr), owner,
			    sizeof(owner)) != 0 || strcmp(owner, cur) != 0)
				continue;
			if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg),
			    ns_rr_rdata(rr), target, sizeof(target)) < 0)
				return -1;
			if (dns_name_norm(target, cur, sizeof(cur)) != 0 ||
			    strlen(cur) >= sizeof(ans->cname))
				return -1;
			memcpy(ans->cname, cur, strlen(cur) + 1);
			moved = 1;
			break;
		}
		if (!moved)
			break;
	}
	if (type == ns_t_cname)
		return ans->cname[0] != '\0';
	for (i = 0; i < count && !found; i++) {
		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
			return -1;
		if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in)
			continue;
		if (dns_name_norm(ns_rr_name(rr), owner, sizeof(owner)) != 0 ||
		    strcmp(owner, cur) != 0)
			continue;
		if ((ans->txt = dns_txt_join(ns_rr_rdata(rr),
		    ns_rr_rdlen(rr))) == NULL)
			return -ENOMEM;
		found = 1;
	}
	return found;
}

/* dns_fail - set status and a detail line; returns status. */
static int __attribute__((format(printf, 3, 4)))
dns_fail(struct relay_dns_answer *ans, int status, const char *fmt, ...)
{
	va_list ap;

	ans->status = status;
	va_start(ap, fmt);
	vsnprintf(ans->detail, sizeof(ans->detail), fmt, ap);
	va_end(ap);
	return status;
}

int
relay_dns_lookup(const struct relay_strlist *resolvers, const char *name,
    const char *type, unsigned timeout_ms, struct relay_dns_answer *ans)
{
	struct ares_addr_port_node nodes[DNS_SERVERS_MAX];
	struct ares_options o;
	struct dns_query q;
	ares_channel ch;
	char where[96], qname[NS_MAXDNAME];
	const char *tname;
	int qtype, nservers, rc, r;

	memset(ans, 0, sizeof(*ans));
	memset(&q, 0, sizeof(q));
	if (strcasecmp(type, "TXT") == 0) {
		qtype = ns_t_txt;
		tname = "TXT";
	} else if (strcasecmp(type, "CNAME") == 0) {
		qtype = ns_t_cname;
		tname = "CNAME";
	} else
		return dns_fail(ans, -EINVAL, "query type %s not supported",
		    type);
	if (dns_name_norm(name, qname, sizeof(qname)) != 0 ||
	    qname[0] == '\0')
		return dns_fail(ans, -EINVAL, "bad query name");
	if ((nservers = dns_servers(resolvers, nodes, where,
	    sizeof(where))) < 0)
		return dns_fail(ans, -EINVAL, "%s", where);
	if (timeout_ms == 0)
		timeout_ms = 5000;
	pthread_once(&dns_once, dns_global_init);
	if (dns_init_status != ARES_SUCCESS)
		return dns_fail(ans, -EAGAIN, "c-ares: %s",
		    ares_strerror(dns_init_status));

	memset(&o, 0, sizeof(o));
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	/*
	 * c-ares drops a SERVFAIL or REFUSED answer to try the next server,
	 * and in the end reports them as "connection refused".  With one
	 * server there is nothing to fail over to: take the answer as it is,
	 * so that the detail names what the server said.
	 */
	if (nservers == 1)
		o.flags |= ARES_FLAG_NOCHECKRESP;
	o.timeout = (int)(timeout_ms / (DNS_TRIES *
	    (unsigned)(nservers > 0 ? nservers : 1)));
	if (o.timeout < 100)
		o.timeout = 100;
	o.tries = DNS_TRIES;
	rc = ares_init_options(&ch, &o, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS |
	    ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS)
		return dns_fail(ans, rc == ARES_ENOMEM ? -ENOMEM : -EAGAIN,
		    "c-ares: %s", ares_strerror(rc));
	if (nservers > 0 &&
	    (rc = ares_set_servers_ports(ch, nodes)) != ARES_SUCCESS) {
		ares_destroy(ch);
		return dns_fail(ans, -EAGAIN, "c-ares: setting name servers: "
		    "%s", ares_strerror(rc));
	}
	ares_query(ch, qname, ns_c_in, qtype, dns_query_cb, &q);
	dns_run(ch, &q, relay_mono_ms() + timeout_ms);
	ares_destroy(ch);

	r = 0;
	if (q.abuf != NULL)
		r = dns_parse(q.abuf, q.alen, qname, qtype, ans);
	free(q.abuf);
	if (r == -ENOMEM) {
		relay_dns_answer_clear(ans);
		return dns_fail(ans, -ENOMEM, "out of memory");
	}
	switch (q.status) {
	case ARES_SUCCESS:
	case ARES_ENODATA:
		if (r < 0)
			return dns_fail(ans, -EAGAIN, "malformed answer (%s)",
			    where);
		if (r == 1 && qtype == ns_t_cname)
			return dns_fail(ans, 0, "CNAME to %s", ans->cname);
		if (r == 1 && ans->cname[0] != '\0')
			return dns_fail(ans, 0, "TXT record via CNAME to %s",
			    ans->cname);
		if (r == 1)
			return dns_fail(ans, 0, "TXT record found");
		if (ans->cname[0] != '\0')
			return dns_fail(ans, -ENOENT, "no %s record (CNAME to "
			    "%s) (%s)", tname, ans->cname, where);
		return dns_fail(ans, -ENOENT, "no %s record (%s)", tname,
		    where);
	case ARES_ENOTFOUND:
		if (ans->cname[0] != '\0')
			return dns_fail(ans, -ENOENT, "NXDOMAIN (CNAME to %s) "
			    "(%s)", ans->cname, where);
		return dns_fail(ans, -ENOENT, "NXDOMAIN (%s)", where);
	case ARES_ESERVFAIL:
		return dns_fail(ans, -EAGAIN, "SERVFAIL (%s)", where);
	case ARES_EREFUSED:
		return dns_fail(ans, -EAGAIN, "REFUSED (%s)", where);
	case ARES_ETIMEOUT:
		return dns_fail(ans, -EAGAIN, "timeout after %u ms (%s)",
		    timeout_ms, where);
	case ARES_ECONNREFUSED:
		return dns_fail(ans, -EAGAIN, "%s (%s)", nservers == 1 ?
		    "connection refused" : "no server answered (connection "
		    "refused, SERVFAIL or REFUSED)", where);
	default:
		return dns_fail(ans, -EAGAIN, "%s (%s)",
		    ares_strerror(q.status), where);
	}
}
