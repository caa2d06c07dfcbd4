/*
 * test_relay_keymgr.c - unit tests of relay/keymgr.c, the daemon's side of
 * managed keys, over a real file key store in a temporary directory and
 * the SIGNET_CLOCK_FILE clock: the signing identities for every case of
 * issue 5 (enabled, default signing, unprovisioned with each
 * dkim_unprovisioned, another tenant's domain, a domain whose key has not
 * passed the gate, the static table first), signatures made with what the
 * lookup returns verified against the TXT records the DNS lookup serves,
 * the rotation thread carrying a domain through confirm -> switch ->
 * replace -> hold -> switch as the clock moves, the DNS server's view of
 * the index, two key managers on one store never doing a transition twice,
 * the key cache's bound, and (with a real redis-server) the store going
 * away: signing goes on with the keys held, no transition until it is back.
 *
 * Domains are provisioned directly with relay_keystore_put_domain and
 * Ed25519 keys (fast); the tenant "default" and its initial domain are
 * made by the key manager itself, with 1024-bit RSA keys.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "relay/keys.h"
#include "relay/relay.h"
#include "tests/unit/test.h"

#define T0 1800000000LL            /* the test clock starts here */
#define INITIAL "contoso.signet.example"

static char km_dir[64];
static char clock_path[128];

/* ---- helpers ------------------------------------------------------------- */

static void
km_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
		T_FAIL("%s: %s", path, strerror(errno));
}

/* set_clock - what relay_clock_now says from now on. */
static void
set_clock(long long t)
{
	char buf[32], tmp[160];

	snprintf(buf, sizeof(buf), "%lld\n", t);
	snprintf(tmp, sizeof(tmp), "%s.tmp", clock_path);
	km_write(tmp, buf);
	if (rename(tmp, clock_path) != 0)
		T_FAIL("rename: %s", strerror(errno));
}

/* setup - a temporary directory with a key store and a clock file. */
static void
setup(void)
{
	snprintf(km_dir, sizeof(km_dir), "/tmp/signet-keymgr-XXXXXX");
	if (mkdtemp(km_dir) == NULL)
		T_FAIL("mkdtemp: %s", strerror(errno));
	snprintf(clock_path, sizeof(clock_path), "%s/clock", km_dir);
	set_clock(T0);
	setenv("SIGNET_CLOCK_FILE", clock_path, 1);
	unsetenv("SIGNET_NODE");
	relay_log_open(0, LOG_WARNING);
}

static void
teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", km_dir);
	if (system(cmd) != 0)
		T_FAIL("%s failed", cmd);
}

/* load_conf - relay.conf with the key store; extra lines replace the
 * base lines of the same settings. */
static void
load_conf(struct relay_config *cfg, const char *extra)
{
	static const char *const base[] = {
		"initial_domain = " INITIAL,
		"dkim_dns_check = no",
		"dkim_key_size = 1024",
		"dkim_check_interval = 1s",
		"dkim_publish_lead = 0s",
		"dkim_retire_delay = 2h",
		"dkim_rotation_interval = 1d",
		"dkim_key_cache_size = 16",
	};
	char path[128], text[4096], name[64];
	size_t i, len;

	if (extra == NULL)
		extra = "";
	snprintf(path, sizeof(path), "%s/relay.conf", km_dir);
	len = (size_t)snprintf(text, sizeof(text), "spool_dir = %s/spool\n%s",
	    km_dir, extra);
	if (strstr(extra, "keystore =") == NULL)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		    "keystore = %s/keys\n", km_dir);
	for (i = 0; i < sizeof(base) / sizeof(base[0]); i++) {
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(base[i], " "),
		    base[i]);
		if (strstr(extra, name) != NULL)
			continue;
		len += (size_t)snprintf(text + len, sizeof(text) - len, "%s\n",
		    base[i]);
	}
	km_write(path, text);
	if (relay_config_load(path, cfg, NULL, NULL) != 0)
		T_FAIL("relay_config_load failed");
}

static struct relay_keystore *
open_store(void)
{
	struct relay_keystore *ks;
	char url[128], err[256];

	snprintf(url, sizeof(url), "%s/keys", km_dir);
	if (relay_keystore_open(url, NULL, "test", &ks, err, sizeof(err)) != 0)
		T_FAIL("relay_keystore_open: %s", err);
	return ks;
}

static struct relay_keymgr *
start_km(const struct relay_config *cfg)
{
	struct relay_keymgr *km;
	char err[512];

	if (relay_keymgr_start(cfg, &km, err, sizeof(err)) != 0)
		T_FAIL("relay_keymgr_start: %s", err);
	return km;
}

/*
 * provision - a managed domain with Ed25519 keys, slot 1 active; confirmed
 * (0: not) and published (0: now) set on slot 1 as given.
 */
static void
provision(struct relay_keystore *ks, const char *domain, const char *tenant,
    const char *initial, int enabled, long long confirmed,
    long long published)
{
	struct dkim_key *k1, *k2;
	struct dkim_mdomain d;
	char err[256];

	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k1));
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k2));
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, domain, tenant, initial, k1, k2,
	    relay_clock_now()));
	d.enabled = enabled;
	d.slot[0].confirmed = confirmed;
	if (published != 0)
		d.slot[0].published = published;
	if (relay_keystore_put_domain(ks, &d, 0, "provision", err,
	    sizeof(err)) != 0)
		T_FAIL("put %s: %s", domain, err);
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
}

