#!/usr/bin/env python3
"""Storage engine benchmark, side by side with VictoriaMetrics in one run (issue "Storage engine").

Workload: 1,000 hosts x the 40-series model of shared/peers/ingest/hostgen.py x 1 Hz, one
simulated hour (ending 15 minutes ago) replayed as fast as it goes, then queries.
  1. VictoriaMetrics (Debian's package) through the peers' own driver
     (shared/peers/ingest/run_ingest.py --phases backfill,queries): Influx line protocol files
     pushed by 4 parallel curls; then force_flush, du of its data dir, and its query latency;
     then, restarted on the same data, the queries the peers' driver does not run: (b) one host,
     all series, 7 days at 1,000 points and (d) p95 of one series over 30 days.
  2. The Vitals hub (release build), fresh data dir: vitals-loadgen --backfill-secs replays
     the same hour over 1,000 real agent WebSockets, 300 samples per message, each message
     sent when the previous one is acknowledged (after its commit). Then the hub's own tier job
     (every 30 s) rolls the hour into minute and hour rollups and compacts the raw samples into
     column blocks; the run waits until every sample is compacted and the freed pages are given
     back to the file system. Hub CPU is counted from the first message to that point. Then queries over the API with a bearer token:
     (a) one device, all series, the hour at 1 s; (b) one device, 7 days (1,000 points);
     (c) the fleet overview of all 1,000 devices; (d) p95 of one series over 30 days.
     Each query: one first run, then 10 repeats; medians. Then the hub is stopped and the
     database's size measured (file, and live pages without the free list).
Usage: python3 bench/storage.py --out bench/results/storage-1.json [--skip-vm]
Needs: cargo build --release -p vitals-hub -p vitals-testkit --bins
Loopback only; every process is started here and stopped by PID.
"""
import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_hub import PEERS, ROOT, cpu_s, start_hub, wait_http  # noqa: E402

VALUES_PER_SAMPLE = 40
VM = "http://127.0.0.1:8428"
HUB = "http://127.0.0.1:7171"


def timed_get(url, headers=None, reps=10):
    """First-run and median-of-reps wall time (ms) of a GET, and the response size."""
    def one():
        req = urllib.request.Request(url, headers=headers or {})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
        return (time.perf_counter() - t) * 1000, body
    first, body = one()
    times = [one()[0] for _ in range(reps)]
    return {"first_ms": round(first, 2), "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2), "max_ms": round(max(times), 2),
            "response_bytes": len(body)}, body


