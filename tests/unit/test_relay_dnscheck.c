/*
 * test_relay_dnscheck.c - relay_dns_lookup (relay/dnscheck.c) against a
 * real nsd on 127.0.0.1, started by the test in a temporary directory and
 * serving the zone dnscheck.test: TXT records (one string, several), CNAME
 * chains inside the zone and out of it, NXDOMAIN, NODATA, REFUSED (a name
 * outside the zone), then a closed port and a silent socket for the
 * temporary failures.  A missing nsd fails the test.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relay/keys.h"
#include "tests/unit/test.h"

#define NSD "/usr/sbin/nsd"

static const char dc_zone[] =
    "$ORIGIN dnscheck.test.\n"
    "$TTL 300\n"
    "@ IN SOA ns.dnscheck.test. hostmaster.dnscheck.test. 1 3600 600 "
    "86400 300\n"
    "@ IN NS ns.dnscheck.test.\n"
    "ns IN A 127.0.0.1\n"
    "txt1 IN TXT \"v=DKIM1; p=abc\"\n"
    "multi IN TXT \"part1\" \"part2\"\n"
    "alias IN CNAME hop.dnscheck.test.\n"
    "hop IN CNAME txt1.dnscheck.test.\n"
    "out IN CNAME Target.Elsewhere.Example.\n"
    "empty IN A 192.0.2.1\n";

/* dc_port - a port free on 127.0.0.1 for UDP and TCP, and bound as UDP
 * in *fd when fd is not NULL (the silent server). */
