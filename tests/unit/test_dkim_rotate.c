/*
 * test_dkim_rotate.c - unit tests of dkim/rotate.c (issue 5): provisioning
 * with real keys, names and TXT records, the gate, two whole rotation
 * cycles on a fake clock with every key signing mail that the verifier
 * accepts against the slot's own TXT record, `rotate --now`, the storage
 * form, and the DER / base64 helpers in keys.c and util.c.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim.h"
#include "tests/unit/test.h"

#define DAY (24 * 3600)
#define T0 1700000000LL

static const struct dkim_rotation_policy policy = {
	.interval = 365 * DAY, .lead = 7 * DAY, .retire = 7 * DAY,
	.dns_check = 1, .key_bits = 1024,
};

static struct dkim_key *
genkey(enum dkim_alg alg)
{
	struct dkim_key *k = NULL;

	T_OK(dkim_key_generate(alg, 1024, &k));
	return k;
}

/* provision - fabrikam.com for tenant contoso at now, Ed25519 keys. */
static void
provision(struct dkim_mdomain *d, int64_t now)
{
	struct dkim_key *k1 = genkey(DKIM_ALG_ED25519_SHA256);
	struct dkim_key *k2 = genkey(DKIM_ALG_ED25519_SHA256);

	dkim_mdomain_init(d);
	T_OK(dkim_mdomain_provision(d, "Fabrikam.COM.", "contoso",
	    "contoso.signet.example", k1, k2, now));
	dkim_key_free(k1);
	dkim_key_free(k2);
}

/* see - DNS showed slot n's key at now through the name of the mode. */
static void
see(struct dkim_mdomain *d, int n, int64_t now)
{
	d->slot[n - 1].seen = now;
	d->slot[n - 1].seen_via = d->enabled;
}

/* p_of - the p= value of a key as dkim_key_txt prints it (malloc'd). */
static char *
p_of(const struct dkim_key *k)
{
	char *txt = dkim_key_txt(k), *p;

	T_TRUE(txt != NULL);
	T_TRUE((p = strstr(txt, "; p=")) != NULL);
	p = strdup(p + 4);
	free(txt);
	return p;
}

/* ---- signing through a slot, verifying against its TXT record ------------- */

struct lk {
	const char *d, *s;
	char *txt;
};

static int
lk_cb(void *arg, const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	const struct lk *l = arg;

	if (strcmp(domain, l->d) == 0 && strcmp(selector, l->s) == 0 &&
	    l->txt != NULL) {
		*txt = strdup(l->txt);
		return 0;
	}
	snprintf(err, errlen, "no key for %s/%s", selector, domain);
	return DKIM_ENOKEY;
}

static const char msg[] =
    "From: Alice <alice@fabrikam.com>\r\n"
    "To: Bob <bob@example.net>\r\n"
    "Subject: rotation\r\n"
    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <r@fabrikam.com>\r\n"
    "\r\n"
    "Hello.\r\n";

/*
 * sign_slot - sign msg with slot n's key and identity at time now; the
 * signed message, malloc'd.
 */
static char *
sign_slot(const struct dkim_mdomain *d, int n, int64_t now)
{
	char dom[DKIM_DOMAIN_MAX], sel[DKIM_SELECTOR_BUFSIZE], *sig = NULL, *out;
	struct dkim_sign_params sp;
	struct dkim_signer *s;
	struct dkim_key *key = NULL;
	size_t siglen;

	T_OK(dkim_mdomain_identity(d, n, dom, sel));
	T_OK(dkim_slot_key(&d->slot[n - 1], &key));
	memset(&sp, 0, sizeof(sp));
	sp.domain = dom;
	sp.selector = sel;
	sp.key = key;
	sp.alg = dkim_key_alg(key);
	sp.hcanon = sp.bcanon = DKIM_CANON_RELAXED;
	sp.t = (time_t)now;
	T_TRUE((s = dkim_signer_new()) != NULL);
	T_OK(dkim_signer_add(s, &sp));
	T_OK(dkim_signer_write(s, msg, sizeof(msg) - 1));
	T_OK(dkim_signer_finish(s, &sig, &siglen));
	dkim_signer_free(s);
	dkim_key_free(key);
	T_TRUE((out = malloc(siglen + sizeof(msg))) != NULL);
	memcpy(out, sig, siglen);
	memcpy(out + siglen, msg, sizeof(msg));
	free(sig);
	return out;
}

/*
 * verify_with - verify signed (from sign_slot for slot n) at now, the
 * verifier being handed dkim_mdomain_txt(d, txtslot) for n's identity.
 * 1 pass, 0 fail.
 */
static int
verify_with(const struct dkim_mdomain *d, int n, int txtslot,
    const char *signed_msg, int64_t now)
{
	char dom[DKIM_DOMAIN_MAX], sel[DKIM_SELECTOR_BUFSIZE];
	struct dkim_verify_result res[DKIM_MAX_SIGS + 1];
	struct dkim_verifier *v;
	struct lk l;
	int nres;

	T_OK(dkim_mdomain_identity(d, n, dom, sel));
	l.d = dom;
	l.s = sel;
	T_TRUE((l.txt = dkim_mdomain_txt(d, txtslot)) != NULL);
	T_TRUE((v = dkim_verifier_new(lk_cb, &l)) != NULL);
	T_OK(dkim_verifier_write(v, signed_msg, strlen(signed_msg)));
	nres = dkim_verifier_finish(v, (time_t)now, res, DKIM_MAX_SIGS + 1);
	dkim_verifier_free(v);
	free(l.txt);
	T_EQ(nres, 1);
	return res[0].pass;
}

/* sign_check - slot n signs at now and verifies against its own TXT, and
 * not against the other slot's. */
static void
sign_check(const struct dkim_mdomain *d, int n, int64_t now)
{
	char *m = sign_slot(d, n, now);

	T_EQ(verify_with(d, n, n, m, now), 1);
	T_EQ(verify_with(d, n, n == 1 ? 2 : 1, m, now), 0);
	free(m);
}

