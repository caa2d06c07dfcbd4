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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#include "relay/keys.h"
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
static const double metrics_delivery_bounds[] = {
	0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400,
	5 * 86400,
};
static const double metrics_batch_bounds[] = {
	1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
};

#define NB(a) (sizeof(a) / sizeof((a)[0]))

static _Atomic int64_t m_conn_current, m_queue_messages;
static _Atomic uint64_t m_conn_total, m_accepted, m_bytes_in, m_write_errors;
static _Atomic uint64_t m_start_time_ms;
/* delivery (issue 4) */
static _Atomic uint64_t m_deliv_sent, m_deliv_deferred, m_deliv_bounced;
static _Atomic uint64_t m_cache_hits, m_mark_errors;
static _Atomic int64_t m_q_active, m_q_deferred, m_q_held, m_q_oldest;
static _Atomic int64_t m_outbound;

/* managed keys (issue 5) */
static _Atomic uint64_t m_dkim_sigs[2][3];        /* [slot - 1][mode] */
static _Atomic uint64_t m_dkim_trans[4];          /* by metrics_dkim_steps */
static _Atomic uint64_t m_dkim_holds, m_dkim_cache_hits, m_dkim_cache_misses;
static _Atomic int64_t m_dkim_phase[DKIM_NPHASES], m_dkim_unconfirmed;
static _Atomic int64_t m_dkim_key_age, m_keystore_up;
static const char *const metrics_dkim_steps[4] = {
	"confirm", "replace", "rotate_now", "switch",
};
static const char *const metrics_dkim_modes[3] = {
	"aligned", "default", "initial",   /* enum relay_dkim_mode order */
};

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
static struct metrics_hist m_delivery_seconds = {
	"signet_delivery_seconds",
	"Seconds from a message's arrival until it left the queue, every "
	"recipient delivered or bounced.",
	metrics_delivery_bounds, NB(metrics_delivery_bounds), { 0 }, 0,
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
	case QUEUE_EV_RCPT_SENT:
		relay_metrics_delivery(QUEUE_OUT_SENT, metrics_u64(value));
		break;
	case QUEUE_EV_RCPT_DEFERRED:
		relay_metrics_delivery(QUEUE_OUT_DEFERRED, metrics_u64(value));
		break;
	case QUEUE_EV_RCPT_BOUNCED:
		relay_metrics_delivery(QUEUE_OUT_BOUNCED, metrics_u64(value));
		break;
	case QUEUE_EV_MSG_DONE:
		/* the file is gone: one message less in the spool */
		atomic_fetch_sub(&m_queue_messages, 1);
		relay_metrics_delivery_seconds(value);
		break;
	case QUEUE_EV_MARK_ERROR:
		atomic_fetch_add(&m_mark_errors, 1);
		break;
	case QUEUE_EV_MSG_DELETED:
		atomic_fetch_sub(&m_queue_messages, 1);
		break;
	}
}

void
relay_metrics_delivery(enum queue_outcome result, uint64_t n)
{
	switch (result) {
	case QUEUE_OUT_SENT:
		atomic_fetch_add(&m_deliv_sent, n);
		break;
	case QUEUE_OUT_DEFERRED:
		atomic_fetch_add(&m_deliv_deferred, n);
		break;
	case QUEUE_OUT_BOUNCED:
		atomic_fetch_add(&m_deliv_bounced, n);
		break;
	}
}

void
relay_metrics_delivery_seconds(double seconds)
{
	metrics_hist_observe(&m_delivery_seconds, seconds < 0 ? 0 : seconds);
}

void
relay_metrics_queue_counts(size_t active, size_t deferred, size_t held,
    time_t oldest)
{
	atomic_store(&m_q_active, (int64_t)active);
	atomic_store(&m_q_deferred, (int64_t)deferred);
	atomic_store(&m_q_held, (int64_t)held);
	atomic_store(&m_q_oldest, (int64_t)oldest);
}

void
relay_metrics_outbound_connections(long delta)
{
	atomic_fetch_add(&m_outbound, (int64_t)delta);
}

void
relay_metrics_connection_cache_hit(void)
{
	atomic_fetch_add(&m_cache_hits, 1);
}

