#!/usr/bin/env bash
# tests/run.sh - runs every test suite of the sanitizer build and sums their results.
# Each suite prints "N passed, N failed" as its last line; this script prints the total
# last and exits non-zero if anything failed (or a suite crashed without a summary).
# TESTS_ONLY=unit|fuzz|rules|integration narrows the run; TESTS_FILTER=substr picks suites by name.
set -u
cd "$(dirname "$0")/.."

export ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:${LSAN_OPTIONS:-}"
export IOCD_BIN="${IOCD_BIN:-$PWD/build/asan/iocd}"
PY=/usr/bin/python3

total_pass=0
total_fail=0
broken=()
log_dir=build/test-logs
mkdir -p "$log_dir"

run_suite() { # name, command...
    local name=$1
    shift
    if [ -n "${TESTS_FILTER:-}" ] && [[ $name != *"$TESTS_FILTER"* ]]; then
        return
    fi
    echo "== $name"
    local log="$log_dir/${name//\//_}.log"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local summary
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$summary" ]; then
        echo "   $name: no summary (exit $rc): counted as 1 failure"
        total_fail=$((total_fail + 1))
        broken+=("$name")
        return
    fi
    local p f
    p=$(echo "$summary" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$f" -eq 0 ] && [ "$rc" -ne 0 ]; then
        echo "   $name: exit $rc with no failed test: counted as 1 failure"
        total_fail=$((total_fail + 1))
        broken+=("$name")
    elif [ "$f" -ne 0 ]; then
        broken+=("$name")
    fi
}

only=${TESTS_ONLY:-all}

if [ "$only" = all ] || [ "$only" = unit ]; then
    for t in build/asan/tests/test_*; do
        [ -x "$t" ] && run_suite "unit/$(basename "$t")" "$t"
    done
fi

if [ "$only" = all ] || [ "$only" = fuzz ]; then
    for t in build/asan/tests/replay_fuzz_*; do
        [ -x "$t" ] || continue
        name=$(basename "$t")
        corpus=tests/fuzz/corpus/${name#replay_fuzz_}
        run_suite "fuzz/$name" "$t" "$corpus"
    done
fi

if [ "$only" = all ] || [ "$only" = rules ]; then
    # The shipped example rules and their tests, through the real `iocd rules test`.
    run_suite "rules/examples" "$IOCD_BIN" rules test examples/rules/*_test.lua
    # The engine's own cases: instances created and freed under its per-series cache.
    run_suite "rules/engine" "$IOCD_BIN" rules test tests/rules/*_test.lua
fi

if [ "$only" = all ] || [ "$only" = integration ]; then
    for t in tests/integration/test_*.py; do
        [ -f "$t" ] && run_suite "integration/$(basename "$t" .py)" "$PY" "$t"
    done
fi

if [ ${#broken[@]} -ne 0 ]; then
    echo "failing suites: ${broken[*]} (logs in $log_dir)"
fi
echo "${total_pass} passed, ${total_fail} failed"
[ "$total_fail" -eq 0 ]