/* ---- tests ------------------------------------------------------------------ */

TEST(dkim_rotate_names)
{
	enum dkim_phase ph;

	T_STREQ(dkim_phase_name(DKIM_PHASE_STABLE), "stable");
	T_STREQ(dkim_phase_name(DKIM_PHASE_PENDING), "pending");
	T_STREQ(dkim_phase_name(DKIM_PHASE_RETIRING), "retiring");
	T_STREQ(dkim_phase_name((enum dkim_phase)7), "?");
	T_OK(dkim_phase_parse("retiring", &ph));
	T_EQ(ph, DKIM_PHASE_RETIRING);
	T_OK(dkim_phase_parse("pending", &ph));
	T_EQ(ph, DKIM_PHASE_PENDING);
	T_EQ(dkim_phase_parse("Stable", &ph), DKIM_EINVAL);
	T_EQ(dkim_phase_parse("", &ph), DKIM_EINVAL);
	T_STREQ(dkim_step_name(DKIM_STEP_NONE), "none");
	T_STREQ(dkim_step_name(DKIM_STEP_CONFIRM), "confirm");
	T_STREQ(dkim_step_name(DKIM_STEP_HOLD), "hold");
	T_STREQ(dkim_step_name(DKIM_STEP_SWITCH), "switch");
	T_STREQ(dkim_step_name(DKIM_STEP_REPLACE), "replace");
}

TEST(dkim_rotate_provision_ed25519)
{
	struct dkim_key *k1 = genkey(DKIM_ALG_ED25519_SHA256);
	struct dkim_key *k2 = genkey(DKIM_ALG_ED25519_SHA256);
	char name[256], dom[DKIM_DOMAIN_MAX], sel[DKIM_SELECTOR_BUFSIZE];
	char *p1 = p_of(k1), *p2 = p_of(k2), *txt, want[512];
	struct dkim_mdomain d;
	struct dkim_key *back = NULL;

	dkim_mdomain_init(&d);
	T_EQ(dkim_mdomain_provision(&d, "bad_domain.com", "contoso",
	    "contoso.signet.example", k1, k2, T0), DKIM_EINVAL);
	T_EQ(dkim_mdomain_provision(&d, "fabrikam.com", "",
	    "contoso.signet.example", k1, k2, T0), DKIM_EINVAL);
	T_OK(dkim_mdomain_provision(&d, "Fabrikam.COM.", "contoso",
	    "Contoso.Signet.Example", k1, k2, T0));
	T_STREQ(d.domain, "fabrikam.com");
	T_STREQ(d.tenant, "contoso");
	T_STREQ(d.initial_domain, "contoso.signet.example");
	T_EQ(d.active, 1);
	T_EQ(d.enabled, 0);
	T_EQ(d.phase, DKIM_PHASE_STABLE);
	T_EQ(d.phase_since, T0);
	T_EQ(d.last_switch, T0);
	for (int n = 0; n < 2; n++) {
		T_EQ(d.slot[n].generation, 1);
		T_EQ(d.slot[n].created, T0);
		T_EQ(d.slot[n].published, T0);
		T_EQ(d.slot[n].seen, 0);
		T_EQ(d.slot[n].confirmed, 0);
		T_EQ(d.slot[n].bits, 256);
		T_EQ(d.slot[n].alg, DKIM_ALG_ED25519_SHA256);
		T_TRUE(d.slot[n].priv != NULL);
	}
	T_STREQ(d.slot[0].pubkey, p1);
	T_STREQ(d.slot[1].pubkey, p2);
	T_TRUE(strcmp(p1, p2) != 0);

	txt = dkim_mdomain_txt(&d, 2);
	snprintf(want, sizeof(want), "v=DKIM1; k=ed25519; p=%s; n=256,%lld,1",
	    p2, T0);
	T_STREQ(txt, want);
	free(txt);
	T_TRUE(dkim_mdomain_txt(&d, 3) == NULL);

	/* The slot's private key is k1 again. */
	T_OK(dkim_slot_key(&d.slot[0], &back));
	txt = p_of(back);
	T_STREQ(txt, p1);
	free(txt);
	dkim_key_free(back);

	T_OK(dkim_mdomain_record_name(&d, 1, name, sizeof(name)));
	T_STREQ(name, "selector1-fabrikam-com._domainkey.contoso.signet.example");
	T_OK(dkim_mdomain_query_name(&d, 2, name, sizeof(name)));
	T_STREQ(name, "selector2-fabrikam-com._domainkey.contoso.signet.example");
	T_EQ(dkim_mdomain_record_name(&d, 1, name, 20), -ENOBUFS);
	T_EQ(dkim_mdomain_record_name(&d, 0, name, sizeof(name)), DKIM_EINVAL);
	T_OK(dkim_mdomain_identity(&d, 2, dom, sel));
	T_STREQ(dom, "contoso.signet.example");
	T_STREQ(sel, "selector2-fabrikam-com");

	d.enabled = 1;
	T_OK(dkim_mdomain_query_name(&d, 2, name, sizeof(name)));
	T_STREQ(name, "selector2._domainkey.fabrikam.com");
	T_OK(dkim_mdomain_record_name(&d, 2, name, sizeof(name)));
	T_STREQ(name, "selector2-fabrikam-com._domainkey.contoso.signet.example");
	T_OK(dkim_mdomain_identity(&d, 1, dom, sel));
	T_STREQ(dom, "fabrikam.com");
	T_STREQ(sel, "selector1");

	/* Both identities sign mail the slot's own TXT verifies. */
	sign_check(&d, 1, T0);
	d.enabled = 0;
	sign_check(&d, 2, T0);

	dkim_mdomain_clear(&d);
	T_TRUE(d.slot[0].pubkey == NULL && d.slot[0].priv == NULL);
	T_EQ(d.active, 1);
	dkim_mdomain_clear(NULL);
	dkim_key_free(k1);
	dkim_key_free(k2);
	free(p1);
	free(p2);
}

