#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for a bounded time, starting from its
# committed corpus: FUZZ_SECONDS per target (default 60). A crash, a hang
# (over 10 s for one input) or more than 2 GiB of memory fails the run;
# libFuzzer prints the input, which cargo-fuzz saves under
# fuzz/artifacts/<target>/ (not committed: reproduce it with
# `cargo +nightly fuzz run <target> <file>`, then keep it as a corpus file
# once fixed). Usage: scripts/fuzz.sh [TARGET...] (default: all four).
#
# Needs the nightly toolchain (libFuzzer's instrumentation flags are
# nightly-only; the CI machine has it), cargo-fuzz (installed from
# crates.io when missing) and a C++ compiler (libfuzzer-sys builds
# libFuzzer itself; Debian's g++).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if (($# > 0)); then
    targets=("$@")
else
    targets=(config_toml predict_url api_json engine_request)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz: no C++ compiler for libFuzzer (apt-get install g++)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The fuzzer adds every input that reaches new code to the corpus directory
# it is given: give it a scratch copy, so a run never changes the committed
# corpus (CI's tree stays clean; new finds are added deliberately, after
# `cargo fuzz cmin`).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# One build for all targets: the runs below then start at once.
started=$SECONDS
cargo +nightly fuzz build
echo "fuzz: built in $((SECONDS - started)) s" >&2

for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    if [[ ! -d $corpus ]]; then
        echo "fuzz: no corpus at $corpus" >&2
        exit 1
    fi
    cp -R "$corpus" "$scratch/$target"
    echo "fuzz: $target for ${seconds} s" >&2
    cargo +nightly fuzz run "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
