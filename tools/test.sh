#!/usr/bin/env bash
# Install what is missing, build, and run every test:
#   1. unit tests (cmocka, meson test), -Wall -Wextra -Werror
#   2. the same under ASan+UBSan (LeakSanitizer on), and under TSan
#   3. system tests (pytest, /usr/bin/python3) against the built binary,
#      then again against the ASan+UBSan binary (no sanitizer report allowed)
#   4. each fuzz target for a bounded time (clang, libFuzzer)
#   5. bench/run --quick as a smoke test of the benchmark harness
# The last line is "N passed, N failed".  Exit status 0 only if all passed.
# Environment: FUZZ_SECONDS (default 45 per target), SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

tools/install-deps.sh --test || { echo "dependency install failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failures=()
count() {   # count NAME PASSED FAILED
    passed=$((passed + $2))
    failed=$((failed + $3))
    if [ "$3" -ne 0 ]; then failures+=("$1"); fi
}

# meson test summary lines: "Ok: N", "Fail: N", "Timeout: N" ...
meson_stage() {   # meson_stage NAME BUILDDIR SETUP-ARGS...
    local name=$1 dir=$2; shift 2
    echo "=== $name ==="
    if [ ! -f "$dir/build.ninja" ]; then
        if ! meson setup "$dir" "$@" >"$dir.setup.log" 2>&1; then
            cat "$dir.setup.log"; count "$name (setup)" 0 1; return
        fi
    fi
    if ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
        tail -50 "$dir.build.log"; count "$name (build)" 0 1; return
    fi
    local out
    out=$(meson test -C "$dir" --print-errorlogs --num-processes 2 2>&1)
    echo "$out" | grep -E "^ *[0-9]+/[0-9]+ |Ok:|Fail:|Timeout:"
    local ok fail to
    ok=$(echo "$out" | awk '/^Ok:/ {print $2}')
    fail=$(echo "$out" | awk '/^Fail:/ {print $2}')
    to=$(echo "$out" | awk '/^Timeout:/ {print $2}')
    if [ -z "$ok" ]; then echo "$out" | tail -30; count "$name" 0 1; return; fi
    if [ "${fail:-0}" -ne 0 ] || [ "${to:-0}" -ne 0 ]; then echo "$out" | tail -60; fi
    count "$name" "$ok" $(( ${fail:-0} + ${to:-0} ))
}

meson_stage "unit tests" build -Dwerror=true -Dbuildtype=debugoptimized
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
meson_stage "unit tests (ASan+UBSan)" build-asan -Dwerror=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
unset ASAN_OPTIONS UBSAN_OPTIONS
# ThreadSanitizer: the threads of the store's commit pipeline, the audit
# writer, the codec helper pool and the DIMSE/HTTP servers' tests.
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
meson_stage "unit tests (TSan)" build-tsan -Dwerror=true \
    -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
unset TSAN_OPTIONS

# system_stage NAME BINARY: pytest against one build of the binary.
system_stage() {
    local name=$1 bin=$2
    echo "=== $name ==="
    if [ ! -x "$bin" ]; then count "$name (no binary)" 0 1; return; fi
    local out rc sp sf
    out=$(AGORA_BIN=$bin /usr/bin/python3 -m pytest -q -p no:cacheprovider \
          tests/system 2>&1)
    rc=$?
    echo "$out" | tail -25
    sp=$(echo "$out" | tail -1 | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
    sf=$(echo "$out" | tail -1 | grep -oE '[0-9]+ (failed|error|errors)' | awk '{s += $1} END {print s + 0}')
    [ -z "$sf" ] && sf=0
    if [ $rc -ne 0 ] && [ "$sf" -eq 0 ]; then sf=1; fi
    count "$name" "${sp:-0}" "$sf"
}

system_stage "system tests" "$ROOT/build/agora"

# The same tests against the ASan+UBSan build: every agora process the tests
# start (servers, CLI commands) reports leaks, memory errors and undefined
# behaviour into $SAN_DIR; each report counts as a failure.  The tests'
# 1 GiB address-space limit cannot apply to ASan (AGORA_SANITIZED): an
# allocation over 1 GiB fails instead, and 2 GiB resident ends the process.
SAN_DIR=$ROOT/build-asan/system-reports
rm -rf "$SAN_DIR" && mkdir -p "$SAN_DIR"
export AGORA_SANITIZED=1
export ASAN_OPTIONS=detect_leaks=1:log_path=$SAN_DIR/asan:allocator_may_return_null=1:max_allocation_size_mb=1024:hard_rss_limit_mb=2048
export UBSAN_OPTIONS=print_stacktrace=1:log_path=$SAN_DIR/ubsan
system_stage "system tests (ASan+UBSan)" "$ROOT/build-asan/agora"
unset AGORA_SANITIZED ASAN_OPTIONS UBSAN_OPTIONS
nrep=$(find "$SAN_DIR" -type f | wc -l)
if [ "$nrep" -ne 0 ]; then
    for f in "$SAN_DIR"/*; do echo "--- $f"; head -40 "$f"; done
fi
count "sanitizer reports from system tests" $((nrep == 0 ? 1 : 0)) "$nrep"

echo "=== fuzz (${FUZZ_SECONDS:-45}s per target) ==="
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false -Dwerror=true \
        -Db_sanitize=address,undefined -Db_lundef=false >build-fuzz.setup.log 2>&1 \
        || cat build-fuzz.setup.log
fi
if ninja -C build-fuzz >build-fuzz.build.log 2>&1; then
    FUZZ_SEED=${FUZZ_SEED-1} tests/fuzz/run.sh build-fuzz "${FUZZ_SECONDS:-45}"
    frc=$?
    nt=$(ls tests/fuzz/fuzz_*.c | wc -l)
    if [ $frc -eq 0 ]; then count "fuzz" "$nt" 0; else count "fuzz" 0 "$frc"; fi
else
    tail -30 build-fuzz.build.log; count "fuzz (build)" 0 1
fi

if [ "${SKIP_BENCH:-0}" != 1 ] && [ -x bench/run ]; then
    echo "=== bench/run --quick (smoke test, no timing asserts) ==="
    if timeout 600 bench/run --quick >bench-quick.log 2>&1; then
        tail -40 bench-quick.log; count "bench smoke" 1 0
    else
        tail -60 bench-quick.log; count "bench smoke" 0 1
    fi
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed stages: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
