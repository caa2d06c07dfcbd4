/*
 * envelope.c - the small pieces of the spool: the 'E' record codec, queue
 * ids, and the allocation and logging helpers the other files of queue/
 * share.
 *
 * The envelope is text, one "key value\n" line per field and one
 * "rcpt ADDR [notify=..] [orcpt=..]" line per recipient, so that
 * `signetctl queue show` and a human with `less` can read it.  Values are
 * %-encoded (bytes below 0x21, '%' and 0x7f become %XX; UTF-8 stays as it
 * is), which keeps every value free of spaces and newlines whatever the
 * client sent.  Decoding is strict: an unknown key, a repeated key or a bad
 * escape makes the record invalid and the file corrupt.
 *
 * A queue id is 18 uppercase hex digits: 10 of unix seconds, 5 of
 * microseconds and 3 of a counter.  The three fields come from one 64-bit
 * value (microseconds since the epoch << 12 | counter) advanced atomically,
 * so ids are unique and strictly increasing within the process, on every
 * thread, even if the clock steps back.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "queue/queue_int.h"

/* ---- shared helpers ------------------------------------------------------ */

void *
queue__xmalloc(size_t n)
{
	void *p = malloc(n != 0 ? n : 1);

	if (p == NULL) {
		fputs("queue: out of memory\n", stderr);
		abort();
	}
	return p;
}

char *
queue__xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;

	return memcpy(queue__xmalloc(n), s, n);
}

void
queue__logf(void (*log)(void *, int, const char *), void *arg, int prio,
    const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log(arg, prio, msg);
}

/* ---- encoding ------------------------------------------------------------ */

struct ebuf {
	char *p;
	size_t len, cap;
	int err;
};

