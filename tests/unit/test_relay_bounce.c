/*
 * test_relay_bounce.c - unit tests of relay/bounce.c: delivery status
 * notifications composed from real queue files (written by the spool on a
 * private loop), parsed back here (header, MIME structure, the
 * delivery-status fields, the enclosed original byte for byte), parsed
 * again by Python's email package, and queued as signed mail whose
 * signature verifies.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "relay/relay.h"
#include "tests/unit/test.h"

#define ORIG_SIG "DKIM-Signature: v=1; a=ed25519-sha256; d=example.org;\r\n" \
	"\ts=s1; b=AAAA\r\n"
#define ORIG_HDR "From: Alice <alice@example.org>\r\n" \
	"To: bob@example.net, carol@example.com\r\n" \
	"Subject: hello\r\n" \
	"Message-ID: <m1@example.org>\r\n"
#define ORIG_BODY "Hi Bob,\r\n\r\n--not-a-boundary\r\nbye\r\n"

struct spool_test {
	char dir[64];
	char path[128];
	char id[QUEUE_ID_LEN + 1];
	int done, status;
};

/* make_tmpdir - a fresh directory under /tmp. */
static void
make_tmpdir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/signet-bounce-XXXXXX");
	T_TRUE(mkdtemp(dir) != NULL);
}

static void
rm_rf(const char *dir)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	T_OK(system(cmd));
}

static void
on_commit(void *arg, int status, const char *id)
{
	struct spool_test *t = arg;

	t->done = 1;
	t->status = status;
	snprintf(t->id, sizeof(t->id), "%s", id);
}

static void
on_closed(void *arg)
{
	(*(int *)arg)++;
}

/* sample_env - alice@example.org to bob, carol, dave. */
static void
sample_env(struct queue_envelope *e, enum queue_ret ret, const char *envid)
{
	static struct queue_rcpt r[3];

	memset(e, 0, sizeof(*e));
	memset(r, 0, sizeof(r));
	r[0].addr = "bob@example.net";
	r[0].orcpt = "rfc822;Bob@Example.NET";
	r[1].addr = "carol@example.com";
	r[2].addr = "dave@example.com";
	e->mail_from = "alice@example.org";
	e->envid = (char *)(uintptr_t)envid;
	e->ret = ret;
	e->nrcpt = 3;
	e->rcpt = r;
	e->helo = "client.example.org";
	e->client_addr = "192.0.2.1";
	e->arrival = 1767323045;        /* Fri, 02 Jan 2026 03:04:05 +0000 */
}

/* spool_one - queue msg (with sig, may be NULL) in t->dir; t->path set. */
static void
spool_one(struct spool_test *t, const struct queue_envelope *env,
    const char *sig, const char *msg, size_t len)
{
	struct queue_config qc;
	struct queue_spool *sp;
	struct queue_msg *m;
	uv_loop_t loop;
	int closed = 0;

	memset(&qc, 0, sizeof(qc));
	qc.spool_dir = t->dir;
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &qc, &sp));
	T_OK(queue_msg_new(sp, env, &m));
	queue_msg_write(m, msg, len);
	queue_msg_commit(m, sig, sig != NULL ? strlen(sig) : 0, on_commit, t);
	while (!t->done)
		uv_run(&loop, UV_RUN_ONCE);
	T_OK(t->status);
	queue_spool_close(sp, on_closed, &closed);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_EQ(closed, 1);
	T_OK(uv_loop_close(&loop));
	snprintf(t->path, sizeof(t->path), "%s/active/%s", t->dir, t->id);
}

/* A parsed report: the top header, and each MIME part's header and body. */
struct parsed {
	char *hdr;                 /* top header, NUL-terminated copy */
	char boundary[128];
	int nparts;
	char *phdr[4];             /* part headers */
	const char *body[4];       /* part bodies (into the message) */
	size_t bodylen[4];
};

/* header_value - the (unfolded) value of field name in hdr, malloc'd. */
static char *
header_value(const char *hdr, const char *name)
{
	const char *p = hdr, *e;
	size_t nlen = strlen(name);
	char *out, *o;

	for (;;) {
		if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':')
			break;
		if ((p = strstr(p, "\r\n")) == NULL)
			return NULL;
		p += 2;
	}
	p += nlen + 1;
	while (*p == ' ')
		p++;
	out = o = malloc(strlen(p) + 1);
	for (e = p; *e != '\0'; e++) {
		if (e[0] == '\r' && e[1] == '\n') {
			if (e[2] != ' ' && e[2] != '\t')
				break;
			e++;
			continue;
		}
		*o++ = *e;
	}
	*o = '\0';
	return out;
}

