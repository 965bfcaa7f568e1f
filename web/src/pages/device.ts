// A device's page (seed 003), with tabs: Live (gauges, per-core bars, live charts), History
// (uPlot charts of every series over 1h ... 30d or a custom range, drag to zoom, linked
// cursors, tooltips), Stats (min/max/avg/p95 over the same range), Processes, System (seed 002)
// and Docker.

import { api, type Device } from '../api';
import type { App } from '../app';
import { Gauge, TimeChart } from '../charts';
import { h, setText, table } from '../dom';
import { ago, bytes, dateTime, duration, pct, rate, status, toLocalInput, value as fmt } from '../format';
import { columns, groupSeries, HISTORY_SERIES, KERNEL_SOURCES, kernelGroups, pctOf, pushWindow, rangeOf, RANGES, sampleTs, unitOf, type MetricsResponse, type Range, type Sample } from '../shape';

const TABS = ['live', 'history', 'stats', 'kernel', 'processes', 'system', 'docker'] as const;
type Tab = (typeof TABS)[number];
const TAB_NAMES: Record<Tab, string> = { live: 'Live', history: 'History', stats: 'Stats', kernel: 'Kernel', processes: 'Processes', system: 'System', docker: 'Docker' };

interface Ctx {
  app: App;
  id: string;
  device: Device;
  latest: Sample | null;
  /** Listeners of this device's samples, for the open tab. */
  listeners: Set<(s: Sample) => void>;
  range: { name: string; custom?: Range };
  setParam(k: string, v: string | null): void;
}

interface DeviceState {
  systemInfo: Record<string, unknown> | null;
  processes: { top_processes: Proc[]; top_by_memory?: Proc[] } | null;
  networkInterfaces: { interfaces: { name: string; mac: string; addresses: string[]; up: boolean; speedMbps?: number | null }[] } | null;
  updatedAt: number | string | null;
}
interface Proc {
  pid: number;
  name: string;
  user: string;
  cpu: number;
  rss: number;
}

export function devicePage(root: HTMLElement, app: App, params: URLSearchParams, match: string[]): () => void {
  const id = match[0];
  const title = h('h1', {}, '…');
  const badge = h('span', { class: 'badge' });
  const meta = h('p', { class: 'muted' });
  const tabs = h('nav', { class: 'tabs', role: 'tablist', 'aria-label': 'Device views' });
  const body = h('div', { class: 'tab-body', role: 'tabpanel' });
  root.append(h('div', { class: 'device-head' }, title, badge), meta, tabs, body);

  let tabCleanup: (() => void) | void;
  const listeners = new Set<(s: Sample) => void>();
  let ctx: Ctx | null = null;
  const r = params.get('range') ?? '1h';
  const from = Number(params.get('from'));
  const to = Number(params.get('to'));
  const range: Ctx['range'] = from && to && to > from ? { name: 'custom', custom: { from, to } } : { name: RANGES[r] ? r : '1h' };

  function setParam(k: string, v: string | null): void {
    const u = new URL(location.href);
    if (v == null) u.searchParams.delete(k);
    else u.searchParams.set(k, v);
    history.replaceState(null, '', u.pathname + u.search);
  }

  function showTab(tab: Tab): void {
    if (typeof tabCleanup === 'function') tabCleanup();
    listeners.clear();
    body.replaceChildren();
    for (const b of tabs.querySelectorAll('a')) b.setAttribute('aria-selected', String(b.dataset.tab === tab));
    if (!ctx) return;
    body.dataset.tab = tab;
    tabCleanup = { live: liveTab, history: historyTab, stats: statsTab, kernel: kernelTab, processes: processesTab, system: systemTab, docker: dockerTab }[tab](body, ctx);
  }

  for (const t of TABS) {
    const a = h('a', { href: `/devices/${encodeURIComponent(id)}?tab=${t}`, role: 'tab', 'data-tab': t, 'aria-selected': 'false' }, TAB_NAMES[t]);
    a.addEventListener('click', (e) => {
      e.preventDefault();
      e.stopPropagation();
      setParam('tab', t);
      showTab(t);
    });
    tabs.append(a);
  }

  function renderHead(): void {
    if (!ctx) return;
    const d = ctx.device;
    setText(title, d.name);
    document.title = `${d.name} · Vitals`;
    const t = app.thresholds();
    const s = status(d.lastSeen, Date.now(), t.stale, t.offline);
    badge.className = `badge ${s}`;
    setText(badge, s);
    setText(meta, `Host ${d.hostId} · agent ${d.agentVersion ?? 'unknown'}${d.simulated ? ' · simulated' : ''} · last seen ${ago(d.lastSeen, Date.now())}`);
  }

  const off = app.live.onMetrics((e) => {
    if (e.deviceId !== id || !ctx) return;
    if (ctx.latest && sampleTs(ctx.latest) > e.ts) return;
    ctx.latest = e.data;
    ctx.device.lastSeen = Date.now();
    for (const f of listeners) f(e.data);
  });
  const tick = window.setInterval(renderHead, 1000);

  (async () => {
    try {
      const [device, clients] = await Promise.all([
        api<Device>('GET', `/devices/${encodeURIComponent(id)}`),
        api<(Device & { latest: Sample | null })[]>('GET', '/clients'),
      ]);
      const mine = clients.find((c) => c.id === id);
      ctx = { app, id, device, latest: mine?.latest ?? null, listeners, range, setParam };
      renderHead();
      const tab = (params.get('tab') ?? 'live') as Tab;
      showTab(TABS.includes(tab) ? tab : 'live');
    } catch (e) {
      setText(title, 'Device not found');
      body.append(h('p', { class: 'notice err' }, (e as Error).message), h('p', {}, h('a', { href: '/' }, 'Back to the overview')));
    }
  })();

  return () => {
    off();
    window.clearInterval(tick);
    if (typeof tabCleanup === 'function') tabCleanup();
  };
}

