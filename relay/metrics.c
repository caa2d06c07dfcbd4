/*
 * metrics.c - Signet's Prometheus metrics: a registry of counters, gauges
 * and histograms that any thread updates with atomic operations, the event
 * hooks smtp/ and queue/ call (neither knows anything of Prometheus), the
 * text exposition format 0.0.4 rendering, and the small HTTP/1.1 server
 * that answers GET /metrics on admin_listen.
 *
 * Updates never take a lock.  Labelled counters (rejections by reason,
 * signatures by algorithm and domain) keep their series in an append-only
 * list: readers walk it without a lock, a new series is added under a
 * mutex and published with a release store.  The number of series per
 * metric is capped (METRICS_SERIES_MAX); past it, events count under the
 * label value "other", so a flood of new domains can't grow memory without
 * bound.  Histograms keep one counter per bucket and render cumulatively,
 * so _count always equals the +Inf bucket.
 *
 * The HTTP server reads one request (at most ADMIN_REQ_MAX bytes, within
 * ADMIN_TIMEOUT_MS), answers it with Connection: close and closes.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "relay/relay.h"

#define METRICS_SERIES_MAX 1000     /* label sets per labelled metric */
#define METRICS_BUCKETS_MAX 16
#define METRICS_LABELS_MAX 2

/* ---- the registry -------------------------------------------------------- */

struct metrics_series {
	struct metrics_series *next;
	char *values[METRICS_LABELS_MAX];
	_Atomic uint64_t count;
};

/* A counter with labels. */
struct metrics_vec {
	const char *name, *help;
	const char *labels[METRICS_LABELS_MAX];
	int nlabels;
	struct metrics_series *_Atomic head;
	unsigned nseries;           /* under lock */
	pthread_mutex_t lock;
};

struct metrics_hist {
	const char *name, *help;
	const double *bounds;
	size_t nbounds;
	/* counts[nbounds]: above every bound (the +Inf bucket's own share) */
	_Atomic uint64_t counts[METRICS_BUCKETS_MAX + 1];
	_Atomic uint64_t sum_bits;  /* a double */
};

static const double metrics_sign_bounds[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
	5,
};
static const double metrics_accept_bounds[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
	5, 10,
};
static const double metrics_fsync_bounds[] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
	0.25, 0.5, 1,
};
static const double metrics_batch_bounds[] = {
	1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
};

#define NB(a) (sizeof(a) / sizeof((a)[0]))

static _Atomic int64_t m_conn_current, m_queue_messages;
static _Atomic uint64_t m_conn_total, m_accepted, m_bytes_in, m_write_errors;
static _Atomic uint64_t m_start_time_ms;

static struct metrics_vec m_rejected = {
	"signet_messages_rejected_total",
	"Messages and recipients refused, by reason.",
	{ "reason" }, 1, NULL, 0, PTHREAD_MUTEX_INITIALIZER,
};
static struct metrics_vec m_signatures = {
	"signet_signatures_total",
	"DKIM signatures made, by algorithm and signing domain.",
	{ "algorithm", "domain" }, 2, NULL, 0, PTHREAD_MUTEX_INITIALIZER,
};
static struct metrics_hist m_sign_seconds = {
	"signet_signing_seconds",
	"Seconds from the end of DATA until the message's signatures were "
	"made.",
	metrics_sign_bounds, NB(metrics_sign_bounds), { 0 }, 0,
};
static struct metrics_hist m_accept_seconds = {
	"signet_accept_seconds",
	"Seconds from the end of DATA until the 250 reply (signing and spool "
	"commit included).",
	metrics_accept_bounds, NB(metrics_accept_bounds), { 0 }, 0,
};
static struct metrics_hist m_fsync_seconds = {
	"signet_spool_fsync_seconds",
	"Seconds one spool group commit took (fsyncs, renames, directory "
	"fsync).",
	metrics_fsync_bounds, NB(metrics_fsync_bounds), { 0 }, 0,
};
static struct metrics_hist m_fsync_batch = {
	"signet_spool_messages_per_fsync",
	"Messages made durable by one spool group commit.",
	metrics_batch_bounds, NB(metrics_batch_bounds), { 0 }, 0,
};

