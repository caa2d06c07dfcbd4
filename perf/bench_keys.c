/*
 * bench_keys.c - signing throughput with 1, 10,000 and 100,000 managed
 * domains (issue 5), as a ratio to the single-domain figure.
 *
 * Setup (not timed): a key store per domain count N (a file store in the
 * work directory, or a Redis database) holding tenant "default" with its
 * initial domain and N managed domains d00000.bench.example, ...; every
 * domain is enabled and its selector1 is confirmed, so it signs with
 * d=<domain> s=selector1.  Making 100,000 distinct RSA-2048 keys would take
 * hours, so a pool of distinct keys (64) is made once and dealt round-robin
 * to the domains' slots: each domain still has its own store record and
 * its own copy of a private key, which the relay looks up, reads, decodes
 * and parses on its own, and caches under the domain's name; the work per
 * domain is that of distinct keys.
 *
 * Then a key manager (relay_keymgr_start) per configuration, and a
 * warm-up that signs for every domain once on each signing thread, so that
 * the rounds see the steady state of a running relay (see start_config
 * and the pool of signing threads for why both matter with OpenSSL).
 *
 * Measured: the signing path of one message as the SMTP server runs it: a
 * signer whose header callback calls relay_keymgr_sign_lookup for the From
 * domain (uniformly random among the N, fixed seed), adds the signature and
 * drops the key reference; then the ~2 KB message is written and the
 * signer finished.  Each configuration runs ROUNDS times for SECONDS of
 * wall clock on 1 and 2 threads, interleaved with the others so that the
 * machine's noise hits all of them alike; the best round counts, by wall
 * clock and by the signing threads' CPU time (the target is judged on the
 * latter, the clock of bench_dkim and `openssl speed`).  The time spent in
 * relay_keymgr_sign_lookup is summed apart, and the manager's cache
 * counters (relay_keymgr_stats) give the hit rate.
 *
 * Not a test: it prints figures and exits 0 unless something broke (a
 * message not signed by its own domain's key, a store or manager error).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "dkim/dkim.h"
#include "relay/keys.h"
#include "relay/relay.h"

#define BENCH_TENANT "default"
#define BENCH_INITIAL "bench.signet.example"
#define BENCH_SEED 0x6b657973u     /* fixed: the same domain sequence */
#define MAX_NS 8
#define MAX_THREADS 16
#define MAX_ROUNDS 64
#define MAX_CONFIGS (MAX_NS + 1)

/* One key store: N domains, with its setup figures. */
struct store {
	unsigned n;
	char url[512];
	double put_secs;           /* writing the records (0: reused) */
	int reused;
};

/* One measured configuration: a store and a key manager over it. */
struct config {
	struct store *st;
	unsigned cache;            /* dkim_key_cache_size */
	struct relay_keymgr *km;
	double start_secs;         /* relay_keymgr_start */
	double warm_secs[MAX_THREADS];  /* warm-up passes */
	uint64_t warm_msgs[MAX_THREADS], warm_misses[MAX_THREADS];
	int warm_passes;
	size_t cache_keys, cache_cap;  /* after the warm-up */
	long rss_kb;                   /* the process's, after the warm-up */
	double rate[MAX_THREADS + 1][MAX_ROUNDS];   /* msg/s per round */
	double cpurate[MAX_THREADS + 1][MAX_ROUNDS]; /* msg/CPU s x threads */
	uint64_t msgs[MAX_THREADS + 1];
	uint64_t hits[MAX_THREADS + 1], misses[MAX_THREADS + 1];
	double lookup_secs[MAX_THREADS + 1];        /* in sign_lookup */
};

/* Options. */
static unsigned opt_ns[MAX_NS] = { 1, 10000, 100000 };
static int opt_nns = 3;
static unsigned opt_small_cache = 10000;
static unsigned opt_cache = 100000;
static int opt_threads[MAX_THREADS] = { 1, 2 };
static int opt_nthreads = 2;
static double opt_secs = 1.0;
static int opt_rounds = 3;
static int opt_pool = 64;
static const char *opt_dir;
static const char *opt_redis;      /* "HOST:PORT" or NULL: file stores */
static const char *opt_secret;     /* Redis key-encryption key file */
static int opt_bulk;               /* -B: write file store records directly */

static struct dkim_key **pool;
static char **pool_txt;            /* TXT of each pool key, for checking */

/* ---- helpers ------------------------------------------------------------ */

