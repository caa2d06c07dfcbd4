/*
 * test_queue.c - unit tests for queue/: the envelope codec, queue ids, the
 * io_uring spool and its group commit on a private libuv loop, the file
 * checker and readers, recovery, and the write-error path (a 1 MB tmpfs
 * mounted in a private mount namespace, or RLIMIT_FSIZE where mounting is
 * not allowed).  Every test works in its own mkdtemp directory under /tmp.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "queue/queue.h"
#include "tests/unit/test.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* rng - xorshift64*, fixed seed so failures reproduce. */
static uint64_t
rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* make_tmpdir - a fresh directory under /tmp (removed by rm_rf). */
static char *
make_tmpdir(void)
{
	char *d = strdup("/tmp/signet-queue-XXXXXX");

	T_TRUE(d != NULL && mkdtemp(d) != NULL);
	return d;
}

/* rm_rf - remove a test directory tree. */
static void
rm_rf(const char *dir)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	T_OK(system(cmd));
}

/* count_files - entries in dir/sub other than . and .. (-1 if missing). */
static int
count_files(const char *dir, const char *sub)
{
	char path[512];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* sample_env - an envelope with every field set and some awkward bytes. */
static void
sample_env(struct queue_envelope *e, int nrcpt)
{
	char buf[64];
	int i;

	memset(e, 0, sizeof(*e));
	e->mail_from = strdup("bounce+x=y@example.org");
	e->envid = strdup("id with spaces%and\x01\x7f\tstuff");
	e->ret = QUEUE_RET_HDRS;
	e->body_8bit = 1;
	e->smtputf8 = 1;
	e->helo = strdup("mx.example.net");
	e->client_addr = strdup("[2001:db8::1]");
	e->auth_user = strdup("us\xc3\xa9r name");
	e->arrival = 1700000000;
	e->nrcpt = (size_t)nrcpt;
	e->rcpt = calloc((size_t)nrcpt, sizeof(*e->rcpt));
	for (i = 0; i < nrcpt; i++) {
		snprintf(buf, sizeof(buf), "rcpt%d@d\xc3\xa9st.example", i);
		e->rcpt[i].addr = strdup(buf);
		e->rcpt[i].notify = i % 3 == 0 ? 0 : i % 3 == 1 ?
		    QUEUE_NOTIFY_NEVER : QUEUE_NOTIFY_SUCCESS |
		    QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_DELAY;
		if (i % 2 == 0) {
			snprintf(buf, sizeof(buf), "rfc822;o%d\n=%%+ x@y", i);
			e->rcpt[i].orcpt = strdup(buf);
		}
	}
}

/* streq_null - both NULL or equal strings. */
static int
streq_null(const char *a, const char *b)
{
	return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

/* env_equal - field by field. */
static int
env_equal(const struct queue_envelope *a, const struct queue_envelope *b)
{
	size_t i;

	if (!streq_null(a->mail_from, b->mail_from) ||
	    !streq_null(a->envid, b->envid) || a->ret != b->ret ||
	    a->body_8bit != b->body_8bit || a->smtputf8 != b->smtputf8 ||
	    !streq_null(a->helo, b->helo) ||
	    !streq_null(a->client_addr, b->client_addr) ||
	    !streq_null(a->auth_user, b->auth_user) ||
	    a->arrival != b->arrival || a->nrcpt != b->nrcpt)
		return 0;
	for (i = 0; i < a->nrcpt; i++)
		if (!streq_null(a->rcpt[i].addr, b->rcpt[i].addr) ||
		    a->rcpt[i].notify != b->rcpt[i].notify ||
		    !streq_null(a->rcpt[i].orcpt, b->rcpt[i].orcpt))
			return 0;
	return 1;
}

/* ---- envelope ------------------------------------------------------------ */

TEST(queue_envelope_roundtrip)
{
	struct queue_envelope e, d;
	const char *p, *nl;
	size_t len;
	char *enc;
	int lines = 0;

	sample_env(&e, 7);
	T_TRUE((enc = queue_envelope_encode(&e, &len)) != NULL);
	/* One line per field: no value leaked a newline or a raw control. */
	for (p = enc; p < enc + len; p = nl + 1) {
		T_TRUE((nl = memchr(p, '\n', (size_t)(enc + len - p))) != NULL);
		for (; p < nl; p++)
			T_TRUE((unsigned char)*p >= 0x20 && *p != 0x7f);
		lines++;
	}
	T_EQ(lines, 9 + 7);
	T_OK(queue_envelope_decode(enc, len, &d));
	T_TRUE(env_equal(&e, &d));
	queue_envelope_free(&d);
	free(enc);
	queue_envelope_free(&e);

	/* The null reverse-path, nothing optional, no recipients. */
	memset(&e, 0, sizeof(e));
	e.mail_from = strdup("");
	e.arrival = -5;
	T_TRUE((enc = queue_envelope_encode(&e, &len)) != NULL);
	T_OK(queue_envelope_decode(enc, len, &d));
	T_TRUE(env_equal(&e, &d));
	T_STREQ(d.mail_from, "");
	T_TRUE(d.envid == NULL && d.helo == NULL && d.auth_user == NULL);
	queue_envelope_free(&d);
	free(enc);
	queue_envelope_free(&e);
	queue_envelope_free(&e);        /* idempotent */
}

TEST(queue_envelope_reject)
{
	static const char *bad[] = {
		"",                                   /* no from */
		"from a@b\n",                         /* no arrival */
		"from a@b\narrival 1",                /* no final newline */
		"from a@b\nfrom c@d\narrival 1\n",    /* repeated key */
		"from a@b\narrival 1\nbogus x\n",     /* unknown key */
		"from a%2@b\narrival 1\n",            /* short escape */
		"from a%G1b\narrival 1\n",            /* bad hex */
		"from a%00b\narrival 1\n",            /* NUL */
		"from a\tb\narrival 1\n",             /* raw control byte */
		"from a@b\narrival 1x\n",
		"from a@b\narrival \n",
		"from a@b\narrival 1\nret some\n",
		"from a@b\narrival 1\nrcpt x notify=sometimes\n",
		"from a@b\narrival 1\nrcpt x notify=success,\n",
		"from a@b\narrival 1\nrcpt x notify=delay,delay\n",
		"from a@b\narrival 1\nrcpt x orcpt=a orcpt=b\n",
		"from a@b\narrival 1\nrcpt x  orcpt=a\n",
		"from a@b\narrival 1\nrcpt x what=1\n",
		"from a@b\narrival 1\nsmtputf8 no\n",
		"fromnospace\narrival 1\n",
	};
	struct queue_envelope d;
	const char *p;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (queue_envelope_decode(bad[i], strlen(bad[i]), &d) !=
		    -EINVAL)
			T_FAIL("accepted bad envelope #%zu: %s", i, bad[i]);
		T_TRUE(d.mail_from == NULL && d.rcpt == NULL);
	}
	p = "from a@b\narrival 1\nrcpt x notify=failure,success\n";
	T_OK(queue_envelope_decode(p, strlen(p), &d));
	T_EQ(d.nrcpt, 1);
	T_EQ(d.rcpt[0].notify, QUEUE_NOTIFY_FAILURE | QUEUE_NOTIFY_SUCCESS);
	queue_envelope_free(&d);
	/* Lowercase escapes are read too; RET=FULL. */
	p = "from a%2ab%3A\narrival 1\nret full\n";
	T_OK(queue_envelope_decode(p, strlen(p), &d));
	T_STREQ(d.mail_from, "a*b:");
	T_EQ(d.ret, QUEUE_RET_FULL);
	queue_envelope_free(&d);
}

/* ---- ids ----------------------------------------------------------------- */

#define ID_THREADS 4
#define ID_PER_THREAD 20000

/* id_worker - make ids; each must sort after the one before. */
static void *
id_worker(void *arg)
{
	char (*ids)[QUEUE_ID_LEN + 1] = arg;
	int i;

	for (i = 0; i < ID_PER_THREAD; i++) {
		queue_id_new(ids[i]);
		if (i > 0 && strcmp(ids[i - 1], ids[i]) >= 0)
			return (void *)1;
	}
	return NULL;
}

/* idcmp - qsort on ids. */
static int
idcmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

TEST(queue_id_unique)
{
	char (*ids)[QUEUE_ID_LEN + 1];
	pthread_t th[ID_THREADS];
	time_t now = time(NULL), t;
	void *ret;
	size_t i, n = ID_THREADS * ID_PER_THREAD;

	T_TRUE((ids = calloc(n, sizeof(*ids))) != NULL);
	for (i = 0; i < ID_THREADS; i++)
		T_OK(pthread_create(&th[i], NULL, id_worker,
		    ids + i * ID_PER_THREAD));
	for (i = 0; i < ID_THREADS; i++) {
		T_OK(pthread_join(th[i], &ret));
		T_TRUE(ret == NULL);     /* monotonic within a thread */
	}
	for (i = 0; i < n; i++) {
		T_EQ(strlen(ids[i]), QUEUE_ID_LEN);
		T_EQ(strspn(ids[i], "0123456789ABCDEF"), QUEUE_ID_LEN);
		t = queue_id_time(ids[i]);
		T_TRUE(t >= now - 1 && t <= now + 5);
	}
	qsort(ids, n, sizeof(*ids), idcmp);
	for (i = 1; i < n; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			T_FAIL("duplicate id %s", ids[i]);
	free(ids);

	T_EQ(queue_id_time("0065B3B5F00F423F00"), 0x65B3B5F0);
	T_EQ(queue_id_time("0065B3B5F0F4240000"), -1);   /* 1000000 us */
	T_EQ(queue_id_time("0065b3b5f000000000"), -1);   /* lowercase */
	T_EQ(queue_id_time("0065B3B5F00000000"), -1);    /* short */
	T_EQ(queue_id_time("0065B3B5F0000000000"), -1);  /* long */
	T_EQ(queue_id_time("0065B3B5F0000000G0"), -1);
	T_EQ(queue_id_time(NULL), -1);
}

/* ---- spool --------------------------------------------------------------- */

struct counts {
	int batches, batch_max, committed, write_errors;
	double batch_sum, seconds;
};

/* on_event - the metrics hook, counted. */
static void
on_event(void *arg, enum queue_event ev, double v)
{
	struct counts *c = arg;

	switch (ev) {
	case QUEUE_EV_FSYNC_BATCH:
		c->batches++;
		c->batch_sum += v;
		if (v > c->batch_max)
			c->batch_max = (int)v;
		break;
	case QUEUE_EV_FSYNC_SECONDS:
		c->seconds += v;
		break;
	case QUEUE_EV_COMMITTED:
		c->committed++;
		break;
	case QUEUE_EV_WRITE_ERROR:
		c->write_errors++;
		break;
	default:
		break;
	}
}

/* on_log - print spool logs so a failing test explains itself. */
static void
on_log(void *arg, int prio, const char *msg)
{
	(void)arg;
	fprintf(stderr, "  [log %d] %s\n", prio, msg);
}

struct tmsg {
	struct queue_msg *m;
	char id[QUEUE_ID_LEN + 1];
	unsigned char *data;
	size_t size, written;
	char sig[128];
	int done, status;
};

/* on_commit - record the outcome; the id must be the message's. */
static void
on_commit(void *arg, int status, const char *id)
{
	struct tmsg *t = arg;

	T_EQ(t->done, 0);
	T_STREQ(id, t->id);
	t->done = 1;
	t->status = status;
}

/* on_closed - queue_spool_close finished. */
static void
on_closed(void *arg)
{
	(*(int *)arg)++;
}

/* close_spool - close, run the loop dry, and check nothing is left on it. */
static void
close_spool(uv_loop_t *loop, struct queue_spool *sp)
{
	int closed = 0;

	queue_spool_close(sp, on_closed, &closed);
	T_OK(uv_run(loop, UV_RUN_DEFAULT));
	T_EQ(closed, 1);
	T_OK(uv_loop_close(loop));
}

struct cmp {
	const unsigned char *want;
	size_t size, off;
};

/* cmp_chunk - queue_file_message callback: compare against the original. */
static int
cmp_chunk(void *arg, const char *p, size_t len)
{
	struct cmp *c = arg;

	if (c->off + len > c->size || memcmp(c->want + c->off, p, len) != 0)
		return 99;
	c->off += len;
	return 0;
}

/* check_file - the committed file gives back everything we put in. */
static void
check_file(const char *dir, const struct tmsg *t,
    const struct queue_envelope *env)
{
	struct queue_file qf;
	struct cmp c = { t->data, t->size, 0 };
	char path[512];

	snprintf(path, sizeof(path), "%s/active/%s", dir, t->id);
	T_OK(queue_file_check(path));
	T_OK(queue_file_read(path, &qf));
	T_TRUE(env_equal(env, &qf.env));
	T_EQ(qf.msg_size, t->size);
	if (t->sig[0] == '\0') {
		T_TRUE(qf.sig == NULL);
		T_EQ(qf.siglen, 0);
	} else {
		T_MEMEQ(qf.sig, qf.siglen, t->sig, strlen(t->sig));
	}
	queue_file_free(&qf);
	T_OK(queue_file_message(path, cmp_chunk, &c));
	T_EQ(c.off, t->size);
}

/* fill_random - message-like bytes: printable, CRLFs, and some binary. */
static void
fill_random(unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = rng();

		p[i] = (r & 63) == 0 ? '\r' : (r & 63) == 1 ? '\n' :
		    (r & 255) == 2 ? (unsigned char)(r >> 16) :
		    (unsigned char)(' ' + (r >> 8) % 95);
	}
}

TEST(queue_spool_batch)
{
	static const size_t sizes[] = { 0, 1, 65535, 65536, 65537, 5 << 20,
	    10000, 65536 - 5, 131072 - 10, 300 };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct counts c;
	struct tmsg t[N];
	uv_loop_t loop;
	char *dir = make_tmpdir();
	size_t left, k;
	int i, busy;

	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.commit_window_us = 30 * 1000000;  /* only max_batch may start it */
	cfg.max_batch = N;
	cfg.event = on_event;
	cfg.log = on_log;
	cfg.arg = &c;
	sample_env(&env, 3);
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	T_EQ(count_files(dir, "tmp"), 0);
	T_EQ(count_files(dir, "active"), 0);

	memset(t, 0, sizeof(t));
	for (i = 0; i < N; i++) {
		t[i].size = sizes[i];
		T_TRUE((t[i].data = malloc(sizes[i] + 1)) != NULL);
		fill_random(t[i].data, sizes[i]);
		if (i % 3 != 0)
			snprintf(t[i].sig, sizeof(t[i].sig), "DKIM-Signature: "
			    "v=1; a=rsa-sha256; d=example.org; b=%d\r\n", i);
		T_OK(queue_msg_new(sp, &env, &t[i].m));
		snprintf(t[i].id, sizeof(t[i].id), "%s", queue_msg_id(t[i].m));
		T_EQ(strlen(t[i].id), QUEUE_ID_LEN);
	}

	/*
	 * Interleave the sessions, random chunk sizes, and let the loop run
	 * now and then so that block writes complete while others stream.
	 */
	do {
		busy = 0;
		for (i = 0; i < N; i++) {
			if ((left = t[i].size - t[i].written) == 0)
				continue;
			busy = 1;
			k = 1 + rng() % (rng() % 4 == 0 ? 150000 : 3000);
			if (k > left)
				k = left;
			queue_msg_write(t[i].m, (char *)t[i].data +
			    t[i].written, k);
			t[i].written += k;
			T_TRUE(queue_msg_pending(t[i].m) <= t[i].written +
			    4096);
		}
		if (rng() % 8 == 0)
			uv_run(&loop, UV_RUN_NOWAIT);
	} while (busy);
	/* Every file exists in tmp/ by now (opened through the ring). */
	for (i = 0; i < 5000 && count_files(dir, "tmp") < N; i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	T_EQ(count_files(dir, "tmp"), N);
	T_EQ(count_files(dir, "active"), 0);

	for (i = 0; i < N; i++)
		queue_msg_commit(t[i].m, t[i].sig[0] != '\0' ? t[i].sig :
		    NULL, strlen(t[i].sig), on_commit, &t[i]);
	/* Work in flight keeps the loop alive, and nothing else does. */
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	for (i = 0; i < N; i++) {
		T_EQ(t[i].done, 1);
		T_EQ(t[i].status, 0);
	}
	T_EQ(c.batches, 1);
	T_EQ(c.batch_max, N);
	T_EQ(c.committed, N);
	T_EQ(c.write_errors, 0);
	T_TRUE(c.seconds > 0 && c.seconds < 30);
	T_EQ(count_files(dir, "tmp"), 0);
	T_EQ(count_files(dir, "active"), N);
	for (i = 0; i < N; i++)
		check_file(dir, &t[i], &env);
	close_spool(&loop, sp);
	T_EQ(queue_recover(dir, on_log, NULL), N);
	for (i = 0; i < N; i++)
		free(t[i].data);
	queue_envelope_free(&env);
	rm_rf(dir);
	free(dir);
}

/* env_sized - the sample envelope padded so that its record ends at end. */
static void
env_sized(struct queue_envelope *e, int nrcpt, size_t end)
{
	size_t len, rec;
	char *enc;

	sample_env(e, nrcpt);
	free(e->helo);
	e->helo = strdup("");
	T_TRUE((enc = queue_envelope_encode(e, &len)) != NULL);
	free(enc);
	rec = 12 + 5 + len;             /* file header, record header */
	T_TRUE(end >= rec);
	free(e->helo);
	T_TRUE((e->helo = malloc(end - rec + 1)) != NULL);
	memset(e->helo, 'h', end - rec);
	e->helo[end - rec] = '\0';
	T_TRUE((enc = queue_envelope_encode(e, &len)) != NULL);
	free(enc);
	T_EQ(12 + 5 + len, end);
}

TEST(queue_spool_framing)
{
	enum { N = 16 };
	struct queue_envelope env[N];
	struct queue_config cfg;
	struct queue_spool *sp;
	struct counts c;
	struct tmsg t[N];
	uv_loop_t loop;
	char *dir = make_tmpdir(), *bigsig;
	size_t siglen;
	int i;

	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.commit_window_us = 30 * 1000000;
	cfg.max_batch = N;
	cfg.event = on_event;
	cfg.log = on_log;
	cfg.arg = &c;
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	memset(t, 0, sizeof(t));
	for (i = 0; i < N; i++) {
		if (i < 8) {
			/* The 'E' record ends 5 bytes before to 2 after the
			 * first block: no room for an 'M' header, exactly
			 * room, and records across the boundary. */
			env_sized(&env[i], 2, 65536 - 5 + (size_t)i);
			t[i].size = 70000;
		} else if (i < 15) {
			/* The message ends 0-6 bytes before the block does,
			 * so the 'S' and 'X' records straddle it. */
			env_sized(&env[i], 2, 400);
			t[i].size = 65536 - 400 - 5 - (size_t)(i - 8);
		} else {
			/* An envelope and a signature bigger than a block. */
			sample_env(&env[i], 3000);
			t[i].size = 1;
		}
		T_TRUE((t[i].data = malloc(t[i].size)) != NULL);
		fill_random(t[i].data, t[i].size);
		T_OK(queue_msg_new(sp, &env[i], &t[i].m));
		strcpy(t[i].id, queue_msg_id(t[i].m));
		queue_msg_write(t[i].m, (char *)t[i].data, t[i].size / 3);
		queue_msg_write(t[i].m, (char *)t[i].data + t[i].size / 3,
		    t[i].size - t[i].size / 3);
		snprintf(t[i].sig, sizeof(t[i].sig), "DKIM-Signature: %d\r\n",
		    i);
		if (i < N - 1) {
			queue_msg_commit(t[i].m, t[i].sig, strlen(t[i].sig),
			    on_commit, &t[i]);
			continue;
		}
		siglen = 100000;
		T_TRUE((bigsig = malloc(siglen)) != NULL);
		memset(bigsig, 's', siglen);
		queue_msg_commit(t[i].m, bigsig, siglen, on_commit, &t[i]);
		free(bigsig);
	}
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(c.batches, 1);
	for (i = 0; i < N; i++) {
		struct queue_file qf;
		char path[512];

		T_EQ(t[i].done, 1);
		T_EQ(t[i].status, 0);
		if (i < N - 1) {
			check_file(dir, &t[i], &env[i]);
		} else {
			snprintf(path, sizeof(path), "%s/active/%s", dir,
			    t[i].id);
			T_OK(queue_file_check(path));
			T_OK(queue_file_read(path, &qf));
			T_EQ(qf.siglen, siglen);
			T_EQ(qf.env.nrcpt, 3000);
			T_TRUE(env_equal(&env[i], &qf.env));
			queue_file_free(&qf);
		}
		queue_envelope_free(&env[i]);
		free(t[i].data);
	}
	close_spool(&loop, sp);
	rm_rf(dir);
	free(dir);
}

/* spool_one - commit one message of size bytes with the given window. */
static void
spool_one(const char *dir, size_t size, unsigned window_us, char *id,
    struct counts *c)
{
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct tmsg t;
	uv_loop_t loop;

	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.commit_window_us = window_us;
	cfg.event = on_event;
	cfg.log = on_log;
	cfg.arg = c;
	sample_env(&env, 1);
	memset(&t, 0, sizeof(t));
	t.size = size;
	T_TRUE((t.data = malloc(size + 1)) != NULL);
	fill_random(t.data, size);
	strcpy(t.sig, "DKIM-Signature: v=1; a=ed25519-sha256; b=x\r\n");
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	T_OK(queue_msg_new(sp, &env, &t.m));
	strcpy(t.id, queue_msg_id(t.m));
	queue_msg_write(t.m, (char *)t.data, size);
	queue_msg_commit(t.m, t.sig, strlen(t.sig), on_commit, &t);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(t.done, 1);
	T_EQ(t.status, 0);
	check_file(dir, &t, &env);
	close_spool(&loop, sp);
	strcpy(id, t.id);
	free(t.data);
	queue_envelope_free(&env);
}

TEST(queue_spool_window)
{
	struct counts c;
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1], sub[512];

	/* A lone message goes when the window closes (default 1 ms). */
	memset(&c, 0, sizeof(c));
	snprintf(sub, sizeof(sub), "%s/var/spool", dir);   /* made by new */
	spool_one(sub, 1000, 0, id, &c);
	T_EQ(c.batches, 1);
	T_EQ(c.committed, 1);
	spool_one(sub, 200000, 5000, id, &c);
	T_EQ(c.batches, 2);
	T_EQ(count_files(sub, "active"), 2);
	rm_rf(dir);
	free(dir);
}

TEST(queue_spool_large)
{
	struct counts c;
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1];

	/*
	 * One 24 MB write: 384 blocks, more than the ring's 256 SQEs, so the
	 * spool has to submit as it goes.  check_file streams it back.
	 */
	memset(&c, 0, sizeof(c));
	spool_one(dir, 24 << 20, 0, id, &c);
	T_EQ(c.committed, 1);
	rm_rf(dir);
	free(dir);
}

