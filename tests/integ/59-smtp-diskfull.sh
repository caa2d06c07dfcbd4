#!/bin/bash
# smtp-diskfull: with the spool on a small tmpfs (mounted in a private mount
# namespace: needs root), messages are accepted until the disk is full; then
# the client gets "452 4.3.1", no partial file is left in tmp/ or active/,
# every queue file that got 250 is intact, the session goes on, the spool
# write error counter moves, and once space is freed messages are accepted
# again.
if [ -z "${SIGNET_IN_MOUNT_NS:-}" ]; then
	command -v unshare >/dev/null 2>&1 || { echo "FAIL: missing component: unshare (util-linux)" >&2; exit 1; }
	SIGNET_IN_MOUNT_NS=1 exec unshare -m bash "$0" "$@"
fi
. "$(dirname "$0")/lib_smtp.sh"
need curl

smtp_setup
mount -t tmpfs -o size=3m,mode=0755 signet-test "$SPOOL" 2>"$T/err" ||
	{ cat "$T/err" >&2; fail "cannot mount a tmpfs on the spool (the scenario needs root)"; }
smtp_at_exit "umount -l '$SPOOL' 2>/dev/null"
smtp_conf "$T/signet.conf"
signet_start "$T/signet.conf" "$PORT" "$ADMIN_PORT"

smtp_py <<'EOF' || fail "disk full dialogue (see above)"
import os, smtpt
from smtpt import check, Fail
port = int(os.environ["PORT"])
T, SPOOL = os.environ["T"], os.environ["SPOOL"]

def one(c, n, size):
    c.expect("MAIL FROM:<a@signed.example>", 250)
    c.expect("RCPT TO:<r@rcpt.example>", 250)
    c.expect("DATA", 354)
    body = (b"%06d " % n) + b"z" * 68 + b"\r\n"
    m = smtpt.make_message(frm="a@signed.example", msgid="<full-%d@client.test>" % n,
                           body=body * (size // len(body)))
    c.send(smtpt.dot_stuff(m) + b".\r\n")
    return c.expect_reply((250, 452), None, "end of DATA, message %d" % n, timeout=20)

def run():
    c = smtpt.Conn(port, name="fill")
    c.expect_greeting()
    c.ehlo()
    ok, full = [], None
    for n in range(40):
        r = one(c, n, 300000)
        if r.code == 452:
            check(r.enh == "4.3.1", "disk full: wanted 452 4.3.1, got %r" % r.lines, c)
            full = n
            break
        ok.append(smtpt.queue_id(r))
    check(full is not None, "40 messages of 300 KB into a 3 MB spool and no 452", c)
    check(len(ok) >= 3, "only %d messages fit before 452" % len(ok), c)
    c.expect("NOOP", 250)
    # still full: refused again, cleanly
    r = one(c, 100, 300000)
    check(r.code == 452 and r.enh == "4.3.1", "second message on a full disk: %r" % r.lines, c)
    open(os.path.join(T, "ok"), "w").write("\n".join(ok) + "\n")
    # free space as an operator would (drop two queue files), then it works again
    for q in ok[:2]:
        os.unlink(os.path.join(SPOOL, "active", q))
    r = one(c, 200, 100000)
    check(r.code == 250, "after space was freed, a message is still refused: %r" % r.lines, c)
    open(os.path.join(T, "after"), "w").write(smtpt.queue_id(r) + "\n")
    c.expect("QUIT", 221)
    c.close()

smtpt.main(run)
EOF
sleep 0.5
[ "$(spool_tmp_count)" = 0 ] || { ls -la "$SPOOL/tmp" >&2; fail "a partial file is left in tmp/ after 452"; }
tail -n +3 "$T/ok" >"$T/kept"
cat "$T/after" >>"$T/kept"
n=$(wc -l <"$T/kept")
[ "$(spool_count)" = "$n" ] || { ls -la "$SPOOL/active" >&2; fail "$(spool_count) files in active/, wanted $n (no file for a 452)"; }
qfile check "$SPOOL"/active/* >"$T/out" || { cat "$T/out" >&2; fail "a queue file in active/ is not intact"; }
metrics_get
e=$(metric signet_spool_write_errors_total)
[ "${e%.*}" -ge 2 ] || fail "signet_spool_write_errors_total is $e after two 452s"
signet_alive
signet_stop
note "ok"
