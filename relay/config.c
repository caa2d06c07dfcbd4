/*
 * config.c - relay.conf: Signet's settings, read Postfix main.cf style.
 *
 * Every setting is one row of conf_table[] below: its name (the field of
 * struct relay_config it fills has the same name), its type, its default
 * written as it would be in relay.conf, its range, and an optional check
 * (after Redis' createIntConfig and Postfix's CONFIG_INT_TABLE).  Loading,
 * defaults, freeing and relay_config_dump all walk that table, so a new
 * setting is one row plus its field, and relay.conf documents it.
 *
 * File format (Postfix main.cf):
 *   name = value        one setting; blanks around '=' and at the end go
 *   # comment           a line whose first non-blank character is '#'
 *     more value        a line starting with a blank continues the one above
 * A '#' later in a line is part of the value.  Lists (mynetworks, ...)
 * take items separated by blanks or commas, and their lines add up, as do
 * those of listen and dkim_sign; any other setting given twice draws a
 * warning and the later line wins (as in Postfix).
 *
 * Numbers may carry units: sizes k/m/g (x1000) and kb/mb/gb (x1024, as in
 * redis.conf); times s/m/h/d/w (a bare number is seconds, as in Postfix);
 * spool_commit_window us/ms/s (a bare number is microseconds).
 *
 * Every problem is reported, "FILE:LINE: setting: reason", before the load
 * fails (OpenSMTPD's parse.y keeps going after yyerror the same way).  Then
 * what the settings refer to is loaded once, here: DKIM keys, address lists
 * and the AUTH database, so that `signet -t` catches a bad key file.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "relay/relay.h"

#define CONF_LINE_MAX 8192             /* bytes in one physical line */
#define CONF_LOGICAL_MAX (64 * 1024)   /* one setting with its continuations */
#define CONF_ERR_MAX 1024
#define CONF_GB (1024ULL * 1024 * 1024)

enum conf_type {
	CT_STRING,   /* char *, copied as written */
	CT_BOOL,     /* int, yes or no */
	CT_UINT,     /* unsigned, plain number */
	CT_SIZE,     /* uint64_t bytes: 10240000, 10m, 10mb */
	CT_TIME,     /* unsigned seconds: 300, 300s, 5m, 7d */
	CT_USEC,     /* unsigned microseconds: 1000us, 1ms, 1s */
	CT_LIST,     /* struct relay_strlist, repeatable */
	CT_CUSTOM,   /* parsed and printed by a struct conf_custom */
};

#define CF_EMPTY  0x01   /* an empty value is allowed */
#define CF_REPEAT 0x02   /* lines add up instead of replacing */
#define CF_AUTO   0x04   /* "auto" means the number of CPUs */
#define CF_COLON  0x08   /* list items may also be separated by ':' */
#define CF_RESTART 0x10  /* a reload can't apply it: the daemon must restart */

/* A setting with a syntax of its own (listen, dkim_sign, enumerations). */
struct conf_custom {
	/* parse - apply value given at line; 0, or -1 with the reason in err */
	int (*parse)(struct relay_config *cfg, const char *value, unsigned line,
	    char *err, size_t errlen);
	/* reset - back to empty, freeing what parse stored (NULL: no-op) */
	void (*reset)(struct relay_config *cfg);
	/* print - one or more "name = value" lines for relay_config_dump */
	void (*print)(const struct relay_config *cfg, const char *name,
	    FILE *fp);
};

/* A check on the text of a value before it is stored: 0, or -1 and err. */
typedef int (*conf_check_fn)(const char *value, char *err, size_t errlen);

struct conf_setting {
	const char *name;
	enum conf_type type;
	const char *dflt;        /* as written in relay.conf; NULL: computed */
	uint64_t min, max;       /* numbers: the range, in the stored unit */
	size_t off;              /* offsetof(struct relay_config, field) */
	conf_check_fn check;
	const struct conf_custom *custom;
	unsigned flags;
};

/* The state of one load: where we are and how it went. */
struct conf_ctx {
	const char *file;        /* NULL: the embedded default */
	relay_config_err_cb cb;
	void *arg;
	int errors;
};

static int conf_check_hostname(const char *, char *, size_t);
static int conf_check_netlist(const char *, char *, size_t);
static int conf_check_relayhost(const char *, char *, size_t);
static int conf_check_addr(const char *, char *, size_t);
static int conf_check_header(const char *, char *, size_t);
static int conf_check_path(const char *, char *, size_t);
static int conf_check_resolvers(const char *, char *, size_t);
static int conf_check_transport(const char *, char *, size_t);
static int conf_check_helo_name(const char *, char *, size_t);
static int conf_check_initial_domain(const char *, char *, size_t);
static const struct conf_custom conf_listen_ops, conf_bare_ops,
    conf_dkim_sign_ops, conf_canon_ops, conf_log_level_ops, conf_tls_level_ops,
    conf_unprov_ops;
static int conf_check_keystore(const char *, char *, size_t);
static int conf_check_tenant_lookup(const char *, char *, size_t);

