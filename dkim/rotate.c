/*
 * rotate.c - managed DKIM keys (issue 5): what a managed domain is (two
 * key slots, one active), the names and TXT records of its keys, the gate
 * that decides when a key may sign, the rotation state machine (plan one
 * step, apply it) and the flat (field, value) form the key stores keep.
 *
 * Everything here is a pure function of a struct dkim_mdomain, a policy and
 * the time passed in: no clock, no storage, no DNS, no threads.  relay/
 * reads and writes the records, runs the DNS checks (filling slot.seen and
 * seen_via) and drives dkim_rotation_plan / dkim_rotation_apply on a timer.
 * The model and the phases are described in dkim.h.
 *
 * Private keys appear here only as PKCS#8 DER in slot.priv; every copy is
 * wiped when dropped, and no reason string ever carries key material.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "dkim/dkim_int.h"

#define ROT_NAME_MAX 253         /* octets of a DNS name, no trailing dot */
#define ROT_NAME_BUFSIZE 256

/* ---- small helpers -------------------------------------------------------- */

/* rot_add - a + b for times, saturating instead of overflowing. */
static int64_t
rot_add(int64_t a, int64_t b)
{
	if (b > 0 && a > INT64_MAX - b)
		return INT64_MAX;
	if (b < 0 && a < INT64_MIN - b)
		return INT64_MIN;
	return a + b;
}

/* rot_dur - a duration as "7d", "2d 3h", "5h 12m", "40m", "12s". */
static const char *
rot_dur(int64_t s, char *buf, size_t len)
{
	long long d, h, m;

	if (s < 0)
		s = 0;
	d = s / 86400;
	h = s % 86400 / 3600;
	m = s % 3600 / 60;
	if (d > 0 && h > 0)
		snprintf(buf, len, "%lldd %lldh", d, h);
	else if (d > 0)
		snprintf(buf, len, "%lldd", d);
	else if (h > 0 && m > 0)
		snprintf(buf, len, "%lldh %lldm", h, m);
	else if (h > 0)
		snprintf(buf, len, "%lldh", h);
	else if (m > 0)
		snprintf(buf, len, "%lldm", m);
	else
		snprintf(buf, len, "%llds", (long long)s);
	return buf;
}

/* rot_when - a unix time as "2025-01-31 12:00:00Z". */
static const char *
rot_when(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%" PRId64, t);
	return buf;
}

/* rot_slot - d's slot n (1 or 2), or NULL. */
static const struct dkim_slot *
rot_slot(const struct dkim_mdomain *d, int n)
{
	if (d == NULL || (n != 1 && n != 2))
		return NULL;
	return &d->slot[n - 1];
}

/* rot_has_key - does the slot hold a published key? */
static int
rot_has_key(const struct dkim_slot *s)
{
	return s != NULL && s->bits > 0 && s->pubkey != NULL &&
	    s->pubkey[0] != '\0';
}

