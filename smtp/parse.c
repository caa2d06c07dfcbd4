/*
 * parse.c - the byte-level parsers of the SMTP server: the resumable DATA
 * and BDAT message parser (where <CRLF>.<CRLF>, dot-stuffing, bare CR and
 * bare LF are decided), and the command-line pieces (verb and arguments,
 * RFC 5321 paths, MAIL/RCPT parameters, xtext, BDAT sizes).
 *
 * Nothing here does I/O or allocates: server.c hands in slices of its read
 * buffer and gets decisions back, which is also what the unit tests do.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "queue/queue.h"
#include "smtp/server_int.h"

/* ---- DATA and BDAT ------------------------------------------------------- */

void
smtp__data_init(struct smtp__data *d, int raw, enum smtp_bare_newline bare)
{
	memset(d, 0, sizeof(*d));
	d->state = SMTP__D_BOL;
	d->raw = raw;
	d->bare = bare;
}

/* data_out - pass n message octets on. */
static void
data_out(struct smtp__data *d, smtp__data_out_cb out, void *arg,
    const char *p, size_t n)
{
	if (n == 0)
		return;
	d->out_len += n;
	out(arg, p, n);
}

/* data_count - n more octets on the current text line. */
static void
data_count(struct smtp__data *d, size_t n)
{
	d->line_len += n;
	/* RFC 5321 4.5.3.1.6: 1000 octets with the CRLF, the stuffing dot not counted */
	if (d->line_len > SMTP__TEXT_LINE_MAX)
		d->flags |= SMTP__DATA_F_LONG;
}

/*
 * data_bare_pending - a CR held back from an earlier input (or after a
 * leading dot) turned out to be bare: emit it as the policy says.
 */
static void
data_bare_pending(struct smtp__data *d, smtp__data_out_cb out, void *arg)
{
	if (d->bare == SMTP_BARE_NORMALIZE) {
		data_out(d, out, arg, "\r\n", 2);
		d->line_len = 0;
		return;
	}
	if (d->bare == SMTP_BARE_REJECT)
		d->flags |= SMTP__DATA_F_BARE;
	data_out(d, out, arg, "\r", 1);
	data_count(d, 1);
}

/*
 * smtp__data_feed - the parser proper.  `run` marks the start of input
 * octets that pass through unchanged; it is flushed only where something is
 * dropped (a stuffing dot) or replaced (a normalized newline) or held back
 * (a CR at the end of the input), so a read of many lines costs one or two
 * calls of out().  A bare newline leaves the parser inside the line (never
 * at its start): a dot after it is text and cannot make a terminator.
 */
size_t
smtp__data_feed(struct smtp__data *d, const char *buf, size_t len,
    smtp__data_out_cb out, void *arg)
{
	const char *p = buf, *end = buf + len, *run = buf, *q;

	while (p < end) {
		switch (d->state) {
		case SMTP__D_BOL:
			if (!d->raw && *p == '.') {
				/* RFC 5321 4.5.2: drop the leading dot */
				data_out(d, out, arg, run, (size_t)(p - run));
				run = ++p;
				d->state = SMTP__D_DOT;
				break;
			}
			d->state = SMTP__D_TEXT;
			/* FALLTHROUGH */
		case SMTP__D_TEXT:
			for (q = p; q < end && *q != '\r' && *q != '\n'; q++)
				;
			data_count(d, (size_t)(q - p));
			p = q;
			if (p == end)
				break;
			if (*p == '\r' && p + 1 == end) {
				/* CR at the end of the input: decide with the next byte */
				data_out(d, out, arg, run, (size_t)(p - run));
				run = ++p;
				d->state = SMTP__D_CR;
				break;
			}
			if (*p == '\r' && p[1] == '\n') {
				p += 2;
				d->line_len = 0;
				d->state = SMTP__D_BOL;
				break;
			}
			/* a bare CR or a bare LF, inside the input */
			if (d->bare == SMTP_BARE_NORMALIZE) {
				data_out(d, out, arg, run, (size_t)(p - run));
				data_out(d, out, arg, "\r\n", 2);
				run = ++p;
				d->line_len = 0;
			} else {
				if (d->bare == SMTP_BARE_REJECT)
					d->flags |= SMTP__DATA_F_BARE;
				data_count(d, 1);
				p++;
			}
			break;
		case SMTP__D_CR:
			/* run == p here: pending states only begin an input */
			if (*p == '\n') {
				data_out(d, out, arg, "\r\n", 2);
				run = ++p;
				d->line_len = 0;
				d->state = SMTP__D_BOL;
			} else {
				data_bare_pending(d, out, arg);
				d->state = SMTP__D_TEXT;
			}
			break;
		case SMTP__D_DOT:
			if (*p == '\r') {
				if (p + 1 < end && p[1] == '\n') {
					d->state = SMTP__D_DONE;
					return (size_t)(p + 2 - buf);
				}
				if (p + 1 < end) {
					/* "." CR x: the dot was stuffing, the CR is bare */
					d->state = SMTP__D_TEXT;
					break;
				}
				run = ++p;
				d->state = SMTP__D_DOTCR;
				break;
			}
			/* the dot was stuffing: what follows is text */
			d->state = SMTP__D_TEXT;
			break;
		case SMTP__D_DOTCR:
			if (*p == '\n') {
				d->state = SMTP__D_DONE;
				return (size_t)(p + 1 - buf);
			}
			data_bare_pending(d, out, arg);
			d->state = SMTP__D_TEXT;
			break;
		case SMTP__D_DONE:
			return (size_t)(p - buf);
		}
	}
	data_out(d, out, arg, run, (size_t)(p - run));
	return len;
}

