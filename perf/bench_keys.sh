#!/bin/bash
# bench_keys.sh - managed-key signing throughput with 1, 10,000 and 100,000
# managed domains, as a ratio to the single-domain figure (issue 5).  A
# benchmark, not a test: it prints figures and fails only when something
# breaks.  See perf/README.md, "Managed keys".
#
#   perf/bench_keys.sh [BUILD_DIR [bench_keys options]]
#
# BUILD_DIR (default: $BUILD or build) holds the objects of `make all`;
# this script builds BUILD_DIR/bench_keys from perf/bench_keys.c (the
# Makefile's rule), then runs it in a temporary directory.  Options
# after BUILD_DIR go to bench_keys, e.g. -t 2 -R 5, -j 1, -n 1,1000.
#
# Environment:
#   BIN               bin directory for `make all` (default: bin)
#   BENCH_KEYS_DIR    work directory to use and keep (key pool, file stores,
#                     reused by the next run); default: a temporary one under
#                     /dev/shm (tmpfs, so that writing 100,000 records with
#                     their fsyncs takes seconds, not minutes), removed at
#                     the end
#   BENCH_KEYS_REDIS=1  also run with Redis as the store: a redis-server of
#                     our own on a free port of 127.0.0.1, no persistence
#   BENCH_KEEP=1      keep the temporary directory
set -u
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
BUILD=${1:-${BUILD:-build}}
[ $# -gt 0 ] && shift
BIN=${BIN:-bin}
PY=/usr/bin/python3
BENCH_NAME=bench_keys
. "$ROOT/perf/lib_bench.sh"

# The Makefile's rule builds it from the objects of `make all`.
build_bench() {
	make --no-print-directory BUILD="$BUILD" BIN="$BIN" all \
	    "$BUILD/bench_keys"
}
build_bench >"${TMPDIR:-/tmp}/bench_keys.build.$$" 2>&1 || {
	cat "${TMPDIR:-/tmp}/bench_keys.build.$$" >&2
	rm -f "${TMPDIR:-/tmp}/bench_keys.build.$$"
	die "build failed"
}
rm -f "${TMPDIR:-/tmp}/bench_keys.build.$$"
BENCH=$BUILD/bench_keys
case $BENCH in /*) ;; *) BENCH=$ROOT/$BENCH ;; esac

if [ -n "${BENCH_KEYS_DIR:-}" ]; then
	W=$BENCH_KEYS_DIR
	mkdir -p "$W" || die "mkdir $W"
	KEEP=1
else
	base=/dev/shm
	[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
	W=$(mktemp -d "$base/signet-bench-keys.XXXXXX") || die "mktemp"
	KEEP=${BENCH_KEEP:-0}
fi
REDIS_PID=
cleanup() {
	stop_pid "$REDIS_PID"
	if [ "$KEEP" = 1 ]; then
		echo "bench_keys: work directory kept: $W"
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "== managed keys, file store ($W) =="
"$BENCH" -d "$W" "$@" || exit 1

if [ "${BENCH_KEYS_REDIS:-0}" = 1 ]; then
	need_cmds redis-server redis-cli "$PY"
	port=$(free_ports 1)
	mkdir -p "$W/redis"
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/secret"
	chmod 600 "$W/secret"
	redis-server --bind 127.0.0.1 --port "$port" --save '' \
	    --appendonly no --dir "$W/redis" --databases 16 \
	    >"$W/redis/log" 2>&1 &
	REDIS_PID=$!
	wait_port "$port" 15 || die "redis-server did not start"
	echo
	echo "== managed keys, Redis store (127.0.0.1:$port) =="
	"$BENCH" -d "$W" --redis "127.0.0.1:$port" --secret "$W/secret" \
	    "$@" || exit 1
fi
exit 0
