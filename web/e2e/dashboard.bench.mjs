// Dashboard benchmark (BENCHMARKS.md, "Web dashboard"): a release hub with `--demo 200`
// (200 simulated devices, each reporting every second) and Debian's Chromium at 1280x800.
//
// Measures, over RUNS fresh page loads (median reported):
//   - bytes of JS + CSS transferred (gzip, as the hub serves them);
//   - time from navigation start to the first live card update (performance mark set by the
//     overview when the first `/ws/live` sample is written into a card);
// and over 60 s of live updates on the overview:
//   - main-thread busy %, from Chromium's performance timeline (TaskDuration / wall time),
//     sampled in 10 s windows (median and max).
// With PEER=netdata (and netdata installed), the same timeline figures for Netdata's own
// dashboard on http://127.0.0.1:19999 beside ours, in the same run.
//
//   npm --prefix web run bench            # writes bench/results/dashboard-<date>.json
//
// Environment: DEVICES (default 200), RUNS (default 5), SECONDS (default 60), VITALS_HUB_BIN.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, freePort, hubBinary, repo, startHub } from './hub.mjs';

const DEVICES = Number(process.env.DEVICES ?? 200);
const RUNS = Number(process.env.RUNS ?? 5);
const SECONDS = Number(process.env.SECONDS ?? 60);
const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Main-thread busy % of a page over `seconds`, in 10 s windows, from CDP Performance metrics. */
async function busy(page, seconds) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable', { timeDomain: 'timeTicks' });
  const read = async () => {
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    return { task: m.TaskDuration, script: m.ScriptDuration, layout: m.LayoutDuration + m.RecalcStyleDuration, t: m.Timestamp };
  };
  const windows = [];
  let prev = await read();
  for (let i = 0; i < Math.max(1, Math.round(seconds / 10)); i++) {
    await sleep(10_000);
    const cur = await read();
    const wall = cur.t - prev.t;
    windows.push({ busyPct: (100 * (cur.task - prev.task)) / wall, scriptPct: (100 * (cur.script - prev.script)) / wall, stylePct: (100 * (cur.layout - prev.layout)) / wall });
    prev = cur;
  }
  await cdp.detach();
  return {
    windows,
    busyPctMedian: median(windows.map((w) => w.busyPct)),
    busyPctMax: Math.max(...windows.map((w) => w.busyPct)),
    scriptPctMedian: median(windows.map((w) => w.scriptPct)),
    styleLayoutPctMedian: median(windows.map((w) => w.stylePct)),
  };
}

/** Bytes on the wire (encoded, with headers, as DevTools' "transferred") for scripts and stylesheets. */
async function transferCounter(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const types = new Map();
  const seen = new Map();
  cdp.on('Network.responseReceived', (e) => {
    if (e.type === 'Script' || e.type === 'Stylesheet') types.set(e.requestId, { url: e.response.url, encoding: e.response.headers['content-encoding'] ?? e.response.headers['Content-Encoding'] ?? 'identity' });
  });
  cdp.on('Network.loadingFinished', (e) => {
    const t = types.get(e.requestId);
    if (t) seen.set(t.url, { bytes: e.encodedDataLength, encoding: t.encoding });
  });
  return seen;
}

