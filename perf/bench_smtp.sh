#!/bin/bash
# bench_smtp.sh - Signet's SMTP intake benchmark (a benchmark, not a test:
# it prints figures and fails only when something breaks).
#
#   perf/bench_smtp.sh [BIN_DIR]        (default: $SIGNET_BIN or bin)
#
# 1. Signet with signing on (RSA-2048, relaxed/relaxed): postfix's
#    smtp-source sends BENCH_MESSAGES (20000) messages of BENCH_SIZE (10240)
#    bytes over BENCH_SESSIONS (100) parallel sessions.  Prints accepted
#    messages/s, messages per spool fsync and p50/p99 from end of DATA to
#    250 (signet_accept_seconds, and the same seen by a client,
#    tests/integ/smtp/loadclient.py, under lighter load), and Signet's CPU
#    time per message.
# 2. RSS of the daemon with BENCH_IDLE_CONNS (10000) idle connections
#    (perf/bench_smtp/idle_conns.py; the script raises ulimit -n).
# 3. A private Postfix instance (its own config and queue directories under
#    the temp dir, `postfix -c DIR`, one inet listener on 127.0.0.1) with
#    OpenDKIM as its milter (opendkim -f -x, same RSA-2048 key,
#    relaxed/relaxed, Mode s) accepting BENCH_POSTFIX_MESSAGES (3000) of the
#    same messages from the same smtp-source; the mail is fsynced into its
#    queue as Postfix always does, then held (HOLD action, defer_transports
#    and an unreachable relayhost): nothing is delivered.  Prints the ratio
#    Signet / Postfix+OpenDKIM.
# Everything it starts is stopped at the end; nothing listens beyond
# 127.0.0.1.  It never touches the system's own Postfix (/etc/postfix,
# /var/spool/postfix, port 25): the Debian package installed with debconf
# "postfix/main_mailer_type = No configuration" has no main.cf and runs
# nothing.  Needs root (Postfix's master runs as root), smtp-source
# (postfix), opendkim, curl, python3.
#
# BENCH_SMTP_SOURCE_OPTS: smtp-source options for both servers (default "-d":
# several messages per connection); BENCH_KEEP=1 keeps the temp dir; BENCH_SKIP_POSTFIX=1 / BENCH_SKIP_IDLE=1
# skip parts.
set -u
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/perf/bench_smtp
BIN=${1:-${SIGNET_BIN:-bin}}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
SIGNET=$BIN/signet
CTL=$BIN/signetctl
PY=/usr/bin/python3
N=${BENCH_MESSAGES:-20000}
NPF=${BENCH_POSTFIX_MESSAGES:-3000}
SESSIONS=${BENCH_SESSIONS:-100}
SIZE=${BENCH_SIZE:-10240}
IDLE=${BENCH_IDLE_CONNS:-10000}
# smtp-source options for both servers.  The default "-d" keeps each session's
# connection for several messages, as a sending MTA's connection cache does
# with its relayhost (Postfix: smtp_connection_cache_on_demand); set
# BENCH_SMTP_SOURCE_OPTS= (empty) for one connection per message.
SRCOPTS=${BENCH_SMTP_SOURCE_OPTS--d}

BENCH_NAME=bench_smtp
. "$ROOT/perf/lib_bench.sh"
for c in "$SIGNET" "$CTL"; do [ -x "$c" ] || die "$c not built (make BIN=... all)"; done
need_cmds smtp-source postfix postcat opendkim curl "$PY" ss
[ "$(id -u)" = 0 ] || die "run as root (the private Postfix instance needs it)"

W=$(mktemp -d "${TMPDIR:-/tmp}/signet-bench.XXXXXX") || die "mktemp"
chmod 755 "$W"
SIGNET_PID="" IDLE_PID="" OPENDKIM_PID="" PF_STARTED=0

