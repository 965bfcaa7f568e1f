#!/usr/bin/env python3
"""Hub ingest benchmark, side by side with VictoriaMetrics in one run (issue "Hub core").

Workload: 1,000 hosts x the 40-series model of shared/peers/ingest/hostgen.py x 1 Hz.
  1. VictoriaMetrics (Debian's package), fresh data dir, fed by the peers' realtime_push.py
     (--mode perhost: one request per host per second, like agents; and --mode batched).
  2. The Vitals hub (release build), fresh data dir, fed by vitals-loadgen: 1,000 agents over
     real WebSockets, one sample (40 values) per second each; ack latency measured from send
     to the hub's ack (sent only after the commit).
  3. Ceiling: the same 1,000 agents sending k samples per batch once a second, k growing until
     p99 ack latency passes 1 s or the hub falls behind.
CPU = delta of utime+stime of the server process over the measured window (% of one core);
RSS = VmRSS sampled every second (median). Also records other load on the machine.
Usage: python3 bench/ingest_hub.py --out bench/results/ingest-hub.json
Loopback only; every process is started here and stopped by PID.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rfind(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / CLK


class Window:
    """CPU and RSS of one process between start() and stop()."""

    def __init__(self, pid):
        self.pid, self.rss, self.stop_flag = pid, [], False

    def start(self):
        self.c0, self.m0, self.t0 = cpu_s(self.pid), machine_busy_s(), time.monotonic()
        self.th = threading.Thread(target=self._sample, daemon=True)
        self.th.start()

    def _sample(self):
        while not self.stop_flag:
            self.rss.append(rss_kib(self.pid))
            time.sleep(1)

    def stop(self):
        self.stop_flag = True
        c1, m1, t1 = cpu_s(self.pid), machine_busy_s(), time.monotonic()
        dt = t1 - self.t0
        r = sorted(self.rss) or [0]
        return {
            "window_s": round(dt, 1),
            "cpu_pct_core": round(100 * (c1 - self.c0) / dt, 2),
            "rss_mib_median": round(r[len(r) // 2] / 1024, 1),
            "rss_mib_peak": round(r[-1] / 1024, 1),
            "other_load_pct_of_2_cores": round(100 * ((m1 - self.m0) - (c1 - self.c0)) / dt / 2, 1),
        }


def wait_http(url, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def run_vm(mode, seconds=70, warmup=10):
    work = tempfile.mkdtemp(prefix="vm-bench-")
    vm = subprocess.Popen(["/usr/bin/victoria-metrics", f"-storageDataPath={work}/data",
                           "-httpListenAddr=127.0.0.1:8428", "-retentionPeriod=1d"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http("http://127.0.0.1:8428/health")
        sender = subprocess.Popen([sys.executable, os.path.join(PEERS, "ingest", "realtime_push.py"),
                                   "--url", "http://127.0.0.1:8428/write", "--mode", mode,
                                   "--hosts", "1000", "--seconds", str(seconds)],
                                  stdout=subprocess.PIPE, text=True)
        assert sender.stdout.readline().strip() == "READY"
        time.sleep(warmup)
        w = Window(vm.pid)
        w.start()
        time.sleep(seconds - warmup - 2)
        res = w.stop()
        out = sender.communicate(timeout=60)[0]
        res["sender"] = json.loads(out.strip().splitlines()[-1])
        res["values_per_s_target"] = 40000
        return res
    finally:
        vm.send_signal(signal.SIGTERM)
        vm.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def start_hub(binary, data):
    tok = subprocess.run([binary, "token", "create", "bench", "--role", "admin", "--data-dir", data],
                         capture_output=True, text=True, check=True).stdout.strip()
    hub = subprocess.Popen([binary, "--listen", "127.0.0.1:7171", "--data-dir", data,
                            "--no-self-monitor"], env={**os.environ, "RUST_LOG": "warn"},
                           stdout=subprocess.DEVNULL)
    wait_http("http://127.0.0.1:7171/healthz")
    return hub, tok


def loadgen(lg, token, pid, agents, spb, warmup, measure, prefix):
    out = subprocess.run([lg, "--hub", "http://127.0.0.1:7171", "--token", token,
                          "--agents", str(agents), "--samples-per-batch", str(spb),
                          "--warmup", str(warmup), "--measure", str(measure),
                          "--hub-pid", str(pid), "--prefix", prefix],
                         capture_output=True, text=True, timeout=warmup + measure + 300)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-vm", action="store_true")
    ap.add_argument("--ceiling", default="10,20,40,60,80,100,140",
                    help="samples per batch of the ceiling steps; empty to skip them")
    ap.add_argument("--measure", type=int, default=60)
    a = ap.parse_args()
    binary = os.path.join(ROOT, "target", "release", "vitals-hub")
    lg = os.path.join(ROOT, "target", "release", "vitals-loadgen")
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not a.skip_vm:
        res["vm_perhost"] = run_vm("perhost")
        res["vm_batched"] = run_vm("batched")
    data = tempfile.mkdtemp(prefix="vitals-bench-")
    try:
        hub, tok = start_hub(binary, data)
        res["hub_idle_rss_mib"] = round(rss_kib(hub.pid) / 1024, 1)
        try:
            r = loadgen(lg, tok, hub.pid, 1000, 1, 10, a.measure, "rt")
            res["vitals_1000x1hz"] = r
            res["vitals_ceiling"] = []
            for k in [int(x) for x in a.ceiling.split(",") if x]:
                r = loadgen(lg, tok, hub.pid, 1000, k, 5, 20, f"c{k}")
                res["vitals_ceiling"].append(r)
                print(json.dumps(r), flush=True)
                if r["ack_ms_p99"] > 1000 or r["acked_samples_per_s"] < 0.95 * r["target_samples_per_s"]:
                    break
        finally:
            hub.send_signal(signal.SIGTERM)
            hub.wait(timeout=60)
        res["vitals_db_bytes"] = sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
