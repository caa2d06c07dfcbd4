/*
 * ctl.c - bin/signetctl, the operator's command-line tool.  Commands are
 * "signetctl [-c CONFIG] GROUP COMMAND [options]", dispatched from
 * ctl_cmds[].  The dkim group (keygen, sign, verify) drives the DKIM
 * engine in dkim/ exactly as the relay does, so the tool doubles as a way
 * to check the engine against other implementations.  The queue group
 * (list, show, flush, hold, release, delete) talks HTTP/1.1 to a running
 * node's admin server, at the admin_listen of CONFIG (or of the built-in
 * default), and prints its JSON answers as tables, or as they are with
 * `queue list --json`.  `dkim alignment` is the verifier's side of
 * managed keys (issue 5): is each signature aligned with the From domain,
 * plainly or implicitly (d= under an initial domain, s= naming the From
 * domain)?  `dns records` prints the two CNAMEs a customer domain publishes
 * to delegate its selectors to its tenant's initial domain (from the key
 * store; the initial_domain of CONFIG for a domain not in it).  The
 * managed key commands (tenant, domain, dkim enable|disable|rotate|show,
 * dns zone) are in ctl_keys.c, which also holds ctl_err and ctl_config
 * (see ctl_int.h); they exit 1 on failure and 2 on bad usage.
 *
 * Messages may have LF or CRLF line ends: input is read in chunks and each
 * bare LF becomes CRLF on the way (a CR ending one chunk is remembered for
 * the next), then streamed into the signer or verifier.  Errors are one
 * "signetctl: ..." line on stderr; usage errors exit 2, and so does every
 * sign and keygen failure; verify exits 1 when the message does not pass.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dkim/dkim.h"
#include "relay/ctl_int.h"
#include "relay/relay.h"

#define CTL_CHUNK (64 * 1024)        /* bytes read per read(2) */
#define CTL_TXT_MAX (64 * 1024)      /* largest key file or TXT answer */

struct ctl_cmd {
	const char *group;
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
};

static int ctl_dkim_keygen(int, char **);
static int ctl_dkim_sign(int, char **);
static int ctl_dkim_verify(int, char **);
static int ctl_dkim_alignment(int, char **);
static int ctl_dns_records(int, char **);
static int ctl_queue_list(int, char **);
static int ctl_queue_show(int, char **);
static int ctl_queue_flush(int, char **);
static int ctl_queue_hold(int, char **);
static int ctl_queue_release(int, char **);
static int ctl_queue_delete(int, char **);

static const struct ctl_cmd ctl_cmds[] = {
	{ "dkim", "keygen", ctl_dkim_keygen,
	    "[-a rsa|ed25519] [-b BITS] -o KEYFILE" },
	{ "dkim", "sign", ctl_dkim_sign,
	    "-d DOMAIN -s SELECTOR -k KEYFILE [-a rsa-sha256|ed25519-sha256]\n"
	    "\t\t[-c HEADER/BODY] [-H FIELD:FIELD...] [-t UNIXTIME] "
	    "[-x SECONDS] [FILE]" },
	{ "dkim", "verify", ctl_dkim_verify, "[--keys DIR] [FILE]" },
	{ "dkim", "alignment", ctl_dkim_alignment,
	    "[--initial-suffix SUFFIX] [FILE]" },
	{ "dkim", "enable", ctl_dkim_enable, "DOMAIN" },
	{ "dkim", "disable", ctl_dkim_disable, "DOMAIN" },
	{ "dkim", "rotate", ctl_dkim_rotate, "DOMAIN [--now] [--key-size N]" },
	{ "dkim", "show", ctl_dkim_show, "[DOMAIN] [--json]" },
	{ "tenant", "add", ctl_tenant_add,
	    "NAME INITIAL_DOMAIN [--user USER]... [--network NET]...\n"
	    "\t\t[--key-size N]" },
	{ "tenant", "list", ctl_tenant_list, "[--json]" },
	{ "domain", "add", ctl_domain_add,
	    "DOMAIN [--tenant NAME] [--key-size N]" },
	{ "domain", "remove", ctl_domain_remove, "DOMAIN" },
	{ "domain", "list", ctl_domain_list, "[--tenant NAME] [--json]" },
	{ "dns", "records", ctl_dns_records, "DOMAIN" },
	{ "dns", "zone", ctl_dns_zone, "[--tenant NAME]" },
	{ "queue", "list", ctl_queue_list, "[--json]" },
	{ "queue", "show", ctl_queue_show, "ID" },
	{ "queue", "flush", ctl_queue_flush, "[ID]" },
	{ "queue", "hold", ctl_queue_hold, "ID" },
	{ "queue", "release", ctl_queue_release, "ID" },
	{ "queue", "delete", ctl_queue_delete, "ID" },
};

#define CTL_NCMDS (sizeof(ctl_cmds) / sizeof(ctl_cmds[0]))

/* A growable byte buffer: the message kept for writing after signing. */
struct ctl_buf {
	char *p;
	size_t len, cap;
};

/* Where the verifier's key lookup looks: a directory, or DNS when NULL. */
struct ctl_keys {
	const char *dir;
};

/* ctl_usage - every command's synopsis on stderr; returns the usage exit. */
static int
ctl_usage(void)
{
	size_t i;

	fprintf(stderr, "usage: signetctl [-c CONFIG] GROUP COMMAND "
	    "[options]\n");
	for (i = 0; i < CTL_NCMDS; i++)
		fprintf(stderr, "       signetctl %s %s %s\n", ctl_cmds[i].group,
		    ctl_cmds[i].name, ctl_cmds[i].usage);
	fprintf(stderr, "       signetctl --version\n");
	return CTL_EXIT_USAGE;
}

/* ctl_badopt - report a getopt failure for command cmd; the usage exit. */
static int
ctl_badopt(const char *cmd, int ch, int opt, char **argv)
{
	if (ch == ':')
		ctl_err("dkim %s: option %s needs an argument", cmd,
		    argv[optind - 1]);
	else if (opt != 0)
		ctl_err("dkim %s: unknown option -%c (see signetctl help)",
		    cmd, opt);
	else
		ctl_err("dkim %s: unknown option %s (see signetctl help)",
		    cmd, argv[optind - 1]);
	return CTL_EXIT_USAGE;
}

/* ctl_parse_long - a whole decimal number in [min, max], or -1. */
static int
ctl_parse_long(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* ctl_buf_add - append len bytes; -ENOMEM when the buffer can't grow. */
static int
ctl_buf_add(struct ctl_buf *b, const char *p, size_t len)
{
	size_t cap;
	char *np;

	if (len > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	if (b->len + len > b->cap) {
		cap = b->cap ? b->cap : CTL_CHUNK;
		while (cap < b->len + len)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL)
			return -ENOMEM;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
	return 0;
}

/*
 * ctl_crlf - copy in to out turning each bare LF into CRLF; out holds 2 *
 * len bytes.  *cr says whether the byte before in (the end of the previous
 * chunk) was a CR.  Returns the output length.
 */
static size_t
ctl_crlf(const char *in, size_t len, char *out, int *cr)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		if (in[i] == '\n' && !*cr)
			out[o++] = '\r';
		out[o++] = in[i];
		*cr = in[i] == '\r';
	}
	return o;
}

