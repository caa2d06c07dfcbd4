/*
 * test_relay_keys_regress.c - regression tests for bugs found in review of the
 * managed-key code (relay/keymgr.c, relay/keystore.c, relay/ctl_keys.c),
 * over a real file key store in a temporary directory:
 *
 *   - a domain removed and provisioned again (new keys, generations 1 and
 *     2 again) must sign with its new key, not with the old one the key
 *     cache still holds under (domain, slot, generation);
 *   - a file-store write whose history line can't be written still bumps
 *     the change serial, so that watchers see the record it did write;
 *   - a Redis write that timed out (the server was slow, and carried it
 *     out later) is not sent again on a new connection, where it would
 *     find its own effect and report -ESTALE ("someone else wrote");
 *   - a copy of a domain read before it was removed and provisioned again
 *     (the version restarts at 1) can't be written over the new record
 *     without its keys: that would pair the old public keys with the new
 *     private keys (file store and Redis).
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "relay/keys.h"
#include "relay/relay.h"
#include "tests/unit/test.h"

#define KR_T0 1800000000LL
#define KR_INITIAL "contoso.signet.example"

static char kr_dir[48];

static void
kr_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
		T_FAIL("%s: %s", path, strerror(errno));
}

static void
kr_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* kr_setup - a temporary directory, a clock file and relay.conf. */
static void
kr_setup(struct relay_config *cfg)
{
	char path[128], text[1024];

	snprintf(kr_dir, sizeof(kr_dir), "/tmp/signet-kr-XXXXXX");
	if (mkdtemp(kr_dir) == NULL)
		T_FAIL("mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/clock", kr_dir);
	snprintf(text, sizeof(text), "%lld\n", KR_T0);
	kr_write(path, text);
	setenv("SIGNET_CLOCK_FILE", path, 1);
	unsetenv("SIGNET_NODE");
	relay_log_open(0, LOG_WARNING);
	if (cfg == NULL)
		return;
	snprintf(path, sizeof(path), "%s/relay.conf", kr_dir);
	snprintf(text, sizeof(text), "spool_dir = %s/spool\n"
	    "keystore = %s/keys\n"
	    "initial_domain = " KR_INITIAL "\n"
	    "dkim_dns_check = no\n"
	    "dkim_key_size = 1024\n"
	    "dkim_check_interval = 1s\n"
	    "dkim_publish_lead = 0s\n"
	    "dkim_retire_delay = 2h\n"
	    "dkim_rotation_interval = 1d\n"
	    "dkim_key_cache_size = 16\n", kr_dir, kr_dir);
	kr_write(path, text);
	if (relay_config_load(path, cfg, NULL, NULL) != 0)
		T_FAIL("relay_config_load failed");
}

static void
kr_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", kr_dir);
	if (system(cmd) != 0)
		T_FAIL("%s failed", cmd);
}

static struct relay_keystore *
kr_store(void)
{
	struct relay_keystore *ks;
	char url[128], err[256];

	snprintf(url, sizeof(url), "%s/keys", kr_dir);
	if (relay_keystore_open(url, NULL, "test", &ks, err, sizeof(err)) != 0)
		T_FAIL("relay_keystore_open: %s", err);
	return ks;
}

/*
 * kr_provision - domain (tenant default), enabled, slot 1 confirmed, with
 * new Ed25519 keys; returns slot 1's TXT (malloc'd).
 */
static char *
kr_provision(struct relay_keystore *ks, const char *domain)
{
	struct dkim_key *k1, *k2;
	struct dkim_mdomain d;
	char err[256], *txt;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k1));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k2));
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, domain, "default", KR_INITIAL, k1, k2,
	    relay_clock_now()));
	d.enabled = 1;
	d.slot[0].confirmed = KR_T0;
	if (relay_keystore_put_domain(ks, &d, 0, "provision", err,
	    sizeof(err)) != 0)
		T_FAIL("put %s: %s", domain, err);
	T_TRUE((txt = dkim_key_txt(k1)) != NULL);
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
	return txt;
}

/* kr_signing_txt - the TXT of the key the lookup signs from with (NULL:
 * it does not sign). */
static char *
kr_signing_txt(struct relay_keymgr *km, const char *from)
{
	struct dkim_sign_params out[DKIM_MAX_SIGS];
	struct smtp_sign_request rq;
	char reason[256], *txt;

	memset(&rq, 0, sizeof(rq));
	rq.from_domain = from;
	if (relay_keymgr_sign_lookup(km, &rq, out, DKIM_MAX_SIGS, reason,
	    sizeof(reason)) != 1)
		return NULL;
	txt = dkim_key_txt(out[0].key);
	dkim_key_free(out[0].key);
	return txt;
}

