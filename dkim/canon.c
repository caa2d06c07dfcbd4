/*
 * canon.c - DKIM canonicalization (RFC 6376 3.4) and the body hash.
 *
 * The body canonicalizers are streaming state machines: bytes arrive in
 * chunks split anywhere, and what end-of-body decides (trailing empty lines,
 * trailing whitespace, a CR waiting for its LF) is held back as state, never
 * as buffered input.  Output goes to a sink as spans of the caller's input
 * wherever the canonical form equals the input, which in ordinary mail is
 * nearly everywhere, so the common case costs one scan and no copy.
 *
 * The scan for the next byte that needs attention ("interesting": CR, TAB,
 * or a SP followed by WSP or CR) is the only hot loop.  It has a scalar, an
 * SSE4.2-level and an AVX2 version, chosen at run time from the CPU's
 * features; tests and the fuzzer check every version against the reference
 * canonicalizer at the bottom of this file.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim_int.h"

/* ---- scanners -------------------------------------------------------- */

/*
 * A scanner returns the first index at or after i whose byte needs the
 * state machine, or len.  What needs it:
 *   relaxed: TAB; SP followed by SP, TAB or CR; and CRs as below.
 *   both:    a CR not followed by LF (bare CR, or the chunk's last byte), and
 *            a CR right after an LF (an empty line, which may turn out to be
 *            trailing) unless the next line visibly starts with content.
 * A CRLF ending a line of content is canonical already, so text mail runs
 * through the scanner for many lines at a stretch.  The byte at i itself is
 * judged as if the byte before it were not LF: the caller never starts a
 * scan on a CR at the start of a line.
 */
typedef size_t (*scan_fn)(const unsigned char *p, size_t i, size_t len,
    int relaxed);

/* interesting - does byte j need the state machine? (first: j is the scan start) */
static inline int
interesting(const unsigned char *p, size_t j, size_t len, int relaxed, int first)
{
	unsigned char c = p[j];

	if (c == '\r') {
		if (j + 1 == len || p[j + 1] != '\n')
			return 1;
		if (first || p[j - 1] != '\n')
			return 0;
		/* an empty line followed by content is not trailing */
		return j + 2 == len || p[j + 2] == '\r' ||
		    (relaxed && (p[j + 2] == ' ' || p[j + 2] == '\t'));
	}
	if (!relaxed)
		return 0;
	if (c == '\t')
		return 1;
	if (c == ' ')
		return j + 1 == len || p[j + 1] == ' ' || p[j + 1] == '\t' ||
		    p[j + 1] == '\r';
	return 0;
}

/* scan_scalar - one byte at a time. */
static size_t
scan_scalar(const unsigned char *p, size_t i, size_t len, int relaxed)
{
	size_t j;

	for (j = i; j < len; j++) {
		if (p[j] > ' ')
			continue;
		if (interesting(p, j, len, relaxed, j == i))
			return j;
	}
	return len;
}

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_X86 1

/* scan_sse42 - 16 bytes at a time, loads at j - 1, j, j + 1 and j + 2. */
__attribute__((target("sse4.2"))) static size_t
scan_sse42(const unsigned char *p, size_t i, size_t len, int relaxed)
{
	const __m128i sp = _mm_set1_epi8(' '), tab = _mm_set1_epi8('\t');
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	const __m128i wmask = _mm_set1_epi8(relaxed ? -1 : 0);
	size_t j = i;

	if (j < len && interesting(p, j, len, relaxed, 1))
		return j;
	j++;
	while (j + 18 <= len) {
		__m128i a = _mm_loadu_si128((const __m128i *)(p + j));
		__m128i nx = _mm_loadu_si128((const __m128i *)(p + j + 1));
		__m128i n2 = _mm_loadu_si128((const __m128i *)(p + j + 2));
		__m128i pv = _mm_loadu_si128((const __m128i *)(p + j - 1));
		__m128i acr = _mm_cmpeq_epi8(a, cr);
		__m128i n2x = _mm_or_si128(_mm_cmpeq_epi8(n2, cr), _mm_and_si128(
		    _mm_or_si128(_mm_cmpeq_epi8(n2, sp), _mm_cmpeq_epi8(n2, tab)),
		    wmask));
		__m128i crbad = _mm_and_si128(acr, _mm_or_si128(
		    _mm_andnot_si128(_mm_cmpeq_epi8(nx, lf), _mm_set1_epi8(-1)),
		    _mm_and_si128(_mm_cmpeq_epi8(pv, lf), n2x)));
		__m128i nwsp = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(nx, sp),
		    _mm_cmpeq_epi8(nx, tab)), _mm_cmpeq_epi8(nx, cr));
		__m128i w = _mm_or_si128(_mm_cmpeq_epi8(a, tab),
		    _mm_and_si128(_mm_cmpeq_epi8(a, sp), nwsp));
		__m128i m = _mm_or_si128(crbad, _mm_and_si128(w, wmask));
		unsigned mask = (unsigned)_mm_movemask_epi8(m);

		if (mask != 0)
			return j + (size_t)__builtin_ctz(mask);
		j += 16;
	}
	for (; j < len; j++)
		if (p[j] <= ' ' && interesting(p, j, len, relaxed, 0))
			return j;
	return len;
}

