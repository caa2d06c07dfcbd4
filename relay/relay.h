/*
 * relay.h - the public header of relay/, the processes Signet ships:
 * bin/signet (the relay daemon, main.c) and bin/signetctl (the control
 * tool, ctl.c), and what they share:
 *
 *   version.c	the version string
 *   config.c	relay.conf: the settings table, loading, checking, dumping,
 *		and turning a configuration into what smtp/ and queue/ take
 *   signing.c	the static signing table (dkim_sign lines) and the
 *		smtp_sign_lookup_fn that picks keys by From domain
 *   bounce.c	delivery status notifications (RFC 3464), queued as new mail
 *   log.c	logging to stderr or syslog, thread-safe
 *   metrics.c	the Prometheus registry, the event hooks that feed it and
 *		the admin HTTP server that serves GET /metrics
 *
 * A struct relay_config is immutable once loaded and may be read from any
 * thread; a reload builds a new one.  Keys, address lists and the AUTH
 * database it holds live as long as it does.
 */
#ifndef SIGNET_RELAY_H
#define SIGNET_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>

#include "dkim/dkim.h"
#include "queue/queue.h"
#include "smtp/smtp.h"

#define SIGNET_VERSION "0.1.0"

/* relay_version - SIGNET_VERSION as built into the binary; can't fail. */
const char *relay_version(void);

/* ---- config.c: relay.conf --------------------------------------------- */

/*
 * The settings are listed, with their types, defaults and ranges, in the
 * table at the top of config.c and documented in relay.conf.  Fields are
 * named after the settings.
 */
#define RELAY_CONF_NSETTINGS 96   /* room in set_line[]; >= the table size */

/* A list setting (mynetworks, ...): items as written, in order. */
struct relay_strlist {
	char **v;
	size_t n;
};

/* One dkim_sign line: DOMAIN SELECTOR KEYFILE [ALGORITHM]. */
struct relay_dkim_sign {
	char *domain;             /* lower case, no trailing dot */
	char *selector;
	char *keyfile;
	enum dkim_alg alg;        /* the key's; ALGORITHM must agree */
	struct dkim_key *key;     /* loaded once, at load time */
	unsigned line;            /* where it was given; 0: not from a file */
};

struct relay_signtab;

/* dkim_unprovisioned: mail from a domain its tenant has not provisioned. */
enum relay_unprovisioned {
	RELAY_UNPROV_SIGN_INITIAL,        /* sign with the tenant's own key */
	RELAY_UNPROV_REJECT,              /* 550 5.7.1 */
	RELAY_UNPROV_UNSIGNED,            /* send unsigned */
};

/* smtp_tls_security_level: STARTTLS policy of the delivery client. */
enum relay_tls_level {
	RELAY_TLS_NONE,           /* never STARTTLS */
	RELAY_TLS_MAY,            /* STARTTLS when offered, else plain text */
	RELAY_TLS_ENCRYPT,        /* STARTTLS or defer (no certificate check) */
};

struct relay_config {
	char *file;                       /* path loaded; NULL: built-in */

	/* identity and relaying */
	char *myhostname;
	struct relay_strlist mynetworks;
	char *relayhost;                  /* "" = MX delivery (later issue) */

	/* listeners */
	struct smtp_listen *listen;
	size_t nlisten;
	unsigned *listen_line;            /* line of each listen (0: default) */
	char *admin_listen;               /* "" = no admin server */

	/* limits */
	uint64_t message_size_limit;      /* bytes, 0 = no limit */
	unsigned smtpd_recipient_limit;
	unsigned smtpd_client_connection_count_limit; /* 0 = no limit */
	unsigned max_connections;
	unsigned smtpd_timeout;           /* seconds */
	unsigned smtpd_data_timeout;      /* seconds */
	unsigned smtpd_idle_timeout;      /* seconds */
	unsigned smtpd_hard_error_limit;
	unsigned smtpd_junk_command_limit;
	int smtpd_forbid_bare_newline;    /* enum smtp_bare_newline */

