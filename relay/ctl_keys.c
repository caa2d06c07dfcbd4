/*
 * ctl_keys.c - signetctl's managed key commands (issue 5):
 *
 *   tenant add NAME INITIAL_DOMAIN [--user USER]... [--network NET]...
 *	[--key-size N]
 *   tenant list [--json]
 *   domain add DOMAIN [--tenant NAME] [--key-size N]
 *   domain remove DOMAIN
 *   domain list [--tenant NAME] [--json]
 *   dkim enable DOMAIN | dkim disable DOMAIN
 *   dkim rotate DOMAIN [--now] [--key-size N]
 *   dkim show [DOMAIN] [--json]
 *   dns zone [--tenant NAME]
 *
 * Every command reads the key store named by the configuration (-c), and
 * every change is a compare-and-set write of one record with a history
 * event, retried on a fresh copy when another writer (a daemon's rotation
 * thread, another signetctl) got there first; running daemons follow
 * through relay_keystore_watch.  The time is relay_clock_now's
 * (SIGNET_CLOCK_FILE), the rotation policy the dkim_* settings
 * (relay_keymgr_policy).  Private keys are generated here and written
 * to the store, never printed.  `dkim rotate --now` with dkim_dns_check
 * looks the idle key up in DNS itself (as the daemon's gate check would)
 * before asking the gate.
 *
 * Exit status: 0 done, 1 failed (reason on stderr), 2 bad usage.  Dates
 * are ISO 8601 UTC in the human output, unix seconds in --json (0 for
 * "never").
 */
#include <sys/stat.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dkim/dkim.h"
#include "relay/ctl_int.h"
#include "relay/keys.h"
#include "relay/relay.h"

#define CTLK_RETRIES 5               /* compare-and-set attempts */
#define CTLK_DNS_TIMEOUT 4000        /* ms per DNS lookup */
#define CTLK_CNAME_TTL 3600          /* TTL in the printed CNAME records */

const char *ctl_config;

/* ctl_err - print "signetctl: ..." on stderr. */
void
ctl_err(const char *fmt, ...)
{
	va_list ap;

	fputs("signetctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* What every command works with. */
struct ctlk {
	struct relay_config cfg;
	int have_cfg;
	struct relay_keystore *ks;
	struct dkim_rotation_policy pol;
	int64_t now;
};

/* ---- small helpers ------------------------------------------------------ */

/* ctlk_where - the configuration's name for messages. */
static const char *
ctlk_where(void)
{
	return ctl_config != NULL ? ctl_config : "(default)";
}

/* ctlk_iso - t as "2025-01-31T12:00:00Z", or never for 0. */
static const char *
ctlk_iso(int64_t t, char *buf, size_t len, const char *never)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0)
		snprintf(buf, len, "%s", never);
	else if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%" PRId64, t);
	return buf;
}

/* ctlk_clean - s for printing: control and 8-bit bytes as '?'. */
static const char *
ctlk_clean(const char *s, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < outlen; i++)
		out[i] = (unsigned char)s[i] < 0x20 ||
		    (unsigned char)s[i] >= 0x7f ? '?' : s[i];
	out[i] = '\0';
	return out;
}

/* ctlk_js - s as a JSON string (everything outside printable ASCII
 * escaped, so the output is valid whatever the store holds). */
static void
ctlk_js(const char *s)
{
	const unsigned char *p;

	if (s == NULL) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* ctlk_flush - flush stdout: rc, or CTL_EXIT_FAIL on a write error. */
static int
ctlk_flush(int rc)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ctl_err("stdout: %s", strerror(errno));
		return CTL_EXIT_FAIL;
	}
	return rc;
}

/* ctlk_opt - is argv[*i] the option name (taking a value)?  Then *val is
 * the value ("--name=V" or "--name V") and *i moves past it.  1 yes, 0
 * no, -1 value missing (reported). */
static int
ctlk_opt(const char *cmd, int argc, char **argv, int *i, const char *name,
    const char **val)
{
	size_t len = strlen(name);

	if (strncmp(argv[*i], name, len) != 0)
		return 0;
	if (argv[*i][len] == '=') {
		*val = argv[*i] + len + 1;
		return 1;
	}
	if (argv[*i][len] != '\0')
		return 0;
	if (*i + 1 >= argc) {
		ctl_err("%s: option %s needs an argument", cmd, name);
		return -1;
	}
	*val = argv[++*i];
	return 1;
}

/*
 * ctlk_positional - s is no option cmd knows: the command's one
 * positional argument (into *arg, the first time) or an error, reported.
 * 0 or -1.
 */
static int
ctlk_positional(const char *cmd, const char *s, const char **arg)
{
	if (s[0] == '-') {
		ctl_err("%s: unknown option %s", cmd, s);
		return -1;
	}
	if (*arg != NULL) {
		ctl_err("%s: unexpected argument %s", cmd, s);
		return -1;
	}
	*arg = s;
	return 0;
}

/* ctlk_bits - a --key-size value: 0 and *bits, or -1 (reported). */
static int
ctlk_bits(const char *cmd, const char *s, int *bits)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 ||
	    v < DKIM_KEY_BITS_MIN || v > DKIM_KEY_BITS_MAX) {
		ctl_err("%s: --key-size %s: RSA key size must be %d to %d bits",
		    cmd, s, DKIM_KEY_BITS_MIN, DKIM_KEY_BITS_MAX);
		return -1;
	}
	*bits = (int)v;
	return 0;
}

/* ctlk_domain_arg - normalize a DOMAIN argument: 0, or -1 (reported). */
static int
ctlk_domain_arg(const char *cmd, const char *s, char *out, size_t outlen)
{
	char c[256];

	if (s[0] == '-' || dkim_domain_normalize(s, out, outlen) != 0) {
		ctl_err("%s: \"%s\" is not a domain (IDNs in A-labels: "
		    "xn--...)", cmd, ctlk_clean(s, c, sizeof(c)));
		return -1;
	}
	/* "selectorN._domainkey." + the domain must stay a DNS name */
	if (strlen(out) > 253 - 21) {
		ctl_err("%s: %s is too long to hold selectorN._domainkey "
		    "records", cmd, out);
		return -1;
	}
	return 0;
}

/*
 * ctlk_tenant_ok - a tenant name as the key store takes it:
 * [a-z0-9][a-z0-9._-]*, < 64 (an upper-case name would pass here and be
 * refused by the store: exit 1 for what is a usage error).
 */
static int
ctlk_tenant_ok(const char *s)
{
	size_t i, len = strlen(s);

	if (len == 0 || len >= DKIM_TENANT_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= '0' && s[i] <= '9') &&
		    (i == 0 || (s[i] != '.' && s[i] != '_' && s[i] != '-')))
			return 0;
	return 1;
}

/* ctlk_load_cfg - the configuration: 0, or CTL_EXIT_USAGE (reported). */
static int
ctlk_load_cfg(struct relay_config *cfg)
{
	int rc;

	if (ctl_config != NULL)
		rc = relay_config_load(ctl_config, cfg, NULL, NULL);
	else
		rc = relay_config_default(cfg);
	if (rc != 0) {
		ctl_err("%s: configuration has errors", ctlk_where());
		relay_config_free(cfg);
		return CTL_EXIT_USAGE;
	}
	return 0;
}

/* ctlk_open - configuration, policy, clock and key store: 0 or the exit
 * status (reported). */
static int
ctlk_open(struct ctlk *c)
{
	char err[256];
	const char *node = getenv("SIGNET_NODE");
	int rc;

	memset(c, 0, sizeof(*c));
	if ((rc = ctlk_load_cfg(&c->cfg)) != 0)
		return rc;
	c->have_cfg = 1;
	relay_keymgr_policy(&c->cfg, &c->pol);
	c->now = relay_clock_now();
	err[0] = '\0';
	if ((rc = relay_keystore_open(c->cfg.keystore,
	    c->cfg.keystore_secret_file, node != NULL && *node != '\0' ?
	    node : NULL, &c->ks, err, sizeof(err))) != 0) {
		ctl_err("key store %s: %s", c->cfg.keystore, err[0] != '\0' ?
		    err : strerror(-rc));
		c->ks = NULL;
		return CTL_EXIT_FAIL;
	}
	return 0;
}

/* ctlk_close - release what ctlk_open got (also after a partial open). */
static void
ctlk_close(struct ctlk *c)
{
	if (c->ks != NULL)
		relay_keystore_close(c->ks);
	if (c->have_cfg)
		relay_config_free(&c->cfg);
	memset(c, 0, sizeof(*c));
}

