#!/usr/bin/env bash
# Backup, restore and rotation of a vault with 100,000 tokens and 1,000,000 audit events, each
# through the release binary under /usr/bin/time -v, with a reveal-shaped probe beside it.
# Usage: benches/backup.sh [RUNS]   (BENCHMARKS.md, "Backup, restore and key rotation")
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --bin seedvault
# The helper (seeding, probe) in the dev profile: `cargo bench` would build every
# dev-dependency in release first. What is timed is the release binary.
cargo build --bench backup
bench=$(ls -t "$target"/debug/deps/backup-* | grep -v '\.d$' | head -1)
sv="$target/release/seedvault"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bench" seed "$work"
data="$work/data"
key="$work/backup.key"
recipient=$("$sv" --data-dir "$data" key add identity --out "$key" --label bench >/dev/null && grep '# public key:' "$key" | awk '{print $4}')
measure() { # label, command…
  local label=$1; shift
  /usr/bin/time -f "$label: %e s wall, %U+%S s CPU, peak RSS %M KiB" "$@" >/dev/null 2>"$work/time.txt" || { cat "$work/time.txt"; exit 1; }
  tail -1 "$work/time.txt"
}
for run in $(seq "$runs"); do
  "$bench" probe "$work" 25 > "$work/probe.txt" &
  probe=$!
  sleep 2
  measure "backup run $run" "$sv" --data-dir "$data" backup --out "$work/b$run.age" --recipient "$recipient"
  wait $probe; cat "$work/probe.txt"
  ls -l "$work/b$run.age" | awk '{print "backup file: " $5 " bytes"}'
  measure "restore run $run" "$sv" --data-dir "$work/r$run" restore "$work/b$run.age" --identity "$key"
  rm -rf "$work/r$run"
done
for run in $(seq "$runs"); do
  "$bench" probe "$work" 40 > "$work/probe.txt" &
  probe=$!
  sleep 2
  measure "rotate run $run" "$sv" --data-dir "$data" key rotate --batch 500
  wait $probe; cat "$work/probe.txt"
done
ls -l "$data"