/* The engine's two writers, under one signature for ctl_read_message. */
typedef int (*ctl_feed_cb)(void *arg, const char *p, size_t len);

/* ctl_feed_signer - dkim_signer_write for ctl_read_message. */
static int
ctl_feed_signer(void *arg, const char *p, size_t len)
{
	return dkim_signer_write(arg, p, len);
}

/* ctl_feed_verifier - dkim_verifier_write for ctl_read_message. */
static int
ctl_feed_verifier(void *arg, const char *p, size_t len)
{
	return dkim_verifier_write(arg, p, len);
}

/*
 * ctl_read_message - stream FILE (stdin for NULL or "-") through feed with
 * CRLF line ends, keeping a copy in keep when it is not NULL.  With keep,
 * the message is going out, so a last line without a line end gets its
 * CRLF, as SMTP would give it: verifiers disagree on how to canonicalize
 * an unterminated last line (trailing WSP on it, under relaxed), and this
 * way there is nothing to disagree on.  0; -1 after reporting an I/O
 * error; or feed's error (not reported).
 */
static int
ctl_read_message(const char *file, ctl_feed_cb feed, void *arg,
    struct ctl_buf *keep)
{
	char *in = NULL, *out = NULL, last = '\n';
	const char *name, *eol;
	int fd = 0, cr = 0, rc = 0;
	size_t olen;
	ssize_t n;

	if (file != NULL && strcmp(file, "-") != 0) {
		name = file;
		if ((fd = open(file, O_RDONLY | O_CLOEXEC)) == -1) {
			ctl_err("%s: %s", file, strerror(errno));
			rc = -1;
			goto fail;
		}
	} else
		name = "stdin";
	if ((in = malloc(CTL_CHUNK)) == NULL ||
	    (out = malloc(2 * CTL_CHUNK)) == NULL) {
		ctl_err("out of memory");
		rc = -1;
		goto fail;
	}
	for (;;) {
		n = read(fd, in, CTL_CHUNK);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			ctl_err("%s: %s", name, strerror(errno));
			rc = -1;
			goto fail;
		}
		if (n == 0)
			break;
		olen = ctl_crlf(in, (size_t)n, out, &cr);
		last = in[n - 1];
		if ((rc = feed(arg, out, olen)) != 0)
			goto fail;
		if (keep != NULL && ctl_buf_add(keep, out, olen) != 0) {
			ctl_err("%s: message too large for memory", name);
			rc = -1;
			goto fail;
		}
	}
	if (keep != NULL && last != '\n') {
		eol = last == '\r' ? "\n" : "\r\n";
		if ((rc = feed(arg, eol, strlen(eol))) != 0)
			goto fail;
		if (ctl_buf_add(keep, eol, strlen(eol)) != 0) {
			ctl_err("%s: message too large for memory", name);
			rc = -1;
			goto fail;
		}
	}
fail:
	if (fd > 0)
		close(fd);
	free(in);
	free(out);
	return rc;
}

/* ctl_write_out - write len bytes to stdout; 0 or -1 (reported). */
static int
ctl_write_out(const char *p, size_t len)
{
	if (len > 0 && fwrite(p, 1, len, stdout) != len) {
		ctl_err("stdout: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- dkim keygen ---------------------------------------------------------- */

static int
ctl_dkim_keygen(int argc, char **argv)
{
	static const struct option longopts[] = { { NULL, 0, NULL, 0 } };
	enum dkim_alg alg = DKIM_ALG_RSA_SHA256;
	struct dkim_key *key = NULL;
	const char *out = NULL, *bitsarg = NULL;
	long long bits = 2048;
	char *txt = NULL;
	int ch, rc = CTL_EXIT_USAGE, r;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":a:b:o:", longopts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			if (strcmp(optarg, "rsa") == 0 ||
			    strcmp(optarg, "rsa-sha256") == 0)
				alg = DKIM_ALG_RSA_SHA256;
			else if (strcmp(optarg, "ed25519") == 0 ||
			    strcmp(optarg, "ed25519-sha256") == 0)
				alg = DKIM_ALG_ED25519_SHA256;
			else {
				ctl_err("dkim keygen: -a %s: want rsa or ed25519",
				    optarg);
				goto fail;
			}
			break;
		case 'b':
			bitsarg = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		default:
			rc = ctl_badopt("keygen", ch, optopt, argv);
			goto fail;
		}
	}
	if (optind != argc) {
		ctl_err("dkim keygen: unexpected argument %s", argv[optind]);
		goto fail;
	}
	if (out == NULL || *out == '\0') {
		ctl_err("dkim keygen: -o KEYFILE is required");
		goto fail;
	}
	/* Ed25519 keys have one size: -b is ignored for them. */
	if (bitsarg != NULL && alg == DKIM_ALG_RSA_SHA256 &&
	    ctl_parse_long(bitsarg, 1024, 4096, &bits) != 0) {
		ctl_err("dkim keygen: -b %s: RSA key size must be 1024 to 4096 "
		    "bits", bitsarg);
		goto fail;
	}
	if ((r = dkim_key_generate(alg, (int)bits, &key)) != 0) {
		ctl_err("dkim keygen: %s", dkim_strerror(r));
		goto fail;
	}
	if ((r = dkim_key_write_pem(key, out)) != 0) {
		ctl_err("%s: %s", out, dkim_strerror(r));
		goto fail;
	}
	if ((txt = dkim_key_txt(key)) == NULL) {
		ctl_err("dkim keygen: out of memory");
		goto fail;
	}
	printf("%s\n", txt);
	if (fflush(stdout) != 0) {
		ctl_err("stdout: %s", strerror(errno));
		goto fail;
	}
	rc = 0;
fail:
	free(txt);
	dkim_key_free(key);
	return rc;
}

/* ---- dkim sign ------------------------------------------------------------ */

/*
 * ctl_name_ok - is s a plausible DNS name (letters, digits, '-', '_', '.',
 * no empty label)?  d= and s= come from the message, and in --keys mode
 * they become part of a path: this keeps "../" out.
 */
static int
ctl_name_ok(const char *s)
{
	size_t len = strlen(s), i;

	if (len == 0 || len > 253 || s[0] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '.' && (s[i + 1] == '.'))
			return 0;
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' &&
		    s[i] != '_' && s[i] != '.')
			return 0;
	}
	return 1;
}

/* ctl_list_has_from - does a colon-separated header list name From? */
static int
ctl_list_has_from(const char *list)
{
	const char *p = list, *e;
	size_t len;

	for (;;) {
		e = strchr(p, ':');
		len = e != NULL ? (size_t)(e - p) : strlen(p);
		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		if (len == 4 && strncasecmp(p, "from", 4) == 0)
			return 1;
		if (e == NULL)
			return 0;
		p = e + 1;
	}
}