static void
add_tenant(struct relay_keystore *ks, const char *name, const char *initial,
    const char *users, const char *networks)
{
	struct relay_tenant t;
	char err[256];

	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", name);
	snprintf(t.initial_domain, sizeof(t.initial_domain), "%s", initial);
	t.users = strdup(users);
	t.networks = strdup(networks);
	if (relay_keystore_put_tenant(ks, &t, 0, err, sizeof(err)) != 0)
		T_FAIL("put tenant %s: %s", name, err);
	relay_tenant_clear(&t);
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* wait_domains - until km's index holds n domains (10 s at most). */
static void
wait_domains(struct relay_keymgr *km, size_t n)
{
	struct relay_keymgr_stats st;
	int i;

	for (i = 0; i < 1000; i++) {
		relay_keymgr_stats(km, &st);
		if (st.domains == n)
			return;
		sleep_ms(10);
	}
	T_FAIL("the index has %zu domains, not %zu", st.domains, n);
}

/* One lookup's outcome, its strings copied. */
struct res {
	int n;
	char d[256], s[64], reason[256];
	enum dkim_alg alg;
	struct dkim_key *key;
};

static void
lookup(struct relay_keymgr *km, const char *from, const char *user,
    const char *ip, struct res *r)
{
	struct dkim_sign_params out[DKIM_MAX_SIGS];
	struct smtp_sign_request rq;
	struct sockaddr_in sin;

	memset(r, 0, sizeof(*r));
	memset(&rq, 0, sizeof(rq));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, ip != NULL ? ip : "192.0.2.1", &sin.sin_addr);
	rq.from_domain = from;
	rq.auth_user = user;
	rq.client = (const struct sockaddr *)&sin;
	rq.queue_id = "TEST";
	r->n = relay_keymgr_sign_lookup(km, &rq, out, DKIM_MAX_SIGS, r->reason,
	    sizeof(r->reason));
	if (r->n == 1) {
		snprintf(r->d, sizeof(r->d), "%s", out[0].domain);
		snprintf(r->s, sizeof(r->s), "%s", out[0].selector);
		r->alg = out[0].alg;
		r->key = out[0].key;
		T_TRUE(out[0].headers != NULL);
	}
}

static void
res_free(struct res *r)
{
	dkim_key_free(r->key);
	r->key = NULL;
}

/* expect - from (with user / ip) signs as d= s=, or n is 0 / -1. */
static void
expect(struct relay_keymgr *km, const char *from, const char *user,
    const char *ip, const char *d, const char *s)
{
	struct res r;

	lookup(km, from, user, ip, &r);
	if (d == NULL) {
		if (r.n != 0)
			T_FAIL("%s: expected unsigned, got %d d=%s s=%s", from,
			    r.n, r.d, r.s);
		return;
	}
	if (r.n != 1)
		T_FAIL("%s: expected d=%s s=%s, got %d (%s)", from, d, s, r.n,
		    r.reason);
	T_STREQ(r.d, d);
	T_STREQ(r.s, s);
	res_free(&r);
}

/* wait_identity - until from signs as d= s= (10 s at most). */
static void
wait_identity(struct relay_keymgr *km, const char *from, const char *d,
    const char *s)
{
	struct res r;
	int i;

	for (i = 0; i < 1000; i++) {
		lookup(km, from, NULL, NULL, &r);
		res_free(&r);
		if (r.n == 1 && strcmp(r.d, d) == 0 && strcmp(r.s, s) == 0)
			return;
		sleep_ms(10);
	}
	T_FAIL("%s: signs as d=%s s=%s (%d), not d=%s s=%s", from, r.d, r.s,
	    r.n, d, s);
}

/* wait_signs - until from signs (the initial key's gate passed). */
static void
wait_signs(struct relay_keymgr *km, const char *from)
{
	struct res r;
	int i;

	for (i = 0; i < 1000; i++) {
		lookup(km, from, NULL, NULL, &r);
		res_free(&r);
		if (r.n == 1)
			return;
		sleep_ms(10);
	}
	T_FAIL("%s never signs", from);
}

/* dns_txt - the TXT the DNS lookup serves for name, malloc'd (or NULL). */
static char *
dns_txt(struct relay_keymgr *km, const char *name, char *zone, size_t zlen,
    int *exists)
{
	struct relay_dnsd_answer a;

	relay_keymgr_dns_lookup(km, name, &a);
	if (zone != NULL)
		snprintf(zone, zlen, "%s", a.zone);
	if (exists != NULL)
		*exists = a.exists;
	return a.txt;
}

/* verifier key lookup over the key manager's DNS view */
static int
verify_lookup(void *arg, const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	char name[600];

	char sel[DKIM_SELECTOR_BUFSIZE];

	snprintf(name, sizeof(name), "%s._domainkey.%s", selector, domain);
	/* selectorN._domainkey.<domain>: follow the customer's CNAME */
	if ((strcmp(selector, "selector1") == 0 ||
	    strcmp(selector, "selector2") == 0) &&
	    dkim_selector_name(selector[8] - '0', domain, sel,
	    sizeof(sel)) == 0)
		snprintf(name, sizeof(name), "%s._domainkey.%s", sel, INITIAL);
	if ((*txt = dns_txt(arg, name, NULL, 0, NULL)) == NULL) {
		snprintf(err, errlen, "no TXT at %s", name);
		return DKIM_ENOKEY;
	}
	return 0;
}