void
relay_metrics_init(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	atomic_store(&m_start_time_ms, (uint64_t)ts.tv_sec * 1000 +
	    (uint64_t)ts.tv_nsec / 1000000);
}

/* metrics_u64 - a non-negative event value as a count (NaN and < 0: 0). */
static uint64_t
metrics_u64(double v)
{
	if (!(v > 0))
		return 0;
	if (v >= 18446744073709551615.0)
		return UINT64_MAX;
	return (uint64_t)(v + 0.5);
}

/* metrics_hist_observe - count v in its bucket and add it to the sum. */
static void
metrics_hist_observe(struct metrics_hist *h, double v)
{
	uint64_t old, new;
	double sum;
	size_t i;

	if (isnan(v))
		return;
	for (i = 0; i < h->nbounds; i++)
		if (v <= h->bounds[i])
			break;
	atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
	old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
	do {
		memcpy(&sum, &old, sizeof(sum));
		sum += v;
		memcpy(&new, &sum, sizeof(new));
	} while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, new,
	    memory_order_relaxed, memory_order_relaxed));
}

/* metrics_series_match - the series has exactly these label values. */
static int
metrics_series_match(const struct metrics_vec *m,
    const struct metrics_series *s, const char *const *values)
{
	int i;

	for (i = 0; i < m->nlabels; i++)
		if (strcmp(s->values[i], values[i]) != 0)
			return 0;
	return 1;
}

/* metrics_vec_find - find a series without a lock; NULL if it isn't there. */
static struct metrics_series *
metrics_vec_find(struct metrics_vec *m, const char *const *values)
{
	struct metrics_series *s;

	s = atomic_load_explicit(&m->head, memory_order_acquire);
	for (; s != NULL; s = s->next)
		if (metrics_series_match(m, s, values))
			return s;
	return NULL;
}

/*
 * metrics_vec_add - add n to the series with these label values, creating
 * it (or using the "other" series once the cap is reached).  On OOM the
 * event is dropped: metrics must never take the relay down.
 */
static void
metrics_vec_add(struct metrics_vec *m, const char *const *values, uint64_t n)
{
	static const char *const other[METRICS_LABELS_MAX] = {
		"other", "other",
	};
	struct metrics_series *s;
	int i;

	if ((s = metrics_vec_find(m, values)) != NULL)
		goto add;
	pthread_mutex_lock(&m->lock);
	if ((s = metrics_vec_find(m, values)) != NULL)
		goto unlock;
	if (m->nseries >= METRICS_SERIES_MAX) {
		values = other;
		if ((s = metrics_vec_find(m, values)) != NULL)
			goto unlock;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL)
		goto unlock;
	for (i = 0; i < m->nlabels; i++)
		if ((s->values[i] = strdup(values[i])) == NULL) {
			while (i-- > 0)
				free(s->values[i]);
			free(s);
			s = NULL;
			goto unlock;
		}
	s->next = atomic_load_explicit(&m->head, memory_order_relaxed);
	atomic_store_explicit(&m->head, s, memory_order_release);
	m->nseries++;
unlock:
	pthread_mutex_unlock(&m->lock);
	if (s == NULL)
		return;
add:
	atomic_fetch_add_explicit(&s->count, n, memory_order_relaxed);
}

