/*
 * test_relay_keystore.c - unit tests of relay/keystore.c, keystore_redis.c
 * and clock.c: the file store (round trips with and without private keys,
 * compare-and-set, delete, lists, history trimming, tenants, change
 * watching across processes, locks between processes with expiry, name
 * checks, file modes, no partial file ever visible to a reader) and the
 * Redis store against a real redis-server started here (the same round
 * trips, locks between handles, pub/sub, a server killed and restarted,
 * and a scan of every key proving no private key is stored in the clear,
 * wrong secret, tampered or moved ciphertext), plus SIGNET_CLOCK_FILE.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "relay/keys.h"
#include "tests/unit/test.h"

/* ---- helpers ------------------------------------------------------------- */

static char tmp_dirs[2][64];

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

/* rm_tmp - at exit of the test: remove the directories it made. */
static void
rm_tmp(void)
{
	int i;

	for (i = 0; i < 2; i++)
		if (tmp_dirs[i][0] != '\0')
			nftw(tmp_dirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* mktmp - a new directory /tmp/signet-PREFIX-XXXXXX, removed at exit. */
static char *
mktmp(int which, const char *prefix)
{
	char *dir = tmp_dirs[which];

	snprintf(dir, sizeof(tmp_dirs[which]), "/tmp/signet-%s-XXXXXX",
	    prefix);
	if (mkdtemp(dir) == NULL)
		T_FAIL("mkdtemp: %s", strerror(errno));
	atexit(rm_tmp);
	return dir;
}

static char *
tmpdir(void)
{
	return mktmp(0, "ks");
}

static void
msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct dkim_key *
newkey(void)
{
	struct dkim_key *k;

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k));
	return k;
}

/* mkdomain - a freshly provisioned domain of tenant "contoso". */
static void
mkdomain(struct dkim_mdomain *d, const char *name)
{
	struct dkim_key *k1 = newkey(), *k2 = newkey();

	T_OK(dkim_mdomain_provision(d, name, "contoso",
	    "contoso.signet.example", k1, k2, 1700000000));
	dkim_key_free(k1);
	dkim_key_free(k2);
	T_TRUE(d->slot[0].priv != NULL && d->slot[1].priv != NULL);
}

/* same_domain - a and b agree on every stored field (keys with_keys). */
static void
same_domain(const struct dkim_mdomain *a, const struct dkim_mdomain *b,
    int with_keys)
{
	int i;

	T_STREQ(a->domain, b->domain);
	T_STREQ(a->tenant, b->tenant);
	T_STREQ(a->initial_domain, b->initial_domain);
	T_EQ(a->enabled, b->enabled);
	T_EQ(a->active, b->active);
	T_EQ(a->phase, b->phase);
	T_EQ(a->phase_since, b->phase_since);
	T_EQ(a->last_switch, b->last_switch);
	T_EQ(a->rotate_requested, b->rotate_requested);
	T_EQ(a->held_since, b->held_since);
	T_STREQ(a->held_why, b->held_why);
	T_EQ(a->dns_checked, b->dns_checked);
	T_EQ(a->dns_result, b->dns_result);
	T_STREQ(a->dns_detail, b->dns_detail);
	T_EQ(a->version, b->version);
	for (i = 0; i < 2; i++) {
		T_EQ(a->slot[i].alg, b->slot[i].alg);
		T_EQ(a->slot[i].bits, b->slot[i].bits);
		T_EQ(a->slot[i].generation, b->slot[i].generation);
		T_EQ(a->slot[i].created, b->slot[i].created);
		T_EQ(a->slot[i].published, b->slot[i].published);
		T_EQ(a->slot[i].seen, b->slot[i].seen);
		T_EQ(a->slot[i].confirmed, b->slot[i].confirmed);
		T_STREQ(a->slot[i].pubkey, b->slot[i].pubkey);
		if (with_keys) {
			T_TRUE(a->slot[i].priv != NULL);
			T_TRUE(b->slot[i].priv != NULL);
			T_MEMEQ(a->slot[i].priv, a->slot[i].privlen,
			    b->slot[i].priv, b->slot[i].privlen);
		} else
			T_TRUE(b->slot[i].priv == NULL);
	}
}

/* Collected callback strings. */
struct names {
	char v[256][DKIM_DOMAIN_MAX];
	int n;
	int nulls;
};

static int
collect(void *arg, const char *s)
{
	struct names *n = arg;

	if (n->n < 256)
		snprintf(n->v[n->n++], DKIM_DOMAIN_MAX, "%s", s);
	return 0;
}

static void
watch_cb(void *arg, const char *domain)
{
	struct names *n = arg;

	if (domain == NULL)
		n->nulls++;
	else
		collect(arg, domain);
}

static int
has(const struct names *n, const char *s)
{
	int i;

	for (i = 0; i < n->n; i++)
		if (strcmp(n->v[i], s) == 0)
			return 1;
	return 0;
}

static void
write_file(const char *path, const void *p, size_t len, mode_t mode)
{
	int fd;

	unlink(path);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)) == -1)
		T_FAIL("%s: %s", path, strerror(errno));
	T_EQ(write(fd, p, len), (ssize_t)len);
	T_OK(fchmod(fd, mode));
	close(fd);
}

