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
 * features.  On CPUs with AVX-512 VBMI2 the relaxed body takes another road
 * (rx_update): no stops at all, each 64-byte block is compacted into a
 * staging buffer that the sink gets in large pieces.  Tests and the fuzzer
 * check every version against the reference canonicalizer at the bottom of
 * this file.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim_int.h"

/* ---- output ----------------------------------------------------------- */

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

/* ---- scanners -------------------------------------------------------- */

/*
 * The scanner finds the next byte at or after i that needs the state
 * machine ("interesting"), or len.  What needs it:
 *   relaxed: TAB; SP followed by SP, TAB or CR; and CRs as below.
 *   both:    a CR not followed by LF (bare CR, or the chunk's last byte), and
 *            a CR right after an LF (an empty line, which may turn out to be
 *            trailing) unless the next line visibly starts with content.
 * A CRLF ending a line of content is canonical already, so text mail runs
 * through the scanner for many lines at a stretch.  Flagging more than this
 * is always safe, since the state machine handles any byte; flagging less
 * is not.  Whether a byte is interesting depends only on the chunk's bytes,
 * never on the state: the byte before the chunk counts as not LF (the state
 * machine, not the scanner, takes a CR at the start of a line), the bytes
 * after it as unknown (so a SP or CR near the end is flagged).
 *
 * Bytes are classified 64 at a time into bit masks (bit k for byte base + k:
 * SP, TAB, CR, LF), and the rules above become shifts of those masks, the
 * neighbouring block supplying the bits that shift in.  A window of
 * SCAN_WORDS blocks is classified at once into a bitmap that stays in L1;
 * each stop of the state machine is then a bit lookup, not a new scan.  Only
 * the classification differs between the scalar (SWAR), SSE4.2-level and
 * AVX2 versions, chosen at run time from the CPU's features.
 */
#define SCAN_WORDS 64    /* a window: 64 blocks of 64 bytes */

/* the classes of one block of 64 bytes */
struct scan_blk {
	uint64_t sp, tab, cr, lf;
};

struct scan;
typedef void (*scan_fill_fn)(struct scan *sc, size_t base);

struct scan {
	const unsigned char *p;
	size_t len;
	size_t base, end;        /* the window [base, end): bits[] */
	scan_fill_fn fill;
	uint64_t bits[SCAN_WORDS];
};

typedef void (*scan_classify_fn)(const unsigned char *q, struct scan_blk *b);

/* swar_eq - one bit per byte of x that equals c (bit k for byte k). */
static inline uint64_t
swar_eq(uint64_t x, uint64_t c)
{
	const uint64_t lo7 = 0x7f7f7f7f7f7f7f7full;
	uint64_t t = x ^ c;

	/* the high bit of each byte of t is set iff that byte is 0 (no carries) */
	t = ~(((t & lo7) + lo7) | t) & ~lo7;
	/* gather bit 8k + 7 to bit 56 + k */
	return (t * 0x0002040810204081ull) >> 56;
}

