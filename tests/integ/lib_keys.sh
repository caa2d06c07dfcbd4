# lib_keys.sh - the managed-keys harness (issue 5, tests/integ/81-*.sh):
# a real redis-server, nsd serving the customer zone and the operator's
# parent zone, unbound as the recursive resolver on loopback, two Signet
# nodes sharing the Redis key store and one clock file, a recording sink as
# their relayhost, and dkimpy verifying delivered mail through real DNS.
#
# A scenario starts with
#     . "$(dirname "$0")/lib_keys.sh"
#     keys_setup
# which sources lib_deliver.sh (lib_smtp.sh, lib_dns.sh: fail, run, rec,
# sink_start, ...) and adds:
#   KPY         tests/integ/keys (dkimdns.py: dkimpy through DNS, jget.py:
#               asserts over JSON, rdump.py: Redis dump + audit, dq.py: one
#               DNS query as JSON)
#   INITIAL     contoso.signet.example, the tenant's initial domain
#   OPZONE      signet.example, the operator's parent zone (on nsd), which
#               delegates _domainkey.$INITIAL to the nodes' dns_listen
#   CUST        fabrikam.example, the customer zone (on nsd)
#   INITIALS    the initial domains delegated (default: INITIAL)
#   CLOCK       the SIGNET_CLOCK_FILE of every node and of signetctl
#   REDIS_PORT NSD_PORT UB_PORT SINK_PORT  loopback ports
#   UB          "127.0.0.1:UB_PORT", the resolver (dns_resolvers, dkimpy)
#   NODE_PORT[n] NODE_ADMIN[n] NODE_DNS[n]   node n's SMTP, admin
#               (/metrics) and dns_listen addresses (n = 1, 2)
#   DNS_MODE    "delegate": the parent zone has NS records + glue for
#               _domainkey.$INITIAL pointing at 127.A.B.1:53 and
#               127.A.B.2:53, the nodes' dns_listen, and unbound follows the
#               referral like any resolver (needs root for port 53);
#               "stub": the nodes' dns_listen are on free ports and unbound
#               has a stub-zone for _domainkey.$INITIAL with both
#               (KEYS_DNS_MODE=stub forces it)
# Every process started here is stopped when the scenario exits; on a
# failure the tails of the nodes', nsd's, unbound's and redis's logs are
# shown.  Times: the clock starts at the real time, rounded (clock_set,
# clock_advance), and a day is 86400 clock seconds.

. "$(dirname "${BASH_SOURCE[0]}")/lib_deliver.sh"

KPY=$INTEG/keys
INITIAL=contoso.signet.example
OPZONE=signet.example
CUST=fabrikam.example
# every tenant's initial domain (under OPZONE) the zones delegate; a
# scenario with more tenants adds to it before knsd_start / ub_start
INITIALS=$INITIAL
CLOCK=$T/clock
DAY=86400
UNBOUND=/usr/sbin/unbound
NODE_PID=("" "" "")
NODE_PORT=("" "" "")
NODE_ADMIN=("" "" "")
NODE_DNS=("" "" "")
REDIS_PID=""
KNSD_PID=""
UB_PID=""
NSD_SERIAL=1
T0=$(date +%s)

need redis-server redis-cli "$UNBOUND" /usr/sbin/unbound-checkconf unbound-control dig swaks curl openssl
need_dkimpy
"$PY" -c 'import dns.resolver' 2>/dev/null ||
	fail "missing component: dnspython for $PY (Debian python3-dnspython)"

# ktime - seconds since the scenario started (for timings).
ktime() {
	echo $(($(date +%s) - T0))
}

# phase NAME - a progress line with the time so far.
phase() {
	note "[$(ktime)s] $*"
}

# --- cleanup --------------------------------------------------------------------
# fail MSG... - as lib.sh's fail (the caller chain, then exit 1), and the
# message is remembered (KEYS_FAIL) so that the exit handler repeats it
# after the logs it shows (run.sh shows only the last lines).
KEYS_FAIL=""
fail() {
	local i=0 where="" c line rest func file
	while c=$(caller "$i"); do
		line=${c%% *} rest=${c#* }
		func=${rest%% *} file=${rest#* }
		where="$where $(basename "$file"):$line${func:+($func)}"
		i=$((i + 1))
	done
	KEYS_FAIL="$where: $*"
	echo "FAIL:$where: $*" >&2
	exit 1
}

# _keys_exit - (run by lib_smtp's exit handler, where rc is the exit
# status) show the logs after a failure, then the failure again.
_keys_exit() {
	local f
	[ "${rc:-0}" = 0 ] && return 0
	for f in "$T/node1.log" "$T/node2.log" "$T/knsd/nsd.log" "$T/unbound/unbound.log" "$T/redis/redis.log"; do
		[ -s "$f" ] || continue
		echo "--- $(basename "$f") (tail):" >&2
		tail -n 25 "$f" | cut -c1-300 >&2
	done
	[ -n "$KEYS_FAIL" ] && echo "FAIL (repeated): $SCENARIO: $KEYS_FAIL" >&2
	return 0
}
smtp_at_exit _keys_exit

# _keys_thaw - before lib_smtp's exit handler stops the processes: a node
# frozen by a scenario (SIGSTOP) gets SIGCONT, so that SIGTERM stops it.
_keys_thaw() {
	local n
	for n in 1 2; do
		[ -n "${NODE_PID[$n]}" ] && kill -CONT "${NODE_PID[$n]}" 2>/dev/null
	done
	return 0
}
trap '_keys_rc=$?; _keys_thaw; _smtp_exit $_keys_rc' EXIT

# --- ports and addresses ----------------------------------------------------------
# keys_can_bind53 ADDR... - 0 if UDP and TCP port 53 can be bound on each.
keys_can_bind53() {
	"$PY" - "$@" <<'EOF' 2>/dev/null
import socket, sys
for a in sys.argv[1:]:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a, 53))
        s.close()
EOF
}