void
relay_metrics_smtp_event(void *arg, enum smtp_event ev, double value,
    const char *label)
{
	const char *values[METRICS_LABELS_MAX];
	char alg[64];
	const char *sp;
	size_t len;

	switch (ev) {
	case SMTP_EV_CONN_OPEN:
		atomic_fetch_add(&m_conn_current, 1);
		atomic_fetch_add(&m_conn_total, 1);
		break;
	case SMTP_EV_CONN_CLOSE:
		atomic_fetch_sub(&m_conn_current, 1);
		break;
	case SMTP_EV_ACCEPTED:
		atomic_fetch_add(&m_accepted, 1);
		break;
	case SMTP_EV_REJECTED:
		values[0] = label != NULL && *label != '\0' ? label : "unknown";
		metrics_vec_add(&m_rejected, values, 1);
		break;
	case SMTP_EV_BYTES_IN:
		atomic_fetch_add_explicit(&m_bytes_in, metrics_u64(value),
		    memory_order_relaxed);
		break;
	case SMTP_EV_SIGNED:
		/* label: "ALGORITHM DOMAIN" */
		if (label == NULL || *label == '\0') {
			values[0] = values[1] = "unknown";
		} else if ((sp = strchr(label, ' ')) == NULL) {
			values[0] = "unknown";
			values[1] = label;
		} else {
			len = (size_t)(sp - label);
			if (len >= sizeof(alg))
				len = sizeof(alg) - 1;
			memcpy(alg, label, len);
			alg[len] = '\0';
			values[0] = alg;
			values[1] = sp + 1;
		}
		metrics_vec_add(&m_signatures, values, value > 0 ?
		    metrics_u64(value) : 1);
		break;
	case SMTP_EV_SIGN_SECONDS:
		metrics_hist_observe(&m_sign_seconds, value);
		break;
	case SMTP_EV_DATA_TO_250:
		metrics_hist_observe(&m_accept_seconds, value);
		break;
	}
}

void
relay_metrics_queue_event(void *arg, enum queue_event ev, double value)
{
	switch (ev) {
	case QUEUE_EV_FSYNC_BATCH:
		metrics_hist_observe(&m_fsync_batch, value);
		break;
	case QUEUE_EV_FSYNC_SECONDS:
		metrics_hist_observe(&m_fsync_seconds, value);
		break;
	case QUEUE_EV_COMMITTED:
		atomic_fetch_add(&m_queue_messages,
		    (int64_t)metrics_u64(value));
		break;
	case QUEUE_EV_WRITE_ERROR:
		atomic_fetch_add(&m_write_errors, 1);
		break;
	}
}

void
relay_metrics_queue_add(long delta)
{
	atomic_fetch_add(&m_queue_messages, (int64_t)delta);
}

/* ---- rendering ----------------------------------------------------------- */

struct metrics_buf {
	char *p;
	size_t len, cap;
	int oom;
};

/* mb_printf - append formatted text; on OOM the buffer is marked failed. */
static void __attribute__((format(printf, 2, 3)))
mb_printf(struct metrics_buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t need;
	char *np;
	int n;

	if (b->oom)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->oom = 1;
		return;
	}
	if ((size_t)n < b->cap - b->len) {
		b->len += (size_t)n;
		return;
	}
	need = b->len + (size_t)n + 1;
	if ((np = realloc(b->p, need * 2)) == NULL) {
		b->oom = 1;
		return;
	}
	b->p = np;
	b->cap = need * 2;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* mb_label_value - a label value escaped as format 0.0.4 requires. */
static void
mb_label_value(struct metrics_buf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			mb_printf(b, "\\\\");
		else if (*v == '"')
			mb_printf(b, "\\\"");
		else if (*v == '\n')
			mb_printf(b, "\\n");
		else
			mb_printf(b, "%c", *v);
	}
}

/* mb_double - a float the way Prometheus reads it. */
static void
mb_double(struct metrics_buf *b, double v)
{
	if (isinf(v))
		mb_printf(b, v > 0 ? "+Inf" : "-Inf");
	else if (isnan(v))
		mb_printf(b, "NaN");
	else
		mb_printf(b, "%.15g", v);
}