/* rot_setwhy - format a reason into why when the caller gave room. */
static void __attribute__((format(printf, 3, 4)))
rot_setwhy(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || whylen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

/* rot_slot_free - free a slot's strings, wiping the private key. */
static void
rot_slot_free(struct dkim_slot *s)
{
	free(s->pubkey);
	dkim_wipe_free(s->priv, s->privlen);
	memset(s, 0, sizeof(*s));
}

/* ---- names ------------------------------------------------------------------ */

const char *
dkim_phase_name(enum dkim_phase ph)
{
	switch (ph) {
	case DKIM_PHASE_STABLE:
		return "stable";
	case DKIM_PHASE_PENDING:
		return "pending";
	case DKIM_PHASE_RETIRING:
		return "retiring";
	}
	return "?";
}

int
dkim_phase_parse(const char *s, enum dkim_phase *out)
{
	int i;

	if (s == NULL)
		return DKIM_EINVAL;
	for (i = 0; i < DKIM_NPHASES; i++) {
		if (strcmp(s, dkim_phase_name((enum dkim_phase)i)) == 0) {
			*out = (enum dkim_phase)i;
			return 0;
		}
	}
	return DKIM_EINVAL;
}

const char *
dkim_step_name(enum dkim_step st)
{
	switch (st) {
	case DKIM_STEP_NONE:
		return "none";
	case DKIM_STEP_CONFIRM:
		return "confirm";
	case DKIM_STEP_HOLD:
		return "hold";
	case DKIM_STEP_SWITCH:
		return "switch";
	case DKIM_STEP_REPLACE:
		return "replace";
	}
	return "?";
}

/* ---- the record ------------------------------------------------------------- */

void
dkim_mdomain_init(struct dkim_mdomain *d)
{
	memset(d, 0, sizeof(*d));
	d->phase = DKIM_PHASE_STABLE;
	d->active = 1;
}

void
dkim_mdomain_clear(struct dkim_mdomain *d)
{
	if (d == NULL)
		return;
	rot_slot_free(&d->slot[0]);
	rot_slot_free(&d->slot[1]);
	dkim_mdomain_init(d);
}

/* rot_slot_copy - deep copy of a slot into dst (whose contents are not
 * freed).  0 or -ENOMEM, dst then empty. */
static int
rot_slot_copy(struct dkim_slot *dst, const struct dkim_slot *src)
{
	*dst = *src;
	dst->pubkey = NULL;
	dst->priv = NULL;
	if (src->pubkey != NULL && (dst->pubkey = strdup(src->pubkey)) == NULL)
		goto fail;
	if (src->priv != NULL) {
		if ((dst->priv = malloc(src->privlen > 0 ? src->privlen : 1)) ==
		    NULL)
			goto fail;
		memcpy(dst->priv, src->priv, src->privlen);
	}
	return 0;
fail:
	rot_slot_free(dst);
	return -ENOMEM;
}

/*
 * dst's previous contents are not freed (it may be uninitialized); on
 * failure dst is left initialized and empty.
 */
int
dkim_mdomain_copy(struct dkim_mdomain *dst, const struct dkim_mdomain *src)
{
	*dst = *src;
	memset(dst->slot, 0, sizeof(dst->slot));
	if (rot_slot_copy(&dst->slot[0], &src->slot[0]) != 0 ||
	    rot_slot_copy(&dst->slot[1], &src->slot[1]) != 0) {
		dkim_mdomain_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

/*
 * The p= value is taken from dkim_key_txt(), so a slot's pubkey is exactly
 * what that function publishes.  The slot's previous key, if any, is freed
 * (wiped) only once the new one is in hand: on error s is unchanged.
 */
int
dkim_slot_set_key(struct dkim_slot *s, const struct dkim_key *key,
    uint32_t gen, int64_t now)
{
	unsigned char *der = NULL;
	char *txt = NULL, *pub = NULL;
	const char *p;
	size_t derlen = 0;
	int rc;

	if (s == NULL || key == NULL)
		return DKIM_EINVAL;
	if ((txt = dkim_key_txt(key)) == NULL) {
		rc = DKIM_ENOMEM;
		goto fail;
	}
	if ((p = strstr(txt, "; p=")) == NULL) {
		rc = DKIM_ECRYPTO;
		goto fail;
	}
	if ((pub = strdup(p + 4)) == NULL) {
		rc = DKIM_ENOMEM;
		goto fail;
	}
	if ((rc = dkim_key_to_der(key, &der, &derlen)) != 0)
		goto fail;
	rot_slot_free(s);
	s->alg = dkim_key_alg(key);
	s->bits = dkim_key_bits(key);
	s->generation = gen;
	s->created = now;
	s->published = now;
	s->seen = 0;
	s->seen_via = 0;
	s->confirmed = 0;
	s->pubkey = pub;
	s->priv = der;
	s->privlen = derlen;
	pub = NULL;
	rc = 0;
fail:
	free(txt);
	free(pub);
	return rc;
}

/*
 * The key is checked against the slot: same algorithm and the same public
 * half as s->pubkey, so a private key that does not belong to the
 * published record never signs.
 */
int
dkim_slot_key(const struct dkim_slot *s, struct dkim_key **out)
{
	struct dkim_key *key = NULL;
	char *txt = NULL;
	const char *p;
	int rc;

	*out = NULL;
	if (s == NULL || s->priv == NULL || s->privlen == 0)
		return DKIM_EKEY;
	if ((rc = dkim_key_from_der(s->priv, s->privlen, &key)) != 0)
		return rc;
	if ((txt = dkim_key_txt(key)) == NULL) {
		rc = DKIM_ENOMEM;
		goto fail;
	}
	if (dkim_key_alg(key) != s->alg || s->pubkey == NULL ||
	    (p = strstr(txt, "; p=")) == NULL || strcmp(p + 4, s->pubkey) != 0) {
		rc = DKIM_EKEY;
		goto fail;
	}
	free(txt);
	*out = key;
	return 0;
fail:
	free(txt);
	dkim_key_free(key);
	return rc;
}

/*
 * d is overwritten, not freed: pass one that is fresh from
 * dkim_mdomain_init or dkim_mdomain_clear.  On error d is left initialized
 * and empty.  initial_domain is normalized too, and both record names must
 * fit in a DNS name.
 */
int
dkim_mdomain_provision(struct dkim_mdomain *d, const char *domain,
    const char *tenant, const char *initial_domain,
    const struct dkim_key *k1, const struct dkim_key *k2, int64_t now)
{
	char name[ROT_NAME_BUFSIZE];
	int rc;

	dkim_mdomain_init(d);
	if (domain == NULL || tenant == NULL || initial_domain == NULL ||
	    k1 == NULL || k2 == NULL || tenant[0] == '\0' ||
	    strlen(tenant) >= sizeof(d->tenant)) {
		rc = DKIM_EINVAL;
		goto fail;
	}
	if (dkim_domain_normalize(domain, d->domain, sizeof(d->domain)) != 0 ||
	    dkim_domain_normalize(initial_domain, d->initial_domain,
	    sizeof(d->initial_domain)) != 0) {
		rc = DKIM_EINVAL;
		goto fail;
	}
	memcpy(d->tenant, tenant, strlen(tenant) + 1);
	if (dkim_mdomain_record_name(d, 1, name, sizeof(name)) != 0 ||
	    dkim_mdomain_record_name(d, 2, name, sizeof(name)) != 0) {
		rc = DKIM_EINVAL;
		goto fail;
	}
	if ((rc = dkim_slot_set_key(&d->slot[0], k1, 1, now)) != 0 ||
	    (rc = dkim_slot_set_key(&d->slot[1], k2, 1, now)) != 0)
		goto fail;
	d->enabled = 0;
	d->active = 1;
	d->phase = DKIM_PHASE_STABLE;
	d->phase_since = now;
	d->last_switch = now;
	return 0;
fail:
	dkim_mdomain_clear(d);
	return rc;
}

/* NULL also for a bad slot or an empty one. */
char *
dkim_mdomain_txt(const struct dkim_mdomain *d, int slot)
{
	const struct dkim_slot *s = rot_slot(d, slot);
	char *txt;
	size_t len;

	if (!rot_has_key(s))
		return NULL;
	len = strlen(s->pubkey) + 96;
	if ((txt = malloc(len)) == NULL)
		return NULL;
	snprintf(txt, len, "v=DKIM1; k=%s; p=%s; n=%d,%" PRId64 ",%" PRIu32,
	    s->alg == DKIM_ALG_ED25519_SHA256 ? "ed25519" : "rsa", s->pubkey,
	    s->bits, s->created, s->generation);
	return txt;
}

/* rot_name - print fmt into out, DKIM_EINVAL when the result is not a
 * DNS name (over 253 octets), -ENOBUFS when out is too small. */
static int __attribute__((format(printf, 3, 4)))
rot_name(char *out, size_t outlen, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf) || n > ROT_NAME_MAX)
		return DKIM_EINVAL;
	if ((size_t)n >= outlen)
		return -ENOBUFS;
	memcpy(out, buf, (size_t)n + 1);
	return 0;
}

int
dkim_mdomain_record_name(const struct dkim_mdomain *d, int slot,
    char *out, size_t outlen)
{
	char sel[DKIM_SELECTOR_BUFSIZE];
	int rc;

	if (d == NULL || (slot != 1 && slot != 2) ||
	    d->initial_domain[0] == '\0')
		return DKIM_EINVAL;
	if ((rc = dkim_selector_name(slot, d->domain, sel, sizeof(sel))) != 0)
		return rc == -ENOBUFS ? DKIM_EINVAL : rc;
	return rot_name(out, outlen, "%s._domainkey.%s", sel, d->initial_domain);
}

int
dkim_mdomain_query_name(const struct dkim_mdomain *d, int slot,
    char *out, size_t outlen)
{
	if (d == NULL || (slot != 1 && slot != 2))
		return DKIM_EINVAL;
	if (!d->enabled)
		return dkim_mdomain_record_name(d, slot, out, outlen);
	if (d->domain[0] == '\0')
		return DKIM_EINVAL;
	return rot_name(out, outlen, "selector%d._domainkey.%s", slot, d->domain);
}

int
dkim_mdomain_identity(const struct dkim_mdomain *d, int slot, char *dout,
    char *sout)
{
	const char *dom;

	if (d == NULL || (slot != 1 && slot != 2) || d->domain[0] == '\0')
		return DKIM_EINVAL;
	if (d->enabled) {
		dom = d->domain;
		snprintf(sout, DKIM_SELECTOR_BUFSIZE, "selector%d", slot);
	} else {
		dom = d->initial_domain;
		if (dom[0] == '\0' || dkim_selector_name(slot, d->domain, sout,
		    DKIM_SELECTOR_BUFSIZE) != 0)
			return DKIM_EINVAL;
	}
	if (strlen(dom) >= DKIM_DOMAIN_MAX)
		return DKIM_EINVAL;
	memcpy(dout, dom, strlen(dom) + 1);
	return 0;
}

/* rot_wsp - whitespace inside a TXT value (FWS, RFC 6376 3.2). */
static int
rot_wsp(int c)
{
	return dkim__is_fws(c);
}

/* rot_eq_nows - a[0..alen) equals NUL-terminated b, ignoring whitespace
 * on both sides; an empty value matches nothing. */
static int
rot_eq_nows(const char *a, size_t alen, const char *b)
{
	size_t i = 0, n = 0;

	for (;;) {
		while (i < alen && rot_wsp((unsigned char)a[i]))
			i++;
		while (*b != '\0' && rot_wsp((unsigned char)*b))
			b++;
		if (i == alen || *b == '\0')
			break;
		if (a[i] != *b)
			return 0;
		i++;
		b++;
		n++;
	}
	return i == alen && *b == '\0' && n > 0;
}

/*
 * A tag-list (RFC 6376 3.2): tag-spec *( ";" tag-spec ) [ ";" ], each
 * [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS].  A record with the p=
 * tag twice, or with a tag that has no "=", is malformed: no match.
 */
int
dkim_txt_matches(const char *txt, size_t len, const char *pubkey)
{
	const char *p, *end, *semi, *eq, *n0, *n1;
	int found = 0, match = 0;

	if (txt == NULL || pubkey == NULL)
		return 0;
	p = txt;
	end = txt + len;
	while (p < end) {
		if ((semi = memchr(p, ';', (size_t)(end - p))) == NULL)
			semi = end;
		n0 = p;
		while (n0 < semi && rot_wsp((unsigned char)*n0))
			n0++;
		if (n0 == semi) {               /* empty spec: only at the end */
			if (semi != end)
				return 0;
			break;
		}
		if ((eq = memchr(n0, '=', (size_t)(semi - n0))) == NULL)
			return 0;
		n1 = eq;
		while (n1 > n0 && rot_wsp((unsigned char)n1[-1]))
			n1--;
		if (n1 - n0 == 1 && *n0 == 'p') {
			if (found++)
				return 0;
			match = rot_eq_nows(eq + 1, (size_t)(semi - eq - 1),
			    pubkey);
		}
		p = semi + 1;
	}
	return found == 1 && match;
}

/* ---- the gate --------------------------------------------------------------- */

/*
 * rot_gate - the gate for slot n at now; stable selects the wording: the
 * human one says how long ago and how long to go (it changes as time
 * passes), the stable one only names absolute times, so it stays the same
 * while nothing but the clock changes (held_why).  1 pass, 0 not.
 */
static int
rot_gate(const struct dkim_mdomain *d, int n,
    const struct dkim_rotation_policy *p, int64_t now, int stable,
    char *why, size_t whylen)
{
	const struct dkim_slot *s = rot_slot(d, n);
	char qname[ROT_NAME_BUFSIZE], b1[64], b2[64], b3[64], dns[384];
	int64_t ready, ago;
	int lead_ok, dns_ok;

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (s == NULL || p == NULL) {
		rot_setwhy(why, whylen, "no slot %d", n);
		return 0;
	}
	if (!rot_has_key(s)) {
		rot_setwhy(why, whylen, "selector%d has no key", n);
		return 0;
	}
	if (dkim_mdomain_query_name(d, n, qname, sizeof(qname)) != 0)
		snprintf(qname, sizeof(qname), "selector%d", n);

	ready = rot_add(s->published, p->lead);
	lead_ok = ready <= now;
	dns[0] = '\0';
	dns_ok = 1;
	if (p->dns_check) {
		if (s->seen == 0) {
			dns_ok = 0;
			snprintf(dns, sizeof(dns), "%s has not shown the "
			    "selector%d key through DNS yet", qname, n);
		} else if (s->seen < s->published) {
			dns_ok = 0;
			snprintf(dns, sizeof(dns), "%s has not shown the new "
			    "selector%d key through DNS yet", qname, n);
		} else if ((s->seen_via != 0) != (d->enabled != 0)) {
			dns_ok = 0;
			snprintf(dns, sizeof(dns), "%s has not shown the "
			    "selector%d key yet (seen only %s)", qname, n,
			    s->seen_via ? "via the CNAME, while enabled" :
			    "at the initial-domain record, before enabling");
		}
	}

	if (!lead_ok) {
		if (stable) {
			rot_setwhy(why, whylen, "selector%d key published %s; "
			    "dkim_publish_lead is %s (usable from %s)%s%s", n,
			    rot_when(s->published, b1, sizeof(b1)),
			    rot_dur(p->lead, b2, sizeof(b2)),
			    rot_when(ready, b3, sizeof(b3)),
			    dns_ok ? "" : "; ", dns);
		} else {
			ago = now - s->published;
			rot_setwhy(why, whylen, "selector%d key published %s%s; "
			    "dkim_publish_lead is %s (%s to go)%s%s", n,
			    rot_dur(ago, b1, sizeof(b1)), ago < 0 ?
			    " in the future" : " ago",
			    rot_dur(p->lead, b2, sizeof(b2)),
			    rot_dur(ready - now, b3, sizeof(b3)),
			    dns_ok ? "" : "; ", dns);
		}
		return 0;
	}
	if (!dns_ok) {
		rot_setwhy(why, whylen, "%s", dns);
		return 0;
	}
	if (stable)
		rot_setwhy(why, whylen, "selector%d key published %s, %s", n,
		    rot_when(s->published, b1, sizeof(b1)), p->dns_check ?
		    "seen through DNS" : "DNS check off");
	else if (p->dns_check)
		rot_setwhy(why, whylen, "selector%d key published %s ago, "
		    "seen at %s %s ago", n,
		    rot_dur(now - s->published, b1, sizeof(b1)), qname,
		    rot_dur(now - s->seen, b2, sizeof(b2)));
	else
		rot_setwhy(why, whylen, "selector%d key published %s ago "
		    "(dkim_publish_lead %s; DNS check off)", n,
		    rot_dur(now - s->published, b1, sizeof(b1)),
		    rot_dur(p->lead, b2, sizeof(b2)));
	return 1;
}

int
dkim_gate(const struct dkim_mdomain *d, int slot,
    const struct dkim_rotation_policy *p, int64_t now, char *why,
    size_t whylen)
{
	return rot_gate(d, slot, p, now, 0, why, whylen);
}

int
dkim_mdomain_signing_slot(const struct dkim_mdomain *d,
    const struct dkim_rotation_policy *p, int64_t now)
{
	const struct dkim_slot *s;

	if (d == NULL || (s = rot_slot(d, d->active)) == NULL ||
	    !rot_has_key(s))
		return 0;
	if (s->confirmed != 0 || rot_gate(d, d->active, p, now, 0, NULL, 0))
		return d->active;
	return 0;
}

/* ---- the state machine ------------------------------------------------------ */

/* rot_other - the slot that is not n. */
static int
rot_other(int n)
{
	return n == 1 ? 2 : 1;
}

/* rot_lead_end - when slot n's publish lead ends, if still ahead; else 0. */
static int64_t
rot_lead_end(const struct dkim_mdomain *d, int n,
    const struct dkim_rotation_policy *p, int64_t now)
{
	int64_t t = rot_add(d->slot[n - 1].published, p->lead);

	return t > now ? t : 0;
}

/*
 * Steps that are due now set *next to now.  While a switch is held (phase
 * PENDING), HOLD is returned again only when the stable form of the gate's
 * reason differs from held_why (see rot_gate); otherwise NONE with the
 * same why, so a caller that writes the store for every step other than
 * NONE does not rewrite it on every tick.  A PENDING domain whose switch
 * is no longer due (its record was edited) plans NONE and stays PENDING
 * until the rotation is due again.
 */
enum dkim_step
dkim_rotation_plan(const struct dkim_mdomain *d,
    const struct dkim_rotation_policy *p, int64_t now, int64_t *next,
    char *why, size_t whylen)
{
	char reason[384], held[sizeof(d->held_why)], b1[64], b2[64];
	const struct dkim_slot *act, *idle;
	int64_t t, due_at;
	int a, i, due;

	if (next != NULL)
		*next = 0;
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (d == NULL || p == NULL || (d->active != 1 && d->active != 2) ||
	    (unsigned)d->phase >= DKIM_NPHASES) {
		rot_setwhy(why, whylen, "record is not consistent (active %d, "
		    "phase %d)", d != NULL ? d->active : 0,
		    d != NULL ? (int)d->phase : 0);
		return DKIM_STEP_NONE;
	}
	a = d->active;
	i = rot_other(a);
	act = &d->slot[a - 1];
	idle = &d->slot[i - 1];

	/* 1. The active key has never signed: it must pass the gate first. */
	if (act->confirmed == 0) {
		if (rot_gate(d, a, p, now, 0, reason, sizeof(reason))) {
			rot_setwhy(why, whylen, "selector%d passed the gate: %s",
			    a, reason);
			if (next != NULL)
				*next = now;
			return DKIM_STEP_CONFIRM;
		}
		rot_setwhy(why, whylen, "%s", reason);
		if (next != NULL)
			*next = rot_lead_end(d, a, p, now);
		return DKIM_STEP_NONE;
	}

	/* 2. The previous key stays published for the retire delay. */
	if (d->phase == DKIM_PHASE_RETIRING) {
		t = rot_add(d->phase_since, p->retire);
		if (now >= t) {
			rot_setwhy(why, whylen, "selector%d (generation %" PRIu32
			    ") retired %s ago (dkim_retire_delay %s): replace its "
			    "key", i, idle->generation,
			    rot_dur(now - d->phase_since, b1, sizeof(b1)),
			    rot_dur(p->retire, b2, sizeof(b2)));
			if (next != NULL)
				*next = now;
			return DKIM_STEP_REPLACE;
		}
		rot_setwhy(why, whylen, "signing with selector%d; selector%d "
		    "(generation %" PRIu32 ") stays published %s more "
		    "(dkim_retire_delay %s)", a, i, idle->generation,
		    rot_dur(t - now, b1, sizeof(b1)),
		    rot_dur(p->retire, b2, sizeof(b2)));
		if (next != NULL)
			*next = t;
		return DKIM_STEP_NONE;
	}

	/* 3. STABLE or PENDING: is a switch due, and may the idle key sign? */
	due_at = rot_add(d->last_switch, p->interval);
	due = d->rotate_requested || now >= due_at;
	if (!due) {
		rot_setwhy(why, whylen, "signing with selector%d; next rotation "
		    "in %s (dkim_rotation_interval %s)", a,
		    rot_dur(due_at - now, b1, sizeof(b1)),
		    rot_dur(p->interval, b2, sizeof(b2)));
		if (next != NULL)
			*next = due_at;
		return DKIM_STEP_NONE;
	}
	if (rot_gate(d, i, p, now, 0, reason, sizeof(reason))) {
		rot_setwhy(why, whylen, "rotation %s: switch to selector%d "
		    "(generation %" PRIu32 "): %s", d->rotate_requested ?
		    "requested" : "due", i, idle->generation, reason);
		if (next != NULL)
			*next = now;
		return DKIM_STEP_SWITCH;
	}
	rot_setwhy(why, whylen, "%s", reason);
	if (next != NULL)
		*next = rot_lead_end(d, i, p, now);
	if (d->phase == DKIM_PHASE_PENDING) {
		rot_gate(d, i, p, now, 1, held, sizeof(held));
		if (strcmp(held, d->held_why) == 0)
			return DKIM_STEP_NONE;
	}
	return DKIM_STEP_HOLD;
}

/* rot_max_gen - the next generation number for d. */
static uint32_t
rot_next_gen(const struct dkim_mdomain *d)
{
	uint32_t g = d->slot[0].generation;

	if (d->slot[1].generation > g)
		g = d->slot[1].generation;
	return g + 1;
}

/*
 * Each step checks that it fits the state (CONFIRM: the active slot is
 * not confirmed and passes the gate; HOLD: STABLE or PENDING and the gate
 * holds the idle slot; SWITCH: STABLE or PENDING and the idle slot passes
 * the gate; REPLACE: RETIRING with a newkey), else DKIM_EINVAL and d is
 * unchanged.  NONE changes nothing and returns 0.
 */
int
dkim_rotation_apply(struct dkim_mdomain *d, enum dkim_step step,
    const struct dkim_rotation_policy *p, int64_t now, struct dkim_key *newkey)
{
	char held[sizeof(d->held_why)];
	struct dkim_slot tmp;
	int a, i, rc;

	if (d == NULL || p == NULL || (d->active != 1 && d->active != 2))
		return DKIM_EINVAL;
	a = d->active;
	i = rot_other(a);
	switch (step) {
	case DKIM_STEP_NONE:
		return 0;
	case DKIM_STEP_CONFIRM:
		if (d->slot[a - 1].confirmed != 0 ||
		    !rot_gate(d, a, p, now, 0, NULL, 0))
			return DKIM_EINVAL;
		d->slot[a - 1].confirmed = now;
		return 0;
	case DKIM_STEP_HOLD:
		if ((d->phase != DKIM_PHASE_STABLE &&
		    d->phase != DKIM_PHASE_PENDING) ||
		    rot_gate(d, i, p, now, 1, held, sizeof(held)))
			return DKIM_EINVAL;
		memcpy(d->held_why, held, sizeof(d->held_why));
		d->phase = DKIM_PHASE_PENDING;
		if (d->held_since == 0)
			d->held_since = now;
		return 0;
	case DKIM_STEP_SWITCH:
		if ((d->phase != DKIM_PHASE_STABLE &&
		    d->phase != DKIM_PHASE_PENDING) ||
		    !rot_gate(d, i, p, now, 0, NULL, 0))
			return DKIM_EINVAL;
		d->active = i;
		d->slot[i - 1].confirmed = now;
		d->phase = DKIM_PHASE_RETIRING;
		d->phase_since = now;
		d->last_switch = now;
		d->rotate_requested = 0;
		d->held_since = 0;
		d->held_why[0] = '\0';
		return 0;
	case DKIM_STEP_REPLACE:
		if (d->phase != DKIM_PHASE_RETIRING || newkey == NULL)
			return DKIM_EINVAL;
		memset(&tmp, 0, sizeof(tmp));
		if ((rc = dkim_slot_set_key(&tmp, newkey, rot_next_gen(d),
		    now)) != 0)
			return rc;
		rot_slot_free(&d->slot[i - 1]);
		d->slot[i - 1] = tmp;
		d->next_bits = 0;
		d->phase = DKIM_PHASE_STABLE;
		d->phase_since = now;
		return 0;
	}
	return DKIM_EINVAL;
}

/*
 * Allowed in any phase (in RETIRING the idle slot is the previous key,
 * still published).  Also DKIM_EINVAL without newkey; DKIM_ENOMEM /
 * DKIM_ECRYPTO from storing it (d unchanged then too).
 */
int
dkim_rotate_now(struct dkim_mdomain *d, const struct dkim_rotation_policy *p,
    int64_t now, struct dkim_key *newkey, char *why, size_t whylen)
{
	struct dkim_slot tmp;
	int a, i, rc;

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (d == NULL || p == NULL || newkey == NULL ||
	    (d->active != 1 && d->active != 2)) {
		rot_setwhy(why, whylen, "invalid argument");
		return DKIM_EINVAL;
	}
	a = d->active;
	i = rot_other(a);
	if (!rot_gate(d, i, p, now, 0, why, whylen))
		return DKIM_EINVAL;
	memset(&tmp, 0, sizeof(tmp));
	if ((rc = dkim_slot_set_key(&tmp, newkey, rot_next_gen(d), now)) != 0) {
		rot_setwhy(why, whylen, "cannot store the new key: %s",
		    dkim_strerror(rc));
		return rc;
	}
	rot_slot_free(&d->slot[a - 1]);
	d->slot[a - 1] = tmp;
	d->active = i;
	d->slot[i - 1].confirmed = now;
	d->phase = DKIM_PHASE_STABLE;
	d->phase_since = now;
	d->last_switch = now;
	d->rotate_requested = 0;
	d->next_bits = 0;
	d->held_since = 0;
	d->held_why[0] = '\0';
	rot_setwhy(why, whylen, "now signing with selector%d (generation %"
	    PRIu32 "); selector%d has a new key (generation %" PRIu32 ")", i,
	    d->slot[i - 1].generation, a, d->slot[a - 1].generation);
	return 0;
}

/* ---- storage form ----------------------------------------------------------- */

enum rot_ftype {
	RF_STR,         /* char array in the record */
	RF_DOMAIN,      /* char array, a normalized host name */
	RF_BOOL,        /* int 0/1 */
	RF_INT,         /* int in [min, max] */
	RF_I64,         /* int64_t >= 0 */
	RF_U32,
	RF_U64,
	RF_PHASE,
	RF_ALG,         /* slot fields from here on */
	RF_PUBKEY,
	RF_PRIV,
};

struct rot_field {
	const char *name;
	enum rot_ftype type;
	size_t off;             /* in struct dkim_mdomain, or dkim_slot */
	size_t size;            /* RF_STR / RF_DOMAIN: array size */
	long min, max;          /* RF_INT */
};

#define MD(f) offsetof(struct dkim_mdomain, f)
#define SL(f) offsetof(struct dkim_slot, f)
#define MDSZ(f) sizeof(((struct dkim_mdomain *)0)->f)

static const struct rot_field rot_dfields[] = {
	{ "domain", RF_DOMAIN, MD(domain), MDSZ(domain), 0, 0 },
	{ "tenant", RF_STR, MD(tenant), MDSZ(tenant), 0, 0 },
	{ "initial_domain", RF_DOMAIN, MD(initial_domain),
	    MDSZ(initial_domain), 0, 0 },
	{ "enabled", RF_BOOL, MD(enabled), 0, 0, 1 },
	{ "active", RF_INT, MD(active), 0, 1, 2 },
	{ "phase", RF_PHASE, MD(phase), 0, 0, 0 },
	{ "phase_since", RF_I64, MD(phase_since), 0, 0, 0 },
	{ "last_switch", RF_I64, MD(last_switch), 0, 0, 0 },
	{ "rotate_requested", RF_BOOL, MD(rotate_requested), 0, 0, 1 },
	{ "next_bits", RF_INT, MD(next_bits), 0, 0, DKIM_KEY_BITS_MAX },
	{ "held_since", RF_I64, MD(held_since), 0, 0, 0 },
	{ "held_why", RF_STR, MD(held_why), MDSZ(held_why), 0, 0 },
	{ "dns_checked", RF_I64, MD(dns_checked), 0, 0, 0 },
	{ "dns_result", RF_INT, MD(dns_result), 0, -1, 1 },
	{ "dns_detail", RF_STR, MD(dns_detail), MDSZ(dns_detail), 0, 0 },
	{ "version", RF_U64, MD(version), 0, 0, 0 },
};

static const struct rot_field rot_sfields[] = {
	{ "alg", RF_ALG, SL(alg), 0, 0, 0 },
	{ "bits", RF_INT, SL(bits), 0, 0, DKIM_KEY_BITS_MAX },
	{ "generation", RF_U32, SL(generation), 0, 0, 0 },
	{ "created", RF_I64, SL(created), 0, 0, 0 },
	{ "published", RF_I64, SL(published), 0, 0, 0 },
	{ "seen", RF_I64, SL(seen), 0, 0, 0 },
	{ "seen_via", RF_BOOL, SL(seen_via), 0, 0, 1 },
	{ "confirmed", RF_I64, SL(confirmed), 0, 0, 0 },
	{ "pubkey", RF_PUBKEY, 0, 0, 0, 0 },
	{ "priv", RF_PRIV, 0, 0, 0, 0 },
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* rot_clean - a copy of s with every control character (CR, LF, ...)
 * replaced by '?', malloc'd; NULL on OOM. */
static char *
rot_clean(const char *s)
{
	char *c;
	size_t i;

	if ((c = strdup(s)) == NULL)
		return NULL;
	for (i = 0; c[i] != '\0'; i++)
		if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f)
			c[i] = '?';
	return c;
}

/* rot_emit - format field f of base (a record or a slot) and pass it to
 * cb under name.  cb's result, DKIM_ENOMEM, or 0 (also when skipped). */
static int
rot_emit(const struct rot_field *f, const void *base, const char *name,
    int with_keys, dkim_field_cb cb, void *arg)
{
	const char *b = base;
	const struct dkim_slot *s = base;
	char num[32] = "", *v = NULL;
	const char *val = num;
	int rc;

	switch (f->type) {
	case RF_STR:
	case RF_DOMAIN:
		if ((v = rot_clean(b + f->off)) == NULL)
			return DKIM_ENOMEM;
		val = v;
		break;
	case RF_BOOL:
	case RF_INT:
		snprintf(num, sizeof(num), "%d", *(const int *)(b + f->off));
		break;
	case RF_I64:
		snprintf(num, sizeof(num), "%" PRId64,
		    *(const int64_t *)(b + f->off));
		break;
	case RF_U32:
		snprintf(num, sizeof(num), "%" PRIu32,
		    *(const uint32_t *)(b + f->off));
		break;
	case RF_U64:
		snprintf(num, sizeof(num), "%" PRIu64,
		    *(const uint64_t *)(b + f->off));
		break;
	case RF_PHASE:
		val = dkim_phase_name(*(const enum dkim_phase *)(b + f->off));
		break;
	case RF_ALG:
		val = dkim_alg_name(s->alg);
		break;
	case RF_PUBKEY:
		if ((v = rot_clean(s->pubkey != NULL ? s->pubkey : "")) == NULL)
			return DKIM_ENOMEM;
		val = v;
		break;
	case RF_PRIV:
		if (!with_keys || s->priv == NULL)
			return 0;
		if ((v = dkim_b64_encode(s->priv, s->privlen)) == NULL)
			return DKIM_ENOMEM;
		val = v;
		break;
	}
	rc = cb(arg, name, val);
	if (v != NULL)
		dkim_wipe_free(v, strlen(v));
	return rc;
}

int
dkim_mdomain_fields(const struct dkim_mdomain *d, int with_keys,
    dkim_field_cb cb, void *arg)
{
	char name[32];
	size_t k;
	int n, rc;

	for (k = 0; k < NELEM(rot_dfields); k++)
		if ((rc = rot_emit(&rot_dfields[k], d, rot_dfields[k].name,
		    with_keys, cb, arg)) != 0)
			return rc;
	for (n = 1; n <= 2; n++) {
		for (k = 0; k < NELEM(rot_sfields); k++) {
			snprintf(name, sizeof(name), "s%d.%s", n,
			    rot_sfields[k].name);
			if ((rc = rot_emit(&rot_sfields[k], &d->slot[n - 1],
			    name, with_keys, cb, arg)) != 0)
				return rc;
		}
	}
	return 0;
}

/* rot_parse_i64 - a decimal integer in [min, max], the whole string. */
static int
rot_parse_i64(const char *v, int64_t min, int64_t max, int64_t *out)
{
	long long x;
	char *end;

	if (v[0] == '\0' || v[0] == ' ' || v[0] == '+')
		return DKIM_EINVAL;
	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || x < min || x > max)
		return DKIM_EINVAL;
	*out = x;
	return 0;
}

