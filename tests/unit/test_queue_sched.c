/*
 * test_queue_sched.c - the queue manager (queue/sched.c) on a private loop
 * and a mkdtemp spool, with a fake deliver callback that records every job
 * and answers by the recipient's local part: "ok..." sent, "tmp..."
 * deferred, "bad..." bounced; with hold set, jobs wait for the test.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "queue/queue.h"
#include "tests/unit/test.h"

#define MAXJ 64

struct rec {
	char id[QUEUE_ID_LEN + 1], domain[64];
	size_t nrcpt, rcpt[8];
	unsigned attempt;
	time_t t;
};

struct fake {
	struct rec jobs[MAXJ];
	int njobs;
	int hold;                       /* keep jobs for the test to answer */
	const struct queue_job *held[MAXJ];
	int nheld;
	int tmp_left;                   /* "tmp" answers before "ok" (-1: always) */
	int bounces, nfailed, expired;
	size_t failed[16];
	char reason[256];
	int stopped, done_ev;
};

/* answer - the scripted outcome for one job. */
static void
answer(struct queue_sched *qs, struct fake *f, const struct queue_job *job)
{
	struct queue_result res[8];
	const char *a;
	size_t i;
	int deferred = 0;

	for (i = 0; i < job->nrcpt; i++) {
		a = job->env->rcpt[job->rcpt[i]].addr;
		if (strncmp(a, "ok", 2) == 0)
			res[i] = (struct queue_result){ QUEUE_OUT_SENT, "250 ok" };
		else if (strncmp(a, "bad", 3) == 0)
			res[i] = (struct queue_result){ QUEUE_OUT_BOUNCED,
			    "550 5.1.1 no such user" };
		else if (f->tmp_left != 0 && ++deferred)
			res[i] = (struct queue_result){ QUEUE_OUT_DEFERRED,
			    "451 4.3.0 try later" };
		else
			res[i] = (struct queue_result){ QUEUE_OUT_SENT, "250 ok" };
	}
	if (deferred && f->tmp_left > 0)
		f->tmp_left--;
	queue_job_done(qs, job, res);
}

/* on_deliver - record, then answer now or keep. */
static void
on_deliver(void *arg, struct queue_sched *qs, const struct queue_job *job)
{
	struct fake *f = arg;
	struct rec *r;
	size_t i;

	T_TRUE(f->njobs < MAXJ);
	r = &f->jobs[f->njobs++];
	snprintf(r->id, sizeof(r->id), "%s", job->id);
	snprintf(r->domain, sizeof(r->domain), "%s", job->domain);
	r->nrcpt = job->nrcpt;
	for (i = 0; i < job->nrcpt && i < 8; i++)
		r->rcpt[i] = job->rcpt[i];
	r->attempt = job->attempt;
	r->t = time(NULL);
	if (f->hold)
		f->held[f->nheld++] = job;
	else
		answer(qs, f, job);
}

/* on_bounce - remember the failed recipients. */
static void
on_bounce(void *arg, const char *id, const char *path,
    const struct queue_envelope *env, const struct queue_failed *failed,
    size_t n)
{
	struct fake *f = arg;
	size_t i;

	(void)id;
	(void)path;
	T_TRUE(env->mail_from[0] != '\0');
	f->bounces++;
	for (i = 0; i < n; i++) {
		f->failed[f->nfailed++] = failed[i].rcpt;
		f->expired += failed[i].expired;
		snprintf(f->reason, sizeof(f->reason), "%s", failed[i].reason);
	}
}

static void
on_event(void *arg, enum queue_event ev, double v)
{
	(void)v;
	if (ev == QUEUE_EV_MSG_DONE)
		((struct fake *)arg)->done_ev++;
}

static void
on_log(void *arg, int prio, const char *msg)
{
	(void)arg;
	if (getenv("TEST_VERBOSE") != NULL || prio <= 3)
		fprintf(stderr, "  [log %d] %s\n", prio, msg);
}

/* ---- spool helpers ------------------------------------------------------- */

static char *
make_tmpdir(void)
{
	char *d = strdup("/tmp/signet-sched-XXXXXX");

	T_TRUE(d != NULL && mkdtemp(d) != NULL);
	return d;
}

static void
rm_rf(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	T_OK(system(cmd));
}

static int
exists(const char *dir, const char *sub, const char *id)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, id);
	return stat(p, &st) == 0;
}

