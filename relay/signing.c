/*
 * signing.c - the static signing table, Signet's "bring your own key" mode:
 * the dkim_sign lines of relay.conf indexed by domain, and the
 * smtp_sign_lookup_fn the SMTP server calls once a message's header block
 * is in, to learn which signatures to make for its From domain.
 *
 * The table is built once per configuration and never changes, so lookups
 * from every worker loop need no lock; keys are shared by reference count.
 * relay_sign_lookup is the one place the daemon decides what signs a
 * message: this table first, then, when it has no line for the From
 * domain, the managed keys of the running key manager (keymgr.c), without
 * smtp/ noticing.
 *
 * Matching is by exact domain: a line for example.com signs mail whose
 * From is in example.com, not sub.example.com (a signature's d= need not
 * be the From domain, but choosing a parent domain silently is a policy
 * better written out as its own dkim_sign line).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "relay/keys.h"
#include "relay/relay.h"

struct signtab_entry {
	char *domain;
	char *selector;
	struct dkim_key *key;
	enum dkim_alg alg;
	size_t order;             /* position in relay.conf (stable sort) */
};

struct relay_signtab {
	struct signtab_entry *v;  /* sorted by domain, then by order */
	size_t n;
	enum dkim_canon hcanon, bcanon;
	char *headers;            /* colon-separated h= candidates */
};

/* signtab_cmp - by domain, then by position in the file. */
static int
signtab_cmp(const void *a, const void *b)
{
	const struct signtab_entry *x = a, *y = b;
	int c;

	if ((c = strcmp(x->domain, y->domain)) != 0)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

int
relay_signtab_new(const struct relay_config *cfg, struct relay_signtab **out)
{
	struct relay_signtab *t;
	size_t i;

	*out = NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL)
		return -ENOMEM;
	t->hcanon = (enum dkim_canon)cfg->dkim_hcanon;
	t->bcanon = (enum dkim_canon)cfg->dkim_bcanon;
	if (cfg->dkim_headers != NULL &&
	    (t->headers = strdup(cfg->dkim_headers)) == NULL)
		goto fail;
	if (cfg->ndkim_sign > 0 &&
	    (t->v = calloc(cfg->ndkim_sign, sizeof(*t->v))) == NULL)
		goto fail;
	for (i = 0; i < cfg->ndkim_sign; i++) {
		t->v[i].domain = strdup(cfg->dkim_sign[i].domain);
		t->v[i].selector = strdup(cfg->dkim_sign[i].selector);
		t->v[i].alg = cfg->dkim_sign[i].alg;
		t->v[i].order = i;
		t->n++;
		if (t->v[i].domain == NULL || t->v[i].selector == NULL)
			goto fail;
		t->v[i].key = dkim_key_ref(cfg->dkim_sign[i].key);
	}
	if (t->n > 1)
		qsort(t->v, t->n, sizeof(*t->v), signtab_cmp);
	*out = t;
	return 0;
fail:
	relay_signtab_free(t);
	return -ENOMEM;
}

void
relay_signtab_free(struct relay_signtab *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->n; i++) {
		free(t->v[i].domain);
		free(t->v[i].selector);
		dkim_key_free(t->v[i].key);
	}
	free(t->v);
	free(t->headers);
	free(t);
}

/* signtab_first - index of the first entry for domain, or t->n if none. */
static size_t
signtab_first(const struct relay_signtab *t, const char *domain)
{
	size_t lo = 0, hi = t->n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (strcmp(t->v[mid].domain, domain) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < t->n && strcmp(t->v[lo].domain, domain) == 0 ? lo : t->n;
}

int
relay_signtab_lookup(const struct relay_signtab *t, const char *domain,
    struct dkim_sign_params *out, int max)
{
	const struct signtab_entry *e;
	size_t i;
	int n = 0;

	if (t == NULL || domain == NULL || max <= 0)
		return 0;
	for (i = signtab_first(t, domain); i < t->n && n < max; i++) {
		e = &t->v[i];
		if (strcmp(e->domain, domain) != 0)
			break;
		memset(&out[n], 0, sizeof(out[n]));
		out[n].domain = e->domain;
		out[n].selector = e->selector;
		out[n].key = dkim_key_ref(e->key);
		out[n].alg = e->alg;
		out[n].hcanon = t->hcanon;
		out[n].bcanon = t->bcanon;
		out[n].headers = t->headers;
		n++;
	}
	return n;
}

int
relay_sign_lookup(void *arg, const struct smtp_sign_request *rq,
    struct dkim_sign_params *out, int max, char *reason, size_t reasonlen)
{
	const struct relay_config *cfg = arg;
	struct relay_keymgr *km;
	int n;

	if (cfg == NULL || rq->from_domain == NULL)
		return 0;
	/* the static table wins when it names the domain */
	if ((n = relay_signtab_lookup(cfg->signtab, rq->from_domain, out,
	    max)) > 0)
		return n;
	if ((km = relay_keymgr_current()) == NULL)
		return 0;
	return relay_keymgr_sign_lookup(km, rq, out, max, reason, reasonlen);
}
