#!/usr/bin/env python3
"""Scale-out benchmark (issue "Scale-out"): the hub on PostgreSQL with one and two replicas.

Workloads, each on a fresh database (`vitals_bench` on the local PostgreSQL):
  1. backfill: the storage benchmark's workload (1,000 devices x the 40-series host model,
     --seconds of history each, 300 samples per message, each message as soon as the last is
     acknowledged) through one replica, then split over two replicas (500 devices each).
     Reports samples/s, p99 ack latency, and CPU seconds per 1,000 samples spent in the hubs
     and in PostgreSQL (every postgres process, backends and background workers) separately.
  2. live: 1,000 agents x 1 Hz, all on replica A. Run once with a /ws/live viewer on replica
     B: cross-replica push latency (sample timestamp at send -> arrival on B). Run once with
     no viewer: B's CPU is then only the cost of applying A's events, compared per sample
     with A's ingest cost.
  3. ceiling on PostgreSQL: 1,000 agents sending k samples per second each (one replica),
     k growing while p99 ack latency stays under 1 s.
On one 2-core machine the replicas, PostgreSQL and the load generator share cores, so
capacity is argued from per-sample costs, not from wall-clock scaling.
Usage: cargo build --release -p vitals-hub -p vitals-testkit --bins
       python3 bench/scaleout.py --out bench/results/scaleout-1.json
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest_hub import CLK, ROOT, cpu_s, rss_kib, wait_http  # noqa: E402

ADMIN_DB = os.environ.get("VITALS_BENCH_ADMIN_DB", "postgres://postgres@127.0.0.1:5432/test")
DB = ADMIN_DB.rsplit("/", 1)[0] + "/vitals_bench"
NATS = os.environ.get("VITALS_BENCH_NATS", "nats://127.0.0.1:4222")
BIN = os.path.join(ROOT, "target", "release", "vitals-hub")
LG = os.path.join(ROOT, "target", "release", "vitals-loadgen")
PORTS = [7171, 7172]


def postgres_cpu_s():
    """utime+stime of every postgres process, plus what exited children left to the parent."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.find("(") + 1:s.rfind(")")]
        if not comm.startswith("postgres"):
            continue
        rest = s[s.rfind(")") + 2:].split()
        total += (int(rest[11]) + int(rest[12])) / CLK
        if rest[1] == "1":  # the postmaster: what its exited children used
            total += (int(rest[13]) + int(rest[14])) / CLK
    return total


def fresh_db():
    subprocess.run(["psql", ADMIN_DB, "-q", "-c", "DROP DATABASE IF EXISTS vitals_bench"],
                   check=True, capture_output=True)
    subprocess.run(["psql", ADMIN_DB, "-q", "-c", "CREATE DATABASE vitals_bench"],
                   check=True, capture_output=True)
    return subprocess.run([BIN, "token", "create", "bench", "--role", "admin",
                           "--database-url", DB], capture_output=True, text=True,
                          check=True).stdout.strip()