/*
 * sign_verify - sign a message From from with what the lookup returns and
 * verify it with the TXT records served by the DNS lookup.  The enabled
 * case (d=From domain, s=selectorN) goes through the record name, as the
 * customer's CNAME would.
 */
static void
sign_verify(struct relay_keymgr *km, const char *from)
{
	struct dkim_sign_params out[DKIM_MAX_SIGS];
	struct dkim_verify_result vr[DKIM_MAX_SIGS + 1];
	struct smtp_sign_request rq;
	struct dkim_signer *sg;
	struct dkim_verifier *v;
	char msg[512], reason[128], *sig, *all;
	size_t siglen;
	int n;

	memset(&rq, 0, sizeof(rq));
	rq.from_domain = from;
	T_EQ(relay_keymgr_sign_lookup(km, &rq, out, DKIM_MAX_SIGS, reason,
	    sizeof(reason)), 1);
	snprintf(msg, sizeof(msg), "From: a@%s\r\nTo: b@example.net\r\n"
	    "Subject: t\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
	    "Hello.\r\n", from);
	T_TRUE((sg = dkim_signer_new()) != NULL);
	T_OK(dkim_signer_add(sg, &out[0]));
	dkim_key_free(out[0].key);
	T_OK(dkim_signer_write(sg, msg, strlen(msg)));
	T_OK(dkim_signer_finish(sg, &sig, &siglen));
	dkim_signer_free(sg);
	T_TRUE(asprintf(&all, "%s%s", sig, msg) > 0);
	free(sig);
	T_TRUE((v = dkim_verifier_new(verify_lookup, km)) != NULL);
	T_OK(dkim_verifier_write(v, all, strlen(all)));
	n = dkim_verifier_finish(v, T0, vr, DKIM_MAX_SIGS + 1);
	dkim_verifier_free(v);
	free(all);
	T_EQ(n, 1);
	if (!vr[0].pass)
		T_FAIL("%s: d=%s s=%s: %s", from, vr[0].domain, vr[0].selector,
		    vr[0].reason);
}

/* ---- signing identities -------------------------------------------------- */

TEST(relay_keymgr_sign_identities)
{
	struct relay_config cfg, cfg2, cfg3;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	struct relay_tenant t;
	struct res r;
	char err[256];

	setup();
	load_conf(&cfg, NULL);
	ks = open_store();
	/* the manager makes tenant default and its initial domain */
	km = start_km(&cfg);
	T_TRUE(relay_keymgr_current() == km);
	memset(&t, 0, sizeof(t));
	T_OK(relay_keystore_get_tenant(ks, "default", &t, err, sizeof(err)));
	T_STREQ(t.initial_domain, INITIAL);
	relay_tenant_clear(&t);

	add_tenant(ks, "other", "other.signet.example", "bob carol",
	    "10.9.0.0/16");
	provision(ks, "fabrikam.example", "default", INITIAL, 1, T0, 0);
	provision(ks, "northwind.example", "default", INITIAL, 0, T0, 0);
	provision(ks, "tailspin.example", "other", "other.signet.example", 0,
	    T0, 0);
	/* published far ahead: its key never passes the gate */
	provision(ks, "unconfirmed.example", "default", INITIAL, 0, 0,
	    T0 + 100LL * 86400 * 365);
	wait_domains(km, 5);
	/* the rotation thread confirms the initial domain's key (lead 0) */
	wait_signs(km, "random.example");

	/* enabled: d=domain s=selectorN */
	lookup(km, "fabrikam.example", NULL, NULL, &r);
	T_EQ(r.n, 1);
	T_STREQ(r.d, "fabrikam.example");
	T_STREQ(r.s, "selector1");
	T_EQ(r.alg, DKIM_ALG_ED25519_SHA256);
	res_free(&r);
	/* provisioned, not enabled: default signing */
	expect(km, "northwind.example", NULL, NULL, INITIAL,
	    "selector1-northwind-example");
	/* not provisioned: sign-initial, the initial domain's own RSA key */
	lookup(km, "random.example", NULL, NULL, &r);
	T_EQ(r.n, 1);
	T_STREQ(r.d, INITIAL);
	T_STREQ(r.s, "selector1-contoso-signet-example");
	T_EQ(r.alg, DKIM_ALG_RSA_SHA256);
	res_free(&r);
	/* another tenant's domain is unprovisioned for default's mail */
	expect(km, "tailspin.example", NULL, NULL, INITIAL,
	    "selector1-contoso-signet-example");
	/* ... and default-signed for its own tenant, by AUTH or network */
	expect(km, "tailspin.example", "bob", NULL, "other.signet.example",
	    "selector1-tailspin-example");
	expect(km, "tailspin.example", NULL, "10.9.3.4",
	    "other.signet.example", "selector1-tailspin-example");
	expect(km, "tailspin.example", "mallory", "10.8.0.1", INITIAL,
	    "selector1-contoso-signet-example");
	/* tenant other has no initial-domain key: its stray mail is unsigned */
	expect(km, "random.example", "carol", NULL, NULL, NULL);
	/* default's domain sent by tenant other: unprovisioned there */
	expect(km, "northwind.example", "carol", NULL, NULL, NULL);
	/* a key not yet through the gate: unprovisioned */
	expect(km, "unconfirmed.example", NULL, NULL, INITIAL,
	    "selector1-contoso-signet-example");
	/* no From domain: nothing */
	{
		struct dkim_sign_params out[DKIM_MAX_SIGS];
		struct smtp_sign_request rq;
		char reason[64];

		memset(&rq, 0, sizeof(rq));
		T_EQ(relay_keymgr_sign_lookup(km, &rq, out, DKIM_MAX_SIGS,
		    reason, sizeof(reason)), 0);
	}

	/* the signatures verify against the records the DNS view serves */
	sign_verify(km, "northwind.example");
	sign_verify(km, "random.example");

	/* tenant_lookup = network only: AUTH user bob no longer counts */
	load_conf(&cfg2, "tenant_lookup = network\n"
	    "dkim_unprovisioned = reject\n");
	relay_keymgr_reconfigure(km, &cfg2);
	expect(km, "tailspin.example", NULL, "10.9.3.4",
	    "other.signet.example", "selector1-tailspin-example");
	lookup(km, "tailspin.example", "bob", NULL, &r);
	T_EQ(r.n, -1);
	T_STREQ(r.reason, "DKIM: tailspin.example is not provisioned for "
	    "tenant default");
	lookup(km, "unconfirmed.example", NULL, NULL, &r);
	T_EQ(r.n, -1);
	T_STREQ(r.reason, "DKIM: unconfirmed.example is not provisioned for "
	    "tenant default");
	/* provisioned ones still sign */
	expect(km, "northwind.example", NULL, NULL, INITIAL,
	    "selector1-northwind-example");
	load_conf(&cfg3, "dkim_unprovisioned = unsigned\n");
	relay_keymgr_reconfigure(km, &cfg3);
	expect(km, "random.example", NULL, NULL, NULL, NULL);
	expect(km, "fabrikam.example", NULL, NULL, "fabrikam.example",
	    "selector1");

	relay_keymgr_stop(km);
	T_TRUE(relay_keymgr_current() == NULL);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	relay_config_free(&cfg2);
	relay_config_free(&cfg3);
	teardown();
}