/* scan_avx2 - 32 bytes at a time. */
__attribute__((target("avx2"))) static size_t
scan_avx2(const unsigned char *p, size_t i, size_t len, int relaxed)
{
	const __m256i sp = _mm256_set1_epi8(' '), tab = _mm256_set1_epi8('\t');
	const __m256i cr = _mm256_set1_epi8('\r'), lf = _mm256_set1_epi8('\n');
	const __m256i ones = _mm256_set1_epi8(-1);
	const __m256i wmask = _mm256_set1_epi8(relaxed ? -1 : 0);
	size_t j = i;

	if (j < len && interesting(p, j, len, relaxed, 1))
		return j;
	j++;
	while (j + 34 <= len) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(p + j));
		__m256i nx = _mm256_loadu_si256((const __m256i *)(p + j + 1));
		__m256i n2 = _mm256_loadu_si256((const __m256i *)(p + j + 2));
		__m256i pv = _mm256_loadu_si256((const __m256i *)(p + j - 1));
		__m256i acr = _mm256_cmpeq_epi8(a, cr);
		__m256i n2x = _mm256_or_si256(_mm256_cmpeq_epi8(n2, cr),
		    _mm256_and_si256(_mm256_or_si256(_mm256_cmpeq_epi8(n2, sp),
		    _mm256_cmpeq_epi8(n2, tab)), wmask));
		__m256i crbad = _mm256_and_si256(acr, _mm256_or_si256(
		    _mm256_andnot_si256(_mm256_cmpeq_epi8(nx, lf), ones),
		    _mm256_and_si256(_mm256_cmpeq_epi8(pv, lf), n2x)));
		__m256i nwsp = _mm256_or_si256(_mm256_or_si256(
		    _mm256_cmpeq_epi8(nx, sp), _mm256_cmpeq_epi8(nx, tab)),
		    _mm256_cmpeq_epi8(nx, cr));
		__m256i w = _mm256_or_si256(_mm256_cmpeq_epi8(a, tab),
		    _mm256_and_si256(_mm256_cmpeq_epi8(a, sp), nwsp));
		__m256i m = _mm256_or_si256(crbad, _mm256_and_si256(w, wmask));
		unsigned mask = (unsigned)_mm256_movemask_epi8(m);

		if (mask != 0)
			return j + (size_t)__builtin_ctz(mask);
		j += 32;
	}
	/* the tail (fewer than 34 bytes) bytewise */
	for (; j < len; j++)
		if (p[j] <= ' ' && interesting(p, j, len, relaxed, 0))
			return j;
	return len;
}
#endif

static enum dkim_simd simd_level = DKIM_SIMD_AUTO;

/* simd_best - the best scanner this CPU runs. */
static enum dkim_simd
simd_best(void)
{
#ifdef HAVE_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		return DKIM_SIMD_AVX2;
	if (__builtin_cpu_supports("sse4.2"))
		return DKIM_SIMD_SSE42;
#endif
	return DKIM_SIMD_SCALAR;
}

enum dkim_simd
dkim_simd_set(enum dkim_simd level)
{
	enum dkim_simd best = simd_best();

	if (level == DKIM_SIMD_AUTO || level > best)
		level = best;
	simd_level = level;
	return level;
}

const char *
dkim_simd_name(enum dkim_simd level)
{
	switch (level) {
	case DKIM_SIMD_SCALAR:
		return "scalar";
	case DKIM_SIMD_SSE42:
		return "sse4.2";
	case DKIM_SIMD_AVX2:
		return "avx2";
	default:
		return "auto";
	}
}

