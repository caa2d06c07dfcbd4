#!/bin/bash
# managed-dns: the built-in authoritative DNS server (dns_listen, issue 5)
# in a real DNS tree.  Two nodes share a file key store (the embedded
# default) and serve _domainkey.contoso.signet.example, delegated to them
# from signet.example on nsd (NS + glue), and unbound resolves through the
# delegation.  Asked directly, each node answers with AA: SOA and NS at the
# apex, the TXT records of every managed domain (equal to what `dkim show`
# and `dns zone` print, strings of at most 255 octets), NXDOMAIN and NODATA
# with the SOA (negative TTL) in the authority section, REFUSED outside its
# zones, names in any case; a 4096-bit key's record is truncated (TC) over
# UDP without EDNS and whole over TCP (two pipelined queries on one
# connection answered in order) and with EDNS 4096.  Through unbound, dkimpy
# verifies mail signed with the 4096-bit key.  `dns zone` is a zone file
# nsd-checkzone accepts, record for record what the nodes serve; a removed
# domain's records disappear from both nodes.
. "$(dirname "$0")/lib_keys.sh"
keys_setup
APEX=_domainkey.$INITIAL
IENC=${INITIAL//./-}
BIG=big.example

sink_start relay 127.0.0.1 "$SINK_PORT"
knsd_start
ub_start
for n in 1 2; do
	node_conf "$n" "keystore = $T/keystore" "dns_ttl = 300s" "dns_negative_ttl = 60s"
done
node_start 1
node_start 2
phase "harness up (file key store $T/keystore)"

kwait 30 "the initial domain in the store" 'kctl dkim show "$INITIAL" --json; [ "$RC" = 0 ]'
kctl_ok domain add "$BIG" --key-size 4096
kctl_ok domain add "$CUST"
kshow "$BIG"
[ "$(kj 'sel(1)["bits"]' 'sel(2)["bits"]')" = "4096
4096" ] || { cat "$T/show.json" >&2; fail "domain add --key-size 4096: not 4096-bit keys"; }
BIGP1=$(kj "sel(1)['txt']" | txt_p)
clock_advance $((8 * DAY))
for dom in "$INITIAL" "$BIG" "$CUST"; do
	kwait 40 "$dom confirmed through the delegation" kshow_is "$dom" "sel(1)['confirmed'] != 0" true
done
# one node confirmed each; wait until both have taken in every domain, key
# and confirmation before asking them one by one
for dom in "$INITIAL" "$BIG" "$CUST"; do
	kshow "$dom"
	for k in 1 2; do
		nodes_serve "selector$k-${dom//./-}.$APEX" "$(kj "sel($k)['txt']" | txt_p)"
	done
done
kwait 30 "no unconfirmed domain on either node" \
	'[ "$(kmetric 1 signet_dkim_domains_unconfirmed)" = 0 ] && [ "$(kmetric 2 signet_dkim_domains_unconfirmed)" = 0 ]'
phase "three domains provisioned and confirmed through unbound and the delegation"

# --- each node, asked directly ------------------------------------------------------
for n in 1 2; do
	S=${NODE_DNS[$n]}
	dq "$S" "$APEX" SOA
	dq_is "node$n SOA" 'd["rcode"], "aa" in d["flags"], len(d["answer"])' '["NOERROR", true, 1]'
	dq_is "node$n SOA" 'd["answer"][0]["type"], d["answer"][0]["ttl"], d["answer"][0]["data"].split()[:2], d["answer"][0]["data"].split()[-1]' \
		"[\"SOA\", 300, [\"ns1.$OPZONE.\", \"hostmaster.$OPZONE.\"], \"60\"]"
	dq "$S" "$APEX" NS
	dq_is "node$n NS" 'd["rcode"], "aa" in d["flags"], sorted(x["data"] for x in d["answer"])' \
		"[\"NOERROR\", true, [\"ns1.$OPZONE.\", \"ns2.$OPZONE.\"]]"
	dq "$S" "selector1-$IENC.$APEX" TXT
	dq_is "node$n TXT" 'd["rcode"], "aa" in d["flags"], len(d["answer"]), d["answer"][0]["ttl"]' '["NOERROR", true, 1, 300]'
	kshow "$INITIAL"
	[ "$(dqj 'd["answer"][0]["text"]' | txt_p)" = "$(kj "sel(1)['txt']" | txt_p)" ] ||
		{ cat "$T/dq.json" >&2; fail "node$n: selector1-$IENC TXT is not the key dkim show has"; }
	dq_is "node$n TXT" 'd["answer"][0]["text"].startswith("v=DKIM1; k=rsa; p=")' true
	# NXDOMAIN, with the SOA and the negative TTL
	dq "$S" "selector1-nosuch-example.$APEX" TXT
	dq_is "node$n NXDOMAIN" 'd["rcode"], "aa" in d["flags"], d["answer"], [x["type"] for x in d["authority"]], d["authority"][0]["ttl"] <= 60' \
		'["NXDOMAIN", true, [], ["SOA"], true]'
	dq "$S" "x.selector1-$IENC.$APEX" TXT
	dq_is "node$n NXDOMAIN below a record" 'd["rcode"]' NXDOMAIN
	# NODATA
	dq "$S" "selector1-$IENC.$APEX" A
	dq_is "node$n NODATA" 'd["rcode"], "aa" in d["flags"], d["answer"], [x["type"] for x in d["authority"]]' \
		'["NOERROR", true, [], ["SOA"]]'
	# outside its zones
	dq "$S" example.org TXT
	dq_is "node$n outside" 'd["rcode"]' REFUSED
	dq "$S" "selector1._domainkey.$CUST" TXT
	dq_is "node$n customer name" 'd["rcode"]' REFUSED
	# any case, echoed as asked
	dq "$S" "SeLeCtOr2-${IENC^^}._DomainKey.Contoso.Signet.Example" TXT
	dq_is "node$n mixed case" 'd["rcode"], len(d["answer"]), d["qname"]' \
		"[\"NOERROR\", 1, \"SeLeCtOr2-${IENC^^}._DomainKey.Contoso.Signet.Example.\"]"
	# ANY is answered like TXT
	dq "$S" "selector2-$IENC.$APEX" ANY
	dq_is "node$n ANY" 'd["rcode"], [x["type"] for x in d["answer"]]' '["NOERROR", ["TXT"]]'
	# the 4096-bit record: truncated over plain UDP, whole with EDNS 4096 and over TCP
	dq "$S" "selector1-big-example.$APEX" TXT --noedns
	dq_is "node$n big, UDP 512" '"tc" in d["flags"], d["answer"]' '[true, []]'
	dq "$S" "selector1-big-example.$APEX" TXT --bufsize 4096
	dq_is "node$n big, EDNS 4096" '"tc" in d["flags"], len(d["answer"])' '[false, 1]'
	dq "$S" "selector1-big-example.$APEX" TXT --tcp
	dq_is "node$n big, TCP" '"tc" in d["flags"], len(d["answer"]), max(d["answer"][0]["lens"]) <= 255, len(d["answer"][0]["lens"]) > 1' \
		'[false, 1, true, true]'
	[ "$(dqj 'd["answer"][0]["text"]' | txt_p)" = "$BIGP1" ] || fail "node$n: the 4096-bit record over TCP is not the stored key"
done
phase "both nodes: SOA, NS, TXT, NXDOMAIN, NODATA, REFUSED, case, ANY, truncation and TCP as specified"

# two queries pipelined on one TCP connection, answered in order
"$PY" - "${NODE_DNS[1]}" "selector1-big-example.$APEX" "selector2-$IENC.$APEX" <<'EOF' || fail "TCP pipelining on node1's dns_listen"
import socket, struct, sys
import dns.message
host, _, port = sys.argv[1].rpartition(":")
qs = [dns.message.make_query(n, "TXT") for n in sys.argv[2:]]
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in (q.to_wire() for q in qs)))
f = s.makefile("rb")
for q in qs:
    n = struct.unpack("!H", f.read(2))[0]
    r = dns.message.from_wire(f.read(n))
    assert r.id == q.id, "answers out of order"
    assert r.question[0].name == q.question[0].name
    assert len(r.answer) == 1, r