/* child_status - wait for pid; its exit code (or 128 + signal). */
static int
child_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR)
			T_FAIL("waitpid: %s", strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static struct relay_keystore *
open_store(const char *url, const char *secret, const char *node)
{
	struct relay_keystore *ks;
	char err[256] = "";

	if (relay_keystore_open(url, secret, node, &ks, err, sizeof(err)) != 0)
		T_FAIL("open %s: %s", url, err);
	return ks;
}

/* ---- the clock ----------------------------------------------------------- */

TEST(keystore_clock)
{
	char *dir = tmpdir(), path[128], out[128], buf[512];
	int64_t now;
	int fd, saved;
	ssize_t n;

	unsetenv("SIGNET_CLOCK_FILE");
	now = relay_clock_now();
	T_TRUE(now >= time(NULL) - 1 && now <= time(NULL) + 1);
	snprintf(path, sizeof(path), "%s/clock", dir);
	write_file(path, "1234567890\n", 11, 0644);
	setenv("SIGNET_CLOCK_FILE", path, 1);
	T_EQ(relay_clock_now(), 1234567890);
	write_file(path, "1900000000", 10, 0644);     /* read on every call */
	T_EQ(relay_clock_now(), 1900000000);

	/* a bad file: the system time, and one warning however many calls */
	snprintf(out, sizeof(out), "%s/stderr", dir);
	fflush(stderr);
	saved = dup(2);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	write_file(path, "soon", 4, 0644);
	now = relay_clock_now();
	T_TRUE(now >= time(NULL) - 1 && now <= time(NULL) + 1);
	unlink(path);
	now = relay_clock_now();
	T_TRUE(now >= time(NULL) - 1 && now <= time(NULL) + 1);
	fflush(stderr);
	dup2(saved, 2);
	close(fd);
	fd = open(out, O_RDONLY);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	T_TRUE(n > 0);
	buf[n] = '\0';
	T_TRUE(strstr(buf, "SIGNET_CLOCK_FILE") != NULL);
	T_TRUE(strstr(buf, "not a decimal unix time") != NULL);
	T_TRUE(strchr(buf, '\n') == buf + n - 1);     /* exactly one line */
	/* good again */
	write_file(path, "42", 2, 0644);
	T_EQ(relay_clock_now(), 42);
}

/* ---- the file store ------------------------------------------------------ */

/* Common checks of both stores: round trip, keys kept, CAS, delete, list,
 * history, tenants, get_key. */
static void
roundtrip(struct relay_keystore *ks, const char *clockpath)
{
	struct dkim_mdomain d, g, d2;
	struct relay_tenant t, tg;
	struct dkim_key *k, *k3;
	struct names nm;
	unsigned char *der;
	size_t derlen;
	char err[256];
	int i;

	write_file(clockpath, "1700000100\n", 11, 0644);
	setenv("SIGNET_CLOCK_FILE", clockpath, 1);

	mkdomain(&d, "Fabrikam.COM.");
	T_STREQ(d.domain, "fabrikam.com");
	T_EQ(relay_keystore_get_domain(ks, "fabrikam.com", 0, &g, err,
	    sizeof(err)), -ENOENT);
	T_TRUE(strstr(err, "fabrikam.com") != NULL);
	dkim_mdomain_clear(&g);
	snprintf(d.held_why, sizeof(d.held_why), "a reason with  blanks: x=1");
	snprintf(d.dns_detail, sizeof(d.dns_detail), "NXDOMAIN from 127.0.0.1");
	d.dns_result = -1;
	T_OK(relay_keystore_put_domain(ks, &d, 0, "provisioned", err,
	    sizeof(err)));
	T_EQ(d.version, 1);

	/* without keys, then with keys, under any spelling of the name */
	T_OK(relay_keystore_get_domain(ks, "FABRIKAM.com.", 0, &g, err,
	    sizeof(err)));
	same_domain(&d, &g, 0);
	dkim_mdomain_clear(&g);
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 1, &g, err,
	    sizeof(err)));
	same_domain(&d, &g, 1);
	dkim_mdomain_clear(&g);

	/* CAS: must not exist; stale versions */
	mkdomain(&d2, "fabrikam.com");
	T_EQ(relay_keystore_put_domain(ks, &d2, 0, NULL, err, sizeof(err)),
	    -ESTALE);
	T_EQ(d2.version, 0);
	T_EQ(relay_keystore_put_domain(ks, &d2, 7, NULL, err, sizeof(err)),
	    -ESTALE);
	T_TRUE(strstr(err, "someone else") != NULL);
	dkim_mdomain_clear(&d2);
	mkdomain(&d2, "nowhere.example");
	T_EQ(relay_keystore_put_domain(ks, &d2, 3, NULL, err, sizeof(err)),
	    -ESTALE);
	dkim_mdomain_clear(&d2);

	/* a put without keys keeps the stored ones (same generation) */
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 0, &g, err,
	    sizeof(err)));
	g.phase = DKIM_PHASE_PENDING;
	g.held_since = 1700000050;
	T_OK(relay_keystore_put_domain(ks, &g, 1, "held", err, sizeof(err)));
	T_EQ(g.version, 2);
	T_EQ(relay_keystore_put_domain(ks, &g, 1, "again", err, sizeof(err)),
	    -ESTALE);
	T_EQ(g.version, 2);
	dkim_mdomain_clear(&g);
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 1, &g, err,
	    sizeof(err)));
	T_EQ(g.phase, DKIM_PHASE_PENDING);
	T_EQ(g.version, 2);
	for (i = 0; i < 2; i++)
		T_MEMEQ(g.slot[i].priv, g.slot[i].privlen, d.slot[i].priv,
		    d.slot[i].privlen);

	/* get_key: the right generation only */
	T_OK(relay_keystore_get_key(ks, "fabrikam.com", 2, 1, &k, err,
	    sizeof(err)));
	T_OK(dkim_key_to_der(k, &der, &derlen));
	T_MEMEQ(der, derlen, d.slot[1].priv, d.slot[1].privlen);
	dkim_wipe_free(der, derlen);
	dkim_key_free(k);
	T_EQ(relay_keystore_get_key(ks, "fabrikam.com", 2, 2, &k, err,
	    sizeof(err)), -ESTALE);
	T_TRUE(k == NULL);
	T_EQ(relay_keystore_get_key(ks, "contoso.example", 1, 1, &k, err,
	    sizeof(err)), -ENOENT);

	/* a new generation needs its key; then it is the one kept */
	dkim_mdomain_clear(&g);
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 0, &g, err,
	    sizeof(err)));
	g.slot[1].generation = 2;
	T_EQ(relay_keystore_put_domain(ks, &g, 2, NULL, err, sizeof(err)),
	    -EINVAL);
	T_TRUE(strstr(err, "selector2") != NULL);
	k3 = newkey();
	T_OK(dkim_slot_set_key(&g.slot[1], k3, 2, 1700000200));
	T_OK(relay_keystore_put_domain(ks, &g, 2, "replaced", err,
	    sizeof(err)));
	dkim_mdomain_clear(&g);
	T_OK(relay_keystore_get_key(ks, "fabrikam.com", 2, 2, &k, err,
	    sizeof(err)));
	dkim_key_free(k);
	T_EQ(relay_keystore_get_key(ks, "fabrikam.com", 2, 1, &k, err,
	    sizeof(err)), -ESTALE);
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 1, &g, err,
	    sizeof(err)));
	T_EQ(g.version, 3);
	T_EQ(g.slot[1].generation, 2);
	T_OK(dkim_key_to_der(k3, &der, &derlen));
	T_MEMEQ(g.slot[1].priv, g.slot[1].privlen, der, derlen);
	T_MEMEQ(g.slot[0].priv, g.slot[0].privlen, d.slot[0].priv,
	    d.slot[0].privlen);
	dkim_wipe_free(der, derlen);
	dkim_key_free(k3);
	dkim_mdomain_clear(&g);

	/* history, oldest first, "<time> <node> <event>" */
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_history(ks, "fabrikam.com", collect, &nm, err,
	    sizeof(err)));
	T_EQ(nm.n, 3);
	T_STREQ(nm.v[0], "1700000100 node-a provisioned");
	T_STREQ(nm.v[1], "1700000100 node-a held");
	T_STREQ(nm.v[2], "1700000100 node-a replaced");

	/* list and delete */
	mkdomain(&d2, "woodgrove.example");
	T_OK(relay_keystore_put_domain(ks, &d2, 0, NULL, err, sizeof(err)));
	dkim_mdomain_clear(&d2);
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_list_domains(ks, collect, &nm, err, sizeof(err)));
	T_EQ(nm.n, 2);
	T_TRUE(has(&nm, "fabrikam.com") && has(&nm, "woodgrove.example"));
	T_OK(relay_keystore_del_domain(ks, "woodgrove.example", err,
	    sizeof(err)));
	T_EQ(relay_keystore_del_domain(ks, "woodgrove.example", err,
	    sizeof(err)), -ENOENT);
	T_EQ(relay_keystore_get_domain(ks, "woodgrove.example", 0, &g, err,
	    sizeof(err)), -ENOENT);
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_list_domains(ks, collect, &nm, err, sizeof(err)));
	T_EQ(nm.n, 1);
	T_STREQ(nm.v[0], "fabrikam.com");

	/* history keeps the last 100 */
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 0, &g, err,
	    sizeof(err)));
	for (i = 0; i < 130; i++) {
		char ev[32];

		snprintf(ev, sizeof(ev), "event %d\nsecond line", i);
		T_OK(relay_keystore_put_domain(ks, &g, g.version, ev, err,
		    sizeof(err)));
	}
	dkim_mdomain_clear(&g);
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_history(ks, "fabrikam.com", collect, &nm, err,
	    sizeof(err)));
	T_EQ(nm.n, 100);
	T_STREQ(nm.v[0], "1700000100 node-a event 30 second line");
	T_STREQ(nm.v[99], "1700000100 node-a event 129 second line");

	/* tenants */
	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "contoso");
	snprintf(t.initial_domain, sizeof(t.initial_domain),
	    "contoso.signet.example");
	t.users = "alice bob";
	t.networks = "192.0.2.0/24 2001:db8::/32";
	T_EQ(relay_keystore_get_tenant(ks, "contoso", &tg, err, sizeof(err)),
	    -ENOENT);
	T_OK(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)));
	T_EQ(t.version, 1);
	T_EQ(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)), -ESTALE);
	T_OK(relay_keystore_get_tenant(ks, "contoso", &tg, err, sizeof(err)));
	T_STREQ(tg.name, "contoso");
	T_STREQ(tg.initial_domain, "contoso.signet.example");
	T_STREQ(tg.users, "alice bob");
	T_STREQ(tg.networks, "192.0.2.0/24 2001:db8::/32");
	T_EQ(tg.version, 1);
	relay_tenant_clear(&tg);
	t.users = "";
	T_OK(relay_keystore_put_tenant(ks, &t, 1, err, sizeof(err)));
	T_EQ(relay_keystore_put_tenant(ks, &t, 1, err, sizeof(err)), -ESTALE);
	T_OK(relay_keystore_get_tenant(ks, "contoso", &tg, err, sizeof(err)));
	T_STREQ(tg.users, "");
	T_EQ(tg.version, 2);
	relay_tenant_clear(&tg);
	snprintf(t.name, sizeof(t.name), "default");
	T_OK(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)));
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_list_tenants(ks, collect, &nm, err, sizeof(err)));
	T_EQ(nm.n, 2);
	T_TRUE(has(&nm, "contoso") && has(&nm, "default"));
	t.users = "evil\nline";
	T_EQ(relay_keystore_put_tenant(ks, &t, 1, err, sizeof(err)), -EINVAL);

	dkim_mdomain_clear(&d);
	T_OK(relay_keystore_ping(ks, err, sizeof(err)));
}

