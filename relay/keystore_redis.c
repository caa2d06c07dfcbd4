/*
 * keystore_redis.c - the Redis key store (keystore = redis://HOST:PORT/DB),
 * shared by every node of a cluster, over hiredis' synchronous API with
 * one-second connect and command timeouts.
 *
 *   signet:domain:<domain>    hash: the fields of dkim_mdomain_fields, with
 *                             sN.priv sealed (keystore.c, ks_seal):
 *                             "gcm1:" + base64(nonce || ciphertext || tag),
 *                             never a key in the clear
 *   signet:tenant:<name>      hash: name initial_domain users networks
 *                             version
 *   signet:domains            set of domain names
 *   signet:tenants            set of tenant names
 *   signet:history:<domain>   list, the last 100 history lines
 *   signet:lock:<name>        a transition lock: SET NX PX <token>
 *   signet:changes            channel: "<domain>" after every domain write
 *                             or delete, "tenant:<name>" after a tenant's
 *
 * Writes are one Lua script each (EVAL), so the compare-and-set on the
 * version field, the write, the set, the history and the announcement
 * happen atomically.  The command connection is shared by every thread
 * under ks->mu and reconnected when it breaks (a command that finds a
 * stale connection is tried once more on a new one, unless it timed out:
 * it may have run); the SUBSCRIBE connection belongs to the watch caller.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis.h>

#include "relay/keys.h"
#include "relay/keystore_int.h"

#define CHANNEL "signet:changes"

/*
 * The compare-and-set write of a domain or tenant hash.
 * KEYS: the hash, the set of names, the history list.
 * ARGV: expect (0: must not exist), name, history line ("" none), message
 * to publish, per slot the generation whose stored private key must be
 * kept ("" when the write brings its own key), per slot the public key
 * that stored key must go with, then field/value pairs.  Returns {1},
 * {0, stored version} (someone else wrote first: the version differs, or
 * it is the same number on a record removed and made again, whose keys
 * differ) or {-1, slot} (no stored key of that generation to keep).
 */
static const char put_script[] =
	"local cur = redis.call('HGET', KEYS[1], 'version')\n"
	"if ARGV[1] == '0' then\n"
	"  if redis.call('EXISTS', KEYS[1]) == 1 then return {0, cur or ''} end\n"
	"elseif cur ~= ARGV[1] then\n"
	"  return {0, cur or ''}\n"
	"end\n"
	"for i = 1, 2 do\n"
	"  local g = ARGV[4 + i]\n"
	"  if g ~= '' then\n"
	"    if redis.call('HGET', KEYS[1], 's' .. i .. '.generation') ~= g or\n"
	"       redis.call('HEXISTS', KEYS[1], 's' .. i .. '.priv') == 0 then\n"
	"      return {-1, i}\n"
	"    end\n"
	"    if redis.call('HGET', KEYS[1], 's' .. i .. '.pubkey') ~=\n"
	"       ARGV[6 + i] then\n"
	"      return {0, cur or ''}\n"
	"    end\n"
	"  end\n"
	"end\n"
	"redis.call('HMSET', KEYS[1], unpack(ARGV, 9))\n"
	"redis.call('SADD', KEYS[2], ARGV[2])\n"
	"if ARGV[3] ~= '' then\n"
	"  redis.call('RPUSH', KEYS[3], ARGV[3])\n"
	"  redis.call('LTRIM', KEYS[3], -100, -1)\n"
	"end\n"
	"redis.call('PUBLISH', '" CHANNEL "', ARGV[4])\n"
	"return {1}\n";

/* KEYS: the hash, the set; ARGV: name.  1 deleted, 0 there was none. */
static const char del_script[] =
	"if redis.call('DEL', KEYS[1]) == 0 then return 0 end\n"
	"redis.call('SREM', KEYS[2], ARGV[1])\n"
	"redis.call('PUBLISH', '" CHANNEL "', ARGV[1])\n"
	"return 1\n";