/* mb_head - the HELP and TYPE lines of a metric family. */
static void
mb_head(struct metrics_buf *b, const char *name, const char *help,
    const char *type)
{
	mb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
mb_u64(struct metrics_buf *b, const char *name, const char *help,
    const char *type, uint64_t v)
{
	mb_head(b, name, help, type);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void
mb_i64(struct metrics_buf *b, const char *name, const char *help,
    const char *type, int64_t v)
{
	mb_head(b, name, help, type);
	mb_printf(b, "%s %lld\n", name, (long long)v);
}

/* metrics_series_cmp - order series by their label values (stable output). */
static int
metrics_series_cmp(const void *a, const void *b)
{
	const struct metrics_series *const *pa = a, *const *pb = b;
	const struct metrics_series *x = *pa, *y = *pb;
	int i, c;

	for (i = 0; i < METRICS_LABELS_MAX; i++) {
		if (x->values[i] == NULL || y->values[i] == NULL)
			break;
		if ((c = strcmp(x->values[i], y->values[i])) != 0)
			return c;
	}
	return 0;
}

static void
mb_vec(struct metrics_buf *b, struct metrics_vec *m)
{
	struct metrics_series *head, *s, **v = NULL;
	size_t n = 0, i;
	int l;

	mb_head(b, m->name, m->help, "counter");
	/*
	 * New series go in front of head, and nodes never change once
	 * published: the list from this head on is fixed while we walk it.
	 */
	head = atomic_load_explicit(&m->head, memory_order_acquire);
	for (s = head; s != NULL; s = s->next)
		n++;
	if (n == 0)
		return;
	if ((v = calloc(n, sizeof(*v))) == NULL) {
		b->oom = 1;
		return;
	}
	for (i = 0, s = head; i < n; i++, s = s->next)
		v[i] = s;
	qsort(v, n, sizeof(*v), metrics_series_cmp);
	for (i = 0; i < n; i++) {
		mb_printf(b, "%s{", m->name);
		for (l = 0; l < m->nlabels; l++) {
			mb_printf(b, "%s%s=\"", l ? "," : "", m->labels[l]);
			mb_label_value(b, v[i]->values[l]);
			mb_printf(b, "\"");
		}
		mb_printf(b, "} %llu\n", (unsigned long long)
		    atomic_load_explicit(&v[i]->count, memory_order_relaxed));
	}
	free(v);
}

static void
mb_hist(struct metrics_buf *b, struct metrics_hist *h)
{
	uint64_t cum = 0, bits;
	double sum;
	size_t i;

	mb_head(b, h->name, h->help, "histogram");
	for (i = 0; i <= h->nbounds; i++) {
		cum += atomic_load_explicit(&h->counts[i],
		    memory_order_relaxed);
		mb_printf(b, "%s_bucket{le=\"", h->name);
		mb_double(b, i < h->nbounds ? h->bounds[i] : INFINITY);
		mb_printf(b, "\"} %llu\n", (unsigned long long)cum);
	}
	bits = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
	memcpy(&sum, &bits, sizeof(sum));
	mb_printf(b, "%s_sum ", h->name);
	mb_double(b, sum);
	mb_printf(b, "\n%s_count %llu\n", h->name, (unsigned long long)cum);
}

char *
relay_metrics_render(size_t *len)
{
	struct metrics_buf b = { 0 };
	uint64_t start = atomic_load(&m_start_time_ms);

	b.cap = 8192;
	if ((b.p = malloc(b.cap)) == NULL)
		return NULL;
	b.p[0] = '\0';
	mb_i64(&b, "signet_connections_current", "SMTP connections open now.",
	    "gauge", atomic_load(&m_conn_current));
	mb_u64(&b, "signet_connections_total", "SMTP connections accepted.",
	    "counter", atomic_load(&m_conn_total));
	mb_u64(&b, "signet_messages_accepted_total",
	    "Messages accepted (answered 250 after the spool commit).",
	    "counter", atomic_load(&m_accepted));
	mb_vec(&b, &m_rejected);
	mb_u64(&b, "signet_bytes_received_total",
	    "Message bytes received over SMTP.", "counter",
	    atomic_load(&m_bytes_in));
	mb_vec(&b, &m_signatures);
	mb_hist(&b, &m_sign_seconds);
	mb_hist(&b, &m_accept_seconds);
	mb_hist(&b, &m_fsync_seconds);
	mb_hist(&b, &m_fsync_batch);
	mb_u64(&b, "signet_spool_write_errors_total",
	    "Spool writes or commits that failed (the client got 452).",
	    "counter", atomic_load(&m_write_errors));
	mb_i64(&b, "signet_queue_messages", "Messages in the spool.", "gauge",
	    atomic_load(&m_queue_messages));
	mb_head(&b, "signet_build_info", "Signet's version; the value is 1.",
	    "gauge");
	mb_printf(&b, "signet_build_info{version=\"");
	mb_label_value(&b, relay_version());
	mb_printf(&b, "\"} 1\n");
	if (start != 0) {
		mb_head(&b, "process_start_time_seconds",
		    "Start time of the process since the Unix epoch in "
		    "seconds.",
		    "gauge");
		mb_printf(&b, "process_start_time_seconds %llu.%03llu\n",
		    (unsigned long long)(start / 1000),
		    (unsigned long long)(start % 1000));
	}
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	if (len != NULL)
		*len = b.len;
	return b.p;
}

/* ---- the admin HTTP server ---------------------------------------------- */

#define ADMIN_REQ_MAX 8192          /* request line and headers */
#define ADMIN_TIMEOUT_MS 10000      /* to send the request, take the answer */
#define ADMIN_LINGER_MS 2000        /* after our FIN, for the client's */
#define ADMIN_CONN_MAX 64
#define ADMIN_BACKLOG 64

struct admin_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wr;
	uv_shutdown_t sd;
	struct relay_admin *a;
	struct admin_conn *next, *prev;
	char *resp;                 /* the response, until written */
	size_t len;                 /* request bytes in buf */
	int open;                   /* handles not yet closed */
	int answered;               /* from now on input is discarded */
	int shut;                   /* our FIN is sent */
	int peer_eof;               /* the client's FIN has arrived */
	int closing;
	char buf[ADMIN_REQ_MAX];
};

struct relay_admin {
	uv_loop_t *loop;
	uv_tcp_t listener;
	struct admin_conn *conns;
	unsigned nconns;
	int listener_open;
	int stopping;
	void (*cb)(void *arg);
	void *arg;
};

/* admin_maybe_done - once stopping and every handle is closed: cb, free. */
static void
admin_maybe_done(struct relay_admin *a)
{
	void (*cb)(void *);
	void *arg;

	if (!a->stopping || a->listener_open || a->conns != NULL)
		return;
	cb = a->cb;
	arg = a->arg;
	free(a);
	if (cb != NULL)
		cb(arg);
}

static void
admin_conn_closed(uv_handle_t *h)
{
	struct admin_conn *c = h->data;
	struct relay_admin *a = c->a;

	if (--c->open > 0)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		a->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	a->nconns--;
	free(c->resp);
	free(c);
	admin_maybe_done(a);
}

/* admin_conn_close - close both handles; the conn is freed when they are. */
static void
admin_conn_close(struct admin_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	uv_close((uv_handle_t *)&c->tcp, admin_conn_closed);
	uv_close((uv_handle_t *)&c->timer, admin_conn_closed);
}

static void
admin_timeout(uv_timer_t *t)
{
	admin_conn_close(t->data);
}

/*
 * admin_shutdown_done - our FIN is out.  Closing now could reset the
 * connection (and destroy the response in the client's buffers) if the
 * client sent more than we read, so wait a little for its FIN, reading and
 * discarding (a lingering close, as nginx does).
 */
static void
admin_shutdown_done(uv_shutdown_t *sd, int status)
{
	struct admin_conn *c = sd->data;

	c->shut = 1;
	if (status != 0 || c->peer_eof)
		admin_conn_close(c);
	else
		uv_timer_start(&c->timer, admin_timeout, ADMIN_LINGER_MS, 0);
}

static void
admin_write_done(uv_write_t *wr, int status)
{
	struct admin_conn *c = wr->data;

	free(c->resp);
	c->resp = NULL;
	if (c->closing)
		return;
	if (status != 0 || uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp,
	    admin_shutdown_done) != 0)
		admin_conn_close(c);
}

