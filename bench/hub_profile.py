#!/usr/bin/env python3
"""Hub CPU at 1,000 agents x 1 Hz for a shorter window, optionally with a perf profile.

Usage: python3 bench/hub_profile.py [--measure 40] [--perf OUT.data]
Set VITALS_WORKERS=N in the environment to try another number of async workers (default: cores - 1).
Needs the release build (`cargo build --release -p vitals-hub -p vitals-testkit --bins`).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ingest_hub as ih  # noqa: E402

ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", type=int, default=40)
    ap.add_argument("--perf", help="write a `perf record -g` profile of the hub here")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "vitals-hub"),
                    help="the hub binary to measure (to compare builds in one sitting)")
    a = ap.parse_args()
    binary = a.binary
    lg = os.path.join(ROOT, "target", "release", "vitals-loadgen")
    data = tempfile.mkdtemp(prefix="vitals-prof-")
    hub, tok = ih.start_hub(binary, data)
    res = {}
    try:
        t = threading.Thread(target=lambda: res.update(
            r=ih.loadgen(lg, tok, hub.pid, 1000, 1, 10, a.measure, "profile")))
        t.start()
        if a.perf:
            time.sleep(12)
            subprocess.run(["perf", "record", "-F", "1999", "-g", "-p", str(hub.pid),
                            "-o", a.perf, "--", "sleep", str(max(5, a.measure - 10))],
                           capture_output=True)
        t.join()
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)
    r = res.get("r", {})
    print({k: r.get(k) for k in ["hub_cpu_pct_core", "hub_rss_mib_median", "ack_ms_p50", "ack_ms_p99"]})


if __name__ == "__main__":
    main()