static void
on_commit(void *arg, int status, const char *id)
{
	T_EQ(status, 0);
	strcpy(arg, id);
}

static void
on_spool_closed(void *arg)
{
	(void)arg;
}

/*
 * spool_msg - commit one message with these recipients (comma-separated,
 * "addr/notify") through a real spool on its own loop; id out.
 */
static void
spool_msg(const char *dir, const char *from, const char *rcpts,
    time_t arrival, char *id)
{
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct queue_msg *m;
	uv_loop_t loop;
	char *list = strdup(rcpts), *tok, *save = NULL, *sl;
	size_t n = 0;

	memset(&env, 0, sizeof(env));
	env.mail_from = strdup(from);
	env.helo = strdup("client.test");
	env.client_addr = strdup("127.0.0.1");
	env.arrival = arrival;
	env.rcpt = calloc(8, sizeof(*env.rcpt));
	for (tok = strtok_r(list, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if ((sl = strchr(tok, '/')) != NULL) {
			*sl = '\0';
			env.rcpt[n].notify = atoi(sl + 1);
		}
		env.rcpt[n++].addr = strdup(tok);
	}
	env.nrcpt = n;
	free(list);
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.log = on_log;
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	T_OK(queue_msg_new(sp, &env, &m));
	queue_msg_write(m, "Subject: x\r\n\r\nhi\r\n", 18);
	id[0] = '\0';
	queue_msg_commit(m, NULL, 0, on_commit, id);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(strlen(id), QUEUE_ID_LEN);
	queue_spool_close(sp, on_spool_closed, NULL);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));
	queue_envelope_free(&env);
}

/* ---- manager helpers ----------------------------------------------------- */

struct env_t {
	uv_loop_t loop;
	uv_timer_t tick;
	struct queue_sched_config cfg;
	struct queue_sched *qs;
	struct fake f;
	char *dir;
};

static void
tick_cb(uv_timer_t *h)
{
	(void)h;
}

static void
start(struct env_t *e)
{
	T_OK(queue_sched_new(&e->loop, &e->cfg, &e->qs));
}

static void
setup(struct env_t *e)
{
	memset(e, 0, sizeof(*e));
	e->dir = make_tmpdir();
	T_OK(uv_loop_init(&e->loop));
	T_OK(uv_timer_init(&e->loop, &e->tick));
	T_OK(uv_timer_start(&e->tick, tick_cb, 20, 20));
	e->cfg.spool_dir = e->dir;
	e->cfg.minimal_backoff_time = 1;
	e->cfg.maximal_backoff_time = 10;
	e->cfg.maximal_queue_lifetime = 5 * 86400;
	e->cfg.bounce_queue_lifetime = 5 * 86400;
	e->cfg.destination_concurrency = 20;
	e->cfg.max_jobs = 100;
	e->cfg.deliver = on_deliver;
	e->cfg.bounce = on_bounce;
	e->cfg.event = on_event;
	e->cfg.log = on_log;
	e->cfg.arg = &e->f;
}

/* run_for - run the loop for ms milliseconds. */
static void
run_for(struct env_t *e, unsigned ms)
{
	uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;

	while (uv_hrtime() < end)
		uv_run(&e->loop, UV_RUN_ONCE);
}

