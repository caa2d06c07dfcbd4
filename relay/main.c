/*
 * main.c - bin/signet, the relay daemon.
 *
 *   signet [-c FILE] [-t] [-s] [-n] [-V]
 *	-c FILE	configuration (default: the embedded one, see relay.conf)
 *	-t	check the configuration: "configuration OK", or every problem
 *		as "FILE:LINE: message" on stderr, exit 1
 *	-n	print the settings that differ from the defaults (postconf -n)
 *	-s	log to syslog (LOG_MAIL) instead of stderr
 *	-V	print the version
 *
 * The daemon runs in the foreground.  It recovers the spool, then starts
 * `workers` threads, each with its own libuv loop, its own spool handle (and
 * io_uring ring) and its own listening sockets on every address (the kernel
 * spreads connections through SO_REUSEPORT).  DKIM signatures are computed
 * on libuv's thread pool, sized by signing_threads.  The main thread keeps a
 * loop of its own for signals and the admin (metrics) listener.
 *
 * Managed DKIM keys (relay/keys.h): the key manager opens the key store and
 * starts its rotation thread before the workers, so the first message can
 * be signed with them; with dns_listen set, the built-in authoritative DNS
 * server for the _domainkey.<initial domain> zones runs on the main loop,
 * answering from the key manager's index.
 *
 * SIGHUP re-reads the file: on success new sessions use the new settings and
 * keys, sessions already open finish with the old ones; on error the old
 * configuration stays and the errors are logged.  The key manager and the
 * DNS server take the new policy and record settings.  SIGTERM/SIGINT stop the
 * listeners, let transactions in progress finish for up to
 * RELAY_STOP_DEADLINE_MS, then exit with the spool consistent.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "queue/queue.h"
#include "relay/keys.h"
#include "relay/relay.h"
#include "smtp/smtp.h"

#define RELAY_STOP_DEADLINE_MS 30000

/*
 * A loaded configuration and the smtp_config built from it.  Workers hold
 * references through their smtp_server; the last release frees it.
 */
struct relay_gen {
	struct relay_config cfg;
	struct smtp_config sc;
	atomic_int refs;
};

struct relay_worker {
	int id;
	uv_thread_t thread;
	uv_loop_t loop;
	uv_async_t wake;
	uv_mutex_t lock;
	struct relay_gen *pending;   /* a new configuration to switch to */
	int stop;                    /* stop requested */
	struct queue_spool *spool;
	struct smtp_server *srv;
	struct relay_gen *gen;       /* the generation its server runs */
	int started;                 /* 1 ok, -1 failed */
	uv_sem_t ready;
};

static struct relay_worker *workers;
static unsigned nworkers;
static struct relay_gen *current;
static struct queue_config qconf;
static uv_loop_t *main_loop;
static struct relay_admin *admin;
static uv_signal_t sig_term, sig_int, sig_hup;
static int stopping;

/* managed keys: the key manager and the built-in DNS server */
static struct relay_keymgr *keymgr;
static struct relay_dnsd *dnsd;
static struct relay_dnsd_config dnsd_conf;
static struct relay_strlist dnsd_ns;      /* dns_ns, $myhostname expanded */
static char *dnsd_hostmaster;

/* delivery, on the main loop */
static struct queue_spool *main_spool;    /* bounces are queued here */
static struct queue_sched *sched;
static struct relay_agent *agent;
static struct relay_gen *agent_gen;       /* the generation the agent reads */
static uv_async_t worker_exit;            /* a worker thread has ended */
static atomic_uint workers_ended;

/* gen_unref - drop one reference to a configuration generation. */
static void
gen_unref(struct relay_gen *g)
{
	if (g == NULL || atomic_fetch_sub(&g->refs, 1) != 1)
		return;
	if (g->sc.tls != NULL)
		SSL_CTX_free(g->sc.tls);
	relay_config_free(&g->cfg);
	free(g);
}