// ---------------------------------------------------------------- Live

const LIVE_WINDOW_SEC = 300;

function liveTab(root: HTMLElement, ctx: Ctx): () => void {
  const gCpu = new Gauge('CPU');
  const gMem = new Gauge('Memory');
  const gDisk = new Gauge('Disk');
  const gSwap = new Gauge('Swap');
  const gGpu = new Gauge('GPU');
  gGpu.el.hidden = true;
  const facts = h('dl', { class: 'facts' });
  const cores = h('div', { class: 'cores', 'aria-label': 'CPU per core' });
  const chartsEl = h('div', { class: 'charts' });
  root.append(h('div', { class: 'gauges' }, gCpu.el, gMem.el, gDisk.el, gSwap.el, gGpu.el), facts, h('h2', {}, 'CPU per core'), cores, chartsEl);

  const cpuMem: (number | null)[][] = [[], [], []];
  const net: (number | null)[][] = [[], [], []];
  const cpuChart = new TimeChart({ title: 'CPU and memory (last 5 minutes)', unit: 'pct', series: ['cpu', 'mem.pct'], yMax: 100, syncKey: 'live' }, cpuMem as never);
  const netChart = new TimeChart({ title: 'Network (last 5 minutes)', unit: 'bps', series: ['net.rx_bps', 'net.tx_bps'], syncKey: 'live' }, net as never);
  chartsEl.append(cpuChart.el, netChart.el);

  const fact = (k: string) => {
    const dd = h('dd', {});
    facts.append(h('dt', {}, k), dd);
    return dd;
  };
  const fLoad = fact('Load 1 / 5 / 15');
  const fUp = fact('Uptime');
  const fProcs = fact('Processes');
  const fNet = fact('Network in / out');
  const fMem = fact('Memory used');
  const fTemp = fact('Hottest sensor');
  const coreBars: HTMLElement[] = [];

  function render(s: Sample): void {
    gCpu.set(s.cpu.total);
    gMem.set(pctOf(s.mem.used, s.mem.total));
    let du = 0;
    let dt = 0;
    for (const d of s.disk ?? []) {
      du += d.used;
      dt += d.total;
    }
    gDisk.set(pctOf(du, dt));
    gSwap.set(s.swap ? pctOf(s.swap.used, s.swap.total) : null);
    const gpu = s.gpus?.[0];
    gGpu.el.hidden = !gpu;
    if (gpu) gGpu.set(gpu.util);
    setText(fLoad, s.load ? `${s.load.one.toFixed(2)} / ${s.load.five.toFixed(2)} / ${s.load.fifteen.toFixed(2)}` : '–');
    setText(fUp, duration(s.uptimeSec));
    setText(fProcs, String(s.procCount ?? '–'));
    setText(fNet, `${rate(s.net.rxBps)} / ${rate(s.net.txBps)}`);
    setText(fMem, `${bytes(s.mem.used)} of ${bytes(s.mem.total)}`);
    const hot = (s.temps ?? []).reduce<{ name: string; celsius: number } | null>((a, t) => (!a || t.celsius > a.celsius ? t : a), null);
    setText(fTemp, hot ? `${hot.name}: ${hot.celsius.toFixed(1)} °C` : 'not exposed');
    const per = s.cpu.perCore ?? [];
    while (coreBars.length < per.length) {
      const fill = h('span', { class: 'fill' });
      const label = h('span', { class: 'core-label' });
      const bar = h('div', { class: 'core', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100 }, label, h('span', { class: 'track' }, fill));
      cores.append(bar);
      coreBars.push(bar);
    }
    while (coreBars.length > per.length) coreBars.pop()?.remove();
    per.forEach((v, i) => {
      const bar = coreBars[i];
      bar.setAttribute('aria-valuenow', v.toFixed(0));
      bar.setAttribute('aria-label', `Core ${i}`);
      setText(bar.firstChild as HTMLElement, `${i}: ${v.toFixed(0)}%`);
      ((bar.lastChild as HTMLElement).firstChild as HTMLElement).style.width = `${Math.max(0, Math.min(100, v))}%`;
    });
  }

  function push(s: Sample): void {
    const t = sampleTs(s) / 1000;
    const xs = cpuMem[0] as number[];
    if (xs.length && t <= xs[xs.length - 1]) return;
    const max = LIVE_WINDOW_SEC;
    pushWindow(cpuMem[0], t, max);
    pushWindow(cpuMem[1], s.cpu.total, max);
    pushWindow(cpuMem[2], pctOf(s.mem.used, s.mem.total), max);
    pushWindow(net[0], t, max);
    pushWindow(net[1], s.net.rxBps, max);
    pushWindow(net[2], s.net.txBps, max);
  }

  if (ctx.latest) render(ctx.latest);
  const now = Date.now();
  void api<MetricsResponse>('GET', `/metrics/${encodeURIComponent(ctx.id)}?from=${now - LIVE_WINDOW_SEC * 1000}&to=${now}&points=${LIVE_WINDOW_SEC}`).then((res) => {
    const seeded = columns(res, ['cpu', 'mem.pct']);
    const seededNet = columns(res, ['net.rx_bps', 'net.tx_bps']);
    // Samples that arrived while loading stay after the seeded ones.
    const lastSeeded = (seeded[0][seeded[0].length - 1] as number | undefined) ?? 0;
    const keep = (cpuMem[0] as number[]).findIndex((t) => t > lastSeeded);
    for (let k = 0; k < 3; k++) {
      const tail = keep < 0 ? [] : cpuMem[k].slice(keep);
      cpuMem[k] = [...seeded[k], ...tail];
      net[k] = [...seededNet[k], ...(keep < 0 ? [] : net[k].slice(keep))];
    }
    cpuChart.setData(cpuMem as never);
    netChart.setData(net as never);
  }, () => {});

  ctx.listeners.add((s) => {
    render(s);
    push(s);
    cpuChart.setData(cpuMem as never);
    netChart.setData(net as never);
  });
  return () => {
    cpuChart.destroy();
    netChart.destroy();
  };
}