#define RUN_UNTIL(e, cond, ms)                                              \
	do {                                                                \
		uint64_t end_ = uv_hrtime() + (uint64_t)(ms) * 1000000;     \
		while (!(cond) && uv_hrtime() < end_)                       \
			uv_run(&(e)->loop, UV_RUN_ONCE);                    \
		if (!(cond))                                                \
			T_FAIL("timed out waiting for %s", #cond);          \
	} while (0)

static void
on_stopped(void *arg)
{
	((struct fake *)arg)->stopped++;
}

static void
stop(struct env_t *e)
{
	e->f.stopped = 0;
	queue_sched_stop(e->qs, on_stopped, &e->f);
	RUN_UNTIL(e, e->f.stopped == 1, 5000);
	e->qs = NULL;
}

static void
teardown(struct env_t *e)
{
	if (e->qs != NULL)
		stop(e);
	uv_close((uv_handle_t *)&e->tick, NULL);
	T_OK(uv_run(&e->loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&e->loop));
	rm_rf(e->dir);
	free(e->dir);
}

static size_t
active_count(struct env_t *e)
{
	size_t a;

	queue_sched_counts(e->qs, &a, NULL, NULL, NULL);
	return a;
}

/* ---- tests --------------------------------------------------------------- */

TEST(queue_sched_domains)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1];
	int i, seen = 0;

	setup(&e);
	spool_msg(e.dir, "s@src.test",
	    "ok1@a.test,ok2@A.Test,ok3@b.test,ok4@c.test,ok5@c.test", 0, id);
	start(&e);
	RUN_UNTIL(&e, active_count(&e) == 0, 5000);
	T_EQ(e.f.njobs, 3);
	for (i = 0; i < 3; i++) {
		struct rec *r = &e.f.jobs[i];

		T_STREQ(r->id, id);
		T_EQ(r->attempt, 1);
		if (strcmp(r->domain, "a.test") == 0) {
			T_EQ(r->nrcpt, 2);
			T_EQ(r->rcpt[0], 0);
			T_EQ(r->rcpt[1], 1);
			seen |= 1;
		} else if (strcmp(r->domain, "b.test") == 0) {
			T_EQ(r->nrcpt, 1);
			seen |= 2;
		} else {
			T_STREQ(r->domain, "c.test");
			T_EQ(r->nrcpt, 2);
			seen |= 4;
		}
	}
	T_EQ(seen, 7);
	T_TRUE(!exists(e.dir, "active", id));
	T_EQ(e.f.done_ev, 1);
	T_EQ(e.f.bounces, 0);
	teardown(&e);
}

TEST(queue_sched_concurrency)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1];
	struct queue_result ok = { QUEUE_OUT_SENT, "250 ok" };
	int i;

	setup(&e);
	for (i = 0; i < 5; i++)
		spool_msg(e.dir, "s@src.test", "ok@d.test", 0, id);
	spool_msg(e.dir, "s@src.test", "ok@other.test", 0, id);
	e.cfg.destination_concurrency = 2;
	e.cfg.max_jobs = 3;
	e.f.hold = 1;
	start(&e);
	RUN_UNTIL(&e, e.f.njobs == 3, 5000);
	run_for(&e, 100);
	T_EQ(e.f.njobs, 3);
	for (i = 0; i < 3; i++)
		if (strcmp(e.f.jobs[i].domain, "other.test") == 0)
			break;
	T_TRUE(i < 3);          /* round-robin: other.test not starved */
	/* Answer one at a time: never more than 2 for d.test, 3 in all. */
	while (e.f.nheld > 0) {
		const struct queue_job *j = e.f.held[0];
		int in_d = 0, k;

		memmove(e.f.held, e.f.held + 1, (size_t)--e.f.nheld *
		    sizeof(e.f.held[0]));
		queue_job_done(e.qs, j, &ok);
		run_for(&e, 50);
		for (k = 0; k < e.f.nheld; k++)
			in_d += strcmp(e.f.held[k]->domain, "d.test") == 0;
		T_TRUE(in_d <= 2);
		T_TRUE(e.f.nheld <= 3);
	}
	T_EQ(e.f.njobs, 6);
	RUN_UNTIL(&e, active_count(&e) == 0, 5000);
	teardown(&e);
}

TEST(queue_sched_deferred)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1], path[512];
	struct queue_rcpt_status *st;
	size_t deferred;

	setup(&e);
	spool_msg(e.dir, "s@src.test", "tmp@x.test,ok@y.test", 0, id);
	snprintf(path, sizeof(path), "%s/active/%s", e.dir, id);
	e.f.tmp_left = 2;
	/*
	 * Times have whole seconds: with a 1 s backoff a retry may come at
	 * once when the first try ends just before a second ticks over, so
	 * use 2 s (next try 1 to 2 s later) and then 4 s.
	 */
	e.cfg.minimal_backoff_time = 2;
	start(&e);
	RUN_UNTIL(&e, e.f.njobs >= 2, 5000);
	run_for(&e, 100);
	queue_sched_counts(e.qs, NULL, &deferred, NULL, NULL);
	T_EQ(deferred, 1);
	T_OK(queue_file_status(path, 2, &st));
	T_EQ(st[1].state, QUEUE_RCPT_SENT);
	T_EQ(st[0].state, QUEUE_RCPT_PENDING);
	T_EQ(st[0].attempts, 1);
	T_EQ(st[0].next_try, st[0].last_try + 2);
	T_STREQ(st[0].reason, "451 4.3.0 try later");
	queue_status_free(st, 2);
	RUN_UNTIL(&e, e.f.njobs == 3, 4000);
	T_EQ(e.f.jobs[2].attempt, 2);
	T_STREQ(e.f.jobs[2].domain, "x.test");
	run_for(&e, 100);
	T_OK(queue_file_status(path, 2, &st));
	T_EQ(st[0].attempts, 2);
	T_EQ(st[0].next_try, st[0].last_try + 4);
	T_TRUE(e.f.jobs[2].t >= st[0].last_try - 4);
	queue_status_free(st, 2);
	RUN_UNTIL(&e, e.f.njobs == 4, 6000);
	T_EQ(e.f.jobs[3].attempt, 3);
	T_TRUE(e.f.jobs[3].t >= e.f.jobs[2].t + 4);
	RUN_UNTIL(&e, active_count(&e) == 0, 3000);
	T_TRUE(!exists(e.dir, "active", id));
	teardown(&e);
}