# keys_setup - ports, addresses, TLS certificate, key-store secret, clock.
keys_setup() {
	local p net
	need "$PY"
	mkdir -p "$T/spool1" "$T/spool2" "$T/redis" "$T/knsd" "$T/unbound"
	p=$(dns_free_port 10) || fail "cannot pick ports"
	set -- $p
	NODE_PORT[1]=$1 NODE_ADMIN[1]=$2 NODE_PORT[2]=$3 NODE_ADMIN[2]=$4
	SINK_PORT=$5 REDIS_PORT=$6 NSD_PORT=$7 UB_PORT=$8
	local spare1=$9 spare2=${10}
	UB=127.0.0.1:$UB_PORT
	# for the lib_smtp helpers that default to these
	PORT=${NODE_PORT[1]} ADMIN_PORT=${NODE_ADMIN[1]}
	export PORT ADMIN_PORT SINK_PORT
	DNS_MODE=${KEYS_DNS_MODE:-delegate}
	net=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))
	NS1=$net.1 NS2=$net.2
	if [ "$DNS_MODE" = delegate ] && ! keys_can_bind53 "$NS1" "$NS2"; then
		note "cannot bind port 53 on $NS1/$NS2 (not root?): unbound reaches the nodes through a stub-zone"
		DNS_MODE=stub
	fi
	if [ "$DNS_MODE" = delegate ]; then
		NODE_DNS[1]=$NS1:53 NODE_DNS[2]=$NS2:53
	else
		NS1=127.0.0.1 NS2=127.0.0.1
		NODE_DNS[1]=127.0.0.1:$spare1 NODE_DNS[2]=127.0.0.1:$spare2
	fi
	smtp_tls
	openssl rand -hex 32 >"$T/secret" || fail "openssl rand"
	chmod 600 "$T/secret"
	clock_set "$(($(date +%s) / 3600 * 3600))"
	CLOCK_BASE=$NOW
	note "dns mode $DNS_MODE: nodes' dns_listen ${NODE_DNS[1]} ${NODE_DNS[2]}; unbound $UB; nsd 127.0.0.1:$NSD_PORT; redis 127.0.0.1:$REDIS_PORT; sink 127.0.0.1:$SINK_PORT"
}

# --- the clock -------------------------------------------------------------------
# clock_set SECS / clock_advance SECS - write the clock file (atomically);
# NOW holds its value.
clock_set() {
	NOW=$1
	echo "$NOW" >"$CLOCK.tmp" && mv -f "$CLOCK.tmp" "$CLOCK" || fail "cannot write $CLOCK"
	export SIGNET_CLOCK_FILE=$CLOCK
}
clock_advance() {
	clock_set $((NOW + $1))
}
# clock_days - the clock as days since CLOCK_BASE (for notes).
clock_days() {
	echo "$(((NOW - CLOCK_BASE) / DAY))d+$(((NOW - CLOCK_BASE) % DAY))s"
}

# --- redis ---------------------------------------------------------------------------
# rcli ARGS... - redis-cli on the scenario's server.
rcli() {
	redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}

# redis_start - start redis-server in the foreground (in the background of
# this shell), no automatic snapshots, no AOF, its dump file in $T/redis
# (loaded at start when a redis_stop saved one); wait for PONG.
redis_start() {
	local i=0
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$T/redis" --dbfilename dump.rdb --protected-mode no --daemonize no \
		--logfile "$T/redis/redis.log" </dev/null >/dev/null 2>&1 &
	REDIS_PID=$!
	smtp_track "$REDIS_PID"
	until [ "$(rcli PING 2>/dev/null)" = PONG ]; do
		kill -0 "$REDIS_PID" 2>/dev/null || { REDIS_PID=""; fail "redis-server exited at start"; }
		[ $i -ge 300 ] && fail "redis-server does not answer PING after 30 s"
		sleep 0.1
		i=$((i + 1))
	done
	note "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
}