/* classify_scalar - eight bytes at a time in a 64-bit word. */
static inline __attribute__((always_inline)) void
classify_scalar(const unsigned char *q, struct scan_blk *b)
{
	const uint64_t ones = 0x0101010101010101ull;
	int k;

	b->sp = b->tab = b->cr = b->lf = 0;
	for (k = 0; k < 8; k++) {
		uint64_t x;

		memcpy(&x, q + 8 * k, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		x = __builtin_bswap64(x);
#endif
		b->sp |= swar_eq(x, ones * ' ') << (8 * k);
		b->tab |= swar_eq(x, ones * '\t') << (8 * k);
		b->cr |= swar_eq(x, ones * '\r') << (8 * k);
		b->lf |= swar_eq(x, ones * '\n') << (8 * k);
	}
}

/*
 * The classes of a byte of the next block, for the bits that shift in: bit 0
 * LF, bit 1 "x" for simple (CR), bit 2 "x" for relaxed (CR, SP, TAB).  Past
 * the end of the chunk the next byte is unknown, which must count as x and
 * not as LF; scan_fill_with pads with CR for that.
 */
static const unsigned char scan_cls[256] = {
	['\n'] = 1, ['\r'] = 6, [' '] = 4, ['\t'] = 4,
};

/*
 * scan_block - the interesting bytes among the 64 at q; reads q[0..65].
 * prevlf: is the byte before q LF?
 */
static inline __attribute__((always_inline)) uint64_t
scan_block(const unsigned char *q, uint64_t prevlf, int relaxed,
    scan_classify_fn classify)
{
	const uint64_t wmask = relaxed ? ~0ull : 0;
	const unsigned xshift = relaxed ? 2 : 1;
	struct scan_blk b;
	uint64_t n0 = scan_cls[q[64]], n1 = scan_cls[q[65]];
	uint64_t x0 = n0 >> xshift & 1, x1 = n1 >> xshift & 1;
	uint64_t x, nlf, plf, crbad, w;

	classify(q, &b);
	/* x: CR, or WSP when relaxed; a line after an empty one needs a look */
	x = b.cr | ((b.sp | b.tab) & wmask);
	nlf = b.lf >> 1 | (n0 & 1) << 63;
	plf = b.lf << 1 | prevlf;
	crbad = b.cr & ~(nlf & ~(plf & (x >> 2 | x0 << 62 | x1 << 63)));
	/* relaxed: TAB, and SP before x (CR, SP or TAB) */
	w = b.tab | (b.sp & (x >> 1 | x0 << 63));
	return crbad | (w & wmask);
}

/* scan_fill_with - classify the window starting at base (a multiple of 64). */
static inline __attribute__((always_inline)) void
scan_fill_with(struct scan *sc, size_t base, int relaxed,
    scan_classify_fn classify)
{
	const unsigned char *p = sc->p;
	const size_t len = sc->len;
	uint64_t *bits = sc->bits;
	size_t q, end, full;

	end = base + 64 * SCAN_WORDS;
	if (end > len)
		end = base + (len - base + 63) / 64 * 64;
	sc->base = base;
	sc->end = end;
	/* blocks with the two bytes after them inside the chunk */
	full = len >= 66 ? len - 66 + 1 : 0;
	if (full > end)
		full = end;
	q = base;
	if (q < full) {
		*bits++ = scan_block(p + q, q > 0 && p[q - 1] == '\n', relaxed,
		    classify);
		for (q += 64; q < full; q += 64)
			*bits++ = scan_block(p + q, p[q - 1] == '\n', relaxed,
			    classify);
	}
	/* the end of the chunk: what follows counts as CR */
	for (; q < end; q += 64) {
		unsigned char tmp[66];
		size_t n = len - q;

		memset(tmp, '\r', sizeof(tmp));
		memcpy(tmp, p + q, n < sizeof(tmp) ? n : sizeof(tmp));
		*bits++ = scan_block(tmp, q > 0 && p[q - 1] == '\n', relaxed,
		    classify) & (n >= 64 ? ~0ull : (1ull << n) - 1);
	}
}

static void
scan_fill_scalar_r(struct scan *sc, size_t base)
{
	scan_fill_with(sc, base, 1, classify_scalar);
}

static void
scan_fill_scalar_s(struct scan *sc, size_t base)
{
	scan_fill_with(sc, base, 0, classify_scalar);
}

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_X86 1

/* classify_sse42 - 16 bytes per load. */
static inline __attribute__((always_inline, target("sse4.2"))) void
classify_sse42(const unsigned char *q, struct scan_blk *b)
{
	__m128i sp = _mm_set1_epi8(' '), tab = _mm_set1_epi8('\t');
	__m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	int k;

	/* keep GCC from rebuilding the constants inside the loop */
	__asm__("" : "+x"(sp), "+x"(tab), "+x"(cr), "+x"(lf));

	b->sp = b->tab = b->cr = b->lf = 0;
	for (k = 0; k < 4; k++) {
		__m128i v = _mm_loadu_si128((const __m128i *)(q + 16 * k));

#define CLASS(c) ((uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, c)) << (16 * k))
		b->sp |= CLASS(sp);
		b->tab |= CLASS(tab);
		b->cr |= CLASS(cr);
		b->lf |= CLASS(lf);
#undef CLASS
	}
}

__attribute__((target("sse4.2"))) static void
scan_fill_sse42_r(struct scan *sc, size_t base)
{
	scan_fill_with(sc, base, 1, classify_sse42);
}

__attribute__((target("sse4.2"))) static void
scan_fill_sse42_s(struct scan *sc, size_t base)
{
	scan_fill_with(sc, base, 0, classify_sse42);
}

/* classify_avx2 - 32 bytes per load. */
static inline __attribute__((always_inline, target("avx2"))) void
classify_avx2(const unsigned char *q, struct scan_blk *b)
{
	__m256i sp = _mm256_set1_epi8(' '), tab = _mm256_set1_epi8('\t');
	__m256i cr = _mm256_set1_epi8('\r'), lf = _mm256_set1_epi8('\n');
	__m256i lo = _mm256_loadu_si256((const __m256i *)q);
	__m256i hi = _mm256_loadu_si256((const __m256i *)(q + 32));

	/* keep GCC from rebuilding the constants inside the loop */
	__asm__("" : "+x"(sp), "+x"(tab), "+x"(cr), "+x"(lf));

#define CLASS(c) ((uint64_t)(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, c)) | \
	    (uint64_t)(unsigned)_mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, c)) << 32)
	b->sp = CLASS(sp);
	b->tab = CLASS(tab);
	b->cr = CLASS(cr);
	b->lf = CLASS(lf);
