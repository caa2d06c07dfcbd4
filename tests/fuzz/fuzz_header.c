/*
 * fuzz_header.c - libFuzzer target for the header block parser, the
 * DKIM-Signature tag parser and the key record parser.
 *
 * The input is a whole message.  It is parsed as a DNS TXT key record
 * (dkim_pubkey_parse) and as a From value (dkim_from_domain), verified as
 * it is (its own DKIM-Signature fields, if any, are checked against a fixed
 * Ed25519 key), and signed with that key in relaxed/relaxed and
 * simple/simple, fed whole, in two chunks cut at an offset taken from the
 * input, and (when short) one byte at a time; once more with the signature
 * added from the dkim_signer_on_headers callback for the From domain, the
 * way the relay picks keys.  Nothing may crash or leak.  The oracles, each
 * an abort(): the way a message is cut must not change any result (Ed25519
 * is deterministic and t= is fixed, so the signatures are byte-identical);
 * a signature must be well-formed (starts with DKIM-Signature:, folded
 * lines of at most DKIM_LINE_MAX characters, ends in CRLF); and a message
 * the signer accepted must verify once the signature is put in front of it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dkim/dkim.h"

#define DOMAIN "example.com"
#define SELECTOR "fuzz"
#define SIGN_TIME ((time_t)1700000000)
#define BYTEWISE_MAX 256  /* inputs also fed one byte at a time */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct dkim_key *fuzz_key;   /* made once, kept for the process */
static char *fuzz_txt;              /* its TXT record */

struct sigout {
	int rc;
	char *sig;
	size_t len;
};

/* What the on-headers callback saw. */
struct cbstate {
	int calls;
	int have_from;
	char domain[256];
};

struct vout {
	int n;
	struct dkim_verify_result res[DKIM_MAX_SIGS];
};

/* die - print a reason and abort, so libFuzzer saves the input */
static void
die(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_header: %s%s%s\n", what, detail ? ": " : "",
	    detail ? detail : "");
	abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int rc;

	if ((rc = dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0,
	    &fuzz_key)) != 0)
		die("dkim_key_generate", dkim_strerror(rc));
	if ((fuzz_txt = dkim_key_txt(fuzz_key)) == NULL)
		die("dkim_key_txt", "NULL");
	return 0;
}

