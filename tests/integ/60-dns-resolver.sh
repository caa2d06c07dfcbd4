#!/bin/bash
# dns-resolver: next-hop resolution (smtp/dns.c, RFC 5321 5.1) against a
# real nsd serving dns/signet.test.zone on loopback, through the small
# driver dns/resolve.c built with the project's objects.  MX hosts come in
# preference order, equal preferences in both orders over repeated runs,
# each with its A and AAAA addresses and the port; no MX means the domain
# itself; null MX, NXDOMAIN and hosts without addresses are permanent;
# relayhost forms "[host]:port" (no MX lookup) and "host:port" (MX lookup)
# work; a REFUSED answer, a frozen server (timeouts) and a stopped one are
# temporary failures, bounded in time; freeing the resolver cancels every query once.
. "$(dirname "$0")/lib_dns.sh"

RESOLVE=$T/resolve
dns_build_resolver "$RESOLVE"
dns_start
Z=$DNS_ZONE

# resolve ARGS... - the driver on nsd, short timeouts; must exit 0.
resolve() {
	expect_ok timeout 20 "$RESOLVE" -s "$DNS_SERVERS" -t 300 -n 2 "$@"
}

# line_is PREFIX... - the output line starting with "PREFIX" equals it
# exactly (the prefix is the whole line).
line_is() {
	grep -Fxq -- "$1" "$T/out" || {
		echo "--- output:" >&2
		cat "$T/out" >&2
		fail "no line is exactly: $1"
	}
}

# --- MX order, addresses, ports ---------------------------------------------------
resolve "three.$Z"
line_is "result three.$Z status=ok dsn=2.0.0 nhops=3"
line_is "order three.$Z mx-a.three.$Z,mx-b.three.$Z,mx-c.three.$Z"
line_is "hop three.$Z 10 mx-a.three.$Z 127.0.0.11:25 [::1]:25"
line_is "hop three.$Z 20 mx-b.three.$Z 127.0.0.12:25"
line_is "hop three.$Z 30 mx-c.three.$Z 127.0.0.13:25"

# the default port comes from the caller
resolve -p 2525 "three.$Z"
line_is "hop three.$Z 10 mx-a.three.$Z 127.0.0.11:2525 [::1]:2525"

# equal preference: random order, both seen; the backup always last
resolve -r 40 "equal.$Z"
n=$(grep -c "^result equal.$Z status=ok dsn=2.0.0 nhops=3\$" "$T/out")
[ "$n" = 40 ] || { show; fail "$n of 40 results for equal.$Z are ok with 3 hops"; }
a=$(grep -cFx "order equal.$Z mx-1.equal.$Z,mx-2.equal.$Z,backup.equal.$Z" "$T/out")
b=$(grep -cFx "order equal.$Z mx-2.equal.$Z,mx-1.equal.$Z,backup.equal.$Z" "$T/out")
note "equal preference: mx-1 first $a times, mx-2 first $b times"
[ $((a + b)) = 40 ] || { show; fail "orders other than the two expected for equal.$Z"; }
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] || fail "equal preference not shuffled: $a / $b over 40 runs"
line_is "hop equal.$Z 10 mx-1.equal.$Z 127.0.0.21:25"
line_is "hop equal.$Z 20 backup.equal.$Z 127.0.0.23:25"

# no MX: the domain itself, preference 0 (implicit MX)
resolve "implicit.$Z"
line_is "result implicit.$Z status=ok dsn=2.0.0 nhops=1"
line_is "hop implicit.$Z 0 implicit.$Z implicit 127.0.0.31:25"

# only the ten best of twelve MX, only eight of ten addresses
resolve "many.$Z" "wide.$Z"
line_is "result many.$Z status=ok dsn=2.0.0 nhops=10"
line_is "order many.$Z $(printf "m%02d.many.$Z," 1 2 3 4 5 6 7 8 9 10 | sed 's/,$//')"
grep -q "^hop wide.$Z 0 wide.$Z implicit\( 127\.0\.2\.[0-9]*:25\)\{8\}\$" "$T/out" ||
	{ show; fail "wide.$Z: not exactly 8 addresses"; }

# an MX host behind a CNAME, an MX host with AAAA only
resolve "alias.$Z" "six.$Z"
line_is "hop alias.$Z 10 www.alias.$Z 127.0.0.51:25"
line_is "hop six.$Z 10 mx.six.$Z [::1]:25"

# a best MX that does not exist is skipped
resolve "partial.$Z"
line_is "result partial.$Z status=ok dsn=2.0.0 nhops=1"
line_is "hop partial.$Z 10 mx.partial.$Z 127.0.0.41:25"

# --- permanent outcomes ------------------------------------------------------------
resolve "nullmx.$Z" "nx.$Z" "noaddr.$Z" "empty.$Z"
line_is "result nullmx.$Z status=nullmx dsn=5.1.10 nhops=0"
line_is "reason nullmx.$Z Domain nullmx.$Z does not accept mail (nullMX)"
line_is "result nx.$Z status=permanent dsn=5.4.4 nhops=0"
line_is "reason nx.$Z Host or domain name not found. Name service error for name=nx.$Z type=MX: Host not found"
line_is "result noaddr.$Z status=permanent dsn=5.4.4 nhops=0"
line_is "reason noaddr.$Z Host or domain name not found. Name service error for name=bare.noaddr.$Z type=A: Host found but no data record of requested type"
line_is "result empty.$Z status=permanent dsn=5.4.4 nhops=0"
line_is "reason empty.$Z Host or domain name not found. Name service error for name=empty.$Z type=A: Host found but no data record of requested type"