static int
ctl_dkim_sign(int argc, char **argv)
{
	static const struct option longopts[] = { { NULL, 0, NULL, 0 } };
	struct dkim_sign_params sp;
	struct dkim_signer *signer = NULL;
	struct dkim_key *key = NULL;
	struct ctl_buf msg = { 0 };
	const char *keyfile = NULL, *algarg = NULL, *file = NULL;
	char *sig = NULL, err[512];
	long long v;
	size_t siglen;
	int ch, r, rc = CTL_EXIT_USAGE;

	memset(&sp, 0, sizeof(sp));
	sp.hcanon = DKIM_CANON_RELAXED;
	sp.bcanon = DKIM_CANON_RELAXED;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":d:s:k:a:c:H:t:x:", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'd':
			sp.domain = optarg;
			break;
		case 's':
			sp.selector = optarg;
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'a':
			algarg = optarg;
			break;
		case 'c':
			if (dkim_canon_parse(optarg, &sp.hcanon, &sp.bcanon) != 0) {
				ctl_err("dkim sign: -c %s: want simple or relaxed, "
				    "as HEADER/BODY", optarg);
				goto fail;
			}
			break;
		case 'H':
			if (!ctl_list_has_from(optarg)) {
				ctl_err("dkim sign: -H %s: the list must include "
				    "From (RFC 6376 5.4)", optarg);
				goto fail;
			}
			sp.headers = optarg;
			break;
		case 't':
			if (ctl_parse_long(optarg, 1, LLONG_MAX, &v) != 0 ||
			    (time_t)v != v) {
				ctl_err("dkim sign: -t %s: want a positive UNIX "
				    "time", optarg);
				goto fail;
			}
			sp.t = (time_t)v;
			break;
		case 'x':
			if (ctl_parse_long(optarg, 1, LONG_MAX, &v) != 0) {
				ctl_err("dkim sign: -x %s: want a positive number "
				    "of seconds", optarg);
				goto fail;
			}
			sp.x = (long)v;
			break;
		default:
			rc = ctl_badopt("sign", ch, optopt, argv);
			goto fail;
		}
	}
	if (argc - optind > 1) {
		ctl_err("dkim sign: unexpected argument %s", argv[optind + 1]);
		goto fail;
	}
	if (optind < argc)
		file = argv[optind];
	if (sp.domain == NULL || *sp.domain == '\0' ||
	    sp.selector == NULL || *sp.selector == '\0' ||
	    keyfile == NULL || *keyfile == '\0') {
		ctl_err("dkim sign: -d DOMAIN, -s SELECTOR and -k KEYFILE are "
		    "required");
		goto fail;
	}
	if (!ctl_name_ok(sp.domain) || !ctl_name_ok(sp.selector)) {
		ctl_err("dkim sign: -d %s -s %s: not a valid domain and selector",
		    sp.domain, sp.selector);
		goto fail;
	}
	if (algarg != NULL && dkim_alg_parse(algarg, &sp.alg) != 0) {
		ctl_err("dkim sign: -a %s: want rsa-sha256 or ed25519-sha256",
		    algarg);
		goto fail;
	}
	if ((r = dkim_key_load(keyfile, &key, err, sizeof(err))) != 0) {
		ctl_err("%s", err);
		goto fail;
	}
	if (algarg == NULL)
		sp.alg = dkim_key_alg(key);
	else if (sp.alg != dkim_key_alg(key)) {
		ctl_err("dkim sign: -a %s does not match the %s key in %s",
		    algarg, dkim_key_alg(key) == DKIM_ALG_ED25519_SHA256 ?
		    "Ed25519" : "RSA", keyfile);
		goto fail;
	}
	sp.key = key;
	if ((signer = dkim_signer_new()) == NULL) {
		ctl_err("out of memory");
		goto fail;
	}
	if ((r = dkim_signer_add(signer, &sp)) != 0) {
		ctl_err("dkim sign: d=%s s=%s: %s", sp.domain, sp.selector,
		    dkim_strerror(r));
		goto fail;
	}
	if ((r = ctl_read_message(file, ctl_feed_signer, signer, &msg)) != 0) {
		if (r != -1)
			ctl_err("%s: %s", file != NULL ? file : "stdin",
			    dkim_strerror(r));
		goto fail;
	}
	if ((r = dkim_signer_finish(signer, &sig, &siglen)) != 0) {
		ctl_err("%s: %s", file != NULL ? file : "stdin",
		    dkim_strerror(r));
		goto fail;
	}
	if (ctl_write_out(sig, siglen) != 0 || ctl_write_out(msg.p, msg.len) != 0)
		goto fail;
	if (fflush(stdout) != 0) {
		ctl_err("stdout: %s", strerror(errno));
		goto fail;
	}
	rc = 0;
fail:
	free(sig);
	free(msg.p);
	dkim_signer_free(signer);
	dkim_key_free(key);
	return rc;
}

/* ---- dkim verify ---------------------------------------------------------- */

/*
 * ctl_txt_text - the TXT value held in a key file: either the bare text
 * (trailing newline and surrounding blanks trimmed), or, when the file has
 * quoted strings as in a zone file, those strings joined (RFC 1035 5.1
 * escapes \X and \DDD; outside quotes, ';' starts a comment and everything
 * else, such as "( )" or "IN TXT", is skipped).  NULL on OOM.
 */
static char *
ctl_txt_text(const char *p, size_t len)
{
	const char *end = p + len;
	char *out, *o;
	int d;

	if ((out = malloc(len + 1)) == NULL)
		return NULL;
	o = out;
	if (memchr(p, '"', len) == NULL) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		while (end > p && isspace((unsigned char)end[-1]))
			end--;
		memcpy(out, p, (size_t)(end - p));
		out[end - p] = '\0';
		return out;
	}
	while (p < end) {
		if (*p == ';') {
			while (p < end && *p != '\n')
				p++;
			continue;
		}
		if (*p++ != '"')
			continue;
		while (p < end && *p != '"') {
			if (*p != '\\' || p + 1 == end) {
				*o++ = *p++;
				continue;
			}
			p++;
			if (end - p >= 3 && isdigit((unsigned char)p[0]) &&
			    isdigit((unsigned char)p[1]) &&
			    isdigit((unsigned char)p[2]) &&
			    (d = (p[0] - '0') * 100 + (p[1] - '0') * 10 +
			    (p[2] - '0')) <= 255) {
				*o++ = (char)d;
				p += 3;
			} else
				*o++ = *p++;
		}
		if (p < end)
			p++;
	}
	*o = '\0';
	return out;
}