/* The static dkim_sign table wins over managed keys in relay_sign_lookup. */
TEST(relay_keymgr_static_first)
{
	struct dkim_sign_params out[DKIM_MAX_SIGS];
	struct relay_config cfg;
	struct smtp_sign_request rq;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	struct dkim_key *k;
	char path[128], line[256], reason[64];
	int n;

	setup();
	snprintf(path, sizeof(path), "%s/static.pem", km_dir);
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k));
	T_OK(dkim_key_write_pem(k, path));
	dkim_key_free(k);
	snprintf(line, sizeof(line), "dkim_sign = fabrikam.example byok %s\n",
	    path);
	load_conf(&cfg, line);
	ks = open_store();
	km = start_km(&cfg);
	provision(ks, "fabrikam.example", "default", INITIAL, 1, T0, 0);
	provision(ks, "northwind.example", "default", INITIAL, 1, T0, 0);
	wait_domains(km, 3);
	memset(&rq, 0, sizeof(rq));
	rq.from_domain = "fabrikam.example";
	n = relay_sign_lookup(&cfg, &rq, out, DKIM_MAX_SIGS, reason,
	    sizeof(reason));
	T_EQ(n, 1);
	T_STREQ(out[0].selector, "byok");
	dkim_key_free(out[0].key);
	rq.from_domain = "northwind.example";
	n = relay_sign_lookup(&cfg, &rq, out, DKIM_MAX_SIGS, reason,
	    sizeof(reason));
	T_EQ(n, 1);
	T_STREQ(out[0].domain, "northwind.example");
	T_STREQ(out[0].selector, "selector1");
	dkim_key_free(out[0].key);
	relay_keymgr_stop(km);
	/* no manager: the static table alone */
	n = relay_sign_lookup(&cfg, &rq, out, DKIM_MAX_SIGS, reason,
	    sizeof(reason));
	T_EQ(n, 0);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	teardown();
}

/* ---- rotation ------------------------------------------------------------ */

static long long metric(const char *text, const char *series);

/* Collects a domain's history events (the part after time and node). */
struct hist {
	char ev[64][160];
	int n;
};

static int
hist_cb(void *arg, const char *line)
{
	struct hist *h = arg;
	const char *p;

	if (h->n >= 64)
		return 0;
	/* "<time> <node> <event>" */
	if ((p = strchr(line, ' ')) == NULL || (p = strchr(p + 1, ' ')) == NULL)
		T_FAIL("bad history line %s", line);
	snprintf(h->ev[h->n++], sizeof(h->ev[0]), "%s", p + 1);
	return 0;
}

static void
history(struct relay_keystore *ks, const char *domain, struct hist *h)
{
	char err[256];

	memset(h, 0, sizeof(*h));
	if (relay_keystore_history(ks, domain, hist_cb, h, err,
	    sizeof(err)) != 0)
		T_FAIL("history %s: %s", domain, err);
}

/* has_event - how many events start with prefix. */
static int
has_event(const struct hist *h, const char *prefix)
{
	int i, n = 0;

	for (i = 0; i < h->n; i++)
		if (strncmp(h->ev[i], prefix, strlen(prefix)) == 0)
			n++;
	return n;
}

