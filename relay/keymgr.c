/*
 * keymgr.c - the daemon's side of managed keys (issue 5): an in-memory
 * index of every tenant and managed domain, the signing lookup the SMTP
 * workers call, the answers of the built-in DNS server, and the rotation
 * thread that follows the key store and carries out due transitions.
 *
 * The index holds metadata only (no private keys): a hash table of
 * domains, one of record names ("selectorN-enc(domain)._domainkey.
 * <initial>", both slots) for the DNS server, and the tenants with their
 * AUTH users, parsed networks and zone apexes ("_domainkey.<initial>").
 * A pthread rwlock guards it: SMTP worker threads and the DNS server (on
 * the main loop) read, only the rotation thread writes.  Every change
 * bumps the SOA serial.  A full reload builds a new index without the lock
 * and swaps it in; a single domain's change replaces its entry in place.
 *
 * Private keys come from a bounded cache of parsed struct dkim_key, keyed
 * by (domain, slot, generation, hash of the public key: a domain removed
 * and provisioned again restarts at generation 1), in shards with a mutex each and CLOCK
 * (approximately LRU) eviction.  A miss reads the key from the store on
 * the SMTP worker's thread (one file read, or one Redis GET and an
 * AES-GCM decryption): the rare blocking call on the signing path, done
 * outside the index lock; the rotation thread prefetches the active key of
 * every domain it sees change, so a switch does not cause misses, and
 * after every full load of the index it warms the cache with every
 * domain's signing key (km_warm_step), so a restart does not either.  The
 * signing path has a key store handle of its own, which worker threads
 * share: relay_keystore_get_key only reads files (file store) or runs one
 * command on the store's mutex-guarded connection (Redis), and the key
 * parsing (the slow part: ~0.4 ms for OpenSSL 3's PKCS#8 decoding) runs
 * in parallel.
 *
 * The rotation thread waits on relay_keystore_watch (at most KM_WATCH_MS
 * at a time, so that stop is prompt), applies the changes it reports, and
 * every dkim_check_interval plans every domain (dkim_rotation_plan with
 * relay_clock_now), runs the DNS checks the gate needs (at most
 * KM_DNS_CHECKS_PER_TICK per tick, least recently checked first) and
 * carries out due steps: lock(domain) -> fresh copy -> DNS checks ->
 * re-plan -> apply -> put (compare-and-set on version, with the history
 * event) -> unlock.  -EBUSY and -ESTALE mean another node does it.  While
 * the store is unreachable it makes no transition and signing goes on with
 * the keys already cached.  A long tick (slow DNS) stops starting DNS
 * checks after KM_DNS_BUDGET_MS and keeps following the other nodes'
 * changes between two domains.
 *
 * Signing (relay_keymgr_sign_lookup): the out[] strings (d=, s=) live in
 * thread-local buffers, valid until the thread's next lookup, which is all
 * smtp/ needs (it copies them in dkim_signer_add); the header list and
 * canonicalization come from the configuration in force, whose copies are
 * kept until stop.  A key that can't be read from the store on a miss
 * sends the message unsigned (logged): refusing it would bounce mail for
 * what is usually a passing store outage.
 *
 * On SIGHUP (relay_keymgr_reconfigure) the rotation policy,
 * dkim_unprovisioned, tenant_lookup, canonicalization, headers,
 * dns_resolvers and dkim_check_interval change at once; keystore,
 * keystore_secret_file and dkim_key_cache_size need a restart.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "relay/keys.h"

#define KM_LOCK_TTL_MS 30000       /* transition lock */
#define KM_DNS_TIMEOUT_MS 2000     /* one gate lookup */
#define KM_DNS_CHECKS_PER_TICK 32  /* domains DNS-checked per tick */
#define KM_DNS_BUDGET_MS 10000     /* and no new check after this long */
#define KM_WATCH_MS 500            /* longest wait in watch */
#define KM_CHANGES_MAX 10000       /* past this, reload everything */
#define KM_CACHE_SHARDS 64
#define KM_STEPS_MAX 4             /* steps per domain per tick */

/* ---- a string-keyed hash table ------------------------------------------- */

struct km_node {
	struct km_node *next;
	uint32_t hash;
	const char *key;           /* points into val */
	void *val;
};

struct km_map {
	struct km_node **b;
	size_t nb;                 /* 0 or a power of 2 */
	size_t n;
};

/* km_hash - FNV-1a over a NUL-terminated string. */
static uint32_t
km_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

