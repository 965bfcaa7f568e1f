// Browser end-to-end test of the vitals-embed page, in Debian's Chromium via playwright-core.
//
// Starts the job_runner example on a free port (or uses EMBED_URL if set), then checks that
// every card, chart and the jobs table render with live data, that an alert can be dismissed
// and that the page reports its connection state. Saves screenshots at 1280 and 390 px wide
// to docs/screenshots/. Exits non-zero on any failure; the last line is "N passed, M failed".
//
//   npm --prefix web/embed run e2e
//
// Environment: EMBED_URL (skip starting the example), CHROMIUM (default /usr/bin/chromium),
// CARGO_TARGET_DIR (passed through to cargo).

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const shots = join(repo, 'docs/screenshots');
let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e instanceof Error ? e.message : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Starts the example and resolves with its URL from the line it prints. */
function startExample(extra = []) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(
      'cargo',
      ['run', '--quiet', '-p', 'vitals-embed', '--example', 'job_runner', '--', '--port', '0', '--interval-ms', '500', '--jobs-per-sec', '4', ...extra],
      { cwd: repo, stdio: ['ignore', 'pipe', 'inherit'], detached: false },
    );
    const timer = setTimeout(() => reject(new Error('example did not print its URL within 600 s')), 600_000);
    let buf = '';
    child.stdout.on('data', (chunk) => {
      buf += chunk.toString();
      const m = buf.match(/dashboard listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolvePromise({ url: m[1], child });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`example exited early with code ${code}`));
    });
  });
}