/* mono_now - monotonic wall clock, seconds */
static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* cpu_of - CPU seconds of clock (process or this thread) */
static double
cpu_of(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* die - print "bench_keys: msg" and exit 1 */
static void __attribute__((format(printf, 1, 2), noreturn))
die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "bench_keys: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

/* rss_kb - resident set size of this process in KB (0: unknown) */
static long
rss_kb(void)
{
	char line[256];
	long kb = 0;
	FILE *fp;

	if ((fp = fopen("/proc/self/status", "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(fp);
	return kb;
}

/* rnd - splitmix64 step on *s */
static uint64_t
rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* domain_name - the bench's i-th managed domain into out */
static void
domain_name(unsigned i, char *out, size_t outlen)
{
	snprintf(out, outlen, "d%05u.bench.example", i);
}

/* pool_index - which pool key fills slot (1, 2) of domain i (-1: initial) */
static int
pool_index(long i, int slot)
{
	long k = i < 0 ? slot - 1 : 2 * i + slot - 1;

	return (int)(k % opt_pool);
}

/* ---- the message -------------------------------------------------------- */

static const char msg_head[] =
    "Received: from client.example (client.example [192.0.2.10])\r\n"
    "\tby relay.bench.example (Signet) with ESMTPSA id 4f2a9c1d\r\n"
    "\tfor <rcpt@recipient.example>; Tue, 14 May 2024 09:30:00 +0000\r\n"
    "Return-Path: <sender@%s>\r\n"
    "From: Bench Sender <sender@%s>\r\n"
    "To: Recipient <rcpt@recipient.example>\r\n"
    "Cc: Another <another@recipient.example>\r\n"
    "Subject: Quarterly report and the schedule for the review meeting\r\n"
    "Date: Tue, 14 May 2024 09:30:00 +0000\r\n"
    "Message-ID: <20240514093000.4f2a9c1d@%s>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "Reply-To: Bench Sender <sender@%s>\r\n"
    "X-Mailer: bench_keys\r\n"
    "\r\n";

static char *msg_body;
static size_t msg_body_len;

/* make_body - about 1.5 KB of ordinary text lines, CRLF */
static void
make_body(void)
{
	static const char *const lines[] = {
	    "Hi Bob,",
	    "",
	    "please find the quarterly report attached.  The figures for the",
	    "second quarter are in the usual place, and the budget review is",
	    "scheduled for Tuesday morning at 15:30 in the small meeting room.",
	    "Let me know if the time does not work for the team.",
	    "",
	    "> Could you also send the updated version of the agreement we",
	    "> discussed last week?  The customer asked about the deadline.",
	    "",
	    "Yes, the updated version is on the server; the release notes and",
	    "the following information should answer most of the questions:",
	    "",
	    "  - the schedule moves by one week, see the document below;",
	    "  - the invoice goes out with the next release;",
	    "  - the project review is on the 21st.",
	    "",
	    "Thanks, and regards,",
	    "-- ",
	    "Alice",
	    "Example Corp., Office 3, https://example.com/a/b",
	};
	size_t i, cap = 4096, n = 0, l;
	int rep;

	if ((msg_body = malloc(cap)) == NULL)
		die("out of memory");
	for (rep = 0; rep < 2 && n < 1500; rep++)
		for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
			l = strlen(lines[i]);
			memcpy(msg_body + n, lines[i], l);
			memcpy(msg_body + n + l, "\r\n", 2);
			n += l + 2;
		}
	msg_body_len = n;
}

/* format_msg - the whole message for From domain into buf; its length */
static size_t
format_msg(char *buf, size_t cap, const char *domain)
{
	int n = snprintf(buf, cap, msg_head, domain, domain, domain, domain);

	if (n < 0 || (size_t)n + msg_body_len > cap)
		die("message buffer too small");
	memcpy(buf + n, msg_body, msg_body_len);
	return (size_t)n + msg_body_len;
}

/* ---- signing ------------------------------------------------------------ */

/* What the header callback needs: the manager and the expected d=. */
struct sign_ctx {
	struct relay_keymgr *km;
	const char *domain;
	struct sockaddr_in client;
	int nsigs;
	double lookup_secs;        /* summed time in sign_lookup */
	char reason[256];
};

/*
 * on_headers - as smtp/server.c's: ask the key manager which signatures
 * to make for the From domain, add them, drop the key references.  The
 * one signature must have d= the From domain (every domain is enabled).
 */
static int
on_headers(void *arg, struct dkim_signer *sg, const char *from_domain)
{
	struct sign_ctx *c = arg;
	struct dkim_sign_params sp[DKIM_MAX_SIGS];
	struct smtp_sign_request rq;
	double t0;
	int n, i, rc = 0;

	memset(sp, 0, sizeof(sp));
	memset(&rq, 0, sizeof(rq));
	rq.from_domain = from_domain;
	rq.client = (const struct sockaddr *)&c->client;
	rq.queue_id = "4f2a9c1d";
	c->reason[0] = '\0';
	t0 = mono_now();
	n = relay_keymgr_sign_lookup(c->km, &rq, sp, DKIM_MAX_SIGS,
	    c->reason, sizeof(c->reason));
	c->lookup_secs += mono_now() - t0;
	if (n != 1 || sp[0].domain == NULL ||
	    strcmp(sp[0].domain, c->domain) != 0 || sp[0].selector == NULL ||
	    strcmp(sp[0].selector, "selector1") != 0) {
		fprintf(stderr, "bench_keys: %s: sign lookup gave %d "
		    "signature(s), d=%s s=%s (%s)\n", c->domain, n,
		    n > 0 && sp[0].domain ? sp[0].domain : "-",
		    n > 0 && sp[0].selector ? sp[0].selector : "-",
		    c->reason[0] ? c->reason : "no reason");
		rc = DKIM_EINVAL;
	}
	for (i = 0; i < n && i < DKIM_MAX_SIGS; i++) {
		if (rc == 0)
			rc = dkim_signer_add(sg, &sp[i]);
		dkim_key_free(sp[i].key);
	}
	c->nsigs = n;
	return rc;
}

/*
 * sign_msg - sign msg (From domain) through km; the header field or NULL.
 * The time spent in the sign lookup is added to *lookup_secs.
 */
static char *
sign_msg(struct relay_keymgr *km, const char *domain, const char *msg,
    size_t len, size_t *outlen, double *lookup_secs)
{
	struct sign_ctx c;
	struct dkim_signer *s;
	char *out = NULL;
	int rc;

	memset(&c, 0, sizeof(c));
	c.km = km;
	c.domain = domain;
	c.client.sin_family = AF_INET;
	c.client.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((s = dkim_signer_new()) == NULL)
		die("out of memory");
	dkim_signer_on_headers(s, on_headers, &c);
	if ((rc = dkim_signer_write(s, msg, len)) == 0)
		rc = dkim_signer_finish(s, &out, outlen);
	dkim_signer_free(s);
	*lookup_secs += c.lookup_secs;
	if (rc != 0) {
		fprintf(stderr, "bench_keys: signing for %s: %s\n", domain,
		    dkim_strerror(rc));
		return NULL;
	}
	return out;
}

/* ---- checking what was signed -------------------------------------------- */

/* verify_lookup - the TXT of d='s selector1 from the pool (no DNS) */
static int
verify_lookup(void *arg, const char *domain, const char *selector,
    char **txt, char *err, size_t errlen)
{
	unsigned i;

	if (sscanf(domain, "d%u.bench.example", &i) != 1 ||
	    strcmp(selector, "selector1") != 0) {
		snprintf(err, errlen, "no key for %s/%s", domain, selector);
		return DKIM_ENOKEY;
	}
	if ((*txt = strdup(pool_txt[pool_index(i, 1)])) == NULL)
		return DKIM_ENOMEM;
	return 0;
}

/*
 * check_config - sign a few messages for random domains and verify each
 * with the public key that domain's selector1 must have: a signature made
 * with the wrong domain's key (a cache mix-up) fails here.
 */
static void
check_config(struct config *c)
{
	struct dkim_verify_result res[DKIM_MAX_SIGS + 1];
	struct dkim_verifier *v;
	char domain[DKIM_DOMAIN_MAX], buf[8192], *sig, *full;
	uint64_t seed = BENCH_SEED ^ 0xc4ec4ull;
	size_t len, siglen;
	double lk = 0;
	int k, nres;

	for (k = 0; k < 8; k++) {
		domain_name((unsigned)(k == 0 ? c->st->n - 1 :
		    rnd(&seed) % c->st->n), domain, sizeof(domain));
		len = format_msg(buf, sizeof(buf), domain);
		if ((sig = sign_msg(c->km, domain, buf, len, &siglen,
		    &lk)) == NULL)
			die("N=%u: cannot sign for %s", c->st->n, domain);
		if ((full = malloc(siglen + len)) == NULL)
			die("out of memory");
		memcpy(full, sig, siglen);
		memcpy(full + siglen, buf, len);
		if ((v = dkim_verifier_new(verify_lookup, NULL)) == NULL)
			die("out of memory");
		dkim_verifier_write(v, full, siglen + len);
		nres = dkim_verifier_finish(v, time(NULL), res,
		    DKIM_MAX_SIGS + 1);
		if (nres != 1 || !res[0].pass)
			die("N=%u: the signature for %s does not verify with "
			    "its selector1 key: %s", c->st->n, domain,
			    nres >= 1 ? res[0].reason : dkim_strerror(nres));
		dkim_verifier_free(v);
		free(full);
		free(sig);
	}
}

/* ---- setup: the key pool and the stores --------------------------------- */

/* make_pool - opt_pool RSA-2048 keys, read from or written to DIR/pool */
static void
make_pool(void)
{
	char path[1024];
	double t0 = mono_now();
	int i, made = 0, rc;
	char err[256];

	snprintf(path, sizeof(path), "%s/pool", opt_dir);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		die("mkdir %s: %s", path, strerror(errno));
	pool = calloc((size_t)opt_pool, sizeof(*pool));
	pool_txt = calloc((size_t)opt_pool, sizeof(*pool_txt));
	if (pool == NULL || pool_txt == NULL)
		die("out of memory");
	for (i = 0; i < opt_pool; i++) {
		snprintf(path, sizeof(path), "%s/pool/k%03d.pem", opt_dir, i);
		if (access(path, R_OK) == 0) {
			if ((rc = dkim_key_load(path, &pool[i], err,
			    sizeof(err))) != 0)
				die("%s: %s", path, err);
		} else {
			if ((rc = dkim_key_generate(DKIM_ALG_RSA_SHA256, 2048,
			    &pool[i])) != 0)
				die("dkim_key_generate: %s", dkim_strerror(rc));
			if ((rc = dkim_key_write_pem(pool[i], path)) != 0)
				die("%s: %s", path, dkim_strerror(rc));
			made++;
		}
		if ((pool_txt[i] = dkim_key_txt(pool[i])) == NULL)
			die("out of memory");
	}
	printf("key pool: %d distinct RSA-2048 keys (%d generated in %.1f s), "
	    "dealt round-robin to the domains' slots\n", opt_pool, made,
	    mono_now() - t0);
}

/* store_url - the key store of st: DIR/store-N, or a Redis database */
static void
store_url(struct store *st, int idx)
{
	if (opt_redis != NULL)
		snprintf(st->url, sizeof(st->url), "redis://%s/%d", opt_redis,
		    idx + 1);
	else
		snprintf(st->url, sizeof(st->url), "%s/store-%u", opt_dir,
		    st->n);
}

/*
 * make_domain - domain i (-1 for the initial domain) with the pool's keys,
 * enabled (the initial domain: not) and selector1 confirmed, as if
 * provisioned 30 days ago and through the gate since.  Domains sharing a
 * pair of pool keys are copies of one provisioned template (exporting a
 * key takes OpenSSL longer than writing the record).
 */
static void
make_domain(struct dkim_mdomain *d, long i, int64_t now)
{
	static struct dkim_mdomain *tmpl;
	static int ntmpl;
	struct dkim_mdomain *t;
	int64_t t0 = now - 30 * 86400;
	int k, rc;

	if (tmpl == NULL) {
		ntmpl = opt_pool;
		if ((tmpl = calloc((size_t)ntmpl + 1, sizeof(*tmpl))) == NULL)
			die("out of memory");
	}
	k = i < 0 ? ntmpl : pool_index(i, 1);
	t = &tmpl[k];
	if (t->slot[0].bits == 0) {
		if ((rc = dkim_mdomain_provision(t, i < 0 ? BENCH_INITIAL :
		    "template.bench.example", BENCH_TENANT, BENCH_INITIAL,
		    pool[pool_index(i, 1)], pool[pool_index(i, 2)], t0)) != 0)
			die("dkim_mdomain_provision: %s", dkim_strerror(rc));
		t->enabled = i >= 0;
		t->slot[0].seen = t->slot[1].seen = t0 + 8 * 86400;
		t->slot[0].seen_via = t->slot[1].seen_via = t->enabled;
		t->slot[0].confirmed = t0 + 8 * 86400;
		t->dns_checked = t0 + 8 * 86400;
		t->dns_result = 1;
	}
	if (dkim_mdomain_copy(d, t) != 0)
		die("out of memory");
	if (i < 0)
		snprintf(d->domain, sizeof(d->domain), "%s", BENCH_INITIAL);
	else
		domain_name((unsigned)i, d->domain, sizeof(d->domain));
}

/* put_domain - domain i written through the store's API */
static void
put_domain(struct relay_keystore *ks, long i, int64_t now)
{
	struct dkim_mdomain d;
	char err[256];

	make_domain(&d, i, now);
	if (relay_keystore_put_domain(ks, &d, 0, "provision", err,
	    sizeof(err)) != 0)
		die("key store: put %s: %s", d.domain, err);
	dkim_mdomain_clear(&d);
}

/* bulk_field - one "field value" line of a record file */
static int
bulk_field(void *arg, const char *field, const char *value)
{
	return fprintf(arg, "%s %s\n", field, value) < 0 ? -EIO : 0;
}

/*
 * bulk_domain - domain i written straight into the file store's
 * directory in its documented format (relay/keystore.c: DIR/domains/
 * <domain>, "field value" lines, sN.priv base64 PKCS#8 DER, version 1),
 * without the store's lock, fsyncs or history: only for -B.
 */
static void
bulk_domain(const char *dir, long i, int64_t now)
{
	struct dkim_mdomain d;
	char path[1024], tmp[1100], *b64;
	FILE *fp;
	int s;

	make_domain(&d, i, now);
	d.version = 1;
	snprintf(path, sizeof(path), "%s/domains/%s", dir, d.domain);
	snprintf(tmp, sizeof(tmp), "%s/domains/.%s.bench", dir, d.domain);
	if ((fp = fopen(tmp, "w")) == NULL)
		die("%s: %s", tmp, strerror(errno));
	if (dkim_mdomain_fields(&d, 0, bulk_field, fp) != 0)
		die("%s: cannot write the record", tmp);
	for (s = 1; s <= 2; s++) {
		if ((b64 = dkim_b64_encode(d.slot[s - 1].priv,
		    d.slot[s - 1].privlen)) == NULL)
			die("out of memory");
		fprintf(fp, "s%d.priv %s\n", s, b64);
		free(b64);
	}
	if (fchmod(fileno(fp), 0600) != 0 || fclose(fp) != 0 ||
	    rename(tmp, path) != 0)
		die("%s: %s", path, strerror(errno));
	dkim_mdomain_clear(&d);
}

/* done_path - the marker saying a file store was completely written */
static void
done_path(const struct store *st, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/store-%u.done", opt_dir, st->n);
}

/*
 * make_store - open st's store and fill it: tenant "default", its initial
 * domain and st->n domains.  A file store completed by an earlier run in
 * the same directory (marker file) is reused as it is.
 */
static void
make_store(struct store *st)
{
	struct relay_keystore *ks;
	struct relay_tenant t;
	char err[256], path[1100];
	int64_t now = relay_clock_now();
	double t0;
	unsigned i;
	FILE *fp;
	int rc;

	done_path(st, path, sizeof(path));
	if (opt_redis == NULL && access(path, F_OK) == 0) {
		st->reused = 1;
		return;
	}
	if (opt_redis == NULL && access(st->url, F_OK) == 0)
		die("%s exists but was not completed (an interrupted run?): "
		    "remove it", st->url);
	if ((rc = relay_keystore_open(st->url, opt_secret, "bench",
	    &ks, err, sizeof(err))) != 0)
		die("%s: %s", st->url, err);
	t0 = mono_now();
	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", BENCH_TENANT);
	snprintf(t.initial_domain, sizeof(t.initial_domain), "%s",
	    BENCH_INITIAL);
	t.users = strdup("");
	t.networks = strdup("");
	if (t.users == NULL || t.networks == NULL)
		die("out of memory");
	if ((rc = relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err))) != 0)
		die("%s: put tenant: %s", st->url, err);
	relay_tenant_clear(&t);
	for (i = 0; i < st->n; i++) {
		if (opt_bulk)
			bulk_domain(st->url, (long)i, now);
		else
			put_domain(ks, (long)i, now);
	}
	/* Last, through the API: with -B this also bumps the store's serial
	 * after the files written behind its back. */
	put_domain(ks, -1, now);
	st->put_secs = mono_now() - t0;
	relay_keystore_close(ks);
	if (opt_redis == NULL) {
		if ((fp = fopen(path, "w")) == NULL || fclose(fp) != 0)
			die("%s: %s", path, strerror(errno));
	}
}

/* write_conf - relay.conf for st with cache size; its path into out */
static void
write_conf(const struct store *st, unsigned cache, char *out, size_t outlen)
{
	FILE *fp;

	snprintf(out, outlen, "%s/relay-%u-%u.conf", opt_dir, st->n, cache);
	if ((fp = fopen(out, "w")) == NULL)
		die("%s: %s", out, strerror(errno));
	fprintf(fp,
	    "myhostname = bench.localhost\n"
	    "initial_domain = %s\n"
	    "keystore = %s%s\n"
	    "keystore_secret_file = %s\n"
	    "dkim_unprovisioned = unsigned\n"
	    "dkim_dns_check = no\n"
	    "dkim_check_interval = 1d\n"
	    "dkim_key_cache_size = %u\n"
	    "smtpd_tls_cert_file =\n"
	    "smtpd_tls_key_file =\n"
	    "spool_dir = %s/spool\n",
	    BENCH_INITIAL, opt_redis != NULL ? "" : "file:", st->url,
	    opt_secret != NULL ? opt_secret : "", cache, opt_dir);
	if (fclose(fp) != 0)
		die("%s: %s", out, strerror(errno));
}

/* conf_err - relay_config_load's messages, to stderr */
static void
conf_err(void *arg, int prio, const char *msg)
{
	fprintf(stderr, "bench_keys: %s\n", msg);
}

/*
 * wait_idle - wait until the other threads (the managers' rotation
 * threads, which may read the whole store on their first tick) use less
 * than 2 % of a CPU for a second, at most limit seconds.
 */
static void
wait_idle(double limit)
{
	double t0 = mono_now(), p, m, dp, dm;
	int quiet = 0;

	while (quiet < 4 && mono_now() - t0 < limit) {
		p = cpu_of(CLOCK_PROCESS_CPUTIME_ID);
		m = cpu_of(CLOCK_THREAD_CPUTIME_ID);
		usleep(250000);
		dp = cpu_of(CLOCK_PROCESS_CPUTIME_ID) - p;
		dm = cpu_of(CLOCK_THREAD_CPUTIME_ID) - m;
		quiet = dp - dm < 0.005 ? quiet + 1 : 0;
	}
	if (quiet < 4)
		printf("  (background threads still busy after %.0f s)\n",
		    limit);
}

/* ---- signing threads ---------------------------------------------------- */

/*
 * A pool of signing threads that live as long as the process, as the
 * relay's signing threads do.  That matters: OpenSSL sets up an RSA key's
 * blinding values on the first signature with it, and again for the first
 * signature on any other thread (the shared "mt_blinding"), a few hundred
 * microseconds each; threads made anew for every round would pay that for
 * every key again, which a running relay does not.
 *
 * A job: signing for random domains until `until` (a timed round), or,
 * with until == 0, one message for each domain i = order[k], k < count,
 * with (i + pass) % nthr == the thread's number (a warm-up pass: over
 * nthr passes every domain gets a message on every thread).  The order is
 * a fresh random permutation for every pass: scanning the domains in the
 * same order again and again is the worst case of any LRU-like cache that
 * is a little too small (every access misses), which is not how mail
 * arrives.
 */
struct job {
	struct config *c;
	int nthr;
	uint64_t seed;
	double until;
	const unsigned *order;
	unsigned count;
	int pass;
};

struct worker {
	pthread_t tid;
	int idx;
	uint64_t seed;
	uint64_t msgs;
	double lookup_secs;
	double cpu_secs;           /* this thread's CPU time in the job */
	int failed;
};

static struct worker workers[MAX_THREADS];
static int nworkers;
static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cv = PTHREAD_COND_INITIALIZER;
static struct job job;
static unsigned job_gen;           /* bumped for every job */
static int job_done;               /* workers finished with job_gen */

/* do_job - this worker's part of job j */
static void
do_job(struct worker *w, const struct job *j)
{
	char domain[DKIM_DOMAIN_MAX], buf[8192], *sig;
	size_t len, siglen;
	unsigned n = j->c->st->n, i, k;
	double c0 = cpu_of(CLOCK_THREAD_CPUTIME_ID);

	w->msgs = 0;
	w->lookup_secs = 0;
	w->failed = 0;
	w->seed = j->seed + (uint64_t)w->idx * 7919u;
	k = 0;
	for (;;) {
		if (j->until == 0) {
			while (k < j->count && (int)((j->order[k] +
			    (unsigned)j->pass) % (unsigned)j->nthr) != w->idx)
				k++;
			if (k >= j->count)
				break;
			i = j->order[k];
		} else
			i = (unsigned)(rnd(&w->seed) % n);
		domain_name(i, domain, sizeof(domain));
		len = format_msg(buf, sizeof(buf), domain);
		if ((sig = sign_msg(j->c->km, domain, buf, len, &siglen,
		    &w->lookup_secs)) == NULL) {
			w->failed = 1;
			break;
		}
		free(sig);
		w->msgs++;
		if (j->until == 0)
			k++;
		else if (mono_now() >= j->until)
			break;
	}
	w->cpu_secs = cpu_of(CLOCK_THREAD_CPUTIME_ID) - c0;
}

/* worker_main - wait for jobs, do this worker's part of each */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned seen = 0;
	struct job j;

	for (;;) {
		pthread_mutex_lock(&job_mu);
		while (job_gen == seen)
			pthread_cond_wait(&job_cv, &job_mu);
		seen = job_gen;
		j = job;
		pthread_mutex_unlock(&job_mu);
		if (w->idx < j.nthr)
			do_job(w, &j);
		pthread_mutex_lock(&job_mu);
		job_done++;
		pthread_cond_broadcast(&job_cv);
		pthread_mutex_unlock(&job_mu);
	}
	return NULL;
}