void
relay_metrics_queue_add(long delta)
{
	atomic_fetch_add(&m_queue_messages, (int64_t)delta);
}

void
relay_metrics_dkim_signature(int slot, enum relay_dkim_mode mode)
{
	if ((slot != 1 && slot != 2) || (unsigned)mode > RELAY_DKIM_MODE_INITIAL)
		return;
	atomic_fetch_add_explicit(&m_dkim_sigs[slot - 1][mode], 1,
	    memory_order_relaxed);
}

void
relay_metrics_dkim_transition(const char *step)
{
	size_t i;

	for (i = 0; i < NB(metrics_dkim_steps); i++)
		if (step != NULL && strcmp(step, metrics_dkim_steps[i]) == 0) {
			atomic_fetch_add(&m_dkim_trans[i], 1);
			return;
		}
}

void
relay_metrics_dkim_gate_holds(uint64_t n)
{
	atomic_fetch_add(&m_dkim_holds, n);
}

void
relay_metrics_dkim_domains(const uint64_t phase[DKIM_NPHASES],
    uint64_t unconfirmed, int64_t key_age_max)
{
	int i;

	for (i = 0; i < DKIM_NPHASES; i++)
		atomic_store(&m_dkim_phase[i], (int64_t)phase[i]);
	atomic_store(&m_dkim_unconfirmed, (int64_t)unconfirmed);
	atomic_store(&m_dkim_key_age, key_age_max > 0 ? key_age_max : 0);
}

void
relay_metrics_dkim_key_cache(int hit)
{
	atomic_fetch_add_explicit(hit ? &m_dkim_cache_hits :
	    &m_dkim_cache_misses, 1, memory_order_relaxed);
}