/* rot_parse_u64 - an unsigned decimal integer, the whole string. */
static int
rot_parse_u64(const char *v, uint64_t max, uint64_t *out)
{
	unsigned long long x;
	char *end;

	if (v[0] < '0' || v[0] > '9')
		return DKIM_EINVAL;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0' || x > max)
		return DKIM_EINVAL;
	*out = x;
	return 0;
}

/* rot_set - set field f of base (a record or a slot) from value. */
static int
rot_set(const struct rot_field *f, void *base, const char *v)
{
	char *b = base;
	struct dkim_slot *s = base;
	unsigned char *der = NULL;
	size_t derlen;
	enum dkim_phase ph;
	enum dkim_alg alg;
	char *dup;
	int64_t x;
	uint64_t u;
	int rc;

	switch (f->type) {
	case RF_STR:
		/* Longer than the field (a newer writer?): cut. */
		snprintf(b + f->off, f->size, "%s", v);
		return 0;
	case RF_DOMAIN:
		if (v[0] == '\0') {
			b[f->off] = '\0';
			return 0;
		}
		return dkim_domain_normalize(v, b + f->off, f->size) == 0 ?
		    0 : DKIM_EINVAL;
	case RF_BOOL:
	case RF_INT:
		if ((rc = rot_parse_i64(v, f->min, f->max, &x)) != 0)
			return rc;
		*(int *)(b + f->off) = (int)x;
		return 0;
	case RF_I64:
		if ((rc = rot_parse_i64(v, INT64_MIN, INT64_MAX, &x)) != 0)
			return rc;
		*(int64_t *)(b + f->off) = x;
		return 0;
	case RF_U32:
		if ((rc = rot_parse_u64(v, UINT32_MAX, &u)) != 0)
			return rc;
		*(uint32_t *)(b + f->off) = (uint32_t)u;
		return 0;
	case RF_U64:
		if ((rc = rot_parse_u64(v, UINT64_MAX, &u)) != 0)
			return rc;
		*(uint64_t *)(b + f->off) = u;
		return 0;
	case RF_PHASE:
		if (dkim_phase_parse(v, &ph) != 0)
			return DKIM_EINVAL;
		*(enum dkim_phase *)(b + f->off) = ph;
		return 0;
	case RF_ALG:
		if (dkim_alg_parse(v, &alg) != 0)
			return DKIM_EINVAL;
		s->alg = alg;
		return 0;
	case RF_PUBKEY:
		dup = NULL;
		if (v[0] != '\0' && (dup = strdup(v)) == NULL)
			return DKIM_ENOMEM;
		free(s->pubkey);
		s->pubkey = dup;
		return 0;
	case RF_PRIV:
		derlen = 0;
		if (v[0] != '\0' && (rc = dkim_b64_decode(v, &der, &derlen)) != 0)
			return rc;
		if (der != NULL && derlen == 0) {
			dkim_wipe_free(der, 1);
			der = NULL;
		}
		dkim_wipe_free(s->priv, s->privlen);
		s->priv = der;
		s->privlen = derlen;
		return 0;
	}
	return DKIM_EINVAL;
}