/* start_workers - the pool of n signing threads */
static void
start_workers(int n)
{
	int i;

	for (i = 0; i < n; i++) {
		workers[i].idx = i;
		if (pthread_create(&workers[i].tid, NULL, worker_main,
		    &workers[i]) != 0)
			die("pthread_create failed");
		pthread_detach(workers[i].tid);
	}
	nworkers = n;
}

/*
 * run_job - hand j to the pool and wait for it: messages signed; the
 * lookup time and the signing threads' CPU time are added to *lookup_secs
 * and *cpu_secs.
 */
static uint64_t
run_job(const struct job *j, double *lookup_secs, double *cpu_secs)
{
	uint64_t total = 0;
	int i;

	pthread_mutex_lock(&job_mu);
	job = *j;
	job_done = 0;
	job_gen++;
	pthread_cond_broadcast(&job_cv);
	while (job_done < nworkers)
		pthread_cond_wait(&job_cv, &job_mu);
	pthread_mutex_unlock(&job_mu);
	for (i = 0; i < j->nthr; i++) {
		if (workers[i].failed)
			die("N=%u: signing failed", j->c->st->n);
		total += workers[i].msgs;
		*lookup_secs += workers[i].lookup_secs;
		*cpu_secs += workers[i].cpu_secs;
	}
	return total;
}