/* lookup - the verifier's key lookup: always the one fixed record */
static int
lookup(void *arg, const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	if (domain == NULL || selector == NULL)
		die("lookup", "NULL d= or s=");
	if ((*txt = strdup(fuzz_txt)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return DKIM_ENOKEY;
	}
	return 0;
}

/*
 * write_cut - feed msg to a write function, split at the offsets in cuts
 * (ascending, ncuts of them), each chunk from an exact-size copy so reads
 * past a chunk's end trip ASan.  Returns the first error, after checking
 * that it stays sticky.
 */
static int
write_cut(int (*wr)(void *, const char *, size_t), void *obj,
    const char *msg, size_t len, const size_t *cuts, size_t ncuts)
{
	size_t i, prev = 0, end;
	char *copy;
	int rc = 0, rc2;

	for (i = 0; i <= ncuts; i++) {
		end = i < ncuts ? cuts[i] : len;
		if ((copy = malloc(end - prev + 1)) == NULL)
			abort();
		memcpy(copy, msg + prev, end - prev);
		rc2 = wr(obj, copy, end - prev);
		free(copy);
		if (rc != 0 && rc2 != rc)
			die("write", "error not sticky");
		if (rc == 0)
			rc = rc2;
		prev = end;
	}
	return rc;
}

/* signer_wr - adapter for write_cut */
static int
signer_wr(void *obj, const char *p, size_t len)
{
	return dkim_signer_write(obj, p, len);
}

/* verifier_wr - adapter for write_cut */
static int
verifier_wr(void *obj, const char *p, size_t len)
{
	return dkim_verifier_write(obj, p, len);
}

/* on_headers - add the signature for the From domain, as the relay does */
static int
on_headers(void *arg, struct dkim_signer *s, const char *from_domain)
{
	struct cbstate *cs = arg;
	struct dkim_sign_params sp = {
		.domain = from_domain, .selector = SELECTOR, .key = fuzz_key,
		.alg = DKIM_ALG_ED25519_SHA256, .hcanon = DKIM_CANON_RELAXED,
		.bcanon = DKIM_CANON_RELAXED, .headers = NULL, .t = SIGN_TIME,
		.x = 0,
	};

	if (++cs->calls > 1)
		die("on_headers", "callback ran twice");
	if (from_domain == NULL)
		return 0;
	cs->have_from = 1;
	if (strlen(from_domain) >= sizeof(cs->domain))
		return DKIM_EINVAL;
	strcpy(cs->domain, from_domain);
	/* An unusable domain must be refused here, not signed. */
	return dkim_signer_add(s, &sp);
}

/*
 * sign - sign msg cut at cuts[]; the result in *o (free o->sig).  With cs,
 * the signature is added by on_headers instead of up front.
 */
static void
sign(enum dkim_canon hc, enum dkim_canon bc, const char *msg, size_t len,
    const size_t *cuts, size_t ncuts, struct cbstate *cs, struct sigout *o)
{
	struct dkim_sign_params sp = {
		.domain = DOMAIN, .selector = SELECTOR, .key = fuzz_key,
		.alg = DKIM_ALG_ED25519_SHA256, .hcanon = hc, .bcanon = bc,
		.headers = NULL, .t = SIGN_TIME, .x = 0,
	};
	struct dkim_signer *s;
	int rc, wrc;

	o->sig = NULL;
	o->len = 0;
	if ((s = dkim_signer_new()) == NULL)
		die("dkim_signer_new", "NULL");
	if (cs != NULL) {
		memset(cs, 0, sizeof(*cs));
		dkim_signer_on_headers(s, on_headers, cs);
	} else if ((rc = dkim_signer_add(s, &sp)) != 0)
		die("dkim_signer_add", dkim_strerror(rc));
	wrc = write_cut(signer_wr, s, msg, len, cuts, ncuts);
	o->rc = dkim_signer_finish(s, &o->sig, &o->len);
	if (wrc != 0 && o->rc == 0)
		die("dkim_signer_finish", "succeeded after a write error");
	if (o->rc != 0 && o->sig != NULL) {
		/* Not promised either way; don't leak it, don't use it. */
		free(o->sig);
		o->sig = NULL;
	}
	dkim_signer_free(s);
}

/* verify - verify msg cut at cuts[]; the results in *o */
static void
verify(const char *msg, size_t len, const size_t *cuts, size_t ncuts,
    struct vout *o)
{
	struct dkim_verifier *v;
	int i;

	memset(o, 0, sizeof(*o));
	if ((v = dkim_verifier_new(lookup, NULL)) == NULL)
		die("dkim_verifier_new", "NULL");
	write_cut(verifier_wr, v, msg, len, cuts, ncuts);
	o->n = dkim_verifier_finish(v, SIGN_TIME + 60, o->res, DKIM_MAX_SIGS);
	dkim_verifier_free(v);
	if (o->n > DKIM_MAX_SIGS)
		die("dkim_verifier_finish", "more results than room");
	for (i = 0; i < o->n; i++) {
		struct dkim_verify_result *r = &o->res[i];

		if (r->pass != 0 && r->pass != 1)
			die("dkim_verifier_finish", "pass not 0 or 1");
		if (!memchr(r->domain, 0, sizeof(r->domain)) ||
		    !memchr(r->selector, 0, sizeof(r->selector)) ||
		    !memchr(r->alg, 0, sizeof(r->alg)) ||
		    !memchr(r->reason, 0, sizeof(r->reason)))
			die("dkim_verifier_finish", "unterminated string");
	}
}

/* same_vout - did two verifications give the same results? */
static int
same_vout(const struct vout *a, const struct vout *b)
{
	int i;

	if (a->n != b->n)
		return 0;
	for (i = 0; i < a->n; i++)
		if (a->res[i].pass != b->res[i].pass ||
		    strcmp(a->res[i].domain, b->res[i].domain) != 0 ||
		    strcmp(a->res[i].selector, b->res[i].selector) != 0 ||
		    strcmp(a->res[i].alg, b->res[i].alg) != 0 ||
		    strcmp(a->res[i].reason, b->res[i].reason) != 0)
			return 0;
	return 1;
}

/*
 * check_sig_format - the signer's output as dkim.h promises it; a d= of
 * dlen bytes can't be folded, so a long one widens the line limit
 */
static void
check_sig_format(const struct sigout *o, size_t dlen)
{
	size_t limit = DKIM_LINE_MAX + (dlen > 40 ? dlen : 0);
	static const char name[] = "DKIM-Signature:";
	size_t i, col = 0;

	if (o->sig == NULL || o->len < sizeof(name) + 1)
		die("signature", "missing or too short");
	if (strlen(o->sig) != o->len)
		die("signature", "length or NUL mismatch");
	if (strncasecmp(o->sig, name, sizeof(name) - 1) != 0)
		die("signature", "does not start with DKIM-Signature:");
	if (o->sig[o->len - 2] != '\r' || o->sig[o->len - 1] != '\n')
		die("signature", "does not end in CRLF");
	for (i = 0; i < o->len; i++) {
		char ch = o->sig[i];

		if (ch == '\r') {
			if (i + 1 >= o->len || o->sig[i + 1] != '\n')
				die("signature", "bare CR");
			continue;
		}
		if (ch == '\n') {
			if (i == 0 || o->sig[i - 1] != '\r')
				die("signature", "bare LF");
			/* Every line after the first is a continuation. */
			if (i + 1 < o->len && o->sig[i + 1] != ' ' &&
			    o->sig[i + 1] != '\t') {
				/*
				 * One signer makes one field here; a new
				 * field would be a second DKIM-Signature.
				 */
				die("signature", "line not folded");
			}
			col = 0;
			continue;
		}
		if (++col > limit)
			die("signature", "line longer than DKIM_LINE_MAX");
	}
}

/* count_sig_fields - how many times "dkim-signature" appears in msg */
static size_t
count_sig_fields(const char *msg, size_t len)
{
	static const char pat[] = "dkim-signature";
	size_t i, n = 0, plen = sizeof(pat) - 1;

	for (i = 0; i + plen <= len; i++)
		if (strncasecmp(msg + i, pat, plen) == 0)
			n++;
	return n;
}

/*
 * check_signed - the message the signer accepted verifies with its
 * signature, whose d= is domain
 */
static void
check_signed(const struct sigout *o, const char *msg, size_t len,
    size_t cut, const char *domain)
{
	struct vout whole, split;
	size_t total = o->len + len, at;
	char *buf;
	int i, pass = 0;

	if ((buf = malloc(total + 1)) == NULL)
		abort();
	memcpy(buf, o->sig, o->len);
	memcpy(buf + o->len, msg, len);

	verify(buf, total, NULL, 0, &whole);
	at = o->len + cut;
	verify(buf, total, &at, 1, &split);
	if (!same_vout(&whole, &split))
		die("verify", "result depends on where the message is cut");

	for (i = 0; i < whole.n; i++)
		if (whole.res[i].pass &&
		    strcasecmp(whole.res[i].domain, domain) == 0 &&
		    strcmp(whole.res[i].selector, SELECTOR) == 0)
			pass = 1;
	/*
	 * A message carrying DKIM_MAX_SIGS signatures of its own may push
	 * ours past the limit; anything else must pass.
	 */
	if (!pass && count_sig_fields(msg, len) + 1 < DKIM_MAX_SIGS) {
		fprintf(stderr, "fuzz_header: verify returned %d (%s)\n",
		    whole.n, whole.n < 0 ? dkim_strerror(whole.n) : "results");
		for (i = 0; i < whole.n; i++)
			fprintf(stderr, "  result %d: pass=%d d=%s s=%s "
			    "a=%s reason=%s\n", i, whole.res[i].pass,
			    whole.res[i].domain, whole.res[i].selector,
			    whole.res[i].alg, whole.res[i].reason);
		fprintf(stderr, "  signature: %.*s\n", (int)o->len, o->sig);
		die("verify", "a message the signer accepted does not verify");
	}
	free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum dkim_canon combos[][2] = {
		{ DKIM_CANON_RELAXED, DKIM_CANON_RELAXED },
		{ DKIM_CANON_SIMPLE, DKIM_CANON_SIMPLE },
	};
	const char *msg = (const char *)data;
	struct dkim_pubkey *pk = NULL;
	struct sigout whole, split, bytes;
	struct cbstate cs, cs2;
	struct vout vw, vs;
	size_t cut, c, i, *every = NULL;
	char err[256], dom[256];

	/* The input as a key record, and as a From value. */
	if (dkim_pubkey_parse(msg, size, &pk, err, sizeof(err)) == 0)
		dkim_pubkey_free(pk);
	if (dkim_from_domain(msg, size, dom, sizeof(dom)) == 0) {
		if (!memchr(dom, 0, sizeof(dom)))
			die("dkim_from_domain", "unterminated");
		for (i = 0; dom[i]; i++)
			if (dom[i] >= 'A' && dom[i] <= 'Z')
				die("dkim_from_domain", "not lower case");
	}

	cut = size >= 2 ? ((size_t)data[0] | (size_t)data[1] << 8) %
	    (size + 1) : 0;

	/* The input as a message that may carry signatures of its own. */
	verify(msg, size, NULL, 0, &vw);
	verify(msg, size, &cut, 1, &vs);
	if (!same_vout(&vw, &vs))
		die("verify", "result depends on where the message is cut");

	if (size <= BYTEWISE_MAX && size > 1) {
		if ((every = malloc((size - 1) * sizeof(*every))) == NULL)
			abort();
		for (i = 0; i + 1 < size; i++)
			every[i] = i + 1;
	}

	for (c = 0; c < sizeof(combos) / sizeof(combos[0]); c++) {
		sign(combos[c][0], combos[c][1], msg, size, NULL, 0, NULL,
		    &whole);
		sign(combos[c][0], combos[c][1], msg, size, &cut, 1, NULL,
		    &split);
		if (whole.rc != split.rc)
			die("sign", "result depends on where the message is cut");
		if (whole.rc == 0 && (whole.len != split.len ||
		    memcmp(whole.sig, split.sig, whole.len) != 0))
			die("sign", "signature depends on the cut");
		if (every != NULL) {
			sign(combos[c][0], combos[c][1], msg, size, every,
			    size - 1, NULL, &bytes);
			if (bytes.rc != whole.rc || (whole.rc == 0 &&
			    (bytes.len != whole.len ||
			    memcmp(bytes.sig, whole.sig, whole.len) != 0)))
				die("sign", "byte-at-a-time differs");
			free(bytes.sig);
		}
		if (whole.rc == 0) {
			check_sig_format(&whole, strlen(DOMAIN));
			check_signed(&whole, msg, size, cut, DOMAIN);
		}
		free(whole.sig);
		free(split.sig);
	}
	free(every);

	/* Keys picked by From domain while the message streams. */
	sign(DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, msg, size, NULL, 0, &cs,
	    &whole);
	sign(DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, msg, size, &cut, 1, &cs2,
	    &split);
	if (whole.rc != split.rc || cs.calls != cs2.calls ||
	    cs.have_from != cs2.have_from ||
	    strcmp(cs.domain, cs2.domain) != 0 || (whole.rc == 0 &&
	    (whole.len != split.len ||
	    memcmp(whole.sig, split.sig, whole.len) != 0)))
		die("sign (on_headers)", "result depends on the cut");
	if (whole.rc == 0 && whole.len > 0) {
		if (!cs.have_from)
			die("sign (on_headers)", "a signature nobody added");
		check_sig_format(&whole, strlen(cs.domain));
		check_signed(&whole, msg, size, cut, cs.domain);
	}
	free(whole.sig);
	free(split.sig);
	return 0;
}