	/* TLS, AUTH, PROXY */
	char *smtpd_tls_cert_file;        /* "" = no TLS */
	char *smtpd_tls_key_file;
	int smtpd_tls_self_signed;        /* make cert + key if both missing */
	char *smtpd_auth_file;            /* "" = AUTH not offered */
	struct relay_strlist smtpd_proxy_trusted_networks;

	/* processes and spool */
	char *spool_dir;
	unsigned workers;
	unsigned signing_threads;
	unsigned spool_commit_window;     /* microseconds */
	unsigned spool_commit_batch;

	/* DKIM */
	struct relay_dkim_sign *dkim_sign;
	size_t ndkim_sign;
	int dkim_hcanon, dkim_bcanon;     /* enum dkim_canon */
	struct relay_strlist dkim_signed_headers;
	char *dkim_headers;               /* the same, colon-joined (for h=) */
	char *initial_domain;             /* managed keys' zone; "" = none */

	/* managed keys (issue 5; relay/keys.h) */
	char *keystore;                   /* DIR, file:DIR or redis://H:P/DB */
	char *keystore_secret_file;       /* AES-256-GCM key for Redis */
	int dkim_unprovisioned;           /* enum relay_unprovisioned */
	unsigned dkim_publish_lead;       /* seconds */
	unsigned dkim_retire_delay;       /* seconds */
	unsigned dkim_rotation_interval;  /* seconds */
	unsigned dkim_key_size;           /* bits of new RSA keys */
	int dkim_dns_check;               /* gate needs the key seen in DNS */
	unsigned dkim_check_interval;     /* rotation thread tick, seconds */
	unsigned dkim_key_cache_size;     /* parsed private keys kept */
	struct relay_strlist tenant_lookup; /* "auth", "network", in order */
	char *dns_listen;                 /* built-in DNS server; "" = none */
	struct relay_strlist dns_ns;      /* NS of the _domainkey zones */
	char *dns_hostmaster;             /* SOA RNAME */
	unsigned dns_ttl;                 /* seconds */
	unsigned dns_negative_ttl;        /* seconds */

	/* delivery (Postfix's names and defaults) */
	struct relay_strlist dns_resolvers;   /* ADDR[:PORT]; none: resolv.conf */
	struct relay_strlist defer_transports; /* "smtp": deliver only on flush */
	int smtp_tls_security_level;      /* enum relay_tls_level */
	char *smtp_helo_name;             /* as written; see helo_name */
	unsigned minimal_backoff_time;    /* seconds */
	unsigned maximal_backoff_time;
	unsigned maximal_queue_lifetime;
	unsigned bounce_queue_lifetime;
	unsigned default_destination_concurrency_limit;
	unsigned smtp_connection_limit;   /* outbound connections in all */
	unsigned smtp_connect_timeout;    /* seconds */
	unsigned smtp_helo_timeout;
	unsigned smtp_data_done_timeout;
	unsigned smtp_connection_cache_time_limit; /* idle; 0: no cache */

	/* logging */
	int log_level;                    /* syslog priority, LOG_ERR..DEBUG */

	/* built from the above at load time */
	struct smtp_netlist *mynetworks_nl;
	struct smtp_netlist *proxy_trusted_nl;
	struct smtp_authdb *authdb;       /* NULL without smtpd_auth_file */
	struct relay_signtab *signtab;
	char *helo_name;                  /* smtp_helo_name, $myhostname expanded */

	/* the line that set each setting (0: default), by table index */
	unsigned set_line[RELAY_CONF_NSETTINGS];
};

/*
 * Errors and warnings go to this callback, one complete message per call
 * without a newline: "FILE:LINE: message", "FILE:LINE: warning: message",
 * or "FILE: message" when no line applies.  prio is LOG_ERR or LOG_WARNING.
 */
typedef void (*relay_config_err_cb)(void *arg, int prio, const char *msg);

/*
 * relay_config_default - fill cfg with the embedded default configuration:
 * listen on 127.0.0.1:2525, spool in ./var/spool, a self-signed certificate
 * in ./var/tls, nothing signed.  Returns 0, or -EINVAL (reported on
 * stderr) if smtp/ refuses the default mynetworks; aborts on OOM.  cfg
 * must be freed with relay_config_free either way.
 */