TEST(keystore_file_roundtrip)
{
	struct relay_keystore *ks;
	struct dkim_key *k;
	char *dir = tmpdir(), store[128], url[160], path[256], clk[128];
	struct stat st;
	char buf[8192];
	ssize_t n;
	int fd;

	snprintf(store, sizeof(store), "%s/var/keys", dir);
	snprintf(url, sizeof(url), "file:%s", store);
	snprintf(clk, sizeof(clk), "%s/clock", dir);
	ks = open_store(url, NULL, "node-a");
	T_EQ(relay_keystore_is_redis(ks), 0);
	T_OK(stat(store, &st));
	T_EQ(st.st_mode & 07777, 0700);
	snprintf(path, sizeof(path), "%s/domains", store);
	T_OK(stat(path, &st));
	T_EQ(st.st_mode & 07777, 0700);
	roundtrip(ks, clk);

	/* the domain file: 0600, one "field value" line each, key in base64 */
	snprintf(path, sizeof(path), "%s/domains/fabrikam.com", store);
	T_OK(stat(path, &st));
	T_EQ(st.st_mode & 07777, 0600);
	fd = open(path, O_RDONLY);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	T_TRUE(n > 0);
	buf[n] = '\0';
	T_TRUE(strncmp(buf, "domain fabrikam.com\n", 20) == 0);
	T_TRUE(strstr(buf, "\nheld_why a reason with  blanks: x=1\n") != NULL);
	T_TRUE(strstr(buf, "\ns1.priv ") != NULL);
	T_TRUE(strstr(buf, "\ns2.priv ") != NULL);
	T_TRUE(strstr(buf, "\nversion 133\n") != NULL);
	snprintf(path, sizeof(path), "%s/tenants/contoso", store);
	T_OK(stat(path, &st));
	T_EQ(st.st_mode & 07777, 0600);
	snprintf(path, sizeof(path), "%s/history/fabrikam.com", store);
	T_OK(stat(path, &st));
	T_EQ(st.st_mode & 07777, 0600);
	relay_keystore_close(ks);

	/* a writer's leftovers: old ones are swept when a store opens */
	snprintf(path, sizeof(path), "%s/domains/.tmp.1.1.00000000.x.example",
	    store);
	write_file(path, "s1.priv secret\n", 15, 0600);
	T_OK(utimensat(AT_FDCWD, path, (struct timespec[2]){ { 1000, 0 },
	    { 1000, 0 } }, 0));
	snprintf(url, sizeof(url), "%s/.tmp.2.2.00000000.serial", store);
	write_file(url, "1\n", 2, 0600);

	/* a plain path works too, and reopening sees the same data */
	ks = open_store(store, "", NULL);
	T_EQ(access(path, F_OK), -1);
	T_OK(access(url, F_OK));
	T_OK(relay_keystore_get_key(ks, "fabrikam.com", 1, 1, &k, buf,
	    sizeof(buf)));
	dkim_key_free(k);
	relay_keystore_close(ks);
}

