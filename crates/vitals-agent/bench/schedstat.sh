#!/usr/bin/env bash
# CPU % of one core used by a running process over a window, from the scheduler's own
# nanosecond run times (/proc/PID/task/*/schedstat, summed over threads) rather than the
# 10 ms tick samples of /proc/PID/stat, which are coarse for a process that runs for a
# fraction of a millisecond once a second.
# Usage: crates/vitals-agent/bench/schedstat.sh PID [SECONDS=60]
set -euo pipefail
pid=$1; secs=${2:-60}
sum() { cat /proc/"$pid"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
ticks() { awk '{print $14 + $15}' /proc/"$pid"/stat; }
a=$(sum); ta=$(ticks)
sleep "$secs"
b=$(sum); tb=$(ticks)
python3 -c "print(f'schedstat {($b - $a) / 1e9 / $secs * 100:.3f} % of one core; ticks {($tb - $ta) / $secs:.3f} %')"
