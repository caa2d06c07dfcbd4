#!/bin/bash
# bench_delivery.sh - Signet end to end: smtp-source -> Signet (DKIM signing,
# spool fsync) -> smtp-sink, against Postfix + OpenDKIM doing the same job on
# the same machine (a benchmark, not a test: it prints figures and fails only
# when something breaks).
#
#   perf/bench_delivery.sh [BIN_DIR]     (default: $SIGNET_BIN or bin)
#
# The sink is postfix's smtp-sink on 127.0.0.1, run as
# `smtp-sink -c -d SINKDIR/cur/m.`: -c counts finished messages (its stdout),
# -d writes each message to its own file on tmpfs (/dev/shm, so that the
# sink's writes never compete with the spool fsyncs on the disk) and closes
# it when the final "." arrives.  perf/bench_delivery/arrivals.py, at a
# real-time priority (chrt -f), stamps each close through inotify: that is
# the time the message arrived (file mtimes come from the kernel's coarse
# clock, 4 ms ticks, too coarse for Signet's latency).  The sink's capacity
# with dumping on is measured first (smtp-source straight into it) and
# printed.
#
# For each system under test (Signet with relayhost = [127.0.0.1]:SINKPORT;
# then a private Postfix instance, `postfix -c DIR`, with OpenDKIM as milter,
# relayhost the same sink), with RSA-2048 relaxed/relaxed signing and
# smtp_tls_security_level = $BENCH_TLS (none):
#
# 1. warm-up: 200 messages, all of which must reach the sink signed
#    (DKIM-Signature with d=bench.example);
# 2. burst: smtp-source -d -s BENCH_SESSIONS (100) -m N -l BENCH_SIZE (10240),
#    N = BENCH_MESSAGES (20000) for Signet, BENCH_POSTFIX_MESSAGES (3000) for
#    Postfix, while perf/bench_delivery/probe.py sends BENCH_PROBE_RATE (20)
#    timestamped messages per second alongside.  End-to-end rate = messages
#    delivered / (last arrival at the sink - start of smtp-source); every
#    message must arrive.  Also: the intake rate (smtp-source's own time),
#    the CPU time of the system under test per message (Signet: its process;
#    Postfix: the master and every child, exited ones included, plus
#    OpenDKIM), the whole machine's CPU use, and the probes' latency from
#    MAIL FROM to arrival at the sink under that saturating load (it includes
#    the wait behind the backlog);
# 3. latency at a fixed load: probe.py alone at BENCH_LAT_RATE (100) messages/s
#    for BENCH_LAT_SECONDS (10) s, the same offered load for both systems:
#    p50/p99 from MAIL FROM to arrival at the sink, and from MAIL FROM to the
#    250 after DATA (intake alone).
#
# Then the ratios Signet / Postfix+OpenDKIM.  Everything it starts is stopped
# at the end; nothing listens beyond 127.0.0.1.  It never touches the system's
# own Postfix (/etc/postfix, /var/spool/postfix, port 25).  Needs root (the
# private Postfix master runs as root), smtp-source and smtp-sink (postfix),
# opendkim, curl, python3.  A few minutes in all.
#
# BENCH_TLS=may: smtp_tls_security_level = may on both (smtp-sink offers no
# STARTTLS, so the mail still goes in clear; this only exercises the policy).
# BENCH_KEEP=1 keeps the temp dirs; BENCH_SKIP_POSTFIX=1 measures Signet only.
set -u
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/perf/bench_delivery
BIN=${1:-${SIGNET_BIN:-bin}}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
SIGNET=$BIN/signet
CTL=$BIN/signetctl
PY=/usr/bin/python3
N=${BENCH_MESSAGES:-20000}
NPF=${BENCH_POSTFIX_MESSAGES:-3000}
SESSIONS=${BENCH_SESSIONS:-100}
SIZE=${BENCH_SIZE:-10240}
PROBE_RATE=${BENCH_PROBE_RATE:-20}
LAT_RATE=${BENCH_LAT_RATE:-100}
LAT_SECS=${BENCH_LAT_SECONDS:-10}
TLS=${BENCH_TLS:-none}
WARM=200

