#!/bin/bash
# smtp-proxy: a listener with the PROXY option takes HAProxy PROXY v1 and v2
# headers from smtpd_proxy_trusted_networks (127.0.0.1 here), and the client
# address in the header is the one mynetworks is checked against
# (mynetworks = 127.0.0.5 only, so 127.0.0.1 itself may not relay): header
# 127.0.0.5 -> accepted, header 127.0.0.9 -> 554 5.7.1 at RCPT.  v2 with
# TLVs, v2 LOCAL, TCP6, a header split over several writes; a missing or
# malformed header, or a header from an untrusted address, never leads to
# relaying.  The plain listener ignores PROXY.
. "$(dirname "$0")/lib_smtp.sh"
need_dkimpy
need_maildkim

smtp_setup
smtp_conf "$T/signet.conf" "$(listen_plain)" "$(listen_proxy)" \
	"mynetworks = 127.0.0.5/32" "smtpd_proxy_trusted_networks = 127.0.0.1/32"
signet_start "$T/signet.conf" "$PORT" "$PROXY_PORT"

smtp_py <<'EOF' || fail "PROXY dialogue (see above)"
import os, socket, struct, time, smtpt
from smtpt import check, Fail, proxy_v1, proxy_v2
pport = int(os.environ["PROXY_PORT"])
port = int(os.environ["PORT"])
T = os.environ["T"]
ids = []
me = "127.0.0.200"   # the header's destination address

def send_msg(c, tag):
    r = c.mail_transaction("%s@signed.example" % tag, ["r@rcpt.example"],
                           smtpt.make_message(frm="%s@signed.example" % tag, subject=tag))
    q = smtpt.queue_id(r)
    check(q, "no queue id", c)
    ids.append("%s %s" % (tag, q))

def accepted(header, tag, pieces=1):
    c = smtpt.Conn(pport, name=tag)
    if pieces == 1:
        c.send(header)
    else:
        step = max(1, len(header) // pieces)
        for i in range(0, len(header), step):
            c.send(header[i:i + step])
            time.sleep(0.05)
    c.expect_greeting()
    c.ehlo()
    send_msg(c, tag)
    c.expect("QUIT", 221)
    c.close()

def refused_at_rcpt(header, tag, bind=None):
    c = smtpt.Conn(pport, bind=bind, name=tag)
    c.send(header)
    c.expect_greeting()
    c.ehlo()
    c.expect("MAIL FROM:<x@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 554, "5.7.1")
    c.expect("QUIT", 221)
    c.close()

def never_relays(data, tag, bind=None, p=None):
    """Whatever the server does (close, 421, 5xx), no RCPT is accepted."""
    try:
        c = smtpt.Conn(p or pport, bind=bind, name=tag, timeout=5)
    except OSError:
        return
    try:
        c.send(data + b"EHLO client.test\r\nMAIL FROM:<x@signed.example>\r\n"
               b"RCPT TO:<r@rcpt.example>\r\nDATA\r\n")
    except OSError:
        return
    rs = c.drain(2.0)
    check(not any(r.code == 250 and (r.enh or "").startswith("2.1.5") for r in rs),
          "%s: a recipient was accepted" % tag, c)
    check(not any(r.code == 354 for r in rs), "%s: DATA was accepted" % tag, c)
    c.close()

def run():
    # v1
    accepted(proxy_v1("127.0.0.5", me), "v1-mynet")
    refused_at_rcpt(proxy_v1("127.0.0.9", me), "v1-outside")
    accepted(proxy_v1("127.0.0.5", me), "v1-split", pieces=5)
    refused_at_rcpt(proxy_v1("::1", "::1"), "v1-tcp6")
    # "PROXY UNKNOWN": the real address (127.0.0.1, outside mynetworks)
    refused_at_rcpt(b"PROXY UNKNOWN\r\n", "v1-unknown")
    # v2
    accepted(proxy_v2("127.0.0.5", me), "v2-mynet")
    refused_at_rcpt(proxy_v2("127.0.0.9", me), "v2-outside")
    tlvs = bytes([0x02]) + struct.pack("!H", 11) + b"signet.test" + \
           bytes([0x04]) + struct.pack("!H", 3) + b"\0\0\0"
    accepted(proxy_v2("127.0.0.5", me, tlvs=tlvs), "v2-tlvs")
    accepted(proxy_v2("127.0.0.5", me), "v2-split", pieces=4)
    refused_at_rcpt(proxy_v2("::1", "::1"), "v2-tcp6")
    # LOCAL (health checks): the real address counts
    refused_at_rcpt(proxy_v2(None, None, local=True), "v2-local")
    # no header, malformed headers: never a relay
    never_relays(b"", "no-header")
    never_relays(b"PROXY TCP4 300.1.1.1 127.0.0.1 1 25\r\n", "v1-bad-address")
    never_relays(b"PROXY TCP4 127.0.0.5\r\n", "v1-short")
    never_relays(b"PROXY TCP4 127.0.0.5 127.0.0.1 40000 25 junk junk junk junk\r\n", "v1-long")
    never_relays(b"PROXY " + b"A" * 200 + b"\r\n", "v1-overlong")
    bad = bytearray(proxy_v2("127.0.0.5", me))
    bad[12] = 0x31                                  # version 3
    never_relays(bytes(bad), "v2-bad-version")
    bad = bytearray(proxy_v2("127.0.0.5", me))
    bad[14:16] = struct.pack("!H", 4)               # too short for TCP4
    never_relays(bytes(bad), "v2-short-length")
    # a header from an address that is not trusted (127.0.0.5 is in
    # mynetworks but may not send PROXY): refused
    never_relays(proxy_v1("127.0.0.5", me), "untrusted-v1", bind="127.0.0.5")
    never_relays(proxy_v2("127.0.0.5", me), "untrusted-v2", bind="127.0.0.5")
    never_relays(proxy_v1("127.0.0.5", me), "untrusted-v1-b", bind="127.0.0.3")
    # the plain listener does not take PROXY: the line is a bad command and
    # the real address (127.0.0.1) counts
    c = smtpt.Conn(port, name="plain-listener")
    c.expect_greeting()
    c.expect(proxy_v1("127.0.0.5", me).rstrip(b"\r\n"), (500, 502), "5.5.")
    c.ehlo()
    c.expect("MAIL FROM:<x@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 554, "5.7.1")
    c.close()
    open(os.path.join(T, "ids"), "w").write("\n".join(ids) + "\n")

smtpt.main(run)
EOF

[ "$(wc -l <"$T/ids")" = 5 ] || fail "wanted 5 accepted messages"
while read -r tag id; do
	expect_signed "$id" 2
	envelope_has "$id" '127\.0\.0\.5'
	qfile envelope "$SPOOL/active/$id" | grep -q '127\.0\.0\.1' &&
		fail "$tag: the envelope names the proxy's address 127.0.0.1, not the client's"
done <"$T/ids"
[ "$(spool_count)" = 5 ] || fail "$(spool_count) queue files, wanted 5"

signet_alive
signet_stop
note "ok"