TEST(dkim_rotate_provision_rsa)
{
	struct dkim_key *k1 = genkey(DKIM_ALG_RSA_SHA256);
	struct dkim_key *k2 = genkey(DKIM_ALG_RSA_SHA256);
	char *p1 = p_of(k1), *txt, want[1024];
	struct dkim_mdomain d, c;

	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, "my-domain.co.uk", "t1",
	    "t1.signet.example", k1, k2, T0));
	T_EQ(d.slot[0].alg, DKIM_ALG_RSA_SHA256);
	T_EQ(d.slot[0].bits, 1024);
	T_STREQ(d.slot[0].pubkey, p1);
	txt = dkim_mdomain_txt(&d, 1);
	snprintf(want, sizeof(want), "v=DKIM1; k=rsa; p=%s; n=1024,%lld,1",
	    p1, T0);
	T_STREQ(txt, want);
	free(txt);
	sign_check(&d, 1, T0);
	sign_check(&d, 2, T0);

	/* A deep copy signs the same and owns its own buffers. */
	T_OK(dkim_mdomain_copy(&c, &d));
	T_TRUE(c.slot[0].priv != d.slot[0].priv);
	T_TRUE(c.slot[0].pubkey != d.slot[0].pubkey);
	T_MEMEQ(c.slot[0].priv, c.slot[0].privlen, d.slot[0].priv,
	    d.slot[0].privlen);
	dkim_mdomain_clear(&d);
	sign_check(&c, 1, T0);
	dkim_mdomain_clear(&c);
	dkim_key_free(k1);
	dkim_key_free(k2);
	free(p1);
}

TEST(dkim_rotate_two_cycles)
{
	struct dkim_mdomain d;
	struct dkim_key *nk;
	char why[512], *m, *old1, *old2;
	int64_t now = T0, next, sw1, sw2;
	enum dkim_step st;

	provision(&d, now);

	/* Fresh: slot 1 may not sign before the lead, nor before DNS. */
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 0);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_EQ(next, T0 + 7 * DAY);
	T_TRUE(strstr(why, "dkim_publish_lead is 7d (7d to go)") != NULL);
	now += 7 * DAY;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_EQ(next, 0);
	T_STREQ(why, "selector1-fabrikam-com._domainkey.contoso.signet.example "
	    "has not shown the selector1 key through DNS yet");
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 0);
	see(&d, 1, now);
	see(&d, 2, now);
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 1);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_CONFIRM);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	T_EQ(d.slot[0].confirmed, now);
	/* Confirmed: it signs even when a later check loses it. */
	d.slot[0].seen = 0;
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 1);
	see(&d, 1, now);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_EQ(next, T0 + 365 * DAY);
	sign_check(&d, 1, now);

	/* Cycle 1: the switch to selector2 at the interval. */
	now = T0 + 365 * DAY - 1;
	T_EQ(dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why)),
	    DKIM_STEP_NONE);
	m = sign_slot(&d, 1, now);          /* signed just before the switch */
	now++;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_SWITCH);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	sw1 = now;
	T_EQ(d.active, 2);
	T_EQ(d.phase, DKIM_PHASE_RETIRING);
	T_EQ(d.phase_since, now);
	T_EQ(d.last_switch, now);
	T_EQ(d.slot[1].confirmed, now);
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 2);
	sign_check(&d, 2, now);
	/* During the retire window the old key's mail still verifies. */
	now += 3 * DAY;
	T_EQ(verify_with(&d, 1, 1, m, now), 1);
	free(m);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_EQ(next, sw1 + 7 * DAY);
	now = sw1 + 7 * DAY;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_REPLACE);
	T_EQ(dkim_rotation_apply(&d, st, &policy, now, NULL), DKIM_EINVAL);
	old1 = strdup(d.slot[0].pubkey);
	d.next_bits = 2048;
	nk = genkey(DKIM_ALG_ED25519_SHA256);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, nk));
	dkim_key_free(nk);
	T_EQ(d.phase, DKIM_PHASE_STABLE);
	T_EQ(d.phase_since, now);
	T_EQ(d.next_bits, 0);
	T_EQ(d.active, 2);
	T_EQ(d.slot[0].generation, 2);
	T_EQ(d.slot[1].generation, 1);
	T_EQ(d.slot[0].created, now);
	T_EQ(d.slot[0].published, now);
	T_EQ(d.slot[0].seen, 0);
	T_EQ(d.slot[0].confirmed, 0);
	T_TRUE(strcmp(old1, d.slot[0].pubkey) != 0);
	free(old1);
	sign_check(&d, 1, now);             /* the new key works */
	sign_check(&d, 2, now);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_EQ(next, sw1 + 365 * DAY);

	/* Cycle 2: due, but DNS has not shown selector1's new key: hold. */
	now = sw1 + 365 * DAY;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_HOLD);
	T_EQ(next, 0);
	T_TRUE(strstr(why, "has not shown the selector1 key") != NULL);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	T_EQ(d.phase, DKIM_PHASE_PENDING);
	T_EQ(d.held_since, now);
	T_STREQ(d.held_why, why);
	T_EQ(d.active, 2);
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 2);
	/* Nothing new to record on the next ticks. */
	now += 3600;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_TRUE(strstr(why, "has not shown the selector1 key") != NULL);
	/* Seen through the wrong name (an enable happened): still held, new why. */
	d.slot[0].seen = now;
	d.slot[0].seen_via = 1;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_HOLD);
	T_TRUE(strstr(why, "(seen only via the CNAME, while enabled)") != NULL);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	T_EQ(d.held_since, sw1 + 365 * DAY);   /* first hold kept */
	T_EQ(strncmp(d.held_why, why, sizeof(d.held_why) - 1), 0);
	st = dkim_rotation_plan(&d, &policy, now + 60, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	now += 3600;
	see(&d, 1, now);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_SWITCH);
	m = sign_slot(&d, 2, now);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	sw2 = now;
	T_EQ(d.active, 1);
	T_EQ(d.phase, DKIM_PHASE_RETIRING);
	T_EQ(d.held_since, 0);
	T_STREQ(d.held_why, "");
	sign_check(&d, 1, now);
	now = sw2 + 7 * DAY - 1;
	T_EQ(verify_with(&d, 2, 2, m, now), 1);
	free(m);
	T_EQ(dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why)),
	    DKIM_STEP_NONE);
	T_EQ(next, sw2 + 7 * DAY);
	now++;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_REPLACE);
	old2 = strdup(d.slot[1].pubkey);
	nk = genkey(DKIM_ALG_ED25519_SHA256);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, nk));
	dkim_key_free(nk);
	T_EQ(d.slot[0].generation, 2);
	T_EQ(d.slot[1].generation, 3);
	T_TRUE(strcmp(old2, d.slot[1].pubkey) != 0);
	free(old2);
	T_EQ(d.phase, DKIM_PHASE_STABLE);
	T_EQ(d.active, 1);
	sign_check(&d, 1, now);
	sign_check(&d, 2, now);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_EQ(next, sw2 + 365 * DAY);
	dkim_mdomain_clear(&d);
}

