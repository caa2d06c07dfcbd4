/*
 * dkim.h - Signet's DKIM engine: canonicalization, body hashing, signing,
 * verification and key handling (RFC 6376, RFC 8463).
 *
 * The module knows nothing of SMTP, of the spool or of the daemon.  A message
 * is fed as raw bytes (CRLF line ends, already dot-unstuffed) in chunks of any
 * size, split anywhere; the engine parses the header block itself (bounded by
 * DKIM_HEADER_MAX), then streams the body through one canonicalizer and one
 * SHA-256 per distinct body canonicalization, so memory does not grow with the
 * body.  Signing needs only the header block and the body hashes at the end.
 *
 * Errors: functions that can fail return 0 or a negative DKIM_E* code;
 * dkim_strerror() names it.  Keys are immutable once loaded and may be shared
 * between threads; a signer or verifier belongs to one thread at a time.
 */
#ifndef SIGNET_DKIM_H
#define SIGNET_DKIM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DKIM_ERRNO_MAP(XX)                                                    \
	XX(NOMEM, "out of memory")                                            \
	XX(INVAL, "invalid argument")                                         \
	XX(NOFROM, "message has no From header field")                        \
	XX(HEADER_TOO_BIG, "header block exceeds the size limit")             \
	XX(BADHEADER, "malformed header field")                               \
	XX(KEY, "unusable key")                                               \
	XX(KEYFILE, "cannot read key file")                                   \
	XX(ALG, "algorithm does not match the key")                           \
	XX(CRYPTO, "cryptographic operation failed")                          \
	XX(STATE, "call out of order")                                        \
	XX(TOO_MANY, "too many signatures")                                   \
	XX(SIGSYNTAX, "malformed DKIM-Signature")                             \
	XX(NOKEY, "no public key")

enum {
	DKIM_OK = 0,
#define XX(name, s) DKIM_E##name,
	DKIM__ERRNO_BASE = -1000,
	DKIM_ERRNO_MAP(XX)
#undef XX
};

/* dkim_strerror - a static string naming err; never NULL. */
const char *dkim_strerror(int err);

#define DKIM_HEADER_MAX (1024 * 1024) /* bytes of header block kept */
#define DKIM_MAX_SIGS 8               /* signatures per message */
#define DKIM_LINE_MAX 78              /* fold the signature at this width */

enum dkim_alg { DKIM_ALG_RSA_SHA256, DKIM_ALG_ED25519_SHA256 };
enum dkim_canon { DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED };

/* dkim_alg_name - "rsa-sha256" or "ed25519-sha256". */
const char *dkim_alg_name(enum dkim_alg alg);
/* dkim_alg_parse - parse an a= value; returns 0 or DKIM_EINVAL. */
int dkim_alg_parse(const char *s, enum dkim_alg *out);
/* dkim_canon_parse - parse "H/B" or "H" (body simple) as in c=; 0 or DKIM_EINVAL. */
int dkim_canon_parse(const char *s, enum dkim_canon *hc, enum dkim_canon *bc);

/* ---- CPU dispatch for the body canonicalizer ---------------------------- */

enum dkim_simd {
	DKIM_SIMD_SCALAR,
	DKIM_SIMD_SSE42,
	DKIM_SIMD_AVX2,
	DKIM_SIMD_AVX512,  /* AVX-512BW + VBMI2 + BMI2: relaxed body by compaction */
	DKIM_SIMD_AUTO
};

/*
 * dkim_simd_set - choose the scanner the relaxed body canonicalizer uses;
 * DKIM_SIMD_AUTO picks the best the CPU has.  The levels are ordered: every
 * level from DKIM_SIMD_SCALAR up to (not including) DKIM_SIMD_AUTO is valid.  A level the CPU lacks falls back
 * to the best it has.  Returns the level now in force.  For tests and
 * benchmarks; the default is AUTO.  Not thread-safe: call before signing.
 */
enum dkim_simd dkim_simd_set(enum dkim_simd level);
const char *dkim_simd_name(enum dkim_simd level);

/* ---- Body canonicalization and hashing ---------------------------------- */

/*
 * A body canonicalizer turns raw body bytes (fed in chunks split anywhere)
 * into canonical bytes delivered to a sink.  The sink may be called with
 * pointers into the caller's input or into the canonicalizer's own buffers;
 * it must consume them before returning.
 */
typedef void (*dkim_sink_cb)(void *arg, const char *p, size_t len);

