/*
 * keys.h - managed DKIM keys in relay/ (issue 5): where their state lives
 * and how the daemon serves, checks and rotates them.
 *
 *   clock.c	relay_clock_now: time(), or SIGNET_CLOCK_FILE (testing aid)
 *   keystore.c	the key store: tenants and managed domains, in local files
 *		(embedded default) or in Redis (keystore = redis://...), with
 *		private keys encrypted in Redis (AES-256-GCM)
 *   dnscheck.c	synchronous DNS lookups (c-ares) for `dkim enable` and the
 *		publication gate: TXT and CNAME at a name, CNAMEs followed
 *   dnsd.c	the built-in authoritative DNS server (dns_listen) for the
 *		_domainkey.<initial domain> zones, UDP and TCP
 *   keymgr.c	the daemon's side: an in-memory index of every managed
 *		domain, the signing lookup, the rotation thread, metrics
 *   ctl_keys.c	signetctl tenant/domain/dkim enable|disable|rotate|show,
 *		dns zone
 *
 * dkim/ holds the model and the rotation state machine (struct
 * dkim_mdomain, dkim_rotation_plan); nothing here decides a transition by
 * itself.
 */
#ifndef SIGNET_RELAY_KEYS_H
#define SIGNET_RELAY_KEYS_H

#include <stdint.h>
#include <uv.h>

#include "dkim/dkim.h"
#include "relay/relay.h"

/* ---- clock.c ------------------------------------------------------------ */

/*
 * relay_clock_now - unix seconds: time(NULL), or, when the environment
 * variable SIGNET_CLOCK_FILE names a file, the decimal number in that file
 * (read on every call, so a test moves time by rewriting it).  A testing
 * aid: an unreadable or malformed file falls back to time(NULL) with one
 * warning on stderr.  Thread-safe.
 */
int64_t relay_clock_now(void);
/* relay_mono_ms - CLOCK_MONOTONIC in milliseconds (timeouts, ticks). */
int64_t relay_mono_ms(void);
/* relay_sleep_ms - sleep ms milliseconds (<= 0: not at all); an
 * interrupted sleep goes on with the rest. */
void relay_sleep_ms(int64_t ms);

/* ---- keystore.c --------------------------------------------------------- */

/*
 * A tenant: an organisation with its initial domain (in the operator's
 * zone) and how its mail is recognised: SMTP AUTH user names and client
 * networks (smtp_netlist syntax, as mynetworks).
 */
struct relay_tenant {
	char name[DKIM_TENANT_MAX];
	char initial_domain[DKIM_DOMAIN_MAX];
	char *users;               /* blank-separated AUTH users, or "" */
	char *networks;            /* blank-separated networks, or "" */
	uint64_t version;
};
void relay_tenant_clear(struct relay_tenant *t);  /* frees users/networks */

struct relay_keystore;

/*
 * relay_keystore_open - url is "redis://HOST:PORT/DB" (port 6379 and db 0
 * when left out) or a directory ("file:DIR" or a plain path, created mode
 * 0700 when missing).  secret_file ("" or NULL: none) holds the 32-byte
 * key-encryption key (raw, or 64 hex digits, or base64 of 32 bytes); it is
 * required for Redis and refused if group- or world-readable.  node names
 * this node in locks and history (NULL: hostname:pid).  0 or -errno with a
 * reason in err.  Connecting to Redis is lazy: an unreachable Redis is not
 * an error here.
 */
int relay_keystore_open(const char *url, const char *secret_file,
    const char *node, struct relay_keystore **out, char *err, size_t errlen);
void relay_keystore_close(struct relay_keystore *ks);
/* relay_keystore_is_redis - 1 for Redis, 0 for the file store. */
int relay_keystore_is_redis(const struct relay_keystore *ks);
/*
 * relay_keystore_ping - 0 when the store answers (always for files), else
 * -errno with the reason in err.
 */
int relay_keystore_ping(struct relay_keystore *ks, char *err, size_t errlen);