# redis_stop - SAVE (so the state survives), then SIGKILL: the nodes see
# their connections drop as in a crash.
redis_stop() {
	[ -n "$REDIS_PID" ] || return 0
	[ "$(rcli SAVE 2>&1)" = OK ] || fail "redis SAVE"
	kill -KILL "$REDIS_PID" 2>/dev/null
	wait "$REDIS_PID" 2>/dev/null
	REDIS_PID=""
	! rcli PING >/dev/null 2>&1 || fail "redis still answers after the kill"
}

# --- nsd: the customer zone and the operator's parent zone ------------------------
# _knsd_zones - write both zone files with serial NSD_SERIAL; the customer
# zone gets the lines of $T/knsd/cust.extra.
_knsd_zones() {
	local d=$T/knsd i
	{
		echo "\$ORIGIN $CUST."
		echo "\$TTL 1"
		echo "@ IN SOA ns.$CUST. hostmaster.$CUST. $NSD_SERIAL 1 1 60 1"
		echo "@ IN NS ns.$CUST."
		echo "ns IN A 127.0.0.1"
		echo "@ IN TXT \"v=spf1 -all\""
		cat "$d/cust.extra" 2>/dev/null || :
	} >"$d/$CUST.zone.tmp" && mv -f "$d/$CUST.zone.tmp" "$d/$CUST.zone"
	{
		echo "\$ORIGIN $OPZONE."
		echo "\$TTL 1"
		echo "@ IN SOA ns.$OPZONE. hostmaster.$OPZONE. $NSD_SERIAL 1 1 60 1"
		echo "@ IN NS ns.$OPZONE."
		echo "ns IN A 127.0.0.1"
		echo "ns1 IN A $NS1"
		echo "ns2 IN A $NS2"
		# each initial domain's key records are delegated to the Signet nodes
		for i in $INITIALS; do
			echo "${i%."$OPZONE"} IN TXT \"v=spf1 -all\""
			echo "_domainkey.${i%."$OPZONE"} IN NS ns1.$OPZONE."
			echo "_domainkey.${i%."$OPZONE"} IN NS ns2.$OPZONE."
		done
	} >"$d/$OPZONE.zone.tmp" && mv -f "$d/$OPZONE.zone.tmp" "$d/$OPZONE.zone"
	# nsd reloads a zone whose file's mtime changed: make each one distinct
	touch -d "@$((T0 + NSD_SERIAL))" "$d/$CUST.zone" "$d/$OPZONE.zone"
	/usr/sbin/nsd-checkzone "$CUST" "$d/$CUST.zone" >"$T/err" 2>&1 ||
		{ cat "$T/err" "$d/$CUST.zone" >&2; fail "nsd-checkzone $CUST"; }
	/usr/sbin/nsd-checkzone "$OPZONE" "$d/$OPZONE.zone" >"$T/err" 2>&1 ||
		{ cat "$T/err" "$d/$OPZONE.zone" >&2; fail "nsd-checkzone $OPZONE"; }
}

# knsd_serial - the SOA serial nsd serves for the customer zone.
knsd_serial() {
	dig +short +time=1 +tries=1 -p "$NSD_PORT" @127.0.0.1 SOA "$CUST" 2>/dev/null | awk '{print $3}'
}

# knsd_start - nsd on 127.0.0.1:NSD_PORT with both zones.
knsd_start() {
	local d=$T/knsd i=0
	_knsd_zones
	NSD_ADDRS="127.0.0.1@$NSD_PORT"
	nsd_conf "$d" "$CUST" "$OPZONE"
	/usr/sbin/nsd -d -c "$d/nsd.conf" >>"$d/nsd.log" 2>&1 &
	KNSD_PID=$!
	smtp_track "$KNSD_PID"
	until [ "$(knsd_serial)" = "$NSD_SERIAL" ]; do
		kill -0 "$KNSD_PID" 2>/dev/null || { cat "$d/nsd.log" >&2; KNSD_PID=""; fail "nsd exited at start"; }
		[ $i -ge 300 ] && { cat "$d/nsd.log" >&2; fail "nsd does not serve $CUST after 30 s"; }
		sleep 0.1
		i=$((i + 1))
	done
	note "nsd pid $KNSD_PID serves $CUST and $OPZONE on 127.0.0.1:$NSD_PORT"
}