int relay_config_default(struct relay_config *cfg);
/*
 * relay_config_load - the defaults, then every setting of the file at path.
 * Every problem is reported through cb (NULL: to stderr), not just the
 * first: unknown settings (with a suggestion), syntax, bad values, values
 * out of range, unreadable keys, bad address lists.  A setting given twice
 * is a warning and the later line wins, except for the repeatable ones
 * (lists, listen, dkim_sign) whose lines add up.  DKIM keys, mynetworks,
 * smtpd_proxy_trusted_networks and smtpd_auth_file are loaded here.
 * Returns 0, -EINVAL when there was at least one error (warnings don't
 * count), or -errno when the file can't be read; aborts on OOM.  cfg must
 * be freed with relay_config_free in every case.
 */
int relay_config_load(const char *path, struct relay_config *cfg,
    relay_config_err_cb cb, void *arg);
/*
 * relay_config_restart_changes - for a reload (SIGHUP): report, as
 * warnings through cb, each setting that differs between old and new but
 * can't change without a restart (listen, admin_listen, spool_dir,
 * workers, signing_threads, spool_commit_*).  Returns how many.
 */
int relay_config_restart_changes(const struct relay_config *old,
    const struct relay_config *new, relay_config_err_cb cb, void *arg);
/* relay_config_free - release everything cfg holds; the struct is zeroed. */
void relay_config_free(struct relay_config *cfg);
/*
 * relay_config_dump - print every setting with its effective value, in
 * table order, one "name = value" line each (several for listen and
 * dkim_sign), in a form relay_config_load reads back.  With only_set, only
 * the settings the file gave (postconf -n).  -errno on a write error.
 */
int relay_config_dump(const struct relay_config *cfg, FILE *fp, int only_set);

/*
 * relay_config_line - the line of the file that set the setting name: 0
 * for the default, -1 for no such setting.  For repeatable settings, the
 * first line.
 */
int relay_config_line(const struct relay_config *cfg, const char *name);

#define RELAY_SMTP_CHECK 0x01     /* check only: never write a certificate */

/*
 * relay_config_to_smtp - fill out for smtp_server_start: every pointer in
 * it points into cfg (valid until relay_config_free) except out->tls, a new
 * SSL_CTX the caller drops with SSL_CTX_free (NULL when TLS is off).  When
 * both TLS files are missing and smtpd_tls_self_signed is set, a
 * certificate for myhostname is generated there, directories included.
 * With RELAY_SMTP_CHECK (signet -t) nothing is written: existing files are
 * loaded to check them (out->tls is then set, and must be freed too), and
 * missing ones that would be generated are fine.  The hooks are
 * relay_sign_lookup (out->arg = cfg), relay_metrics_smtp_event and
 * relay_log_hook.  0, or -EINVAL with "FILE:LINE: setting: reason" in err.
 */
int relay_config_to_smtp(const struct relay_config *cfg,
    struct smtp_config *out, int flags, char *err, size_t errlen);
/* relay_config_to_queue - fill out for queue_spool_new; can't fail. */
void relay_config_to_queue(const struct relay_config *cfg,
    struct queue_config *out);

/*
 * relay_config_to_sched - fill out for queue_sched_new: the spool, the
 * backoff and lifetime settings, the limits (destination_concurrency from
 * default_destination_concurrency_limit, max_jobs from
 * smtp_connection_limit) and the event/log hooks
 * (relay_metrics_queue_event, relay_log_hook).  deliver, bounce and arg
 * are left NULL for the daemon to set.  Pointers point into cfg; can't
 * fail.
 */
void relay_config_to_sched(const struct relay_config *cfg,
    struct queue_sched_config *out);

/*
 * relay_relayhost_parse - split a relayhost value ("host", "host:port",
 * "[host]", "[host]:port"; brackets may hold an IP literal) into host
 * (without brackets, NUL-terminated in hostlen bytes), *port (25 when not
 * given) and *mx (1: look up MX records for host; 0: bracketed, connect to
 * host itself, as in Postfix).  Any output may be NULL.  0 or -EINVAL.
 */