/* km_map_grow - double the buckets (64 at first). */
static void
km_map_grow(struct km_map *m)
{
	size_t nb = m->nb != 0 ? m->nb * 2 : 64, i;
	struct km_node **b, *n, *next;

	b = relay_xcalloc(nb, sizeof(*b));
	for (i = 0; i < m->nb; i++)
		for (n = m->b[i]; n != NULL; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

/* km_map_put - add key -> val (key must live as long as the entry). */
static void
km_map_put(struct km_map *m, const char *key, void *val)
{
	struct km_node *n;

	if (m->n >= m->nb)
		km_map_grow(m);
	n = relay_xmalloc(sizeof(*n));
	n->hash = km_hash(key);
	n->key = key;
	n->val = val;
	n->next = m->b[n->hash & (m->nb - 1)];
	m->b[n->hash & (m->nb - 1)] = n;
	m->n++;
}

/* km_map_get - the value of key (the newest, if several); NULL if none. */
static void *
km_map_get(const struct km_map *m, const char *key)
{
	const struct km_node *n;
	uint32_t h;

	if (m->nb == 0)
		return NULL;
	h = km_hash(key);
	for (n = m->b[h & (m->nb - 1)]; n != NULL; n = n->next)
		if (n->hash == h && strcmp(n->key, key) == 0)
			return n->val;
	return NULL;
}

/* km_map_del - remove the node key -> val, if there is one. */
static void
km_map_del(struct km_map *m, const char *key, const void *val)
{
	struct km_node **pp, *n;
	uint32_t h;

	if (m->nb == 0)
		return;
	h = km_hash(key);
	for (pp = &m->b[h & (m->nb - 1)]; (n = *pp) != NULL; pp = &n->next)
		if (n->val == val && n->hash == h && strcmp(n->key, key) == 0) {
			*pp = n->next;
			free(n);
			m->n--;
			return;
		}
}

/* km_map_free - drop the nodes (not the values). */
static void
km_map_free(struct km_map *m)
{
	struct km_node *n, *next;
	size_t i;

	for (i = 0; i < m->nb; i++)
		for (n = m->b[i]; n != NULL; n = next) {
			next = n->next;
			free(n);
		}
	free(m->b);
	memset(m, 0, sizeof(*m));
}

/* ---- tenants ------------------------------------------------------------- */

struct km_tenant {
	struct km_tenant *next;    /* in name order */
	char *name;
	char *initial;
	char *apex;                /* "_domainkey.<initial>" */
	struct smtp_netlist *nets; /* NULL: none */
};

struct km_tenants {
	struct km_tenant *list;
	struct km_map byname;
	struct km_map users;       /* AUTH user -> tenant (first one wins) */
	struct km_map apexes;      /* zone apex -> tenant */
	size_t n;
};

static void
km_tenants_free(struct km_tenants *tt)
{
	struct km_tenant *t, *next;

	if (tt == NULL)
		return;
	for (t = tt->list; t != NULL; t = next) {
		next = t->next;
		free(t->name);
		free(t->initial);
		free(t->apex);
		smtp_netlist_free(t->nets);
		free(t);
	}
	/* users' keys point into the user strings kept in byname's values */
	km_map_free(&tt->byname);
	km_map_free(&tt->apexes);
	if (tt->users.nb != 0) {
		struct km_node *n;
		size_t i;

		for (i = 0; i < tt->users.nb; i++)
			for (n = tt->users.b[i]; n != NULL; n = n->next)
				free((char *)(uintptr_t)n->key);
	}
	km_map_free(&tt->users);
	free(tt);
}

/*
 * km_tenants_add - index tenant rt (tenants must come in name order to keep
 * the network lookup deterministic: the list is kept in insertion order).
 */
static void
km_tenants_add(struct km_tenants *tt, const struct relay_tenant *rt,
    struct km_tenant **tail)
{
	struct km_tenant *t;
	char err[256], *u, *p, *save = NULL;

	t = relay_xcalloc(1, sizeof(*t));
	t->name = relay_xstrdup(rt->name);
	t->initial = relay_xstrdup(rt->initial_domain);
	if (asprintf(&t->apex, "_domainkey.%s", rt->initial_domain) < 0)
		relay_panic("out of memory");
	if (rt->networks != NULL && rt->networks[0] != '\0' &&
	    smtp_netlist_parse(rt->networks, &t->nets, err, sizeof(err)) != 0) {
		relay_log(LOG_WARNING, "dkim: tenant %s: networks: %s", rt->name,
		    err);
		t->nets = NULL;
	}
	if (*tail == NULL)
		tt->list = t;
	else
		(*tail)->next = t;
	*tail = t;
	tt->n++;
	km_map_put(&tt->byname, t->name, t);
	if (km_map_get(&tt->apexes, t->apex) == NULL)
		km_map_put(&tt->apexes, t->apex, t);
	if (rt->users == NULL)
		return;
	p = relay_xstrdup(rt->users);
	for (u = strtok_r(p, " \t,", &save); u != NULL;
	    u = strtok_r(NULL, " \t,", &save)) {
		if (km_map_get(&tt->users, u) != NULL) {
			relay_log(LOG_WARNING, "dkim: AUTH user %s is in more "
			    "than one tenant; %s ignored", u, t->name);
			continue;
		}
		km_map_put(&tt->users, relay_xstrdup(u), t);
	}
	free(p);
}

/* ---- domains ------------------------------------------------------------- */

/* What the index keeps of a managed domain: dkim_mdomain minus keys. */
struct km_dom {
	char *domain, *tenant, *initial, *held_why;
	char *rname[2];            /* record names of slots 1 and 2 */
	int enabled, active, rotate_requested, next_bits;
	enum dkim_phase phase;
	int64_t phase_since, last_switch, held_since, dns_checked;
	uint64_t version;
	struct dkim_slot slot[2];  /* pubkey owned; priv always NULL */
	atomic_int noted;          /* "not yet through the gate" logged */
};

static void
km_dom_free(struct km_dom *e)
{
	if (e == NULL)
		return;
	free(e->domain);
	free(e->tenant);
	free(e->initial);
	free(e->held_why);
	free(e->rname[0]);
	free(e->rname[1]);
	free(e->slot[0].pubkey);
	free(e->slot[1].pubkey);
	free(e);
}

/* km_dom_new - the index entry for d; NULL if d's names are unusable. */
static struct km_dom *
km_dom_new(const struct dkim_mdomain *d)
{
	char name[DKIM_DOMAIN_MAX + 80];
	struct km_dom *e;
	int i;

	if (d->active != 1 && d->active != 2)
		return NULL;
	e = relay_xcalloc(1, sizeof(*e));
	e->domain = relay_xstrdup(d->domain);
	e->tenant = relay_xstrdup(d->tenant);
	e->initial = relay_xstrdup(d->initial_domain);
	e->held_why = relay_xstrdup(d->held_why);
	e->enabled = d->enabled;
	e->active = d->active;
	e->rotate_requested = d->rotate_requested;
	e->next_bits = d->next_bits;
	e->phase = d->phase;
	e->phase_since = d->phase_since;
	e->last_switch = d->last_switch;
	e->held_since = d->held_since;
	e->dns_checked = d->dns_checked;
	e->version = d->version;
	for (i = 0; i < 2; i++) {
		e->slot[i] = d->slot[i];
		e->slot[i].pubkey = relay_xstrdup(d->slot[i].pubkey != NULL ?
		    d->slot[i].pubkey : "");
		e->slot[i].priv = NULL;
		e->slot[i].privlen = 0;
		if (dkim_mdomain_record_name(d, i + 1, name, sizeof(name)) != 0) {
			km_dom_free(e);
			return NULL;
		}
		e->rname[i] = relay_xstrdup(name);
	}
	return e;
}

/*
 * km_dom_md - fill md from e for the pure functions of dkim/ (plan, gate,
 * identity, TXT).  md's slot pubkeys point into e: never clear md, and use
 * it only while e is held.
 */
static void
km_dom_md(const struct km_dom *e, struct dkim_mdomain *md)
{
	dkim_mdomain_init(md);
	snprintf(md->domain, sizeof(md->domain), "%s", e->domain);
	snprintf(md->tenant, sizeof(md->tenant), "%s", e->tenant);
	snprintf(md->initial_domain, sizeof(md->initial_domain), "%s",
	    e->initial);
	snprintf(md->held_why, sizeof(md->held_why), "%s", e->held_why);
	md->enabled = e->enabled;
	md->active = e->active;
	md->rotate_requested = e->rotate_requested;
	md->next_bits = e->next_bits;
	md->phase = e->phase;
	md->phase_since = e->phase_since;
	md->last_switch = e->last_switch;
	md->held_since = e->held_since;
	md->dns_checked = e->dns_checked;
	md->version = e->version;
	md->slot[0] = e->slot[0];
	md->slot[1] = e->slot[1];
}

struct km_index {
	struct km_map domains;     /* domain -> km_dom */
	struct km_map records;     /* record name -> km_dom */
};

static void
km_index_add(struct km_index *ix, struct km_dom *e)
{
	km_map_put(&ix->domains, e->domain, e);
	km_map_put(&ix->records, e->rname[0], e);
	km_map_put(&ix->records, e->rname[1], e);
}

static void
km_index_remove(struct km_index *ix, struct km_dom *e)
{
	km_map_del(&ix->domains, e->domain, e);
	km_map_del(&ix->records, e->rname[0], e);
	km_map_del(&ix->records, e->rname[1], e);
}

static void
km_index_free(struct km_index *ix)
{
	struct km_node *n;
	size_t i;

	if (ix == NULL)
		return;
	for (i = 0; i < ix->domains.nb; i++)
		for (n = ix->domains.b[i]; n != NULL; n = n->next)
			km_dom_free(n->val);
	km_map_free(&ix->domains);
	km_map_free(&ix->records);
	free(ix);
}

/* ---- the key cache ------------------------------------------------------- */

struct km_centry {
	struct km_centry *next;    /* hash chain */
	uint32_t hash;
	uint32_t gen;
	uint32_t pkh;              /* km_hash of the key's p= value */
	int slot;
	int ref;                   /* CLOCK: used since the hand passed */
	struct dkim_key *key;
	char domain[];
};

struct km_shard {
	pthread_mutex_t lock;
	struct km_centry **b;      /* nb buckets, a power of 2 */
	size_t nb;
	struct km_centry **ring;   /* cap entries, the CLOCK */
	size_t cap, n, hand;
};

struct km_cache {
	struct km_shard *shards;
	size_t nshards;            /* a power of 2 */
	size_t cap;                /* sum of the shards' cap */
	_Atomic uint64_t hits, misses;
};

/* km_cache_init - room for at most cap keys in all. */
static void
km_cache_init(struct km_cache *c, size_t cap)
{
	size_t i, per, nb;

	if (cap < 1)
		cap = 1;
	/* shards of at least 16 keys, so that CLOCK has room to work */
	c->nshards = KM_CACHE_SHARDS;
	while (c->nshards > 1 && c->nshards * 16 > cap)
		c->nshards /= 2;
	per = cap / c->nshards;
	/*
	 * Keys don't spread evenly over the shards: give each an eighth more
	 * room (about five standard deviations at 100,000 keys) so that a
	 * working set of cap keys fits without misses.
	 */
	if (c->nshards > 1)
		per += per / 8 + 1;
	c->cap = per * c->nshards;
	c->shards = relay_xcalloc(c->nshards, sizeof(*c->shards));
	for (nb = 8; nb < per; nb *= 2)
		;
	for (i = 0; i < c->nshards; i++) {
		pthread_mutex_init(&c->shards[i].lock, NULL);
		c->shards[i].cap = per;
		c->shards[i].nb = nb;
		c->shards[i].b = relay_xcalloc(nb, sizeof(struct km_centry *));
		c->shards[i].ring = relay_xcalloc(per, sizeof(struct km_centry *));
	}
}

static void
km_cache_free(struct km_cache *c)
{
	size_t i, j;

	for (i = 0; i < c->nshards; i++) {
		struct km_shard *s = &c->shards[i];

		for (j = 0; j < s->n; j++) {
			dkim_key_free(s->ring[j]->key);
			free(s->ring[j]);
		}
		free(s->ring);
		free(s->b);
		pthread_mutex_destroy(&s->lock);
	}
	free(c->shards);
	memset(c, 0, sizeof(*c));
}

/*
 * km_cache_hash - of (domain, slot, gen, pkh).  (domain, slot, gen) alone
 * does not name a key: a domain removed and provisioned again starts at
 * generation 1 again, with new keys; pkh (km_pub_hash of the public key)
 * tells them apart, so that a cached key never signs for a public key it
 * does not match.
 */
static uint32_t
km_cache_hash(const char *domain, int slot, uint32_t gen, uint32_t pkh)
{
	uint32_t h = km_hash(domain);

	h ^= (uint32_t)slot * 0x9e3779b1u;
	h ^= gen * 0x85ebca6bu;
	h ^= pkh * 0xc2b2ae35u;
	h ^= h >> 15;
	return h;
}

/* km_pub_hash - the hash of a slot's public key (its p= value). */
static uint32_t
km_pub_hash(const char *pubkey)
{
	return km_hash(pubkey != NULL ? pubkey : "");
}

/* km_key_hash - km_pub_hash of key's public half (0 if it can't say). */
static uint32_t
km_key_hash(const struct dkim_key *key)
{
	char *txt, *p;
	uint32_t h = 0;

	if ((txt = dkim_key_txt(key)) == NULL)
		return 0;
	if ((p = strstr(txt, "; p=")) != NULL)
		h = km_pub_hash(p + 4);
	free(txt);
	return h;
}

static struct km_centry *
km_shard_find(struct km_shard *s, uint32_t h, const char *domain, int slot,
    uint32_t gen, uint32_t pkh)
{
	struct km_centry *e;

	for (e = s->b[h & (s->nb - 1)]; e != NULL; e = e->next)
		if (e->hash == h && e->slot == slot && e->gen == gen &&
		    e->pkh == pkh && strcmp(e->domain, domain) == 0)
			return e;
	return NULL;
}

/* km_cache_get - a new reference to the cached key, or NULL. */
static struct dkim_key *
km_cache_get(struct km_cache *c, const char *domain, int slot, uint32_t gen,
    uint32_t pkh)
{
	uint32_t h = km_cache_hash(domain, slot, gen, pkh);
	struct km_shard *s = &c->shards[(h >> 24) & (c->nshards - 1)];
	struct km_centry *e;
	struct dkim_key *key = NULL;

	pthread_mutex_lock(&s->lock);
	if ((e = km_shard_find(s, h, domain, slot, gen, pkh)) != NULL) {
		e->ref = 1;
		key = dkim_key_ref(e->key);
	}
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(key != NULL ? &c->hits : &c->misses, 1,
	    memory_order_relaxed);
	return key;
}

/*
 * km_cache_put - keep a reference to key (evicting one when full), under
 * the hash of its own public key, whatever the index said it would be.
 */
static void
km_cache_put(struct km_cache *c, const char *domain, int slot, uint32_t gen,
    struct dkim_key *key)
{
	uint32_t pkh = km_key_hash(key);
	uint32_t h = km_cache_hash(domain, slot, gen, pkh);
	struct km_shard *s = &c->shards[(h >> 24) & (c->nshards - 1)];
	struct km_centry *e, *old, **pp;
	size_t len = strlen(domain) + 1;

	if (s->cap == 0)
		return;
	e = relay_xmalloc(sizeof(*e) + len);
	memcpy(e->domain, domain, len);
	e->hash = h;
	e->slot = slot;
	e->gen = gen;
	e->pkh = pkh;
	e->ref = 0;
	pthread_mutex_lock(&s->lock);
	if (km_shard_find(s, h, domain, slot, gen, pkh) != NULL) {
		pthread_mutex_unlock(&s->lock);
		free(e);
		return;
	}
	e->key = dkim_key_ref(key);
	if (s->n < s->cap) {
		s->ring[s->n++] = e;
	} else {
		/* CLOCK: skip (and clear) recently used entries */
		while (s->ring[s->hand]->ref) {
			s->ring[s->hand]->ref = 0;
			s->hand = (s->hand + 1) % s->cap;
		}
		old = s->ring[s->hand];
		for (pp = &s->b[old->hash & (s->nb - 1)]; *pp != old;
		    pp = &(*pp)->next)
			;
		*pp = old->next;
		dkim_key_free(old->key);
		free(old);
		s->ring[s->hand] = e;
		s->hand = (s->hand + 1) % s->cap;
	}
	e->next = s->b[h & (s->nb - 1)];
	s->b[h & (s->nb - 1)] = e;
	pthread_mutex_unlock(&s->lock);
}

/* km_cache_count - keys held now. */
static size_t
km_cache_count(struct km_cache *c)
{
	size_t i, n = 0;

	for (i = 0; i < c->nshards; i++) {
		pthread_mutex_lock(&c->shards[i].lock);
		n += c->shards[i].n;
		pthread_mutex_unlock(&c->shards[i].lock);
	}
	return n;
}

/* ---- the manager --------------------------------------------------------- */

/* The settings the manager follows; replaced (never changed) on reload. */
struct km_conf {
	struct km_conf *older;     /* retired ones, freed at stop */
	struct dkim_rotation_policy policy;
	int unprov;                /* enum relay_unprovisioned */
	char lookup[4];            /* 'a' auth, 'n' network, in order */
	int nlookup;
	enum dkim_canon hcanon, bcanon;
	char *headers;             /* NULL: dkim_default_headers */
	struct relay_strlist resolvers;
	unsigned check_interval;   /* seconds */
	char *initial_domain;      /* normalized, "" for none */
};

struct relay_keymgr {
	pthread_rwlock_t lock;     /* conf, ix, tt, serial */
	struct km_conf *conf;
	struct km_index *ix;
	struct km_tenants *tt;
	uint32_t serial;

	struct relay_keystore *ks;     /* the rotation thread's */
	struct relay_keystore *sks;    /* the signing path's (any thread) */
	struct km_cache cache;
	char *url;

	pthread_t thread;
	int thread_started;
	atomic_int stop;
	atomic_int store_up;
	atomic_ulong ticks;

	/* rotation thread only */
	int need_default;          /* tenant "default" not yet ensured */
	int warm_pending;          /* fill the key cache from the index */
	struct km_warm *warm;      /* the warm-up's work list, or NULL */
	int reload_all;
	char **changed;
	size_t nchanged, changedcap;
	char down_why[256];
};

static struct relay_keymgr *_Atomic km_current;

static void
km_conf_free(struct km_conf *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->headers);
	for (i = 0; i < c->resolvers.n; i++)
		free(c->resolvers.v[i]);
	free(c->resolvers.v);
	free(c->initial_domain);
	free(c);
}

void
relay_keymgr_policy(const struct relay_config *cfg,
    struct dkim_rotation_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->interval = cfg->dkim_rotation_interval;
	p->lead = cfg->dkim_publish_lead;
	p->retire = cfg->dkim_retire_delay;
	p->dns_check = cfg->dkim_dns_check;
	p->key_bits = (int)cfg->dkim_key_size;
}

/* km_conf_new - what the manager needs of cfg, copied. */
static struct km_conf *
km_conf_new(const struct relay_config *cfg)
{
	struct km_conf *c = relay_xcalloc(1, sizeof(*c));
	char norm[DKIM_DOMAIN_MAX];
	size_t i;

	relay_keymgr_policy(cfg, &c->policy);
	if (c->policy.key_bits < DKIM_KEY_BITS_MIN ||
	    c->policy.key_bits > DKIM_KEY_BITS_MAX)
		c->policy.key_bits = DKIM_KEY_BITS_DEFAULT;
	c->unprov = cfg->dkim_unprovisioned;
	for (i = 0; i < cfg->tenant_lookup.n && c->nlookup < 4; i++) {
		if (strcmp(cfg->tenant_lookup.v[i], "auth") == 0)
			c->lookup[c->nlookup++] = 'a';
		else if (strcmp(cfg->tenant_lookup.v[i], "network") == 0)
			c->lookup[c->nlookup++] = 'n';
	}
	c->hcanon = (enum dkim_canon)cfg->dkim_hcanon;
	c->bcanon = (enum dkim_canon)cfg->dkim_bcanon;
	if (cfg->dkim_headers != NULL)
		c->headers = relay_xstrdup(cfg->dkim_headers);
	c->resolvers.n = cfg->dns_resolvers.n;
	c->resolvers.v = relay_xcalloc(c->resolvers.n + 1, sizeof(char *));
	for (i = 0; i < cfg->dns_resolvers.n; i++)
		c->resolvers.v[i] = relay_xstrdup(cfg->dns_resolvers.v[i]);
	c->check_interval = cfg->dkim_check_interval > 0 ?
	    cfg->dkim_check_interval : 60;
	if (cfg->initial_domain != NULL && cfg->initial_domain[0] != '\0' &&
	    dkim_domain_normalize(cfg->initial_domain, norm, sizeof(norm)) == 0)
		c->initial_domain = relay_xstrdup(norm);
	else
		c->initial_domain = relay_xstrdup("");
	return c;
}

/* km_bump_serial - a new SOA serial (under the write lock). */
static void
km_bump_serial(struct relay_keymgr *km)
{
	uint32_t now = (uint32_t)time(NULL);

	km->serial = now > km->serial ? now : km->serial + 1;
}

/* km_store_state - note whether the store answers; log changes once. */
static void
km_store_state(struct relay_keymgr *km, int up, const char *why)
{
	int was = atomic_exchange(&km->store_up, up);

	relay_metrics_keystore_up(up);
	if (was == up)
		return;
	if (up)
		relay_log(LOG_NOTICE, "dkim: key store reachable again");
	else
		relay_log(LOG_WARNING, "dkim: key store unreachable: %s; "
		    "signing with the keys held, no transitions", why);
}

/*
 * km_store_down - is the failure rc the store being away, rather than a
 * problem with one record (the stores say -EIO for both: a record that
 * does not decode, a broken connection)?  Asks the store when unsure.
 */
static int
km_store_down(struct relay_keystore *ks, int rc)
{
	char err[256];

	if (rc == 0 || rc == -ENOENT || rc == -ESTALE || rc == -EBUSY ||
	    rc == -EINVAL || rc == -EBADMSG || rc <= -1000)
		return 0;
	return relay_keystore_ping(ks, err, sizeof(err)) != 0;
}

/* ---- loading ------------------------------------------------------------- */

/* km_load_tenants - every tenant of the store.  0 or -errno with err. */
static int
km_load_tenants(struct relay_keystore *ks, struct km_tenants **out,
    char *err, size_t errlen)
{
	struct relay_names names = { 0 };
	struct km_tenants *tt;
	struct km_tenant *tail = NULL;
	struct relay_tenant t;
	size_t i;
	int rc;

	*out = NULL;
	if ((rc = relay_keystore_list_tenants(ks, relay_names_add, &names, err,
	    errlen)) < 0) {
		relay_names_free(&names);
		return rc;
	}
	relay_names_sort(&names);
	tt = relay_xcalloc(1, sizeof(*tt));
	for (i = 0; i < names.n; i++) {
		memset(&t, 0, sizeof(t));
		rc = relay_keystore_get_tenant(ks, names.v[i], &t, err, errlen);
		if (rc == -ENOENT) {
			relay_tenant_clear(&t);
			continue;
		}
		if (rc != 0) {
			relay_tenant_clear(&t);
			if (km_store_down(ks, rc)) {
				relay_names_free(&names);
				km_tenants_free(tt);
				return rc;
			}
			relay_log(LOG_WARNING, "dkim: tenant %s: %s; ignored",
			    names.v[i], err);
			continue;
		}
		km_tenants_add(tt, &t, &tail);
		relay_tenant_clear(&t);
	}
	relay_names_free(&names);
	*out = tt;
	return 0;
}

/*
 * km_load_domain - the store's record of name as an index entry: 0 and
 * *out (NULL when malformed: logged), -ENOENT, or -errno with err.
 */
static int
km_load_domain(struct relay_keystore *ks, const char *name,
    struct km_dom **out, char *err, size_t errlen)
{
	struct dkim_mdomain d;
	int rc;

	*out = NULL;
	dkim_mdomain_init(&d);
	rc = relay_keystore_get_domain(ks, name, 0, &d, err, errlen);
	if (rc == 0 && (*out = km_dom_new(&d)) == NULL)
		relay_log(LOG_WARNING, "dkim: %s: unusable record; ignored",
		    name);
	else if (rc != 0 && rc != -ENOENT && !km_store_down(ks, rc)) {
		relay_log(LOG_WARNING, "dkim: %s: %s; ignored", name, err);
		rc = 0;
	}
	dkim_mdomain_clear(&d);
	return rc;
}

/* km_load_all - a new index and tenant set from the store. */
static int
km_load_all(struct relay_keystore *ks, struct km_index **ixp,
    struct km_tenants **ttp, char *err, size_t errlen)
{
	struct relay_names names = { 0 };
	struct km_index *ix;
	struct km_dom *e, *old;
	size_t i;
	int rc;

	*ixp = NULL;
	*ttp = NULL;
	if ((rc = km_load_tenants(ks, ttp, err, errlen)) != 0)
		return rc;
	if ((rc = relay_keystore_list_domains(ks, relay_names_add, &names, err,
	    errlen)) < 0)
		goto fail;
	ix = relay_xcalloc(1, sizeof(*ix));
	for (i = 0; i < names.n; i++) {
		rc = km_load_domain(ks, names.v[i], &e, err, errlen);
		if (rc == -ENOENT || (rc == 0 && e == NULL))
			continue;
		if (rc != 0) {
			km_index_free(ix);
			goto fail;
		}
		if ((old = km_map_get(&ix->domains, e->domain)) != NULL) {
			km_index_remove(ix, old);
			km_dom_free(old);
		}
		km_index_add(ix, e);
	}
	relay_names_free(&names);
	*ixp = ix;
	return 0;
fail:
	relay_names_free(&names);
	km_tenants_free(*ttp);
	*ttp = NULL;
	return rc;
}

/* km_swap_all - install a new index and tenant set; free the old ones. */
static void
km_swap_all(struct relay_keymgr *km, struct km_index *ix,
    struct km_tenants *tt)
{
	struct km_index *oix;
	struct km_tenants *ott;

	pthread_rwlock_wrlock(&km->lock);
	oix = km->ix;
	ott = km->tt;
	km->ix = ix;
	km->tt = tt;
	km_bump_serial(km);
	pthread_rwlock_unlock(&km->lock);
	km_index_free(oix);
	km_tenants_free(ott);
	km->warm_pending = 1;
}

/* km_swap_tenants - install a new tenant set. */
static void
km_swap_tenants(struct relay_keymgr *km, struct km_tenants *tt)
{
	struct km_tenants *ott;

	pthread_rwlock_wrlock(&km->lock);
	ott = km->tt;
	km->tt = tt;
	km_bump_serial(km);
	pthread_rwlock_unlock(&km->lock);
	km_tenants_free(ott);
}

/*
 * km_set_domain - put e (NULL: drop it) in the index as domain name,
 * replacing what was there.
 */
static void
km_set_domain(struct relay_keymgr *km, const char *name, struct km_dom *e)
{
	struct km_dom *old;

	pthread_rwlock_wrlock(&km->lock);
	if ((old = km_map_get(&km->ix->domains, name)) != NULL)
		km_index_remove(km->ix, old);
	if (e != NULL)
		km_index_add(km->ix, e);
	km_bump_serial(km);
	pthread_rwlock_unlock(&km->lock);
	km_dom_free(old);
}

/* km_prefetch - load the active key of e (if it signs) into the cache. */
static void
km_prefetch(struct relay_keymgr *km, const char *domain, int slot,
    uint32_t gen, uint32_t pkh)
{
	struct dkim_key *key;
	char err[256];

	if ((key = km_cache_get(&km->cache, domain, slot, gen, pkh)) != NULL) {
		dkim_key_free(key);
		return;
	}
	if (relay_keystore_get_key(km->ks, domain, slot, gen, &key, err,
	    sizeof(err)) != 0)
		return;
	km_cache_put(&km->cache, domain, slot, gen, key);
	dkim_key_free(key);
}

/* ---- start-up: tenant "default" ------------------------------------------ */

/*
 * km_ensure_default - create tenant "default" for the configured initial
 * domain, with that domain provisioned, if the store has neither.  Two
 * nodes doing it at once: the compare-and-set decides, the loser takes
 * what the winner wrote.  0 or -errno with err.
 */
static int
km_ensure_default(struct relay_keymgr *km, const struct km_conf *c,
    char *err, size_t errlen)
{
	struct relay_tenant t;
	struct dkim_mdomain d;
	struct dkim_key *k1 = NULL, *k2 = NULL;
	char initial[DKIM_DOMAIN_MAX];
	int rc;

	if (c->initial_domain[0] == '\0')
		return 0;
	snprintf(initial, sizeof(initial), "%s", c->initial_domain);
	memset(&t, 0, sizeof(t));
	rc = relay_keystore_get_tenant(km->ks, "default", &t, err, errlen);
	if (rc == -ENOENT) {
		relay_tenant_clear(&t);
		memset(&t, 0, sizeof(t));
		snprintf(t.name, sizeof(t.name), "default");
		snprintf(t.initial_domain, sizeof(t.initial_domain), "%s",
		    initial);
		t.users = relay_xstrdup("");
		t.networks = relay_xstrdup("");
		rc = relay_keystore_put_tenant(km->ks, &t, 0, err, errlen);
		if (rc == 0)
			relay_log(LOG_NOTICE, "dkim: created tenant default "
			    "(initial domain %s)", initial);
		else if (rc == -ESTALE)
			rc = 0;         /* another node made it first */
	} else if (rc == 0 && strcmp(t.initial_domain, initial) != 0) {
		relay_log(LOG_WARNING, "dkim: tenant default has initial domain "
		    "%s in the key store, relay.conf says %s: keeping %s",
		    t.initial_domain, initial, t.initial_domain);
		snprintf(initial, sizeof(initial), "%s", t.initial_domain);
	}
	relay_tenant_clear(&t);
	if (rc != 0)
		return rc;

	dkim_mdomain_init(&d);
	rc = relay_keystore_get_domain(km->ks, initial, 0, &d, err, errlen);
	if (rc == 0) {
		if (strcmp(d.tenant, "default") != 0)
			relay_log(LOG_WARNING, "dkim: initial domain %s is "
			    "provisioned for tenant %s, not default", initial,
			    d.tenant);
		dkim_mdomain_clear(&d);
		return 0;
	}
	dkim_mdomain_clear(&d);
	if (rc != -ENOENT)
		return rc;
	if (dkim_key_generate(DKIM_ALG_RSA_SHA256, c->policy.key_bits, &k1) != 0 ||
	    dkim_key_generate(DKIM_ALG_RSA_SHA256, c->policy.key_bits, &k2) != 0) {
		snprintf(err, errlen, "cannot generate keys");
		rc = -EIO;
		goto out;
	}
	dkim_mdomain_init(&d);
	if (dkim_mdomain_provision(&d, initial, "default", initial, k1, k2,
	    relay_clock_now()) != 0) {
		snprintf(err, errlen, "cannot provision %.200s", initial);
		rc = -EINVAL;
		dkim_mdomain_clear(&d);
		goto out;
	}
	rc = relay_keystore_put_domain(km->ks, &d, 0, "provision", err, errlen);
	if (rc == 0)
		relay_log(LOG_NOTICE, "dkim: provisioned initial domain %s "
		    "(tenant default, %d-bit keys)", initial,
		    c->policy.key_bits);
	else if (rc == -ESTALE)
		rc = 0;
	dkim_mdomain_clear(&d);
out:
	dkim_key_free(k1);
	dkim_key_free(k2);
	return rc;
}

/* ---- the signing path ---------------------------------------------------- */

/* The identity of the last lookup on this thread: out[] points here. */
static _Thread_local char km_tls_d[DKIM_DOMAIN_MAX];
static _Thread_local char km_tls_s[DKIM_SELECTOR_BUFSIZE];

/* What the index said for one message, copied out of the read lock. */
struct km_pick {
	char domain[DKIM_DOMAIN_MAX];  /* whose key */
	int slot;
	uint32_t gen;
	uint32_t pkh;                  /* km_pub_hash of the slot's key */
	enum relay_dkim_mode mode;
	const struct km_conf *conf;    /* lives until stop */
};

/* km_note - log once per entry that its key is not yet signable. */
static void
km_note(struct km_dom *e, const char *what)
{
	if (atomic_exchange(&e->noted, 1) == 0)
		relay_log(LOG_INFO, "dkim: %s: %s", e->domain, what);
}

/* km_tenant_of - rq's tenant, per tenant_lookup, else "default"; NULL. */
static const struct km_tenant *
km_tenant_of(const struct km_tenants *tt, const struct km_conf *c,
    const struct smtp_sign_request *rq)
{
	const struct km_tenant *t;
	int i;

	if (tt == NULL)
		return NULL;
	for (i = 0; i < c->nlookup; i++) {
		if (c->lookup[i] == 'a' && rq->auth_user != NULL &&
		    (t = km_map_get(&tt->users, rq->auth_user)) != NULL)
			return t;
		if (c->lookup[i] == 'n' && rq->client != NULL)
			for (t = tt->list; t != NULL; t = t->next)
				if (t->nets != NULL &&
				    smtp_netlist_match(t->nets, rq->client))
					return t;
	}
	return km_map_get(&tt->byname, "default");
}

/*
 * km_choose - under the read lock: what signs rq.  1 with *pk filled, 0
 * for nothing, -1 to refuse (reason set).
 */
static int
km_choose(struct relay_keymgr *km, const struct smtp_sign_request *rq,
    struct km_pick *pk, char *reason, size_t reasonlen)
{
	const struct km_conf *c = km->conf;
	const struct km_tenant *t;
	struct dkim_mdomain md;
	struct km_dom *e;

	pk->conf = c;
	if ((t = km_tenant_of(km->tt, c, rq)) == NULL)
		return 0;
	e = km_map_get(&km->ix->domains, rq->from_domain);
	if (e != NULL && strcmp(e->tenant, t->name) == 0) {
		if (e->slot[e->active - 1].confirmed != 0) {
			pk->mode = strcmp(e->domain, t->initial) == 0 ?
			    RELAY_DKIM_MODE_INITIAL : e->enabled ?
			    RELAY_DKIM_MODE_ALIGNED : RELAY_DKIM_MODE_DEFAULT;
			goto found;
		}
		km_note(e, "provisioned, but its key has not passed the gate "
		    "yet: treated as unprovisioned");
	}
	switch (c->unprov) {
	case RELAY_UNPROV_REJECT:
		snprintf(reason, reasonlen, "DKIM: %s is not provisioned for "
		    "tenant %s", rq->from_domain, t->name);
		return -1;
	case RELAY_UNPROV_UNSIGNED:
		return 0;
	default:
		break;
	}
	e = km_map_get(&km->ix->domains, t->initial);
	if (e == NULL || strcmp(e->tenant, t->name) != 0)
		return 0;
	if (e->slot[e->active - 1].confirmed == 0) {
		km_note(e, "initial domain's key has not passed the gate yet: "
		    "unprovisioned mail goes out unsigned");
		return 0;
	}
	pk->mode = RELAY_DKIM_MODE_INITIAL;
found:
	/* only what dkim_mdomain_identity reads: this is the hot path */
	memset(md.domain, 0, sizeof(md.domain));
	memset(md.initial_domain, 0, sizeof(md.initial_domain));
	memcpy(md.domain, e->domain, strnlen(e->domain, sizeof(md.domain) - 1));
	memcpy(md.initial_domain, e->initial, strnlen(e->initial,
	    sizeof(md.initial_domain) - 1));
	md.enabled = e->enabled;
	md.active = e->active;
	if (dkim_mdomain_identity(&md, e->active, km_tls_d, km_tls_s) != 0)
		return 0;
	snprintf(pk->domain, sizeof(pk->domain), "%s", e->domain);
	pk->slot = e->active;
	pk->gen = e->slot[e->active - 1].generation;
	pk->pkh = km_pub_hash(e->slot[e->active - 1].pubkey);
	return 1;
}

int
relay_keymgr_sign_lookup(struct relay_keymgr *km,
    const struct smtp_sign_request *rq, struct dkim_sign_params *out,
    int max, char *reason, size_t reasonlen)
{
	struct km_pick pk;
	struct dkim_key *key;
	char err[256];
	int rc;

	if (km == NULL || rq->from_domain == NULL || max <= 0)
		return 0;
	memset(&pk, 0, sizeof(pk));
	pthread_rwlock_rdlock(&km->lock);
	rc = km_choose(km, rq, &pk, reason, reasonlen);
	pthread_rwlock_unlock(&km->lock);
	if (rc <= 0)
		return rc;
	if ((key = km_cache_get(&km->cache, pk.domain, pk.slot, pk.gen,
	    pk.pkh)) == NULL) {
		relay_metrics_dkim_key_cache(0);
		/*
		 * A miss: read the key from the store on this thread -- unless
		 * the rotation thread has found the store unreachable, where
		 * each try could hold this event loop for a connect timeout.
		 */
		if (relay_keystore_is_redis(km->sks) &&
		    !atomic_load(&km->store_up)) {
			relay_log(LOG_WARNING, "dkim: %s: key of selector%d "
			    "(generation %u) not cached and the key store is "
			    "unreachable; sending unsigned", pk.domain, pk.slot,
			    pk.gen);
			return 0;
		}
		rc = relay_keystore_get_key(km->sks, pk.domain, pk.slot, pk.gen,
		    &key, err, sizeof(err));
		if (rc != 0) {
			relay_log(LOG_WARNING, "dkim: %s: cannot load the key of "
			    "selector%d (generation %u): %s; sending unsigned",
			    pk.domain, pk.slot, pk.gen, err);
			return 0;
		}
		km_cache_put(&km->cache, pk.domain, pk.slot, pk.gen, key);
	} else
		relay_metrics_dkim_key_cache(1);
	memset(&out[0], 0, sizeof(out[0]));
	out[0].domain = km_tls_d;
	out[0].selector = km_tls_s;
	out[0].key = key;
	out[0].alg = dkim_key_alg(key);
	out[0].hcanon = pk.conf->hcanon;
	out[0].bcanon = pk.conf->bcanon;
	out[0].headers = pk.conf->headers;
	relay_metrics_dkim_signature(pk.slot, pk.mode);
	return 1;
}

/* ---- the DNS server's lookup --------------------------------------------- */

void
relay_keymgr_dns_lookup(void *arg, const char *qname,
    struct relay_dnsd_answer *ans)
{
	struct relay_keymgr *km = arg;
	struct dkim_mdomain md;
	const struct km_tenant *t;
	struct km_dom *e;
	const char *p;

	memset(ans, 0, sizeof(*ans));
	if (km == NULL || qname == NULL)
		return;
	pthread_rwlock_rdlock(&km->lock);
	ans->serial = km->serial;
	if ((e = km_map_get(&km->ix->records, qname)) != NULL) {
		snprintf(ans->zone, sizeof(ans->zone), "_domainkey.%s",
		    e->initial);
		ans->exists = 1;
		km_dom_md(e, &md);
		ans->txt = dkim_mdomain_txt(&md,
		    strcmp(e->rname[0], qname) == 0 ? 1 : 2);
		goto out;
	}
	for (p = qname; p != NULL; p = (p = strchr(p, '.')) != NULL ? p + 1 :
	    NULL) {
		if (km->tt != NULL &&
		    (t = km_map_get(&km->tt->apexes, p)) != NULL) {
			snprintf(ans->zone, sizeof(ans->zone), "%s", t->apex);
			ans->exists = p == qname;
			break;
		}
	}
out:
	pthread_rwlock_unlock(&km->lock);
}

/* ---- the rotation thread ------------------------------------------------- */

/* km_watch_cb - relay_keystore_watch's callback: collect the changes. */
static void
km_watch_cb(void *arg, const char *domain)
{
	struct relay_keymgr *km = arg;

	if (domain == NULL || km->nchanged >= KM_CHANGES_MAX) {
		km->reload_all = 1;
		return;
	}
	if (km->nchanged == km->changedcap) {
		km->changedcap = km->changedcap != 0 ? km->changedcap * 2 : 16;
		km->changed = relay_xrealloc(km->changed, km->changedcap,
		    sizeof(char *));
	}
	km->changed[km->nchanged++] = relay_xstrdup(domain);
}

static void
km_watch_ignore(void *arg, const char *domain)
{
}

/* km_apply_changes - reload what the watch reported. */
static void
km_apply_changes(struct relay_keymgr *km)
{
	struct km_index *ix;
	struct km_tenants *tt;
	struct km_dom *e;
	char err[256];
	size_t i;
	int rc, any;

	if (km->reload_all) {
		if (km_load_all(km->ks, &ix, &tt, err, sizeof(err)) != 0) {
			km_store_state(km, 0, err);
			goto out;
		}
		km_swap_all(km, ix, tt);
		km->reload_all = 0;
		goto out;
	}
	any = km->nchanged > 0;
	for (i = 0; i < km->nchanged; i++) {
		const char *name = km->changed[i];

		rc = km_load_domain(km->ks, name, &e, err, sizeof(err));
		if (rc == -ENOENT) {
			km_set_domain(km, name, NULL);
		} else if (rc != 0) {
			km_store_state(km, 0, err);
			km->reload_all = 1;
			goto out;
		} else if (e != NULL) {
			int slot = e->active;
			uint32_t gen = e->slot[slot - 1].generation;
			uint32_t pkh = km_pub_hash(e->slot[slot - 1].pubkey);
			int sign = e->slot[slot - 1].confirmed != 0;

			km_set_domain(km, name, e);
			if (sign)
				km_prefetch(km, name, slot, gen, pkh);
		}
	}
	/* tenants are few: take them all again after any change */
	if (any) {
		if (km_load_tenants(km->ks, &tt, err, sizeof(err)) != 0) {
			km_store_state(km, 0, err);
			km->reload_all = 1;
			goto out;
		}
		km_swap_tenants(km, tt);
	}
out:
	for (i = 0; i < km->nchanged; i++)
		free(km->changed[i]);
	km->nchanged = 0;
}

/* km_follow - apply what other writers changed meanwhile (no waiting). */
static void
km_follow(struct relay_keymgr *km)
{
	if (relay_keystore_watch(km->ks, 0, km_watch_cb, km) == 0 &&
	    (km->reload_all || km->nchanged > 0))
		km_apply_changes(km);
}

/* One domain that has something to do this tick. */
struct km_todo {
	char domain[DKIM_DOMAIN_MAX];
	enum dkim_step step;
	int dns;                   /* slots to check: bit 0 = 1, bit 1 = 2 */
	int64_t dns_checked;
	enum dkim_alg alg;         /* REPLACE: the new key's */
	int bits;
};

/*
 * km_dns_needed - the slots (bit mask) whose gate waits on DNS: the
 * active one while unconfirmed, the idle one when a switch is due; only
 * once their publish lead has passed.
 */
static int
km_dns_needed(const struct dkim_mdomain *d, const struct dkim_rotation_policy *p,
    int64_t now)
{
	char why[160];
	int a = d->active, i = 3 - d->active, mask = 0, due;

	if (!p->dns_check)
		return 0;
	if (d->slot[a - 1].confirmed == 0 &&
	    now - d->slot[a - 1].published >= p->lead &&
	    !dkim_gate(d, a, p, now, why, sizeof(why)))
		mask |= 1 << (a - 1);
	due = d->phase == DKIM_PHASE_PENDING ||
	    (d->phase == DKIM_PHASE_STABLE && (d->rotate_requested ||
	    now >= d->last_switch + p->interval));
	if (due && now - d->slot[i - 1].published >= p->lead &&
	    !dkim_gate(d, i, p, now, why, sizeof(why)))
		mask |= 1 << (i - 1);
	return mask;
}

/* km_fmt - snprintf that may cut its output short, on purpose. */
static void __attribute__((format(printf, 3, 4)))
km_fmt(char *dst, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, len, fmt, ap);
	va_end(ap);
}