TEST(keystore_file_names)
{
	struct relay_keystore *ks;
	struct dkim_mdomain d, g;
	struct relay_tenant t;
	char *dir = tmpdir(), err[256], tok[RELAY_LOCK_TOKEN];
	const char *bad[] = { "../etc", "a/b", ".hidden", "", "x..y",
	    "-a.example", "a_b.example", "caf\xc3\xa9.example", "a b" };
	const char *badl[] = { "../etc", "a/b", ".hidden", "", "-a", "a b",
	    "Upper", "a\nb" };
	const char *badt[] = { "", "Upper", "-x", ".x", "a/b", "a b",
	    "0123456789012345678901234567890123456789012345678901234567890123" };
	size_t i;
	DIR *dp;
	struct dirent *de;
	int n = 0;

	ks = open_store(dir, NULL, NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		T_EQ(relay_keystore_get_domain(ks, bad[i], 0, &g, err,
		    sizeof(err)), -EINVAL);
		T_TRUE(strstr(err, "bad domain name") != NULL);
		T_EQ(relay_keystore_del_domain(ks, bad[i], err, sizeof(err)),
		    -EINVAL);
		T_EQ(relay_keystore_history(ks, bad[i], collect, NULL, err,
		    sizeof(err)), -EINVAL);
		T_EQ(relay_keystore_get_key(ks, bad[i], 1, 1,
		    &(struct dkim_key *){ NULL }, err, sizeof(err)), -EINVAL);
	}
	for (i = 0; i < sizeof(badl) / sizeof(badl[0]); i++)
		T_EQ(relay_keystore_lock(ks, badl[i], 1000, tok, err,
		    sizeof(err)), -EINVAL);
	mkdomain(&d, "fabrikam.com");
	snprintf(d.domain, sizeof(d.domain), "../../x");
	T_EQ(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)),
	    -EINVAL);
	snprintf(d.domain, sizeof(d.domain), "Fabrikam.com");
	T_EQ(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)),
	    -EINVAL);
	snprintf(d.domain, sizeof(d.domain), "fabrikam.com");
	snprintf(d.tenant, sizeof(d.tenant), "../x");
	T_EQ(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)),
	    -EINVAL);
	dkim_mdomain_clear(&d);
	memset(&t, 0, sizeof(t));
	for (i = 0; i < sizeof(badt) / sizeof(badt[0]); i++) {
		T_EQ(relay_keystore_get_tenant(ks, badt[i], &t, err,
		    sizeof(err)), -EINVAL);
		if (strlen(badt[i]) >= sizeof(t.name))
			continue;
		snprintf(t.name, sizeof(t.name), "%s", badt[i]);
		T_EQ(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)),
		    -EINVAL);
	}
	snprintf(t.name, sizeof(t.name), "ok-name_1.x");
	snprintf(t.initial_domain, sizeof(t.initial_domain), "../bad");
	T_EQ(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)), -EINVAL);
	t.initial_domain[0] = '\0';
	T_OK(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)));
	T_EQ(relay_keystore_get_key(ks, "fabrikam.com", 3, 1,
	    &(struct dkim_key *){ NULL }, err, sizeof(err)), -EINVAL);
	/* nothing was created outside DIR's own layout */
	T_TRUE((dp = opendir(dir)) != NULL);
	while ((de = readdir(dp)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(dp);
	T_EQ(n, 6);    /* domains tenants history locks lock serial */
	relay_keystore_close(ks);

	/* a store that cannot be made */
	T_TRUE(relay_keystore_open("/proc/signet-none/keys", NULL, NULL, &ks,
	    err, sizeof(err)) < 0);
	T_TRUE(strstr(err, "/proc/signet-none") != NULL);
}

/* A writer process: puts domain name with a changing record n times. */
static void
writer_loop(const char *url, const char *secret, const char *name, int n)
{
	struct relay_keystore *ks;
	struct dkim_mdomain d;
	char err[256];
	int i, r;

	if (relay_keystore_open(url, secret, "writer", &ks, err,
	    sizeof(err)) != 0)
		_exit(2);
	if (relay_keystore_get_domain(ks, name, 0, &d, err, sizeof(err)) != 0)
		_exit(3);
	for (i = 0; i < n; i++) {
		/* alternate a long and a short record */
		if (i % 2 == 0)
			memset(d.held_why, 'x', sizeof(d.held_why) - 1);
		else
			snprintf(d.held_why, sizeof(d.held_why), "short");
		d.held_why[sizeof(d.held_why) - 1] = '\0';
		d.dns_checked = i;
		r = relay_keystore_put_domain(ks, &d, d.version, NULL, err,
		    sizeof(err));
		if (r != 0) {
			fprintf(stderr, "writer: %s\n", err);
			_exit(4);
		}
	}
	dkim_mdomain_clear(&d);
	relay_keystore_close(ks);
	_exit(0);
}

/* no_partial - a reader never sees a partial or inconsistent record while
 * another process rewrites it. */
static void
no_partial(const char *url, const char *secret)
{
	struct relay_keystore *ks;
	struct dkim_mdomain d, g;
	char err[256];
	uint64_t last = 0;
	int reads = 0, r, st;
	pid_t pid;

	ks = open_store(url, secret, NULL);
	mkdomain(&d, "atomic.example");
	T_OK(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)));
	if ((pid = fork()) == 0)
		writer_loop(url, secret, "atomic.example", 300);
	for (;;) {
		r = relay_keystore_get_domain(ks, "atomic.example", reads % 3 ==
		    0, &g, err, sizeof(err));
		if (r != 0)
			T_FAIL("read %d: %d %s", reads, r, err);
		T_TRUE(g.version >= last);
		last = g.version;
		T_TRUE(strcmp(g.held_why, "short") == 0 ||
		    strlen(g.held_why) == sizeof(g.held_why) - 1 ||
		    g.held_why[0] == '\0');
		T_STREQ(g.slot[0].pubkey, d.slot[0].pubkey);
		dkim_mdomain_clear(&g);
		reads++;
		if (waitpid(pid, &st, WNOHANG) == pid)
			break;
	}
	T_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	T_TRUE(reads > 10);
	T_OK(relay_keystore_get_domain(ks, "atomic.example", 1, &g, err,
	    sizeof(err)));
	T_EQ(g.version, 301);
	T_EQ(g.dns_checked, 299);
	T_MEMEQ(g.slot[0].priv, g.slot[0].privlen, d.slot[0].priv,
	    d.slot[0].privlen);
	dkim_mdomain_clear(&g);
	dkim_mdomain_clear(&d);
	relay_keystore_close(ks);
}

TEST(keystore_file_no_partial)
{
	char *dir = tmpdir(), path[128];
	struct dirent *de;
	DIR *dp;

	no_partial(dir, NULL);
	/* no temporary file is left behind */
	snprintf(path, sizeof(path), "%s/domains", dir);
	T_TRUE((dp = opendir(path)) != NULL);
	while ((de = readdir(dp)) != NULL)
		T_TRUE(strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, "atomic.example") == 0);
	closedir(dp);
}

/* Two processes race to create and update the same domain: every update
 * lands exactly once (CAS under the flock). */
TEST(keystore_file_cas_race)
{
	struct relay_keystore *ks;
	struct dkim_mdomain d;
	char *dir = tmpdir(), err[256];
	pid_t pid[2];
	int p;

	ks = open_store(dir, NULL, NULL);
	mkdomain(&d, "race.example");
	T_OK(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)));
	dkim_mdomain_clear(&d);
	for (p = 0; p < 2; p++) {
		if ((pid[p] = fork()) != 0)
			continue;
		struct relay_keystore *k2;
		struct dkim_mdomain g;
		int done = 0, r;

		if (relay_keystore_open(dir, NULL, NULL, &k2, err,
		    sizeof(err)) != 0)
			_exit(2);
		while (done < 50) {
			if (relay_keystore_get_domain(k2, "race.example", 0,
			    &g, err, sizeof(err)) != 0)
				_exit(3);
			g.dns_checked++;
			r = relay_keystore_put_domain(k2, &g, g.version, NULL,
			    err, sizeof(err));
			if (r == 0)
				done++;
			else if (r != -ESTALE)
				_exit(4);
			dkim_mdomain_clear(&g);
		}
		relay_keystore_close(k2);
		_exit(0);
	}
	for (p = 0; p < 2; p++)
		T_EQ(child_status(pid[p]), 0);
	T_OK(relay_keystore_get_domain(ks, "race.example", 0, &d, err,
	    sizeof(err)));
	T_EQ(d.version, 101);
	T_EQ(d.dns_checked, 100);     /* no lost update */
	dkim_mdomain_clear(&d);
	relay_keystore_close(ks);
}