void
relay_metrics_keystore_up(int up)
{
	atomic_store(&m_keystore_up, up ? 1 : 0);
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

/* mb_dkim - the managed-key metrics. */
static void
mb_dkim(struct metrics_buf *b)
{
	static const enum dkim_phase order[DKIM_NPHASES] = {
		DKIM_PHASE_PENDING, DKIM_PHASE_RETIRING, DKIM_PHASE_STABLE,
	};
	size_t i, m;
	int s;

	mb_head(b, "signet_dkim_domains", "Managed domains by rotation phase.",
	    "gauge");
	for (i = 0; i < DKIM_NPHASES; i++)
		mb_printf(b, "signet_dkim_domains{phase=\"%s\"} %lld\n",
		    dkim_phase_name(order[i]),
		    (long long)atomic_load(&m_dkim_phase[order[i]]));
	mb_i64(b, "signet_dkim_domains_unconfirmed", "Managed domains whose "
	    "active key has not passed the publication gate yet (signed as "
	    "unprovisioned).", "gauge", atomic_load(&m_dkim_unconfirmed));
	mb_i64(b, "signet_dkim_switches_held", "Managed domains whose due key "
	    "switch the publication gate holds back (phase pending).", "gauge",
	    atomic_load(&m_dkim_phase[DKIM_PHASE_PENDING]));
	mb_u64(b, "signet_dkim_gate_holds_total", "Key switches found held "
	    "back by the publication gate, one per domain per rotation check.",
	    "counter", atomic_load(&m_dkim_holds));
	mb_head(b, "signet_dkim_signatures_total", "Signatures made with "
	    "managed keys, by selector slot and mode (aligned: d=From domain; "
	    "default: d=initial domain; initial: the tenant's own key).",
	    "counter");
	for (s = 0; s < 2; s++)
		for (m = 0; m < NB(metrics_dkim_modes); m++)
			mb_printf(b, "signet_dkim_signatures_total{slot=\"%d\","
			    "mode=\"%s\"} %llu\n", s + 1, metrics_dkim_modes[m],
			    (unsigned long long)atomic_load(
			    &m_dkim_sigs[s][m]));
	mb_head(b, "signet_dkim_transitions_total", "Key rotation steps this "
	    "node carried out, by step.", "counter");
	for (i = 0; i < NB(metrics_dkim_steps); i++)
		mb_printf(b, "signet_dkim_transitions_total{step=\"%s\"} "
		    "%llu\n", metrics_dkim_steps[i],
		    (unsigned long long)atomic_load(&m_dkim_trans[i]));
	mb_i64(b, "signet_dkim_active_key_age_seconds_max", "Age of the "
	    "oldest key signing for a managed domain.", "gauge",
	    atomic_load(&m_dkim_key_age));
	mb_u64(b, "signet_dkim_key_cache_hits_total", "Managed-key signings "
	    "that found the private key in the cache.", "counter",
	    atomic_load(&m_dkim_cache_hits));
	mb_u64(b, "signet_dkim_key_cache_misses_total", "Managed-key signings "
	    "that read the private key from the key store.", "counter",
	    atomic_load(&m_dkim_cache_misses));
	mb_i64(b, "signet_keystore_up", "1 when the key store answers, 0 "
	    "when it is unreachable (no key transitions then).", "gauge",
	    atomic_load(&m_keystore_up));
}

char *
relay_metrics_render(size_t *len)
{
	struct metrics_buf b = { 0 };
	uint64_t start = atomic_load(&m_start_time_ms);
	int64_t oldest;

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
	mb_head(&b, "signet_deliveries_total", "Delivery attempts by outcome, "
	    "one per recipient (sent, deferred, bounced).", "counter");
	mb_printf(&b, "signet_deliveries_total{result=\"bounced\"} %llu\n"
	    "signet_deliveries_total{result=\"deferred\"} %llu\n"
	    "signet_deliveries_total{result=\"sent\"} %llu\n",
	    (unsigned long long)atomic_load(&m_deliv_bounced),
	    (unsigned long long)atomic_load(&m_deliv_deferred),
	    (unsigned long long)atomic_load(&m_deliv_sent));
	mb_hist(&b, &m_delivery_seconds);
	mb_i64(&b, "signet_queue_active", "Messages in the active queue "
	    "(due or deferred, not held).", "gauge", atomic_load(&m_q_active));
	mb_i64(&b, "signet_queue_deferred", "Messages waiting for a retry "
	    "after a temporary failure.", "gauge", atomic_load(&m_q_deferred));
	mb_i64(&b, "signet_queue_held", "Messages on hold (signetctl queue "
	    "hold).", "gauge", atomic_load(&m_q_held));
	oldest = atomic_load(&m_q_oldest);
	mb_i64(&b, "signet_queue_oldest_age_seconds", "Age of the oldest "
	    "message in the queue (0 when empty).", "gauge",
	    oldest > 0 && time(NULL) > oldest ? (int64_t)time(NULL) - oldest :
	    0);
	mb_i64(&b, "signet_outbound_connections", "Outbound SMTP connections "
	    "open now, idle cached ones included.", "gauge",
	    atomic_load(&m_outbound));
	mb_u64(&b, "signet_connection_cache_hits_total", "Deliveries that "
	    "reused a cached outbound connection.", "counter",
	    atomic_load(&m_cache_hits));
	mb_u64(&b, "signet_queue_mark_errors_total", "Delivery outcomes that "
	    "could not be recorded in the queue file.", "counter",
	    atomic_load(&m_mark_errors));
	mb_dkim(&b);
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
	struct queue_sched *qs;     /* NULL: no queue requests */
	char *spool_dir;
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
	free(a->spool_dir);
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

/*
 * admin_target - parse "METHOD /path HTTP/1.x"; the path without the
 * query, which goes to *query (NULL: none).
 */
static int
admin_target(char *line, char **method, char **target, char **query)
{
	char *version, *q;

	*query = NULL;
	*method = line;
	if ((*target = strchr(line, ' ')) == NULL)
		return -1;
	*(*target)++ = '\0';
	if ((version = strchr(*target, ' ')) == NULL)
		return -1;
	*version++ = '\0';
	if (strncmp(version, "HTTP/1.", 7) != 0 || **target != '/')
		return -1;
	if ((q = strchr(*target, '?')) != NULL) {
		*q++ = '\0';
		*query = q;
	}
	return 0;
}

/* ---- the queue requests (signetctl queue) -------------------------------- */

/* mb_json_str - s as a JSON string (UTF-8 passes, controls are \u00XX). */
static void
mb_json_str(struct metrics_buf *b, const char *s)
{
	mb_printf(b, "\"");
	for (; s != NULL && *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			mb_printf(b, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			mb_printf(b, "\\u%04x", ch);
		else
			mb_printf(b, "%c", ch);
	}
	mb_printf(b, "\"");
}

/* admin_json - send b as a JSON response (or 500 if it ran out of memory). */
static void
admin_json(struct admin_conn *c, int status, const char *reason,
    struct metrics_buf *b)
{
	if (b->oom || b->p == NULL)
		admin_error(c, 500, "Internal Server Error", NULL);
	else
		admin_reply(c, status, reason, "application/json", NULL, b->p,
		    b->len, 0);
	free(b->p);
}

/* admin_json_error - {"error":"..."} with status. */
static void
admin_json_error(struct admin_conn *c, int status, const char *reason,
    const char *msg)
{
	struct metrics_buf b = { 0 };

	mb_printf(&b, "{\"error\":");
	mb_json_str(&b, msg);
	mb_printf(&b, "}\n");
	admin_json(c, status, reason, &b);
}

/* admin_is_id - 18 upper-case hex digits (also keeps paths safe). */
static int
admin_is_id(const char *s)
{
	size_t i;

	for (i = 0; i < QUEUE_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' &&
		    s[i] <= 'F')))
			return 0;
	return s[i] == '\0';
}

/* admin_loopback - is the client on a loopback address? */
static int
admin_loopback(struct admin_conn *c)
{
	struct sockaddr_storage ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
	const unsigned char *a6 = sin6->sin6_addr.s6_addr;
	int len = sizeof(ss);

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family != AF_INET6)
		return 0;
	if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
		return 1;
	return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && a6[12] == 127;
}

