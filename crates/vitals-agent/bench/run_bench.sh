#!/usr/bin/env bash
# Measures vitals-agent at a 1 s interval with the peers' harness (../shared/peers), beside
# node_exporter, netdata, collectd and glances, on this machine. Nothing is installed or enabled as a service:
# every program is started by the harness under `timeout`, on 127.0.0.1, and stopped by PID.
#
# Prerequisites (Debian 12, root; see shared/peers/README.md):
#   apt-get install -y --no-install-recommends prometheus-node-exporter netdata collectd glances \
#       python3-bottle curl
#   cargo build -p vitals-agent --profile agent        # the shipped binary
#   cargo build -p vitals-agent --example bench_hub    # a stand-in hub that acks and counts
#
# Usage: REPS=3 crates/vitals-agent/bench/run_bench.sh [agent] [node_exporter] [netdata] [collectd]
#        [glances_stdout] [glances_web]   (default: all of them)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PEERS=${PEERS:-$ROOT/../shared/peers}
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=${AGENT_BIN:-$TGT/agent/vitals-agent}
HUB=${HUB_BIN:-$TGT/debug/examples/bench_hub}
REPS=${REPS:-3}
WARMUP=${WARMUP:-10}
MEASURE=${MEASURE:-60}
RESULTS=${RESULTS:-$HERE/results}
WORK=${BENCH_TMP:-/tmp/vitals-agent-bench}
PORT=${HUB_PORT:-18080}
mkdir -p "$RESULTS" "$WORK"
SEL=("$@"); [ ${#SEL[@]} -gt 0 ] || SEL=(agent node_exporter netdata collectd glances_stdout glances_web)

# The stand-in hub runs for the whole benchmark (bounded by timeout), outside the measured tree.
timeout -k 5 3600 "$HUB" "127.0.0.1:$PORT" > "$WORK/hub.out" 2> "$WORK/hub.err" &
HUB_PID=$!
trap 'kill "$HUB_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/stats" >/dev/null && break; sleep 0.2; done

for rep in $(seq 1 "$REPS"); do
  for c in "${SEL[@]}"; do
    q=$(python3 "$PEERS/lib/wait_quiet.py" --max-busy "${QUIET_BUSY:-10}" --timeout "${QUIET_WAIT:-60}")
    echo "== $c rep $rep $(date -u +%H:%M:%S) (machine busy before start: $q%)"
    if [ "$c" = agent ]; then
      W="$WORK/agent-$rep"; rm -rf "$W"; mkdir -p "$W"
      cat > "$W/agent.toml" <<TOML
hub = "http://127.0.0.1:$PORT"
token = "test-token"
interval_secs = 1
spool_dir = "$W/spool"
[update]
enabled = false
TOML
      # values/s: values the hub stored over 20 s, divided by 20.
      python3 "$PEERS/collectors/run_collector.py" --name vitals-agent --out "$RESULTS/agent-$rep.json" \
        --warmup "$WARMUP" --measure "$MEASURE" --du "$W/spool" --env RUST_LOG=warn \
        --post-cmd "a=\$(curl -s http://127.0.0.1:$PORT/stats); sleep 20; b=\$(curl -s http://127.0.0.1:$PORT/stats); python3 -c 'import json,sys; a,b=json.loads(sys.argv[1]),json.loads(sys.argv[2]); print(json.dumps({\"values_per_s\": (b[\"values\"]-a[\"values\"])/20, \"samples_per_s\": (b[\"stored\"]-a[\"stored\"])/20}))' \"\$a\" \"\$b\"" \
        -- "$AGENT" --config "$W/agent.toml" run
    else
      RESULTS="$RESULTS" REPS=1 WARMUP="$WARMUP" MEASURE="$MEASURE" QUIET_WAIT=1 \
        "$PEERS/collectors/bench_collectors.sh" "$c"
      for f in "$RESULTS/$c-1.json"; do [ -f "$f" ] && mv "$f" "$RESULTS/$c-r$rep.json"; done
    fi
    sleep 3
  done
done
echo "results in $RESULTS"