/* ctl_read_small - read a whole small file; 0, or -errno (EFBIG if large). */
static int
ctl_read_small(const char *path, char **out, size_t *outlen)
{
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, rc = 0;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -errno;
	if ((buf = malloc(CTL_TXT_MAX + 1)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	for (;;) {
		n = read(fd, buf + len, CTL_TXT_MAX + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			rc = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CTL_TXT_MAX) {
			rc = -EFBIG;
			goto fail;
		}
	}
	*out = buf;
	*outlen = len;
	buf = NULL;
fail:
	free(buf);
	close(fd);
	return rc;
}

/*
 * ctl_lookup_dir - key lookup from DIR/<selector>._domainkey.<domain>.txt;
 * DNS names are case-insensitive, so a lower-cased name is tried second.
 */
static int
ctl_lookup_dir(const char *dir, const char *domain, const char *selector,
    char **txt, char *err, size_t errlen)
{
	char path[PATH_MAX], *buf = NULL, *lc;
	size_t len = 0;
	int r, rc = DKIM_ENOKEY;

	if (snprintf(path, sizeof(path), "%s/%s._domainkey.%s.txt", dir,
	    selector, domain) >= (int)sizeof(path)) {
		snprintf(err, errlen, "key file name too long");
		goto fail;
	}
	r = ctl_read_small(path, &buf, &len);
	if (r == -ENOENT) {
		for (lc = path + strlen(dir) + 1; *lc != '\0'; lc++)
			*lc = (char)tolower((unsigned char)*lc);
		r = ctl_read_small(path, &buf, &len);
		if (r == -ENOENT)
			snprintf(path, sizeof(path), "%s/%s._domainkey.%s.txt",
			    dir, selector, domain);
	}
	if (r != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		rc = r == -ENOMEM ? DKIM_ENOMEM : DKIM_ENOKEY;
		goto fail;
	}
	if ((*txt = ctl_txt_text(buf, len)) == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = DKIM_ENOMEM;
		goto fail;
	}
	rc = 0;
fail:
	free(buf);
	return rc;
}

/*
 * ctl_lookup_dns - the TXT record at <selector>._domainkey.<domain>, its
 * character-strings joined (RFC 6376 3.6.2.2).  With several TXT records,
 * the first that starts with "v=DKIM1" wins, else the first.
 */
static int
ctl_lookup_dns(const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	unsigned char *ans = NULL;
	const unsigned char *rd;
	char name[NS_MAXDNAME], *best = NULL, *cur = NULL;
	size_t rdlen, off, clen;
	ns_msg msg;
	ns_rr rr;
	int n, i, rc = DKIM_ENOKEY;

	if (snprintf(name, sizeof(name), "%s._domainkey.%s", selector,
	    domain) >= (int)sizeof(name)) {
		snprintf(err, errlen, "key name too long");
		goto fail;
	}
	if ((ans = malloc(CTL_TXT_MAX)) == NULL) {
		snprintf(err, errlen, "out of memory");
		rc = DKIM_ENOMEM;
		goto fail;
	}
	if ((n = res_query(name, ns_c_in, ns_t_txt, ans, CTL_TXT_MAX)) < 0) {
		switch (h_errno) {
		case HOST_NOT_FOUND:
			snprintf(err, errlen, "%s does not exist", name);
			break;
		case NO_DATA:
			snprintf(err, errlen, "no TXT record at %s", name);
			break;
		case TRY_AGAIN:
			snprintf(err, errlen, "temporary DNS failure "
			    "looking up %s", name);
			break;
		default:
			snprintf(err, errlen, "DNS lookup of %s failed",
			    name);
			break;
		}
		goto fail;
	}
	if (n > CTL_TXT_MAX)
		n = CTL_TXT_MAX;
	if (ns_initparse(ans, n, &msg) < 0) {
		snprintf(err, errlen, "malformed DNS answer for %s",
		    name);
		goto fail;
	}
	for (i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
			break;
		if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in)
			continue;
		rd = ns_rr_rdata(rr);
		rdlen = ns_rr_rdlen(rr);
		if ((cur = malloc(rdlen + 1)) == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = DKIM_ENOMEM;
			goto fail;
		}
		/* RFC 1035 3.3.14: one or more <character-string>s. */
		for (off = 0, clen = 0; off < rdlen; off += rd[off] + 1u) {
			if (off + 1 + rd[off] > rdlen)
				break;
			memcpy(cur + clen, rd + off + 1, rd[off]);
			clen += rd[off];
		}
		cur[clen] = '\0';
		if (best == NULL || (strncmp(best, "v=DKIM1", 7) != 0 &&
		    strncmp(cur, "v=DKIM1", 7) == 0)) {
			free(best);
			best = cur;
		} else
			free(cur);
		cur = NULL;
	}
	if (best == NULL) {
		snprintf(err, errlen, "no TXT record at %s", name);
		goto fail;
	}
	*txt = best;
	best = NULL;
	rc = 0;
fail:
	free(cur);
	free(best);
	free(ans);
	return rc;
}

/* ctl_lookup - the verifier's dkim_key_lookup_cb. */
static int
ctl_lookup(void *arg, const char *domain, const char *selector, char **txt,
    char *err, size_t errlen)
{
	struct ctl_keys *keys = arg;

	*txt = NULL;
	if (!ctl_name_ok(domain) || !ctl_name_ok(selector)) {
		snprintf(err, errlen, "d= or s= is not a valid DNS name");
		return DKIM_ENOKEY;
	}
	if (keys->dir != NULL)
		return ctl_lookup_dir(keys->dir, domain, selector, txt, err,
		    errlen);
	return ctl_lookup_dns(domain, selector, txt, err, errlen);
}

/* ctl_clean - copy s for printing, control and 8-bit bytes as '?'. */
static const char *
ctl_clean(const char *s, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < outlen; i++)
		out[i] = (unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f ?
		    '?' : s[i];
	out[i] = '\0';
	return out;
}

static int
ctl_dkim_verify(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "keys", required_argument, NULL, 'K' },
		{ NULL, 0, NULL, 0 },
	};
	struct dkim_verify_result res[DKIM_MAX_SIGS + 1];
	struct dkim_verifier *v = NULL;
	struct ctl_keys keys = { NULL };
	const char *file = NULL;
	char d[256], s[256], a[32], why[256];
	int ch, i, n, r, rc = CTL_EXIT_USAGE, ok;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (ch) {
		case 'K':
			keys.dir = optarg;
			break;
		default:
			rc = ctl_badopt("verify", ch, optopt, argv);
			goto fail;
		}
	}
	if (argc - optind > 1) {
		ctl_err("dkim verify: unexpected argument %s", argv[optind + 1]);
		goto fail;
	}
	if (optind < argc)
		file = argv[optind];
	if ((v = dkim_verifier_new(ctl_lookup, &keys)) == NULL) {
		ctl_err("out of memory");
		goto fail;
	}
	if ((r = ctl_read_message(file, ctl_feed_verifier, v, NULL)) != 0) {
		if (r != -1) {
			ctl_err("%s: %s", file != NULL ? file : "stdin",
			    dkim_strerror(r));
			rc = CTL_EXIT_FAIL;
		}
		goto fail;
	}
	n = dkim_verifier_finish(v, time(NULL), res, DKIM_MAX_SIGS + 1);
	if (n < 0) {
		ctl_err("%s: %s", file != NULL ? file : "stdin",
		    dkim_strerror(n));
		rc = CTL_EXIT_FAIL;
		goto fail;
	}
	if (n == 0) {
		printf("none: no DKIM-Signature\n");
		rc = CTL_EXIT_FAIL;
		goto fail;
	}
	ok = 1;
	for (i = 0; i < n; i++) {
		printf("%s d=%s s=%s a=%s %s\n", res[i].pass ? "pass" : "fail",
		    ctl_clean(res[i].domain, d, sizeof(d)),
		    ctl_clean(res[i].selector, s, sizeof(s)),
		    ctl_clean(res[i].alg, a, sizeof(a)),
		    res[i].pass ? "ok" : res[i].reason[0] != '\0' ?
		    ctl_clean(res[i].reason, why, sizeof(why)) : "failed");
		if (!res[i].pass)
			ok = 0;
	}
	rc = ok ? 0 : CTL_EXIT_FAIL;
