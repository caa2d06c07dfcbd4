/*
 * sched.c - the queue manager of issue 4: it knows every message in
 * active/ and hold/, decides which recipients are due, and hands the daemon
 * one job per message and destination (recipient domain) within the
 * concurrency limits.
 *
 * Index: every message is in a hash by id and in a list; a message with
 * pending recipients that are neither queued nor in flight sits in a binary
 * min-heap keyed on the earliest next_try among them, and one uv_timer is
 * armed for the top of the heap.  When a message comes due its due
 * recipients are grouped by destination and one wait entry per
 * (message, destination) is appended to that destination's FIFO; dispatch
 * takes wait entries round-robin over the destinations that have room.
 *
 * Outcomes are written to the file (queue_file_mark on the thread pool)
 * before anything acts on them: a SENT recipient is never sent again after
 * a restart, at most the job in flight at a crash repeats.  Only then are
 * bounces requested and done files unlinked.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "queue/queue_int.h"

#define R_IDLE   0            /* recipient not queued nor in flight */
#define R_QUEUED 1            /* in a wait entry */
#define R_BUSY   2            /* in a job */

struct dest;
struct smsg;

/* A (message, destination) pair waiting for a job slot. */
struct wentry {
	struct smsg *m;
	struct dest *d;
	struct wentry *next, *prev;       /* in d's FIFO */
	struct wentry *mnext;             /* in m's list */
};

struct dest {
	char *name;
	struct dest *hnext;
	size_t refs;                      /* recipients pointing here */
	unsigned inflight;
	struct wentry *head, *tail;
	struct dest *rnext, *rprev;       /* in the ready ring */
	int ready;
};

struct smsg {
	char id[QUEUE_ID_LEN + 1];
	char *path;
	struct queue_file qf;
	struct queue_rcpt_status *st;
	struct dest **rdest;              /* per recipient */
	unsigned char *rflag;             /* R_* per recipient */
	size_t heap_idx;                  /* SIZE_MAX: not in the heap */
	time_t key;
	unsigned inflight;                /* jobs (until their marks are done) */
	int held, deferred;
	struct wentry *waits;
	struct smsg *hnext, *next, *prev;
};

struct sjob {
	struct queue_job job;
	struct queue_sched *qs;
	struct smsg *m;
	struct dest *d;
	size_t *rcpt;
	struct queue_mark *marks;
	char **reasons;
	int *expired;
	int rc;
	uv_work_t work;
};

struct queue_sched {
	uv_loop_t *loop;
	struct queue_sched_config cfg;
	int flushing;                     /* defer_all: a flush is running */
	char *dir;
	uv_timer_t timer;
	uv_async_t async;
	pthread_mutex_t lock;
	char (*nids)[QUEUE_ID_LEN + 1];   /* notified ids, under lock */
	size_t nn, nncap;

	struct smsg **mtab;
	size_t mtab_n, mtab_cap;
	struct dest **dtab;
	size_t dtab_n, dtab_cap;
	struct smsg *all;
	struct smsg **heap;
	size_t heap_n, heap_cap;
	struct dest *ring;                /* destinations with waiting entries */

	unsigned inflight;
	size_t nactive, ndeferred, nheld;
	int stopping, closing;
	void (*stop_cb)(void *);
	void *stop_arg;
};

static void sched_run(struct queue_sched *qs);
static void timer_cb(uv_timer_t *h);

/* ---- helpers ------------------------------------------------------------- */

/* now_ms - wall clock in milliseconds (next_try is wall-clock seconds). */
static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* hash_str - FNV-1a. */
static size_t
hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return (size_t)h;
}

/* sched_event - the metrics hook, if any. */
static void
sched_event(struct queue_sched *qs, enum queue_event ev, double v)
{
	if (qs->cfg.event != NULL)
		qs->cfg.event(qs->cfg.arg, ev, v);
}

/* ---- message hash -------------------------------------------------------- */