/* kr_wait_txt - until from signs with the key of TXT want (10 s). */
static void
kr_wait_txt(struct relay_keymgr *km, const char *from, const char *want)
{
	char *txt = NULL;
	int i;

	for (i = 0; i < 1000; i++) {
		free(txt);
		txt = kr_signing_txt(km, from);
		if (txt != NULL && strcmp(txt, want) == 0) {
			free(txt);
			return;
		}
		kr_sleep_ms(10);
	}
	T_FAIL("%s signs with \"%s\", not \"%s\"", from,
	    txt != NULL ? txt : "(nothing)", want);
}

TEST(relay_keys_regress_cache_reprovision)
{
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	char err[512], *t1, *t2;

	kr_setup(&cfg);
	if (relay_keymgr_start(&cfg, &km, err, sizeof(err)) != 0)
		T_FAIL("relay_keymgr_start: %s", err);
	ks = kr_store();
	t1 = kr_provision(ks, "fabrikam.example");
	kr_wait_txt(km, "fabrikam.example", t1);
	/* removed, then provisioned again: generations 1 and 2 again */
	if (relay_keystore_del_domain(ks, "fabrikam.example", err,
	    sizeof(err)) != 0)
		T_FAIL("del: %s", err);
	t2 = kr_provision(ks, "fabrikam.example");
	T_TRUE(strcmp(t1, t2) != 0);
	kr_wait_txt(km, "fabrikam.example", t2);
	free(t1);
	free(t2);
	relay_keymgr_stop(km);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	kr_teardown();
}

/* kr_watch_cb - count what the watch reports. */
static void
kr_watch_cb(void *arg, const char *domain)
{
	(*(int *)arg)++;
}

TEST(relay_keys_regress_file_history_fail_bumps)
{
	struct relay_keystore *ks;
	struct dkim_key *k1, *k2;
	struct dkim_mdomain d;
	char path[128], err[256];
	int n, rc;

	kr_setup(NULL);
	ks = kr_store();
	n = 0;
	T_OK(relay_keystore_watch(ks, 0, kr_watch_cb, &n));   /* primes */
	/*
	 * The history file can't be written (a directory stands in its
	 * way, which stops root too): the record still is.
	 */
	snprintf(path, sizeof(path), "%s/keys/history/fabrikam.example",
	    kr_dir);
	T_OK(mkdir(path, 0700));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k1));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k2));
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, "fabrikam.example", "default",
	    KR_INITIAL, k1, k2, relay_clock_now()));
	rc = relay_keystore_put_domain(ks, &d, 0, "provision", err,
	    sizeof(err));
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
	T_TRUE(rc != 0);
	if (relay_keystore_get_domain(ks, "fabrikam.example", 0, &d, err,
	    sizeof(err)) == 0) {
		/* the record went in: watchers must hear of it */
		n = 0;
		T_OK(relay_keystore_watch(ks, 500, kr_watch_cb, &n));
		T_TRUE(n > 0);
	}
	dkim_mdomain_clear(&d);
	relay_keystore_close(ks);
	kr_teardown();
}

/* ---- Redis: a write that timed out is not sent again -------------------- */

static pid_t kr_redis_pid;

static void
kr_redis_kill(void)
{
	if (kr_redis_pid > 0) {
		kill(kr_redis_pid, SIGKILL);
		waitpid(kr_redis_pid, NULL, 0);
		kr_redis_pid = 0;
	}
}

/* kr_redis_start - redis-server (DEBUG allowed) on a new port; a plain
 * connection to it in *out. */
static int
kr_redis_start(redisContext **out)
{
	struct timeval tv = { 1, 0 };
	int p = test_free_port();

	atexit(kr_redis_kill);
	kr_redis_pid = test_redis_start(p, kr_dir, "--enable-debug-command");
	*out = redisConnectWithTimeout("127.0.0.1", p, tv);
	if (*out == NULL || (*out)->err)
		T_FAIL("connect 127.0.0.1:%d: %s", p,
		    *out != NULL ? (*out)->errstr : "oom");
	return p;
}