fail:
	if (fflush(stdout) != 0) {
		ctl_err("stdout: %s", strerror(errno));
		rc = CTL_EXIT_USAGE;
	}
	dkim_verifier_free(v);
	return rc;
}

/* ---- dkim alignment ------------------------------------------------------- */

/* The header block of a message, gathered by ctl_feed_header. */
struct ctl_hdr {
	struct ctl_buf b;
	int done;                    /* the empty line was seen */
};

/*
 * ctl_feed_header - keep bytes until the end of the header block (the
 * block then ends with the CRLF of its last field); later bytes are
 * dropped.  0, or DKIM_EHEADER_TOO_BIG / DKIM_ENOMEM.
 */
static int
ctl_feed_header(void *arg, const char *p, size_t len)
{
	struct ctl_hdr *h = arg;
	size_t i, from;

	if (h->done)
		return 0;
	from = h->b.len > 3 ? h->b.len - 3 : 0;
	if (ctl_buf_add(&h->b, p, len) != 0)
		return DKIM_ENOMEM;
	if (h->b.len >= 2 && memcmp(h->b.p, "\r\n", 2) == 0) {
		h->b.len = 0;                   /* no header at all */
		h->done = 1;
		return 0;
	}
	for (i = from; i + 4 <= h->b.len; i++)
		if (memcmp(h->b.p + i, "\r\n\r\n", 4) == 0) {
			h->b.len = i + 2;
			h->done = 1;
			return 0;
		}
	return h->b.len > DKIM_HEADER_MAX ? DKIM_EHEADER_TOO_BIG : 0;
}

/*
 * ctl_tag - the value of tag name in a DKIM-Signature tag-list (RFC 6376
 * 3.2), with every blank and line end removed, into out; 0, or -1 when the
 * tag is missing or its value does not fit.
 */
static int
ctl_tag(const char *v, size_t len, const char *name, char *out,
    size_t outlen)
{
	const char *end = v + len, *p = v, *t, *eq, *semi;
	size_t nlen = strlen(name), o;

	while (p < end) {
		semi = memchr(p, ';', (size_t)(end - p));
		if (semi == NULL)
			semi = end;
		for (t = p; t < semi && isspace((unsigned char)*t); t++)
			;
		eq = memchr(t, '=', (size_t)(semi - t));
		if (eq != NULL) {
			const char *ne = eq;

			while (ne > t && isspace((unsigned char)ne[-1]))
				ne--;
			if ((size_t)(ne - t) == nlen &&
			    memcmp(t, name, nlen) == 0) {
				for (o = 0, t = eq + 1; t < semi; t++) {
					if (isspace((unsigned char)*t))
						continue;
					if (o + 1 >= outlen)
						return -1;
					out[o++] = *t;
				}
				out[o] = '\0';
				return 0;
			}
		}
		p = semi + 1;
	}
	return -1;
}

static int
ctl_dkim_alignment(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "initial-suffix", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl_hdr h = { { NULL, 0, 0 }, 0 };
	const char *file = NULL, *suffix = NULL, *p, *end, *f, *colon;
	char from[256], d[256], s[256], why[1024], cd[256], cs[256];
	char cw[1024], norm[256];
	int ch, r, rc = CTL_EXIT_USAGE, nfrom = 0, nsig = 0, any = 0;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (ch) {
		case 'S':
			suffix = optarg;
			break;
		default:
			rc = ctl_badopt("alignment", ch, optopt, argv);
			goto fail;
		}
	}
	if (argc - optind > 1) {
		ctl_err("dkim alignment: unexpected argument %s",
		    argv[optind + 1]);
		goto fail;
	}
	if (optind < argc)
		file = argv[optind];
	if (suffix != NULL && dkim_domain_normalize(suffix[0] == '.' ?
	    suffix + 1 : suffix, norm, sizeof(norm)) != 0) {
		ctl_err("dkim alignment: --initial-suffix \"%s\" is not a "
		    "domain", ctl_clean(suffix, cw, sizeof(cw)));
		goto fail;
	}
	if ((r = ctl_read_message(file, ctl_feed_header, &h, NULL)) != 0) {
		if (r != -1) {
			ctl_err("%s: %s", file != NULL ? file : "stdin",
			    dkim_strerror(r));
			rc = CTL_EXIT_FAIL;
		}
		goto fail;
	}
	/* The From domain: exactly one From field (RFC 5322 3.6). */
	end = h.b.p + h.b.len;
	for (f = h.b.p; f != NULL && f < end; ) {
		/* a field runs to the CRLF not followed by WSP */
		for (p = f; (p = memchr(p, '\n', (size_t)(end - p))) != NULL;
		    p++)
			if (p + 1 >= end || (p[1] != ' ' && p[1] != '\t'))
				break;
		p = p != NULL ? p + 1 : end;
		colon = memchr(f, ':', (size_t)(p - f));
		if (colon != NULL && colon - f == 4 &&
		    strncasecmp(f, "From", 4) == 0 && nfrom++ == 0 &&
		    dkim_from_domain(colon + 1, (size_t)(p - colon - 1), from,
		    sizeof(from)) != 0)
			from[0] = '\0';
		f = p;
	}
	if (nfrom != 1) {
		ctl_err("%s: %s", file != NULL ? file : "stdin", nfrom == 0 ?
		    "message has no From field" :
		    "message has more than one From field");
		rc = CTL_EXIT_FAIL;
		goto fail;
	}
	if (from[0] == '\0') {
		ctl_err("%s: no domain in the From field",
		    file != NULL ? file : "stdin");
		rc = CTL_EXIT_FAIL;
		goto fail;
	}
	/* Then every DKIM-Signature, in order. */
	for (f = h.b.p; f < end; ) {
		for (p = f; (p = memchr(p, '\n', (size_t)(end - p))) != NULL;
		    p++)
			if (p + 1 >= end || (p[1] != ' ' && p[1] != '\t'))
				break;
		p = p != NULL ? p + 1 : end;
		colon = memchr(f, ':', (size_t)(p - f));
		if (colon == NULL || colon - f != 14 ||
		    strncasecmp(f, "DKIM-Signature", 14) != 0) {
			f = p;
			continue;
		}
		nsig++;
		if (ctl_tag(colon + 1, (size_t)(p - colon - 1), "d", d,
		    sizeof(d)) != 0 || ctl_tag(colon + 1,
		    (size_t)(p - colon - 1), "s", s, sizeof(s)) != 0) {
			printf("not aligned d=? s=? (no usable d= or s= tag)\n");
			f = p;
			continue;
		}
		r = dkim_alignment_check(from, d, s, suffix, why, sizeof(why));
		printf("%s d=%s s=%s (%s)\n", r == 1 ? "aligned" :
		    "not aligned", ctl_clean(d, cd, sizeof(cd)),
		    ctl_clean(s, cs, sizeof(cs)), ctl_clean(why, cw,
		    sizeof(cw)));
		if (r == 1)
			any = 1;
		f = p;
	}
	if (nsig == 0)
		printf("none: no DKIM-Signature\n");
	rc = any ? 0 : CTL_EXIT_FAIL;
fail:
	if (fflush(stdout) != 0) {
		ctl_err("stdout: %s", strerror(errno));
		rc = CTL_EXIT_USAGE;
	}
	free(h.b.p);
	return rc;
}