/* KEYS: the lock; ARGV: the token.  Deletes only the holder's lock. */
static const char unlock_script[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
	"  return redis.call('DEL', KEYS[1])\n"
	"end\n"
	"return 0\n";

/* ctx_errno - a -errno for the error recorded in c. */
static int
ctx_errno(const redisContext *c)
{
	switch (c->err) {
	case REDIS_ERR_EOF:
		return -ECONNRESET;
	case REDIS_ERR_OOM:
		return -ENOMEM;
#ifdef REDIS_ERR_TIMEOUT
	case REDIS_ERR_TIMEOUT:         /* hiredis >= 1.0 */
		return -ETIMEDOUT;
#endif
	case REDIS_ERR_IO:
		if (strstr(c->errstr, "refused") != NULL)
			return -ECONNREFUSED;
		if (strstr(c->errstr, "timed out") != NULL ||
		    strstr(c->errstr, "temporarily unavailable") != NULL)
			return -ETIMEDOUT;
		if (strstr(c->errstr, "reset") != NULL)
			return -ECONNRESET;
		return -EIO;
	default:
		return -EIO;
	}
}

int
ksr_open(struct relay_keystore *ks, const char *url, char *err,
    size_t errlen)
{
	const char *p = url, *hend, *q;
	char *end;
	size_t hl;
	long v;

	ks->port = 6379;
	ks->db = 0;
	if (strchr(url, '@') != NULL) {
		ks_err(err, errlen, "keystore redis://%s: user names and "
		    "passwords in the URL are not supported", url);
		return -EINVAL;
	}
	if (*p == '[') {
		if ((hend = strchr(p, ']')) == NULL)
			goto bad;
		p++;
		q = hend + 1;
	} else {
		hend = p + strcspn(p, ":/");
		q = hend;
	}
	hl = (size_t)(hend - p);
	if (hl == 0 || hl >= sizeof(ks->host))
		goto bad;
	memcpy(ks->host, p, hl);
	ks->host[hl] = '\0';
	if (*q == ':') {
		errno = 0;
		v = strtol(q + 1, &end, 10);
		if (errno != 0 || end == q + 1 || v < 1 || v > 65535)
			goto bad;
		ks->port = (int)v;
		q = end;
	}
	if (*q == '/' && q[1] != '\0') {
		errno = 0;
		v = strtol(q + 1, &end, 10);
		if (errno != 0 || end == q + 1 || v < 0 || v > 65535)
			goto bad;
		ks->db = (int)v;
		q = end;
	} else if (*q == '/')
		q++;
	if (*q != '\0')
		goto bad;
	snprintf(ks->label, sizeof(ks->label), strchr(ks->host, ':') ?
	    "redis [%s]:%d" : "redis %s:%d", ks->host, ks->port);
	return 0;
bad:
	ks_err(err, errlen, "keystore redis://%s: expected "
	    "redis://HOST[:PORT][/DB]", url);
	return -EINVAL;
}

/* ksr_connect - a new connection (db selected) into *out; 0 or -errno
 * with err naming the store. */
static int
ksr_connect(struct relay_keystore *ks, redisContext **out, char *err,
    size_t errlen)
{
	struct timeval tv = { 1, 0 };
	redisContext *c;
	redisReply *rep;
	char db[16];
	int r;

	*out = NULL;
	if ((c = redisConnectWithTimeout(ks->host, ks->port, tv)) == NULL) {
		ks_err(err, errlen, "%s: out of memory", ks->label);
		return -ENOMEM;
	}
	if (c->err != 0) {
		r = ctx_errno(c);
		ks_err(err, errlen, "%s: %s", ks->label, c->errstr);
		redisFree(c);
		return r;
	}
	redisSetTimeout(c, tv);
	redisEnableKeepAlive(c);
	if (ks->db != 0) {
		snprintf(db, sizeof(db), "%d", ks->db);
		rep = redisCommand(c, "SELECT %s", db);
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
			ks_err(err, errlen, "%s: SELECT %s: %s", ks->label, db,
			    rep != NULL ? rep->str : c->errstr);
			r = rep != NULL ? -EINVAL : ctx_errno(c);
			if (rep != NULL)
				freeReplyObject(rep);
			redisFree(c);
			return r;
		}
		freeReplyObject(rep);
	}
	*out = c;
	return 0;
}

