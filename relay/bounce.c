/*
 * bounce.c - delivery status notifications: when recipients of a message
 * fail for good (a 5xx, or maximal_queue_lifetime ran out), the queue
 * manager asks the daemon for a bounce, and this file writes it and queues
 * it as a new message from the null sender to the original sender.
 *
 * The report is RFC 3464's multipart/report; report-type=delivery-status
 * (RFC 6522) with three parts: a text for people naming each failed
 * recipient and why, the machine-readable message/delivery-status, and the
 * original message as message/rfc822 (RET=FULL or none given) or only its
 * header as text/rfc822-headers (RET=HDRS).  The original is taken from the
 * queue file as it went out: its DKIM-Signature record, then the message
 * bytes, unchanged.  It carries Auto-Submitted: auto-replied (RFC 3834) so
 * that responders stay quiet, and it is signed like any mail from the
 * relay's own domain when dkim_sign has a line for myhostname.
 *
 * Everything written here has CRLF line ends and lines of at most 998
 * bytes (RFC 5322 2.1.1): reasons are folded, and control characters in
 * them become spaces.  The MIME boundary is random and checked against the
 * original's bytes, so it can't occur inside the enclosed message.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <syslog.h>
#include <time.h>

#include "relay/relay.h"

#define BOUNCE_WRAP 76            /* preferred line length */
#define BOUNCE_HARD 900           /* longest run without a break point */

/* A growable output buffer; aborts on OOM (relay_xrealloc). */
struct bounce_buf {
	char *p;
	size_t len, cap;
};

/* bb_add - append len bytes. */
static void
bb_add(struct bounce_buf *b, const char *p, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		b->cap = (b->len + len + 1) * 2;
		b->p = relay_xrealloc(b->p, b->cap, 1);
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
	b->p[b->len] = '\0';
}

static void
bb_str(struct bounce_buf *b, const char *s)
{
	bb_add(b, s, strlen(s));
}

/* bb_printf - append formatted text (short pieces only). */
static void __attribute__((format(printf, 2, 3)))
bb_printf(struct bounce_buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	bb_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/*
 * bounce_clean - a copy of s fit for a header or a text line: CR, LF, TAB
 * and other control characters become spaces, runs of blanks collapse,
 * and leading and trailing blanks go.  8-bit bytes stay (UTF-8 in
 * SMTPUTF8 addresses); malloc'd.
 */
static char *
bounce_clean(const char *s)
{
	char *out = relay_xmalloc(strlen(s) + 1), *o = out;

	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch == 0x7f)
			ch = ' ';
		if (ch == ' ' && (o == out || o[-1] == ' '))
			continue;
		*o++ = (char)ch;
	}
	while (o > out && o[-1] == ' ')
		o--;
	*o = '\0';
	return out;
}

/*
 * bounce_fold - append text (clean: no control characters) as lines of at
 * most BOUNCE_WRAP bytes where a blank allows it, BOUNCE_HARD otherwise.
 * The first line starts after first_used bytes already on it; each later
 * line starts with indent.  Ends with CRLF.
 */
static void
bounce_fold(struct bounce_buf *b, const char *text, size_t first_used,
    const char *indent)
{
	size_t used = first_used, ilen = strlen(indent), wlen;
	const char *p = text, *w;
	int first = 1;

	while (*p != '\0') {
		w = p;
		while (*p != '\0' && *p != ' ')
			p++;
		wlen = (size_t)(p - w);
		if (!first && used + 1 + wlen > BOUNCE_WRAP) {
			bb_str(b, "\r\n");
			bb_str(b, indent);
			used = ilen;
		} else if (!first) {
			bb_str(b, " ");
			used++;
		}
		/* A word too long for any line is cut (RFC 5322 2.1.1). */
		while (used + wlen > BOUNCE_HARD) {
			size_t take = BOUNCE_HARD > used ? BOUNCE_HARD - used : 1;

			bb_add(b, w, take);
			w += take;
			wlen -= take;
			bb_str(b, "\r\n");
			bb_str(b, indent);
			used = ilen;
		}
		bb_add(b, w, wlen);
		used += wlen;
		first = 0;
		while (*p == ' ')
			p++;
	}
	bb_str(b, "\r\n");
}