TEST(dkim_rotate_gate)
{
	struct dkim_rotation_policy nodns = policy;
	struct dkim_mdomain d;
	char why[512];
	int64_t now = T0;

	provision(&d, now);
	/* The lead: exact boundary, and the wording. */
	now = T0 + 2 * DAY + 3 * 3600;
	T_EQ(dkim_gate(&d, 2, &nodns, now, why, sizeof(why)), 0);
	T_STREQ(why, "selector2 key published 2d 3h ago; dkim_publish_lead is "
	    "7d (4d 21h to go); selector2-fabrikam-com._domainkey.contoso."
	    "signet.example has not shown the selector2 key through DNS yet");
	nodns.dns_check = 0;
	T_EQ(dkim_gate(&d, 2, &nodns, now, why, sizeof(why)), 0);
	T_STREQ(why, "selector2 key published 2d 3h ago; dkim_publish_lead is "
	    "7d (4d 21h to go)");
	T_EQ(dkim_gate(&d, 2, &nodns, T0 + 7 * DAY - 1, why, sizeof(why)), 0);
	T_TRUE(strstr(why, "(1s to go)") != NULL);
	T_EQ(dkim_gate(&d, 2, &nodns, T0 + 7 * DAY, why, sizeof(why)), 1);
	/* With the DNS check: seen, seen before publishing, seen_via. */
	now = T0 + 8 * DAY;
	T_EQ(dkim_gate(&d, 2, &policy, now, why, sizeof(why)), 0);
	see(&d, 2, now);
	T_EQ(dkim_gate(&d, 2, &policy, now, why, sizeof(why)), 1);
	d.slot[1].seen = T0 - 1;
	T_EQ(dkim_gate(&d, 2, &policy, now, why, sizeof(why)), 0);
	T_STREQ(why, "selector2-fabrikam-com._domainkey.contoso.signet.example "
	    "has not shown the new selector2 key through DNS yet");
	see(&d, 2, now);
	d.enabled = 1;                      /* seen at the record, now enabled */
	T_EQ(dkim_gate(&d, 2, &policy, now, why, sizeof(why)), 0);
	T_STREQ(why, "selector2._domainkey.fabrikam.com has not shown the "
	    "selector2 key yet (seen only at the initial-domain record, "
	    "before enabling)");
	see(&d, 2, now);
	T_EQ(dkim_gate(&d, 2, &policy, now, why, sizeof(why)), 1);
	d.enabled = 0;                      /* and back */
	T_EQ(dkim_gate(&d, 2, &policy, now, why, sizeof(why)), 0);
	T_TRUE(strstr(why, "(seen only via the CNAME, while enabled)") != NULL);
	/* Bad slot, empty slot. */
	T_EQ(dkim_gate(&d, 3, &policy, now, why, sizeof(why)), 0);
	T_STREQ(why, "no slot 3");
	free(d.slot[1].pubkey);
	d.slot[1].pubkey = NULL;
	T_EQ(dkim_gate(&d, 2, &nodns, now, why, sizeof(why)), 0);
	T_STREQ(why, "selector2 has no key");
	dkim_mdomain_clear(&d);
}

/* A switch requested right after a replacement waits out the new key's lead. */
TEST(dkim_rotate_requested_and_lead_hold)
{
	struct dkim_mdomain d;
	struct dkim_key *nk;
	char why[512], held[160];
	int64_t now = T0 + 7 * DAY, next;
	enum dkim_step st;

	provision(&d, T0);
	see(&d, 1, now);
	see(&d, 2, now);
	T_OK(dkim_rotation_apply(&d, DKIM_STEP_CONFIRM, &policy, now, NULL));
	now += DAY;
	T_EQ(dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why)),
	    DKIM_STEP_NONE);
	d.rotate_requested = 1;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_SWITCH);
	T_TRUE(strstr(why, "rotation requested") != NULL);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	T_EQ(d.rotate_requested, 0);
	T_EQ(d.active, 2);
	now += 7 * DAY;
	nk = genkey(DKIM_ALG_ED25519_SHA256);
	T_OK(dkim_rotation_apply(&d, DKIM_STEP_REPLACE, &policy, now, nk));
	dkim_key_free(nk);
	see(&d, 1, now);
	now += DAY;
	d.rotate_requested = 1;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_HOLD);
	T_EQ(next, now + 6 * DAY);
	T_STREQ(why, "selector1 key published 1d ago; dkim_publish_lead is 7d "
	    "(6d to go)");
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	T_EQ(d.phase, DKIM_PHASE_PENDING);
	/* held_why names absolute times, so it does not change every tick. */
	T_TRUE(strstr(d.held_why, "usable from 2023-") != NULL);
	snprintf(held, sizeof(held), "%s", d.held_why);
	now += 3 * 3600;
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_NONE);
	T_TRUE(strstr(why, "(5d 21h to go)") != NULL);
	T_EQ(next, now + 5 * DAY + 21 * 3600);
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_SWITCH, &policy, now, NULL),
	    DKIM_EINVAL);
	T_EQ(d.active, 2);
	/* The lead ends: the switch goes through. */
	now = d.slot[0].published + 7 * DAY;
	see(&d, 1, now);
	st = dkim_rotation_plan(&d, &policy, now, &next, why, sizeof(why));
	T_EQ(st, DKIM_STEP_SWITCH);
	T_OK(dkim_rotation_apply(&d, st, &policy, now, NULL));
	T_EQ(d.active, 1);
	T_EQ(d.rotate_requested, 0);
	T_STREQ(d.held_why, "");
	dkim_mdomain_clear(&d);
}