/* ---- the managers -------------------------------------------------------- */

/*
 * start_config - a key manager over c's store, then the warm-up, so that
 * the timed rounds see the steady state of a relay that has been running:
 * with a cache for every domain, every domain gets one message on each of
 * the nthr signing threads, in random order (its key is loaded once, then
 * used on every thread); with a smaller cache, the last `cache` domains
 * one message each (the cache full).  The warm-up is reported: its first pass is the
 * cost of a cold cache.  Then the signature check.
 */
static void
start_config(struct config *c, int nthr)
{
	struct relay_config cfg;
	struct relay_keymgr_stats s0, s1;
	struct job j;
	char path[1100], err[256];
	double t0, lk = 0, cpu = 0;
	unsigned *order, from, k, x, tmp;
	uint64_t seed = BENCH_SEED ^ c->st->n ^ ((uint64_t)c->cache << 32);
	int pass;

	write_conf(c->st, c->cache, path, sizeof(path));
	memset(&cfg, 0, sizeof(cfg));
	if (relay_config_load(path, &cfg, conf_err, NULL) != 0)
		die("%s: configuration refused", path);
	t0 = mono_now();
	if (relay_keymgr_start(&cfg, &c->km, err, sizeof(err)) != 0)
		die("relay_keymgr_start (%s): %s", c->st->url, err);
	c->start_secs = mono_now() - t0;
	/* cfg is left alone: the manager runs until the process exits. */
	wait_idle(120);

	memset(&j, 0, sizeof(j));
	j.c = c;
	j.nthr = nthr;
	from = c->cache < c->st->n ? c->st->n - c->cache : 0;
	j.count = c->st->n - from;
	if ((order = malloc(sizeof(*order) * j.count)) == NULL)
		die("out of memory");
	for (k = 0; k < j.count; k++)
		order[k] = from + k;
	j.order = order;
	for (pass = 0; pass < (c->cache < c->st->n ? 1 : nthr); pass++) {
		for (k = j.count; k > 1; k--) {     /* Fisher-Yates */
			x = (unsigned)(rnd(&seed) % k);
			tmp = order[k - 1];
			order[k - 1] = order[x];
			order[x] = tmp;
		}
		j.pass = pass;
		relay_keymgr_stats(c->km, &s0);
		t0 = mono_now();
		c->warm_msgs[pass] = run_job(&j, &lk, &cpu);
		c->warm_secs[pass] = mono_now() - t0;
		relay_keymgr_stats(c->km, &s1);
		c->warm_misses[pass] = s1.cache_misses - s0.cache_misses;
		c->warm_passes = pass + 1;
	}
	free(order);
	relay_keymgr_stats(c->km, &s1);
	c->cache_keys = s1.cache_keys;
	c->cache_cap = s1.cache_capacity;
	c->rss_kb = rss_kb();
	check_config(c);
}

