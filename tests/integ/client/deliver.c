/*
 * deliver.c - integration driver for the delivery client: write one
 * message into a spool with the real queue API (queue_spool_new,
 * queue_msg_new/_write/_commit on a loop), read it back with
 * queue_file_read, deliver it with smtp_client_deliver and print the
 * result, one "key value" line each:
 *
 *   deliver --spool DIR --msg FILE [--sig FILE] --from ADDR --rcpt ADDR...
 *           --to IP:PORT [--host NAME] [--tls none|may|encrypt]
 *           [--no-pipelining] [--8bit] [--smtputf8] [--ret full|hdrs]
 *           [--envid ID] [--notify BITS] [--orcpt TYPE;ADDR] [--timeout MS]
 *           [--cache IDLE-MS [--repeat N] [--gap MS]]
 *
 * With --cache the deliveries go through a connection cache (destination
 * "rcpt.example") and the same message is delivered N times, MS apart;
 * each delivery's lines follow a "delivery K" line ("reused" and "cached"
 * are printed for every delivery); at the end, after the cache is freed,
 * "connections opened N closed M" (the cache's events).
 *
 * Exit 0 when the callback ran (whatever the verdicts), 2 on usage or
 * setup errors.  Built by tests/integ/61-smtp-client.sh.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "smtp/smtp.h"

static struct {
	const char *spool, *msg, *sig, *to, *host;
	char *from, *envid, *orcpt;
	char *rcpt[64];
	size_t nrcpt;
	enum smtp_tls_level tls;
	int no_pipelining, body_8bit, smtputf8, notify, verbose;
	enum queue_ret ret;
	unsigned timeout;
	int cache;                 /* -1: no cache; else the idle time */
	unsigned repeat, gap;
} opt = { .tls = SMTP_TLS_MAY, .host = "sink.test", .cache = -1, .repeat = 1 };

static int conn_open, conn_close, gap_over;


static char qid[QUEUE_ID_LEN + 1];
static int commit_status = 1, delivered;

static void
die(const char *what)
{
	fprintf(stderr, "deliver: %s\n", what);
	exit(2);
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p = NULL;
	size_t cap = 0, n;

	if (f == NULL)
		die(path);
	*len = 0;
	for (;;) {
		if (*len + 65536 > cap) {
			cap = (*len + 65536) * 2;
			if ((p = realloc(p, cap)) == NULL)
				die("out of memory");
		}
		if ((n = fread(p + *len, 1, 65536, f)) == 0)
			break;
		*len += n;
	}
	fclose(f);
	return p;
}

static void
on_commit(void *arg, int status, const char *id)
{
	commit_status = status;
	if (status == 0)
		snprintf(qid, sizeof(qid), "%s", id);
}

static void
on_log(void *arg, int prio, const char *msg)
{
	if (opt.verbose || prio <= LOG_INFO)
		fprintf(stderr, "log: %s\n", msg);
}

static void
print_reply(const char *what, const struct smtp_reply *r)
{
	printf("%s %d %s %s\n", what, r->code, r->status[0] ? r->status : "-",
	    r->text);
}

static void
on_done(void *arg, const struct smtp_result *res)
{
	size_t i;

	delivered = 1;
	printf("connected %d\n", res->connected);
	printf("reused %d\n", res->reused);
	printf("cached %d\n", res->cached);
	printf("error %s\n", res->error == 0 ? "0" : uv_err_name(res->error));
	printf("stage %s\n", res->stage);
	printf("greeting %s\n", res->greeting[0] ? res->greeting : "-");
	printf("tls %s %s\n", res->tls_version[0] ? res->tls_version : "none",
	    res->tls_cipher[0] ? res->tls_cipher : "-");
	printf("pipelined %d\n", res->pipelined);
	printf("ext 0x%x size %llu\n", res->ext.flags,
	    (unsigned long long)res->ext.size);
	print_reply("reply", &res->reply);
	for (i = 0; i < res->nrcpt; i++) {
		char what[600];

		snprintf(what, sizeof(what), "rcpt %s %s", opt.rcpt[i],
		    smtp_verdict_name(res->rcpt[i].verdict));
		print_reply(what, &res->rcpt[i].reply);
	}
	printf("counts sent=%zu deferred=%zu bounced=%zu\n", res->nsent,
	    res->ndeferred, res->nbounced);
	fflush(stdout);
}