/* admin_reply - send one response (body may be NULL) and close after it. */
static void
admin_reply(struct admin_conn *c, int status, const char *reason,
    const char *ctype, const char *extra, const char *body, size_t bodylen,
    int head)
{
	char hdr[512];
	size_t len;
	uv_buf_t ub;
	int n;

	c->answered = 1;
	n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\n"
	    "Content-Type: %s\r\nContent-Length: %zu\r\n%s"
	    "Connection: close\r\n\r\n", status, reason, ctype, bodylen,
	    extra != NULL ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(hdr) ||
	    (c->resp = malloc((size_t)n + bodylen)) == NULL) {
		admin_conn_close(c);
		return;
	}
	memcpy(c->resp, hdr, (size_t)n);
	len = (size_t)n;
	if (!head && body != NULL) {
		memcpy(c->resp + len, body, bodylen);
		len += bodylen;
	}
	ub = uv_buf_init(c->resp, (unsigned)len);
	c->wr.data = c;
	c->sd.data = c;
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &ub, 1,
	    admin_write_done) != 0)
		admin_conn_close(c);
}

/* admin_error - a short text/plain error response. */
static void
admin_error(struct admin_conn *c, int status, const char *reason,
    const char *extra)
{
	char body[128];
	int n;

	n = snprintf(body, sizeof(body), "%d %s\n", status, reason);
	admin_reply(c, status, reason, "text/plain; charset=utf-8", extra, body,
	    (size_t)n, 0);
}