/* msg_find - the indexed message with this id, or NULL. */
static struct smsg *
msg_find(const struct queue_sched *qs, const char *id)
{
	struct smsg *m;

	if (qs->mtab_cap == 0)
		return NULL;
	for (m = qs->mtab[hash_str(id) & (qs->mtab_cap - 1)]; m != NULL;
	    m = m->hnext)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

/* msg_hash_add - insert m, growing the table at load 1. */
static void
msg_hash_add(struct queue_sched *qs, struct smsg *m)
{
	struct smsg **nt, *x, *next;
	size_t i, ncap, h;

	if (qs->mtab_n + 1 > qs->mtab_cap) {
		ncap = qs->mtab_cap ? qs->mtab_cap * 2 : 64;
		nt = queue__xmalloc(ncap * sizeof(*nt));
		memset(nt, 0, ncap * sizeof(*nt));
		for (i = 0; i < qs->mtab_cap; i++)
			for (x = qs->mtab[i]; x != NULL; x = next) {
				next = x->hnext;
				h = hash_str(x->id) & (ncap - 1);
				x->hnext = nt[h];
				nt[h] = x;
			}
		free(qs->mtab);
		qs->mtab = nt;
		qs->mtab_cap = ncap;
	}
	h = hash_str(m->id) & (qs->mtab_cap - 1);
	m->hnext = qs->mtab[h];
	qs->mtab[h] = m;
	qs->mtab_n++;
	if ((m->next = qs->all) != NULL)
		m->next->prev = m;
	m->prev = NULL;
	qs->all = m;
}

/* msg_hash_del - unlink m from the hash and the list. */
static void
msg_hash_del(struct queue_sched *qs, struct smsg *m)
{
	struct smsg **pp = &qs->mtab[hash_str(m->id) & (qs->mtab_cap - 1)];

	while (*pp != m)
		pp = &(*pp)->hnext;
	*pp = m->hnext;
	qs->mtab_n--;
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		qs->all = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
}

/* ---- destinations -------------------------------------------------------- */

/* dest_get - the destination for this domain (lower-cased), made if new. */
static struct dest *
dest_get(struct queue_sched *qs, const char *addr)
{
	const char *at = strrchr(addr, '@');
	struct dest **nt, *d, *next;
	char *name, *p;
	size_t i, h, ncap;

	name = queue__xstrdup(at != NULL ? at + 1 : "");
	for (p = name; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	if (qs->dtab_cap > 0)
		for (d = qs->dtab[hash_str(name) & (qs->dtab_cap - 1)];
		    d != NULL; d = d->hnext)
			if (strcmp(d->name, name) == 0) {
				free(name);
				d->refs++;
				return d;
			}
	if (qs->dtab_n + 1 > qs->dtab_cap) {
		ncap = qs->dtab_cap ? qs->dtab_cap * 2 : 64;
		nt = queue__xmalloc(ncap * sizeof(*nt));
		memset(nt, 0, ncap * sizeof(*nt));
		for (i = 0; i < qs->dtab_cap; i++)
			for (d = qs->dtab[i]; d != NULL; d = next) {
				next = d->hnext;
				h = hash_str(d->name) & (ncap - 1);
				d->hnext = nt[h];
				nt[h] = d;
			}
		free(qs->dtab);
		qs->dtab = nt;
		qs->dtab_cap = ncap;
	}
	d = queue__xmalloc(sizeof(*d));
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->refs = 1;
	h = hash_str(name) & (qs->dtab_cap - 1);
	d->hnext = qs->dtab[h];
	qs->dtab[h] = d;
	qs->dtab_n++;
	return d;
}

/* dest_put - drop one reference; free an idle destination nobody uses. */
static void
dest_put(struct queue_sched *qs, struct dest *d)
{
	struct dest **pp;

	if (--d->refs > 0 || d->inflight > 0 || d->head != NULL)
		return;
	pp = &qs->dtab[hash_str(d->name) & (qs->dtab_cap - 1)];
	while (*pp != d)
		pp = &(*pp)->hnext;
	*pp = d->hnext;
	qs->dtab_n--;
	free(d->name);
	free(d);
}

/* ring_add / ring_del - the destinations that have wait entries. */
static void
ring_add(struct queue_sched *qs, struct dest *d)
{
	if (d->ready)
		return;
	d->ready = 1;
	if (qs->ring == NULL) {
		d->rnext = d->rprev = d;
		qs->ring = d;
		return;
	}
	d->rnext = qs->ring;
	d->rprev = qs->ring->rprev;
	d->rprev->rnext = d;
	qs->ring->rprev = d;
}

static void
ring_del(struct queue_sched *qs, struct dest *d)
{
	if (!d->ready)
		return;
	d->ready = 0;
	if (d->rnext == d) {
		qs->ring = NULL;
		return;
	}
	d->rprev->rnext = d->rnext;
	d->rnext->rprev = d->rprev;
	if (qs->ring == d)
		qs->ring = d->rnext;
}

/* ---- heap ---------------------------------------------------------------- */

static void
heap_swap(struct queue_sched *qs, size_t a, size_t b)
{
	struct smsg *t = qs->heap[a];

	qs->heap[a] = qs->heap[b];
	qs->heap[b] = t;
	qs->heap[a]->heap_idx = a;
	qs->heap[b]->heap_idx = b;
}

/* heap_fix - restore order around index i after its key changed. */
static void
heap_fix(struct queue_sched *qs, size_t i)
{
	size_t c;

	while (i > 0 && qs->heap[(i - 1) / 2]->key > qs->heap[i]->key) {
		heap_swap(qs, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		c = 2 * i + 1;
		if (c >= qs->heap_n)
			break;
		if (c + 1 < qs->heap_n && qs->heap[c + 1]->key < qs->heap[c]->key)
			c++;
		if (qs->heap[i]->key <= qs->heap[c]->key)
			break;
		heap_swap(qs, i, c);
		i = c;
	}
}

static void
heap_del(struct queue_sched *qs, struct smsg *m)
{
	size_t i = m->heap_idx;

	if (i == SIZE_MAX)
		return;
	m->heap_idx = SIZE_MAX;
	if (i != --qs->heap_n) {
		qs->heap[i] = qs->heap[qs->heap_n];
		qs->heap[i]->heap_idx = i;
		heap_fix(qs, i);
	}
}

/* heap_set - put m in the heap with this key, or move it. */
static void
heap_set(struct queue_sched *qs, struct smsg *m, time_t key)
{
	m->key = key;
	if (m->heap_idx == SIZE_MAX) {
		if (qs->heap_n == qs->heap_cap) {
			qs->heap_cap = qs->heap_cap ? qs->heap_cap * 2 : 256;
			if ((qs->heap = realloc(qs->heap, qs->heap_cap *
			    sizeof(*qs->heap))) == NULL)
				abort();
		}
		m->heap_idx = qs->heap_n;
		qs->heap[qs->heap_n++] = m;
	}
	heap_fix(qs, m->heap_idx);
}

/* ---- message state ------------------------------------------------------- */

/*
 * msg_update - recompute m's heap key (earliest idle pending recipient) and
 * its deferred flag, keeping the counters right.
 */
static void
msg_update(struct queue_sched *qs, struct smsg *m)
{
	time_t key = 0;
	int have = 0, deferred = 0;
	size_t i;

	for (i = 0; i < m->qf.env.nrcpt; i++) {
		if (m->st[i].state != QUEUE_RCPT_PENDING)
			continue;
		if (m->st[i].attempts > 0)
			deferred = 1;
		if (m->rflag[i] != R_IDLE)
			continue;
		if (!have || m->st[i].next_try < key)
			key = m->st[i].next_try;
		have = 1;
	}
	if (m->held)
		deferred = 0;
	if (deferred != m->deferred) {
		if (deferred)
			qs->ndeferred++;
		else
			qs->ndeferred--;
		m->deferred = deferred;
	}
	if (have && !m->held)
		heap_set(qs, m, key);
	else
		heap_del(qs, m);
}

/* msg_unqueue - drop m's wait entries (their recipients go back to idle). */
static void
msg_unqueue(struct queue_sched *qs, struct smsg *m)
{
	struct wentry *w, *next;
	size_t i;

	for (w = m->waits; w != NULL; w = next) {
		next = w->mnext;
		if (w->prev != NULL)
			w->prev->next = w->next;
		else
			w->d->head = w->next;
		if (w->next != NULL)
			w->next->prev = w->prev;
		else
			w->d->tail = w->prev;
		if (w->d->head == NULL)
			ring_del(qs, w->d);
		free(w);
	}
	m->waits = NULL;
	for (i = 0; i < m->qf.env.nrcpt; i++)
		if (m->rflag[i] == R_QUEUED)
			m->rflag[i] = R_IDLE;
}

/* msg_free - release m (already out of every structure but its dests). */
static void
msg_free(struct queue_sched *qs, struct smsg *m)
{
	size_t i;

	for (i = 0; i < m->qf.env.nrcpt; i++)
		if (m->rdest[i] != NULL)
			dest_put(qs, m->rdest[i]);
	queue_status_free(m->st, m->qf.env.nrcpt);
	queue_file_free(&m->qf);
	free(m->rdest);
	free(m->rflag);
	free(m->path);
	free(m);
}

/* msg_drop - take m out of the index and free it. */
static void
msg_drop(struct queue_sched *qs, struct smsg *m)
{
	msg_unqueue(qs, m);
	heap_del(qs, m);
	if (m->deferred)
		qs->ndeferred--;
	if (m->held)
		qs->nheld--;
	else
		qs->nactive--;
	msg_hash_del(qs, m);
	msg_free(qs, m);
}

/* msg_arrival - when m arrived (envelope, else the id's time). */
static time_t
msg_arrival(const struct smsg *m)
{
	return m->qf.env.arrival > 0 ? m->qf.env.arrival : queue_id_time(m->id);
}

/*
 * msg_load - read sub/id and index it (not scheduled yet).  A message whose
 * recipients are all done already (a crash between the last mark and the
 * unlink) is removed.  0, or -errno.
 */
static int
msg_load(struct queue_sched *qs, const char *sub, const char *id,
    struct smsg **out)
{
	struct smsg *m;
	size_t i, n;
	int rc, done = 1;

	*out = NULL;
	if (strlen(id) != QUEUE_ID_LEN || queue_id_time(id) < 0)
		return -EINVAL;
	if (msg_find(qs, id) != NULL)
		return -EEXIST;
	m = queue__xmalloc(sizeof(*m));
	memset(m, 0, sizeof(*m));
	memcpy(m->id, id, QUEUE_ID_LEN + 1);
	m->heap_idx = SIZE_MAX;
	m->held = strcmp(sub, "hold") == 0;
	n = strlen(qs->dir) + strlen(sub) + QUEUE_ID_LEN + 3;
	m->path = queue__xmalloc(n);
	snprintf(m->path, n, "%s/%s/%s", qs->dir, sub, id);
	if ((rc = queue_file_read(m->path, &m->qf)) != 0) {
		free(m->path);
		free(m);
		return rc;
	}
	if ((rc = queue_file_status(m->path, m->qf.env.nrcpt, &m->st)) != 0) {
		queue_file_free(&m->qf);
		free(m->path);
		free(m);
		return rc;
	}
	n = m->qf.env.nrcpt;
	m->rdest = queue__xmalloc((n ? n : 1) * sizeof(*m->rdest));
	m->rflag = queue__xmalloc(n ? n : 1);
	memset(m->rflag, R_IDLE, n ? n : 1);
	for (i = 0; i < n; i++) {
		m->rdest[i] = NULL;
		if (m->st[i].state == QUEUE_RCPT_PENDING) {
			done = 0;
			m->rdest[i] = dest_get(qs, m->qf.env.rcpt[i].addr);
		}
	}
	msg_hash_add(qs, m);
	if (m->held)
		qs->nheld++;
	else
		qs->nactive++;
	if (done && !m->held) {
		queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG,
		    "%s: every recipient done, removed", m->id);
		if (unlink(m->path) < 0 && errno != ENOENT)
			queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
			    "queue: %s: unlink: %s", m->path, strerror(errno));
		msg_drop(qs, m);
		return 0;
	}
	msg_update(qs, m);
	*out = m;
	return 0;
}

/* load_dir - index every file of sub/ ("active" or "hold"). */
static int
load_dir(struct queue_sched *qs, const char *sub)
{
	char path[4096];
	struct dirent *de;
	struct smsg *m;
	DIR *d;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", qs->dir, sub);
	if ((d = opendir(path)) == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		rc = msg_load(qs, sub, de->d_name, &m);
		if (rc == -ENOMEM) {
			closedir(d);
			return rc;
		}
		if (rc != 0)
			queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
			    "queue: %s/%s: not loaded: %s", path, de->d_name,
			    strerror(-rc));
	}
	closedir(d);
	return 0;
}