/* ---- the timed runs ------------------------------------------------------ */

/*
 * run_round - one timed run of c with nthr threads: messages per second of
 * wall clock into rate, per CPU second of the signing threads (times
 * nthr) into cpurate.
 */
static void
run_round(struct config *c, int nthr, int round)
{
	struct relay_keymgr_stats s0, s1;
	struct job j;
	uint64_t total;
	double t0, dt, cpu = 0;

	memset(&j, 0, sizeof(j));
	j.c = c;
	j.nthr = nthr;
	j.seed = BENCH_SEED + (uint64_t)round * 1000003u +
	    (uint64_t)nthr * 100019u + c->st->n + c->cache;
	relay_keymgr_stats(c->km, &s0);
	t0 = mono_now();
	j.until = t0 + opt_secs;
	total = run_job(&j, &c->lookup_secs[nthr], &cpu);
	dt = mono_now() - t0;
	relay_keymgr_stats(c->km, &s1);
	c->msgs[nthr] += total;
	c->hits[nthr] += s1.cache_hits - s0.cache_hits;
	c->misses[nthr] += s1.cache_misses - s0.cache_misses;
	c->rate[nthr][round] = total / dt;
	c->cpurate[nthr][round] = cpu > 0 ? total * nthr / cpu : 0;
}