/* wait_event - until domain's history has an event starting with prefix. */
static void
wait_event(struct relay_keystore *ks, const char *domain, const char *prefix)
{
	struct hist h;
	int i, j;

	for (i = 0; i < 1500; i++) {
		history(ks, domain, &h);
		if (has_event(&h, prefix))
			return;
		sleep_ms(10);
	}
	fprintf(stderr, "history of %s:\n", domain);
	for (j = 0; j < h.n; j++)
		fprintf(stderr, "  %s\n", h.ev[j]);
	T_FAIL("%s: no event \"%s\" within 15 s", domain, prefix);
}

static void
get_domain(struct relay_keystore *ks, const char *domain,
    struct dkim_mdomain *d)
{
	char err[256];

	dkim_mdomain_init(d);
	if (relay_keystore_get_domain(ks, domain, 0, d, err, sizeof(err)) != 0)
		T_FAIL("get %s: %s", domain, err);
}

/* request_rotation - what `signetctl dkim rotate` (without --now) does. */
static void
request_rotation(struct relay_keystore *ks, const char *domain)
{
	struct dkim_mdomain d;
	char err[256];
	int i, rc = -ESTALE;

	for (i = 0; i < 20 && rc == -ESTALE; i++) {
		get_domain(ks, domain, &d);
		d.rotate_requested = 1;
		rc = relay_keystore_put_domain(ks, &d, d.version,
		    "rotate-requested", err, sizeof(err));
		dkim_mdomain_clear(&d);
	}
	if (rc != 0)
		T_FAIL("rotate %s: %s", domain, err);
}

/*
 * run_cycle - move the clock through a whole cycle for the domains and
 * wait for every step: confirm (after the 1 h lead), switch 1->2 (after
 * the 1 d interval), replace selector1 (after the 2 h retire delay), then
 * a requested rotation the gate holds (the new key's lead), then switch
 * 2->1 once the lead has passed.
 */
static void
run_cycle(struct relay_keystore *ks, struct relay_keymgr *km,
    const char *const *domains, int n)
{
	struct dkim_mdomain d;
	char sel[DKIM_SELECTOR_BUFSIZE];
	int i;

	set_clock(T0 + 2 * 3600);
	for (i = 0; i < n; i++)
		wait_event(ks, domains[i], "confirm selector1 gen 1");
	set_clock(T0 + 86400 + 3 * 3600);
	for (i = 0; i < n; i++)
		wait_event(ks, domains[i], "switch selector1->selector2 gen 1");
	/* km (if given) signs default-mode mail with selector2 now */
	for (i = 0; km != NULL && i < n; i++) {
		get_domain(ks, domains[i], &d);
		T_OK(dkim_selector_name(2, domains[i], sel, sizeof(sel)));
		if (d.enabled)
			wait_identity(km, domains[i], domains[i], "selector2");
		else
			wait_identity(km, domains[i], INITIAL, sel);
		dkim_mdomain_clear(&d);
		sign_verify(km, domains[i]);
	}
	set_clock(T0 + 86400 + 6 * 3600);
	for (i = 0; i < n; i++) {
		wait_event(ks, domains[i], "replace selector1 gen 2");
		get_domain(ks, domains[i], &d);
		T_EQ(d.active, 2);
		T_EQ(d.phase, DKIM_PHASE_STABLE);
		T_EQ(d.slot[0].generation, 2);
		T_EQ(d.slot[0].published, T0 + 86400 + 6 * 3600);
		dkim_mdomain_clear(&d);
		request_rotation(ks, domains[i]);
	}
	/* the new selector1 key was published just now: lead 1 h holds it */
	for (i = 0; i < n; i++)
		wait_event(ks, domains[i], "hold selector1 gen 2: ");
	set_clock(T0 + 86400 + 8 * 3600);
	for (i = 0; i < n; i++)
		wait_event(ks, domains[i], "switch selector2->selector1 gen 2");
}