void
smtp__data_end(struct smtp__data *d, smtp__data_out_cb out, void *arg)
{
	if (d->state == SMTP__D_CR) {
		data_bare_pending(d, out, arg);
		d->state = SMTP__D_TEXT;
	}
}

/* ---- command lines -------------------------------------------------------- */

void
smtp__cmd_split(const char *line, size_t len, struct smtp__slice *verb,
    struct smtp__slice *args)
{
	size_t i = 0, e;

	while (i < len && line[i] != ' ')
		i++;
	verb->p = line;
	verb->len = i;
	while (i < len && line[i] == ' ')
		i++;
	for (e = len; e > i && (line[e - 1] == ' ' || line[e - 1] == '\t'); e--)
		;
	args->p = line + i;
	args->len = e - i;
}

int
smtp__slice_eq(struct smtp__slice s, const char *z)
{
	size_t n = strlen(z);

	return s.len == n && strncasecmp(s.p, z, n) == 0;
}

size_t
smtp__cmd_line_max(const char *line, size_t len)
{
	if (len >= 4 && (strncasecmp(line, "MAIL", 4) == 0 ||
	    strncasecmp(line, "RCPT", 4) == 0))
		return SMTP__DSN_LINE_MAX;
	if (len >= 4 && strncasecmp(line, "AUTH", 4) == 0)
		return SMTP__SASL_LINE_MAX;
	return SMTP__CMD_LINE_MAX;
}

/* ---- paths (RFC 5321 4.1.2, RFC 6531 3.3) -------------------------------- */

