#!/bin/sh
# Reveal speed before and after, interleaved on one machine (issue #27):
#   benches/reveal-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [BUSY_ROUNDS]
# Each binary is a release build of `seedvault` (`cargo build --release --bin seedvault`,
# copied aside per commit). Runs the out-of-process load generator
# (`cargo bench --bench loadgen`): ROUNDS (3) rounds of reveals at c=1,4,16,64 and sign-in,
# before then after, then BUSY_ROUNDS (2) rounds of `busy` (reveals during an API import, a
# CLI import and a sweep). Every run prints machine, load and commit; outputs are kept in
# target/reveal-compare/. BENCHMARKS.md quotes the medians.
set -eu
before=${1:?usage: benches/reveal-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [BUSY_ROUNDS]}
after=${2:?usage: benches/reveal-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [BUSY_ROUNDS]}
rounds=${3:-3}
busy_rounds=${4:-2}
out=${CARGO_TARGET_DIR:-target}/reveal-compare
mkdir -p "$out"
cargo bench --bench loadgen --no-run
run() {
    mode=$1 round=$2
    shift 2
    for label in before after; do
        if [ "$label" = before ]; then bin=$before; else bin=$after; fi
        echo "== $mode round $round: $label ($bin), load $(cut -d' ' -f1-3 /proc/loadavg)"
        SEEDVAULT_BIN=$bin cargo bench --bench loadgen -- --label "$label" "$@" \
            >"$out/$mode-$label-$round.txt" 2>&1 || true
        grep -E '^(reveal|sign-in|busy|machine)' "$out/$mode-$label-$round.txt" \
            || tail -5 "$out/$mode-$label-$round.txt"
    done
}
i=1
while [ "$i" -le "$rounds" ]; do
    run reveal "$i" reveal signin --levels 1,4,16,64 --seconds 10
    i=$((i + 1))
done
i=1
while [ "$i" -le "$busy_rounds" ]; do
    run busy "$i" busy
    i=$((i + 1))
done