TEST(relay_keymgr_rotation)
{
	static const char *const doms[] = { "rot.example" };
	struct relay_keymgr_stats st;
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	struct hist h;
	unsigned long ticks;
	char *metrics;

	setup();
	load_conf(&cfg, "dkim_publish_lead = 1h\n");
	ks = open_store();
	km = start_km(&cfg);
	provision(ks, "rot.example", "default", INITIAL, 0, 0, 0);
	wait_domains(km, 2);
	/* not through the gate yet (lead 1 h): signs as unprovisioned,
	 * and so does the initial domain's key: unsigned */
	expect(km, "rot.example", NULL, NULL, NULL, NULL);
	sleep_ms(1500);
	history(ks, "rot.example", &h);
	T_EQ(has_event(&h, "confirm"), 0);

	set_clock(T0 + 2 * 3600);
	wait_event(ks, "rot.example", "confirm selector1 gen 1");
	wait_event(ks, INITIAL, "confirm selector1 gen 1");
	wait_identity(km, "rot.example", INITIAL, "selector1-rot-example");
	run_cycle(ks, km, doms, 1);
	/* the index follows: signing with selector1 again, its new key */
	wait_identity(km, "rot.example", INITIAL, "selector1-rot-example");
	sign_verify(km, "rot.example");

	history(ks, "rot.example", &h);
	T_STREQ(h.ev[0], "provision");
	T_EQ(has_event(&h, "confirm selector1 gen 1"), 1);
	T_EQ(has_event(&h, "switch selector1->selector2 gen 1"), 1);
	T_EQ(has_event(&h, "replace selector1 gen 2"), 1);
	T_EQ(has_event(&h, "hold selector1 gen 2: "), 1);
	T_EQ(has_event(&h, "switch selector2->selector1 gen 2"), 1);

	relay_keymgr_stats(km, &st);
	T_EQ(st.keystore_up, 1);
	T_TRUE(st.ticks > 3);
	/* one more tick brings the gauges up to date */
	ticks = st.ticks;
	for (int i = 0; i < 300 && st.ticks <= ticks; i++) {
		sleep_ms(10);
		relay_keymgr_stats(km, &st);
	}
	T_TRUE(st.ticks > ticks);
	/* rot.example switched twice, the initial domain once */
	metrics = relay_metrics_render(NULL);
	T_EQ(metric(metrics, "signet_dkim_transitions_total{step=\"switch\"}"),
	    3);
	T_EQ(metric(metrics, "signet_dkim_transitions_total{step=\"replace\"}"),
	    2);
	T_EQ(metric(metrics, "signet_dkim_transitions_total{step=\"confirm\"}"),
	    2);
	T_EQ(metric(metrics, "signet_keystore_up"), 1);
	T_TRUE(metric(metrics, "signet_dkim_gate_holds_total") >= 1);
	T_TRUE(metric(metrics, "signet_dkim_signatures_total{slot=\"1\","
	    "mode=\"default\"}") >= 1);
	T_TRUE(metric(metrics, "signet_dkim_signatures_total{slot=\"2\","
	    "mode=\"default\"}") >= 1);
	T_EQ(metric(metrics, "signet_dkim_domains{phase=\"stable\"}") +
	    metric(metrics, "signet_dkim_domains{phase=\"retiring\"}"), 2);
	free(metrics);

	relay_keymgr_stop(km);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	teardown();
}

/* metric - the value of the series named exactly so (-1: none). */
static long long
metric(const char *text, const char *series)
{
	const char *p = text;
	size_t len = strlen(series);

	while ((p = strstr(p, series)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[len] == ' ')
			return strtoll(p + len + 1, NULL, 10);
		p += len;
	}
	return -1;
}

/* Two managers on one store: every transition carried out exactly once. */
TEST(relay_keymgr_two_nodes)
{
	static const char *const doms[] = {
		"a.example", "b.example", "c.example", "d.example",
		"e.example", "f.example",
	};
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km1, *km2;
	struct hist h;
	size_t i;

	setup();
	load_conf(&cfg, "dkim_publish_lead = 1h\n");
	ks = open_store();
	setenv("SIGNET_NODE", "node1", 1);
	km1 = start_km(&cfg);
	setenv("SIGNET_NODE", "node2", 1);
	km2 = start_km(&cfg);
	for (i = 0; i < 6; i++)
		provision(ks, doms[i], "default", INITIAL, i % 2, 0, 0);
	wait_domains(km1, 7);
	wait_domains(km2, 7);
	run_cycle(ks, km2, doms, 6);
	/* let both nodes tick a few more times: nothing must repeat */
	sleep_ms(2500);
	for (i = 0; i < 6; i++) {
		history(ks, doms[i], &h);
		T_EQ(has_event(&h, "provision"), 1);
		T_EQ(has_event(&h, "confirm selector1 gen 1"), 1);
		T_EQ(has_event(&h, "switch selector1->selector2 gen 1"), 1);
		T_EQ(has_event(&h, "replace selector1 gen 2"), 1);
		T_EQ(has_event(&h, "hold selector1 gen 2: "), 1);
		T_EQ(has_event(&h, "switch selector2->selector1 gen 2"), 1);
		T_EQ(has_event(&h, "confirm"), 1);
		T_EQ(has_event(&h, "switch"), 2);
		T_EQ(has_event(&h, "replace"), 1);
	}
	/* the initial domain was made once, by whichever node won */
	history(ks, INITIAL, &h);
	T_EQ(has_event(&h, "provision"), 1);
	T_EQ(has_event(&h, "confirm selector1 gen 1"), 1);
	T_EQ(has_event(&h, "switch selector1->selector2 gen 1"), 1);
	T_EQ(has_event(&h, "replace selector1 gen 2"), 1);
	T_EQ(has_event(&h, "switch"), 1);
	/* both nodes sign with the same identity */
	expect(km1, "a.example", NULL, NULL, INITIAL, "selector1-a-example");
	expect(km2, "a.example", NULL, NULL, INITIAL, "selector1-a-example");
	expect(km2, "b.example", NULL, NULL, "b.example", "selector1");
	relay_keymgr_stop(km2);
	relay_keymgr_stop(km1);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	unsetenv("SIGNET_NODE");
	teardown();
}

/* ---- the DNS view -------------------------------------------------------- */

