/*
 * deliver.c - the delivery agent: what the queue manager's deliver and
 * bounce callbacks do in the daemon.
 *
 * A job is one message and one destination domain (or the relayhost).  The
 * agent reads the queue file, resolves the next hop (smtp/dns.c: MX in
 * preference order, or relayhost), and tries the hosts' addresses in turn
 * with one SMTP transaction each (smtp/client.c) until a server gives the
 * recipients a verdict.  As Postfix does, it moves on to the next address
 * when the connection fails or the server answers the greeting, EHLO or
 * MAIL with a temporary error; a permanent reply or any per-recipient reply
 * ends the job.  Every recipient gets one log line in Postfix's form and a
 * result for queue_job_done.  Everything runs on the daemon's main loop.
 *
 * Connections are cached (smtp_connection_cache_time_limit, as Postfix's
 * connection cache on demand): after a transaction the client keeps the
 * session open in the agent's cache, keyed by the job's destination (its
 * domain, or the relayhost) and the server's address, and the next job for
 * that destination and address sends MAIL on it at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "queue/queue.h"
#include "relay/relay.h"
#include "smtp/smtp.h"

struct relay_agent {
	uv_loop_t *loop;
	const struct relay_config *cfg;
	struct smtp_resolver *res;
	SSL_CTX *tls;
	struct queue_spool *spool;         /* where bounces are queued */
	struct smtp_client_cache *cache;   /* idle outbound connections */
};

struct relay_job {
	struct relay_agent *ag;
	struct queue_sched *qs;
	const struct queue_job *job;
	struct queue_file qf;
	int qf_ok;
	struct queue_rcpt *rcpt;           /* the job's recipients */
	struct smtp_nexthop hop;           /* copied from the resolver */
	size_t hi, ai;                     /* next host, next address */
	struct queue_result *res;
	char **reason;                     /* per recipient, malloc'd */
	struct smtp_delivery d;            /* the client keeps &d until its callback */
	char relay[SMTP_NEXTHOP_NAMELEN + 64];
	char dest[SMTP_NEXTHOP_NAMELEN + 8]; /* the next hop asked for: cache key */
	char tls[32];
	char last[1200];                   /* why the last address did not work */
	uint64_t t0;
};

/* addr_str - "host[addr]:port" for the logs. */
static void
addr_str(const char *host, const struct sockaddr *sa, char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;

		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		port = ntohs(s6->sin6_port);
	}
	snprintf(out, outlen, "%s[%s]:%u", host, a, port);
}

/* reply_str - "250 2.0.0 text" or the client's own reason. */
static void
reply_str(const struct smtp_reply *r, char *out, size_t outlen)
{
	/* the server's text already starts with its enhanced code */
	if (r->code != 0)
		snprintf(out, outlen, "%d %s", r->code, r->text);
	else
		snprintf(out, outlen, "%s%s%s", r->status, r->status[0] ? " " : "",
		    r->text);
}

/* job_finish - log every recipient, report to the queue manager, free. */
static void
job_finish(struct relay_job *j)
{
	const struct queue_job *job = j->job;
	double delay = (double)(uv_hrtime() - j->t0) / 1e9;
	size_t i;

	for (i = 0; i < job->nrcpt; i++) {
		static const char *const names[] = { "sent", "deferred", "bounced" };

		relay_log(LOG_INFO, "%s: to=<%s>, relay=%s, delay=%.2f%s%s, status=%s (%s)",
		    job->id, j->rcpt[i].addr, j->relay[0] ? j->relay : "none", delay,
		    j->tls[0] ? ", tls=" : "", j->tls, names[j->res[i].outcome],
		    j->reason[i] != NULL ? j->reason[i] : "");
		j->res[i].reason = j->reason[i];
	}
	queue_job_done(j->qs, job, j->res);
	for (i = 0; i < job->nrcpt; i++)
		free(j->reason[i]);
	free(j->reason);
	free(j->res);
	free(j->rcpt);
	if (j->qf_ok)
		queue_file_free(&j->qf);
	free(j);
}

/* job_all - the same outcome and reason for every recipient. */
static void
job_all(struct relay_job *j, enum queue_outcome out, const char *reason)
{
	size_t i;

	for (i = 0; i < j->job->nrcpt; i++) {
		j->res[i].outcome = out;
		free(j->reason[i]);
		j->reason[i] = relay_xstrdup(reason);
	}
	job_finish(j);
}

static void job_try_next(struct relay_job *j);

