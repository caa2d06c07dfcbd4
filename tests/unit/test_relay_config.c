/*
 * test_relay_config.c - unit tests of relay/: the configuration (defaults,
 * units, every kind of error with its exact "FILE:LINE: message" text,
 * several errors in one file, dkim_sign with keys made here, the shipped
 * relay.conf), the static signing table behind relay_sign_lookup, the log
 * line format, the Prometheus rendering (parsed back, and checked by
 * promtool) and the admin HTTP server, driven by a client thread.
 *
 * Each test works in a fresh temporary directory and names its file
 * "t.conf", so the expected messages read as they would for an operator.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "relay/relay.h"
#include "tests/unit/test.h"

/* ---- helpers ------------------------------------------------------------- */

/* Messages the loader reported, one per line. */
struct msgs {
	char buf[16384];
	size_t len;
	int n;
};

static void
collect(void *arg, int prio, const char *msg)
{
	struct msgs *m = arg;
	int n;

	n = snprintf(m->buf + m->len, sizeof(m->buf) - m->len, "%s\n", msg);
	if (n > 0 && (size_t)n < sizeof(m->buf) - m->len)
		m->len += (size_t)n;
	m->n++;
}

/* enter_tmpdir - make a temporary directory and chdir into it. */
static char *
enter_tmpdir(void)
{
	static char dir[64];

	snprintf(dir, sizeof(dir), "/tmp/signet-relay-XXXXXX");
	if (mkdtemp(dir) == NULL || chdir(dir) != 0)
		T_FAIL("mkdtemp: %s", strerror(errno));
	return dir;
}

/* leave_tmpdir - remove the directory made by enter_tmpdir. */
static void
leave_tmpdir(const char *dir)
{
	char cmd[128];

	if (chdir("/") != 0)
		T_FAIL("chdir: %s", strerror(errno));
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		T_FAIL("%s failed", cmd);
}

static void
write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
		T_FAIL("%s: %s", path, strerror(errno));
}

/* read_text - a whole file, NUL-terminated, malloc'd. */
static char *
read_text(const char *path)
{
	char *s = NULL;
	size_t len = 0;
	FILE *in = fopen(path, "r"), *out = open_memstream(&s, &len);
	int ch;

	if (in == NULL || out == NULL)
		T_FAIL("%s: %s", path, strerror(errno));
	while ((ch = fgetc(in)) != EOF)
		fputc(ch, out);
	fclose(in);
	fclose(out);
	return s;
}

/* load_text - write text to t.conf and load it; the messages go to m. */
static int
load_text(const char *text, struct relay_config *cfg, struct msgs *m)
{
	memset(m, 0, sizeof(*m));
	write_text("t.conf", text);
	return relay_config_load("t.conf", cfg, collect, m);
}

/* expect_errors - text fails to load with exactly these messages. */
static void
expect_errors(const char *text, const char *want)
{
	struct relay_config cfg;
	struct msgs m;

	T_EQ(load_text(text, &cfg, &m), -EINVAL);
	T_STREQ(m.buf, want);
	relay_config_free(&cfg);
}

/* dump_string - relay_config_dump into a malloc'd string. */
static char *
dump_string(const struct relay_config *cfg, int only_set)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	if (f == NULL)
		T_FAIL("open_memstream");
	T_OK(relay_config_dump(cfg, f, only_set));
	fclose(f);
	return s;
}

/* ---- defaults and units -------------------------------------------------- */

TEST(relay_config_defaults)
{
	struct relay_config cfg;
	unsigned ncpu = uv_available_parallelism();

	T_OK(relay_config_default(&cfg));
	T_TRUE(cfg.file == NULL);
	T_TRUE(cfg.myhostname != NULL && cfg.myhostname[0] != '\0');
	T_EQ(cfg.nlisten, 1);
	T_STREQ(cfg.listen[0].addr, "127.0.0.1:2525");
	T_EQ(cfg.listen[0].tls, 0);
	T_EQ(cfg.listen[0].proxy, 0);
	T_STREQ(cfg.admin_listen, "127.0.0.1:9025");
	T_EQ(cfg.mynetworks.n, 2);
	T_STREQ(cfg.mynetworks.v[0], "127.0.0.0/8");
	T_STREQ(cfg.mynetworks.v[1], "[::1]/128");
	T_TRUE(cfg.mynetworks_nl != NULL);
	T_TRUE(cfg.proxy_trusted_nl == NULL);
	T_TRUE(cfg.authdb == NULL);
	T_STREQ(cfg.relayhost, "");
	T_EQ(cfg.message_size_limit, 10240000);
	T_EQ(cfg.smtpd_recipient_limit, 1000);
	T_EQ(cfg.smtpd_client_connection_count_limit, 50);
	T_EQ(cfg.max_connections, 10000);
	T_EQ(cfg.smtpd_timeout, 300);
	T_EQ(cfg.smtpd_data_timeout, 300);
	T_EQ(cfg.smtpd_idle_timeout, 3600);
	T_EQ(cfg.smtpd_hard_error_limit, 20);
	T_EQ(cfg.smtpd_junk_command_limit, 100);
	T_EQ(cfg.smtpd_forbid_bare_newline, SMTP_BARE_REJECT);
	T_STREQ(cfg.smtpd_tls_cert_file, "./var/tls/cert.pem");
	T_STREQ(cfg.smtpd_tls_key_file, "./var/tls/key.pem");
	T_EQ(cfg.smtpd_tls_self_signed, 1);
	T_STREQ(cfg.smtpd_auth_file, "");
	T_EQ(cfg.smtpd_proxy_trusted_networks.n, 0);
	T_STREQ(cfg.spool_dir, "./var/spool");
	T_EQ(cfg.workers, ncpu > 256 ? 256 : ncpu);
	T_EQ(cfg.signing_threads, ncpu > 1024 ? 1024 : ncpu);
	T_EQ(cfg.spool_commit_window, 1000);
	T_EQ(cfg.spool_commit_batch, 256);
	T_EQ(cfg.ndkim_sign, 0);
	T_EQ(cfg.dkim_hcanon, DKIM_CANON_RELAXED);
	T_EQ(cfg.dkim_bcanon, DKIM_CANON_RELAXED);
	T_STREQ(cfg.dkim_headers, dkim_default_headers);
	T_EQ(cfg.log_level, LOG_INFO);
	T_TRUE(cfg.signtab != NULL);
	T_EQ(relay_config_line(&cfg, "listen"), 0);
	T_EQ(relay_config_line(&cfg, "no_such_setting"), -1);
	relay_config_free(&cfg);
	relay_config_free(&cfg);     /* freeing twice is harmless: zeroed */
}