/* km_dns_check - look slot's key up where verifiers will; note it in d. */
static void
km_dns_check(const struct km_conf *c, struct dkim_mdomain *d, int slot,
    int64_t now)
{
	struct relay_dns_answer a;
	struct dkim_slot *s = &d->slot[slot - 1];
	char qname[DKIM_DOMAIN_MAX + 80];

	d->dns_checked = now;
	if (dkim_mdomain_query_name(d, slot, qname, sizeof(qname)) != 0) {
		d->dns_result = -1;
		snprintf(d->dns_detail, sizeof(d->dns_detail),
		    "selector%d: no usable query name", slot);
		return;
	}
	memset(&a, 0, sizeof(a));
	relay_dns_lookup(&c->resolvers, qname, "TXT", KM_DNS_TIMEOUT_MS, &a);
	if (a.status == 0 && a.txt != NULL &&
	    dkim_txt_matches(a.txt, strlen(a.txt), s->pubkey)) {
		s->seen = now;
		s->seen_via = d->enabled;
		d->dns_result = 1;
		km_fmt(d->dns_detail, sizeof(d->dns_detail),
		    "%s shows selector%d's key", qname, slot);
	} else if (a.status == 0 || a.status == -ENOENT) {
		d->dns_result = 0;
		km_fmt(d->dns_detail, sizeof(d->dns_detail),
		    "%s: %s", qname, a.status == 0 ?
		    "TXT does not carry the expected key" :
		    a.detail[0] != '\0' ? a.detail : "no TXT record");
	} else {
		d->dns_result = -1;
		km_fmt(d->dns_detail, sizeof(d->dns_detail), "%s: %s", qname,
		    a.detail[0] != '\0' ? a.detail : "lookup failed");
	}
	relay_dns_answer_clear(&a);
}

