"""smtpt.py - a raw SMTP test client for the integration scenarios.

Unlike smtplib it sends exactly the bytes it is given (bare CR/LF, NULs,
several commands in one write, overlong lines), keeps a transcript for the
failure message, and checks replies against codes.

    import smtpt
    c = smtpt.Conn(port)                     # connect, read nothing yet
    c.expect_greeting()                      # 220
    c.ehlo()                                 # -> list of keywords (upper)
    c.expect("MAIL FROM:<a@b>", 250, "2.1.0")
    c.send(b"raw bytes")                     # one write
    r = c.reply()                            # Reply(code, enh, lines) / None on EOF
    smtpt.check(cond, "message", c)          # raise Fail with the transcript

Run with the Debian /usr/bin/python3.  Scenario scripts call smtpt.main(fn)
which turns Fail into "FAIL: ..." on stderr and exit 1.
"""
import os
import re
import select
import socket
import ssl
import struct
import sys
import time

DEFAULT_TIMEOUT = float(os.environ.get("SMTPT_TIMEOUT", "10"))


class Fail(Exception):
    pass


class Reply:
    def __init__(self, lines):
        self.lines = lines                      # list of str, without CRLF
        self.code = int(lines[-1][:3]) if lines and lines[-1][:3].isdigit() else -1
        m = re.match(r"^\d{3}[ -](\d\.\d{1,3}\.\d{1,3})(?: |$)", lines[0]) if lines else None
        self.enh = m.group(1) if m else None
        self.text = "\n".join(lines)

    def __repr__(self):
        return "Reply(%r)" % self.text

    def keywords(self):
        """EHLO keywords (upper case, without the first line)."""
        return [l[4:].split(" ")[0].upper() for l in self.lines[1:]]

    def params(self, kw):
        for l in self.lines[1:]:
            w = l[4:].split(" ")
            if w[0].upper() == kw.upper():
                return w[1:]
        return None


def code_ok(code, want):
    """want: int (exact), str prefix ("5", "55"), or a tuple/list of those."""
    if isinstance(want, (tuple, list, set)):
        return any(code_ok(code, w) for w in want)
    if isinstance(want, int):
        return code == want
    return str(code).startswith(str(want))