/* One row per type; the setting's name is its field's name. */
#define OFF(f) offsetof(struct relay_config, f)
#define C_STR(f, d, fl, chk) \
	{ #f, CT_STRING, d, 0, 0, OFF(f), chk, NULL, fl }
#define C_BOOL(f, d) \
	{ #f, CT_BOOL, d, 0, 1, OFF(f), NULL, NULL, 0 }
#define C_UINT(f, d, lo, hi, fl) \
	{ #f, CT_UINT, d, lo, hi, OFF(f), NULL, NULL, fl }
#define C_SIZE(f, d, lo, hi) \
	{ #f, CT_SIZE, d, lo, hi, OFF(f), NULL, NULL, 0 }
#define C_TIME(f, d, lo, hi) \
	{ #f, CT_TIME, d, lo, hi, OFF(f), NULL, NULL, 0 }
#define C_USEC(f, d, lo, hi, fl) \
	{ #f, CT_USEC, d, lo, hi, OFF(f), NULL, NULL, fl }
#define C_LIST(f, d, fl, chk) \
	{ #f, CT_LIST, d, 0, 0, OFF(f), chk, NULL, (fl) | CF_REPEAT }
#define C_CUSTOM(n, d, fl, ops) \
	{ n, CT_CUSTOM, d, 0, 0, 0, NULL, ops, fl }

/*
 * The settings, in the order relay.conf and relay_config_dump list them.
 * Postfix's names and defaults where Postfix has the setting.
 */
static const struct conf_setting conf_table[] = {
	/* identity and relaying */
	C_STR(myhostname, NULL, 0, conf_check_hostname),
	C_LIST(mynetworks, "127.0.0.0/8 [::1]/128", CF_EMPTY,
	    conf_check_netlist),
	C_STR(relayhost, "", CF_EMPTY, conf_check_relayhost),
	/* listeners */
	C_CUSTOM("listen", "127.0.0.1:2525", CF_REPEAT | CF_RESTART,
	    &conf_listen_ops),
	C_STR(admin_listen, "127.0.0.1:9025", CF_EMPTY | CF_RESTART,
	    conf_check_addr),
	/* limits */
	C_SIZE(message_size_limit, "10240000", 0, 4 * CONF_GB),
	C_UINT(smtpd_recipient_limit, "1000", 1, 100000, 0),
	C_UINT(smtpd_client_connection_count_limit, "50", 0, 1000000, 0),
	C_UINT(max_connections, "10000", 1, 1000000, 0),
	C_TIME(smtpd_timeout, "300s", 1, 86400),
	C_TIME(smtpd_data_timeout, "300s", 1, 86400),
	C_TIME(smtpd_idle_timeout, "3600s", 1, 7 * 86400),
	C_UINT(smtpd_hard_error_limit, "20", 1, 1000, 0),
	C_UINT(smtpd_junk_command_limit, "100", 1, 100000, 0),
	C_CUSTOM("smtpd_forbid_bare_newline", "yes", 0, &conf_bare_ops),
	/* TLS, AUTH, PROXY */
	C_STR(smtpd_tls_cert_file, "./var/tls/cert.pem", CF_EMPTY,
	    conf_check_path),
	C_STR(smtpd_tls_key_file, "./var/tls/key.pem", CF_EMPTY,
	    conf_check_path),
	C_BOOL(smtpd_tls_self_signed, "yes"),
	C_STR(smtpd_auth_file, "", CF_EMPTY, conf_check_path),
	C_LIST(smtpd_proxy_trusted_networks, "", CF_EMPTY, conf_check_netlist),
	/* processes and spool */
	C_STR(spool_dir, "./var/spool", CF_RESTART, conf_check_path),
	C_UINT(workers, "auto", 1, 256, CF_AUTO | CF_RESTART),
	C_UINT(signing_threads, "auto", 1, 1024, CF_AUTO | CF_RESTART),
	C_USEC(spool_commit_window, "1ms", 0, 1000000, CF_RESTART),
	C_UINT(spool_commit_batch, "256", 1, 4096, CF_RESTART),
	/* DKIM */
	C_CUSTOM("dkim_sign", NULL, CF_REPEAT, &conf_dkim_sign_ops),
	C_CUSTOM("dkim_canonicalization", "relaxed/relaxed", 0,
	    &conf_canon_ops),
	C_LIST(dkim_signed_headers, dkim_default_headers, CF_COLON,
	    conf_check_header),
	C_STR(initial_domain, "", CF_EMPTY, conf_check_initial_domain),
	/* managed keys */
	C_STR(keystore, "./var/keys", CF_RESTART, conf_check_keystore),
	C_STR(keystore_secret_file, "", CF_EMPTY | CF_RESTART, conf_check_path),
	C_CUSTOM("dkim_unprovisioned", "sign-initial", 0, &conf_unprov_ops),
	C_TIME(dkim_publish_lead, "7d", 0, 365 * 86400),
	C_TIME(dkim_retire_delay, "7d", 0, 365 * 86400),
	C_TIME(dkim_rotation_interval, "365d", 60, 10 * 365 * 86400),
	C_UINT(dkim_key_size, "2048", 1024, 4096, 0),
	C_BOOL(dkim_dns_check, "yes"),
	C_TIME(dkim_check_interval, "60s", 1, 86400),
	C_UINT(dkim_key_cache_size, "100000", 16, 10000000, 0),
	C_LIST(tenant_lookup, "auth network", CF_EMPTY,
	    conf_check_tenant_lookup),
	C_STR(dns_listen, "", CF_EMPTY | CF_RESTART, conf_check_addr),
	C_LIST(dns_ns, "$myhostname", 0, NULL),
	C_STR(dns_hostmaster, "hostmaster.$myhostname", 0, NULL),
	C_TIME(dns_ttl, "3600s", 0, 7 * 86400),
	C_TIME(dns_negative_ttl, "300s", 0, 86400),
	/* delivery */
	C_LIST(dns_resolvers, "", CF_EMPTY, conf_check_resolvers),
	C_LIST(defer_transports, "", CF_EMPTY, conf_check_transport),
	C_CUSTOM("smtp_tls_security_level", "may", 0, &conf_tls_level_ops),
	C_STR(smtp_helo_name, "$myhostname", 0, conf_check_helo_name),
	C_TIME(minimal_backoff_time, "300s", 1, 30 * 86400),
	C_TIME(maximal_backoff_time, "4000s", 1, 30 * 86400),
	C_TIME(maximal_queue_lifetime, "5d", 0, 100 * 86400),
	C_TIME(bounce_queue_lifetime, "5d", 0, 100 * 86400),
	C_UINT(default_destination_concurrency_limit, "20", 1, 10000, 0),
	C_UINT(smtp_connection_limit, "100", 1, 100000, 0),
	C_TIME(smtp_connect_timeout, "30s", 1, 3600),
	C_TIME(smtp_helo_timeout, "300s", 1, 3600),
	C_TIME(smtp_data_done_timeout, "600s", 1, 3600),
	C_TIME(smtp_connection_cache_time_limit, "2s", 0, 3600),
	/* logging */
	C_CUSTOM("log_level", "info", 0, &conf_log_level_ops),
};

#define CONF_NSETTINGS (sizeof(conf_table) / sizeof(conf_table[0]))
_Static_assert(CONF_NSETTINGS <= RELAY_CONF_NSETTINGS,
    "raise RELAY_CONF_NSETTINGS in relay.h");

/* ---- reporting ----------------------------------------------------------- */

/* conf_report - one message through the callback (or stderr). */
static void
conf_report(struct conf_ctx *x, int prio, const char *msg)
{
	if (x->cb != NULL)
		x->cb(x->arg, prio, msg);
	else
		fprintf(stderr, "%s\n", msg);
}

/* conf_vmsg - "FILE:LINE: " (or "FILE: ") + message, then report it. */
static void __attribute__((format(printf, 4, 0)))
conf_vmsg(struct conf_ctx *x, int prio, unsigned line, const char *fmt,
    va_list ap)
{
	char msg[CONF_ERR_MAX];
	size_t n = 0;
	const char *file = x->file != NULL ? x->file : "(default)";

	if (line > 0)
		n = (size_t)snprintf(msg, sizeof(msg), "%s:%u: ", file, line);
	else
		n = (size_t)snprintf(msg, sizeof(msg), "%s: ", file);
	if (prio == LOG_WARNING && n < sizeof(msg))
		n += (size_t)snprintf(msg + n, sizeof(msg) - n, "warning: ");
	if (n < sizeof(msg))
		vsnprintf(msg + n, sizeof(msg) - n, fmt, ap);
	conf_report(x, prio, msg);
}

/* conf_error - report and count an error at line (0: no line). */
static void __attribute__((format(printf, 3, 4)))
conf_error(struct conf_ctx *x, unsigned line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_vmsg(x, LOG_ERR, line, fmt, ap);
	va_end(ap);
	x->errors++;
}

/* conf_warn - report a warning at line; the load still succeeds. */
static void __attribute__((format(printf, 3, 4)))
conf_warn(struct conf_ctx *x, unsigned line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_vmsg(x, LOG_WARNING, line, fmt, ap);
	va_end(ap);
}

/* conf_seterr - format a reason into err. */
static int __attribute__((format(printf, 3, 4)))
conf_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- small helpers ------------------------------------------------------- */

/* conf_field - the field a setting fills. */
static void *
conf_field(struct relay_config *cfg, const struct conf_setting *s)
{
	return (char *)cfg + s->off;
}

static const void *
conf_cfield(const struct relay_config *cfg, const struct conf_setting *s)
{
	return (const char *)cfg + s->off;
}

/* conf_find - the table row named name, or NULL. */
static const struct conf_setting *
conf_find(const char *name)
{
	size_t i;

	for (i = 0; i < CONF_NSETTINGS; i++)
		if (strcmp(conf_table[i].name, name) == 0)
			return &conf_table[i];
	return NULL;
}

/* conf_index - the row number of s. */
static size_t
conf_index(const struct conf_setting *s)
{
	return (size_t)(s - conf_table);
}

/* conf_is_blank - SP or TAB. */
static int
conf_is_blank(int ch)
{
	return ch == ' ' || ch == '\t';
}

/* conf_ncpu - the CPUs this process may run on (at least 1). */
static unsigned
conf_ncpu(void)
{
	unsigned n = uv_available_parallelism();

	return n > 0 ? n : 1;
}

/*
 * conf_words - split value at blanks (and at seps) into a malloc'd array of
 * malloc'd words; *n is the count.  Empty words are skipped.
 */
static char **
conf_words(const char *value, const char *seps, size_t *n)
{
	char **v = NULL;
	const char *p = value, *start;
	size_t cap = 0;

	*n = 0;
	for (;;) {
		while (*p != '\0' && (conf_is_blank((unsigned char)*p) ||
		    strchr(seps, *p) != NULL))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && !conf_is_blank((unsigned char)*p) &&
		    strchr(seps, *p) == NULL)
			p++;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			v = relay_xrealloc(v, cap, sizeof(*v));
		}
		v[(*n)++] = relay_xstrndup(start, (size_t)(p - start));
	}
	return v;
}

/* conf_words_free - free what conf_words returned. */
static void
conf_words_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* conf_list_free - empty a list. */
static void
conf_list_free(struct relay_strlist *l)
{
	conf_words_free(l->v, l->n);
	l->v = NULL;
	l->n = 0;
}

/* conf_list_join - the items joined by sep, malloc'd. */
static char *
conf_list_join(const struct relay_strlist *l, const char *sep)
{
	size_t i, len = 1, seplen = strlen(sep);
	char *s, *p;

	for (i = 0; i < l->n; i++)
		len += strlen(l->v[i]) + seplen;
	p = s = relay_xmalloc(len);
	for (i = 0; i < l->n; i++) {
		if (i > 0) {
			memcpy(p, sep, seplen);
			p += seplen;
		}
		memcpy(p, l->v[i], strlen(l->v[i]));
		p += strlen(l->v[i]);
	}
	*p = '\0';
	return s;
}

/* conf_is_hostname - a DNS name: LDH labels of 1..63, at most 253 bytes. */
static int
conf_is_hostname(const char *s, int underscore)
{
	size_t len = strlen(s), label = 0;
	const char *p;

	if (len == 0 || len > 253 || s[0] == '.' || s[len - 1] == '.')
		return 0;
	for (p = s; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-' &&
		    !(underscore && *p == '_'))
			return 0;
		if (*p == '-' && label == 0)
			return 0;
		if (++label > 63)
			return 0;
	}
	return p[-1] != '-';
}

int
relay_addr_parse(const char *s, struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	char host[INET6_ADDRSTRLEN + 1], *end;
	const char *colon, *h;
	size_t hlen;
	unsigned long port;
	int v6;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		if ((colon = strstr(s, "]:")) == NULL)
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(colon - h);
		colon++;
		v6 = 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return -EINVAL;
		h = s;
		hlen = (size_t)(colon - h);
		v6 = 0;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (!isdigit((unsigned char)colon[1]))
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || errno != 0 || port == 0 || port > 65535)
		return -EINVAL;
	if (v6) {
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -EINVAL;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
	} else {
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -EINVAL;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
	}
	return 0;
}

/* conf_addr_same - two parsed addresses are the same address and port. */
static int
conf_addr_same(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)a,
	    *b4 = (const struct sockaddr_in *)b;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a,
	    *b6 = (const struct sockaddr_in6 *)b;

	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
		    a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	return a6->sin6_port == b6->sin6_port &&
	    memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0;
}

/* ---- numbers with units -------------------------------------------------- */

struct conf_unit {
	const char *suffix;
	uint64_t mul;
};

static const struct conf_unit conf_size_units[] = {
	{ "", 1 }, { "k", 1000 }, { "kb", 1024 }, { "m", 1000000 },
	{ "mb", 1024 * 1024 }, { "g", 1000000000 }, { "gb", CONF_GB },
	{ NULL, 0 },
};
static const struct conf_unit conf_time_units[] = {
	{ "", 1 }, { "s", 1 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 },
	{ "w", 604800 }, { NULL, 0 },
};
static const struct conf_unit conf_usec_units[] = {
	{ "", 1 }, { "us", 1 }, { "ms", 1000 }, { "s", 1000000 }, { NULL, 0 },
};
static const struct conf_unit conf_no_units[] = { { "", 1 }, { NULL, 0 } };

/* conf_units - the suffixes a numeric type takes. */
static const struct conf_unit *
conf_units(enum conf_type t)
{
	switch (t) {
	case CT_SIZE:
		return conf_size_units;
	case CT_TIME:
		return conf_time_units;
	case CT_USEC:
		return conf_usec_units;
	default:
		return conf_no_units;
	}
}

/*
 * conf_fmt_number - v in the largest unit that divides it exactly, as in
 * relay.conf ("4gb", "5m", "1ms"); plain numbers stay plain.
 */
static void
conf_fmt_number(enum conf_type t, uint64_t v, char *buf, size_t len)
{
	static const struct conf_unit size_show[] = {
		{ "gb", CONF_GB }, { "mb", 1024 * 1024 }, { "kb", 1024 },
		{ "", 1 },
	}, time_show[] = {
		{ "w", 604800 }, { "d", 86400 }, { "h", 3600 }, { "m", 60 },
		{ "s", 1 },
	}, usec_show[] = {
		{ "s", 1000000 }, { "ms", 1000 }, { "us", 1 },
	};
	const struct conf_unit *u;
	size_t i, n;

	switch (t) {
	case CT_SIZE:
		u = size_show, n = sizeof(size_show) / sizeof(size_show[0]);
		break;
	case CT_TIME:
		u = time_show, n = sizeof(time_show) / sizeof(time_show[0]);
		break;
	case CT_USEC:
		u = usec_show, n = sizeof(usec_show) / sizeof(usec_show[0]);
		break;
	default:
		snprintf(buf, len, "%llu", (unsigned long long)v);
		return;
	}
	for (i = 0; i < n - 1; i++)
		if (v != 0 && v % u[i].mul == 0)
			break;
	snprintf(buf, len, "%llu%s", (unsigned long long)(v / u[i].mul),
	    u[i].suffix);
}

/* conf_type_what - how a bad number is explained. */
static const char *
conf_type_what(enum conf_type t)
{
	switch (t) {
	case CT_SIZE:
		return "a size (a number, optionally followed by k, kb, m, "
		    "mb, g or gb)";
	case CT_TIME:
		return "a time (a number, optionally followed by s, m, h, d "
		    "or w)";
	case CT_USEC:
		return "a time (a number, optionally followed by us, ms or s)";
	default:
		return "a number";
	}
}

/*
 * conf_number - parse a numeric value of setting s into *out (in the stored
 * unit) and check its range.  0, or -1 and the reason in err.
 */
static int
conf_number(const struct conf_setting *s, const char *v, uint64_t *out,
    char *err, size_t errlen)
{
	const char *auto_ok = s->flags & CF_AUTO ? " or auto" : "";
	const struct conf_unit *u;
	char lo[32], hi[32];
	const char *p = v;
	uint64_t n = 0;
	int overflow = 0;

	if ((s->flags & CF_AUTO) && strcasecmp(v, "auto") == 0) {
		n = conf_ncpu();
		*out = n < s->min ? s->min : n > s->max ? s->max : n;
		return 0;
	}
	if (!isdigit((unsigned char)*p))
		return conf_seterr(err, errlen, "\"%s\" is not %s%s", v,
		    conf_type_what(s->type), auto_ok);
	for (; isdigit((unsigned char)*p); p++) {
		if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			overflow = 1;
		else
			n = n * 10 + (uint64_t)(*p - '0');
	}
	for (u = conf_units(s->type); u->suffix != NULL; u++)
		if (strcasecmp(p, u->suffix) == 0)
			break;
	if (u->suffix == NULL)
		return conf_seterr(err, errlen, "\"%s\" is not %s%s", v,
		    conf_type_what(s->type), auto_ok);
	if (n > UINT64_MAX / u->mul)
		overflow = 1;
	else
		n *= u->mul;
	if (overflow || n < s->min || n > s->max) {
		conf_fmt_number(s->type, s->min, lo, sizeof(lo));
		conf_fmt_number(s->type, s->max, hi, sizeof(hi));
		return conf_seterr(err, errlen, "%s out of range [%s, %s]", v,
		    lo, hi);
	}
	*out = n;
	return 0;
}

/* ---- checks (on the text, before anything is stored) -------------------- */

static int
conf_check_hostname(const char *v, char *err, size_t errlen)
{
	if (!conf_is_hostname(v, 0))
		return conf_seterr(err, errlen, "\"%s\" is not a host name", v);
	return 0;
}

/*
 * conf_check_keystore - a directory (plain or "file:DIR") or
 * "redis://HOST[:PORT][/DB]".
 */
static int
conf_check_keystore(const char *v, char *err, size_t errlen)
{
	const char *p;
	char *end;
	unsigned long n;

	if (strncmp(v, "redis://", 8) != 0) {
		if (strncmp(v, "file:", 5) == 0)
			v += 5;
		if (*v == '\0') {
			snprintf(err, errlen, "empty key store directory");
			return -1;
		}
		return conf_check_path(v, err, errlen);
	}
	p = v + 8;
	if (*p == '\0' || *p == ':' || *p == '/') {
		snprintf(err, errlen, "\"%s\": no host after redis://", v);
		return -1;
	}
	p += strcspn(p, ":/");
	if (*p == ':') {
		errno = 0;
		n = strtoul(p + 1, &end, 10);
		if (errno != 0 || end == p + 1 || n == 0 || n > 65535 ||
		    (*end != '\0' && *end != '/')) {
			snprintf(err, errlen, "\"%s\": bad port", v);
			return -1;
		}
		p = end;
	}
	if (*p == '/' && p[1] != '\0') {
		errno = 0;
		n = strtoul(p + 1, &end, 10);
		if (errno != 0 || *end != '\0' || n > 1000000) {
			snprintf(err, errlen, "\"%s\": bad database number", v);
			return -1;
		}
	}
	return 0;
}

/* conf_check_tenant_lookup - items "auth" or "network". */
static int
conf_check_tenant_lookup(const char *v, char *err, size_t errlen)
{
	size_t n;

	while (*v != '\0') {
		v += strspn(v, " \t,");
		if ((n = strcspn(v, " \t,")) == 0)
			break;
		if (!((n == 4 && strncmp(v, "auth", 4) == 0) ||
		    (n == 7 && strncmp(v, "network", 7) == 0))) {
			snprintf(err, errlen, "\"%.*s\" is not auth or network",
			    (int)n, v);
			return -1;
		}
		v += n;
	}
	return 0;
}

/*
 * conf_check_initial_domain - empty, or a host name short enough that
 * every managed key record under it, "selectorN-enc._domainkey." (at most
 * 63 + 12 octets) + the name, stays within 253 octets.
 */
static int
conf_check_initial_domain(const char *v, char *err, size_t errlen)
{
	if (*v == '\0')
		return 0;
	if (!conf_is_hostname(v, 0))
		return conf_seterr(err, errlen, "\"%s\" is not a host name", v);
	if (strlen(v) > 253 - 63 - 12)
		return conf_seterr(err, errlen, "\"%s\" is too long for "
		    "key records under it (at most %d octets)", v,
		    253 - 63 - 12);
	return 0;
}

static int
conf_check_netlist(const char *v, char *err, size_t errlen)
{
	struct smtp_netlist *nl = NULL;
	char reason[256];

	if (smtp_netlist_parse(v, &nl, reason, sizeof(reason)) != 0)
		return conf_seterr(err, errlen, "%s", reason);
	smtp_netlist_free(nl);
	return 0;
}

/*
 * relay_relayhost_parse - host, host:port, [host] or [host]:port, as in
 * Postfix: brackets mean "this host, no MX lookup" (and allow an IPv6 or
 * IPv4 literal inside).
 */
int
relay_relayhost_parse(const char *v, char *host, size_t hostlen,
    unsigned *port, int *mx)
{
	char h[256], *end;
	const char *p = v, *hend;
	unsigned long n = 25;
	struct in6_addr a6;
	struct in_addr a4;
	int bracket = 0;

	if (*p == '[') {
		bracket = 1;
		if ((hend = strchr(++p, ']')) == NULL)
			return -EINVAL;
	} else if ((hend = strchr(p, ':')) == NULL)
		hend = p + strlen(p);
	if ((size_t)(hend - p) >= sizeof(h) || hend == p)
		return -EINVAL;
	memcpy(h, p, (size_t)(hend - p));
	h[hend - p] = '\0';
	if (!conf_is_hostname(h, 0) && !(bracket &&
	    (inet_pton(AF_INET6, h, &a6) == 1 ||
	    inet_pton(AF_INET, h, &a4) == 1)))
		return -EINVAL;
	p = hend + bracket;
	if (*p != '\0') {
		if (*p != ':' || !isdigit((unsigned char)p[1]))
			return -EINVAL;
		errno = 0;
		n = strtoul(p + 1, &end, 10);
		if (*end != '\0' || errno != 0 || n == 0 || n > 65535)
			return -EINVAL;
	}
	if (host != NULL) {
		if (strlen(h) >= hostlen)
			return -EINVAL;
		memcpy(host, h, strlen(h) + 1);
	}
	if (port != NULL)
		*port = (unsigned)n;
	if (mx != NULL)
		*mx = !bracket;
	return 0;
}

/* relayhost: empty, or what relay_relayhost_parse takes. */
static int
conf_check_relayhost(const char *v, char *err, size_t errlen)
{
	if (*v == '\0' || relay_relayhost_parse(v, NULL, 0, NULL, NULL) == 0)
		return 0;
	return conf_seterr(err, errlen, "\"%s\" is not host, host:port, [host] "
	    "or [host]:port", v);
}

int
relay_resolver_parse(const char *s, struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	char buf[INET6_ADDRSTRLEN + 16];

	memset(ss, 0, sizeof(*ss));
	/* A bare IPv6 address, or an address without a port: port 53. */
	if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(53);
		return 0;
	}
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(53);
		return 0;
	}
	if (s[0] == '[' && strchr(s, ']') != NULL &&
	    strchr(s, ']')[1] == '\0') {
		if (snprintf(buf, sizeof(buf), "%s:53", s) >= (int)sizeof(buf))
			return -EINVAL;
		return relay_addr_parse(buf, ss);
	}
	return relay_addr_parse(s, ss);
}

