# lib_smtp.sh - helpers for the SMTP daemon scenarios (tests/integ/5x-*.sh).
#
# A scenario starts with
#     . "$(dirname "$0")/lib_smtp.sh"
# which sources lib.sh (ROOT, T, PY, CTL, fail, run, expect_ok, ...) and adds:
#   SIGNET      $SIGNET_BIN/signet
#   SMTPDIR     tests/integ/smtp (smtpt.py, qfile.py, ...)
#   PORT ADMIN_PORT TLS_PORT PROXY_PORT   free loopback ports, exported
#   SPOOL       $T/spool (spool_dir), KEYS ($T/keys: TXT records for the
#               verifiers), KDIR ($T/k: private keys), TLSDIR ($T/tls)
#   AUTH_USER AUTH_PASS   a user of the smtpd_auth_file (AUTH_USER2/AUTH_PASS2:
#               the same with a yescrypt hash)
# and the functions below.  Every signet (and every other server) started
# through these helpers is killed when the scenario exits; on a failure the
# tail of the daemon's log is shown.
#
# Everything that knows the daemon's setting names is in smtp_conf, so a
# renamed setting is a one-line change here.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIGNET=$SIGNET_BIN/signet
SMTPDIR=$INTEG/smtp
SPOOL=$T/spool
KEYS=$T/keys
KDIR=$T/k
TLSDIR=$T/tls
SIGNET_LOG=$T/signet.log
SIGNET_PID=""
SMTP_PIDS=""
SMTP_AT_EXIT=""
AUTH_USER=alice
AUTH_PASS='correct horse 1'
AUTH_USER2=bob
AUTH_PASS2='battery staple 2'
export PYTHONPATH=$SMTPDIR${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
export T SPOOL KEYS SMTPDIR AUTH_USER AUTH_PASS AUTH_USER2 AUTH_PASS2

need "$SIGNET"

# --- cleanup ------------------------------------------------------------------
# smtp_track PID - kill PID (TERM, then KILL) when the scenario exits.
smtp_track() {
	SMTP_PIDS="$SMTP_PIDS $1"
}

# smtp_at_exit CMD - run CMD (eval) at exit, after the processes are gone.
smtp_at_exit() {
	SMTP_AT_EXIT="$SMTP_AT_EXIT
$1"
}

_smtp_exit() {
	local rc=$1 p
	for p in $SMTP_PIDS; do
		kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
	done
	for p in $SMTP_PIDS; do
		local i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 30 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
	done
	if [ "$rc" != 0 ] && [ -s "$SIGNET_LOG" ]; then
		echo "--- signet log (tail):" >&2
		tail -n 40 "$SIGNET_LOG" | cut -c1-400 >&2
	fi
	eval "$SMTP_AT_EXIT"
	_cleanup
}
trap '_smtp_exit $?' EXIT

# --- setup ------------------------------------------------------------------------
# smtp_ports - pick free loopback ports: PORT (plain), ADMIN_PORT (/metrics),
# TLS_PORT (TLS on connect), PROXY_PORT (PROXY protocol), PORT5..PORT6 spares.
smtp_ports() {
	local p
	p=$("$PY" - <<'EOF'
import socket
ss = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    ss.append(s)
print(" ".join(str(s.getsockname()[1]) for s in ss))
EOF
	) || fail "cannot pick ports"
	set -- $p
	PORT=$1 ADMIN_PORT=$2 TLS_PORT=$3 PROXY_PORT=$4 PORT5=$5 PORT6=$6
	export PORT ADMIN_PORT TLS_PORT PROXY_PORT PORT5 PORT6
}

# smtp_keys - DKIM keys made with `signetctl dkim keygen` (its TXT output is
# the key record the verifiers read): signed.example rsa1 (RSA-2048) and
# ed1 (Ed25519); other.example rsa1 (for reload tests, not configured by
# default).
smtp_keys() {
	mkdir -p "$KEYS" "$KDIR"
	"$CTL" dkim keygen -a rsa -b 2048 -o "$KDIR/rsa1.pem" >"$KEYS/rsa1._domainkey.signed.example.txt" 2>"$T/err" ||
		{ cat "$T/err" >&2; fail "signetctl dkim keygen -a rsa"; }
	"$CTL" dkim keygen -a ed25519 -o "$KDIR/ed1.pem" >"$KEYS/ed1._domainkey.signed.example.txt" 2>"$T/err" ||
		{ cat "$T/err" >&2; fail "signetctl dkim keygen -a ed25519"; }
	"$CTL" dkim keygen -a rsa -b 2048 -o "$KDIR/other.pem" >"$KEYS/rsa1._domainkey.other.example.txt" 2>"$T/err" ||
		{ cat "$T/err" >&2; fail "signetctl dkim keygen (other.example)"; }
}

# smtp_tls - a self-signed certificate for STARTTLS / TLS on connect.
smtp_tls() {
	need openssl
	mkdir -p "$TLSDIR"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$TLSDIR/key.pem" -out "$TLSDIR/cert.pem" -days 2 \
		-subj /CN=signet.test >/dev/null 2>&1 || fail "openssl req (test certificate)"
	chmod 600 "$TLSDIR/key.pem"
}

# smtp_authfile - user:crypt-hash lines: alice SHA-512-crypt, bob yescrypt.
smtp_authfile() {
	need mkpasswd
	local h1 h2
	h1=$(mkpasswd -m sha-512 "$AUTH_PASS") || fail "mkpasswd -m sha-512"
	h2=$(mkpasswd -m yescrypt "$AUTH_PASS2") || fail "mkpasswd -m yescrypt"
	printf '# test users\n%s:%s\n%s:%s\n' "$AUTH_USER" "$h1" "$AUTH_USER2" "$h2" >"$T/passwd"
	chmod 600 "$T/passwd"
}

# smtp_setup - ports, keys, certificate, auth file.
smtp_setup() {
	need "$PY"
	smtp_ports
	smtp_keys
	smtp_tls
	smtp_authfile
	mkdir -p "$SPOOL"
}

# --- configuration ----------------------------------------------------------------
# smtp_conf FILE [SETTING...] - write a signet configuration.  Each SETTING
# is "name = value" (or "name=value"); the first SETTING for a name replaces
# every default line of that name, further ones for the same name add lines
# (listen, dkim_sign are repeatable); "name=-" drops the default.
# Listener options: "$(listen_plain)", "$(listen_tls)", "$(listen_proxy)".
smtp_conf() {
	local f=$1
	shift
	local defaults=(
		"listen = 127.0.0.1:$PORT"
		"admin_listen = 127.0.0.1:$ADMIN_PORT"
		"spool_dir = $SPOOL"
		"myhostname = signet.test"
		"mynetworks = 127.0.0.1/32"
		"workers = 2"
		"signing_threads = 2"
		"smtpd_tls_cert_file = $TLSDIR/cert.pem"
		"smtpd_tls_key_file = $TLSDIR/key.pem"
		"smtpd_auth_file = $T/passwd"
		"dkim_sign = signed.example rsa1 $KDIR/rsa1.pem"
		"dkim_sign = signed.example ed1 $KDIR/ed1.pem"
		# these scenarios look at what was accepted: keep it in the queue
		"defer_transports = smtp"
	)
	local overridden=" " s name val d out=()
	for s in "$@"; do
		name=${s%%=*}
		name=${name//[[:space:]]/}
		overridden="$overridden$name "
	done
	for d in "${defaults[@]}"; do
		name=${d%% *}
		case $overridden in *" $name "*) continue ;; esac
		out+=("$d")
	done
	for s in "$@"; do
		name=${s%%=*}
		name=${name//[[:space:]]/}
		val=${s#*=}
		val=${val#"${val%%[![:space:]]*}"}
		[ "$val" = - ] && continue
		out+=("$name = $val")
	done
	{
		echo "# $SCENARIO: written by lib_smtp.sh smtp_conf"
		printf '%s\n' "${out[@]}"
	} >"$f"
}
listen_plain() { echo "listen = 127.0.0.1:$PORT"; }
listen_tls() { echo "listen = 127.0.0.1:$TLS_PORT tls"; }
listen_proxy() { echo "listen = 127.0.0.1:$PROXY_PORT proxy"; }

# --- the daemon -------------------------------------------------------------------
# port_listening PORT - 0 if something listens on 127.0.0.1:PORT.
port_listening() {
	[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# wait_port PORT [SECONDS] - wait until PORT listens.
wait_port() {
	local port=$1 secs=${2:-15} i=0
	while ! port_listening "$port"; do
		[ $i -ge $((secs * 10)) ] && return 1
		sleep 0.1
		i=$((i + 1))
	done
	return 0
}

# signet_start CONF [PORT...] - start `signet -c CONF` in the foreground (in
# the background of this shell), stderr to $SIGNET_LOG; wait until each
# PORT (default: $PORT) listens.  Sets SIGNET_PID.
signet_start() {
	local conf=$1 p
	shift
	[ $# -gt 0 ] || set -- "$PORT"
	echo "=== $(date +%T.%N) signet -c $conf" >>"$SIGNET_LOG"
	"$SIGNET" -c "$conf" >>"$SIGNET_LOG" 2>&1 </dev/null &
	SIGNET_PID=$!
	export SIGNET_PID
	smtp_track "$SIGNET_PID"
	for p in "$@"; do
		if ! wait_port "$p" 15; then
			kill -0 "$SIGNET_PID" 2>/dev/null || {
				wait "$SIGNET_PID"
				fail "signet exited ($?) at start instead of listening on $p"
			}
			fail "signet is not listening on 127.0.0.1:$p after 15 s"
		fi
	done
	kill -0 "$SIGNET_PID" 2>/dev/null || fail "signet died right after start"
	note "signet pid $SIGNET_PID on $*"
}

# signet_alive - fail if the daemon has died.
signet_alive() {
	kill -0 "$SIGNET_PID" 2>/dev/null || {
		wait "$SIGNET_PID" 2>/dev/null
		fail "signet (pid $SIGNET_PID) died (exit $?)${1:+: $1}"
	}
}

# signet_wait [SECONDS] - wait (default 15 s) for the daemon to exit by
# itself (after a signal sent elsewhere); fail if it does not, or exits
# non-zero.  Sets SIGNET_RC.
signet_wait() {
	local secs=${1:-15} i=0
	[ -n "$SIGNET_PID" ] || return 0
	while kill -0 "$SIGNET_PID" 2>/dev/null; do
		if [ $i -ge $((secs * 10)) ]; then
			kill -KILL "$SIGNET_PID"
			fail "signet did not exit within ${secs}s of SIGTERM"
		fi
		sleep 0.1
		i=$((i + 1))
	done
	wait "$SIGNET_PID"
	SIGNET_RC=$?
	SIGNET_PID=""
	[ "$SIGNET_RC" = 0 ] || fail "signet exited $SIGNET_RC after SIGTERM"
	signet_log_clean
}

# signet_stop [SECONDS] - SIGTERM, then signet_wait.
signet_stop() {
	[ -n "$SIGNET_PID" ] || return 0
	kill -TERM "$SIGNET_PID" 2>/dev/null
	signet_wait "$@"
}

# signet_kill9 - SIGKILL and reap.
signet_kill9() {
	kill -KILL "$SIGNET_PID" 2>/dev/null
	wait "$SIGNET_PID" 2>/dev/null
	SIGNET_PID=""
}

# signet_log_clean - no sanitizer report / assertion in the daemon's log.
signet_log_clean() {
	if grep -Eq 'AddressSanitizer|LeakSanitizer|runtime error:|Assertion .* failed|double free|stack smashing' "$SIGNET_LOG"; then
		grep -E -A20 'AddressSanitizer|LeakSanitizer|runtime error:|Assertion|double free|stack smashing' "$SIGNET_LOG" | head -40 >&2
		fail "the daemon's log has a sanitizer report or an assertion"
	fi
}

# --- clients ----------------------------------------------------------------------
# smtp_py - run a python3 snippet (stdin) with smtpt importable and the
# ports etc. in the environment.  Exit status is the snippet's.
smtp_py() {
	"$PY" - "$@"
}

# swaks_send [SWAKS-ARGS...] - send one message with swaks to $PORT (from
# sender@signed.example to rcpt@rcpt.example unless overridden); like run:
# RC, $T/out, $T/err.  QID is the queue id from "250 2.0.0 Ok: queued as",
# empty if none.
swaks_send() {
	need swaks
	run timeout 30 swaks --server 127.0.0.1 --port "$PORT" --helo client.test \
		--from sender@signed.example --to rcpt@rcpt.example \
		--h-Subject "signet $SCENARIO" --body "Hello from $SCENARIO." "$@"
	QID=$(sed -n 's/.*<[~-]* *250[ -]2\.0\.0 Ok: queued as \([0-9A-Za-z]*\).*/\1/p' "$T/out" | tail -n 1)
}

# expect_queued [SWAKS-ARGS...] - swaks_send and fail unless queued.
expect_queued() {
	swaks_send "$@"
	if [ "$RC" != 0 ] || [ -z "$QID" ]; then
		show
		fail "swaks: no '250 2.0.0 Ok: queued as ID' (exit $RC): $*"
	fi
}

# --- the spool --------------------------------------------------------------------
qfile() {
	"$PY" "$SMTPDIR/qfile.py" "$@"
}

# spool_count - files in $SPOOL/active.
spool_count() {
	find "$SPOOL/active" -maxdepth 1 -type f 2>/dev/null | wc -l
}

# spool_tmp_count - files in $SPOOL/tmp.
spool_tmp_count() {
	find "$SPOOL/tmp" -maxdepth 1 -type f 2>/dev/null | wc -l
}

# expect_qfile ID - $SPOOL/active/ID exists and is intact.
expect_qfile() {
	local f=$SPOOL/active/$1
	[ -f "$f" ] || {
		ls -la "$SPOOL" "$SPOOL"/* >&2 2>/dev/null
		fail "no queue file $f for queue id $1"
	}
	qfile check "$f" >"$T/qcheck" || { cat "$T/qcheck" >&2; fail "queue file $1 is not intact"; }
}

# spooled_message ID OUT - the message as it would be sent (S + M).
spooled_message() {
	expect_qfile "$1"
	qfile message "$SPOOL/active/$1" >"$2" || fail "qfile.py message $1"
}

# expect_signed ID [NSIGS] - the spooled message has NSIGS (default 2:
# RSA + Ed25519 for signed.example) DKIM-Signature fields that dkimpy
# verifies, and Mail::DKIM verifies the RSA one.
expect_signed() {
	local id=$1 n=${2:-2} eml=$T/$1.eml
	spooled_message "$id" "$eml"
	local got
	got=$(grep -ci '^DKIM-Signature:' "$eml")
	[ "$got" = "$n" ] || { head -c 2000 "$eml" >&2; fail "$id: $got DKIM-Signature fields, wanted $n"; }
	dkimpy_verify --keys "$KEYS" "$eml" >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "$id: dkimpy does not verify the spooled message"; }
	maildkim_verify --keys "$KEYS" "$eml" >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "$id: Mail::DKIM does not verify the spooled message"; }
}

# envelope_has ID REGEX - the E record has a line matching REGEX (ERE).
envelope_has() {
	qfile envelope "$SPOOL/active/$1" >"$T/env" || fail "qfile.py envelope $1"
	grep -Eq -- "$2" "$T/env" || { cat "$T/env" >&2; fail "$1: envelope has no line matching /$2/"; }
}

# --- metrics ----------------------------------------------------------------------
# metrics_get [FILE] - GET /metrics into FILE (default $T/metrics).
metrics_get() {
	local f=${1:-$T/metrics}
	need curl
	curl -fsS --max-time 10 "http://127.0.0.1:$ADMIN_PORT/metrics" -o "$f" 2>"$T/err" ||
		{ cat "$T/err" >&2; fail "GET /metrics on 127.0.0.1:$ADMIN_PORT"; }
}

# metric SAMPLE-NAME [LABEL-REGEX] [FILE] - sum of the samples of that name
# whose label text matches LABEL-REGEX (ERE, default any); 0 if none.
metric() {
	"$PY" - "$1" "${2:-}" "${3:-$T/metrics}" <<'EOF'
import re, sys
name, lre, path = sys.argv[1], sys.argv[2], sys.argv[3]
tot = 0.0
for line in open(path, encoding="utf-8", errors="replace"):
    if not line.strip() or line.startswith("#"):
        continue
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
    if not m or m.group(1) != name:
        continue
    if lre and not re.search(lre, m.group(2) or ""):
        continue
    tot += float(m.group(3))
print(int(tot) if tot == int(tot) else tot)
EOF
}

# secs N - a duration setting's value (Postfix style: "2s").
secs() {
	echo "${1}s"
}