TEST(dkim_rotate_apply_wrong_step)
{
	struct dkim_mdomain d;
	struct dkim_key *nk = genkey(DKIM_ALG_ED25519_SHA256);
	int64_t now = T0;

	provision(&d, now);
	/* Not confirmable yet; HOLD only when due doesn't matter, gate does. */
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_CONFIRM, &policy, now, NULL),
	    DKIM_EINVAL);
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_REPLACE, &policy, now, nk),
	    DKIM_EINVAL);
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_SWITCH, &policy, now, NULL),
	    DKIM_EINVAL);
	T_OK(dkim_rotation_apply(&d, DKIM_STEP_NONE, &policy, now, NULL));
	T_EQ(dkim_rotation_apply(&d, (enum dkim_step)99, &policy, now, NULL),
	    DKIM_EINVAL);
	now += 7 * DAY;
	see(&d, 1, now);
	see(&d, 2, now);
	T_OK(dkim_rotation_apply(&d, DKIM_STEP_CONFIRM, &policy, now, NULL));
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_CONFIRM, &policy, now, NULL),
	    DKIM_EINVAL);
	/* The idle slot passes: holding it is wrong. */
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_HOLD, &policy, now, NULL),
	    DKIM_EINVAL);
	T_EQ(d.phase, DKIM_PHASE_STABLE);
	T_STREQ(d.held_why, "");
	T_OK(dkim_rotation_apply(&d, DKIM_STEP_SWITCH, &policy, now, NULL));
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_SWITCH, &policy, now, NULL),
	    DKIM_EINVAL);
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_HOLD, &policy, now, NULL),
	    DKIM_EINVAL);
	T_EQ(dkim_rotation_apply(&d, DKIM_STEP_REPLACE, &policy, now, NULL),
	    DKIM_EINVAL);
	T_EQ(d.active, 2);
	T_EQ(d.phase, DKIM_PHASE_RETIRING);
	dkim_key_free(nk);
	dkim_mdomain_clear(&d);
}

/* fields collected as "name=value\n" lines. */
struct flist {
	char buf[16384];
	size_t len;
	int n;
};

static int
collect(void *arg, const char *field, const char *value)
{
	struct flist *f = arg;
	int k;

	T_TRUE(strchr(value, '\r') == NULL && strchr(value, '\n') == NULL);
	k = snprintf(f->buf + f->len, sizeof(f->buf) - f->len, "%s=%s\n",
	    field, value);
	T_TRUE(k > 0 && (size_t)k < sizeof(f->buf) - f->len);
	f->len += (size_t)k;
	f->n++;
	return 0;
}

static int
replay(void *arg, const char *field, const char *value)
{
	T_OK(dkim_mdomain_set_field(arg, field, value));
	return 0;
}

static int
stop_at_phase(void *arg, const char *field, const char *value)
{
	(*(int *)arg)++;
	return strcmp(field, "phase") == 0 ? 42 : 0;
}

