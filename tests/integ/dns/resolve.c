/*
 * resolve.c - drives smtp_resolve_nexthop (smtp/dns.c) for
 * tests/integ/60-dns-resolver.sh, which builds it against the project's
 * objects.  Every DEST is resolved REPEAT times, all at once on one
 * resolver and one loop, and each result is printed as
 *
 *   result DEST status=ok dsn=2.0.0 nhops=N
 *   order DEST host1,host2,...            (the hops, in order)
 *   hop DEST PREF HOST [tempfail] [implicit] ADDR:PORT...
 *   reason DEST text                      (when there is one)
 *
 * in the order the callbacks ran.  With -c the resolver is freed right
 * after the queries are sent, so each result is "cancelled".
 *
 *   resolve [-s SERVERS] [-t TIMEOUT_MS] [-n TRIES] [-p PORT] [-r REPEAT] [-c] DEST...
 *
 * Exit 0 when every callback ran exactly once; 2 on usage or setup errors.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "smtp/smtp.h"

struct job {
	const char *dest;
	int calls;
};

static int outstanding;

/* print_addr - ADDR:PORT, IPv6 in brackets */
static void
print_addr(const struct sockaddr_storage *ss)
{
	char buf[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
		printf(" %s:%u", buf, ntohs(sin->sin_port));
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
		printf(" [%s]:%u", buf, ntohs(sin6->sin6_port));
	}
}

/* done - print one result */
static void
done(void *arg, const struct smtp_nexthop *res)
{
	struct job *j = arg;
	size_t i, k;

	j->calls++;
	outstanding--;
	printf("result %s status=%s dsn=%s nhops=%zu\n", j->dest,
	    smtp_nexthop_strstatus(res->status), res->dsn, res->nhops);
	printf("order %s ", j->dest);
	for (i = 0; i < res->nhops; i++)
		printf("%s%s", i > 0 ? "," : "", res->hops[i].host);
	printf("\n");
	for (i = 0; i < res->nhops; i++) {
		const struct smtp_hop *h = &res->hops[i];

		printf("hop %s %u %s", j->dest, h->pref, h->host);
		if (h->flags & SMTP_HOP_TEMPFAIL)
			printf(" tempfail");
		if (h->flags & SMTP_HOP_IMPLICIT)
			printf(" implicit");
		for (k = 0; k < h->naddrs; k++)
			print_addr(&h->addrs[k]);
		if (h->flags & SMTP_HOP_TEMPFAIL)
			printf(" (%s)", h->reason);
		printf("\n");
	}
	if (res->reason[0] != '\0')
		printf("reason %s %s\n", j->dest, res->reason);
	fflush(stdout);
}

static void
usage(void)
{
	fprintf(stderr, "usage: resolve [-s SERVERS] [-t TIMEOUT_MS] [-n TRIES] "
	    "[-p PORT] [-r REPEAT] [-c] DEST...\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct smtp_resolver_opts o = { NULL, 0, 0 };
	struct smtp_resolver *r;
	struct job *jobs;
	uv_loop_t loop;
	char err[256];
	int c, i, k, rc, repeat = 1, cancel = 0, port = 25, njobs, bad = 0;

	while ((c = getopt(argc, argv, "s:t:n:p:r:c")) != -1) {
		switch (c) {
		case 's':
			o.servers = optarg;
			break;
		case 't':
			o.timeout_ms = (unsigned)atoi(optarg);
			break;
		case 'n':
			o.tries = (unsigned)atoi(optarg);
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'r':
			repeat = atoi(optarg);
			break;
		case 'c':
			cancel = 1;
			break;
		default:
			usage();
		}
	}
	if (optind >= argc || repeat < 1 || port < 1 || port > 65535)
		usage();
	njobs = (argc - optind) * repeat;
	if ((jobs = calloc((size_t)njobs, sizeof(*jobs))) == NULL)
		return 2;
	if (uv_loop_init(&loop) != 0)
		return 2;
	if (smtp_resolver_new(&loop, &o, &r, err, sizeof(err)) != 0) {
		fprintf(stderr, "resolve: %s\n", err);
		return 2;
	}
	for (k = 0; k < repeat; k++) {
		for (i = optind; i < argc; i++) {
			struct job *j = &jobs[k * (argc - optind) + (i - optind)];

			j->dest = argv[i];
			rc = smtp_resolve_nexthop(r, argv[i], (uint16_t)port, done, j);
			if (rc != 0) {
				struct smtp_nexthop_dest d;

				smtp_nexthop_parse(argv[i], (uint16_t)port, &d, err,
				    sizeof(err));
				printf("error %s %s\n", argv[i], err);
				j->calls = 1;   /* no callback expected */
				continue;
			}
			outstanding++;
		}
	}
	if (cancel)
		smtp_resolver_free(r);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (!cancel)
		smtp_resolver_free(r);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0) {
		fprintf(stderr, "resolve: handles left open on the loop\n");
		bad = 1;
	}
	for (i = 0; i < njobs; i++) {
		if (jobs[i].calls != 1) {
			fprintf(stderr, "resolve: %s: callback ran %d times\n",
			    jobs[i].dest, jobs[i].calls);
			bad = 1;
		}
	}
	free(jobs);
	return bad || outstanding != 0 ? 1 : 0;
}
