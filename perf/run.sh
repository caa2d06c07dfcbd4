#!/bin/sh
# run.sh - run the DKIM benchmarks: perf/run.sh BUILD_DIR [bench_dkim options]
#
# `make bench` calls this with its build directory.  It first runs
# `openssl speed` (one process, OPENSSL_SECONDS per test, 3 by default) for
# the RSA-2048 and Ed25519 sign rates on this machine, right now, then runs
# BUILD_DIR/bench_dkim with those rates so that it can report our signing
# speed as a ratio to OpenSSL's own, next to the body-hashing ratios.  Any
# further arguments go to bench_dkim (see perf/README.md).
set -eu

if [ $# -lt 1 ]; then
	echo "usage: perf/run.sh BUILD_DIR [bench_dkim options]" >&2
	exit 2
fi
build=$1
shift
bench=$build/bench_dkim
if [ ! -x "$bench" ]; then
	echo "perf/run.sh: $bench not built (make bench builds it)" >&2
	exit 1
fi
secs=${OPENSSL_SECONDS:-3}

log=$(mktemp "${TMPDIR:-/tmp}/signet-speed.XXXXXX")
trap 'rm -f "$log"' EXIT INT TERM

echo "openssl speed -seconds $secs rsa2048 ed25519 (one process) ..."
if ! openssl speed -seconds "$secs" rsa2048 ed25519 >"$log" 2>&1; then
	cat "$log" >&2
	exit 1
fi
# The result table: "rsa 2048 bits 0.000290s 0.000016s 3443.0 62530.0" and
# " 253 bits EdDSA (Ed25519) 0.0000s 0.0001s 28399.0 10887.0"; sign/s is
# the next-to-last column.
rsa=$(awk '/^rsa 2048 bits/ { v = $(NF - 1) } END { print v }' "$log")
ed=$(awk '/EdDSA \(Ed25519\)/ && $(NF - 1) ~ /^[0-9.]+$/ { v = $(NF - 1) }
    END { print v }' "$log")
if [ -z "$rsa" ] || [ -z "$ed" ]; then
	echo "perf/run.sh: cannot parse openssl speed output:" >&2
	cat "$log" >&2
	exit 1
fi
echo "openssl $(openssl version | cut -d' ' -f2): rsa2048 $rsa sign/s," \
	"ed25519 $ed sign/s"
echo

rm -f "$log"
"$bench" --openssl-rsa2048 "$rsa" --openssl-ed25519 "$ed" "$@"
