#!/bin/bash
# smtp-crash: while postfix's smtp-source sends 10 KB messages at full speed
# (20 sessions) and a tracking client (smtp/loadclient.py) records every
# Message-ID that got "250 ... queued as", signet is killed with SIGKILL 3
# times and restarted.  At each restart tmp/ is emptied before anything is
# accepted (no partial file survives); at the end every acknowledged message
# is in active/ under its queue id, intact (the X record's SHA-256), signed
# (the signatures verify) and carries its own Message-ID; nothing was moved
# to corrupt/ and every file in active/ is intact.
. "$(dirname "$0")/lib_smtp.sh"
need smtp-source
need_dkimpy

smtp_setup
smtp_conf "$T/signet.conf"
signet_start "$T/signet.conf"

PAUSE=$T/pause
STOP=$T/stop
ACKED=$T/acked

# smtp-source, restarted whenever it exits (it gives up when the server dies)
(
	while [ ! -e "$STOP" ]; do
		if [ -e "$PAUSE" ]; then
			sleep 0.05
			continue
		fi
		smtp-source -s 20 -m 2000 -l 10240 -M client.test -f src@signed.example \
			-t b@rcpt.example "127.0.0.1:$PORT" >>"$T/smtp-source.log" 2>&1 &
		echo $! >"$T/smtp-source.pid"
		wait $!
		sleep 0.1
	done
) &
LOOP_PID=$!
smtp_track "$LOOP_PID"
"$PY" "$SMTPDIR/loadclient.py" --port "$PORT" --conns 6 --size 10240 --acked "$ACKED" \
	--pause-file "$PAUSE" --stop-file "$STOP" --tag crash --from tracked@signed.example \
	>"$T/loadclient.out" 2>&1 &
LC_PID=$!
smtp_track "$LC_PID"

acked() { [ -e "$ACKED" ] && wc -l <"$ACKED" || echo 0; }

for round in 1 2 3; do
	sleep 3
	before=$(acked)
	[ "$before" -gt 0 ] || { cat "$T/loadclient.out" >&2; fail "round $round: nothing acknowledged yet"; }
	touch "$PAUSE"
	signet_kill9
	note "round $round: killed with $before acknowledged, $(spool_count) in active/, $(spool_tmp_count) in tmp/"
	# let the clients notice and stop (smtp-source exits on its own)
	sleep 0.5
	sp=$(cat "$T/smtp-source.pid" 2>/dev/null)
	[ -n "$sp" ] && kill -0 "$sp" 2>/dev/null && { sleep 1; kill -0 "$sp" 2>/dev/null && kill -TERM "$sp"; }
	ls "$SPOOL/tmp" >"$T/tmp-before-$round" 2>/dev/null
	signet_start "$T/signet.conf"
	[ "$(spool_tmp_count)" = 0 ] || {
		ls -la "$SPOOL/tmp" >&2
		fail "round $round: tmp/ not emptied at start ($(spool_tmp_count) files; $(wc -l <"$T/tmp-before-$round") before)"
	}
	rm -f "$PAUSE"
done
sleep 2
touch "$STOP"
wait "$LC_PID"
sp=$(cat "$T/smtp-source.pid" 2>/dev/null)
[ -n "$sp" ] && kill -TERM "$sp" 2>/dev/null
wait "$LOOP_PID" 2>/dev/null
note "loadclient: $(cat "$T/loadclient.out")"
note "acknowledged to the tracked client: $(acked); in active/: $(spool_count)"
signet_alive

"$PY" - "$ACKED" "$SPOOL" <<'EOF' || fail "acknowledged messages vs the spool (see above)"
import os, random, sys
sys.path.insert(0, os.environ["SMTPDIR"])
import qfile
import dkim

acked = [l.split() for l in open(sys.argv[1]) if l.strip()]
spool = sys.argv[2]
keys = os.environ["KEYS"]

def dnsfunc(name, timeout=5):
    try:
        return open(os.path.join(keys, name.decode().rstrip(".") + ".txt"), "rb").read().strip()
    except OSError:
        return None

bad = []
seen = set()
for msgid, qid in acked:
    if qid in seen:
        bad.append("queue id %s acknowledged twice" % qid)
    seen.add(qid)
    p = os.path.join(spool, "active", qid)
    if not os.path.exists(p):
        where = [d for d in ("tmp", "corrupt") if os.path.exists(os.path.join(spool, d, qid))]
        bad.append("%s (queue id %s) acknowledged but not in active/%s" %
                   (msgid, qid, " (found in %s/)" % where[0] if where else ""))
        continue
    d, q = qfile.info(p)
    if not d["ok"]:
        bad.append("%s: %s" % (qid, d["error"]))
        continue
    if d["message_ids"] != [msgid]:
        bad.append("%s: Message-ID %r, acknowledged for %s" % (qid, d["message_ids"], msgid))
    if "DKIM-Signature" not in d["sig"]:
        bad.append("%s: no DKIM-Signature in the S record" % qid)
# every file in active/ is intact
active = os.listdir(os.path.join(spool, "active"))
for name in active:
    try:
        qfile.parse(os.path.join(spool, "active", name))
    except qfile.Bad as e:
        bad.append("active/%s is not intact: %s" % (name, e))
cdir = os.path.join(spool, "corrupt")
if os.path.isdir(cdir) and os.listdir(cdir):
    bad.append("files moved to corrupt/ (only complete files may enter active/): %s" % os.listdir(cdir)[:5])
# signatures: a sample of the acknowledged ones, and those acknowledged last
# before each kill are in the sample too (the tail of the file)
sample = acked[-50:] + random.Random(1).sample(acked, min(150, len(acked)))
for msgid, qid in sample:
    p = os.path.join(spool, "active", qid)
    if not os.path.exists(p):
        continue
    m = qfile.message_bytes(qfile.parse(p))
    nsig = m.split(b"\r\n\r\n", 1)[0].lower().count(b"\ndkim-signature:") + \
        (1 if m.lower().startswith(b"dkim-signature:") else 0)
    for i in range(nsig):
        if not dkim.DKIM(m, minkey=1024).verify(idx=i, dnsfunc=dnsfunc):
            bad.append("%s: signature %d does not verify" % (qid, i))
for b in bad[:30]:
    print(b)
print("%d acknowledged, %d in active/, %d problems" % (len(acked), len(active), len(bad)))
sys.exit(1 if bad else 0)
EOF
[ "$(acked)" -ge 50 ] || fail "only $(acked) messages acknowledged to the tracked client: the load did not run"
[ "$(spool_count)" -ge $(($(acked) + 50)) ] ||
	{ tail -5 "$T/smtp-source.log" >&2; fail "smtp-source got (almost) nothing through: $(spool_count) in active/, $(acked) from the tracked client"; }
signet_stop
note "ok"
