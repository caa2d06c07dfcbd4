/*
 * fuzz_canon.c - libFuzzer target for the streaming body canonicalizer.
 *
 * The input is a message body; its first bytes also choose where the body is
 * cut into chunks.  For both body canonicalizations and for every scanner
 * level (scalar, SSE4.2, AVX2, AVX-512) the chunks go through struct
 * dkim_bodycanon into a sink that appends to a buffer, and the result must
 * equal what the whole-buffer reference canonicalizer dkim_canon_body_ref()
 * produces; any difference is an abort().  Each chunk is copied into a
 * buffer of its exact size, so a scanner reading past the end of what it was
 * given trips ASan.
 * Short inputs are also fed split at every position, and byte by byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dkim/dkim.h"

#define MAX_SPLITS 16     /* chunk boundaries taken from the input */
#ifndef SHORT_INPUT
#define SHORT_INPUT 64    /* bodies tried at every split position */
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct sinkbuf {
	char *p;
	size_t len, cap;
	size_t calls;
};

static const enum dkim_simd simd_levels[] = {
	DKIM_SIMD_SCALAR, DKIM_SIMD_SSE42, DKIM_SIMD_AVX2, DKIM_SIMD_AVX512,
};

static const enum dkim_canon canons[] = {
	DKIM_CANON_SIMPLE, DKIM_CANON_RELAXED,
};

/* sink_append - the canonicalizer's sink: append to a growable buffer */
static void
sink_append(void *arg, const char *p, size_t len)
{
	struct sinkbuf *sb = arg;
	char *np;
	size_t ncap;

	sb->calls++;
	if (len == 0)
		return;
	if (sb->len + len > sb->cap) {
		ncap = sb->cap ? sb->cap : 256;
		while (ncap < sb->len + len)
			ncap *= 2;
		if ((np = realloc(sb->p, ncap)) == NULL)
			abort();
		sb->p = np;
		sb->cap = ncap;
	}
	memcpy(sb->p + sb->len, p, len);
	sb->len += len;
}

/* feed_exact - hand one chunk to the canonicalizer from an exact-size copy */
static void
feed_exact(struct dkim_bodycanon *bc, const char *p, size_t len)
{
	char *copy;

	if (len == 0) {
		/* A zero-length update must be harmless, with or without data. */
		dkim_bodycanon_update(bc, p, 0);
		return;
	}
	if ((copy = malloc(len)) == NULL)
		abort();
	memcpy(copy, p, len);
	dkim_bodycanon_update(bc, copy, len);
	free(copy);
}

/* report - print what differed, then abort so libFuzzer keeps the input */
static void
report(const char *what, enum dkim_canon canon, enum dkim_simd level,
    const char *ref, size_t reflen, const struct sinkbuf *got,
    uint64_t out_len)
{
	size_t i, n;

	n = reflen < got->len ? reflen : got->len;
	for (i = 0; i < n && ref[i] == got->p[i]; i++)
		;
	fprintf(stderr, "fuzz_canon: %s: canon=%s simd=%s: ref %zu bytes, "
	    "got %zu bytes (out_len %llu), first difference at %zu\n", what,
	    canon == DKIM_CANON_SIMPLE ? "simple" : "relaxed",
	    dkim_simd_name(level), reflen, got->len,
	    (unsigned long long)out_len, i);
	abort();
}

/*
 * run_chunks - canonicalize body cut at cuts[0..ncuts) (ascending offsets)
 * and compare with the reference output.
 */
static void
run_chunks(const char *what, enum dkim_canon canon, enum dkim_simd level,
    const char *body, size_t len, const size_t *cuts, size_t ncuts,
    const char *ref, size_t reflen)
{
	struct dkim_bodycanon bc;
	struct sinkbuf sb = { 0 };
	size_t i, prev = 0;

	dkim_bodycanon_init(&bc, canon, sink_append, &sb);
	for (i = 0; i < ncuts; i++) {
		feed_exact(&bc, body + prev, cuts[i] - prev);
		prev = cuts[i];
	}
	feed_exact(&bc, body + prev, len - prev);
	dkim_bodycanon_final(&bc);

	if (sb.len != reflen || (reflen && memcmp(sb.p, ref, reflen) != 0) ||
	    bc.out_len != reflen)
		report(what, canon, level, ref, reflen, &sb, bc.out_len);
	free(sb.p);
}

/* cmp_size - qsort comparator for size_t */
static int
cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t cuts[MAX_SPLITS], ncuts, i, c, l, hdr, len, reflen, one[1];
	const char *body;
	char *ref;

	/*
	 * Byte 0: number of cuts (low 4 bits).  Then two bytes per cut give an
	 * offset into the body.  The body is the rest, so a seed that is "a
	 * body" with a leading 0x00 is fed in one piece.
	 */
	if (size == 0)
		return 0;
	ncuts = data[0] & 0x0f;
	hdr = 1 + 2 * ncuts;
	if (hdr > size) {
		ncuts = 0;
		hdr = 1;
	}
	body = (const char *)data + hdr;
	len = size - hdr;
	for (i = 0; i < ncuts; i++)
		cuts[i] = len ? ((size_t)data[1 + 2 * i] |
		    (size_t)data[2 + 2 * i] << 8) % (len + 1) : 0;
	qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

	for (c = 0; c < sizeof(canons) / sizeof(canons[0]); c++) {
		/*
		 * Inputs are small, so NULL can't be OOM: either the output
		 * is empty and the oracle chose not to allocate, or it broke.
		 */
		reflen = (size_t)-1;
		ref = dkim_canon_body_ref(canons[c], body, len, &reflen);
		if (ref == NULL && reflen != 0) {
			fprintf(stderr, "fuzz_canon: dkim_canon_body_ref "
			    "returned NULL for %zu bytes\n", len);
			abort();
		}
		for (l = 0; l < sizeof(simd_levels) / sizeof(simd_levels[0]);
		    l++) {
			enum dkim_simd got = dkim_simd_set(simd_levels[l]);

			run_chunks("chunks", canons[c], got, body, len, cuts,
			    ncuts, ref, reflen);
			if (len > SHORT_INPUT)
				continue;
			for (i = 0; i <= len; i++) {
				one[0] = i;
				run_chunks("split", canons[c], got, body, len,
				    one, 1, ref, reflen);
			}
			/* One byte per update: every state carried over. */
			{
				size_t bytes[SHORT_INPUT];

				for (i = 0; i + 1 < len; i++)
					bytes[i] = i + 1;
				run_chunks("bytewise", canons[c], got, body,
				    len, bytes, len ? len - 1 : 0, ref,
				    reflen);
			}
		}
		free(ref);
	}
	dkim_simd_set(DKIM_SIMD_AUTO);
	return 0;
}
