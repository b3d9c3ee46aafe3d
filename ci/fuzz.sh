#!/usr/bin/env bash
# Runs every cargo-fuzz target of tests/fuzz for a bounded time each:
#   ci/fuzz.sh [seconds-per-target]      (default 60)
#
# Owns only the fuzzing run. Never installs a toolchain or cargo-fuzz: where
# `cargo fuzz` or a nightly toolchain is missing it says which and exits 0,
# because the corpora are replayed on stable by `cargo test --test
# fuzz_corpus` in any case. A crash fails the run; cargo-fuzz files the
# input under tests/fuzz/artifacts/<target>/ (not committed), which the
# replay test runs while it is there; with the fix, make it a named seed in
# tests/fuzz_corpus.rs so every `cargo test` keeps replaying it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly FUZZ_DIR=tests/fuzz
# The machine is shared: build with as few jobs as the other CI scripts.
export CARGO_BUILD_JOBS="${CARGO_JOBS:-2}"

readonly SECS="${1:-60}"
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -eq 0 ]; then
    echo "usage: ci/fuzz.sh [seconds-per-target]" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "ci/fuzz.sh: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "ci/fuzz.sh: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi

mapfile -t TARGETS < <(cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    echo "ci/fuzz.sh: cargo fuzz lists no targets" >&2
    exit 1
fi

for target in "${TARGETS[@]}"; do
    printf '\n==> fuzzing %s for %ss\n' "$target" "$SECS"
    mkdir -p "$FUZZ_DIR/corpus/$target"
    # New inputs go to a scratch corpus, so a run never adds hundreds of
    # files to the committed seeds; the seeds are read from corpus/.
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" "$target" "$scratch" "$FUZZ_DIR/corpus/$target" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -print_final_stats=1
    rm -rf "$scratch"
    trap - EXIT
done
echo
echo "ci/fuzz.sh: ${#TARGETS[@]} targets fuzzed for ${SECS}s each, no crash"