struct dkim_bodycanon {
	enum dkim_canon canon;
	enum dkim_simd simd;     /* scanner used (relaxed only) */
	dkim_sink_cb sink;
	void *arg;
	unsigned pending_crlf;   /* deferred empty lines */
	unsigned char pend_wsp;  /* deferred WSP run (relaxed) */
	unsigned char pend_cr;   /* a CR waiting for its LF */
	unsigned char line_start;/* no content on the current line yet */
	unsigned char any;       /* any content line emitted (simple: body empty?) */
	uint64_t out_len;        /* canonical bytes emitted */
};

/* dkim_bodycanon_init - storage owned by the caller; can't fail. */
void dkim_bodycanon_init(struct dkim_bodycanon *bc, enum dkim_canon canon,
    dkim_sink_cb sink, void *arg);
/* dkim_bodycanon_update - feed body bytes; can't fail. */
void dkim_bodycanon_update(struct dkim_bodycanon *bc, const char *p, size_t len);
/* dkim_bodycanon_final - flush what end-of-body decides; can't fail. */
void dkim_bodycanon_final(struct dkim_bodycanon *bc);

/*
 * dkim_canon_body_ref - the reference (obviously correct, whole-buffer)
 * body canonicalizer the tests use as an oracle.  Returns a malloc'd buffer
 * and its length in *outlen, or NULL on OOM.
 */
char *dkim_canon_body_ref(enum dkim_canon canon, const char *p, size_t len,
    size_t *outlen);

/*
 * dkim_canon_header - canonicalize one header field (name, colon, value,
 * folding included, without its final CRLF) into out, which must hold at
 * least len + 1 bytes.  Relaxed output has no CRLF; the caller adds it.
 * Returns the output length.
 */
size_t dkim_canon_header(enum dkim_canon canon, const char *field, size_t len,
    char *out);

/* ---- Keys ---------------------------------------------------------------- */

struct dkim_key;

/*
 * dkim_key_load - read a PEM private key (PKCS#8 or traditional RSA) from a
 * file.  Returns 0 and a key in *out, or DKIM_EKEYFILE / DKIM_EKEY; on error
 * a reason (never key material) is written to err.
 */
int dkim_key_load(const char *path, struct dkim_key **out, char *err, size_t errlen);
/* dkim_key_load_pem - the same from memory. */
int dkim_key_load_pem(const char *pem, size_t len, struct dkim_key **out,
    char *err, size_t errlen);
/*
 * dkim_key_generate - a new key: RSA with bits in [1024, 4096], or Ed25519
 * (bits ignored).  0 or DKIM_EINVAL / DKIM_ECRYPTO.
 */
int dkim_key_generate(enum dkim_alg alg, int bits, struct dkim_key **out);
/*
 * dkim_key_write_pem - write the private key as PKCS#8 PEM to path, created
 * with mode 0600 through a temporary file and rename.  0 or -errno /
 * DKIM_ECRYPTO.
 */
int dkim_key_write_pem(const struct dkim_key *key, const char *path);
/* dkim_key_alg - the algorithm the key signs with. */
enum dkim_alg dkim_key_alg(const struct dkim_key *key);
/* dkim_key_bits - modulus size for RSA, 256 for Ed25519. */
int dkim_key_bits(const struct dkim_key *key);
/*
 * dkim_key_txt - the DNS TXT value "v=DKIM1; k=rsa; p=..." for the public
 * half, NUL-terminated in a malloc'd string, or NULL on OOM.
 */
char *dkim_key_txt(const struct dkim_key *key);
/* dkim_key_free - drop a reference; the key is wiped when the last goes.  NULL ok. */
void dkim_key_free(struct dkim_key *key);
/* dkim_key_ref - take another reference (for sharing between threads). */
struct dkim_key *dkim_key_ref(struct dkim_key *key);

/* A public key parsed from a DNS TXT record (RFC 6376 3.6.1). */
struct dkim_pubkey;
/*
 * dkim_pubkey_parse - parse TXT record text.  0, or DKIM_ENOKEY (revoked:
 * empty p=) / DKIM_EKEY with a reason in err.
 */
int dkim_pubkey_parse(const char *txt, size_t len, struct dkim_pubkey **out,
    char *err, size_t errlen);
void dkim_pubkey_free(struct dkim_pubkey *pk);

/* ---- Signing ------------------------------------------------------------- */

/* One signature to add.  Strings are copied by dkim_signer_add. */
struct dkim_sign_params {
	const char *domain;        /* d= */
	const char *selector;      /* s= */
	struct dkim_key *key;      /* a reference is taken */
	enum dkim_alg alg;         /* must match the key */
	enum dkim_canon hcanon, bcanon;
	const char *headers;       /* colon-separated h= candidates; NULL: default */
	time_t t;                  /* t=; 0 means now */
	long x;                    /* x= is t + x when > 0 */
};

