#!/bin/bash
# managed-lifecycle: what issue 5 asks of tenants, signing rules and the
# operator's commands, end to end (two nodes, Redis, nsd + unbound, dkimpy
# through DNS, as 81-managed-rotation):
#   - tenants: mail from a tenant's AUTH user whose From domain is
#     provisioned for another tenant is signed with its own initial
#     domain's key (sign-initial); unprovisioned From domains likewise; a
#     second tenant's initial domain is delegated and verifies
#   - dkim disable returns to default signing, enable to aligned signing
#   - dkim_unprovisioned = reject (550 5.7.1 with the reason) and unsigned,
#     changed by SIGHUP
#   - dkim rotate --now is refused (exit 1, nothing changed) while DNS lacks
#     the idle key's CNAME and while the idle key is inside its publish lead; dkim rotate --key-size 2048 holds the
#     switch until the lead has passed, then the replacement key has 2048
#     bits
#   - a restarted node signs with the current key
#   - domain remove: the domain's mail falls back to sign-initial
. "$(dirname "$0")/lib_keys.sh"
keys_setup
NW=northwind.signet.example
INITIALS="$INITIAL $NW"
D=$CUST
ENC=${CUST//./-}
IENC=${INITIAL//./-}
NWENC=${NW//./-}
smtp_authfile
AUTH=(--tls --auth PLAIN --auth-user "$AUTH_USER" --auth-password "$AUTH_PASS")

sink_start relay 127.0.0.1 "$SINK_PORT"
redis_start
knsd_start
ub_start
node_conf 1 "smtpd_auth_file = $T/passwd"
node_conf 2 "smtpd_auth_file = $T/passwd"
node_start 1
node_start 2
phase "harness up"

kwait 30 "tenant default in the store" 'kctl tenant list --json; [ "$RC" = 0 ] && grep -q "\"$INITIAL\"" "$T/out"'
kctl_ok domain add "$D"
kctl_ok tenant add northwind "$NW" --user "$AUTH_USER"
kctl_ok tenant list --json
cp "$T/out" "$T/tenants.json"
"$PY" - "$T/tenants.json" "$NW" "$AUTH_USER" <<'EOF' || { cat "$T/tenants.json" >&2; fail "tenant list --json"; }
import json, sys
t = {x["name"]: x for x in json.load(open(sys.argv[1]))}
assert set(t) == {"default", "northwind"}, t
assert t["northwind"]["initial_domain"] == sys.argv[2]
assert sys.argv[3] in json.dumps(t["northwind"]), "the AUTH user is not listed"
EOF
kshow "$NW"
[ "$(kj 'd["tenant"]')" = northwind ] || fail "the tenant's initial domain is not provisioned in that tenant"
clock_advance $((8 * DAY))
for dom in "$INITIAL" "$NW" "$D"; do
	kwait 40 "$dom confirmed" kshow_is "$dom" "sel(1)['confirmed'] != 0" true
done
cust_zone "$(cname 1)" "$(cname 2)"
kctl_ok dkim enable "$D"
kctl_ok domain list
grep -Eq "^${D}[[:space:]]+default[[:space:]].*selector1[[:space:]]+stable" "$T/out" ||
	{ show; fail "domain list: no line '$D default ... selector1 stable'"; }
nodes_follow
# enabling moves no phase count: wait until both nodes sign aligned (they
# take in the store's changes in order, so the tenant is in too)
nodes_sign_as "$D" selector1
phase "two tenants, $D provisioned and enabled in tenant default"

# --- tenants -------------------------------------------------------------------------
kmail 1 t-plain
kverify "$MAIL" "$D" selector1
kmail 2 t-auth "a@$D" "${AUTH[@]}"
kverify "$MAIL" "$NW" "selector1-$NWENC"
kmail 1 t-other a@other.example
kverify "$MAIL" "$INITIAL" "selector1-$IENC"
kmail 2 t-other-auth a@other.example "${AUTH[@]}"
kverify "$MAIL" "$NW" "selector1-$NWENC"
phase "tenants: own key for the tenant's domain, sign-initial for another tenant's or an unprovisioned domain"

# --- disable / enable -------------------------------------------------------------------
kctl_ok dkim disable "$D"
grep_out "^$D: DKIM disabled \(default signing: d=$INITIAL, s=selector1-$ENC\)\$"
kshow "$D"
[ "$(kj 'd["enabled"] in (0, False)')" = true ] || fail "disable: still enabled"
grep -Eq '^[0-9]+ [^ ]+ disable$' <(kj '"\n".join(d["history"])') || fail "no disable event in the history"
nodes_sign_as "$INITIAL" "selector1-$ENC"
kmail_both dis "$INITIAL" "selector1-$ENC"
kctl_ok dkim enable "$D"
nodes_sign_as "$D" selector1
kmail_both reen "$D" selector1
phase "disable: default signing again; enable: aligned again"

# --- dkim_unprovisioned by SIGHUP ------------------------------------------------------------
node_conf 2 "smtpd_auth_file = $T/passwd" "dkim_unprovisioned = reject"
node_reload 2
kswaks 2 u-rej a@other.example
[ "$RC" != 0 ] && grep -q '550 5\.7\.1 .*DKIM: other\.example is not provisioned for tenant default' "$T/out" ||
	{ show; fail "dkim_unprovisioned = reject: no 550 5.7.1 naming the domain and tenant"; }
kmail 2 u-rej-ok
kverify "$MAIL" "$D" selector1
node_conf 2 "smtpd_auth_file = $T/passwd" "dkim_unprovisioned = unsigned"
node_reload 2
kmail 2 u-uns a@other.example
grep -qi '^DKIM-Signature:' "$MAIL" && { head -c 1500 "$MAIL" >&2; fail "dkim_unprovisioned = unsigned: the message is signed"; }
node_conf 2 "smtpd_auth_file = $T/passwd"
node_reload 2
kmail 2 u-back a@other.example
kverify "$MAIL" "$INITIAL" "selector1-$IENC"
phase "dkim_unprovisioned: reject (550 5.7.1), unsigned, sign-initial, switched by SIGHUP"

# --- rotate --now: refused while DNS lacks the idle key or inside its lead; --key-size ----------
cust_zone "$(cname 1)"
kctl dkim rotate "$D" --now
[ "$RC" = 1 ] || { show; fail "dkim rotate --now with no selector2 CNAME: exit $RC, wanted 1"; }
grep -q "selector2" "$T/err" || { show; fail "rotate --now refused without naming selector2"; }
note "rotate --now refused: $(head -n 1 "$T/err")"
kshow "$D"
[ "$(kj '(d["active"], sel(1)["generation"], sel(2)["generation"]) == (1, 1, 1)')" = true ] ||
	{ cat "$T/show.json" >&2; fail "a refused rotate --now changed the domain"; }
cust_zone "$(cname 1)" "$(cname 2)"
kctl dkim rotate "$D" --now
[ "$RC" = 0 ] || { show; fail "dkim rotate --now (idle key published 8 days ago) exited $RC"; }
kshow "$D"
[ "$(kj '(d["active"], sel(1)["generation"], sel(2)["generation"]) == (2, 2, 1)')" = true ] ||
	{ cat "$T/show.json" >&2; fail "rotate --now: wanted selector2 active and selector1 at generation 2"; }
V=$(kj 'd["version"]')
P1=$(kj "sel(1)['txt']" | txt_p)
kctl dkim rotate "$D" --now
[ "$RC" = 1 ] || { show; fail "dkim rotate --now with the idle key inside its publish lead: exit $RC, wanted 1"; }
[ -s "$T/err" ] || fail "rotate --now refused without a reason"
note "rotate --now refused: $(head -n 1 "$T/err")"
kshow "$D"
[ "$(kj '(d["active"], sel(1)["generation"], d["version"])')" = "[2, 2, $V]" ] ||
	{ cat "$T/show.json" >&2; fail "a refused rotate --now changed the domain"; }
# rotate --now moves no phase count: wait until both nodes serve selector1's
# new key (and so have the switch too)
nodes_serve "selector1-$ENC._domainkey.$INITIAL" "$P1"
nodes_follow
kmail_both now "$D" selector2
kctl_ok dkim rotate "$D" --key-size 2048
kshow "$D"
[ "$(kj 'd["rotate_requested"] in (1, True)')" = true ] || fail "rotate: rotate_requested not set"
sleep 3
kshow "$D"
[ "$(kj 'd["active"]')" = 2 ] || fail "rotate: switched to a key inside its publish lead"
clock_advance $((8 * DAY))
kwait 40 "the requested switch once the lead has passed" kshow_is "$D" "(d['active'], d['phase']) == (1, 'retiring')" true
clock_advance $((8 * DAY))
kwait 40 "the replacement with a 2048-bit key" kshow_is "$D" \
	"(d['phase'], sel(2)['generation'], sel(2)['bits'], sel(1)['bits']) == ('stable', 3, 2048, 1024)" true
P2=$(kj "sel(2)['txt']" | txt_p)
# one node made the replacement; unbound may ask either
nodes_serve "selector2-$ENC._domainkey.$INITIAL" "$P2"
ub_flush
[ "$(ub_txt "selector2._domainkey.$D" | txt_p)" = "$P2" ] ||
	fail "the 2048-bit key is not what DNS shows at selector2._domainkey.$D"
nodes_follow
kmail_both ks "$D" selector1
phase "rotate --now refused inside the lead; rotate --key-size 2048 waited for the lead and made a 2048-bit key"

# --- a restarted node --------------------------------------------------------------------------
node_stop 2
node_start 2
kwait 30 "node2's key store up" '[ "$(kmetric 2 signet_keystore_up)" = 1 ]'
nodes_follow
kmail 2 restart
kverify "$MAIL" "$D" selector1
phase "a restarted node signs with the current key"

# --- domain remove ---------------------------------------------------------------------------------
kctl_ok domain remove "$D"
kctl_ok domain list
grep -q "^${D}[[:space:]]" "$T/out" && { show; fail "domain list still shows $D"; }
read -r idd ids <<<"$(active_identity "$INITIAL")"
[ -n "$ids" ] || fail "no active identity for $INITIAL"
nodes_sign_as "$idd" "$ids"
kmail_both rm "$idd" "$ids"
phase "domain remove: $D's mail goes out with sign-initial ($idd $ids)"
nodes_alive
node_stop 1
node_stop 2
phase "done"