/* ---- dispatch ------------------------------------------------------------ */

/* msg_due - queue m's due idle recipients, one wait entry per destination. */
static void
msg_due(struct queue_sched *qs, struct smsg *m, time_t now)
{
	struct wentry *w;
	struct dest *d;
	size_t i;

	for (i = 0; i < m->qf.env.nrcpt; i++) {
		if (m->st[i].state != QUEUE_RCPT_PENDING ||
		    m->rflag[i] != R_IDLE || m->st[i].next_try > now)
			continue;
		m->rflag[i] = R_QUEUED;
		d = m->rdest[i];
		for (w = m->waits; w != NULL; w = w->mnext)
			if (w->d == d)
				break;
		if (w != NULL)
			continue;
		w = queue__xmalloc(sizeof(*w));
		w->m = m;
		w->d = d;
		w->mnext = m->waits;
		m->waits = w;
		w->next = NULL;
		if ((w->prev = d->tail) != NULL)
			d->tail->next = w;
		else
			d->head = w;
		d->tail = w;
		ring_add(qs, d);
	}
	msg_update(qs, m);
}

/* job_start - a job for wait entry w (already out of every list). */
static void
job_start(struct queue_sched *qs, struct smsg *m, struct dest *d)
{
	struct sjob *j;
	unsigned attempt = 0;
	size_t i, n = 0;

	for (i = 0; i < m->qf.env.nrcpt; i++)
		if (m->rflag[i] == R_QUEUED && m->rdest[i] == d)
			n++;
	if (n == 0)
		return;
	j = queue__xmalloc(sizeof(*j));
	memset(j, 0, sizeof(*j));
	j->qs = qs;
	j->m = m;
	j->d = d;
	j->rcpt = queue__xmalloc(n * sizeof(*j->rcpt));
	for (n = 0, i = 0; i < m->qf.env.nrcpt; i++)
		if (m->rflag[i] == R_QUEUED && m->rdest[i] == d) {
			m->rflag[i] = R_BUSY;
			j->rcpt[n++] = i;
			if (m->st[i].attempts > attempt)
				attempt = m->st[i].attempts;
		}
	j->job.id = m->id;
	j->job.path = m->path;
	j->job.env = &m->qf.env;
	j->job.domain = d->name;
	j->job.nrcpt = n;
	j->job.rcpt = j->rcpt;
	j->job.attempt = attempt + 1;
	j->job.size = m->qf.msg_size + m->qf.siglen;
	m->inflight++;
	d->inflight++;
	qs->inflight++;
	queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG,
	    "%s: job for %s, %zu recipient%s, attempt %u", m->id, d->name, n,
	    n == 1 ? "" : "s", j->job.attempt);
	qs->cfg.deliver(qs->cfg.arg, qs, &j->job);
}

