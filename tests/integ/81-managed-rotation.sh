#!/bin/bash
# managed-rotation: the end-to-end proof of issue 5 ("Proof").  A real
# redis-server holds the key store of two Signet nodes on loopback, which
# share one clock file (SIGNET_CLOCK_FILE) and relay to a recording sink;
# nsd serves the customer zone fabrikam.example and the operator's zone
# signet.example, which delegates _domainkey.contoso.signet.example to the
# nodes' built-in DNS servers (NS + glue to port 53 on two loopback
# addresses when root, else an unbound stub-zone); unbound resolves; dkimpy
# verifies every delivered message through unbound.  With the clock:
#   1 provision -> default signing (d=initial, s=selectorN-enc) verifies
#   2 enable refused with exactly the two records while the CNAMEs are
#     missing, accepted after nsd serves them -> aligned signing verifies
#   3 two full rotation cycles (365d interval, 7d lead, 7d retire): mail
#     from both nodes verifies at every phase, mail signed just before a
#     switch still verifies in the retire window and no longer after the
#     old key's replacement
#   4 dkim rotate --now: the switch and the replacement happen at once
#   5 the gate holds a requested switch while DNS lacks the idle key's
#     CNAME (phase pending, metrics, log), then lets it through
#   6 Redis stopped: both nodes keep signing, no transition is made, and
#     the due one is made once Redis is back
#   7 no transition twice: history, node logs and metrics agree
#   8 nothing Signet stores in Redis holds a private key in the clear
. "$(dirname "$0")/lib_keys.sh"
keys_setup
D=$CUST
ENC=${CUST//./-}
IENC=${INITIAL//./-}

# expect_history DOMAIN REGEX - the domain's history has a line matching REGEX
expect_history() {
	kshow "$1"
	kj '"\n".join(d["history"])' >"$T/hist" || fail "no history for $1"
	grep -Eq -- "$2" "$T/hist" || { cat "$T/hist" >&2; fail "$1: no history line matches /$2/"; }
}

# new_p DOMAIN SLOT - the p= of slot's key as the store has it now
new_p() {
	kshow "$1"
	kj "sel($2)['txt']" | txt_p
}

# metric_ge N NAME LABELS VALUE - node N's sample is at least VALUE
metric_ge() {
	local v
	v=$(kmetric "$1" "$2" "$3")
	[ "$v" != unreachable ] || fail "node$1 /metrics unreachable"
	[ "${v%.*}" -ge "$4" ] || fail "node$1: $2{$3} is $v, wanted at least $4"
}

sink_start relay 127.0.0.1 "$SINK_PORT"
redis_start
knsd_start
ub_start
node_conf 1
node_conf 2
PROV=$NOW
node_start 1
node_start 2
phase "harness up"

# --- 0: the tenant of initial_domain, its own key, the delegation ---------------
kwait 30 "tenant default in the store" 'kctl tenant list --json; [ "$RC" = 0 ] && grep -q "\"$INITIAL\"" "$T/out"'
kshow "$INITIAL"
[ "$(kj 'd["tenant"]')" = default ] || { cat "$T/show.json" >&2; fail "$INITIAL is not in tenant default"; }
IP1=$(kj "sel(1)['txt']" | txt_p)
[ -n "$IP1" ] || { cat "$T/show.json" >&2; fail "no TXT for selector1 of $INITIAL in dkim show"; }
# the operator zone, through unbound and the delegation, has the initial domain's key
kwait 30 "selector1-$IENC._domainkey.$INITIAL through unbound" \
	'[ "$(ub_txt "selector1-$IENC._domainkey.$INITIAL" | txt_p)" = "$IP1" ]'
phase "0: tenant default and its key record served through the delegation"

# --- 1: provision; default signing once the gate has passed ---------------------
kctl_ok domain add "$D"
printf '%s\n' \
	"selector1._domainkey.$D. 3600 IN CNAME selector1-$ENC._domainkey.$INITIAL." \
	"selector2._domainkey.$D. 3600 IN CNAME selector2-$ENC._domainkey.$INITIAL." >"$T/want.cnames"
while read -r l; do
	grep -Fxq -- "$l" "$T/out" || { show; fail "domain add does not print: $l"; }
done <"$T/want.cnames"
kshow "$D"
[ "$(kj 'd["enabled"] in (0, False)' 'd["active"]' 'd["phase"]' 'sel(1)["generation"]' 'sel(2)["generation"]' 'sel(1)["bits"]' 'sel(1)["confirmed"]')" = \
"true
1
stable
1
1
1024
0" ] || { cat "$T/show.json" >&2; fail "domain add: not (disabled, selector1 active, stable, generation 1+1, 1024 bits, unconfirmed)"; }
# the JSON of dkim show has the spec's keys, and no private key
"$PY" - "$T/show.json" <<'PYEOF' || { cat "$T/show.json" >&2; fail "dkim show --json: keys"; }
import json, sys
d = json.load(open(sys.argv[1]))
want = "domain tenant initial_domain enabled active phase phase_since next_transition rotate_requested dns_checked dns_result dns_detail selectors history".split()
miss = [k for k in want if k not in d]
swant = "slot selector cname_host cname_target alg bits generation created published seen confirmed active txt".split()
miss += ["selectors[].%s" % k for k in swant if any(k not in x for x in d["selectors"])]
assert not miss, "missing: " + " ".join(miss)
assert len(d["selectors"]) == 2
text = json.dumps(d)
assert "priv" not in text and "PRIVATE" not in text, "a private key in dkim show"
PYEOF
kctl_ok dkim show "$D"
grep -Eq 'PRIVATE|priv' "$T/out" && { show; fail "dkim show prints private key material"; }
kctl_ok dns records "$D"
cmp -s "$T/out" "$T/want.cnames" || { diff "$T/want.cnames" "$T/out" >&2; fail "dns records $D"; }
nodes_follow
# before the publish lead has passed, the new key does not sign
kmail 1 p0-early
[ "$(sig_tag "$MAIL" s)" != "selector1-$ENC" ] || fail "a key signed before its publish lead passed"
metric_ge 1 signet_dkim_domains_unconfirmed "" 1
clock_advance $((8 * DAY))
kwait 40 "selector1 of $D confirmed" kshow_is "$D" "sel(1)['confirmed'] != 0" true
kwait 30 "no unconfirmed domain on either node" \
	'[ "$(kmetric 1 signet_dkim_domains_unconfirmed)" = 0 ] && [ "$(kmetric 2 signet_dkim_domains_unconfirmed)" = 0 ]'
expect_history "$D" '^[0-9]+ [^ ]+ provision'
expect_history "$D" '^[0-9]+ node[12] confirm selector1 gen 1$'
nodes_follow
kmail_both p1 "$INITIAL" "selector1-$ENC"
metric_ge 1 signet_dkim_signatures_total 'slot="1",mode="default"|mode="default",slot="1"' 1
phase "1: provisioned; default signing d=$INITIAL s=selector1-$ENC verifies from both nodes"

# --- 2: enable ------------------------------------------------------------------
kctl dkim enable "$D"
[ "$RC" = 1 ] || { show; fail "dkim enable without the CNAMEs: exit $RC, wanted 1"; }
cmp -s "$T/out" "$T/want.cnames" || { diff "$T/want.cnames" "$T/out" >&2; fail "dkim enable refused: stdout is not exactly the two records"; }
grep -q "selector1._domainkey.$D" "$T/err" && grep -q "selector2._domainkey.$D" "$T/err" ||
	{ show; fail "dkim enable refused: stderr does not name both records"; }
kshow "$D"
[ "$(kj 'd["enabled"] in (0, False)')" = true ] || fail "a refused enable changed the domain"
# one CNAME right, one pointing elsewhere: still refused
cust_zone "$(cname 1)" "selector2._domainkey IN CNAME selector2-other-example._domainkey.$INITIAL."
kctl dkim enable "$D"
[ "$RC" = 1 ] || { show; fail "dkim enable with a wrong selector2 CNAME: exit $RC, wanted 1"; }
cmp -s "$T/out" "$T/want.cnames" || { show; fail "dkim enable refused (wrong target): stdout is not exactly the two records"; }
grep -q "selector2._domainkey.$D" "$T/err" || { show; fail "dkim enable refused: stderr does not name selector2"; }
cust_zone "$(cname 1)" "$(cname 2)"
kctl_ok dkim enable "$D"
grep_out "^$D: DKIM enabled \(d=$D, s=selector1\)\$"
kshow "$D"
[ "$(kj 'd["enabled"] in (1, True)')" = true ] || { cat "$T/show.json" >&2; fail "enable: not enabled"; }
expect_history "$D" '^[0-9]+ [^ ]+ enable$'
# enabling moves no phase count: wait until both nodes sign aligned
nodes_sign_as "$D" selector1
kmail_both p2 "$D" selector1
phase "2: enable refused without the CNAMEs (exact records), accepted with them; d=$D s=selector1 verifies"

# --- 3: two full rotation cycles, by the clock ------------------------------------
# make_due HOW SECS DESC COND - set the clock to SECS and wait (40 s) until
# kshow_is "$D" COND is true.  HOW "race": both nodes are frozen (SIGSTOP)
# while the clock moves and thawed together, so that both plan the same
# transition in the same instant; "node2": node1 stays frozen until the
# transition is made, so node2 must make it; "": just the clock.
make_due() {
	local how=$1 at=$2 what=$3 cond=$4
	case $how in
	race) kill -STOP "${NODE_PID[1]}" "${NODE_PID[2]}" ;;
	node2) kill -STOP "${NODE_PID[1]}" ;;
	esac
	clock_set "$at"
	case $how in
	race)
		sleep 1.5
		kill -CONT "${NODE_PID[1]}" "${NODE_PID[2]}"
		;;
	node2)
		kwait 40 "$what (by node2, node1 frozen)" kshow_is "$D" "$cond" true
		kill -CONT "${NODE_PID[1]}"
		;;
	esac
	kwait 40 "$what" kshow_is "$D" "$cond" true
}

