# lib.sh - helpers for the integration scenarios (sourced, bash).
#
# A scenario is tests/integ/NN-name.sh and starts with
#     . "$(dirname "$0")/lib.sh"
# after which it has:
#   ROOT        the repo root
#   SIGNET_BIN  the binary directory (env; default "bin", relative to ROOT)
#   CTL         $SIGNET_BIN/signetctl
#   PY          the Debian python3 (the one with dkimpy)
#   CORPUS      tests/corpus
#   T           a private temp dir, removed on exit (kept if SIGNET_KEEP_TMP=1)
# and the functions below.  Scenarios run with `set -u`, not `set -e`: every
# check is explicit and calls fail, which names the scenario line.

set -u
export LC_ALL=C

INTEG=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$INTEG/../.." && pwd)
SIGNET_BIN=${SIGNET_BIN:-bin}
case $SIGNET_BIN in
/*) ;;
*) SIGNET_BIN=$ROOT/$SIGNET_BIN ;;
esac
CTL=$SIGNET_BIN/signetctl
PY=/usr/bin/python3
CORPUS=$ROOT/tests/corpus
SCENARIO=$(basename "$0" .sh)

T=$(mktemp -d "${TMPDIR:-/tmp}/signet-integ-$SCENARIO.XXXXXX") || {
	echo "cannot create a temp dir" >&2
	exit 1
}
_cleanup() {
	if [ "${SIGNET_KEEP_TMP:-0}" = 1 ]; then
		echo "# kept $T" >&2
	else
		rm -rf "$T"
	fi
}
trap _cleanup EXIT

# fail MSG... - report where (scenario:line, then the caller chain) and exit 1.
fail() {
	local i=0 where=""
	while caller "$i" >/dev/null 2>&1; do
		local c
		c=$(caller "$i")
		# c = "LINE FUNC FILE"
		local line=${c%% *} rest=${c#* }
		local func=${rest%% *} file=${rest#* }
		where="$where $(basename "$file"):$line${func:+($func)}"
		i=$((i + 1))
	done
	echo "FAIL:$where: $*" >&2
	exit 1
}

# note MSG - a progress line (shown when the scenario fails, or run -v).
note() {
	echo "# $*"
}

# need CMD... - a missing component is a failure, never a skip.
need() {
	local c
	for c in "$@"; do
		case $c in
		*/*) [ -x "$c" ] || fail "missing component: $c (not built or not installed)" ;;
		*) command -v "$c" >/dev/null 2>&1 || fail "missing component: $c (install it: see scripts/deps.sh)" ;;
		esac
	done
}

# need_dkimpy / need_maildkim - the independent verifiers.
need_dkimpy() {
	need "$PY"
	"$PY" -c 'import dkim, nacl.signing' 2>/dev/null ||
		fail "missing component: dkimpy/pynacl for $PY (Debian python3-dkim python3-nacl)"
}
need_maildkim() {
	need perl
	perl -MMail::DKIM::Verifier -e 1 2>/dev/null ||
		fail "missing component: Mail::DKIM (Debian libmail-dkim-perl)"
}

# run CMD... - run a command, never failing the script; sets RC and leaves
# its stdout in $T/out, its stderr in $T/err.
run() {
	"$@" >"$T/out" 2>"$T/err"
	RC=$?
	return 0
}

# show - print the last run's output (for failure messages).
show() {
	echo "--- stdout (head):" >&2
	head -c 3000 "$T/out" >&2
	echo "--- stderr (head):" >&2
	head -c 3000 "$T/err" >&2
}

# expect_rc N CMD... - run CMD; fail unless it exits with N.
expect_rc() {
	local want=$1
	shift
	run "$@"
	if [ "$RC" != "$want" ]; then
		show
		fail "expected exit $want, got $RC: $*"
	fi
}

# expect_ok CMD... - run CMD; fail unless it exits 0.
expect_ok() {
	expect_rc 0 "$@"
}

# expect_nonzero CMD... - run CMD; fail if it exits 0 (or crashes/times out: >= 124).
expect_nonzero() {
	run "$@"
	if [ "$RC" = 0 ] || [ "$RC" -ge 124 ]; then
		show
		fail "expected a clean failure exit, got $RC: $*"
	fi
}

# grep_out REGEX [FILE] - fail unless the regex (ERE) matches a line of FILE
# (default: the last run's stdout).
grep_out() {
	local re=$1 f=${2:-$T/out}
	grep -Eq -- "$re" "$f" || {
		echo "--- $f:" >&2
		head -c 3000 "$f" >&2
		fail "no line matches /$re/ in $(basename "$f")"
	}
}

# stderr_says REGEX - the last run's stderr matches REGEX (case-insensitive).
stderr_says() {
	grep -Eqi -- "$1" "$T/err" || {
		show
		fail "stderr does not mention /$1/"
	}
}