/* dispatch - start jobs round-robin over destinations while there is room. */
static void
dispatch(struct queue_sched *qs)
{
	struct wentry *w, **pp;
	struct dest *d;
	size_t blocked = 0;

	if (qs->cfg.defer_all && !qs->flushing)
		return;
	while (!qs->stopping && qs->ring != NULL &&
	    qs->inflight < qs->cfg.max_jobs) {
		d = qs->ring;
		if (d->inflight >= qs->cfg.destination_concurrency) {
			/* Full: look at the next one, stop after a lap. */
			qs->ring = d->rnext;
			if (++blocked > qs->dtab_n)
				break;
			continue;
		}
		blocked = 0;
		w = d->head;
		if ((d->head = w->next) != NULL)
			d->head->prev = NULL;
		else
			d->tail = NULL;
		qs->ring = d->rnext;
		if (d->head == NULL)
			ring_del(qs, d);
		for (pp = &w->m->waits; *pp != w; pp = &(*pp)->mnext)
			;
		*pp = w->mnext;
		job_start(qs, w->m, d);
		free(w);
	}
	if (qs->ring == NULL)
		qs->flushing = 0;
}

/* timer_arm - wake up for the top of the heap. */
static void
timer_arm(struct queue_sched *qs)
{
	uint64_t due, now;

	if (qs->stopping || qs->heap_n == 0) {
		uv_timer_stop(&qs->timer);
		return;
	}
	due = (uint64_t)qs->heap[0]->key * 1000;
	now = now_ms();
	uv_timer_start(&qs->timer, timer_cb, due > now ? due - now : 0, 0);
}