// ---------------------------------------------------------------- range bar

function currentRange(ctx: Ctx): Range {
  return ctx.range.custom ?? rangeOf(ctx.range.name, Date.now());
}

function rangeBar(ctx: Ctx, onChange: () => void): HTMLElement {
  const bar = h('div', { class: 'rangebar', role: 'group', 'aria-label': 'Time range' });
  const fromIn = h('input', { type: 'datetime-local', 'aria-label': 'From' });
  const toIn = h('input', { type: 'datetime-local', 'aria-label': 'To' });
  const apply = h('button', { type: 'button', class: 'ghost' }, 'Apply');
  const buttons = Object.keys(RANGES).map((name) => {
    const b = h('button', { type: 'button', class: 'ghost', 'data-range': name }, name);
    b.addEventListener('click', () => {
      ctx.range = { name };
      ctx.setParam('range', name);
      ctx.setParam('from', null);
      ctx.setParam('to', null);
      sync();
      onChange();
    });
    return b;
  });
  apply.addEventListener('click', () => {
    const from = new Date(fromIn.value).getTime();
    const to = new Date(toIn.value).getTime();
    if (!(from < to)) {
      fromIn.setCustomValidity('The start must be before the end');
      fromIn.reportValidity();
      return;
    }
    fromIn.setCustomValidity('');
    setCustom(ctx, from, to);
    sync();
    onChange();
  });
  function sync(): void {
    for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.range === ctx.range.name));
    const r = currentRange(ctx);
    fromIn.value = toLocalInput(r.from);
    toIn.value = toLocalInput(r.to);
  }
  sync();
  bar.append(...buttons, fromIn, toIn, apply);
  (bar as unknown as { sync: () => void }).sync = sync;
  return bar;
}