cleanup() {
	[ -n "$IDLE_PID" ] && kill -TERM "$IDLE_PID" 2>/dev/null
	[ -n "$SIGNET_PID" ] && kill -TERM "$SIGNET_PID" 2>/dev/null
	[ "$PF_STARTED" = 1 ] && pf_stop "$W/pf"
	[ -n "$OPENDKIM_PID" ] && kill -TERM "$OPENDKIM_PID" 2>/dev/null
	local p
	for p in $IDLE_PID $SIGNET_PID $OPENDKIM_PID; do
		stop_pid "$p"
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "kept $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set -- $(free_ports 5)
PORT=$1 ADMIN=$2 PFPORT=$3 MILTER=$4 SPARE=$5

metrics() { curl -fsS --max-time 10 "http://127.0.0.1:$ADMIN/metrics" -o "$1" || die "GET /metrics"; }
mx() { "$PY" "$HERE/metrics.py" "$@"; }

# --- keys, configuration -----------------------------------------------------
mkdir -p "$W/dkim" "$W/spool" "$W/tls"
"$CTL" dkim keygen -a rsa -b 2048 -o "$W/dkim/bench.pem" >"$W/dkim/bench._domainkey.bench.example.txt" ||
	die "signetctl dkim keygen"
cat >"$W/signet.conf" <<EOF
# perf/bench_smtp.sh
listen = 127.0.0.1:$PORT
admin_listen = 127.0.0.1:$ADMIN
spool_dir = $W/spool
myhostname = bench.test
mynetworks = 127.0.0.0/8
smtpd_client_connection_count_limit = 0
max_connections = $((IDLE + 1000))
smtpd_tls_cert_file = $W/tls/cert.pem
smtpd_tls_key_file = $W/tls/key.pem
dkim_sign = bench.example bench $W/dkim/bench.pem
dkim_canonicalization = relaxed/relaxed
# intake only: keep the mail queued, as the Postfix side holds it
defer_transports = smtp
EOF
want_fd=$((IDLE + 2000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_fd" ]; then
	ulimit -Hn "$want_fd" 2>/dev/null
fi
ulimit -n "$want_fd" 2>/dev/null || echo "note: cannot raise ulimit -n to $want_fd (now $(ulimit -n))"

echo "signet: $("$SIGNET" -V 2>/dev/null | head -n 1), $(nproc) cores, load generator on the same machine"
"$SIGNET" -c "$W/signet.conf" >"$W/signet.log" 2>&1 &
SIGNET_PID=$!
wait_port "$PORT" 20 || { tail -20 "$W/signet.log"; die "signet did not start"; }
wait_port "$ADMIN" 5 || die "no admin listener"

# warm up, and check that messages really are signed
smtp-source -s 10 -m 200 -l "$SIZE" -M bench.test -f a@bench.example -t b@rcpt.example "127.0.0.1:$PORT" ||
	die "smtp-source warm-up against signet failed"
f=$(find "$W/spool/active" -type f | head -n 1)
[ -n "$f" ] || die "no queue file after the warm-up"
"$PY" "$ROOT/tests/integ/smtp/qfile.py" sig "$f" | tr -d ' \t\r\n' | grep -q 'd=bench.example' ||
	die "signet does not sign (no d=bench.example signature in $f)"

# --- 1. throughput ------------------------------------------------------------
echo
echo "== signet: smtp-source $SRCOPTS -s $SESSIONS -m $N -l $SIZE (RSA-2048, relaxed/relaxed)"
metrics "$W/m0"
c0=$(cpu_ticks "$SIGNET_PID")
t0=$(now)
smtp-source $SRCOPTS -s "$SESSIONS" -m "$N" -l "$SIZE" -M bench.test -f a@bench.example -t b@rcpt.example \
	"127.0.0.1:$PORT" || die "smtp-source against signet failed"
t1=$(now)
c1=$(cpu_ticks "$SIGNET_PID")
metrics "$W/m1"
secs=$(calc %.3f "$t1 - $t0")
acc=$(mx delta "$W/m0" "$W/m1" signet_messages_accepted_total)
rate=$(calc %.0f "$acc / $secs")
perfsync=$(mx mean "$W/m0" "$W/m1" signet_spool_messages_per_fsync)
read -r p50 p99 <<<"$(mx quantile "$W/m0" "$W/m1" signet_accept_seconds 0.5 0.99)"
hz=$(getconf CLK_TCK)
cpu_ms=$(calc %.3f "($c1 - $c0) * 1000 / $hz / ($acc > 0 ? $acc : 1)")
printf '  accepted            %d messages in %.2f s = %d messages/s\n' "${acc%.*}" "$secs" "$rate"
printf '  messages per fsync  %.1f (mean of signet_spool_messages_per_fsync)\n' "$perfsync"
printf '  end of DATA -> 250  p50 %.2f ms, p99 %.2f ms (signet_accept_seconds)\n' \
	"$(calc %.3f "$p50 * 1000")" "$(calc %.3f "$p99 * 1000")"
printf '  signet CPU          %.3f ms per message (user+system, all threads)\n' "$cpu_ms"
SIGNET_RATE=$rate

# the same latency seen by a client, at lighter load (python client)
"$PY" "$ROOT/tests/integ/smtp/loadclient.py" --port "$PORT" --conns 20 --size "$SIZE" --duration 5 \
	--from a@bench.example --latency "$W/lat" >"$W/lc.out" 2>&1
read -r l50 l99 <<<"$(mx percentile "$W/lat" 0.5 0.99)"
printf '  client-side         p50 %.2f ms, p99 %.2f ms (loadclient.py, 20 sessions: %s)\n' \
	"$(calc %.3f "$l50 * 1000")" "$(calc %.3f "$l99 * 1000")" "$(cat "$W/lc.out")"

# --- 2. idle connections -------------------------------------------------------------
if [ "${BENCH_SKIP_IDLE:-0}" != 1 ]; then
	echo
	echo "== signet: $IDLE idle connections"
	r0=$(rss_kb "$SIGNET_PID")
	"$PY" "$HERE/idle_conns.py" "$PORT" "$IDLE" "$W/idle.ready" >"$W/idle.log" 2>&1 &
	IDLE_PID=$!
	i=0
	while [ ! -e "$W/idle.ready" ] && [ $i -lt 900 ] && kill -0 "$IDLE_PID" 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e "$W/idle.ready" ] || { cat "$W/idle.log"; die "idle_conns.py did not get ready"; }
	sleep 1
	r1=$(rss_kb "$SIGNET_PID")
	metrics "$W/m2"
	cur=$(mx delta /dev/null "$W/m2" signet_connections_current)
	read -r _ open greeted <"$W/idle.ready"
	printf '  connections         %d open, %d greeted, signet_connections_current %d\n' "$open" "$greeted" "${cur%.*}"
	printf '  RSS                 %.1f MB with them (%.1f MB before, %.1f KB per connection)\n' \
		"$(calc %.1f "$r1 / 1024")" "$(calc %.1f "$r0 / 1024")" "$(calc %.2f "($r1 - $r0) / ($greeted > 0 ? $greeted : 1)")"
	[ -s "$W/idle.log" ] && sed 's/^/  /' "$W/idle.log"
	IDLE_RSS_MB=$(calc %.1f "$r1 / 1024")
	kill -TERM "$IDLE_PID"
	wait "$IDLE_PID" 2>/dev/null
	IDLE_PID=""
fi
kill -TERM "$SIGNET_PID"
wait "$SIGNET_PID"
src=$?
SIGNET_PID=""
[ "$src" = 0 ] || echo "note: signet exited $src on SIGTERM"

# --- 3. Postfix + OpenDKIM ---------------------------------------------------------------
if [ "${BENCH_SKIP_POSTFIX:-0}" != 1 ]; then
	echo
	echo "== postfix $(postconf -d -h mail_version 2>/dev/null) + $(opendkim -V 2>&1 | head -n 1 | sed 's/.*Filter /opendkim /'): smtp-source $SRCOPTS -s $SESSIONS -m $NPF -l $SIZE"
	P=$W/pf
	pf_configure "$P" "$MILTER" "127.0.0.1:$PFPORT"
	opendkim -f -x "$P/opendkim.conf" >"$W/opendkim.log" 2>&1 &
	OPENDKIM_PID=$!
	wait_port "$MILTER" 15 || { cat "$W/opendkim.log"; die "opendkim did not start"; }
	pf_start "$P"
	wait_port "$PFPORT" 20 || { cat "$P/postfix-start.log" "$P/maillog" 2>/dev/null | tail -20; die "postfix did not start"; }
	pfcount() { find "$P/queue/incoming" "$P/queue/active" "$P/queue/deferred" "$P/queue/hold" -type f 2>/dev/null | wc -l; }
	smtp-source -s 10 -m 200 -l "$SIZE" -M bench.test -f a@bench.example -t b@rcpt.example "127.0.0.1:$PFPORT" ||
		die "smtp-source warm-up against postfix failed"
	sleep 1
	f=$(find "$P/queue/hold" -type f | head -n 1)
	[ -n "$f" ] || die "postfix: nothing held after the warm-up (see $P/maillog)"
	postcat -c "$P/etc" -h "$f" 2>/dev/null | tr -d ' \t' | grep -q 'd=bench.example' ||
		die "postfix: the held message is not signed by OpenDKIM"
	n0=$(pfcount)
	t0=$(now)
	smtp-source $SRCOPTS -s "$SESSIONS" -m "$NPF" -l "$SIZE" -M bench.test -f a@bench.example -t b@rcpt.example \
		"127.0.0.1:$PFPORT" || die "smtp-source against postfix failed"
	t1=$(now)
	n1=$(pfcount)
	secs=$(calc %.3f "$t1 - $t0")
	pacc=$((n1 - n0))
	prate=$(calc %.0f "$pacc / $secs")
	printf '  accepted            %d messages in %.2f s = %d messages/s\n' "$pacc" "$secs" "$prate"
	[ "$pacc" = "$NPF" ] || echo "  note: $NPF sent, $pacc found in the queue"
	echo
	printf 'ratio signet / postfix+opendkim: %.1fx\n' "$(calc %.2f "$SIGNET_RATE / ($prate > 0 ? $prate : 1)")"
fi

echo
echo "targets (issue 3, 2 cores, load generator included): >= 2000 messages/s;" \
	">= 5x Postfix+OpenDKIM; $IDLE idle connections in < 200 MB"