/* admin_target - parse "METHOD /path HTTP/1.x"; the path without query. */
static int
admin_target(char *line, char **method, char **target)
{
	char *version, *q;

	*method = line;
	if ((*target = strchr(line, ' ')) == NULL)
		return -1;
	*(*target)++ = '\0';
	if ((version = strchr(*target, ' ')) == NULL)
		return -1;
	*version++ = '\0';
	if (strncmp(version, "HTTP/1.", 7) != 0 || **target != '/')
		return -1;
	if ((q = strchr(*target, '?')) != NULL)
		*q = '\0';
	return 0;
}

/*
 * admin_request - answer the request in c->buf (complete headers, len
 * bytes).  Only the request line matters: GET or HEAD of /metrics.
 */
static void
admin_request(struct admin_conn *c, size_t len)
{
	char *eol, *method, *target, *body;
	size_t bodylen;
	int head;

	c->buf[len] = '\0';
	if ((eol = strpbrk(c->buf, "\r\n")) != NULL)
		*eol = '\0';
	if (admin_target(c->buf, &method, &target) != 0) {
		admin_error(c, 400, "Bad Request", NULL);
		return;
	}
	if (strcmp(target, "/metrics") != 0) {
		admin_error(c, 404, "Not Found", NULL);
		return;
	}
	head = strcmp(method, "HEAD") == 0;
	if (strcmp(method, "GET") != 0 && !head) {
		admin_error(c, 405, "Method Not Allowed",
		    "Allow: GET, HEAD\r\n");
		return;
	}
	if ((body = relay_metrics_render(&bodylen)) == NULL) {
		admin_error(c, 500, "Internal Server Error", NULL);
		return;
	}
	admin_reply(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
	    NULL, body, bodylen, head);
	free(body);
}

