# lib_deliver.sh - helpers for the delivery scenarios (tests/integ/7x-*.sh).
#
# A scenario starts with
#     . "$(dirname "$0")/lib_deliver.sh"
# which sources lib_smtp.sh (signet_start, smtp_conf, swaks_send, ...) and
# lib_dns.sh (dns_start, DNS_SERVERS), and adds:
#   DDIR        tests/integ/deliver (dsink.py, rec.py, zones)
#   SINK_PORT   a free loopback port for a relayhost sink (after deliver_setup)
# and the functions below.  Sinks are tests/integ/deliver/dsink.py: one
# process per address:port, recording to $T/NAME.jsonl, killed at exit.
#
# deliver_conf writes a configuration that delivers (defer_transports
# empty) with short backoffs; scenario settings override.

. "$(dirname "${BASH_SOURCE[0]}")/lib_smtp.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib_dns.sh"

DDIR=$INTEG/deliver
declare -A SINK_PID=()

# deliver_setup - smtp_setup, plus SINK_PORT.
deliver_setup() {
	smtp_setup
	SINK_PORT=$PORT5
	export SINK_PORT
}

# deliver_conf FILE [SETTING...] - smtp_conf with delivery on: no deferred
# transports, backoff 1s..2s, a short cache time; SETTINGs override.
deliver_conf() {
	local f=$1
	shift
	local base=(
		"defer_transports ="
		"minimal_backoff_time = 1s"
		"maximal_backoff_time = 2s"
		"smtp_connect_timeout = 3s"
		"smtp_helo_timeout = 10s"
		"smtp_data_done_timeout = 10s"
		"log_level = info"
	)
	local s name out=() over=" "
	for s in "$@"; do
		name=${s%%=*}
		name=${name//[[:space:]]/}
		over="$over$name "
	done
	for s in "${base[@]}"; do
		name=${s%%=*}
		name=${name//[[:space:]]/}
		case $over in *" $name "*) continue ;; esac
		out+=("$s")
	done
	smtp_conf "$f" "${out[@]}" "$@"
}

# port25_free ADDR - fail unless nothing listens on ADDR:25 (nor *:25).
port25_free() {
	local l
	l=$(ss -Hltn 'sport = :25' 2>/dev/null | awk '{print $4}')
	for a in $l; do
		case $a in
		"$1:25" | "0.0.0.0:25" | "*:25" | "[::]:25")
			fail "something already listens on $a: cannot run a sink on $1:25" ;;
		esac
	done
}

# sink_start NAME ADDR PORT [DSINK-ARGS...] - start dsink.py on ADDR:PORT
# recording to $T/NAME.jsonl (appending: a restarted sink keeps its record).
sink_start() {
	local name=$1 addr=$2 port=$3 i=0
	shift 3
	[ "$port" = 25 ] && port25_free "$addr"
	rm -f "$T/$name.ready"
	"$PY" "$DDIR/dsink.py" --addr "$addr" --port "$port" --record "$T/$name.jsonl" \
		--ready "$T/$name.ready" "$@" >>"$T/$name.log" 2>&1 &
	SINK_PID[$name]=$!
	smtp_track "$!"
	while [ ! -f "$T/$name.ready" ]; do
		kill -0 "${SINK_PID[$name]}" 2>/dev/null || { cat "$T/$name.log" >&2; fail "sink $name ($addr:$port) exited at start"; }
		[ $i -ge 100 ] && { cat "$T/$name.log" >&2; fail "sink $name did not start"; }
		sleep 0.1
		i=$((i + 1))
	done
}

# sink_stop NAME - stop the sink (its record stays).
sink_stop() {
	local p=${SINK_PID[$1]:-}
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	SINK_PID[$1]=""
}

# rec ARGS... - tests/integ/deliver/rec.py (see there).
rec() {
	"$PY" "$DDIR/rec.py" "$@"
}

# sink_count NAME [REC-OPTIONS...] - accepted transactions recorded by NAME.
sink_count() {
	local n=$1
	shift
	rec "$T/$n.jsonl" count "$@"
}

