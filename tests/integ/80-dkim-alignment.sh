#!/bin/bash
# dkim-alignment: the verifier's side of managed keys (issue 5).  A message
# From fabrikam.com signed with d=contoso.signet.test and
# s=selector1-fabrikam-com is implicitly aligned under the initial suffix
# signet.test, and only with it; one signed with d= elsewhere is not; one
# signed with d=fabrikam.com is plainly aligned.  `dns records` prints the
# two CNAMEs for initial_domain exactly, and says so when it is empty.
. "$(dirname "$0")/lib.sh"
need openssl

keys=$T/keys
mk_rsa_key "$T/rsa.pem" 2048 "$keys" selector1-fabrikam-com contoso.signet.test
printf '%s\r\n' "From: Second Example <second.example@Fabrikam.com>" \
	"To: someone@example.net" "Subject: alignment" "" "hello" >"$T/m.eml"

# Default signing: d=<initial domain>, s=selector1-enc(From domain).
expect_ok "$CTL" dkim sign -d contoso.signet.test -s selector1-fabrikam-com \
	-k "$T/rsa.pem" "$T/m.eml"
cp "$T/out" "$T/default.eml"
ctl_verify_pass "$keys" "$T/default.eml" 1
expect_ok "$CTL" dkim alignment --initial-suffix signet.test "$T/default.eml"
grep_out '^aligned d=contoso\.signet\.test s=selector1-fabrikam-com \(d=contoso\.signet\.test is under the initial suffix signet\.test, s=selector1-fabrikam-com names fabrikam\.com: implicitly aligned\)$'
expect_ok "$CTL" dkim alignment --initial-suffix .signet.test - <"$T/default.eml"
grep_out '^aligned '
# Without the suffix only plain alignment counts.
expect_rc 1 "$CTL" dkim alignment "$T/default.eml"
grep_out '^not aligned d=contoso\.signet\.test s=selector1-fabrikam-com \(.*no initial suffix'
# Another suffix, or a selector naming another domain: not aligned.
expect_rc 1 "$CTL" dkim alignment --initial-suffix onmicrosoft.com "$T/default.eml"
grep_out '^not aligned .*not under|nor under'
sed 's/^From: .*/From: x@contoso.com/' "$T/default.eml" >"$T/other-from.eml"
expect_rc 1 "$CTL" dkim alignment --initial-suffix signet.test "$T/other-from.eml"
grep_out '^not aligned .*names fabrikam\.com, not the From domain contoso\.com'

# d= elsewhere: not aligned.
expect_ok "$CTL" dkim sign -d mailer.example.org -s selector1-fabrikam-com \
	-k "$T/rsa.pem" "$T/m.eml"
cp "$T/out" "$T/elsewhere.eml"
expect_rc 1 "$CTL" dkim alignment --initial-suffix signet.test "$T/elsewhere.eml"
grep_out '^not aligned d=mailer\.example\.org s=selector1-fabrikam-com \('
[ "$(wc -l <"$T/out")" = 1 ] || { show; fail "not one line"; }

# d= the From domain: plainly aligned; with two signatures one suffices.
expect_ok "$CTL" dkim sign -d fabrikam.com -s selector1 -k "$T/rsa.pem" \
	"$T/elsewhere.eml"
cp "$T/out" "$T/two.eml"
expect_ok "$CTL" dkim alignment "$T/two.eml"
grep_out '^aligned d=fabrikam\.com s=selector1 \(d=fabrikam\.com is the From domain: aligned\)$'
grep_out '^not aligned d=mailer\.example\.org '

# Unsigned, usage errors.
expect_rc 1 "$CTL" dkim alignment "$T/m.eml"
grep_out '^none: no DKIM-Signature'
expect_rc 2 "$CTL" dkim alignment --initial-suffix 'bad..suffix' "$T/m.eml"
expect_rc 2 "$CTL" dkim alignment --bogus "$T/m.eml"
expect_rc 2 "$CTL" dkim alignment "$T/m.eml" extra
expect_rc 2 "$CTL" dkim alignment --initial-suffix

# dns records
cat >"$T/relay.conf" <<CONF
myhostname = relay.signet.test
initial_domain = contoso.signet.test
CONF
expect_ok "$CTL" -c "$T/relay.conf" dns records Fabrikam.COM.
printf '%s\n' \
	"selector1._domainkey.fabrikam.com. 3600 IN CNAME selector1-fabrikam-com._domainkey.contoso.signet.test." \
	"selector2._domainkey.fabrikam.com. 3600 IN CNAME selector2-fabrikam-com._domainkey.contoso.signet.test." \
	>"$T/want"
cmp -s "$T/out" "$T/want" || { diff "$T/want" "$T/out" >&2; fail "dns records fabrikam.com"; }
expect_ok "$CTL" -c "$T/relay.conf" dns records my-domain.co.uk
grep_out '^selector2\._domainkey\.my-domain\.co\.uk\. 3600 IN CNAME selector2-my--domain-co-uk\._domainkey\.contoso\.signet\.test\.$'
long=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example
expect_ok "$CTL" -c "$T/relay.conf" dns records "$long"
grep_out "^selector1\._domainkey\.$long\. 3600 IN CNAME selector1---[a-z2-7]{26}\._domainkey\.contoso\.signet\.test\.\$"
expect_rc 2 "$CTL" -c "$T/relay.conf" dns records $'b\xc3\xbccher.example'
expect_rc 2 "$CTL" -c "$T/relay.conf" dns records
expect_rc 2 "$CTL" -c "$T/relay.conf" dns records a.example b.example
# initial_domain empty (the default): says so, exit 1
printf 'myhostname = relay.signet.test\n' >"$T/empty.conf"
expect_rc 1 "$CTL" -c "$T/empty.conf" dns records fabrikam.com
stderr_says 'initial_domain is not set'
[ -s "$T/out" ] && { show; fail "dns records printed records without initial_domain"; }
printf 'myhostname = relay.signet.test\ninitial_domain = bad..name\n' >"$T/bad.conf"
expect_rc 2 "$CTL" -c "$T/bad.conf" dns records fabrikam.com
exit 0
