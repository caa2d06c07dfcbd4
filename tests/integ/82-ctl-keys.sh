#!/bin/bash
# ctl-keys: signetctl's managed key commands (issue 5) on a file key store,
# with a real nsd on loopback serving the customer zone fabrikam.example
# (and, later, the operator zones written by `dns zone`), the clock set by
# SIGNET_CLOCK_FILE.  tenant add/list; domain add/list/remove; dkim show
# (text and JSON); dkim enable refused with exactly the two records while
# the CNAMEs are missing, point elsewhere or DNS is down, nothing changed
# in the store, then accepted; disable; rotate (request) and rotate --now,
# refused by the gate until the publish lead has passed (DNS check off),
# and with the DNS check on until nsd serves the `dns zone` output; `dns
# records` following the domain's tenant; usage errors; no private key in
# any output.
. "$(dirname "$0")/lib_dns.sh"
need /usr/bin/dig "$PY"

STORE=$T/keys
CLOCK=$T/clock
export SIGNET_CLOCK_FILE=$CLOCK
export SIGNET_NODE=ctl-test
NOW=1700000000
echo $NOW >"$CLOCK"
ALL=$T/all-output            # every stdout and stderr, for the key check
: >"$ALL"

# ctl ARGS... - signetctl on relay.conf (DNS check on); output kept.
ctl() {
	run "$CTL" -c "$T/relay.conf" "$@"
	cat "$T/out" "$T/err" >>"$ALL"
}
# ctl_nc ARGS... - the same with dkim_dns_check = no.
ctl_nc() {
	run "$CTL" -c "$T/nocheck.conf" "$@"
	cat "$T/out" "$T/err" >>"$ALL"
}
# want_rc N - the last ctl run exited N.
want_rc() {
	[ "$RC" = "$1" ] || { show; fail "expected exit $1, got $RC"; }
}
# json_check PYTHON - run PYTHON with j = the JSON of the last stdout;
# it fails by raising (assert).
json_check() {
	"$PY" -c "import json,sys
j = json.load(open(sys.argv[1]))
$1" "$T/out" >"$T/py.err" 2>&1 || {
		cat "$T/py.err" >&2
		show
		fail "JSON check failed: $1"
	}
}
# set_clock T - move the clock.
set_clock() {
	NOW=$1
	echo "$NOW" >"$CLOCK"
}