/* defer_transports items: Signet has one transport, smtp. */
static int
conf_check_transport(const char *v, char *err, size_t errlen)
{
	if (*v == '\0' || strcmp(v, "smtp") == 0)
		return 0;
	snprintf(err, errlen, "unknown transport \"%s\" (Signet has only smtp)", v);
	return -1;
}

/* dns_resolvers items: ADDR or ADDR:PORT, IPv6 in brackets with a port. */
static int
conf_check_resolvers(const char *v, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	char **w;
	size_t n, i;
	int rc = 0;

	w = conf_words(v, ",", &n);
	for (i = 0; i < n && rc == 0; i++)
		if (relay_resolver_parse(w[i], &ss) != 0)
			rc = conf_seterr(err, errlen, "\"%s\" is not ADDRESS or "
			    "ADDRESS:PORT (IPv6 in brackets when a port is "
			    "given)", w[i]);
	conf_words_free(w, n);
	return rc;
}

/* smtp_helo_name: $myhostname or a host name. */
static int
conf_check_helo_name(const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "$myhostname") == 0 || conf_is_hostname(v, 0))
		return 0;
	return conf_seterr(err, errlen, "\"%s\" is not a host name or "
	    "$myhostname", v);
}

static int
conf_check_addr(const char *v, char *err, size_t errlen)
{
	struct sockaddr_storage ss;

	if (*v != '\0' && relay_addr_parse(v, &ss) != 0)
		return conf_seterr(err, errlen, "\"%s\" is not ADDRESS:PORT "
		    "(an IPv4 address, or an IPv6 address in brackets)", v);
	return 0;
}