const home = mkdtempSync(join(tmpdir(), 'vitals-bench-'));
let hub = null;
let browser = null;
let netdata = null;
const result = { date: new Date().toISOString(), devices: DEVICES, runs: RUNS, seconds: SECONDS, chromium: null, vitals: {}, peer: null };
try {
  const bin = hubBinary('release');
  const port = await freePort();
  hub = await startHub(bin, { port, dataDir: join(home, 'data'), args: ['--no-self-monitor', '--demo', String(DEVICES)] });
  console.log(`hub ${hub.url} with ${DEVICES} simulated devices`);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  result.chromium = browser.version();
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  await page.goto(hub.setupUrl);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', 'correct horse battery');
  await page.click('button[type=submit]');
  await page.waitForSelector('.card.device');
  await sleep(3000); // the demo fills every device's first samples

  // Each run is a cold load: a fresh browser context (empty cache) signed in with the cookies.
  const state = await ctx.storageState();
  const firsts = [];
  const transfers = [];
  for (let i = 0; i < RUNS; i++) {
    const cold = await browser.newContext({ viewport: { width: 1280, height: 800 }, storageState: state });
    const p = await cold.newPage();
    const seen = await transferCounter(p);
    await p.goto(`${hub.url}/`, { waitUntil: 'load' });
    await p.waitForFunction(() => performance.getEntriesByName('vitals:first-live-update').length > 0, null, { timeout: 10_000 });
    const first = await p.evaluate(() => performance.getEntriesByName('vitals:first-live-update')[0].startTime);
    const steps = await p.evaluate(() => {
      const r = Object.fromEntries(
        performance
          .getEntriesByType('resource')
          .filter((e) => /\/api\/(auth\/me|settings|overview)|\.js$|\.css$/.test(e.name))
          .map((e) => [new URL(e.name).pathname.replace(/-[\w-]+\.(js|css)$/, '.$1'), Math.round(e.responseEnd)]),
      );
      const nav = performance.getEntriesByType('navigation')[0];
      const marks = Object.fromEntries(performance.getEntriesByType('mark').map((m) => [m.name.replace('vitals:', ''), Math.round(m.startTime)]));
      return { html: Math.round(nav.responseEnd), domContentLoaded: Math.round(nav.domContentLoadedEventEnd), ...r, ...marks };
    });
    console.log(`     ${JSON.stringify(steps)}`);
    const cards = await p.$$eval('.card.device', (els) => els.length);
    if (cards !== DEVICES) throw new Error(`expected ${DEVICES} cards, saw ${cards}`);
    await sleep(300);
    const bytes = [...seen.values()].reduce((a, x) => a + x.bytes, 0);
    firsts.push(first);
    transfers.push(bytes);
    console.log(`run ${i + 1}: first live update ${first.toFixed(0)} ms after navigation; JS+CSS ${bytes} bytes (${[...seen.values()].map((x) => x.encoding).join(', ')})`);
    await cold.close();
  }
  result.vitals.firstLiveUpdateMs = { median: median(firsts), runs: firsts };
  result.vitals.jsCssBytes = { median: median(transfers), runs: transfers };

  await page.goto(`${hub.url}/`);
  await page.waitForSelector('.card.device');
  await sleep(2000);
  console.log(`measuring main-thread busy % for ${SECONDS} s with ${DEVICES} devices updating every second...`);
  result.vitals.mainThread = await busy(page, SECONDS);
  console.log(`vitals overview: busy ${result.vitals.mainThread.busyPctMedian.toFixed(1)} % (median of 10 s windows), max ${result.vitals.mainThread.busyPctMax.toFixed(1)} %`);

  if (process.env.PEER === 'netdata') {
    if (!existsSync('/usr/sbin/netdata')) throw new Error('PEER=netdata but /usr/sbin/netdata is missing (apt-get install netdata-core netdata-web)');
    const ndHome = join(home, 'netdata');
    mkdirSync(ndHome, { recursive: true });
    netdata = spawn('/usr/sbin/netdata', ['-D', '-i', '127.0.0.1', '-p', '19999'], { stdio: 'ignore', env: { ...process.env, DO_NOT_TRACK: '1' } });
    let up = false;
    for (let i = 0; i < 60 && !up; i++) {
      await sleep(1000);
      up = await fetch('http://127.0.0.1:19999/api/v1/info').then((r) => r.ok, () => false);
    }
    if (!up) throw new Error('netdata did not answer on 127.0.0.1:19999 within 60 s');
    const nd = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    const seen = await transferCounter(nd);
    await nd.goto('http://127.0.0.1:19999/', { waitUntil: 'domcontentloaded' });
    await sleep(8000);
    const bytes = [...seen.values()].reduce((a, x) => a + x.bytes, 0);
    console.log(`netdata dashboard: JS+CSS ${bytes} bytes`);
    const m = await busy(nd, SECONDS);
    console.log(`netdata dashboard: busy ${m.busyPctMedian.toFixed(1)} % (median), max ${m.busyPctMax.toFixed(1)} %`);
    result.peer = { name: 'netdata', version: await fetch('http://127.0.0.1:19999/api/v1/info').then((r) => r.json()).then((j) => j.version, () => null), jsCssBytes: bytes, mainThread: m };
  }
} finally {
  await browser?.close().catch(() => {});
  await hub?.stop().catch(() => {});
  netdata?.kill('SIGTERM');
  rmSync(home, { recursive: true, force: true });
}
const out = join(repo, 'bench/results', `dashboard-${result.date.slice(0, 10)}.json`);
mkdirSync(join(repo, 'bench/results'), { recursive: true });
writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify({ firstLiveUpdateMs: result.vitals.firstLiveUpdateMs.median, jsCssBytes: result.vitals.jsCssBytes.median, busyPct: result.vitals.mainThread.busyPctMedian, peerBusyPct: result.peer?.mainThread.busyPctMedian ?? null }));
console.log(`wrote ${out}`);