/* ---- dns records ------------------------------------------------------------ */

static int
ctl_dns_records(int argc, char **argv)
{
	struct relay_config cfg;
	char dom[256], initial[256], sel[DKIM_SELECTOR_BUFSIZE], c[256];
	const char *where = ctl_config != NULL ? ctl_config : "(default)";
	int slot, rc;

	if (argc != 2 || argv[1][0] == '-') {
		ctl_err("dns records: usage: signetctl [-c CONFIG] dns records "
		    "DOMAIN");
		return CTL_EXIT_USAGE;
	}
	if (dkim_domain_normalize(argv[1], dom, sizeof(dom)) != 0) {
		ctl_err("dns records: \"%s\" is not a domain (IDNs in "
		    "A-labels: xn--...)", ctl_clean(argv[1], c, sizeof(c)));
		return CTL_EXIT_USAGE;
	}
	if (ctl_config != NULL)
		rc = relay_config_load(ctl_config, &cfg, NULL, NULL);
	else
		rc = relay_config_default(&cfg);
	if (rc != 0) {
		ctl_err("%s: configuration has errors", where);
		relay_config_free(&cfg);
		return CTL_EXIT_USAGE;
	}
	/* a managed domain: its tenant's initial domain */
	if (ctl_keys_initial(&cfg, dom, initial, sizeof(initial)) == 1)
		rc = 0;
	else
		rc = dkim_domain_normalize(cfg.initial_domain, initial,
		    sizeof(initial));
	relay_config_free(&cfg);
	if (rc != 0) {
		ctl_err("initial_domain is not set in %s: no managed key "
		    "records to point to", where);
		return CTL_EXIT_FAIL;
	}
	/* "selectorN._domainkey." + the domain must stay a DNS name */
	if (strlen(dom) > 253 - 21) {
		ctl_err("dns records: %s is too long to hold "
		    "selectorN._domainkey records", dom);
		return CTL_EXIT_FAIL;
	}
	for (slot = 1; slot <= 2; slot++) {
		if (dkim_selector_name(slot, dom, sel, sizeof(sel)) != 0) {
			ctl_err("dns records: cannot name the selector of %s",
			    dom);
			return CTL_EXIT_FAIL;
		}
		printf("selector%d._domainkey.%s. 3600 IN CNAME "
		    "%s._domainkey.%s.\n", slot, dom, sel, initial);
	}
	if (fflush(stdout) != 0) {
		ctl_err("stdout: %s", strerror(errno));
		return CTL_EXIT_USAGE;
	}
	return 0;
}

/* ---- queue: the admin server's /queue requests ------------------------------ */

#define CTL_HTTP_MAX (64 * 1024 * 1024)   /* largest answer taken */

/* A parsed JSON value (only what the admin server writes). */
enum ctl_json_type { CJ_NULL, CJ_BOOL, CJ_NUM, CJ_STR, CJ_ARR, CJ_OBJ };

struct ctl_json {
	enum ctl_json_type type;
	double num;                  /* CJ_NUM, CJ_BOOL */
	char *str;                   /* CJ_STR */
	size_t n;                    /* CJ_ARR, CJ_OBJ: members */
	char **keys;                 /* CJ_OBJ */
	struct ctl_json *v;
};

static void
ctl_json_free(struct ctl_json *j)
{
	size_t i;

	if (j == NULL)
		return;
	for (i = 0; i < j->n; i++) {
		ctl_json_free(&j->v[i]);
		if (j->keys != NULL)
			free(j->keys[i]);
	}
	free(j->v);
	free(j->keys);
	free(j->str);
}

static void
ctl_json_ws(const char **p)
{
	while (**p == ' ' || **p == '\n' || **p == '\r' || **p == '\t')
		(*p)++;
}

/* ctl_json_string - a JSON string at *p (after the quote); NULL if bad. */
static char *
ctl_json_string(const char **p)
{
	const char *s = *p;
	char *out = malloc(strlen(s) + 1), *o = out;
	unsigned u;

	if (out == NULL)
		return NULL;
	while (*s != '"') {
		if (*s == '\0')
			goto bad;
		if (*s != '\\') {
			*o++ = *s++;
			continue;
		}
		s++;
		switch (*s) {
		case 'n': *o++ = '\n'; break;
		case 't': *o++ = '\t'; break;
		case 'r': *o++ = '\r'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'u':
			if (sscanf(s + 1, "%4x", &u) != 1)
				goto bad;
			/* the server escapes only control characters */
			*o++ = u < 0x80 ? (char)u : '?';
			s += 4;
			break;
		case '\0':
			goto bad;
		default:
			*o++ = *s;
		}
		s++;
	}
	*o = '\0';
	*p = s + 1;
	return out;
bad:
	free(out);
	return NULL;
}

/* ctl_json_parse - one value at *p into j; 0 or -1. */
static int
ctl_json_parse(const char **p, struct ctl_json *j, int depth)
{
	char *end;
	int obj;

	memset(j, 0, sizeof(*j));
	ctl_json_ws(p);
	if (depth > 16)
		return -1;
	if (**p == '"') {
		(*p)++;
		j->type = CJ_STR;
		return (j->str = ctl_json_string(p)) != NULL ? 0 : -1;
	}
	if (**p == '{' || **p == '[') {
		obj = **p == '{';
		j->type = obj ? CJ_OBJ : CJ_ARR;
		(*p)++;
		ctl_json_ws(p);
		if (**p == (obj ? '}' : ']')) {
			(*p)++;
			return 0;
		}
		for (;;) {
			j->v = realloc(j->v, (j->n + 1) * sizeof(*j->v));
			if (obj)
				j->keys = realloc(j->keys, (j->n + 1) *
				    sizeof(*j->keys));
			if (j->v == NULL || (obj && j->keys == NULL))
				return -1;
			if (obj) {
				ctl_json_ws(p);
				if (**p != '"')
					return -1;
				(*p)++;
				if ((j->keys[j->n] = ctl_json_string(p)) == NULL)
					return -1;
				ctl_json_ws(p);
				if (*(*p)++ != ':') {
					free(j->keys[j->n]);
					return -1;
				}
			}
			if (ctl_json_parse(p, &j->v[j->n], depth + 1) != 0) {
				j->n++;
				return -1;
			}
			j->n++;
			ctl_json_ws(p);
			if (**p == ',') {
				(*p)++;
				continue;
			}
			if (*(*p)++ != (obj ? '}' : ']'))
				return -1;
			return 0;
		}
	}
	if (strncmp(*p, "true", 4) == 0 || strncmp(*p, "false", 5) == 0) {
		j->type = CJ_BOOL;
		j->num = **p == 't';
		*p += **p == 't' ? 4 : 5;
		return 0;
	}
	if (strncmp(*p, "null", 4) == 0) {
		*p += 4;
		return 0;
	}
	j->type = CJ_NUM;
	j->num = strtod(*p, &end);
	if (end == *p)
		return -1;
	*p = end;
	return 0;
}

/* ctl_json_get - member key of object j, or NULL. */
static const struct ctl_json *
ctl_json_get(const struct ctl_json *j, const char *key)
{
	size_t i;

	if (j == NULL || j->type != CJ_OBJ)
		return NULL;
	for (i = 0; i < j->n; i++)
		if (strcmp(j->keys[i], key) == 0)
			return &j->v[i];
	return NULL;
}