/* dkim_signed_headers items: field names (RFC 5322 3.6.8 ftext). */
static int
conf_check_header(const char *v, char *err, size_t errlen)
{
	const char *p;

	for (p = v; *p != '\0'; p++)
		if (!conf_is_blank((unsigned char)*p) && *p != ',' &&
		    *p != ':' && ((unsigned char)*p < 33 ||
		    (unsigned char)*p > 126))
			return conf_seterr(err, errlen, "\"%s\" is not a list "
			    "of header field names", v);
	return 0;
}

/* paths: anything printable; blanks would be surprising, so refuse them. */
static int
conf_check_path(const char *v, char *err, size_t errlen)
{
	const char *p;

	for (p = v; *p != '\0'; p++)
		if (conf_is_blank((unsigned char)*p))
			return conf_seterr(err, errlen, "\"%s\": blanks in a "
			    "path are not supported", v);
	return 0;
}

/* ---- listen -------------------------------------------------------------- */

static void
conf_listen_reset(struct relay_config *cfg)
{
	free(cfg->listen);
	free(cfg->listen_line);
	cfg->listen = NULL;
	cfg->listen_line = NULL;
	cfg->nlisten = 0;
}

/* listen = ADDRESS:PORT [tls] [proxy] */
static int
conf_listen_parse(struct relay_config *cfg, const char *value, unsigned line,
    char *err, size_t errlen)
{
	struct sockaddr_storage ss, other;
	struct smtp_listen l;
	char **w;
	size_t n, i;
	int rc = -1;

	memset(&l, 0, sizeof(l));
	w = conf_words(value, "", &n);
	if (n == 0) {
		conf_seterr(err, errlen, "empty value");
		goto done;
	}
	if (relay_addr_parse(w[0], &ss) != 0 ||
	    strlen(w[0]) >= sizeof(l.addr)) {
		conf_seterr(err, errlen, "\"%s\" is not ADDRESS:PORT (an IPv4 "
		    "address, or an IPv6 address in brackets)", w[0]);
		goto done;
	}
	snprintf(l.addr, sizeof(l.addr), "%s", w[0]);
	for (i = 1; i < n; i++) {
		if (strcmp(w[i], "tls") == 0)
			l.tls = 1;
		else if (strcmp(w[i], "proxy") == 0)
			l.proxy = 1;
		else {
			conf_seterr(err, errlen, "%s: unknown option \"%s\" "
			    "(options are tls and proxy)", w[0], w[i]);
			goto done;
		}
	}
	for (i = 0; i < cfg->nlisten; i++) {
		if (relay_addr_parse(cfg->listen[i].addr, &other) == 0 &&
		    conf_addr_same(&ss, &other)) {
			conf_seterr(err, errlen, "%s: already given at line %u",
			    w[0], cfg->listen_line[i]);
			goto done;
		}
	}
	cfg->listen = relay_xrealloc(cfg->listen, cfg->nlisten + 1,
	    sizeof(*cfg->listen));
	cfg->listen_line = relay_xrealloc(cfg->listen_line, cfg->nlisten + 1,
	    sizeof(*cfg->listen_line));
	cfg->listen[cfg->nlisten] = l;
	cfg->listen_line[cfg->nlisten] = line;
	cfg->nlisten++;
	rc = 0;
done:
	conf_words_free(w, n);
	return rc;
}