const home = mkdtempSync(join(tmpdir(), 'embed-e2e-'));
let example = null;
let secured = null;
let browser = null;
try {
  let url = process.env.EMBED_URL;
  if (!url) {
    example = await startExample();
    url = example.url;
  }
  console.log(`testing ${url}`);
  // A fresh profile directory per run; playwright passes it as --user-data-dir.
  browser = await chromium.launchPersistentContext(join(home, 'profile'), {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, 'config') },
    viewport: { width: 1280, height: 900 },
  });
  const context = browser;
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  // Keep a handle on the page's sockets so the reconnect check can drop one.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
      }
    };
  });
  await page.goto(url, { waitUntil: 'load' });

  await check('connection state becomes live', async () => {
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
  });

  await check('all 8 overview cards show values', async () => {
    const keys = ['jobs_active', 'jobs_completed', 'jobs_failed', 'queue_length', 'http_requests', 'avg_response_time', 'memory_usage', 'cpu_usage'];
    await page.waitForFunction(() => document.querySelector('[data-card="http_requests"] .value')?.textContent !== '–', null, { timeout: 15_000 });
    for (const k of keys) {
      const text = (await page.textContent(`[data-card="${k}"] .value`))?.trim() ?? '';
      assert(text !== '' && text !== '–', `card ${k} is empty`);
    }
    assert((await page.locator('.card').count()) === 8, 'expected exactly 8 cards');
  });

  await check('memory card is non-zero (sample_process works)', async () => {
    const text = (await page.textContent('[data-card="memory_usage"] .value')) ?? '';
    assert(/^[1-9][\d,]* MB$/.test(text.trim()), `memory card reads ${text}`);
  });

  await check('job status doughnut draws segments', async () => {
    await page.waitForFunction(() => {
      const segs = document.querySelectorAll('#chart-status svg circle[data-segment]');
      return segs.length === 4 && [...segs].some((c) => parseFloat(c.getAttribute('stroke-dasharray') ?? '0') > 0);
    }, null, { timeout: 15_000 });
  });

  await check('jobs-over-time chart is a uPlot canvas with points', async () => {
    await page.waitForSelector('#chart-jobs canvas', { timeout: 5_000 });
    const box = await page.locator('#chart-jobs canvas').first().boundingBox();
    assert(box && box.width > 100 && box.height > 100, 'canvas too small');
  });

  await check('provider bar chart has bars', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#chart-providers svg g[data-provider] rect').length > 0, null, { timeout: 15_000 });
    const h = await page.$$eval('#chart-providers svg g[data-provider] rect', (rs) => rs.map((r) => parseFloat(r.getAttribute('height') ?? '0')));
    assert(h.some((x) => x > 0), 'all bars have zero height');
  });

  await check('system resources chart has two y axes', async () => {
    await page.waitForSelector('#chart-resources canvas', { timeout: 5_000 });
    const axes = await page.locator('#chart-resources .u-axis').count();
    assert(axes >= 3, `expected x + 2 y axes, found ${axes}`);
  });

  await check('jobs table has rows with status badge, progress bar and duration', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length >= 3, null, { timeout: 15_000 });
    const rows = await page.locator('#jobs tbody tr').count();
    assert(rows <= 50, `more than 50 rows: ${rows}`);
    const first = page.locator('#jobs tbody tr').first();
    const badge = await first.locator('.badge').getAttribute('class');
    assert(/status-(pending|running|completed|failed|cancelled)/.test(badge ?? ''), `badge class ${badge}`);
    assert((await first.locator('.progress .bar').count()) === 1, 'no progress bar');
    const duration = (await first.locator('td').nth(6).textContent()) ?? '';
    assert(/\d+s|\d+m|\d+h/.test(duration), `duration reads ${duration}`);
  });

  await check('health badge shows a health state', async () => {
    const h = await page.getAttribute('#health', 'data-health');
    assert(['healthy', 'degraded', 'unhealthy'].includes(h ?? ''), `health ${h}`);
  });

  await check('at most 3 alerts are shown, coloured by severity', async () => {
    await page.waitForSelector('.alert', { timeout: 15_000 });
    const n = await page.locator('.alert').count();
    assert(n >= 1 && n <= 3, `${n} alerts shown`);
    const cls = await page.locator('.alert').first().getAttribute('class');
    assert(/alert-(critical|warning|info)/.test(cls ?? ''), `alert class ${cls}`);
  });

  await check('an alert can be dismissed and stays dismissed', async () => {
    // Click by id: `.alert` first is re-resolved on every use, and a new alert arriving
    // between reading the id and clicking would put another alert first (a CI failure).
    const id = await page.locator('.alert').first().getAttribute('data-alert-id');
    await page.locator(`.alert[data-alert-id="${id}"] button.dismiss`).click();
    await page.waitForFunction((i) => !document.querySelector(`.alert[data-alert-id="${i}"]`), id, { timeout: 5_000 });
    await page.waitForTimeout(1200); // two more snapshots arrive
    assert((await page.locator(`.alert[data-alert-id="${id}"]`).count()) === 0, 'dismissed alert came back');
  });

  await check('user strings are not interpreted as HTML', async () => {
    const html = await page.innerHTML('#jobs tbody');
    assert(!/<script/i.test(html), 'script tag in table');
  });

  await check('no JavaScript errors', async () => {
    assert(errors.length === 0, errors.join(' | '));
  });

  mkdirSync(shots, { recursive: true });
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(shots, 'embed-1280.png'), fullPage: true });

  await check('mobile layout (390 px) has no horizontal page overflow', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(500);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 1, `page is ${overflow}px wider than the viewport`);
    await page.screenshot({ path: join(shots, 'embed-390.png'), fullPage: true });
  });

  await check('the page shows the lost connection and reconnects', async () => {
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 10_000 });
    const before = await page.evaluate(() => window.__sockets.length);
    await page.evaluate(() => window.__sockets[window.__sockets.length - 1].close());
    await page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 5_000 });
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 20_000 });
    const after = await page.evaluate(() => window.__sockets.length);
    assert(after > before, 'no new socket was opened');
  });

  if (!process.env.EMBED_URL) {
    secured = await startExample(['--token', 'e2e-secret']);
    await check('with a bearer token, the page works when opened as /#token=...', async () => {
      const p = await context.newPage();
      await p.goto(`${secured.url}#token=e2e-secret`, { waitUntil: 'load' });
      await p.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
      await p.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length > 0, null, { timeout: 15_000 });
      assert(!p.url().includes('e2e-secret'), 'token left in the address bar');
      await p.close();
    });
    await check('with a bearer token, the page without it says unauthorized', async () => {
      const p = await context.newPage();
      // A fresh tab: sessionStorage is per tab, so no token is remembered.
      await p.goto(secured.url, { waitUntil: 'load' });
      await p.waitForSelector('#conn[data-state="unauthorized"]', { timeout: 15_000 });
      await p.close();
    });
  }
} catch (e) {
  failed += 1;
  console.log(`FAIL setup: ${e instanceof Error ? e.message : e}`);
} finally {
  if (browser) await browser.close().catch(() => undefined);
  for (const ex of [example, secured]) {
    if (!ex) continue;
    const exited = new Promise((r) => {
      if (ex.child.exitCode !== null) r();
      ex.child.once('exit', r);
      setTimeout(r, 5_000);
    });
    ex.child.kill('SIGTERM');
    await exited;
  }
  rmSync(home, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