/* The default list of header fields to sign (colon-separated). */
extern const char dkim_default_headers[];

struct dkim_signer;

/* dkim_signer_new - an empty signer, or NULL on OOM. */
struct dkim_signer *dkim_signer_new(void);
/*
 * dkim_signer_add - add one signature; call before the first write, or
 * from the dkim_signer_on_headers callback.
 * 0, or DKIM_EINVAL / DKIM_EALG / DKIM_ETOO_MANY / DKIM_ENOMEM.
 */
int dkim_signer_add(struct dkim_signer *s, const struct dkim_sign_params *p);
/*
 * dkim_signer_on_headers - cb runs once, when the header block is complete
 * and before any body byte is hashed, with the domain of the first From
 * mailbox (lower case; NULL if there is no From).  It may call
 * dkim_signer_add, which is how a relay picks keys by the From domain while
 * the message streams.  A non-zero return from cb becomes the sticky error.
 * A signer with no signature at the end produces an empty result.
 */
typedef int (*dkim_headers_cb)(void *arg, struct dkim_signer *s,
    const char *from_domain);
void dkim_signer_on_headers(struct dkim_signer *s, dkim_headers_cb cb, void *arg);

/*
 * dkim_from_domain - the domain of the first mailbox of a From field value
 * (angle-addr or bare addr-spec), lower-cased into out.  0 or DKIM_EINVAL.
 */
int dkim_from_domain(const char *value, size_t len, char *out, size_t outlen);

/*
 * dkim_signer_write - feed message bytes (header block, empty line, body),
 * CRLF line ends, in chunks split anywhere.  Errors are sticky: once one is
 * returned, every later call returns it too and dkim_signer_finish fails.
 * 0, or DKIM_EHEADER_TOO_BIG / DKIM_EBADHEADER.
 */
int dkim_signer_write(struct dkim_signer *s, const char *p, size_t len);
/*
 * dkim_signer_finish - end of message: compute every signature.  On success
 * *out is a malloc'd string holding the DKIM-Signature field(s), each folded
 * at DKIM_LINE_MAX and ending in CRLF, ready to be put before the message;
 * *outlen is its length.  0, or DKIM_ENOFROM / DKIM_ECRYPTO / a sticky error.
 */
int dkim_signer_finish(struct dkim_signer *s, char **out, size_t *outlen);
/* dkim_signer_free - NULL ok. */
void dkim_signer_free(struct dkim_signer *s);

/* ---- Verification -------------------------------------------------------- */

/*
 * Key lookup for the verifier: given d= and s=, return the TXT record text in
 * a malloc'd string (*txt), or a negative DKIM_ENOKEY when there is none
 * (reason in err).  The verifier frees *txt.
 */
typedef int (*dkim_key_lookup_cb)(void *arg, const char *domain,
    const char *selector, char **txt, char *err, size_t errlen);

struct dkim_verify_result {
	int pass;            /* 1 pass, 0 fail */
	char domain[256];    /* d= */
	char selector[256];  /* s= */
	char alg[32];        /* a= */
	char reason[256];    /* why it failed, or "ok" */
};

struct dkim_verifier;

/* dkim_verifier_new - NULL on OOM. */
struct dkim_verifier *dkim_verifier_new(dkim_key_lookup_cb lookup, void *arg);
/* dkim_verifier_write - like dkim_signer_write. */
int dkim_verifier_write(struct dkim_verifier *v, const char *p, size_t len);
/*
 * dkim_verifier_finish - check every DKIM-Signature found (at most
 * DKIM_MAX_SIGS; when there are more, one more failing result with an empty
 * d= says how many were not checked, so size res DKIM_MAX_SIGS + 1).
 * Returns the number of results stored in res (up to nres), or a negative
 * error for the message as a whole.
 */
int dkim_verifier_finish(struct dkim_verifier *v, time_t now,
    struct dkim_verify_result *res, int nres);
void dkim_verifier_free(struct dkim_verifier *v);


/* ---- managed key names (issue 5) ----------------------------------------- */