/* ebuf_add - append n bytes; on OOM remember it and ignore later calls. */
static void
ebuf_add(struct ebuf *b, const char *p, size_t n)
{
	if (b->err)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap != 0 ? b->cap : 256;
		char *nb;

		while (cap < b->len + n + 1)
			cap *= 2;
		if ((nb = realloc(b->p, cap)) == NULL) {
			b->err = 1;
			return;
		}
		b->p = nb;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* ebuf_adds - append a C string. */
static void
ebuf_adds(struct ebuf *b, const char *s)
{
	ebuf_add(b, s, strlen(s));
}

/* needs_escape - bytes that would break the line format, and '%' itself. */
static int
needs_escape(unsigned char c)
{
	return c < 0x21 || c == '%' || c == 0x7f;
}

/* ebuf_addesc - append s %-encoded. */
static void
ebuf_addesc(struct ebuf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *run = s;
	char e[3];

	for (; *s != '\0'; s++) {
		if (!needs_escape((unsigned char)*s))
			continue;
		ebuf_add(b, run, (size_t)(s - run));
		e[0] = '%';
		e[1] = hex[(unsigned char)*s >> 4];
		e[2] = hex[(unsigned char)*s & 15];
		ebuf_add(b, e, 3);
		run = s + 1;
	}
	ebuf_add(b, run, (size_t)(s - run));
}

/* ebuf_field - one "key value\n" line; a NULL value writes nothing. */
static void
ebuf_field(struct ebuf *b, const char *key, const char *val)
{
	if (val == NULL)
		return;
	ebuf_adds(b, key);
	ebuf_add(b, " ", 1);
	ebuf_addesc(b, val);
	ebuf_add(b, "\n", 1);
}

static const struct {
	const char *name;
	int bit;
} notify_names[] = {
	{ "never", QUEUE_NOTIFY_NEVER },
	{ "success", QUEUE_NOTIFY_SUCCESS },
	{ "failure", QUEUE_NOTIFY_FAILURE },
	{ "delay", QUEUE_NOTIFY_DELAY },
};
#define NNOTIFY (sizeof(notify_names) / sizeof(notify_names[0]))

char *
queue_envelope_encode(const struct queue_envelope *env, size_t *len)
{
	struct ebuf b = { NULL, 0, 0, 0 };
	char num[32];
	size_t i, j;

	ebuf_field(&b, "from", env->mail_from != NULL ? env->mail_from : "");
	ebuf_field(&b, "envid", env->envid);
	if (env->ret == QUEUE_RET_FULL)
		ebuf_adds(&b, "ret full\n");
	else if (env->ret == QUEUE_RET_HDRS)
		ebuf_adds(&b, "ret hdrs\n");
	if (env->body_8bit)
		ebuf_adds(&b, "body 8bitmime\n");
	if (env->smtputf8)
		ebuf_adds(&b, "smtputf8 yes\n");
	ebuf_field(&b, "helo", env->helo);
	ebuf_field(&b, "client", env->client_addr);
	ebuf_field(&b, "auth", env->auth_user);
	snprintf(num, sizeof(num), "arrival %lld\n", (long long)env->arrival);
	ebuf_adds(&b, num);
	for (i = 0; i < env->nrcpt; i++) {
		const struct queue_rcpt *r = &env->rcpt[i];
		const char *sep = " notify=";

		ebuf_adds(&b, "rcpt ");
		ebuf_addesc(&b, r->addr != NULL ? r->addr : "");
		for (j = 0; j < NNOTIFY; j++) {
			if (!(r->notify & notify_names[j].bit))
				continue;
			ebuf_adds(&b, sep);
			ebuf_adds(&b, notify_names[j].name);
			sep = ",";
		}
		if (r->orcpt != NULL) {
			ebuf_adds(&b, " orcpt=");
			ebuf_addesc(&b, r->orcpt);
		}
		ebuf_add(&b, "\n", 1);
	}
	if (b.err || b.p == NULL) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* ---- decoding ------------------------------------------------------------ */

/* hexval - value of one hex digit, or -1. */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * unescape - decode p[0..n) into a new string; NULL for a bad escape, an
 * escaped NUL (C strings cannot carry it) or a raw byte that encode would
 * have escaped.  Sets *oom on allocation failure.
 */
static char *
unescape(const char *p, size_t n, int *oom)
{
	char *s, *o;
	size_t i;
	int hi, lo;

	if ((s = malloc(n + 1)) == NULL) {
		*oom = 1;
		return NULL;
	}
	for (i = 0, o = s; i < n; i++) {
		if (p[i] != '%') {
			if (needs_escape((unsigned char)p[i]))
				goto fail;
			*o++ = p[i];
			continue;
		}
		if (n - i < 3 || (hi = hexval(p[i + 1])) < 0 ||
		    (lo = hexval(p[i + 2])) < 0 || (hi | lo) == 0)
			goto fail;
		*o++ = (char)(hi << 4 | lo);
		i += 2;
	}
	*o = '\0';
	return s;
fail:
	free(s);
	return NULL;
}

/* set_once - decode a value into *dst unless the key was seen before. */
static int
set_once(char **dst, const char *p, size_t n)
{
	int oom = 0;

	if (*dst != NULL)
		return -EINVAL;
	if ((*dst = unescape(p, n, &oom)) == NULL)
		return oom ? -ENOMEM : -EINVAL;
	return 0;
}

/* parse_notify - "never" or a comma list of success/failure/delay. */
static int
parse_notify(const char *p, size_t n, int *out)
{
	size_t i, wl;
	const char *w;

	*out = 0;
	while (n > 0) {
		const char *comma = memchr(p, ',', n);

		w = p;
		wl = comma != NULL ? (size_t)(comma - p) : n;
		for (i = 0; i < NNOTIFY; i++)
			if (strlen(notify_names[i].name) == wl &&
			    memcmp(notify_names[i].name, w, wl) == 0)
				break;
		if (i == NNOTIFY || (*out & notify_names[i].bit))
			return -EINVAL;
		*out |= notify_names[i].bit;
		if (comma == NULL)
			break;
		p = comma + 1;
		n -= wl + 1;
		if (n == 0)
			return -EINVAL;    /* trailing comma */
	}
	return *out != 0 ? 0 : -EINVAL;
}

/* parse_rcpt - "ADDR [notify=..] [orcpt=..]" appended to env->rcpt. */
static int
parse_rcpt(struct queue_envelope *env, const char *p, size_t n)
{
	struct queue_rcpt *r, *nr;
	const char *end = p + n, *tok, *sp;
	size_t tl;
	int rc, seen_notify = 0;

	/* Capacity is implicit: 4, then doubled whenever nrcpt hits it. */
	if (env->nrcpt == 0 || (env->nrcpt >= 4 &&
	    (env->nrcpt & (env->nrcpt - 1)) == 0)) {
		size_t cap = env->nrcpt != 0 ? env->nrcpt * 2 : 4;

		if ((nr = realloc(env->rcpt, cap * sizeof(*nr))) == NULL)
			return -ENOMEM;
		env->rcpt = nr;
	}
	r = &env->rcpt[env->nrcpt++];
	memset(r, 0, sizeof(*r));
	for (tok = p; ; tok = sp + 1) {
		sp = memchr(tok, ' ', (size_t)(end - tok));
		tl = (sp != NULL ? sp : end) - tok;
		if (tok == p)
			rc = set_once(&r->addr, tok, tl);
		else if (tl >= 7 && memcmp(tok, "notify=", 7) == 0 &&
		    !seen_notify++)
			rc = parse_notify(tok + 7, tl - 7, &r->notify);
		else if (tl >= 6 && memcmp(tok, "orcpt=", 6) == 0)
			rc = set_once(&r->orcpt, tok + 6, tl - 6);
		else
			rc = -EINVAL;
		if (rc != 0)
			return rc;
		if (sp == NULL)
			break;
	}
	return 0;
}

/* parse_arrival - a decimal time_t, nothing else. */
static int
parse_arrival(const char *p, size_t n, time_t *out)
{
	char num[32], *end;
	long long v;

	if (n == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, p, n);
	num[n] = '\0';
	errno = 0;
	v = strtoll(num, &end, 10);
	if (errno != 0 || *end != '\0' || !(num[0] == '-' ||
	    (num[0] >= '0' && num[0] <= '9')))
		return -EINVAL;
	*out = (time_t)v;
	return 0;
}

/* flag_once - a key whose only value is v; sets *dst to 1 once. */
static int
flag_once(int *dst, const char *p, size_t n, const char *v)
{
	if (*dst || strlen(v) != n || memcmp(p, v, n) != 0)
		return -EINVAL;
	*dst = 1;
	return 0;
}

/* decode_line - one "key value" line (without its newline). */
static int
decode_line(struct queue_envelope *env, const char *p, size_t n,
    int *seen_arrival)
{
	const char *sp = memchr(p, ' ', n), *v;
	size_t kl, vl;

	if (sp == NULL)
		return -EINVAL;
	kl = (size_t)(sp - p);
	v = sp + 1;
	vl = n - kl - 1;
#define KEY(k) (kl == sizeof(k) - 1 && memcmp(p, k, kl) == 0)
	if (KEY("from"))
		return set_once(&env->mail_from, v, vl);
	if (KEY("envid"))
		return set_once(&env->envid, v, vl);
	if (KEY("helo"))
		return set_once(&env->helo, v, vl);
	if (KEY("client"))
		return set_once(&env->client_addr, v, vl);
	if (KEY("auth"))
		return set_once(&env->auth_user, v, vl);
	if (KEY("rcpt"))
		return parse_rcpt(env, v, vl);
	if (KEY("body"))
		return flag_once(&env->body_8bit, v, vl, "8bitmime");
	if (KEY("smtputf8"))
		return flag_once(&env->smtputf8, v, vl, "yes");
	if (KEY("arrival")) {
		if ((*seen_arrival)++)
			return -EINVAL;
		return parse_arrival(v, vl, &env->arrival);
	}
	if (KEY("ret")) {
		if (env->ret != QUEUE_RET_UNSET)
			return -EINVAL;
		if (vl == 4 && memcmp(v, "full", 4) == 0)
			env->ret = QUEUE_RET_FULL;
		else if (vl == 4 && memcmp(v, "hdrs", 4) == 0)
			env->ret = QUEUE_RET_HDRS;
		else
			return -EINVAL;
		return 0;
	}
#undef KEY
	return -EINVAL;
}

int
queue_envelope_decode(const char *p, size_t len, struct queue_envelope *env)
{
	const char *end = p + len, *nl;
	int rc = -EINVAL, seen_arrival = 0;

	memset(env, 0, sizeof(*env));
	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			goto fail;        /* every line ends in \n */
		if ((rc = decode_line(env, p, (size_t)(nl - p),
		    &seen_arrival)) != 0)
			goto fail;
		p = nl + 1;
	}
	if (env->mail_from == NULL || !seen_arrival) {
		rc = -EINVAL;
		goto fail;
	}
	return 0;
fail:
	queue_envelope_free(env);
	/* ENOMEM is not the record's fault, but the header promises -EINVAL. */
	return rc == -ENOMEM ? -ENOMEM : -EINVAL;
}

void
queue_envelope_free(struct queue_envelope *env)
{
	size_t i;

	if (env == NULL)
		return;
	for (i = 0; i < env->nrcpt; i++) {
		free(env->rcpt[i].addr);
		free(env->rcpt[i].orcpt);
	}
	free(env->rcpt);
	free(env->mail_from);
	free(env->envid);
	free(env->helo);
	free(env->client_addr);
	free(env->auth_user);
	memset(env, 0, sizeof(*env));
}

/* ---- queue ids ----------------------------------------------------------- */

/* Last id handed out: microseconds since the epoch << 12 | counter. */
static _Atomic uint64_t id_last;

void
queue_id_new(char *buf)
{
	struct timeval tv;
	uint64_t now, old, next, us;

	gettimeofday(&tv, NULL);
	now = ((uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec) << 12;
	old = atomic_load_explicit(&id_last, memory_order_relaxed);
	do {
		/*
		 * Past the last id, and at least at the current time: more
		 * than 4096 ids in one microsecond borrow the next one.
		 */
		next = old + 1 > now ? old + 1 : now;
	} while (!atomic_compare_exchange_weak_explicit(&id_last, &old, next,
	    memory_order_relaxed, memory_order_relaxed));
	us = next >> 12;
	snprintf(buf, QUEUE_ID_LEN + 1, "%010llX%05X%03X",
	    (unsigned long long)(us / 1000000), (unsigned)(us % 1000000),
	    (unsigned)(next & 0xfff));
}

time_t
queue_id_time(const char *id)
{
	unsigned long long sec = 0;
	unsigned usec = 0;
	int i, v;

	if (id == NULL)
		return -1;
	for (i = 0; i < QUEUE_ID_LEN; i++) {
		/* Ids are uppercase: a lowercase name is not one of ours. */
		if ((id[i] >= 'a' && id[i] <= 'f') || (v = hexval(id[i])) < 0)
			return -1;
		if (i < 10)
			sec = sec << 4 | (unsigned)v;
		else if (i < 15)
			usec = usec << 4 | (unsigned)v;
	}
	if (id[QUEUE_ID_LEN] != '\0' || usec >= 1000000)
		return -1;
	return (time_t)sec;
}