/* The messages, gathered by queue_sched_list. */
struct admin_list {
	struct metrics_buf *b;
	const char *spool_dir;
	const char *want;           /* one id (show), or NULL: all */
	int n;
	int full;                   /* with recipients (from the files) */
	struct queue_info found;    /* for show */
	int hit;
};

static const char *
admin_state_name(enum queue_rcpt_state st)
{
	switch (st) {
	case QUEUE_RCPT_PENDING:
		return "pending";
	case QUEUE_RCPT_SENT:
		return "sent";
	case QUEUE_RCPT_BOUNCED:
		return "bounced";
	}
	return "?";
}

/* admin_message_path - <spool_dir>/active/ID or hold/ID. */
static void
admin_message_path(const char *spool_dir, const struct queue_info *qi,
    char *path, size_t len)
{
	snprintf(path, len, "%s/%s/%s", spool_dir, qi->held ? "hold" :
	    "active", qi->id);
}

/*
 * admin_rcpts - ,"envid":..,"recipients":[...] of one message, from its
 * file (a blocking read on the loop: these are operator requests).
 * 0, or -errno when the file can't be read.
 */
static int
admin_rcpts(struct metrics_buf *b, const char *spool_dir,
    const struct queue_info *qi, int pending_only)
{
	struct queue_rcpt_status *st = NULL;
	struct queue_file qf;
	char path[4096];
	size_t i;
	int rc, first = 1;

	admin_message_path(spool_dir, qi, path, sizeof(path));
	if ((rc = queue_file_read(path, &qf)) != 0)
		return rc;
	if ((rc = queue_file_status(path, qf.env.nrcpt, &st)) != 0) {
		queue_file_free(&qf);
		return rc;
	}
	if (!pending_only) {
		mb_printf(b, ",\"envid\":");
		if (qf.env.envid != NULL)
			mb_json_str(b, qf.env.envid);
		else
			mb_printf(b, "null");
		mb_printf(b, ",\"ret\":\"%s\",\"helo\":", qf.env.ret ==
		    QUEUE_RET_FULL ? "full" : qf.env.ret == QUEUE_RET_HDRS ?
		    "hdrs" : "");
		mb_json_str(b, qf.env.helo);
		mb_printf(b, ",\"client\":");
		mb_json_str(b, qf.env.client_addr);
		mb_printf(b, ",\"signed\":%s", qf.sig != NULL ? "true" :
		    "false");
	}
	mb_printf(b, ",\"rcpt\":[");
	for (i = 0; i < qf.env.nrcpt; i++) {
		if (pending_only && st[i].state != QUEUE_RCPT_PENDING)
			continue;
		mb_printf(b, "%s{\"addr\":", first ? "" : ",");
		first = 0;
		mb_json_str(b, qf.env.rcpt[i].addr);
		if (qf.env.rcpt[i].orcpt != NULL) {
			mb_printf(b, ",\"orcpt\":");
			mb_json_str(b, qf.env.rcpt[i].orcpt);
		}
		mb_printf(b, ",\"state\":\"%s\",\"attempts\":%u,"
		    "\"last_try\":%lld,\"next_try\":%lld,\"reason\":",
		    admin_state_name(st[i].state), st[i].attempts,
		    (long long)st[i].last_try, (long long)st[i].next_try);
		if (st[i].reason != NULL)
			mb_json_str(b, st[i].reason);
		else
			mb_printf(b, "null");
		mb_printf(b, "}");
	}
	mb_printf(b, "]");
	queue_status_free(st, qf.env.nrcpt);
	queue_file_free(&qf);
	return 0;
}