# cust_zone LINE... - the customer zone's extra records become LINEs (zone
# file lines relative to $CUST.); nsd reloads (SIGHUP) and the function
# returns once nsd serves the new serial.
cust_zone() {
	local i=0
	printf '%s\n' "$@" >"$T/knsd/cust.extra"
	NSD_SERIAL=$((NSD_SERIAL + 1))
	_knsd_zones
	kill -HUP "$KNSD_PID" || fail "cannot signal nsd"
	until [ "$(knsd_serial)" = "$NSD_SERIAL" ]; do
		[ $i -ge 300 ] && { tail -n 20 "$T/knsd/nsd.log" >&2; fail "nsd did not reload $CUST (serial $NSD_SERIAL) in 30 s"; }
		[ $((i % 10)) = 9 ] && kill -HUP "$KNSD_PID"
		sleep 0.1
		i=$((i + 1))
	done
	[ -n "$UB_PID" ] && ub_flush
	return 0
}

# cname N - the customer's CNAME line for selectorN (for cust_zone).
cname() {
	echo "selector$1._domainkey IN CNAME selector$1-${CUST//./-}._domainkey.$INITIAL."
}

# --- unbound -----------------------------------------------------------------------
# ub_start - unbound on $UB: iterator only (no DNSSEC), caches of at most
# 1 s, stub-zones for the two nsd zones (and, in stub mode, for
# _domainkey.$INITIAL at both nodes' dns_listen).
ub_start() {
	local d=$T/unbound i=0 stub="" z
	if [ "$DNS_MODE" = stub ]; then
		for z in $INITIALS; do
			stub="$stub
stub-zone:
	name: \"_domainkey.$z\"
	stub-addr: ${NODE_DNS[1]/:/@}
	stub-addr: ${NODE_DNS[2]/:/@}"
		done
	fi
	cat >"$d/unbound.conf" <<EOF
# written by lib_keys.sh for $SCENARIO
server:
	interface: 127.0.0.1@$UB_PORT
	port: $UB_PORT
	do-ip4: yes
	do-ip6: no
	do-udp: yes
	do-tcp: yes
	username: ""
	chroot: ""
	directory: "$d"
	pidfile: "$d/unbound.pid"
	use-syslog: no
	logfile: "$d/unbound.log"
	verbosity: 1
	log-servfail: yes
	num-threads: 1
	so-reuseport: no
	access-control: 127.0.0.0/8 allow
	do-not-query-localhost: no
	module-config: "iterator"
	cache-min-ttl: 0
	cache-max-ttl: 1
	cache-max-negative-ttl: 1
	infra-host-ttl: 2
	infra-keep-probing: yes
	prefetch: no
	serve-expired: no
	harden-referral-path: no
	local-zone: "example." nodefault
stub-zone:
	name: "$CUST"
	stub-addr: 127.0.0.1@$NSD_PORT
stub-zone:
	name: "$OPZONE"
	stub-addr: 127.0.0.1@$NSD_PORT
$stub
remote-control:
	control-enable: yes
	control-interface: "$d/ctl.sock"
	control-use-cert: no
EOF
	/usr/sbin/unbound-checkconf "$d/unbound.conf" >"$T/err" 2>&1 ||
		{ cat "$T/err" >&2; fail "unbound-checkconf rejects the generated unbound.conf"; }
	# Debian's AppArmor profile for /usr/sbin/unbound lets it read only
	# /etc/unbound and the like: where AppArmor is on, that binary cannot
	# read this configuration.  A copy under $T is not confined (unless $T
	# is on a noexec file system: then the original, and hope).
	local ub=$UNBOUND
	cp "$UNBOUND" "$d/unbound.bin" 2>/dev/null && "$d/unbound.bin" -V >/dev/null 2>&1 &&
		ub=$d/unbound.bin
	"$ub" -d -c "$d/unbound.conf" >>"$d/unbound.stderr" 2>&1 </dev/null &
	UB_PID=$!
	smtp_track "$UB_PID"
	until dig +time=1 +tries=1 -p "$UB_PORT" @127.0.0.1 SOA "$CUST" 2>/dev/null | grep -q 'status: NOERROR'; do
		kill -0 "$UB_PID" 2>/dev/null || { cat "$d/unbound.stderr" "$d/unbound.log" >&2; UB_PID=""; fail "unbound exited at start"; }
		[ $i -ge 300 ] && { cat "$d/unbound.log" >&2; fail "unbound does not resolve $CUST after 30 s"; }
		sleep 0.1
		i=$((i + 1))
	done
	note "unbound pid $UB_PID on $UB"
}

# ub_flush - empty unbound's caches (answers, and what it knows of servers),
# so that the next lookup asks the authoritative servers again.
ub_flush() {
	unbound-control -c "$T/unbound/unbound.conf" flush_zone . >/dev/null 2>"$T/ub.err" &&
		unbound-control -c "$T/unbound/unbound.conf" flush_infra all >/dev/null 2>>"$T/ub.err" ||
		{ cat "$T/ub.err" >&2; fail "unbound-control flush"; }
}

# ub_dig ARGS... - dig through unbound (one try, 2 s).
ub_dig() {
	dig +time=2 +tries=1 -p "$UB_PORT" @127.0.0.1 "$@"
}