# --- relayhost forms -------------------------------------------------------------------
resolve "[mx-b.three.$Z]:2525" "three.$Z:2526" "[127.0.0.9]:2527" "[IPv6:::1]" "[three.$Z]" "[oops"
# brackets: that host only, no MX lookup
line_is "result [mx-b.three.$Z]:2525 status=ok dsn=2.0.0 nhops=1"
line_is "hop [mx-b.three.$Z]:2525 0 mx-b.three.$Z 127.0.0.12:2525"
# host:port: MX lookup, every MX host on that port
line_is "order three.$Z:2526 mx-a.three.$Z,mx-b.three.$Z,mx-c.three.$Z"
line_is "hop three.$Z:2526 30 mx-c.three.$Z 127.0.0.13:2526"
# an address: no DNS at all
line_is "hop [127.0.0.9]:2527 0 127.0.0.9 127.0.0.9:2527"
line_is "hop [IPv6:::1] 0 ::1 [::1]:25"
# [domain] is not looked up as a mail domain: its own A record, and it has none
line_is "result [three.$Z] status=permanent dsn=5.4.4 nhops=0"
line_is "error [oops \"[oops\": missing ']'"

# --- temporary outcomes -------------------------------------------------------------------
# outside the zone nsd answers REFUSED
resolve "example.org"
line_is "result example.org status=temporary dsn=4.4.3 nhops=0"
grep_out "^reason example.org Host or domain name not found. Name service error for name=example.org type=MX: Host not found, try again"

# a dead server first in the list: c-ares moves on to nsd
dead=$(dns_free_port)
expect_ok timeout 20 "$RESOLVE" -s "127.0.0.1:$dead,$DNS_SERVERS" -t 300 -n 2 "three.$Z"
line_is "order three.$Z mx-a.three.$Z,mx-b.three.$Z,mx-c.three.$Z"
if [ "$DNS_HAVE6" = 1 ]; then
	expect_ok timeout 20 "$RESOLVE" -s "[::1]:$DNS_PORT" -t 300 -n 2 "three.$Z"
	line_is "order three.$Z mx-a.three.$Z,mx-b.three.$Z,mx-c.three.$Z"
else
	note "no ::1 on lo: the IPv6 name-server case is not run"
fi

# --- cancellation ----------------------------------------------------------------------------
expect_ok timeout 20 "$RESOLVE" -s "$DNS_SERVERS" -c -r 5 "three.$Z" "[mx-a.three.$Z]" "nx.$Z"
n=$(grep -c '^result .* status=cancelled ' "$T/out")
[ "$n" = 15 ] || { show; fail "$n of 15 queries reported cancelled"; }

# --- the DNS server does not answer, then goes away -------------------------------------------
dns_pause
timed_run timeout 20 "$RESOLVE" -s "127.0.0.1:$DNS_PORT" -t 200 -n 2 "three.$Z" "[mx-a.three.$Z]:2525"
dns_resume
[ "$RC" = 0 ] || { show; fail "resolve exited $RC with the DNS server frozen"; }
note "with nsd frozen: answers after $MSECS ms"
# 200 ms, then 400 ms for the second try
[ "$MSECS" -ge 500 ] && [ "$MSECS" -lt 5000 ] ||
	fail "timeout after $MSECS ms, wanted about 600 (200 ms x 2 tries, doubling)"
line_is "result three.$Z status=temporary dsn=4.4.3 nhops=0"
line_is "reason three.$Z Host or domain name not found. Name service error for name=three.$Z type=MX: Host not found, try again (timeout)"
line_is "result [mx-a.three.$Z]:2525 status=temporary dsn=4.4.3 nhops=1"
resolve "three.$Z"
line_is "result three.$Z status=ok dsn=2.0.0 nhops=3"

dns_stop
timed_run timeout 20 "$RESOLVE" -s "$DNS_SERVERS" -t 200 -n 2 "three.$Z" "[mx-a.three.$Z]:2525"
[ "$RC" = 0 ] || { show; fail "resolve exited $RC with the DNS server stopped"; }
note "with nsd stopped: answers after $MSECS ms"
[ "$MSECS" -lt 5000 ] || fail "temporary failure took $MSECS ms (timeout 200 ms x 2 tries)"
line_is "result three.$Z status=temporary dsn=4.4.3 nhops=0"
line_is "result [mx-a.three.$Z]:2525 status=temporary dsn=4.4.3 nhops=1"
grep_out "^hop \[mx-a.three.$Z\]:2525 0 mx-a.three.$Z tempfail \(Name service error for name=mx-a.three.$Z type=A: Host not found, try again"

# ...and comes back on the same port
dns_start
resolve "three.$Z"
line_is "order three.$Z mx-a.three.$Z,mx-b.three.$Z,mx-c.three.$Z"
note "ok"
