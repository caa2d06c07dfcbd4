/*
 * test.h - the unit-test harness (after libuv's task.h).
 *
 * TEST(name) { ... } defines and registers a test.  The runner
 * (build/unit-tests) forks each test into a child with a timeout; a failing
 * T_* macro prints file:line and both values, then exits the child with 1.
 * `build/unit-tests NAME...` runs only the named tests (prefix match).
 */
#ifndef SIGNET_TEST_H
#define SIGNET_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

struct test_case {
	const char *name;
	void (*fn)(void);
	struct test_case *next;
};

void test_register(struct test_case *t);

#define TEST(name)                                                          \
	static void test_##name(void);                                      \
	static struct test_case tc_##name = { #name, test_##name, NULL };   \
	__attribute__((constructor)) static void reg_##name(void)           \
	{ test_register(&tc_##name); }                                      \
	static void test_##name(void)

#define T_FAIL(...)                                                         \
	do {                                                                \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);             \
		fprintf(stderr, __VA_ARGS__);                               \
		fputc('\n', stderr);                                        \
		exit(1);                                                    \
	} while (0)

#define T_OK(expr)                                                          \
	do {                                                                \
		long long t_v_ = (long long)(expr);                         \
		if (t_v_ != 0)                                              \
			T_FAIL("%s: expected 0, got %lld", #expr, t_v_);    \
	} while (0)

#define T_TRUE(expr)                                                        \
	do {                                                                \
		if (!(expr))                                                \
			T_FAIL("%s: expected true", #expr);                 \
	} while (0)

#define T_EQ(a, b)                                                          \
	do {                                                                \
		long long t_a_ = (long long)(a), t_b_ = (long long)(b);     \
		if (t_a_ != t_b_)                                           \
			T_FAIL("%s == %s: %lld != %lld", #a, #b, t_a_, t_b_);\
	} while (0)

#define T_STREQ(a, b)                                                       \
	do {                                                                \
		const char *t_a_ = (a), *t_b_ = (b);                        \
		if (strcmp(t_a_, t_b_) != 0)                                \
			T_FAIL("%s == %s:\n  \"%s\"\n  \"%s\"", #a, #b, t_a_, t_b_); \
	} while (0)

/* T_MEMEQ - compare byte strings, printing both escaped on mismatch. */
void t_memeq_fail(const char *file, int line, const char *what,
    const void *a, size_t alen, const void *b, size_t blen);
#define T_MEMEQ(a, alen, b, blen)                                           \
	do {                                                                \
		size_t t_al_ = (alen), t_bl_ = (blen);                      \
		if (t_al_ != t_bl_ || memcmp((a), (b), t_al_) != 0)         \
			t_memeq_fail(__FILE__, __LINE__, #a " == " #b,      \
			    (a), t_al_, (b), t_bl_);                        \
	} while (0)

/* test_srcdir - the source tree root (for tests/vectors). */
const char *test_srcdir(void);

/* ---- servers.c: real servers for the tests that need them ------------- */

/* test_free_port - a TCP port on 127.0.0.1 nobody listens on now. */
int test_free_port(void);
/*
 * test_redis_start - a redis-server on 127.0.0.1:port, its data in dir,
 * saved only when asked (SAVE), output to /dev/null, killed when the test
 * process ends; extra: one more setting to turn on ("--enable-debug-command")
 * or NULL.  Waits (10 s at most) until it answers PING, else T_FAIL.
 * Returns its pid.
 */
pid_t test_redis_start(int port, const char *dir, const char *extra);

#endif
