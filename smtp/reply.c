/*
 * reply.c - the SMTP server's output side: a chain of blocks that replies
 * (and, under TLS, records) are appended to and that server.c hands to one
 * uv_write as several buffers; reply lines with their CRLF; the RFC 5322
 * date used in Received:.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smtp/server_int.h"

/* Most flushes carry a few short replies; TLS records get blocks of their own size. */
#define SMTP__OBLOCK_DATA (2048 - sizeof(struct smtp__oblock))

void
smtp__ochain_add(struct smtp__ochain *c, const char *p, size_t len)
{
	struct smtp__oblock *b;
	size_t n;

	while (len > 0) {
		b = c->tail;
		if (b == NULL || b->len == b->cap) {
			size_t cap = len > SMTP__OBLOCK_DATA ? len : SMTP__OBLOCK_DATA;

			if ((b = malloc(sizeof(*b) + cap)) == NULL)
				abort();
			b->next = NULL;
			b->len = 0;
			b->cap = cap;
			if (c->tail != NULL)
				c->tail->next = b;
			else
				c->head = b;
			c->tail = b;
			c->nblocks++;
		}
		n = b->cap - b->len;
		if (n > len)
			n = len;
		memcpy(b->data + b->len, p, n);
		b->len += n;
		c->bytes += n;
		p += n;
		len -= n;
	}
}

void
smtp__ochain_move(struct smtp__ochain *dst, struct smtp__ochain *src)
{
	if (src->head == NULL)
		return;
	if (dst->tail != NULL)
		dst->tail->next = src->head;
	else
		dst->head = src->head;
	dst->tail = src->tail;
	dst->bytes += src->bytes;
	dst->nblocks += src->nblocks;
	memset(src, 0, sizeof(*src));
}

struct smtp__oblock *
smtp__ochain_take(struct smtp__ochain *c, uv_buf_t *bufs, unsigned max,
    unsigned *n)
{
	struct smtp__oblock *first = c->head, *b = c->head, *last = NULL;
	unsigned i = 0;

	while (b != NULL && i < max) {
		bufs[i++] = uv_buf_init(b->data, (unsigned int)b->len);
		c->bytes -= b->len;
		c->nblocks--;
		last = b;
		b = b->next;
	}
	*n = i;
	if (last == NULL)
		return NULL;
	last->next = NULL;
	c->head = b;
	if (b == NULL)
		c->tail = NULL;
	return first;
}

void
smtp__oblock_free_list(struct smtp__oblock *b)
{
	struct smtp__oblock *next;

	for (; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
}

void
smtp__ochain_reset(struct smtp__ochain *c)
{
	smtp__oblock_free_list(c->head);
	memset(c, 0, sizeof(*c));
}

int
smtp__reply_vadd(struct smtp__ochain *c, const char *fmt, va_list ap)
{
	char line[SMTP__CMD_LINE_MAX + 1];
	int n;

	n = vsnprintf(line, SMTP__CMD_LINE_MAX - 1, fmt, ap);
	if (n < 0)
		n = 0;
	/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF */
	if (n > SMTP__CMD_LINE_MAX - 2)
		n = SMTP__CMD_LINE_MAX - 2;
	line[n++] = '\r';
	line[n++] = '\n';
	smtp__ochain_add(c, line, (size_t)n);
	if (n >= 5 && line[0] >= '1' && line[0] <= '5' && line[1] >= '0' &&
	    line[1] <= '9' && line[2] >= '0' && line[2] <= '9')
		return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	return 0;
}

void
smtp__rfc5322_date(time_t t, char *out, size_t outlen)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char mons[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	long off;

	if (localtime_r(&t, &tm) == NULL) {
		snprintf(out, outlen, "Thu, 01 Jan 1970 00:00:00 +0000");
		return;
	}
	off = tm.tm_gmtoff / 60;
	snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld",
	    days[tm.tm_wday % 7], tm.tm_mday, mons[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    off < 0 ? '-' : '+', (off < 0 ? -off : off) / 60,
	    (off < 0 ? -off : off) % 60);
}