#undef CLASS
}

__attribute__((target("avx2"))) static void
scan_fill_avx2_r(struct scan *sc, size_t base)
{
	scan_fill_with(sc, base, 1, classify_avx2);
}

__attribute__((target("avx2"))) static void
scan_fill_avx2_s(struct scan *sc, size_t base)
{
	scan_fill_with(sc, base, 0, classify_avx2);
}

/* ---- AVX-512 relaxed body: compaction into a staging buffer ------------ */

/*
 * Relaxed canonicalization never changes CR or LF bytes; it only deletes WSP
 * (all of a run before CRLF, all but the first of any other run), turns the
 * TAB that is kept into SP, and drops empty lines at the end.  So instead of
 * stopping at each edit, every 64-byte block is turned into a keep mask and
 * its kept bytes are compacted (vpcompressb) into a staging buffer, which the
 * sink gets in large pieces.  Only one bit of state crosses a block: "pw",
 * the previous block ended inside a WSP run, whose bytes (the first one too)
 * were all dropped because its fate was not known yet; a SP is put in front
 * of the block when the run turns out to be followed by content.
 *
 * Empty lines are copied like any other line.  When the staging buffer is
 * handed to the sink, the CRLFs that end it after the last line with content
 * are held back as bc->pending_crlf instead: in canonical output a CRLF
 * always ends a line (a CR before LF ends the line in the input, and WSP
 * deletion never makes a CR meet an LF), so "\r\n\r\n" at the end means
 * an empty last line (and a CR at the end of a full staging buffer may be
 * the start of one, so it moves on to the next).  The staging buffer starts
 * with two bytes of context: CRLF when the output so far ends at a line
 * boundary.
 *
 * At the chunk edges: a CR that is the chunk's last byte waits in
 * bc->pend_cr (CRLF or bare CR decides whether a WSP run before it is
 * trailing) and is put back in front of the next chunk; the last block is
 * padded with SP, so that a run reaching the end of the chunk stays pending.
 */
#define RX_STAGE 8192          /* staged output handed to the sink at once */
/*
 * The input is read in bursts, between which SHA-256 works on the staged
 * output for much longer, so the hardware prefetcher runs dry and each burst
 * waits on L3.  Asking for the bytes RX_AHEAD in advance lets those loads
 * complete while SHA-256 runs.  On the benchmark 2 KiB ahead did at least
 * as well as 4 or 8 KiB.
 */
#define RX_AHEAD 2048
#define RX_TARGET "avx512f,avx512bw,avx512vbmi2,bmi,bmi2,popcnt"

/* one block of 64 bytes and its classes (bit k for byte k) */
struct rx_blk {
	__m512i v;
	uint64_t w, cr, lf;   /* SP or TAB; CR; LF */
	__mmask64 tab;
};

static inline __attribute__((always_inline, target(RX_TARGET))) void
rx_classify(const unsigned char *q, struct rx_blk *b)
{
	b->v = _mm512_loadu_si512((const void *)q);
	b->tab = _mm512_cmpeq_epi8_mask(b->v, _mm512_set1_epi8('\t'));
	b->w = _cvtmask64_u64(_mm512_cmpeq_epi8_mask(b->v, _mm512_set1_epi8(' ')) | b->tab);
	b->cr = _cvtmask64_u64(_mm512_cmpeq_epi8_mask(b->v, _mm512_set1_epi8('\r')));
	b->lf = _cvtmask64_u64(_mm512_cmpeq_epi8_mask(b->v, _mm512_set1_epi8('\n')));
}

/*
 * rx_block - canonicalize block b to out; nlf: is the byte after it LF (it
 * tells whether a CR at byte 63 ends the line)?  Returns the new end of the
 * output.  Writes up to 65 bytes at out and may scribble on 64 more.
 */