# ub_txt NAME - the TXT text unbound resolves for NAME (strings joined), on
# stdout; empty when none.
ub_txt() {
	ub_dig +short TXT "$1" | grep -v '\.$' | sed 's/" "//g; s/^"//; s/"$//'
}

# --- the Signet nodes ---------------------------------------------------------------
# node_conf N [SETTING...] - node N's configuration ($T/nodeN.conf):
# delivery to the sink, the shared Redis key store, the issue's rotation
# policy with a 1 s check interval and 1024-bit keys, DNS through unbound,
# dns_listen on NODE_DNS[N].  SETTINGs override (smtp_conf rules).
node_conf() {
	local n=$1
	shift
	deliver_conf "$T/node$n.conf" \
		"listen = 127.0.0.1:${NODE_PORT[$n]}" \
		"admin_listen = 127.0.0.1:${NODE_ADMIN[$n]}" \
		"spool_dir = $T/spool$n" \
		"myhostname = node$n.signet.test" \
		"dkim_sign=-" \
		"smtpd_auth_file=-" \
		"relayhost = [127.0.0.1]:$SINK_PORT" \
		"initial_domain = $INITIAL" \
		"keystore = redis://127.0.0.1:$REDIS_PORT/0" \
		"keystore_secret_file = $T/secret" \
		"dkim_check_interval = 1s" \
		"dkim_key_size = 1024" \
		"dkim_publish_lead = 7d" \
		"dkim_retire_delay = 7d" \
		"dkim_rotation_interval = 365d" \
		"dkim_dns_check = yes" \
		"dns_resolvers = $UB" \
		"dns_listen = ${NODE_DNS[$n]}" \
		"dns_ns = ns1.$OPZONE ns2.$OPZONE" \
		"dns_hostmaster = hostmaster.$OPZONE" \
		"dns_ttl = 1s" \
		"dns_negative_ttl = 1s" \
		"$@"
}

# node_start N - start node N (SIGNET_NODE=nodeN, the shared clock file),
# its output in $T/nodeN.log; wait (30 s) until its SMTP and admin ports
# listen.
node_start() {
	local n=$1 p
	echo "=== $(date +%T.%N) node$n: signet -c $T/node$n.conf" >>"$T/node$n.log"
	SIGNET_NODE=node$n SIGNET_CLOCK_FILE=$CLOCK "$SIGNET" -c "$T/node$n.conf" >>"$T/node$n.log" 2>&1 </dev/null &
	NODE_PID[$n]=$!
	smtp_track "${NODE_PID[$n]}"
	for p in "${NODE_PORT[$n]}" "${NODE_ADMIN[$n]}"; do
		if ! wait_port "$p" 30; then
			kill -0 "${NODE_PID[$n]}" 2>/dev/null || {
				wait "${NODE_PID[$n]}"
				fail "node$n exited ($?) at start instead of listening on $p"
			}
			fail "node$n is not listening on 127.0.0.1:$p after 30 s"
		fi
	done
	node_alive "$n"
	note "node$n pid ${NODE_PID[$n]}: smtp ${NODE_PORT[$n]} admin ${NODE_ADMIN[$n]} dns ${NODE_DNS[$n]}"
}

# node_alive N [WHAT] - fail if node N has died.
node_alive() {
	kill -0 "${NODE_PID[$1]}" 2>/dev/null || {
		wait "${NODE_PID[$1]}" 2>/dev/null
		fail "node$1 (pid ${NODE_PID[$1]}) died (exit $?)${2:+ $2}"
	}
}

# nodes_alive [WHAT] - both nodes.
nodes_alive() {
	node_alive 1 "$@"
	node_alive 2 "$@"
}

# node_stop N - SIGTERM and wait (45 s: the daemon's own deadline is 30 s);
# fail if it does not exit 0.
node_stop() {
	local n=$1 i=0 rc
	kill -TERM "${NODE_PID[$n]}" 2>/dev/null
	while kill -0 "${NODE_PID[$n]}" 2>/dev/null; do
		[ $i -ge 450 ] && { kill -KILL "${NODE_PID[$n]}"; fail "node$n did not exit within 45 s of SIGTERM"; }
		sleep 0.1
		i=$((i + 1))
	done
	wait "${NODE_PID[$n]}"
	rc=$?
	NODE_PID[$n]=""
	[ "$rc" = 0 ] || fail "node$n exited $rc after SIGTERM"
	node_log_clean "$n"
}

# node_log_clean N - no sanitizer report or assertion in node N's log.
node_log_clean() {
	local re='AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:|Assertion .* failed|double free|stack smashing'
	if grep -Eq "$re" "$T/node$1.log"; then
		grep -E -A20 "$re" "$T/node$1.log" | head -40 >&2
		fail "node$1's log has a sanitizer report or an assertion"
	fi
}