int relay_relayhost_parse(const char *v, char *host, size_t hostlen,
    unsigned *port, int *mx);
/*
 * relay_resolver_parse - a dns_resolvers item: "192.0.2.1", "2001:db8::1",
 * "192.0.2.1:5353", "[2001:db8::1]" or "[2001:db8::1]:5353" (port 53 when
 * not given) into *ss.  0 or -EINVAL.
 */
int relay_resolver_parse(const char *s, struct sockaddr_storage *ss);

/*
 * relay_addr_parse - "127.0.0.1:2525" or "[::1]:2525" (IP literals only)
 * into *ss.  0 or -EINVAL.
 */
int relay_addr_parse(const char *s, struct sockaddr_storage *ss);

/* ---- signing.c: the static signing table ------------------------------ */

/*
 * relay_signtab_new - an immutable index of cfg's dkim_sign lines, with
 * cfg's canonicalization and header list; it takes a reference on each key
 * and copies what it keeps.  0 or -ENOMEM.  Free with relay_signtab_free.
 */
int relay_signtab_new(const struct relay_config *cfg,
    struct relay_signtab **out);
/* relay_signtab_free - NULL ok. */
void relay_signtab_free(struct relay_signtab *t);
/*
 * relay_signtab_lookup - the signatures to make for mail From domain (lower
 * case): the dkim_sign lines for exactly that domain, in the order they
 * were written (no parent-domain matching: a line for example.com does not
 * sign mail from sub.example.com).  Fills out[0..max) with new key
 * references; the strings point into t.  Returns how many (0: unsigned).
 * Thread-safe.
 */
int relay_signtab_lookup(const struct relay_signtab *t, const char *domain,
    struct dkim_sign_params *out, int max);
/*
 * relay_sign_lookup - the smtp_sign_lookup_fn of the daemon; arg is the
 * const struct relay_config * the smtp_config came from.  The static table
 * first (bring your own key wins when it names the From domain), then the
 * managed keys of the running key manager (relay_keymgr_sign_lookup in
 * relay/keys.h), which refuses the message (-1) only under
 * dkim_unprovisioned = reject.
 */
int relay_sign_lookup(void *arg, const struct smtp_sign_request *rq,
    struct dkim_sign_params *out, int max, char *reason, size_t reasonlen);

/* ---- bounce.c: delivery status notifications --------------------------- */

/* What a bounce is about: the failed recipients of one queued message. */
struct relay_bounce_in {
	const char *myhostname;           /* Reporting-MTA, MAILER-DAEMON@ */
	const char *id;                   /* the original's queue id, or NULL */
	const char *path;                 /* its queue file (NULL: not enclosed) */
	const struct queue_envelope *env; /* its envelope; mail_from not "" */
	const struct queue_failed *failed;
	size_t nfailed;                   /* >= 1 */
	time_t now;                       /* Date, Last-Attempt-Date; 0: now */
};

/*
 * relay_bounce_compose - the RFC 3464 report for in, as a complete
 * message (header and body, CRLF line ends, no line over 998 bytes), in a
 * malloc'd NUL-terminated string of *len bytes: From "Mail Delivery
 * System" <MAILER-DAEMON@myhostname>, To the envelope sender, Subject
 * "Undelivered Mail Returned to Sender", Auto-Submitted: auto-replied; a
 * text part naming each failed recipient and its reason; a
 * message/delivery-status part (Status 5.x.y from the reason's enhanced
 * code, else 5.0.0, or 4.4.7 when expired; Diagnostic-Code "smtp; reply"
 * for SMTP replies, "X-Signet; text" for other reasons); and the original
 * as it went out (signature record, then message bytes) as message/rfc822,
 * or its header only as text/rfc822-headers with RET=HDRS.  If the queue
 * file can't be read, the third part is left out.  Reads the file
 * synchronously.  NULL with errno EINVAL when in is incomplete (no
 * sender, no failed recipient); aborts on OOM.
 */