/* check_lines - CRLF only, every line at most 998 bytes. */
static void
check_lines(const char *p, size_t len)
{
	size_t i, line = 0;

	for (i = 0; i < len; i++) {
		if (p[i] == '\n')
			T_TRUE(i > 0 && p[i - 1] == '\r');
		if (p[i] == '\r')
			T_TRUE(i + 1 < len && p[i + 1] == '\n');
		if (p[i] == '\n')
			line = 0;
		else if (++line > 999)
			T_FAIL("line over 998 bytes at offset %zu", i);
	}
}

/* parse - split a composed report; aborts the test on bad structure. */
static void
parse(const char *msg, size_t len, struct parsed *pp)
{
	const char *e, *p, *next, *end = msg + len;
	char delim[160], *ct, *b;
	size_t dlen;

	memset(pp, 0, sizeof(*pp));
	check_lines(msg, len);
	T_TRUE((e = strstr(msg, "\r\n\r\n")) != NULL);
	pp->hdr = strndup(msg, (size_t)(e - msg) + 2);
	T_TRUE((ct = header_value(pp->hdr, "Content-Type")) != NULL);
	T_TRUE(strncmp(ct, "multipart/report; report-type=delivery-status;",
	    46) == 0);
	T_TRUE((b = strstr(ct, "boundary=\"")) != NULL);
	b += 10;
	*strchr(b, '"') = '\0';
	snprintf(pp->boundary, sizeof(pp->boundary), "%s", b);
	free(ct);
	dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", pp->boundary);
	p = memmem(e, (size_t)(end - e), delim, dlen);
	T_TRUE(p != NULL);
	for (;;) {
		p += dlen;
		if (p[0] == '-' && p[1] == '-') {
			T_TRUE(strcmp(p, "--\r\n") == 0);
			break;
		}
		T_TRUE(p[0] == '\r' && p[1] == '\n');
		p += 2;
		T_TRUE(pp->nparts < 4);
		next = memmem(p, (size_t)(end - p), delim, dlen);
		T_TRUE(next != NULL);
		T_TRUE((e = memmem(p, (size_t)(next - p), "\r\n\r\n", 4)) != NULL);
		pp->phdr[pp->nparts] = strndup(p, (size_t)(e - p) + 2);
		pp->body[pp->nparts] = e + 4;
		pp->bodylen[pp->nparts] = (size_t)(next - (e + 4));
		pp->nparts++;
		p = next;
	}
}

static void
parsed_free(struct parsed *pp)
{
	int i;

	free(pp->hdr);
	for (i = 0; i < pp->nparts; i++)
		free(pp->phdr[i]);
}

/* has - the part (or header) text contains s. */
static int
has(const char *p, size_t len, const char *s)
{
	return memmem(p, len, s, strlen(s)) != NULL;
}

/* compose_for - spool the sample, compose a bounce for failed. */
static char *
compose_for(struct spool_test *t, struct queue_envelope *env,
    const struct queue_failed *failed, size_t nfailed, size_t *len)
{
	static const char msg[] = ORIG_HDR "\r\n" ORIG_BODY;
	struct relay_bounce_in in;
	char *out;

	make_tmpdir(t->dir, sizeof(t->dir));
	spool_one(t, env, ORIG_SIG, msg, sizeof(msg) - 1);
	memset(&in, 0, sizeof(in));
	in.myhostname = "relay.example.org";
	in.id = t->id;
	in.path = t->path;
	in.env = env;
	in.failed = failed;
	in.nfailed = nfailed;
	in.now = 1767326645;            /* one hour after arrival */
	T_TRUE((out = relay_bounce_compose(&in, len)) != NULL);
	T_EQ(strlen(out), *len);
	return out;
}