/*
 * Domains.  get: 0, -ENOENT, or -EIO/-ECONNREFUSED/... with err.  with_keys
 * also loads (and, from Redis, decrypts) both private keys into
 * slot[].priv.  put: compare-and-set: writes d only if the stored version
 * equals expect_version (0: the domain must not exist yet), then sets
 * d->version = expect_version + 1; -ESTALE when someone else wrote first.
 * Private keys are written only when slot[].priv is set (a put without
 * keys keeps the stored ones, which must then be of the same generation
 * and public key: otherwise -ESTALE, so a copy read before the domain was
 * removed and provisioned again can't pair old public with new private
 * keys).
 * event (may be NULL) is appended to the domain's history as
 * "<unix time> <node> <event>" (at most 100 entries kept).  Every
 * successful put and del is announced to watchers (relay_keystore_watch).
 */
int relay_keystore_get_domain(struct relay_keystore *ks, const char *domain,
    int with_keys, struct dkim_mdomain *out, char *err, size_t errlen);
int relay_keystore_put_domain(struct relay_keystore *ks, struct dkim_mdomain *d,
    uint64_t expect_version, const char *event, char *err, size_t errlen);
int relay_keystore_del_domain(struct relay_keystore *ks, const char *domain,
    char *err, size_t errlen);
/* relay_keystore_get_key - just slot's private key (for the signing path),
 * which must be of generation gen: 0, -ENOENT, -ESTALE (other generation). */
int relay_keystore_get_key(struct relay_keystore *ks, const char *domain,
    int slot, uint32_t gen, struct dkim_key **out, char *err, size_t errlen);
/* relay_keystore_history - the history lines, oldest first, one cb each. */
int relay_keystore_history(struct relay_keystore *ks, const char *domain,
    int (*cb)(void *arg, const char *line), void *arg, char *err,
    size_t errlen);
/*
 * A growing list of names: relay_names_add is the callback the list and
 * history functions below take (it keeps a copy; out of memory aborts, as
 * with the relay_x* allocators, so it always returns 0).  Start from a
 * zeroed struct; relay_names_free leaves it zeroed again.
 */
struct relay_names {
	char **v;
	size_t n, cap;
};
int relay_names_add(void *arg, const char *name);
void relay_names_sort(struct relay_names *l);
void relay_names_free(struct relay_names *l);

/* relay_keystore_list_domains - cb(arg, domain) for each, in no order;
 * stops at a nonzero cb result and returns it. */
int relay_keystore_list_domains(struct relay_keystore *ks,
    int (*cb)(void *arg, const char *domain), void *arg, char *err,
    size_t errlen);

/* Tenants: the same rules (put is compare-and-set on version). */
int relay_keystore_get_tenant(struct relay_keystore *ks, const char *name,
    struct relay_tenant *out, char *err, size_t errlen);
int relay_keystore_put_tenant(struct relay_keystore *ks, struct relay_tenant *t,
    uint64_t expect_version, char *err, size_t errlen);
int relay_keystore_list_tenants(struct relay_keystore *ks,
    int (*cb)(void *arg, const char *name), void *arg, char *err,
    size_t errlen);

/*
 * relay_keystore_lock - take the transition lock for name (a domain) for
 * ttl_ms: 0 (held, token filled: pass it to unlock), -EBUSY (another node
 * holds it), -errno.  Redis: SET NX PX with a random token, released only
 * by its holder.  Files: an flock()ed lock file per store plus the same
 * token/expiry in a file, so two processes on one host exclude each other.
 */
#define RELAY_LOCK_TOKEN 48
int relay_keystore_lock(struct relay_keystore *ks, const char *name,
    unsigned ttl_ms, char token[RELAY_LOCK_TOKEN], char *err, size_t errlen);
void relay_keystore_unlock(struct relay_keystore *ks, const char *name,
    const char token[RELAY_LOCK_TOKEN]);

/*
 * relay_keystore_watch - wait up to timeout_ms for changes made by anyone
 * (this process included) and call cb(arg, domain) for each changed
 * domain, or cb(arg, NULL) for "reload everything" (first call, reconnect
 * after Redis was away, file store changed in a way it can't pin down).
 * Redis: pub/sub on channel "signet:changes" over a connection of its
 * own; files: a serial file bumped on every write, then the domain files
 * newer than the last look.  Returns 0, or -errno when the store is
 * unreachable (after sleeping up to timeout_ms).  Call from one thread.
 */