function setCustom(ctx: Ctx, from: number, to: number): void {
  ctx.range = { name: 'custom', custom: { from, to } };
  ctx.setParam('range', null);
  ctx.setParam('from', String(from));
  ctx.setParam('to', String(to));
}

// ---------------------------------------------------------------- History

function historyTab(root: HTMLElement, ctx: Ctx): () => void {
  return chartsTab(root, ctx, () => HISTORY_SERIES, groupSeries);
}

/** Most kernel charts drawn at once; a narrower prefix shows the rest. */
const MAX_KERNEL_CHARTS = 40;

/** The agent's kernel statistics (`kernel.*`), one source or prefix at a time. */
function kernelTab(root: HTMLElement, ctx: Ctx): () => void {
  const params = new URLSearchParams(location.search);
  const prefixIn = h('input', { type: 'search', placeholder: 'Prefix, e.g. psi.io or netstat.TcpExt.TCPTimeouts', 'aria-label': 'Kernel series prefix', value: params.get('kq') ?? 'psi' });
  const sources = h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Kernel sources' });
  for (const s of KERNEL_SOURCES) {
    const b = h('button', { type: 'button', class: 'ghost', 'data-source': s }, s);
    b.addEventListener('click', () => {
      prefixIn.value = s;
      prefixIn.dispatchEvent(new Event('change'));
    });
    sources.append(b);
  }
  const intro = h('p', { class: 'muted hint' }, 'Counters are per-second rates, gauges as the kernel reports them; lines sharing a name prefix share a chart.');
  root.append(sources, h('div', { class: 'toolbar' }, prefixIn), intro);
  const cleanup = chartsTab(
    root,
    ctx,
    () => {
      const p = prefixIn.value.trim().replace(/[^A-Za-z0-9_.]/g, '');
      // An empty prefix would fetch every kernel series; a source is the widest view.
      return `kernel.${p || 'psi'}*`;
    },
    (names) => kernelGroups(names).slice(0, MAX_KERNEL_CHARTS),
    (reload) =>
      prefixIn.addEventListener('change', () => {
        ctx.setParam('kq', prefixIn.value.trim() || null);
        reload();
      }),
  );
  return cleanup;
}