/*
 * enc(domain) - how a domain's name becomes part of one DNS label, for the
 * managed key records selectorN-enc(domain)._domainkey.<initial domain> and
 * for default signing (s=selectorN-enc(domain), d=<initial domain>).
 *
 *  1. Normalize: ASCII letters are lower-cased and one trailing dot is
 *     dropped.  The result must be a host name: labels of 1 to 63 octets
 *     of [a-z0-9-], none starting or ending with '-', 253 octets in all.
 *     An IDN must already be in A-labels ("xn--..."): an 8-bit byte (a
 *     U-label) is an error, as are '_', spaces and empty labels.
 *  2. Encode: each '-' becomes "--", then each '.' becomes '-' (Office
 *     365's dots as dashes, made reversible):
 *         fabrikam.com           -> fabrikam-com
 *         my-domain.co.uk        -> my--domain-co-uk
 *         xn--bcher-kva.example  -> xn----bcher--kva-example
 *     Decoding is unambiguous because labels never start or end with '-':
 *     a dot always sits between two letters or digits, so in enc every run
 *     of dashes is either a single '-' (a dot) or an even run of 2k (k
 *     dashes inside a label), and runs never touch.  Reading left to
 *     right, "--" -> '-' and a lone '-' -> '.' recovers the domain; an enc
 *     that does not encode back to itself (a run of 3, 5, ... dashes, a
 *     leading or trailing '-', upper case) is refused.
 *  3. Selector: "selectorN-" + enc (N = 1 or 2) when that fits in a DNS
 *     label of 63 octets, i.e. when enc has at most DKIM_ENC_PLAIN_MAX (53)
 *     octets.  Otherwise the hashed form "selectorN---" + the first 26
 *     characters of base32 (RFC 4648 alphabet, lower case, no padding: 130
 *     bits) of SHA-256 over the normalized domain, 38 octets.  What follows
 *     "selectorN-" is then "--" + hash, which no plain enc can be: a plain
 *     enc always starts with a letter or digit, because a host name does.
 *     So in a managed selector the octet after "selectorN-" tells the two
 *     forms apart: '-' (the selector starts "selectorN---") only when
 *     hashed.  (Note that "---" as such may occur later in a plain enc:
 *     "xn---x.example" gives "xn------x-example".)  A hashed name does not
 *     give the domain back (dkim_domain_decode says DKIM_EHASHED_NAME);
 *     the relay finds the domain by computing the names of those it knows.
 */
#define DKIM_ENC_PLAIN_MAX 53   /* longest enc used as is: 63 - "selectorN-" */
#define DKIM_ENC_HASH_CHARS 26  /* base32 characters of a hashed name */
#define DKIM_ENC_BUFSIZE 384    /* holds any enc (253 + 126 dashes) + NUL */
#define DKIM_SELECTOR_BUFSIZE 64 /* holds any selector name + NUL */

/*
 * DKIM_EHASHED_NAME - dkim_domain_decode / dkim_selector_parse: a hashed
 * name, well formed, but the domain is not recoverable from it.  It is
 * outside DKIM_ERRNO_MAP; dkim_names_strerror() names it (and every other
 * code, through dkim_strerror).
 */
#define DKIM_EHASHED_NAME (-1100)
const char *dkim_names_strerror(int err);

/*
 * dkim_domain_normalize - step 1 above into out (at most 254 bytes with the
 * NUL).  0, DKIM_EINVAL (not a host name) or -ENOBUFS.
 */
int dkim_domain_normalize(const char *domain, char *out, size_t outlen);
/*
 * dkim_domain_encode - enc(domain), the plain form of steps 1 and 2 (no
 * length limit but the host name's; DKIM_ENC_BUFSIZE always suffices).
 * 0, DKIM_EINVAL or -ENOBUFS.
 */
int dkim_domain_encode(const char *domain, char *out, size_t outlen);
/*
 * dkim_domain_decode - the inverse, from a plain enc or the "--" + hash part
 * of a hashed selector.  0 and the normalized domain in out;
 * DKIM_EHASHED_NAME for a well-formed hashed part; DKIM_EINVAL for anything
 * no domain encodes to; -ENOBUFS.
 */
int dkim_domain_decode(const char *enc, char *out, size_t outlen);
/*
 * dkim_selector_name - "selectorN-" + enc(domain), or the hashed form when
 * that would exceed 63 octets (step 3).  slot is 1 or 2.  0, DKIM_EINVAL
 * (bad slot or domain) or -ENOBUFS (DKIM_SELECTOR_BUFSIZE always suffices).
 */
int dkim_selector_name(int slot, const char *domain, char *out,
    size_t outlen);
/*
 * dkim_selector_parse - split a selector "selectorN-X" (case-insensitive)
 * into its slot and the domain X encodes.  0; DKIM_EHASHED_NAME (*slot
 * set, domain not); DKIM_EINVAL when it is no managed selector; -ENOBUFS.
 */
int dkim_selector_parse(const char *selector, int *slot, char *domain,
    size_t domainlen);