int relay_keystore_watch(struct relay_keystore *ks, unsigned timeout_ms,
    void (*cb)(void *arg, const char *domain), void *arg);

/* ---- dnscheck.c --------------------------------------------------------- */

/*
 * The outcome of one lookup: status 0 (answer), -ENOENT (NXDOMAIN or
 * NODATA: the name has no such record), -EAGAIN (SERVFAIL, timeout,
 * refused: try later).  cname is the last CNAME target followed ("" if
 * none); txt the first TXT record, its strings concatenated (NULL if none).
 */
struct relay_dns_answer {
	int status;
	char cname[DKIM_DOMAIN_MAX];
	char *txt;                 /* malloc'd */
	char detail[160];          /* "NXDOMAIN from 127.0.0.1", ... */
};
void relay_dns_answer_clear(struct relay_dns_answer *a);

/*
 * relay_dns_lookup - a synchronous query (recursion desired) of type
 * "TXT" or "CNAME" for name through resolvers (dns_resolvers items; empty:
 * /etc/resolv.conf), within timeout_ms.  For TXT, CNAMEs in the answer are
 * followed and the final target reported.  Fills *ans; returns ans->status.
 * Thread-safe (a c-ares channel per call).
 */
int relay_dns_lookup(const struct relay_strlist *resolvers, const char *name,
    const char *type, unsigned timeout_ms, struct relay_dns_answer *ans);

/* ---- dnsd.c: the built-in authoritative server -------------------------- */

/*
 * What the key index knows about a query name (lower case, no trailing
 * dot): zone is the _domainkey.<initial domain> apex the name falls under
 * ("" when none: the server answers REFUSED); exists says whether the name
 * itself has records (the apex always does); txt is its TXT record (NULL
 * for the apex or a name without one).  serial is the zone's SOA serial.
 */
struct relay_dnsd_answer {
	char zone[DKIM_DOMAIN_MAX];
	int exists;
	char *txt;                 /* malloc'd, freed by the server */
	uint32_t serial;
};
typedef void (*relay_dnsd_lookup_fn)(void *arg, const char *qname,
    struct relay_dnsd_answer *ans);

struct relay_dnsd_config {
	const char *listen;        /* dns_listen: "ADDR:PORT" (UDP and TCP) */
	const struct relay_strlist *ns; /* dns_ns: NS targets of every zone */
	const char *hostmaster;    /* SOA RNAME as a mail address or name */
	uint32_t ttl;              /* TXT, NS, SOA TTL (dns_ttl) */
	uint32_t negative_ttl;     /* SOA minimum (dns_negative_ttl) */
	relay_dnsd_lookup_fn lookup;
	void *arg;
};

/*
 * relay_dnsd_respond - the answer to one query packet (pure: no I/O, the
 * fuzzed part).  tcp: no 512/EDNS size limit (up to outmax); UDP answers
 * that don't fit the client's size (512, or its EDNS0 payload size) go out
 * truncated (TC=1, no records).  Returns the response length, or 0 when
 * the packet gets no answer at all (not a query, too short to echo).
 * AA set for names in a zone; REFUSED outside; FORMERR for malformed
 * questions; NOTIMP for opcodes other than QUERY; NXDOMAIN and NODATA with
 * the SOA in the authority section; ANY answered like TXT.
 */
size_t relay_dnsd_respond(const struct relay_dnsd_config *cfg,
    const uint8_t *q, size_t qlen, int tcp, uint8_t *out, size_t outmax);

struct relay_dnsd;
/* relay_dnsd_start - bind UDP and TCP on cfg->listen on loop.  cfg must
 * outlive the server.  0 or -errno with err. */
int relay_dnsd_start(uv_loop_t *loop, const struct relay_dnsd_config *cfg,
    struct relay_dnsd **out, char *err, size_t errlen);
/* relay_dnsd_stop - close everything; the memory goes once handles close. */
void relay_dnsd_stop(struct relay_dnsd *d);

/* ---- keymgr.c: the daemon side ------------------------------------------ */

struct relay_keymgr;