# wait_until SECONDS DESCRIPTION CMD... - poll CMD (eval'd) every 0.1 s until it
# succeeds; fail after SECONDS, or at once if the daemon has died.
wait_until() {
	local secs=$1 what=$2 i=0
	shift 2
	until eval "$@"; do
		[ -n "$SIGNET_PID" ] && signet_alive "while waiting for: $what"
		[ $i -ge $((secs * 10)) ] && fail "timed out after ${secs}s waiting for: $what"
		sleep 0.1
		i=$((i + 1))
	done
}

# wait_sink NAME N [SECONDS [REC-OPTIONS...]] - wait until sink NAME has at
# least N accepted transactions (matching the options).
wait_sink() {
	local name=$1 n=$2 secs=${3:-20} i=0 got
	shift 2
	[ $# -gt 0 ] && shift
	while :; do
		got=$(sink_count "$name" "$@")
		[ "$got" -ge "$n" ] && return 0
		[ -n "$SIGNET_PID" ] && signet_alive "while waiting for $n transaction(s) at sink $name"
		[ $i -ge $((secs * 10)) ] && fail "timed out after ${secs}s waiting for $n transaction(s) at sink $name $* (got $got)"
		sleep 0.1
		i=$((i + 1))
	done
}

# log_lines REGEX - signet log lines matching REGEX (ERE), on stdout.
log_lines() {
	grep -E -- "$1" "$SIGNET_LOG"
}

# wait_log REGEX [SECONDS] - wait until the daemon's log has a line matching REGEX.
wait_log() {
	local re=$1 secs=${2:-20}
	wait_until "$secs" "a log line matching /$re/" 'grep -Eq -- "$re" "$SIGNET_LOG"'
}

# expect_log REGEX - the daemon's log has a line matching REGEX.
expect_log() {
	grep -Eq -- "$1" "$SIGNET_LOG" || {
		grep -E 'to=<' "$SIGNET_LOG" | tail -n 20 >&2
		fail "no signet log line matches /$1/"
	}
}

# queue_files - number of queue files (active/ and hold/).
queue_files() {
	find "$SPOOL/active" "$SPOOL/hold" -maxdepth 1 -type f 2>/dev/null | wc -l
}

# wait_queue_empty [SECONDS] - until no queue file is left.
wait_queue_empty() {
	wait_until "${1:-20}" "an empty queue (left: $(queue_files))" '[ "$(queue_files)" = 0 ]'
}

# ctl ARGS... - signetctl against the node's admin listener (run: RC, $T/out).
ctl() {
	run "$CTL" -c "$T/signet.conf" "$@"
}

# send_mail FROM TO... -- [SWAKS-ARGS...] - swaks to signet; fail unless
# queued; QID set.  Several TO are joined with commas.
send_mail() {
	local from=$1 to=""
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		to="${to:+$to,}$1"
		shift
	done
	[ $# -gt 0 ] && shift
	expect_queued --from "$from" --to "$to" "$@"
}

# dsend SEND-ARGS... - deliver/send.py to signet; fail unless queued; sets QID.
dsend() {
	run "$PY" "$DDIR/send.py" "$@"
	QID=$(tail -n 1 "$T/out")
	[ "$RC" = 0 ] && [ -n "$QID" ] || { show; fail "send.py $*: not queued"; }
}

# dsn_of NAME RCPT OUT - the last DSN (MAIL FROM:<>) sink NAME got for RCPT
# (the bounced message's sender) into OUT, and its description (dsn.py)
# into OUT.desc.
dsn_of() {
	rec "$T/$1.jsonl" data -1 "$3" --from 'MAIL FROM:<>' --to "$2" || fail "no DSN to $2 at sink $1"
	"$PY" "$DDIR/dsn.py" "$3" >"$3.desc" || { cat "$3.desc" >&2; head -c 2000 "$3" >&2; fail "the DSN to $2 is not a multipart/report"; }
}