/* bounce_field - "Name: value" with value cleaned and folded. */
static void
bounce_field(struct bounce_buf *b, const char *name, const char *value)
{
	char *v = bounce_clean(value);

	bb_str(b, name);
	bb_str(b, ": ");
	bounce_fold(b, v, strlen(name) + 2, " ");
	free(v);
}

/* bounce_date - an RFC 5322 date-time in UTC, locale-independent. */
static void
bounce_date(time_t t, char *buf, size_t len)
{
	static const char days[][4] = { "Sun", "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat" };
	static const char months[][4] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * bounce_status - the RFC 3463 status for a failed recipient: expired ones
 * are 4.4.7 (delivery time expired), others take the enhanced code of the
 * reply when it is a 5.x.y one, else 5.0.0.  Returns whether the reason
 * is an SMTP reply (three digits, then a blank, '-' or the end).
 */
static int
bounce_status(const char *reason, int expired, char *out, size_t len)
{
	const char *p = reason;
	size_t d1, d2;
	int smtp = 0;

	snprintf(out, len, expired ? "4.4.7" : "5.0.0");
	if (reason == NULL)
		return 0;
	while (*p == ' ')
		p++;
	if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && (p[3] == ' ' || p[3] == '-' ||
	    p[3] == '\0')) {
		smtp = 1;
		p += 3;
		while (*p == ' ' || *p == '-')
			p++;
	}
	if (expired || p[0] != '5' || p[1] != '.')
		return smtp;
	for (d1 = 0; isdigit((unsigned char)p[2 + d1]); d1++)
		;
	if (d1 < 1 || d1 > 3 || p[2 + d1] != '.')
		return smtp;
	for (d2 = 0; isdigit((unsigned char)p[3 + d1 + d2]); d2++)
		;
	if (d2 < 1 || d2 > 3 || (p[3 + d1 + d2] != '\0' &&
	    p[3 + d1 + d2] != ' '))
		return smtp;
	snprintf(out, len, "%.*s", (int)(3 + d1 + d2), p);
	return smtp;
}

/* The original message as it went out: signature record, then the bytes. */
struct bounce_orig {
	struct bounce_buf b;
	int ok;
};

static int
bounce_orig_chunk(void *arg, const char *p, size_t len)
{
	bb_add(arg, p, len);
	return 0;
}

/* bounce_load - read the original into o; o->ok says whether it worked. */
static void
bounce_load(const char *path, struct bounce_orig *o)
{
	struct queue_file qf;

	memset(o, 0, sizeof(*o));
	if (path == NULL || queue_file_read(path, &qf) != 0)
		return;
	if (qf.sig != NULL)
		bb_add(&o->b, qf.sig, qf.siglen);
	queue_file_free(&qf);
	if (queue_file_message(path, bounce_orig_chunk, &o->b) != 0) {
		free(o->b.p);
		memset(&o->b, 0, sizeof(o->b));
		return;
	}
	o->ok = 1;
}

/*
 * bounce_header_len - the length of the header section of msg (through
 * the CRLF of its last field, without the empty line); all of it when
 * there is no body.
 */
static size_t
bounce_header_len(const char *msg, size_t len)
{
	const char *e;

	if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
		return 0;
	if ((e = memmem(msg, len, "\r\n\r\n", 4)) != NULL)
		return (size_t)(e - msg) + 2;
	return len;
}

/* bounce_boundary - a random boundary that does not occur in avoid. */
static void
bounce_boundary(const char *id, const char *avoid, size_t avoidlen,
    char *out, size_t len)
{
	unsigned char r[12];
	size_t i, n;

	do {
		if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
			for (i = 0; i < sizeof(r); i++)
				r[i] = (unsigned char)random();
		n = (size_t)snprintf(out, len, "=_signet-dsn-%s-", id);
		for (i = 0; i < sizeof(r) && n + 2 < len; i++, n += 2)
			snprintf(out + n, len - n, "%02x", r[i]);
	} while (avoidlen > 0 && memmem(avoid, avoidlen, out,
	    strlen(out)) != NULL);
}