TEST(relay_keymgr_dns_lookup)
{
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	struct relay_dnsd_answer a;
	struct dkim_mdomain d;
	char zone[256], name[300], *txt, *want;
	uint32_t serial;
	int exists;

	setup();
	load_conf(&cfg, NULL);
	ks = open_store();
	km = start_km(&cfg);
	add_tenant(ks, "other", "other.signet.example", "", "");
	provision(ks, "fabrikam.example", "default", INITIAL, 0, T0, 0);
	wait_domains(km, 2);

	get_domain(ks, "fabrikam.example", &d);
	for (int slot = 1; slot <= 2; slot++) {
		T_OK(dkim_mdomain_record_name(&d, slot, name, sizeof(name)));
		txt = dns_txt(km, name, zone, sizeof(zone), &exists);
		want = dkim_mdomain_txt(&d, slot);
		T_TRUE(txt != NULL);
		T_STREQ(txt, want);
		T_STREQ(zone, "_domainkey." INITIAL);
		T_EQ(exists, 1);
		free(txt);
		free(want);
	}
	T_STREQ(name, "selector2-fabrikam-example._domainkey." INITIAL);
	dkim_mdomain_clear(&d);
	/* the apex */
	txt = dns_txt(km, "_domainkey." INITIAL, zone, sizeof(zone), &exists);
	T_TRUE(txt == NULL);
	T_STREQ(zone, "_domainkey." INITIAL);
	T_EQ(exists, 1);
	/* another tenant's zone (no domains yet) */
	for (int i = 0; i < 500; i++) {
		txt = dns_txt(km, "_domainkey.other.signet.example", zone,
		    sizeof(zone), &exists);
		if (zone[0] != '\0')
			break;
		sleep_ms(10);
	}
	T_STREQ(zone, "_domainkey.other.signet.example");
	T_EQ(exists, 1);
	/* unknown names in the zone: NXDOMAIN */
	txt = dns_txt(km, "selector1-nope-example._domainkey." INITIAL, zone,
	    sizeof(zone), &exists);
	T_TRUE(txt == NULL);
	T_STREQ(zone, "_domainkey." INITIAL);
	T_EQ(exists, 0);
	txt = dns_txt(km, "x.selector1-fabrikam-example._domainkey." INITIAL,
	    zone, sizeof(zone), &exists);
	T_TRUE(txt == NULL);
	T_STREQ(zone, "_domainkey." INITIAL);
	T_EQ(exists, 0);
	/* outside every zone: refused */
	txt = dns_txt(km, INITIAL, zone, sizeof(zone), &exists);
	T_TRUE(txt == NULL);
	T_STREQ(zone, "");
	txt = dns_txt(km, "selector1._domainkey.fabrikam.example", zone,
	    sizeof(zone), &exists);
	T_TRUE(txt == NULL);
	T_STREQ(zone, "");
	txt = dns_txt(km, "example", zone, sizeof(zone), &exists);
	T_STREQ(zone, "");

	/* a change bumps the serial and shows at once */
	relay_keymgr_dns_lookup(km, "_domainkey." INITIAL, &a);
	serial = a.serial;
	T_TRUE(serial != 0);
	provision(ks, "new.example", "default", INITIAL, 0, 0, 0);
	wait_domains(km, 3);
	relay_keymgr_dns_lookup(km, "selector1-new-example._domainkey." INITIAL,
	    &a);
	T_EQ(a.exists, 1);
	T_TRUE(a.txt != NULL && strncmp(a.txt, "v=DKIM1; k=ed25519; p=", 22) == 0);
	T_TRUE(a.serial > serial);
	free(a.txt);
	/* a removed domain goes away */
	{
		char err[256];

		T_OK(relay_keystore_del_domain(ks, "new.example", err,
		    sizeof(err)));
	}
	wait_domains(km, 2);
	txt = dns_txt(km, "selector1-new-example._domainkey." INITIAL, zone,
	    sizeof(zone), &exists);
	T_TRUE(txt == NULL);
	T_EQ(exists, 0);

	relay_keymgr_stop(km);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	teardown();
}

/* ---- the key cache ------------------------------------------------------- */

TEST(relay_keymgr_cache_bound)
{
	struct relay_keymgr_stats st;
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	char dom[64];
	uint64_t misses;
	int i, round;

	setup();
	load_conf(&cfg, "initial_domain =\n");
	ks = open_store();
	km = start_km(&cfg);
	add_tenant(ks, "default", INITIAL, "", "");
	for (i = 0; i < 40; i++) {
		snprintf(dom, sizeof(dom), "d%02d.example", i);
		provision(ks, dom, "default", INITIAL, 1, T0, 0);
	}
	wait_domains(km, 40);
	relay_keymgr_stats(km, &st);
	T_EQ(st.cache_capacity, 16);
	for (round = 0; round < 3; round++)
		for (i = 0; i < 40; i++) {
			snprintf(dom, sizeof(dom), "d%02d.example", i);
			expect(km, dom, NULL, NULL, dom, "selector1");
			relay_keymgr_stats(km, &st);
			if (st.cache_keys > st.cache_capacity)
				T_FAIL("%zu keys cached, capacity %zu",
				    st.cache_keys, st.cache_capacity);
		}
	relay_keymgr_stats(km, &st);
	T_EQ(st.cache_keys, st.cache_capacity);
	T_TRUE(st.cache_misses >= 40);
	/* a hot key stays cached */
	misses = st.cache_misses;
	for (i = 0; i < 100; i++)
		expect(km, "d07.example", NULL, NULL, "d07.example",
		    "selector1");
	relay_keymgr_stats(km, &st);
	T_TRUE(st.cache_misses <= misses + 1);
	relay_keymgr_stop(km);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	teardown();
}

/*
 * After a start, the rotation thread fills the cache with every domain's
 * signing key before any message asks for one: the first messages after a
 * restart find their keys cached (no misses).
 */
