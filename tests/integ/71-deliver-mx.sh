#!/bin/bash
# deliver-mx: no relayhost; next hops from MX records served by a real nsd
# (deliver/signet.test.zone), sinks on 127.0.0.x:25 (we are root).
#   - MX 10/20/30: the best gets the mail; best down -> the 20; 10 and 20
#     down -> the 30 (in one delivery attempt);
#   - two MX of equal preference: both used over a dozen messages;
#   - no MX, an A record: delivered to that address (implicit MX);
#   - null MX and NXDOMAIN: bounced at once (no deferral), the DSN from <>
#     reaches the sender's own MX, names the failed recipient;
#   - one message to two domains: one transaction per domain, each with
#     every recipient of its domain.
. "$(dirname "$0")/lib_deliver.sh"
deliver_setup
dns_start "$DDIR/signet.test.zone"
Z=$DNS_ZONE

sink_start mx10 127.0.0.2 25
sink_start mx20 127.0.0.3 25
sink_start mx30 127.0.0.4 25
sink_start eqa 127.0.0.5 25
sink_start eqb 127.0.0.6 25
sink_start impl 127.0.0.7 25
sink_start snd 127.0.0.8 25
sink_start twoa 127.0.0.9 25
sink_start twob 127.0.0.10 25

# no connection cache: each message picks its MX afresh
deliver_conf "$T/signet.conf" "dns_resolvers = $DNS_SERVERS" "smtp_connection_cache_time_limit = 0" \
	"smtp_connect_timeout = 2s"
signet_start "$T/signet.conf"

# --- MX order and fallback -------------------------------------------------------------------
dsend --from sender@snd.$Z --rcpt u1@best.$Z
wait_log "$QID: to=<u1@best.$Z>, relay=mx10.best.$Z\[127\.0\.0\.2\]:25, .*status=sent" 10
[ "$(sink_count mx10 --to u1@best.$Z)" = 1 ] || fail "the best MX did not get u1"
[ "$(sink_count mx20 --all)$(sink_count mx30 --all)" = 00 ] || fail "a worse MX got mail while the best was up"

sink_stop mx10
dsend --from sender@snd.$Z --rcpt u2@best.$Z
wait_log "$QID: to=<u2@best.$Z>, relay=mx20.best.$Z\[127\.0\.0\.3\]:25, .*status=sent" 10
log_lines "$QID: to=<u2@best.$Z>" | grep -q deferred && fail "u2 deferred although the 20 MX was up"
[ "$(sink_count mx20 --to u2@best.$Z)" = 1 ] || fail "the 20 MX did not get u2"

sink_stop mx20
dsend --from sender@snd.$Z --rcpt u3@best.$Z
wait_log "$QID: to=<u3@best.$Z>, relay=mx30.best.$Z\[127\.0\.0\.4\]:25, .*status=sent" 10
[ "$(sink_count mx30 --to u3@best.$Z)" = 1 ] || fail "the 30 MX did not get u3"

# best back: used again
sink_start mx10 127.0.0.2 25
dsend --from sender@snd.$Z --rcpt u4@best.$Z
wait_log "$QID: to=<u4@best.$Z>, relay=mx10.best.$Z\[127\.0\.0\.2\]:25, .*status=sent" 10

# --- equal preference ------------------------------------------------------------------------------
for i in $(seq 1 12); do
	dsend --from sender@snd.$Z --rcpt "e$i@equal.$Z"
done
wait_until 20 "12 messages at the equal MX" '[ $(( $(sink_count eqa) + $(sink_count eqb) )) -ge 12 ]'
a=$(sink_count eqa)
b=$(sink_count eqb)
note "equal preference: mx-a $a, mx-b $b of 12"
[ $((a + b)) = 12 ] || fail "$((a + b)) messages at the equal-preference MX, wanted 12"
[ "$a" -gt 0 ] && [ "$b" -gt 0 ] || fail "equal-preference MX not both used: $a / $b"

# --- implicit MX --------------------------------------------------------------------------------------
dsend --from sender@snd.$Z --rcpt u@implicit.$Z
wait_log "$QID: to=<u@implicit.$Z>, relay=implicit.$Z\[127\.0\.0\.7\]:25, .*status=sent" 10
[ "$(sink_count impl --to u@implicit.$Z)" = 1 ] || fail "implicit MX: not received"

# --- null MX, NXDOMAIN: bounced at once, DSN to the sender's MX ---------------------------------------
dsend --from nullsender@snd.$Z --rcpt u@nullmx.$Z
QN=$QID
wait_log "$QN: to=<u@nullmx.$Z>, .*status=bounced" 10
log_lines "$QN: to=" | grep -q deferred && fail "null MX: deferred instead of bounced at once"
wait_sink snd 1 15 --from 'MAIL FROM:<>' --to nullsender@snd.$Z
dsn_of snd nullsender@snd.$Z "$T/dsn-null.eml"
cat "$T/dsn-null.eml.desc"
grep -qx "rcpt u@nullmx.$Z action=failed status=5.1.10" "$T/dsn-null.eml.desc" || fail "null MX DSN: no failed u@nullmx with 5.1.10"

dsend --from nxsender@snd.$Z --rcpt u@nx.$Z
QX=$QID
wait_log "$QX: to=<u@nx.$Z>, .*status=bounced" 10
log_lines "$QX: to=" | grep -q deferred && fail "NXDOMAIN: deferred instead of bounced at once"
wait_sink snd 1 15 --from 'MAIL FROM:<>' --to nxsender@snd.$Z
dsn_of snd nxsender@snd.$Z "$T/dsn-nx.eml"
cat "$T/dsn-nx.eml.desc"
grep -Eqx "rcpt u@nx.$Z action=failed status=5\.[0-9]+\.[0-9]+" "$T/dsn-nx.eml.desc" || fail "NXDOMAIN DSN: no failed u@nx"

# --- two domains in one message ---------------------------------------------------------------------------
dsend --from sender@snd.$Z --rcpt a1@twoa.$Z --rcpt b1@twob.$Z --rcpt a2@twoa.$Z --rcpt b2@twob.$Z
QT=$QID
wait_sink twoa 1 10
wait_sink twob 1 10
wait_queue_empty 10
sleep 0.5
rec "$T/twoa.jsonl" show >"$T/ta"
rec "$T/twob.jsonl" show >"$T/tb"
[ "$(wc -l <"$T/ta")" = 1 ] || { cat "$T/ta" >&2; fail "twoa: not exactly one transaction"; }
[ "$(wc -l <"$T/tb")" = 1 ] || { cat "$T/tb" >&2; fail "twob: not exactly one transaction"; }
grep -Eq "accepted=(a1@twoa.$Z,a2@twoa.$Z|a2@twoa.$Z,a1@twoa.$Z) " "$T/ta" || { cat "$T/ta" >&2; fail "twoa transaction lacks its two recipients"; }
grep -Eq "accepted=(b1@twob.$Z,b2@twob.$Z|b2@twob.$Z,b1@twob.$Z) " "$T/tb" || { cat "$T/tb" >&2; fail "twob transaction lacks its two recipients"; }
for r in a1@twoa a2@twoa b1@twob b2@twob; do
	expect_log "$QT: to=<$r.$Z>, .*status=sent"
done

# nothing went where it should not
[ "$(sink_count snd --all)" = 2 ] || { rec "$T/snd.jsonl" show --all >&2; fail "the sender's MX got other than the 2 DSNs"; }
wait_queue_empty 10
signet_stop
note "ok"