TEST(relay_keys_regress_redis_timeout_no_resend)
{
	static const char hex[] =
	    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
	struct relay_keystore *ks;
	struct dkim_key *k1, *k2;
	struct dkim_mdomain d;
	redisContext *dbg;
	char url[64], secret[128], err[256];
	int port, done = 0, rc;

	kr_setup(NULL);
	port = kr_redis_start(&dbg);
	snprintf(secret, sizeof(secret), "%s/secret", kr_dir);
	kr_write(secret, hex);
	T_OK(chmod(secret, 0600));
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	if (relay_keystore_open(url, secret, "test", &ks, err,
	    sizeof(err)) != 0)
		T_FAIL("relay_keystore_open: %s", err);
	T_OK(relay_keystore_ping(ks, err, sizeof(err)));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k1));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k2));
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, "fabrikam.example", "default",
	    KR_INITIAL, k1, k2, relay_clock_now()));
	/* the server stops for 1.5 s: the write times out (1 s), then runs */
	T_OK(redisAppendCommand(dbg, "DEBUG SLEEP 1.5"));
	while (!done)
		T_OK(redisBufferWrite(dbg, &done));
	kr_sleep_ms(100);
	rc = relay_keystore_put_domain(ks, &d, 0, "provision", err,
	    sizeof(err));
	/* sent again, it would have found its own first run: -ESTALE */
	if (rc != -ETIMEDOUT)
		T_FAIL("put: %d (%s), expected -ETIMEDOUT", rc, err);
	kr_sleep_ms(1000);
	dkim_mdomain_clear(&d);
	T_OK(relay_keystore_get_domain(ks, "fabrikam.example", 0, &d, err,
	    sizeof(err)));
	T_EQ(d.version, 1);
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
	redisFree(dbg);
	relay_keystore_close(ks);
	kr_redis_kill();
	kr_teardown();
}

/* ---- a record removed and made again: the old copy can't be written --- */

/* kr_put_new - domain provisioned (version 1) with new Ed25519 keys. */
static void
kr_put_new(struct relay_keystore *ks, const char *domain)
{
	struct dkim_key *k1, *k2;
	struct dkim_mdomain d;
	char err[256];

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k1));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k2));
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, domain, "default", KR_INITIAL, k1, k2,
	    relay_clock_now()));
	if (relay_keystore_put_domain(ks, &d, 0, "provision", err,
	    sizeof(err)) != 0)
		T_FAIL("put %s: %s", domain, err);
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
}

/*
 * kr_aba - a writer reads a domain (version 1), the domain is removed and
 * provisioned again (version 1 again, generations 1 and 2 again, new
 * keys), then the writer puts its copy without keys, expecting version 1:
 * refused (-ESTALE), and the new keys' record stays whole (its public
 * keys go with its private keys).
 */
static void
kr_aba(struct relay_keystore *ks)
{
	struct dkim_mdomain old, cur;
	struct dkim_key *key;
	char err[256], *txt;
	int rc;

	kr_put_new(ks, "fabrikam.example");
	T_OK(relay_keystore_get_domain(ks, "fabrikam.example", 0, &old, err,
	    sizeof(err)));
	T_EQ(old.version, 1);
	T_OK(relay_keystore_del_domain(ks, "fabrikam.example", err,
	    sizeof(err)));
	kr_put_new(ks, "fabrikam.example");
	old.enabled = 1;
	rc = relay_keystore_put_domain(ks, &old, old.version, "enable", err,
	    sizeof(err));
	if (rc != -ESTALE)
		T_FAIL("stale put: %d (%s), expected -ESTALE", rc, err);
	T_OK(relay_keystore_get_domain(ks, "fabrikam.example", 0, &cur, err,
	    sizeof(err)));
	T_EQ(cur.enabled, 0);
	T_OK(relay_keystore_get_key(ks, "fabrikam.example", 1,
	    cur.slot[0].generation, &key, err, sizeof(err)));
	T_TRUE((txt = dkim_key_txt(key)) != NULL);
	T_TRUE(strstr(txt, cur.slot[0].pubkey) != NULL);
	free(txt);
	dkim_key_free(key);
	dkim_mdomain_clear(&old);
	dkim_mdomain_clear(&cur);
}

TEST(relay_keys_regress_file_reprovision_cas)
{
	struct relay_keystore *ks;

	kr_setup(NULL);
	ks = kr_store();
	kr_aba(ks);
	relay_keystore_close(ks);
	kr_teardown();
}

TEST(relay_keys_regress_redis_reprovision_cas)
{
	static const char hex[] =
	    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
	struct relay_keystore *ks;
	redisContext *dbg;
	char url[64], secret[128], err[256];
	int port;

	kr_setup(NULL);
	port = kr_redis_start(&dbg);
	snprintf(secret, sizeof(secret), "%s/secret", kr_dir);
	kr_write(secret, hex);
	T_OK(chmod(secret, 0600));
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	if (relay_keystore_open(url, secret, "test", &ks, err,
	    sizeof(err)) != 0)
		T_FAIL("relay_keystore_open: %s", err);
	kr_aba(ks);
	redisFree(dbg);
	relay_keystore_close(ks);
	kr_redis_kill();
	kr_teardown();
}