print("pipelined: ok")
EOF

# --- through the delegation -----------------------------------------------------------
[ "$(ub_txt "selector1-big-example.$APEX" | txt_p)" = "$BIGP1" ] ||
	fail "unbound does not resolve the 4096-bit record through the delegation"
ub_dig TXT "selector7-nosuch-example.$APEX" >"$T/dig" 2>&1
grep -q 'status: NXDOMAIN' "$T/dig" || { cat "$T/dig" >&2; fail "unbound: NXDOMAIN expected through the delegation"; }
kmail 1 big-n1 "a@$BIG"
kverify "$MAIL" "$INITIAL" selector1-big-example
kmail 2 fab-n2 "a@$CUST"
kverify "$MAIL" "$INITIAL" "selector1-${CUST//./-}"
phase "dkimpy verifies 4096-bit and 1024-bit default signing through unbound"

# --- dns zone: a valid zone file, record for record what the nodes serve -----------------
kctl_ok dns zone
cp "$T/out" "$T/zone.txt"
{
	echo "\$ORIGIN $APEX."
	echo "@ 300 IN SOA ns1.$OPZONE. hostmaster.$OPZONE. 1 3600 600 86400 60"
	echo "@ 300 IN NS ns1.$OPZONE."
	echo "@ 300 IN NS ns2.$OPZONE."
	cat "$T/zone.txt"
} >"$T/zone.full"
/usr/sbin/nsd-checkzone "$APEX" "$T/zone.full" >"$T/err" 2>&1 ||
	{ cat "$T/err" "$T/zone.txt" >&2; fail "nsd-checkzone rejects the output of dns zone"; }