TEST(queue_spool_stress)
{
	enum { N = 300, LIVE = 40 };
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct counts c;
	struct tmsg *t;
	unsigned char buf[20000];
	uv_loop_t loop;
	char *dir = make_tmpdir(), path[512];
	int i, started = 0, live = 0, aborted = 0, committed = 0, ok = 0;
	int closed = 0;

	/*
	 * Sessions start, stream, abort or commit at random while batches
	 * run; the spool closes with some still open.  Every commit is
	 * answered once, and what the callbacks said is what is on disk.
	 */
	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.max_batch = 16;
	cfg.event = on_event;
	cfg.log = on_log;
	cfg.arg = &c;
	sample_env(&env, 2);
	fill_random(buf, sizeof(buf));
	T_TRUE((t = calloc(N, sizeof(*t))) != NULL);
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	while (started < N || live > 0) {
		if (started < N && live < LIVE) {
			T_OK(queue_msg_new(sp, &env, &t[started].m));
			strcpy(t[started].id, queue_msg_id(t[started].m));
			started++;
			live++;
		}
		for (i = 0; i < started; i++) {
			uint64_t r = rng();

			if (t[i].m == NULL)
				continue;
			if (r % 50 == 0 && started == N) {
				queue_msg_abort(t[i].m);
				t[i].m = NULL;
				aborted++;
				live--;
			} else if (r % 7 == 0) {
				queue_msg_commit(t[i].m, "s: x\r\n", 6,
				    on_commit, &t[i]);
				t[i].m = NULL;
				t[i].sig[0] = 1;     /* committed */
				committed++;
				live--;
			} else {
				size_t k = (size_t)(r >> 8) % sizeof(buf);

				queue_msg_write(t[i].m, (char *)buf, k);
				t[i].size += k;
			}
		}
		uv_run(&loop, rng() % 3 == 0 ? UV_RUN_ONCE : UV_RUN_NOWAIT);
		if (started == N && committed > N / 2 && !closed) {
			/* Close with messages in every state. */
			closed = 1;
			queue_spool_close(sp, on_closed, &ok);
			for (i = 0; i < started; i++)
				if (t[i].m != NULL) {
					t[i].m = NULL;     /* aborted by close */
					aborted++;
					live--;
				}
		}
	}
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(ok, 1);
	T_OK(uv_loop_close(&loop));
	T_EQ(committed + aborted, N);
	for (i = 0, ok = 0; i < N; i++) {
		if (!t[i].sig[0]) {
			T_EQ(t[i].done, 0);
			continue;
		}
		T_EQ(t[i].done, 1);
		T_EQ(t[i].status, 0);
		snprintf(path, sizeof(path), "%s/active/%s", dir, t[i].id);
		T_OK(queue_file_check(path));
		ok++;
	}
	T_EQ(ok, committed);
	T_EQ(c.committed, committed);
	T_EQ(count_files(dir, "active"), committed);
	T_EQ(count_files(dir, "tmp"), 0);
	T_TRUE(c.batches < committed);
	free(t);
	queue_envelope_free(&env);
	rm_rf(dir);
	free(dir);
}