/* on_delivered - one transaction ended. */
static void
on_delivered(void *arg, const struct smtp_result *r)
{
	struct relay_job *j = arg;
	char why[600];
	size_t i;
	int next;

	if (r->reused) {
		relay_metrics_connection_cache_hit();
		relay_log(LOG_DEBUG, "%s: reused connection to %s", j->job->id,
		    j->relay);
	}
	/*
	 * Another address is worth a try when the session never reached the
	 * recipients: no connection, or a temporary failure up to MAIL.
	 */
	next = !r->connected || (r->reply.code / 100 != 5 && r->nbounced == 0 &&
	    r->nsent == 0 && (strcmp(r->stage, "connect") == 0 ||
	    strcmp(r->stage, "greeting") == 0 || strcmp(r->stage, "EHLO") == 0 ||
	    strcmp(r->stage, "HELO") == 0 || strcmp(r->stage, "STARTTLS") == 0 ||
	    strcmp(r->stage, "MAIL") == 0));
	if (next) {
		reply_str(&r->reply, why, sizeof(why));
		snprintf(j->last, sizeof(j->last), "%s: %s", j->relay,
		    why[0] != '\0' ? why : uv_strerror(r->error));
		job_try_next(j);
		return;
	}
	snprintf(j->tls, sizeof(j->tls), "%s", r->tls_version);
	for (i = 0; i < r->nrcpt && i < j->job->nrcpt; i++) {
		const struct smtp_rcpt_result *rr = &r->rcpt[i];

		j->res[i].outcome = rr->verdict == SMTP_VERDICT_SENT ? QUEUE_OUT_SENT :
		    rr->verdict == SMTP_VERDICT_BOUNCED ? QUEUE_OUT_BOUNCED :
		    QUEUE_OUT_DEFERRED;
		reply_str(&rr->reply, why, sizeof(why));
		free(j->reason[i]);
		j->reason[i] = relay_xstrdup(why);
	}
	job_finish(j);
}

/* job_try_next - the next address of the next host, or defer everyone. */
static void
job_try_next(struct relay_job *j)
{
	const struct relay_config *cfg = j->ag->cfg;
	int rc;

	while (j->hi < j->hop.nhops) {
		const struct smtp_hop *h = &j->hop.hops[j->hi];

		if (j->ai >= h->naddrs) {
			if (h->flags & SMTP_HOP_TEMPFAIL)
				snprintf(j->last, sizeof(j->last), "%s", h->reason);
			j->hi++;
			j->ai = 0;
			continue;
		}
		memset(&j->d, 0, sizeof(j->d));
		j->d.addr = (const struct sockaddr *)&h->addrs[j->ai++];
		j->d.host = h->host;
		j->d.helo = cfg->helo_name;
		j->d.tls = cfg->smtp_tls_security_level == RELAY_TLS_NONE ? SMTP_TLS_NONE :
		    cfg->smtp_tls_security_level == RELAY_TLS_ENCRYPT ?
		    SMTP_TLS_ENCRYPT : SMTP_TLS_MAY;
		j->d.tls_ctx = j->ag->tls;
		j->d.path = j->job->path;
		j->d.qf = &j->qf;
		j->d.rcpt = j->rcpt;
		j->d.nrcpt = j->job->nrcpt;
		j->d.timeouts.connect_ms = cfg->smtp_connect_timeout * 1000;
		j->d.timeouts.greeting_ms = cfg->smtp_helo_timeout * 1000;
		j->d.timeouts.dot_ms = cfg->smtp_data_done_timeout * 1000;
		j->d.log = relay_log_hook;
		j->d.cache = j->ag->cache;
		j->d.dest = j->dest;
		addr_str(h->host, j->d.addr, j->relay, sizeof(j->relay));
		if ((rc = smtp_client_deliver(j->ag->loop, &j->d, on_delivered, j)) == 0)
			return;
		snprintf(j->last, sizeof(j->last), "%s: %s", j->relay, uv_strerror(rc));
	}
	job_all(j, QUEUE_OUT_DEFERRED, j->last[0] != '\0' ? j->last :
	    "no address to try");
}

/* on_route - the next hop is resolved. */
static void
on_route(void *arg, const struct smtp_nexthop *nh)
{
	struct relay_job *j = arg;
	char why[600];

	snprintf(why, sizeof(why), "%s%s%s", nh->dsn, nh->dsn[0] ? " " : "", nh->reason);
	switch (nh->status) {
	case SMTP_NEXTHOP_OK:
		j->hop = *nh;
		job_try_next(j);
		return;
	case SMTP_NEXTHOP_PERMFAIL:
	case SMTP_NEXTHOP_NULLMX:
		job_all(j, QUEUE_OUT_BOUNCED, why);
		return;
	default:
		job_all(j, QUEUE_OUT_DEFERRED, why);
		return;
	}
}