/* ctlk_store_err - report a store error for what: CTL_EXIT_FAIL. */
static int
ctlk_store_err(const char *what, int rc, const char *err)
{
	ctl_err("%s: key store: %s", what, err != NULL && err[0] != '\0' ?
	    err : strerror(rc < 0 ? -rc : rc));
	return CTL_EXIT_FAIL;
}

/*
 * ctlk_get - read domain (with_keys: private keys too): 0, or the exit
 * status after reporting (an unknown domain is named as such).
 */
static int
ctlk_get(struct ctlk *c, const char *cmd, const char *domain, int with_keys,
    struct dkim_mdomain *d)
{
	char err[256] = "";
	int rc;

	dkim_mdomain_init(d);
	rc = relay_keystore_get_domain(c->ks, domain, with_keys, d, err,
	    sizeof(err));
	if (rc == 0)
		return 0;
	dkim_mdomain_clear(d);
	if (rc == -ENOENT) {
		ctl_err("%s: %s is not a managed domain (see signetctl domain "
		    "list)", cmd, domain);
		return CTL_EXIT_FAIL;
	}
	return ctlk_store_err(domain, rc, err);
}

/* ctlk_list - every name from a list function, sorted: 0 or exit status. */
static int
ctlk_list(struct ctlk *c, int tenants, struct relay_names *l)
{
	char err[256] = "";
	int rc;

	memset(l, 0, sizeof(*l));
	if (tenants)
		rc = relay_keystore_list_tenants(c->ks, relay_names_add, l, err,
		    sizeof(err));
	else
		rc = relay_keystore_list_domains(c->ks, relay_names_add, l, err,
		    sizeof(err));
	if (rc != 0) {
		relay_names_free(l);
		return ctlk_store_err(tenants ? "tenants" : "domains", rc,
		    rc == -ENOMEM ? "out of memory" : err);
	}
	relay_names_sort(l);
	return 0;
}

/*
 * ctlk_load_domains - every domain record (no private keys), sorted by
 * name, of tenant (NULL: all): a malloc'd array in *out.  0 or the exit
 * status (reported).
 */
static int
ctlk_load_domains(struct ctlk *c, const char *tenant,
    struct dkim_mdomain **out, size_t *nout)
{
	struct relay_names l;
	struct dkim_mdomain *v = NULL;
	char err[256];
	size_t i, n = 0;
	int rc;

	*out = NULL;
	*nout = 0;
	if ((rc = ctlk_list(c, 0, &l)) != 0)
		return rc;
	if (l.n > 0 && (v = calloc(l.n, sizeof(*v))) == NULL) {
		relay_names_free(&l);
		ctl_err("out of memory");
		return CTL_EXIT_FAIL;
	}
	for (i = 0; i < l.n; i++) {
		err[0] = '\0';
		dkim_mdomain_init(&v[n]);
		rc = relay_keystore_get_domain(c->ks, l.v[i], 0, &v[n], err,
		    sizeof(err));
		if (rc == -ENOENT) {            /* removed meanwhile */
			dkim_mdomain_clear(&v[n]);
			continue;
		}
		if (rc != 0) {
			dkim_mdomain_clear(&v[n]);
			rc = ctlk_store_err(l.v[i], rc, err);
			goto fail;
		}
		if (tenant != NULL && strcmp(v[n].tenant, tenant) != 0) {
			dkim_mdomain_clear(&v[n]);
			continue;
		}
		n++;
	}
	relay_names_free(&l);
	*out = v;
	*nout = n;
	return 0;
fail:
	while (n > 0)
		dkim_mdomain_clear(&v[--n]);
	free(v);
	relay_names_free(&l);
	return rc;
}

/* ctlk_free_domains - free what ctlk_load_domains returned. */
static void
ctlk_free_domains(struct dkim_mdomain *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		dkim_mdomain_clear(&v[i]);
	free(v);
}

/* ctlk_print_records - the two CNAMEs the customer publishes for d, in
 * zone-file form (the lines of `dns records`).  0 or -1 (reported). */
static int
ctlk_print_records(const struct dkim_mdomain *d)
{
	char target[DKIM_DOMAIN_MAX + 8];
	int slot;

	for (slot = 1; slot <= 2; slot++) {
		if (dkim_mdomain_record_name(d, slot, target,
		    sizeof(target)) != 0) {
			ctl_err("%s: cannot name the key records", d->domain);
			return -1;
		}
		printf("selector%d._domainkey.%s. %d IN CNAME %s.\n", slot,
		    d->domain, CTLK_CNAME_TTL, target);
	}
	return 0;
}

/*
 * ctlk_put - compare-and-set write of d (read at version d->version) with
 * event: 0, -ESTALE (re-read and retry), or the exit status (reported).
 */
static int
ctlk_put(struct ctlk *c, struct dkim_mdomain *d, const char *event)
{
	char err[256] = "";
	int rc;

	rc = relay_keystore_put_domain(c->ks, d, d->version, event, err,
	    sizeof(err));
	if (rc == 0 || rc == -ESTALE)
		return rc;
	return ctlk_store_err(d->domain, rc, err);
}

/* ctlk_gen_key - a new RSA key of bits: 0, or CTL_EXIT_FAIL (reported). */
static int
ctlk_gen_key(int bits, struct dkim_key **out)
{
	int rc;

	if ((rc = dkim_key_generate(DKIM_ALG_RSA_SHA256, bits, out)) != 0) {
		ctl_err("generating a %d-bit RSA key: %s", bits,
		    dkim_strerror(rc));
		*out = NULL;
		return CTL_EXIT_FAIL;
	}
	return 0;
}

/*
 * ctlk_provision - a new managed domain of tenant (initial domain
 * initial) with two new keys of bits, written (it must not exist yet)
 * with event "provision".  0 or the exit status (reported).
 */