TEST(dkim_rotate_fields)
{
	static const char order[] =
	    "domain tenant initial_domain enabled active phase phase_since "
	    "last_switch rotate_requested next_bits held_since held_why "
	    "dns_checked dns_result dns_detail version s1.alg s1.bits "
	    "s1.generation s1.created s1.published s1.seen s1.seen_via "
	    "s1.confirmed s1.pubkey s1.priv s2.alg s2.bits s2.generation "
	    "s2.created s2.published s2.seen s2.seen_via s2.confirmed "
	    "s2.pubkey s2.priv ";
	struct flist a, b;
	struct dkim_mdomain d, e;
	char names[2048], *p, *q, why[256];
	size_t nl = 0;
	int calls = 0;

	provision(&d, T0);
	d.enabled = 1;
	d.active = 2;
	d.phase = DKIM_PHASE_PENDING;
	d.held_since = T0 + 5;
	snprintf(d.held_why, sizeof(d.held_why), "line one\r\nline\ttwo");
	d.dns_checked = T0 + 9;
	d.dns_result = -1;
	snprintf(d.dns_detail, sizeof(d.dns_detail), "SERVFAIL\n");
	d.version = 18446744073709551615ULL;
	d.next_bits = 3072;
	d.slot[1].seen = T0 + 3;
	d.slot[1].seen_via = 1;
	d.slot[1].confirmed = T0 + 4;
	d.slot[0].generation = 4000000000U;

	/* With keys: every field, in order; back again to the same record. */
	memset(&a, 0, sizeof(a));
	T_OK(dkim_mdomain_fields(&d, 1, collect, &a));
	T_EQ(a.n, 36);
	for (p = a.buf; (q = strchr(p, '=')) != NULL; p = strchr(q, '\n') + 1) {
		memcpy(names + nl, p, (size_t)(q - p));
		nl += (size_t)(q - p);
		names[nl++] = ' ';
	}
	names[nl] = '\0';
	T_STREQ(names, order);
	T_TRUE(strstr(a.buf, "held_why=line one??line?two\n") != NULL);
	T_TRUE(strstr(a.buf, "dns_detail=SERVFAIL?\n") != NULL);
	T_TRUE(strstr(a.buf, "phase=pending\n") != NULL);
	T_TRUE(strstr(a.buf, "s1.alg=ed25519-sha256\n") != NULL);
	T_TRUE(strstr(a.buf, "version=18446744073709551615\n") != NULL);
	T_TRUE(strstr(a.buf, "s1.generation=4000000000\n") != NULL);

	dkim_mdomain_init(&e);
	T_OK(dkim_mdomain_fields(&d, 1, replay, &e));
	T_OK(dkim_mdomain_check(&e, why, sizeof(why)));
	memset(&b, 0, sizeof(b));
	T_OK(dkim_mdomain_fields(&e, 1, collect, &b));
	T_STREQ(b.buf, a.buf);
	T_MEMEQ(e.slot[1].priv, e.slot[1].privlen, d.slot[1].priv,
	    d.slot[1].privlen);
	T_EQ(e.version, d.version);
	T_EQ(e.held_since, d.held_since);
	T_EQ(e.slot[1].seen_via, 1);
	d.enabled = 0;
	e.enabled = 0;
	sign_check(&e, 1, T0);
	sign_check(&e, 2, T0);
	dkim_mdomain_clear(&e);

	/* Without keys: no sN.priv, nothing loaded after the replay. */
	memset(&a, 0, sizeof(a));
	T_OK(dkim_mdomain_fields(&d, 0, collect, &a));
	T_EQ(a.n, 34);
	T_TRUE(strstr(a.buf, "priv=") == NULL);
	dkim_mdomain_init(&e);
	T_OK(dkim_mdomain_fields(&d, 0, replay, &e));
	T_OK(dkim_mdomain_check(&e, why, sizeof(why)));
	T_TRUE(e.slot[0].priv == NULL && e.slot[1].priv == NULL);
	memset(&b, 0, sizeof(b));
	T_OK(dkim_mdomain_fields(&e, 1, collect, &b));
	T_STREQ(b.buf, a.buf);
	{
		struct dkim_key *k = NULL;

		T_EQ(dkim_slot_key(&e.slot[0], &k), DKIM_EKEY);
		T_TRUE(k == NULL);
	}
	dkim_mdomain_clear(&e);

	/* cb's result stops the walk. */
	T_EQ(dkim_mdomain_fields(&d, 0, stop_at_phase, &calls), 42);
	T_EQ(calls, 6);

	/* Bad values and unknown fields. */
	dkim_mdomain_init(&e);
	T_EQ(dkim_mdomain_set_field(&e, "active", "3"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "active", "0"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "enabled", "2"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "enabled", "yes"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "phase", "switching"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "phase_since", "12a"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "phase_since", ""), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "s1.generation", "-1"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "s1.generation", "4294967296"),
	    DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "version", "-1"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "s2.alg", "dsa"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "s2.priv", "!!!"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "domain", "not a domain"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "dns_result", "2"), DKIM_EINVAL);
	T_EQ(dkim_mdomain_set_field(&e, "future_field", "x"), 1);
	T_EQ(dkim_mdomain_set_field(&e, "s3.bits", "1024"), 1);
	T_EQ(dkim_mdomain_set_field(&e, "s1.colour", "red"), 1);
	T_OK(dkim_mdomain_set_field(&e, "phase_since", "-5"));
	T_EQ(e.phase_since, -5);
	T_OK(dkim_mdomain_set_field(&e, "domain", "Example.ORG"));
	T_STREQ(e.domain, "example.org");
	T_EQ(e.active, 1);
	dkim_mdomain_clear(&e);
	dkim_mdomain_clear(&d);
}

TEST(dkim_rotate_check)
{
	struct dkim_mdomain d, e;
	char why[256];

	provision(&d, T0);
	T_OK(dkim_mdomain_check(&d, why, sizeof(why)));
	dkim_mdomain_init(&e);
	T_EQ(dkim_mdomain_check(&e, why, sizeof(why)), DKIM_EINVAL);
	T_STREQ(why, "domain is missing");

#define BREAK(stmt, msgtext)                                            \
	do {                                                            \
		T_OK(dkim_mdomain_copy(&e, &d));                        \
		stmt;                                                   \
		T_EQ(dkim_mdomain_check(&e, why, sizeof(why)), DKIM_EINVAL); \
		T_STREQ(why, msgtext);                                  \
		dkim_mdomain_clear(&e);                                 \
	} while (0)

	BREAK(e.tenant[0] = '\0', "fabrikam.com: tenant is missing");
	BREAK(e.initial_domain[0] = '\0',
	    "fabrikam.com: initial_domain is missing");
	BREAK(e.active = 0, "fabrikam.com: active is 0, not 1 or 2");
	BREAK(e.active = 3, "fabrikam.com: active is 3, not 1 or 2");
	BREAK(e.slot[1].bits = 0, "fabrikam.com: s2.bits is missing");
	BREAK((free(e.slot[0].pubkey), e.slot[0].pubkey = NULL),
	    "fabrikam.com: s1.pubkey is missing");
	BREAK(e.slot[1].generation = 0,
	    "fabrikam.com: s2.generation is missing");
#undef BREAK
	dkim_mdomain_clear(&d);
}