void
ksr_close(struct relay_keystore *ks)
{
	if (ks->cmd != NULL)
		redisFree(ks->cmd);
	if (ks->sub != NULL)
		redisFree(ks->sub);
	ks->cmd = ks->sub = NULL;
}

/*
 * run - one command on the command connection (ks->mu held), connecting
 * first if needed; a command that fails on a connection made earlier (the
 * server restarted, say) is sent once more on a new one -- not when it
 * timed out, as the server may then have carried it out.  The reply, or
 * NULL with *rc (-errno) and err.  An error reply is an error (-EIO).
 */
static redisReply *
run(struct relay_keystore *ks, int argc, const char **argv,
    const size_t *argvlen, int *rc, char *err, size_t errlen)
{
	redisReply *rep;
	int attempt, fresh;

	for (attempt = 0; attempt < 2; attempt++) {
		fresh = 0;
		if (ks->cmd == NULL) {
			if ((*rc = ksr_connect(ks, &ks->cmd, err, errlen)) != 0)
				return NULL;
			fresh = 1;
		}
		rep = redisCommandArgv(ks->cmd, argc, argv, argvlen);
		if (rep != NULL) {
			if (rep->type == REDIS_REPLY_ERROR) {
				ks_err(err, errlen, "%s: %s", ks->label,
				    rep->str);
				freeReplyObject(rep);
				*rc = -EIO;
				return NULL;
			}
			*rc = 0;
			return rep;
		}
		*rc = ctx_errno(ks->cmd);
		ks_err(err, errlen, "%s: %s", ks->label, ks->cmd->errstr);
		redisFree(ks->cmd);
		ks->cmd = NULL;
		/*
		 * Not after a timeout: the server may have run the command
		 * (a write, a SET NX) and only be slow; sent again, it would
		 * find its own first run's effect (-ESTALE, -EBUSY).
		 */
		if (fresh || *rc == -ETIMEDOUT)
			break;
	}
	return NULL;
}

/* runv - run() with NUL-terminated arguments, taking ks->mu. */
static redisReply *
runv(struct relay_keystore *ks, int argc, const char **argv, int *rc,
    char *err, size_t errlen)
{
	size_t lens[16];
	redisReply *rep;
	int i;

	for (i = 0; i < argc && i < 16; i++)
		lens[i] = strlen(argv[i]);
	pthread_mutex_lock(&ks->mu);
	rep = run(ks, argc, argv, lens, rc, err, errlen);
	pthread_mutex_unlock(&ks->mu);
	return rep;
}

int
ksr_ping(struct relay_keystore *ks, char *err, size_t errlen)
{
	const char *argv[] = { "PING" };
	redisReply *rep;
	int r;

	if ((rep = runv(ks, 1, argv, &r, err, errlen)) == NULL)
		return r;
	freeReplyObject(rep);
	return 0;
}

/* ksr_get - HGETALL key into out: 0, -ENOENT (no such hash), -errno. */
int
ksr_get(struct relay_keystore *ks, const char *key, struct ks_kvs *out,
    char *err, size_t errlen)
{
	const char *argv[] = { "HGETALL", key };
	redisReply *rep;
	size_t i;
	int r = 0;

	if ((rep = runv(ks, 2, argv, &r, err, errlen)) == NULL)
		return r;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2 != 0) {
		ks_err(err, errlen, "%s: HGETALL %s: unexpected reply",
		    ks->label, key);
		r = -EIO;
	} else if (rep->elements == 0)
		r = -ENOENT;
	for (i = 0; r == 0 && i < rep->elements; i += 2) {
		redisReply *f = rep->element[i], *v = rep->element[i + 1];

		if (f->type != REDIS_REPLY_STRING ||
		    v->type != REDIS_REPLY_STRING) {
			r = -EIO;
			break;
		}
		r = ks_kvs_addn(out, f->str, f->len, v->str, v->len);
	}
	/* replies may hold sealed keys only, but wipe them anyway */
	for (i = 0; i < rep->elements; i++)
		if (rep->element[i]->type == REDIS_REPLY_STRING)
			memset(rep->element[i]->str, 0, rep->element[i]->len);
	freeReplyObject(rep);
	return r;
}