int
dkim_mdomain_set_field(struct dkim_mdomain *d, const char *field,
    const char *value)
{
	const char *f;
	size_t k;
	int n;

	if (d == NULL || field == NULL || value == NULL)
		return DKIM_EINVAL;
	for (k = 0; k < NELEM(rot_dfields); k++)
		if (strcmp(field, rot_dfields[k].name) == 0)
			return rot_set(&rot_dfields[k], d, value);
	if (field[0] != 's' || (field[1] != '1' && field[1] != '2') ||
	    field[2] != '.')
		return 1;
	n = field[1] - '0';
	f = field + 3;
	for (k = 0; k < NELEM(rot_sfields); k++)
		if (strcmp(f, rot_sfields[k].name) == 0)
			return rot_set(&rot_sfields[k], &d->slot[n - 1], value);
	return 1;
}

int
dkim_mdomain_check(const struct dkim_mdomain *d, char *why, size_t whylen)
{
	char name[ROT_NAME_BUFSIZE];
	const struct dkim_slot *s;
	int n;

	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (d == NULL) {
		rot_setwhy(why, whylen, "no record");
		return DKIM_EINVAL;
	}
	if (d->domain[0] == '\0') {
		rot_setwhy(why, whylen, "domain is missing");
		return DKIM_EINVAL;
	}
	if (d->tenant[0] == '\0') {
		rot_setwhy(why, whylen, "%s: tenant is missing", d->domain);
		return DKIM_EINVAL;
	}
	if (d->initial_domain[0] == '\0') {
		rot_setwhy(why, whylen, "%s: initial_domain is missing",
		    d->domain);
		return DKIM_EINVAL;
	}
	if (d->active != 1 && d->active != 2) {
		rot_setwhy(why, whylen, "%s: active is %d, not 1 or 2",
		    d->domain, d->active);
		return DKIM_EINVAL;
	}
	if ((unsigned)d->phase >= DKIM_NPHASES) {
		rot_setwhy(why, whylen, "%s: unknown phase %d", d->domain,
		    (int)d->phase);
		return DKIM_EINVAL;
	}
	for (n = 1; n <= 2; n++) {
		s = &d->slot[n - 1];
		if (s->bits <= 0) {
			rot_setwhy(why, whylen, "%s: s%d.bits is missing",
			    d->domain, n);
			return DKIM_EINVAL;
		}
		if (s->pubkey == NULL || s->pubkey[0] == '\0') {
			rot_setwhy(why, whylen, "%s: s%d.pubkey is missing",
			    d->domain, n);
			return DKIM_EINVAL;
		}
		if (s->generation == 0) {
			rot_setwhy(why, whylen, "%s: s%d.generation is missing",
			    d->domain, n);
			return DKIM_EINVAL;
		}
		if (dkim_mdomain_record_name(d, n, name, sizeof(name)) != 0) {
			rot_setwhy(why, whylen, "%s: the selector%d record name "
			    "under %s is not a valid DNS name", d->domain, n,
			    d->initial_domain);
			return DKIM_EINVAL;
		}
	}
	return 0;
}