TEST(queue_sched_bounce)
{
	struct env_t e;
	char id1[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1];

	setup(&e);
	/* NEVER = 1, FAILURE|DELAY = 12, SUCCESS = 2 */
	spool_msg(e.dir, "s@src.test",
	    "bad0@a.test,bad1@a.test/1,bad2@b.test/12,ok3@a.test,bad4@a.test/2",
	    0, id1);
	spool_msg(e.dir, "", "bad@a.test", 0, id2);
	start(&e);
	RUN_UNTIL(&e, active_count(&e) == 0, 5000);
	T_EQ(e.f.nfailed, 2);
	T_EQ(e.f.failed[0] + e.f.failed[1], 0 + 2);
	T_TRUE(e.f.failed[0] == 0 || e.f.failed[1] == 0);
	T_EQ(e.f.expired, 0);
	T_TRUE(!exists(e.dir, "active", id1));
	T_TRUE(!exists(e.dir, "active", id2));
	teardown(&e);
}

TEST(queue_sched_expire)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1];

	setup(&e);
	spool_msg(e.dir, "s@src.test", "tmp@x.test", time(NULL) - 10 * 86400,
	    id);
	e.f.tmp_left = -1;
	start(&e);
	RUN_UNTIL(&e, active_count(&e) == 0, 5000);
	T_EQ(e.f.njobs, 1);
	T_EQ(e.f.bounces, 1);
	T_EQ(e.f.expired, 1);
	T_STREQ(e.f.reason, "message expired after 10 days in queue "
	    "(last: 451 4.3.0 try later)");
	teardown(&e);
}

TEST(queue_sched_restart)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1];
	size_t deferred;

	setup(&e);
	spool_msg(e.dir, "s@src.test", "ok@a.test,tmp@b.test,ok2@a.test", 0,
	    id);
	e.f.tmp_left = -1;
	e.cfg.minimal_backoff_time = 100;
	e.cfg.maximal_backoff_time = 100;
	start(&e);
	RUN_UNTIL(&e, e.f.njobs == 2, 5000);
	queue_sched_counts(e.qs, NULL, &deferred, NULL, NULL);
	RUN_UNTIL(&e, (queue_sched_counts(e.qs, NULL, &deferred, NULL, NULL),
	    deferred == 1), 5000);
	stop(&e);
	/* A new manager on the same spool: only b.test, and not before due. */
	e.f.njobs = 0;
	e.f.tmp_left = 0;
	start(&e);
	run_for(&e, 200);
	T_EQ(e.f.njobs, 0);
	T_EQ(active_count(&e), 1);
	T_OK(queue_sched_flush(e.qs, NULL));
	RUN_UNTIL(&e, active_count(&e) == 0, 5000);
	T_EQ(e.f.njobs, 1);
	T_STREQ(e.f.jobs[0].domain, "b.test");
	T_EQ(e.f.jobs[0].nrcpt, 1);
	T_EQ(e.f.jobs[0].rcpt[0], 1);
	T_EQ(e.f.jobs[0].attempt, 2);
	teardown(&e);
}

struct listed {
	int n, held;
	size_t npending;
};

static void
on_list(void *arg, const struct queue_info *qi)
{
	struct listed *l = arg;

	l->n++;
	l->held += qi->held;
	l->npending += qi->npending;
}