/* copy_file - src to dst, at most limit bytes; flip byte at flip if >= 0. */
static void
copy_file(const char *src, const char *dst, long limit, long flip)
{
	FILE *in, *out;
	long i = 0;
	int ch;

	T_TRUE((in = fopen(src, "rb")) != NULL);
	T_TRUE((out = fopen(dst, "wb")) != NULL);
	while ((limit < 0 || i < limit) && (ch = getc(in)) != EOF) {
		if (i == flip)
			ch ^= 0x01;
		putc(ch, out);
		i++;
	}
	fclose(in);
	T_OK(fclose(out));
}

/* file_size - st_size of path. */
static long
file_size(const char *path)
{
	struct stat st;

	T_OK(stat(path, &st));
	return (long)st.st_size;
}

/* count_msg - queue_file_message callback that only counts. */
static int
count_msg(void *arg, const char *p, size_t len)
{
	(void)p;
	*(size_t *)arg += len;
	return 0;
}

TEST(queue_file_corrupt)
{
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1];
	char good[512], bad[512];
	struct queue_file qf;
	struct counts c;
	size_t n = 0;
	long size, i;
	FILE *f;

	memset(&c, 0, sizeof(c));
	spool_one(dir, 70000, 0, id, &c);      /* two 'M' records */
	snprintf(good, sizeof(good), "%s/active/%s", dir, id);
	snprintf(bad, sizeof(bad), "%s/bad", dir);
	size = file_size(good);
	T_OK(queue_file_check(good));

	/* Truncated anywhere, including just before and inside X. */
	for (i = 0; i < size; i += i < 64 ? 1 : i > size - 80 ? 1 : 997) {
		copy_file(good, bad, i, -1);
		if (queue_file_check(bad) != -EINVAL)
			T_FAIL("truncated to %ld of %ld accepted", i, size);
		if (queue_file_message(bad, count_msg, &n) == 0)
			T_FAIL("message of truncated file accepted");
		if (queue_file_read(bad, &qf) == 0)
			T_FAIL("read of truncated file accepted");
	}
	/* The X record missing entirely (its 5 + 32 bytes cut). */
	copy_file(good, bad, size - 37, -1);
	T_EQ(queue_file_check(bad), -EINVAL);
	/* A flipped bit anywhere. */
	for (i = 0; i < size; i += i < 300 ? 1 : i > size - 300 ? 1 : 1009) {
		copy_file(good, bad, -1, i);
		if (queue_file_check(bad) != -EINVAL)
			T_FAIL("flipped byte %ld of %ld accepted", i, size);
	}
	copy_file(good, bad, -1, 40000);
	T_EQ(queue_file_message(bad, count_msg, &n), -EINVAL);
	/* Trailing garbage after X. */
	copy_file(good, bad, -1, -1);
	T_TRUE((f = fopen(bad, "ab")) != NULL);
	putc('x', f);
	fclose(f);
	T_EQ(queue_file_check(bad), -EINVAL);
	T_EQ(queue_file_read(bad, &qf), -EINVAL);
	T_EQ(queue_file_check("/nonexistent/queue/file"), -ENOENT);
	/* The callback's verdict comes back as is. */
	T_EQ(queue_file_message(good, cmp_chunk, &(struct cmp){ NULL, 0, 0 }),
	    99);
	rm_rf(dir);
	free(dir);
}