static void
conf_listen_print(const struct relay_config *cfg, const char *name, FILE *fp)
{
	size_t i;

	for (i = 0; i < cfg->nlisten; i++)
		fprintf(fp, "%s = %s%s%s\n", name, cfg->listen[i].addr,
		    cfg->listen[i].tls ? " tls" : "",
		    cfg->listen[i].proxy ? " proxy" : "");
}

static const struct conf_custom conf_listen_ops = {
	conf_listen_parse, conf_listen_reset, conf_listen_print,
};

/* ---- dkim_sign ----------------------------------------------------------- */

static void
conf_dkim_sign_reset(struct relay_config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->ndkim_sign; i++) {
		free(cfg->dkim_sign[i].domain);
		free(cfg->dkim_sign[i].selector);
		free(cfg->dkim_sign[i].keyfile);
		dkim_key_free(cfg->dkim_sign[i].key);
	}
	free(cfg->dkim_sign);
	cfg->dkim_sign = NULL;
	cfg->ndkim_sign = 0;
}

/* dkim_sign = DOMAIN SELECTOR KEYFILE [ALGORITHM] */
static int
conf_dkim_sign_parse(struct relay_config *cfg, const char *value, unsigned line,
    char *err, size_t errlen)
{
	struct relay_dkim_sign e;
	struct dkim_key *key = NULL;
	enum dkim_alg alg = DKIM_ALG_RSA_SHA256;
	char **w, *p, reason[512];
	size_t n, i, same = 0;
	int rc = -1;

	w = conf_words(value, "", &n);
	if (n < 3 || n > 4) {
		conf_seterr(err, errlen, "expected DOMAIN SELECTOR KEYFILE "
		    "[ALGORITHM]");
		goto done;
	}
	for (p = w[0]; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	if (n > 0 && (p = strchr(w[0], '\0')) > w[0] && p[-1] == '.')
		p[-1] = '\0';
	if (!conf_is_hostname(w[0], 1)) {
		conf_seterr(err, errlen, "\"%s\" is not a domain name", w[0]);
		goto done;
	}
	if (!conf_is_hostname(w[1], 1)) {
		conf_seterr(err, errlen, "\"%s\" is not a selector", w[1]);
		goto done;
	}
	if (n == 4 && dkim_alg_parse(w[3], &alg) != 0) {
		conf_seterr(err, errlen, "\"%s\" is not an algorithm "
		    "(rsa-sha256 or ed25519-sha256)", w[3]);
		goto done;
	}
	for (i = 0; i < cfg->ndkim_sign; i++) {
		if (strcmp(cfg->dkim_sign[i].domain, w[0]) != 0)
			continue;
		if (strcmp(cfg->dkim_sign[i].selector, w[1]) == 0) {
			conf_seterr(err, errlen, "%s selector %s: already "
			    "given at line %u", w[0], w[1],
			    cfg->dkim_sign[i].line);
			goto done;
		}
		same++;
	}
	if (same >= DKIM_MAX_SIGS) {
		conf_seterr(err, errlen, "%s: more than %d signatures", w[0],
		    DKIM_MAX_SIGS);
		goto done;
	}
	if (dkim_key_load(w[2], &key, reason, sizeof(reason)) != 0) {
		conf_seterr(err, errlen, "%s", reason);
		goto done;
	}
	if (n == 4 && dkim_key_alg(key) != alg) {
		conf_seterr(err, errlen, "%s: the key is %s, not %s", w[2],
		    dkim_alg_name(dkim_key_alg(key)), w[3]);
		goto done;
	}
	e.domain = w[0];
	e.selector = w[1];
	e.keyfile = w[2];
	e.alg = dkim_key_alg(key);
	e.key = key;
	e.line = line;
	w[0] = w[1] = w[2] = NULL;
	key = NULL;
	cfg->dkim_sign = relay_xrealloc(cfg->dkim_sign, cfg->ndkim_sign + 1,
	    sizeof(*cfg->dkim_sign));
	cfg->dkim_sign[cfg->ndkim_sign++] = e;
	rc = 0;
done:
	dkim_key_free(key);
	conf_words_free(w, n);
	return rc;
}

static void
conf_dkim_sign_print(const struct relay_config *cfg, const char *name, FILE *fp)
{
	size_t i;

	for (i = 0; i < cfg->ndkim_sign; i++)
		fprintf(fp, "%s = %s %s %s %s\n", name,
		    cfg->dkim_sign[i].domain, cfg->dkim_sign[i].selector,
		    cfg->dkim_sign[i].keyfile,
		    dkim_alg_name(cfg->dkim_sign[i].alg));
}

static const struct conf_custom conf_dkim_sign_ops = {
	conf_dkim_sign_parse, conf_dkim_sign_reset, conf_dkim_sign_print,
};

/* ---- enumerations -------------------------------------------------------- */

struct conf_enum {
	const char *name;
	int value;
};

static const struct conf_enum conf_bare_names[] = {
	{ "yes", SMTP_BARE_REJECT }, { "normalize", SMTP_BARE_NORMALIZE },
	{ "no", SMTP_BARE_ALLOW }, { NULL, 0 },
};

static const struct conf_enum conf_tls_level_names[] = {
	{ "none", RELAY_TLS_NONE }, { "may", RELAY_TLS_MAY },
	{ "encrypt", RELAY_TLS_ENCRYPT }, { NULL, 0 },
};

static const struct conf_enum conf_unprov_names[] = {
	{ "sign-initial", RELAY_UNPROV_SIGN_INITIAL },
	{ "reject", RELAY_UNPROV_REJECT },
	{ "unsigned", RELAY_UNPROV_UNSIGNED }, { NULL, 0 },
};

static const struct conf_enum conf_level_names[] = {
	{ "error", LOG_ERR }, { "warning", LOG_WARNING },
	{ "notice", LOG_NOTICE }, { "info", LOG_INFO }, { "debug", LOG_DEBUG },
	{ NULL, 0 },
};

/* conf_enum_parse - value's number in names, or -1 with the choices in err. */
static int
conf_enum_parse(const struct conf_enum *names, const char *value, int *out,
    char *err, size_t errlen)
{
	const struct conf_enum *e;
	size_t n = 0;

	for (e = names; e->name != NULL; e++)
		if (strcmp(value, e->name) == 0) {
			*out = e->value;
			return 0;
		}
	n = (size_t)snprintf(err, errlen, "\"%s\" is not ", value);
	for (e = names; e->name != NULL && n < errlen; e++)
		n += (size_t)snprintf(err + n, errlen - n, "%s%s", e == names ?
		    "" : e[1].name == NULL ? " or " : ", ", e->name);
	return -1;
}

/* conf_enum_name - the name of value in names. */
static const char *
conf_enum_name(const struct conf_enum *names, int value)
{
	for (; names->name != NULL; names++)
		if (names->value == value)
			return names->name;
	return "?";
}

static int
conf_bare_parse(struct relay_config *cfg, const char *value, unsigned line,
    char *err, size_t errlen)
{
	return conf_enum_parse(conf_bare_names, value,
	    &cfg->smtpd_forbid_bare_newline, err, errlen);
}

static void
conf_bare_print(const struct relay_config *cfg, const char *name, FILE *fp)
{
	fprintf(fp, "%s = %s\n", name, conf_enum_name(conf_bare_names,
	    cfg->smtpd_forbid_bare_newline));
}

static const struct conf_custom conf_bare_ops = {
	conf_bare_parse, NULL, conf_bare_print,
};

static int
conf_unprov_parse(struct relay_config *cfg, const char *value, unsigned line,
    char *err, size_t errlen)
{
	return conf_enum_parse(conf_unprov_names, value,
	    &cfg->dkim_unprovisioned, err, errlen);
}

static void
conf_unprov_print(const struct relay_config *cfg, const char *name, FILE *fp)
{
	fprintf(fp, "%s = %s\n", name, conf_enum_name(conf_unprov_names,
	    cfg->dkim_unprovisioned));
}

static const struct conf_custom conf_unprov_ops = {
	conf_unprov_parse, NULL, conf_unprov_print,
};

static int
conf_log_level_parse(struct relay_config *cfg, const char *value, unsigned line,
    char *err, size_t errlen)
{
	return conf_enum_parse(conf_level_names, value, &cfg->log_level, err,
	    errlen);
}

static void
conf_log_level_print(const struct relay_config *cfg, const char *name, FILE *fp)
{
	fprintf(fp, "%s = %s\n", name, conf_enum_name(conf_level_names,
	    cfg->log_level));
}

static const struct conf_custom conf_log_level_ops = {
	conf_log_level_parse, NULL, conf_log_level_print,
};

static int
conf_tls_level_parse(struct relay_config *cfg, const char *value,
    unsigned line, char *err, size_t errlen)
{
	return conf_enum_parse(conf_tls_level_names, value,
	    &cfg->smtp_tls_security_level, err, errlen);
}

static void
conf_tls_level_print(const struct relay_config *cfg, const char *name,
    FILE *fp)
{
	fprintf(fp, "%s = %s\n", name, conf_enum_name(conf_tls_level_names,
	    cfg->smtp_tls_security_level));
}

static const struct conf_custom conf_tls_level_ops = {
	conf_tls_level_parse, NULL, conf_tls_level_print,
};

static int
conf_canon_parse(struct relay_config *cfg, const char *value, unsigned line,
    char *err, size_t errlen)
{
	enum dkim_canon h, b;

	if (dkim_canon_parse(value, &h, &b) != 0)
		return conf_seterr(err, errlen, "\"%s\" is not HEADER/BODY, "
		    "each simple or relaxed", value);
	cfg->dkim_hcanon = (int)h;
	cfg->dkim_bcanon = (int)b;
	return 0;
}

static void
conf_canon_print(const struct relay_config *cfg, const char *name, FILE *fp)
{
	fprintf(fp, "%s = %s/%s\n", name,
	    cfg->dkim_hcanon == DKIM_CANON_SIMPLE ? "simple" : "relaxed",
	    cfg->dkim_bcanon == DKIM_CANON_SIMPLE ? "simple" : "relaxed");
}

static const struct conf_custom conf_canon_ops = {
	conf_canon_parse, NULL, conf_canon_print,
};

/* ---- applying one setting ------------------------------------------------ */

/* conf_reset - free what setting s holds and leave it empty. */
static void
conf_reset(struct relay_config *cfg, const struct conf_setting *s)
{
	char **str;

	switch (s->type) {
	case CT_STRING:
		str = conf_field(cfg, s);
		free(*str);
		*str = NULL;
		break;
	case CT_LIST:
		conf_list_free(conf_field(cfg, s));
		break;
	case CT_CUSTOM:
		if (s->custom->reset != NULL)
			s->custom->reset(cfg);
		break;
	default:
		break;
	}
}

/*
 * conf_apply - store value (trimmed, no control characters) in setting s,
 * as given at line (0: the default).  Repeatable settings are reset on
 * their first line in the file, so a file's lines replace the default.
 * 0, or -1 after reporting the error.
 */
static int
conf_apply(struct conf_ctx *x, struct relay_config *cfg,
    const struct conf_setting *s, const char *value, unsigned line)
{
	char err[CONF_ERR_MAX];
	size_t idx = conf_index(s), n, i;
	struct relay_strlist *l;
	uint64_t num;
	char **w;

	if (*value == '\0' && !(s->flags & CF_EMPTY)) {
		conf_error(x, line, "%s: empty value", s->name);
		return -1;
	}
	if (s->check != NULL && s->check(value, err, sizeof(err)) != 0)
		goto bad;
	if (line > 0 && cfg->set_line[idx] == 0 && (s->flags & CF_REPEAT))
		conf_reset(cfg, s);
	switch (s->type) {
	case CT_STRING:
		conf_reset(cfg, s);
		*(char **)conf_field(cfg, s) = relay_xstrdup(value);
		break;
	case CT_BOOL:
		if (strcasecmp(value, "yes") == 0)
			*(int *)conf_field(cfg, s) = 1;
		else if (strcasecmp(value, "no") == 0)
			*(int *)conf_field(cfg, s) = 0;
		else {
			snprintf(err, sizeof(err), "\"%s\" is not yes or no",
			    value);
			goto bad;
		}
		break;
	case CT_UINT:
	case CT_TIME:
	case CT_USEC:
		if (conf_number(s, value, &num, err, sizeof(err)) != 0)
			goto bad;
		*(unsigned *)conf_field(cfg, s) = (unsigned)num;
		break;
	case CT_SIZE:
		if (conf_number(s, value, &num, err, sizeof(err)) != 0)
			goto bad;
		*(uint64_t *)conf_field(cfg, s) = num;
		break;
	case CT_LIST:
		l = conf_field(cfg, s);
		w = conf_words(value, s->flags & CF_COLON ? ",:" : ",", &n);
		l->v = relay_xrealloc(l->v, l->n + n + 1, sizeof(*l->v));
		for (i = 0; i < n; i++)
			l->v[l->n++] = w[i];
		free(w);
		break;
	case CT_CUSTOM:
		if (s->custom->parse(cfg, value, line, err, sizeof(err)) != 0)
			goto bad;
		break;
	}
	return 0;
bad:
	conf_error(x, line, "%s: %s", s->name, err);
	return -1;
}

/* ---- unknown names ------------------------------------------------------ */

/* conf_distance - Levenshtein distance, case-insensitive, for short names. */
static size_t
conf_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j, prev, cur, tmp;
	size_t row[64], rowlen = sizeof(row) / sizeof(row[0]);

	if (la >= rowlen || lb >= rowlen)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			cur = prev + (tolower((unsigned char)a[i - 1]) !=
			    tolower((unsigned char)b[j - 1]));
			if (row[j] + 1 < cur)
				cur = row[j] + 1;
			if (row[j - 1] + 1 < cur)
				cur = row[j - 1] + 1;
			tmp = row[j];
			row[j] = cur;
			prev = tmp;
		}
	}
	return row[lb];
}