/* admin_info - the fields of queue_info, without the braces. */
static void
admin_info(struct metrics_buf *b, const struct queue_info *qi)
{
	mb_printf(b, "\"id\":\"%s\",\"arrival\":%lld,\"size\":%llu,"
	    "\"sender\":", qi->id, (long long)qi->arrival,
	    (unsigned long long)qi->size);
	mb_json_str(b, qi->sender);
	mb_printf(b, ",\"recipients\":%zu,\"pending\":%zu,\"next_try\":%lld,"
	    "\"held\":%s", qi->nrcpt, qi->npending, (long long)qi->next_try,
	    qi->held ? "true" : "false");
}

/* admin_list_one - queue_sched_list callback. */
static void
admin_list_one(void *arg, const struct queue_info *qi)
{
	struct admin_list *l = arg;

	if (l->want != NULL) {
		if (strcmp(qi->id, l->want) == 0) {
			l->found = *qi;
			l->found.sender = NULL;   /* valid during the call only */
			l->hit = 1;
			mb_printf(l->b, "{");
			admin_info(l->b, qi);
		}
		return;
	}
	mb_printf(l->b, "%s{", l->n++ ? ",\n" : "\n");
	admin_info(l->b, qi);
	if (l->full && admin_rcpts(l->b, l->spool_dir, qi, 1) != 0)
		mb_printf(l->b, ",\"rcpt\":[]");
	mb_printf(l->b, "}");
}

/* admin_queue_list - GET /queue[?rcpt=1]. */
static void
admin_queue_list(struct admin_conn *c, int full)
{
	struct metrics_buf b = { 0 };
	struct admin_list l;

	memset(&l, 0, sizeof(l));
	l.b = &b;
	l.spool_dir = c->a->spool_dir;
	l.full = full;
	mb_printf(&b, "{\"messages\":[");
	queue_sched_list(c->a->qs, admin_list_one, &l);
	mb_printf(&b, "%s]}\n", l.n ? "\n" : "");
	admin_json(c, 200, "OK", &b);
}

/* admin_queue_show - GET /queue/ID. */
static void
admin_queue_show(struct admin_conn *c, const char *id)
{
	struct metrics_buf b = { 0 };
	struct admin_list l;
	int rc;

	memset(&l, 0, sizeof(l));
	l.b = &b;
	l.want = id;
	queue_sched_list(c->a->qs, admin_list_one, &l);
	if (!l.hit) {
		free(b.p);
		admin_json_error(c, 404, "Not Found", "no such message");
		return;
	}
	if ((rc = admin_rcpts(&b, c->a->spool_dir, &l.found, 0)) != 0) {
		free(b.p);
		admin_json_error(c, rc == -ENOENT ? 404 : 500, rc == -ENOENT ?
		    "Not Found" : "Internal Server Error", rc == -ENOENT ?
		    "no such message" : strerror(-rc));
		return;
	}
	mb_printf(&b, "}\n");
	admin_json(c, 200, "OK", &b);
}