static int
dc_port(int *fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int u, t, port;

	for (;;) {
		T_TRUE((u = socket(AF_INET, SOCK_DGRAM, 0)) >= 0);
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		T_OK(bind(u, (struct sockaddr *)&sin, sizeof(sin)));
		T_OK(getsockname(u, (struct sockaddr *)&sin, &len));
		port = ntohs(sin.sin_port);
		T_TRUE((t = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
		if (bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0) {
			close(t);
			if (fd != NULL)
				*fd = u;
			else
				close(u);
			return port;
		}
		close(t);
		close(u);
	}
}

/* dc_write - write s to dir/name. */
static void
dc_write(const char *dir, const char *name, const char *s)
{
	char path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	T_TRUE((fp = fopen(path, "w")) != NULL);
	fputs(s, fp);
	T_OK(fclose(fp));
}

/* dc_nsd - start nsd in dir on port; its pid.  Waits for "nsd started". */
static pid_t
dc_nsd(const char *dir, int port)
{
	char conf[2048], path[512], log[4096];
	pid_t pid;
	int i, fd;
	ssize_t n;

	T_TRUE(access(NSD, X_OK) == 0);
	dc_write(dir, "dnscheck.test.zone", dc_zone);
	snprintf(conf, sizeof(conf),
	    "server:\n\tip-address: 127.0.0.1@%d\n\tusername: \"\"\n"
	    "\tchroot: \"\"\n\tzonesdir: \"%s\"\n\tdatabase: \"\"\n"
	    "\tpidfile: \"%s/nsd.pid\"\n\txfrdfile: \"%s/xfrd.state\"\n"
	    "\tzonelistfile: \"%s/zone.list\"\n\txfrdir: \"%s\"\n"
	    "\tlogfile: \"%s/nsd.log\"\n\tserver-count: 1\n"
	    "\tverbosity: 1\n\treuseport: no\nremote-control:\n"
	    "\tcontrol-enable: no\nzone:\n\tname: \"dnscheck.test\"\n"
	    "\tzonefile: \"dnscheck.test.zone\"\n", port, dir, dir, dir,
	    dir, dir, dir);
	dc_write(dir, "nsd.conf", conf);
	snprintf(path, sizeof(path), "%s/nsd.conf", dir);
	T_TRUE((pid = fork()) >= 0);
	if (pid == 0) {
		if ((fd = open("/dev/null", O_RDWR)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl(NSD, "nsd", "-d", "-c", path, (char *)NULL);
		_exit(127);
	}
	snprintf(path, sizeof(path), "%s/nsd.log", dir);
	for (i = 0; i < 200; i++) {
		if ((fd = open(path, O_RDONLY)) >= 0) {
			n = read(fd, log, sizeof(log) - 1);
			close(fd);
			log[n > 0 ? n : 0] = '\0';
			if (strstr(log, "nsd started") != NULL)
				return pid;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid)
			T_FAIL("nsd exited at start: %s", log);
		usleep(50000);
	}
	kill(pid, SIGKILL);
	T_FAIL("nsd did not start in 10 s");
	return -1;
}

/* dc_lookup - relay_dns_lookup through 127.0.0.1:port. */
static int
dc_lookup(int port, const char *name, const char *type, unsigned ms,
    struct relay_dns_answer *a)
{
	char item[64], *v[1] = { item };
	struct relay_strlist l = { v, 1 };

	snprintf(item, sizeof(item), "127.0.0.1:%d", port);
	return relay_dns_lookup(&l, name, type, ms, a);
}

TEST(relay_dnscheck_nsd)
{
	struct relay_dns_answer a;
	char dir[] = "/tmp/signet-dnscheck.XXXXXX", want[128], cmd[600];
	pid_t pid;
	int port;

	T_TRUE(mkdtemp(dir) != NULL);
	port = dc_port(NULL);
	pid = dc_nsd(dir, port);

	/* TXT: one string; several joined; case and trailing dot */
	T_EQ(dc_lookup(port, "txt1.dnscheck.test", "TXT", 3000, &a), 0);
	T_TRUE(a.txt != NULL);
	T_STREQ(a.txt, "v=DKIM1; p=abc");
	T_STREQ(a.cname, "");
	relay_dns_answer_clear(&a);
	T_EQ(dc_lookup(port, "MULTI.DnsCheck.Test.", "txt", 3000, &a), 0);
	T_STREQ(a.txt, "part1part2");
	relay_dns_answer_clear(&a);

	/* TXT through a chain inside the zone: the last target reported */
	T_EQ(dc_lookup(port, "alias.dnscheck.test", "TXT", 3000, &a), 0);
	T_STREQ(a.cname, "txt1.dnscheck.test");
	T_STREQ(a.txt, "v=DKIM1; p=abc");
	relay_dns_answer_clear(&a);

	/* CNAME: the first hop (nsd answers a CNAME query with the CNAME) */
	T_EQ(dc_lookup(port, "alias.dnscheck.test", "CNAME", 3000, &a), 0);
	T_STREQ(a.cname, "hop.dnscheck.test");
	T_TRUE(a.txt == NULL);
	relay_dns_answer_clear(&a);
	T_EQ(dc_lookup(port, "out.dnscheck.test", "CNAME", 3000, &a), 0);
	T_STREQ(a.cname, "target.elsewhere.example");
	T_STREQ(a.detail, "CNAME to target.elsewhere.example");
	relay_dns_answer_clear(&a);

	/* a CNAME out of the zone, asked for TXT: no TXT, the CNAME known */
	T_EQ(dc_lookup(port, "out.dnscheck.test", "TXT", 3000, &a), -ENOENT);
	T_STREQ(a.cname, "target.elsewhere.example");
	T_TRUE(a.txt == NULL);
	relay_dns_answer_clear(&a);

	/* NXDOMAIN, NODATA */
	T_EQ(dc_lookup(port, "nosuch.dnscheck.test", "TXT", 3000, &a),
	    -ENOENT);
	snprintf(want, sizeof(want), "NXDOMAIN (127.0.0.1:%d)", port);
	T_STREQ(a.detail, want);
	relay_dns_answer_clear(&a);
	T_EQ(dc_lookup(port, "empty.dnscheck.test", "TXT", 3000, &a),
	    -ENOENT);
	snprintf(want, sizeof(want), "no TXT record (127.0.0.1:%d)", port);
	T_STREQ(a.detail, want);
	relay_dns_answer_clear(&a);
	T_EQ(dc_lookup(port, "txt1.dnscheck.test", "CNAME", 3000, &a),
	    -ENOENT);
	T_STREQ(a.cname, "");
	relay_dns_answer_clear(&a);

	/* outside the zone: nsd refuses, a temporary failure */
	T_EQ(dc_lookup(port, "other.example", "TXT", 3000, &a), -EAGAIN);
	if (strncmp(a.detail, "REFUSED", 7) != 0)
		T_FAIL("detail \"%s\"", a.detail);
	relay_dns_answer_clear(&a);

	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	T_OK(system(cmd));
}

TEST(relay_dnscheck_failures)
{
	struct relay_dns_answer a;
	char bad[] = "not-an-address", *v[1] = { bad };
	struct relay_strlist l = { v, 1 };
	struct timespec t0, t1;
	long ms;
	int port, fd;

	/* bad input */
	T_EQ(dc_lookup(53, "x.example", "MX", 1000, &a), -EINVAL);
	T_EQ(relay_dns_lookup(&l, "x.example", "TXT", 1000, &a), -EINVAL);
	T_EQ(a.status, -EINVAL);
	T_EQ(dc_lookup(53, "", "TXT", 1000, &a), -EINVAL);
	relay_dns_answer_clear(NULL);

	/* nobody listening: refused, quickly */
	port = dc_port(NULL);
	T_EQ(dc_lookup(port, "x.example", "TXT", 3000, &a), -EAGAIN);
	T_TRUE(strstr(a.detail, "connection refused") != NULL ||
	    strstr(a.detail, "timeout") != NULL);
	relay_dns_answer_clear(&a);

	/* a socket that never answers: a timeout within the bound */
	port = dc_port(&fd);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	T_EQ(dc_lookup(port, "x.example", "CNAME", 700, &a), -EAGAIN);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) /
	    1000000;
	T_TRUE(ms >= 300 && ms < 2000);
	T_TRUE(strncmp(a.detail, "timeout after 700 ms", 20) == 0);
	relay_dns_answer_clear(&a);
	close(fd);
}