TEST(relay_bounce_full)
{
	static const char orig[] = ORIG_SIG ORIG_HDR "\r\n" ORIG_BODY;
	struct queue_failed f[2] = {
		{ 0, "550 5.1.1 <bob@example.net>: Recipient address rejected: "
		    "User unknown in virtual mailbox table", 0 },
		{ 2, "connect to mx.example.com[192.0.2.9]:25: Connection "
		    "refused", 0 },
	};
	struct queue_envelope env;
	struct spool_test t = { 0 };
	struct parsed pp;
	char *out, *v;
	size_t len;

	sample_env(&env, QUEUE_RET_UNSET, NULL);
	out = compose_for(&t, &env, f, 2, &len);
	parse(out, len, &pp);

	/* the top header */
	T_STREQ((v = header_value(pp.hdr, "From")),
	    "Mail Delivery System <MAILER-DAEMON@relay.example.org>");
	free(v);
	T_STREQ((v = header_value(pp.hdr, "To")), "<alice@example.org>");
	free(v);
	T_STREQ((v = header_value(pp.hdr, "Subject")),
	    "Undelivered Mail Returned to Sender");
	free(v);
	T_STREQ((v = header_value(pp.hdr, "Auto-Submitted")), "auto-replied");
	free(v);
	T_STREQ((v = header_value(pp.hdr, "Date")),
	    "Fri, 02 Jan 2026 04:04:05 +0000");
	free(v);
	T_STREQ((v = header_value(pp.hdr, "MIME-Version")), "1.0");
	free(v);
	T_TRUE((v = header_value(pp.hdr, "Message-ID")) != NULL);
	T_TRUE(v[0] == '<' && strstr(v, "@relay.example.org>") != NULL);
	free(v);

	T_EQ(pp.nparts, 3);
	/* part 1: for people, every failed recipient and only those */
	T_STREQ((v = header_value(pp.phdr[0], "Content-Type")),
	    "text/plain; charset=us-ascii");
	free(v);
	T_TRUE(has(pp.body[0], pp.bodylen[0], "<bob@example.net>:"));
	T_TRUE(has(pp.body[0], pp.bodylen[0], "    550 5.1.1 <bob@example.net>:"));
	T_TRUE(has(pp.body[0], pp.bodylen[0], "mailbox table\r\n"));
	T_TRUE(has(pp.body[0], pp.bodylen[0], "<dave@example.com>:"));
	T_TRUE(has(pp.body[0], pp.bodylen[0], "Connection refused"));
	T_TRUE(!has(pp.body[0], pp.bodylen[0], "carol"));
	T_TRUE(has(pp.body[0], pp.bodylen[0], t.id));

	/* part 2: RFC 3464 fields */
	T_STREQ((v = header_value(pp.phdr[1], "Content-Type")),
	    "message/delivery-status");
	free(v);
	T_TRUE(has(pp.body[1], pp.bodylen[1],
	    "Reporting-MTA: dns; relay.example.org\r\n"));
	T_TRUE(has(pp.body[1], pp.bodylen[1],
	    "Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n"));
	T_TRUE(!has(pp.body[1], pp.bodylen[1], "Original-Envelope-Id"));
	T_TRUE(has(pp.body[1], pp.bodylen[1], "\r\n\r\n"
	    "Original-Recipient: rfc822;Bob@Example.NET\r\n"
	    "Final-Recipient: rfc822;bob@example.net\r\n"
	    "Action: failed\r\n"
	    "Status: 5.1.1\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient "
	    "address\r\n rejected: User unknown in virtual mailbox table\r\n"
	    "Last-Attempt-Date: Fri, 02 Jan 2026 04:04:05 +0000\r\n"));
	T_TRUE(has(pp.body[1], pp.bodylen[1], "\r\n\r\n"
	    "Final-Recipient: rfc822;dave@example.com\r\n"
	    "Action: failed\r\n"
	    "Status: 5.0.0\r\n"
	    "Diagnostic-Code: X-Signet; connect to mx.example.com[192.0.2.9]:25:\r\n"
	    " Connection refused\r\n"));

	/* part 3: the original as it went out, byte for byte */
	T_STREQ((v = header_value(pp.phdr[2], "Content-Type")),
	    "message/rfc822");
	free(v);
	T_MEMEQ(pp.body[2], pp.bodylen[2], orig, sizeof(orig) - 1);

	parsed_free(&pp);
	free(out);
	rm_rf(t.dir);
}

