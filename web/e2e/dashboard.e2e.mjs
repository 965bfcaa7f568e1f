// Browser end-to-end test of the web dashboard, in Debian's Chromium via playwright-core,
// against a real hub (built by cargo) with its own SQLite in a temporary folder:
//
//   setup link -> admin created -> a fake agent asks to pair -> approved on /pair?code= ->
//   its card updates live within 2 s -> the history chart shows the sent points -> the stats
//   table equals /api/stats -> an alert shows in the banner and can be dismissed -> a viewer
//   sees no admin controls and its writes are refused -> the hub restarts and the page
//   reconnects by itself and updates again.
//
// Screenshots of every page at 1280x800 and 390x844 go to docs/screenshots/dashboard-*.png.
// Exits non-zero on any failure; the last line is "N passed, M failed".
//
//   npm --prefix web run e2e
//
// Environment: VITALS_HUB_BIN (skip `cargo build`), CHROMIUM (default /usr/bin/chromium),
// E2E_VERBOSE=1 (hub logs).

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, FakeAgent, freePort, hubBinary, repo, sample, startHub } from './hub.mjs';

const shots = join(repo, 'docs/screenshots');
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** WCAG 2 AA checks of the current page with axe-core: contrast, names, labels, keyboard. */
async function accessible(page, what) {
  // Evaluated through the DevTools protocol: the app's CSP (no inline scripts) stays on.
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) await page.evaluate(axeSource);
  const found = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  });
  assert(found.length === 0, `${what}: WCAG AA problems:\n  ${found.join('\n  ')}`);
}
mkdirSync(shots, { recursive: true });
let passed = 0;
let failed = 0;