/* bounce_has_8bit - any byte above 0x7f in s? */
static int
bounce_has_8bit(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s > 0x7f)
			return 1;
	return 0;
}

/* bounce_text - part 1: what happened, for people. */
static void
bounce_text(struct bounce_buf *b, const struct relay_bounce_in *in,
    int have_orig)
{
	const struct queue_envelope *env = in->env;
	char *addr, *why, date[64];
	size_t i;

	bounce_date(env->arrival, date, sizeof(date));
	bb_printf(b, "This is the mail system at host %s.\r\n\r\n",
	    in->myhostname);
	bb_str(b, "Your message could not be delivered to one or more of its\r\n"
	    "recipients, and the mail system has given up on them.  They are\r\n"
	    "listed below, each with the reason given.\r\n\r\n");
	if (have_orig)
		bb_printf(b, "The returned %s is attached below.\r\n\r\n",
		    env->ret == QUEUE_RET_HDRS ? "message's header" :
		    "message");
	bb_str(b, "If you ask the postmaster for help, please include this\r\n"
	    "report.\r\n\r\n");
	bb_printf(b, "The message was queued as %s on %s.\r\n\r\n",
	    in->id != NULL ? in->id : "(unknown)", date);
	bb_str(b, "                   The mail system\r\n");
	for (i = 0; i < in->nfailed; i++) {
		if (in->failed[i].rcpt >= env->nrcpt)
			continue;
		addr = bounce_clean(env->rcpt[in->failed[i].rcpt].addr);
		why = bounce_clean(in->failed[i].reason != NULL &&
		    in->failed[i].reason[0] != '\0' ? in->failed[i].reason :
		    "delivery failed");
		bb_str(b, "\r\n<");
		bb_str(b, addr);
		bb_str(b, ">: ");
		if (in->failed[i].expired) {
			bb_str(b, "\r\n    ");
			bounce_fold(b, "message expired: the mail system kept "
			    "trying for the whole queue lifetime; the last "
			    "attempt said:", 4, "    ");
			bb_str(b, "    ");
		} else
			bb_str(b, "\r\n    ");
		bounce_fold(b, why, 4, "    ");
		free(addr);
		free(why);
	}
}

/* bounce_report - part 2: message/delivery-status (RFC 3464 2.2, 2.3). */
static void
bounce_report(struct bounce_buf *b, const struct relay_bounce_in *in,
    time_t now)
{
	const struct queue_envelope *env = in->env;
	const struct queue_rcpt *r;
	char date[64], status[32], *v;
	size_t i;
	int smtp;

	bb_printf(b, "Reporting-MTA: dns; %s\r\n", in->myhostname);
	if (in->id != NULL)
		bounce_field(b, "X-Signet-Queue-ID", in->id);
	v = relay_xmalloc(strlen(env->mail_from) + 16);
	sprintf(v, "rfc822; %s", env->mail_from);
	bounce_field(b, "X-Signet-Sender", v);
	free(v);
	if (env->envid != NULL)
		bounce_field(b, "Original-Envelope-Id", env->envid);
	bounce_date(env->arrival, date, sizeof(date));
	bb_printf(b, "Arrival-Date: %s\r\n", date);
	for (i = 0; i < in->nfailed; i++) {
		if (in->failed[i].rcpt >= env->nrcpt)
			continue;
		r = &env->rcpt[in->failed[i].rcpt];
		bb_str(b, "\r\n");
		if (r->orcpt != NULL) {
			/* ORCPT= is "addr-type;xtext", decoded when stored. */
			v = relay_xmalloc(strlen(r->orcpt) + 16);
			if (strchr(r->orcpt, ';') != NULL)
				strcpy(v, r->orcpt);
			else
				sprintf(v, "rfc822;%s", r->orcpt);
			bounce_field(b, "Original-Recipient", v);
			free(v);
		}
		v = relay_xmalloc(strlen(r->addr) + 16);
		sprintf(v, "rfc822;%s", r->addr);
		bounce_field(b, "Final-Recipient", v);
		free(v);
		bb_str(b, "Action: failed\r\n");
		smtp = bounce_status(in->failed[i].reason,
		    in->failed[i].expired, status, sizeof(status));
		bb_printf(b, "Status: %s\r\n", status);
		if (in->failed[i].reason != NULL &&
		    in->failed[i].reason[0] != '\0') {
			v = relay_xmalloc(strlen(in->failed[i].reason) + 16);
			sprintf(v, "%s; %s", smtp ? "smtp" : "X-Signet",
			    in->failed[i].reason);
			bounce_field(b, "Diagnostic-Code", v);
			free(v);
		}
		bounce_date(now, date, sizeof(date));
		bb_printf(b, "Last-Attempt-Date: %s\r\n", date);
	}
}