/* cmp_double - for qsort */
static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* best_of, median_of - over the rounds */
static double
best_of(const double *v, int n)
{
	double b = 0;
	int i;

	for (i = 0; i < n; i++)
		if (v[i] > b)
			b = v[i];
	return b;
}

static double
median_of(const double *v, int n)
{
	double s[MAX_ROUNDS];

	memcpy(s, v, sizeof(double) * (size_t)n);
	qsort(s, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* ---- main ---------------------------------------------------------------- */

/* parse_list - comma-separated unsigned numbers into v; how many */
static int
parse_list(const char *s, unsigned *v, int max)
{
	char *end;
	int n = 0;

	while (*s != '\0' && n < max) {
		v[n++] = (unsigned)strtoul(s, &end, 10);
		if (end == s || (*end != ',' && *end != '\0'))
			return -1;
		s = *end == ',' ? end + 1 : end;
	}
	return *s == '\0' ? n : -1;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: bench_keys -d DIR [-B] [-n N,N,...] [-c CACHE] [-C SMALL_CACHE]\n"
	    "       [-j THREADS,...] [-t SECONDS] [-R ROUNDS] [-p POOL]\n"
	    "       [--redis HOST:PORT --secret FILE]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "redis", required_argument, NULL, 'r' },
		{ "secret", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	struct store stores[MAX_NS];
	struct config cfgs[MAX_CONFIGS];
	unsigned th[MAX_THREADS];
	int ncfg = 0, i, j, r, ch, nth;
	double base, best, ratio, hit, cbase, cbest, cratio;
	double min_cpu = 1e9, min_wall = 1e9;

	while ((ch = getopt_long(argc, argv, "Bd:n:c:C:j:t:R:p:", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'B': opt_bulk = 1; break;
		case 'd': opt_dir = optarg; break;
		case 'n':
			if ((opt_nns = parse_list(optarg, opt_ns, MAX_NS)) < 1)
				usage();
			break;
		case 'c': opt_cache = (unsigned)atoi(optarg); break;
		case 'C': opt_small_cache = (unsigned)atoi(optarg); break;
		case 'j':
			if ((nth = parse_list(optarg, th, MAX_THREADS)) < 1)
				usage();
			for (i = 0; i < nth; i++)
				opt_threads[i] = (int)th[i];
			opt_nthreads = nth;
			break;
		case 't': opt_secs = atof(optarg); break;
		case 'R': opt_rounds = atoi(optarg); break;
		case 'p': opt_pool = atoi(optarg); break;
		case 'r': opt_redis = optarg; break;
		case 's': opt_secret = optarg; break;
		default: usage();
		}
	}
	if (opt_dir == NULL || optind != argc || opt_secs <= 0 ||
	    opt_rounds < 1 || opt_rounds > MAX_ROUNDS || opt_pool < 2 ||
	    opt_ns[0] != 1 || (opt_redis != NULL && opt_secret == NULL))
		usage();
	for (i = 0; i < opt_nthreads; i++)
		if (opt_threads[i] < 1 || opt_threads[i] > MAX_THREADS)
			usage();
	for (i = 0; i < opt_nns; i++)
		if (opt_ns[i] < 1)
			usage();

	opt_bulk = opt_bulk && opt_redis == NULL;  /* -B: file stores only */
	relay_log_set_level(LOG_WARNING);   /* not the managers' notices */
	make_body();
	{
		char buf[8192], d[DKIM_DOMAIN_MAX];

		domain_name(0, d, sizeof(d));
		printf("managed-key signing: RSA-2048, relaxed/relaxed, a "
		    "%zu-byte message (13 header fields), From domain "
		    "uniform over N (seeded)\n", format_msg(buf, sizeof(buf),
		    d));
	}
	printf("store: %s\n", opt_redis != NULL ? "Redis (keys encrypted, "
	    "AES-256-GCM)" : "files");
	make_pool();

	/* Stores and managers. */
	memset(stores, 0, sizeof(stores));
	memset(cfgs, 0, sizeof(cfgs));
	for (i = 0; i < opt_nns; i++) {
		stores[i].n = opt_ns[i];
		store_url(&stores[i], i);
		make_store(&stores[i]);
		if (stores[i].reused)
			printf("store N=%u: reused %s\n", stores[i].n,
			    stores[i].url);
		else
			printf("store N=%u: %u records written in %.1f s "
			    "(%.2f ms each%s)\n", stores[i].n, stores[i].n + 1,
			    stores[i].put_secs,
			    stores[i].put_secs * 1e3 / (stores[i].n + 1),
			    opt_bulk ? "; -B: as files, not through the API" :
			    "; relay_keystore_put_domain");
		cfgs[ncfg].st = &stores[i];
		cfgs[ncfg++].cache = opt_cache;
	}
	if (opt_small_cache > 0 && opt_small_cache < opt_ns[opt_nns - 1]) {
		cfgs[ncfg].st = &stores[opt_nns - 1];
		cfgs[ncfg++].cache = opt_small_cache;
	}
	nth = 1;
	for (j = 0; j < opt_nthreads; j++)
		if (opt_threads[j] > nth)
			nth = opt_threads[j];
	start_workers(nth);
	for (i = 0; i < ncfg; i++) {
		start_config(&cfgs[i], nth);
		printf("manager N=%u cache=%u: index loaded in %.2f s; after "
		    "the warm-up the cache holds %zu keys (capacity %zu), "
		    "RSS %ld MB\n", cfgs[i].st->n, cfgs[i].cache,
		    cfgs[i].start_secs, cfgs[i].cache_keys, cfgs[i].cache_cap,
		    cfgs[i].rss_kb / 1024);
		printf("  warm-up on %d threads: %llu messages with %llu key "
		    "loads in %.1f s = %.0f msg/s (cold cache)", nth,
		    (unsigned long long)cfgs[i].warm_msgs[0],
		    (unsigned long long)cfgs[i].warm_misses[0],
		    cfgs[i].warm_secs[0], cfgs[i].warm_msgs[0] /
		    cfgs[i].warm_secs[0]);
		for (r = 1; r < cfgs[i].warm_passes; r++)
			printf("; pass %d: %.0f msg/s, %llu key loads (first "
			    "use on another thread)", r + 1,
			    cfgs[i].warm_msgs[r] / cfgs[i].warm_secs[r],
			    (unsigned long long)cfgs[i].warm_misses[r]);
		printf("\n");
	}
	wait_idle(60);

	/* Interleaved rounds: every configuration and thread count once per
	 * round, so slow spells of the machine hit all of them. */
	printf("\n%d rounds of %.1f s per configuration and thread count, "
	    "interleaved; wall clock\n", opt_rounds, opt_secs);
	for (r = 0; r < opt_rounds; r++)
		for (j = 0; j < opt_nthreads; j++)
			for (i = 0; i < ncfg; i++)
				run_round(&cfgs[i], opt_threads[j], r);

	printf("\n---- summary ----\n");
	printf("%-8s %-7s %-4s %9s %9s %6s %9s %6s %8s %9s\n", "domains",
	    "cache", "thr", "msg/s", "median", "ratio", "msg/cpu-s", "ratio",
	    "hit rate", "lookup us");
	for (j = 0; j < opt_nthreads; j++) {
		nth = opt_threads[j];
		base = best_of(cfgs[0].rate[nth], opt_rounds);
		cbase = best_of(cfgs[0].cpurate[nth], opt_rounds);
		for (i = 0; i < ncfg; i++) {
			struct config *c = &cfgs[i];
			uint64_t looks = c->hits[nth] + c->misses[nth];

			best = best_of(c->rate[nth], opt_rounds);
			ratio = base > 0 ? best / base : 0;
			cbest = best_of(c->cpurate[nth], opt_rounds);
			cratio = cbase > 0 ? cbest / cbase : 0;
			hit = looks > 0 ? 100.0 * c->hits[nth] / looks : 0;
			printf("%-8u %-7u %-4d %9.1f %9.1f %6.3f %9.1f %6.3f "
			    "%7.2f%% %9.1f%s\n", c->st->n, c->cache, nth, best,
			    median_of(c->rate[nth], opt_rounds), ratio, cbest,
			    cratio, hit, c->msgs[nth] > 0 ?
			    c->lookup_secs[nth] * 1e6 / c->msgs[nth] : 0,
			    c->cache < c->st->n ? "  (cache < domains)" : "");
			if (c->cache >= c->st->n && i > 0) {
				if (cratio < min_cpu)
					min_cpu = cratio;
				if (ratio < min_wall)
					min_wall = ratio;
			}
		}
	}
	printf("msg/s: wall clock, best of %d rounds (median next to it); "
	    "msg/cpu-s: messages per CPU second\nof the signing threads, "
	    "times threads; ratio: to the N=%u figure with the same threads; "
	    "hit rate:\nthe manager's key cache during the rounds; lookup us: "
	    "time in relay_keymgr_sign_lookup per message\n", opt_rounds,
	    opt_ns[0]);
	if (ncfg > 1 && min_cpu <= 1e8)
		printf("target >= 0.9 x single domain (cache %u, every N and "
		    "thread count): %s (lowest ratio: %.3f CPU time, %.3f "
		    "wall clock)\n", opt_cache, min_cpu >= 0.9 ? "met" :
		    "not met", min_cpu, min_wall);
	return 0;
}