TEST(relay_keymgr_warm_up)
{
	struct relay_keymgr_stats st;
	uint64_t misses, hits;
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	char dom[64];
	int i;

	setup();
	load_conf(&cfg, "initial_domain =\ndkim_key_cache_size = 64\n");
	ks = open_store();
	add_tenant(ks, "default", INITIAL, "", "");
	for (i = 0; i < 30; i++) {
		snprintf(dom, sizeof(dom), "w%02d.example", i);
		provision(ks, dom, "default", INITIAL, 1, T0, 0);
	}
	km = start_km(&cfg);
	wait_domains(km, 30);
	for (i = 0; i < 100; i++) {
		relay_keymgr_stats(km, &st);
		if (st.cache_keys >= 30)
			break;
		usleep(50 * 1000);
	}
	T_EQ(st.cache_keys, 30);
	misses = st.cache_misses;
	hits = st.cache_hits;
	for (i = 0; i < 30; i++) {
		snprintf(dom, sizeof(dom), "w%02d.example", i);
		expect(km, dom, NULL, NULL, dom, "selector1");
	}
	relay_keymgr_stats(km, &st);
	T_EQ(st.cache_misses, misses);
	T_EQ(st.cache_hits, hits + 30);
	relay_keymgr_stop(km);
	relay_keystore_close(ks);
	relay_config_free(&cfg);
	teardown();
}

/* A key store that can't be opened stops the start with a clear error. */
TEST(relay_keymgr_bad_store)
{
	struct relay_config cfg;
	struct relay_keymgr *km;
	char path[128], err[512];

	setup();
	load_conf(&cfg, NULL);
	snprintf(path, sizeof(path), "%s/file", km_dir);
	km_write(path, "not a directory\n");
	free(cfg.keystore);
	if (asprintf(&cfg.keystore, "%s/file/keys", km_dir) < 0)
		T_FAIL("asprintf");
	err[0] = '\0';
	T_TRUE(relay_keymgr_start(&cfg, &km, err, sizeof(err)) < 0);
	T_TRUE(km == NULL);
	T_TRUE(strstr(err, "keystore ") == err);
	T_TRUE(relay_keymgr_current() == NULL);
	relay_config_free(&cfg);
	teardown();
}

/* ---- the store going away (a real redis-server) -------------------------- */

static void
redis_stop(pid_t pid, int port)
{
	char cmd[128];

	/* keep the data for the next start */
	snprintf(cmd, sizeof(cmd), "redis-cli -p %d SAVE >/dev/null", port);
	if (system(cmd) != 0)
		T_FAIL("%s failed", cmd);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

static void
wait_up(struct relay_keymgr *km, int up)
{
	struct relay_keymgr_stats st;
	int i;

	for (i = 0; i < 1000; i++) {
		relay_keymgr_stats(km, &st);
		if (st.keystore_up == up)
			return;
		sleep_ms(10);
	}
	T_FAIL("keystore_up stays %d", st.keystore_up);
}

TEST(relay_keymgr_store_away)
{
	struct relay_config cfg;
	struct relay_keystore *ks;
	struct relay_keymgr *km;
	struct hist h;
	char extra[512], path[128], url[64], err[256];
	int port = test_free_port();
	pid_t rp;

	if (system("command -v redis-server >/dev/null") != 0)
		T_FAIL("redis-server is a test dependency (scripts/deps.sh)");
	setup();
	snprintf(path, sizeof(path), "%s/secret", km_dir);
	km_write(path, "00112233445566778899aabbccddeeff"
	    "00112233445566778899aabbccddeeff\n");
	chmod(path, 0600);
	snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
	snprintf(extra, sizeof(extra), "keystore = %s\n"
	    "keystore_secret_file = %s\ndkim_publish_lead = 1h\n", url, path);
	load_conf(&cfg, extra);
	rp = test_redis_start(port, km_dir, NULL);
	km = start_km(&cfg);
	if (relay_keystore_open(url, path, "test", &ks, err, sizeof(err)) != 0)
		T_FAIL("open %s: %s", url, err);
	provision(ks, "away.example", "default", INITIAL, 1, T0, 0);
	wait_domains(km, 2);
	expect(km, "away.example", NULL, NULL, "away.example", "selector1");

	/* Redis goes away: the key held still signs, no transition */
	redis_stop(rp, port);
	wait_up(km, 0);
	set_clock(T0 + 86400 + 2 * 3600);       /* a switch is due */
	sleep_ms(2500);
	expect(km, "away.example", NULL, NULL, "away.example", "selector1");
	{
		char *m = relay_metrics_render(NULL);

		T_EQ(metric(m, "signet_keystore_up"), 0);
		T_EQ(metric(m, "signet_dkim_transitions_total{step=\"switch\"}"),
		    0);
		free(m);
	}

	/* back: the due switch happens, once */
	rp = test_redis_start(port, km_dir, NULL);
	wait_up(km, 1);
	wait_event(ks, "away.example", "switch selector1->selector2 gen 1");
	wait_identity(km, "away.example", "away.example", "selector2");
	history(ks, "away.example", &h);
	T_EQ(has_event(&h, "switch"), 1);
	relay_keymgr_stop(km);
	relay_keystore_close(ks);
	redis_stop(rp, port);
	relay_config_free(&cfg);
	teardown();
}