/* gen_release - smtp_server_reconfigure's release callback (any thread). */
static void
gen_release(const struct smtp_config *old)
{
	uintptr_t p = (uintptr_t)old - offsetof(struct relay_gen, sc);

	gen_unref((struct relay_gen *)p);
}

/* gen_load - load path (NULL: the embedded default) into a new generation. */
static struct relay_gen *
gen_load(const char *path, int check_only)
{
	struct relay_gen *g = relay_xcalloc(1, sizeof(*g));
	char err[512];
	int rc;

	rc = path != NULL ? relay_config_load(path, &g->cfg, NULL, NULL) :
	    relay_config_default(&g->cfg);
	if (rc != 0)
		goto fail;
	if (relay_config_to_smtp(&g->cfg, &g->sc, check_only ? RELAY_SMTP_CHECK : 0,
	    err, sizeof(err)) != 0) {
		relay_log(LOG_ERR, "%s", err);
		goto fail;
	}
	atomic_init(&g->refs, 1);
	return g;
fail:
	relay_config_free(&g->cfg);
	free(g);
	return NULL;
}

/* ---- workers ----------------------------------------------------------- */

static void
worker_spool_closed(void *arg)
{
	struct relay_worker *w = arg;

	uv_close((uv_handle_t *)&w->wake, NULL);
}

static void
worker_server_stopped(void *arg)
{
	struct relay_worker *w = arg;

	w->srv = NULL;
	queue_spool_close(w->spool, worker_spool_closed, w);
}

/* worker_wake - the main thread asked for a reload or a stop. */
static void
worker_wake(uv_async_t *h)
{
	struct relay_worker *w = h->data;
	struct relay_gen *g;
	int stop;

	uv_mutex_lock(&w->lock);
	g = w->pending;
	w->pending = NULL;
	stop = w->stop;
	w->stop = 0;
	uv_mutex_unlock(&w->lock);
	if (g != NULL) {
		if (w->srv != NULL) {
			smtp_server_reconfigure(w->srv, &g->sc, gen_release);
			w->gen = g;
		} else
			gen_unref(g);
	}
	if (stop && w->srv != NULL)
		smtp_server_stop(w->srv, RELAY_STOP_DEADLINE_MS,
		    worker_server_stopped, w);
}