static scan_fn
scanner(enum dkim_simd level)
{
	switch (level) {
#ifdef HAVE_X86
	case DKIM_SIMD_AVX2:
		return scan_avx2;
	case DKIM_SIMD_SSE42:
		return scan_sse42;
#endif
	default:
		return scan_scalar;
	}
}

/* ---- streaming body canonicalizer ------------------------------------ */

static const char crlfs[] = "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";

static void
emit(struct dkim_bodycanon *bc, const char *p, size_t len)
{
	if (len == 0)
		return;
	bc->out_len += len;
	bc->sink(bc->arg, p, len);
}

/* emit_crlfs - n deferred empty lines. */
static void
emit_crlfs(struct dkim_bodycanon *bc, unsigned n)
{
	while (n > 0) {
		unsigned k = n > 16 ? 16 : n;

		emit(bc, crlfs, 2 * (size_t)k);
		n -= k;
	}
}

void
dkim_bodycanon_init(struct dkim_bodycanon *bc, enum dkim_canon canon,
    dkim_sink_cb sink, void *arg)
{
	memset(bc, 0, sizeof(*bc));
	bc->canon = canon;
	if (simd_level == DKIM_SIMD_AUTO)
		dkim_simd_set(DKIM_SIMD_AUTO);
	bc->simd = simd_level;
	bc->sink = sink;
	bc->arg = arg;
	bc->line_start = 1;
}

/*
 * Within one call, the input is emitted as spans [span, x) of itself.  What
 * is held back (deferred empty lines, a WSP run) starts at `hold`; `exact`
 * says that the held input bytes are exactly what their canonical form will
 * be if content follows (CRLFs and at most one SP, all inside this chunk), in
 * which case the span simply runs on.  Otherwise the span is cut at `hold`
 * and the canonical bytes are emitted from constants.
 */
void
dkim_bodycanon_update(struct dkim_bodycanon *bc, const char *cp, size_t len)
{
	const unsigned char *p = (const unsigned char *)cp;
	const int relaxed = bc->canon == DKIM_CANON_RELAXED;
	scan_fn scan = scanner(bc->simd);
	size_t i = 0, span = 0, hold = 0;
	int exact = 0, cr_here = 0;

#define HAS_PENDING() (bc->pending_crlf != 0 || bc->pend_wsp)
	/* resolve - content begins at `at`: emit what was held back. */
#define RESOLVE(at)                                                   \
	do {                                                          \
		if (HAS_PENDING() && !exact) {                        \
			emit(bc, cp + span, hold - span);             \
			emit_crlfs(bc, bc->pending_crlf);             \
			if (bc->pend_wsp)                             \
				emit(bc, " ", 1);                     \
			span = (at);                                  \
		}                                                     \
		bc->pending_crlf = 0;                                 \
		bc->pend_wsp = 0;                                     \
		bc->line_start = 0;                                   \
	} while (0)

	while (i < len) {
		unsigned char c;

		/* a CR at the start of a line is for the state machine */
		if (!bc->pend_cr && !HAS_PENDING() &&
		    !(bc->line_start && p[i] == '\r')) {
			size_t j = scan(p, i, len, relaxed);

			/* what was skipped is canonical; did it end a line? */
			if (j > i)
				bc->line_start = j - i >= 2 && p[j - 1] == '\n' &&
				    p[j - 2] == '\r';
			i = j;
			if (i == len)
				break;
			/*
			 * The usual WSP cases inside a line, without the state
			 * machine: a run followed by content becomes one SP, a
			 * run before CRLF goes.  Runs at the start of a line or
			 * at the end of the chunk take the long way.
			 */
			if (relaxed && !bc->line_start && (p[i] == ' ' || p[i] == '\t')) {
				size_t k = i + 1;

				while (k < len && (p[k] == ' ' || p[k] == '\t'))
					k++;
				if (k < len && p[k] != '\r') {
					if (p[i] == ' ')
						emit(bc, cp + span, i + 1 - span);
					else {
						emit(bc, cp + span, i - span);
						emit(bc, " ", 1);
					}
					span = i = k;
					continue;
				}
				if (k + 1 < len && p[k] == '\r' && p[k + 1] == '\n') {
					emit(bc, cp + span, i - span);
					span = i = k;
					continue;
				}
			}
		}
		c = p[i];
		if (bc->pend_cr) {
			bc->pend_cr = 0;
			if (c == '\n') {
				/* end of a line */
				if (bc->line_start) {
					if (!HAS_PENDING()) {
						hold = cr_here ? i - 1 : 0;
						exact = cr_here;
					} else if (bc->pend_wsp)
						exact = 0;
					bc->pend_wsp = 0;
					bc->pending_crlf++;
				} else if (bc->pend_wsp) {
					/* RFC 6376 3.4.4: drop trailing WSP */
					emit(bc, cp + span, hold - span);
					bc->pend_wsp = 0;
					if (cr_here)
						span = i - 1;
					else {
						emit(bc, "\r\n", 2);
						span = i + 1;
					}
				} else if (!cr_here) {
					emit(bc, "\r\n", 2);
					span = i + 1;
				}
				bc->line_start = 1;
				cr_here = 0;
				i++;
				continue;
			}
			/* a bare CR is content; c is looked at again */
			if (cr_here) {
				RESOLVE(i - 1);
			} else {
				RESOLVE(i);
				emit(bc, "\r", 1);
			}
			cr_here = 0;
			continue;
		}
		if (c == '\r') {
			bc->pend_cr = 1;
			cr_here = 1;
		} else if (relaxed && (c == ' ' || c == '\t')) {
			if (!HAS_PENDING()) {
				hold = i;
				exact = c == ' ';
			} else if (bc->pend_wsp || c == '\t')
				exact = 0;
			bc->pend_wsp = 1;
		} else
			RESOLVE(i);
		i++;
	}
	/* flush what is certain; keep the held bytes as state */
	if (HAS_PENDING())
		emit(bc, cp + span, hold - span);
	else if (bc->pend_cr && cr_here)
		emit(bc, cp + span, len - 1 - span);
	else
		emit(bc, cp + span, len - span);
#undef RESOLVE
#undef HAS_PENDING
}

