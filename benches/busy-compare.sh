#!/bin/sh
# Reveals while the vault is busy (issue #27), before and after, interleaved on one machine:
#   benches/busy-compare.sh BEFORE_BINARY AFTER_BINARY [RUNS]
# Each binary is a release build of `seedvault` (`cargo build --release --bin seedvault`,
# copied aside per commit). Runs `cargo bench --bench loadgen -- busy` (API import of 100,000
# rows, the CLI's import beside the server, the sweep of 20,000 tokens; reveals at c=16) for
# before, after, before, after, … and keeps each run's output in target/busy-compare/. The
# load generator is the test-profile build of the bench (it only adds load, equally for
# both). The `busy:` lines are the figures; each run prints machine, load and commit.
set -eu
before=${1:?usage: benches/busy-compare.sh BEFORE_BINARY AFTER_BINARY [RUNS]}
after=${2:?usage: benches/busy-compare.sh BEFORE_BINARY AFTER_BINARY [RUNS]}
runs=${3:-2}
out=${CARGO_TARGET_DIR:-target}/busy-compare
mkdir -p "$out"
cargo test --bench loadgen --no-run
i=1
while [ "$i" -le "$runs" ]; do
    for label in before after; do
        if [ "$label" = before ]; then bin=$before; else bin=$after; fi
        echo "== run $i: $label ($bin), load $(cut -d' ' -f1-3 /proc/loadavg)"
        SEEDVAULT_BIN=$bin cargo test --bench loadgen -- --bench --label "$label" busy \
            >"$out/$label-$i.txt" 2>&1 || true
        grep -E '^(busy|machine)' "$out/$label-$i.txt" || tail -5 "$out/$label-$i.txt"
    done
    i=$((i + 1))
done