/* watch_test - cb(NULL) first; another process's put reports its domain;
 * a tenant change reloads all; nothing happens on a quiet store. */
static void
watch_test(const char *url, const char *secret)
{
	struct relay_keystore *ks, *w;
	struct dkim_mdomain d;
	struct relay_tenant t;
	struct names nm;
	char err[256];
	int64_t t0;
	pid_t pid;

	ks = open_store(url, secret, NULL);
	w = open_store(url, secret, NULL);
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 2000, watch_cb, &nm));
	T_EQ(nm.nulls, 1);
	T_EQ(nm.n, 0);

	/* quiet: waits the whole timeout, no callback */
	t0 = mono_ms();
	T_OK(relay_keystore_watch(w, 400, watch_cb, &nm));
	T_TRUE(mono_ms() - t0 >= 380);
	T_EQ(nm.nulls, 1);
	T_EQ(nm.n, 0);

	/* another process provisions a domain */
	if ((pid = fork()) == 0) {
		struct relay_keystore *k2;
		struct dkim_mdomain d2;

		msleep(300);
		if (relay_keystore_open(url, secret, NULL, &k2, err,
		    sizeof(err)) != 0)
			_exit(2);
		mkdomain(&d2, "contoso.example");
		if (relay_keystore_put_domain(k2, &d2, 0, "new", err,
		    sizeof(err)) != 0)
			_exit(3);
		_exit(0);
	}
	t0 = mono_ms();
	while (nm.n == 0 && mono_ms() - t0 < 8000)
		T_OK(relay_keystore_watch(w, 1000, watch_cb, &nm));
	T_EQ(child_status(pid), 0);
	T_EQ(nm.n, 1);
	T_STREQ(nm.v[0], "contoso.example");
	T_EQ(nm.nulls, 1);

	/* our own put, then a delete */
	T_OK(relay_keystore_get_domain(ks, "contoso.example", 0, &d, err,
	    sizeof(err)));
	d.enabled = 1;
	T_OK(relay_keystore_put_domain(ks, &d, d.version, NULL, err,
	    sizeof(err)));
	dkim_mdomain_clear(&d);
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 3000, watch_cb, &nm));
	T_EQ(nm.n, 1);
	T_STREQ(nm.v[0], "contoso.example");
	T_OK(relay_keystore_del_domain(ks, "contoso.example", err,
	    sizeof(err)));
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 3000, watch_cb, &nm));
	T_EQ(nm.n, 1);
	T_STREQ(nm.v[0], "contoso.example");

	/* a tenant: reload everything */
	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "contoso");
	T_OK(relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)));
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 3000, watch_cb, &nm));
	T_EQ(nm.nulls, 1);
	relay_keystore_close(w);
	relay_keystore_close(ks);
}

TEST(keystore_file_watch)
{
	struct relay_keystore *ks, *w;
	struct dkim_mdomain d;
	struct names nm;
	char *dir = tmpdir(), err[256], name[64];
	int i;

	watch_test(dir, NULL);

	/* many changes at once: one reload instead of each */
	ks = open_store(dir, NULL, NULL);
	w = open_store(dir, NULL, NULL);
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 100, watch_cb, &nm));
	T_EQ(nm.nulls, 1);
	mkdomain(&d, "many.example");
	for (i = 0; i < 70; i++) {
		snprintf(name, sizeof(name), "d%d.example", i);
		snprintf(d.domain, sizeof(d.domain), "%s", name);
		T_OK(relay_keystore_put_domain(ks, &d, 0, NULL, err,
		    sizeof(err)));
		d.version = 0;
	}
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 1000, watch_cb, &nm));
	T_EQ(nm.nulls, 1);
	T_EQ(nm.n, 0);
	/* two at once: both named */
	for (i = 0; i < 2; i++) {
		snprintf(d.domain, sizeof(d.domain), "d%d.example", i);
		T_OK(relay_keystore_put_domain(ks, &d, 1, NULL, err,
		    sizeof(err)));
	}
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 1000, watch_cb, &nm));
	T_EQ(nm.nulls, 0);
	T_EQ(nm.n, 2);
	T_TRUE(has(&nm, "d0.example") && has(&nm, "d1.example"));
	dkim_mdomain_clear(&d);
	relay_keystore_close(w);
	relay_keystore_close(ks);
}

/* try_lock_child - in another process, try to take name: its exit code is
 * 0 (taken, then released if release), 1 (-EBUSY), 2 (other error). */
static int
try_lock_child(const char *url, const char *secret, const char *name,
    int release)
{
	pid_t pid;

	if ((pid = fork()) == 0) {
		struct relay_keystore *k2;
		char err[256], tok[RELAY_LOCK_TOKEN];
		int r;

		if (relay_keystore_open(url, secret, NULL, &k2, err,
		    sizeof(err)) != 0)
			_exit(2);
		r = relay_keystore_lock(k2, name, 5000, tok, err, sizeof(err));
		if (r == 0 && release)
			relay_keystore_unlock(k2, name, tok);
		_exit(r == 0 ? 0 : r == -EBUSY ? 1 : 2);
	}
	return child_status(pid);
}

static void
lock_test(const char *url, const char *secret)
{
	struct relay_keystore *ks;
	char err[256], tok[RELAY_LOCK_TOKEN], tok2[RELAY_LOCK_TOKEN];
	char bad[RELAY_LOCK_TOKEN];

	ks = open_store(url, secret, NULL);
	T_OK(relay_keystore_lock(ks, "fabrikam.com", 10000, tok, err,
	    sizeof(err)));
	T_TRUE(strlen(tok) >= 16 && strlen(tok) < RELAY_LOCK_TOKEN);
	T_EQ(relay_keystore_lock(ks, "fabrikam.com", 10000, tok2, err,
	    sizeof(err)), -EBUSY);
	T_EQ(try_lock_child(url, secret, "fabrikam.com", 0), 1);
	T_EQ(try_lock_child(url, secret, "contoso.com", 1), 0);
	/* only the holder's token unlocks */
	snprintf(bad, sizeof(bad), "%s", tok);
	bad[0] = bad[0] == 'a' ? 'b' : 'a';
	relay_keystore_unlock(ks, "fabrikam.com", bad);
	T_EQ(try_lock_child(url, secret, "fabrikam.com", 0), 1);
	relay_keystore_unlock(ks, "fabrikam.com", tok);
	T_EQ(try_lock_child(url, secret, "fabrikam.com", 1), 0);

	/* expiry: a lock nobody released is taken over after its ttl */
	T_OK(relay_keystore_lock(ks, "woodgrove.com", 300, tok, err,
	    sizeof(err)));
	T_EQ(try_lock_child(url, secret, "woodgrove.com", 0), 1);
	msleep(450);
	T_OK(relay_keystore_lock(ks, "woodgrove.com", 10000, tok2, err,
	    sizeof(err)));
	T_TRUE(strcmp(tok, tok2) != 0);
	/* the old holder's unlock does not free the new holder's lock */
	relay_keystore_unlock(ks, "woodgrove.com", tok);
	T_EQ(try_lock_child(url, secret, "woodgrove.com", 0), 1);
	relay_keystore_unlock(ks, "woodgrove.com", tok2);
	T_EQ(try_lock_child(url, secret, "woodgrove.com", 0), 0);
	relay_keystore_close(ks);
}