void
dkim_bodycanon_final(struct dkim_bodycanon *bc)
{
	int content = bc->pend_cr || bc->pend_wsp;

	if (content) {
		/* an unterminated last line: CR or WSP count as content */
		emit_crlfs(bc, bc->pending_crlf);
		if (bc->pend_wsp)
			emit(bc, " ", 1);
		if (bc->pend_cr)
			emit(bc, "\r", 1);
		bc->line_start = 0;
	}
	bc->pending_crlf = 0;
	bc->pend_wsp = bc->pend_cr = 0;
	if (!bc->line_start)
		emit(bc, "\r\n", 2);
	/* RFC 6376 3.4.3: the simple canonical empty body is one CRLF */
	if (bc->canon == DKIM_CANON_SIMPLE && bc->out_len == 0)
		emit(bc, "\r\n", 2);
	bc->line_start = 1;
}

/* ---- body hash ---------------------------------------------------------- */

/* bodyhash_flush - hash what the staging buffer holds. */
static void
bodyhash_flush(struct dkim__bodyhash *bh)
{
	if (bh->stage_len > 0) {
		EVP_DigestUpdate(bh->md, bh->stage, bh->stage_len);
		bh->stage_len = 0;
	}
}

/*
 * bodyhash_sink - small pieces are gathered so that SHA-256 sees large
 * updates; large spans of the input go to it directly.  l= clips here.
 */
static void
bodyhash_sink(void *arg, const char *p, size_t len)
{
	struct dkim__bodyhash *bh = arg;

	if (bh->limit != (uint64_t)-1) {
		uint64_t room = bh->limit - bh->hashed;

		if (len > room)
			len = (size_t)room;
	}
	bh->hashed += len;
	if (len >= 512) {
		bodyhash_flush(bh);
		EVP_DigestUpdate(bh->md, p, len);
		return;
	}
	if (bh->stage_len + len > sizeof(bh->stage))
		bodyhash_flush(bh);
	memcpy(bh->stage + bh->stage_len, p, len);
	bh->stage_len += len;
}