static const char *
ctl_json_str(const struct ctl_json *j, const char *key)
{
	const struct ctl_json *v = ctl_json_get(j, key);

	return v != NULL && v->type == CJ_STR ? v->str : NULL;
}

static double
ctl_json_num(const struct ctl_json *j, const char *key)
{
	const struct ctl_json *v = ctl_json_get(j, key);

	return v != NULL && (v->type == CJ_NUM || v->type == CJ_BOOL) ?
	    v->num : 0;
}

/* ctl_admin_addr - where to connect: admin_listen of -c CONFIG. */
static int
ctl_admin_addr(char *addr, size_t len, struct sockaddr_storage *ss)
{
	struct relay_config cfg;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	int rc;

	if (ctl_config != NULL)
		rc = relay_config_load(ctl_config, &cfg, NULL, NULL);
	else
		rc = relay_config_default(&cfg);
	if (rc != 0) {
		ctl_err("%s: configuration has errors", ctl_config != NULL ?
		    ctl_config : "(default)");
		relay_config_free(&cfg);
		return -1;
	}
	snprintf(addr, len, "%s", cfg.admin_listen);
	relay_config_free(&cfg);
	if (addr[0] == '\0') {
		ctl_err("admin_listen is empty in %s: no way to reach the node",
		    ctl_config != NULL ? ctl_config : "(default)");
		return -1;
	}
	if (relay_addr_parse(addr, ss) != 0) {
		ctl_err("admin_listen: \"%s\" is not ADDRESS:PORT", addr);
		return -1;
	}
	/* A wildcard listener is reached on loopback. */
	if (ss->ss_family == AF_INET && sin->sin_addr.s_addr == INADDR_ANY)
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (ss->ss_family == AF_INET6 &&
	    IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
		sin6->sin6_addr = in6addr_loopback;
	return 0;
}

/*
 * ctl_http - one request to the admin server; the status in *status and
 * the body (NUL-terminated, malloc'd) in *body.  0; or CTL_EXIT_FAIL after
 * reporting (no node running, I/O error, bad answer).
 */
static int
ctl_http(const char *method, const char *path, int *status, char **body)
{
	struct sockaddr_storage ss;
	struct ctl_buf b = { 0 };
	char addr[128], req[512], chunk[8192], *hend;
	ssize_t n;
	size_t off;
	int fd = -1, rc = CTL_EXIT_FAIL;

	*body = NULL;
	if (ctl_admin_addr(addr, sizeof(addr), &ss) != 0)
		return CTL_EXIT_FAIL;
	if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&ss, ss.ss_family == AF_INET ?
	    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) != 0) {
		if (errno == ECONNREFUSED)
			ctl_err("no signet node is running at %s "
			    "(admin_listen)", addr);
		else
			ctl_err("%s: %s", addr, strerror(errno));
		goto fail;
	}
	n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n", method, path,
	    addr);
	for (off = 0; off < (size_t)n; ) {
		ssize_t w = write(fd, req + off, (size_t)n - off);

		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			ctl_err("%s: %s", addr, strerror(errno));
			goto fail;
		}
		off += (size_t)w;
	}
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			ctl_err("%s: %s", addr, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		if (b.len + (size_t)n > CTL_HTTP_MAX ||
		    ctl_buf_add(&b, chunk, (size_t)n) != 0) {
			ctl_err("%s: answer too large", addr);
			goto fail;
		}
	}
	if (ctl_buf_add(&b, "", 1) != 0 ||
	    sscanf(b.p, "HTTP/1.%*d %d", status) != 1 ||
	    (hend = strstr(b.p, "\r\n\r\n")) == NULL) {
		ctl_err("%s: not an HTTP answer", addr);
		goto fail;
	}
	*body = strdup(hend + 4);
	rc = *body != NULL ? 0 : CTL_EXIT_FAIL;
fail:
	if (fd != -1)
		close(fd);
	free(b.p);
	return rc;
}

/*
 * ctl_queue_call - a request whose answer is JSON: 0 with *j filled on
 * 200, else CTL_EXIT_FAIL after printing the server's error.
 */
static int
ctl_queue_call(const char *method, const char *path, struct ctl_json *j,
    char **raw)
{
	const char *p;
	char *body = NULL;
	int status = 0, rc;

	memset(j, 0, sizeof(*j));
	if ((rc = ctl_http(method, path, &status, &body)) != 0)
		return rc;
	p = body;
	if (ctl_json_parse(&p, j, 0) != 0) {
		ctl_json_free(j);
		memset(j, 0, sizeof(*j));
		if (status == 200) {
			ctl_err("%s %s: bad JSON in the answer", method, path);
			free(body);
			return CTL_EXIT_FAIL;
		}
	}
	if (status != 200) {
		ctl_err("%s: %s", path + 1, ctl_json_str(j, "error") != NULL ?
		    ctl_json_str(j, "error") : body);
		ctl_json_free(j);
		free(body);
		return CTL_EXIT_FAIL;
	}
	if (raw != NULL)
		*raw = body;
	else
		free(body);
	return 0;
}

/* ctl_time - a Unix time as "Fri Jan  2 03:04:05" (local time). */
static const char *
ctl_time(double t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || localtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%a %b %e %H:%M:%S", &tm) == 0)
		snprintf(buf, len, "-");
	return buf;
}

/* ctl_id_arg - the one ID argument of a queue command, or NULL (reported). */
static const char *
ctl_id_arg(const char *cmd, int argc, char **argv, int optional)
{
	if (argc == 1 && optional)
		return NULL;
	if (argc != 2) {
		ctl_err("queue %s: %s", cmd, argc < 2 ? "missing ID" :
		    "too many arguments");
		return NULL;
	}
	return argv[1];
}

static int
ctl_queue_list(int argc, char **argv)
{
	const struct ctl_json *msgs, *m, *rcpt, *r;
	struct ctl_json j;
	char *raw = NULL, t[64];
	const char *sender, *why;
	double total = 0;
	size_t i, k;
	int json = 0, rc;

	for (i = 1; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else {
			ctl_err("queue list: unknown argument %s", argv[i]);
			return CTL_EXIT_USAGE;
		}
	}
	if ((rc = ctl_queue_call("GET", json ? "/queue" : "/queue?rcpt=1",
	    &j, &raw)) != 0)
		return rc;
	if (json) {
		fputs(raw, stdout);
		goto done;
	}
	msgs = ctl_json_get(&j, "messages");
	if (msgs == NULL || msgs->type != CJ_ARR || msgs->n == 0) {
		printf("Mail queue is empty\n");
		goto done;
	}
	/* After Postfix's mailq: '!' marks a message on hold. */
	printf("%-19s %8s %-20s %s\n", "-Queue ID-", "--Size--",
	    "----Arrival Time----", "-Sender/Recipient-------");
	for (i = 0; i < msgs->n; i++) {
		m = &msgs->v[i];
		sender = ctl_json_str(m, "sender");
		total += ctl_json_num(m, "size");
		printf("%s%c %8.0f %-20s %s\n", ctl_json_str(m, "id") != NULL ?
		    ctl_json_str(m, "id") : "?", ctl_json_num(m, "held") ?
		    '!' : ' ', ctl_json_num(m, "size"),
		    ctl_time(ctl_json_num(m, "arrival"), t, sizeof(t)),
		    sender != NULL && *sender != '\0' ? sender :
		    "MAILER-DAEMON");
		rcpt = ctl_json_get(m, "rcpt");
		for (k = 0; rcpt != NULL && rcpt->type == CJ_ARR &&
		    k < rcpt->n; k++) {
			r = &rcpt->v[k];
			if ((why = ctl_json_str(r, "reason")) != NULL)
				printf("%50s(%s)\n", "", why);
			printf("%50s%s\n", "", ctl_json_str(r, "addr") != NULL ?
			    ctl_json_str(r, "addr") : "?");
		}
		printf("\n");
	}
	printf("-- %.0f Kbytes in %zu Request%s.\n", (total + 1023) / 1024,
	    msgs->n, msgs->n == 1 ? "" : "s");
done:
	ctl_json_free(&j);
	free(raw);
	return fflush(stdout) == 0 ? 0 : CTL_EXIT_FAIL;
}

