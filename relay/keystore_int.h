/*
 * keystore_int.h - what keystore.c (the common part and the file store)
 * and keystore_redis.c (the Redis store) share.  Private to those two.
 */
#ifndef SIGNET_RELAY_KEYSTORE_INT_H
#define SIGNET_RELAY_KEYSTORE_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/keys.h"

#define KS_HISTORY_MAX 100         /* history entries kept per domain */
#define KS_KEK_LEN 32              /* AES-256 key-encryption key */
#define KS_WATCH_MAX 64            /* more changes than this: reload all */

/* A list of (field, value) strings, owned; values are wiped when freed. */
struct ks_kv {
	char *f;
	char *v;
};
struct ks_kvs {
	struct ks_kv *v;
	size_t n, cap;
};

struct ks_snap;
struct redisContext;

struct relay_keystore {
	int redis;
	char node[128];
	unsigned char kek[KS_KEK_LEN];
	int have_kek;

	/* file store */
	char *dir;
	int w_started;
	uint64_t w_serial;
	struct ks_snap *w_domains, *w_tenants;

	/* Redis store */
	char host[256];
	int port, db;
	char label[300];           /* "redis HOST:PORT", starts every error */
	pthread_mutex_t mu;        /* guards cmd */
	struct redisContext *cmd;  /* commands, any thread */
	struct redisContext *sub;  /* SUBSCRIBE, the watch caller only */
};

void ks_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int ks_kvs_add(struct ks_kvs *k, const char *f, const char *v);
int ks_kvs_addn(struct ks_kvs *k, const char *f, size_t flen, const char *v,
    size_t vlen);
const char *ks_kvs_get(const struct ks_kvs *k, const char *f);
void ks_kvs_free(struct ks_kvs *k);

int ks_seal(const struct relay_keystore *ks, const char *domain, int slot,
    uint32_t gen, const unsigned char *pt, size_t ptlen, char **out);
int ks_priv_decode(const struct relay_keystore *ks, const char *domain,
    int slot, uint32_t gen, const char *value, unsigned char **der,
    size_t *derlen, char *err, size_t errlen);
int ks_domain_decode(const struct relay_keystore *ks, const struct ks_kvs *kv,
    const char *domain, int with_keys, struct dkim_mdomain *out, char *err,
    size_t errlen);
int ks_tenant_decode(const struct ks_kvs *kv, const char *name,
    struct relay_tenant *out, char *err, size_t errlen);

/* keystore_redis.c */
int ksr_open(struct relay_keystore *ks, const char *url, char *err,
    size_t errlen);
void ksr_close(struct relay_keystore *ks);
int ksr_ping(struct relay_keystore *ks, char *err, size_t errlen);
int ksr_get(struct relay_keystore *ks, const char *key, struct ks_kvs *out,
    char *err, size_t errlen);
int ksr_put(struct relay_keystore *ks, int tenant, const char *name,
    const struct ks_kvs *kv, uint64_t expect, const char *gencheck[2],
    const char *pubcheck[2], const char *hist, char *err, size_t errlen);
int ksr_del_domain(struct relay_keystore *ks, const char *domain, char *err,
    size_t errlen);
int ksr_get_key(struct relay_keystore *ks, const char *domain, int slot,
    char **gen, char **priv, char *err, size_t errlen);
int ksr_strings(struct relay_keystore *ks, const char *cmd, const char *key,
    int (*cb)(void *arg, const char *s), void *arg, char *err,
    size_t errlen);
int ksr_lock(struct relay_keystore *ks, const char *name, unsigned ttl_ms,
    const char *token, char *err, size_t errlen);
void ksr_unlock(struct relay_keystore *ks, const char *name,
    const char *token);
int ksr_watch(struct relay_keystore *ks, unsigned timeout_ms,
    void (*cb)(void *arg, const char *domain), void *arg);

#endif
