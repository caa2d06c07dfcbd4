#!/bin/sh
# run.sh - run libFuzzer targets: tests/fuzz/run.sh SECONDS TARGET...
#
# Each build-fuzz/TARGET (made by `make fuzz`) runs for SECONDS on a scratch
# copy of tests/fuzz/corpus/TARGET, so the committed corpus never grows; new
# inputs die with the scratch directory.  Prints `ok TARGET (N execs)` per
# clean target.  On a crash, leak, sanitizer report or timeout it prints the
# report and the input (in hex when small), keeps the input and the log under
# build-fuzz/artifacts/TARGET/, goes on with the next target and exits 1 at
# the end.  FUZZ_DIR overrides build-fuzz; FUZZ_MAX_LEN overrides -max_len.
set -u

usage() {
	echo "usage: tests/fuzz/run.sh SECONDS TARGET..." >&2
	exit 2
}

[ $# -ge 2 ] || usage
secs=$1
shift
case $secs in
'' | *[!0-9]* | 0) usage ;;
esac

cd "$(dirname "$0")/../.." || exit 2
fuzz_dir=${FUZZ_DIR:-build-fuzz}
fail=0

# UBSan only warns unless told to stop; a report must fail the run.
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS ASAN_OPTIONS

for t in "$@"; do
	bin=$fuzz_dir/$t
	if [ ! -x "$bin" ]; then
		echo "FAIL $t: $bin not built (make fuzz builds it)"
		fail=1
		continue
	fi
	case $t in
	fuzz_canon) maxlen=4096 ;;   # SIMD edge cases live in short inputs
	fuzz_header) maxlen=16384 ;; # room for a few signature fields
	*) maxlen=8192 ;;
	esac
	maxlen=${FUZZ_MAX_LEN:-$maxlen}

	work=$(mktemp -d "${TMPDIR:-/tmp}/signet-$t.XXXXXX") || exit 2
	mkdir "$work/corpus" "$work/artifacts"
	if [ -d "tests/fuzz/corpus/$t" ]; then
		cp -R "tests/fuzz/corpus/$t/." "$work/corpus/"
	fi

	"$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$work/artifacts/" "$work/corpus" \
		>"$work/log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" |
		tail -n 1)

	if [ $rc -eq 0 ] && [ -z "$(ls -A "$work/artifacts")" ]; then
		echo "ok $t (${execs:-?} execs)"
		rm -rf "$work"
		continue
	fi

	fail=1
	keep=$fuzz_dir/artifacts/$t
	mkdir -p "$keep"
	cp "$work/log" "$keep/log"
	echo "CRASH $t (exit $rc, ${execs:-?} execs); log in $keep/log"
	# The report from the first sign of trouble on, without libFuzzer's
	# own frames or ASan's shadow map, bounded.
	awk '/^==[0-9]+==|runtime error|^fuzz_[a-z]+:|^ALARM/ { on = 1 }
	    /^Shadow bytes around/ { skip = 1 }
	    skip && /^==[0-9]+==ABORTING/ { skip = 0 }
	    skip || / in fuzzer::| in __libc_start| in _start | in main / { next }
	    /^stat::/ { next }
	    on && n < 60 { print "  " $0; n++ }' "$work/log"
	for a in "$work"/artifacts/*; do
		[ -f "$a" ] || continue
		cp "$a" "$keep/"
		name=$(basename "$a")
		size=$(wc -c <"$a")
		echo "  input $keep/$name ($size bytes); reproduce: $bin $keep/$name"
		if [ "$size" -le 512 ]; then
			printf '  hex: '
			od -An -tx1 -v "$a" | tr -d ' \n'
			echo
		fi
	done
	rm -rf "$work"
done
exit $fail
