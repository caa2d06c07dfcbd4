#!/bin/bash
# run.sh - run every integration scenario tests/integ/[0-9]*.sh.
#
#   tests/integ/run.sh [-v] [PATTERN...]
#
# SIGNET_BIN (default: bin, relative to the repo root) names the directory
# holding signetctl.  Each scenario runs alone under a timeout; the output is
# one "ok NAME (Ns)" or "not ok NAME" line per scenario (with the scenario's
# output after a failure, or always with -v), then exactly
#   integ: N passed, M failed
# Exit 1 if any failed or none ran.  PATTERNs (substrings of file names)
# choose scenarios.
set -u
export LC_ALL=C
INTEG=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$INTEG/../.." && pwd)
export SIGNET_BIN=${SIGNET_BIN:-bin}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-300}

verbose=0
if [ "${1:-}" = "-v" ]; then
	verbose=1
	shift
fi

cd "$ROOT" || exit 1
pass=0
failed=0
failed_names=""
log=$(mktemp "${TMPDIR:-/tmp}/signet-integ-log.XXXXXX") || exit 1
trap 'rm -f "$log"' EXIT

for f in "$INTEG"/[0-9]*.sh; do
	[ -e "$f" ] || continue
	name=$(basename "$f" .sh)
	if [ $# -gt 0 ]; then
		sel=0
		for p in "$@"; do
			case $name in *"$p"*) sel=1 ;; esac
		done
		[ $sel = 1 ] || continue
	fi
	t0=$(date +%s)
	timeout -k 10 "$SCENARIO_TIMEOUT" bash "$f" </dev/null >"$log" 2>&1
	rc=$?
	dt=$(($(date +%s) - t0))
	if [ $rc = 0 ]; then
		pass=$((pass + 1))
		echo "ok $name (${dt}s)"
		[ $verbose = 1 ] && sed 's/^/    /' "$log"
	else
		failed=$((failed + 1))
		failed_names="$failed_names $name"
		why=""
		[ $rc = 124 ] && why=" (timed out after ${SCENARIO_TIMEOUT}s)"
		echo "not ok $name (exit $rc, ${dt}s)$why"
		tail -n 60 "$log" | sed 's/^/    /'
	fi
done

[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "integ: $pass passed, $failed failed"
[ $failed = 0 ] && [ $pass -gt 0 ]