TEST(queue_sched_admin)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1];
	struct queue_result tmp = { QUEUE_OUT_DEFERRED, "421 busy" };
	struct listed l;
	size_t a, d, h;
	time_t oldest;

	setup(&e);
	spool_msg(e.dir, "s@src.test", "tmp@x.test", 0, id);
	spool_msg(e.dir, "s@src.test", "tmp@y.test", 0, id2);
	e.cfg.minimal_backoff_time = 100;
	e.cfg.maximal_backoff_time = 100;
	e.f.hold = 1;
	start(&e);
	RUN_UNTIL(&e, e.f.nheld == 2, 5000);
	T_EQ(queue_sched_hold(e.qs, id), -EBUSY);
	T_EQ(queue_sched_delete(e.qs, id), -EBUSY);
	T_EQ(queue_sched_hold(e.qs, "0000000000000000zz"), -ENOENT);
	queue_job_done(e.qs, e.f.held[0], &tmp);
	queue_job_done(e.qs, e.f.held[1], &tmp);
	e.f.nheld = 0;
	RUN_UNTIL(&e, (queue_sched_counts(e.qs, &a, &d, &h, &oldest),
	    d == 2), 5000);
	T_EQ(a, 2);
	T_TRUE(oldest > 0 && oldest <= time(NULL));
	/* flush one: it goes at once, attempt 2. */
	T_OK(queue_sched_flush(e.qs, id2));
	T_EQ(e.f.nheld, 1);
	T_EQ(e.f.jobs[2].attempt, 2);
	queue_job_done(e.qs, e.f.held[0], &tmp);
	e.f.nheld = 0;
	RUN_UNTIL(&e, (queue_sched_counts(e.qs, &a, &d, &h, &oldest),
	    d == 2), 5000);
	run_for(&e, 50);
	/* hold: moved, not scheduled even by flush. */
	T_OK(queue_sched_hold(e.qs, id));
	T_TRUE(exists(e.dir, "hold", id));
	T_TRUE(!exists(e.dir, "active", id));
	queue_sched_counts(e.qs, &a, &d, &h, NULL);
	T_EQ(a, 1);
	T_EQ(h, 1);
	T_OK(queue_sched_flush(e.qs, id));
	run_for(&e, 50);
	T_EQ(e.f.nheld, 0);
	memset(&l, 0, sizeof(l));
	queue_sched_list(e.qs, on_list, &l);
	T_EQ(l.n, 2);
	T_EQ(l.held, 1);
	T_EQ(l.npending, 2);
	/* release: back and at once. */
	T_OK(queue_sched_release(e.qs, id));
	T_TRUE(exists(e.dir, "active", id));
	T_EQ(e.f.nheld, 1);
	T_STREQ(e.f.jobs[e.f.njobs - 1].id, id);
	queue_job_done(e.qs, e.f.held[0], &tmp);
	e.f.nheld = 0;
	run_for(&e, 100);
	/* delete: gone without a bounce. */
	T_OK(queue_sched_delete(e.qs, id));
	T_TRUE(!exists(e.dir, "active", id));
	T_EQ(queue_sched_delete(e.qs, id), -ENOENT);
	T_EQ(queue_sched_flush(e.qs, id), -ENOENT);
	T_EQ(active_count(&e), 1);
	T_EQ(e.f.bounces, 0);
	teardown(&e);
}

struct notify_arg {
	struct queue_sched *qs;
	const char *id;
};

static void *
notify_thread(void *p)
{
	struct notify_arg *na = p;

	queue_sched_notify(na->qs, na->id);
	return NULL;
}

TEST(queue_sched_notify_thread)
{
	struct env_t e;
	char id[QUEUE_ID_LEN + 1];
	struct notify_arg na;
	pthread_t th;

	setup(&e);
	start(&e);
	run_for(&e, 50);
	T_EQ(e.f.njobs, 0);
	spool_msg(e.dir, "s@src.test", "ok@n.test", 0, id);
	na.qs = e.qs;
	na.id = id;
	T_OK(pthread_create(&th, NULL, notify_thread, &na));
	T_OK(pthread_join(th, NULL));
	queue_sched_notify(e.qs, id);          /* twice: loaded once */
	RUN_UNTIL(&e, e.f.njobs == 1 && active_count(&e) == 0, 5000);
	run_for(&e, 50);
	T_EQ(e.f.njobs, 1);
	T_STREQ(e.f.jobs[0].id, id);
	T_TRUE(!exists(e.dir, "active", id));
	teardown(&e);
}
