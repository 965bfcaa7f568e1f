#!/usr/bin/env bash
# CPU of the dashboard with N WebSocket viewers at a 1 s interval (issue 8's benchmark).
#
# Runs the job_runner example (release) twice for DURATION seconds: once with no viewers
# (the simulated application alone) and once with VIEWERS viewers held by the `viewers`
# example, and reads the job_runner's utime+stime from /proc/PID/stat before and after
# each window. The dashboard's cost is the difference.
#
#   crates/vitals-embed/bench/viewers.sh            # 100 viewers, 60 s
#   VIEWERS=100 DURATION=60 crates/vitals-embed/bench/viewers.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
VIEWERS=${VIEWERS:-100}
DURATION=${DURATION:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/tgt-embed}
cargo build --quiet --release -p vitals-embed --example job_runner --example viewers
BIN="$CARGO_TARGET_DIR/release/examples"
HZ=$(getconf CLK_TCK)

ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

measure() { # $1 = number of viewers
  local out pid url t0 t1 s0 s1
  out=$(mktemp)
  "$BIN/job_runner" --port 0 --interval-ms 1000 >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q 'listening on' "$out" && break; sleep 0.1; done
  url=$(grep -o 'http://[^ ]*' "$out" | sed 's|^http|ws|; s|/$|/ws|')
  sleep 2 # let the application settle
  if [ "$1" -gt 0 ]; then
    "$BIN/viewers" --url "$url" --viewers "$1" --seconds "$DURATION" >"$out.v" &
    local vpid=$!
    for _ in $(seq 100); do grep -q connected "$out.v" 2>/dev/null && break; sleep 0.1; done
  fi
  t0=$(ticks "$pid"); s0=$(date +%s.%N)
  if [ "$1" -gt 0 ]; then wait "$vpid"; else sleep "$DURATION"; fi
  t1=$(ticks "$pid"); s1=$(date +%s.%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [ "$1" -gt 0 ] && tail -1 "$out.v" >&2
  rm -f "$out" "$out.v"
  awk -v a="$t0" -v b="$t1" -v s="$s0" -v e="$s1" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) / hz / (e - s) * 100 }'
}

base=$(measure 0)
with=$(measure "$VIEWERS")
echo "job_runner CPU, no viewers:        ${base} % of one core"
echo "job_runner CPU, ${VIEWERS} viewers at 1 s: ${with} % of one core"
awk -v a="$base" -v b="$with" -v n="$VIEWERS" 'BEGIN { printf "dashboard cost of %d viewers:     %.3f %% of one core\n", n, b - a }'