# --- keys -------------------------------------------------------------------
# Keys are made with openssl, independently of signetctl keygen, and the TXT
# value written as  KEYS/<selector>._domainkey.<domain>.txt  (with a final
# newline, as `signetctl dkim keygen > file` would leave it).

# mk_rsa_key PEM BITS KEYSDIR SELECTOR DOMAIN
mk_rsa_key() {
	local pem=$1 bits=$2 keys=$3 sel=$4 dom=$5
	mkdir -p "$keys"
	openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$bits" -out "$pem" 2>/dev/null ||
		fail "openssl genpkey RSA $bits"
	chmod 600 "$pem"
	local p
	p=$(openssl pkey -in "$pem" -pubout -outform DER 2>/dev/null | base64 -w0) || fail "openssl pubout"
	printf 'v=DKIM1; k=rsa; p=%s\n' "$p" >"$keys/$sel._domainkey.$dom.txt"
}

# mk_ed25519_key PEM KEYSDIR SELECTOR DOMAIN [SEEDFILE]
# Also writes PEM.seed: the base64 32-byte seed (what dkimpy signs with).
mk_ed25519_key() {
	local pem=$1 keys=$2 sel=$3 dom=$4
	mkdir -p "$keys"
	openssl genpkey -algorithm ED25519 -out "$pem" 2>/dev/null || fail "openssl genpkey ED25519"
	chmod 600 "$pem"
	openssl pkey -in "$pem" -outform DER 2>/dev/null | tail -c 32 | base64 -w0 >"$pem.seed" ||
		fail "openssl ed25519 seed"
	local p
	p=$(openssl pkey -in "$pem" -pubout -outform DER 2>/dev/null | tail -c 32 | base64 -w0) ||
		fail "openssl pubout"
	printf 'v=DKIM1; k=ed25519; p=%s\n' "$p" >"$keys/$sel._domainkey.$dom.txt"
}

# --- verifiers --------------------------------------------------------------
# Each takes a keys dir and files; exit 0 only if every file has at least one
# signature and all pass.  With --expect-fail: exit 0 only if every file has
# at least one signature and none passes.  One line per signature on stdout.

dkimpy_verify() {
	"$PY" "$INTEG/dkimpy-verify.py" "$@"
}
maildkim_verify() {
	perl "$INTEG/maildkim-verify.pl" "$@"
}

# ctl_verify KEYSDIR FILE - signetctl's own verifier; checks the line format.
ctl_verify() {
	local keys=$1 f=$2
	run "$CTL" dkim verify --keys "$keys" "$f"
	[ "$RC" -lt 124 ] || { show; fail "signetctl verify crashed or timed out ($RC) on $f"; }
	# One line per signature; a message with none may get a free-form note.
	if grep -Eq '^(pass|fail)' "$T/out" &&
		grep -Evq '^(pass|fail) d=[^ ]* s=[^ ]* a=[^ ]*( .*)?$' "$T/out"; then
		show
		fail "signetctl verify printed a line not of the form 'pass|fail d=... s=... a=... reason'"
	fi
	return 0
}

# ctl_verify_pass KEYSDIR FILE [NSIGS] - exit 0 and only pass lines (NSIGS of them).
ctl_verify_pass() {
	ctl_verify "$1" "$2"
	if [ "$RC" != 0 ] || ! grep -q '^pass ' "$T/out" || grep -q '^fail ' "$T/out"; then
		show
		fail "signetctl verify did not pass $2 (exit $RC)"
	fi
	if [ $# -ge 3 ]; then
		local n
		n=$(grep -c '^pass ' "$T/out")
		[ "$n" = "$3" ] || { show; fail "signetctl verify: $n pass lines, wanted $3"; }
	fi
}

# ctl_verify_fail KEYSDIR FILE - exit 1 and no pass line.
ctl_verify_fail() {
	ctl_verify "$1" "$2"
	if [ "$RC" != 1 ] || grep -q '^pass ' "$T/out"; then
		show
		fail "signetctl verify should have failed $2 with exit 1 (exit $RC)"
	fi
}

# sigcheck ARGS... - structural checks of signetctl sign output (see sigcheck.py).
sigcheck() {
	"$PY" "$INTEG/sigcheck.py" "$@" ||
		fail "sigcheck: signetctl sign output is malformed (sigcheck.py lines above)"
}

# to_crlf IN OUT / to_lf IN OUT - convert line ends (a last line without
# a newline stays without one).
to_crlf() {
	perl -pe 's/\r?\n\z/\r\n/' "$1" >"$2"
}
to_lf() {
	perl -pe 's/\r?\n\z/\n/' "$1" >"$2"
}

# timed_run CMD... - like run, and sets SECS / MSECS to its wall time.
timed_run() {
	local t0 t1
	t0=$(date +%s%N)
	run "$@"
	t1=$(date +%s%N)
	SECS=$(((t1 - t0) / 1000000000))
	MSECS=$(((t1 - t0) / 1000000))
}

need "$CTL"