/*
 * km_transact - carry out what todo says for one domain under the store's
 * lock.  0, or -errno when the store failed (not -EBUSY/-ESTALE: another
 * node's business).
 */
static int
km_transact(struct relay_keymgr *km, const struct km_conf *c,
    const struct km_todo *todo, int64_t now)
{
	const struct dkim_rotation_policy *p = &c->policy;
	struct dkim_mdomain d;
	struct dkim_key *newkey = NULL;
	struct km_dom *e, *written = NULL;
	char token[RELAY_LOCK_TOKEN], err[256], why[160], ev[256];
	enum dkim_step st;
	int rc, i, dirty = 0, a, b;
	uint32_t g;

	if (todo->step == DKIM_STEP_REPLACE && (rc = dkim_key_generate(todo->alg,
	    todo->bits, &newkey)) != 0) {
		relay_log(LOG_ERR, "dkim: %s: cannot generate a %d-bit key: %s",
		    todo->domain, todo->bits, dkim_strerror(rc));
		return 0;
	}
	rc = relay_keystore_lock(km->ks, todo->domain, KM_LOCK_TTL_MS, token,
	    err, sizeof(err));
	if (rc != 0) {
		dkim_key_free(newkey);
		if (rc == -EBUSY)
			return 0;       /* another node is at it */
		if (!km_store_down(km->ks, rc)) {
			relay_log(LOG_WARNING, "dkim: %s: lock: %s",
			    todo->domain, err);
			return 0;
		}
		km_store_state(km, 0, err);
		return rc;
	}
	dkim_mdomain_init(&d);
	rc = relay_keystore_get_domain(km->ks, todo->domain, newkey != NULL,
	    &d, err, sizeof(err));
	if (rc != 0)
		goto unlock;
	for (i = 1; i <= 2; i++)
		if (todo->dns & (1 << (i - 1))) {
			km_dns_check(c, &d, i, now);
			dirty = 1;
		}
	for (i = 0; i < KM_STEPS_MAX; i++) {
		why[0] = '\0';
		st = dkim_rotation_plan(&d, p, now, NULL, why, sizeof(why));
		if (st == DKIM_STEP_NONE)
			break;
		if (st == DKIM_STEP_REPLACE && newkey == NULL)
			break;          /* the next tick brings a key */
		a = d.active;
		b = 3 - a;
		if ((rc = dkim_rotation_apply(&d, st, p, now,
		    st == DKIM_STEP_REPLACE ? newkey : NULL)) != 0) {
			relay_log(LOG_ERR, "dkim: %s: %s: %s", todo->domain,
			    dkim_step_name(st), dkim_strerror(rc));
			rc = 0;
			break;
		}
		switch (st) {
		case DKIM_STEP_CONFIRM:
			snprintf(ev, sizeof(ev), "confirm selector%d gen %u", a,
			    d.slot[a - 1].generation);
			break;
		case DKIM_STEP_HOLD:
			km_fmt(ev, sizeof(ev), "hold selector%d gen %u: %s", b,
			    d.slot[b - 1].generation, d.held_why[0] != '\0' ?
			    d.held_why : why);
			break;
		case DKIM_STEP_SWITCH:
			snprintf(ev, sizeof(ev), "switch selector%d->selector%d "
			    "gen %u", a, d.active, d.slot[d.active - 1].generation);
			break;
		default:        /* REPLACE: the slot that was idle */
			snprintf(ev, sizeof(ev), "replace selector%d gen %u", b,
			    d.slot[b - 1].generation);
			break;
		}
		rc = relay_keystore_put_domain(km->ks, &d, d.version, ev, err,
		    sizeof(err));
		if (rc != 0)
			goto unlock;
		/*
		 * The index takes what was written, not d as it stands at the
		 * end: a later step's put may fail after d was changed.
		 */
		dirty = 0;
		km_dom_free(written);
		written = km_dom_new(&d);
		switch (st) {
		case DKIM_STEP_CONFIRM:
			relay_metrics_dkim_transition("confirm");
			relay_log(LOG_INFO, "dkim: %s: selector%d (generation %u) "
			    "confirmed", todo->domain, a,
			    d.slot[a - 1].generation);
			break;
		case DKIM_STEP_HOLD:
			relay_log(LOG_WARNING, "dkim: %s: switch held: %s",
			    todo->domain, why[0] != '\0' ? why : d.held_why);
			break;
		case DKIM_STEP_SWITCH:
			g = d.slot[d.active - 1].generation;
			relay_metrics_dkim_transition("switch");
			relay_log(LOG_NOTICE, "dkim: %s: switch to selector%d "
			    "(generation %u)", todo->domain, d.active, g);
			break;
		default:
			relay_metrics_dkim_transition("replace");
			relay_log(LOG_NOTICE, "dkim: %s: selector%d replaced by "
			    "generation %u", todo->domain, b,
			    d.slot[b - 1].generation);
			dkim_key_free(newkey);
			newkey = NULL;
			break;
		}
	}
	if (dirty) {
		rc = relay_keystore_put_domain(km->ks, &d, d.version, NULL, err,
		    sizeof(err));
		if (rc == 0) {
			km_dom_free(written);
			written = km_dom_new(&d);
		}
	}
unlock:
	relay_keystore_unlock(km->ks, todo->domain, token);
	if (rc == -ESTALE || rc == -ENOENT)
		rc = 0;
	else if (rc != 0 && km_store_down(km->ks, rc))
		km_store_state(km, 0, err);
	else if (rc != 0) {
		relay_log(LOG_WARNING, "dkim: %s: %s", todo->domain, err);
		rc = 0;
	}
	if ((e = written) != NULL)
		km_set_domain(km, todo->domain, e);
	dkim_mdomain_clear(&d);
	dkim_key_free(newkey);
	return rc;
}