TEST(keystore_file_lock)
{
	char *dir = tmpdir();

	lock_test(dir, NULL);
}

/* ---- Redis -------------------------------------------------------------- */

static pid_t redis_pid;
static int redis_port;
static char redis_dir[64];

static void
redis_kill(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
		redis_pid = 0;
	}
}

/* raw - a plain hiredis connection to the test server. */
static redisContext *
raw(void)
{
	struct timeval tv = { 1, 0 };
	redisContext *c;

	c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
	if (c == NULL || c->err)
		T_FAIL("connect 127.0.0.1:%d: %s", redis_port,
		    c ? c->errstr : "oom");
	return c;
}

/* redis_start - run redis-server on redis_port (a new one if 0) and wait
 * until it answers PING. */
static void
redis_start(void)
{
	if (redis_port == 0) {
		redis_port = test_free_port();
		atexit(redis_kill);
	}
	if (redis_dir[0] == '\0')
		snprintf(redis_dir, sizeof(redis_dir), "%s", mktmp(1, "ksr"));
	redis_pid = test_redis_start(redis_port, redis_dir, NULL);
}

static char secret_path[128], url_buf[64];

/* redis_setup - server up, a secret file (hex), the url. */
static const char *
redis_setup(void)
{
	const char *hex =
	    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";

	redis_start();
	snprintf(secret_path, sizeof(secret_path), "%s/secret", redis_dir);
	write_file(secret_path, hex, strlen(hex), 0600);
	snprintf(url_buf, sizeof(url_buf), "redis://127.0.0.1:%d/0",
	    redis_port);
	return url_buf;
}

TEST(keystore_redis_roundtrip)
{
	struct relay_keystore *ks;
	const char *url = redis_setup();
	char clk[128];
	redisContext *c;
	redisReply *rep;

	snprintf(clk, sizeof(clk), "%s/clock", redis_dir);
	ks = open_store(url, secret_path, "node-a");
	T_EQ(relay_keystore_is_redis(ks), 1);
	roundtrip(ks, clk);
	relay_keystore_close(ks);

	/* what Redis holds */
	c = raw();
	rep = redisCommand(c, "HGET signet:domain:fabrikam.com version");
	T_TRUE(rep != NULL && rep->type == REDIS_REPLY_STRING);
	T_STREQ(rep->str, "133");
	freeReplyObject(rep);
	rep = redisCommand(c, "LLEN signet:history:fabrikam.com");
	T_EQ(rep->integer, 100);
	freeReplyObject(rep);
	rep = redisCommand(c, "SISMEMBER signet:tenants contoso");
	T_EQ(rep->integer, 1);
	freeReplyObject(rep);
	rep = redisCommand(c, "HGET signet:tenant:contoso users");
	T_STREQ(rep->str, "");
	freeReplyObject(rep);
	redisFree(c);

	/* another database is another store */
	snprintf(url_buf, sizeof(url_buf), "redis://127.0.0.1:%d/3",
	    redis_port);
	ks = open_store(url_buf, secret_path, NULL);
	T_EQ(relay_keystore_get_domain(ks, "fabrikam.com", 0,
	    &(struct dkim_mdomain){ 0 }, clk, sizeof(clk)), -ENOENT);
	relay_keystore_close(ks);
}

TEST(keystore_redis_lock)
{
	const char *url = redis_setup();
	struct relay_keystore *a, *b;
	char err[256], ta[RELAY_LOCK_TOKEN], tb[RELAY_LOCK_TOKEN];

	lock_test(url, secret_path);
	/* two handles in one process */
	a = open_store(url, secret_path, "a");
	b = open_store(url, secret_path, "b");
	T_OK(relay_keystore_lock(a, "x.example", 5000, ta, err, sizeof(err)));
	T_EQ(relay_keystore_lock(b, "x.example", 5000, tb, err, sizeof(err)),
	    -EBUSY);
	T_TRUE(strstr(err, "held") != NULL);
	relay_keystore_unlock(b, "x.example", tb);
	relay_keystore_unlock(a, "x.example", ta);
	T_OK(relay_keystore_lock(b, "x.example", 5000, tb, err, sizeof(err)));
	relay_keystore_close(a);
	relay_keystore_close(b);
}

TEST(keystore_redis_watch)
{
	const char *url = redis_setup();

	watch_test(url, secret_path);
}

TEST(keystore_redis_no_partial)
{
	const char *url = redis_setup();

	no_partial(url, secret_path);
}

TEST(keystore_redis_restart)
{
	const char *url = redis_setup();
	struct relay_keystore *ks, *w;
	struct dkim_mdomain d, g;
	struct names nm;
	char err[256], want[64];
	int64_t t0;
	int r;

	ks = open_store(url, secret_path, NULL);
	w = open_store(url, secret_path, NULL);
	T_OK(relay_keystore_ping(ks, err, sizeof(err)));
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 1000, watch_cb, &nm));
	T_EQ(nm.nulls, 1);
	mkdomain(&d, "fabrikam.com");
	T_OK(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)));
	T_OK(relay_keystore_watch(w, 3000, watch_cb, &nm));
	T_EQ(nm.n, 1);
	T_STREQ(nm.v[0], "fabrikam.com");

	redis_kill();
	r = relay_keystore_ping(ks, err, sizeof(err));
	T_EQ(r, -ECONNREFUSED);
	snprintf(want, sizeof(want), "redis 127.0.0.1:%d: Connection refused",
	    redis_port);
	T_STREQ(err, want);
	T_EQ(relay_keystore_get_domain(ks, "fabrikam.com", 0, &g, err,
	    sizeof(err)), -ECONNREFUSED);
	T_STREQ(err, want);
	T_TRUE(relay_keystore_put_domain(ks, &d, 1, NULL, err,
	    sizeof(err)) < 0);
	T_TRUE(relay_keystore_watch(w, 300, watch_cb, &nm) < 0);
	t0 = mono_ms();
	T_TRUE(relay_keystore_watch(w, 300, watch_cb, &nm) < 0);
	T_TRUE(mono_ms() - t0 >= 250);      /* it slept, not spun */
	/* an unreachable Redis is not an error when opening */
	relay_keystore_close(open_store(url, secret_path, NULL));

	redis_start();      /* empty: --save '' */
	T_OK(relay_keystore_ping(ks, err, sizeof(err)));
	T_EQ(relay_keystore_get_domain(ks, "fabrikam.com", 0, &g, err,
	    sizeof(err)), -ENOENT);
	d.version = 0;
	T_OK(relay_keystore_put_domain(ks, &d, 0, NULL, err, sizeof(err)));
	/* the watcher reconnects and says "reload everything" */
	memset(&nm, 0, sizeof(nm));
	t0 = mono_ms();
	while (nm.nulls == 0 && mono_ms() - t0 < 5000)
		relay_keystore_watch(w, 500, watch_cb, &nm);
	T_EQ(nm.nulls, 1);
	/* and follows changes again */
	d.enabled = 1;
	T_OK(relay_keystore_put_domain(ks, &d, 1, NULL, err, sizeof(err)));
	memset(&nm, 0, sizeof(nm));
	T_OK(relay_keystore_watch(w, 3000, watch_cb, &nm));
	T_EQ(nm.n, 1);
	T_STREQ(nm.v[0], "fabrikam.com");
	dkim_mdomain_clear(&d);
	relay_keystore_close(w);
	relay_keystore_close(ks);
}