/* ---- resumable reader ------------------------------------------------------ */

struct collect {
	unsigned char *p;
	size_t len, cap;
};

/* collect_msg - queue_file_message callback: append to a growing buffer. */
static int
collect_msg(void *arg, const char *p, size_t len)
{
	struct collect *c = arg;

	if (c->len + len > c->cap) {
		c->cap = (c->len + len) * 2;
		T_TRUE((c->p = realloc(c->p, c->cap)) != NULL);
	}
	memcpy(c->p + c->len, p, len);
	c->len += len;
	return 0;
}

/*
 * reader_all - read path through queue_reader with chunks of cap bytes
 * (cap 0: a random size from 1 to 70000 per call) into out; the final
 * return (0 or an error).  Every positive return must be <= cap.
 */
static long
reader_all(const char *path, size_t cap, struct collect *out)
{
	struct queue_reader *r;
	size_t want;
	char *buf;
	long n;

	out->len = 0;
	T_OK(queue_reader_open(path, &r));
	T_TRUE((buf = malloc(cap > 0 ? cap : 70000)) != NULL);
	for (;;) {
		want = cap > 0 ? cap : 1 + (size_t)(rng() % 70000);
		if ((n = queue_reader_read(r, buf, want)) <= 0)
			break;
		T_TRUE((size_t)n <= want);
		collect_msg(out, buf, (size_t)n);
	}
	/* The end and errors are sticky. */
	T_EQ(queue_reader_read(r, buf, want), n);
	queue_reader_close(r);
	free(buf);
	return n;
}