char *
relay_bounce_compose(const struct relay_bounce_in *in, size_t *len)
{
	const struct queue_envelope *env = in->env;
	struct bounce_buf b = { 0 };
	struct bounce_orig o;
	const char *host = in->myhostname, *charset, *cte;
	char boundary[96], date[64], *to;
	size_t hlen;
	time_t now = in->now != 0 ? in->now : time(NULL);
	int eight;

	if (env == NULL || env->mail_from == NULL || env->mail_from[0] == '\0' ||
	    host == NULL || in->nfailed == 0) {
		errno = EINVAL;
		return NULL;
	}
	bounce_load(in->path, &o);
	bounce_boundary(in->id != NULL ? in->id : "x", o.b.p, o.b.len,
	    boundary, sizeof(boundary));
	eight = env->body_8bit || env->smtputf8;
	charset = bounce_has_8bit(env->mail_from) || env->smtputf8 ? "utf-8" :
	    "us-ascii";
	cte = eight ? "8bit" : "7bit";

	/* RFC 5322 header, RFC 3834 Auto-Submitted, RFC 6522 report. */
	bounce_date(now, date, sizeof(date));
	bb_printf(&b, "Date: %s\r\n", date);
	bb_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
	to = bounce_clean(env->mail_from);
	bb_printf(&b, "To: <%s>\r\n", to);
	free(to);
	bb_str(&b, "Subject: Undelivered Mail Returned to Sender\r\n");
	bb_printf(&b, "Message-ID: <%s.%lld.dsn@%s>\r\n",
	    in->id != NULL ? in->id : "x", (long long)now, host);
	bb_str(&b, "Auto-Submitted: auto-replied\r\n");
	bb_str(&b, "MIME-Version: 1.0\r\n");
	bb_printf(&b, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary);
	bb_printf(&b, "Content-Transfer-Encoding: %s\r\n", cte);
	bb_str(&b, "\r\nThis is a MIME-encapsulated message.\r\n");

	bb_printf(&b, "\r\n--%s\r\n", boundary);
	bb_str(&b, "Content-Description: Notification\r\n");
	bb_printf(&b, "Content-Type: text/plain; charset=%s\r\n\r\n", charset);
	bounce_text(&b, in, o.ok);

	bb_printf(&b, "\r\n--%s\r\n", boundary);
	bb_str(&b, "Content-Description: Delivery report\r\n");
	bb_str(&b, "Content-Type: message/delivery-status\r\n\r\n");
	bounce_report(&b, in, now);

	if (o.ok) {
		bb_printf(&b, "\r\n--%s\r\n", boundary);
		if (env->ret == QUEUE_RET_HDRS) {
			hlen = bounce_header_len(o.b.p, o.b.len);
			bb_str(&b, "Content-Description: Undelivered Message "
			    "Headers\r\n");
			bb_str(&b, "Content-Type: text/rfc822-headers\r\n");
			if (eight)
				bb_str(&b, "Content-Transfer-Encoding: 8bit\r\n");
			bb_str(&b, "\r\n");
			bb_add(&b, o.b.p, hlen);
		} else {
			bb_str(&b, "Content-Description: Undelivered Message\r\n");
			bb_str(&b, "Content-Type: message/rfc822\r\n");
			if (eight)
				bb_str(&b, "Content-Transfer-Encoding: 8bit\r\n");
			bb_str(&b, "\r\n");
			bb_add(&b, o.b.p, o.b.len);
		}
	}
	/* The CRLF before a delimiter belongs to it (RFC 2046 5.1.1). */
	bb_printf(&b, "\r\n--%s--\r\n", boundary);
	free(o.b.p);
	if (len != NULL)
		*len = b.len;
	return b.p;
}