static void
admin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct admin_conn *c = h->data;

	/* Once answered, input is read into buf and dropped. */
	if (c->answered)
		c->len = 0;
	/* One byte stays free for the NUL admin_request adds. */
	*buf = uv_buf_init(c->buf + c->len,
	    (unsigned)(sizeof(c->buf) - 1 - c->len));
}

/* admin_read - gather the request until the empty line ending its headers. */
static void
admin_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct admin_conn *c = s->data;

	if (c->closing)
		return;
	if (c->answered) {
		if (n < 0) {
			c->peer_eof = 1;
			uv_read_stop(s);
			if (c->shut || n != UV_EOF)
				admin_conn_close(c);
		}
		return;
	}
	if (n == UV_ENOBUFS) {
		admin_error(c, 431, "Request Header Fields Too Large", NULL);
		return;
	}
	if (n < 0) {
		admin_conn_close(c);
		return;
	}
	c->len += (size_t)n;
	if (memmem(c->buf, c->len, "\n\r\n", 3) != NULL ||
	    memmem(c->buf, c->len, "\n\n", 2) != NULL)
		admin_request(c, c->len);
	else if (c->len >= sizeof(c->buf) - 1)
		admin_error(c, 431, "Request Header Fields Too Large", NULL);
}

static void
admin_accept(uv_stream_t *server, int status)
{
	struct relay_admin *a = server->data;
	struct admin_conn *c;

	if (status != 0 || a->stopping)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->a = a;
	c->tcp.data = c;
	c->timer.data = c;
	if (uv_tcp_init(a->loop, &c->tcp) != 0) {
		free(c);
		return;
	}
	c->open = 2;
	uv_timer_init(a->loop, &c->timer);
	c->next = a->conns;
	if (a->conns != NULL)
		a->conns->prev = c;
	a->conns = c;
	a->nconns++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
	    a->nconns > ADMIN_CONN_MAX ||
	    uv_read_start((uv_stream_t *)&c->tcp, admin_alloc,
	    admin_read) != 0) {
		admin_conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, admin_timeout, ADMIN_TIMEOUT_MS, 0);
}

static void
admin_listener_closed(uv_handle_t *h)
{
	struct relay_admin *a = h->data;

	a->listener_open = 0;
	admin_maybe_done(a);
}

int
relay_admin_start(uv_loop_t *loop, const char *addr, struct relay_admin **out,
    char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct relay_admin *a;
	int rc;

	*out = NULL;
	if (relay_addr_parse(addr, &ss) != 0) {
		snprintf(err, errlen, "admin_listen: \"%s\" is not "
		    "ADDRESS:PORT", addr);
		return -EINVAL;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL) {
		snprintf(err, errlen, "admin_listen: out of memory");
		return -ENOMEM;
	}
	a->loop = loop;
	a->listener.data = a;
	if ((rc = uv_tcp_init(loop, &a->listener)) != 0) {
		free(a);
		snprintf(err, errlen, "admin_listen %s: %s", addr,
		    uv_strerror(rc));
		return rc;
	}
	a->listener_open = 1;
	if ((rc = uv_tcp_bind(&a->listener, (const struct sockaddr *)&ss,
	    0)) != 0 ||
	    (rc = uv_listen((uv_stream_t *)&a->listener, ADMIN_BACKLOG,
	    admin_accept)) != 0) {
		snprintf(err, errlen, "admin_listen %s: %s", addr,
		    uv_strerror(rc));
		a->stopping = 1;
		uv_close((uv_handle_t *)&a->listener, admin_listener_closed);
		return rc;
	}
	*out = a;
	return 0;
}

void
relay_admin_stop(struct relay_admin *a, void (*cb)(void *arg), void *arg)
{
	struct admin_conn *c, *next;

	if (a == NULL || a->stopping)
		return;
	a->stopping = 1;
	a->cb = cb;
	a->arg = arg;
	for (c = a->conns; c != NULL; c = next) {
		next = c->next;
		admin_conn_close(c);
	}
	uv_close((uv_handle_t *)&a->listener, admin_listener_closed);
}