TEST(queue_reader_chunks)
{
	static const size_t sizes[] = { 0, 1, 70000, (1 << 20) + 12345 };
	static const size_t caps[] = { 1, 2, 7, 4095, 65535, 65536, 65537,
	    1 << 20, 0 };
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1], path[512];
	struct collect want = { NULL, 0, 0 }, got = { NULL, 0, 0 };
	struct queue_reader *r;
	struct queue_mark mk;
	struct counts c;
	size_t i, j;
	char b[4];

	memset(&c, 0, sizeof(c));
	/* never NULL, even for the empty message (memcmp) */
	T_TRUE((want.p = malloc(1)) != NULL && (got.p = malloc(1)) != NULL);
	want.cap = got.cap = 1;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		spool_one(dir, sizes[i], 0, id, &c);
		snprintf(path, sizeof(path), "%s/active/%s", dir, id);
		want.len = 0;
		T_OK(queue_file_message(path, collect_msg, &want));
		T_EQ(want.len, sizes[i]);
		if (i == 2) {
			/* 'R' records after X are not the reader's business. */
			mk = (struct queue_mark){ 0, QUEUE_RCPT_PENDING, 1, 2,
			    1, "451 later" };
			T_OK(queue_file_mark(path, &mk, 1));
		}
		for (j = 0; j < sizeof(caps) / sizeof(caps[0]); j++) {
			/* 1-byte reads of the big one: a few sizes suffice */
			if (sizes[i] > 100000 && caps[j] == 2)
				continue;
			T_EQ(reader_all(path, caps[j], &got), 0);
			T_MEMEQ(got.p, got.len, want.p, want.len);
		}
	}
	/* cap 0 reads nothing; a missing file does not open. */
	T_OK(queue_reader_open(path, &r));
	T_EQ(queue_reader_read(r, b, 0), -EINVAL);
	T_TRUE(queue_reader_read(r, b, sizeof(b)) > 0);
	queue_reader_close(r);
	queue_reader_close(NULL);
	r = (struct queue_reader *)&c;
	T_EQ(queue_reader_open("/nonexistent/queue/file", &r), -ENOENT);
	T_TRUE(r == NULL);
	free(want.p);
	free(got.p);
	rm_rf(dir);
	free(dir);
}