/* sched_run - queue everything due, dispatch, re-arm. */
static void
sched_run(struct queue_sched *qs)
{
	time_t now = time(NULL);

	if (!qs->stopping)
		while (qs->heap_n > 0 && qs->heap[0]->key <= now)
			msg_due(qs, qs->heap[0], now);
	dispatch(qs);
	timer_arm(qs);
}

/* timer_cb - the uv_timer entry point. */
static void
timer_cb(uv_timer_t *h)
{
	sched_run(h->data);
}

/* ---- results ------------------------------------------------------------- */

/* mark_work - the thread-pool half: write the outcomes to the file. */
static void
mark_work(uv_work_t *req)
{
	struct sjob *j = req->data;

	j->rc = queue_file_mark(j->job.path, j->marks, j->job.nrcpt);
}

/* sched_close_cb - both handles closed: free everything, then cb. */
static void
sched_close_cb(uv_handle_t *h)
{
	struct queue_sched *qs = h->data;
	struct smsg *m;

	if (--qs->closing > 0)
		return;
	while ((m = qs->all) != NULL)
		msg_drop(qs, m);
	free(qs->mtab);
	free(qs->dtab);
	free(qs->heap);
	free(qs->nids);
	free(qs->dir);
	pthread_mutex_destroy(&qs->lock);
	if (qs->stop_cb != NULL) {
		void (*cb)(void *) = qs->stop_cb;
		void *arg = qs->stop_arg;

		free(qs);
		cb(arg);
		return;
	}
	free(qs);
}

/* sched_maybe_close - stopping and nothing in flight: close the handles. */
static void
sched_maybe_close(struct queue_sched *qs)
{
	if (!qs->stopping || qs->inflight > 0 || qs->closing > 0)
		return;
	qs->closing = 2;
	uv_close((uv_handle_t *)&qs->timer, sched_close_cb);
	uv_close((uv_handle_t *)&qs->async, sched_close_cb);
}

/* job_free - release a finished job. */
static void
job_free(struct sjob *j)
{
	size_t i;

	for (i = 0; i < j->job.nrcpt; i++)
		free(j->reasons[i]);
	free(j->reasons);
	free(j->expired);
	free(j->marks);
	free(j->rcpt);
	free(j);
}