/* relay_agent_deliver - the queue manager's deliver callback. */
void
relay_agent_deliver(void *arg, struct queue_sched *qs, const struct queue_job *job)
{
	struct relay_agent *ag = arg;
	struct relay_job *j = relay_xcalloc(1, sizeof(*j));
	const char *dest;
	char why[300];
	size_t i;
	int rc;

	j->ag = ag;
	j->qs = qs;
	j->job = job;
	j->t0 = uv_hrtime();
	j->res = relay_xcalloc(job->nrcpt, sizeof(*j->res));
	j->reason = relay_xcalloc(job->nrcpt, sizeof(*j->reason));
	j->rcpt = relay_xcalloc(job->nrcpt, sizeof(*j->rcpt));
	for (i = 0; i < job->nrcpt; i++)
		j->rcpt[i] = job->env->rcpt[job->rcpt[i]];
	if ((rc = queue_file_read(job->path, &j->qf)) != 0) {
		snprintf(why, sizeof(why), "4.3.0 cannot read the queue file: %s",
		    strerror(-rc));
		job_all(j, QUEUE_OUT_DEFERRED, why);
		return;
	}
	j->qf_ok = 1;
	dest = ag->cfg->relayhost[0] != '\0' ? ag->cfg->relayhost : job->domain;
	snprintf(j->dest, sizeof(j->dest), "%s", dest);
	if ((rc = smtp_resolve_nexthop(ag->res, dest, 25, on_route, j)) != 0) {
		snprintf(why, sizeof(why), "4.3.0 cannot resolve %s: %s", dest,
		    strerror(-rc));
		job_all(j, QUEUE_OUT_DEFERRED, why);
	}
}

static void
bounce_committed(void *arg, int status, const char *id)
{
	char *orig = arg;

	if (status == 0)
		relay_log(LOG_INFO, "%s: sender non-delivery notification: %s", orig, id);
	else
		relay_log(LOG_ERR, "%s: cannot queue the non-delivery notification: %s",
		    orig, strerror(-status));
	free(orig);
}

/* relay_agent_bounce - the queue manager's bounce callback. */
void
relay_agent_bounce(void *arg, const char *id, const char *path,
    const struct queue_envelope *env, const struct queue_failed *failed,
    size_t nfailed)
{
	struct relay_agent *ag = arg;
	struct relay_bounce_in in;
	char *orig = relay_xstrdup(id);
	int rc;

	memset(&in, 0, sizeof(in));
	in.myhostname = ag->cfg->myhostname;
	in.id = id;
	in.path = path;
	in.env = env;
	in.failed = failed;
	in.nfailed = nfailed;
	in.now = time(NULL);
	if ((rc = relay_bounce_queue(ag->spool, ag->cfg, &in, bounce_committed, orig)) != 0) {
		relay_log(LOG_ERR, "%s: cannot queue the non-delivery notification: %s",
		    id, strerror(-rc));
		free(orig);
	}
}

/* agent_conn_event - the cache's connection events, for /metrics. */
static void
agent_conn_event(void *arg, enum smtp_conn_event ev)
{
	(void)arg;
	relay_metrics_outbound_connections(ev == SMTP_CONN_OPEN ? 1 : -1);
}

struct relay_agent *
relay_agent_new(uv_loop_t *loop, const struct relay_config *cfg,
    struct queue_spool *spool)
{
	struct relay_agent *ag = relay_xcalloc(1, sizeof(*ag));
	struct smtp_resolver_opts ro;
	struct smtp_client_cache_opts co;
	char servers[1024] = "", err[256];
	size_t i, n = 0;

	ag->loop = loop;
	ag->cfg = cfg;
	ag->spool = spool;
	for (i = 0; i < cfg->dns_resolvers.n && n < sizeof(servers); i++)
		n += (size_t)snprintf(servers + n, sizeof(servers) - n, "%s%s",
		    i ? "," : "", cfg->dns_resolvers.v[i]);
	memset(&ro, 0, sizeof(ro));
	ro.servers = servers[0] != '\0' ? servers : NULL;
	if (smtp_resolver_new(loop, &ro, &ag->res, err, sizeof(err)) != 0) {
		relay_log(LOG_ERR, "dns_resolvers: %s", err);
		free(ag);
		return NULL;
	}
	if (cfg->smtp_tls_security_level != RELAY_TLS_NONE &&
	    (ag->tls = smtp_tls_client_ctx_new(err, sizeof(err))) == NULL) {
		relay_log(LOG_ERR, "outbound TLS: %s", err);
		smtp_resolver_free(ag->res);
		free(ag);
		return NULL;
	}
	memset(&co, 0, sizeof(co));
	co.idle_ms = cfg->smtp_connection_cache_time_limit * 1000;
	co.max_conns = cfg->smtp_connection_limit;
	co.event = agent_conn_event;
	co.log = relay_log_hook;
	if (smtp_client_cache_new(loop, &co, &ag->cache) != 0) {
		relay_log(LOG_ERR, "outbound connection cache: out of memory");
		if (ag->tls != NULL)
			SSL_CTX_free(ag->tls);
		smtp_resolver_free(ag->res);
		free(ag);
		return NULL;
	}
	return ag;
}

void
relay_agent_set_config(struct relay_agent *ag, const struct relay_config *cfg)
{
	ag->cfg = cfg;
	smtp_client_cache_set_idle(ag->cache,
	    cfg->smtp_connection_cache_time_limit * 1000);
}

void
relay_agent_free(struct relay_agent *ag)
{
	if (ag == NULL)
		return;
	/* idle cached connections close now (no job is running any more) */
	smtp_client_cache_free(ag->cache);
	smtp_resolver_free(ag->res);
	if (ag->tls != NULL)
		SSL_CTX_free(ag->tls);
	free(ag);
}