TEST(queue_reader_corrupt)
{
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1];
	char good[512], bad[512];
	struct collect got = { NULL, 0, 0 };
	struct counts c;
	long size, i, rc;
	FILE *f;

	memset(&c, 0, sizeof(c));
	spool_one(dir, 70000, 0, id, &c);      /* two 'M' records */
	snprintf(good, sizeof(good), "%s/active/%s", dir, id);
	snprintf(bad, sizeof(bad), "%s/bad", dir);
	size = file_size(good);
	T_EQ(reader_all(good, 4096, &got), 0);
	T_EQ(got.len, 70000);

	/* Truncated anywhere: never the end, always -EINVAL. */
	for (i = 0; i < size; i += i < 64 ? 1 : i > size - 80 ? 1 : 997) {
		copy_file(good, bad, i, -1);
		if ((rc = reader_all(bad, i % 2 ? 65536 : 1000, &got)) !=
		    -EINVAL)
			T_FAIL("truncated to %ld of %ld: %ld", i, size, rc);
	}
	/* A flipped bit anywhere before the 'R' records. */
	for (i = 0; i < size; i += i < 300 ? 1 : i > size - 300 ? 1 : 1009) {
		copy_file(good, bad, -1, i);
		if ((rc = reader_all(bad, i % 3 ? 65536 : 777, &got)) !=
		    -EINVAL)
			T_FAIL("flipped byte %ld of %ld: %ld", i, size, rc);
	}
	/* In the message: every byte comes out, then the digest fails. */
	copy_file(good, bad, -1, 40000);
	T_EQ(reader_all(bad, 1 << 20, &got), -EINVAL);
	T_EQ(got.len, 70000);
	/* Not a queue file at all. */
	T_TRUE((f = fopen(bad, "wb")) != NULL);
	fputs("From: x\r\n\r\nhello\r\n", f);
	fclose(f);
	T_EQ(reader_all(bad, 100, &got), -EINVAL);
	T_EQ(got.len, 0);
	/* A directory opens but cannot be read. */
	T_EQ(reader_all(dir, 100, &got), -EISDIR);
	free(got.p);
	rm_rf(dir);
	free(dir);
}

TEST(queue_recover_moves)
{
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1];
	char first[QUEUE_ID_LEN + 1];
	char src[512], dst[512];
	struct counts c;
	int i;

	memset(&c, 0, sizeof(c));
	spool_one(dir, 100, 0, first, &c);
	for (i = 0; i < 3; i++)
		spool_one(dir, 5000, 0, id, &c);
	/* Leftovers of a crash: partial files in tmp/. */
	snprintf(src, sizeof(src), "%s/active/%s", dir, first);
	snprintf(dst, sizeof(dst), "%s/tmp/0000000001000000AA", dir);
	copy_file(src, dst, 50, -1);
	snprintf(dst, sizeof(dst), "%s/tmp/junk", dir);
	copy_file(src, dst, -1, -1);
	/* Damaged files in active/. */
	snprintf(dst, sizeof(dst), "%s/active/0000000001000000BB", dir);
	copy_file(src, dst, file_size(src) - 1, -1);
	snprintf(dst, sizeof(dst), "%s/active/0000000001000000CC", dir);
	copy_file(src, dst, -1, 20);
	/* Not a file: left alone. */
	snprintf(dst, sizeof(dst), "%s/active/subdir", dir);
	T_OK(mkdir(dst, 0700));
	T_EQ(count_files(dir, "tmp"), 2);
	T_EQ(count_files(dir, "active"), 7);
	T_EQ(queue_recover(dir, on_log, NULL), 4);
	T_EQ(count_files(dir, "tmp"), 0);
	T_EQ(count_files(dir, "active"), 5);
	T_EQ(count_files(dir, "corrupt"), 2);
	snprintf(dst, sizeof(dst), "%s/corrupt/0000000001000000CC", dir);
	T_EQ(access(dst, F_OK), 0);
	/* Idempotent. */
	T_EQ(queue_recover(dir, NULL, NULL), 4);
	T_EQ(count_files(dir, "corrupt"), 2);
	/* A spool that does not exist yet is empty, not an error. */
	snprintf(dst, sizeof(dst), "%s/none", dir);
	T_EQ(queue_recover(dst, NULL, NULL), 0);
	rm_rf(dir);
	free(dir);
}