/* conf_suggest - the setting closest to name, if it is close enough. */
static const char *
conf_suggest(const char *name)
{
	size_t i, d, best = SIZE_MAX, limit = strlen(name) / 4 + 1;
	const char *found = NULL;

	if (limit > 3)
		limit = 3;
	for (i = 0; i < CONF_NSETTINGS; i++) {
		d = conf_distance(name, conf_table[i].name);
		if (d < best) {
			best = d;
			found = conf_table[i].name;
		}
	}
	return best <= limit ? found : NULL;
}

/* ---- reading the file --------------------------------------------------- */

/* conf_setting_line - parse one logical line "name = value" given at line. */
static void
conf_setting_line(struct conf_ctx *x, struct relay_config *cfg, char *p,
    unsigned line)
{
	const struct conf_setting *s;
	char *name, *end, *value, *q;
	const char *hint;
	size_t idx;

	name = p;
	while (*p == '_' || isalnum((unsigned char)*p))
		p++;
	end = p;
	while (conf_is_blank((unsigned char)*p))
		p++;
	if (end == name) {
		conf_error(x, line, "expected a setting name");
		return;
	}
	if (*p != '=') {
		conf_error(x, line, "%.*s: expected \"name = value\"",
		    (int)(end - name), name);
		return;
	}
	*end = '\0';
	value = p + 1;
	while (conf_is_blank((unsigned char)*value))
		value++;
	q = strchr(value, '\0');
	while (q > value && conf_is_blank((unsigned char)q[-1]))
		*--q = '\0';
	for (q = value; *q != '\0'; q++)
		if ((unsigned char)*q < 0x20 && *q != '\t') {
			conf_error(x, line, "%s: control character in value",
			    name);
			return;
		}
	if ((s = conf_find(name)) == NULL) {
		if ((hint = conf_suggest(name)) != NULL)
			conf_error(x, line, "unknown setting \"%s\"; did you "
			    "mean \"%s\"?", name, hint);
		else
			conf_error(x, line, "unknown setting \"%s\"", name);
		return;
	}
	idx = conf_index(s);
	if (cfg->set_line[idx] != 0 && !(s->flags & CF_REPEAT))
		conf_warn(x, line, "%s: overrides the value at line %u",
		    s->name, cfg->set_line[idx]);
	if (conf_apply(x, cfg, s, value, line) == 0 &&
	    (cfg->set_line[idx] == 0 || !(s->flags & CF_REPEAT)))
		cfg->set_line[idx] = line;
}

/* A logical line being assembled from a line and its continuations. */
struct conf_pending {
	char *p;
	size_t len, cap;
	unsigned line;            /* where it started; 0: none pending */
	int toolong;
};

/* conf_pending_add - append len bytes (and a separating SP if asked). */
static void
conf_pending_add(struct conf_pending *pl, const char *p, size_t len, int sp)
{
	if (pl->toolong || pl->len + len + 2 > CONF_LOGICAL_MAX) {
		pl->toolong = 1;
		return;
	}
	if (pl->len + len + 2 > pl->cap) {
		pl->cap = (pl->len + len + 2) * 2;
		pl->p = relay_xrealloc(pl->p, pl->cap, 1);
	}
	if (sp)
		pl->p[pl->len++] = ' ';
	memcpy(pl->p + pl->len, p, len);
	pl->len += len;
	pl->p[pl->len] = '\0';
}

