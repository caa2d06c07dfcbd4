# lib_dns.sh - a real authoritative DNS server for the next-hop scenarios:
# Debian's nsd on 127.0.0.1 (and [::1] when the host has it) on a free high
# port, serving the zone files of tests/integ/dns/.
#
# A scenario starts with
#     . "$(dirname "$0")/lib_dns.sh"
# (after lib_smtp.sh when it needs both: nsd is then stopped by lib_smtp's
# exit handler) which sources lib.sh and adds:
#   DNSDIR      tests/integ/dns (zone files, resolve.c)
#   DNS_ZONE    signet.test, the zone served (dns/signet.test.zone)
#   DNS_PORT    the port nsd listens on (UDP and TCP), once dns_start ran
#   DNS_SERVERS "127.0.0.1:PORT" (plus ",[::1]:PORT" with IPv6 loopback),
#               the form of a dns_resolvers setting
#   DNS_HAVE6   1 when nsd also listens on [::1]
#   SIGNET_BUILD  the object directory (env; default "build", relative to ROOT)
# and the functions below.  nsd runs in the foreground of a background job,
# as root without dropping privileges, with every file under $T/nsd; it is
# stopped when the scenario exits.

if ! declare -F fail >/dev/null; then
	. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi

DNSDIR=$INTEG/dns
DNS_ZONE=signet.test
DNS_PORT=""
DNS_PID=""
DNS_HAVE6=0
DNS_SERVERS=""
DNS_RUN=$T/nsd
NSD=/usr/sbin/nsd
SIGNET_BUILD=${SIGNET_BUILD:-build}
case $SIGNET_BUILD in
/*) ;;
*) SIGNET_BUILD=$ROOT/$SIGNET_BUILD ;;
esac

need "$NSD" /usr/sbin/nsd-checkconf /usr/sbin/nsd-checkzone

# dns_stop - stop nsd (TERM, then KILL after 3 s); a no-op when not running.
dns_stop() {
	[ -n "$DNS_PID" ] || return 0
	local i=0 kids
	kids=$(_dns_tree "$DNS_PID")
	kill -CONT $kids 2>/dev/null        # in case it was paused
	kill -TERM "$DNS_PID" 2>/dev/null
	while kill -0 "$DNS_PID" 2>/dev/null && [ $i -lt 30 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$DNS_PID" 2>/dev/null; then
		kill -KILL "$DNS_PID" $kids 2>/dev/null
	fi
	wait "$DNS_PID" 2>/dev/null
	DNS_PID=""
}

# _dns_tree PID - PID and all its descendants (nsd forks xfrd and servers).
_dns_tree() {
	local c
	echo "$1"
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		_dns_tree "$c"
	done
}

# dns_pause / dns_resume - freeze nsd (SIGSTOP on every nsd process): its
# sockets stay bound and queries go unanswered, so clients time out.
dns_pause() {
	[ -n "$DNS_PID" ] || fail "dns_pause: nsd is not running"
	kill -STOP $(_dns_tree "$DNS_PID") || fail "cannot stop nsd"
}
dns_resume() {
	[ -n "$DNS_PID" ] || fail "dns_resume: nsd is not running"
	kill -CONT $(_dns_tree "$DNS_PID") || fail "cannot continue nsd"
}

if declare -F smtp_at_exit >/dev/null; then
	smtp_at_exit dns_stop
else
	_dns_exit() {
		local rc=$1
		dns_stop
		if [ "$rc" != 0 ] && [ -s "$DNS_RUN/nsd.log" ]; then
			echo "--- nsd log (tail):" >&2
			tail -n 20 "$DNS_RUN/nsd.log" >&2
		fi
		_cleanup
	}
	trap '_dns_exit $?' EXIT
fi

# dns_free_port [N] - N (default 1) distinct ports free on 127.0.0.1 for
# both UDP and TCP, blank-separated.
dns_free_port() {
	"$PY" - "${1:-1}" <<'EOF'
import socket, sys
want = int(sys.argv[1])
held, out = [], []
while len(out) < want:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    held += [t, u]
    out.append(port)
print(" ".join(map(str, out)))
EOF
}

# nsd_conf DIR ZONE... - write DIR/nsd.conf for a private nsd that keeps
# its state in DIR and listens on $NSD_ADDRS (blank-separated ip@port),
# remote control off, serving each ZONE from DIR/ZONE.zone; then check it.
nsd_conf() {
	local d=$1 a z
	shift
	{
		echo "# written by lib_dns.sh for $SCENARIO"
		echo "server:"
		for a in $NSD_ADDRS; do
			printf '\tip-address: %s\n' "$a"
		done
		cat <<EOF
	username: ""
	chroot: ""
	zonesdir: "$d"
	database: ""
	pidfile: "$d/nsd.pid"
	xfrdfile: "$d/xfrd.state"
	zonelistfile: "$d/zone.list"
	xfrdir: "$d"
	logfile: "$d/nsd.log"
	server-count: 1
	verbosity: 1
	hide-version: yes
	reuseport: no
remote-control:
	control-enable: no
EOF
		for z; do
			printf 'zone:\n\tname: "%s"\n\tzonefile: "%s.zone"\n' "$z" "$z"
		done
	} >"$d/nsd.conf"
	/usr/sbin/nsd-checkconf "$d/nsd.conf" >"$T/err" 2>&1 ||
		{ cat "$T/err" >&2; fail "nsd-checkconf rejects the generated nsd.conf"; }
}

# dns_start [ZONEFILE] - start nsd serving DNS_ZONE from ZONEFILE (default
# dns/signet.test.zone) and wait until it has loaded the zone.
dns_start() {
	local zone=${1:-$DNSDIR/$DNS_ZONE.zone} i=0
	need "$PY"
	[ -r "$zone" ] || fail "no zone file $zone"
	mkdir -p "$DNS_RUN"
	cp "$zone" "$DNS_RUN/$DNS_ZONE.zone" || fail "copy $zone"
	if [ -z "$DNS_PORT" ]; then
		DNS_PORT=$(dns_free_port)
		[ -n "$DNS_PORT" ] || fail "cannot pick a port for nsd"
	fi
	NSD_ADDRS="127.0.0.1@$DNS_PORT"
	if ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1/'; then
		DNS_HAVE6=1
		NSD_ADDRS="$NSD_ADDRS ::1@$DNS_PORT"
	fi
	nsd_conf "$DNS_RUN" "$DNS_ZONE"
	/usr/sbin/nsd-checkzone "$DNS_ZONE" "$DNS_RUN/$DNS_ZONE.zone" >"$T/err" 2>&1 ||
		{ cat "$T/err" >&2; fail "nsd-checkzone rejects $zone"; }
	: >"$DNS_RUN/nsd.log"
	"$NSD" -d -c "$DNS_RUN/nsd.conf" >>"$DNS_RUN/nsd.log" 2>&1 &
	DNS_PID=$!
	if declare -F smtp_track >/dev/null; then
		smtp_track "$DNS_PID"
	fi
	while ! grep -q 'nsd started' "$DNS_RUN/nsd.log"; do
		kill -0 "$DNS_PID" 2>/dev/null || {
			cat "$DNS_RUN/nsd.log" >&2
			DNS_PID=""
			fail "nsd exited at start"
		}
		[ $i -lt 100 ] || { cat "$DNS_RUN/nsd.log" >&2; fail "nsd did not start in 10 s"; }
		sleep 0.1
		i=$((i + 1))
	done
	grep -q "zone $DNS_ZONE read with success" "$DNS_RUN/nsd.log" ||
		{ cat "$DNS_RUN/nsd.log" >&2; fail "nsd did not load zone $DNS_ZONE"; }
	DNS_SERVERS="127.0.0.1:$DNS_PORT"
	[ $DNS_HAVE6 = 1 ] && DNS_SERVERS="$DNS_SERVERS,[::1]:$DNS_PORT"
	export DNS_PORT DNS_SERVERS
	note "nsd (pid $DNS_PID) serves $DNS_ZONE on $DNS_SERVERS"
}

# dns_build_resolver OUT - build tests/integ/dns/resolve.c against the
# project's objects in SIGNET_BUILD (with the sanitizers when the objects
# were built with them).
dns_build_resolver() {
	local out=$1 obj=$SIGNET_BUILD/smtp/dns.o san=""
	need cc pkg-config
	[ -f "$obj" ] || fail "missing component: $obj (build first: make BUILD=$(basename "$SIGNET_BUILD"))"
	if nm "$obj" 2>/dev/null | grep -q '__asan_'; then
		san="-fsanitize=address,undefined -fno-sanitize-recover=all"
	fi
	# shellcheck disable=SC2046
	cc -std=gnu11 -O1 -g -Wall -Wextra -Wshadow -Wstrict-prototypes \
		-Wmissing-prototypes -Wmissing-declarations -Werror -D_GNU_SOURCE \
		-I"$ROOT" $san $(pkg-config --cflags libuv libssl libcares hiredis liburing) \
		-o "$out" "$DNSDIR/resolve.c" "$obj" \
		$(pkg-config --libs libuv libcares) >"$T/err" 2>&1 ||
		{ cat "$T/err" >&2; fail "cannot build $DNSDIR/resolve.c against $obj"; }
}
