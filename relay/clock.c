/*
 * clock.c - relay_clock_now: the time managed keys go by.  Normally
 * time(NULL); when SIGNET_CLOCK_FILE names a file, the decimal unix time
 * written in it, read afresh on every call so that a test moves the clock
 * of a running signet or signetctl by rewriting the file (a testing aid,
 * see README).  A missing or malformed file falls back to the real time
 * with one warning on stderr per process.  Also the monotonic
 * milliseconds and the sleep the key store, the key manager and the DNS
 * checks time their waits with.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relay/keys.h"

static atomic_int clock_warned;

/* clock_warn - say once per process why the clock file is not used. */
static void
clock_warn(const char *path, const char *why)
{
	if (atomic_exchange(&clock_warned, 1) == 0)
		fprintf(stderr, "signet: SIGNET_CLOCK_FILE %s: %s; using the "
		    "system clock\n", path, why);
}

/* clock_read - the number in path into *out: 0, or -1 after a warning. */
static int
clock_read(const char *path, int64_t *out)
{
	char buf[64], *end;
	ssize_t n;
	size_t len = 0;
	long long v;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		clock_warn(path, strerror(errno));
		return -1;
	}
	while (len < sizeof(buf) - 1) {
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
	    buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = '\0';
	if (len == 0 || buf[0] < '0' || buf[0] > '9') {
		clock_warn(path, "not a decimal unix time");
		return -1;
	}
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0) {
		clock_warn(path, "not a decimal unix time");
		return -1;
	}
	*out = (int64_t)v;
	return 0;
}

int64_t
relay_clock_now(void)
{
	const char *path = getenv("SIGNET_CLOCK_FILE");
	int64_t t;

	if (path != NULL && *path != '\0' && clock_read(path, &t) == 0)
		return t;
	return (int64_t)time(NULL);
}

int64_t
relay_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
relay_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}