/* contains - does p[0..len) contain needle? */
static int
contains(const void *p, size_t len, const void *needle, size_t nlen)
{
	return nlen > 0 && memmem(p, len, needle, nlen) != NULL;
}

/* Everything a scan finds, every value checked against forbidden[]. */
struct needle {
	const void *p;
	size_t len;
};

static int
value_clean(const redisReply *r, const struct needle *nd, int nn)
{
	size_t i;
	int k;

	if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
		for (k = 0; k < nn; k++)
			if (contains(r->str, r->len, nd[k].p, nd[k].len))
				return 0;
		return 1;
	}
	if (r->type == REDIS_REPLY_ARRAY)
		for (i = 0; i < r->elements; i++)
			if (!value_clean(r->element[i], nd, nn))
				return 0;
	return 1;
}

TEST(keystore_redis_secrets)
{
	const char *url = redis_setup();
	struct relay_keystore *ks, *other;
	struct dkim_mdomain d, d2, g;
	struct needle nd[8];
	char err[512], cursor[32] = "0", *b64[2];
	struct dkim_key *k;
	redisContext *c;
	redisReply *rep, *kr;
	size_t i;
	int nn = 0, keys = 0, s;
	char other_secret[160];

	ks = open_store(url, secret_path, NULL);
	mkdomain(&d, "fabrikam.com");
	T_OK(relay_keystore_put_domain(ks, &d, 0, "provisioned", err,
	    sizeof(err)));
	mkdomain(&d2, "contoso.com");
	T_OK(relay_keystore_put_domain(ks, &d2, 0, NULL, err, sizeof(err)));

	nd[nn++] = (struct needle){ "PRIVATE KEY", 11 };
	for (s = 0; s < 2; s++) {
		b64[s] = dkim_b64_encode(d.slot[s].priv, d.slot[s].privlen);
		nd[nn++] = (struct needle){ b64[s], strlen(b64[s]) };
		nd[nn++] = (struct needle){ d.slot[s].priv, d.slot[s].privlen };
		/* the key part of the DER alone (Ed25519 seed, last 32) */
		nd[nn++] = (struct needle){ d.slot[s].priv +
		    d.slot[s].privlen - 32, 32 };
	}
	/* every key, every value */
	c = raw();
	do {
		rep = redisCommand(c, "SCAN %s COUNT 100", cursor);
		T_TRUE(rep != NULL && rep->type == REDIS_REPLY_ARRAY);
		snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
		for (i = 0; i < rep->element[1]->elements; i++) {
			const char *key = rep->element[1]->element[i]->str;
			redisReply *ty = redisCommand(c, "TYPE %s", key);

			if (strcmp(ty->str, "hash") == 0)
				kr = redisCommand(c, "HGETALL %s", key);
			else if (strcmp(ty->str, "list") == 0)
				kr = redisCommand(c, "LRANGE %s 0 -1", key);
			else if (strcmp(ty->str, "set") == 0)
				kr = redisCommand(c, "SMEMBERS %s", key);
			else
				kr = redisCommand(c, "GET %s", key);
			T_TRUE(kr != NULL);
			if (!value_clean(kr, nd, nn))
				T_FAIL("key %s holds private key material",
				    key);
			freeReplyObject(kr);
			freeReplyObject(ty);
			keys++;
		}
		freeReplyObject(rep);
	} while (strcmp(cursor, "0") != 0);
	T_EQ(keys, 4);   /* 2 domains, the domains set, 1 history */
	rep = redisCommand(c, "HGET signet:domain:fabrikam.com s1.priv");
	T_TRUE(rep->type == REDIS_REPLY_STRING);
	T_TRUE(strncmp(rep->str, "gcm1:", 5) == 0);
	freeReplyObject(rep);

	/* the keys decrypt with the right secret */
	T_OK(relay_keystore_get_domain(ks, "fabrikam.com", 1, &g, err,
	    sizeof(err)));
	same_domain(&d, &g, 1);
	dkim_mdomain_clear(&g);

	/* a wrong secret (base64 form) */
	snprintf(other_secret, sizeof(other_secret), "%s/other", redis_dir);
	write_file(other_secret, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
	    45, 0600);
	other = open_store(url, other_secret, NULL);
	T_OK(relay_keystore_get_domain(other, "fabrikam.com", 0, &g, err,
	    sizeof(err)));
	dkim_mdomain_clear(&g);
	T_EQ(relay_keystore_get_domain(other, "fabrikam.com", 1, &g, err,
	    sizeof(err)), -EBADMSG);
	T_TRUE(strstr(err, "cannot decrypt: wrong keystore_secret_file?") !=
	    NULL);
	T_EQ(relay_keystore_get_key(other, "fabrikam.com", 1, 1, &k, err,
	    sizeof(err)), -EBADMSG);
	T_TRUE(strstr(err, "cannot decrypt") != NULL);
	relay_keystore_close(other);

	/* moved: fabrikam's selector1 ciphertext under contoso, and under
	 * fabrikam's selector2 (same generation) */
	rep = redisCommand(c, "HGET signet:domain:fabrikam.com s1.priv");
	kr = redisCommand(c, "HSET signet:domain:contoso.com s1.priv %s",
	    rep->str);
	freeReplyObject(kr);
	kr = redisCommand(c, "HSET signet:domain:fabrikam.com s2.priv %s",
	    rep->str);
	freeReplyObject(kr);
	T_EQ(relay_keystore_get_key(ks, "contoso.com", 1, 1, &k, err,
	    sizeof(err)), -EBADMSG);
	T_EQ(relay_keystore_get_domain(ks, "contoso.com", 1, &g, err,
	    sizeof(err)), -EBADMSG);
	T_EQ(relay_keystore_get_key(ks, "fabrikam.com", 2, 1, &k, err,
	    sizeof(err)), -EBADMSG);
	T_OK(relay_keystore_get_key(ks, "fabrikam.com", 1, 1, &k, err,
	    sizeof(err)));
	dkim_key_free(k);
	/* a generation bump cannot reuse it either */
	kr = redisCommand(c, "HSET signet:domain:fabrikam.com s1.generation 2");
	freeReplyObject(kr);
	T_EQ(relay_keystore_get_key(ks, "fabrikam.com", 1, 2, &k, err,
	    sizeof(err)), -EBADMSG);
	kr = redisCommand(c, "HSET signet:domain:fabrikam.com s1.generation 1");
	freeReplyObject(kr);

	/* tampered: one character of the ciphertext changed */
	{
		char *t = strdup(rep->str);
		size_t pos = strlen(t) / 2;

		t[pos] = t[pos] == 'A' ? 'B' : 'A';
		kr = redisCommand(c, "HSET signet:domain:fabrikam.com s1.priv "
		    "%s", t);
		freeReplyObject(kr);
		T_EQ(relay_keystore_get_key(ks, "fabrikam.com", 1, 1, &k, err,
		    sizeof(err)), -EBADMSG);
		T_EQ(relay_keystore_get_domain(ks, "fabrikam.com", 1, &g, err,
		    sizeof(err)), -EBADMSG);
		/* a value that is no sealed key at all */
		kr = redisCommand(c, "HSET signet:domain:fabrikam.com s1.priv "
		    "%s", b64[0]);
		freeReplyObject(kr);
		T_TRUE(relay_keystore_get_key(ks, "fabrikam.com", 1, 1, &k,
		    err, sizeof(err)) < 0);
		T_TRUE(k == NULL);
		free(t);
	}
	freeReplyObject(rep);
	redisFree(c);
	free(b64[0]);
	free(b64[1]);
	dkim_mdomain_clear(&d);
	dkim_mdomain_clear(&d2);
	relay_keystore_close(ks);
}