/*
 * dkim_alignment_check - the verifier's view of one signature (d=, s=) on
 * mail From from_domain.  Aligned (1) when
 *   - d= is the From domain or one of its parents of two labels or more
 *     (DMARC relaxed alignment, approximated without a public suffix
 *     list), or
 *   - initial_suffix is not NULL or empty, d= lies strictly under it (the
 *     seed's "d=*.onmicrosoft.com"), and s= is "selector1-" or "selector2-"
 *     followed by what dkim_selector_name would put there for the From
 *     domain, hashed form included ("implicit DMARC alignment").
 * Otherwise 0.  Either way a one-line reason goes into why, e.g.
 * "d=contoso.signet.example is under the initial suffix signet.example,
 * s=selector1-fabrikam-com names fabrikam.com: implicitly aligned".  Names
 * are compared after normalization (case, trailing dot); anything that is
 * not a host name is simply not aligned.
 */
int dkim_alignment_check(const char *from_domain, const char *d,
    const char *s, const char *initial_suffix, char *why, size_t whylen);

/* ---- managed keys: the model and the rotation state machine (issue 5) ---- */

/*
 * rotate.c holds what a managed domain is and how its keys rotate, as pure
 * functions of a struct dkim_mdomain and the time: no storage, no DNS, no
 * threads.  relay/ keeps these records in a key store, runs the DNS checks
 * and calls dkim_rotation_plan / dkim_rotation_apply on a timer.
 *
 * A managed domain has two slots, selector1 and selector2, each with its
 * own key; one slot is active (signs), the other is idle (published, the
 * next to sign).  Phases (Office 365's cycle):
 *
 *   STABLE    active slot signs; idle slot's key is published.  When the
 *             rotation is due (last_switch + interval, or rotate_requested)
 *             the plan is SWITCH if the idle slot passes the gate, else HOLD
 *             (phase becomes PENDING, held_since/held_why record why).
 *   PENDING   a switch is due but the gate holds it; re-planned every tick.
 *   RETIRING  signing moved to the other slot at phase_since; the previous
 *             key stays published for `retire` seconds so mail signed just
 *             before the switch still verifies; then REPLACE: that slot gets
 *             a new key, generation = highest + 1, created = published =
 *             now, and the phase is STABLE again (the new key is the idle,
 *             published one for the next rotation, which flips back).
 *
 * Gate (dkim_gate): a slot's key may sign only when it has been published
 * for at least `lead` seconds AND, with dns_check, its expected p= has been
 * seen through DNS at the name verifiers query for the current mode
 * (slot.seen_via == enabled: the customer's CNAME when enabled, the
 * initial-domain record when not).  A slot that has passed the gate once
 * while active is `confirmed` and keeps signing even if a later DNS check
 * fails (the gate decides switches, not whether mail is signed at all).  A
 * freshly provisioned domain's slot 1 must pass the gate before it signs;
 * until then the relay treats the domain as unprovisioned (README).
 */
enum dkim_phase {
	DKIM_PHASE_STABLE = 0,
	DKIM_PHASE_PENDING = 1,
	DKIM_PHASE_RETIRING = 2,
};
#define DKIM_NPHASES 3
/* dkim_phase_name - "stable", "pending", "retiring"; "?" otherwise. */
const char *dkim_phase_name(enum dkim_phase ph);
/* dkim_phase_parse - the reverse; 0 or DKIM_EINVAL. */
int dkim_phase_parse(const char *s, enum dkim_phase *out);

#define DKIM_TENANT_MAX 64         /* bytes of a tenant name, NUL included */
#define DKIM_DOMAIN_MAX 254        /* bytes of a domain name, NUL included */
#define DKIM_KEY_BITS_MIN 1024
#define DKIM_KEY_BITS_MAX 4096
#define DKIM_KEY_BITS_DEFAULT 2048

struct dkim_slot {
	enum dkim_alg alg;
	int bits;                  /* 0: empty slot (never, once provisioned) */
	uint32_t generation;       /* 1 for the first keys; +1 per new key */
	int64_t created;           /* unix time the key was made */
	int64_t published;         /* unix time its record became available */
	int64_t seen;              /* last time DNS showed its p=; 0: never */
	int seen_via;              /* the enabled flag at that check (0/1) */
	int64_t confirmed;         /* first time it signed after the gate; 0 */
	char *pubkey;              /* p= value (base64 SubjectPublicKeyInfo
				      for RSA, raw 32 bytes for Ed25519) */
	unsigned char *priv;       /* PKCS#8 DER; NULL when not loaded */
	size_t privlen;
};