# port_free PORT - nothing has 127.0.0.1:PORT bound (UDP) or listening (TCP).
port_free() {
	[ -z "$(ss -Hlnu "sport = :$1" 2>/dev/null)$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# nsd_up NAME:FILE... - (re)start nsd on DNS_PORT serving these zones; wait
# (30 s) until it answers for each.
nsd_up() {
	local z name file names i=0
	dns_stop
	# the old nsd's processes may hold the port a little longer
	while ! port_free "$DNS_PORT"; do
		[ $i -lt 300 ] || { ss -Hlnup "sport = :$DNS_PORT" >&2; fail "port $DNS_PORT still in use 30 s after nsd stopped"; }
		sleep 0.1
		i=$((i + 1))
	done
	i=0
	mkdir -p "$DNS_RUN"
	names=""
	for z in "$@"; do
		name=${z%%:*}
		file=${z#*:}
		cp "$file" "$DNS_RUN/$name.zone" || fail "copy $file"
		/usr/sbin/nsd-checkzone "$name" "$DNS_RUN/$name.zone" >"$T/nsd.err" 2>&1 ||
			{ cat "$T/nsd.err" "$file" >&2; fail "nsd-checkzone rejects zone $name"; }
		names="$names $name"
	done
	NSD_ADDRS="127.0.0.1@$DNS_PORT"
	# shellcheck disable=SC2086 # names: one word per zone
	nsd_conf "$DNS_RUN" $names
	: >"$DNS_RUN/nsd.log"
	"$NSD" -d -c "$DNS_RUN/nsd.conf" >>"$DNS_RUN/nsd.log" 2>&1 &
	DNS_PID=$!
	while ! grep -q 'nsd started' "$DNS_RUN/nsd.log"; do
		kill -0 "$DNS_PID" 2>/dev/null || {
			cat "$DNS_RUN/nsd.log" >&2
			DNS_PID=""
			fail "nsd exited at start"
		}
		[ $i -lt 300 ] || { cat "$DNS_RUN/nsd.log" >&2; fail "nsd did not start in 30 s"; }
		sleep 0.1
		i=$((i + 1))
	done
	for z in "$@"; do
		grep -q "zone ${z%%:*} read with success" "$DNS_RUN/nsd.log" ||
			{ cat "$DNS_RUN/nsd.log" >&2; fail "nsd did not load zone ${z%%:*}"; }
		i=$((SECONDS + 30))
		until dig +norec +time=1 +tries=1 -p "$DNS_PORT" @127.0.0.1 SOA "${z%%:*}" 2>/dev/null |
			grep -q 'status: NOERROR'; do
			kill -0 "$DNS_PID" 2>/dev/null || { cat "$DNS_RUN/nsd.log" >&2; DNS_PID=""; fail "nsd exited"; }
			[ $SECONDS -lt $i ] || { cat "$DNS_RUN/nsd.log" >&2; fail "nsd does not answer for ${z%%:*} after 30 s"; }
			sleep 0.1
		done
	done
}

# fab_zone FILE [RECORDS] - the customer zone with extra lines.
fab_zone() {
	{
		printf '%s\n' '$ORIGIN fabrikam.example.' '$TTL 300' \
			'@ IN SOA ns.fabrikam.example. hostmaster.fabrikam.example. 1 3600 600 86400 300' \
			'@ IN NS ns.fabrikam.example.' 'ns IN A 127.0.0.1' 'www IN A 192.0.2.1'
		[ $# -ge 2 ] && printf '%s\n' "$2"
	} >"$1"
}

DNS_PORT=$(dns_free_port)
[ -n "$DNS_PORT" ] || fail "cannot pick a port for nsd"
for f in relay nocheck; do
	cat >"$T/$f.conf" <<CONF
myhostname = relay.signet.example
initial_domain = contoso.signet.example
keystore = $STORE
dkim_key_size = 1024
dns_resolvers = 127.0.0.1:$DNS_PORT
dns_ttl = 600
dkim_dns_check = $([ $f = relay ] && echo yes || echo no)
CONF
done

fab_zone "$T/fab0.zone"
nsd_up "fabrikam.example:$T/fab0.zone"
note "nsd (pid $DNS_PID) serves fabrikam.example on 127.0.0.1:$DNS_PORT"

REC1="selector1._domainkey.fabrikam.example. 3600 IN CNAME selector1-fabrikam-example._domainkey.contoso.signet.example."
REC2="selector2._domainkey.fabrikam.example. 3600 IN CNAME selector2-fabrikam-example._domainkey.contoso.signet.example."
printf '%s\n%s\n' "$REC1" "$REC2" >"$T/records"

# --- an empty store ---------------------------------------------------------------
ctl tenant list
want_rc 0
grep_out '^no tenants$'
ctl domain list --json
want_rc 0
json_check 'assert j == []'

# --- domain add: creates tenant "default" (initial_domain) and the domain ------------
ctl domain add Fabrikam.Example.
want_rc 0
cmp -s "$T/out" "$T/records" || { diff "$T/records" "$T/out" >&2; fail "domain add: not the two CNAME records"; }
[ -f "$STORE/domains/fabrikam.example" ] || fail "no domain file in the store"
ctl domain add fabrikam.example
want_rc 1
stderr_says 'already provisioned for tenant default'
ctl domain add other.example --key-size 512
want_rc 2
stderr_says 'key size must be 1024 to 4096'
ctl domain add other.example --key-size 5000
want_rc 2
ctl domain add other.example --key-size abc
want_rc 2
ctl domain add 'bad..example'
want_rc 2
ctl domain add other.example --tenant nosuch
want_rc 1
stderr_says 'no tenant "nosuch"'

# --- tenant add / list --------------------------------------------------------------
ctl tenant add northwind northwind.signet.example --user alice --user bob \
	--network 192.0.2.0/24 --network 2001:db8::/32 --key-size 2048
want_rc 0
grep_out '^tenant northwind added: initial domain northwind\.signet\.example$'
ctl tenant add northwind other.signet.example
want_rc 1
stderr_says 'already exists'
ctl tenant add other contoso.signet.example
want_rc 1
stderr_says 'already the initial domain of tenant default'
ctl tenant add 'bad name' x.signet.example
want_rc 2
ctl tenant add x x.signet.example --network 300.1.1.1
want_rc 2
ctl tenant add x x.signet.example --key-size 100
want_rc 2
ctl tenant add x
want_rc 2
ctl tenant list
want_rc 0
grep_out '^NAME +INITIAL DOMAIN +DOMAINS +USERS +NETWORKS$'
grep_out '^default +contoso\.signet\.example +2 +- +-$'
grep_out '^northwind +northwind\.signet\.example +1 +alice bob +192\.0\.2\.0/24 2001:db8::/32$'
ctl tenant list --json
want_rc 0
json_check '
t = {x["name"]: x for x in j}
assert sorted(t) == ["default", "northwind"], t
assert t["northwind"] == {"name": "northwind", "initial_domain": "northwind.signet.example", "domains": 1, "users": ["alice", "bob"], "networks": ["192.0.2.0/24", "2001:db8::/32"]}, t
assert t["default"]["domains"] == 2 and t["default"]["users"] == []'

ctl domain add tailspin.example --tenant northwind
want_rc 0
grep_out '^selector1\._domainkey\.tailspin\.example\. 3600 IN CNAME selector1-tailspin-example\._domainkey\.northwind\.signet\.example\.$'
ctl tenant list --json
json_check 'assert {x["name"]: x["domains"] for x in j} == {"default": 2, "northwind": 2}'

# --- domain list ----------------------------------------------------------------------
ctl domain list
want_rc 0
grep_out '^DOMAIN +TENANT +ENABLED +SELECTOR +PHASE$'
grep_out '^contoso\.signet\.example +default +no +selector1 +stable$'
grep_out '^fabrikam\.example +default +no +selector1 +stable$'
grep_out '^tailspin\.example +northwind +no +selector1 +stable$'
[ "$(wc -l <"$T/out")" = 5 ] || { show; fail "domain list: not 4 domains"; }
ctl domain list --tenant northwind --json
want_rc 0
json_check '
assert [x["domain"] for x in j] == ["northwind.signet.example", "tailspin.example"], j
assert j[1] == {"domain": "tailspin.example", "tenant": "northwind", "enabled": False, "active": 1, "selector": "selector1", "phase": "stable"}, j[1]'
ctl domain list --tenant nosuch
want_rc 1

# --- dkim show ------------------------------------------------------------------------
ctl dkim show fabrikam.example
want_rc 0
grep_out '^fabrikam\.example$'
grep_out '^  tenant: +default \(initial domain contoso\.signet\.example\)$'
grep_out '^  enabled: +no$'
grep_out '^  signing as: +not yet \(will be d=contoso\.signet\.example s=selector1-fabrikam-example\)'
grep_out '^  phase: +stable since 2023-11-14T22:13:20Z$'
grep_out '^  selector1 \(active\)$'
grep_out '^  selector2 \(idle\)$'
grep_out '^    CNAME host: +selector2\._domainkey\.fabrikam\.example$'
grep_out '^    target: +selector2-fabrikam-example\._domainkey\.contoso\.signet\.example$'
grep_out '^    key: +rsa 1024 bits, generation 1$'
grep_out '^    TXT: +v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+; n=1024,1700000000,1$'
grep_out '^    2023-11-14T22:13:20Z ctl-test provision$'
ctl dkim show fabrikam.example --json
want_rc 0
json_check '
assert j["domain"] == "fabrikam.example" and j["tenant"] == "default"
assert j["initial_domain"] == "contoso.signet.example"
assert j["enabled"] is False and j["active"] == 1 and j["phase"] == "stable"
assert j["phase_since"] == 1700000000 and j["rotate_requested"] is False
assert j["next_transition"] == 1700000000 + 7 * 86400, j["next_transition"]
assert j["dns_checked"] == 0
s = j["selectors"]
assert [x["slot"] for x in s] == [1, 2] and [x["selector"] for x in s] == ["selector1", "selector2"]
assert s[0]["cname_host"] == "selector1._domainkey.fabrikam.example"
assert s[1]["cname_target"] == "selector2-fabrikam-example._domainkey.contoso.signet.example"
for x in s:
    assert x["alg"] == "rsa" and x["bits"] == 1024 and x["generation"] == 1
    assert x["created"] == 1700000000 and x["published"] == 1700000000
    assert x["seen"] == 0 and x["confirmed"] == 0
    assert x["txt"].startswith("v=DKIM1; k=rsa; p=")
assert s[0]["active"] is True and s[1]["active"] is False
assert s[0]["txt"] != s[1]["txt"]
assert len(j["history"]) == 1 and j["history"][0].endswith(" ctl-test provision"), j["history"]'
ctl dkim show --json
want_rc 0
json_check '
assert [x["domain"] for x in j] == ["contoso.signet.example", "fabrikam.example", "northwind.signet.example", "tailspin.example"]
assert all("history" not in x for x in j)
assert [x["selectors"][0]["bits"] for x in j] == [1024, 1024, 2048, 1024]'
ctl dkim show nosuch.example
want_rc 1
stderr_says 'nosuch\.example is not a managed domain'
ctl dkim show --bogus
want_rc 2

# --- dns records follows the domain's tenant ------------------------------------------
ctl dns records tailspin.example
want_rc 0
grep_out '^selector2\._domainkey\.tailspin\.example\. 3600 IN CNAME selector2-tailspin-example\._domainkey\.northwind\.signet\.example\.$'
ctl dns records fabrikam.example
want_rc 0
cmp -s "$T/out" "$T/records" || { diff "$T/records" "$T/out" >&2; fail "dns records fabrikam.example"; }
ctl dns records unknown.example
want_rc 0
grep_out '^selector1\._domainkey\.unknown\.example\. 3600 IN CNAME selector1-unknown-example\._domainkey\.contoso\.signet\.example\.$'

# --- dkim enable: refused while the CNAMEs are missing ----------------------------------
# enable_refused WHY - exit 1, exactly the two records on stdout, the store
# untouched.
enable_refused() {
	cp "$STORE/domains/fabrikam.example" "$T/before"
	ctl dkim show fabrikam.example --json
	cp "$T/out" "$T/show-before"
	ctl dkim enable fabrikam.example
	want_rc 1
	cmp -s "$T/out" "$T/records" || { diff "$T/records" "$T/out" >&2; show; fail "enable ($1): stdout is not the two records"; }
	cp "$T/err" "$T/enable-err"
	cmp -s "$STORE/domains/fabrikam.example" "$T/before" || fail "enable ($1) changed the store"
	ctl dkim show fabrikam.example --json
	cmp -s "$T/out" "$T/show-before" || fail "enable ($1): dkim show differs"
	cp "$T/enable-err" "$T/err"
}
enable_refused "no CNAMEs"
stderr_says "selector1\._domainkey\.fabrikam\.example: no CNAME record: NXDOMAIN \(127\.0\.0\.1:$DNS_PORT\)"
stderr_says "selector2\._domainkey\.fabrikam\.example: no CNAME record: NXDOMAIN"
stderr_says 'nothing changed'

# selector1 right (in other case, and the chain check), selector2 elsewhere
fab_zone "$T/fab1.zone" "selector1._domainkey IN CNAME SELECTOR1-Fabrikam-Example._domainkey.Contoso.Signet.Example.
selector2._domainkey IN CNAME selector2-fabrikam-example._domainkey.elsewhere.example."
nsd_up "fabrikam.example:$T/fab1.zone"
enable_refused "selector2 elsewhere"
stderr_says 'selector2\._domainkey\.fabrikam\.example: CNAME points to selector2-fabrikam-example\._domainkey\.elsewhere\.example\., not to selector2-fabrikam-example\._domainkey\.contoso\.signet\.example\.'
grep -q 'selector1\._domainkey' "$T/err" && { show; fail "enable blames selector1, which is right"; }

# a TXT record where the CNAME should be
fab_zone "$T/fab2.zone" "selector1._domainkey IN CNAME selector1-fabrikam-example._domainkey.contoso.signet.example.
selector2._domainkey IN TXT \"v=DKIM1; p=abc\""
nsd_up "fabrikam.example:$T/fab2.zone"
enable_refused "selector2 has TXT"
stderr_says "selector2\\._domainkey\\.fabrikam\\.example: no CNAME record \\(127\\.0\\.0\\.1:$DNS_PORT\\)"

# DNS down: a temporary failure, named as such
dns_stop
enable_refused "DNS down"
stderr_says 'selector1\._domainkey\.fabrikam\.example: DNS lookup failed: (connection refused|timeout)'

# DNS frozen: timeouts, bounded
nsd_up "fabrikam.example:$T/fab0.zone"
dns_pause
t0=$(date +%s)
enable_refused "DNS frozen"
dns_resume
[ $(($(date +%s) - t0)) -le 20 ] || fail "enable took more than 20 s with DNS frozen"
stderr_says 'selector2\._domainkey\.fabrikam\.example: DNS lookup failed: timeout after [0-9]+ ms'

# --- accepted once both CNAMEs are published --------------------------------------------
# selector1 through a chain (CNAME to a CNAME): accepted because the TXT
# lookup's chain ends at the record name
fab_zone "$T/fab3.zone" "selector1._domainkey IN CNAME hop.fabrikam.example.
hop IN CNAME selector1-fabrikam-example._domainkey.contoso.signet.example.
selector2._domainkey IN CNAME selector2-fabrikam-example._domainkey.contoso.signet.example."
nsd_up "fabrikam.example:$T/fab3.zone"
ctl dkim enable fabrikam.example
want_rc 0
grep_out '^fabrikam\.example: DKIM enabled \(d=fabrikam\.example, s=selector1\)$'
ctl dkim show fabrikam.example --json
json_check '
assert j["enabled"] is True and j["active"] == 1
assert j["history"][-1].endswith(" ctl-test enable"), j["history"]'
ctl dkim enable fabrikam.example
want_rc 0
grep_out 'already enabled'
ctl dkim enable nosuch.example
want_rc 1
stderr_says 'not a managed domain'
ctl dkim enable
want_rc 2

# --- disable --------------------------------------------------------------------------
ctl dkim disable fabrikam.example
want_rc 0
grep_out '^fabrikam\.example: DKIM disabled \(default signing: d=contoso\.signet\.example, s=selector1-fabrikam-example\)$'
ctl dkim show fabrikam.example --json
json_check '
assert j["enabled"] is False
assert j["history"][-1].endswith(" ctl-test disable"), j["history"]'

# --- rotate (a request) -----------------------------------------------------------------
ctl dkim rotate fabrikam.example --key-size 1536
want_rc 0
grep_out '^fabrikam\.example: rotation requested: selector1 -> selector2 \(generation 1\)$'
ctl dkim show fabrikam.example --json
json_check '
assert j["rotate_requested"] is True and j["next_bits"] == 1536 and j["active"] == 1
assert j["history"][-1].endswith(" ctl-test rotate-requested"), j["history"]'
ctl dkim rotate fabrikam.example --key-size 99
want_rc 2
ctl dkim rotate
want_rc 2

# --- rotate --now: the gate holds until the publish lead has passed (DNS check off) --------
cp "$STORE/domains/fabrikam.example" "$T/before"
ctl_nc dkim rotate fabrikam.example --now
want_rc 1
stderr_says 'refused: selector2 can.t sign yet: .*dkim_publish_lead'
cmp -s "$STORE/domains/fabrikam.example" "$T/before" || fail "refused rotate --now changed the store"
set_clock $((NOW + 8 * 86400))
ctl_nc dkim rotate fabrikam.example --now
want_rc 0
grep_out '^fabrikam\.example: rotated now: now signing with selector2 \(generation 1\); selector1 has a new key \(generation 2\)$'
ctl dkim show fabrikam.example --json
json_check "
assert j['active'] == 2 and j['phase'] == 'stable' and j['rotate_requested'] is False
s = j['selectors']
assert s[0]['generation'] == 2 and s[0]['bits'] == 1536 and s[0]['created'] == $NOW, s[0]
assert s[0]['active'] is False and s[1]['active'] is True
assert s[1]['generation'] == 1 and s[1]['confirmed'] == $NOW
assert j['last_switch'] == $NOW
assert j['history'][-1].endswith(' ctl-test rotate-now selector1->selector2 gen 1'), j['history']"
SLOT1_TXT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["selectors"][0]["txt"])' "$T/out")

# --- rotate --now with the DNS check: refused until DNS shows the idle key ---------------
set_clock $((NOW + 8 * 86400))
cp "$STORE/domains/fabrikam.example" "$T/before"
ctl dkim rotate fabrikam.example --now
want_rc 1
stderr_says 'refused: selector1 can.t sign yet: .*selector1-fabrikam-example\._domainkey\.contoso\.signet\.example'
cmp -s "$STORE/domains/fabrikam.example" "$T/before" || fail "refused rotate --now changed the store"

# --- dns zone: what nsd serves for the operator -------------------------------------------
ctl dns zone --tenant default
want_rc 0
grep_out '^\$ORIGIN _domainkey\.contoso\.signet\.example\.$'
grep_out '^selector1-fabrikam-example 600 IN TXT "v=DKIM1; k=rsa; p=[^"]*" "[^"]*"$'
grep_out '^selector2-contoso-signet-example 600 IN TXT "v=DKIM1; k=rsa; p=[^"]*"( "[^"]*")*$'
[ "$(grep -c ' IN TXT ' "$T/out")" = 4 ] || { show; fail "dns zone --tenant default: not 4 TXT records"; }
cp "$T/out" "$T/contoso.txt"
ctl dns zone --tenant northwind
want_rc 0
cp "$T/out" "$T/northwind.txt"
grep -q contoso "$T/northwind.txt" && fail "dns zone --tenant northwind has contoso's records"
ctl dns zone
want_rc 0
[ "$(grep -c ' IN TXT ' "$T/out")" = 8 ] || { show; fail "dns zone: not 8 TXT records"; }
[ "$(grep -c '^\$ORIGIN ' "$T/out")" = 2 ] || { show; fail "dns zone: not 2 origins"; }
ctl dns zone --tenant nosuch
want_rc 1
# opzone NAME FILE OUT - a zone file for _domainkey.NAME: SOA, NS, then FILE
opzone() {
	{
		printf '$ORIGIN _domainkey.%s.\n$TTL 600\n' "$1"
		printf '@ IN SOA ns.signet.example. hostmaster.signet.example. 1 3600 600 86400 300\n'
		printf '@ IN NS ns.signet.example.\n'
		cat "$2"
	} >"$3"
}
opzone contoso.signet.example "$T/contoso.txt" "$T/contoso.zone"
opzone northwind.signet.example "$T/northwind.txt" "$T/northwind.zone"
nsd_up "fabrikam.example:$T/fab3.zone" \
	"_domainkey.contoso.signet.example:$T/contoso.zone" \
	"_domainkey.northwind.signet.example:$T/northwind.zone"
# dig_txt NAME - the TXT strings at NAME joined
dig_txt() {
	dig +short +norec -p "$DNS_PORT" @127.0.0.1 TXT "$1" |
		"$PY" -c 'import sys, shlex; print("".join(shlex.split(sys.stdin.read())))'
}
got=$(dig_txt selector1-fabrikam-example._domainkey.contoso.signet.example)
[ "$got" = "$SLOT1_TXT" ] || fail "nsd serves '$got' for selector1-fabrikam-example, dkim show says '$SLOT1_TXT'"
ctl dkim show northwind.signet.example --json
NW_TXT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["selectors"][1]["txt"])' "$T/out")
got=$(dig_txt selector2-northwind-signet-example._domainkey.northwind.signet.example)
[ "$got" = "$NW_TXT" ] || fail "nsd serves '$got' for northwind's 2048-bit selector2 (split strings), dkim show says '$NW_TXT'"
[ ${#NW_TXT} -gt 255 ] || fail "northwind's TXT is not longer than one string"

# now the DNS check finds selector1's key at its record name: accepted
ctl dkim rotate fabrikam.example --now
want_rc 0
grep_out '^fabrikam\.example: rotated now: now signing with selector1 \(generation 2\); selector2 has a new key \(generation 3\)$'
ctl dkim show fabrikam.example --json
json_check "
assert j['active'] == 1 and j['dns_result'] == 1 and j['dns_checked'] == $NOW
s = j['selectors']
assert s[0]['seen'] == $NOW and s[0]['seen_via'] == 0 and s[0]['generation'] == 2
assert s[1]['generation'] == 3 and s[1]['bits'] == 1024
assert j['history'][-1].endswith(' ctl-test rotate-now selector2->selector1 gen 2'), j['history']"

# --- domain remove ------------------------------------------------------------------------
ctl domain remove tailspin.example
want_rc 0
grep_out '^tailspin\.example: removed'
ctl domain list --json
json_check 'assert "tailspin.example" not in [x["domain"] for x in j] and len(j) == 3'
ctl domain remove tailspin.example
want_rc 1
stderr_says 'tailspin\.example is not a managed domain'
ctl domain remove contoso.signet.example
want_rc 1
stderr_says 'initial domain of tenant default'
ctl domain remove
want_rc 2
ctl bogus command
want_rc 2

# --- no private key in any output -------------------------------------------------------------
grep -q 'PRIVATE' "$ALL" && fail "an output shows a private key"
n=0
for f in "$STORE"/domains/*; do
	while read -r field value; do
		case $field in
		s[12].priv) ;;
		*) continue ;;
		esac
		n=$((n + 1))
		# the DER's opening bytes are alike; a slice from the middle is not
		grep -qF -- "${value:100:48}" "$ALL" && fail "$f: $field appears in signetctl output"
	done <"$f"
done
[ $n -ge 6 ] || fail "found only $n private keys in the store to check"
exit 0