/* conf_pending_flush - parse the pending logical line, if any. */
static void
conf_pending_flush(struct conf_ctx *x, struct relay_config *cfg,
    struct conf_pending *pl)
{
	if (pl->line == 0)
		return;
	if (pl->toolong)
		conf_error(x, pl->line, "setting longer than %d bytes",
		    CONF_LOGICAL_MAX);
	else
		conf_setting_line(x, cfg, pl->p, pl->line);
	pl->line = 0;
	pl->len = 0;
	pl->toolong = 0;
}

/* conf_read - read path into cfg; errors are counted in x.  0 or -errno. */
static int
conf_read(struct conf_ctx *x, struct relay_config *cfg, const char *path)
{
	struct conf_pending pl = { 0 };
	char *buf = NULL, *p;
	size_t cap = 0, len;
	unsigned line = 0;
	ssize_t n;
	FILE *fp;
	int rc = 0;

	if ((fp = fopen(path, "re")) == NULL) {
		rc = -errno;
		conf_error(x, 0, "cannot read: %s", strerror(errno));
		return rc;
	}
	while ((n = getline(&buf, &cap, fp)) != -1) {
		line++;
		len = (size_t)n;
		if (len > 0 && buf[len - 1] == '\n')
			len--;
		if (len > 0 && buf[len - 1] == '\r')
			len--;
		if (memchr(buf, '\0', len) != NULL) {
			conf_error(x, line, "NUL byte in line");
			continue;
		}
		buf[len] = '\0';
		if (len > CONF_LINE_MAX) {
			conf_error(x, line, "line longer than %d bytes",
			    CONF_LINE_MAX);
			continue;
		}
		for (p = buf; conf_is_blank((unsigned char)*p); p++)
			;
		if (*p == '\0' || *p == '#')
			continue;
		if (p == buf) {
			conf_pending_flush(x, cfg, &pl);
			pl.line = line;
			conf_pending_add(&pl, p, strlen(p), 0);
		} else if (pl.line != 0)
			conf_pending_add(&pl, p, strlen(p), 1);
		else
			conf_error(x, line, "continuation line (it starts with "
			    "a blank) without a setting above it");
	}
	if (ferror(fp)) {
		rc = -errno;
		conf_error(x, 0, "cannot read: %s", strerror(errno));
	}
	conf_pending_flush(x, cfg, &pl);
	free(pl.p);
	free(buf);
	fclose(fp);
	return rc;
}

/* ---- defaults and final checks ------------------------------------------- */

/* conf_defaults - every setting's default; myhostname from gethostname(). */
static void
conf_defaults(struct conf_ctx *x, struct relay_config *cfg)
{
	char host[256];
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < CONF_NSETTINGS; i++)
		if (conf_table[i].dflt != NULL)
			conf_apply(x, cfg, &conf_table[i], conf_table[i].dflt,
			    0);
	if (gethostname(host, sizeof(host)) != 0 || !conf_is_hostname(host, 0))
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	cfg->myhostname = relay_xstrdup(host);
}

/* conf_line_of - the line that set the named setting (0: default). */
static unsigned
conf_line_of(const struct relay_config *cfg, const char *name)
{
	const struct conf_setting *s = conf_find(name);

	return s != NULL ? cfg->set_line[conf_index(s)] : 0;
}

/*
 * conf_finish - checks across settings, then what the settings refer to:
 * address lists, the AUTH database, the signing table.
 */
static void
conf_finish(struct conf_ctx *x, struct relay_config *cfg)
{
	struct sockaddr_storage a, b;
	char reason[512], *s;
	size_t i;
	int from = 0;

	if ((cfg->smtpd_tls_cert_file[0] == '\0') !=
	    (cfg->smtpd_tls_key_file[0] == '\0'))
		conf_error(x, conf_line_of(cfg, cfg->smtpd_tls_cert_file[0] ?
		    "smtpd_tls_cert_file" : "smtpd_tls_key_file"),
		    "smtpd_tls_cert_file and smtpd_tls_key_file go together: "
		    "set both or neither");
	for (i = 0; i < cfg->nlisten; i++) {
		if (cfg->listen[i].tls && cfg->smtpd_tls_cert_file[0] == '\0')
			conf_error(x, cfg->listen_line[i], "listen: %s tls: "
			    "needs smtpd_tls_cert_file", cfg->listen[i].addr);
		if (cfg->listen[i].proxy &&
		    cfg->smtpd_proxy_trusted_networks.n == 0)
			conf_error(x, cfg->listen_line[i], "listen: %s proxy: "
			    "needs smtpd_proxy_trusted_networks",
			    cfg->listen[i].addr);
		if (cfg->admin_listen[0] != '\0' &&
		    relay_addr_parse(cfg->admin_listen, &a) == 0 &&
		    relay_addr_parse(cfg->listen[i].addr, &b) == 0 &&
		    conf_addr_same(&a, &b))
			conf_error(x, conf_line_of(cfg, "admin_listen"),
			    "admin_listen: %s is also an SMTP listener",
			    cfg->admin_listen);
	}
	for (i = 0; i < cfg->dkim_signed_headers.n; i++)
		if (strcasecmp(cfg->dkim_signed_headers.v[i], "From") == 0)
			from = 1;
	if (!from)
		conf_error(x, conf_line_of(cfg, "dkim_signed_headers"),
		    "dkim_signed_headers: must include From (RFC 6376 5.4)");
	cfg->dkim_headers = conf_list_join(&cfg->dkim_signed_headers, ":");
	if (cfg->minimal_backoff_time > cfg->maximal_backoff_time)
		conf_error(x, conf_line_of(cfg, conf_line_of(cfg,
		    "minimal_backoff_time") > 0 ? "minimal_backoff_time" :
		    "maximal_backoff_time"), "minimal_backoff_time (%us) must "
		    "not exceed maximal_backoff_time (%us)",
		    cfg->minimal_backoff_time, cfg->maximal_backoff_time);
	cfg->helo_name = relay_xstrdup(strcmp(cfg->smtp_helo_name,
	    "$myhostname") == 0 ? cfg->myhostname : cfg->smtp_helo_name);

	s = conf_list_join(&cfg->mynetworks, " ");
	if (smtp_netlist_parse(s, &cfg->mynetworks_nl, reason,
	    sizeof(reason)) != 0)
		conf_error(x, conf_line_of(cfg, "mynetworks"), "mynetworks: %s",
		    reason);
	free(s);
	if (cfg->smtpd_proxy_trusted_networks.n > 0) {
		s = conf_list_join(&cfg->smtpd_proxy_trusted_networks, " ");
		if (smtp_netlist_parse(s, &cfg->proxy_trusted_nl, reason,
		    sizeof(reason)) != 0)
			conf_error(x, conf_line_of(cfg,
			    "smtpd_proxy_trusted_networks"),
			    "smtpd_proxy_trusted_networks: %s", reason);
		free(s);
	}
	if (cfg->smtpd_auth_file[0] != '\0' && smtp_authdb_load(
	    cfg->smtpd_auth_file, &cfg->authdb, reason, sizeof(reason)) != 0)
		conf_error(x, conf_line_of(cfg, "smtpd_auth_file"),
		    "smtpd_auth_file: %s", reason);
	if (relay_signtab_new(cfg, &cfg->signtab) != 0)
		relay_panic("out of memory building the signing table");
}

/* ---- public -------------------------------------------------------------- */

int
relay_config_default(struct relay_config *cfg)
{
	struct conf_ctx x = { 0 };

	conf_defaults(&x, cfg);
	conf_finish(&x, cfg);
	return x.errors > 0 ? -EINVAL : 0;
}

int
relay_config_load(const char *path, struct relay_config *cfg,
    relay_config_err_cb cb, void *arg)
{
	struct conf_ctx x = { 0 };
	int rc;

	conf_defaults(&x, cfg);
	cfg->file = relay_xstrdup(path);
	x.file = cfg->file;
	x.cb = cb;
	x.arg = arg;
	if ((rc = conf_read(&x, cfg, path)) != 0)
		return rc;
	conf_finish(&x, cfg);
	return x.errors > 0 ? -EINVAL : 0;
}

void
relay_config_free(struct relay_config *cfg)
{
	size_t i;

	for (i = 0; i < CONF_NSETTINGS; i++)
		conf_reset(cfg, &conf_table[i]);
	relay_signtab_free(cfg->signtab);
	smtp_netlist_free(cfg->mynetworks_nl);
	smtp_netlist_free(cfg->proxy_trusted_nl);
	smtp_authdb_free(cfg->authdb);
	free(cfg->dkim_headers);
	free(cfg->helo_name);
	free(cfg->file);
	memset(cfg, 0, sizeof(*cfg));
}