TEST(dkim_rotate_txt_matches)
{
	const char *pk = "MCowBQYDK2VwAyEAabcdefgh+/ij==";
	const char *cases_yes[] = {
		"v=DKIM1; k=ed25519; p=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1;k=ed25519;p=MCowBQYDK2VwAyEAabcdefgh+/ij==;",
		"v=DKIM1; k=ed25519; p = MCowBQYDK2Vw AyEAabcdefgh\r\n\t+/ij== ; n=256,1,1",
		"p=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1; p=MCowBQYDK2VwAyEA abcdefgh+/ij==  ;  n=x ",
		NULL,
	};
	const char *cases_no[] = {
		"v=DKIM1; k=ed25519; p=MCowBQYDK2VwAyEAabcdefgh+/ij",
		"v=DKIM1; k=ed25519; p=XCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1; k=ed25519; p=",
		"v=DKIM1; k=ed25519",
		"v=DKIM1; k=ed25519; pp=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1; k=ed25519; P=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1; p=MCowBQYDK2VwAyEAabcdefgh+/ij==; "
		    "p=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1; ; p=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"v=DKIM1; junk; p=MCowBQYDK2VwAyEAabcdefgh+/ij==",
		"",
		NULL,
	};
	int i;

	for (i = 0; cases_yes[i] != NULL; i++)
		if (dkim_txt_matches(cases_yes[i], strlen(cases_yes[i]), pk) != 1)
			T_FAIL("should match: %s", cases_yes[i]);
	for (i = 0; cases_no[i] != NULL; i++)
		if (dkim_txt_matches(cases_no[i], strlen(cases_no[i]), pk) != 0)
			T_FAIL("should not match: %s", cases_no[i]);
	/* Folded key on our side too; len bounds the text. */
	T_EQ(dkim_txt_matches(cases_yes[0], strlen(cases_yes[0]),
	    "MCowBQYDK2VwAyEA abcdefgh+/ij=="), 1);
	T_EQ(dkim_txt_matches(cases_yes[0], strlen(cases_yes[0]) - 2, pk), 0);
	T_EQ(dkim_txt_matches(cases_yes[0], strlen(cases_yes[0]), ""), 0);
	T_EQ(dkim_txt_matches(cases_yes[0], strlen(cases_yes[0]), NULL), 0);
}

/* Real TXT records of a provisioned domain match their own slots only. */
TEST(dkim_rotate_txt_matches_real)
{
	struct dkim_mdomain d;
	char *t1, *t2;

	provision(&d, T0);
	t1 = dkim_mdomain_txt(&d, 1);
	t2 = dkim_mdomain_txt(&d, 2);
	T_EQ(dkim_txt_matches(t1, strlen(t1), d.slot[0].pubkey), 1);
	T_EQ(dkim_txt_matches(t2, strlen(t2), d.slot[1].pubkey), 1);
	T_EQ(dkim_txt_matches(t1, strlen(t1), d.slot[1].pubkey), 0);
	free(t1);
	free(t2);
	dkim_mdomain_clear(&d);
}

TEST(dkim_rotate_name_lengths)
{
	struct dkim_key *k1 = genkey(DKIM_ALG_ED25519_SHA256);
	struct dkim_key *k2 = genkey(DKIM_ALG_ED25519_SHA256);
	char dom[256], init[256], name[300], sel[DKIM_SELECTOR_BUFSIZE];
	char want[300];
	struct dkim_mdomain d;
	size_t len;

	/* A 60-octet domain: enc too long for a label, the hashed form. */
	snprintf(dom, sizeof(dom), "%s.example.com",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, dom, "t", "t.signet.example", k1, k2,
	    T0));
	T_OK(dkim_selector_name(1, dom, sel, sizeof(sel)));
	T_TRUE(strncmp(sel, "selector1---", 12) == 0);
	T_OK(dkim_mdomain_record_name(&d, 1, name, sizeof(name)));
	snprintf(want, sizeof(want), "%s._domainkey.t.signet.example", sel);
	T_STREQ(name, want);
	T_EQ(strlen(name), 38 + 12 + 16);
	dkim_mdomain_clear(&d);

	/*
	 * An initial domain so long that the record name passes 253: the
	 * plain selector "selector1-a-com" (15) + "._domainkey." (12) + init.
	 */
	memset(init, 0, sizeof(init));
	for (len = 0; len + 64 < 230; len += 64)
		memcpy(init + len, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.", 64);
	memcpy(init + len, "example", 7);    /* 192 + 7 = 199 octets */
	len = strlen(init);
	T_EQ(len, 199);
	/* 15 + 12 + 199 = 226: fits. */
	dkim_mdomain_init(&d);
	T_OK(dkim_mdomain_provision(&d, "a.com", "t", init, k1, k2, T0));
	T_OK(dkim_mdomain_record_name(&d, 2, name, sizeof(name)));
	T_EQ(strlen(name), 226);
	dkim_mdomain_clear(&d);
	/* A longer domain: 10 + 33 + 12 + 199 = 254: one octet too many. */
	T_EQ(dkim_mdomain_provision(&d, "abcdefghijklmnopqrstuvwxyz123.com",
	    "t", init, k1, k2, T0), DKIM_EINVAL);
	T_STREQ(d.domain, "");
	T_TRUE(d.slot[0].pubkey == NULL);
	/* One octet shorter: exactly 253. */
	T_OK(dkim_mdomain_provision(&d, "abcdefghijklmnopqrstuvwxyz12.com",
	    "t", init, k1, k2, T0));
	T_OK(dkim_mdomain_record_name(&d, 1, name, sizeof(name)));
	T_EQ(strlen(name), 253);
	T_EQ(dkim_mdomain_record_name(&d, 1, name, 253), -ENOBUFS);
	/* The set_field route to an overlong name: check() refuses it. */
	T_OK(dkim_mdomain_set_field(&d, "domain",
	    "abcdefghijklmnopqrstuvwxyz123.com"));
	T_EQ(dkim_mdomain_record_name(&d, 1, name, sizeof(name)), DKIM_EINVAL);
	T_EQ(dkim_mdomain_check(&d, name, sizeof(name)), DKIM_EINVAL);
	T_TRUE(strstr(name, "not a valid DNS name") != NULL);
	/* Enabled: the query name selectorN._domainkey.<domain> too. */
	d.enabled = 1;
	T_OK(dkim_mdomain_query_name(&d, 1, name, sizeof(name)));
	T_STREQ(name, "selector1._domainkey.abcdefghijklmnopqrstuvwxyz123.com");
	dkim_mdomain_clear(&d);
	dkim_key_free(k1);
	dkim_key_free(k2);
}