/* admin_queue_action - POST /queue/flush, /queue/ID/ACTION. */
static void
admin_queue_action(struct admin_conn *c, const char *id, const char *action)
{
	struct queue_sched *qs = c->a->qs;
	struct metrics_buf b = { 0 };
	int rc;

	if (strcmp(action, "flush") == 0)
		rc = queue_sched_flush(qs, id);
	else if (id != NULL && strcmp(action, "hold") == 0)
		rc = queue_sched_hold(qs, id);
	else if (id != NULL && strcmp(action, "release") == 0)
		rc = queue_sched_release(qs, id);
	else if (id != NULL && strcmp(action, "delete") == 0)
		rc = queue_sched_delete(qs, id);
	else {
		admin_json_error(c, 404, "Not Found", "unknown action");
		return;
	}
	if (rc == -ENOENT)
		admin_json_error(c, 404, "Not Found", "no such message");
	else if (rc == -EBUSY)
		admin_json_error(c, 409, "Conflict", "the message is being "
		    "delivered; try again");
	else if (rc != 0)
		admin_json_error(c, 500, "Internal Server Error",
		    strerror(-rc));
	else {
		mb_printf(&b, "{\"ok\":true}\n");
		admin_json(c, 200, "OK", &b);
	}
}

/*
 * admin_queue - the /queue requests: loopback clients only (they change
 * the queue and show addresses), GET to read, POST to act.
 */
static void
admin_queue(struct admin_conn *c, const char *method, char *target,
    const char *query)
{
	char *id = NULL, *action = NULL, *p;
	int post = strcmp(method, "POST") == 0;

	if (!admin_loopback(c)) {
		admin_json_error(c, 403, "Forbidden", "queue requests are "
		    "taken from loopback clients only");
		return;
	}
	if (c->a->qs == NULL) {
		admin_json_error(c, 503, "Service Unavailable", "no queue "
		    "manager is running");
		return;
	}
	/* /queue, /queue/flush, /queue/ID, /queue/ID/ACTION */
	p = target + 6;
	if (*p == '/') {
		*p++ = '\0';
		if (strcmp(p, "flush") == 0)
			action = p;
		else {
			id = p;
			if ((p = strchr(p, '/')) != NULL) {
				*p++ = '\0';
				action = p;
			}
			if (!admin_is_id(id)) {
				admin_json_error(c, 404, "Not Found",
				    "not a queue id");
				return;
			}
		}
	} else if (*p != '\0') {
		admin_error(c, 404, "Not Found", NULL);
		return;
	}
	if (action != NULL) {
		if (!post) {
			admin_error(c, 405, "Method Not Allowed",
			    "Allow: POST\r\n");
			return;
		}
		admin_queue_action(c, id, action);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		admin_error(c, 405, "Method Not Allowed", "Allow: GET\r\n");
		return;
	}
	if (id != NULL)
		admin_queue_show(c, id);
	else
		admin_queue_list(c, query != NULL &&
		    strstr(query, "rcpt=1") != NULL);
}

/*
 * admin_request - answer the request in c->buf (complete headers, len
 * bytes).  Only the request line matters: GET or HEAD of /metrics, or one
 * of the /queue requests.
 */
static void
admin_request(struct admin_conn *c, size_t len)
{
	char *eol, *method, *target, *body, *query;
	struct relay_admin *a = c->a;
	size_t bodylen, active, deferred, held;
	time_t oldest;
	int head;

	c->buf[len] = '\0';
	if ((eol = strpbrk(c->buf, "\r\n")) != NULL)
		*eol = '\0';
	if (admin_target(c->buf, &method, &target, &query) != 0) {
		admin_error(c, 400, "Bad Request", NULL);
		return;
	}
	if (strcmp(target, "/queue") == 0 || strncmp(target, "/queue/", 7) == 0) {
		admin_queue(c, method, target, query);
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
	if (a->qs != NULL) {
		queue_sched_counts(a->qs, &active, &deferred, &held, &oldest);
		relay_metrics_queue_counts(active, deferred, held, oldest);
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

void
relay_admin_set_queue(struct relay_admin *a, struct queue_sched *qs,
    const char *spool_dir)
{
	free(a->spool_dir);
	a->spool_dir = qs != NULL ? strdup(spool_dir) : NULL;
	a->qs = a->spool_dir != NULL ? qs : NULL;
}
