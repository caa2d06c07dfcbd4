#!/bin/bash
# smtp-client: the delivery client (smtp/client.c) against a recording sink
# (tests/integ/client/sink.py) and postfix's smtp-sink, all on loopback.
# A driver (tests/integ/client/deliver.c, built here from the objects in
# ${SIGNET_BUILD:-build}) spools one message with the real queue API and
# delivers it.  Checks: the bytes the sink gets are exactly the signature
# record + the message (dot-stuffed on the wire), pipelined and one by
# one; STARTTLS may/encrypt; 4xx/5xx per recipient; 5xx/4xx to MAIL, DATA
# and the final dot; SIZE too big; 8BITMIME and SMTPUTF8 missing; DSN
# parameters; EHLO -> HELO; the server closing mid-transaction, a silent
# server, a refused connection -> deferred.  The connection cache: two
# transactions over one connection (no second EHLO, no RSET after a
# success), the sink closing the idle connection, the cached connection
# dying at MAIL (a new connection, transparently), the idle timeout (QUIT).
. "$(dirname "$0")/lib.sh"
need cc pkg-config openssl "$PY" /usr/sbin/smtp-sink

BUILD=${SIGNET_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
for m in smtp/client.o queue/file.o dkim/sign.o; do
	[ -f "$BUILD/$m" ] || fail "missing component: $BUILD/$m (make BUILD=$(basename "$BUILD") first)"
done
SINK=$INTEG/client/sink.py
DELIVER=$T/deliver
PKGS="libuv liburing libssl libcrypto libcares hiredis"
SAN=""
case $(basename "$BUILD") in *san*) SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" ;; esac
# shellcheck disable=SC2046,SC2086
cc -std=gnu11 -O1 -g -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter $SAN -I"$ROOT" \
	$(pkg-config --cflags $PKGS) -o "$DELIVER" "$INTEG"/client/*.c \
	"$BUILD"/smtp/*.o "$BUILD"/queue/*.o "$BUILD"/dkim/*.o \
	$(pkg-config --libs $PKGS) -lcrypt -lresolv -lpthread >"$T/cc.log" 2>&1 ||
	{ cat "$T/cc.log" >&2; fail "cannot build the driver"; }
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

PIDS=""
_client_exit() {
	local rc=$? p
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	_cleanup
	exit $rc
}
trap _client_exit EXIT

# free_port - an unused loopback port
free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# sink NAME [SINK-ARGS...] - start sink.py recording to $T/NAME.jsonl; SPORT is its port
sink() {
	local name=$1 i=0
	shift
	SPORT=$(free_port)
	rm -f "$T/$name.jsonl" "$T/$name.ready"
	"$PY" "$SINK" --port "$SPORT" --record "$T/$name.jsonl" --ready "$T/$name.ready" "$@" \
		>"$T/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	while [ ! -f "$T/$name.ready" ]; do
		[ $i -ge 100 ] && { cat "$T/$name.log" >&2; fail "sink $name did not start"; }
		sleep 0.1
		i=$((i + 1))
	done
	REC=$T/$name.jsonl
}

# deliver [DELIVER-ARGS...] - spool $MSG (+ $SIG) and deliver it to the
# last sink; RC, $T/out (result lines), $T/err (log).  The record of the
# connection is complete once the driver has exited (QUIT came first).
deliver() {
	mkdir -p "$T/spool"
	run timeout 60 "$DELIVER" --spool "$T/spool" --msg "${DMSG:-$MSG}" --sig "$SIG" \
		--from sender@signed.example --to "127.0.0.1:$SPORT" --timeout "${DTIMEOUT:-10000}" "$@"
	[ "$RC" = 0 ] || { show; fail "deliver exited $RC: $*"; }
	grep -Eq 'AddressSanitizer|runtime error:|LeakSanitizer' "$T/err" && { show; fail "sanitizer report"; }
	sleep 0.2   # the sink writes its record when the connection ends
}

# rcpt_is ADDR VERDICT [CODE [STATUS]] - one result line
rcpt_is() {
	local re="^rcpt $1 $2"
	[ $# -ge 3 ] && re="$re $3"
	[ $# -ge 4 ] && re="$re $4"
	grep_out "$re( |\$)"
}

# rec PYTHON-EXPR - evaluate on the last connection record (c) and its
# last transaction (t; None if none); fail unless true.  raw(t)/data(t)
# are the decoded bytes, want is $SIG + the message.
rec() {
	"$PY" - "$REC" "$SIG" "${DMSG:-$MSG}" "$1" <<'EOF' || fail "sink record check failed: $1"
import base64, json, sys
rec, sig, msg, expr = sys.argv[1:5]
lines = open(rec).read().splitlines()
c = json.loads(lines[-1])
t = c["txns"][-1] if c["txns"] else None
want = open(sig, "rb").read() + open(msg, "rb").read()
raw = lambda t: base64.b64decode(t["raw"])
data = lambda t: base64.b64decode(t["data"])
def stuffed(b):
    out, bol = bytearray(), True
    for ch in b:
        if bol and ch == 0x2e:
            out.append(0x2e)
        out.append(ch)
        bol = ch == 0x0a
    return bytes(out)
ok = eval(expr)
if not ok:
    print("record:", json.dumps(c)[:3000], file=sys.stderr)
    sys.exit(1)
EOF
}

# --- the messages ------------------------------------------------------------------
SIG=$T/sig
printf 'DKIM-Signature: v=1; a=rsa-sha256; d=signed.example; s=rsa1;\r\n\th=from:to:subject; bh=abc=; b=xyz=\r\n' >"$SIG"
MSG=$T/msg.eml
{
	printf 'From: <sender@signed.example>\r\nTo: <rcpt@rcpt.example>\r\nSubject: dots\r\n\r\n'
	printf '.leading dot\r\n..two dots\r\n.\r\nnot.a dot\r\n\r\n. space\r\n'
	printf '8-bit: \xc3\xa9\xff\x80 and a NUL-free binary-ish line\r\n'
	printf '%0990d\r\n' 7
	printf 'last line\r\n'
} >"$MSG"
BIG=$T/big.eml
"$PY" - "$BIG" <<'EOF'
import random, sys
random.seed(61)
out = [b"From: <sender@signed.example>\r\nSubject: big\r\n\r\n"]
n = 0
while n < 3 * 1024 * 1024:
    k = random.randrange(0, 200)
    line = bytes(random.choice(b".abcdefghij.\xc3\xa9 ") for _ in range(k))
    if random.random() < 0.2:
        line = b"." + line
    out.append(line + b"\r\n")
    n += k + 2
out.append(b".")   # no final CRLF: the client adds one
open(sys.argv[1], "wb").write(b"".join(out))
EOF
WANT_LEN=$(($(stat -c %s "$SIG") + $(stat -c %s "$MSG")))

# --- byte-exact, pipelined -----------------------------------------------------------
note "pipelined delivery, two recipients"
sink pipe
deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none
rcpt_is a@rcpt.example sent 250 2.0.0
rcpt_is b@rcpt.example sent 250 2.0.0
grep_out '^pipelined 1$'
grep_out '^greeting sink.test$'
grep_out "^stage done$"
rec 'data(t) == want'
rec 'raw(t) == stuffed(want) and b"\r\n..\r\n" in raw(t) and raw(t).startswith(b"DKIM-Signature:")'
rec 't["pipelined"][:2] == ["RCPT TO:<a@rcpt.example>", "RCPT TO:<b@rcpt.example>"] and t["pipelined"][-1] == "DATA"'
rec '"SIZE=%d" % len(want) in t["mail"] and "BODY=" not in t["mail"]'
rec 'c["cmds"][-1] == "QUIT" and c["cmds"][0] == "EHLO signet.test"'

# --- one by one, and a big message (streamed from the queue file) -------------------------
note "no PIPELINING, 3 MB message"
sink nopipe --hide PIPELINING
DMSG=$BIG deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example sent 250
grep_out '^pipelined 0$'
DMSG=$BIG rec 't["pipelined"] == []'
DMSG=$BIG rec 'data(t) == want + b"\r\n" and raw(t) == stuffed(want + b"\r\n")'

note "PIPELINING offered, client told not to"
sink pipe2
deliver --rcpt a@rcpt.example --tls none --no-pipelining
grep_out '^pipelined 0$'
rec 't["pipelined"] == [] and data(t) == want'

# --- STARTTLS -----------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$T/key.pem" -out "$T/cert.pem" -days 2 -subj /CN=sink.test >/dev/null 2>&1 ||
	fail "openssl req (test certificate)"

note "STARTTLS may, offered"
sink tls --tls "$T/cert.pem" "$T/key.pem"
DMSG=$BIG deliver --rcpt a@rcpt.example --tls may
rcpt_is a@rcpt.example sent 250
grep_out '^tls TLSv1\.[23] '
DMSG=$BIG rec 'c["tls"] in ("TLSv1.2", "TLSv1.3") and data(t) == want + b"\r\n"'
rec 'c["cmds"][:3] == ["EHLO signet.test", "STARTTLS", "EHLO signet.test"]'

note "STARTTLS encrypt, offered"
deliver --rcpt a@rcpt.example --tls encrypt
rcpt_is a@rcpt.example sent 250
grep_out '^tls TLSv1\.[23] '
rec 'data(t) == want'

note "plaintext injected after the 220 to STARTTLS is thrown away (CVE-2011-0411)"
sink tlsinject --tls "$T/cert.pem" "$T/key.pem" --reply "STARTTLS=220 2.0.0 Ready"$'\r\n'"250 2.0.0 injected"
deliver --rcpt a@rcpt.example --tls may
rcpt_is a@rcpt.example sent 250 2.0.0
grep_out '^tls TLSv1\.[23] '
rec 'data(t) == want'

note "STARTTLS may, not offered: plaintext"
sink notls
deliver --rcpt a@rcpt.example --tls may
rcpt_is a@rcpt.example sent 250
grep_out '^tls none'
rec 'c["tls"] is None and data(t) == want'

note "STARTTLS encrypt, not offered: deferred"
deliver --rcpt a@rcpt.example --tls encrypt
rcpt_is a@rcpt.example deferred 0 4.7.4
rec 'c["txns"] == [] and "STARTTLS" not in c["cmds"]'

note "STARTTLS may, offered but refused: deferred"
sink tlsno --tls "$T/cert.pem" "$T/key.pem" --reply 'STARTTLS=454 4.7.0 TLS not available'
deliver --rcpt a@rcpt.example --tls may
rcpt_is a@rcpt.example deferred 454 4.7.0
rec 'c["txns"] == []'

# --- replies per recipient ------------------------------------------------------------------
for mode in pipelined one-by-one; do
	note "per-recipient replies ($mode)"
	extra=()
	[ $mode = one-by-one ] && extra=(--no-pipelining)
	sink "rcpt-$mode" --reply 'RCPT:bad@=550 5.1.1 <bad@rcpt.example>: no such user' \
		--reply 'RCPT:later@=451 4.2.0 greylisted, try later'
	deliver --rcpt good@rcpt.example --rcpt bad@rcpt.example --rcpt later@rcpt.example \
		--rcpt good2@rcpt.example --tls none "${extra[@]}"
	rcpt_is good@rcpt.example sent 250 2.0.0
	rcpt_is good2@rcpt.example sent 250 2.0.0
	rcpt_is bad@rcpt.example bounced 550 5.1.1
	rcpt_is later@rcpt.example deferred 451 4.2.0
	grep_out '^counts sent=2 deferred=1 bounced=1$'
	rec 'len(t["accepted"]) == 2 and data(t) == want'

	note "every recipient refused ($mode): no DATA"
	sink "none-$mode" --reply 'RCPT=550 5.1.1 no'
	deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none "${extra[@]}"
	rcpt_is a@rcpt.example bounced 550
	rcpt_is b@rcpt.example bounced 550
	rec '"raw" not in t'
	if [ $mode = one-by-one ]; then
		rec '"DATA" not in c["cmds"]'
	fi

	note "5xx to MAIL ($mode)"
	sink "mail5-$mode" --reply 'MAIL=553 5.7.1 sender rejected'
	deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none "${extra[@]}"
	rcpt_is a@rcpt.example bounced 553 5.7.1
	rcpt_is b@rcpt.example bounced 553 5.7.1
	grep_out '^reply 553 5\.7\.1 '
	rec '"raw" not in t'

	note "4xx to MAIL ($mode)"
	sink "mail4-$mode" --reply 'MAIL=451 4.3.0 local problem'
	deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none "${extra[@]}"
	rcpt_is a@rcpt.example deferred 451 4.3.0
	rcpt_is b@rcpt.example deferred 451 4.3.0
done

note "5xx to DATA"
sink data5 --reply 'DATA=554 5.6.0 no thanks'
deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none
rcpt_is a@rcpt.example bounced 554 5.6.0
rcpt_is b@rcpt.example bounced 554 5.6.0

note "4xx and 5xx to the final dot"
sink dot4 --reply 'DOT=451 4.3.0 queue trouble'
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example deferred 451 4.3.0
rec 'data(t) == want'
sink dot5 --reply 'DOT=550 5.7.1 content rejected'
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example bounced 550 5.7.1

note "a 4xx greeting defers, EHLO 5xx falls back to HELO"
sink greet4 --reply 'GREETING=421 4.3.2 busy'
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example deferred 421 4.3.2
grep_out '^stage greeting$'
sink helo --reply 'EHLO=502 5.5.2 what?'
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example sent 250
rec 'c["cmds"][:2] == ["EHLO signet.test", "HELO signet.test"] and "SIZE=" not in t["mail"] and data(t) == want'

# --- extensions the message needs --------------------------------------------------------------
note "SIZE smaller than the message: bounced 5.3.4, nothing sent"
sink size --size 100
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example bounced 0 5.3.4
rec 'c["txns"] == [] and c["cmds"][-1] == "QUIT"'
sink size2 --size "$WANT_LEN"
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example sent 250

note "8-bit body with and without 8BITMIME: sent unchanged"
sink 8bit
deliver --rcpt a@rcpt.example --tls none --8bit
rcpt_is a@rcpt.example sent 250
rec '"BODY=8BITMIME" in t["mail"] and data(t) == want'
sink 7bit --hide 8BITMIME
deliver --rcpt a@rcpt.example --tls none --8bit
rcpt_is a@rcpt.example sent 250
rec '"BODY=" not in t["mail"] and data(t) == want'

note "SMTPUTF8 needed: bounced 5.6.7 without it, sent with it"
sink noutf8
deliver --rcpt a@rcpt.example --tls none --smtputf8
rcpt_is a@rcpt.example bounced 0 5.6.7
rec 'c["txns"] == []'
sink utf8 --smtputf8
deliver --rcpt a@rcpt.example --tls none --smtputf8
rcpt_is a@rcpt.example sent 250
rec 't["mail"].endswith(" SMTPUTF8") and data(t) == want'

note "DSN parameters only when DSN is offered"
sink dsn --dsn
deliver --rcpt a@rcpt.example --tls none --ret hdrs --envid 'id+1=x' --notify 6 --orcpt 'rfc822;a+b@rcpt.example'
rcpt_is a@rcpt.example sent 250
rec '"RET=HDRS ENVID=id+2B1+3Dx" in t["mail"]'
rec 't["rcpt"] == ["RCPT TO:<a@rcpt.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@rcpt.example"]'
sink nodsn
deliver --rcpt a@rcpt.example --tls none --ret hdrs --envid x --notify 6 --orcpt 'rfc822;a@rcpt.example'
rec '"RET=" not in t["mail"] and "ENVID=" not in t["mail"] and t["rcpt"] == ["RCPT TO:<a@rcpt.example>"]'

# --- connection trouble ------------------------------------------------------------------------
for stage in RCPT DATA BODY DOT; do
	note "the server closes at $stage: deferred"
	sink "close-$stage" --close "$stage"
	deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none
	rcpt_is a@rcpt.example deferred 0 4.4.2
	rcpt_is b@rcpt.example deferred 0 4.4.2
	grep_out '^connected 1$'
	grep_out '^error (EOF|ECONNRESET)$'
done

note "a server that never answers: timeout, deferred"
SPORT=$(free_port)
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(5); time.sleep(60)' "$SPORT" &
PIDS="$PIDS $!"
sleep 0.5
DTIMEOUT=1000 deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example deferred 0 4.4.2
grep_out '^error ETIMEDOUT$'
grep_out '^stage greeting$'

note "connection refused: deferred"
SPORT=$(free_port)
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example deferred 0 4.4.1
grep_out '^connected 0$'
grep_out '^error ECONNREFUSED$'

# --- the connection cache -------------------------------------------------------------------
# recs PYTHON-EXPR - like rec, over every connection record (cs, in order)
recs() {
	"$PY" - "$REC" "$SIG" "${DMSG:-$MSG}" "$1" <<'EOF' || fail "sink records check failed: $1"
import base64, json, sys
rec, sig, msg, expr = sys.argv[1:5]
cs = [json.loads(l) for l in open(rec).read().splitlines()]
want = open(sig, "rb").read() + open(msg, "rb").read()
data = lambda t: base64.b64decode(t["data"])
ok = eval(expr)
if not ok:
    print("records:", json.dumps(cs)[:4000], file=sys.stderr)
    sys.exit(1)
EOF
}

# results_are K REGEX... - the lines of delivery K (after "delivery K") match each REGEX
results_are() {
	local k=$1 re
	shift
	awk -v k="$k" '$1 == "delivery" { on = ($2 == k); next } on' "$T/out" >"$T/out.$k"
	for re in "$@"; do
		grep_out "$re" "$T/out.$k"
	done
}

note "connection cache: two transactions over one connection"
sink cache
deliver --rcpt a@rcpt.example --tls none --cache 5000 --repeat 2
results_are 1 '^reused 0$' '^cached 1$' '^rcpt a@rcpt\.example sent 250'
results_are 2 '^reused 1$' '^cached 1$' '^rcpt a@rcpt\.example sent 250' '^stage done$' '^greeting sink\.test$'
grep_out '^connections opened 1 closed 1$'
recs 'len(cs) == 1 and len(cs[0]["txns"]) == 2 and all(data(t) == want for t in cs[0]["txns"])'
recs '[c for c in cs[0]["cmds"] if c.startswith("EHLO")] == ["EHLO signet.test"] and "RSET" not in cs[0]["cmds"]'

note "connection cache over STARTTLS"
sink cachetls --tls "$T/cert.pem" "$T/key.pem"
deliver --rcpt a@rcpt.example --tls encrypt --cache 5000 --repeat 3
results_are 3 '^reused 1$' '^tls TLSv1\.[23] ' '^rcpt a@rcpt\.example sent 250'
recs 'len(cs) == 1 and cs[0]["tls"] is not None and len(cs[0]["txns"]) == 3 and all(data(t) == want for t in cs[0]["txns"])'

note "connection cache: a failed transaction is reset, then the connection reused"
sink cachefail --reply 'RCPT:bad@=550 5.1.1 no such user'
deliver --rcpt bad@rcpt.example --tls none --cache 5000 --repeat 2
results_are 2 '^reused 1$' '^rcpt bad@rcpt\.example bounced 550'
recs 'len(cs) == 1 and cs[0]["cmds"].count("RSET") == 2'

note "connection cache: the sink closed the idle connection, a new one is made"
sink cacheidle --close-idle 300
deliver --rcpt a@rcpt.example --tls none --cache 5000 --repeat 2 --gap 1000
results_are 2 '^reused 0$' '^connected 1$' '^rcpt a@rcpt\.example sent 250'
grep_out '^connections opened 2 closed 2$'
recs 'len(cs) == 2 and cs[0]["closed_by_sink"] and [len(c["txns"]) for c in cs] == [1, 1] and data(cs[1]["txns"][0]) == want'

note "connection cache: the cached connection dies at MAIL, delivery goes on transparently"
sink cachemail --close-mail 2
deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none --cache 5000 --repeat 2
results_are 2 '^reused 0$' '^error 0$' '^rcpt a@rcpt\.example sent 250' '^rcpt b@rcpt\.example sent 250' '^counts sent=2 deferred=0 bounced=0$'
grep_out '^connections opened 2 closed 2$'
recs 'len(cs) == 2 and cs[0]["closed_by_sink"] and cs[0]["cmds"][-1].startswith("MAIL") and len(cs[1]["txns"]) == 1 and data(cs[1]["txns"][0]) == want'

note "connection cache: the idle time is up, QUIT"
sink cachequit
deliver --rcpt a@rcpt.example --tls none --cache 300 --repeat 2 --gap 1000
results_are 2 '^reused 0$' '^rcpt a@rcpt\.example sent 250'
recs 'len(cs) == 2 and cs[0]["cmds"][-1] == "QUIT" and not cs[0]["closed_by_sink"]'

# --- postfix's smtp-sink -----------------------------------------------------------------------
# smtp-sink_run NAME [OPTIONS...] - start smtp-sink dumping into $T/NAME/
smtp_sink_run() {
	local name=$1 i=0
	shift
	mkdir -p "$T/$name"
	# smtp-sink runs as nobody: it must reach the dump directory
	chmod o+x "$T"
	chmod 777 "$T/$name"
	SPORT=$(free_port)
	/usr/sbin/smtp-sink -u nobody -d "$T/$name/%M." "$@" "127.0.0.1:$SPORT" 10 >"$T/$name.log" 2>&1 &
	PIDS="$PIDS $!"
	while ! "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$SPORT" 2>/dev/null; do
		[ $i -ge 50 ] && { cat "$T/$name.log" >&2; fail "smtp-sink did not start"; }
		sleep 0.1
		i=$((i + 1))
	done
}

note "postfix smtp-sink: delivered, message intact"
smtp_sink_run ss
deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none
rcpt_is a@rcpt.example sent 250
rcpt_is b@rcpt.example sent 250
sleep 0.3
"$PY" - "$T/ss" "$SIG" "$MSG" <<'EOF' || fail "smtp-sink dump does not hold the message"
import os, sys
d, sig, msg = sys.argv[1:4]
files = os.listdir(d)
assert len(files) == 1, files
dump = open(os.path.join(d, files[0]), "rb").read()
want = (open(sig, "rb").read() + open(msg, "rb").read()).replace(b"\r\n", b"\n")
assert b"X-Rcpt-Args: <a@rcpt.example>" in dump and b"X-Rcpt-Args: <b@rcpt.example>" in dump, dump[:500]
assert want in dump, dump[-600:]
EOF

note "postfix smtp-sink: RCPT rejected (hard), MAIL rejected (soft), disconnect at DATA"
smtp_sink_run ss-rcpt -f RCPT
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example bounced '5[0-9][0-9]'
smtp_sink_run ss-mail -r MAIL
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example deferred '4[0-9][0-9]'
smtp_sink_run ss-data -q DATA
deliver --rcpt a@rcpt.example --rcpt b@rcpt.example --tls none
rcpt_is a@rcpt.example deferred 0 4.4.2
rcpt_is b@rcpt.example deferred 0 4.4.2
smtp_sink_run ss-nopipe -p
deliver --rcpt a@rcpt.example --tls none
rcpt_is a@rcpt.example sent 250
grep_out '^pipelined 0$'

exit 0