/* mark_done - back on the loop: the outcomes are on disk, act on them. */
static void
mark_done(uv_work_t *req, int status)
{
	struct sjob *j = req->data;
	struct queue_sched *qs = j->qs;
	struct smsg *m = j->m;
	struct queue_failed *failed;
	struct queue_rcpt_status *st;
	size_t i, k, nfailed = 0, pending = 0;
	double nsent = 0, ndef = 0, nbounce = 0;
	int all_done = 1;

	(void)status;
	if (j->rc != 0) {
		/*
		 * Acting on them anyway: in memory they are right, and this
		 * run will not repeat a SENT recipient; after a restart the
		 * job may repeat, the at-most-once-more of queue.h.
		 */
		queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
		    "queue: %s: recording delivery state: %s", j->job.path,
		    strerror(-j->rc));
		sched_event(qs, QUEUE_EV_MARK_ERROR, 1);
	}
	failed = queue__xmalloc((j->job.nrcpt ? j->job.nrcpt : 1) *
	    sizeof(*failed));
	for (k = 0; k < j->job.nrcpt; k++) {
		i = j->rcpt[k];
		st = &m->st[i];
		st->state = j->marks[k].state;
		st->last_try = j->marks[k].when;
		st->next_try = j->marks[k].next_try;
		st->attempts = j->marks[k].attempts;
		free(st->reason);
		st->reason = j->reasons[k];
		j->reasons[k] = NULL;
		m->rflag[i] = R_IDLE;
		switch (st->state) {
		case QUEUE_RCPT_SENT:
			nsent++;
			break;
		case QUEUE_RCPT_PENDING:
			ndef++;
			break;
		case QUEUE_RCPT_BOUNCED:
			nbounce++;
			if (m->qf.env.mail_from[0] == '\0' ||
			    (m->qf.env.rcpt[i].notify != 0 &&
			    !(m->qf.env.rcpt[i].notify & QUEUE_NOTIFY_FAILURE)))
				break;
			failed[nfailed].rcpt = i;
			failed[nfailed].reason = st->reason != NULL ?
			    st->reason : "";
			failed[nfailed].expired = j->expired[k];
			nfailed++;
			break;
		}
	}
	if (nsent > 0)
		sched_event(qs, QUEUE_EV_RCPT_SENT, nsent);
	if (ndef > 0)
		sched_event(qs, QUEUE_EV_RCPT_DEFERRED, ndef);
	if (nbounce > 0)
		sched_event(qs, QUEUE_EV_RCPT_BOUNCED, nbounce);
	if (nfailed > 0 && qs->cfg.bounce != NULL)
		qs->cfg.bounce(qs->cfg.arg, m->id, m->path, &m->qf.env, failed,
		    nfailed);
	free(failed);
	m->inflight--;
	j->d->inflight--;
	qs->inflight--;
	for (i = 0; i < m->qf.env.nrcpt; i++)
		if (m->st[i].state == QUEUE_RCPT_PENDING) {
			all_done = 0;
			pending++;
		}
	if (all_done && m->inflight == 0) {
		if (unlink(m->path) < 0 && errno != ENOENT)
			queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
			    "queue: %s: unlink: %s", m->path, strerror(errno));
		queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG,
		    "%s: removed", m->id);
		sched_event(qs, QUEUE_EV_MSG_DONE,
		    (double)(time(NULL) - msg_arrival(m)));
		msg_drop(qs, m);
	} else {
		if (pending > 0)
			queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG,
			    "%s: %zu recipient%s pending", m->id, pending,
			    pending == 1 ? "" : "s");
		msg_update(qs, m);
	}
	job_free(j);
	if (qs->stopping)
		sched_maybe_close(qs);
	else
		sched_run(qs);
}

/* backoff - min(max, min * 2^(attempts-1)) seconds. */
static time_t
backoff(const struct queue_sched *qs, unsigned attempts)
{
	uint64_t b = qs->cfg.minimal_backoff_time;
	unsigned i;

	for (i = 1; i < attempts && b < qs->cfg.maximal_backoff_time; i++)
		b *= 2;
	if (b > qs->cfg.maximal_backoff_time)
		b = qs->cfg.maximal_backoff_time;
	return (time_t)b;
}

void
queue_job_done(struct queue_sched *qs, const struct queue_job *job,
    const struct queue_result *results)
{
	struct sjob *j = (struct sjob *)(void *)((char *)(uintptr_t)job -
	    offsetof(struct sjob, job));
	struct smsg *m = j->m;
	time_t now = time(NULL), age, life;
	struct queue_mark *mk;
	unsigned attempts;
	size_t k, i;
	char buf[QUEUE__R_REASON_MAX + 100];
	const char *why;

	age = now - msg_arrival(m);
	life = m->qf.env.mail_from[0] == '\0' ?
	    (time_t)qs->cfg.bounce_queue_lifetime :
	    (time_t)qs->cfg.maximal_queue_lifetime;
	j->marks = queue__xmalloc(job->nrcpt * sizeof(*j->marks));
	j->reasons = queue__xmalloc(job->nrcpt * sizeof(*j->reasons));
	j->expired = queue__xmalloc(job->nrcpt * sizeof(*j->expired));
	for (k = 0; k < job->nrcpt; k++) {
		i = j->rcpt[k];
		mk = &j->marks[k];
		attempts = m->st[i].attempts + 1;
		why = results[k].reason != NULL ? results[k].reason : "";
		j->expired[k] = 0;
		mk->rcpt = i;
		mk->when = now;
		mk->next_try = 0;
		mk->attempts = attempts;
		switch (results[k].outcome) {
		case QUEUE_OUT_SENT:
			mk->state = QUEUE_RCPT_SENT;
			break;
		case QUEUE_OUT_BOUNCED:
			mk->state = QUEUE_RCPT_BOUNCED;
			break;
		case QUEUE_OUT_DEFERRED:
		default:
			if (age >= life) {
				mk->state = QUEUE_RCPT_BOUNCED;
				j->expired[k] = 1;
				snprintf(buf, sizeof(buf), "message expired "
				    "after %lld days in queue (last: %.*s)",
				    (long long)(age / 86400),
				    QUEUE__R_REASON_MAX, why);
				why = buf;
				break;
			}
			mk->state = QUEUE_RCPT_PENDING;
			mk->next_try = now + backoff(qs, attempts);
			break;
		}
		j->reasons[k] = queue__xstrdup(why);
		mk->reason = j->reasons[k];
	}
	j->work.data = j;
	if (uv_queue_work(qs->loop, &j->work, mark_work, mark_done) != 0) {
		/* Cannot happen with a live loop; do it here rather than lose it. */
		mark_work(&j->work);
		mark_done(&j->work, 0);
	}
}

