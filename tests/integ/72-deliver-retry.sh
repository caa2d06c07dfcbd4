#!/bin/bash
# deliver-retry: temporary and permanent failures through a relayhost sink
# (which also receives the bounces, as the sender's domain goes there too).
#   - 451 at RCPT twice, then 250: deferred (log and `signetctl queue list`
#     with the reason), sent after the backoff (1s..2s), once;
#   - the sink down (nothing listening), then back: deferred, then sent;
#   - 550 for one recipient of two: that one bounced, the other sent; the
#     DSN (from <>, multipart/report naming the failed recipient) reaches
#     the sender; RET=HDRS returns the headers only; NOTIFY=NEVER: no DSN;
#   - a message from <> that fails is never bounced;
#   - maximal_queue_lifetime = 2s with a sink that always says 451: bounced
#     as expired (4.4.7), the DSN reaches the sender.
. "$(dirname "$0")/lib_deliver.sh"
deliver_setup

sink_start relay 127.0.0.1 "$SINK_PORT" \
	--reply "RCPT:retry@rcpt.example=451 4.3.0 try again later*2" \
	--reply "RCPT:bad@rcpt.example=550 5.1.1 no such user here" \
	--reply "RCPT:never@rcpt.example=550 5.1.1 no such user here"
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT"
signet_start "$T/signet.conf"

# --- 4xx, 4xx, then 250 ------------------------------------------------------------------
dsend --from sender@signed.example --rcpt retry@rcpt.example
Q1=$QID
wait_log "$Q1: to=<retry@rcpt.example>, relay=[^ ]*\[127\.0\.0\.1\]:$SINK_PORT, delay=[0-9.]+, (tls=[^ ]*, )?status=deferred \(451 4\.3\.0 try again later\)" 10
ctl queue list
[ "$RC" = 0 ] || { show; fail "signetctl queue list exited $RC"; }
grep -q "$Q1" "$T/out" || { show; fail "queue list does not show the deferred $Q1"; }
grep -q "try again later" "$T/out" || { show; fail "queue list does not give the reason of the deferral"; }
ctl queue list --json
[ "$RC" = 0 ] || { show; fail "signetctl queue list --json exited $RC"; }
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/out" || { show; fail "queue list --json is not JSON"; }
grep -q "$Q1" "$T/out" || { show; fail "queue list --json does not show $Q1"; }
wait_log "$Q1: to=<retry@rcpt.example>, .*status=sent \(250 " 15
n=$(log_lines "$Q1: to=<retry@rcpt.example>, .*status=deferred" | wc -l)
[ "$n" = 2 ] || fail "$n deferrals logged for $Q1, wanted 2"
[ "$(sink_count relay --to retry@rcpt.example)" = 1 ] || fail "retry@ not received exactly once"
wait_queue_empty 5

# --- the sink down, then back -------------------------------------------------------------
sink_stop relay
dsend --from sender@signed.example --rcpt down@rcpt.example
Q2=$QID
wait_log "$Q2: to=<down@rcpt.example>, .*status=deferred" 10
[ -f "$SPOOL/active/$Q2" ] || fail "deferred $Q2 not in the queue"
sink_start relay 127.0.0.1 "$SINK_PORT" \
	--reply "RCPT:bad@rcpt.example=550 5.1.1 no such user here" \
	--reply "RCPT:never@rcpt.example=550 5.1.1 no such user here"
wait_sink relay 1 15 --to down@rcpt.example
wait_log "$Q2: to=<down@rcpt.example>, .*status=sent" 5
wait_queue_empty 5

# --- 5xx for one of two, RET=HDRS -----------------------------------------------------------
dsend --from sender@signed.example --mail-opt RET=HDRS --mail-opt ENVID=env-72-a \
	--rcpt good@rcpt.example --rcpt "bad@rcpt.example,NOTIFY=FAILURE,ORCPT=rfc822;orig-bad@rcpt.example" \
	--body "SECRET-BODY-TEXT should not come back with RET=HDRS" --msgid "<m72-hdrs@signed.example>"