/* km_gauges - the domain gauges, after this tick's transitions. */
static void
km_gauges(struct relay_keymgr *km, int64_t now)
{
	uint64_t phase[DKIM_NPHASES] = { 0 }, unconfirmed = 0;
	int64_t age, agemax = 0;
	const struct km_dom *e;
	struct km_node *n;
	size_t k;

	pthread_rwlock_rdlock(&km->lock);
	for (k = 0; k < km->ix->domains.nb; k++)
		for (n = km->ix->domains.b[k]; n != NULL; n = n->next) {
			e = n->val;
			if ((unsigned)e->phase < DKIM_NPHASES)
				phase[e->phase]++;
			if (e->slot[e->active - 1].confirmed == 0)
				unconfirmed++;
			else if ((age = now - e->slot[e->active - 1].created) >
			    agemax)
				agemax = age;
		}
	pthread_rwlock_unlock(&km->lock);
	relay_metrics_dkim_domains(phase, unconfirmed, agemax);
}

static int
km_todo_cmp(const void *x, const void *y)
{
	const struct km_todo *a = x, *b = y;

	/* transitions first, then the least recently DNS-checked */
	if ((a->step != DKIM_STEP_NONE) != (b->step != DKIM_STEP_NONE))
		return a->step != DKIM_STEP_NONE ? -1 : 1;
	return a->dns_checked < b->dns_checked ? -1 :
	    a->dns_checked > b->dns_checked;
}