/* ---- notify -------------------------------------------------------------- */

/* async_cb - load what queue_sched_notify announced and schedule it now. */
static void
async_cb(uv_async_t *h)
{
	struct queue_sched *qs = h->data;
	char (*ids)[QUEUE_ID_LEN + 1];
	struct smsg *m;
	size_t i, n;
	int rc;

	pthread_mutex_lock(&qs->lock);
	ids = qs->nids;
	n = qs->nn;
	qs->nids = NULL;
	qs->nn = qs->nncap = 0;
	pthread_mutex_unlock(&qs->lock);
	for (i = 0; i < n && !qs->stopping; i++) {
		rc = msg_load(qs, "active", ids[i], &m);
		if (rc == -EEXIST)
			continue;
		if (rc != 0)
			queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
			    "queue: %s/active/%s: not loaded: %s", qs->dir,
			    ids[i], strerror(-rc));
		else if (m != NULL)
			queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG,
			    "%s: queued, %zu recipient%s", m->id,
			    m->qf.env.nrcpt, m->qf.env.nrcpt == 1 ? "" : "s");
	}
	free(ids);
	if (!qs->stopping)
		sched_run(qs);
}

void
queue_sched_notify(struct queue_sched *qs, const char *id)
{
	if (strlen(id) != QUEUE_ID_LEN)
		return;
	pthread_mutex_lock(&qs->lock);
	if (qs->nn == qs->nncap) {
		qs->nncap = qs->nncap ? qs->nncap * 2 : 64;
		if ((qs->nids = realloc(qs->nids, qs->nncap *
		    sizeof(*qs->nids))) == NULL)
			abort();
	}
	memcpy(qs->nids[qs->nn++], id, QUEUE_ID_LEN + 1);
	pthread_mutex_unlock(&qs->lock);
	uv_async_send(&qs->async);
}

/* ---- life cycle ---------------------------------------------------------- */

int
queue_sched_new(uv_loop_t *loop, const struct queue_sched_config *cfg,
    struct queue_sched **out)
{
	struct queue_sched *qs;
	char path[4096];
	int rc;

	*out = NULL;
	if (cfg->spool_dir == NULL || cfg->deliver == NULL)
		return -EINVAL;
	if ((qs = calloc(1, sizeof(*qs))) == NULL)
		return -ENOMEM;
	qs->loop = loop;
	qs->cfg = *cfg;
	qs->dir = queue__xstrdup(cfg->spool_dir);
	qs->cfg.spool_dir = qs->dir;
	if (qs->cfg.minimal_backoff_time == 0)
		qs->cfg.minimal_backoff_time = 300;
	if (qs->cfg.maximal_backoff_time < qs->cfg.minimal_backoff_time)
		qs->cfg.maximal_backoff_time = qs->cfg.minimal_backoff_time;
	if (qs->cfg.destination_concurrency == 0)
		qs->cfg.destination_concurrency = 20;
	if (qs->cfg.max_jobs == 0)
		qs->cfg.max_jobs = 100;
	pthread_mutex_init(&qs->lock, NULL);
	snprintf(path, sizeof(path), "%s/hold", qs->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		goto fail;
	}
	if ((rc = load_dir(qs, "active")) != 0 ||
	    (rc = load_dir(qs, "hold")) != 0)
		goto fail;
	if ((rc = uv_timer_init(loop, &qs->timer)) != 0)
		goto fail;
	qs->timer.data = qs;
	if ((rc = uv_async_init(loop, &qs->async, async_cb)) != 0) {
		/* The timer is on the loop now: close it the normal way. */
		qs->stopping = 1;
		qs->closing = 1;
		uv_close((uv_handle_t *)&qs->timer, sched_close_cb);
		return rc;
	}
	qs->async.data = qs;
	queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG,
	    "queue: manager: %zu active, %zu held", qs->nactive, qs->nheld);
	/* The first run on the loop, not inside this call. */
	uv_timer_start(&qs->timer, timer_cb, 0, 0);
	*out = qs;
	return 0;
fail:
	{
		struct smsg *m;

		while ((m = qs->all) != NULL)
			msg_drop(qs, m);
	}
	free(qs->mtab);
	free(qs->dtab);
	free(qs->heap);
	free(qs->dir);
	pthread_mutex_destroy(&qs->lock);
	free(qs);
	return rc;
}

void
queue_sched_stop(struct queue_sched *qs, void (*cb)(void *arg), void *arg)
{
	qs->stopping = 1;
	qs->stop_cb = cb;
	qs->stop_arg = arg;
	uv_timer_stop(&qs->timer);
	sched_maybe_close(qs);
}

/* ---- administration ------------------------------------------------------ */