static int
ctlk_provision(struct ctlk *c, const char *domain, const char *tenant,
    const char *initial, int bits)
{
	struct dkim_key *k1 = NULL, *k2 = NULL;
	struct dkim_mdomain d;
	char err[256] = "";
	int rc;

	dkim_mdomain_init(&d);
	if ((rc = ctlk_gen_key(bits, &k1)) != 0 ||
	    (rc = ctlk_gen_key(bits, &k2)) != 0)
		goto done;
	if ((rc = dkim_mdomain_provision(&d, domain, tenant, initial, k1, k2,
	    c->now)) != 0) {
		ctl_err("%s: cannot provision: %s", domain, dkim_strerror(rc));
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	rc = relay_keystore_put_domain(c->ks, &d, 0, "provision", err,
	    sizeof(err));
	if (rc == -ESTALE) {
		ctl_err("%s: already provisioned (another signetctl was "
		    "quicker?)", domain);
		rc = CTL_EXIT_FAIL;
	} else if (rc != 0)
		rc = ctlk_store_err(domain, rc, err);
done:
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
	return rc;
}

/*
 * ctlk_get_tenant - read tenant name: 0, 1 when it does not exist, or the
 * exit status (reported).
 */
static int
ctlk_get_tenant(struct ctlk *c, const char *name, struct relay_tenant *t)
{
	char err[256] = "";
	int rc;

	memset(t, 0, sizeof(*t));
	rc = relay_keystore_get_tenant(c->ks, name, t, err, sizeof(err));
	if (rc == 0)
		return 0;
	relay_tenant_clear(t);
	memset(t, 0, sizeof(*t));
	if (rc == -ENOENT)
		return 1;
	return ctlk_store_err(name, rc, err);
}

/*
 * ctlk_create_tenant - write a new tenant and provision its initial
 * domain.  users and networks are blank-separated ("" for none).  0 or
 * the exit status (reported).
 */
static int
ctlk_create_tenant(struct ctlk *c, const char *name, const char *initial,
    const char *users, const char *networks, int bits)
{
	struct relay_tenant t;
	struct dkim_mdomain d;
	struct relay_names l;
	char err[256] = "";
	size_t i;
	int rc;

	/* The initial domain must be free: no other tenant's, no domain. */
	if ((rc = ctlk_list(c, 1, &l)) != 0)
		return rc;
	for (i = 0; i < l.n; i++) {
		if ((rc = ctlk_get_tenant(c, l.v[i], &t)) == 1)
			continue;
		if (rc != 0) {
			relay_names_free(&l);
			return rc;
		}
		rc = strcmp(t.initial_domain, initial) == 0;
		relay_tenant_clear(&t);
		if (rc) {
			ctl_err("tenant add: %s is already the initial domain "
			    "of tenant %s", initial, l.v[i]);
			relay_names_free(&l);
			return CTL_EXIT_FAIL;
		}
	}
	relay_names_free(&l);
	dkim_mdomain_init(&d);
	rc = relay_keystore_get_domain(c->ks, initial, 0, &d, err,
	    sizeof(err));
	if (rc == 0) {
		ctl_err("tenant add: %s is already a managed domain of tenant "
		    "%s", initial, d.tenant);
		dkim_mdomain_clear(&d);
		return CTL_EXIT_FAIL;
	}
	dkim_mdomain_clear(&d);
	if (rc != -ENOENT)
		return ctlk_store_err(initial, rc, err);

	memset(&t, 0, sizeof(t));
	snprintf(t.name, sizeof(t.name), "%s", name);
	snprintf(t.initial_domain, sizeof(t.initial_domain), "%s", initial);
	t.users = strdup(users);
	t.networks = strdup(networks);
	if (t.users == NULL || t.networks == NULL) {
		relay_tenant_clear(&t);
		ctl_err("out of memory");
		return CTL_EXIT_FAIL;
	}
	rc = relay_keystore_put_tenant(c->ks, &t, 0, err, sizeof(err));
	relay_tenant_clear(&t);
	if (rc == -ESTALE) {
		ctl_err("tenant add: tenant %s already exists", name);
		return CTL_EXIT_FAIL;
	}
	if (rc != 0)
		return ctlk_store_err(name, rc, err);
	return ctlk_provision(c, initial, name, initial, bits);
}

/* ---- tenant add / list -------------------------------------------------- */

/* ctlk_words_add - append word to a blank-separated list; -1 on OOM. */
static int
ctlk_words_add(char **list, const char *word)
{
	size_t old = *list != NULL ? strlen(*list) : 0;
	char *n;

	if ((n = realloc(*list, old + strlen(word) + 2)) == NULL)
		return -1;
	if (old == 0)
		strcpy(n, word);
	else {
		n[old] = ' ';
		strcpy(n + old + 1, word);
	}
	*list = n;
	return 0;
}

/* ctl_tenant_add - tenant add: a new tenant, its initial domain provisioned. */
int
ctl_tenant_add(int argc, char **argv)
{
	static const char cmd[] = "tenant add";
	struct smtp_netlist *nl;
	struct relay_tenant t;
	struct ctlk c;
	const char *val, *pos[2];
	char *users = NULL, *nets = NULL, initial[DKIM_DOMAIN_MAX], err[256];
	char cl[256];
	int i, r, npos = 0, bits = 0, rc = CTL_EXIT_USAGE;
	size_t k;

	memset(&c, 0, sizeof(c));
	for (i = 1; i < argc; i++) {
		if ((r = ctlk_opt(cmd, argc, argv, &i, "--user", &val)) != 0) {
			if (r < 0)
				goto done;
			/* the daemon splits users at blanks and commas */
			for (k = 0; val[k] != '\0'; k++)
				if (isspace((unsigned char)val[k]) ||
				    (unsigned char)val[k] < 0x20 ||
				    val[k] == ',')
					break;
			if (val[0] == '\0' || val[k] != '\0') {
				ctl_err("%s: --user \"%s\": not a user name",
				    cmd, ctlk_clean(val, cl, sizeof(cl)));
				goto done;
			}
			if (ctlk_words_add(&users, val) != 0)
				goto oom;
		} else if ((r = ctlk_opt(cmd, argc, argv, &i, "--network",
		    &val)) != 0) {
			if (r < 0)
				goto done;
			if (strpbrk(val, " \t,") != NULL ||
			    smtp_netlist_parse(val, &nl, err, sizeof(err)) != 0) {
				ctl_err("%s: --network \"%s\": want one "
				    "ADDRESS[/PREFIX]", cmd,
				    ctlk_clean(val, cl, sizeof(cl)));
				goto done;
			}
			smtp_netlist_free(nl);
			if (ctlk_words_add(&nets, val) != 0)
				goto oom;
		} else if ((r = ctlk_opt(cmd, argc, argv, &i, "--key-size",
		    &val)) != 0) {
			if (r < 0 || ctlk_bits(cmd, val, &bits) != 0)
				goto done;
		} else if (argv[i][0] == '-') {
			ctl_err("%s: unknown option %s", cmd, argv[i]);
			goto done;
		} else if (npos < 2)
			pos[npos++] = argv[i];
		else {
			ctl_err("%s: unexpected argument %s", cmd, argv[i]);
			goto done;
		}
	}
	if (npos != 2) {
		ctl_err("%s: usage: signetctl tenant add NAME INITIAL_DOMAIN "
		    "[--user USER]... [--network NET]... [--key-size N]", cmd);
		goto done;
	}
	if (!ctlk_tenant_ok(pos[0])) {
		ctl_err("%s: \"%s\" is not a tenant name (lower-case letters, "
		    "digits, '.', '_', '-'; at most %d)", cmd,
		    ctlk_clean(pos[0], cl, sizeof(cl)), DKIM_TENANT_MAX - 1);
		goto done;
	}
	if (ctlk_domain_arg(cmd, pos[1], initial, sizeof(initial)) != 0)
		goto done;
	if ((rc = ctlk_open(&c)) != 0)
		goto done;
	if (bits == 0)
		bits = c.pol.key_bits;
	if ((r = ctlk_get_tenant(&c, pos[0], &t)) == 0) {
		ctl_err("%s: tenant %s already exists (initial domain %s)",
		    cmd, pos[0], t.initial_domain);
		relay_tenant_clear(&t);
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	if (r != 1) {
		rc = r;
		goto done;
	}
	if ((rc = ctlk_create_tenant(&c, pos[0], initial, users ? users : "",
	    nets ? nets : "", bits)) != 0)
		goto done;
	printf("tenant %s added: initial domain %s\n", pos[0], initial);
	for (i = 1; i <= 2; i++) {
		char sel[DKIM_SELECTOR_BUFSIZE];

		if (dkim_selector_name(i, initial, sel, sizeof(sel)) == 0)
			printf("  key record %s._domainkey.%s TXT (signetctl "
			    "dns zone)\n", sel, initial);
	}
	rc = ctlk_flush(0);
	goto done;
oom:
	ctl_err("out of memory");
	rc = CTL_EXIT_FAIL;
done:
	free(users);
	free(nets);
	ctlk_close(&c);
	return rc;
}

/* ctlk_json_words - a blank-separated list as a JSON array. */
static void
ctlk_json_words(const char *s)
{
	const char *p = s != NULL ? s : "", *e;
	char buf[512];
	int first = 1;
	size_t len;

	putchar('[');
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		for (e = p; *e != '\0' && *e != ' ' && *e != '\t'; e++)
			;
		len = (size_t)(e - p) < sizeof(buf) - 1 ? (size_t)(e - p) :
		    sizeof(buf) - 1;
		memcpy(buf, p, len);
		buf[len] = '\0';
		if (!first)
			putchar(',');
		ctlk_js(buf);
		first = 0;
		p = e;
	}
	putchar(']');
}

/* ctl_tenant_list - tenant list: a table, or a JSON array with --json. */
int
ctl_tenant_list(int argc, char **argv)
{
	static const char cmd[] = "tenant list";
	struct relay_tenant *tv = NULL;
	struct dkim_mdomain *dv = NULL;
	struct relay_names l = { NULL, 0, 0 };
	struct ctlk c;
	size_t i, k, n = 0, nd = 0, *count = NULL;
	int json = 0, r, rc = CTL_EXIT_USAGE, wn = 4, wi = 14, wu = 5;
	char cl[512];

	memset(&c, 0, sizeof(c));
	for (i = 1; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else {
			ctl_err("%s: unexpected argument %s", cmd, argv[i]);
			return CTL_EXIT_USAGE;
		}
	}
	if ((rc = ctlk_open(&c)) != 0 || (rc = ctlk_list(&c, 1, &l)) != 0 ||
	    (rc = ctlk_load_domains(&c, NULL, &dv, &nd)) != 0)
		goto done;
	if ((tv = calloc(l.n + 1, sizeof(*tv))) == NULL ||
	    (count = calloc(l.n + 1, sizeof(*count))) == NULL) {
		ctl_err("out of memory");
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	for (i = 0; i < l.n; i++) {
		if ((r = ctlk_get_tenant(&c, l.v[i], &tv[n])) == 1)
			continue;
		if (r != 0) {
			rc = r;
			goto done;
		}
		for (k = 0; k < nd; k++)
			if (strcmp(dv[k].tenant, tv[n].name) == 0)
				count[n]++;
		n++;
	}
	if (json) {
		putchar('[');
		for (i = 0; i < n; i++) {
			printf("%s\n  {\"name\": ", i ? "," : "");
			ctlk_js(tv[i].name);
			printf(", \"initial_domain\": ");
			ctlk_js(tv[i].initial_domain);
			printf(", \"domains\": %zu, \"users\": ", count[i]);
			ctlk_json_words(tv[i].users);
			printf(", \"networks\": ");
			ctlk_json_words(tv[i].networks);
			printf("}");
		}
		printf("%s]\n", n ? "\n" : "");
		rc = ctlk_flush(0);
		goto done;
	}
	for (i = 0; i < n; i++) {
		if ((int)strlen(tv[i].name) > wn)
			wn = (int)strlen(tv[i].name);
		if ((int)strlen(tv[i].initial_domain) > wi)
			wi = (int)strlen(tv[i].initial_domain);
		if (tv[i].users != NULL && (int)strlen(tv[i].users) > wu)
			wu = (int)strlen(tv[i].users);
	}
	if (n == 0) {
		printf("no tenants\n");
		rc = ctlk_flush(0);
		goto done;
	}
	printf("%-*s  %-*s  %7s  %-*s  %s\n", wn, "NAME", wi, "INITIAL DOMAIN",
	    "DOMAINS", wu, "USERS", "NETWORKS");
	for (i = 0; i < n; i++) {
		printf("%-*s  %-*s  %7zu  ", wn, tv[i].name, wi,
		    tv[i].initial_domain, count[i]);
		printf("%-*s  ", wu, tv[i].users != NULL &&
		    tv[i].users[0] != '\0' ? ctlk_clean(tv[i].users, cl,
		    sizeof(cl)) : "-");
		printf("%s\n", tv[i].networks != NULL &&
		    tv[i].networks[0] != '\0' ? ctlk_clean(tv[i].networks, cl,
		    sizeof(cl)) : "-");
	}
	rc = ctlk_flush(0);
done:
	for (i = 0; tv != NULL && i < n; i++)
		relay_tenant_clear(&tv[i]);
	free(tv);
	free(count);
	ctlk_free_domains(dv, nd);
	relay_names_free(&l);
	ctlk_close(&c);
	return rc;
}

/* ---- domain add / remove / list ----------------------------------------- */

/* ctl_domain_add - domain add: provision DOMAIN, print the CNAMEs. */
int
ctl_domain_add(int argc, char **argv)
{
	static const char cmd[] = "domain add";
	struct relay_tenant t;
	struct dkim_mdomain d;
	struct ctlk c;
	const char *val, *tenant = "default", *arg = NULL;
	char dom[DKIM_DOMAIN_MAX], initial[DKIM_DOMAIN_MAX], cl[256];
	char err[256] = "";
	int i, r, bits = 0, rc = CTL_EXIT_USAGE;

	memset(&c, 0, sizeof(c));
	for (i = 1; i < argc; i++) {
		if ((r = ctlk_opt(cmd, argc, argv, &i, "--tenant", &val)) != 0) {
			if (r < 0)
				return CTL_EXIT_USAGE;
			tenant = val;
		} else if ((r = ctlk_opt(cmd, argc, argv, &i, "--key-size",
		    &val)) != 0) {
			if (r < 0 || ctlk_bits(cmd, val, &bits) != 0)
				return CTL_EXIT_USAGE;
		} else if (ctlk_positional(cmd, argv[i], &arg) != 0)
			return CTL_EXIT_USAGE;
	}
	if (arg == NULL) {
		ctl_err("%s: usage: signetctl domain add DOMAIN [--tenant NAME] "
		    "[--key-size N]", cmd);
		return CTL_EXIT_USAGE;
	}
	if (ctlk_domain_arg(cmd, arg, dom, sizeof(dom)) != 0)
		return CTL_EXIT_USAGE;
	if (!ctlk_tenant_ok(tenant)) {
		ctl_err("%s: \"%s\" is not a tenant name", cmd,
		    ctlk_clean(tenant, cl, sizeof(cl)));
		return CTL_EXIT_USAGE;
	}
	if ((rc = ctlk_open(&c)) != 0)
		goto done;
	if (bits == 0)
		bits = c.pol.key_bits;
	if ((r = ctlk_get_tenant(&c, tenant, &t)) == 1 &&
	    strcmp(tenant, "default") == 0) {
		/* the single-tenant setup: "default" is initial_domain's */
		if (c.cfg.initial_domain == NULL ||
		    dkim_domain_normalize(c.cfg.initial_domain, initial,
		    sizeof(initial)) != 0) {
			ctl_err("%s: there is no tenant \"default\" and "
			    "initial_domain is not set in %s: set it, or add "
			    "a tenant and give --tenant", cmd, ctlk_where());
			rc = CTL_EXIT_FAIL;
			goto done;
		}
		if ((rc = ctlk_create_tenant(&c, "default", initial, "", "",
		    bits)) != 0)
			goto done;
		if (strcmp(dom, initial) == 0) {
			/* provisioned with the tenant just now */
			dkim_mdomain_init(&d);
			if ((rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
				goto done;
			r = ctlk_print_records(&d);
			dkim_mdomain_clear(&d);
			rc = ctlk_flush(r != 0 ? CTL_EXIT_FAIL : 0);
			goto done;
		}
		r = ctlk_get_tenant(&c, tenant, &t);
	}
	if (r == 1) {
		ctl_err("%s: no tenant \"%s\" (see signetctl tenant list)", cmd,
		    tenant);
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	if (r != 0) {
		rc = r;
		goto done;
	}
	snprintf(initial, sizeof(initial), "%s", t.initial_domain);
	relay_tenant_clear(&t);
	dkim_mdomain_init(&d);
	r = relay_keystore_get_domain(c.ks, dom, 0, &d, err, sizeof(err));
	if (r == 0) {
		ctl_err("%s: %s is already provisioned for tenant %s", cmd, dom,
		    d.tenant);
		dkim_mdomain_clear(&d);
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	dkim_mdomain_clear(&d);
	if (r != -ENOENT) {
		rc = ctlk_store_err(dom, r, err);
		goto done;
	}
	if ((rc = ctlk_provision(&c, dom, tenant, initial, bits)) != 0)
		goto done;
	if ((rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
		goto done;
	r = ctlk_print_records(&d);
	dkim_mdomain_clear(&d);
	rc = ctlk_flush(r != 0 ? CTL_EXIT_FAIL : 0);
done:
	ctlk_close(&c);
	return rc;
}

/* ctlk_one_domain - the single DOMAIN argument of cmd (no options),
 * normalized into dom: 0 or CTL_EXIT_USAGE (reported). */
static int
ctlk_one_domain(const char *cmd, int argc, char **argv, char *dom,
    size_t domlen)
{
	if (argc != 2 || argv[1][0] == '-') {
		if (argc >= 2 && argv[1][0] == '-')
			ctl_err("%s: unknown option %s", cmd, argv[1]);
		else
			ctl_err("%s: usage: signetctl %s DOMAIN", cmd, cmd);
		return CTL_EXIT_USAGE;
	}
	if (ctlk_domain_arg(cmd, argv[1], dom, domlen) != 0)
		return CTL_EXIT_USAGE;
	return 0;
}

/* ctl_domain_remove - domain remove: drop DOMAIN and its keys. */
int
ctl_domain_remove(int argc, char **argv)
{
	static const char cmd[] = "domain remove";
	struct relay_tenant t;
	struct dkim_mdomain d;
	struct ctlk c;
	char dom[DKIM_DOMAIN_MAX], err[256] = "";
	int r, rc;

	memset(&c, 0, sizeof(c));
	if ((rc = ctlk_one_domain(cmd, argc, argv, dom, sizeof(dom))) != 0)
		return rc;
	if ((rc = ctlk_open(&c)) != 0 ||
	    (rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
		goto done;
	/* A tenant's initial domain signs its unprovisioned mail. */
	r = ctlk_get_tenant(&c, d.tenant, &t);
	if (r == 0 && strcmp(t.initial_domain, dom) == 0) {
		ctl_err("%s: %s is the initial domain of tenant %s: its key "
		    "signs the tenant's unprovisioned mail; it can't be "
		    "removed", cmd, dom, t.name);
		relay_tenant_clear(&t);
		dkim_mdomain_clear(&d);
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	if (r == 0)
		relay_tenant_clear(&t);
	dkim_mdomain_clear(&d);
	r = relay_keystore_del_domain(c.ks, dom, err, sizeof(err));
	if (r == -ENOENT) {
		ctl_err("%s: %s is not a managed domain", cmd, dom);
		rc = CTL_EXIT_FAIL;
		goto done;
	}
	if (r != 0) {
		rc = ctlk_store_err(dom, r, err);
		goto done;
	}
	printf("%s: removed; its key records are withdrawn\n", dom);
	rc = ctlk_flush(0);
done:
	ctlk_close(&c);
	return rc;
}

/* ctl_domain_list - domain list: a table, or a JSON array with --json. */
int
ctl_domain_list(int argc, char **argv)
{
	static const char cmd[] = "domain list";
	struct dkim_mdomain *dv = NULL;
	struct relay_tenant t;
	struct ctlk c;
	const char *val, *tenant = NULL;
	size_t i, nd = 0;
	int k, r, json = 0, rc, wd = 6, wt = 6;

	memset(&c, 0, sizeof(c));
	for (k = 1; k < argc; k++) {
		if ((r = ctlk_opt(cmd, argc, argv, &k, "--tenant", &val)) != 0) {
			if (r < 0)
				return CTL_EXIT_USAGE;
			tenant = val;
		} else if (strcmp(argv[k], "--json") == 0)
			json = 1;
		else {
			ctl_err("%s: unexpected argument %s", cmd, argv[k]);
			return CTL_EXIT_USAGE;
		}
	}
	if ((rc = ctlk_open(&c)) != 0)
		goto done;
	if (tenant != NULL) {
		if ((r = ctlk_get_tenant(&c, tenant, &t)) == 1) {
			ctl_err("%s: no tenant \"%s\"", cmd, tenant);
			rc = CTL_EXIT_FAIL;
			goto done;
		}
		if (r != 0) {
			rc = r;
			goto done;
		}
		relay_tenant_clear(&t);
	}
	if ((rc = ctlk_load_domains(&c, tenant, &dv, &nd)) != 0)
		goto done;
	if (json) {
		putchar('[');
		for (i = 0; i < nd; i++) {
			printf("%s\n  {\"domain\": ", i ? "," : "");
			ctlk_js(dv[i].domain);
			printf(", \"tenant\": ");
			ctlk_js(dv[i].tenant);
			printf(", \"enabled\": %s, \"active\": %d, "
			    "\"selector\": \"selector%d\", \"phase\": ",
			    dv[i].enabled ? "true" : "false", dv[i].active,
			    dv[i].active);
			ctlk_js(dkim_phase_name(dv[i].phase));
			printf("}");
		}
		printf("%s]\n", nd ? "\n" : "");
		rc = ctlk_flush(0);
		goto done;
	}
	if (nd == 0) {
		printf("no managed domains\n");
		rc = ctlk_flush(0);
		goto done;
	}
	for (i = 0; i < nd; i++) {
		if ((int)strlen(dv[i].domain) > wd)
			wd = (int)strlen(dv[i].domain);
		if ((int)strlen(dv[i].tenant) > wt)
			wt = (int)strlen(dv[i].tenant);
	}
	printf("%-*s  %-*s  %-7s  %-9s  %s\n", wd, "DOMAIN", wt, "TENANT",
	    "ENABLED", "SELECTOR", "PHASE");
	for (i = 0; i < nd; i++)
		printf("%-*s  %-*s  %-7s  selector%d  %s\n", wd, dv[i].domain,
		    wt, dv[i].tenant, dv[i].enabled ? "yes" : "no",
		    dv[i].active, dkim_phase_name(dv[i].phase));
	rc = ctlk_flush(0);
done:
	ctlk_free_domains(dv, nd);
	ctlk_close(&c);
	return rc;
}

/* ---- dkim enable / disable ---------------------------------------------- */

/* ctlk_name_eq - DNS names equal, case and one trailing dot ignored? */
static int
ctlk_name_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la == lb && strncasecmp(a, b, la) == 0;
}

/*
 * ctlk_cname_check - does host lead to want through DNS: its CNAME, or
 * the CNAME chain a TXT lookup follows?  1 yes; 0 no, with the problem in
 * why.
 */
static int
ctlk_cname_check(struct ctlk *c, const char *host, const char *want,
    char *why, size_t whylen)
{
	struct relay_dns_answer a, t;
	int ok = 0;

	relay_dns_lookup(&c->cfg.dns_resolvers, host, "CNAME",
	    CTLK_DNS_TIMEOUT, &a);
	if (a.status == 0 && ctlk_name_eq(a.cname, want))
		ok = 1;
	else if (a.status != -EAGAIN) {
		relay_dns_lookup(&c->cfg.dns_resolvers, host, "TXT",
		    CTLK_DNS_TIMEOUT, &t);
		if (t.cname[0] != '\0' && ctlk_name_eq(t.cname, want))
			ok = 1;
		relay_dns_answer_clear(&t);
	}
	if (ok)
		;
	else if (a.status == 0)
		snprintf(why, whylen, "CNAME points to %s., not to %s.",
		    a.cname, want);
	else if (a.status == -ENOENT && strncmp(a.detail, "no CNAME", 8) == 0)
		snprintf(why, whylen, "%s", a.detail);      /* NODATA */
	else if (a.status == -ENOENT)
		snprintf(why, whylen, "no CNAME record: %s", a.detail);
	else
		snprintf(why, whylen, "DNS lookup failed: %s", a.detail);
	relay_dns_answer_clear(&a);
	return ok;
}

/* ctl_dkim_enable - dkim enable: check both CNAMEs, then sign as d=DOMAIN. */
int
ctl_dkim_enable(int argc, char **argv)
{
	static const char cmd[] = "dkim enable";
	struct dkim_mdomain d;
	struct ctlk c;
	char dom[DKIM_DOMAIN_MAX], host[DKIM_DOMAIN_MAX + 32];
	char want[DKIM_DOMAIN_MAX + 8], why[768], dd[DKIM_DOMAIN_MAX];
	char ss[DKIM_SELECTOR_BUFSIZE];
	int slot, bad = 0, tries, rc;

	memset(&c, 0, sizeof(c));
	if ((rc = ctlk_one_domain(cmd, argc, argv, dom, sizeof(dom))) != 0)
		return rc;
	if ((rc = ctlk_open(&c)) != 0 ||
	    (rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
		goto done;
	if (d.enabled) {
		dkim_mdomain_identity(&d, d.active, dd, ss);
		printf("%s: DKIM is already enabled (d=%s, s=%s)\n", dom, dd,
		    ss);
		dkim_mdomain_clear(&d);
		rc = ctlk_flush(0);
		goto done;
	}
	for (slot = 1; slot <= 2; slot++) {
		snprintf(host, sizeof(host), "selector%d._domainkey.%s", slot,
		    dom);
		if (dkim_mdomain_record_name(&d, slot, want, sizeof(want)) != 0) {
			ctl_err("%s: cannot name the key records", dom);
			dkim_mdomain_clear(&d);
			rc = CTL_EXIT_FAIL;
			goto done;
		}
		if (!ctlk_cname_check(&c, host, want, why, sizeof(why))) {
			ctl_err("%s: %s: %s", cmd, host, why);
			bad++;
		}
	}
	if (bad) {
		ctl_err("%s: %s: nothing changed; publish the two records "
		    "on stdout, then run this again", cmd, dom);
		ctlk_print_records(&d);
		dkim_mdomain_clear(&d);
		rc = ctlk_flush(CTL_EXIT_FAIL);
		goto done;
	}
	/* Both CNAMEs are in place: flip the flag, on a fresh copy if need be. */
	for (tries = 0; ; tries++) {
		d.enabled = 1;
		if ((rc = ctlk_put(&c, &d, "enable")) != -ESTALE)
			break;
		dkim_mdomain_clear(&d);
		if (tries + 1 >= CTLK_RETRIES) {
			ctl_err("%s: %s: the record keeps changing; try again",
			    cmd, dom);
			rc = CTL_EXIT_FAIL;
			goto done;
		}
		if ((rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
			goto done;
	}
	if (rc == 0) {
		dkim_mdomain_identity(&d, d.active, dd, ss);
		printf("%s: DKIM enabled (d=%s, s=%s)\n", dom, dd, ss);
		rc = ctlk_flush(0);
	}
	dkim_mdomain_clear(&d);
done:
	ctlk_close(&c);
	return rc;
}

/* ctl_dkim_disable - dkim disable: back to default signing. */
int
ctl_dkim_disable(int argc, char **argv)
{
	static const char cmd[] = "dkim disable";
	struct dkim_mdomain d;
	struct ctlk c;
	char dom[DKIM_DOMAIN_MAX], dd[DKIM_DOMAIN_MAX];
	char ss[DKIM_SELECTOR_BUFSIZE];
	int tries, rc;

	memset(&c, 0, sizeof(c));
	if ((rc = ctlk_one_domain(cmd, argc, argv, dom, sizeof(dom))) != 0)
		return rc;
	if ((rc = ctlk_open(&c)) != 0)
		goto done;
	for (tries = 0; ; tries++) {
		if ((rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
			goto done;
		if (!d.enabled) {
			dkim_mdomain_identity(&d, d.active, dd, ss);
			printf("%s: DKIM is not enabled (default signing: "
			    "d=%s, s=%s)\n", dom, dd, ss);
			dkim_mdomain_clear(&d);
			rc = ctlk_flush(0);
			goto done;
		}
		d.enabled = 0;
		if ((rc = ctlk_put(&c, &d, "disable")) != -ESTALE)
			break;
		dkim_mdomain_clear(&d);
		if (tries + 1 >= CTLK_RETRIES) {
			ctl_err("%s: %s: the record keeps changing; try again",
			    cmd, dom);
			rc = CTL_EXIT_FAIL;
			goto done;
		}
	}
	if (rc == 0) {
		dkim_mdomain_identity(&d, d.active, dd, ss);
		printf("%s: DKIM disabled (default signing: d=%s, s=%s)\n", dom,
		    dd, ss);
		rc = ctlk_flush(0);
	}
	dkim_mdomain_clear(&d);
done:
	ctlk_close(&c);
	return rc;
}

/* ---- dkim rotate -------------------------------------------------------- */

/*
 * ctlk_check_idle - for --now with dkim_dns_check: look the idle slot's
 * key up where verifiers will (the daemon's check, done here so that an
 * operator need not wait for a tick), and record what was found.
 */
static void
ctlk_check_idle(struct ctlk *c, struct dkim_mdomain *d)
{
	struct relay_dns_answer a;
	struct dkim_slot *s;
	char qname[DKIM_DOMAIN_MAX + 32];
	int idle = d->active == 1 ? 2 : 1;

	s = &d->slot[idle - 1];
	if (s->pubkey == NULL ||
	    dkim_mdomain_query_name(d, idle, qname, sizeof(qname)) != 0)
		return;
	relay_dns_lookup(&c->cfg.dns_resolvers, qname, "TXT",
	    CTLK_DNS_TIMEOUT, &a);
	d->dns_checked = c->now;
	if (a.status == 0 && a.txt != NULL &&
	    dkim_txt_matches(a.txt, strlen(a.txt), s->pubkey)) {
		s->seen = c->now;
		s->seen_via = d->enabled;
		d->dns_result = 1;
		snprintf(d->dns_detail, sizeof(d->dns_detail), "selector%d: "
		    "key found at %.120s", idle, qname);
	} else if (a.status == 0) {
		d->dns_result = 0;
		snprintf(d->dns_detail, sizeof(d->dns_detail), "selector%d: "
		    "%.110s has another key", idle, qname);
	} else {
		d->dns_result = a.status == -ENOENT ? 0 : -1;
		snprintf(d->dns_detail, sizeof(d->dns_detail), "selector%d: "
		    "%.80s: %.60s", idle, qname, a.detail);
	}
	relay_dns_answer_clear(&a);
}

/* ctl_dkim_rotate - dkim rotate: request a rotation, or --now. */
int
ctl_dkim_rotate(int argc, char **argv)
{
	static const char cmd[] = "dkim rotate";
	struct dkim_key *key = NULL;
	struct dkim_mdomain d;
	struct ctlk c;
	const char *val, *arg = NULL;
	char dom[DKIM_DOMAIN_MAX], why[512], event[128], when[64];
	int i, r, now = 0, bits = 0, tries, rc, from, to;
	enum dkim_step step;
	int64_t next;

	memset(&c, 0, sizeof(c));
	dkim_mdomain_init(&d);
	for (i = 1; i < argc; i++) {
		if ((r = ctlk_opt(cmd, argc, argv, &i, "--key-size", &val)) != 0) {
			if (r < 0 || ctlk_bits(cmd, val, &bits) != 0)
				return CTL_EXIT_USAGE;
		} else if (strcmp(argv[i], "--now") == 0)
			now = 1;
		else if (ctlk_positional(cmd, argv[i], &arg) != 0)
			return CTL_EXIT_USAGE;
	}
	if (arg == NULL) {
		ctl_err("%s: usage: signetctl dkim rotate DOMAIN [--now] "
		    "[--key-size N]", cmd);
		return CTL_EXIT_USAGE;
	}
	if (ctlk_domain_arg(cmd, arg, dom, sizeof(dom)) != 0)
		return CTL_EXIT_USAGE;
	if ((rc = ctlk_open(&c)) != 0)
		goto done;

	for (tries = 0; tries < CTLK_RETRIES; tries++) {
		dkim_mdomain_clear(&d);
		if ((rc = ctlk_get(&c, cmd, dom, now, &d)) != 0)
			goto done;
		from = d.active;
		to = from == 1 ? 2 : 1;
		if (!now) {
			/* the daemon switches when the gate allows */
			d.rotate_requested = 1;
			if (bits != 0)
				d.next_bits = bits;
			if ((rc = ctlk_put(&c, &d, "rotate-requested")) ==
			    -ESTALE)
				continue;
			if (rc != 0)
				goto done;
			step = dkim_rotation_plan(&d, &c.pol, c.now, &next, why,
			    sizeof(why));
			printf("%s: rotation requested: selector%d -> "
			    "selector%d (generation %" PRIu32 ")\n", dom,
			    from, to, d.slot[to - 1].generation);
			if (d.next_bits)
				printf("  the key replacing selector%d's will "
				    "have %d bits\n", from, d.next_bits);
			if (step == DKIM_STEP_SWITCH)
				printf("  the signet daemon switches at its next "
				    "check: %s\n", why);
			else if (step == DKIM_STEP_HOLD)
				printf("  the switch waits for the gate: %s%s%s\n",
				    why, next > 0 ? "; earliest " : "", next > 0 ?
				    ctlk_iso(next, when, sizeof(when), "") : "");
			else if (step == DKIM_STEP_NONE)
				printf("  not yet: %s%s%s\n", why, next > 0 ?
				    "; next step at " : "", next > 0 ?
				    ctlk_iso(next, when, sizeof(when), "") : "");
			else
				printf("  first (%s): %s\n",
				    dkim_step_name(step), why);
			rc = ctlk_flush(0);
			goto done;
		}
		if (key == NULL && (rc = ctlk_gen_key(bits ? bits :
		    d.next_bits ? d.next_bits : c.pol.key_bits, &key)) != 0)
			goto done;
		if (c.pol.dns_check)
			ctlk_check_idle(&c, &d);
		if (dkim_rotate_now(&d, &c.pol, c.now, key, why,
		    sizeof(why)) != 0) {
			ctl_err("%s: %s: refused: selector%d can't sign yet: %s",
			    cmd, dom, to, why);
			rc = CTL_EXIT_FAIL;
			goto done;
		}
		snprintf(event, sizeof(event), "rotate-now selector%d->"
		    "selector%d gen %" PRIu32, from, to,
		    d.slot[to - 1].generation);
		if ((rc = ctlk_put(&c, &d, event)) == -ESTALE)
			continue;
		if (rc != 0)
			goto done;
		printf("%s: rotated now: %s\n", dom, why);
		rc = ctlk_flush(0);
		goto done;
	}
	ctl_err("%s: %s: the record keeps changing; try again", cmd, dom);
	rc = CTL_EXIT_FAIL;
done:
	dkim_mdomain_clear(&d);
	dkim_key_free(key);
	ctlk_close(&c);
	return rc;
}

/* ---- dkim show ---------------------------------------------------------- */

/* ctlk_show_json - one domain as a JSON object (hist: NULL to leave
 * history out). */
static void
ctlk_show_json(struct ctlk *c, const struct dkim_mdomain *d,
    const struct relay_names *hist)
{
	char why[512], dd[DKIM_DOMAIN_MAX], ss[DKIM_SELECTOR_BUFSIZE];
	char host[DKIM_DOMAIN_MAX + 32], target[DKIM_DOMAIN_MAX + 8];
	const struct dkim_slot *s;
	enum dkim_step step;
	int64_t next;
	char *txt;
	size_t i;
	int n, sign;

	step = dkim_rotation_plan(d, &c->pol, c->now, &next, why, sizeof(why));
	sign = dkim_mdomain_signing_slot(d, &c->pol, c->now);
	printf("{\"domain\": ");
	ctlk_js(d->domain);
	printf(", \"tenant\": ");
	ctlk_js(d->tenant);
	printf(", \"initial_domain\": ");
	ctlk_js(d->initial_domain);
	printf(", \"enabled\": %s, \"active\": %d, \"signing\": %s",
	    d->enabled ? "true" : "false", d->active, sign ? "true" : "false");
	if (dkim_mdomain_identity(d, d->active, dd, ss) == 0) {
		printf(", \"d\": ");
		ctlk_js(dd);
		printf(", \"s\": ");
		ctlk_js(ss);
	}
	printf(", \"phase\": ");
	ctlk_js(dkim_phase_name(d->phase));
	printf(", \"phase_since\": %" PRId64 ", \"last_switch\": %" PRId64
	    ", \"next_transition\": %" PRId64 ", \"next_step\": ",
	    d->phase_since, d->last_switch, next);
	ctlk_js(dkim_step_name(step));
	printf(", \"plan\": ");
	ctlk_js(why);
	printf(", \"rotate_requested\": %s, \"next_bits\": %d",
	    d->rotate_requested ? "true" : "false", d->next_bits);
	printf(", \"held_since\": %" PRId64 ", \"held_why\": ", d->held_since);
	ctlk_js(d->held_why);
	printf(", \"dns_checked\": %" PRId64 ", \"dns_result\": %d, "
	    "\"dns_detail\": ", d->dns_checked, d->dns_result);
	ctlk_js(d->dns_detail);
	printf(", \"version\": %" PRIu64 ", \"selectors\": [", d->version);
	for (n = 1; n <= 2; n++) {
		s = &d->slot[n - 1];
		snprintf(host, sizeof(host), "selector%d._domainkey.%s", n,
		    d->domain);
		if (dkim_mdomain_record_name(d, n, target, sizeof(target)) != 0)
			target[0] = '\0';
		txt = dkim_mdomain_txt(d, n);
		printf("%s\n  {\"slot\": %d, \"selector\": \"selector%d\", "
		    "\"cname_host\": ", n > 1 ? "," : "", n, n);
		ctlk_js(host);
		printf(", \"cname_target\": ");
		ctlk_js(target);
		printf(", \"alg\": ");
		ctlk_js(s->alg == DKIM_ALG_ED25519_SHA256 ? "ed25519" : "rsa");
		printf(", \"bits\": %d, \"generation\": %" PRIu32 ", "
		    "\"created\": %" PRId64 ", \"published\": %" PRId64 ", "
		    "\"seen\": %" PRId64 ", \"seen_via\": %d, \"confirmed\": %"
		    PRId64 ", \"active\": %s, \"txt\": ", s->bits, s->generation,
		    s->created, s->published, s->seen, s->seen_via,
		    s->confirmed, d->active == n ? "true" : "false");
		ctlk_js(txt);
		printf("}");
		free(txt);
	}
	printf("]");
	if (hist != NULL) {
		printf(", \"history\": [");
		for (i = 0; i < hist->n; i++) {
			printf("%s\n  ", i ? "," : "");
			ctlk_js(hist->v[i]);
		}
		printf("]");
	}
	printf("}");
}

/* ctlk_show_text - one domain for people. */
static void
ctlk_show_text(struct ctlk *c, const struct dkim_mdomain *d,
    const struct relay_names *hist)
{
	char why[512], gate[512], dd[DKIM_DOMAIN_MAX], ss[DKIM_SELECTOR_BUFSIZE];
	char host[DKIM_DOMAIN_MAX + 32], target[DKIM_DOMAIN_MAX + 8];
	char t1[64], cl[1024];
	const struct dkim_slot *s;
	const char *sp;
	enum dkim_step step;
	long long ts;
	int64_t next;
	char *txt, *end;
	size_t i;
	int n, sign;

	step = dkim_rotation_plan(d, &c->pol, c->now, &next, why, sizeof(why));
	sign = dkim_mdomain_signing_slot(d, &c->pol, c->now);
	printf("%s\n", d->domain);
	printf("  tenant:            %s (initial domain %s)\n", d->tenant,
	    d->initial_domain);
	printf("  enabled:           %s\n", d->enabled ? "yes" : "no");
	if (dkim_mdomain_identity(d, d->active, dd, ss) != 0)
		printf("  signing as:        ?\n");
	else if (sign)
		printf("  signing as:        d=%s s=%s\n", dd, ss);
	else {
		dkim_gate(d, d->active, &c->pol, c->now, gate, sizeof(gate));
		printf("  signing as:        not yet (will be d=%s s=%s): %s\n",
		    dd, ss, gate);
	}
	printf("  phase:             %s since %s\n", dkim_phase_name(d->phase),
	    ctlk_iso(d->phase_since, t1, sizeof(t1), "-"));
	if (d->phase == DKIM_PHASE_PENDING)
		printf("  held since:        %s: %s\n", ctlk_iso(d->held_since,
		    t1, sizeof(t1), "-"), d->held_why);
	if (step != DKIM_STEP_NONE)
		printf("  next transition:   now: %s (%s)\n",
		    dkim_step_name(step), why);
	else
		printf("  next transition:   %s (%s)\n", ctlk_iso(next, t1,
		    sizeof(t1), "none scheduled"), why);
	printf("  rotate requested:  %s", d->rotate_requested ? "yes" : "no");
	if (d->next_bits)
		printf(" (next key %d bits)", d->next_bits);
	printf("\n");
	if (d->dns_checked == 0)
		printf("  last DNS check:    never\n");
	else
		printf("  last DNS check:    %s %s: %s\n", ctlk_iso(d->dns_checked,
		    t1, sizeof(t1), "-"), d->dns_result == 1 ? "ok" :
		    d->dns_result == 0 ? "missing or wrong" : "error",
		    ctlk_clean(d->dns_detail, cl, sizeof(cl)));
	for (n = 1; n <= 2; n++) {
		s = &d->slot[n - 1];
		snprintf(host, sizeof(host), "selector%d._domainkey.%s", n,
		    d->domain);
		if (dkim_mdomain_record_name(d, n, target, sizeof(target)) != 0)
			snprintf(target, sizeof(target), "?");
		printf("  selector%d (%s)\n", n, d->active == n ? "active" :
		    "idle");
		printf("    CNAME host:      %s\n", host);
		printf("    target:          %s\n", target);
		printf("    key:             %s %d bits, generation %" PRIu32
		    "\n", s->alg == DKIM_ALG_ED25519_SHA256 ? "ed25519" : "rsa",
		    s->bits, s->generation);
		printf("    created:         %s\n", ctlk_iso(s->created, t1,
		    sizeof(t1), "-"));
		printf("    published:       %s\n", ctlk_iso(s->published, t1,
		    sizeof(t1), "-"));
		printf("    seen in DNS:     %s", ctlk_iso(s->seen, t1,
		    sizeof(t1), "never"));
		if (s->seen != 0)
			printf(" (%s)", s->seen_via ? "through the CNAME" :
			    "at the key record");
		printf("\n");
		printf("    confirmed:       %s\n", ctlk_iso(s->confirmed, t1,
		    sizeof(t1), "never"));
		txt = dkim_mdomain_txt(d, n);
		printf("    TXT:             %s\n", txt != NULL ? txt : "?");
		free(txt);
	}
	if (hist == NULL)
		return;
	printf("  history:\n");
	for (i = 0; i < hist->n; i++) {
		/* "<unix time> <node> <event>": the time made readable */
		errno = 0;
		ts = strtoll(hist->v[i], &end, 10);
		sp = hist->v[i];
		if (errno == 0 && end != hist->v[i] && *end == ' ') {
			ctlk_iso(ts, t1, sizeof(t1), "-");
			sp = end + 1;
			printf("    %s %s\n", t1, ctlk_clean(sp, cl, sizeof(cl)));
		} else
			printf("    %s\n", ctlk_clean(sp, cl, sizeof(cl)));
	}
}

/* ctl_dkim_show - dkim show: one domain with its history, or every domain. */
int
ctl_dkim_show(int argc, char **argv)
{
	static const char cmd[] = "dkim show";
	struct dkim_mdomain *dv = NULL, d;
	struct relay_names hist = { NULL, 0, 0 };
	struct ctlk c;
	const char *arg = NULL;
	char dom[DKIM_DOMAIN_MAX], err[256] = "";
	size_t i, nd = 0;
	int k, json = 0, rc;

	memset(&c, 0, sizeof(c));
	for (k = 1; k < argc; k++) {
		if (strcmp(argv[k], "--json") == 0)
			json = 1;
		else if (ctlk_positional(cmd, argv[k], &arg) != 0)
			return CTL_EXIT_USAGE;
	}
	if (arg != NULL && ctlk_domain_arg(cmd, arg, dom, sizeof(dom)) != 0)
		return CTL_EXIT_USAGE;
	if ((rc = ctlk_open(&c)) != 0)
		goto done;
	if (arg != NULL) {
		if ((rc = ctlk_get(&c, cmd, dom, 0, &d)) != 0)
			goto done;
		rc = relay_keystore_history(c.ks, dom, relay_names_add, &hist,
		    err, sizeof(err));
		if (rc != 0 && rc != -ENOENT) {
			dkim_mdomain_clear(&d);
			rc = ctlk_store_err(dom, rc, err);
			goto done;
		}
		if (json) {
			ctlk_show_json(&c, &d, &hist);
			printf("\n");
		} else
			ctlk_show_text(&c, &d, &hist);
		dkim_mdomain_clear(&d);
		rc = ctlk_flush(0);
		goto done;
	}
	if ((rc = ctlk_load_domains(&c, NULL, &dv, &nd)) != 0)
		goto done;
	if (json) {
		printf("[");
		for (i = 0; i < nd; i++) {
			printf("%s\n", i ? "," : "");
			ctlk_show_json(&c, &dv[i], NULL);
		}
		printf("%s]\n", nd ? "\n" : "");
	} else if (nd == 0)
		printf("no managed domains\n");
	else
		for (i = 0; i < nd; i++) {
			if (i > 0)
				printf("\n");
			ctlk_show_text(&c, &dv[i], NULL);
		}
	rc = ctlk_flush(0);
done:
	relay_names_free(&hist);
	ctlk_free_domains(dv, nd);
	ctlk_close(&c);
	return rc;
}

/* ---- dns zone ----------------------------------------------------------- */

/* ctlk_zone_txt - txt as quoted strings of at most 255 bytes each. */
static void
ctlk_zone_txt(const char *txt)
{
	size_t len = strlen(txt), off, k, n;

	for (off = 0; off < len || off == 0; off += n) {
		n = len - off > 255 ? 255 : len - off;
		printf("%s\"", off ? " " : "");
		for (k = 0; k < n; k++) {
			unsigned char ch = (unsigned char)txt[off + k];

			if (ch == '"' || ch == '\\')
				printf("\\%c", ch);
			else if (ch < 0x20 || ch >= 0x7f)
				printf("\\%03u", ch);
			else
				putchar(ch);
		}
		putchar('"');
		if (len == 0)
			break;
	}
}

/* ctl_dns_zone - dns zone: every key record as zone-file text. */
int
ctl_dns_zone(int argc, char **argv)
{
	static const char cmd[] = "dns zone";
	struct dkim_mdomain *dv = NULL;
	struct relay_tenant t;
	struct relay_names l = { NULL, 0, 0 };
	struct ctlk c;
	const char *val, *tenant = NULL;
	char origin[DKIM_DOMAIN_MAX + 16], name[DKIM_DOMAIN_MAX + 8], *txt;
	size_t i, j, nd = 0, olen, nlen;
	int k, r, slot, rc;

	memset(&c, 0, sizeof(c));
	for (k = 1; k < argc; k++) {
		if ((r = ctlk_opt(cmd, argc, argv, &k, "--tenant", &val)) != 0) {
			if (r < 0)
				return CTL_EXIT_USAGE;
			tenant = val;
		} else {
			ctl_err("%s: unexpected argument %s", cmd, argv[k]);
			return CTL_EXIT_USAGE;
		}
	}
	if ((rc = ctlk_open(&c)) != 0)
		goto done;
	if (tenant != NULL) {
		relay_names_add(&l, tenant);
	} else if ((rc = ctlk_list(&c, 1, &l)) != 0)
		goto done;
	if ((rc = ctlk_load_domains(&c, NULL, &dv, &nd)) != 0)
		goto done;
	printf("; signet managed DKIM keys, %s\n", ctlk_iso(c.now, name,
	    sizeof(name), "-"));
	for (i = 0; i < l.n; i++) {
		if ((r = ctlk_get_tenant(&c, l.v[i], &t)) == 1) {
			if (tenant == NULL)
				continue;
			ctl_err("%s: no tenant \"%s\"", cmd, tenant);
			rc = CTL_EXIT_FAIL;
			goto done;
		}
		if (r != 0) {
			rc = r;
			goto done;
		}
		snprintf(origin, sizeof(origin), "_domainkey.%s",
		    t.initial_domain);
		relay_tenant_clear(&t);
		olen = strlen(origin);
		printf("$ORIGIN %s.\n", origin);
		for (j = 0; j < nd; j++) {
			if (strcmp(dv[j].tenant, l.v[i]) != 0)
				continue;
			for (slot = 1; slot <= 2; slot++) {
				if (dkim_mdomain_record_name(&dv[j], slot, name,
				    sizeof(name)) != 0 ||
				    (txt = dkim_mdomain_txt(&dv[j], slot)) ==
				    NULL) {
					ctl_err("%s: %s: cannot write its "
					    "records", cmd, dv[j].domain);
					rc = CTL_EXIT_FAIL;
					goto done;
				}
				nlen = strlen(name);
				/* relative to $ORIGIN when under it */
				if (nlen > olen + 1 && name[nlen - olen - 1] ==
				    '.' && strcmp(name + nlen - olen,
				    origin) == 0)
					printf("%.*s", (int)(nlen - olen - 1),
					    name);
				else
					printf("%s.", name);
				printf(" %u IN TXT ", c.cfg.dns_ttl);
				ctlk_zone_txt(txt);
				printf("\n");
				free(txt);
			}
		}
	}
	rc = ctlk_flush(0);
done:
	ctlk_free_domains(dv, nd);
	relay_names_free(&l);
	ctlk_close(&c);
	return rc;
}

/* ---- dns records' store lookup ------------------------------------------ */

/* ctl_keys_initial - see ctl_int.h. */
int
ctl_keys_initial(const struct relay_config *cfg, const char *domain,
    char *out, size_t outlen)
{
	struct relay_keystore *ks = NULL;
	struct relay_tenant t;
	struct dkim_mdomain d;
	struct stat st;
	const char *url = cfg->keystore, *dir, *node = getenv("SIGNET_NODE");
	char err[256] = "";
	int rc;

	if (url == NULL || *url == '\0')
		return 0;
	/* no store yet: don't create one just to look */
	if (strncmp(url, "redis://", 8) != 0) {
		dir = strncmp(url, "file:", 5) == 0 ? url + 5 : url;
		if (stat(dir, &st) != 0)
			return 0;
	}
	if ((rc = relay_keystore_open(url, cfg->keystore_secret_file,
	    node != NULL && *node != '\0' ? node : NULL, &ks, err,
	    sizeof(err))) != 0) {
		ctl_err("key store %s: %s; using initial_domain", url,
		    err[0] != '\0' ? err : strerror(-rc));
		return -1;
	}
	dkim_mdomain_init(&d);
	rc = relay_keystore_get_domain(ks, domain, 0, &d, err, sizeof(err));
	if (rc == -ENOENT) {
		relay_keystore_close(ks);
		return 0;
	}
	if (rc != 0) {
		ctl_err("key store %s: %s; using initial_domain", url,
		    err[0] != '\0' ? err : strerror(-rc));
		relay_keystore_close(ks);
		return -1;
	}
	/* the tenant's initial domain; the copy in the record otherwise */
	memset(&t, 0, sizeof(t));
	if (relay_keystore_get_tenant(ks, d.tenant, &t, err,
	    sizeof(err)) == 0 && t.initial_domain[0] != '\0')
		snprintf(out, outlen, "%s", t.initial_domain);
	else
		snprintf(out, outlen, "%s", d.initial_domain);
	relay_tenant_clear(&t);
	dkim_mdomain_clear(&d);
	relay_keystore_close(ks);
	return out[0] != '\0';
}
