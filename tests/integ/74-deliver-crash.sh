#!/bin/bash
# deliver-crash: under load (300 messages with unique Message-IDs from
# smtp/loadclient.py, which records each one that got 250), Signet is
# killed with SIGKILL three times while it delivers to a relayhost sink, and
# restarted each time.  At the end the queue drains, every acknowledged
# message reached the sink (the sink records a transaction, fsynced, before
# it says 250), and duplicates are at most a handful (the transactions in
# flight at each kill); their number is printed.
. "$(dirname "$0")/lib_deliver.sh"
deliver_setup
N=300
KILLS=3
CONC=10
# at most the transactions in flight at each kill
MAXDUP=${MAXDUP:-$((KILLS * CONC))}

# a slow sink (100 ms per message): the queue is still busy at each kill
sink_start relay 127.0.0.1 "$SINK_PORT" --delay-dot 100
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT" \
	"default_destination_concurrency_limit = $CONC"
signet_start "$T/signet.conf"

"$PY" "$SMTPDIR/loadclient.py" --port "$PORT" --conns 4 --size 3000 --count "$N" \
	--acked "$T/acked" --tag t74 --per-session 20 --to "rcpt@rcpt.example" \
	>"$T/load.out" 2>"$T/load.err" &
LOAD=$!
smtp_track "$LOAD"

# kill when the sink has passed each mark, i.e. while deliveries go on
k=0
for mark in 40 110 180; do
	wait_sink relay "$mark" 60
	q=$(queue_files)
	signet_kill9
	[ "$q" -gt 0 ] || fail "kill #$((k + 1)): the queue was already empty"
	k=$((k + 1))
	note "kill -9 #$k at $(sink_count relay) delivered, $(wc -l <"$T/acked") acked, $q queued"
	sleep 0.3
	signet_start "$T/signet.conf"
done
[ $k = $KILLS ] || fail "only $k kills"

wait_until 60 "the load client to finish" '! kill -0 $LOAD 2>/dev/null'
wait "$LOAD"
cat "$T/load.out"
acked=$(wc -l <"$T/acked")
[ "$acked" -ge $((N * 8 / 10)) ] || fail "only $acked of $N messages acknowledged"
wait_queue_empty 60
signet_alive "after the queue drained"
sleep 1

awk '{print $1}' "$T/acked" | sort -u >"$T/acked.ids"
rec "$T/relay.jsonl" msgids >"$T/sink.all"
sort -u "$T/sink.all" >"$T/sink.ids"
lost=$(comm -23 "$T/acked.ids" "$T/sink.ids" | wc -l)
total=$(wc -l <"$T/sink.all")
uniq=$(wc -l <"$T/sink.ids")
dups=$((total - uniq))
extra=$(comm -13 "$T/acked.ids" "$T/sink.ids" | wc -l)
note "acked $acked, sink transactions $total, distinct $uniq, duplicates $dups, delivered but not acked $extra"
[ "$lost" = 0 ] || { comm -23 "$T/acked.ids" "$T/sink.ids" | head >&2; fail "$lost acknowledged messages never reached the sink"; }
[ "$dups" -le "$MAXDUP" ] || fail "$dups duplicate deliveries after $KILLS kills (at most $MAXDUP allowed)"
grep -q 'status=sent' "$SIGNET_LOG" || fail "no delivery logged"
signet_stop
note "ok: $acked acked, none lost, $dups duplicates over $KILLS kills"
