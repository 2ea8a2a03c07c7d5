#!/usr/bin/env bash
# Runs one fuzz target for a while: `fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags]`.
# New inputs go to fuzz/corpus/TARGET (not committed); the committed seeds in
# fuzz/seeds/TARGET are read too; a crash lands in fuzz/artifacts/TARGET/.
# cargo-fuzz needs nightly-only compiler flags (sanitizers): RUSTC_BOOTSTRAP=1 lets the
# stable toolchain accept them. See docs/testing.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...]}"
seconds="${2:-600}"
shift $(( $# >= 2 ? 2 : 1 ))

dict=()
if [[ -f "fuzz/dicts/$target.dict" ]]; then
    dict=("-dict=fuzz/dicts/$target.dict")
fi
mkdir -p "fuzz/corpus/$target"

# -malloc_limit_mb: any single allocation over 17 MB (the codec's and the frame's 16 MiB
# limit plus slack) is reported as a crash. -timeout: one input taking over 10 s is a hang.
exec env RUSTC_BOOTSTRAP=1 nice -n 10 cargo fuzz run "$target" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -malloc_limit_mb=17 -timeout=10 -print_final_stats=1 \
    "${dict[@]}" "$@"
