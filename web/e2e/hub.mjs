// Helpers shared by the dashboard's end-to-end test and benchmark: start a real hub (the debug
// or release binary) on a free loopback port, and a fake agent that pairs and reports over the
// hub's real HTTP API with the real agent message shapes.

import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '../..');

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Builds the hub (a no-op when it is up to date) and returns the binary's path. */
export function hubBinary(profile = 'debug') {
  if (process.env.VITALS_HUB_BIN) return process.env.VITALS_HUB_BIN;
  const args = ['build', '--quiet', '-p', 'vitals-hub', ...(profile === 'release' ? ['--release'] : [])];
  const r = spawnSync('cargo', args, { cwd: repo, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('cargo build -p vitals-hub failed');
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, 'target');
  return join(target, profile, 'vitals-hub');
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
    s.on('error', rej);
  });
}

/** Starts a hub; resolves with {url, setupUrl, child, stop()} once it listens. */
export function startHub(bin, { port, dataDir, args = [] }) {
  return new Promise((res, rej) => {
    const child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
      cwd: repo,
      stdio: ['ignore', 'pipe', 'pipe'],
      // The hub refuses unknown VITALS_* variables (typos are errors): pass none of ours.
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITALS_'))), RUST_LOG: process.env.RUST_LOG ?? 'warn' },
    });
    let out = '';
    let errOut = '';
    const timer = setTimeout(() => rej(new Error(`hub did not start within 60 s: ${errOut.slice(-2000)}`)), 60_000);
    child.stderr.on('data', (d) => {
      errOut += d;
      if (process.env.E2E_VERBOSE) process.stderr.write(d);
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http\S+)/);
      if (m) {
        clearTimeout(timer);
        const setup = out.match(/(http\S+\/setup\?token=\S+)/);
        res({
          url: m[1],
          setupUrl: setup ? setup[1] : null,
          child,
          stop: () =>
            new Promise((done) => {
              if (child.exitCode != null) return done();
              child.once('exit', () => done());
              child.kill('SIGTERM');
            }),
        });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`hub exited with ${code}: ${errOut.slice(-2000)}`));
    });
  });
}

/** A sample in the agent's wire shape (camelCase MetricSample). */
export function sample(hostId, ts, cpu, extra = {}) {
  const memTotal = 8 * 1024 ** 3;
  return {
    v: 1,
    ts,
    hostId,
    cpu: { total: cpu, perCore: [cpu, Math.min(100, cpu + 5), Math.max(0, cpu - 5), cpu], user: cpu * 0.7, system: cpu * 0.3 },
    mem: { used: memTotal * (0.3 + (cpu % 10) / 100), total: memTotal, available: memTotal * 0.6 },
    disk: [{ name: '/', used: 40e9, total: 100e9, inodesUsed: 2e5, inodesTotal: 6e6 }],
    net: { rxBps: 1000 + cpu * 100, txBps: 500 + cpu * 10 },
    uptimeSec: 86_400 + ts / 1000 - 1.7e9,
    procCount: 200,
    swap: { used: 1e8, total: 2e9 },
    load: { one: cpu / 50, five: cpu / 60, fifteen: cpu / 70 },
    temps: [{ name: 'cpu', celsius: 40 + cpu / 10 }],
    containers: [{ name: 'web', image: 'nginx:1.27', state: 'running', cpu: 1.5, memBytes: 5e7, netRxBps: 100, netTxBps: 50 }],
    dockerSize: 3.2e9,
    kernel: { 'psi.io.some.avg10': cpu / 10, 'psi.io.some.stall_pct': cpu / 5, 'vmstat.pgfault': 1000 + cpu },
    ...extra,
  };
}

/** A fake agent speaking the real protocol over `POST /api/report`. */
export class FakeAgent {
  constructor(hub, hostId, hostname) {
    this.hub = hub;
    this.hostId = hostId;
    this.hostname = hostname;
    this.seq = 0;
    this.token = null;
  }

  async requestCode() {
    const r = await fetch(`${this.hub}/api/device-codes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: this.hostId, hostname: this.hostname, agentVersion: '0.9.0-e2e' }),
    });
    if (r.status !== 201) throw new Error(`device-codes answered ${r.status}: ${await r.text()}`);
    this.code = (await r.json()).code;
    return this.code;
  }

  async pollToken() {
    const r = await fetch(`${this.hub}/api/device-token?code=${encodeURIComponent(this.code)}`);
    const j = await r.json();
    if (r.status !== 200) throw new Error(`device-token answered ${r.status}: ${JSON.stringify(j)}`);
    this.token = j.token;
    this.deviceId = j.deviceId;
    return j;
  }

  async post(body) {
    const r = await fetch(`${this.hub}/api/report`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    if (r.status !== 200 || j.type !== 'ack') throw new Error(`report answered ${r.status}: ${JSON.stringify(j)}`);
    return j;
  }

  send(samples) {
    this.seq += 1;
    return this.post({ type: 'metrics', seq: this.seq, samples });
  }

  sendState() {
    this.seq += 1;
    return this.post({
      type: 'state',
      seq: this.seq,
      systemInfo: { os: 'Debian GNU/Linux 12', architecture: 'x86_64', uptime: 86400, hostname: this.hostname, ipAddress: '192.0.2.10', macAddress: '02:00:00:00:00:01', kernel: '6.1.0-e2e', cpuModel: 'E2E CPU @ 3.0GHz', cpuCores: 4, agentVersion: '0.9.0-e2e' },
      processes: {
        top_processes: [
          { pid: 101, name: 'postgres', user: 'postgres', cpu: 12.5, rss: 2.5e8 },
          { pid: 202, name: '<script>alert(1)</script>', user: 'www', cpu: 3.1, rss: 1.2e8 },
        ],
        top_by_memory: [{ pid: 101, name: 'postgres', user: 'postgres', cpu: 12.5, rss: 2.5e8 }],
      },
      networkInterfaces: { interfaces: [{ name: 'eth0', mac: '02:00:00:00:00:01', addresses: ['192.0.2.10/24'], up: true, speedMbps: 1000 }] },
    });
  }
}
