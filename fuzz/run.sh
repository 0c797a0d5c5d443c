#!/usr/bin/env bash
# Run every kca fuzz target for a bounded time, one after the other, on one core each.
#
#   fuzz/run.sh [seconds-per-target] [target...]
#
# Defaults: 120 s per target, every target of `cargo fuzz list`. Not run in CI.
# FUZZ_SANITIZER=address turns AddressSanitizer on (default none: kca forbids unsafe code, and the
# C inside aws-lc is not instrumented either way, so ASan mostly costs speed).
# New corpus entries go to fuzz/corpus/<target> (ignored by git); crashes to
# fuzz/artifacts/<target>/, and the script exits non-zero when any target crashed.
# libFuzzer runs one process on one thread unless given -jobs/-workers (-jobs=1 would only move
# the output into fuzz-0.log), so each run uses one core.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

seconds=${1:-120}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -Cpasses=sancov-module); stable rustc takes
# them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz > /dev/null; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets (kca and its dependencies compile once, into fuzz/target).
cargo fuzz build -s "$sanitizer"

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds+=("fuzz/seeds/$target")
    dict=()
    [ -f "fuzz/dicts/$target.dict" ] && dict+=("-dict=fuzz/dicts/$target.dict")
    echo "=== $target: ${seconds}s" >&2
    if ! cargo fuzz run -s "$sanitizer" "$target" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}"; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "no crash in: ${targets[*]}" >&2