TEST(relay_bounce_hdrs_envid_orcpt)
{
	static const char hdrs[] = ORIG_SIG ORIG_HDR;
	struct queue_failed f[1] = {
		{ 0, "554 5.7.1 Service unavailable; Client host blocked", 0 },
	};
	struct queue_envelope env;
	struct spool_test t = { 0 };
	struct parsed pp;
	char *out, *v;
	size_t len;

	sample_env(&env, QUEUE_RET_HDRS, "QQ314159");
	out = compose_for(&t, &env, f, 1, &len);
	parse(out, len, &pp);
	T_EQ(pp.nparts, 3);
	T_TRUE(has(pp.body[1], pp.bodylen[1],
	    "Original-Envelope-Id: QQ314159\r\n"));
	T_TRUE(has(pp.body[1], pp.bodylen[1],
	    "Original-Recipient: rfc822;Bob@Example.NET\r\n"));
	T_TRUE(has(pp.body[1], pp.bodylen[1], "Status: 5.7.1\r\n"));
	T_STREQ((v = header_value(pp.phdr[2], "Content-Type")),
	    "text/rfc822-headers");
	free(v);
	/* the header fields only, no body */
	T_MEMEQ(pp.body[2], pp.bodylen[2], hdrs, sizeof(hdrs) - 1);
	T_TRUE(!has(out, len, "Hi Bob"));
	parsed_free(&pp);
	free(out);
	rm_rf(t.dir);
}

TEST(relay_bounce_expired)
{
	struct queue_failed f[2] = {
		{ 1, "451 4.3.0 Temporary lookup failure", 1 },
		{ 2, NULL, 1 },
	};
	struct queue_envelope env;
	struct spool_test t = { 0 };
	struct parsed pp;
	char *out;
	size_t len;

	sample_env(&env, QUEUE_RET_FULL, NULL);
	out = compose_for(&t, &env, f, 2, &len);
	parse(out, len, &pp);
	T_EQ(pp.nparts, 3);
	T_TRUE(has(pp.body[0], pp.bodylen[0], "message expired"));
	T_TRUE(has(pp.body[1], pp.bodylen[1],
	    "Final-Recipient: rfc822;carol@example.com\r\n"
	    "Action: failed\r\n"
	    "Status: 4.4.7\r\n"
	    "Diagnostic-Code: smtp; 451 4.3.0 Temporary lookup failure\r\n"));
	/* no reason: no Diagnostic-Code */
	T_TRUE(has(pp.body[1], pp.bodylen[1],
	    "Final-Recipient: rfc822;dave@example.com\r\n"
	    "Action: failed\r\n"
	    "Status: 4.4.7\r\n"
	    "Last-Attempt-Date: "));
	T_TRUE(!has(pp.body[1], pp.bodylen[1], "Original-Recipient"));
	parsed_free(&pp);
	free(out);
	rm_rf(t.dir);
}

TEST(relay_bounce_long_reason)
{
	struct queue_failed f[1] = { { 0, NULL, 0 } };
	struct queue_envelope env;
	struct spool_test t = { 0 };
	struct parsed pp;
	char *reason, *out, *v;
	size_t len, i, n;

	/* CR/LF and a 3000-byte word in the reply: folded, still one field */
	reason = malloc(4000);
	strcpy(reason, "550-5.2.2 mailbox full\r\n550 5.2.2 ");
	for (i = strlen(reason); i < 3500; i++)
		reason[i] = 'x';
	reason[i] = '\0';
	f[0].reason = reason;
	sample_env(&env, QUEUE_RET_UNSET, NULL);
	out = compose_for(&t, &env, f, 1, &len);
	parse(out, len, &pp);        /* checks CRLF and line lengths */
	T_EQ(pp.nparts, 3);
	T_TRUE(has(pp.body[1], pp.bodylen[1], "Status: 5.2.2\r\n"));
	/* unfolded, the field is the reply with blanks for CRLF */
	T_TRUE((v = header_value(pp.body[1], "Diagnostic-Code")) != NULL);
	T_TRUE(strncmp(v, "smtp; 550-5.2.2 mailbox full 550 5.2.2 xxx", 42) == 0);
	for (i = 0, n = 0; v[i] != '\0'; i++)
		n += v[i] == 'x';
	T_EQ(n, 3500 - 34 + 1);     /* and the x of "mailbox" */
	free(v);
	parsed_free(&pp);
	free(out);
	free(reason);
	rm_rf(t.dir);
}