char *relay_bounce_compose(const struct relay_bounce_in *in, size_t *len);
/*
 * relay_bounce_queue - compose the report and queue it on sp as a new
 * message from the null sender to in->env->mail_from (in->myhostname NULL:
 * cfg->myhostname), DKIM-signed when cfg's signing table has lines for
 * the domain myhostname (the From domain; unsigned otherwise, or with a
 * warning logged if signing fails).  Signing runs on the calling thread:
 * bounces are rare.  cb(arg, status, id) runs once the new message is
 * durable (or lost), as for queue_msg_commit; then the daemon tells the
 * queue manager (queue_sched_notify).  0, or -errno, in which case cb
 * never runs.  Call on sp's loop.
 */
int relay_bounce_queue(struct queue_spool *sp, const struct relay_config *cfg,
    const struct relay_bounce_in *in, queue_commit_cb cb, void *arg);

/* ---- log.c ------------------------------------------------------------ */

/*
 * relay_log_open - where log lines go from now on: syslog (ident "signet",
 * facility LOG_MAIL) when use_syslog is set, else stderr as
 * "2026-01-02T03:04:05.678Z signet[PID]: warning: message" (UTC).
 * Messages less urgent than level (a syslog priority) are dropped.  Call
 * before any other thread starts (openlog is not thread-safe);
 * relay_log_set_level may be called at any time, from any thread.
 */
void relay_log_open(int use_syslog, int level);
void relay_log_set_level(int level);
/* relay_log_close - closelog() if syslog was in use. */
void relay_log_close(void);
/*
 * relay_log - one line at syslog priority prio (LOG_ERR, LOG_WARNING,
 * LOG_NOTICE, LOG_INFO, LOG_DEBUG; more urgent ones log as errors).
 * Control characters in the message become '?'.  Thread-safe.
 */