static int
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* is_atext - RFC 5322 atext */
static int
is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* utf8_ok - well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static int
utf8_ok(const unsigned char *p, size_t n)
{
	size_t i = 0, k, need;
	unsigned long cp;

	while (i < n) {
		unsigned char c = p[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else
			return 0;
		for (k = 1; k <= need; k++) {
			if (i + k >= n || (p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		i += need + 1;
	}
	return 1;
}

/*
 * domain_len - a Domain (sub-domain *("." sub-domain)) at p; non-ASCII
 * octets count as letters (U-labels, RFC 6531).  Returns the octets it
 * spans (the caller checks what follows), or -1.
 */
static long
domain_len(const char *p, size_t len, int *utf8)
{
	size_t i = 0, lab = 0;
	unsigned char c, prev = 0;

	for (;;) {
		c = i < len ? (unsigned char)p[i] : 0;
		if (is_alpha(c) || is_digit(c) || c >= 0x80) {
			if (c >= 0x80)
				*utf8 = 1;
			lab++;
		} else if (c == '-' && lab > 0) {
			lab++;
		} else if (c == '.' && lab > 0 && prev != '-') {
			lab = 0;
		} else
			break;
		if (lab > 63)
			return -1;
		prev = c;
		i++;
	}
	if (i == 0 || lab == 0 || prev == '-' || i > SMTP__DOMAIN_MAX)
		return -1;
	return (long)i;
}

/* addr_literal_len - "[" IPv4 / "IPv6:" IPv6 "]" at p; octets or -1. */
static long
addr_literal_len(const char *p, size_t len)
{
	char tmp[64];
	unsigned char a[16];
	size_t i, n;

	if (len < 2 || p[0] != '[')
		return -1;
	for (i = 1; i < len && p[i] != ']'; i++)
		;
	if (i >= len)
		return -1;
	n = i - 1;
	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, p + 1, n);
	tmp[n] = '\0';
	if (strncasecmp(tmp, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, tmp + 5, a) != 1)
			return -1;
	} else if (inet_pton(AF_INET, tmp, a) != 1)
		return -1;
	return (long)(i + 1);
}

long
smtp__parse_path(const char *p, size_t len, int flags, char *out,
    size_t outlen, int *utf8)
{
	size_t i, start, n;
	long k;
	int u = 0, prev_dot;

	*utf8 = 0;
	if (len < 2 || p[0] != '<')
		return -1;
	if (p[1] == '>') {
		if (!(flags & SMTP__PATH_NULL_OK) || outlen < 1)
			return -1;
		out[0] = '\0';
		return 2;
	}
	i = 1;
	/* A-d-l: a source route, accepted and ignored (RFC 5321 4.1.2, C) */
	if (p[i] == '@') {
		for (;;) {
			i++;
			if ((k = domain_len(p + i, len - i, &u)) < 0)
				return -1;
			i += (size_t)k;
			if (i + 1 < len && p[i] == ',' && p[i + 1] == '@') {
				i++;
				continue;
			}
			if (i < len && p[i] == ':') {
				i++;
				break;
			}
			return -1;
		}
	}
	start = i;
	if (i < len && p[i] == '"') {
		/* Quoted-string: qtextSMTP and quoted-pairSMTP */
		for (i++; i < len && p[i] != '"'; i++) {
			unsigned char c = (unsigned char)p[i];

			if (c == '\\') {
				if (i + 1 >= len || p[i + 1] < 32 || p[i + 1] > 126)
					return -1;
				i++;
			} else if (c >= 0x80)
				u = 1;
			else if (c < 32 || c == 127)
				return -1;
		}
		if (i >= len || i == start + 1)
			return -1;
		i++;
	} else {
		/* Dot-string */
		for (prev_dot = 1; i < len && p[i] != '@' && p[i] != '>'; i++) {
			unsigned char c = (unsigned char)p[i];

			if (c == '.') {
				if (prev_dot)
					return -1;
				prev_dot = 1;
			} else if (is_atext(c) || c >= 0x80) {
				if (c >= 0x80)
					u = 1;
				prev_dot = 0;
			} else
				return -1;
		}
		if (prev_dot)
			return -1;
	}
	/* a relay needs a domain: "<postmaster>" alone cannot be routed */
	if (i >= len || p[i] != '@')
		return -1;
	i++;
	if (i < len && p[i] == '[')
		k = addr_literal_len(p + i, len - i);
	else
		k = domain_len(p + i, len - i, &u);
	if (k < 0)
		return -1;
	i += (size_t)k;
	if (i >= len || p[i] != '>')
		return -1;
	n = i - start;
	if (n > SMTP__PATH_MAX || n + 1 > outlen)
		return -1;
	if (u && !utf8_ok((const unsigned char *)p + start, n))
		return -1;
	memcpy(out, p + start, n);
	out[n] = '\0';
	*utf8 = u;
	return (long)(i + 1);
}

/* ---- parameters (esmtp-param, RFC 5321 4.1.2) ------------------------------ */

long
smtp__xtext_decode(const char *p, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '+') {
			const char *h, *l;

			if (i + 2 >= len)
				return -1;
			if ((h = strchr(hex, p[i + 1])) == NULL || p[i + 1] == '\0' ||
			    (l = strchr(hex, p[i + 2])) == NULL || p[i + 2] == '\0')
				return -1;
			c = (unsigned char)(((h - hex) << 4) | (l - hex));
			i += 2;
		} else if (c < 33 || c > 126 || c == '=')
			return -1;
		/* the envelope is "key value" lines: no controls */
		if (c < 32 || c > 126)
			return -1;
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)c;
	}
	if (o >= outlen)
		return -1;
	out[o] = '\0';
	return (long)o;
}

/* param_next - the next "KEY[=VALUE]" token; 0 at the end. */
static int
param_next(const char **pp, const char *end, struct smtp__slice *key,
    struct smtp__slice *val, int *has_val)
{
	const char *p = *pp, *t;

	while (p < end && *p == ' ')
		p++;
	if (p == end)
		return 0;
	for (t = p; t < end && *t != ' ' && *t != '='; t++)
		;
	key->p = p;
	key->len = (size_t)(t - p);
	*has_val = 0;
	val->p = t;
	val->len = 0;
	if (t < end && *t == '=') {
		*has_val = 1;
		val->p = ++t;
		while (t < end && *t != ' ')
			t++;
		val->len = (size_t)(t - val->p);
	}
	*pp = t;
	return 1;
}

