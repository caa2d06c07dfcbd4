#!/bin/bash
# deliver-metrics: after deliveries through a relayhost sink (2 sent, 1
# bounced whose DSN is then sent, 2 deferred of which one is put on hold),
# /metrics shows signet_deliveries_total by result, the delivery latency
# histogram (consistent buckets, one observation per message done), the
# queue gauges (deferred, held, messages, oldest age) and the outbound
# connection gauge back at 0 after the cache time; promtool check metrics
# accepts the page.
. "$(dirname "$0")/lib_deliver.sh"
need promtool
deliver_setup

sink_start relay 127.0.0.1 "$SINK_PORT" \
	--reply "RCPT:def=451 4.3.0 not now" --reply "RCPT:bad@=550 5.1.1 unknown"
deliver_conf "$T/signet.conf" "relayhost = [127.0.0.1]:$SINK_PORT" \
	"minimal_backoff_time = 60s" "maximal_backoff_time = 60s" \
	"smtp_connection_cache_time_limit = 1s"
signet_start "$T/signet.conf"

metrics_get "$T/m0"
for r in sent deferred bounced; do
	[ "$(metric signet_deliveries_total "result=\"$r\"" "$T/m0")" = 0 ] || fail "deliveries_total{result=$r} not 0 at start"
done

dsend --from sender@signed.example --rcpt ok1@rcpt.example
dsend --from sender@signed.example --rcpt ok2@rcpt.example
dsend --from sender@signed.example --rcpt bad@rcpt.example
QB=$QID
dsend --from sender@signed.example --rcpt def1@rcpt.example
QD1=$QID
dsend --from sender@signed.example --rcpt def2@rcpt.example
QD2=$QID
wait_sink relay 3 15            # ok1, ok2 and the DSN for bad@
wait_log "$QD1: to=<def1@rcpt.example>, .*status=deferred" 10
wait_log "$QD2: to=<def2@rcpt.example>, .*status=deferred" 10
ctl queue hold "$QD2"
[ "$RC" = 0 ] || { show; fail "queue hold $QD2"; }
sleep 2.5                       # past the cache time: connections closed
metrics_get
cp "$T/metrics" "$T/m1"

expect_metric() {
	local got
	got=$(metric "$@")
	[ "$got" = "$WANT" ] || { grep -E "^$1" "$T/metrics" >&2; fail "$1{${2:-}} = $got, wanted $WANT"; }
}
WANT=3 expect_metric signet_deliveries_total 'result="sent"'        # ok1, ok2, the DSN
WANT=1 expect_metric signet_deliveries_total 'result="bounced"'
WANT=2 expect_metric signet_deliveries_total 'result="deferred"'
WANT=1 expect_metric signet_queue_deferred
WANT=1 expect_metric signet_queue_held
WANT=2 expect_metric signet_queue_messages
WANT=0 expect_metric signet_outbound_connections
# one latency observation per message done (its file removed): ok1, ok2, bad, the DSN
WANT=4 expect_metric signet_delivery_seconds_count
age=$(metric signet_queue_oldest_age_seconds)
"$PY" -c "import sys; sys.exit(0 if 1 <= float('$age') < 120 else 1)" || fail "oldest age $age, wanted 1..120 s"

# histogram shape: cumulative buckets, +Inf = count, sum >= 0
"$PY" - "$T/metrics" <<'EOF' || fail "signet_delivery_seconds is not a consistent histogram"
import re, sys
b = []; cnt = s = None
for l in open(sys.argv[1]):
    m = re.match(r'^signet_delivery_seconds_bucket\{le="([^"]+)"\} (\S+)', l)
    if m:
        b.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
    elif l.startswith("signet_delivery_seconds_count "):
        cnt = float(l.split()[1])
    elif l.startswith("signet_delivery_seconds_sum "):
        s = float(l.split()[1])
assert b and cnt is not None and s is not None, "missing series"
assert [x[0] for x in b] == sorted(x[0] for x in b), "buckets not in order"
assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), "buckets not cumulative"
assert b[-1][0] == float("inf") and b[-1][1] == cnt, "+Inf bucket != count"
assert s >= 0
EOF
grep -q '^# TYPE signet_delivery_seconds histogram' "$T/metrics" || fail "signet_delivery_seconds not TYPE histogram"
grep -q '^# TYPE signet_deliveries_total counter' "$T/metrics" || fail "signet_deliveries_total not TYPE counter"
promtool check metrics <"$T/metrics" >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "promtool check metrics rejects /metrics"; }

# release and delete: the gauges follow
ctl queue release "$QD2"
[ "$RC" = 0 ] || { show; fail "queue release $QD2"; }
sleep 0.5
metrics_get
WANT=0 expect_metric signet_queue_held
WANT=2 expect_metric signet_queue_messages
for q in "$QD1" "$QD2"; do
	ctl queue delete "$q"
	[ "$RC" = 0 ] || { show; fail "queue delete $q"; }
done
[ "$(queue_files)" = 0 ] || fail "queue files left after deleting both"
sleep 1
metrics_get
WANT=0 expect_metric signet_queue_messages
WANT=0 expect_metric signet_queue_deferred
WANT=0 expect_metric signet_queue_held
signet_stop
note "ok"