TEST(dkim_rotate_now)
{
	struct dkim_mdomain d;
	struct flist before, after;
	struct dkim_key *nk;
	char why[512], *old1;
	int64_t now = T0 + 8 * DAY;

	provision(&d, T0);
	see(&d, 1, now);
	T_OK(dkim_rotation_apply(&d, DKIM_STEP_CONFIRM, &policy, now, NULL));
	nk = genkey(DKIM_ALG_RSA_SHA256);

	/* Refused while DNS has not shown the idle key: nothing changes. */
	memset(&before, 0, sizeof(before));
	T_OK(dkim_mdomain_fields(&d, 1, collect, &before));
	T_EQ(dkim_rotate_now(&d, &policy, now, nk, why, sizeof(why)),
	    DKIM_EINVAL);
	T_STREQ(why, "selector2-fabrikam-com._domainkey.contoso.signet.example "
	    "has not shown the selector2 key through DNS yet");
	memset(&after, 0, sizeof(after));
	T_OK(dkim_mdomain_fields(&d, 1, collect, &after));
	T_STREQ(after.buf, before.buf);
	T_EQ(dkim_rotate_now(&d, &policy, now, NULL, why, sizeof(why)),
	    DKIM_EINVAL);

	/* Allowed once seen: switch, and the compromised slot is replaced. */
	see(&d, 2, now);
	d.rotate_requested = 1;
	d.next_bits = 1024;
	old1 = strdup(d.slot[0].pubkey);
	T_OK(dkim_rotate_now(&d, &policy, now, nk, why, sizeof(why)));
	T_EQ(d.active, 2);
	T_EQ(d.phase, DKIM_PHASE_STABLE);
	T_EQ(d.phase_since, now);
	T_EQ(d.last_switch, now);
	T_EQ(d.rotate_requested, 0);
	T_EQ(d.next_bits, 0);
	T_EQ(d.slot[1].confirmed, now);
	T_EQ(d.slot[0].generation, 2);
	T_EQ(d.slot[0].alg, DKIM_ALG_RSA_SHA256);
	T_EQ(d.slot[0].published, now);
	T_EQ(d.slot[0].seen, 0);
	T_TRUE(strcmp(old1, d.slot[0].pubkey) != 0);
	free(old1);
	T_EQ(dkim_mdomain_signing_slot(&d, &policy, now), 2);
	sign_check(&d, 2, now);
	sign_check(&d, 1, now);

	/* Right after, the new key is far from its lead: refused again. */
	see(&d, 1, now);
	T_EQ(dkim_rotate_now(&d, &policy, now + DAY, nk, why, sizeof(why)),
	    DKIM_EINVAL);
	T_TRUE(strstr(why, "selector1 key published 1d ago; dkim_publish_lead "
	    "is 7d (6d to go)") == why);
	T_EQ(d.active, 2);
	dkim_key_free(nk);
	dkim_mdomain_clear(&d);
}

TEST(dkim_rotate_der_b64)
{
	static const unsigned char bin[] = { 0, 1, 2, 0xfb, 0xff, 0x80, 'x' };
	struct dkim_key *k, *back = NULL;
	unsigned char *der, *out;
	size_t derlen, outlen, n;
	char *s, *p1, *p2;

	for (n = 0; n <= sizeof(bin); n++) {
		T_TRUE((s = dkim_b64_encode(bin, n)) != NULL);
		T_OK(dkim_b64_decode(s, &out, &outlen));
		T_MEMEQ(out, outlen, bin, n);
		free(out);
		free(s);
	}
	s = dkim_b64_encode((const unsigned char *)"foob", 4);
	T_STREQ(s, "Zm9vYg==");
	free(s);
	T_OK(dkim_b64_decode(" Zm9v\r\n Yg== ", &out, &outlen));
	T_MEMEQ(out, outlen, "foob", 4);
	free(out);
	T_EQ(dkim_b64_decode("Zm9v*", &out, &outlen), DKIM_EINVAL);
	T_TRUE(out == NULL);
	T_EQ(dkim_b64_decode("Z", &out, &outlen), DKIM_EINVAL);

	k = genkey(DKIM_ALG_RSA_SHA256);
	T_OK(dkim_key_to_der(k, &der, &derlen));
	T_EQ(der[0], 0x30);                 /* a DER SEQUENCE */
	T_OK(dkim_key_from_der(der, derlen, &back));
	p1 = p_of(k);
	p2 = p_of(back);
	T_STREQ(p1, p2);
	T_EQ(dkim_key_bits(back), 1024);
	dkim_key_free(back);
	T_EQ(dkim_key_from_der(der, derlen - 1, &back), DKIM_EKEY);
	T_TRUE(back == NULL);
	der[derlen / 2] ^= 0x55;
	n = dkim_key_from_der(der, derlen, &back) == 0;
	dkim_key_free(back);
	T_EQ(dkim_key_from_der((const unsigned char *)"junk", 4, &back),
	    DKIM_EKEY);
	dkim_wipe_free(der, derlen);
	dkim_wipe_free(NULL, 5);
	free(p1);
	free(p2);
	dkim_key_free(k);
	(void)n;
}

/* A slot whose private key does not belong to its pubkey refuses to load. */
TEST(dkim_rotate_slot_key_mismatch)
{
	struct dkim_mdomain d;
	struct dkim_key *k = NULL;
	unsigned char *tmp;
	size_t tmplen;

	provision(&d, T0);
	tmp = d.slot[0].priv;
	tmplen = d.slot[0].privlen;
	d.slot[0].priv = d.slot[1].priv;
	d.slot[0].privlen = d.slot[1].privlen;
	T_EQ(dkim_slot_key(&d.slot[0], &k), DKIM_EKEY);
	T_TRUE(k == NULL);
	d.slot[0].priv = tmp;
	d.slot[0].privlen = tmplen;
	T_OK(dkim_slot_key(&d.slot[0], &k));
	dkim_key_free(k);
	d.slot[0].alg = DKIM_ALG_RSA_SHA256;
	T_EQ(dkim_slot_key(&d.slot[0], &k), DKIM_EKEY);
	dkim_mdomain_clear(&d);
}