TEST(relay_config_units)
{
	static const struct {
		const char *line;
		size_t off, size;
		unsigned long long want;
	} cases[] = {
#define U(line, f, want) { line, offsetof(struct relay_config, f), \
	sizeof(((struct relay_config *)0)->f), want }
		U("message_size_limit = 10240000", message_size_limit, 10240000),
		U("message_size_limit = 10k", message_size_limit, 10000),
		U("message_size_limit = 10kb", message_size_limit, 10240),
		U("message_size_limit = 10m", message_size_limit, 10000000),
		U("message_size_limit = 10MB", message_size_limit, 10485760),
		U("message_size_limit = 4gb", message_size_limit, 4294967296ULL),
		U("message_size_limit = 0", message_size_limit, 0),
		U("smtpd_timeout = 300s", smtpd_timeout, 300),
		U("smtpd_timeout = 5m", smtpd_timeout, 300),
		U("smtpd_timeout = 2h", smtpd_timeout, 7200),
		U("smtpd_timeout = 45", smtpd_timeout, 45),
		U("smtpd_timeout = 1d", smtpd_timeout, 86400),
		U("smtpd_idle_timeout = 7d", smtpd_idle_timeout, 604800),
		U("smtpd_idle_timeout = 1w", smtpd_idle_timeout, 604800),
		U("spool_commit_window = 2ms", spool_commit_window, 2000),
		U("spool_commit_window = 1s", spool_commit_window, 1000000),
		U("spool_commit_window = 500", spool_commit_window, 500),
		U("spool_commit_window = 250us", spool_commit_window, 250),
		U("workers = 3", workers, 3),
		U("signing_threads = 16", signing_threads, 16),
		U("smtpd_recipient_limit = 100000", smtpd_recipient_limit, 100000),
		U("smtpd_client_connection_count_limit = 0",
		    smtpd_client_connection_count_limit, 0),
		U("smtpd_tls_self_signed = no", smtpd_tls_self_signed, 0),
		U("smtpd_tls_self_signed = YES", smtpd_tls_self_signed, 1),
		U("smtpd_forbid_bare_newline = normalize", smtpd_forbid_bare_newline,
		    SMTP_BARE_NORMALIZE),
		U("smtpd_forbid_bare_newline = no", smtpd_forbid_bare_newline,
		    SMTP_BARE_ALLOW),
		U("log_level = debug", log_level, LOG_DEBUG),
		U("log_level = warning", log_level, LOG_WARNING),
		U("dkim_canonicalization = simple", dkim_bcanon, DKIM_CANON_SIMPLE),
		U("dkim_canonicalization = relaxed/simple", dkim_hcanon,
		    DKIM_CANON_RELAXED),
#undef U
	};
	struct relay_config cfg;
	unsigned long long got;
	struct msgs m;
	char text[256], *dir = enter_tmpdir();
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(text, sizeof(text), "%s\n", cases[i].line);
		if (load_text(text, &cfg, &m) != 0)
			T_FAIL("%s: %s", cases[i].line, m.buf);
		T_EQ(m.n, 0);
		if (cases[i].size == sizeof(uint64_t))
			got = *(uint64_t *)((char *)&cfg + cases[i].off);
		else if (cases[i].size == sizeof(unsigned))
			got = *(unsigned *)((char *)&cfg + cases[i].off);
		else
			T_FAIL("field size %zu", cases[i].size);
		if (got != cases[i].want)
			T_FAIL("%s: got %llu, want %llu", cases[i].line, got,
			    cases[i].want);
		T_EQ(relay_config_line(&cfg, "no_such_setting"), -1);
		relay_config_free(&cfg);
	}
	leave_tmpdir(dir);
}

