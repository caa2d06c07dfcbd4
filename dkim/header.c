/*
 * header.c - the header block parser shared by the signer and the verifier.
 *
 * Bytes are appended as they arrive, up to DKIM_HEADER_MAX; a line that does
 * not start with WSP begins a new field (RFC 5322 2.2.3 folding), the empty
 * line ends the block.  Only CRLF ends a line: a bare CR or LF is a byte of
 * the field like any other, which is also how the verifiers we test against
 * read it.  The parser keeps offsets, not copies, so the field table stays
 * valid while the buffer grows.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dkim/dkim_int.h"

void
dkim__hdrs_init(struct dkim__hdrs *h)
{
	memset(h, 0, sizeof(*h));
}

void
dkim__hdrs_reset(struct dkim__hdrs *h)
{
	free(h->buf);
	free(h->f);
	memset(h, 0, sizeof(*h));
}

/* hdr_grow - room for n more bytes in buf. */
static int
hdr_grow(struct dkim__hdrs *h, size_t n)
{
	size_t cap;
	char *nb;

	if (h->len + n <= h->cap)
		return 0;
	if (h->len + n > DKIM_HEADER_MAX)
		return DKIM_EHEADER_TOO_BIG;
	cap = h->cap ? h->cap : 4096;
	while (cap < h->len + n)
		cap *= 2;
	if (cap > DKIM_HEADER_MAX)
		cap = DKIM_HEADER_MAX;
	if ((nb = realloc(h->buf, cap)) == NULL)
		return DKIM_ENOMEM;
	h->buf = nb;
	h->cap = cap;
	return 0;
}

/* hdr_close_field - the last open field ends at `end` (before its CRLF). */
static void
hdr_close_field(struct dkim__hdrs *h, size_t end)
{
	struct dkim__field *f;

	if (h->nf == 0)
		return;
	f = &h->f[h->nf - 1];
	if (f->len == 0)
		f->len = end - f->off;
}

/* hdr_open_field - a new field starts at line_start; find its name. */
static int
hdr_open_field(struct dkim__hdrs *h, size_t end)
{
	const char *line = h->buf + h->line_start;
	size_t n = end - h->line_start, colon, nl;
	struct dkim__field *f;

	for (colon = 0; colon < n && line[colon] != ':'; colon++)
		;
	if (colon == n)
		return DKIM_EBADHEADER;
	nl = colon;
	while (nl > 0 && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
		nl--;
	if (nl == 0)
		return DKIM_EBADHEADER;
	if (h->nf == h->fcap) {
		size_t cap = h->fcap ? h->fcap * 2 : 32;
		struct dkim__field *nf = realloc(h->f, cap * sizeof(*nf));

		if (nf == NULL)
			return DKIM_ENOMEM;
		h->f = nf;
		h->fcap = cap;
	}
	f = &h->f[h->nf++];
	f->off = h->line_start;
	f->len = 0;
	f->namelen = nl;
	f->used = 0;
	return 0;
}

/* hdr_line - one complete line [line_start, end) without its CRLF. */
static int
hdr_line(struct dkim__hdrs *h, size_t end)
{
	char c;

	if (end == h->line_start) {
		if (h->nf > 0)
			hdr_close_field(h, h->line_start - 2);
		h->done = 1;
		return 0;
	}
	c = h->buf[h->line_start];
	if (c == ' ' || c == '\t') {
		/* folded continuation of the open field */
		if (h->nf == 0)
			return DKIM_EBADHEADER;
		return 0;
	}
	/* the previous field ended before this line's start (minus CRLF) */
	if (h->nf > 0)
		hdr_close_field(h, h->line_start - 2);
	return hdr_open_field(h, end);
}

long
dkim__hdr_feed(struct dkim__hdrs *h, const char *p, size_t len)
{
	size_t i = 0;
	int rc;

	if (h->err)
		return h->err;
	if (h->done)
		return 0;
	while (i < len) {
		const char *lf = memchr(p + i, '\n', len - i);
		size_t n = lf == NULL ? len - i : (size_t)(lf - (p + i)) + 1;

		if ((rc = hdr_grow(h, n)) != 0)
			goto fail;
		memcpy(h->buf + h->len, p + i, n);
		h->len += n;
		i += n;
		if (lf == NULL)
			break;
		/* a line ends only at CRLF */
		if (h->len - h->line_start < 2 || h->buf[h->len - 2] != '\r')
			continue;
		if ((rc = hdr_line(h, h->len - 2)) != 0)
			goto fail;
		h->line_start = h->len;
		if (h->done) {
			/* the empty line is not part of any field */
			h->len -= 2;
			return (long)i;
		}
	}
	return (long)i;
fail:
	h->err = rc;
	return rc;
}

int
dkim__hdr_end(struct dkim__hdrs *h)
{
	int rc;

	if (h->err)
		return h->err;
	if (h->done)
		return 0;
	/* no empty line: a partial last line still counts as a header line */
	if (h->len > h->line_start) {
		size_t end = h->len;

		if ((rc = hdr_line(h, end)) != 0) {
			h->err = rc;
			return rc;
		}
		hdr_close_field(h, end);
	} else
		hdr_close_field(h, h->len >= 2 ? h->len - 2 : h->len);
	h->done = 1;
	return 0;
}

int
dkim__hdr_name_eq(const struct dkim__hdrs *h, size_t i, const char *name,
    size_t namelen)
{
	const struct dkim__field *f = &h->f[i];

	return f->namelen == namelen &&
	    strncasecmp(h->buf + f->off, name, namelen) == 0;
}