/* km_tick - plan every domain, DNS-check, carry out due steps, gauges. */
static void
km_tick(struct relay_keymgr *km, const struct km_conf *c)
{
	const struct dkim_rotation_policy *p = &c->policy;
	struct km_todo *todo = NULL, *t;
	size_t ntodo = 0, cap = 0, i, k;
	uint64_t holds = 0;
	int64_t now = relay_clock_now();
	struct dkim_mdomain md;
	struct km_node *n;
	struct km_dom *e;
	enum dkim_step st;
	char why[160];
	int dns, budget = KM_DNS_CHECKS_PER_TICK;
	int64_t t0, last;

	pthread_rwlock_rdlock(&km->lock);
	for (k = 0; k < km->ix->domains.nb; k++)
		for (n = km->ix->domains.b[k]; n != NULL; n = n->next) {
			e = n->val;
			km_dom_md(e, &md);
			why[0] = '\0';
			st = dkim_rotation_plan(&md, p, now, NULL, why,
			    sizeof(why));
			dns = km_dns_needed(&md, p, now);
			if (st == DKIM_STEP_HOLD ||
			    md.phase == DKIM_PHASE_PENDING)
				holds++;        /* held now, or still held */
			if (st == DKIM_STEP_NONE && dns == 0)
				continue;
			if (ntodo == cap) {
				cap = cap != 0 ? cap * 2 : 64;
				todo = relay_xrealloc(todo, cap, sizeof(*todo));
			}
			t = &todo[ntodo++];
			memset(t, 0, sizeof(*t));
			snprintf(t->domain, sizeof(t->domain), "%s", e->domain);
			t->step = st;
			t->dns = dns;
			t->dns_checked = e->dns_checked;
			if (st == DKIM_STEP_REPLACE) {
				t->alg = e->slot[2 - e->active].alg;
				t->bits = e->next_bits > 0 ? e->next_bits :
				    p->key_bits;
			}
		}
	pthread_rwlock_unlock(&km->lock);
	if (holds > 0)
		relay_metrics_dkim_gate_holds(holds);
	if (ntodo > 1)
		qsort(todo, ntodo, sizeof(*todo), km_todo_cmp);
	t0 = last = relay_mono_ms();
	for (i = 0; i < ntodo && !atomic_load(&km->stop); i++) {
		if (!atomic_load(&km->store_up))
			break;          /* no transitions while it is away */
		/* a long tick (slow DNS) still follows other nodes' changes */
		if (relay_mono_ms() - last >= KM_WATCH_MS) {
			km_follow(km);
			last = relay_mono_ms();
		}
		t = &todo[i];
		if (t->dns != 0 && (budget-- <= 0 ||
		    relay_mono_ms() - t0 >= KM_DNS_BUDGET_MS))
			t->dns = 0;
		if (t->step == DKIM_STEP_NONE && t->dns == 0)
			continue;
		if (km_transact(km, c, t, now) != 0)
			break;
	}
	free(todo);
	km_gauges(km, now);
	atomic_fetch_add(&km->ticks, 1);
}