static void
worker_main(void *arg)
{
	struct relay_worker *w = arg;
	int rc;

	uv_loop_init(&w->loop);
	uv_async_init(&w->loop, &w->wake, worker_wake);
	w->wake.data = w;
	if ((rc = queue_spool_new(&w->loop, &qconf, &w->spool)) != 0) {
		relay_log(LOG_ERR, "worker %d: spool %s: %s", w->id,
		    qconf.spool_dir, strerror(-rc));
		goto fail;
	}
	/* the server keeps a reference to the generation it runs */
	atomic_fetch_add(&current->refs, 1);
	if ((rc = smtp_server_start(&w->loop, &current->sc, w->spool, &w->srv)) != 0) {
		gen_unref(current);
		relay_log(LOG_ERR, "worker %d: cannot listen: %s", w->id,
		    strerror(-rc));
		queue_spool_close(w->spool, worker_spool_closed, w);
		uv_run(&w->loop, UV_RUN_DEFAULT);
		goto fail;
	}
	w->gen = current;
	w->started = 1;
	uv_sem_post(&w->ready);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
	gen_unref(w->gen);
	atomic_fetch_add(&workers_ended, 1);
	uv_async_send(&worker_exit);
	return;
fail:
	if (!uv_is_closing((uv_handle_t *)&w->wake))
		uv_close((uv_handle_t *)&w->wake, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
	w->started = -1;
	atomic_fetch_add(&workers_ended, 1);
	uv_async_send(&worker_exit);
	uv_sem_post(&w->ready);
}

/* workers_start - start every worker; 0 or -1 if one failed. */
static int
workers_start(unsigned n)
{
	unsigned i;
	int ok = 0;

	nworkers = n;
	workers = relay_xcalloc(n, sizeof(*workers));
	for (i = 0; i < n; i++) {
		struct relay_worker *w = &workers[i];

		w->id = (int)i;
		uv_mutex_init(&w->lock);
		uv_sem_init(&w->ready, 0);
		if (uv_thread_create(&w->thread, worker_main, w) != 0)
			relay_panic("cannot create worker thread");
		uv_sem_wait(&w->ready);
		if (w->started < 0)
			ok = -1;
	}
	return ok;
}

/* workers_send - hand every worker a reload (g) and/or a stop. */
static void
workers_send(struct relay_gen *g, int stop)
{
	unsigned i;

	for (i = 0; i < nworkers; i++) {
		struct relay_worker *w = &workers[i];

		if (w->started != 1)
			continue;
		uv_mutex_lock(&w->lock);
		if (g != NULL) {
			atomic_fetch_add(&g->refs, 1);
			if (w->pending != NULL)
				gen_unref(w->pending);
			w->pending = g;
		}
		if (stop)
			w->stop = 1;
		uv_mutex_unlock(&w->lock);
		uv_async_send(&w->wake);
	}
}

/* ---- managed keys ------------------------------------------------------ */

/* expand_myhostname - s with every "$myhostname" replaced; malloc'd. */
static char *
expand_myhostname(const char *s, const char *myhostname)
{
	static const char var[] = "$myhostname";
	size_t vlen = sizeof(var) - 1, hlen = strlen(myhostname), n = 0;
	const char *p;
	char *out, *o;

	for (p = s; (p = strstr(p, var)) != NULL; p += vlen)
		n++;
	o = out = relay_xmalloc(strlen(s) + n * hlen + 1);
	for (p = s; *p != '\0';) {
		if (strncmp(p, var, vlen) == 0) {
			memcpy(o, myhostname, hlen);
			o += hlen;
			p += vlen;
		} else
			*o++ = *p++;
	}
	*o = '\0';
	return out;
}

static void
dnsd_ns_free(void)
{
	size_t i;

	for (i = 0; i < dnsd_ns.n; i++)
		free(dnsd_ns.v[i]);
	free(dnsd_ns.v);
	memset(&dnsd_ns, 0, sizeof(dnsd_ns));
	free(dnsd_hostmaster);
	dnsd_hostmaster = NULL;
}

/*
 * dnsd_configure - dnsd_conf from cfg (dns_ns, dns_hostmaster with
 * $myhostname expanded, TTLs).  The server runs on this (the main)
 * thread, so changing what it reads between two queries is safe.
 */
static void
dnsd_configure(const struct relay_config *cfg)
{
	size_t i;

	dnsd_ns_free();
	dnsd_ns.n = cfg->dns_ns.n;
	dnsd_ns.v = relay_xcalloc(dnsd_ns.n + 1, sizeof(char *));
	for (i = 0; i < cfg->dns_ns.n; i++)
		dnsd_ns.v[i] = expand_myhostname(cfg->dns_ns.v[i],
		    cfg->myhostname);
	dnsd_hostmaster = expand_myhostname(cfg->dns_hostmaster,
	    cfg->myhostname);
	dnsd_conf.listen = cfg->dns_listen;      /* used at start only */
	dnsd_conf.ns = &dnsd_ns;
	dnsd_conf.hostmaster = dnsd_hostmaster;
	dnsd_conf.ttl = cfg->dns_ttl;
	dnsd_conf.negative_ttl = cfg->dns_negative_ttl;
	dnsd_conf.lookup = relay_keymgr_dns_lookup;
	dnsd_conf.arg = keymgr;
}

/*
 * keys_start - the key manager (always: with no tenants it manages
 * nothing).  A key store that can't be opened is fatal; an unreachable
 * Redis is not (the manager retries).  0 or -1.
 */
static int
keys_start(const struct relay_config *cfg)
{
	char err[512];

	if (relay_keymgr_start(cfg, &keymgr, err, sizeof(err)) != 0) {
		relay_log(LOG_ERR, "managed keys: %s", err);
		keymgr = NULL;
		return -1;
	}
	return 0;
}

/* dns_start - the built-in DNS server when dns_listen is set.  0 or -1. */
static int
dns_start(uv_loop_t *loop, const struct relay_config *cfg)
{
	char err[512];

	if (cfg->dns_listen == NULL || cfg->dns_listen[0] == '\0')
		return 0;
	dnsd_configure(cfg);
	if (relay_dnsd_start(loop, &dnsd_conf, &dnsd, err, sizeof(err)) != 0) {
		relay_log(LOG_ERR, "dns_listen %s: %s", cfg->dns_listen, err);
		dnsd = NULL;
		return -1;
	}
	relay_log(LOG_INFO, "dns: serving the _domainkey zones on %s",
	    cfg->dns_listen);
	return 0;
}

/* ---- signals ----------------------------------------------------------- */

static void
admin_stopped(void *arg)
{
	(void)arg;
}

static void
main_spool_closed(void *arg)
{
	(void)arg;
	uv_close((uv_handle_t *)&worker_exit, NULL);
}

/* sched_stopped - no job in flight any more: free the delivery side. */
static void
sched_stopped(void *arg)
{
	(void)arg;
	sched = NULL;
	relay_agent_free(agent);
	agent = NULL;
	gen_unref(agent_gen);
	agent_gen = NULL;
	if (main_spool != NULL)
		queue_spool_close(main_spool, main_spool_closed, NULL);
	else
		uv_close((uv_handle_t *)&worker_exit, NULL);
}

/*
 * on_worker_exit - once every worker has ended (no more commits can notify
 * the queue manager), stop delivery and let the main loop end.
 */
static void
on_worker_exit(uv_async_t *h)
{
	(void)h;
	if (atomic_load(&workers_ended) < nworkers || uv_is_closing((uv_handle_t *)h))
		return;
	if (admin != NULL)
		relay_admin_stop(admin, admin_stopped, NULL);
	admin = NULL;
	if (dnsd != NULL)
		relay_dnsd_stop(dnsd);
	dnsd = NULL;
	if (sched != NULL)
		queue_sched_stop(sched, sched_stopped, NULL);
	else
		sched_stopped(NULL);
}

/*
 * notify_committed - a spool made a message durable.  Workers call it from
 * their threads: sched is set before they start and cleared only after all
 * of them have ended.
 */
static void
notify_committed(void *arg, const char *id)
{
	(void)arg;
	if (sched != NULL)
		queue_sched_notify(sched, id);
}

static void
on_stop_signal(uv_signal_t *h, int signum)
{
	if (stopping++) {
		relay_log(LOG_WARNING, "second signal %d: exiting now", signum);
		exit(1);
	}
	relay_log(LOG_INFO, "signal %d: stopping (deadline %d s)", signum,
	    RELAY_STOP_DEADLINE_MS / 1000);
	workers_send(NULL, 1);
	uv_close((uv_handle_t *)&sig_term, NULL);
	uv_close((uv_handle_t *)&sig_int, NULL);
	uv_close((uv_handle_t *)&sig_hup, NULL);
}

static void
on_hup(uv_signal_t *h, int signum)
{
	struct relay_gen *g;

	(void)h;
	(void)signum;
	relay_log(LOG_INFO, "reloading %s", current->cfg.file != NULL ?
	    current->cfg.file : "the embedded configuration");
	if ((g = gen_load(current->cfg.file, 0)) == NULL) {
		relay_log(LOG_ERR, "reload failed: keeping the running configuration");
		return;
	}
	relay_config_restart_changes(&current->cfg, &g->cfg, NULL, NULL);
	relay_log_set_level(g->cfg.log_level);
	relay_keymgr_reconfigure(keymgr, &g->cfg);
	if (dnsd != NULL)
		dnsd_configure(&g->cfg);
	workers_send(g, 0);
	if (agent != NULL) {
		atomic_fetch_add(&g->refs, 1);
		relay_agent_set_config(agent, &g->cfg);
		gen_unref(agent_gen);
		agent_gen = g;
	}
	gen_unref(current);
	current = g;
	relay_log(LOG_INFO, "reloaded: %zu dkim_sign entries", g->cfg.ndkim_sign);
}

/* ---- start-up ---------------------------------------------------------- */

/*
 * delivery_start - the main loop's spool (for bounces), the delivery agent
 * and the queue manager, which reads active/ now; the workers' commits
 * reach it through qconf.committed.  0 or -1.
 */
static int
delivery_start(uv_loop_t *loop)
{
	struct queue_sched_config sc;
	int rc;

	qconf.committed = notify_committed;
	qconf.arg = NULL;
	if ((rc = queue_spool_new(loop, &qconf, &main_spool)) != 0) {
		relay_log(LOG_ERR, "spool %s: %s", qconf.spool_dir, strerror(-rc));
		main_spool = NULL;
		return -1;
	}
	agent_gen = current;
	atomic_fetch_add(&current->refs, 1);
	if ((agent = relay_agent_new(loop, &current->cfg, main_spool)) == NULL)
		return -1;
	relay_config_to_sched(&current->cfg, &sc);
	sc.spool_dir = qconf.spool_dir;
	sc.deliver = relay_agent_deliver;
	sc.bounce = relay_agent_bounce;
	sc.arg = agent;
	if ((rc = queue_sched_new(loop, &sc, &sched)) != 0) {
		relay_log(LOG_ERR, "queue manager: %s", strerror(-rc));
		sched = NULL;
		return -1;
	}
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: signet [-c FILE] [-t] [-n] [-s] [-V]\n");
	exit(2);
}

/* mkdir_p - create dir and its parents (0700 for the spool). */
static int
mkdir_p(const char *dir, mode_t mode)
{
	char *p = relay_xstrdup(dir), *s;
	int rc = 0;

	for (s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) != 0 && errno != EEXIST)
			rc = -errno;
		*s = '/';
	}
	if (rc == 0 && mkdir(p, mode) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
}