static void
on_spool_closed(void *arg)
{
}

static void
on_conn_event(void *arg, enum smtp_conn_event ev)
{
	if (ev == SMTP_CONN_OPEN)
		conn_open++;
	else
		conn_close++;
}

static void
on_gap(uv_timer_t *t)
{
	gap_over = 1;
}

int
main(int argc, char **argv)
{
	struct queue_config qc;
	struct queue_envelope env;
	struct queue_rcpt rc[64];
	struct queue_spool *sp;
	struct queue_msg *m;
	struct queue_file qf;
	struct smtp_delivery d;
	struct smtp_client_cache_opts co;
	struct smtp_client_cache *cache = NULL;
	struct sockaddr_storage ss;
	uv_timer_t gap;
	unsigned k;
	char path[4096], err[256], host[256], *colon;
	char *msg, *sig = NULL;
	size_t msglen, siglen = 0, i;
	SSL_CTX *ctx;
	uv_loop_t loop;
	int a, rc_;

	for (a = 1; a < argc; a++) {
		const char *o = argv[a];
#define ARG() (a + 1 < argc ? argv[++a] : (die("missing value"), argv[0]))
		if (!strcmp(o, "--spool")) opt.spool = ARG();
		else if (!strcmp(o, "--msg")) opt.msg = ARG();
		else if (!strcmp(o, "--sig")) opt.sig = ARG();
		else if (!strcmp(o, "--from")) opt.from = ARG();
		else if (!strcmp(o, "--rcpt")) {
			if (opt.nrcpt == 64)
				die("too many --rcpt");
			opt.rcpt[opt.nrcpt++] = ARG();
		} else if (!strcmp(o, "--to")) opt.to = ARG();
		else if (!strcmp(o, "--host")) opt.host = ARG();
		else if (!strcmp(o, "--tls")) {
			const char *v = ARG();
			opt.tls = !strcmp(v, "none") ? SMTP_TLS_NONE :
			    !strcmp(v, "encrypt") ? SMTP_TLS_ENCRYPT : SMTP_TLS_MAY;
		} else if (!strcmp(o, "--no-pipelining")) opt.no_pipelining = 1;
		else if (!strcmp(o, "--8bit")) opt.body_8bit = 1;
		else if (!strcmp(o, "--smtputf8")) opt.smtputf8 = 1;
		else if (!strcmp(o, "--ret"))
			opt.ret = !strcmp(ARG(), "full") ? QUEUE_RET_FULL : QUEUE_RET_HDRS;
		else if (!strcmp(o, "--envid")) opt.envid = ARG();
		else if (!strcmp(o, "--notify")) opt.notify = atoi(ARG());
		else if (!strcmp(o, "--orcpt")) opt.orcpt = ARG();
		else if (!strcmp(o, "--timeout")) opt.timeout = (unsigned)atoi(ARG());
		else if (!strcmp(o, "--cache")) opt.cache = atoi(ARG());
		else if (!strcmp(o, "--repeat")) opt.repeat = (unsigned)atoi(ARG());
		else if (!strcmp(o, "--gap")) opt.gap = (unsigned)atoi(ARG());
		else if (!strcmp(o, "-v")) opt.verbose = 1;
		else die(o);
#undef ARG
	}
	if (!opt.spool || !opt.msg || !opt.from || !opt.to || opt.nrcpt == 0)
		die("usage: see deliver.c");

	/* --- spool the message with the real queue API --------------------- */
	msg = slurp(opt.msg, &msglen);
	if (opt.sig != NULL)
		sig = slurp(opt.sig, &siglen);
	memset(&env, 0, sizeof(env));
	env.mail_from = opt.from;
	env.envid = opt.envid;
	env.ret = opt.ret;
	env.body_8bit = opt.body_8bit;
	env.smtputf8 = opt.smtputf8;
	memset(rc, 0, sizeof(rc));
	for (i = 0; i < opt.nrcpt; i++) {
		rc[i].addr = opt.rcpt[i];
		rc[i].notify = opt.notify;
		rc[i].orcpt = opt.orcpt;
	}
	env.nrcpt = opt.nrcpt;
	env.rcpt = rc;
	env.helo = (char *)"client.test";
	env.client_addr = (char *)"127.0.0.1";
	env.arrival = time(NULL);

	if (uv_loop_init(&loop) != 0)
		die("uv_loop_init");
	memset(&qc, 0, sizeof(qc));
	qc.spool_dir = opt.spool;
	qc.commit_window_us = 100;
	qc.max_batch = 1;
	if ((rc_ = queue_spool_new(&loop, &qc, &sp)) != 0)
		die(strerror(-rc_));
	if ((rc_ = queue_msg_new(sp, &env, &m)) != 0)
		die(strerror(-rc_));
	/* in uneven pieces, as a session writes them */
	for (i = 0; i < msglen;) {
		size_t k = msglen - i < 1000 + i % 7919 ? msglen - i : 1000 + i % 7919;

		queue_msg_write(m, msg + i, k);
		i += k;
	}
	queue_msg_commit(m, sig, siglen, on_commit, NULL);
	while (commit_status == 1)
		uv_run(&loop, UV_RUN_ONCE);
	if (commit_status != 0)
		die("commit failed");
	snprintf(path, sizeof(path), "%s/active/%s", opt.spool, qid);
	printf("queue_file %s\n", path);
	memset(&qf, 0, sizeof(qf));
	if ((rc_ = queue_file_read(path, &qf)) != 0)
		die("queue_file_read");

	/* --- deliver ------------------------------------------------------- */
	snprintf(host, sizeof(host), "%s", opt.to);
	if ((colon = strrchr(host, ':')) == NULL)
		die("--to IP:PORT");
	*colon = '\0';
	memset(&ss, 0, sizeof(ss));
	if (uv_ip4_addr(host, atoi(colon + 1), (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, atoi(colon + 1), (struct sockaddr_in6 *)&ss) != 0)
		die("bad --to address");
	if ((ctx = smtp_tls_client_ctx_new(err, sizeof(err))) == NULL)
		die(err);
	memset(&d, 0, sizeof(d));
	d.addr = (struct sockaddr *)&ss;
	d.host = opt.host;
	d.helo = "signet.test";
	d.tls = opt.tls;
	d.tls_ctx = opt.tls == SMTP_TLS_NONE ? NULL : ctx;
	d.path = path;
	d.qf = &qf;
	d.rcpt = qf.env.rcpt;
	d.nrcpt = qf.env.nrcpt;
	d.no_pipelining = opt.no_pipelining;
	d.timeouts.connect_ms = opt.timeout;
	d.timeouts.greeting_ms = opt.timeout;
	d.timeouts.cmd_ms = opt.timeout;
	d.timeouts.data_ms = opt.timeout;
	d.timeouts.dot_ms = opt.timeout;
	d.log = on_log;
	if (opt.cache >= 0) {
		memset(&co, 0, sizeof(co));
		co.idle_ms = (unsigned)opt.cache;
		co.event = on_conn_event;
		co.log = on_log;
		if (smtp_client_cache_new(&loop, &co, &cache) != 0)
			die("smtp_client_cache_new");
		d.cache = cache;
		d.dest = "rcpt.example";
	}
	if (uv_timer_init(&loop, &gap) != 0)
		die("uv_timer_init");
	for (k = 1; k <= opt.repeat; k++) {
		if (k > 1 && opt.gap > 0) {
			gap_over = 0;
			uv_timer_start(&gap, on_gap, opt.gap, 0);
			while (!gap_over)
				uv_run(&loop, UV_RUN_ONCE);
		}
		if (cache != NULL)
			printf("delivery %u\n", k);
		delivered = 0;
		if ((rc_ = smtp_client_deliver(&loop, &d, on_done, NULL)) != 0)
			die(uv_strerror(rc_));
		while (!delivered)
			uv_run(&loop, UV_RUN_ONCE);
	}
	uv_close((uv_handle_t *)&gap, NULL);
	if (cache != NULL) {
		smtp_client_cache_free(cache);
		printf("connections opened %d closed %d\n", conn_open, conn_close);
		fflush(stdout);
	}

	queue_spool_close(sp, on_spool_closed, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		die("handles left on the loop");
	queue_file_free(&qf);
	SSL_CTX_free(ctx);
	free(msg);
	free(sig);
	return 0;
}