struct dkim_mdomain {
	char domain[DKIM_DOMAIN_MAX];       /* normalized, lower case */
	char tenant[DKIM_TENANT_MAX];
	char initial_domain[DKIM_DOMAIN_MAX]; /* the tenant's, copied */
	int enabled;               /* 1: d=domain s=selectorN (CNAMEs checked) */
	int active;                /* 1 or 2 */
	enum dkim_phase phase;
	int64_t phase_since;       /* when the phase began */
	int64_t last_switch;       /* last switch, or provisioning time */
	int rotate_requested;      /* `dkim rotate`: due now, not at interval */
	int next_bits;             /* bits for the next new key; 0: default */
	int64_t held_since;        /* PENDING: when the gate first held it */
	char held_why[160];        /* PENDING: why the gate holds the switch */
	int64_t dns_checked;       /* last DNS check; 0: never */
	int dns_result;            /* 1 ok, 0 record missing/wrong, -1 error */
	char dns_detail[160];      /* what it found, one line */
	uint64_t version;          /* store version; bumped by every write */
	struct dkim_slot slot[2];  /* slot[0] is selector1, slot[1] selector2 */
};

struct dkim_rotation_policy {
	int64_t interval;          /* dkim_rotation_interval (365d) */
	int64_t lead;              /* dkim_publish_lead (7d) */
	int64_t retire;            /* dkim_retire_delay (7d) */
	int dns_check;             /* dkim_dns_check (yes) */
	int key_bits;              /* dkim_key_size (2048) */
};

/* dkim_mdomain_init - zero d, with phase STABLE and active 1. */
void dkim_mdomain_init(struct dkim_mdomain *d);
/* dkim_mdomain_clear - free the slots' strings and wipe private keys; d
 * may then be reused or dropped.  NULL ok. */
void dkim_mdomain_clear(struct dkim_mdomain *d);
/* dkim_mdomain_copy - deep copy (private keys too if loaded). dst's old
 * contents are not freed; on failure it is left empty.  0/-ENOMEM. */
int dkim_mdomain_copy(struct dkim_mdomain *dst, const struct dkim_mdomain *src);

/*
 * dkim_slot_set_key - put key into slot s (of d) as generation gen, created
 * and published at now, not seen, not confirmed: fills alg, bits, pubkey
 * (the p= value exactly as dkim_key_txt prints it) and priv (PKCS#8 DER).
 * The slot's previous key is freed (wiped) only on success; on error s is
 * unchanged.  0 or DKIM_EINVAL / DKIM_ENOMEM / DKIM_ECRYPTO.
 */
int dkim_slot_set_key(struct dkim_slot *s, const struct dkim_key *key,
    uint32_t gen, int64_t now);
/* dkim_slot_key - a new struct dkim_key from s->priv; DKIM_EKEY if none,
 * if it does not parse, or if its public half is not s->pubkey / s->alg. */
int dkim_slot_key(const struct dkim_slot *s, struct dkim_key **out);

/*
 * dkim_mdomain_provision - a new managed domain: both slots filled (k1 in
 * selector1, active; k2 in selector2, idle and published), generation 1,
 * phase STABLE, last_switch = now, not enabled.  domain and
 * initial_domain are normalized here; both record names must fit in 253
 * octets.  d is overwritten, not freed (pass it fresh from _init/_clear);
 * on error it is left empty.  0, DKIM_EINVAL (bad name or tenant),
 * DKIM_ENOMEM, DKIM_ECRYPTO.
 */
int dkim_mdomain_provision(struct dkim_mdomain *d, const char *domain,
    const char *tenant, const char *initial_domain,
    const struct dkim_key *k1, const struct dkim_key *k2, int64_t now);

/*
 * dkim_mdomain_txt - the TXT record of slot (1 or 2):
 * "v=DKIM1; k=rsa; p=<key>; n=<bits>,<created>,<generation>"
 * (k=ed25519 for Ed25519, bits 256), malloc'd; NULL on OOM, for a slot
 * other than 1 or 2, or for an empty slot.
 */
char *dkim_mdomain_txt(const struct dkim_mdomain *d, int slot);
/*
 * dkim_mdomain_record_name - "selectorN-enc(domain)._domainkey.<initial>",
 * the owner of slot's TXT record.  0, DKIM_EINVAL (also when the name
 * would exceed 253 octets), -ENOBUFS (out too small).
 */
int dkim_mdomain_record_name(const struct dkim_mdomain *d, int slot,
    char *out, size_t outlen);
/*
 * dkim_mdomain_query_name - the name a verifier queries for slot now:
 * "selectorN._domainkey.<domain>" when enabled (it follows the customer's
 * CNAME), else the record name.  0, DKIM_EINVAL, -ENOBUFS.
 */
