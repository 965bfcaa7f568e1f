#!/usr/bin/env python3
"""Alert engine benchmark (issue "Alerts"): 1,000 devices x 1 Hz with 10 rules each.

One hub (release build, fresh data dir). In one run, back to back on the same hub:
  A. baseline: vitals-loadgen, 1,000 agents x 1 sample/s, with NO alert rules;
  B. alerts: the same load, plus vitals-alertbench, which creates 10 rules applying to every
     device (so 10 evaluations per sample) and 10 probe devices whose CPU crosses
     `cpu > 95 for 5 s` every 20 s; it measures, for each firing, the time from sending the
     sample that completed the duration to the webhook request reaching its receiver.
Hub CPU (utime+stime over the window, % of one core) for A and B, and, from the hub's own
/metrics, the time its engine spent evaluating (`vitals_alert_engine_nanoseconds_total`) per
(sample, rule) evaluation (`vitals_alert_evaluations_total`) during B, next to
`cargo bench -p vitals-hub --bench alert_engine` (the engine alone, outside the hub).
Usage: python3 bench/alerts.py --out bench/results/alerts.json
Loopback only; every process is started here and stopped by PID.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_hub import ROOT, loadgen, start_hub  # noqa: E402


def engine_counters():
    text = urllib.request.urlopen("http://127.0.0.1:7171/metrics").read().decode()
    vals = {}
    for line in text.splitlines():
        for k in ("vitals_alert_engine_nanoseconds_total", "vitals_alert_evaluations_total"):
            if line.startswith(k + " "):
                vals[k] = float(line.split()[1])
    return vals.get("vitals_alert_engine_nanoseconds_total", 0.0), vals.get("vitals_alert_evaluations_total", 0.0)


def delete_rules(token):
    req = urllib.request.Request("http://127.0.0.1:7171/api/alert-rules",
                                 headers={"Authorization": f"Bearer {token}"})
    for r in json.load(urllib.request.urlopen(req)):
        d = urllib.request.Request(f"http://127.0.0.1:7171/api/alert-rules/{r['id']}",
                                   method="DELETE", headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(d).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--measure", type=int, default=60)
    a = ap.parse_args()
    binary = os.path.join(ROOT, "target", "release", "vitals-hub")
    lg = os.path.join(ROOT, "target", "release", "vitals-loadgen")
    ab = os.path.join(ROOT, "target", "release", "vitals-alertbench")
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": []}
    data = tempfile.mkdtemp(prefix="vitals-alerts-bench-")
    try:
        hub, tok = start_hub(binary, data)
        try:
            time.sleep(2)
            delete_rules(tok)  # the default rules too: A has none
            for rnd in range(2):
                base = loadgen(lg, tok, hub.pid, 1000, 1, 10, a.measure, "lg")
                print("baseline", json.dumps(base), flush=True)
                bench = subprocess.Popen([ab, "--hub", "http://127.0.0.1:7171", "--token", tok,
                                          "--probes", "10", "--measure", str(a.measure + 15)],
                                         stdout=subprocess.PIPE, text=True)
                ns0, ev0 = engine_counters()
                t0 = time.monotonic()
                with_rules = loadgen(lg, tok, hub.pid, 1000, 1, 10, a.measure, "lg")
                ns1, ev1 = engine_counters()
                t1 = time.monotonic()
                out, _ = bench.communicate(timeout=a.measure + 120)
                probe = json.loads(out.strip().splitlines()[-1])
                print("alerts", json.dumps(with_rules), json.dumps(probe), flush=True)
                delete_rules(tok)
                extra = with_rules["hub_cpu_pct_core"] - base["hub_cpu_pct_core"]
                evals = with_rules["acked_samples_per_s"] * 10
                res["runs"].append({
                    "round": rnd + 1,
                    "baseline": base,
                    "alerts": with_rules,
                    "probe": probe,
                    "hub_cpu_delta_pct_core": round(extra, 2),
                    "hub_cpu_delta_ns_per_sample_rule": round(extra / 100 * 1e9 / evals, 1),
                    "engine_evaluations": ev1 - ev0,
                    "engine_ns_per_sample_rule": round((ns1 - ns0) / max(ev1 - ev0, 1), 1),
                    "engine_cpu_pct_core_measured": round(100 * (ns1 - ns0) / 1e9 / (t1 - t0), 3),
                })
        finally:
            hub.terminate()
            hub.wait(timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
