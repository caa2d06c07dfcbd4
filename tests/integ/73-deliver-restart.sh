#!/bin/bash
# deliver-restart: Signet stopped (SIGTERM) and restarted with messages in
# every state, through a relayhost sink that counts deliveries per recipient:
#   S  sent before the stop;
#   P  partially delivered: p-ok@ sent, p-def@ deferred (451);
#   D  deferred (451);
#   N  never tried (accepted while defer_transports = smtp);
# after the restart (sink accepting everyone) each recipient has been
# received exactly once.  Then, on a running node with defer_transports =
# smtp: hold (the file moves to hold/, a flush skips it), delete (gone,
# never delivered), flush ID, release + flush; and `signetctl queue list`
# with no node running says so and exits 1.
. "$(dirname "$0")/lib_deliver.sh"
deliver_setup
R=rcpt.example

# --- phase 1: deliver, with 451 for two recipients ------------------------------------------------
sink_start relay 127.0.0.1 "$SINK_PORT" \
	--reply "RCPT:p-def@$R=451 4.3.0 later" --reply "RCPT:d@$R=451 4.3.0 later"
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT" \
	"minimal_backoff_time = 4s" "maximal_backoff_time = 4s"
signet_start "$T/signet.conf"
dsend --from sender@signed.example --rcpt "s@$R" --msgid "<S@t73>"
QS=$QID
dsend --from sender@signed.example --rcpt "p-ok@$R" --rcpt "p-def@$R" --msgid "<P@t73>"
QP=$QID
dsend --from sender@signed.example --rcpt "d@$R" --msgid "<D@t73>"
QD=$QID
wait_log "$QS: to=<s@$R>, .*status=sent" 10
wait_log "$QP: to=<p-ok@$R>, .*status=sent" 10
wait_log "$QP: to=<p-def@$R>, .*status=deferred" 10
wait_log "$QD: to=<d@$R>, .*status=deferred" 10
signet_stop

# --- phase 2: accept one more without delivering it ----------------------------------------------
deliver_conf "$T/signet2.conf" "relayhost = [127.0.0.1]:$SINK_PORT" "defer_transports = smtp"
signet_start "$T/signet2.conf"
dsend --from sender@signed.example --rcpt "n@$R" --msgid "<N@t73>"
QN=$QID
sleep 1
signet_stop
log_lines "$QN: to=" && fail "the message accepted with defer_transports = smtp was tried"
for q in "$QP" "$QD" "$QN"; do
	[ -f "$SPOOL/active/$q" ] || fail "$q not in the queue across the stop"
done
[ -f "$SPOOL/active/$QS" ] && fail "the sent message $QS is still queued"

# --- phase 3: restart, sink accepting everyone -----------------------------------------------------
sink_stop relay
sink_start relay 127.0.0.1 "$SINK_PORT"
signet_start "$T/signet.conf"
wait_queue_empty 25
sleep 1
rec "$T/relay.jsonl" rcpts >"$T/counts"
cat "$T/counts"
for r in s p-ok p-def d n; do
	n=$(awk -v a="$r@$R" '$1 == a {print $2}' "$T/counts")
	[ "${n:-0}" = 1 ] || { rec "$T/relay.jsonl" show >&2; fail "$r@$R received ${n:-0} times, wanted exactly once"; }
done

# --- hold / delete / flush / release ------------------------------------------------------------------
signet_stop
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT" "defer_transports = smtp"
signet_start "$T/signet.conf"
dsend --from sender@signed.example --rcpt "h@$R" --msgid "<H@t73>"
QH=$QID
dsend --from sender@signed.example --rcpt "x@$R" --msgid "<X@t73>"
QX=$QID
dsend --from sender@signed.example --rcpt "f@$R" --msgid "<F@t73>"
QF=$QID
ctl queue list
[ "$RC" = 0 ] || { show; fail "queue list exited $RC"; }
for q in "$QH" "$QX" "$QF"; do grep -q "$q" "$T/out" || { show; fail "queue list lacks $q"; }; done

ctl queue hold "$QH"
[ "$RC" = 0 ] || { show; fail "queue hold exited $RC"; }
[ -f "$SPOOL/hold/$QH" ] || fail "held $QH is not in hold/"
[ -f "$SPOOL/active/$QH" ] && fail "held $QH still in active/"
ctl queue show "$QH"
[ "$RC" = 0 ] || { show; fail "queue show exited $RC"; }
grep -qi 'hold' "$T/out" || { show; fail "queue show does not say $QH is on hold"; }

ctl queue delete "$QX"
[ "$RC" = 0 ] || { show; fail "queue delete exited $RC"; }
[ -e "$SPOOL/active/$QX" ] && fail "deleted $QX still in active/"
ctl queue show "$QX"
[ "$RC" != 0 ] || { show; fail "queue show of a deleted message succeeds"; }

ctl queue flush "$QF"
[ "$RC" = 0 ] || { show; fail "queue flush ID exited $RC"; }
wait_sink relay 1 10 --to "f@$R"
ctl queue flush
[ "$RC" = 0 ] || { show; fail "queue flush exited $RC"; }
sleep 2
[ "$(sink_count relay --all --to "h@$R")" = 0 ] || fail "a held message was delivered by a flush"
[ -f "$SPOOL/hold/$QH" ] || fail "held $QH left hold/ after a flush"

ctl queue release "$QH"
[ "$RC" = 0 ] || { show; fail "queue release exited $RC"; }
[ -f "$SPOOL/active/$QH" ] || fail "released $QH is not back in active/"
ctl queue flush
wait_sink relay 1 10 --to "h@$R"
wait_queue_empty 10
[ "$(sink_count relay --all --to "x@$R")" = 0 ] || fail "the deleted message was delivered"
[ "$(sink_count relay --to "f@$R")" = 1 ] || fail "f@ not delivered exactly once"
[ "$(sink_count relay --to "h@$R")" = 1 ] || fail "h@ not delivered exactly once"
ctl queue hold NOSUCHID
[ "$RC" != 0 ] || { show; fail "queue hold of an unknown id succeeds"; }
signet_stop

# --- no node running ------------------------------------------------------------------------------------
ctl queue list
[ "$RC" = 1 ] || { show; fail "queue list with no node: exit $RC, wanted 1"; }
grep -qi 'no signet node is running' "$T/err" || { show; fail "queue list with no node does not say so"; }
note "ok"