/* raise_nofile - room for max_connections sockets plus spool files. */
static void
raise_nofile(unsigned want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur >= want)
		return;
	rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		relay_log(LOG_WARNING, "open files limited to %llu (max_connections wants %u)",
		    (unsigned long long)rl.rlim_cur, want);
}

int
main(int argc, char **argv)
{
	const char *file = NULL;
	char *spool_dir = NULL;
	int ch, check = 0, use_syslog = 0, dump = 0, rc;
	char buf[32];
	uv_loop_t loop;

	while ((ch = getopt(argc, argv, "c:tnsVh")) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'n':
			dump = 1;
			break;
		case 's':
			use_syslog = 1;
			break;
		case 'V':
			printf("signet %s\n", relay_version());
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	relay_log_open(use_syslog && !check && !dump, LOG_INFO);
	relay_metrics_init();

	if ((current = gen_load(file, check || dump)) == NULL)
		return 1;
	if (check || dump) {
		if (dump)
			relay_config_dump(&current->cfg, stdout, 1);
		if (check)
			printf("configuration OK\n");
		gen_unref(current);
		return 0;
	}
	relay_log_set_level(current->cfg.log_level);
	relay_log(LOG_INFO, "signet %s starting (%s), %u workers, %u signing threads",
	    relay_version(), file != NULL ? file : "embedded default configuration",
	    current->cfg.workers, current->cfg.signing_threads);

	/*
	 * libuv sizes its thread pool on first use.  Signing shares it with
	 * the delivery client, whose queue file reads are short and bounded
	 * (one chunk per work, never waiting on the network) and with
	 * queue_file_mark's fdatasync: signing_threads is enough for all.
	 */
	snprintf(buf, sizeof(buf), "%u", current->cfg.signing_threads);
	setenv("UV_THREADPOOL_SIZE", buf, 1);
	raise_nofile(current->cfg.max_connections + 1024);
	signal(SIGPIPE, SIG_IGN);

	if ((rc = mkdir_p(current->cfg.spool_dir, 0700)) != 0) {
		relay_log(LOG_ERR, "spool_dir %s: %s", current->cfg.spool_dir,
		    strerror(-rc));
		return 1;
	}
	if ((rc = queue_recover(current->cfg.spool_dir, relay_log_hook, NULL)) < 0) {
		relay_log(LOG_ERR, "spool recovery in %s failed: %s",
		    current->cfg.spool_dir, strerror(-rc));
		return 1;
	}
	relay_log(LOG_INFO, "spool %s: %d messages waiting", current->cfg.spool_dir, rc);
	relay_metrics_queue_add(rc);
	if (keys_start(&current->cfg) != 0) {
		gen_unref(current);
		return 1;
	}
	relay_config_to_queue(&current->cfg, &qconf);
	spool_dir = relay_xstrdup(current->cfg.spool_dir); /* outlives reloads */
	qconf.spool_dir = spool_dir;

	main_loop = &loop;
	uv_loop_init(&loop);
	uv_async_init(&loop, &worker_exit, on_worker_exit);
	if (delivery_start(&loop) != 0) {
		rc = 1;
		nworkers = 0;
		stopping = 1;
		on_worker_exit(&worker_exit);
		uv_run(&loop, UV_RUN_DEFAULT);
		uv_loop_close(&loop);
		relay_keymgr_stop(keymgr);
		gen_unref(current);
		free(spool_dir);
		return rc;
	}
	uv_signal_init(&loop, &sig_term);
	uv_signal_init(&loop, &sig_int);
	uv_signal_init(&loop, &sig_hup);
	uv_signal_start(&sig_term, on_stop_signal, SIGTERM);
	uv_signal_start(&sig_int, on_stop_signal, SIGINT);
	uv_signal_start(&sig_hup, on_hup, SIGHUP);

	if (workers_start(current->cfg.workers) != 0) {
		relay_log(LOG_ERR, "start-up failed");
		workers_send(NULL, 1);
		rc = 1;
		goto out;
	}
	if (current->cfg.admin_listen[0] != '\0') {
		char err[256];

		if (relay_admin_start(&loop, current->cfg.admin_listen, &admin,
		    err, sizeof(err)) != 0) {
			relay_log(LOG_ERR, "admin_listen %s: %s",
			    current->cfg.admin_listen, err);
			workers_send(NULL, 1);
			rc = 1;
			goto out;
		}
		relay_admin_set_queue(admin, sched, spool_dir);
	}
	if (dns_start(&loop, &current->cfg) != 0) {
		workers_send(NULL, 1);
		rc = 1;
		goto out;
	}
	relay_log(LOG_INFO, "ready");
	rc = 0;
out:
	if (rc != 0 && !stopping) {
		stopping = 1;
		uv_close((uv_handle_t *)&sig_term, NULL);
		uv_close((uv_handle_t *)&sig_int, NULL);
		uv_close((uv_handle_t *)&sig_hup, NULL);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	for (unsigned i = 0; i < nworkers; i++)
		uv_thread_join(&workers[i].thread);
	for (unsigned i = 0; i < nworkers; i++) {
		if (workers[i].pending != NULL)
			gen_unref(workers[i].pending);
		uv_mutex_destroy(&workers[i].lock);
		uv_sem_destroy(&workers[i].ready);
	}
	free(workers);
	uv_loop_close(&loop);
	/* no worker can sign any more, and the DNS server is closed */
	relay_keymgr_stop(keymgr);
	keymgr = NULL;
	dnsd_ns_free();
	relay_log(LOG_INFO, "stopped");
	gen_unref(current);
	free(spool_dir);
	relay_log_close();
	return rc;
}
