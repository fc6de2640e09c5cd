#!/usr/bin/env bash
# fuzz.sh — build every libFuzzer target tests/fuzz/fuzz_*.c and run each for
# a bounded time on a copy of its seed corpus.
#
#   scripts/fuzz.sh [NAME...]      NAME = fuzz_foo (default: every target)
#   FUZZ_SECONDS=20                run time per target
#   FUZZ_JOBS=$(nproc)             targets run at the same time
#
# Target fuzz_foo links every src/**/*.c except src/main.c and starts from
# tests/fuzz/corpus/foo/ (copied to a temp dir, so the repository is never
# modified). Binaries, logs and crash artifacts go to build/fuzz/. Prints one
# line per target ("PASS fuzz_foo" / "FAIL fuzz_foo") and a closing
# "fuzz: N passed, N failed"; exits 1 when a target failed to build or run.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=build/fuzz
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
CC_FUZZ=${CC_FUZZ:-clang}
CFLAGS_FUZZ=(-D_GNU_SOURCE -DTAKO_VERSION='"fuzz"' -Isrc -std=gnu11 -g -O1)
LIBS=(-lyaml -ljansson -lsqlite3 -lssl -lcrypto -lcurl -lm -pthread)

case "$SECONDS_PER_TARGET" in
'' | *[!0-9]*)
    echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_PER_TARGET'" >&2
    exit 2
    ;;
esac

if [ $# -gt 0 ]; then
    targets=()
    for n in "$@"; do
        n=${n%.c}
        n=${n##*/}
        if [ ! -f "tests/fuzz/$n.c" ]; then
            echo "fuzz.sh: no such target tests/fuzz/$n.c" >&2
            exit 2
        fi
        targets+=("$n")
    done
else
    mapfile -t targets < <(find tests/fuzz -maxdepth 1 -name 'fuzz_*.c' -printf '%f\n' | sed 's/\.c$//' | sort)
fi

if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz: 0 passed, 0 failed (no targets in tests/fuzz/)"
    exit 0
fi

if ! command -v "$CC_FUZZ" >/dev/null; then
    echo "fuzz.sh: $CC_FUZZ not found (run scripts/deps.sh test)" >&2
    for t in "${targets[@]}"; do echo "FAIL $t (no compiler)"; done
    echo "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
fi

mkdir -p "$OUT/obj"
passed=0
failed=0

# The library objects are instrumented for coverage but not linked with
# libFuzzer's main; each target links them with -fsanitize=fuzzer.
lib_ok=1
mapfile -t srcs < <(find src -name '*.c' ! -path src/main.c | sort)
export CC_FUZZ OUT
printf '%s\n' "${srcs[@]}" | xargs -r -P "$(nproc)" -I{} sh -c '
    o="$OUT/obj/$(echo "{}" | sed "s/\.c$/.o/")"
    mkdir -p "$(dirname "$o")"
    "$CC_FUZZ" "$@" -fsanitize=fuzzer-no-link,address,undefined -c "{}" -o "$o" 2>"$o.log" ||
        { echo "fuzz.sh: cannot compile {}:" >&2; cat "$o.log" >&2; exit 1; }
' sh "${CFLAGS_FUZZ[@]}" || lib_ok=0
objs=()
for s in "${srcs[@]}"; do objs+=("$OUT/obj/${s%.c}.o"); done

# fuzz_one TARGET: build and run one target; writes its verdict (PASS/FAIL
# line, then detail lines) to build/fuzz/TARGET.result.
fuzz_one() {
    local t=$1 name=${1#fuzz_} bin=$OUT/$1 log=$OUT/$1.log res=$OUT/$1.result work runs
    if [ $lib_ok -ne 1 ] || ! "$CC_FUZZ" "${CFLAGS_FUZZ[@]}" -fsanitize=fuzzer,address,undefined \
        "tests/fuzz/$t.c" "${objs[@]}" "${LIBS[@]}" -o "$bin" >"$log" 2>&1; then
        { echo "FAIL $t (build; see $log)"; tail -n 20 "$log" | sed 's/^/    /'; } >"$res"
        return
    fi
    work=$(mktemp -d "${TMPDIR:-/tmp}/tako-fuzz-$name.XXXXXX")
    if [ -d "tests/fuzz/corpus/$name" ]; then
        cp -r "tests/fuzz/corpus/$name/." "$work/"
    fi
    # Crash inputs land in build/fuzz/ (never in the repository) for replay:
    #   build/fuzz/fuzz_foo build/fuzz/fuzz_foo-crash-<sha1>
    if "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$ROOT/$OUT/$t-" -print_final_stats=1 "$work" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "PASS $t (${runs:-?} runs in ${SECONDS_PER_TARGET}s, corpus tests/fuzz/corpus/$name)" >"$res"
    else
        { echo "FAIL $t (see $log)"; grep -m 1 -E 'ERROR: |SUMMARY: |deadly signal' "$log" | sed 's/^/    /'; } >"$res"
    fi
    rm -rf "$work"
}

# Targets run side by side, one per core (each libFuzzer process is single
# threaded); verdicts are printed in target order.
jobs_max=${FUZZ_JOBS:-$(nproc)}
running=0
for t in "${targets[@]}"; do
    rm -f "$OUT/$t.result"
    if [ "$running" -ge "$jobs_max" ]; then
        wait -n
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait
for t in "${targets[@]}"; do
    if [ -s "$OUT/$t.result" ]; then
        cat "$OUT/$t.result"
    else
        echo "FAIL $t (no verdict; see $OUT/$t.log)"
    fi
    if grep -q '^PASS ' "$OUT/$t.result" 2>/dev/null; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done

echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