/* esmtp_keyword_ok - RFC 5321 esmtp-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static int
esmtp_keyword_ok(struct smtp__slice k)
{
	size_t i;

	if (k.len == 0 || k.len > 64)
		return 0;
	for (i = 0; i < k.len; i++) {
		unsigned char c = (unsigned char)k.p[i];

		if (!is_alpha(c) && !is_digit(c) && !(c == '-' && i > 0))
			return 0;
	}
	return 1;
}

/* esmtp_value_ok - esmtp-value: 1*(%d33-60 / %d62-126) */
static int
esmtp_value_ok(struct smtp__slice v)
{
	size_t i;

	if (v.len == 0)
		return 0;
	for (i = 0; i < v.len; i++)
		if (v.p[i] < 33 || v.p[i] > 126 || v.p[i] == '=')
			return 0;
	return 1;
}

#define PERR(code, ...) do {                                              \
	snprintf(err, errlen, __VA_ARGS__);                               \
	return (code);                                                    \
} while (0)

int
smtp__parse_mail_params(const char *p, size_t len,
    struct smtp__mail_params *mp, char *err, size_t errlen)
{
	const char *end = p + len;
	struct smtp__slice k, v;
	int hv, seen_body = 0, seen_ret = 0, seen_auth = 0;

	memset(mp, 0, sizeof(*mp));
	while (param_next(&p, end, &k, &v, &hv)) {
		if (!esmtp_keyword_ok(k) || (hv && !esmtp_value_ok(v)))
			PERR(501, "501 5.5.4 Bad parameter syntax: %.*s", (int)(k.len > 64 ? 64 : k.len), k.p);
		if (smtp__slice_eq(k, "SIZE")) {
			uint64_t n = 0;
			size_t i;

			if (mp->has_size || !hv || v.len > 20)
				PERR(501, "501 5.5.4 Bad SIZE parameter");
			for (i = 0; i < v.len; i++) {
				if (!is_digit((unsigned char)v.p[i]) ||
				    n > (UINT64_MAX - 9) / 10)
					PERR(501, "501 5.5.4 Bad SIZE parameter");
				n = n * 10 + (uint64_t)(v.p[i] - '0');
			}
			mp->has_size = 1;
			mp->size = n;
		} else if (smtp__slice_eq(k, "BODY")) {
			if (seen_body++ || !hv)
				PERR(501, "501 5.5.4 Bad BODY parameter");
			if (smtp__slice_eq(v, "8BITMIME"))
				mp->body_8bit = 1;
			else if (smtp__slice_eq(v, "7BIT"))
				mp->body_8bit = 0;
			else
				PERR(555, "555 5.5.4 Unsupported option: BODY=%.*s", (int)(v.len > 32 ? 32 : v.len), v.p);
		} else if (smtp__slice_eq(k, "SMTPUTF8")) {
			if (mp->smtputf8 || hv)
				PERR(501, "501 5.5.4 Bad SMTPUTF8 parameter");
			mp->smtputf8 = 1;
		} else if (smtp__slice_eq(k, "RET")) {
			if (seen_ret++ || !hv)
				PERR(501, "501 5.5.4 Bad RET parameter");
			if (smtp__slice_eq(v, "FULL"))
				mp->ret = QUEUE_RET_FULL;
			else if (smtp__slice_eq(v, "HDRS"))
				mp->ret = QUEUE_RET_HDRS;
			else
				PERR(501, "501 5.5.4 Bad RET parameter");
		} else if (smtp__slice_eq(k, "ENVID")) {
			if (mp->has_envid || !hv || v.len > 3 * SMTP__ENVID_MAX ||
			    smtp__xtext_decode(v.p, v.len, mp->envid, sizeof(mp->envid)) <= 0)
				PERR(501, "501 5.5.4 Bad ENVID parameter");
			mp->has_envid = 1;
		} else if (smtp__slice_eq(k, "AUTH")) {
			/* RFC 4954 5: noted by trusted relays; Signet does not use it */
			char tmp[SMTP__PATH_MAX * 3 + 1];

			if (seen_auth++ || !hv || (!(v.len == 2 && memcmp(v.p, "<>", 2) == 0) &&
			    smtp__xtext_decode(v.p, v.len, tmp, sizeof(tmp)) < 0))
				PERR(501, "501 5.5.4 Bad AUTH parameter");
		} else
			PERR(555, "555 5.5.4 Unsupported option: %.*s", (int)(k.len > 64 ? 64 : k.len), k.p);
	}
	return 0;
}

int
smtp__parse_rcpt_params(const char *p, size_t len,
    struct smtp__rcpt_params *rp, char *err, size_t errlen)
{
	const char *end = p + len;
	struct smtp__slice k, v;
	int hv, seen_notify = 0;