BENCH_NAME=bench_delivery
. "$ROOT/perf/lib_bench.sh"
for c in "$SIGNET" "$CTL"; do [ -x "$c" ] || die "$c not built (make BIN=... all)"; done
need_cmds smtp-source smtp-sink postfix postconf opendkim curl "$PY" ss script chrt
[ "$(id -u)" = 0 ] || die "run as root (the private Postfix instance needs it)"
case $TLS in none | may) ;; *) die "BENCH_TLS must be none or may" ;; esac

W=$(mktemp -d "${TMPDIR:-/tmp}/signet-bench-dlv.XXXXXX") || die "mktemp"
S=$(mktemp -d /dev/shm/signet-bench-sink.XXXXXX) || die "mktemp /dev/shm"
chmod 755 "$W" "$S"
chown nobody "$S"
SIGNET_PID="" SINK_PID="" PROBE_PID="" ARR_PID="" OPENDKIM_PID="" PF_STARTED=0

cleanup() {
	[ -n "$PROBE_PID" ] && kill -TERM "$PROBE_PID" 2>/dev/null
	[ -n "$ARR_PID" ] && kill -TERM "$ARR_PID" 2>/dev/null
	[ -n "$SIGNET_PID" ] && kill -TERM "$SIGNET_PID" 2>/dev/null
	[ "$PF_STARTED" = 1 ] && pf_stop "$W/pf"
	[ -n "$OPENDKIM_PID" ] && kill -TERM "$OPENDKIM_PID" 2>/dev/null
	local p
	for p in $PROBE_PID $ARR_PID $SIGNET_PID $OPENDKIM_PID $SINK_PID; do
		stop_pid "$p"
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "kept $W $S"
	else
		rm -rf "$W" "$S"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

set -- $(free_ports 5)
PORT=$1 ADMIN=$2 PFPORT=$3 MILTER=$4 SINKPORT=$5
HZ=$(getconf CLK_TCK)
CORES=$(nproc)

scan() { "$PY" "$HERE/sinkscan.py" "$@"; }
sink_count() { scan count "$W/sink.out"; }
metrics() { curl -fsS --max-time 10 "http://127.0.0.1:$ADMIN/metrics" -o "$1" || die "GET /metrics"; }
mx() { "$PY" "$ROOT/perf/bench_smtp/metrics.py" "$@"; }
# busy and total jiffies of the whole machine
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# kv KEY LINE: the value of KEY=value in LINE
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"; }

# --- the sink ----------------------------------------------------------------
# after every message sent so far has arrived, move the sink's dump files
# aside and give it an empty SINKDIR/cur
rotate() {
	mv "$S/cur" "$S/$1" || die "mv $S/cur"
	mkdir "$S/cur" && chown nobody "$S/cur"
}
mkdir "$S/cur" && chown nobody "$S/cur"

# arrivals_start NAME: stamp the closes in SINKDIR/cur into $W/NAME.arr
arrivals_start() {
	rm -f "$W/$1.ready"
	chrt -f 50 "$PY" "$HERE/arrivals.py" "$S/cur" "$W/$1.arr" "$W/$1.ready" 2>"$W/$1.arr.err" &
	ARR_PID=$!
	local i=0
	while [ ! -e "$W/$1.ready" ]; do
		kill -0 "$ARR_PID" 2>/dev/null || { cat "$W/$1.arr.err"; die "arrivals.py failed"; }
		[ $i -ge 100 ] && die "arrivals.py did not start"
		sleep 0.05
		i=$((i + 1))
	done
}
arrivals_stop() {
	kill -TERM "$ARR_PID"
	wait "$ARR_PID"
	ARR_PID=""
}
# notes about a scan result: files timed by their coarse mtime
scan_notes() {
	[ "$(kv mtime "$1")" = 0 ] || echo "  NOTE: $(kv mtime "$1") message(s) timed by their file mtime (4 ms ticks): arrivals.py missed them"
	[ "$(kv overflow "$1")" = 0 ] || echo "  NOTE: the inotify queue overflowed"
}

smtp-sink -u nobody -c -d "$S/cur/m." "127.0.0.1:$SINKPORT" 1024 >"$W/sink.out" 2>"$W/sink.err" &
SINK_PID=$!
wait_port "$SINKPORT" 10 || { cat "$W/sink.err"; die "smtp-sink did not start"; }
# wait_sink TARGET: until the sink has counted TARGET messages in all
wait_sink() { scan wait "$W/sink.out" "$1" 30 600 >"$W/wait.out"; }

echo "signet: $("$SIGNET" -V 2>/dev/null | head -n 1), $CORES cores, load generator and sink on the same machine"
b=$(sink_count)
t0=$(now)
smtp-source -d -s 20 -m 5000 -l "$SIZE" -f a@bench.example -t b@rcpt.example "127.0.0.1:$SINKPORT" ||
	die "smtp-source into smtp-sink failed"
wait_sink $((b + 5000)) || die "smtp-sink counted $(cat "$W/wait.out"), wanted 5000 more than $b"
r=$(scan scan "$S/cur" -)
SINK_CAP=$(calc %.0f "5000 / ($(kv last_ns "$r") / 1e9 - $t0)")
printf 'sink: smtp-sink -c -d (dump files on tmpfs) alone takes %d messages/s from smtp-source -d -s 20\n' "$SINK_CAP"
rotate sinkcheck
rm -rf "$S/sinkcheck"

# die_sut MSG: die, saying so if Signet has died (and how) with its last log lines
die_sut() {
	local st
	if [ -n "$SIGNET_PID" ] && ! kill -0 "$SIGNET_PID" 2>/dev/null; then
		wait "$SIGNET_PID"
		st=$?
		SIGNET_PID=""
		[ $st -gt 128 ] && st="signal $((st - 128))$([ $st = 139 ] && echo ' (SIGSEGV)')"
		tail -n 5 "$W/signet.log" | sed 's/^/  signet.log: /' >&2
		die "$*; signet died ($st)"
	fi
	die "$*"
}

# --- one system under test -----------------------------------------------------
# measure NAME PORT N CPUFN: warm-up, burst and fixed-load runs against the
# server on PORT; CPUFN prints the CPU ticks used so far by the system under
# test.  Sets NAME_rate, NAME_cpu, NAME_lat50, NAME_lat99 and so on.
measure() {
	local name=$1 port=$2 n=$3 cpufn=$4 b r files k t0 t1 c0 c1 m0 m1 m2 m3 last secs i

	# 1. warm-up, and every message must arrive signed
	b=$(sink_count)
	smtp-source -d -s 10 -m $WARM -l "$SIZE" -M bench.test -f a@bench.example -t b@rcpt.example \
		"127.0.0.1:$port" || die_sut "$name: warm-up smtp-source failed"
	wait_sink $((b + WARM)) || die_sut "$name: warm-up: the sink counted $(cat "$W/wait.out"), wanted $WARM more than $b"
	r=$(scan scan "$S/cur" -)
	[ "$(kv signed "$r")" = $WARM ] ||
		die "$name: $(kv signed "$r") of $(kv files "$r") warm-up messages at the sink carry a d=bench.example signature"
	rotate "$name-warm"

	# 2. burst
	echo
	echo "== $name: smtp-source -d -s $SESSIONS -m $n -l $SIZE, + $PROBE_RATE probe messages/s (RSA-2048, relaxed/relaxed, smtp_tls_security_level = $TLS)"
	"$PY" "$HERE/probe.py" --port "$port" --rate "$PROBE_RATE" --tag "$name-b" --log "$W/$name-b.log" \
		--ready "$W/$name-b.ready" >"$W/$name-b.out" 2>&1 &
	PROBE_PID=$!
	i=0
	while [ ! -e "$W/$name-b.ready" ]; do
		kill -0 "$PROBE_PID" 2>/dev/null || { cat "$W/$name-b.out"; die "$name: probe.py failed"; }
		[ $i -ge 200 ] && die "$name: probe.py did not connect"
		sleep 0.05
		i=$((i + 1))
	done
	arrivals_start "$name-b"
	b=$(sink_count)
	read -r m0 m1 <<<"$(machine_ticks)"
	c0=$($cpufn)
	t0=$(now)
	kill -USR1 "$PROBE_PID"
	smtp-source -d -s "$SESSIONS" -m "$n" -l "$SIZE" -M bench.test -f a@bench.example -t b@rcpt.example \
		"127.0.0.1:$port" || die_sut "$name: smtp-source failed"
	t1=$(now)
	kill -TERM "$PROBE_PID"
	wait "$PROBE_PID"
	PROBE_PID=""
	k=$(sed -n 's/.* ok \([0-9]*\).*/\1/p' "$W/$name-b.out")
	[ -n "$k" ] || { cat "$W/$name-b.out"; die "$name: probe.py failed"; }
	wait_sink $((b + n + k)) || echo "  NOTE: the sink got $(($(sink_count) - b)) of $((n + k)) messages (gave up after 30 s without progress)"
	c1=$($cpufn)
	read -r m2 m3 <<<"$(machine_ticks)"
	arrivals_stop
	r=$(scan scan "$S/cur" "$W/$name-b.arr" "$W/$name-b.log" "$name-b")
	files=$(kv files "$r")
	last=$(calc %.6f "$(kv last_ns "$r") / 1e9")
	secs=$(calc %.3f "$last - $t0")
	# the rate counts different messages: a duplicate is no work done
	printf -v "${name}_rate" %s "$(calc %.0f "$(kv distinct "$r") / $secs")"
	printf -v "${name}_cpu" %s "$(calc %.3f "($c1 - $c0) * 1000 / $HZ / ($files > 0 ? $files : 1)")"
	printf -v "${name}_blat99" %s "$(kv lat99 "$r")"
	printf '  delivered           %d of %d messages in %.2f s = %d messages/s end to end (%d signed)\n' \
		"$(kv distinct "$r")" $((n + k)) "$secs" "$(calc %.0f "$(kv distinct "$r") / $secs")" "$(kv signed "$r")"
	printf '  intake              smtp-source done after %.2f s = %d messages/s; the queue drained %.2f s later\n' \
		"$(calc %.3f "$t1 - $t0")" "$(calc %.0f "$n / ($t1 - $t0)")" "$(calc %.3f "$last - $t1")"
	printf '  CPU                 %.3f ms per message (%s), machine %d%% busy (%d cores, all processes)\n' \
		"$(calc %.3f "($c1 - $c0) * 1000 / $HZ / ($files > 0 ? $files : 1)")" "$CPUWHAT" \
		"$(calc %.0f "100 * ($m2 - $m0) / ($m3 - $m1 > 0 ? $m3 - $m1 : 1)")" "$CORES"
	printf '  probe latency       p50 %s ms, p99 %s ms, max %s ms to the sink under this load (%d of %d probes found)\n' \
		"$(kv lat50 "$r")" "$(kv lat99 "$r")" "$(kv latmax "$r")" "$(kv found "$r")" "$(kv probes "$r")"
	[ "$files" = $((n + k)) ] || echo "  NOTE: $((n + k)) messages accepted, $files at the sink"
	[ "$(kv signed "$r")" = "$files" ] || echo "  NOTE: only $(kv signed "$r") of $files carry a d=bench.example signature"
	[ "$(kv distinct "$r")" = "$files" ] ||
		echo "  WARNING: $files deliveries but only $(kv distinct "$r") different Message-IDs:" \
			"$((files - $(kv distinct "$r"))) duplicates, $((n + k - $(kv distinct "$r"))) of $((n + k)) accepted messages never arrived"
	scan_notes "$r"
	rotate "$name-burst"
	[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$S/$name-burst"

	# 3. fixed load
	arrivals_start "$name-l"
	b=$(sink_count)
	"$PY" "$HERE/probe.py" --port "$port" --rate "$LAT_RATE" --seconds "$LAT_SECS" --tag "$name-l" \
		--log "$W/$name-l.log" >"$W/$name-l.out" 2>&1 || { cat "$W/$name-l.out"; die "$name: probe.py failed"; }
	k=$(sed -n 's/.* ok \([0-9]*\).*/\1/p' "$W/$name-l.out")
	wait_sink $((b + k)) || echo "  NOTE: the sink got $(($(sink_count) - b)) of $k probe messages"
	arrivals_stop
	r=$(scan scan "$S/cur" "$W/$name-l.arr" "$W/$name-l.log" "$name-l")
	printf -v "${name}_lat50" %s "$(kv lat50 "$r")"
	printf -v "${name}_lat99" %s "$(kv lat99 "$r")"
	printf '  at %s messages/s    p50 %s ms, p99 %s ms, max %s ms MAIL FROM -> at the sink; p50 %s ms, p99 %s ms to 250 (%s)\n' \
		"$LAT_RATE" "$(kv lat50 "$r")" "$(kv lat99 "$r")" "$(kv latmax "$r")" "$(kv acc50 "$r")" "$(kv acc99 "$r")" \
		"$(sed 's/sent [0-9]* //' "$W/$name-l.out")"
	[ "$(kv found "$r")" = "$(kv probes "$r")" ] || echo "  NOTE: $(kv found "$r") of $(kv probes "$r") probes found at the sink"
	[ "$(kv distinct "$r")" = "$(kv files "$r")" ] ||
		echo "  WARNING: $(kv files "$r") deliveries but only $(kv distinct "$r") different Message-IDs"
	scan_notes "$r"
	rotate "$name-lat"
}

# --- Signet ------------------------------------------------------------------------
mkdir -p "$W/dkim" "$W/spool" "$W/tls"
"$CTL" dkim keygen -a rsa -b 2048 -o "$W/dkim/bench.pem" >"$W/dkim/bench._domainkey.bench.example.txt" ||
	die "signetctl dkim keygen"
cat >"$W/signet.conf" <<EOF
# perf/bench_delivery.sh
listen = 127.0.0.1:$PORT
admin_listen = 127.0.0.1:$ADMIN
spool_dir = $W/spool
myhostname = bench.test
mynetworks = 127.0.0.0/8
smtpd_client_connection_count_limit = 0
smtpd_tls_cert_file = $W/tls/cert.pem
smtpd_tls_key_file = $W/tls/key.pem
dkim_sign = bench.example bench $W/dkim/bench.pem
dkim_canonicalization = relaxed/relaxed
relayhost = [127.0.0.1]:$SINKPORT
smtp_tls_security_level = $TLS
# the rest at its defaults: default_destination_concurrency_limit = 20,
# smtp_connection_limit = 100, smtp_connection_cache_time_limit = 2s
EOF
"$SIGNET" -c "$W/signet.conf" >"$W/signet.log" 2>&1 &
SIGNET_PID=$!
wait_port "$PORT" 20 || { tail -20 "$W/signet.log"; die "signet did not start"; }
wait_port "$ADMIN" 5 || die "no admin listener"
signet_ticks() { cpu_ticks "$SIGNET_PID"; }
CPUWHAT="signet process, all threads"
metrics "$W/sm0"
measure signet "$PORT" "$N" signet_ticks
kill -0 "$SIGNET_PID" 2>/dev/null || die_sut "signet: after the runs"
metrics "$W/sm1"
printf '  signet metrics      sent %s, deferred %s, bounced %s; connection cache hits %s\n' \
	"$(mx delta "$W/sm0" "$W/sm1" signet_deliveries_total 'result="sent"')" \
	"$(mx delta "$W/sm0" "$W/sm1" signet_deliveries_total 'result="deferred"')" \
	"$(mx delta "$W/sm0" "$W/sm1" signet_deliveries_total 'result="bounced"')" \
	"$(mx delta "$W/sm0" "$W/sm1" signet_connection_cache_hits_total)"
grep -Eq 'status=(deferred|bounced)' "$W/signet.log" &&
	grep -E 'status=(deferred|bounced)' "$W/signet.log" | head -n 3 | sed 's/^/  log: /'
kill -TERM "$SIGNET_PID"
wait "$SIGNET_PID"
src=$?
SIGNET_PID=""
[ "$src" = 0 ] || echo "note: signet exited $src on SIGTERM"

# --- Postfix + OpenDKIM ------------------------------------------------------------------
if [ "${BENCH_SKIP_POSTFIX:-0}" != 1 ]; then
	P=$W/pf
	pf_configure "$P" "$MILTER" "127.0.0.1:$PFPORT"
	# the intake benchmark's instance, made to deliver: no HOLD, no
	# defer_transports, the sink as relayhost
	postconf -c "$P/etc" -e \
		"relayhost = [127.0.0.1]:$SINKPORT" \
		"defer_transports =" \
		"smtpd_recipient_restrictions = permit_mynetworks, reject" \
		"smtp_tls_security_level = $TLS" \
		"default_process_limit = 200" ||
		die "postconf -e"
	opendkim -f -x "$P/opendkim.conf" >"$W/opendkim.log" 2>&1 &
	OPENDKIM_PID=$!
	wait_port "$MILTER" 15 || { cat "$W/opendkim.log"; die "opendkim did not start"; }
	pf_start "$P"
	wait_port "$PFPORT" 20 || { cat "$P/postfix-start.log" "$P/maillog" 2>/dev/null | tail -20; die "postfix did not start"; }
	postfix_ticks() { echo $(($(pf_tree_ticks "$P") + $(cpu_ticks "$OPENDKIM_PID"))); }
	CPUWHAT="postfix master + children + opendkim"
	echo
	echo "postfix $(postconf -d -h mail_version 2>/dev/null) + $(opendkim -V 2>&1 | head -n 1 | sed 's/.*Filter /opendkim /'):" \
		"default_process_limit = 200, default_destination_concurrency_limit = $(postconf -c "$P/etc" -h default_destination_concurrency_limit), the rest as shipped"
	measure postfix "$PFPORT" "$NPF" postfix_ticks
	grep -Eq 'status=(deferred|bounced)' "$P/maillog" 2>/dev/null &&
		grep -E 'status=(deferred|bounced)' "$P/maillog" | head -n 3 | sed 's/^/  log: /'

	echo
	echo "---- summary (smtp_tls_security_level = $TLS, $SIZE-byte messages, $CORES cores shared with smtp-source and smtp-sink) ----"
	printf '%-22s %12s %14s %16s %16s\n' "" "messages/s" "CPU ms/msg" "p50 ms @${LAT_RATE}/s" "p99 ms @${LAT_RATE}/s"
	printf '%-22s %12s %14s %16s %16s\n' "signet" "$signet_rate" "$signet_cpu" "$signet_lat50" "$signet_lat99"
	printf '%-22s %12s %14s %16s %16s\n' "postfix+opendkim" "$postfix_rate" "$postfix_cpu" "$postfix_lat50" "$postfix_lat99"
	printf 'ratio signet / postfix+opendkim: %.1fx messages/s, %.1fx less CPU per message, p99 latency %.1fx lower\n' \
		"$(calc %.2f "$signet_rate / ($postfix_rate > 0 ? $postfix_rate : 1)")" \
		"$(calc %.2f "$postfix_cpu / ($signet_cpu > 0 ? $signet_cpu : 1)")" \
		"$(calc %.2f "$postfix_lat99 / ($signet_lat99 > 0 ? $signet_lat99 : 1)")"
	printf 'p99 latency under the burst (probes, includes queueing): signet %s ms, postfix+opendkim %s ms\n' \
		"$signet_blat99" "$postfix_blat99"
	echo "target (issue 4): signet >= 5x postfix+opendkim in messages/s end to end:" \
		"$(awk "BEGIN { print ($signet_rate >= 5 * $postfix_rate) ? \"met\" : \"MISSED\" }")"
fi