int dkim_mdomain_query_name(const struct dkim_mdomain *d, int slot,
    char *out, size_t outlen);
/*
 * dkim_mdomain_identity - d= and s= to sign with, using slot:
 * enabled: d=domain, s="selectorN"; else d=initial_domain,
 * s=dkim_selector_name(slot, domain).  d and s get DKIM_DOMAIN_MAX and
 * DKIM_SELECTOR_BUFSIZE bytes.  0 or DKIM_EINVAL.
 */
int dkim_mdomain_identity(const struct dkim_mdomain *d, int slot, char *dout,
    char *sout);

/*
 * dkim_txt_matches - does the TXT record text carry the public key pubkey
 * (its p= tag equal, ignoring whitespace on both sides)?  1 or 0; 0 also
 * for a malformed tag-list (a tag without "=", an empty tag-spec before
 * the end, p= twice) and for an empty pubkey.
 */
int dkim_txt_matches(const char *txt, size_t len, const char *pubkey);

/*
 * dkim_gate - may slot (1 or 2) sign at now?  1 yes; 0 no, with the reason
 * in why, e.g. "selector2 key published 2d 3h ago; dkim_publish_lead is 7d
 * (4d 21h to go)" or "selector2._domainkey.fabrikam.com has not shown the
 * selector2 key through DNS yet" (the query name of the current mode).
 * With dns_check the slot must have seen >= published, seen != 0 and
 * seen_via == enabled.  On a pass why says so too.
 */
int dkim_gate(const struct dkim_mdomain *d, int slot,
    const struct dkim_rotation_policy *p, int64_t now, char *why,
    size_t whylen);
/*
 * dkim_mdomain_signing_slot - the slot that signs at now: the active one if
 * it is confirmed or passes the gate, else 0 (not yet signable).
 */
int dkim_mdomain_signing_slot(const struct dkim_mdomain *d,
    const struct dkim_rotation_policy *p, int64_t now);

enum dkim_step {
	DKIM_STEP_NONE = 0,        /* nothing to do before *next */
	DKIM_STEP_CONFIRM,         /* the active slot passed the gate: mark it */
	DKIM_STEP_HOLD,            /* a switch is due and the gate holds it */
	DKIM_STEP_SWITCH,          /* sign with the idle slot from now on */
	DKIM_STEP_REPLACE,         /* the retiring slot gets a new key */
};
const char *dkim_step_name(enum dkim_step st);

/*
 * dkim_rotation_plan - the step due for d at now (at most one; call again
 * after applying it), and in *next (may be NULL) the time of the next
 * scheduled transition (now for a step due now; 0: none known, e.g.
 * waiting on DNS).  why gets a one-line explanation for logs and `dkim
 * show` (for HOLD, the gate's reason).  In order:
 *  1. active slot not confirmed: CONFIRM if it passes the gate, else NONE
 *     (*next = end of its publish lead, or 0 when waiting on DNS);
 *  2. RETIRING: REPLACE once phase_since + retire is reached, else NONE;
 *  3. STABLE / PENDING: when due (rotate_requested or last_switch +
 *     interval), SWITCH if the idle slot passes the gate, else HOLD; not
 *     due: NONE, *next = last_switch + interval.
 * held_why is the gate's reason in a stable wording (absolute times, no
 * "ago" / "to go"), so it only changes when the situation does.  Already
 * PENDING, a held switch plans HOLD again only when that stable reason
 * differs from held_why, else NONE: a caller that writes the store for
 * every step but NONE does not rewrite it every tick.  A PENDING domain
 * that is no longer due (its record was edited) plans NONE and stays
 * PENDING until it is due again; nothing needs applying.
 */
enum dkim_step dkim_rotation_plan(const struct dkim_mdomain *d,
    const struct dkim_rotation_policy *p, int64_t now, int64_t *next,
    char *why, size_t whylen);
/*
 * dkim_rotation_apply - carry out step on d at now.  REPLACE needs newkey
 * (the caller generates it with the size d->next_bits or p->key_bits) and
 * clears next_bits; the others ignore it.  HOLD sets phase PENDING and
 * held_since (first time) / held_why; SWITCH flips active, phase RETIRING,
 * phase_since = last_switch = now, rotate_requested = 0, held_* cleared,
 * marks the new active slot confirmed; CONFIRM sets the active slot's
 * confirmed; REPLACE gives the idle slot generation highest + 1 and
 * returns to STABLE (phase_since = now); NONE does nothing.  The state is
 * checked again: CONFIRM needs an unconfirmed active slot passing the
 * gate, HOLD / SWITCH phase STABLE or PENDING with the idle slot failing /
 * passing the gate, REPLACE phase RETIRING and newkey.  Does not touch
 * version.  0, DKIM_EINVAL (step not applicable; d unchanged),
 * DKIM_ENOMEM / DKIM_ECRYPTO (REPLACE; d unchanged).
 */