function chartsTab(
  root: HTMLElement,
  ctx: Ctx,
  series: () => string,
  group: (names: string[]) => ReturnType<typeof groupSeries>,
  hook?: (reload: () => void) => void,
): () => void {
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const chartsEl = h('div', { class: 'charts' });
  let charts: TimeChart[] = [];
  let gen = 0;
  const bar = rangeBar(ctx, () => void load());
  root.append(bar, h('p', { class: 'muted hint' }, 'Drag across a chart to zoom in; the cursor is linked across charts.'), status, chartsEl);
  hook?.(() => void load());

  async function load(): Promise<void> {
    const my = ++gen;
    const r = currentRange(ctx);
    setText(status, 'Loading…');
    const points = Math.max(100, Math.min(2000, Math.round(chartsEl.clientWidth || 1000)));
    try {
      const res = await api<MetricsResponse>('GET', `/metrics/${encodeURIComponent(ctx.id)}?from=${Math.round(r.from)}&to=${Math.round(r.to)}&points=${points}&series=${encodeURIComponent(series())}`);
      if (my !== gen) return;
      for (const c of charts) c.destroy();
      charts = [];
      const groups = group(Object.keys(res.series));
      for (const g of groups) {
        const c = new TimeChart(
          {
            title: g.title,
            unit: g.unit,
            series: g.series,
            syncKey: 'history',
            yMax: g.unit === 'pct' ? 100 : undefined,
            onZoom: (from, to) => {
              setCustom(ctx, from, to);
              (bar as unknown as { sync: () => void }).sync();
              void load();
            },
          },
          columns(res, g.series) as never,
        );
        c.el.dataset.group = g.key;
        charts.push(c);
        chartsEl.append(c.el);
      }
      const n = res.timestamps.length;
      setText(
        status,
        n === 0
          ? 'No data in this range.'
          : `${dateTime(r.from)} to ${dateTime(r.to)} · ${n} points${res.stepMs > 1000 ? `, each the average of ${duration(res.stepMs / 1000)}` : ''} · ${groups.length} chart${groups.length === 1 ? '' : 's'}`,
      );
      root.dataset.loaded = String(Date.now());
    } catch (e) {
      if (my === gen) setText(status, `Could not load history: ${(e as Error).message}`);
    }
  }
  void load();
  return () => {
    gen++;
    for (const c of charts) c.destroy();
  };
}

// ---------------------------------------------------------------- Stats

interface StatsResponse {
  samples: number;
  series: Record<string, { count: number; min: number; max: number; avg: number; p95: number }>;
}