void relay_log(int prio, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* relay_log_hook - the smtp_config.log / queue_config.log hook; arg unused. */
void relay_log_hook(void *arg, int prio, const char *msg);
/*
 * relay_panic - log "panic: ..." (broken invariant) and abort with a core.
 * The relay_x* allocators call it when memory runs out: they never return
 * NULL (the "x" of OpenSMTPD's xcalloc).
 */
void relay_panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void *relay_xmalloc(size_t size);
void *relay_xcalloc(size_t n, size_t size);
void *relay_xrealloc(void *p, size_t n, size_t size);
char *relay_xstrdup(const char *s);
char *relay_xstrndup(const char *s, size_t len);

/* ---- metrics.c -------------------------------------------------------- */

/*
 * The registry is one per process and lock-free for updates: any thread may
 * call the hooks.  relay_metrics_init records the process start time; call
 * it once, early (the registry works without it).
 */
void relay_metrics_init(void);
/* relay_metrics_smtp_event - the smtp_config.event hook; arg unused. */
void relay_metrics_smtp_event(void *arg, enum smtp_event ev, double value,
    const char *label);
/* relay_metrics_queue_event - the queue_config.event hook; arg unused. */
void relay_metrics_queue_event(void *arg, enum queue_event ev, double value);
/*
 * relay_metrics_queue_add - change signet_queue_messages by delta (the
 * count queue_recover found at start, later deliveries).  Committed
 * messages are counted by the queue hook already.
 */
void relay_metrics_queue_add(long delta);
/*
 * Delivery metrics (issue 4).  relay_metrics_queue_event, as the queue
 * manager's event hook (relay_config_to_sched sets it), already feeds
 * signet_deliveries_total (QUEUE_EV_RCPT_*), signet_delivery_seconds and
 * the spool count (QUEUE_EV_MSG_DONE: don't also call
 * relay_metrics_queue_add for removals) and
 * signet_queue_mark_errors_total; the functions below are for what only
 * the daemon knows.  Any thread; can't fail.
 *
 * relay_metrics_delivery - n recipients had outcome result.
 * relay_metrics_delivery_seconds - one message left the queue this many
 *   seconds after its arrival (histogram signet_delivery_seconds).
 * relay_metrics_queue_counts - the gauges signet_queue_active, _deferred,
 *   _held and signet_queue_oldest_age_seconds (oldest: the arrival time
 *   of the oldest message, 0 when empty; the age is computed when
 *   rendered).  The admin server refreshes them from the registered
 *   queue manager on each GET /metrics (relay_admin_set_queue).
 * relay_metrics_outbound_connections - signet_outbound_connections +=
 *   delta (+1 on connect, -1 on close, cached idle ones included).
 * relay_metrics_connection_cache_hit - a delivery reused a cached
 *   connection (signet_connection_cache_hits_total).
 */
void relay_metrics_delivery(enum queue_outcome result, uint64_t n);
void relay_metrics_delivery_seconds(double seconds);
void relay_metrics_queue_counts(size_t active, size_t deferred, size_t held,
    time_t oldest);
void relay_metrics_outbound_connections(long delta);
void relay_metrics_connection_cache_hit(void);
/*
 * relay_metrics_render - every metric in the Prometheus text exposition
 * format 0.0.4, in a malloc'd NUL-terminated string (length in *len), or
 * NULL on OOM.
 */
char *relay_metrics_render(size_t *len);

/*
 * The admin HTTP server: GET /metrics for anyone who can reach
 * admin_listen, and for loopback clients only (403 otherwise), the queue
 * requests of signetctl, answered in JSON:
 *   GET  /queue               {"messages":[{"id","arrival","size","sender",
 *                             "recipients","pending","next_try","held"}]};
 *                             with ?rcpt=1 each also has "rcpt": its
 *                             pending recipients as in /queue/ID
 *   GET  /queue/ID            the same fields plus "envid", "ret", "helo",
 *                             "client", "signed" and "rcpt": [{"addr",
 *                             "orcpt", "state" (pending|sent|bounced),
 *                             "attempts", "last_try", "next_try",
 *                             "reason"}]
 *   POST /queue/flush         every message due now
 *   POST /queue/ID/flush, /queue/ID/hold, /queue/ID/release,
 *        /queue/ID/delete
 * Actions answer 200 {"ok":true}; errors are {"error":"..."} with 404 (no
 * such message), 409 (busy: being delivered), 503 (no queue manager
 * registered).  Times are Unix seconds (0: none).
 */
struct relay_admin;

/*
 * relay_admin_start - listen on addr ("127.0.0.1:9025") on loop.  0, or
 * -errno / -EINVAL with the reason in err.
 */
int relay_admin_start(uv_loop_t *loop, const char *addr,
    struct relay_admin **out, char *err, size_t errlen);
/*
 * relay_admin_set_queue - serve the /queue requests from qs (NULL: stop
 * serving them; 503), whose files are under spool_dir (copied).  Also
 * makes each GET /metrics refresh the queue gauges from
 * queue_sched_counts.  Call on the admin server's loop, which must be
 * the queue manager's.  Can't fail (a copy that fails to allocate
 * leaves the queue requests off).
 */
void relay_admin_set_queue(struct relay_admin *a, struct queue_sched *qs,
    const char *spool_dir);
/*
 * relay_admin_stop - close the listener and every connection; cb(arg) runs
 * once all handles are closed, then the server is freed.  cb may be NULL.
 */
void relay_admin_stop(struct relay_admin *a, void (*cb)(void *arg), void *arg);

/* ---- deliver.c: the delivery agent -------------------------------------- */

/*
 * The queue manager's deliver and bounce callbacks (arg: the agent).  The
 * agent resolves next hops with dns_resolvers (or /etc/resolv.conf), speaks
 * SMTP with STARTTLS per smtp_tls_security_level, and queues bounces on
 * spool.  It reads cfg at each use: relay_agent_set_config switches it to a
 * reloaded configuration (the resolver and TLS context stay).
 */
struct relay_agent;

struct relay_agent *relay_agent_new(uv_loop_t *loop, const struct relay_config *cfg,
    struct queue_spool *spool);
void relay_agent_set_config(struct relay_agent *ag, const struct relay_config *cfg);
void relay_agent_deliver(void *arg, struct queue_sched *qs, const struct queue_job *job);
void relay_agent_bounce(void *arg, const char *id, const char *path,
    const struct queue_envelope *env, const struct queue_failed *failed,
    size_t nfailed);
/* relay_agent_free - after the queue manager has stopped.  NULL ok. */
void relay_agent_free(struct relay_agent *ag);

#endif
