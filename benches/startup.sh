#!/usr/bin/env bash
# Cold start and idle memory of the real `seedvault serve` binary (see BENCHMARKS.md).
#
#   benches/startup.sh [RUNS]        # default 7 runs per mode; prints a Markdown table
#
# Cold start = wall time from spawning `seedvault serve` to the first HTTP 200 on /healthz,
# polled over a bash /dev/tcp socket (no curl spawned per poll; one subshell, ≈1 ms).
# Idle RSS = VmRSS from /proc/PID/status one second after that first 200. Each run uses a fresh data directory.
# Modes:
#   identity     `init --production --identity-out F` beforehand (not timed), then
#                `serve --production --identity F`
#   passphrase   `init --production --passphrase-file F` beforehand, then `serve --production
#                --passphrase-file F` (includes age's scrypt work factor)
#   development  `serve` on an empty data directory: creates the vault and its development
#                slot, runs the migrations (the README's first command)
# Only loopback is used. Set SEEDVAULT_BIN to time a binary that is already built.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-7}
if [ -z "${SEEDVAULT_BIN:-}" ]; then
  cargo build --release --locked --quiet
  SEEDVAULT_BIN="${CARGO_TARGET_DIR:-target}/release/seedvault"
fi
BIN=$SEEDVAULT_BIN
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# Prints the HTTP status of GET /healthz, or nothing while nobody listens.
healthz() {
  local status=""
  if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
    printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    read -r _ status _ <&3 || true
    exec 3<&- 3>&-
  fi
  echo "$status"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# One run of MODE; prints "start_ms rss_kib".
run_once() {
  local mode=$1 dir port args=() pid t0 t1 rss deadline
  dir=$(mktemp -d "$WORK/run.XXXX")
  port=$(free_port)
  case $mode in
    identity)
      "$BIN" --data-dir "$dir/data" init --production --identity-out "$dir/identity.txt" >/dev/null
      args=(--production --identity "$dir/identity.txt") ;;
    passphrase)
      printf 'correct horse battery staple bench\n' >"$dir/passphrase"
      "$BIN" --data-dir "$dir/data" init --production --passphrase-file "$dir/passphrase" >/dev/null
      args=(--production --passphrase-file "$dir/passphrase") ;;
    development) ;;
  esac
  t0=$(date +%s%N)
  SEEDVAULT_LOG=warn "$BIN" --data-dir "$dir/data" serve --bind "127.0.0.1:$port" \
    --origin "http://localhost:$port" "${args[@]}" >"$dir/out.log" 2>&1 </dev/null &
  pid=$!
  deadline=$((t0 + 30000000000))
  until [ "$(healthz "$port")" = 200 ]; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$(date +%s%N)" -gt "$deadline" ]; then
      echo "serve ($mode) did not answer /healthz:" >&2
      cat "$dir/out.log" >&2
      exit 1
    fi
  done
  t1=$(date +%s%N)
  sleep 1
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  echo "$(( (t1 - t0) / 1000000 )) $rss"
}

echo "seedvault startup — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $RUNS runs per mode"
echo "binary: $BIN ($(du -h "$BIN" | cut -f1))"
echo
echo "| mode | cold start median (min–max) | idle RSS median |"
echo "|---|---:|---:|"
for mode in identity passphrase development; do
  starts=() rsses=()
  for _ in $(seq "$RUNS"); do
    read -r ms kib < <(run_once "$mode")
    starts+=("$ms") rsses+=("$kib")
  done
  start_median=$(printf '%s\n' "${starts[@]}" | median)
  start_min=$(printf '%s\n' "${starts[@]}" | sort -n | head -1)
  start_max=$(printf '%s\n' "${starts[@]}" | sort -n | tail -1)
  rss_median=$(printf '%s\n' "${rsses[@]}" | median)
  printf '| %s | %s ms (%s–%s) | %s MiB |\n' "$mode" "$start_median" "$start_min" "$start_max" \
    "$(awk -v kib="$rss_median" 'BEGIN { printf "%.1f", kib / 1024 }')"
done