/*
 * The warm-up: after every full load of the index, the rotation thread
 * reads the signing key of every domain into the cache (until the cache is
 * full), a slice at a time between watches, so that SMTP worker threads
 * seldom have to read a key from the store themselves: after a restart
 * the first message of each domain would otherwise pay for it on an event
 * loop.
 */
struct km_warm_item {
	char *domain;
	int slot;
	uint32_t gen, pkh;
};

struct km_warm {
	struct km_warm_item *v;
	size_t n, i;
};

#define KM_WARM_SLICE_MS 20        /* work between two watches */

static void
km_warm_free(struct km_warm *w)
{
	size_t i;

	if (w == NULL)
		return;
	for (i = 0; i < w->n; i++)
		free(w->v[i].domain);
	free(w->v);
	free(w);
}

/* km_warm_list - under the read lock: the signing keys of every domain. */
static struct km_warm *
km_warm_list(struct relay_keymgr *km)
{
	struct km_warm *w = relay_xcalloc(1, sizeof(*w));
	const struct km_map *m;
	const struct km_node *nd;
	const struct km_dom *e;
	size_t b, cap = 0;

	pthread_rwlock_rdlock(&km->lock);
	m = km->ix != NULL ? &km->ix->domains : NULL;
	for (b = 0; m != NULL && b < m->nb; b++)
		for (nd = m->b[b]; nd != NULL; nd = nd->next) {
			e = nd->val;
			if (e->active < 1 || e->active > 2 ||
			    e->slot[e->active - 1].confirmed == 0)
				continue;
			if (w->n == cap) {
				cap = cap == 0 ? 1024 : cap * 2;
				w->v = relay_xrealloc(w->v, cap, sizeof(*w->v));
			}
			w->v[w->n].domain = relay_xstrdup(e->domain);
			w->v[w->n].slot = e->active;
			w->v[w->n].gen = e->slot[e->active - 1].generation;
			w->v[w->n].pkh = km_pub_hash(
			    e->slot[e->active - 1].pubkey);
			w->n++;
		}
	pthread_rwlock_unlock(&km->lock);
	return w;
}