int
relay_config_line(const struct relay_config *cfg, const char *name)
{
	const struct conf_setting *s = conf_find(name);

	return s != NULL ? (int)cfg->set_line[conf_index(s)] : -1;
}

/* conf_print - the "name = value" line(s) of setting s. */
static void
conf_print(const struct relay_config *cfg, const struct conf_setting *s,
    FILE *fp)
{
	const char *str;
	char num[32], *joined;

	/* As postconf: "name =" when empty, sizes in bytes, times in seconds. */
	switch (s->type) {
	case CT_STRING:
		str = *(char *const *)conf_cfield(cfg, s);
		fprintf(fp, "%s =%s%s\n", s->name, *str ? " " : "", str);
		break;
	case CT_BOOL:
		fprintf(fp, "%s = %s\n", s->name,
		    *(const int *)conf_cfield(cfg, s) ? "yes" : "no");
		break;
	case CT_UINT:
		fprintf(fp, "%s = %u\n", s->name,
		    *(const unsigned *)conf_cfield(cfg, s));
		break;
	case CT_TIME:
		fprintf(fp, "%s = %us\n", s->name,
		    *(const unsigned *)conf_cfield(cfg, s));
		break;
	case CT_USEC:
		conf_fmt_number(s->type, *(const unsigned *)conf_cfield(cfg, s),
		    num, sizeof(num));
		fprintf(fp, "%s = %s\n", s->name, num);
		break;
	case CT_SIZE:
		fprintf(fp, "%s = %llu\n", s->name, (unsigned long long)
		    *(const uint64_t *)conf_cfield(cfg, s));
		break;
	case CT_LIST:
		joined = conf_list_join(conf_cfield(cfg, s),
		    s->flags & CF_COLON ? ":" : " ");
		fprintf(fp, "%s =%s%s\n", s->name, *joined ? " " : "", joined);
		free(joined);
		break;
	case CT_CUSTOM:
		s->custom->print(cfg, s->name, fp);
		break;
	}
}

int
relay_config_dump(const struct relay_config *cfg, FILE *fp, int only_set)
{
	size_t i;

	for (i = 0; i < CONF_NSETTINGS; i++)
		if (!only_set || cfg->set_line[i] != 0)
			conf_print(cfg, &conf_table[i], fp);
	if (fflush(fp) != 0 || ferror(fp))
		return -(errno != 0 ? errno : EIO);
	return 0;
}

/* conf_print_string - conf_print into a malloc'd string. */
static char *
conf_print_string(const struct relay_config *cfg, const struct conf_setting *s)
{
	char *p = NULL;
	size_t len = 0;
	FILE *fp;

	if ((fp = open_memstream(&p, &len)) == NULL)
		relay_panic("open_memstream: out of memory");
	conf_print(cfg, s, fp);
	if (fclose(fp) != 0 || p == NULL)
		relay_panic("open_memstream: out of memory");
	return p;
}

int
relay_config_restart_changes(const struct relay_config *old,
    const struct relay_config *new, relay_config_err_cb cb, void *arg)
{
	struct conf_ctx x = { 0 };
	char *a, *b;
	size_t i;
	int n = 0;

	x.file = new->file;
	x.cb = cb;
	x.arg = arg;
	for (i = 0; i < CONF_NSETTINGS; i++) {
		if (!(conf_table[i].flags & CF_RESTART))
			continue;
		a = conf_print_string(old, &conf_table[i]);
		b = conf_print_string(new, &conf_table[i]);
		if (strcmp(a, b) != 0) {
			conf_warn(&x, new->set_line[i], "%s: changed; the new "
			    "value takes effect after a restart",
			    conf_table[i].name);
			n++;
		}
		free(a);
		free(b);
	}
	return n;
}

/* conf_where - "FILE:LINE: " for a setting, or "FILE: " / "" without one. */
static void
conf_where(const struct relay_config *cfg, const char *name, char *buf,
    size_t len)
{
	unsigned line = conf_line_of(cfg, name);

	if (cfg->file != NULL && line > 0)
		snprintf(buf, len, "%s:%u: ", cfg->file, line);
	else if (cfg->file != NULL)
		snprintf(buf, len, "%s: ", cfg->file);
	else
		buf[0] = '\0';
}

/* conf_mkdirs - mkdir -p the directory part of path (mode 0700). */
static int
conf_mkdirs(const char *path)
{
	char *dir = relay_xstrdup(path), *p;
	int rc = 0;

	for (p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			rc = -errno;
			break;
		}
		*p = '/';
	}
	free(dir);
	return rc;
}

int
relay_config_to_smtp(const struct relay_config *cfg, struct smtp_config *out,
    int flags, char *err, size_t errlen)
{
	const char *cert = cfg->smtpd_tls_cert_file;
	const char *key = cfg->smtpd_tls_key_file;
	char where[CONF_ERR_MAX], reason[512];
	int missing, rc;

	memset(out, 0, sizeof(*out));
	out->hostname = cfg->myhostname;
	out->listen = cfg->listen;
	out->nlisten = cfg->nlisten;
	out->mynetworks = cfg->mynetworks_nl;
	out->proxy_trusted = cfg->proxy_trusted_nl;
	out->authdb = cfg->authdb;
	out->message_size_limit = cfg->message_size_limit;
	out->recipient_limit = cfg->smtpd_recipient_limit;
	out->conn_limit = cfg->max_connections;
	out->conn_per_client = cfg->smtpd_client_connection_count_limit;
	out->cmd_timeout_s = cfg->smtpd_timeout;
	out->data_timeout_s = cfg->smtpd_data_timeout;
	out->idle_timeout_s = cfg->smtpd_idle_timeout;
	out->hard_error_limit = cfg->smtpd_hard_error_limit;
	out->junk_command_limit = cfg->smtpd_junk_command_limit;
	out->bare_newline =
	    (enum smtp_bare_newline)cfg->smtpd_forbid_bare_newline;
	out->sign_lookup = relay_sign_lookup;
	out->event = relay_metrics_smtp_event;
	out->log = relay_log_hook;
	out->arg = (void *)(uintptr_t)cfg;

	if (cert[0] == '\0')
		return 0;
	missing = access(cert, F_OK) != 0 && access(key, F_OK) != 0;
	if (missing && cfg->smtpd_tls_self_signed) {
		/* The certificate will be made on the first real start. */
		if (flags & RELAY_SMTP_CHECK)
			return 0;
		if ((rc = conf_mkdirs(cert)) != 0 ||
		    (rc = conf_mkdirs(key)) != 0) {
			conf_where(cfg, "smtpd_tls_cert_file", where,
			    sizeof(where));
			snprintf(err, errlen, "%ssmtpd_tls_cert_file: %s: "
			    "cannot create its directory: %s", where, cert,
			    strerror(-rc));
			return -EINVAL;
		}
	}
	/* Past the check above, the generation can't happen in check mode. */
	out->tls = smtp_tls_ctx_new(cert, key, cfg->myhostname,
	    cfg->smtpd_tls_self_signed, reason, sizeof(reason));
	if (out->tls == NULL) {
		conf_where(cfg, "smtpd_tls_cert_file", where, sizeof(where));
		snprintf(err, errlen, "%ssmtpd_tls_cert_file: %s", where,
		    reason);
		return -EINVAL;
	}
	return 0;
}

void
relay_config_to_queue(const struct relay_config *cfg, struct queue_config *out)
{
	memset(out, 0, sizeof(*out));
	out->spool_dir = cfg->spool_dir;
	out->commit_window_us = cfg->spool_commit_window;
	out->max_batch = cfg->spool_commit_batch;
	out->event = relay_metrics_queue_event;
	out->log = relay_log_hook;
	out->arg = NULL;
}

void
relay_config_to_sched(const struct relay_config *cfg,
    struct queue_sched_config *out)
{
	memset(out, 0, sizeof(*out));
	out->spool_dir = cfg->spool_dir;
	out->minimal_backoff_time = cfg->minimal_backoff_time;
	out->maximal_backoff_time = cfg->maximal_backoff_time;
	out->maximal_queue_lifetime = cfg->maximal_queue_lifetime;
	out->bounce_queue_lifetime = cfg->bounce_queue_lifetime;
	out->destination_concurrency =
	    cfg->default_destination_concurrency_limit;
	out->max_jobs = cfg->smtp_connection_limit;
	out->defer_all = cfg->defer_transports.n > 0;
	out->event = relay_metrics_queue_event;
	out->log = relay_log_hook;
	out->arg = NULL;
}