"$PY" - "$T/zone.full" "$APEX" "${NODE_DNS[1]}" "${NODE_DNS[2]}" <<'EOF' >"$T/zcmp" 2>&1 || { cat "$T/zcmp" "$T/zone.txt" >&2; fail "dns zone differs from what the nodes serve"; }
import sys
import dns.message, dns.query, dns.rdatatype, dns.zone
z = dns.zone.from_file(sys.argv[1], origin=sys.argv[2], relativize=False)
n = 0
for name, rds in z.iterate_rdatasets(dns.rdatatype.TXT):
    want = sorted(b"".join(r.strings) for r in rds)
    for r in rds:
        assert all(len(s) <= 255 for s in r.strings), "%s: a string over 255 octets" % name
    for srv in sys.argv[3:]:
        host, _, port = srv.rpartition(":")
        a = dns.query.tcp(dns.message.make_query(name, "TXT"), host, port=int(port), timeout=3)
        got = sorted(b"".join(r.strings) for rr in a.answer for r in rr)
        assert got == want, "%s at %s: %r != %r" % (name, srv, got[:1], want[:1])
    n += 1
assert n == 6, "%d TXT records in dns zone, wanted 6 (3 domains x 2 selectors)" % n
print("zone: %d records equal on both nodes" % n)
EOF
phase "dns zone: $(cat "$T/zcmp")"

# --- a removed domain's records go away -----------------------------------------------------
kctl_ok domain remove "$BIG"
kwait 30 "NXDOMAIN for the removed domain's record on both nodes" \
	'"$PY" "$KPY/dq.py" "${NODE_DNS[1]}" "selector1-big-example.$APEX" TXT | grep -q "\"rcode\": \"NXDOMAIN\"" &&
	 "$PY" "$KPY/dq.py" "${NODE_DNS[2]}" "selector1-big-example.$APEX" TXT | grep -q "\"rcode\": \"NXDOMAIN\""'
phase "domain remove: both nodes stopped serving its records"
nodes_alive
node_stop 1
node_stop 2
phase "done"
