#!/bin/bash
# smtp-metrics: GET /metrics on admin_listen is Prometheus text that
# `promtool check metrics` accepts, with the families the issue lists
# (connections current and total, messages accepted and rejected by reason,
# bytes received, signatures by algorithm and domain, signing latency and
# fsync latency histograms, messages per fsync, queue size); the counters
# move by the right amounts when mail is accepted and refused; a real
# Prometheus server scrapes Signet on loopback and its query API returns
# signet_messages_accepted_total.
. "$(dirname "$0")/lib_smtp.sh"
need swaks curl promtool prometheus

smtp_setup
smtp_conf "$T/signet.conf"
signet_start "$T/signet.conf" "$PORT" "$ADMIN_PORT"

metrics_get "$T/m0"
run promtool check metrics <"$T/m0"
[ "$RC" = 0 ] || { show; fail "promtool check metrics refuses /metrics"; }
grep -q '^# TYPE signet_' "$T/m0" || fail "no signet_ metric families"
curl -sS -D "$T/hdr" -o /dev/null "http://127.0.0.1:$ADMIN_PORT/metrics"
grep -iq '^content-type: text/plain; version=0.0.4' "$T/hdr" ||
	{ cat "$T/hdr" >&2; fail "/metrics Content-Type is not text/plain; version=0.0.4"; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/nope")
[ "$code" = 404 ] || fail "GET /nope: HTTP $code, wanted 404"

# families: name regex (ERE on "# TYPE NAME TYPE" lines)
for fam in \
	'signet_messages_accepted_total counter' \
	'signet_messages_rejected_total counter' \
	'signet_[a-z_]*connections[a-z_]* gauge' \
	'signet_[a-z_]*connections[a-z_]*_total counter' \
	'signet_[a-z_]*bytes[a-z_]*_total counter' \
	'signet_[a-z_]*signatures[a-z_]*_total counter' \
	'signet_[a-z_]*sign[a-z_]*_seconds histogram' \
	'signet_[a-z_]*fsync[a-z_]*_seconds histogram' \
	'signet_[a-z_]*(per_fsync|fsync_batch|batch)[a-z_]* (histogram|summary|gauge)' \
	'signet_[a-z_]*queue[a-z_]* gauge'; do
	grep -Eq "^# TYPE $fam\$" "$T/m0" ||
		{ grep '^# TYPE' "$T/m0" >&2; fail "no metric family matching /$fam/"; }
done

a0=$(metric signet_messages_accepted_total "" "$T/m0")
# --- traffic ------------------------------------------------------------------
for i in 1 2 3; do
	expect_queued --body "metrics message $i"
done
swaks_send --local-interface 127.0.0.2          # relay refused
[ -z "$QID" ] || fail "relay from 127.0.0.2 was queued"
sleep 0.5
metrics_get "$T/m1"
run promtool check metrics <"$T/m1"
[ "$RC" = 0 ] || { show; fail "promtool check metrics refuses /metrics after traffic"; }
a1=$(metric signet_messages_accepted_total "" "$T/m1")
[ "$a1" = $((a0 + 3)) ] || fail "signet_messages_accepted_total went from $a0 to $a1, wanted +3"
r1=$(metric signet_messages_rejected_total 'reason="[^"]*relay[^"]*"' "$T/m1")
[ "${r1%.*}" -ge 1 ] || { grep rejected "$T/m1" >&2; fail "no rejected{reason=~relay} count after a refused relay"; }
name=$(sed -nE 's/^# TYPE (signet_[a-z_]*signatures[a-z_]*_total) counter$/\1/p' "$T/m1" | head -n 1)
s_rsa=$(metric "$name" 'rsa' "$T/m1")
s_ed=$(metric "$name" 'ed25519' "$T/m1")
s_dom=$(metric "$name" 'signed\.example' "$T/m1")
[ "${s_rsa%.*}" -ge 3 ] && [ "${s_ed%.*}" -ge 3 ] && [ "${s_dom%.*}" -ge 6 ] ||
	{ grep "$name" "$T/m1" >&2; fail "$name: wanted >= 3 rsa, >= 3 ed25519, >= 6 for signed.example"; }
name=$(sed -nE 's/^# TYPE (signet_[a-z_]*bytes[a-z_]*_total) counter$/\1/p' "$T/m1" | head -n 1)
b0=$(metric "$name" "" "$T/m0")
b1=$(metric "$name" "" "$T/m1")
[ "${b1%.*}" -gt "${b0%.*}" ] || fail "$name did not grow ($b0 -> $b1)"
name=$(sed -nE 's/^# TYPE (signet_[a-z_]*fsync[a-z_]*_seconds) histogram$/\1/p' "$T/m1" | head -n 1)
c1=$(metric "${name}_count" "" "$T/m1")
[ "${c1%.*}" -ge 1 ] || fail "${name}_count is $c1 after 3 messages"
name=$(sed -nE 's/^# TYPE (signet_[a-z_]*connections[a-z_]*_total) counter$/\1/p' "$T/m1" | head -n 1)
k0=$(metric "$name" "" "$T/m0")
k1=$(metric "$name" "" "$T/m1")
[ "${k1%.*}" -ge $((${k0%.*} + 4)) ] || fail "$name went from $k0 to $k1 after 4 sessions"
# the current-connections gauge counts a held connection
exec 7<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.3
metrics_get "$T/m2"
exec 7>&-
name=$(sed -nE 's/^# TYPE (signet_[a-z_]*connections[a-z_]*) gauge$/\1/p' "$T/m2" | head -n 1)
g=$(metric "$name" "" "$T/m2")
[ "${g%.*}" -ge 1 ] || fail "$name is $g with a connection open"

# the queue size gauge is the number of files in active/
q=$(metric signet_queue_messages "" "$T/m2")
[ "${q%.*}" = "$(spool_count)" ] || fail "signet_queue_messages is $q, active/ holds $(spool_count)"

# --- a real Prometheus scrapes it ----------------------------------------------------
mkdir -p "$T/prom"
cat >"$T/prom/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: signet
    static_configs:
      - targets: ['127.0.0.1:$ADMIN_PORT']
EOF
promtool check config "$T/prom/prometheus.yml" >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "promtool check config"; }
prometheus --config.file="$T/prom/prometheus.yml" --storage.tsdb.path="$T/prom/data" \
	--web.listen-address="127.0.0.1:$PORT5" --log.level=warn >"$T/prom.log" 2>&1 &