TEST(keystore_secret_file)
{
	struct relay_keystore *ks;
	char *dir = tmpdir(), path[128], err[512];
	unsigned char rawkey[32];
	const char *url = "redis://127.0.0.1:1/0";     /* never connected */
	int i;

	for (i = 0; i < 32; i++)
		rawkey[i] = (unsigned char)(i * 7 + 10);   /* has a '\n' */
	snprintf(path, sizeof(path), "%s/secret", dir);

	write_file(path, rawkey, 32, 0600);
	ks = open_store(url, path, NULL);
	relay_keystore_close(ks);
	write_file(path, "00112233445566778899AABBCCDDEEFF"
	    "00112233445566778899aabbccddeeff\n", 65, 0400);
	ks = open_store(url, path, NULL);
	relay_keystore_close(ks);
	write_file(path, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 44,
	    0600);
	ks = open_store(url, path, NULL);
	relay_keystore_close(ks);

	/* refused: readable by others, wrong sizes, missing */
	write_file(path, rawkey, 32, 0644);
	T_EQ(relay_keystore_open(url, path, NULL, &ks, err, sizeof(err)),
	    -EPERM);
	T_TRUE(strstr(err, "group or others") != NULL);
	T_TRUE(strstr(err, path) != NULL);
	write_file(path, rawkey, 32, 0640);
	T_EQ(relay_keystore_open(url, path, NULL, &ks, err, sizeof(err)),
	    -EPERM);
	write_file(path, rawkey, 31, 0600);
	T_EQ(relay_keystore_open(url, path, NULL, &ks, err, sizeof(err)),
	    -EINVAL);
	T_TRUE(strstr(err, "64 hex digits") != NULL);
	write_file(path, "0011", 4, 0600);
	T_EQ(relay_keystore_open(url, path, NULL, &ks, err, sizeof(err)),
	    -EINVAL);
	unlink(path);
	T_EQ(relay_keystore_open(url, path, NULL, &ks, err, sizeof(err)),
	    -ENOENT);
	T_TRUE(strstr(err, path) != NULL);
	T_EQ(relay_keystore_open(url, NULL, NULL, &ks, err, sizeof(err)),
	    -EINVAL);
	T_TRUE(strstr(err, "keystore_secret_file is required") != NULL);
	T_TRUE(ks == NULL);

	/* URLs */
	write_file(path, rawkey, 32, 0600);
	ks = open_store("redis://localhost", path, NULL);
	relay_keystore_close(ks);
	ks = open_store("redis://[::1]:6390/2", path, NULL);
	relay_keystore_close(ks);
	T_EQ(relay_keystore_open("redis://h:99999", path, NULL, &ks, err,
	    sizeof(err)), -EINVAL);
	T_EQ(relay_keystore_open("redis://:6379", path, NULL, &ks, err,
	    sizeof(err)), -EINVAL);
	T_EQ(relay_keystore_open("redis://h:1/x", path, NULL, &ks, err,
	    sizeof(err)), -EINVAL);
	T_EQ(relay_keystore_open("redis://u:p@h:1/0", path, NULL, &ks, err,
	    sizeof(err)), -EINVAL);
	/* an unreachable Redis: open works, ping names the store */
	ks = open_store("redis://127.0.0.1:1", path, NULL);
	T_EQ(relay_keystore_ping(ks, err, sizeof(err)), -ECONNREFUSED);
	T_STREQ(err, "redis 127.0.0.1:1: Connection refused");
	relay_keystore_close(ks);
}

/* ---- threads ------------------------------------------------------------ */

struct thr {
	struct relay_keystore *ks;
	int fails;
	int stop;
};

static void *
reader_thread(void *arg)
{
	struct thr *t = arg;
	struct dkim_key *k;
	struct dkim_mdomain g;
	char err[256];
	int i;

	for (i = 0; i < 300; i++) {
		if (relay_keystore_get_key(t->ks, "threads.example", 1 + i % 2,
		    1, &k, err, sizeof(err)) != 0) {
			fprintf(stderr, "get_key: %s\n", err);
			__atomic_add_fetch(&t->fails, 1, __ATOMIC_RELAXED);
		} else
			dkim_key_free(k);
		if (i % 10 == 0) {
			if (relay_keystore_get_domain(t->ks, "threads.example",
			    1, &g, err, sizeof(err)) != 0)
				__atomic_add_fetch(&t->fails, 1,
				    __ATOMIC_RELAXED);
			dkim_mdomain_clear(&g);
		}
	}
	return NULL;
}

static void *
writer_thread(void *arg)
{
	struct thr *t = arg;
	struct dkim_mdomain g;
	char err[256];
	int i;

	for (i = 0; i < 100; i++) {
		if (relay_keystore_get_domain(t->ks, "threads.example", 0, &g,
		    err, sizeof(err)) != 0 ||
		    (g.dns_checked = i, relay_keystore_put_domain(t->ks, &g,
		    g.version, "tick", err, sizeof(err))) != 0) {
			fprintf(stderr, "writer: %s\n", err);
			__atomic_add_fetch(&t->fails, 1, __ATOMIC_RELAXED);
		}
		dkim_mdomain_clear(&g);
	}
	return NULL;
}

/* One store, four readers of keys and a writer, all at once. */
static void
threads_test(const char *url, const char *secret)
{
	struct thr t = { 0 };
	struct dkim_mdomain d;
	pthread_t th[5];
	char err[256];
	int i;

	t.ks = open_store(url, secret, NULL);
	mkdomain(&d, "threads.example");
	T_OK(relay_keystore_put_domain(t.ks, &d, 0, NULL, err, sizeof(err)));
	dkim_mdomain_clear(&d);
	for (i = 0; i < 4; i++)
		T_OK(pthread_create(&th[i], NULL, reader_thread, &t));
	T_OK(pthread_create(&th[4], NULL, writer_thread, &t));
	for (i = 0; i < 5; i++)
		pthread_join(th[i], NULL);
	T_EQ(t.fails, 0);
	T_OK(relay_keystore_get_domain(t.ks, "threads.example", 0, &d, err,
	    sizeof(err)));
	T_EQ(d.version, 101);
	dkim_mdomain_clear(&d);
	relay_keystore_close(t.ks);
}

TEST(keystore_file_threads)
{
	threads_test(tmpdir(), NULL);
}

TEST(keystore_redis_threads)
{
	const char *url = redis_setup();

	threads_test(url, secret_path);
}