int
ksr_put(struct relay_keystore *ks, int tenant, const char *name,
    const struct ks_kvs *kv, uint64_t expect, const char *gencheck[2],
    const char *pubcheck[2], const char *hist, char *err, size_t errlen)
{
	char hkey[300], hist_key[300], expb[32], msg[300];
	const char **argv;
	size_t *lens, i;
	redisReply *rep;
	int argc, r = 0, n;

	snprintf(hkey, sizeof(hkey), "signet:%s:%s", tenant ? "tenant" :
	    "domain", name);
	snprintf(hist_key, sizeof(hist_key), "signet:history:%s", name);
	snprintf(expb, sizeof(expb), "%" PRIu64, expect);
	snprintf(msg, sizeof(msg), "%s%s", tenant ? "tenant:" : "", name);
	argc = 14 + 2 * (int)kv->n;
	argv = calloc((size_t)argc, sizeof(*argv));
	lens = calloc((size_t)argc, sizeof(*lens));
	if (argv == NULL || lens == NULL) {
		free(argv);
		free(lens);
		return -ENOMEM;
	}
	n = 0;
	argv[n++] = "EVAL";
	argv[n++] = put_script;
	argv[n++] = "3";
	argv[n++] = hkey;
	argv[n++] = tenant ? "signet:tenants" : "signet:domains";
	argv[n++] = hist_key;
	argv[n++] = expb;
	argv[n++] = name;
	argv[n++] = hist != NULL ? hist : "";
	argv[n++] = msg;
	argv[n++] = gencheck[0];
	argv[n++] = gencheck[1];
	argv[n++] = pubcheck[0];
	argv[n++] = pubcheck[1];
	for (i = 0; i < kv->n; i++) {
		argv[n++] = kv->v[i].f;
		argv[n++] = kv->v[i].v;
	}
	for (i = 0; i < (size_t)argc; i++)
		lens[i] = strlen(argv[i]);
	pthread_mutex_lock(&ks->mu);
	rep = run(ks, argc, argv, lens, &r, err, errlen);
	pthread_mutex_unlock(&ks->mu);
	free(argv);
	free(lens);
	if (rep == NULL)
		return r;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER) {
		ks_err(err, errlen, "%s: unexpected reply to a write",
		    ks->label);
		r = -EIO;
	} else if (rep->element[0]->integer == 0) {
		ks_err(err, errlen, "%s: changed by someone else (stored "
		    "version %s, expected %s)", name, rep->elements > 1 &&
		    rep->element[1]->type == REDIS_REPLY_STRING &&
		    rep->element[1]->len > 0 ? rep->element[1]->str : "none",
		    expb);
		r = -ESTALE;
	} else if (rep->element[0]->integer == -1) {
		long long s = rep->elements > 1 ? rep->element[1]->integer : 0;

		ks_err(err, errlen, "%s: selector%lld: no private key given "
		    "and none of generation %s stored", name, s,
		    s == 1 || s == 2 ? gencheck[s - 1] : "?");
		r = -EINVAL;
	}
	freeReplyObject(rep);
	return r;
}