PROM_PID=$!
smtp_track "$PROM_PID"
wait_port "$PORT5" 30 || { tail -20 "$T/prom.log" >&2; fail "prometheus did not start"; }
want=$(metric signet_messages_accepted_total "" "$T/m2")
got=""
for i in $(seq 1 40); do
	curl -s --max-time 5 "http://127.0.0.1:$PORT5/api/v1/query?query=signet_messages_accepted_total" >"$T/q.json"
	got=$("$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
r = d.get("data", {}).get("result", [])
print(sum(float(x["value"][1]) for x in r) if r else "")' "$T/q.json" 2>/dev/null)
	[ -n "$got" ] && break
	sleep 0.5
done
[ -n "$got" ] || { cat "$T/q.json" >&2; tail -20 "$T/prom.log" >&2; fail "Prometheus has no signet_messages_accepted_total after 20 s"; }
[ "${got%.*}" = "${want%.*}" ] || fail "Prometheus says signet_messages_accepted_total = $got, /metrics says $want"
curl -s "http://127.0.0.1:$PORT5/api/v1/query?query=up%7Bjob%3D%22signet%22%7D" >"$T/up.json"
grep -q '"value":\[[0-9.]*,"1"\]' "$T/up.json" || { cat "$T/up.json" >&2; fail "Prometheus: up{job=signet} is not 1"; }
# the scrape itself raised no error on Prometheus' side
curl -s "http://127.0.0.1:$PORT5/api/v1/targets" >"$T/targets.json"
grep -q '"lastError":""' "$T/targets.json" || { cat "$T/targets.json" >&2; fail "Prometheus reports a scrape error"; }
kill -TERM "$PROM_PID"
wait "$PROM_PID" 2>/dev/null

signet_alive
signet_stop
note "ok"