def run_vm(a, res):
    payload = a.payload
    if not os.path.exists(os.path.join(payload, "manifest.json")):
        subprocess.run([sys.executable, os.path.join(PEERS, "ingest", "gen_payloads.py"),
                        "--outdir", payload, "--hosts", str(a.agents), "--seconds", str(a.seconds),
                        "--chunk", "10"], check=True)
    man = json.load(open(os.path.join(payload, "manifest.json")))
    work = tempfile.mkdtemp(prefix="vm-storage-")
    out = os.path.join(work, "vm.json")
    subprocess.run([sys.executable, os.path.join(PEERS, "ingest", "run_ingest.py"),
                    "--payload", payload, "--out", out, "--workdir", work,
                    "--phases", "backfill,queries", "--quiet-wait", "0"], check=True)
    r = json.load(open(out))
    b = r["backfill"]
    samples = b["samples_sent"]
    vm = {
        "values_ingested": samples,
        "wall_s": b["wall_s"],
        "values_per_s": b["samples_per_s"],
        "cpu_s": b["vm_cpu_s"],
        "cpu_s_per_million_values": round(1e6 * b["vm_cpu_s"] / samples, 3),
        "values_per_cpu_s": round(samples / b["vm_cpu_s"]),
        "disk_bytes": r["disk_after_flush"]["total_bytes"],
        "bytes_per_value": r["disk_after_flush"]["bytes_per_sample_total"],
        "query_a_one_host_all_series_1h_1s": r["queries"]["one_host_40_series_1h_step1s"],
        "query_avg_cpu_1000_hosts_1h_60s": r["queries"]["avg_cpu_user_1000_hosts_1h_step60s"],
    }
    # (b) and (d), on the same data.
    proc = subprocess.Popen(["/usr/bin/victoria-metrics", f"-storageDataPath={work}/vmdata",
                             "-httpListenAddr=127.0.0.1:8428", "-retentionPeriod=1d"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(VM + "/health")
        end = man["end_ts"]
        q = urllib.parse.urlencode({"query": '{host="h0042"}', "start": end - 7 * 86400,
                                    "end": end, "step": "605s", "nocache": "1"})
        vm["query_b_one_host_7d_1000_points"], _ = timed_get(f"{VM}/api/v1/query_range?{q}")
        q = urllib.parse.urlencode({"query": 'quantile_over_time(0.95, cpu_user{host="h0042"}[30d])',
                                    "time": end, "nocache": "1"})
        vm["query_d_p95_one_series_30d"], body = timed_get(f"{VM}/api/v1/query?{q}")
        vm["query_d_result"] = json.loads(body)["data"]["result"][:1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    res["victoriametrics"] = vm
    print(json.dumps(vm, indent=1), flush=True)


def hub_metric(name):
    text = urllib.request.urlopen(HUB + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_vitals(a, res):
    binary = os.path.join(ROOT, "target", "release", "vitals-hub")
    lg = os.path.join(ROOT, "target", "release", "vitals-loadgen")
    data = tempfile.mkdtemp(prefix="vitals-storage-")
    out = {}
    try:
        hub, tok = start_hub(binary, data)
        try:
            c0 = cpu_s(hub.pid)
            t0 = time.monotonic()
            r = subprocess.run([lg, "--hub", HUB, "--token", tok, "--agents", str(a.agents),
                                "--samples-per-batch", "300", "--backfill-secs", str(a.seconds),
                                "--backfill-end-ago", "900", "--hub-pid", str(hub.pid),
                                "--prefix", "st"], capture_output=True, text=True, timeout=7200)
            if r.returncode != 0:
                raise SystemExit(r.stderr)
            bf = json.loads(r.stdout.strip().splitlines()[-1])
            out["backfill"] = bf
            print(json.dumps(bf), flush=True)
            samples = bf["acked_samples"]
            # The tier job: wait until every sample is rolled up and compacted.
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                done = hub_metric("vitals_compacted_samples_total")
                if done >= samples:
                    break
                time.sleep(2)
            # ... and until the free pages compaction left are given back (the file stops
            # shrinking), so the queries below do not compete with it.
            db = os.path.join(data, "vitals.db")
            last, still = os.path.getsize(db), 0
            while still < 5 and time.monotonic() < deadline:
                time.sleep(1)
                size = os.path.getsize(db)
                still = still + 1 if size == last else 0
                last = size
            t1 = time.monotonic()
            c1 = cpu_s(hub.pid)
            values = samples * VALUES_PER_SAMPLE
            out.update({
                "values_ingested": values,
                "ingest_wall_s": round(bf["wall_s"], 2),
                "values_per_s": round(values / bf["wall_s"]),
                "ingest_cpu_s": round(bf["hub_cpu_s"], 2),
                "tiers_wall_s": round(t1 - t0 - bf["wall_s"], 1),
                "cpu_s_total": round(c1 - c0, 2),
                "cpu_s_per_million_values": round(1e6 * (c1 - c0) / values, 3),
                "values_per_cpu_s": round(values / (c1 - c0)),
                "compacted_samples": hub_metric("vitals_compacted_samples_total"),
                "late_samples_merged": hub_metric("vitals_rollup_late_samples_total"),
            })
            print(json.dumps(out), flush=True)
            # Queries.
            auth = {"Authorization": f"Bearer {tok}"}
            devs = json.loads(urllib.request.urlopen(urllib.request.Request(
                HUB + "/api/devices", headers=auth)).read())
            devs = devs["devices"] if isinstance(devs, dict) else devs
            dev = next(d for d in devs if d["name"] == "st-00042")["id"]
            end, start = bf["history_end_ms"], bf["history_start_ms"]
            now = int(time.time() * 1000)
            qa, body = timed_get(f"{HUB}/api/metrics/{dev}?from={start}&to={end - 1}&points=3600", auth)
            j = json.loads(body)
            qa.update({"rows": len(j["timestamps"]), "series": len(j["series"]),
                       "sources": [s["tier"] for s in j["sources"]]})
            out["query_a_one_device_all_series_1h_1s"] = qa
            qb, body = timed_get(f"{HUB}/api/metrics/{dev}?from={now - 7 * 86400000}&to={now}", auth)
            j = json.loads(body)
            qb.update({"rows": len(j["timestamps"]), "sources": [s["tier"] for s in j["sources"]]})
            out["query_b_one_device_7d"] = qb
            qc, body = timed_get(f"{HUB}/api/overview", auth)
            out["query_c_overview_1000_devices"] = qc
            qd, body = timed_get(f"{HUB}/api/stats/{dev}?from={now - 30 * 86400000}&to={now}&series=cpu", auth)
            j = json.loads(body)
            qd.update({"result": j["series"], "sources": [s["tier"] for s in j["sources"]]})
            out["query_d_p95_one_series_30d"] = qd
            print(json.dumps({k: v for k, v in out.items() if k.startswith("query")}, indent=1), flush=True)
        finally:
            hub.send_signal(signal.SIGTERM)
            hub.wait(timeout=120)
        db = os.path.join(data, "vitals.db")
        files = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
                    if f.startswith("vitals.db"))
        con = sqlite3.connect(db)
        page = con.execute("PRAGMA page_size").fetchone()[0]
        live = (con.execute("PRAGMA page_count").fetchone()[0]
                - con.execute("PRAGMA freelist_count").fetchone()[0]) * page
        tables = {}
        try:
            for name, size in con.execute(
                    "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"):
                tables[name] = size
        except sqlite3.Error:
            pass
        con.close()
        values = out["values_ingested"]
        out["disk"] = {"file_bytes": files, "live_bytes": live,
                       "bytes_per_value_file": round(files / values, 3),
                       "bytes_per_value_live": round(live / values, 3),
                       "by_table": tables}
        print(json.dumps(out["disk"], indent=1), flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    res["vitals"] = out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-vm", action="store_true")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--payload", default="/tmp/peerbench/payload")
    a = ap.parse_args()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "agents": a.agents, "seconds": a.seconds}
    if not a.skip_vm:
        run_vm(a, res)
    run_vitals(a, res)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
