# perf/lib_bench.sh - shell helpers shared by perf/bench_smtp.sh and
# perf/bench_delivery.sh.  Sourced, not run.  The caller sets BENCH_NAME (the
# prefix of error messages), ROOT (the repository) and PY (python3) first.
#
#   die MSG...                 print "BENCH_NAME: MSG" on stderr, exit 1
#   need_cmds CMD...           die unless every CMD is on PATH
#   free_ports N               N free TCP ports on 127.0.0.1, blank-separated
#   wait_port PORT [SECS]      wait until something listens on PORT (15 s)
#   now                        wall clock, seconds with nanoseconds
#   calc FMT EXPR              printf FMT of an awk expression
#   cpu_ticks PID              user+system clock ticks of PID (all threads)
#   rss_kb PID                 resident set size of PID in KB
#   wait_gone PID [TENTHS]     wait (100 tenths of a second) for PID to exit
#   stop_pid PID               SIGTERM, wait up to 10 s, then SIGKILL
#   pf_configure P MILTER LISTEN
#                              write the private Postfix instance's main.cf
#                              and master.cf under P/etc from the templates
#                              in perf/bench_smtp (queue in P/queue), and
#                              OpenDKIM's configuration in P/opendkim.conf
#                              (key: $W/dkim/bench.pem)
#   pf_start P                 start that instance (sets PF_STARTED=1)
#   pf_stop P                  stop it (postfix stop, abort if it lingers)
#   pf_tree_ticks P            CPU ticks of that instance's master and all its
#                              children, exited ones included (cutime)
#
# None of these touches the system's own Postfix (/etc/postfix,
# /var/spool/postfix): every postfix command gets -c P/etc.

die() {
	echo "${BENCH_NAME:-bench}: $*" >&2
	exit 1
}

need_cmds() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 ||
			die "missing $c (Debian packages: postfix opendkim curl python3 iproute2)"
	done
}

free_ports() {
	"$PY" -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

wait_port() {
	local i=0
	while [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; do
		[ $i -ge $((${2:-15} * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
}

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

wait_gone() {
	local i=0
	while [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ $i -lt "${2:-100}" ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

stop_pid() {
	[ -n "$1" ] || return 0
	kill -TERM "$1" 2>/dev/null
	wait_gone "$1" 100
	kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null
	return 0
}

pf_configure() {
	local p=$1 milter=$2 listen=$3 t=$ROOT/perf/bench_smtp
	mkdir -p "$p/etc" "$p/queue" "$p/data"
	chown postfix "$p/data"
	sed "s|@DIR@|$p|g; s|@MILTER@|$milter|g" "$t/postfix-main.cf" >"$p/etc/main.cf"
	sed "s|@LISTEN@|$listen|" "$t/postfix-master.cf" >"$p/etc/master.cf"
	sed "s|@DIR@|$W|g; s|@PORT@|$milter|g" "$t/opendkim.conf" >"$p/opendkim.conf"
}

pf_start() {
	# postfix logs its own errors to syslog or a tty only: give it a tty
	script -qc "postfix -c $1/etc start" /dev/null >"$1/postfix-start.log" 2>&1
	PF_STARTED=1
}

pf_master_pid() { head -n 1 "$1/queue/pid/master.pid" 2>/dev/null | tr -d ' '; }

pf_stop() {
	local mp
	mp=$(pf_master_pid "$1")
	postfix -c "$1/etc" stop >/dev/null 2>&1
	# the master exits within a few seconds; make sure
	wait_gone "$mp" 50
	[ -n "$mp" ] && kill -0 "$mp" 2>/dev/null && postfix -c "$1/etc" abort >/dev/null 2>&1
	return 0
}

pf_tree_ticks() {
	local mp
	mp=$(pf_master_pid "$1")
	[ -n "$mp" ] || { echo 0; return; }
	# the master's own time and that of its children that it has reaped
	# (cutime, cstime), plus its live children: every tick is counted once
	{
		awk '{ print $14 + $15 + $16 + $17 }' "/proc/$mp/stat" 2>/dev/null
		for c in $(pgrep -P "$mp"); do
			awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null
		done
	} | awk '{ s += $1 } END { print s + 0 }'
}
