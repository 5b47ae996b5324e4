#!/usr/bin/env bash
# Coverage-guided fuzzing of subsetq's loaders with libFuzzer, on the stable toolchain.
#
#   bash scripts/fuzz.sh build                  # build the five targets (instrumented)
#   bash scripts/fuzz.sh run TARGET [FLAGS...]  # fuzz TARGET, e.g. -runs=1000000
#   bash scripts/fuzz.sh seeds                  # (re)make fuzz/seeds/ from the real assets
#
# Targets: onnx_plan compact_fold sidecar idx image (fuzz/src/lib.rs). The working corpus
# grows in target/fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), crashes land in
# target/fuzz/artifacts/TARGET. A crash becomes a file in fuzz/regressions/TARGET, which
# `cargo test -p subsetq-fuzz` replays (fuzz/README.md).
#
# The instrumentation is rustc's SanitizerCoverage pass (stable -C flags, the same ones
# cargo-fuzz passes); no AddressSanitizer, which needs nightly and matters for unsafe code,
# and our loaders have none. `--cfg fuzzing` lowers the loaders' memory bounds so that every
# refusal path is reachable within libFuzzer's RSS limit. The instrumented build has its own
# target directory (target/fuzz): its flags differ from the workspace build's, which CI
# builds the targets in (without instrumentation).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGETS=(onnx_plan compact_fold sidecar idx image)
HOST=$(rustc -vV | sed -n 's/^host: //p')
DIR=target/fuzz
FLAGS=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
)

build() {
    # --target keeps the flags off build scripts and proc macros (they run inside rustc).
    RUSTFLAGS="${FLAGS[*]}" cargo build --release -p subsetq-fuzz --features libfuzzer \
        --bins --target "$HOST" --target-dir "$DIR"
}

case "${1:-}" in
build) build ;;
run)
    target=${2:?usage: fuzz.sh run TARGET [libFuzzer flags]}
    shift 2
    [[ " ${TARGETS[*]} " == *" $target "* ]] || { echo "error: unknown target $target (${TARGETS[*]})" >&2; exit 2; }
    build
    mkdir -p "$DIR/corpus/$target" "$DIR/artifacts/$target"
    exec "$DIR/$HOST/release/$target" "$DIR/corpus/$target" "fuzz/seeds/$target" \
        -artifact_prefix="$DIR/artifacts/$target/" -rss_limit_mb=2048 -timeout=10 "$@"
    ;;
seeds) .venv/bin/python fuzz/make_seeds.py ;;
*) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