Q3=$QID
wait_log "$Q3: to=<bad@rcpt.example>, .*status=bounced \(550 5\.1\.1 no such user here\)" 10
wait_log "$Q3: to=<good@rcpt.example>, .*status=sent" 10
wait_sink relay 1 15 --from 'MAIL FROM:<>' --to sender@signed.example
dsn_of relay sender@signed.example "$T/dsn1.eml"
cat "$T/dsn1.eml.desc"
grep -qx 'type multipart/report delivery-status' "$T/dsn1.eml.desc" || fail "DSN: not report-type=delivery-status"
grep -qx 'rcpt bad@rcpt.example action=failed status=5.1.1' "$T/dsn1.eml.desc" || fail "DSN does not name bad@ as failed with 5.1.1"
grep -q 'rcpt good@' "$T/dsn1.eml.desc" && fail "DSN names the recipient that was delivered"
grep -qx 'part 2 text/rfc822-headers' "$T/dsn1.eml.desc" || fail "RET=HDRS: the returned part is not text/rfc822-headers"
grep -qx 'envid env-72-a' "$T/dsn1.eml.desc" || fail "DSN lacks Original-Envelope-Id env-72-a"
grep -qx 'orcpt orig-bad@rcpt.example' "$T/dsn1.eml.desc" || fail "DSN lacks Original-Recipient from ORCPT"
grep -q 'SECRET-BODY-TEXT' "$T/dsn1.eml" && fail "RET=HDRS: the DSN returns the body"
grep -q 'm72-hdrs@signed.example' "$T/dsn1.eml" || fail "the DSN does not return the original headers"
rec "$T/relay.jsonl" show --from 'MAIL FROM:<>' | grep -q 'accepted=sender@signed.example ' ||
	fail "the DSN was not sent to the sender alone"
[ "$(sink_count relay --to good@rcpt.example)" = 1 ] || fail "good@ not received exactly once"
[ "$(sink_count relay --to bad@rcpt.example)" = 0 ] || fail "bad@ recorded as accepted"
wait_queue_empty 10

# --- 5xx, default RET: the whole message comes back ------------------------------------------
dsend --from sender2@signed.example --rcpt bad@rcpt.example --body "FULL-BODY-TEXT comes back"
Q4=$QID
wait_sink relay 1 15 --from 'MAIL FROM:<>' --to sender2@signed.example
dsn_of relay sender2@signed.example "$T/dsn2.eml"
grep -qx 'part 2 message/rfc822' "$T/dsn2.eml.desc" || { cat "$T/dsn2.eml.desc" >&2; fail "without RET=HDRS the returned part is not message/rfc822"; }
grep -q 'FULL-BODY-TEXT' "$T/dsn2.eml" || fail "without RET the DSN does not return the body"
wait_queue_empty 10

# --- NOTIFY=NEVER: bounced, no DSN --------------------------------------------------------------
before=$(sink_count relay --from 'MAIL FROM:<>')
dsend --from sender3@signed.example --rcpt "never@rcpt.example,NOTIFY=NEVER" --rcpt good3@rcpt.example
Q5=$QID
wait_log "$Q5: to=<never@rcpt.example>, .*status=bounced" 10
wait_log "$Q5: to=<good3@rcpt.example>, .*status=sent" 10
# --- from <>: bounced, never returned -----------------------------------------------------------
dsend --from "" --rcpt bad@rcpt.example
Q6=$QID
wait_log "$Q6: to=<bad@rcpt.example>, .*status=bounced" 10
wait_queue_empty 10
sleep 2
after=$(sink_count relay --from 'MAIL FROM:<>')
[ "$after" = "$before" ] || { rec "$T/relay.jsonl" show --from 'MAIL FROM:<>' >&2; fail "a DSN was sent for NOTIFY=NEVER or for mail from <> ($before -> $after)"; }
[ "$(sink_count relay --all --to sender3@signed.example)" = 0 ] || fail "NOTIFY=NEVER: something was sent to the sender"
signet_stop

# --- maximal_queue_lifetime: expired ---------------------------------------------------------------
sink_stop relay
sink_start relay 127.0.0.1 "$SINK_PORT" --reply "RCPT:expire@rcpt.example=451 4.3.0 always busy"
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT" "maximal_queue_lifetime = 2s"
signet_start "$T/signet.conf"
dsend --from sender4@signed.example --rcpt expire@rcpt.example
Q7=$QID
wait_log "$Q7: to=<expire@rcpt.example>, .*status=deferred" 10
wait_sink relay 1 20 --from 'MAIL FROM:<>' --to sender4@signed.example
dsn_of relay sender4@signed.example "$T/dsn3.eml"
cat "$T/dsn3.eml.desc"
grep -qx 'rcpt expire@rcpt.example action=failed status=4.4.7' "$T/dsn3.eml.desc" ||
	fail "the expired recipient is not reported failed with 4.4.7"
grep -qi 'expired' "$T/dsn3.eml" || fail "the DSN does not say the message expired"
[ "$(sink_count relay --to expire@rcpt.example)" = 0 ] || fail "expire@ was delivered"
wait_queue_empty 10
signet_stop
note "ok"
