/*
 * log.c - the daemon's log: one line per call, to stderr or to syslog
 * (ident "signet", facility LOG_MAIL, as with `signet -s`), from any
 * thread.  Lines carry a Postfix-style severity tag ("warning: ",
 * "error: ", "fatal: ", "panic: ") so that both sinks read the same.
 *
 * On stderr each line is formatted whole in a local buffer and handed to
 * one write(2), so lines from different threads never interleave and no
 * lock is held while writing; syslog(3) is thread-safe in glibc.  Control
 * characters in messages (which may quote what a client sent) become '?',
 * so a client can't forge log lines.
 *
 * The relay_x* allocators live here too: when memory runs out they log a
 * panic and abort, which is what the rest of relay/ assumes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "relay/relay.h"

#define LOG_MSG_MAX 2048     /* message bytes kept; longer ones end in "..." */
#define LOG_LINE_MAX (LOG_MSG_MAX + 128)

static atomic_int log_to_syslog;
static atomic_int log_level = LOG_INFO;

void
relay_log_open(int use_syslog, int level)
{
	if (use_syslog)
		openlog("signet", LOG_PID | LOG_NDELAY, LOG_MAIL);
	atomic_store(&log_to_syslog, use_syslog != 0);
	relay_log_set_level(level);
}

void
relay_log_set_level(int level)
{
	atomic_store(&log_level, level & LOG_PRIMASK);
}

void
relay_log_close(void)
{
	if (atomic_exchange(&log_to_syslog, 0))
		closelog();
}

/* log_tag - the severity tag for prio, Postfix style ("" for info). */
static const char *
log_tag(int prio)
{
	switch (prio) {
	case LOG_EMERG:
	case LOG_ALERT:
	case LOG_CRIT:
		return "fatal: ";
	case LOG_ERR:
		return "error: ";
	case LOG_WARNING:
		return "warning: ";
	case LOG_DEBUG:
		return "debug: ";
	default:
		return "";
	}
}

/* log_sanitize - control characters (but TAB) and DEL become '?'. */
static void
log_sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			*s = '?';
}

/* log_write_all - write(2) until done; errors are dropped (nowhere to go). */
static void
log_write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

/* log_emit - one sanitized message with its tag to the current sink. */
static void
log_emit(int prio, const char *tag, char *msg)
{
	char line[LOG_LINE_MAX], stamp[32];
	struct timespec ts;
	struct tm tm;
	int n;

	log_sanitize(msg);
	if (atomic_load(&log_to_syslog)) {
		syslog(prio, "%s%s", tag, msg);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ signet[%ld]: %s%s\n", stamp,
	    ts.tv_nsec / 1000000, (long)getpid(), tag, msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	log_write_all(STDERR_FILENO, line, (size_t)n);
}

/* log_format - vsnprintf into msg[LOG_MSG_MAX], marking truncation. */
static void __attribute__((format(printf, 2, 0)))
log_format(char *msg, const char *fmt, va_list ap)
{
	int n;

	n = vsnprintf(msg, LOG_MSG_MAX, fmt, ap);
	if (n < 0)
		snprintf(msg, LOG_MSG_MAX, "(unformattable log message)");
	else if (n >= LOG_MSG_MAX)
		memcpy(msg + LOG_MSG_MAX - 4, "...", 4);
}

void
relay_log(int prio, const char *fmt, ...)
{
	char msg[LOG_MSG_MAX];
	va_list ap;

	prio &= LOG_PRIMASK;
	if (prio > atomic_load(&log_level))
		return;
	va_start(ap, fmt);
	log_format(msg, fmt, ap);
	va_end(ap);
	log_emit(prio, log_tag(prio), msg);
}

void
relay_log_hook(void *arg, int prio, const char *msg)
{
	relay_log(prio, "%s", msg);
}

void
relay_panic(const char *fmt, ...)
{
	char msg[LOG_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	log_format(msg, fmt, ap);
	va_end(ap);
	log_emit(LOG_CRIT, "panic: ", msg);
	abort();
}

void *
relay_xmalloc(size_t size)
{
	void *p;

	if ((p = malloc(size != 0 ? size : 1)) == NULL)
		relay_panic("out of memory (%zu bytes)", size);
	return p;
}

void *
relay_xcalloc(size_t n, size_t size)
{
	void *p;

	if ((p = calloc(n != 0 ? n : 1, size != 0 ? size : 1)) == NULL)
		relay_panic("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *
relay_xrealloc(void *p, size_t n, size_t size)
{
	void *np;

	if (size != 0 && n > SIZE_MAX / size)
		relay_panic("allocation overflow (%zu x %zu bytes)", n, size);
	if ((np = realloc(p, n * size != 0 ? n * size : 1)) == NULL)
		relay_panic("out of memory (%zu x %zu bytes)", n, size);
	return np;
}

char *
relay_xstrdup(const char *s)
{
	return relay_xstrndup(s, strlen(s));
}

char *
relay_xstrndup(const char *s, size_t len)
{
	char *p;

	len = strnlen(s, len);
	p = relay_xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}