static inline __attribute__((always_inline, target(RX_TARGET))) unsigned char *
rx_block(const struct rx_blk *b, uint64_t nlf, unsigned char *out, uint64_t *pw)
{
	const uint64_t w = b->w;
	uint64_t e, r, a, kept, la, keep, ins;
	__m512i v;

	/* e: CRs that end a line */
	e = b->cr & (b->lf >> 1 | nlf << 63);
	/* r: runs starting in this block; a: the byte after each that ends here */
	r = w & ~(w << 1 | *pw);
	a = (w + r) & ~w;
	/*
	 * The k-th bit of a ends the run that the k-th bit of r starts (a run
	 * reaching bit 63 has none).  A run keeps its first byte, as SP, when
	 * its next byte is not a line-ending CR.
	 */
	kept = _pdep_u64(_pext_u64(~e, a), r);
	/* the run pending from the last block: SP unless it ends the line */
	la = (w + 1) & ~w;
	ins = *pw & ((la & ~e) != 0);
	keep = ~w | kept;
	v = _mm512_mask_mov_epi8(b->v, b->tab, _mm512_set1_epi8(' '));
	*out = ' ';
	out += ins;
	_mm512_storeu_si512((void *)out, _mm512_maskz_compress_epi8(_cvtu64_mask64(keep), v));
	*pw = w >> 63;
	return out + __builtin_popcountll(keep);
}

/* rx_one - the 64 bytes at q; q[64] must be readable. */
static inline __attribute__((always_inline, target(RX_TARGET))) unsigned char *
rx_one(const unsigned char *q, unsigned char *out, uint64_t *pw)
{
	struct rx_blk b;

	rx_classify(q, &b);
	return rx_block(&b, q[64] == '\n', out, pw);
}

/* rx_tail - the last m (<= 64) bytes of the chunk at v. */
static inline __attribute__((always_inline, target(RX_TARGET))) unsigned char *
rx_tail(struct dkim_bodycanon *bc, const unsigned char *v, size_t m,
    unsigned char *out, uint64_t *pw)
{
	unsigned char pad[65];

	if (v[m - 1] == '\r') {
		bc->pend_cr = 1;
		m--;
	}
	if (m == 0)
		return out;
	memset(pad, ' ', sizeof(pad));
	memcpy(pad, v, m);
	out = rx_one(pad, out, pw);
	*pw = v[m - 1] == ' ' || v[m - 1] == '\t';
	return out;
}

/*
 * rx_flush - hand the staged output st[2, n) to the sink, all but the empty
 * lines at its end, which join bc->pending_crlf; st[0, 2) become the last two
 * bytes of the output so far.  In the middle of a chunk (mid), a CR at the
 * end may be the first half of an empty line's CRLF: it stays, as the first
 * byte of the next stage.  Returns where the next output goes.
 */
static unsigned char *
rx_flush(struct dkim_bodycanon *bc, unsigned char *st, size_t n, int mid)
{
	const int cr = mid && n > 2 && st[n - 1] == '\r';
	size_t k = n - (size_t)cr;
	unsigned t = 0;

	while (k >= 4 && st[k - 2] == '\r' && st[k - 1] == '\n' &&
	    st[k - 4] == '\r' && st[k - 3] == '\n') {
		k -= 2;
		t++;
	}
	if (k > 2) {
		emit_crlfs(bc, bc->pending_crlf);
		bc->pending_crlf = 0;
		emit(bc, (const char *)st + 2, k - 2);
	}
	bc->pending_crlf += t;
	st[0] = st[k - 2];
	st[1] = st[k - 1];
	st[2] = '\r';
	return st + 2 + cr;
}