TEST(relay_bounce_unreadable)
{
	struct queue_failed f[1] = { { 0, "550 5.1.1 unknown", 0 } };
	struct queue_envelope env;
	struct relay_bounce_in in;
	struct parsed pp;
	char *out;
	size_t len;

	sample_env(&env, QUEUE_RET_UNSET, NULL);
	memset(&in, 0, sizeof(in));
	in.myhostname = "relay.example.org";
	in.path = "/nonexistent/active/X";
	in.env = &env;
	in.failed = f;
	in.nfailed = 1;
	/* the report still goes out, without the original */
	T_TRUE((out = relay_bounce_compose(&in, &len)) != NULL);
	parse(out, len, &pp);
	T_EQ(pp.nparts, 2);
	parsed_free(&pp);
	free(out);
	/* never to the null sender, never about nothing */
	env.mail_from = "";
	T_TRUE(relay_bounce_compose(&in, &len) == NULL);
	T_EQ(errno, EINVAL);
	env.mail_from = "alice@example.org";
	in.nfailed = 0;
	T_TRUE(relay_bounce_compose(&in, &len) == NULL);
}

TEST(relay_bounce_python)
{
	static const char script[] =
	    "import email, email.policy, sys\n"
	    "m = email.message_from_binary_file(open(sys.argv[1], 'rb'),"
	    " policy=email.policy.default)\n"
	    "assert m.get_content_type() == 'multipart/report', m.get_content_type()\n"
	    "assert m.get_param('report-type') == 'delivery-status'\n"
	    "assert not m.defects, m.defects\n"
	    "p = m.get_payload()\n"
	    "assert [x.get_content_type() for x in p] == ['text/plain',"
	    " 'message/delivery-status', 'message/rfc822'], p\n"
	    "ds = p[1].get_payload()\n"
	    "assert ds[0]['Reporting-MTA'] == 'dns; relay.example.org', ds[0]\n"
	    "assert ds[1]['Final-Recipient'] == 'rfc822;bob@example.net'\n"
	    "assert ds[1]['Status'] == '5.1.1'\n"
	    "assert ds[2]['Final-Recipient'] == 'rfc822;dave@example.com'\n"
	    "inner = p[2].get_payload()[0]\n"
	    "assert inner['Subject'] == 'hello', inner['Subject']\n"
	    "assert inner['DKIM-Signature'] is not None\n"
	    "print('python ok')\n";
	struct queue_failed f[2] = {
		{ 0, "550 5.1.1 user unknown", 0 },
		{ 2, "550 5.7.1 no", 0 },
	};
	struct queue_envelope env;
	struct spool_test t = { 0 };
	char *out, mpath[160], spath[160], cmd[512];
	size_t len;
	FILE *fp;
	int rc;

	sample_env(&env, QUEUE_RET_UNSET, "E1");
	out = compose_for(&t, &env, f, 2, &len);
	snprintf(mpath, sizeof(mpath), "%s/dsn.eml", t.dir);
	snprintf(spath, sizeof(spath), "%s/check.py", t.dir);
	T_TRUE((fp = fopen(mpath, "wb")) != NULL);
	T_EQ(fwrite(out, 1, len, fp), len);
	T_OK(fclose(fp));
	T_TRUE((fp = fopen(spath, "w")) != NULL);
	fputs(script, fp);
	T_OK(fclose(fp));
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s", spath, mpath);
	rc = system(cmd);
	if (rc != 0)
		T_FAIL("%s: exit %d\n%s", cmd, WEXITSTATUS(rc), out);
	free(out);
	rm_rf(t.dir);
}

/* ---- queued and signed ----------------------------------------------------- */

struct txt_key {
	char *txt;
};

static int
txt_lookup(void *arg, const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	struct txt_key *k = arg;

	if (strcmp(domain, "relay.example.org") != 0 ||
	    strcmp(selector, "dsn") != 0) {
		snprintf(err, errlen, "no key");
		return DKIM_ENOKEY;
	}
	*txt = strdup(k->txt);
	return 0;
}

static int
feed_verifier(void *arg, const char *p, size_t len)
{
	return dkim_verifier_write(arg, p, len);
}