def start(n):
    hubs = []
    for port in PORTS[:n]:
        data = tempfile.mkdtemp(prefix="vitals-scaleout-")
        hubs.append(subprocess.Popen(
            [BIN, "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--no-self-monitor",
             "--database-url", DB, "--nats-url", NATS],
            env={**os.environ, "RUST_LOG": "warn"}, stdout=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{port}/healthz")
    return hubs


def stop(hubs):
    for h in hubs:
        h.send_signal(signal.SIGTERM)
    for h in hubs:
        h.wait(timeout=60)


def lg(args, timeout):
    return subprocess.Popen([LG] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True), timeout


def result(p):
    proc, timeout = p
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(err)
    return json.loads(out.strip().splitlines()[-1])


def backfill(replicas, seconds):
    tok = fresh_db()
    hubs = start(replicas)
    try:
        per = 1000 // replicas
        c0 = [cpu_s(h.pid) for h in hubs]
        p0, t0 = postgres_cpu_s(), time.monotonic()
        runs = [lg(["--hub", f"http://127.0.0.1:{PORTS[i]}", "--token", tok, "--agents", str(per),
                    "--samples-per-batch", "300", "--backfill-secs", str(seconds),
                    "--backfill-end-ago", "900", "--hub-pid", str(h.pid), "--prefix", f"b{i}"],
                   7200) for i, h in enumerate(hubs)]
        outs = [result(r) for r in runs]
        wall = time.monotonic() - t0
        hub_cpu = sum(cpu_s(h.pid) - c for h, c in zip(hubs, c0))
        pg_cpu = postgres_cpu_s() - p0
        samples = sum(o["acked_samples"] for o in outs)
        return {
            "replicas": replicas, "devices": per * replicas, "samples": samples,
            "wall_s": round(wall, 1), "samples_per_s": round(samples / wall),
            "ack_ms_p99": max(o.get("ack_ms_p99", 0) for o in outs),
            "hub_cpu_s_per_1000": round(1000 * hub_cpu / samples, 4),
            "postgres_cpu_s_per_1000": round(1000 * pg_cpu / samples, 4),
            "hub_rss_mib": [round(rss_kib(h.pid) / 1024, 1) for h in hubs],
            "loadgen": outs,
        }
    finally:
        stop(hubs)


def live(measure, watch):
    tok = fresh_db()
    a, b = start(2)
    try:
        time.sleep(2)
        cb0, pg0 = cpu_s(b.pid), postgres_cpu_s()
        t0 = time.monotonic()
        args = ["--hub", "http://127.0.0.1:7171", "--token", tok, "--agents", "1000",
                "--samples-per-batch", "1", "--warmup", "10", "--measure", str(measure),
                "--hub-pid", str(a.pid), "--prefix", "lv"]
        if watch:
            args += ["--watch", "http://127.0.0.1:7172"]
        run = lg(args, measure + 300)
        # B's own CPU over the same measured window (after provisioning and warm-up).
        time.sleep(12)
        cb1 = cpu_s(b.pid)
        time.sleep(measure - 1)
        cb2 = cpu_s(b.pid)
        pg1 = postgres_cpu_s()
        out = result(run)
        # B with the same 1,000 devices and no events: its own background work.
        time.sleep(3)
        ci0 = cpu_s(b.pid)
        time.sleep(30)
        b_idle_s = (cpu_s(b.pid) - ci0) / 30
        samples = out["acked_samples_per_s"] * measure
        a_cpu_s = out["hub_cpu_pct_core"] / 100 * measure
        b_cpu_s = cb2 - cb1
        return {
            "agents_on_a": 1000, "viewer_on_b": out["watch"] if watch else None,
            "ack_ms_p50": out["ack_ms_p50"], "ack_ms_p99": out["ack_ms_p99"],
            "a_cpu_pct_core": out["hub_cpu_pct_core"],
            "b_cpu_pct_core": round(100 * b_cpu_s / (measure - 1), 2),
            "a_cpu_ms_per_sample": round(1000 * a_cpu_s / samples, 4),
            "b_cpu_ms_per_remote_sample": round(1000 * b_cpu_s / (samples * (measure - 1) / measure), 4),
            "remote_over_local_cost_pct": round(100 * (b_cpu_s / (measure - 1)) / (a_cpu_s / measure), 2),
            "b_idle_cpu_pct_core": round(100 * b_idle_s, 2),
            "remote_events_over_local_cost_pct": round(
                100 * (b_cpu_s / (measure - 1) - b_idle_s) / (a_cpu_s / measure), 2),
            "postgres_cpu_pct_core": round(100 * (pg1 - pg0) / (time.monotonic() - t0), 2),
            "loadgen": out,
        }
    finally:
        stop([a, b])


def ceiling(steps):
    tok = fresh_db()
    (a,) = start(1)
    out = []
    try:
        for k in steps:
            r = result(lg(["--hub", "http://127.0.0.1:7171", "--token", tok, "--agents", "1000",
                           "--samples-per-batch", str(k), "--warmup", "5", "--measure", "20",
                           "--hub-pid", str(a.pid), "--prefix", f"c{k}"], 600))
            out.append(r)
            print(json.dumps(r), flush=True)
            if r["ack_ms_p99"] > 1000 or r["acked_samples_per_s"] < 0.95 * r["target_samples_per_s"]:
                break
    finally:
        stop([a])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=int, default=900, help="history per device (backfill)")
    ap.add_argument("--measure", type=int, default=60)
    ap.add_argument("--ceiling", default="10,20,30,40")
    ap.add_argument("--only", default="backfill,live,ceiling",
                    help="which parts to run (comma-separated: backfill, live (both live runs), "
                         "live-viewer, live-no-viewer, ceiling)")
    a = ap.parse_args()
    parts = a.only.split(",")
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "postgres": subprocess.run(["psql", ADMIN_DB, "-Atc", "show server_version"],
                                      capture_output=True, text=True).stdout.strip()}
    for n in (1, 2) if "backfill" in parts else ():
        res[f"backfill_{n}_replica"] = r = backfill(n, a.seconds)
        print(json.dumps({k: v for k, v in r.items() if k != "loadgen"}), flush=True)
    if "live" in parts or "live-viewer" in parts:
        res["live_viewer_on_b"] = r = live(a.measure, True)
        print(json.dumps({k: v for k, v in r.items() if k != "loadgen"}), flush=True)
    if "live" in parts or "live-no-viewer" in parts:
        res["live_no_viewer"] = r = live(a.measure, False)
        print(json.dumps({k: v for k, v in r.items() if k != "loadgen"}), flush=True)
    steps = [int(x) for x in a.ceiling.split(",") if x]
    if steps and "ceiling" in parts:
        res["ceiling_1_replica"] = ceiling(steps)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