__attribute__((target(RX_TARGET))) static void
rx_update(struct dkim_bodycanon *bc, const unsigned char *p, size_t len)
{
	unsigned char st[2 + RX_STAGE + 512];
	unsigned char *out = st + 2;
	uint64_t pw = bc->pend_wsp;
	size_t i = 0;

	if (len == 0)
		return;
	st[0] = bc->line_start ? '\r' : '\0';
	st[1] = bc->line_start ? '\n' : '\0';
	if (bc->pend_cr) {
		/* the CR held back from the last chunk comes first */
		unsigned char tmp[65];

		bc->pend_cr = 0;
		tmp[0] = '\r';
		if (len >= 64) {
			memcpy(tmp + 1, p, 64);
			out = rx_one(tmp, out, &pw);
			i = 63;
		} else {
			memcpy(tmp + 1, p, len);
			out = rx_tail(bc, tmp, len + 1, out, &pw);
			i = len;
		}
	}
	/* two blocks a turn: the second one's LF mask serves the first */
	while (len - i > 128) {
		struct rx_blk b0, b1;

		/* within the chunk only: its last RX_AHEAD bytes get no prefetch */
		if (len - i >= RX_AHEAD + 128) {
			__builtin_prefetch(p + i + RX_AHEAD);
			__builtin_prefetch(p + i + RX_AHEAD + 64);
		}
		rx_classify(p + i, &b0);
		rx_classify(p + i + 64, &b1);
		out = rx_block(&b0, b1.lf & 1, out, &pw);
		out = rx_block(&b1, p[i + 128] == '\n', out, &pw);
		i += 128;
		if ((size_t)(out - st) >= 2 + RX_STAGE)
			out = rx_flush(bc, st, (size_t)(out - st), 1);
	}
	if (len - i > 64) {
		out = rx_one(p + i, out, &pw);
		i += 64;
	}
	if (i < len)
		out = rx_tail(bc, p + i, len - i, out, &pw);
	(void)rx_flush(bc, st, (size_t)(out - st), 0);
	bc->pend_wsp = (unsigned char)pw;
	bc->line_start = st[0] == '\r' && st[1] == '\n';
}
#endif

/* scan_next - the first interesting byte at or after i, or len. */
static inline size_t
scan_next(struct scan *sc, size_t i)
{
	for (;;) {
		size_t w, nw;
		uint64_t m;

		if (i >= sc->end) {
			if (i >= sc->len)
				return sc->len;
			sc->fill(sc, i & ~(size_t)63);
		}
		w = (i - sc->base) / 64;
		nw = (sc->end - sc->base) / 64;
		m = sc->bits[w] & (~0ull << (i % 64));
		while (m == 0) {
			if (++w == nw)
				break;
			m = sc->bits[w];
		}
		if (m != 0)
			return sc->base + 64 * w + (size_t)__builtin_ctzll(m);
		i = sc->end;
	}
}

static enum dkim_simd simd_level = DKIM_SIMD_AUTO;

/* simd_best - the best scanner this CPU runs. */
static enum dkim_simd
simd_best(void)
{
#ifdef HAVE_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vbmi2") &&
	    __builtin_cpu_supports("bmi2"))
		return DKIM_SIMD_AVX512;
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
	case DKIM_SIMD_AVX512:
		return "avx512";
	default:
		return "auto";
	}
}

/* scan_filler - the window classifier of a level, for relaxed or simple. */
static scan_fill_fn
scan_filler(enum dkim_simd level, int relaxed)
{
	switch (level) {
#ifdef HAVE_X86
	case DKIM_SIMD_AVX512:  /* relaxed runs rx_update; simple scans */
	case DKIM_SIMD_AVX2:
		return relaxed ? scan_fill_avx2_r : scan_fill_avx2_s;
	case DKIM_SIMD_SSE42:
		return relaxed ? scan_fill_sse42_r : scan_fill_sse42_s;
#endif
	default:
		return relaxed ? scan_fill_scalar_r : scan_fill_scalar_s;
	}
}

/* ---- streaming body canonicalizer ------------------------------------ */

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
	struct scan sc;
	size_t i = 0, span = 0, hold = 0;
	int exact = 0, cr_here = 0;

#ifdef HAVE_X86
	if (relaxed && bc->simd == DKIM_SIMD_AVX512) {
		rx_update(bc, p, len);
		return;
	}
#endif
	/* the first window is classified when the scanner first runs */
	sc.p = p;
	sc.len = len;
	sc.base = sc.end = 0;
	sc.fill = scan_filler(bc->simd, relaxed);

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
			size_t j = scan_next(&sc, i);

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
				size_t k = i + 1, cut;
				int content, trailing;

				while (k < len && (p[k] == ' ' || p[k] == '\t'))
					k++;
				if (k + 1 >= len)
					goto state;
				/* the common cases decided without branching */
				content = p[k] != '\r';
				trailing = !content & (p[k + 1] == '\n');
				if (!(content | trailing))
					goto state;
				cut = i + (size_t)(content & (p[i] == ' '));
				emit(bc, cp + span, cut - span);
				if (content & (p[i] == '\t'))
					emit(bc, " ", 1);
				span = i = k;
				continue;
			}
		}
state:
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