int
ksr_del_domain(struct relay_keystore *ks, const char *domain, char *err,
    size_t errlen)
{
	char key[300];
	const char *argv[] = { "EVAL", del_script, "2", key, "signet:domains",
	    domain };
	redisReply *rep;
	int r;

	snprintf(key, sizeof(key), "signet:domain:%s", domain);
	if ((rep = runv(ks, 6, argv, &r, err, errlen)) == NULL)
		return r;
	if (rep->type != REDIS_REPLY_INTEGER) {
		ks_err(err, errlen, "%s: unexpected reply to DEL", ks->label);
		r = -EIO;
	} else if (rep->integer == 0) {
		ks_err(err, errlen, "%s: no such managed domain", domain);
		r = -ENOENT;
	}
	freeReplyObject(rep);
	return r;
}

/* ksr_get_key - sN.generation and sN.priv of domain, malloc'd (NULL when
 * absent); 0, -ENOENT (no such domain) or -errno. */
int
ksr_get_key(struct relay_keystore *ks, const char *domain, int slot,
    char **gen, char **priv, char *err, size_t errlen)
{
	char key[300], gf[16], pf[16];
	const char *argv[] = { "HMGET", key, gf, pf };
	redisReply *rep, *g, *p;
	int r = 0;

	*gen = *priv = NULL;
	snprintf(key, sizeof(key), "signet:domain:%s", domain);
	snprintf(gf, sizeof(gf), "s%d.generation", slot);
	snprintf(pf, sizeof(pf), "s%d.priv", slot);
	if ((rep = runv(ks, 4, argv, &r, err, errlen)) == NULL)
		return r;
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
		ks_err(err, errlen, "%s: unexpected reply to HMGET",
		    ks->label);
		freeReplyObject(rep);
		return -EIO;
	}
	g = rep->element[0];
	p = rep->element[1];
	if (g->type == REDIS_REPLY_STRING && p->type == REDIS_REPLY_STRING) {
		*gen = strndup(g->str, g->len);
		*priv = strndup(p->str, p->len);
		if (*gen == NULL || *priv == NULL) {
			free(*gen);
			free(*priv);
			*gen = *priv = NULL;
			r = -ENOMEM;
		}
		memset(p->str, 0, p->len);
	} else
		r = -ENOENT;
	freeReplyObject(rep);
	return r;
}

/* ksr_strings - cb for each string of SMEMBERS key or LRANGE key 0 -1
 * (cmd), called without the lock held; stops at a nonzero cb result. */
