/*
 * servers.c - what the unit tests that talk to real servers share: a free
 * loopback port and a redis-server of their own.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "tests/unit/test.h"

int
test_free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd, port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	T_OK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)));
	T_OK(getsockname(fd, (struct sockaddr *)&sin, &len));
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

/* redis_pings - does 127.0.0.1:port answer PING? */
static int
redis_pings(int port)
{
	struct timeval tv = { 0, 200000 };
	redisContext *c;
	redisReply *rep;
	int ok = 0;

	c = redisConnectWithTimeout("127.0.0.1", port, tv);
	if (c != NULL && c->err == 0 &&
	    (rep = redisCommand(c, "PING")) != NULL) {
		ok = rep->type == REDIS_REPLY_STATUS;
		freeReplyObject(rep);
	}
	if (c != NULL)
		redisFree(c);
	return ok;
}

pid_t
test_redis_start(int port, const char *dir, const char *extra)
{
	struct timespec pause = { 0, 50 * 1000000 };
	char portbuf[16];
	pid_t pid;
	int i;

	snprintf(portbuf, sizeof(portbuf), "%d", port);
	if ((pid = fork()) < 0)
		T_FAIL("fork failed");
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		/* extra goes last, so NULL ends the list where it stands */
		execlp("redis-server", "redis-server", "--port", portbuf,
		    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		    "--daemonize", "no", "--dir", dir, extra,
		    extra != NULL ? "yes" : NULL, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 200; i++) {
		if (redis_pings(port))
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			T_FAIL("redis-server exited (is it installed?)");
		nanosleep(&pause, NULL);
	}
	T_FAIL("redis-server on port %d did not answer", port);
	return -1;
}