TEST(queue_spool_abort)
{
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct queue_msg *m[4];
	struct tmsg t;
	unsigned char *big;
	uv_loop_t loop;
	char *dir = make_tmpdir();
	int i;

	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.log = on_log;
	sample_env(&env, 2);
	T_TRUE((big = malloc(3 << 20)) != NULL);
	fill_random(big, 3 << 20);
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	/* Aborted with writes in flight, and aborted before any write. */
	for (i = 0; i < 4; i++)
		T_OK(queue_msg_new(sp, &env, &m[i]));
	queue_msg_write(m[0], (char *)big, 3 << 20);
	T_TRUE(queue_msg_pending(m[0]) > 0);
	queue_msg_abort(m[0]);
	queue_msg_abort(m[1]);
	queue_msg_abort(NULL);
	/* One committed while the spool closes: it still completes. */
	memset(&t, 0, sizeof(t));
	t.m = m[2];
	strcpy(t.id, queue_msg_id(m[2]));
	queue_msg_write(m[2], "hello\r\n", 7);
	queue_msg_commit(m[2], NULL, 0, on_commit, &t);
	/* m[3] stays open: close aborts it. */
	queue_msg_write(m[3], (char *)big, 1 << 20);
	close_spool(&loop, sp);
	T_EQ(t.done, 1);
	T_EQ(t.status, 0);
	T_EQ(count_files(dir, "tmp"), 0);
	T_EQ(count_files(dir, "active"), 1);
	free(big);
	queue_envelope_free(&env);
	rm_rf(dir);
	free(dir);
}

TEST(queue_spool_dir_gone)
{
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct queue_msg *m;
	struct counts c;
	struct tmsg t;
	uv_loop_t loop;
	char *dir = make_tmpdir(), path[512];
	int rc;

	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.event = on_event;
	cfg.arg = &c;
	sample_env(&env, 1);
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));

	/* active/ vanishes under us: the rename fails, nothing is left. */
	snprintf(path, sizeof(path), "%s/active", dir);
	T_OK(rmdir(path));
	memset(&t, 0, sizeof(t));
	T_OK(queue_msg_new(sp, &env, &t.m));
	strcpy(t.id, queue_msg_id(t.m));
	queue_msg_write(t.m, "x\r\n", 3);
	queue_msg_commit(t.m, NULL, 0, on_commit, &t);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(t.done, 1);
	T_EQ(t.status, -ENOENT);
	T_EQ(c.write_errors, 1);
	T_EQ(c.committed, 0);
	T_EQ(count_files(dir, "tmp"), 0);

	/*
	 * So does tmp/: the file cannot be created.  The spool opens files
	 * through the ring, so the error comes with the commit (a kernel
	 * without IORING_OP_OPENAT reports it from queue_msg_new).
	 */
	snprintf(path, sizeof(path), "%s/tmp", dir);
	T_OK(rmdir(path));
	memset(&t, 0, sizeof(t));
	if ((rc = queue_msg_new(sp, &env, &m)) == 0) {
		t.m = m;
		strcpy(t.id, queue_msg_id(m));
		queue_msg_write(m, "x\r\n", 3);
		queue_msg_commit(m, NULL, 0, on_commit, &t);
		T_OK(uv_run(&loop, UV_RUN_DEFAULT));
		T_EQ(t.done, 1);
		rc = t.status;
	} else {
		T_TRUE(m == NULL);
	}
	T_EQ(rc, -ENOENT);
	T_EQ(c.write_errors, 2);
	T_EQ(c.committed, 0);
	close_spool(&loop, sp);
	queue_envelope_free(&env);
	rm_rf(dir);
	free(dir);
}

/*
 * write_error_run - a spool in dir where writes fail after about 1 MB: a
 * 5 MB message fails with a negative errno and leaves no file; a small one
 * after it still commits.  Returns the errno the big one got.
 */
static int
write_error_run(const char *dir)
{
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct counts c;
	struct tmsg big, small;
	uv_loop_t loop;
	size_t off;

	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.event = on_event;
	cfg.arg = &c;
	sample_env(&env, 1);
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));

	memset(&big, 0, sizeof(big));
	big.size = 5 << 20;
	T_TRUE((big.data = malloc(big.size)) != NULL);
	fill_random(big.data, big.size);
	T_OK(queue_msg_new(sp, &env, &big.m));
	strcpy(big.id, queue_msg_id(big.m));
	for (off = 0; off < big.size; off += 100000) {
		queue_msg_write(big.m, (char *)big.data + off,
		    big.size - off < 100000 ? big.size - off : 100000);
		uv_run(&loop, UV_RUN_NOWAIT);
	}
	queue_msg_commit(big.m, "sig", 3, on_commit, &big);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(big.done, 1);
	T_TRUE(big.status < 0);
	T_TRUE(c.write_errors >= 1);
	T_EQ(c.committed, 0);
	T_EQ(count_files(dir, "tmp"), 0);
	T_EQ(count_files(dir, "active"), 0);

	/* The space came back with the unlink: the next message is fine. */
	memset(&small, 0, sizeof(small));
	T_OK(queue_msg_new(sp, &env, &small.m));
	strcpy(small.id, queue_msg_id(small.m));
	queue_msg_write(small.m, "small\r\n", 7);
	queue_msg_commit(small.m, NULL, 0, on_commit, &small);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(small.done, 1);
	T_EQ(small.status, 0);
	T_EQ(c.committed, 1);
	T_EQ(count_files(dir, "active"), 1);
	close_spool(&loop, sp);
	free(big.data);
	queue_envelope_free(&env);
	return big.status;
}

TEST(queue_spool_enospc)
{
	struct rlimit rl = { 1 << 20, 1 << 20 };
	char *dir = make_tmpdir();
	int rc;

	/*
	 * A private mount namespace: the 1 MB tmpfs disappears with this
	 * child even if the test dies half-way.
	 */
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700") < 0) {
		fprintf(stderr, "  cannot mount a tmpfs (%s): using "
		    "RLIMIT_FSIZE instead\n", strerror(errno));
		signal(SIGXFSZ, SIG_IGN);
		T_OK(setrlimit(RLIMIT_FSIZE, &rl));
		rc = write_error_run(dir);
		T_EQ(rc, -EFBIG);
	} else {
		rc = write_error_run(dir);
		T_EQ(rc, -ENOSPC);
		T_OK(umount(dir));
	}
	rm_rf(dir);
	free(dir);
}

TEST(queue_spool_efbig)
{
	/* Not a multiple of the 64 KiB blocks: one write comes back short. */
	struct rlimit rl = { (1 << 20) + 1000, (1 << 20) + 1000 };
	char *dir = make_tmpdir();

	signal(SIGXFSZ, SIG_IGN);
	T_OK(setrlimit(RLIMIT_FSIZE, &rl));
	T_EQ(write_error_run(dir), -EFBIG);
	rm_rf(dir);
	free(dir);
}

/* ---- delivery state ('R' records, issue 4) ------------------------------- */