/* bounce_lower - a lower-case copy of s, malloc'd. */
static char *
bounce_lower(const char *s)
{
	char *out = relay_xstrdup(s), *p;

	for (p = out; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	return out;
}

/*
 * bounce_sign - the DKIM-Signature fields for text when the signing table
 * has lines for domain: 0 with *sig NULL when it has none, else 0 with
 * *sig malloc'd, or a DKIM_E* error.
 */
static int
bounce_sign(const struct relay_config *cfg, const char *domain,
    const char *text, size_t len, char **sig, size_t *siglen)
{
	struct dkim_sign_params p[DKIM_MAX_SIGS];
	struct dkim_signer *s = NULL;
	int n, i, rc = 0;

	*sig = NULL;
	*siglen = 0;
	n = relay_signtab_lookup(cfg->signtab, domain, p, DKIM_MAX_SIGS);
	if (n == 0)
		return 0;
	if ((s = dkim_signer_new()) == NULL) {
		rc = DKIM_ENOMEM;
		goto fail;
	}
	for (i = 0; i < n && rc == 0; i++)
		rc = dkim_signer_add(s, &p[i]);
	if (rc == 0)
		rc = dkim_signer_write(s, text, len);
	if (rc == 0)
		rc = dkim_signer_finish(s, sig, siglen);
fail:
	for (i = 0; i < n; i++)
		dkim_key_free(p[i].key);
	dkim_signer_free(s);
	return rc;
}

int
relay_bounce_queue(struct queue_spool *sp, const struct relay_config *cfg,
    const struct relay_bounce_in *in, queue_commit_cb cb, void *arg)
{
	struct relay_bounce_in copy = *in;
	struct queue_envelope env;
	struct queue_rcpt rcpt;
	struct queue_msg *m = NULL;
	char *text = NULL, *sig = NULL, *domain = NULL;
	size_t len, siglen;
	int rc;

	if (copy.myhostname == NULL)
		copy.myhostname = cfg->myhostname;
	if (copy.now == 0)
		copy.now = time(NULL);
	if ((text = relay_bounce_compose(&copy, &len)) == NULL)
		return -errno;
	/* From: MAILER-DAEMON@myhostname: sign as myhostname's domain. */
	domain = bounce_lower(copy.myhostname);
	if ((rc = bounce_sign(cfg, domain, text, len, &sig, &siglen)) != 0) {
		relay_log(LOG_WARNING, "bounce for %s: signing failed: %s; "
		    "sending it unsigned", copy.id != NULL ? copy.id : "?",
		    dkim_strerror(rc));
		free(sig);
		sig = NULL;
		siglen = 0;
	}
	memset(&env, 0, sizeof(env));
	memset(&rcpt, 0, sizeof(rcpt));
	rcpt.addr = in->env->mail_from;
	env.mail_from = "";
	env.ret = QUEUE_RET_UNSET;
	env.body_8bit = in->env->body_8bit || in->env->smtputf8;
	env.smtputf8 = in->env->smtputf8;
	env.nrcpt = 1;
	env.rcpt = &rcpt;
	env.helo = (char *)(uintptr_t)copy.myhostname;  /* copied by _new */
	env.client_addr = "127.0.0.1";
	env.arrival = copy.now;
	if ((rc = queue_msg_new(sp, &env, &m)) != 0)
		goto fail;
	queue_msg_write(m, text, len);
	queue_msg_commit(m, sig, siglen, cb, arg);
	rc = 0;
fail:
	free(domain);
	free(sig);
	free(text);
	return rc;
}