int
ksr_strings(struct relay_keystore *ks, const char *cmd, const char *key,
    int (*cb)(void *arg, const char *s), void *arg, char *err,
    size_t errlen)
{
	const char *argv[] = { cmd, key, "0", "-1" };
	redisReply *rep;
	char **v = NULL;
	size_t i, n = 0;
	int r = 0;

	if ((rep = runv(ks, strcmp(cmd, "LRANGE") == 0 ? 4 : 2, argv, &r,
	    err, errlen)) == NULL)
		return r;
	if (rep->type != REDIS_REPLY_ARRAY) {
		ks_err(err, errlen, "%s: unexpected reply to %s", ks->label,
		    cmd);
		freeReplyObject(rep);
		return -EIO;
	}
	if (rep->elements > 0 &&
	    (v = calloc(rep->elements, sizeof(*v))) == NULL) {
		freeReplyObject(rep);
		return -ENOMEM;
	}
	for (i = 0; i < rep->elements; i++) {
		if (rep->element[i]->type != REDIS_REPLY_STRING)
			continue;
		if ((v[n] = strndup(rep->element[i]->str,
		    rep->element[i]->len)) == NULL) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	freeReplyObject(rep);
	for (i = 0; r == 0 && i < n; i++)
		r = cb(arg, v[i]);
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return r;
}

int
ksr_lock(struct relay_keystore *ks, const char *name, unsigned ttl_ms,
    const char *token, char *err, size_t errlen)
{
	char key[300], ttl[16];
	const char *argv[] = { "SET", key, token, "NX", "PX", ttl };
	redisReply *rep;
	int r;

	snprintf(key, sizeof(key), "signet:lock:%s", name);
	snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
	if ((rep = runv(ks, 6, argv, &r, err, errlen)) == NULL)
		return r;
	if (rep->type == REDIS_REPLY_NIL) {
		ks_err(err, errlen, "lock %s is held by another node", name);
		r = -EBUSY;
	} else if (rep->type != REDIS_REPLY_STATUS ||
	    strcmp(rep->str, "OK") != 0) {
		ks_err(err, errlen, "%s: unexpected reply to SET NX",
		    ks->label);
		r = -EIO;
	}
	freeReplyObject(rep);
	return r;
}

void
ksr_unlock(struct relay_keystore *ks, const char *name, const char *token)
{
	char key[300], err[256];
	const char *argv[] = { "EVAL", unlock_script, "1", key, token };
	redisReply *rep;
	int r;

	snprintf(key, sizeof(key), "signet:lock:%s", name);
	if ((rep = runv(ks, 5, argv, &r, err, sizeof(err))) != NULL)
		freeReplyObject(rep);
}

/* sub_drop - forget the SUBSCRIBE connection. */
static void
sub_drop(struct relay_keystore *ks)
{
	if (ks->sub != NULL)
		redisFree(ks->sub);
	ks->sub = NULL;
}

/* sub_message - act on one pub/sub reply; 1 if cb was called. */
static int
sub_message(redisReply *rep, void (*cb)(void *arg, const char *domain),
    void *arg, int *reloaded)
{
	char name[DKIM_DOMAIN_MAX], raw[DKIM_DOMAIN_MAX];
	redisReply *m;

	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(rep->element[0]->str, "message") != 0)
		return 0;
	m = rep->element[2];
	if (m->type != REDIS_REPLY_STRING)
		return 0;
	if (strncmp(m->str, "tenant:", 7) == 0) {
		if (!*reloaded)
			cb(arg, NULL);
		*reloaded = 1;
		return 1;
	}
	if (m->len >= sizeof(raw))
		return 0;
	memcpy(raw, m->str, m->len);
	raw[m->len] = '\0';
	if (dkim_domain_normalize(raw, name, sizeof(name)) != 0)
		return 0;
	cb(arg, name);
	return 1;
}

int
ksr_watch(struct relay_keystore *ks, unsigned timeout_ms,
    void (*cb)(void *arg, const char *domain), void *arg)
{
	int64_t deadline = relay_mono_ms() + timeout_ms, left;
	struct pollfd pfd;
	redisReply *rep;
	char err[256];
	int r, got, reloaded = 0, n;

	if (ks->sub == NULL) {
		if ((r = ksr_connect(ks, &ks->sub, err, sizeof(err))) != 0) {
			relay_sleep_ms(deadline - relay_mono_ms());
			return r;
		}
		rep = redisCommand(ks->sub, "SUBSCRIBE %s", CHANNEL);
		if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
			r = rep == NULL ? ctx_errno(ks->sub) : -EIO;
			if (rep != NULL)
				freeReplyObject(rep);
			sub_drop(ks);
			relay_sleep_ms(deadline - relay_mono_ms());
			return r;
		}
		freeReplyObject(rep);
		/* first call, or back after Redis was away: reload all */
		cb(arg, NULL);
		return 0;
	}
	for (;;) {
		got = 0;
		for (;;) {
			rep = NULL;
			if (redisGetReplyFromReader(ks->sub,
			    (void **)&rep) != REDIS_OK) {
				sub_drop(ks);
				return -EIO;
			}
			if (rep == NULL)
				break;
			got += sub_message(rep, cb, arg, &reloaded);
			freeReplyObject(rep);
		}
		if (got > 0)
			return 0;
		if ((left = deadline - relay_mono_ms()) <= 0)
			return 0;
		pfd.fd = ks->sub->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
		if (n == -1 && errno != EINTR) {
			r = -errno;
			sub_drop(ks);
			return r;
		}
		if (n <= 0)
			continue;
		if (redisBufferRead(ks->sub) != REDIS_OK) {
			r = ctx_errno(ks->sub);
			sub_drop(ks);
			return r;
		}
	}
}