int
dkim__bodyhash_init(struct dkim__bodyhash *bh, enum dkim_canon canon,
    uint64_t limit)
{
	memset(bh, 0, sizeof(*bh));
	bh->limit = limit;
	if ((bh->md = EVP_MD_CTX_new()) == NULL)
		return DKIM_ENOMEM;
	if (EVP_DigestInit_ex(bh->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(bh->md);
		bh->md = NULL;
		return DKIM_ECRYPTO;
	}
	dkim_bodycanon_init(&bh->bc, canon, bodyhash_sink, bh);
	return 0;
}

void
dkim__bodyhash_update(struct dkim__bodyhash *bh, const char *p, size_t len)
{
	dkim_bodycanon_update(&bh->bc, p, len);
}

int
dkim__bodyhash_final(struct dkim__bodyhash *bh)
{
	unsigned int n = 0;

	dkim_bodycanon_final(&bh->bc);
	bodyhash_flush(bh);
	if (EVP_DigestFinal_ex(bh->md, bh->digest, &n) != 1 || n != 32)
		return DKIM_ECRYPTO;
	return 0;
}

void
dkim__bodyhash_reset(struct dkim__bodyhash *bh)
{
	EVP_MD_CTX_free(bh->md);
	bh->md = NULL;
}

/* ---- header canonicalization -------------------------------------------- */

size_t
dkim_canon_header(enum dkim_canon canon, const char *f, size_t len, char *out)
{
	size_t i, o = 0, colon, end, vstart;
	int wsp = 0;

	if (canon == DKIM_CANON_SIMPLE) {
		memcpy(out, f, len);
		out[len] = '\0';
		return len;
	}
	/* RFC 6376 3.4.2: lower-case name, no WSP before or after the colon */
	for (colon = 0; colon < len && f[colon] != ':'; colon++)
		;
	end = colon;
	while (end > 0 && (f[end - 1] == ' ' || f[end - 1] == '\t'))
		end--;
	for (i = 0; i < end; i++) {
		unsigned char c = (unsigned char)f[i];

		out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	if (colon == len) {
		out[o] = '\0';
		return o;
	}
	out[o++] = ':';
	vstart = o;
	/* unfold, reduce WSP runs to one SP, strip leading/trailing WSP */
	for (i = colon + 1; i < len; i++) {
		char c = f[i];

		if (c == '\r' && i + 1 < len && f[i + 1] == '\n') {
			i++;
			continue;
		}
		if (c == ' ' || c == '\t') {
			wsp = 1;
			continue;
		}
		if (wsp && o > vstart)
			out[o++] = ' ';
		wsp = 0;
		out[o++] = c;
	}
	out[o] = '\0';
	return o;
}

/* ---- reference canonicalizer (the oracle) ------------------------------- */

/*
 * dkim_canon_body_ref - RFC 6376 3.4.3 and 3.4.4 done the plain way over a
 * whole buffer: rewrite each CRLF-terminated line, then strip trailing empty
 * lines.  Slow and obviously right; the tests hold the streaming code to it.
 */
char *
dkim_canon_body_ref(enum dkim_canon canon, const char *p, size_t len,
    size_t *outlen)
{
	char *out = malloc(len + 3);
	size_t i = 0, o = 0;

	if (out == NULL)
		return NULL;
	while (i < len) {
		size_t e = i, le;
		int term = 0;

		/* find the end of this line (CRLF) */
		while (e < len && !(p[e] == '\r' && e + 1 < len && p[e + 1] == '\n'))
			e++;
		term = e < len;
		le = e;
		if (canon == DKIM_CANON_RELAXED) {
			size_t k;
			int wsp = 0;

			if (term)
				while (le > i && (p[le - 1] == ' ' || p[le - 1] == '\t'))
					le--;
			for (k = i; k < le; k++) {
				if (p[k] == ' ' || p[k] == '\t') {
					wsp = 1;
					continue;
				}
				if (wsp)
					out[o++] = ' ';
				wsp = 0;
				out[o++] = p[k];
			}
			if (wsp)
				out[o++] = ' ';
		} else {
			memcpy(out + o, p + i, le - i);
			o += le - i;
		}
		if (term) {
			out[o++] = '\r';
			out[o++] = '\n';
			i = e + 2;
		} else
			i = e;
	}
	/* a last line without CRLF gets one */
	if (o > 0 && !(o >= 2 && out[o - 2] == '\r' && out[o - 1] == '\n')) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	/* drop empty lines at the end, keeping the CRLF of the last line */
	while (o >= 4 && memcmp(out + o - 4, "\r\n\r\n", 4) == 0)
		o -= 2;
	if (o == 2 && memcmp(out, "\r\n", 2) == 0)
		o = 0;
	if (canon == DKIM_CANON_SIMPLE && o == 0) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	*outlen = o;
	return out;
}