function statsTab(root: HTMLElement, ctx: Ctx): () => void {
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const filterIn = h('input', { type: 'search', placeholder: 'Filter series', 'aria-label': 'Filter series' });
  const out = h('div', { class: 'table-wrap' });
  let gen = 0;
  let rows: HTMLTableRowElement[] = [];
  root.append(rangeBar(ctx, () => void load()), h('div', { class: 'toolbar' }, filterIn), status, out);

  function applyFilter(): void {
    const q = filterIn.value.trim().toLowerCase();
    for (const r of rows) r.hidden = !!q && !(r.dataset.series ?? '').toLowerCase().includes(q);
  }
  filterIn.addEventListener('input', applyFilter);

  async function load(): Promise<void> {
    const my = ++gen;
    const r = currentRange(ctx);
    setText(status, 'Loading…');
    try {
      const res = await api<StatsResponse>('GET', `/stats/${encodeURIComponent(ctx.id)}?from=${Math.round(r.from)}&to=${Math.round(r.to)}&series=${encodeURIComponent(HISTORY_SERIES)}`);
      if (my !== gen) return;
      const names = groupSeries(Object.keys(res.series)).flatMap((g) => g.series);
      const cell = (v: number, unit: ReturnType<typeof unitOf>, field: string) => h('td', { 'data-field': field, 'data-raw': String(v) }, fmt(v, unit));
      rows = names.map((n) => {
        const s = res.series[n];
        const u = unitOf(n);
        return h(
          'tr',
          { 'data-series': n },
          h('th', { scope: 'row' }, n),
          h('td', { 'data-field': 'count', 'data-raw': String(s.count) }, String(s.count)),
          cell(s.min, u, 'min'),
          cell(s.max, u, 'max'),
          cell(s.avg, u, 'avg'),
          cell(s.p95, u, 'p95'),
        );
      });
      out.replaceChildren(
        h(
          'table',
          { class: 'stats' },
          h('thead', {}, h('tr', {}, ...['Series', 'Samples', 'Min', 'Max', 'Avg', 'p95'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, ...rows),
        ),
      );
      applyFilter();
      setText(status, `${res.samples} samples from ${dateTime(r.from)} to ${dateTime(r.to)}`);
      root.dataset.loaded = String(Date.now());
    } catch (e) {
      if (my === gen) setText(status, `Could not load statistics: ${(e as Error).message}`);
    }
  }
  void load();
  return () => {
    gen++;
  };
}

// ---------------------------------------------------------------- Processes, System

function stateLoader(root: HTMLElement, ctx: Ctx, render: (s: DeviceState) => void): () => void {
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  root.append(status);
  async function load(): Promise<void> {
    try {
      const s = await api<DeviceState>('GET', `/devices/${encodeURIComponent(ctx.id)}/state`);
      render(s);
      setText(status, s.updatedAt ? `Reported ${dateTime(s.updatedAt)} (refreshes every 10 s)` : 'The agent has not reported this yet.');
    } catch (e) {
      setText(status, `Could not load: ${(e as Error).message}`);
    }
  }
  void load();
  const t = window.setInterval(() => void load(), 10_000);
  return () => window.clearInterval(t);
}

function processesTab(root: HTMLElement, ctx: Ctx): () => void {
  const byCpu = h('div', { class: 'table-wrap' });
  const byMem = h('div', { class: 'table-wrap' });
  const stop = stateLoader(root, ctx, (s) => {
    const rows = (list: Proc[]) => list.map((p) => [String(p.pid), p.name, p.user, pct(p.cpu), bytes(p.rss)]);
    const head = ['PID', 'Name', 'User', 'CPU', 'Memory (RSS)'];
    byCpu.replaceChildren(table(head, rows(s.processes?.top_processes ?? [])));
    byMem.replaceChildren(table(head, rows(s.processes?.top_by_memory ?? [])));
  });
  root.append(h('h2', {}, 'Top processes by CPU'), byCpu, h('h2', {}, 'Top processes by memory'), byMem);
  return stop;
}

function systemTab(root: HTMLElement, ctx: Ctx): () => void {
  const info = h('dl', { class: 'facts' });
  const ifaces = h('div', { class: 'table-wrap' });
  const stop = stateLoader(root, ctx, (s) => {
    const si = s.systemInfo ?? {};
    const labels: [string, string][] = [
      ['hostname', 'Hostname'],
      ['os', 'Operating system'],
      ['kernel', 'Kernel'],
      ['architecture', 'Architecture'],
      ['cpuModel', 'CPU model'],
      ['cpuCores', 'CPU cores'],
      ['ipAddress', 'IP address'],
      ['macAddress', 'MAC address'],
      ['agentVersion', 'Agent version'],
    ];
    info.replaceChildren(...labels.flatMap(([k, l]) => [h('dt', {}, l), h('dd', {}, si[k] == null || si[k] === '' ? '–' : String(si[k]))]));
    if (typeof si.uptime === 'number') info.append(h('dt', {}, 'Uptime'), h('dd', {}, duration(si.uptime)));
    ifaces.replaceChildren(
      table(
        ['Interface', 'State', 'MAC', 'Addresses', 'Speed'],
        (s.networkInterfaces?.interfaces ?? []).map((i) => [i.name, i.up ? 'up' : 'down', i.mac || '–', i.addresses.join(', ') || '–', i.speedMbps ? `${i.speedMbps} Mb/s` : '–']),
      ),
    );
  });
  root.append(h('h2', {}, 'System'), info, h('h2', {}, 'Network interfaces'), ifaces);
  return stop;
}

// ---------------------------------------------------------------- Docker

function dockerTab(root: HTMLElement, ctx: Ctx): () => void {
  const size = h('p', {});
  const out = h('div', { class: 'table-wrap' });
  root.append(h('h2', {}, 'Containers'), size, out);
  function render(s: Sample | null): void {
    const list = s?.containers ?? [];
    setText(size, s?.dockerSize != null ? `Docker data directory: ${bytes(s.dockerSize)}` : 'No Docker or Podman engine reported by this agent (containers are collected every 5 minutes).');
    out.replaceChildren(
      list.length
        ? table(
            ['Name', 'Image', 'State', 'CPU', 'Memory', 'Net in', 'Net out'],
            list.map((c) => [c.name, c.image, h('span', { class: `badge ${c.state === 'running' ? 'online' : 'offline'}` }, c.state), pct(c.cpu), bytes(c.memBytes), rate(c.netRxBps), rate(c.netTxBps)]),
          )
        : h('p', { class: 'muted' }, 'No containers.'),
    );
  }
  render(ctx.latest);
  let last = '';
  ctx.listeners.add((s) => {
    const key = JSON.stringify([s.containers, s.dockerSize]);
    if (key !== last) {
      last = key;
      render(s);
    }
  });
  return () => {};
}