# cycle n: switch at PROV + n*365d (+1d), replacement 7 days later
cycle() {
	local n=$1 from=$2 to=$3 gen_to=$4 gen_new=$5 due=$6 how=$7 p_new
	clock_set $((due - DAY))
	sleep 1
	kshow "$D"
	[ "$(kj 'd["active"]' 'd["phase"]')" = "$from
stable" ] || { cat "$T/show.json" >&2; fail "cycle $n: a transition before the rotation was due"; }
	kmail_both "c$n-pre" "$D" "selector$from"
	cp "$T/mail/c$n-pre-n1.eml" "$T/pre$n-n1.eml"
	cp "$T/mail/c$n-pre-n2.eml" "$T/pre$n-n2.eml"
	make_due "$how" $((due + DAY)) "cycle $n: switch to selector$to" \
		"(d['active'], d['phase'], sel($to)['generation']) == ($to, 'retiring', $gen_to)"
	nodes_follow
	kmail_both "c$n-sw" "$D" "selector$to"
	kverify "$T/pre$n-n1.eml" "$D" "selector$from"
	kverify "$T/pre$n-n2.eml" "$D" "selector$from"
	phase "3.$n: switched to selector$to; pre-switch mail still verifies in the retire window"
	make_due "$how" $((due + 9 * DAY)) "cycle $n: selector$from replaced by generation $gen_new" \
		"(d['active'], d['phase'], sel($from)['generation']) == ($to, 'stable', $gen_new)"
	p_new=$(kj "sel($from)['txt']" | txt_p)
	nodes_serve "selector$from-$ENC._domainkey.$INITIAL" "$p_new"
	nodes_follow
	kverify_fails "$T/pre$n-n1.eml"
	kverify_fails "$T/pre$n-n2.eml"
	kmail_both "c$n-rep" "$D" "selector$to"
	phase "3.$n: selector$from replaced (generation $gen_new); the pre-switch mail no longer verifies"
}
cycle 1 1 2 1 2 $((PROV + 365 * DAY)) race
S1=$((PROV + 366 * DAY))
cycle 2 2 1 2 3 $((S1 + 365 * DAY)) node2
S2=$((S1 + 366 * DAY))
expect_history "$D" '^[0-9]+ node2 switch selector2->selector1 gen 2$'
expect_history "$D" '^[0-9]+ node2 replace selector2 gen 3$'

# --- 4: dkim rotate --now -----------------------------------------------------------
# selector2 (generation 3) was published at S2 + 8d: its lead has passed at S2 + 16d
clock_set $((S2 + 16 * DAY))
kmail 1 now-pre
kverify "$MAIL" "$D" selector1
cp "$MAIL" "$T/pre-now.eml"
kctl dkim rotate "$D" --now
[ "$RC" = 0 ] || { show; fail "dkim rotate --now exited $RC"; }
kshow "$D"
[ "$(kj '(d["active"], d["phase"], sel(1)["generation"], sel(2)["generation"]) == (2, "stable", 4, 3)')" = true ] ||
	{ cat "$T/show.json" >&2; fail "rotate --now: wanted selector2 active at once and selector1 replaced (generation 4) at once"; }
expect_history "$D" '^[0-9]+ [^ ]+ rotate-now selector1->selector2 gen [0-9]+$'
nodes_serve "selector1-$ENC._domainkey.$INITIAL" "$(kj "sel(1)['txt']" | txt_p)"
nodes_follow
kmail_both now "$D" selector2
kverify_fails "$T/pre-now.eml"
phase "4: rotate --now: selector2 signs at once, the old selector1 key is gone at once"

# --- 5: the gate holds a switch while DNS lacks the idle key ----------------------------
cust_zone "$(cname 2)"
clock_set $((S2 + 25 * DAY))
holds0=$(kmetric 1 signet_dkim_gate_holds_total)
kctl_ok dkim rotate "$D"
kwait 40 "the switch held (phase pending)" kshow_is "$D" "d['phase']" pending
[ "$(kj 'd["active"]')" = 2 ] || fail "gate: switched although selector1._domainkey.$D has no CNAME"
expect_history "$D" '^[0-9]+ node[12] hold selector1 gen 4: '
kwait 30 "switches_held 1 on both nodes" \
	'[ "$(kmetric 1 signet_dkim_switches_held)" = 1 ] && [ "$(kmetric 2 signet_dkim_switches_held)" = 1 ]'
kwait 30 "gate_holds_total rising" '[ "$(kmetric 1 signet_dkim_gate_holds_total)" -gt "${holds0:-0}" ]'
kwait 30 "a 'switch held' log line" '[ "$(nodes_log_count "dkim: $D: switch held: ")" -ge 1 ]'
sleep 2
kshow "$D"
[ "$(kj 'd["active"]' 'd["phase"]')" = "2
pending" ] || fail "gate: the held switch went through while DNS still lacks the key"
kmail_both gate "$D" selector2
cp "$T/mail/gate-n1.eml" "$T/pre-gate.eml"
t=$(date +%s)
cust_zone "$(cname 1)" "$(cname 2)"
kwait 40 "the held switch going through once DNS has the key" kshow_is "$D" \
	"(d['active'], d['phase']) == (1, 'retiring')" true
phase "5: switch held while selector1._domainkey.$D was missing; went through $(($(date +%s) - t))s after the CNAME came back"
kwait 30 "switches_held 0 on both nodes" \
	'[ "$(kmetric 1 signet_dkim_switches_held)" = 0 ] && [ "$(kmetric 2 signet_dkim_switches_held)" = 0 ]'
nodes_follow
kmail_both gatesw "$D" selector1
kverify "$T/pre-gate.eml" "$D" selector2
G5=$NOW

# --- 6: Redis stopped mid-run -----------------------------------------------------------
P2=$(new_p "$D" 2)
redis_stop
kwait 30 "signet_keystore_up 0 on both nodes" \
	'[ "$(kmetric 1 signet_keystore_up)" = 0 ] && [ "$(kmetric 2 signet_keystore_up)" = 0 ]'
kwait 30 "the unreachable warning on both nodes" \
	'grep -q "dkim: key store unreachable: " "$T/node1.log" && grep -q "dkim: key store unreachable: " "$T/node2.log"'
kctl dkim show "$D" --json
[ "$RC" = 1 ] || { show; fail "dkim show with Redis down: exit $RC, wanted 1"; }
kmail_both rdown "$D" selector1
# the replacement of selector2 is due: nothing happens without the store
clock_set $((G5 + 9 * DAY))
sleep 4
nodes_alive "with Redis down"
[ "$(nodes_log_count "dkim: $D: selector2 replaced by generation 5")" = 0 ] || fail "a node replaced a key with Redis down"
[ "$(node_txt 1 "selector2-$ENC._domainkey.$INITIAL" | txt_p)" = "$P2" ] &&
	[ "$(node_txt 2 "selector2-$ENC._domainkey.$INITIAL" | txt_p)" = "$P2" ] ||
	fail "the nodes' DNS no longer serve selector2's key with Redis down"
kmail_both rdown2 "$D" selector1
kverify "$T/pre-gate.eml" "$D" selector2
phase "6: Redis down: both nodes sign and verify, no transition"
redis_start
kwait 40 "signet_keystore_up 1 on both nodes" \
	'[ "$(kmetric 1 signet_keystore_up)" = 1 ] && [ "$(kmetric 2 signet_keystore_up)" = 1 ]'
kwait 30 "the reachable-again notice on both nodes" \
	'grep -q "dkim: key store reachable again" "$T/node1.log" && grep -q "dkim: key store reachable again" "$T/node2.log"'
kwait 40 "the due replacement after Redis is back" kshow_is "$D" \
	"(d['active'], d['phase'], sel(2)['generation']) == (1, 'stable', 5)" true
nodes_serve "selector2-$ENC._domainkey.$INITIAL" "$(kj "sel(2)['txt']" | txt_p)"
nodes_follow
kverify_fails "$T/pre-gate.eml"
kmail_both rup "$D" selector1
phase "6: Redis back: the nodes reconnected and made the due replacement"

# --- 7: no transition twice ---------------------------------------------------------------
kshow "$D"
hist_check "$D" >"$T/steps" || fail "history of $D"
[ "$(grep -E '^(confirm|switch|replace|rotate-now) ' "$T/steps" | tr '\n' ' ')" = "confirm 1 switch 3 replace 3 rotate-now 1 " ] ||
	{ cat "$T/steps" >&2; kj '"\n".join(d["history"])' >&2; fail "history of $D: wanted 1 confirm, 3 switches, 3 replacements, 1 rotate-now"; }
kshow "$INITIAL"
hist_check "$INITIAL" >"$T/isteps" || fail "history of $INITIAL"
# node logs: each switch / replacement line once
for re in "dkim: [^ ]+: switch to selector[12] \(generation [0-9]+\)" "dkim: [^ ]+: selector[12] replaced by generation [0-9]+"; do
	cat "$T/node1.log" "$T/node2.log" | grep -Eo -- "$re" | sort | uniq -d >"$T/dups"
	[ -s "$T/dups" ] && { cat "$T/dups" >&2; fail "a transition logged twice by the nodes"; }
done
[ "$(cat "$T/node1.log" "$T/node2.log" | grep -Ec "dkim: $D: switch to selector[12] \(generation [0-9]+\)")" = 3 ] ||
	{ grep -h "dkim: $D" "$T/node1.log" "$T/node2.log" >&2; fail "wanted 3 'switch to' log lines for $D"; }
[ "$(cat "$T/node1.log" "$T/node2.log" | grep -Ec "dkim: $D: selector[12] replaced by generation [0-9]+")" = 3 ] ||
	{ grep -h "dkim: $D" "$T/node1.log" "$T/node2.log" >&2; fail "wanted 3 'replaced by' log lines for $D"; }
# metrics: transitions carried out, summed over the nodes, match the histories
for step in confirm switch replace; do
	want=$(($(sed -n "s/^$step //p" "$T/steps") + $(sed -n "s/^$step //p" "$T/isteps")))
	got=$(($(kmetric 1 signet_dkim_transitions_total "step=\"$step\"") + $(kmetric 2 signet_dkim_transitions_total "step=\"$step\"")))
	[ "$got" = "$want" ] || fail "signet_dkim_transitions_total{step=\"$step\"} summed over the nodes is $got, the histories have $want"
done
kshow "$D"
note "transitions of $D by node1: $(kj '"\n".join(d["history"])' | grep -Ec '^[0-9]+ node1 (confirm|switch|replace) '), by node2: $(kj '"\n".join(d["history"])' | grep -Ec '^[0-9]+ node2 (confirm|switch|replace) ')"
note "history of $INITIAL: $(tr '\n' ' ' <"$T/isteps")"
note "history of $D: $(tr '\n' ' ' <"$T/steps")"
phase "7: every transition happened once (histories, logs, metrics agree)"

# metrics: promtool-clean, the issue's families, the active key age
for n in 1 2; do
	curl -fsS --max-time 5 "http://127.0.0.1:${NODE_ADMIN[$n]}/metrics" -o "$T/m.$n" || fail "node$n /metrics"
	run promtool check metrics <"$T/m.$n"
	[ "$RC" = 0 ] || { show; fail "promtool check metrics refuses node$n's /metrics"; }
	for fam in 'signet_dkim_domains gauge' 'signet_dkim_domains_unconfirmed gauge' \
		'signet_dkim_gate_holds_total counter' 'signet_dkim_switches_held gauge' \
		'signet_dkim_signatures_total counter' 'signet_dkim_transitions_total counter' \
		'signet_dkim_active_key_age_seconds_max gauge' 'signet_keystore_up gauge'; do
		grep -q "^# TYPE $fam\$" "$T/m.$n" || fail "node$n /metrics: no '# TYPE $fam'"
	done
	[ "$(metric signet_dkim_signatures_total 'slot="2"' "$T/m.$n")" -ge 1 ] || fail "node$n: no signature counted for slot 2"
	[ "$(metric signet_dkim_signatures_total 'mode="aligned"' "$T/m.$n")" -ge 1 ] || fail "node$n: no aligned signature counted"
done
kctl_ok dkim show --json
age=$("$PY" -c '
import json, sys
now = int(sys.argv[2])
ages = [now - [s for s in d["selectors"] if s["slot"] == d["active"]][0]["created"] for d in json.load(open(sys.argv[1]))]
print(max(ages))' "$T/out" "$NOW")
got=$(metric signet_dkim_active_key_age_seconds_max "" "$T/m.1")
[ "${got%.*}" = "$age" ] || fail "signet_dkim_active_key_age_seconds_max is $got, the oldest active key is ${age}s old"
phase "7: metrics promtool-clean on both nodes, active key age ${age}s"

# --- 8: nothing in Redis holds a private key in the clear ----------------------------------
rcli --scan >"$T/scan" || fail "redis-cli --scan"
[ -s "$T/scan" ] || fail "redis-cli --scan: the store is empty"
"$PY" "$KPY/rdump.py" "127.0.0.1:$REDIS_PORT" 0 audit >"$T/rdump" 2>&1 ||
	{ grep -E '^audit' "$T/rdump" >&2; fail "a private key in the clear in Redis"; }
[ "$(cut -f1 "$T/rdump" | grep -v '^audit' | sort -u | wc -l)" -ge "$(sort -u "$T/scan" | wc -l)" ] ||
	fail "rdump saw fewer keys than redis-cli --scan"
npriv=$(awk -F'\t' '$3 ~ /^s[12]\.priv$/' "$T/rdump" | wc -l)
[ "$npriv" -ge 4 ] || { head -c 3000 "$T/rdump" >&2; fail "$npriv sN.priv fields in Redis, wanted both slots of both domains"; }
grep -q 'PRIVATE KEY' "$T/rdump" && fail "PEM in Redis"
phase "8: $(grep '^audit' "$T/rdump"); $npriv encrypted private keys (gcm1:)"

nodes_alive
node_stop 1
node_stop 2
phase "done"