# nodes_log_count REGEX - lines of both nodes' logs matching REGEX (ERE).
nodes_log_count() {
	cat "$T/node1.log" "$T/node2.log" 2>/dev/null | grep -Ec -- "$1"
}

# kwait SECONDS DESCRIPTION CMD... - poll CMD every 0.2 s until it
# succeeds; fail after SECONDS (wall clock), or as soon as a node has died.  A single
# CMD argument is eval'd (a shell condition), several are run as a command.
kwait() {
	local secs=$1 what=$2 end
	shift 2
	end=$((SECONDS + secs))
	until if [ $# = 1 ]; then eval "$1"; else "$@"; fi; do
		[ -n "${NODE_PID[1]}" ] && node_alive 1 "while waiting for: $what"
		[ -n "${NODE_PID[2]}" ] && node_alive 2 "while waiting for: $what"
		[ "$SECONDS" -ge "$end" ] && fail "timed out after ${secs}s waiting for: $what"
		sleep 0.2
	done
}

# --- signetctl ------------------------------------------------------------------------
# kctl ARGS... - signetctl -c node1.conf with the shared clock (like run:
# RC, $T/out, $T/err).
kctl() {
	run env SIGNET_CLOCK_FILE="$CLOCK" timeout 60 "$CTL" -c "$T/node1.conf" "$@"
}

# kctl_ok ARGS... - kctl, fail unless it exits 0.
kctl_ok() {
	kctl "$@"
	[ "$RC" = 0 ] || { show; fail "signetctl $* exited $RC"; }
}

# kshow DOMAIN - `dkim show DOMAIN --json` into $T/show.json (fail unless
# it exits 0 with JSON).
kshow() {
	kctl dkim show "$1" --json
	[ "$RC" = 0 ] || { show; fail "signetctl dkim show $1 --json exited $RC"; }
	cp "$T/out" "$T/show.json"
	"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/show.json" 2>"$T/err" ||
		{ show; fail "signetctl dkim show $1 --json: not JSON"; }
}

# kj EXPR... - jget.py over $T/show.json (d = the document, sel(n) = the
# selector of slot n).
kj() {
	"$PY" "$KPY/jget.py" "$T/show.json" "$@"
}

# kshow_is DOMAIN EXPR WANT - after kshow DOMAIN, EXPR (python over d)
# prints WANT.  Returns 0/1 (no fail), for kwait.
kshow_is() {
	kctl dkim show "$1" --json
	[ "$RC" = 0 ] || return 1
	cp "$T/out" "$T/show.json"
	[ "$(kj "$2" 2>/dev/null)" = "$3" ]
}

# --- mail ---------------------------------------------------------------------------
# kswaks N TAG [FROM [SWAKS-ARGS...]] - send one message through node N,
# From: FROM (default a@$CUST), to TAG@rcpt.example (TAG names the message
# in the sink); like run (RC, $T/out).
kswaks() {
	local n=$1 tag=$2 from=${3:-a@$CUST}
	shift 2
	[ $# -gt 0 ] && shift
	run timeout 30 swaks --server 127.0.0.1 --port "${NODE_PORT[$n]}" --helo client.test \
		--from "$from" --to "$tag@rcpt.example" \
		--h-Subject "$SCENARIO $tag" --h-Message-Id "<$tag.$$@$CUST>" \
		--body "Message $tag through node$n at clock $(clock_days)." "$@"
}

# ksend N TAG [FROM [SWAKS-ARGS...]] - kswaks; fail unless queued.
ksend() {
	kswaks "$@"
	grep -q '250 2\.0\.0 Ok: queued as' "$T/out" && [ "$RC" = 0 ] ||
		{ show; fail "node$1 did not queue message $2 (swaks exit $RC)"; }
}

# kcollect TAG OUT [SECONDS] - wait (default 60 s) until the sink has
# message TAG, copy it to OUT.
kcollect() {
	local tag=$1 dst=$2 secs=${3:-60}
	kwait "$secs" "message $tag at the sink" \
		'[ "$(sink_count relay --to "$tag@rcpt.example")" -ge 1 ]'
	rec "$T/relay.jsonl" data 0 "$dst" --to "$tag@rcpt.example" || fail "no message $tag at the sink"
}

# kmail N TAG [FROM [SWAKS-ARGS...]] - send message TAG through node N and
# collect it as $T/mail/TAG.eml (the path also in MAIL).
kmail() {
	mkdir -p "$T/mail"
	ksend "$@"
	MAIL=$T/mail/$2.eml
	kcollect "$2" "$MAIL"
}

# sig_tag FILE TAG - the value of tag TAG (d, s, ...) of FILE's first
# DKIM-Signature ("" when unsigned).
sig_tag() {
	"$PY" - "$1" "$2" <<'EOF'
import re, sys
from email.parser import BytesHeaderParser
m = BytesHeaderParser().parse(open(sys.argv[1], "rb"))
v = m.get("DKIM-Signature")
if v:
    v = re.sub(r"\s+", "", str(v))
    for t in v.split(";"):
        k, _, val = t.partition("=")
        if k == sys.argv[2]:
            print(val)
            break
EOF
}

# kverify FILE D S - FILE has one DKIM signature, with d=D s=S, and dkimpy
# verifies it fetching the key through unbound.
kverify() {
	ub_flush
	"$PY" "$KPY/dkimdns.py" --dns "$UB" --want-d "$2" --want-s "$3" "$1" >"$T/v.out" 2>&1 || {
		cat "$T/v.out" >&2
		fail "dkimpy via DNS: $(basename "$1") does not verify as d=$2 s=$3 (clock $(clock_days))"
	}
}

# kverify_fails FILE - FILE has one DKIM signature and dkimpy (through DNS)
# does not verify it.
kverify_fails() {
	ub_flush
	"$PY" "$KPY/dkimdns.py" --dns "$UB" --expect-fail "$1" >"$T/v.out" 2>&1 || {
		cat "$T/v.out" >&2
		fail "dkimpy via DNS: $(basename "$1") verifies, but it should not any more (clock $(clock_days))"
	}
}

# kmail_both TAG D S - a message through each node (TAG-n1, TAG-n2), both
# signed d=D s=S and verifying through DNS.
kmail_both() {
	local n
	for n in 1 2; do
		kmail "$n" "$1-n$n"
		kverify "$MAIL" "$2" "$3"
	done
}

# node_sign_as N D S [SECONDS [FROM [SWAKS-ARGS...]]] - wait (default 30 s)
# until node N has taken in the store's latest change for FROM's domain:
# send probe messages through it (TAG probeK) until one arrives signed
# d=D s=S (the identity only: the caller then sends and verifies its own
# messages).  For changes no gauge shows (enable, disable, domain remove).
PROBES=0
node_sign_as() {
	local n=$1 d=$2 s=$3 secs=${4:-30} t0 got
	shift 3
	[ $# -gt 0 ] && shift
	t0=$(date +%s)
	while :; do
		PROBES=$((PROBES + 1))
		kmail "$n" "probe$PROBES" "$@"
		got="$(sig_tag "$MAIL" d) $(sig_tag "$MAIL" s)"
		[ "${got,,}" = "${d,,} ${s,,}" ] && return 0
		[ $(($(date +%s) - t0)) -ge "$secs" ] &&
			fail "node$n still signs as '$got' after ${secs}s, wanted d=$d s=$s"
		sleep 0.3
	done
}

# nodes_sign_as D S [SECONDS [FROM [SWAKS-ARGS...]]] - node_sign_as for
# both nodes.
nodes_sign_as() {
	node_sign_as 1 "$@"
	node_sign_as 2 "$@"
}

# --- metrics ---------------------------------------------------------------------------
# kmetric N NAME [LABEL-REGEX] - node N's /metrics sample (sum), on stdout.
kmetric() {
	curl -fsS --max-time 5 "http://127.0.0.1:${NODE_ADMIN[$1]}/metrics" -o "$T/metrics.$1" 2>/dev/null ||
		{ echo "unreachable"; return 0; }
	metric "$2" "${3:-}" "$T/metrics.$1"
}

# kmetric_has N NAME - node N's /metrics has a sample NAME (0/1).
kmetric_has() {
	curl -fsS --max-time 5 "http://127.0.0.1:${NODE_ADMIN[$1]}/metrics" 2>/dev/null | grep -Eq "^$2(\{| )"
}

# --- following the store ----------------------------------------------------------------
# txt_p - the p= value of the TXT text on stdin (dig output or a record).
txt_p() {
	sed 's/" "//g; s/"//g' | sed -n 's/.*p=\([^; ]*\).*/\1/p' | head -n 1
}

# node_txt N NAME - the TXT text node N's dns_listen answers for NAME
# (asked directly, no recursion), on stdout.
node_txt() {
	local a=${NODE_DNS[$1]}
	dig +short +norecurse +time=1 +tries=1 -p "${a##*:}" "@${a%:*}" TXT "$2" 2>/dev/null
}

# nodes_serve NAME P [SECONDS] - wait (default 30 s) until both nodes'
# dns_listen answer NAME with a TXT record whose p= is P.  The nodes serve
# from the index they sign with, and take in the store's changes in order:
# once both serve a key, both have every change made before it.
nodes_serve() {
	local name=$1 want=$2 secs=${3:-30}
	[ -n "$want" ] || fail "nodes_serve $name: no p= to wait for"
	kwait "$secs" "both nodes serving the new key at $name" \
		'[ "$(node_txt 1 "$name" | txt_p)" = "$want" ] && [ "$(node_txt 2 "$name" | txt_p)" = "$want" ]'
}

# _phase_counts - "stable pending retiring" counts over every domain in the
# store (dkim show --json without DOMAIN), on stdout.
_phase_counts() {
	kctl dkim show --json
	[ "$RC" = 0 ] || return 1
	"$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = {"stable": 0, "pending": 0, "retiring": 0}
for x in d:
    c[x["phase"]] = c.get(x["phase"], 0) + 1
print(c["stable"], c["pending"], c["retiring"])' "$T/out"
}

# _node_phase_counts N - the same from node N's /metrics (its own index).
_node_phase_counts() {
	echo "$(kmetric "$1" signet_dkim_domains 'phase="stable"') $(kmetric "$1" signet_dkim_domains 'phase="pending"') $(kmetric "$1" signet_dkim_domains 'phase="retiring"')"
}

# nodes_follow [SECONDS] - wait (default 30 s) until both nodes'
# signet_dkim_domains by phase equal the store's, then one more check
# interval.  This proves the nodes followed a change only when the change
# moved a phase count: after one that does not (enable, disable, rotate
# --now, a replacement following a switch the nodes may have missed) wait
# with nodes_serve or nodes_sign_as as well.
nodes_follow() {
	local secs=${1:-30} want
	kwait "$secs" "both nodes following the store's phases" \
		'want=$(_phase_counts) && [ "$(_node_phase_counts 1)" = "$want" ] && [ "$(_node_phase_counts 2)" = "$want" ]'
	sleep 1
}

# hist_check DOMAIN - after kshow DOMAIN: every history line is
# "<unix time> <node> <event>", and each confirm/switch/replace/rotate-now
# event appears exactly once.  Prints "<step> <count>" lines (confirm,
# switch, replace, rotate-now, hold) on stdout; exit 1 with the reason.
hist_check() {
	"$PY" - "$T/show.json" "$1" <<'PYEOF'
import collections, json, re, sys
d = json.load(open(sys.argv[1]))
if isinstance(d, list):
    d = [x for x in d if x.get("domain") == sys.argv[2]][0]
h = d.get("history")
if not isinstance(h, list) or not h:
    sys.exit("%s: no history in dkim show --json" % sys.argv[2])
seen = collections.Counter()
steps = collections.Counter()
bad = []
for line in h:
    m = re.match(r"^(\d+) (\S+) (.+)$", line)
    if not m:
        bad.append("not '<time> <node> <event>': %r" % line)
        continue
    ev = m.group(3)
    step = ev.split(" ", 1)[0]
    steps[step] += 1
    if step in ("confirm", "switch", "replace", "rotate-now"):
        seen[ev] += 1
for ev, n in seen.items():
    if n != 1:
        bad.append("event %r happened %d times" % (ev, n))
for s in ("provision", "confirm", "switch", "replace", "rotate-now", "hold", "enable", "rotate-requested"):
    print(s, steps.get(s, 0))
if bad:
    print("\n".join(h), file=sys.stderr)
    sys.exit("; ".join(bad))
PYEOF
}

# --- direct DNS queries -----------------------------------------------------------------
# dq ADDR:PORT NAME TYPE [DQ-OPTIONS...] - one query (keys/dq.py) into
# $T/dq.json; fail when no answer arrives.
dq() {
	"$PY" "$KPY/dq.py" "$@" >"$T/dq.json" 2>"$T/err" ||
		{ cat "$T/dq.json" "$T/err" >&2; fail "no DNS answer from $1 for $2 $3"; }
}

# dqj EXPR... - jget.py over $T/dq.json.
dqj() {
	"$PY" "$KPY/jget.py" "$T/dq.json" "$@"
}

# dq_is WHAT EXPR WANT - after dq: EXPR over the answer (d) prints WANT.
dq_is() {
	local got
	got=$(dqj "$2" 2>&1)
	[ "$got" = "$3" ] || { cat "$T/dq.json" >&2; echo >&2; fail "$1: $2 is $got, wanted $3"; }
}

# node_reload N - SIGHUP node N (after node_conf rewrote its file) and wait
# until it logs that the reload is done; fail if the reload failed.
node_reload() {
	local n=$1 before
	before=$(grep -c 'reloaded\|reload failed' "$T/node$n.log")
	kill -HUP "${NODE_PID[$n]}" || fail "cannot signal node$n"
	kwait 30 "node$n reloading" '[ "$(grep -c "reloaded\|reload failed" "$T/node$n.log")" -gt "$before" ]'
	! tail -n 5 "$T/node$n.log" | grep -q 'reload failed' || fail "node$n: reload failed"
}

# active_identity DOMAIN - "d s" the store says DOMAIN signs with now.
active_identity() {
	kshow "$1"
	kj '(d["domain"] + " selector%d" % d["active"]) if d["enabled"] in (1, True) else (d["initial_domain"] + " " + sel(d["active"])["cname_target"].split(".")[0])'
}