TEST(relay_config_syntax)
{
	struct relay_config cfg;
	struct msgs m;
	char *dir = enter_tmpdir();

	/* comments, blank lines, continuation, '#' inside a value, CRLF */
	T_OK(load_text(
	    "# a comment\n"
	    "\n"
	    "   # an indented comment\n"
	    "mynetworks = 10.0.0.0/8,\n"
	    "    192.168.0.0/16\n"
	    "# a comment inside a continued setting\n"
	    "\t[2001:db8::]/32\n"
	    "listen=127.0.0.1:2526 \r\n"
	    "listen = [::1]:2526 tls\n"
	    "listen = 127.0.0.2:2526 proxy tls\n"
	    "smtpd_proxy_trusted_networks = 10.1.2.3\n"
	    "relayhost = [smtp.example.net]:587\n"
	    "spool_dir = /var/spool/signet#1\n"
	    "mynetworks = 172.16.0.0/12\n", &cfg, &m));
	T_EQ(m.n, 0);
	T_EQ(cfg.mynetworks.n, 4);
	T_STREQ(cfg.mynetworks.v[0], "10.0.0.0/8");
	T_STREQ(cfg.mynetworks.v[1], "192.168.0.0/16");
	T_STREQ(cfg.mynetworks.v[2], "[2001:db8::]/32");
	T_STREQ(cfg.mynetworks.v[3], "172.16.0.0/12");
	T_EQ(relay_config_line(&cfg, "mynetworks"), 4);
	T_EQ(cfg.nlisten, 3);
	T_STREQ(cfg.listen[0].addr, "127.0.0.1:2526");
	T_STREQ(cfg.listen[1].addr, "[::1]:2526");
	T_EQ(cfg.listen[1].tls, 1);
	T_EQ(cfg.listen[1].proxy, 0);
	T_EQ(cfg.listen[2].tls, 1);
	T_EQ(cfg.listen[2].proxy, 1);
	T_EQ(cfg.listen_line[2], 10);
	T_TRUE(cfg.proxy_trusted_nl != NULL);
	T_STREQ(cfg.relayhost, "[smtp.example.net]:587");
	T_STREQ(cfg.spool_dir, "/var/spool/signet#1");
	relay_config_free(&cfg);

	/* empty lists are allowed where documented */
	T_OK(load_text("mynetworks =\n", &cfg, &m));
	T_EQ(cfg.mynetworks.n, 0);
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

/* ---- errors -------------------------------------------------------------- */

TEST(relay_config_error_texts)
{
	struct relay_config cfg;
	struct msgs m;
	char *dir = enter_tmpdir();

	expect_errors("mynetwork = 10.0.0.0/8\n",
	    "t.conf:1: unknown setting \"mynetwork\"; did you mean "
	    "\"mynetworks\"?\n");
	expect_errors("\n\nMessage_Size_Limit = 1\n",
	    "t.conf:3: unknown setting \"Message_Size_Limit\"; did you mean "
	    "\"message_size_limit\"?\n");
	expect_errors("frobnicate = 1\n",
	    "t.conf:1: unknown setting \"frobnicate\"\n");
	expect_errors("myhostname relay.example.com\n",
	    "t.conf:1: myhostname: expected \"name = value\"\n");
	expect_errors("= 5\n", "t.conf:1: expected a setting name\n");
	expect_errors("  mynetworks = 10.0.0.0/8\n",
	    "t.conf:1: continuation line (it starts with a blank) without a "
	    "setting above it\n");
	expect_errors("smtpd_recipient_limit = many\n",
	    "t.conf:1: smtpd_recipient_limit: \"many\" is not a number\n");
	expect_errors("smtpd_recipient_limit = 0\n",
	    "t.conf:1: smtpd_recipient_limit: 0 out of range [1, 100000]\n");
	expect_errors("smtpd_recipient_limit = -1\n",
	    "t.conf:1: smtpd_recipient_limit: \"-1\" is not a number\n");
	expect_errors("smtpd_recipient_limit = 99999999999999999999999\n",
	    "t.conf:1: smtpd_recipient_limit: 99999999999999999999999 out of "
	    "range [1, 100000]\n");
	expect_errors("message_size_limit = 5gb\n",
	    "t.conf:1: message_size_limit: 5gb out of range [0, 4gb]\n");
	expect_errors("message_size_limit = 10q\n",
	    "t.conf:1: message_size_limit: \"10q\" is not a size (a number, "
	    "optionally followed by k, kb, m, mb, g or gb)\n");
	expect_errors("smtpd_timeout = 5x\n",
	    "t.conf:1: smtpd_timeout: \"5x\" is not a time (a number, "
	    "optionally followed by s, m, h, d or w)\n");
	expect_errors("smtpd_timeout = 2d\n",
	    "t.conf:1: smtpd_timeout: 2d out of range [1s, 1d]\n");
	expect_errors("smtpd_timeout = 0\n",
	    "t.conf:1: smtpd_timeout: 0 out of range [1s, 1d]\n");
	expect_errors("spool_commit_window = 2s\n",
	    "t.conf:1: spool_commit_window: 2s out of range [0us, 1s]\n");
	expect_errors("workers = lots\n",
	    "t.conf:1: workers: \"lots\" is not a number or auto\n");
	expect_errors("smtpd_tls_self_signed = maybe\n",
	    "t.conf:1: smtpd_tls_self_signed: \"maybe\" is not yes or no\n");
	expect_errors("smtpd_forbid_bare_newline = sometimes\n",
	    "t.conf:1: smtpd_forbid_bare_newline: \"sometimes\" is not yes, "
	    "normalize or no\n");
	expect_errors("log_level = chatty\n",
	    "t.conf:1: log_level: \"chatty\" is not error, warning, notice, "
	    "info or debug\n");
	expect_errors("dkim_canonicalization = relaxed/loose\n",
	    "t.conf:1: dkim_canonicalization: \"relaxed/loose\" is not "
	    "HEADER/BODY, each simple or relaxed\n");
	expect_errors("spool_dir =\n", "t.conf:1: spool_dir: empty value\n");
	expect_errors("spool_dir = /var/my spool\n",
	    "t.conf:1: spool_dir: \"/var/my spool\": blanks in a path are not "
	    "supported\n");
	expect_errors("myhostname = -bad-.example\n",
	    "t.conf:1: myhostname: \"-bad-.example\" is not a host name\n");
	expect_errors("relayhost = [smtp.example.net:25\n",
	    "t.conf:1: relayhost: \"[smtp.example.net:25\" is not host, "
	    "host:port, [host] or [host]:port\n");
	expect_errors("admin_listen = localhost:9025\n",
	    "t.conf:1: admin_listen: \"localhost:9025\" is not ADDRESS:PORT (an "
	    "IPv4 address, or an IPv6 address in brackets)\n");
	expect_errors("listen = ::1:25\n",
	    "t.conf:1: listen: \"::1:25\" is not ADDRESS:PORT (an IPv4 "
	    "address, or an IPv6 address in brackets)\n");
	expect_errors("listen = 127.0.0.1:70000\n",
	    "t.conf:1: listen: \"127.0.0.1:70000\" is not ADDRESS:PORT (an IPv4 "
	    "address, or an IPv6 address in brackets)\n");
	expect_errors("listen = 127.0.0.1:25 ssl\n",
	    "t.conf:1: listen: 127.0.0.1:25: unknown option \"ssl\" (options "
	    "are tls and proxy)\n");
	expect_errors("listen = 127.0.0.1:25\n# x\nlisten = 127.0.0.1:25 tls\n",
	    "t.conf:3: listen: 127.0.0.1:25: already given at line 1\n");
	expect_errors("listen = [::1]:25\nlisten = [0:0::1]:25\n",
	    "t.conf:2: listen: [0:0::1]:25: already given at line 1\n");
	/* The reason after "mynetworks: " is smtp_netlist_parse's. */
	T_EQ(load_text("\nmynetworks = 10.0.0.0/8 10.0.0.0/33\n", &cfg, &m),
	    -EINVAL);
	T_EQ(m.n, 1);
	T_TRUE(strncmp(m.buf, "t.conf:2: mynetworks: bad network ", 34) == 0);
	T_TRUE(strstr(m.buf, "10.0.0.0/33") != NULL);
	relay_config_free(&cfg);
	T_EQ(load_text("smtpd_proxy_trusted_networks = 10.0.0.1/8 x\n", &cfg, &m),
	    -EINVAL);
	T_EQ(m.n, 1);
	T_TRUE(strncmp(m.buf, "t.conf:1: smtpd_proxy_trusted_networks: ", 40) == 0);
	relay_config_free(&cfg);
	expect_errors("smtpd_tls_cert_file =\nsmtpd_tls_key_file =\n"
	    "listen = 127.0.0.1:465 tls\n",
	    "t.conf:3: listen: 127.0.0.1:465 tls: needs smtpd_tls_cert_file\n");
	expect_errors("smtpd_tls_key_file =\n",
	    "t.conf: smtpd_tls_cert_file and smtpd_tls_key_file go together: "
	    "set both or neither\n");
	expect_errors("listen = 127.0.0.1:2525 proxy\n",
	    "t.conf:1: listen: 127.0.0.1:2525 proxy: needs "
	    "smtpd_proxy_trusted_networks\n");
	expect_errors("admin_listen = 127.0.0.1:2525\n",
	    "t.conf:1: admin_listen: 127.0.0.1:2525 is also an SMTP listener\n");
	expect_errors("dkim_signed_headers = Subject:To\n",
	    "t.conf:1: dkim_signed_headers: must include From (RFC 6376 5.4)\n");
	expect_errors("smtpd_auth_file = /nonexistent/passwd\n",
	    "t.conf:1: smtpd_auth_file: /nonexistent/passwd: No such file or "
	    "directory\n");
	expect_errors("spool_dir = a\tb\x01\n",
	    "t.conf:1: spool_dir: control character in value\n");
	leave_tmpdir(dir);
}

TEST(relay_config_error_file)
{
	struct relay_config cfg;
	struct msgs m = { 0 };

	T_EQ(relay_config_load("/nonexistent/relay.conf", &cfg, collect, &m),
	    -ENOENT);
	T_STREQ(m.buf, "/nonexistent/relay.conf: cannot read: No such file or "
	    "directory\n");
	relay_config_free(&cfg);
}

TEST(relay_config_error_nul)
{
	struct relay_config cfg;
	struct msgs m = { 0 };
	char *dir = enter_tmpdir();
	FILE *f = fopen("t.conf", "w");

	T_TRUE(f != NULL);
	fwrite("workers = 2\nspool_dir = a\0b\nworkers = 3\n", 1, 40, f);
	fclose(f);
	T_EQ(relay_config_load("t.conf", &cfg, collect, &m), -EINVAL);
	T_STREQ(m.buf, "t.conf:2: NUL byte in line\n"
	    "t.conf:3: warning: workers: overrides the value at line 1\n");
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

TEST(relay_config_duplicate_warns)
{
	struct relay_config cfg;
	struct msgs m;
	char *dir = enter_tmpdir();

	T_OK(load_text("message_size_limit = 1m\n"
	    "message_size_limit = 2m\n", &cfg, &m));
	T_STREQ(m.buf, "t.conf:2: warning: message_size_limit: overrides the "
	    "value at line 1\n");
	T_EQ(cfg.message_size_limit, 2000000);
	T_EQ(relay_config_line(&cfg, "message_size_limit"), 2);
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

TEST(relay_config_many_errors)
{
	char *dir = enter_tmpdir();

	/* Every problem is reported, in order; good lines around them count. */
	expect_errors(
	    "workers = 2\n"
	    "smtpd_timout = 30s\n"
	    "smtpd_recipient_limit = 0\n"
	    "# comment\n"
	    "listen = 127.0.0.1:26\n"
	    "   bogus\n"
	    "smtpd_tls_self_signed = perhaps\n"
	    "listen = 127.0.0.1:25 tls proxy\n"
	    "workers = 1000\n",
	    "t.conf:2: unknown setting \"smtpd_timout\"; did you mean "
	    "\"smtpd_timeout\"?\n"
	    "t.conf:3: smtpd_recipient_limit: 0 out of range [1, 100000]\n"
	    "t.conf:5: listen: 127.0.0.1:26: unknown option \"bogus\" (options "
	    "are tls and proxy)\n"
	    "t.conf:7: smtpd_tls_self_signed: \"perhaps\" is not yes or no\n"
	    "t.conf:9: warning: workers: overrides the value at line 1\n"
	    "t.conf:9: workers: 1000 out of range [1, 256]\n"
	    "t.conf:8: listen: 127.0.0.1:25 proxy: needs "
	    "smtpd_proxy_trusted_networks\n");
	leave_tmpdir(dir);
}

/* ---- dkim_sign ----------------------------------------------------------- */

/* make_key - generate a key and write it as PEM to path. */
static void
make_key(enum dkim_alg alg, const char *path)
{
	struct dkim_key *k;

	T_OK(dkim_key_generate(alg, 1024, &k));
	T_OK(dkim_key_write_pem(k, path));
	dkim_key_free(k);
}

TEST(relay_config_dkim_sign)
{
	struct relay_config cfg;
	struct msgs m;
	char *dir = enter_tmpdir();

	make_key(DKIM_ALG_RSA_SHA256, "rsa.pem");
	make_key(DKIM_ALG_ED25519_SHA256, "ed.pem");
	T_OK(load_text(
	    "dkim_sign = Example.COM. sel1 rsa.pem\n"
	    "dkim_sign = other.org s ed.pem\n"
	    "dkim_sign = example.com sel2 ed.pem ed25519-sha256\n"
	    "dkim_sign = example.com sel3 rsa.pem rsa-sha256\n", &cfg, &m));
	T_EQ(m.n, 0);
	T_EQ(cfg.ndkim_sign, 4);
	T_STREQ(cfg.dkim_sign[0].domain, "example.com");
	T_STREQ(cfg.dkim_sign[0].selector, "sel1");
	T_STREQ(cfg.dkim_sign[0].keyfile, "rsa.pem");
	T_EQ(cfg.dkim_sign[0].alg, DKIM_ALG_RSA_SHA256);
	T_EQ(cfg.dkim_sign[0].line, 1);
	T_EQ(cfg.dkim_sign[1].alg, DKIM_ALG_ED25519_SHA256);
	T_EQ(cfg.dkim_sign[2].line, 3);
	T_TRUE(cfg.dkim_sign[3].key != NULL);
	relay_config_free(&cfg);

	expect_errors("dkim_sign = example.com sel1 missing.pem\n",
	    "t.conf:1: dkim_sign: missing.pem: No such file or directory\n");
	expect_errors("dkim_sign = example.com sel1 ed.pem rsa-sha256\n",
	    "t.conf:1: dkim_sign: ed.pem: the key is ed25519-sha256, not "
	    "rsa-sha256\n");
	expect_errors("dkim_sign = example.com sel1 ed.pem ed25519\n",
	    "t.conf:1: dkim_sign: \"ed25519\" is not an algorithm (rsa-sha256 "
	    "or ed25519-sha256)\n");
	expect_errors("dkim_sign = example.com sel1\n",
	    "t.conf:1: dkim_sign: expected DOMAIN SELECTOR KEYFILE "
	    "[ALGORITHM]\n");
	expect_errors("dkim_sign = example..com sel1 rsa.pem\n",
	    "t.conf:1: dkim_sign: \"example..com\" is not a domain name\n");
	expect_errors("dkim_sign = example.com sel/1 rsa.pem\n",
	    "t.conf:1: dkim_sign: \"sel/1\" is not a selector\n");
	expect_errors("dkim_sign = example.com sel1 rsa.pem\n"
	    "dkim_sign = EXAMPLE.com sel1 ed.pem\n",
	    "t.conf:2: dkim_sign: example.com selector sel1: already given at "
	    "line 1\n");
	write_text("bad.pem", "-----BEGIN PRIVATE KEY-----\nnot a key\n"
	    "-----END PRIVATE KEY-----\n");
	memset(&m, 0, sizeof(m));
	write_text("t.conf", "dkim_sign = example.com sel1 bad.pem\n");
	T_EQ(relay_config_load("t.conf", &cfg, collect, &m), -EINVAL);
	T_EQ(m.n, 1);
	T_TRUE(strncmp(m.buf, "t.conf:1: dkim_sign: bad.pem: ", 30) == 0);
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

TEST(relay_config_dkim_sign_limit)
{
	char text[2048], want[256], *dir = enter_tmpdir();
	size_t n = 0;
	int i;

	make_key(DKIM_ALG_ED25519_SHA256, "ed.pem");
	for (i = 0; i <= DKIM_MAX_SIGS; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
		    "dkim_sign = example.com s%d ed.pem\n", i);
	snprintf(want, sizeof(want), "t.conf:%d: dkim_sign: example.com: more "
	    "than %d signatures\n", DKIM_MAX_SIGS + 1, DKIM_MAX_SIGS);
	expect_errors(text, want);
	leave_tmpdir(dir);
}

/* ---- the signing table --------------------------------------------------- */

TEST(relay_sign_lookup_table)
{
	static const char msg[] = "From: Alice <alice@example.com>\r\n"
	    "To: bob@example.net\r\nSubject: hi\r\n\r\nHello.\r\n";
	struct dkim_sign_params p[DKIM_MAX_SIGS];
	struct smtp_sign_request rq = { 0 };
	struct dkim_signer *s;
	struct relay_config cfg;
	struct msgs m;
	char *dir = enter_tmpdir(), *sig, reason[64];
	size_t siglen;
	int n, i;

	make_key(DKIM_ALG_RSA_SHA256, "rsa.pem");
	make_key(DKIM_ALG_ED25519_SHA256, "ed.pem");
	T_OK(load_text(
	    "dkim_sign = other.org zz ed.pem\n"
	    "dkim_sign = example.com rsa1 rsa.pem\n"
	    "dkim_sign = a.example aa ed.pem\n"
	    "dkim_sign = example.com ed1 ed.pem\n"
	    "dkim_canonicalization = relaxed/simple\n"
	    "dkim_signed_headers = from, subject\n", &cfg, &m));

	rq.from_domain = "example.com";
	n = relay_sign_lookup(&cfg, &rq, p, DKIM_MAX_SIGS, reason,
	    sizeof(reason));
	T_EQ(n, 2);
	T_STREQ(p[0].domain, "example.com");
	T_STREQ(p[0].selector, "rsa1");
	T_EQ(p[0].alg, DKIM_ALG_RSA_SHA256);
	T_STREQ(p[1].selector, "ed1");
	T_EQ(p[1].alg, DKIM_ALG_ED25519_SHA256);
	T_EQ(p[0].hcanon, DKIM_CANON_RELAXED);
	T_EQ(p[0].bcanon, DKIM_CANON_SIMPLE);
	T_STREQ(p[0].headers, "from:subject");

	/* The parameters sign a message as they are. */
	T_TRUE((s = dkim_signer_new()) != NULL);
	for (i = 0; i < n; i++)
		T_OK(dkim_signer_add(s, &p[i]));
	T_OK(dkim_signer_write(s, msg, sizeof(msg) - 1));
	T_OK(dkim_signer_finish(s, &sig, &siglen));
	T_TRUE(strstr(sig, "s=rsa1") != NULL);
	T_TRUE(strstr(sig, "s=ed1") != NULL);
	T_TRUE(strstr(sig, "c=relaxed/simple") != NULL);
	free(sig);
	dkim_signer_free(s);
	for (i = 0; i < n; i++)
		dkim_key_free(p[i].key);

	/* max is honoured; the rest keeps the file's order */
	T_EQ(relay_sign_lookup(&cfg, &rq, p, 1, reason, sizeof(reason)), 1);
	T_STREQ(p[0].selector, "rsa1");
	dkim_key_free(p[0].key);

	/* exact domains only; no From, unsigned */
	rq.from_domain = "sub.example.com";
	T_EQ(relay_sign_lookup(&cfg, &rq, p, DKIM_MAX_SIGS, reason,
	    sizeof(reason)), 0);
	rq.from_domain = "example.co";
	T_EQ(relay_sign_lookup(&cfg, &rq, p, DKIM_MAX_SIGS, reason,
	    sizeof(reason)), 0);
	rq.from_domain = "zzz.org";
	T_EQ(relay_sign_lookup(&cfg, &rq, p, DKIM_MAX_SIGS, reason,
	    sizeof(reason)), 0);
	rq.from_domain = NULL;
	T_EQ(relay_sign_lookup(&cfg, &rq, p, DKIM_MAX_SIGS, reason,
	    sizeof(reason)), 0);
	rq.from_domain = "other.org";
	T_EQ(relay_sign_lookup(&cfg, &rq, p, DKIM_MAX_SIGS, reason,
	    sizeof(reason)), 1);
	T_STREQ(p[0].selector, "zz");
	dkim_key_free(p[0].key);

	/* The table outlives the configuration's own key references. */
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

/* ---- relay.conf, dump, to_smtp ------------------------------------------- */

TEST(relay_config_shipped_file)
{
	struct relay_config cfg, def;
	char path[PATH_MAX], *a, *b;
	struct msgs m = { 0 };

	snprintf(path, sizeof(path), "%s/relay.conf", test_srcdir());
	if (relay_config_load(path, &cfg, collect, &m) != 0 || m.n != 0)
		T_FAIL("%s:\n%s", path, m.buf);
	/* relay.conf documents the defaults: it means the same as no file. */
	T_OK(relay_config_default(&def));
	a = dump_string(&cfg, 0);
	b = dump_string(&def, 0);
	T_STREQ(a, b);
	T_TRUE(relay_config_line(&cfg, "dkim_signed_headers") > 0);
	/* The two without a fixed default are there as commented examples. */
	T_EQ(relay_config_line(&cfg, "myhostname"), 0);
	T_EQ(relay_config_line(&cfg, "dkim_sign"), 0);
	free(a);
	free(b);
	a = read_text(path);
	T_TRUE(strstr(a, "\n#myhostname = ") != NULL);
	T_TRUE(strstr(a, "\n#dkim_sign = ") != NULL);
	free(a);
	relay_config_free(&cfg);
	relay_config_free(&def);
}

TEST(relay_config_dump_roundtrip)
{
	struct relay_config cfg, again;
	struct msgs m;
	char *dir = enter_tmpdir(), *a, *b;

	make_key(DKIM_ALG_ED25519_SHA256, "ed.pem");
	T_OK(load_text(
	    "myhostname = relay.example.org\n"
	    "mynetworks = 10.0.0.0/8, 192.0.2.1\n"
	    "relayhost = smtp.example.net:2525\n"
	    "listen = 127.0.0.1:2600\n"
	    "listen = [::1]:2601 tls proxy\n"
	    "smtpd_proxy_trusted_networks = 127.0.0.1\n"
	    "admin_listen =\n"
	    "message_size_limit = 20mb\n"
	    "smtpd_timeout = 90s\n"
	    "smtpd_idle_timeout = 2h\n"
	    "spool_commit_window = 1500us\n"
	    "smtpd_forbid_bare_newline = normalize\n"
	    "smtpd_tls_self_signed = no\n"
	    "workers = 3\n"
	    "dkim_sign = example.org s1 ed.pem\n"
	    "dkim_canonicalization = simple/relaxed\n"
	    "dkim_signed_headers = From To Subject\n"
	    "log_level = notice\n", &cfg, &m));
	a = dump_string(&cfg, 0);
	T_TRUE(strstr(a, "message_size_limit = 20971520\n") != NULL);
	T_TRUE(strstr(a, "smtpd_timeout = 90s\n") != NULL);
	T_TRUE(strstr(a, "smtpd_idle_timeout = 7200s\n") != NULL);
	T_TRUE(strstr(a, "spool_commit_window = 1500us\n") != NULL);
	T_TRUE(strstr(a, "listen = [::1]:2601 tls proxy\n") != NULL);
	T_TRUE(strstr(a, "\nadmin_listen =\n") != NULL);
	T_TRUE(strstr(a, "dkim_sign = example.org s1 ed.pem ed25519-sha256\n")
	    != NULL);
	T_TRUE(strstr(a, "dkim_signed_headers = From:To:Subject\n") != NULL);
	T_TRUE(strstr(a, "log_level = notice\n") != NULL);
	write_text("dump.conf", a);
	memset(&m, 0, sizeof(m));
	if (relay_config_load("dump.conf", &again, collect, &m) != 0 || m.n != 0)
		T_FAIL("dump.conf:\n%s\n%s", m.buf, a);
	b = dump_string(&again, 0);
	T_STREQ(a, b);
	free(a);
	free(b);
	/* only_set: postconf -n */
	a = dump_string(&cfg, 1);
	T_TRUE(strstr(a, "workers = 3\n") != NULL);
	T_TRUE(strstr(a, "signing_threads") == NULL);
	free(a);
	relay_config_free(&again);
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

TEST(relay_config_to_smtp_tls)
{
	struct relay_config cfg;
	struct smtp_config sc;
	struct queue_config qc;
	struct stat st;
	struct msgs m;
	char err[512], *dir = enter_tmpdir();

	/* Check mode never writes the self-signed pair... */
	T_OK(load_text("myhostname = relay.example.org\n", &cfg, &m));
	T_OK(relay_config_to_smtp(&cfg, &sc, RELAY_SMTP_CHECK, err,
	    sizeof(err)));
	T_TRUE(sc.tls == NULL);
	T_TRUE(stat("var/tls/cert.pem", &st) != 0);
	T_STREQ(sc.hostname, "relay.example.org");
	T_EQ(sc.nlisten, 1);
	T_TRUE(sc.mynetworks == cfg.mynetworks_nl);
	T_EQ(sc.message_size_limit, 10240000);
	T_EQ(sc.recipient_limit, 1000);
	T_EQ(sc.conn_limit, 10000);
	T_EQ(sc.conn_per_client, 50);
	T_EQ(sc.cmd_timeout_s, 300);
	T_EQ(sc.bare_newline, SMTP_BARE_REJECT);
	T_TRUE(sc.sign_lookup == relay_sign_lookup);
	T_TRUE(sc.event == relay_metrics_smtp_event);
	T_TRUE(sc.log == relay_log_hook);
	T_TRUE(sc.arg == (void *)&cfg);

	/* ... a real start does, in a directory it creates ... */
	T_OK(relay_config_to_smtp(&cfg, &sc, 0, err, sizeof(err)));
	T_TRUE(sc.tls != NULL);
	T_OK(stat("var/tls/cert.pem", &st));
	T_OK(stat("var/tls/key.pem", &st));
	T_EQ(st.st_mode & 0077, 0);
	SSL_CTX_free(sc.tls);

	/* ... and check mode then loads the pair to check it. */
	T_OK(relay_config_to_smtp(&cfg, &sc, RELAY_SMTP_CHECK, err,
	    sizeof(err)));
	T_TRUE(sc.tls != NULL);
	SSL_CTX_free(sc.tls);
	relay_config_to_queue(&cfg, &qc);
	T_STREQ(qc.spool_dir, "./var/spool");
	T_EQ(qc.commit_window_us, 1000);
	T_EQ(qc.max_batch, 256);
	T_TRUE(qc.event == relay_metrics_queue_event);
	relay_config_free(&cfg);

	/* Without self-signing a missing certificate is an error. */
	T_OK(load_text("\nsmtpd_tls_cert_file = nocert.pem\n"
	    "smtpd_tls_key_file = nokey.pem\nsmtpd_tls_self_signed = no\n",
	    &cfg, &m));
	T_EQ(relay_config_to_smtp(&cfg, &sc, RELAY_SMTP_CHECK, err, sizeof(err)),
	    -EINVAL);
	T_TRUE(strncmp(err, "t.conf:2: smtpd_tls_cert_file: ", 31) == 0);
	relay_config_free(&cfg);

	/* TLS off */
	T_OK(load_text("smtpd_tls_cert_file =\nsmtpd_tls_key_file =\n", &cfg, &m));
	T_OK(relay_config_to_smtp(&cfg, &sc, 0, err, sizeof(err)));
	T_TRUE(sc.tls == NULL);
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

/* ---- log ----------------------------------------------------------------- */

TEST(relay_log_format)
{
	char *dir = enter_tmpdir(), buf[4096], want[64];
	int fd, saved;
	ssize_t n;

	if ((fd = open("log", O_RDWR | O_CREAT | O_TRUNC, 0600)) == -1 ||
	    (saved = dup(2)) == -1 || dup2(fd, 2) == -1)
		T_FAIL("redirecting stderr: %s", strerror(errno));
	relay_log_open(0, LOG_INFO);
	relay_log(LOG_WARNING, "spool %s: full", "a\r\nb");
	relay_log(LOG_DEBUG, "not shown");
	relay_log_hook(NULL, LOG_INFO, "from a hook");
	relay_log_set_level(LOG_DEBUG);
	relay_log(LOG_DEBUG, "shown");
	dup2(saved, 2);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	T_TRUE(n > 0);
	buf[n] = '\0';
	snprintf(want, sizeof(want), "Z signet[%ld]: ", (long)getpid());
	T_TRUE(strstr(buf, want) != NULL);
	T_TRUE(buf[4] == '-' && buf[10] == 'T');
	T_TRUE(strstr(buf, "]: warning: spool a??b: full\n") != NULL);
	T_TRUE(strstr(buf, "not shown") == NULL);
	T_TRUE(strstr(buf, "]: from a hook\n") != NULL);
	T_TRUE(strstr(buf, "]: debug: shown\n") != NULL);
	close(fd);
	leave_tmpdir(dir);
}

/* ---- metrics ------------------------------------------------------------- */

/* sample - the value of the sample line that starts with "name{...} ". */
static double
sample(const char *text, const char *name)
{
	char key[512];
	const char *p;
	size_t len;

	len = (size_t)snprintf(key, sizeof(key), "\n%s ", name);
	if ((p = strstr(text, key)) == NULL)
		T_FAIL("no sample %s in:\n%s", name, text);
	return strtod(p + len, NULL);
}

/* feed_events - a little traffic through both hooks. */
static void
feed_events(void)
{
	int i;

	relay_metrics_init();
	for (i = 0; i < 3; i++)
		relay_metrics_smtp_event(NULL, SMTP_EV_CONN_OPEN, 1, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_CONN_CLOSE, 1, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_ACCEPTED, 2048, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_ACCEPTED, 4096, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_REJECTED, 1, "relay");
	relay_metrics_smtp_event(NULL, SMTP_EV_REJECTED, 1, "relay");
	relay_metrics_smtp_event(NULL, SMTP_EV_REJECTED, 1, "size");
	relay_metrics_smtp_event(NULL, SMTP_EV_REJECTED, 1, "a\"b\\c\nd");
	relay_metrics_smtp_event(NULL, SMTP_EV_BYTES_IN, 6144, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_SIGNED, 1, "rsa-sha256 example.com");
	relay_metrics_smtp_event(NULL, SMTP_EV_SIGNED, 1, "rsa-sha256 example.com");
	relay_metrics_smtp_event(NULL, SMTP_EV_SIGNED, 1,
	    "ed25519-sha256 example.com");
	relay_metrics_smtp_event(NULL, SMTP_EV_SIGN_SECONDS, 0.0007, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_SIGN_SECONDS, 0.003, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_SIGN_SECONDS, 20, NULL);
	relay_metrics_smtp_event(NULL, SMTP_EV_DATA_TO_250, 0.004, NULL);
	relay_metrics_queue_event(NULL, QUEUE_EV_FSYNC_BATCH, 3);
	relay_metrics_queue_event(NULL, QUEUE_EV_FSYNC_BATCH, 300);
	relay_metrics_queue_event(NULL, QUEUE_EV_FSYNC_SECONDS, 0.002);
	relay_metrics_queue_event(NULL, QUEUE_EV_COMMITTED, 1);
	relay_metrics_queue_event(NULL, QUEUE_EV_COMMITTED, 1);
	relay_metrics_queue_event(NULL, QUEUE_EV_WRITE_ERROR, 1);
	relay_metrics_queue_add(5);
}

TEST(relay_metrics_render_parse)
{
	char *text, *line, *save, *copy, family[128];
	const char *p, *names[] = {
		"signet_connections_current", "signet_connections_total",
		"signet_messages_accepted_total", "signet_messages_rejected_total",
		"signet_bytes_received_total", "signet_signatures_total",
		"signet_signing_seconds", "signet_accept_seconds",
		"signet_spool_fsync_seconds", "signet_spool_messages_per_fsync",
		"signet_queue_messages", "process_start_time_seconds",
	};
	double prev = -1, v;
	size_t len, i, nbuckets = 0;

	feed_events();
	T_TRUE((text = relay_metrics_render(&len)) != NULL);
	T_EQ(strlen(text), len);
	T_EQ(sample(text, "signet_connections_current"), 2);
	T_EQ(sample(text, "signet_connections_total"), 3);
	T_EQ(sample(text, "signet_messages_accepted_total"), 2);
	T_EQ(sample(text, "signet_messages_rejected_total{reason=\"relay\"}"), 2);
	T_EQ(sample(text, "signet_messages_rejected_total{reason=\"size\"}"), 1);
	T_EQ(sample(text,
	    "signet_messages_rejected_total{reason=\"a\\\"b\\\\c\\nd\"}"), 1);
	T_EQ(sample(text, "signet_bytes_received_total"), 6144);
	T_EQ(sample(text, "signet_signatures_total{algorithm=\"rsa-sha256\","
	    "domain=\"example.com\"}"), 2);
	T_EQ(sample(text, "signet_signatures_total{algorithm=\"ed25519-sha256\","
	    "domain=\"example.com\"}"), 1);
	T_EQ(sample(text, "signet_queue_messages"), 7);
	T_EQ(sample(text, "signet_spool_write_errors_total"), 1);
	T_EQ(sample(text, "signet_signing_seconds_bucket{le=\"0.0005\"}"), 0);
	T_EQ(sample(text, "signet_signing_seconds_bucket{le=\"0.001\"}"), 1);
	T_EQ(sample(text, "signet_signing_seconds_bucket{le=\"0.005\"}"), 2);
	T_EQ(sample(text, "signet_signing_seconds_bucket{le=\"5\"}"), 2);
	T_EQ(sample(text, "signet_signing_seconds_bucket{le=\"+Inf\"}"), 3);
	T_EQ(sample(text, "signet_signing_seconds_count"), 3);
	v = sample(text, "signet_signing_seconds_sum");
	T_TRUE(v > 20.0036 && v < 20.0038);
	T_EQ(sample(text, "signet_spool_messages_per_fsync_bucket{le=\"4\"}"), 1);
	T_EQ(sample(text, "signet_spool_messages_per_fsync_bucket{le=\"+Inf\"}"),
	    2);
	T_TRUE(sample(text, "process_start_time_seconds") > 1.6e9);

	/* Every family has HELP then TYPE before its samples. */
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(family, sizeof(family), "# HELP %s ", names[i]);
		T_TRUE((p = strstr(text, family)) != NULL);
		snprintf(family, sizeof(family), "\n# TYPE %s ", names[i]);
		T_TRUE(strstr(text, family) > p);
	}
	T_TRUE(strstr(text, "# TYPE signet_signing_seconds histogram\n") != NULL);
	T_TRUE(strstr(text, "# TYPE signet_connections_total counter\n") != NULL);
	T_TRUE(strstr(text, "# TYPE signet_queue_messages gauge\n") != NULL);

	/* Buckets are cumulative: never decreasing, ending at _count. */
	copy = strdup(text);
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "signet_accept_seconds_bucket", 28) != 0)
			continue;
		v = strtod(strrchr(line, ' ') + 1, NULL);
		T_TRUE(v >= prev);
		prev = v;
		nbuckets++;
	}
	T_EQ(nbuckets, 15);
	T_EQ(prev, sample(text, "signet_accept_seconds_count"));
	T_EQ(text[len - 1], '\n');
	free(copy);
	free(text);
}

TEST(relay_metrics_promtool)
{
	char *text, path[] = "/tmp/signet-metrics-XXXXXX", cmd[256];
	size_t len;
	int fd, rc;

	feed_events();
	T_TRUE((text = relay_metrics_render(&len)) != NULL);
	if ((fd = mkstemp(path)) == -1 || write(fd, text, len) != (ssize_t)len)
		T_FAIL("%s: %s", path, strerror(errno));
	close(fd);
	/* promtool (Debian package prometheus) is a test dependency. */
	snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
	rc = system(cmd);
	unlink(path);
	if (rc != 0)
		T_FAIL("%s: exit %d\n%s", cmd, WEXITSTATUS(rc), text);
	free(text);
}

static void *
feed_thread(void *arg)
{
	feed_events();
	return NULL;
}

TEST(relay_metrics_threads)
{
	pthread_t t[4];
	char *text;
	int i;

	/* The hooks are called from every worker at once. */
	for (i = 0; i < 4; i++)
		T_OK(pthread_create(&t[i], NULL, feed_thread, NULL));
	for (i = 0; i < 4; i++)
		T_OK(pthread_join(t[i], NULL));
	T_TRUE((text = relay_metrics_render(NULL)) != NULL);
	T_EQ(sample(text, "signet_connections_total"), 12);
	T_EQ(sample(text, "signet_connections_current"), 8);
	T_EQ(sample(text, "signet_messages_rejected_total{reason=\"relay\"}"), 8);
	T_EQ(sample(text, "signet_signatures_total{algorithm=\"rsa-sha256\","
	    "domain=\"example.com\"}"), 8);
	T_EQ(sample(text, "signet_signing_seconds_count"), 12);
	/* one series per label set, however many threads raced to make it */
	T_TRUE(strstr(strstr(text, "reason=\"relay\"") + 1, "reason=\"relay\"")
	    == NULL);
	free(text);
}

/* ---- the admin HTTP server ----------------------------------------------- */

struct http_test {
	int port;
	uv_async_t done;
	struct relay_admin *admin;
	char resp[6][16384];
	int stopped;
};

/* http_exchange - send req to the server, read the answer until EOF. */
static void
http_exchange(int port, const char *req, size_t reqlen, char *out,
    size_t outlen)
{
	struct sockaddr_in sin;
	size_t got = 0;
	ssize_t n;
	int fd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		T_FAIL("connect: %s", strerror(errno));
	if (reqlen > 0 && write(fd, req, reqlen) != (ssize_t)reqlen)
		T_FAIL("write: %s", strerror(errno));
	while (got < outlen - 1 &&
	    (n = read(fd, out + got, outlen - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(fd);
}

/* http_get - http_exchange of a NUL-terminated request. */
static void
http_get(int port, const char *req, char *out, size_t outlen)
{
	http_exchange(port, req, strlen(req), out, outlen);
}

static void *
http_client(void *arg)
{
	struct http_test *h = arg;
	char big[9000];

	http_get(h->port, "GET /metrics HTTP/1.1\r\nHost: x\r\n"
	    "Accept: text/plain\r\n\r\n", h->resp[0], sizeof(h->resp[0]));
	http_get(h->port, "GET /other HTTP/1.1\r\n\r\n", h->resp[1],
	    sizeof(h->resp[1]));
	http_get(h->port, "POST /metrics HTTP/1.1\r\n\r\n", h->resp[2],
	    sizeof(h->resp[2]));
	/* more header bytes than the server takes, never ending */
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
	http_exchange(h->port, big, sizeof(big), h->resp[3], sizeof(h->resp[3]));
	http_get(h->port, "HEAD /metrics?x=1 HTTP/1.0\n\n", h->resp[4],
	    sizeof(h->resp[4]));
	http_get(h->port, "garbage\r\n\r\n", h->resp[5], sizeof(h->resp[5]));
	uv_async_send(&h->done);
	return NULL;
}

static void
http_stopped(void *arg)
{
	struct http_test *h = arg;

	h->stopped = 1;
}

static void
http_done(uv_async_t *a)
{
	struct http_test *h = a->data;

	relay_admin_stop(h->admin, http_stopped, h);
	uv_close((uv_handle_t *)a, NULL);
}

TEST(relay_admin_http)
{
	struct relay_admin *other;
	struct http_test h;
	uv_loop_t loop;
	pthread_t t;
	char addr[64], err[256];
	int i, rc = -1;

	memset(&h, 0, sizeof(h));
	relay_metrics_init();
	T_OK(uv_loop_init(&loop));
	for (i = 0; i < 50 && rc != 0; i++) {
		h.port = 20000 + (getpid() * 7 + i * 131) % 30000;
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", h.port);
		rc = relay_admin_start(&loop, addr, &h.admin, err, sizeof(err));
		if (rc != 0 && rc != UV_EADDRINUSE)
			T_FAIL("%s", err);
	}
	T_OK(rc);
	T_EQ(relay_admin_start(&loop, addr, &other, err, sizeof(err)),
	    UV_EADDRINUSE);
	T_TRUE(other == NULL);
	T_TRUE(strstr(err, "address already in use") != NULL);
	T_EQ(relay_admin_start(&loop, "localhost:1", &other, err, sizeof(err)),
	    -EINVAL);
	T_OK(uv_async_init(&loop, &h.done, http_done));
	h.done.data = &h;
	T_OK(pthread_create(&t, NULL, http_client, &h));
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(pthread_join(t, NULL));
	T_EQ(h.stopped, 1);
	T_OK(uv_loop_close(&loop));

	T_TRUE(strncmp(h.resp[0], "HTTP/1.1 200 OK\r\n", 17) == 0);
	T_TRUE(strstr(h.resp[0], "\r\nContent-Type: text/plain; version=0.0.4; "
	    "charset=utf-8\r\n") != NULL);
	T_TRUE(strstr(h.resp[0], "\r\nConnection: close\r\n") != NULL);
	T_TRUE(strstr(h.resp[0], "\r\n\r\n# HELP signet_connections_current ")
	    != NULL);
	T_TRUE(strstr(h.resp[0], "\nprocess_start_time_seconds ") != NULL);
	T_TRUE(strncmp(h.resp[1], "HTTP/1.1 404 Not Found\r\n", 24) == 0);
	T_TRUE(strncmp(h.resp[2], "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
	T_TRUE(strstr(h.resp[2], "\r\nAllow: GET, HEAD\r\n") != NULL);
	T_TRUE(strncmp(h.resp[3], "HTTP/1.1 431 ", 13) == 0);
	T_TRUE(strncmp(h.resp[4], "HTTP/1.1 200 OK\r\n", 17) == 0);
	T_TRUE(strstr(h.resp[4], "\r\n\r\n") != NULL);
	T_STREQ(strstr(h.resp[4], "\r\n\r\n"), "\r\n\r\n");
	T_TRUE(strncmp(h.resp[5], "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
}

/* ---- reload -------------------------------------------------------------- */

TEST(relay_config_restart_changes)
{
	struct relay_config old, new;
	struct msgs m;
	char *dir = enter_tmpdir();

	T_OK(load_text("workers = 2\nlog_level = info\n", &old, &m));
	T_OK(load_text("workers = 2\nlog_level = debug\n"
	    "message_size_limit = 1m\n", &new, &m));
	T_EQ(relay_config_restart_changes(&old, &new, collect, &m), 0);
	relay_config_free(&new);
	T_OK(load_text("log_level = debug\nworkers = 3\n"
	    "listen = 127.0.0.1:2600\n", &new, &m));
	T_EQ(relay_config_restart_changes(&old, &new, collect, &m), 2);
	T_STREQ(m.buf, "t.conf:3: warning: listen: changed; the new value "
	    "takes effect after a restart\n"
	    "t.conf:2: warning: workers: changed; the new value takes effect "
	    "after a restart\n");
	relay_config_free(&new);
	relay_config_free(&old);
	leave_tmpdir(dir);
}

/* ---- delivery settings (issue 4) ----------------------------------------- */

TEST(relay_config_delivery_defaults)
{
	struct relay_config cfg;
	struct queue_sched_config qs;

	T_OK(relay_config_default(&cfg));
	T_EQ(cfg.dns_resolvers.n, 0);
	T_EQ(cfg.smtp_tls_security_level, RELAY_TLS_MAY);
	T_STREQ(cfg.smtp_helo_name, "$myhostname");
	T_STREQ(cfg.helo_name, cfg.myhostname);
	T_EQ(cfg.minimal_backoff_time, 300);
	T_EQ(cfg.maximal_backoff_time, 4000);
	T_EQ(cfg.maximal_queue_lifetime, 5 * 86400);
	T_EQ(cfg.bounce_queue_lifetime, 5 * 86400);
	T_EQ(cfg.default_destination_concurrency_limit, 20);
	T_EQ(cfg.smtp_connection_limit, 100);
	T_EQ(cfg.smtp_connect_timeout, 30);
	T_EQ(cfg.smtp_helo_timeout, 300);
	T_EQ(cfg.smtp_data_done_timeout, 600);
	T_EQ(cfg.smtp_connection_cache_time_limit, 2);
	relay_config_to_sched(&cfg, &qs);
	T_TRUE(qs.spool_dir == cfg.spool_dir);
	T_EQ(qs.minimal_backoff_time, 300);
	T_EQ(qs.maximal_backoff_time, 4000);
	T_EQ(qs.maximal_queue_lifetime, 432000);
	T_EQ(qs.bounce_queue_lifetime, 432000);
	T_EQ(qs.destination_concurrency, 20);
	T_EQ(qs.max_jobs, 100);
	T_TRUE(qs.deliver == NULL && qs.bounce == NULL && qs.arg == NULL);
	relay_config_free(&cfg);
}

TEST(relay_config_delivery_parse)
{
	struct relay_config cfg;
	struct queue_sched_config qs;
	struct msgs m;
	char *dir = enter_tmpdir(), *a;

	T_OK(load_text(
	    "myhostname = relay.example.org\n"
	    "dns_resolvers = 127.0.0.53, 192.0.2.1:5353 [::1]:53\n"
	    "    2001:db8::1 [2001:db8::2]\n"
	    "smtp_tls_security_level = encrypt\n"
	    "minimal_backoff_time = 1m\n"
	    "maximal_backoff_time = 1h\n"
	    "maximal_queue_lifetime = 2d\n"
	    "bounce_queue_lifetime = 0\n"
	    "default_destination_concurrency_limit = 5\n"
	    "smtp_connection_limit = 7\n"
	    "smtp_connect_timeout = 5s\n"
	    "smtp_helo_timeout = 1m\n"
	    "smtp_data_done_timeout = 10m\n"
	    "smtp_connection_cache_time_limit = 0\n", &cfg, &m));
	T_EQ(m.n, 0);
	T_EQ(cfg.dns_resolvers.n, 5);
	T_STREQ(cfg.dns_resolvers.v[1], "192.0.2.1:5353");
	T_STREQ(cfg.dns_resolvers.v[4], "[2001:db8::2]");
	T_EQ(cfg.smtp_tls_security_level, RELAY_TLS_ENCRYPT);
	T_STREQ(cfg.helo_name, "relay.example.org");
	T_EQ(cfg.minimal_backoff_time, 60);
	T_EQ(cfg.maximal_backoff_time, 3600);
	T_EQ(cfg.maximal_queue_lifetime, 172800);
	T_EQ(cfg.bounce_queue_lifetime, 0);
	T_EQ(cfg.smtp_connect_timeout, 5);
	T_EQ(cfg.smtp_helo_timeout, 60);
	T_EQ(cfg.smtp_data_done_timeout, 600);
	T_EQ(cfg.smtp_connection_cache_time_limit, 0);
	relay_config_to_sched(&cfg, &qs);
	T_EQ(qs.minimal_backoff_time, 60);
	T_EQ(qs.destination_concurrency, 5);
	T_EQ(qs.max_jobs, 7);
	a = dump_string(&cfg, 1);
	T_TRUE(strstr(a, "dns_resolvers = 127.0.0.53 192.0.2.1:5353 [::1]:53 "
	    "2001:db8::1 [2001:db8::2]\n") != NULL);
	T_TRUE(strstr(a, "smtp_tls_security_level = encrypt\n") != NULL);
	T_TRUE(strstr(a, "maximal_queue_lifetime = 172800s\n") != NULL);
	T_TRUE(strstr(a, "smtp_helo_name") == NULL);
	free(a);
	relay_config_free(&cfg);

	T_OK(load_text("smtp_helo_name = out.example.net\n"
	    "smtp_tls_security_level = none\n", &cfg, &m));
	T_STREQ(cfg.helo_name, "out.example.net");
	T_EQ(cfg.smtp_tls_security_level, RELAY_TLS_NONE);
	a = dump_string(&cfg, 0);
	T_TRUE(strstr(a, "\nsmtp_helo_name = out.example.net\n") != NULL);
	free(a);
	relay_config_free(&cfg);

	/* $myhostname follows myhostname wherever it is set */
	T_OK(load_text("smtp_helo_name = $myhostname\n"
	    "myhostname = late.example.com\n", &cfg, &m));
	T_STREQ(cfg.helo_name, "late.example.com");
	relay_config_free(&cfg);
	leave_tmpdir(dir);
}

TEST(relay_config_delivery_errors)
{
	char *dir = enter_tmpdir();

	expect_errors("smtp_tls_security_level = verify\n",
	    "t.conf:1: smtp_tls_security_level: \"verify\" is not none, may "
	    "or encrypt\n");
	expect_errors("dns_resolvers = 127.0.0.1 dns.example.com\n",
	    "t.conf:1: dns_resolvers: \"dns.example.com\" is not ADDRESS or "
	    "ADDRESS:PORT (IPv6 in brackets when a port is given)\n");
	expect_errors("dns_resolvers = 127.0.0.1:0\n",
	    "t.conf:1: dns_resolvers: \"127.0.0.1:0\" is not ADDRESS or "
	    "ADDRESS:PORT (IPv6 in brackets when a port is given)\n");
	expect_errors("smtp_helo_name = bad_name!\n",
	    "t.conf:1: smtp_helo_name: \"bad_name!\" is not a host name or "
	    "$myhostname\n");
	expect_errors("smtp_helo_name =\n",
	    "t.conf:1: smtp_helo_name: empty value\n");
	expect_errors("minimal_backoff_time = 2h\n",
	    "t.conf:1: minimal_backoff_time (7200s) must not exceed "
	    "maximal_backoff_time (4000s)\n");
	expect_errors("\nmaximal_backoff_time = 100s\n",
	    "t.conf:2: minimal_backoff_time (300s) must not exceed "
	    "maximal_backoff_time (100s)\n");
	expect_errors("default_destination_concurrency_limit = 0\n",
	    "t.conf:1: default_destination_concurrency_limit: 0 out of range "
	    "[1, 10000]\n");
	expect_errors("smtp_connection_limit = lots\n",
	    "t.conf:1: smtp_connection_limit: \"lots\" is not a number\n");
	expect_errors("smtp_connect_timeout = 0\n",
	    "t.conf:1: smtp_connect_timeout: 0 out of range [1s, 1h]\n");
	expect_errors("maximal_queue_lifetime = 5y\n",
	    "t.conf:1: maximal_queue_lifetime: \"5y\" is not a time (a number, "
	    "optionally followed by s, m, h, d or w)\n");
	leave_tmpdir(dir);
}

TEST(relay_config_relayhost)
{
	static const struct {
		const char *v, *host;
		unsigned port;
		int mx;
	} good[] = {
		{ "smtp.example.net", "smtp.example.net", 25, 1 },
		{ "smtp.example.net:587", "smtp.example.net", 587, 1 },
		{ "[smtp.example.net]", "smtp.example.net", 25, 0 },
		{ "[smtp.example.net]:2525", "smtp.example.net", 2525, 0 },
		{ "[192.0.2.7]:26", "192.0.2.7", 26, 0 },
		{ "[2001:db8::1]:465", "2001:db8::1", 465, 0 },
		{ "[::1]", "::1", 25, 0 },
	};
	static const char *bad[] = {
		"[smtp.example.net", "smtp.example.net:", "smtp.example.net:0",
		"smtp.example.net:65536", "smtp.example.net:25x", "[]:25",
		"bad_host", "2001:db8::1", "[smtp.example.net]x",
		":25", "smtp..example.net", "[smtp.example.net]:-1",
	};
	struct relay_config cfg;
	struct msgs m;
	char host[256], want[256], *dir = enter_tmpdir(), text[128];
	unsigned port;
	size_t i;
	int mx;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (relay_relayhost_parse(good[i].v, host, sizeof(host), &port,
		    &mx) != 0)
			T_FAIL("%s refused", good[i].v);
		T_STREQ(host, good[i].host);
		T_EQ(port, good[i].port);
		T_EQ(mx, good[i].mx);
		snprintf(text, sizeof(text), "relayhost = %s\n", good[i].v);
		T_OK(load_text(text, &cfg, &m));
		T_STREQ(cfg.relayhost, good[i].v);
		relay_config_free(&cfg);
	}
	T_EQ(relay_relayhost_parse("[a.example]", host, 4, NULL, NULL), -EINVAL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (relay_relayhost_parse(bad[i], NULL, 0, NULL, NULL) !=
		    -EINVAL)
			T_FAIL("%s accepted", bad[i]);
		snprintf(text, sizeof(text), "relayhost = %s\n", bad[i]);
		snprintf(want, sizeof(want), "t.conf:1: relayhost: \"%s\" is "
		    "not host, host:port, [host] or [host]:port\n", bad[i]);
		expect_errors(text, want);
	}
	leave_tmpdir(dir);
}

TEST(relay_resolver_parse)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	T_OK(relay_resolver_parse("127.0.0.53", &ss));
	T_EQ(ss.ss_family, AF_INET);
	T_EQ(ntohs(sin->sin_port), 53);
	T_OK(relay_resolver_parse("127.0.0.1:5353", &ss));
	T_EQ(ntohs(sin->sin_port), 5353);
	T_OK(relay_resolver_parse("::1", &ss));
	T_EQ(ss.ss_family, AF_INET6);
	T_EQ(ntohs(sin6->sin6_port), 53);
	T_OK(relay_resolver_parse("[::1]", &ss));
	T_EQ(ntohs(sin6->sin6_port), 53);
	T_OK(relay_resolver_parse("[::1]:1053", &ss));
	T_EQ(ntohs(sin6->sin6_port), 1053);
	T_EQ(relay_resolver_parse("localhost", &ss), -EINVAL);
	T_EQ(relay_resolver_parse("[::1]x", &ss), -EINVAL);
	T_EQ(relay_resolver_parse("1.2.3.4:", &ss), -EINVAL);
	T_EQ(relay_resolver_parse("", &ss), -EINVAL);
}