TEST(relay_bounce_queue_signed)
{
	static const char msg[] = ORIG_HDR "\r\n" ORIG_BODY;
	struct queue_failed f[1] = { { 1, "550 5.1.1 unknown user", 0 } };
	struct dkim_verify_result res[DKIM_MAX_SIGS + 1];
	struct queue_envelope env;
	struct relay_config cfg;
	struct spool_test t = { 0 }, b = { 0 };
	struct relay_bounce_in in;
	struct queue_config qc;
	struct queue_spool *sp;
	struct queue_file qf;
	struct dkim_verifier *v;
	struct dkim_key *k;
	struct txt_key tk;
	uv_loop_t loop;
	char conf[256], keyfile[160];
	int closed = 0, n;
	FILE *fp;

	sample_env(&env, QUEUE_RET_UNSET, NULL);
	make_tmpdir(t.dir, sizeof(t.dir));
	spool_one(&t, &env, NULL, msg, sizeof(msg) - 1);

	snprintf(keyfile, sizeof(keyfile), "%s/dsn.pem", t.dir);
	T_OK(dkim_key_generate(DKIM_ALG_ED25519_SHA256, 0, &k));
	T_OK(dkim_key_write_pem(k, keyfile));
	T_TRUE((tk.txt = dkim_key_txt(k)) != NULL);
	dkim_key_free(k);
	snprintf(conf, sizeof(conf), "%s/t.conf", t.dir);
	T_TRUE((fp = fopen(conf, "w")) != NULL);
	fprintf(fp, "myhostname = Relay.Example.ORG\n"
	    "dkim_sign = relay.example.org dsn %s\n", keyfile);
	T_OK(fclose(fp));
	T_OK(relay_config_load(conf, &cfg, NULL, NULL));

	memset(&in, 0, sizeof(in));
	in.id = t.id;
	in.path = t.path;
	in.env = &env;
	in.failed = f;
	in.nfailed = 1;
	memset(&qc, 0, sizeof(qc));
	qc.spool_dir = t.dir;
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &qc, &sp));
	T_OK(relay_bounce_queue(sp, &cfg, &in, on_commit, &b));
	while (!b.done)
		uv_run(&loop, UV_RUN_ONCE);
	T_OK(b.status);
	T_TRUE(strcmp(b.id, t.id) != 0);
	queue_spool_close(sp, on_closed, &closed);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));

	/* from <> to the sender, signed d=relay.example.org */
	snprintf(b.path, sizeof(b.path), "%s/active/%s", t.dir, b.id);
	T_OK(queue_file_read(b.path, &qf));
	T_STREQ(qf.env.mail_from, "");
	T_EQ(qf.env.nrcpt, 1);
	T_STREQ(qf.env.rcpt[0].addr, "alice@example.org");
	T_TRUE(qf.sig != NULL);
	T_TRUE(memmem(qf.sig, qf.siglen, "d=relay.example.org", 19) != NULL);
	T_TRUE((v = dkim_verifier_new(txt_lookup, &tk)) != NULL);
	T_OK(dkim_verifier_write(v, qf.sig, qf.siglen));
	T_OK(queue_file_message(b.path, feed_verifier, v));
	n = dkim_verifier_finish(v, time(NULL), res, DKIM_MAX_SIGS + 1);
	T_EQ(n, 1);
	if (!res[0].pass)
		T_FAIL("signature: %s", res[0].reason);
	dkim_verifier_free(v);
	queue_file_free(&qf);

	/* no dkim_sign line for myhostname: unsigned */
	relay_config_free(&cfg);
	T_TRUE((fp = fopen(conf, "w")) != NULL);
	fprintf(fp, "myhostname = other.example.org\n"
	    "dkim_sign = relay.example.org dsn %s\n", keyfile);
	T_OK(fclose(fp));
	T_OK(relay_config_load(conf, &cfg, NULL, NULL));
	memset(&b, 0, sizeof(b));
	closed = 0;
	T_OK(uv_loop_init(&loop));
	T_OK(queue_spool_new(&loop, &qc, &sp));
	T_OK(relay_bounce_queue(sp, &cfg, &in, on_commit, &b));
	while (!b.done)
		uv_run(&loop, UV_RUN_ONCE);
	T_OK(b.status);
	queue_spool_close(sp, on_closed, &closed);
	T_OK(uv_run(&loop, UV_RUN_DEFAULT));
	T_OK(uv_loop_close(&loop));
	snprintf(b.path, sizeof(b.path), "%s/active/%s", t.dir, b.id);
	T_OK(queue_file_read(b.path, &qf));
	T_TRUE(qf.sig == NULL);
	queue_file_free(&qf);

	relay_config_free(&cfg);
	free(tk.txt);
	rm_rf(t.dir);
}