class Conn:
    def __init__(self, port, host="127.0.0.1", bind=None, timeout=DEFAULT_TIMEOUT,
                 tls=False, name=""):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.name = name or ("%s:%s" % (host, port))
        self.buf = b""
        self.log = []
        self.eof = False
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if bind:
            self.sock.bind((bind, 0))
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._note("connected%s" % (" from %s" % bind if bind else ""))
        if tls:
            self._wrap()

    # --- transcript -----------------------------------------------------
    def _note(self, s):
        self.log.append("   %s" % s)

    def transcript(self, limit=60):
        t = self.log[-limit:]
        return "\n".join(("    " + x)[:300] for x in t)

    # --- I/O --------------------------------------------------------------
    def _wrap(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="signet.test")
        self.buf = b""
        self._note("TLS up: %s %s" % (self.sock.version(), self.sock.cipher()[0]))

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        shown = data if len(data) <= 200 else data[:160] + b"...(%d bytes)" % len(data)
        self._note("C: %r" % shown)
        self.sock.sendall(data)

    def _fill(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                self.eof = True
                self._note("S: <EOF>")
                return False
            self.buf += d
            return True

    def readline(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n" not in self.buf:
            if self.eof or not self._fill(deadline):
                if self.buf:
                    line, self.buf = self.buf, b""
                    self._note("S: %r (no CRLF)" % line)
                    return line.decode("utf-8", "replace")
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        s = line.decode("utf-8", "replace")
        self._note("S: %s" % s)
        return s

    def reply(self, timeout=None):
        """One (possibly multi-line) reply, None on EOF; raises socket.timeout."""
        lines = []
        while True:
            l = self.readline(timeout)
            if l is None:
                return Reply(lines) if lines else None
            lines.append(l)
            if len(l) < 4 or l[3] != "-":
                return Reply(lines)

    def replies(self, n, timeout=None):
        out = []
        for _ in range(n):
            r = self.reply(timeout)
            if r is None:
                break
            out.append(r)
        return out

    def drain(self, timeout=2.0):
        """Every reply until EOF or `timeout` seconds of silence."""
        out = []
        while True:
            try:
                r = self.reply(timeout)
            except (socket.timeout, TimeoutError):
                return out
            if r is None:
                return out
            out.append(r)

    def wait_eof(self, timeout=5.0):
        """True if the server closes within timeout (after any replies)."""
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                if not self._fill(deadline):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True
        return True

    # --- SMTP -------------------------------------------------------------
    def cmd(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def expect_reply(self, want, enh=None, what="reply", timeout=None):
        try:
            r = self.reply(timeout)
        except (socket.timeout, TimeoutError):
            raise Fail("%s: %s: no reply (timeout), wanted %s\n%s" %
                       (self.name, what, want, self.transcript()))
        if r is None:
            raise Fail("%s: %s: connection closed, wanted %s\n%s" %
                       (self.name, what, want, self.transcript()))
        if not code_ok(r.code, want) or (enh is not None and not (r.enh or "").startswith(enh)):
            raise Fail("%s: %s: got %r, wanted %s%s\n%s" %
                       (self.name, what, r.lines[-1] if r.lines else "", want,
                        " " + enh if enh else "", self.transcript()))
        return r

    def expect(self, line, want, enh=None, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        shown = line if isinstance(line, str) else line.decode("utf-8", "replace")
        return self.expect_reply(want, enh, what=shown[:60], timeout=timeout)

    def expect_greeting(self):
        return self.expect_reply(220, what="greeting")

    def ehlo(self, name="client.test"):
        r = self.expect("EHLO " + name, 250)
        return r

    def starttls(self):
        self.expect("STARTTLS", 220, "2.0.0")
        self._wrap()

    def mail_transaction(self, sender, rcpts, message, data_cmd="DATA"):
        """MAIL/RCPT/DATA/message/. one step at a time; returns the final Reply."""
        self.expect("MAIL FROM:<%s>" % sender, 250, "2.1.0")
        for r in rcpts:
            self.expect("RCPT TO:<%s>" % r, 250, "2.1.5")
        self.expect("DATA", 354)
        self.send(dot_stuff(message) + b".\r\n")
        return self.expect_reply(250, "2.0.0", what="end of DATA")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def dot_stuff(msg):
    """CRLF message (bytes) -> DATA text, without the final .CRLF."""
    if isinstance(msg, str):
        msg = msg.encode("utf-8")
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    out = re.sub(rb"(?m)^\.", b"..", msg)
    return out


def make_message(frm="sender@signed.example", to="rcpt@rcpt.example", subject="test",
                 body="Hello.\r\n", msgid=None, extra=()):
    if msgid is None:
        msgid = "<%d.%d@client.test>" % (os.getpid(), time.monotonic_ns())
    h = ["From: <%s>" % frm, "To: <%s>" % to, "Subject: %s" % subject,
         "Date: Thu, 01 Jan 2026 00:00:00 +0000", "Message-ID: %s" % msgid]
    h += list(extra)
    b = body if isinstance(body, bytes) else body.encode("utf-8")
    return ("\r\n".join(h) + "\r\n\r\n").encode("utf-8") + b


QUEUED_RE = re.compile(r"^250[ -]2\.0\.0 Ok: queued as ([0-9A-Za-z]+)")


def queue_id(reply):
    m = QUEUED_RE.match(reply.lines[-1]) if reply else None
    return m.group(1) if m else None


# --- PROXY protocol -------------------------------------------------------
def proxy_v1(src, dst, sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src, dst, sport=40000, dport=25, local=False, tlvs=b""):
    if local:
        return PROXY_V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    if ":" in src:
        fam = 0x21
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    body = addrs + struct.pack("!HH", sport, dport) + tlvs
    return PROXY_V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def check(cond, msg, conn=None):
    if not cond:
        raise Fail(msg + ("\n" + conn.transcript() if conn else ""))


def main(fn):
    """Run fn(); Fail -> 'FAIL: ...' and exit 1."""
    try:
        fn()
    except Fail as e:
        print("FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
    except (OSError, socket.timeout) as e:
        import traceback
        traceback.print_exc()
        print("FAIL: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
