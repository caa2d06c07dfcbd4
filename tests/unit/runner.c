/*
 * runner.c - runs every registered unit test in a forked child with a
 * timeout and prints one line per test and a closing "N passed, N failed".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/test.h"

#define TEST_TIMEOUT 60

static struct test_case *tests, **tail = &tests;

void
test_register(struct test_case *t)
{
	*tail = t;
	tail = &t->next;
}

const char *
test_srcdir(void)
{
	const char *s = getenv("SIGNET_SRCDIR");

	return s != NULL ? s : ".";
}

static void
put_escaped(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && i < 2000; i++) {
		if (p[i] == '\r')
			fputs("\\r", stderr);
		else if (p[i] == '\n')
			fputs("\\n", stderr);
		else if (p[i] == '\t')
			fputs("\\t", stderr);
		else if (p[i] < 0x20 || p[i] >= 0x7f)
			fprintf(stderr, "\\x%02x", p[i]);
		else
			fputc(p[i], stderr);
	}
	if (n > 2000)
		fputs("...", stderr);
}

void
t_memeq_fail(const char *file, int line, const char *what, const void *a,
    size_t alen, const void *b, size_t blen)
{
	fprintf(stderr, "%s:%d: %s: lengths %zu and %zu\n  \"", file, line,
	    what, alen, blen);
	put_escaped(a, alen);
	fputs("\"\n  \"", stderr);
	put_escaped(b, blen);
	fputs("\"\n", stderr);
	exit(1);
}

static int
selected(const char *name, int argc, char **argv)
{
	int i;

	if (argc < 2)
		return 1;
	for (i = 1; i < argc; i++)
		if (strncmp(name, argv[i], strlen(argv[i])) == 0)
			return 1;
	return 0;
}

/* run_one - fork, run, wait with a timeout; 1 if the test passed. */
static int
run_one(struct test_case *t)
{
	pid_t pid;
	int status;

	fflush(stdout);
	fflush(stderr);
	if ((pid = fork()) < 0) {
		perror("fork");
		return 0;
	}
	if (pid == 0) {
		alarm(TEST_TIMEOUT);
		t->fn();
		exit(0);
	}
	if (waitpid(pid, &status, 0) < 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 1;
	if (WIFSIGNALED(status))
		fprintf(stderr, "%s: killed by signal %d%s\n", t->name,
		    WTERMSIG(status),
		    WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
	return 0;
}

int
main(int argc, char **argv)
{
	struct test_case *t;
	int passed = 0, failed = 0, n = 0;

	for (t = tests; t != NULL; t = t->next) {
		if (!selected(t->name, argc, argv))
			continue;
		n++;
		if (run_one(t)) {
			passed++;
			printf("ok %d %s\n", n, t->name);
		} else {
			failed++;
			printf("not ok %d %s\n", n, t->name);
		}
	}
	if (n == 0) {
		fprintf(stderr, "no test matched\n");
		return 1;
	}
	printf("unit: %d passed, %d failed\n", passed, failed);
	return failed != 0;
}
