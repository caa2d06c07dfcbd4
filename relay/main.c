/*
 * main.c - bin/signet, the relay daemon.
 *
 * This is the placeholder until the SMTP server issue turns it into the
 * daemon: it only reports its version and the configuration it would run
 * with.  The configuration is `name = value` lines; a line whose first
 * non-blank character is '#' is a comment (as in Postfix main.cf, a '#'
 * later in a line is part of the value).  Names are checked for syntax
 * only: the table of known directives arrives with relay/config.c.
 *
 *   signet [-c FILE] [-t] [-V]
 *	-V	print "signet VERSION" and exit
 *	-c FILE	read FILE instead of the built-in defaults
 *	-t	check the configuration: "configuration OK", or one
 *		"FILE:LINE: message" per problem on stderr and exit 1
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/relay.h"

#define SIGNET_LINE_MAX 4096

/* The built-in configuration, used without -c. */
static const char *const signet_defaults[][2] = {
	{ "listen", "127.0.0.1:2525" },
	{ "spool_dir", "./var/spool" },
	{ "key_store", "local" },
};

struct signet_conf {
	char **name, **value;
	size_t n, cap;
	int errors;
};

/* signet_usage - the command line, on stderr; exit 2. */
static void
signet_usage(void)
{
	fprintf(stderr, "usage: signet [-c FILE] [-t] [-V]\n");
	exit(2);
}

/* signet_conf_add - append one directive; -ENOMEM on failure. */
static int
signet_conf_add(struct signet_conf *c, const char *name, size_t namelen,
    const char *value, size_t valuelen)
{
	char **nn, **nv, *n = NULL, *v = NULL;
	size_t cap;

	if (c->n == c->cap) {
		cap = c->cap ? c->cap * 2 : 16;
		if ((nn = realloc(c->name, cap * sizeof(*nn))) == NULL)
			goto fail;
		c->name = nn;
		if ((nv = realloc(c->value, cap * sizeof(*nv))) == NULL)
			goto fail;
		c->value = nv;
		c->cap = cap;
	}
	if ((n = strndup(name, namelen)) == NULL ||
	    (v = strndup(value, valuelen)) == NULL)
		goto fail;
	c->name[c->n] = n;
	c->value[c->n] = v;
	c->n++;
	return 0;
fail:
	free(n);
	free(v);
	return -ENOMEM;
}

/* signet_conf_error - report one problem as FILE:LINE: message. */
static void __attribute__((format(printf, 4, 5)))
signet_conf_error(struct signet_conf *c, const char *file, size_t lineno,
    const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%zu: ", file, lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	c->errors++;
}

/* signet_is_blank - SP or TAB. */
static int
signet_is_blank(int ch)
{
	return ch == ' ' || ch == '\t';
}

/* signet_conf_line - parse one line (CR/LF stripped) into c. */
static int
signet_conf_line(struct signet_conf *c, const char *file, size_t lineno,
    const char *p, size_t len)
{
	const char *end = p + len, *name, *val;
	size_t namelen;

	if (memchr(p, '\0', len) != NULL) {
		signet_conf_error(c, file, lineno, "NUL byte in line");
		return 0;
	}
	while (p < end && signet_is_blank((unsigned char)*p))
		p++;
	if (p == end || *p == '#')
		return 0;
	name = p;
	while (p < end && (*p == '_' || (*p >= 'a' && *p <= 'z') ||
	    (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
		p++;
	namelen = (size_t)(p - name);
	while (p < end && signet_is_blank((unsigned char)*p))
		p++;
	if (namelen == 0 || (*name >= '0' && *name <= '9')) {
		signet_conf_error(c, file, lineno, "expected a directive name");
		return 0;
	}
	if (p == end || *p != '=') {
		signet_conf_error(c, file, lineno, "%.*s: expected "
		    "\"name = value\"", (int)namelen, name);
		return 0;
	}
	p++;
	while (p < end && signet_is_blank((unsigned char)*p))
		p++;
	while (end > p && signet_is_blank((unsigned char)end[-1]))
		end--;
	val = p;
	if (val == end) {
		signet_conf_error(c, file, lineno, "%.*s: empty value",
		    (int)namelen, name);
		return 0;
	}
	return signet_conf_add(c, name, namelen, val, (size_t)(end - val));
}

/* signet_conf_read - read FILE into c; problems are counted in c->errors. */
static int
signet_conf_read(struct signet_conf *c, const char *file)
{
	char *line = NULL;
	size_t cap = 0, lineno = 0, len;
	ssize_t n;
	FILE *fp;
	int rc = 0;

	if ((fp = fopen(file, "r")) == NULL) {
		fprintf(stderr, "%s: cannot read: %s\n", file, strerror(errno));
		c->errors++;
		return 0;
	}
	while ((n = getline(&line, &cap, fp)) != -1) {
		lineno++;
		len = (size_t)n;
		if (len > 0 && line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len > SIGNET_LINE_MAX) {
			signet_conf_error(c, file, lineno, "line longer than %d "
			    "bytes", SIGNET_LINE_MAX);
			continue;
		}
		if ((rc = signet_conf_line(c, file, lineno, line, len)) != 0)
			goto fail;
	}
	if (ferror(fp)) {
		fprintf(stderr, "%s: cannot read: %s\n", file, strerror(errno));
		c->errors++;
	}
fail:
	free(line);
	fclose(fp);
	return rc;
}

int
main(int argc, char **argv)
{
	struct signet_conf conf = { 0 };
	const char *file = NULL;
	int ch, check = 0, rc = 1;
	size_t i;

	while ((ch = getopt(argc, argv, "c:tV")) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'V':
			printf("signet %s\n", relay_version());
			return 0;
		default:
			signet_usage();
		}
	}
	if (optind != argc)
		signet_usage();

	if (file == NULL) {
		for (i = 0; i < sizeof(signet_defaults) / sizeof(signet_defaults[0]);
		    i++)
			if (signet_conf_add(&conf, signet_defaults[i][0],
			    strlen(signet_defaults[i][0]), signet_defaults[i][1],
			    strlen(signet_defaults[i][1])) != 0) {
				fprintf(stderr, "signet: out of memory\n");
				goto fail;
			}
	} else if (signet_conf_read(&conf, file) != 0) {
		fprintf(stderr, "signet: out of memory\n");
		goto fail;
	}
	if (conf.errors > 0)
		goto fail;

	if (check) {
		printf("configuration OK\n");
	} else {
		printf("signet %s\n", relay_version());
		printf("# configuration: %s\n", file != NULL ? file :
		    "built-in defaults");
		for (i = 0; i < conf.n; i++)
			printf("%s = %s\n", conf.name[i], conf.value[i]);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "signet: stdout: %s\n", strerror(errno));
		goto fail;
	}
	rc = 0;
fail:
	for (i = 0; i < conf.n; i++) {
		free(conf.name[i]);
		free(conf.value[i]);
	}
	free(conf.name);
	free(conf.value);
	return rc;
}