void
queue_sched_list(struct queue_sched *qs,
    void (*fn)(void *arg, const struct queue_info *info), void *arg)
{
	struct queue_info qi;
	struct smsg *m, *next;
	size_t i;

	for (m = qs->all; m != NULL; m = next) {
		next = m->next;
		memset(&qi, 0, sizeof(qi));
		memcpy(qi.id, m->id, sizeof(qi.id));
		qi.arrival = msg_arrival(m);
		qi.size = m->qf.msg_size + m->qf.siglen;
		qi.sender = m->qf.env.mail_from;
		qi.nrcpt = m->qf.env.nrcpt;
		qi.held = m->held;
		for (i = 0; i < m->qf.env.nrcpt; i++) {
			if (m->st[i].state != QUEUE_RCPT_PENDING)
				continue;
			if (qi.npending == 0 || m->st[i].next_try < qi.next_try)
				qi.next_try = m->st[i].next_try;
			qi.npending++;
		}
		fn(arg, &qi);
	}
}

/* msg_now - make every pending recipient of m due now (memory only). */
static void
msg_now(struct queue_sched *qs, struct smsg *m, time_t now)
{
	size_t i;

	for (i = 0; i < m->qf.env.nrcpt; i++)
		if (m->st[i].state == QUEUE_RCPT_PENDING &&
		    m->st[i].next_try > now)
			m->st[i].next_try = now;
	msg_update(qs, m);
}

int
queue_sched_flush(struct queue_sched *qs, const char *id)
{
	time_t now = time(NULL);
	struct smsg *m;

	if (id != NULL) {
		if ((m = msg_find(qs, id)) == NULL)
			return -ENOENT;
		if (!m->held)
			msg_now(qs, m, now);
	} else {
		for (m = qs->all; m != NULL; m = m->next)
			if (!m->held)
				msg_now(qs, m, now);
	}
	qs->flushing = 1;
	if (!qs->stopping)
		sched_run(qs);
	return 0;
}

/* msg_move - rename m between active/ and hold/. */
static int
msg_move(struct queue_sched *qs, struct smsg *m, const char *to)
{
	size_t n = strlen(qs->dir) + strlen(to) + QUEUE_ID_LEN + 3;
	char *path = queue__xmalloc(n);

	snprintf(path, n, "%s/%s/%s", qs->dir, to, m->id);
	if (rename(m->path, path) < 0) {
		int rc = -errno;

		queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
		    "queue: %s: rename to %s/: %s", m->path, to,
		    strerror(errno));
		free(path);
		return rc;
	}
	free(m->path);
	m->path = path;
	return 0;
}

int
queue_sched_hold(struct queue_sched *qs, const char *id)
{
	struct smsg *m;
	int rc;

	if ((m = msg_find(qs, id)) == NULL)
		return -ENOENT;
	if (m->held)
		return 0;
	if (m->inflight > 0)
		return -EBUSY;
	if ((rc = msg_move(qs, m, "hold")) != 0)
		return rc;
	msg_unqueue(qs, m);
	m->held = 1;
	qs->nactive--;
	qs->nheld++;
	msg_update(qs, m);
	queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG, "%s: held", m->id);
	return 0;
}

int
queue_sched_release(struct queue_sched *qs, const char *id)
{
	struct smsg *m;
	int rc;

	if ((m = msg_find(qs, id)) == NULL)
		return -ENOENT;
	if (!m->held)
		return 0;
	if ((rc = msg_move(qs, m, "active")) != 0)
		return rc;
	m->held = 0;
	qs->nheld--;
	qs->nactive++;
	msg_now(qs, m, time(NULL));
	queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG, "%s: released",
	    m->id);
	if (!qs->stopping)
		sched_run(qs);
	return 0;
}

int
queue_sched_delete(struct queue_sched *qs, const char *id)
{
	struct smsg *m;

	if ((m = msg_find(qs, id)) == NULL)
		return -ENOENT;
	if (m->inflight > 0)
		return -EBUSY;
	if (unlink(m->path) < 0 && errno != ENOENT) {
		int rc = -errno;

		queue__logf(qs->cfg.log, qs->cfg.arg, LOG_ERR,
		    "queue: %s: unlink: %s", m->path, strerror(errno));
		return rc;
	}
	queue__logf(qs->cfg.log, qs->cfg.arg, LOG_DEBUG, "%s: deleted", m->id);
	sched_event(qs, QUEUE_EV_MSG_DELETED, 1);
	msg_drop(qs, m);
	if (!qs->stopping)
		timer_arm(qs);
	return 0;
}

void
queue_sched_counts(const struct queue_sched *qs, size_t *active,
    size_t *deferred, size_t *held, time_t *oldest)
{
	const struct smsg *m;
	time_t o = 0, a;

	if (active != NULL)
		*active = qs->nactive;
	if (deferred != NULL)
		*deferred = qs->ndeferred;
	if (held != NULL)
		*held = qs->nheld;
	if (oldest != NULL) {
		for (m = qs->all; m != NULL; m = m->next) {
			a = msg_arrival(m);
			if (o == 0 || a < o)
				o = a;
		}
		*oldest = o;
	}
}