/* km_warm_step - one slice of the warm-up; done when the list is. */
static void
km_warm_step(struct relay_keymgr *km)
{
	int64_t end = relay_mono_ms() + KM_WARM_SLICE_MS;
	struct km_warm_item *it;

	if (km->warm == NULL) {
		km->warm = km_warm_list(km);
		km->warm_pending = 0;
	}
	while (km->warm->i < km->warm->n && relay_mono_ms() < end &&
	    km_cache_count(&km->cache) < km->cache.cap) {
		it = &km->warm->v[km->warm->i++];
		km_prefetch(km, it->domain, it->slot, it->gen, it->pkh);
	}
	if (km->warm->i >= km->warm->n ||
	    km_cache_count(&km->cache) >= km->cache.cap) {
		km_warm_free(km->warm);
		km->warm = NULL;
	}
}

static void *
km_thread(void *arg)
{
	struct relay_keymgr *km = arg;
	const struct km_conf *c;
	int64_t next_tick = relay_mono_ms(), wait, t0;
	char err[256];
	int rc;

	while (!atomic_load(&km->stop)) {
		pthread_rwlock_rdlock(&km->lock);
		c = km->conf;
		pthread_rwlock_unlock(&km->lock);
		wait = next_tick - relay_mono_ms();
		if (wait > KM_WATCH_MS)
			wait = KM_WATCH_MS;
		if (wait < 0 || km->warm != NULL || km->warm_pending)
			wait = 0;               /* warming up: just a look */
		t0 = relay_mono_ms();
		rc = relay_keystore_watch(km->ks, (unsigned)wait, km_watch_cb,
		    km);
		if (rc < 0) {
			/* changes may have been missed: take everything again */
			if (relay_keystore_ping(km->ks, err, sizeof(err)) != 0)
				km_store_state(km, 0, err);
			km->reload_all = 1;
			relay_sleep_ms(wait - (relay_mono_ms() - t0));
		} else if (!atomic_load(&km->store_up)) {
			if (relay_keystore_ping(km->ks, err, sizeof(err)) == 0) {
				km_store_state(km, 1, "");
				km->reload_all = 1;
			}
		}
		if (atomic_load(&km->store_up) && km->need_default) {
			if ((rc = km_ensure_default(km, c, err,
			    sizeof(err))) == 0) {
				km->need_default = 0;
				km->reload_all = 1;
			} else if (km_store_down(km->ks, rc))
				km_store_state(km, 0, err);
		}
		if (atomic_load(&km->store_up) &&
		    (km->reload_all || km->nchanged > 0))
			km_apply_changes(km);
		if (atomic_load(&km->store_up) &&
		    (km->warm_pending || km->warm != NULL)) {
			if (km->warm_pending && km->warm != NULL) {
				km_warm_free(km->warm);  /* index replaced */
				km->warm = NULL;
			}
			km_warm_step(km);
		}
		if (relay_mono_ms() < next_tick)
			continue;
		if (atomic_load(&km->store_up)) {
			if (relay_keystore_ping(km->ks, err, sizeof(err)) != 0)
				km_store_state(km, 0, err);
		}
		km_tick(km, c);
		next_tick = relay_mono_ms() + (int64_t)c->check_interval * 1000;
	}
	return NULL;
}

/* ---- start, reconfigure, stop -------------------------------------------- */

struct relay_keymgr *
relay_keymgr_current(void)
{
	return atomic_load(&km_current);
}

/* km_free - everything km holds (the thread has ended). */
static void
km_free(struct relay_keymgr *km)
{
	struct km_conf *c, *older;
	size_t i;

	if (km == NULL)
		return;
	km_index_free(km->ix);
	km_tenants_free(km->tt);
	km_warm_free(km->warm);
	for (c = km->conf; c != NULL; c = older) {
		older = c->older;
		km_conf_free(c);
	}
	if (km->cache.shards != NULL)
		km_cache_free(&km->cache);
	relay_keystore_close(km->ks);
	relay_keystore_close(km->sks);
	for (i = 0; i < km->nchanged; i++)
		free(km->changed[i]);
	free(km->changed);
	free(km->url);
	pthread_rwlock_destroy(&km->lock);
	free(km);
}

int
relay_keymgr_start(const struct relay_config *cfg,
    struct relay_keymgr **out, char *err, size_t errlen)
{
	struct relay_keymgr *km;
	struct km_index *ix = NULL;
	struct km_tenants *tt = NULL;
	pthread_rwlockattr_t ra;
	char node[300], e2[256];
	const char *env;
	int rc, redis;

	*out = NULL;
	km = relay_xcalloc(1, sizeof(*km));
	/* the rotation thread's short writes must not wait behind a steady
	 * stream of signing readers (no lock here is taken recursively) */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra,
	    PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&km->lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	atomic_init(&km->store_up, 1);
	km->conf = km_conf_new(cfg);
	km->url = relay_xstrdup(cfg->keystore != NULL ? cfg->keystore :
	    "./var/keys");
	if ((env = getenv("SIGNET_NODE")) != NULL && env[0] != '\0')
		snprintf(node, sizeof(node), "%s", env);
	else
		snprintf(node, sizeof(node), "%s:%ld", cfg->myhostname != NULL ?
		    cfg->myhostname : "localhost", (long)getpid());
	if ((rc = relay_keystore_open(km->url, cfg->keystore_secret_file, node,
	    &km->ks, e2, sizeof(e2))) != 0 ||
	    (rc = relay_keystore_open(km->url, cfg->keystore_secret_file, node,
	    &km->sks, e2, sizeof(e2))) != 0) {
		snprintf(err, errlen, "keystore %s: %s", km->url, e2);
		goto fail;
	}
	redis = relay_keystore_is_redis(km->ks);
	km_cache_init(&km->cache, cfg->dkim_key_cache_size);

	/* prime the watch so the changes from here on are reported */
	relay_keystore_watch(km->ks, 0, km_watch_ignore, NULL);
	if ((rc = km_ensure_default(km, km->conf, e2, sizeof(e2))) != 0) {
		if (!redis || !km_store_down(km->ks, rc)) {
			snprintf(err, errlen, "keystore %s: tenant default (%s): "
			    "%s", km->url, km->conf->initial_domain, e2);
			goto fail;
		}
		km->need_default = 1;
		km_store_state(km, 0, e2);
	}
	if ((rc = km_load_all(km->ks, &ix, &tt, e2, sizeof(e2))) != 0) {
		if (!redis || !km_store_down(km->ks, rc)) {
			snprintf(err, errlen, "keystore %s: %s", km->url, e2);
			goto fail;
		}
		km_store_state(km, 0, e2);
		km->reload_all = 1;
		ix = relay_xcalloc(1, sizeof(*ix));
		tt = relay_xcalloc(1, sizeof(*tt));
	} else
		relay_metrics_keystore_up(1);
	km->ix = ix;
	km->tt = tt;
	km->warm_pending = 1;
	km_bump_serial(km);
	relay_log(LOG_INFO, "dkim: key store %s: %zu tenants, %zu managed "
	    "domains", km->url, tt->n, ix->domains.n);
	if ((rc = pthread_create(&km->thread, NULL, km_thread, km)) != 0) {
		snprintf(err, errlen, "cannot start the rotation thread: %s",
		    strerror(rc));
		rc = -rc;
		goto fail;
	}
	km->thread_started = 1;
	atomic_store(&km_current, km);
	*out = km;
	return 0;
fail:
	km_free(km);
	return rc < 0 ? rc : -EINVAL;
}

void
relay_keymgr_reconfigure(struct relay_keymgr *km,
    const struct relay_config *cfg)
{
	struct km_conf *c;

	if (km == NULL)
		return;
	c = km_conf_new(cfg);
	pthread_rwlock_wrlock(&km->lock);
	c->older = km->conf;       /* readers may still hold it */
	km->conf = c;
	pthread_rwlock_unlock(&km->lock);
}

void
relay_keymgr_stop(struct relay_keymgr *km)
{
	struct relay_keymgr *cur = km;

	if (km == NULL)
		return;
	atomic_compare_exchange_strong(&km_current, &cur, NULL);
	atomic_store(&km->stop, 1);
	if (km->thread_started)
		pthread_join(km->thread, NULL);
	km_free(km);
}

void
relay_keymgr_stats(struct relay_keymgr *km, struct relay_keymgr_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (km == NULL)
		return;
	pthread_rwlock_rdlock(&km->lock);
	st->tenants = km->tt != NULL ? km->tt->n : 0;
	st->domains = km->ix != NULL ? km->ix->domains.n : 0;
	st->serial = km->serial;
	pthread_rwlock_unlock(&km->lock);
	st->cache_keys = km_cache_count(&km->cache);
	st->cache_capacity = km->cache.cap;
	st->cache_hits = atomic_load(&km->cache.hits);
	st->cache_misses = atomic_load(&km->cache.misses);
	st->keystore_up = atomic_load(&km->store_up);
	st->ticks = atomic_load(&km->ticks);
}