/* append_bytes - add n bytes to the end of path. */
static void
append_bytes(const char *path, const void *p, size_t n)
{
	FILE *f;

	T_TRUE((f = fopen(path, "ab")) != NULL);
	T_EQ(fwrite(p, 1, n, f), n);
	T_OK(fclose(f));
}

TEST(queue_file_marks)
{
	char *dir = make_tmpdir(), id[QUEUE_ID_LEN + 1], path[512], bad[512];
	struct queue_mark mk[3];
	struct queue_rcpt_status *st;
	struct queue_file qf;
	struct counts c;
	size_t n = 0;
	long base, full, i;
	unsigned char zeros[40];

	memset(&c, 0, sizeof(c));
	spool_one(dir, 70000, 0, id, &c);      /* sample_env(1): one rcpt */
	snprintf(path, sizeof(path), "%s/active/%s", dir, id);
	snprintf(bad, sizeof(bad), "%s/bad", dir);
	base = file_size(path);
	T_OK(queue_file_status(path, 1, &st));
	T_EQ(st[0].state, QUEUE_RCPT_PENDING);
	T_EQ(st[0].attempts, 0);
	T_TRUE(st[0].reason == NULL);
	queue_status_free(st, 1);

	memset(mk, 0, sizeof(mk));
	mk[0] = (struct queue_mark){ 0, QUEUE_RCPT_PENDING, 1000, 1300, 1,
	    "451 4.3.0 try later" };
	T_OK(queue_file_mark(path, mk, 1));
	mk[0] = (struct queue_mark){ 0, QUEUE_RCPT_SENT, 1400, 0, 2,
	    "250 2.0.0 ok" };
	T_OK(queue_file_mark(path, mk, 1));
	full = file_size(path);
	T_OK(queue_file_check(path));
	T_OK(queue_file_message(path, count_msg, &n));
	T_EQ(n, 70000);
	T_OK(queue_file_status(path, 1, &st));
	T_EQ(st[0].state, QUEUE_RCPT_SENT);
	T_EQ(st[0].last_try, 1400);
	T_EQ(st[0].attempts, 2);
	T_STREQ(st[0].reason, "250 2.0.0 ok");
	queue_status_free(st, 1);
	/* Only as many recipients as the envelope has. */
	mk[0].rcpt = 1;
	T_OK(queue_file_mark(path, mk, 1));
	T_EQ(queue_file_check(path), -EINVAL);
	T_EQ(queue_file_read(path, &qf), -EINVAL);
	T_EQ(queue_file_status(path, 1, &st), -EINVAL);
	T_TRUE(st == NULL);
	copy_file(path, bad, full, -1);
	copy_file(bad, path, -1, -1);

	/* Cut anywhere in the second record: as if it was never written. */
	for (i = full - 1; i >= base; i--) {
		copy_file(path, bad, i, -1);
		if (queue_file_check(bad) != 0)
			T_FAIL("cut at %ld of %ld rejected", i, full);
		T_OK(queue_file_read(bad, &qf));
		queue_file_free(&qf);
		T_OK(queue_file_status(bad, 1, &st));
		T_EQ(st[0].state, QUEUE_RCPT_PENDING);
		/* The first record is 5 + 25 + 19 + 8 bytes. */
		T_EQ(st[0].next_try, i >= base + 57 ? 1300 : 0);
		queue_status_free(st, 1);
	}
	/* The next mark cuts the torn tail first. */
	copy_file(path, bad, full - 7, -1);
	mk[0] = (struct queue_mark){ 0, QUEUE_RCPT_BOUNCED, 1500, 0, 2,
	    "550 no" };
	T_OK(queue_file_mark(bad, mk, 1));
	T_EQ(file_size(bad), full - 6);     /* "550 no" is 6 bytes shorter */
	T_OK(queue_file_check(bad));
	T_OK(queue_file_status(bad, 1, &st));
	T_EQ(st[0].state, QUEUE_RCPT_BOUNCED);
	queue_status_free(st, 1);
	/* Size extended by a crash, zeros: ignored. */
	copy_file(path, bad, -1, -1);
	memset(zeros, 0, sizeof(zeros));
	append_bytes(bad, zeros, sizeof(zeros));
	T_OK(queue_file_check(bad));
	/* A bad digest on the last record is torn; before another, damage. */
	copy_file(path, bad, -1, full - 3);
	T_OK(queue_file_check(bad));
	T_OK(queue_file_status(bad, 1, &st));
	T_EQ(st[0].state, QUEUE_RCPT_PENDING);
	queue_status_free(st, 1);
	copy_file(path, bad, -1, base + 10);
	T_EQ(queue_file_check(bad), -EINVAL);
	/* Anything after X that is not an 'R' record: damage. */
	copy_file(path, bad, -1, -1);
	append_bytes(bad, "x", 1);
	T_EQ(queue_file_check(bad), -EINVAL);
	T_EQ(queue_file_read(bad, &qf), -EINVAL);
	/* Recovery keeps a file with marks. */
	T_EQ(queue_recover(dir, on_log, NULL), 1);
	T_EQ(count_files(dir, "active"), 1);
	T_EQ(queue_file_mark("/nonexistent/q", mk, 1), -ENOENT);
	rm_rf(dir);
	free(dir);
}

/* on_committed - the spool's committed hook. */
static void
on_committed(void *arg, const char *id)
{
	struct counts *c = arg;

	T_EQ(strlen(id), QUEUE_ID_LEN);
	c->committed += 1000;
}

TEST(queue_spool_committed_hook)
{
	char *dir = make_tmpdir();
	struct queue_config cfg;
	struct queue_envelope env;
	struct queue_spool *sp;
	struct counts c;
	struct tmsg t;
	uv_loop_t loop;

	memset(&c, 0, sizeof(c));
	memset(&cfg, 0, sizeof(cfg));
	cfg.spool_dir = dir;
	cfg.event = on_event;
	cfg.log = on_log;
	cfg.committed = on_committed;
	cfg.arg = &c;
	sample_env(&env, 1);
	memset(&t, 0, sizeof(t));
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &cfg, &sp));
	T_OK(queue_msg_new(sp, &env, &t.m));
	strcpy(t.id, queue_msg_id(t.m));
	queue_msg_write(t.m, "x\r\n", 3);
	queue_msg_commit(t.m, NULL, 0, on_commit, &t);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(t.status, 0);
	T_EQ(c.committed, 1001);       /* the event and the hook */
	close_spool(&loop, sp);
	queue_envelope_free(&env);
	rm_rf(dir);
	free(dir);
}