/*
 * relay_keymgr_start - open cfg's key store, load every tenant and domain
 * into the index (metadata only: private keys are loaded on first use and
 * cached), make sure the tenant of cfg->initial_domain exists (name
 * "default", provisioned with its initial-domain key on first start), and
 * start the rotation thread, which every dkim_check_interval watches for
 * changes, runs DNS checks and carries out due transitions under the
 * store's lock.  With no initial_domain and no tenants in the store it
 * still runs (nothing managed).  0 or -errno with err.
 */
int relay_keymgr_start(const struct relay_config *cfg,
    struct relay_keymgr **out, char *err, size_t errlen);
/* relay_keymgr_reconfigure - new policy settings (after SIGHUP). */
void relay_keymgr_reconfigure(struct relay_keymgr *km,
    const struct relay_config *cfg);
void relay_keymgr_stop(struct relay_keymgr *km);

/*
 * relay_keymgr_sign_lookup - the managed part of relay_sign_lookup: find
 * rq's tenant (AUTH user, then client network, then "default"), then
 * apply the rules of issue 5 (enabled / default signing / unprovisioned per
 * dkim_unprovisioned).  Returns as smtp_sign_lookup_fn; 0 also when
 * nothing managed applies.  Thread-safe; may read a private key from the
 * store on a cache miss.
 */
int relay_keymgr_sign_lookup(struct relay_keymgr *km,
    const struct smtp_sign_request *rq, struct dkim_sign_params *out,
    int max, char *reason, size_t reasonlen);
/* relay_keymgr_dns_lookup - relay_dnsd_lookup_fn over the index; arg is km. */
void relay_keymgr_dns_lookup(void *arg, const char *qname,
    struct relay_dnsd_answer *ans);
/* relay_keymgr_current - the running manager (NULL: none), for
 * relay_sign_lookup.  Set by relay_keymgr_start, cleared by stop. */
struct relay_keymgr *relay_keymgr_current(void);

/* relay_keymgr_policy - cfg's dkim_* settings as a rotation policy. */
void relay_keymgr_policy(const struct relay_config *cfg,
    struct dkim_rotation_policy *p);

/* ---- metrics (keymgr.c feeds them, metrics.c renders them) -------------- */

/*
 * Managed-key metrics, lock-free, any thread:
 *   signet_dkim_signatures_total{slot,mode}  relay_metrics_dkim_signature
 *   signet_dkim_transitions_total{step}      relay_metrics_dkim_transition
 *	(step "confirm", "switch", "replace" or "rotate_now"; others ignored)
 *   signet_dkim_gate_holds_total             relay_metrics_dkim_gate_holds
 *   signet_dkim_domains{phase}, signet_dkim_switches_held (= pending),
 *   signet_dkim_domains_unconfirmed, signet_dkim_active_key_age_seconds_max
 *					      relay_metrics_dkim_domains
 *   signet_dkim_key_cache_hits_total, _misses_total
 *					      relay_metrics_dkim_key_cache
 *   signet_keystore_up                       relay_metrics_keystore_up
 */
enum relay_dkim_mode {
	RELAY_DKIM_MODE_ALIGNED,          /* d=<domain>, s=selectorN */
	RELAY_DKIM_MODE_DEFAULT,          /* d=<initial>, s=selectorN-enc */
	RELAY_DKIM_MODE_INITIAL,          /* the tenant's own key */
};
void relay_metrics_dkim_signature(int slot, enum relay_dkim_mode mode);
void relay_metrics_dkim_transition(const char *step);
void relay_metrics_dkim_gate_holds(uint64_t n);
/* phase[]: domains per enum dkim_phase; key_age_max: seconds since the
 * oldest signing key was created (0: none). */
void relay_metrics_dkim_domains(const uint64_t phase[DKIM_NPHASES],
    uint64_t unconfirmed, int64_t key_age_max);
void relay_metrics_dkim_key_cache(int hit);
void relay_metrics_keystore_up(int up);

/* relay_keymgr_stats - a snapshot of km's index and key cache (tests). */
struct relay_keymgr_stats {
	size_t tenants, domains;
	size_t cache_keys, cache_capacity;
	uint64_t cache_hits, cache_misses;
	uint32_t serial;           /* SOA serial of the zones */
	int keystore_up;
	unsigned long ticks;       /* rotation ticks done */
};
void relay_keymgr_stats(struct relay_keymgr *km, struct relay_keymgr_stats *st);

#endif