int dkim_rotation_apply(struct dkim_mdomain *d, enum dkim_step step,
    const struct dkim_rotation_policy *p, int64_t now, struct dkim_key *newkey);
/*
 * dkim_rotate_now - `dkim rotate --now` (key compromise): if the idle slot
 * passes the gate, switch to it and put newkey into the previously active
 * slot at once (generation highest + 1; phase STABLE, phase_since =
 * last_switch = now, rotate_requested = next_bits = 0, held_* cleared).
 * Allowed in any phase.  0 (why says what happened); DKIM_EINVAL with the
 * reason in why when the gate holds the idle key or newkey is NULL;
 * DKIM_ENOMEM / DKIM_ECRYPTO.  d is unchanged on any error.
 */
int dkim_rotate_now(struct dkim_mdomain *d, const struct dkim_rotation_policy *p,
    int64_t now, struct dkim_key *newkey, char *why, size_t whylen);

/*
 * Storage form: a flat list of (field, value) string pairs, the same for
 * the file store (one "field value" line each) and Redis (a hash).  Fields:
 * domain tenant initial_domain enabled active phase phase_since last_switch
 * rotate_requested next_bits held_since held_why dns_checked dns_result
 * dns_detail version, and per slot N (1, 2): sN.alg sN.bits sN.generation
 * sN.created sN.published sN.seen sN.seen_via sN.confirmed sN.pubkey and,
 * only with_keys and when loaded, sN.priv (base64 PKCS#8 DER, in the
 * clear: the store encrypts it where it must).  Integers are decimal,
 * booleans 0/1, phase by name, sN.alg as dkim_alg_name ("rsa-sha256"), an
 * empty pubkey as "".  Values never contain CR or LF: control characters
 * in strings (held_why, dns_detail) are written as '?'.
 */
typedef int (*dkim_field_cb)(void *arg, const char *field, const char *value);
/* dkim_mdomain_fields - cb for every field in the order above; stops at
 * and returns the first nonzero cb result; DKIM_ENOMEM. */
int dkim_mdomain_fields(const struct dkim_mdomain *d, int with_keys,
    dkim_field_cb cb, void *arg);
/* dkim_mdomain_set_field - set one field from its stored value: 0,
 * DKIM_EINVAL (bad value, reason in nothing: caller names the field),
 * DKIM_ENOMEM, 1 for an unknown field (ignored, for forward
 * compatibility).  domain / initial_domain are normalized; a string longer
 * than its field is cut; "" empties pubkey / priv. */
int dkim_mdomain_set_field(struct dkim_mdomain *d, const char *field,
    const char *value);
/* dkim_mdomain_check - after set_field: every required field present and
 * consistent (domain, tenant, initial_domain set, active 1|2, both slots
 * with bits, pubkey and generation, record names that fit DNS).  0 or
 * DKIM_EINVAL with what is wrong in why ("fabrikam.com: s2.pubkey is
 * missing"). */
int dkim_mdomain_check(const struct dkim_mdomain *d, char *why, size_t whylen);

/*
 * DER import/export for the stores: dkim_key_to_der gives PKCS#8 DER in a
 * malloc'd buffer (wipe with dkim_wipe_free); 0, DKIM_EINVAL, DKIM_ENOMEM,
 * DKIM_ECRYPTO.  dkim_key_from_der the reverse (exactly len bytes of
 * PKCS#8); 0, DKIM_EKEY, DKIM_ENOMEM.
 */
int dkim_key_to_der(const struct dkim_key *key, unsigned char **der,
    size_t *len);
int dkim_key_from_der(const unsigned char *der, size_t len,
    struct dkim_key **out);
/* dkim_wipe_free - OPENSSL_cleanse then free; NULL ok. */
void dkim_wipe_free(void *p, size_t len);
/* dkim_b64_encode - standard base64, no newlines, malloc'd; NULL on OOM. */
char *dkim_b64_encode(const unsigned char *p, size_t len);
/* dkim_b64_decode - the reverse (whitespace skipped); malloc'd into *out
 * (a NUL follows the *outlen bytes).  0 or DKIM_EINVAL / DKIM_ENOMEM. */
int dkim_b64_decode(const char *s, unsigned char **out, size_t *outlen);

#endif