static int
ctl_queue_show(int argc, char **argv)
{
	const struct ctl_json *rcpt, *r;
	const char *id = ctl_id_arg("show", argc, argv, 0), *s;
	struct ctl_json j;
	char path[128], t[64];
	size_t k;
	int rc;

	if (id == NULL)
		return CTL_EXIT_USAGE;
	snprintf(path, sizeof(path), "/queue/%s", id);
	if ((rc = ctl_queue_call("GET", path, &j, NULL)) != 0)
		return rc;
	s = ctl_json_str(&j, "sender");
	printf("id: %s%s\n", id, ctl_json_num(&j, "held") ? " (on hold)" : "");
	printf("arrival: %s\n", ctl_time(ctl_json_num(&j, "arrival"), t,
	    sizeof(t)));
	printf("size: %.0f\n", ctl_json_num(&j, "size"));
	printf("sender: <%s>\n", s != NULL ? s : "");
	if ((s = ctl_json_str(&j, "envid")) != NULL)
		printf("envid: %s\n", s);
	if ((s = ctl_json_str(&j, "ret")) != NULL && *s != '\0')
		printf("ret: %s\n", s);
	if ((s = ctl_json_str(&j, "client")) != NULL && *s != '\0')
		printf("client: %s (%s)\n", s, ctl_json_str(&j, "helo") ?
		    ctl_json_str(&j, "helo") : "");
	printf("signed: %s\n", ctl_json_num(&j, "signed") ? "yes" : "no");
	printf("recipients: %.0f, pending %.0f\n",
	    ctl_json_num(&j, "recipients"), ctl_json_num(&j, "pending"));
	rcpt = ctl_json_get(&j, "rcpt");
	for (k = 0; rcpt != NULL && rcpt->type == CJ_ARR && k < rcpt->n; k++) {
		r = &rcpt->v[k];
		printf("  <%s> %s, %.0f attempt%s", ctl_json_str(r, "addr") ?
		    ctl_json_str(r, "addr") : "?", ctl_json_str(r, "state") ?
		    ctl_json_str(r, "state") : "?", ctl_json_num(r, "attempts"),
		    ctl_json_num(r, "attempts") == 1 ? "" : "s");
		if (ctl_json_num(r, "last_try") > 0)
			printf(", last %s", ctl_time(ctl_json_num(r,
			    "last_try"), t, sizeof(t)));
		if (ctl_json_str(r, "state") != NULL &&
		    strcmp(ctl_json_str(r, "state"), "pending") == 0 &&
		    ctl_json_num(r, "next_try") > 0)
			printf(", next %s", ctl_time(ctl_json_num(r,
			    "next_try"), t, sizeof(t)));
		printf("\n");
		if ((s = ctl_json_str(r, "orcpt")) != NULL)
			printf("    orcpt: %s\n", s);
		if ((s = ctl_json_str(r, "reason")) != NULL)
			printf("    reason: %s\n", s);
	}
	ctl_json_free(&j);
	return fflush(stdout) == 0 ? 0 : CTL_EXIT_FAIL;
}

/* ctl_queue_act - POST /queue[/ID]/ACTION. */
static int
ctl_queue_act(const char *action, int argc, char **argv, int optional)
{
	const char *id = ctl_id_arg(action, argc, argv, optional);
	struct ctl_json j;
	char path[128];
	int rc;

	if (id == NULL && (!optional || argc != 1))
		return CTL_EXIT_USAGE;
	if (id != NULL)
		snprintf(path, sizeof(path), "/queue/%s/%s", id, action);
	else
		snprintf(path, sizeof(path), "/queue/%s", action);
	if ((rc = ctl_queue_call("POST", path, &j, NULL)) != 0)
		return rc;
	ctl_json_free(&j);
	return 0;
}

static int
ctl_queue_flush(int argc, char **argv)
{
	return ctl_queue_act("flush", argc, argv, 1);
}

static int
ctl_queue_hold(int argc, char **argv)
{
	return ctl_queue_act("hold", argc, argv, 0);
}

static int
ctl_queue_release(int argc, char **argv)
{
	return ctl_queue_act("release", argc, argv, 0);
}

static int
ctl_queue_delete(int argc, char **argv)
{
	return ctl_queue_act("delete", argc, argv, 0);
}

/* ---- dispatch -------------------------------------------------------------- */

int
main(int argc, char **argv)
{
	const char *simd = getenv("SIGNET_SIMD");
	size_t i;

	/* testing aid: force the body canonicalizer's scanner */
	if (simd != NULL && *simd != '\0') {
		if (strcmp(simd, "scalar") == 0)
			dkim_simd_set(DKIM_SIMD_SCALAR);
		else if (strcmp(simd, "sse4.2") == 0)
			dkim_simd_set(DKIM_SIMD_SSE42);
		else if (strcmp(simd, "avx2") == 0)
			dkim_simd_set(DKIM_SIMD_AVX2);
		else if (strcmp(simd, "avx512") == 0)
			dkim_simd_set(DKIM_SIMD_AVX512);
	}

	if (argc >= 3 && strcmp(argv[1], "-c") == 0) {
		ctl_config = argv[2];
		argc -= 2;
		argv += 2;
	} else if (argc >= 2 && strncmp(argv[1], "-c", 2) == 0 &&
	    argv[1][2] != '\0') {
		ctl_config = argv[1] + 2;
		argc--;
		argv++;
	}
	if (argc < 2 || strcmp(argv[1], "help") == 0 ||
	    strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
		return ctl_usage();
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("signetctl %s\n", relay_version());
		return fflush(stdout) == 0 ? 0 : CTL_EXIT_USAGE;
	}
	if (argc < 3) {
		ctl_err("%s: missing command (see signetctl help)", argv[1]);
		return CTL_EXIT_USAGE;
	}
	for (i = 0; i < CTL_NCMDS; i++)
		if (strcmp(argv[1], ctl_cmds[i].group) == 0 &&
		    strcmp(argv[2], ctl_cmds[i].name) == 0)
			return ctl_cmds[i].fn(argc - 2, argv + 2);
	ctl_err("unknown command \"%s %s\" (see signetctl help)", argv[1],
	    argv[2]);
	return CTL_EXIT_USAGE;
}