async function check(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e instanceof Error ? e.stack ?? e.message : e}`);
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Screenshots a page at the desktop and phone sizes. */
async function snap(page, name) {
  await page.setViewportSize({ width: 1280, height: 800 });
  await sleep(400);
  await page.screenshot({ path: join(shots, `dashboard-${name}.png`) });
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(400);
  await page.screenshot({ path: join(shots, `dashboard-${name}-mobile.png`) });
  // Nothing may overflow a phone's width, down to 360 px.
  for (const width of [390, 360]) {
    await page.setViewportSize({ width, height: 800 });
    await sleep(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 1, `${name}: the page is ${overflow}px wider than a ${width}px phone`);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

const home = mkdtempSync(join(tmpdir(), 'vitals-e2e-'));
const dataDir = join(home, 'data');
let hub = null;
let browser = null;
const errors = [];
try {
  const bin = hubBinary();
  const port = await freePort();
  hub = await startHub(bin, { port, dataDir, args: ['--no-self-monitor', '--demo', '3'] });
  const base = hub.url;
  console.log(`testing ${base}`);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const adminCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await adminCtx.newPage();
  page.on('pageerror', (e) => errors.push(`admin page: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[134]/.test(m.text())) errors.push(`admin console: ${m.text()}`);
  });

  await check('the hub serves the app: index never cached, hashed assets cached a year and gzipped', async () => {
    const index = await fetch(`${base}/some/client/route`);
    assert(index.status === 200 && index.headers.get('cache-control') === 'no-cache', `index: ${index.status} ${index.headers.get('cache-control')}`);
    const html = await index.text();
    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
    assert(assets.length >= 2, `index links its hashed JS and CSS: ${assets}`);
    for (const a of assets) {
      const r = await fetch(`${base}${a}`, { headers: { 'accept-encoding': 'gzip' } });
      assert(r.status === 200, `${a}: ${r.status}`);
      assert(r.headers.get('cache-control') === 'public, max-age=31536000, immutable', `${a} cache: ${r.headers.get('cache-control')}`);
      assert(r.headers.get('content-encoding') === 'gzip', `${a} encoding: ${r.headers.get('content-encoding')}`);
    }
  });

  await check('sign-in page and first-run setup', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('form input[name=password]');
    assert(page.url().includes('/login'), `signed-out visit goes to sign-in, got ${page.url()}`);
    await page.waitForSelector('text=No admin exists yet');
    await snap(page, 'login');
    await accessible(page, 'sign-in page');
    assert(hub.setupUrl, 'the hub printed a setup link');
    await page.goto(hub.setupUrl);
    await page.waitForSelector('text=Create the first admin account');
    await snap(page, 'setup');
    await page.fill('input[name=username]', 'admin');
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('button[type=submit]');
    await page.waitForSelector('.card.device', { timeout: 10_000 });
    await page.waitForSelector('.conn[data-state=live]', { timeout: 10_000 });
  });

  const agent = new FakeAgent(base, 'e2e-host-1', 'e2e-box.local');
  await check('a fake agent pairs through /pair?code= and is approved in the page', async () => {
    const code = await agent.requestCode();
    await page.goto(`${base}/pair?code=${code}`);
    await page.waitForSelector('dl.facts');
    const facts = await page.textContent('dl.facts');
    assert(facts.includes('e2e-box.local') && facts.includes('e2e-host-1') && facts.includes('0.9.0-e2e') && facts.includes('127.0.0.1'), `shows who asks: ${facts}`);
    await snap(page, 'pair');
    await accessible(page, 'pair page');
    await page.fill('input[name=name]', 'e2e-box');
    await page.click('button:has-text("Approve")');
    await page.waitForSelector('text=Approved');
    const j = await agent.pollToken();
    assert(j.token && j.deviceId, 'the agent gets its token');
    // An unknown code says so.
    await page.goto(`${base}/pair?code=ZZZZ-ZZZZ`);
    await page.waitForSelector('.notice.err');
    const msg = await page.textContent('.notice.err');
    assert(/Unknown code/.test(msg), `unknown code message: ${msg}`);
  });

  // Two minutes of history, one sample per second, with known values.
  const t0 = Date.now() - 121_000;
  const history = [];
  for (let i = 0; i < 120; i++) history.push(sample(agent.hostId, t0 + i * 1000, 20 + (i % 30)));
  await agent.send(history);
  await agent.sendState();

  await check('its card updates live within 2 s', async () => {
    await page.goto(`${base}/`);
    const card = `.card.device[data-device="${agent.deviceId}"]`;
    await page.waitForSelector(card);
    for (const cpu of [42.5, 77.25]) {
      const sent = Date.now();
      await agent.send([sample(agent.hostId, Date.now(), cpu)]);
      const want = `${cpu.toFixed(1)} %`;
      await page.waitForFunction(
        ([sel, w]) => document.querySelector(`${sel} [data-metric=cpu] .val`)?.textContent === w,
        [card, want],
        { timeout: 2000 },
      );
      console.log(`     card showed ${want} ${Date.now() - sent} ms after the agent's report was acknowledged`);
    }
    const badge = await page.textContent(`${card} .badge`);
    assert(badge === 'online', `status badge: ${badge}`);
    const first = await page.evaluate(() => document.body.dataset.firstLiveUpdate);
    assert(first, 'the page marks its first live update');
  });

  await check('the fleet page is keyboard reachable: Tab to a card, Enter opens it', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector(`.card.device[data-device="${agent.deviceId}"]`);
    let reached = false;
    for (let i = 0; i < 40 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate((id) => document.activeElement?.getAttribute('data-device') === id, agent.deviceId);
    }
    assert(reached, 'Tab reaches the device card');
    const ring = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert(ring !== 'none', `a visible focus ring: ${ring}`);
    await page.keyboard.press('Enter');
    await page.waitForURL(`**/devices/${agent.deviceId}`);
    await page.waitForSelector('.gauge');
  });

  await check('search, status filter and sort work on the cards', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('.card.device');
    await page.fill('input[type=search]', 'e2e');
    await page.waitForFunction(() => [...document.querySelectorAll('.card.device')].filter((c) => !c.hidden).length === 1);
    await page.fill('input[type=search]', '');
    await page.selectOption('select[aria-label="Filter by status"]', 'offline');
    await page.waitForFunction(() => [...document.querySelectorAll('.card.device')].every((c) => c.hidden));
    await page.selectOption('select[aria-label="Filter by status"]', '');
    await page.selectOption('select[aria-label="Sort devices"]', 'name');
    const names = await page.$$eval('.card.device .name', (els) => els.map((e) => e.textContent));
    assert(names.join() === [...names].sort((a, b) => a.localeCompare(b, undefined, { numeric: true })).join(), `sorted by name: ${names}`);
    assert(names.length === 4, `3 simulated devices and the agent: ${names}`);
    const simulated = await page.$$eval('.card.device .tag', (els) => els.length);
    assert(simulated === 3, `simulated labels: ${simulated}`);
  });

  await check('an alert shows in the banner, with its severity, and can be dismissed', async () => {
    const r = await page.evaluate(async (deviceId) => {
      const csrf = decodeURIComponent((document.cookie.match(/(?:^|; )vitals_csrf=([^;]*)/) || [])[1] || '');
      const res = await fetch('/api/alert-rules', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify({ name: 'E2E hot CPU', metric: 'cpu', op: '>', threshold: 50, durationSec: 1, severity: 'critical', deviceIds: [deviceId] }),
      });
      return res.status;
    }, agent.deviceId);
    assert(r === 201, `rule created: ${r}`);
    const now = Date.now();
    await agent.send([sample(agent.hostId, now, 90), sample(agent.hostId, now + 1500, 91)]);
    await page.waitForSelector('.banner .alert.sev-critical', { timeout: 5000 });
    const text = await page.textContent('.banner .alert');
    assert(text.includes('e2e-box') && text.includes('E2E hot CPU'), `banner: ${text}`);
    await snap(page, 'overview');
    await accessible(page, 'fleet page (dark)');
    await page.click('.banner .alert .close');
    await page.waitForFunction(() => !document.querySelector('.banner .alert'));
  });

  await check('the device page shows live gauges, per-core bars and live charts', async () => {
    await page.goto(`${base}/devices/${agent.deviceId}`);
    await page.waitForSelector('.gauge');
    await page.waitForFunction(() => document.querySelectorAll('.core').length === 4);
    await agent.send([sample(agent.hostId, Date.now() + 2000, 33)]);
    await page.waitForFunction(() => document.querySelector('.gauge')?.dataset.value === '33', null, { timeout: 2000 });
    await page.waitForFunction(() => Number(document.querySelector('.chart')?.dataset.points) > 100);
    await snap(page, 'device-live');
    await accessible(page, 'live tab');
  });

  await check('the history chart shows the sent points', async () => {
    const from = t0 - 500;
    const to = t0 + 119_500;
    await page.goto(`${base}/devices/${agent.deviceId}?tab=history&from=${from}&to=${to}`);
    await page.waitForSelector('.chart[data-group=cpu]');
    const pts = await page.getAttribute('.chart[data-group=cpu]', 'data-points');
    assert(Number(pts) === 120, `the CPU chart has ${pts} points; sent 120 in the range`);
    const groups = await page.$$eval('.chart', (els) => els.map((e) => e.dataset.group));
    for (const g of ['cpu', 'cores', 'mem', 'disk', 'net', 'temp', 'ccpu', 'docker']) assert(groups.includes(g), `a ${g} chart among ${groups}`);
    assert(!groups.some((g) => g.includes('kernel')), `kernel statistics stay on their own tab: ${groups}`);
    // The tooltip follows the cursor.
    const box = await (await page.$('.chart[data-group=cpu] .u-over')).boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.waitForSelector('.chart[data-group=cpu] .u-tip:not([hidden])');
    // Linked cursors: the other charts' cursors moved too.
    const linked = await page.$$eval('.u-cursor-x', (els) => els.filter((e) => e.style.transform && !e.style.transform.includes('-10')).length);
    assert(linked >= 2, `linked cursors: ${linked}`);
    await snap(page, 'device-history');
    await accessible(page, 'history tab');
    // Drag to zoom: the range narrows and the page reloads it.
    await page.mouse.move(box.x + box.width * 0.25, box.y + 30);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.5, box.y + 30, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction((f) => Number(new URL(location.href).searchParams.get('from')) > f + 20_000, from);
    await page.waitForFunction(() => {
      const n = Number(document.querySelector('.chart[data-group=cpu]')?.dataset.points);
      return n > 10 && n < 60;
    });
  });

  await check('the kernel tab charts kernel statistics by prefix', async () => {
    const from = t0 - 500;
    const to = t0 + 119_500;
    await page.goto(`${base}/devices/${agent.deviceId}?tab=kernel&kq=psi&from=${from}&to=${to}`);
    await page.waitForSelector('.chart[data-group="kernel.psi.io.some#0"]');
    const pts = await page.getAttribute('.chart[data-group="kernel.psi.io.some#0"]', 'data-points');
    assert(Number(pts) === 120, `the PSI chart has ${pts} points; sent 120`);
    assert((await page.$$('.chart[data-group^="kernel.vmstat"]')).length === 0, 'only the prefix asked for');
    await page.click('button[data-source=vmstat]');
    await page.waitForSelector('.chart[data-group="kernel.vmstat#0"]');
    assert(new URL(page.url()).searchParams.get('kq') === 'vmstat', 'the prefix is kept in the address');
    await snap(page, 'device-kernel');
    await accessible(page, 'kernel tab');
  });

  await check('the stats table matches /api/stats', async () => {
    const from = t0 - 500;
    const to = t0 + 119_500;
    await page.goto(`${base}/devices/${agent.deviceId}?tab=stats&from=${from}&to=${to}`);
    await page.waitForSelector('table.stats tbody tr');
    const series = 'cpu*,mem*,swap*,load*,disk*,net*,temp*,gpu*,container*,docker*,procs,uptime';
    const api = await page.evaluate(async ([id, f, t, s]) => (await fetch(`/api/stats/${id}?from=${f}&to=${t}&series=${encodeURIComponent(s)}`)).json(), [agent.deviceId, from, to, series]);
    assert(!Object.keys(api.series).some((n) => n.startsWith('kernel.')) && Object.keys(api.series).length > 20, 'the stats tab lists the headline series');
    const rows = await page.$$eval('table.stats tbody tr', (trs) =>
      trs.map((tr) => ({ series: tr.dataset.series, cells: Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.dataset.field, Number(td.dataset.raw)])) })),
    );
    assert(rows.length === Object.keys(api.series).length, `${rows.length} rows for ${Object.keys(api.series).length} series`);
    for (const r of rows) {
      const s = api.series[r.series];
      for (const f of ['count', 'min', 'max', 'avg', 'p95']) assert(r.cells[f] === s[f], `${r.series}.${f}: page ${r.cells[f]}, API ${s[f]}`);
    }
    const cpu = api.series.cpu;
    assert(cpu.count === 120 && cpu.min === 20 && cpu.max === 49, `the API's CPU stats reflect what was sent: ${JSON.stringify(cpu)}`);
    const shown = await page.textContent('tr[data-series=cpu] td[data-field=max]');
    assert(shown === '49.0 %', `formatted max: ${shown}`);
    await snap(page, 'device-stats');
    await accessible(page, 'stats tab');
  });

  await check('processes, system and Docker tabs show what the agent reported, escaped', async () => {
    await page.goto(`${base}/devices/${agent.deviceId}?tab=processes`);
    await page.waitForSelector('td:has-text("postgres")');
    const evil = await page.$$eval('td', (tds) => tds.some((td) => td.textContent === '<script>alert(1)</script>'));
    assert(evil, 'a process name with markup is shown as text');
    await snap(page, 'device-processes');
    await page.click('a[data-tab=system]');
    await page.waitForSelector('dd:has-text("E2E CPU @ 3.0GHz")');
    await page.waitForSelector('td:has-text("192.0.2.10/24")');
    await snap(page, 'device-system');
    await page.click('a[data-tab=docker]');
    await page.waitForSelector('td:has-text("nginx:1.27")');
    await snap(page, 'device-docker');
  });

  await check('app metrics: an admin inserts, everyone sees it live', async () => {
    await page.goto(`${base}/apps`);
    await page.waitForSelector('form.admin-only');
    for (const [n, v] of [['queue_depth', 12], ['queue_depth', 17], ['jobs_done', 3]]) {
      await page.fill('input[name=name]', n);
      await page.fill('input[name=value]', String(v));
      await page.click('button:has-text("Insert")');
      await page.waitForSelector(`text=Inserted ${n} = ${v}`);
    }
    await page.waitForSelector('.app-metric[data-name=queue_depth] .big:has-text("17")');
    const meta = await page.textContent('.app-metric[data-name=queue_depth]');
    assert(meta.includes('2 values'), `count per name: ${meta}`);
    await page.fill('input[name=alert-metric]', 'queue_depth');
    await page.fill('input[name=alert-threshold]', '15');
    await page.selectOption('select[name=alert-severity]', 'high');
    await page.click('button:has-text("Insert alert")');
    await page.waitForSelector('[data-bucket=alerts] td:has-text("queue_depth")');
    await snap(page, 'apps');
    await accessible(page, 'app metrics page');
  });

  await check('alerts, settings and their tabs render', async () => {
    await page.goto(`${base}/alerts`);
    await page.waitForSelector('td:has-text("E2E hot CPU")');
    await snap(page, 'alerts');
    await accessible(page, 'alerts page');
    for (const tab of ['devices', 'users', 'tokens', 'retention', 'notifications']) {
      await page.goto(`${base}/settings?tab=${tab}`);
      await page.waitForSelector(`.tab-body[data-tab=${tab}]`);
      await sleep(300);
      await snap(page, `settings-${tab}`);
      await accessible(page, `settings ${tab}`);
    }
  });

  await check('settings: rename a device, rotate its token, change retention', async () => {
    await page.goto(`${base}/settings?tab=devices`);
    const input = `input[aria-label="Name of e2e-box"]`;
    await page.waitForSelector(input);
    await page.fill(input, 'e2e-box-renamed');
    await page.click(`tr:has(${input}) button:has-text("Rename")`);
    await page.waitForSelector('text=Renamed to e2e-box-renamed');
    page.once('dialog', (d) => d.accept());
    await page.click(`tr:has(input[aria-label="Name of e2e-box-renamed"]) button:has-text("Rotate token")`);
    await page.waitForSelector('.secret-box code');
    const token = await page.textContent('.secret-box code');
    assert(token && token !== agent.token, 'a new token is shown once');
    agent.token = token;
    await agent.send([sample(agent.hostId, Date.now() + 3000, 10)]);
    await page.goto(`${base}/settings?tab=retention`);
    await page.fill('input[name="retention.rawDays"]', '5');
    await page.click('button:has-text("Save")');
    await page.waitForSelector('text=Saved');
    const s = await page.evaluate(async () => (await fetch('/api/settings')).json());
    assert(s['retention.rawDays'] === 5, `saved: ${s['retention.rawDays']}`);
  });

  await check('a viewer cannot see admin controls and its writes are refused', async () => {
    await page.goto(`${base}/settings?tab=users`);
    await page.fill('input[placeholder="User name"]', 'watcher');
    await page.fill('input[placeholder^="Password"]', 'viewer-password-1');
    await page.click('button:has-text("Add user")');
    await page.waitForSelector('text=Added watcher');
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const v = await ctx.newPage();
    v.on('pageerror', (e) => errors.push(`viewer page: ${e.message}`));
    await v.goto(`${base}/login`);
    await v.fill('input[name=username]', 'watcher');
    await v.fill('input[name=password]', 'viewer-password-1');
    await v.click('button[type=submit]');
    await v.waitForSelector('.card.device');
    assert((await v.textContent('.who')).includes('viewer'), 'signed in as a viewer');
    await v.goto(`${base}/settings`);
    await v.waitForSelector('.tab-body[data-tab=devices] table');
    assert((await v.$$('button:has-text("Remove")')).length === 0, 'no Remove buttons');
    assert((await v.$$('a[data-tab=users]')).length === 0, 'no Users tab');
    assert((await v.$$('a[data-tab=tokens]')).length === 0, 'no Tokens tab');
    await v.goto(`${base}/alerts`);
    await v.waitForSelector('td:has-text("E2E hot CPU")');
    assert((await v.$$('button:has-text("Add rule")')).length === 0, 'no rule form');
    assert((await v.$$('button:has-text("Delete")')).length === 0, 'no Delete buttons');
    await v.goto(`${base}/apps`);
    await v.waitForSelector('.app-metric');
    assert((await v.$$('form.admin-only')).length === 0, 'no insert form');
    await v.goto(`${base}/pair?code=ABCD-EFGH`);
    await v.waitForSelector('text=Only an admin can approve devices');
    const status = await v.evaluate(async (id) => {
      const csrf = decodeURIComponent((document.cookie.match(/(?:^|; )vitals_csrf=([^;]*)/) || [])[1] || '');
      const r = await fetch(`/api/devices/${id}`, { method: 'PATCH', headers: { 'content-type': 'application/json', 'x-csrf-token': csrf }, body: JSON.stringify({ name: 'hacked' }) });
      return r.status;
    }, agent.deviceId);
    assert(status === 403, `a viewer's rename is refused: ${status}`);
    await ctx.close();
  });

  await check('the light theme toggles and is remembered', async () => {
    await page.goto(`${base}/`);
    await page.waitForSelector('.card.device');
    await page.click('button:has-text("Light")');
    assert((await page.getAttribute('html', 'data-theme')) === 'light', 'light theme');
    await page.reload();
    await page.waitForSelector('.card.device');
    assert((await page.getAttribute('html', 'data-theme')) === 'light', 'remembered');
    await snap(page, 'overview-light');
    await accessible(page, 'fleet page (light)');
    await page.click('button:has-text("Dark")');
  });

  await check('the connection state shows a drop, and the page reconnects and updates by itself', async () => {
    await page.goto(`${base}/`);
    const card = `.card.device[data-device="${agent.deviceId}"]`;
    await page.waitForSelector(`${page.url() && card}`);
    await page.waitForSelector('.conn[data-state=live]');
    await hub.stop();
    await page.waitForSelector('.conn[data-state=offline]', { timeout: 10_000 });
    hub = await startHub(bin, { port, dataDir, args: ['--no-self-monitor'] });
    await page.waitForSelector('.conn[data-state=live]', { timeout: 15_000 });
    await agent.send([sample(agent.hostId, Date.now() + 4000, 64.5)]);
    await page.waitForFunction((sel) => document.querySelector(`${sel} [data-metric=cpu] .val`)?.textContent === '64.5 %', card, { timeout: 3000 });
  });

  await check('no script errors on any page', async () => {
    assert(errors.length === 0, errors.join('\n'));
  });
} catch (e) {
  failed += 1;
  console.log(`FAIL setup: ${e instanceof Error ? e.stack : e}`);
} finally {
  await browser?.close().catch(() => {});
  await hub?.stop().catch(() => {});
  rmSync(home, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