	memset(rp, 0, sizeof(*rp));
	while (param_next(&p, end, &k, &v, &hv)) {
		if (!esmtp_keyword_ok(k) || (hv && !esmtp_value_ok(v)))
			PERR(501, "501 5.5.4 Bad parameter syntax: %.*s", (int)(k.len > 64 ? 64 : k.len), k.p);
		if (smtp__slice_eq(k, "NOTIFY")) {
			const char *a = v.p, *e = v.p + v.len, *b;

			if (seen_notify++ || !hv)
				PERR(501, "501 5.5.4 Bad NOTIFY parameter");
			/* RFC 3461 4.1: NEVER, or a list of SUCCESS, FAILURE, DELAY */
			while (a < e) {
				struct smtp__slice w;
				int bit;

				for (b = a; b < e && *b != ','; b++)
					;
				w.p = a;
				w.len = (size_t)(b - a);
				if (smtp__slice_eq(w, "NEVER"))
					bit = QUEUE_NOTIFY_NEVER;
				else if (smtp__slice_eq(w, "SUCCESS"))
					bit = QUEUE_NOTIFY_SUCCESS;
				else if (smtp__slice_eq(w, "FAILURE"))
					bit = QUEUE_NOTIFY_FAILURE;
				else if (smtp__slice_eq(w, "DELAY"))
					bit = QUEUE_NOTIFY_DELAY;
				else
					PERR(501, "501 5.5.4 Bad NOTIFY parameter");
				if (rp->notify & bit)
					PERR(501, "501 5.5.4 Bad NOTIFY parameter");
				rp->notify |= bit;
				a = b < e ? b + 1 : b;
				if (b < e && a == e)
					PERR(501, "501 5.5.4 Bad NOTIFY parameter");
			}
			if ((rp->notify & QUEUE_NOTIFY_NEVER) && rp->notify != QUEUE_NOTIFY_NEVER)
				PERR(501, "501 5.5.4 Bad NOTIFY parameter");
		} else if (smtp__slice_eq(k, "ORCPT")) {
			/* RFC 3461 4.2: addr-type ";" xtext */
			const char *semi = memchr(v.p, ';', v.len);
			size_t tl, i;
			long n;

			if (rp->has_orcpt || !hv || semi == NULL || semi == v.p ||
			    v.len > 3 * SMTP__ORCPT_MAX)
				PERR(501, "501 5.5.4 Bad ORCPT parameter");
			tl = (size_t)(semi - v.p);
			if (tl > 15)
				PERR(501, "501 5.5.4 Bad ORCPT parameter");
			for (i = 0; i < tl; i++)
				if (!is_alpha((unsigned char)v.p[i]) &&
				    !is_digit((unsigned char)v.p[i]) && v.p[i] != '-')
					PERR(501, "501 5.5.4 Bad ORCPT parameter");
			memcpy(rp->orcpt, v.p, tl + 1);
			n = smtp__xtext_decode(semi + 1, v.len - tl - 1, rp->orcpt + tl + 1,
			    sizeof(rp->orcpt) - tl - 1);
			if (n <= 0 || n > SMTP__ORCPT_MAX)
				PERR(501, "501 5.5.4 Bad ORCPT parameter");
			rp->has_orcpt = 1;
		} else
			PERR(555, "555 5.5.4 Unsupported option: %.*s", (int)(k.len > 64 ? 64 : k.len), k.p);
	}
	return 0;
}

int
smtp__parse_bdat(const char *p, size_t len, uint64_t *size, int *last)
{
	size_t i = 0;
	uint64_t n = 0;
	struct smtp__slice w;

	*last = 0;
	if (len == 0 || !is_digit((unsigned char)p[0]))
		return -1;
	for (; i < len && is_digit((unsigned char)p[i]); i++) {
		if (i >= 19)
			return -1;
		n = n * 10 + (uint64_t)(p[i] - '0');
	}
	*size = n;
	if (i == len)
		return 0;
	if (p[i] != ' ')
		return -1;
	while (i < len && p[i] == ' ')
		i++;
	w.p = p + i;
	w.len = len - i;
	while (w.len > 0 && w.p[w.len - 1] == ' ')
		w.len--;
	if (!smtp__slice_eq(w, "LAST"))
		return -1;
	*last = 1;
	return 0;
}

int
smtp__helo_ok(const char *p, size_t len)
{
	size_t i;

	if (len == 0 || len > SMTP__DOMAIN_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (p[i] < 33 || p[i] > 126)
			return 0;
	return 1;
}
