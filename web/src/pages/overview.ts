// Fleet overview (seed 003's home): a card per device with status, last seen, CPU, memory,
// disk and network values and 60-point sparklines, updated from `/ws/live` as samples arrive;
// search, sort and a status filter; an alert banner (seed 004) with at most three alerts.
// Cards are built once; a sample only writes its card's numbers and marks its sparklines
// dirty, and drawing happens once per animation frame for cards on screen.

import { api, type Alert, type OverviewDevice } from '../api';
import type { App } from '../app';
import { Sparkline } from '../charts';
import { h, setText } from '../dom';
import { ago, pct, rate, status, type Status } from '../format';
import type { MetricsEvent } from '../live';
import { bannerAlerts, cardValues, naturalCompare, pushWindow } from '../shape';

const SPARK = 60;
const METRICS: { key: 'cpu' | 'mem.pct' | 'disk.pct' | 'net.bps'; label: string; color: string; max: number | null; fmt: (v: number | null) => string }[] = [
  { key: 'cpu', label: 'CPU', color: '#60a5fa', max: 100, fmt: pct },
  { key: 'mem.pct', label: 'Memory', color: '#a78bfa', max: 100, fmt: pct },
  { key: 'disk.pct', label: 'Disk', color: '#fbbf24', max: 100, fmt: pct },
  { key: 'net.bps', label: 'Network', color: '#34d399', max: null, fmt: rate },
];

interface Card {
  dev: OverviewDevice;
  el: HTMLElement;
  badge: HTMLElement;
  seen: HTMLElement;
  values: HTMLElement[];
  sparks: Sparkline[];
  data: (number | null)[][];
  status: Status;
  visible: boolean;
  /** Sparklines need a redraw. */
  dirty: boolean;
  /** Values received but not yet written (written when on screen, at the next flush). */
  pending: (number | null)[] | null;
  /** Time of the newest sample shown. */
  lastTs: number;
}

const DISMISSED_KEY = 'vitals.dismissedAlerts';

export function overviewPage(root: HTMLElement, app: App): () => void {
  const cards = new Map<string, Card>();
  const search = h('input', { type: 'search', placeholder: 'Search devices', 'aria-label': 'Search devices by name or host id' });
  const sort = h(
    'select',
    { 'aria-label': 'Sort devices' },
    h('option', { value: 'name' }, 'Sort: name'),
    h('option', { value: 'status' }, 'Sort: status'),
    h('option', { value: 'cpu' }, 'Sort: CPU'),
    h('option', { value: 'mem.pct' }, 'Sort: memory'),
    h('option', { value: 'disk.pct' }, 'Sort: disk'),
    h('option', { value: 'seen' }, 'Sort: last seen'),
  );
  const filter = h(
    'select',
    { 'aria-label': 'Filter by status' },
    h('option', { value: '' }, 'All statuses'),
    h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'stale' }, 'Stale'),
    h('option', { value: 'offline' }, 'Offline'),
  );
  const summary = h('p', { class: 'muted summary', 'aria-live': 'polite' });
  const banner = h('section', { class: 'banner', 'aria-label': 'Active alerts' });
  const grid = h('section', { class: 'grid', 'aria-label': 'Devices' });
  const empty = h('div', { class: 'card empty', hidden: true });
  root.append(
    h('div', { class: 'toolbar' }, h('h1', {}, 'Fleet'), search, sort, filter),
    banner,
    summary,
    empty,
    grid,
  );

  // --- alerts banner
  let alerts: Alert[] = [];
  const dismissed = new Set<string>(JSON.parse(sessionStorage.getItem(DISMISSED_KEY) ?? '[]') as string[]);
  function renderBanner(): void {
    const { shown, more } = bannerAlerts(alerts, dismissed, 3);
    banner.replaceChildren(
      ...shown.map((a) => {
        const close = h('button', { class: 'ghost close', type: 'button', 'aria-label': `Dismiss alert ${a.ruleName} on ${a.deviceName}` }, '×');
        close.addEventListener('click', () => {
          dismissed.add(a.id);
          sessionStorage.setItem(DISMISSED_KEY, JSON.stringify([...dismissed]));
          renderBanner();
        });
        return h(
          'div',
          { class: `alert sev-${a.severity}`, role: 'alert', 'data-alert': a.id },
          h('strong', {}, a.severity.toUpperCase()),
          ' ',
          h('a', { href: `/devices/${encodeURIComponent(a.deviceId)}` }, a.deviceName),
          `: ${a.ruleName}${a.subject ? ` (${a.subject})` : ''}, ${a.metric} ${a.op} ${a.threshold}`,
          close,
        );
      }),
      ...(more > 0 ? [h('a', { class: 'more', href: '/alerts' }, `${more} more active alert${more === 1 ? '' : 's'}`)] : []),
    );
  }
  async function loadAlerts(): Promise<void> {
    try {
      alerts = await api<Alert[]>('GET', '/alerts?state=active&limit=100');
      renderBanner();
    } catch {
      /* the banner stays as it was */
    }
  }

  // --- cards
  const io = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const c = cards.get((e.target as HTMLElement).dataset.device ?? '');
      if (!c) continue;
      c.visible = e.isIntersecting;
      if (c.visible) c.dirty = true;
    }
    schedule();
  });

  function makeCard(dev: OverviewDevice): Card {
    const badge = h('span', { class: 'badge' });
    const seen = h('span', { class: 'muted seen' });
    const values: HTMLElement[] = [];
    const sparks: Sparkline[] = [];
    const rows = METRICS.map((m) => {
      const v = h('span', { class: 'val' });
      const s = new Sparkline(m.color, m.max);
      values.push(v);
      sparks.push(s);
      return h('div', { class: 'metric', 'data-metric': m.key }, h('span', { class: 'label' }, m.label), v, s.canvas);
    });
    const el = h(
      'a',
      { class: 'card device', href: `/devices/${encodeURIComponent(dev.id)}`, 'data-device': dev.id },
      h(
        'div',
        { class: 'card-head' },
        h('span', { class: 'name' }, dev.name),
        dev.simulated ? h('span', { class: 'tag' }, 'simulated') : null,
        badge,
      ),
      seen,
      ...rows,
    );
    const data = METRICS.map((m) => (dev.spark?.[m.key] ?? []).slice(-SPARK));
    const c: Card = { dev, el, badge, seen, values, sparks, data, status: 'offline', visible: false, dirty: true, pending: null, lastTs: lastOf(dev.spark?.ts ?? []) ?? 0 };
    writeValues(c, METRICS.map((m, i) => (m.key === 'net.bps' ? sumNet(dev) : (dev.latest?.[m.key] ?? lastOf(data[i])))));
    io.observe(el);
    return c;
  }

  function sumNet(dev: OverviewDevice): number | null {
    const rx = dev.latest?.['net.rx_bps'];
    const tx = dev.latest?.['net.tx_bps'];
    return rx == null && tx == null ? null : (rx ?? 0) + (tx ?? 0);
  }
  function lastOf(a: (number | null)[]): number | null {
    return a.length ? a[a.length - 1] : null;
  }
  function writeValues(c: Card, vals: (number | null)[]): void {
    METRICS.forEach((m, i) => setText(c.values[i], m.fmt(vals[i])));
  }

  function updateStatus(c: Card, now: number): void {
    const t = app.thresholds();
    const s = status(c.dev.lastSeen, now, t.stale, t.offline);
    if (s !== c.status) {
      c.status = s;
      c.badge.className = `badge ${s}`;
      setText(c.badge, s);
      c.el.dataset.status = s;
    }
    if (c.visible) setText(c.seen, `Last seen ${ago(c.dev.lastSeen, now)}`);
  }

  function visibleOrder(): void {
    const q = search.value.trim().toLowerCase();
    const f = filter.value;
    const key = sort.value;
    const list = [...cards.values()];
    const rank: Record<Status, number> = { offline: 0, stale: 1, online: 2 };
    const val = (c: Card, k: string) => {
      const i = METRICS.findIndex((m) => m.key === k);
      return lastOf(c.data[i]) ?? -1;
    };
    list.sort((a, b) => {
      if (key === 'status') return rank[a.status] - rank[b.status] || naturalCompare(a.dev.name, b.dev.name);
      if (key === 'seen') return (b.dev.lastSeen ?? 0) - (a.dev.lastSeen ?? 0);
      if (key !== 'name') return val(b, key) - val(a, key);
      return naturalCompare(a.dev.name, b.dev.name);
    });
    let shown = 0;
    const counts: Record<Status, number> = { online: 0, stale: 0, offline: 0 };
    for (const c of list) {
      counts[c.status] += 1;
      const match = (!q || c.dev.name.toLowerCase().includes(q) || c.dev.hostId.toLowerCase().includes(q)) && (!f || c.status === f);
      c.el.hidden = !match;
      if (match) shown += 1;
    }
    grid.replaceChildren(...list.map((c) => c.el));
    setText(
      summary,
      `${cards.size} device${cards.size === 1 ? '' : 's'} · ${counts.online} online · ${counts.stale} stale · ${counts.offline} offline${shown !== cards.size ? ` · ${shown} shown` : ''}`,
    );
    empty.hidden = cards.size > 0;
    if (cards.size === 0) {
      empty.replaceChildren(
        h('h2', {}, 'No devices yet'),
        h('p', {}, 'Install the agent on a machine to monitor it:'),
        h('pre', {}, `curl -fsSL ${location.origin}/install.sh | sudo sh`),
        h('p', {}, 'It prints a pairing link; open it here to approve the machine.'),
      );
    }
  }

  let loaded = false;
  async function load(): Promise<void> {
    const list = await api<OverviewDevice[]>('GET', '/overview');
    if (!loaded) performance.mark('vitals:overview-loaded');
    loaded = true;
    const seen = new Set<string>();
    for (const dev of list) {
      seen.add(dev.id);
      const old = cards.get(dev.id);
      if (old) {
        old.dev = { ...dev };
        old.data = METRICS.map((m) => (dev.spark?.[m.key] ?? []).slice(-SPARK));
        old.dirty = true;
        old.lastTs = Math.max(old.lastTs, lastOf(dev.spark?.ts ?? []) ?? 0);
      } else {
        cards.set(dev.id, makeCard(dev));
      }
    }
    for (const [id, c] of cards) {
      if (!seen.has(id)) {
        io.unobserve(c.el);
        cards.delete(id);
      }
    }
    const now = Date.now();
    for (const c of cards.values()) updateStatus(c, now);
    visibleOrder();
    if (early.size) {
      // The first time: which cards are on screen now, without waiting for the observer's
      // first report (one layout, which the first paint needs anyway), then the early samples.
      for (const c of grid.children) {
        const card = cards.get((c as HTMLElement).dataset.device ?? '');
        if (!card || card.el.hidden) continue;
        const r = card.el.getBoundingClientRect();
        if (r.top > window.innerHeight) break;
        card.visible = r.bottom > 0;
      }
      for (const e of early.values()) apply(e);
      early.clear();
    }

    schedule();
  }

  // --- live updates
  // Samples are applied to the page in frames at most every FLUSH_MS: with hundreds of devices
  // reporting at their own phases, that is a few frames per second instead of one per sample.
  // Only cards on screen are written; the others keep their values until they scroll in.
  const FLUSH_MS = 250;
  let raf = 0;
  let flushTimer = 0;
  let lastFlush = 0;
  function schedule(): void {
    if (raf || flushTimer) return;
    // Until the first live sample is on screen, nothing waits.
    const wait = firstUpdate ? 0 : Math.max(0, lastFlush + FLUSH_MS - performance.now());
    flushTimer = window.setTimeout(() => {
      flushTimer = 0;
      raf = requestAnimationFrame(draw);
    }, wait);
  }
  function draw(): void {
    raf = 0;
    lastFlush = performance.now();
    const now = Date.now();
    // Reads first (sizes of sparklines not measured yet), then writes.
    for (const c of cards.values()) {
      if (c.visible && !c.el.hidden && c.dirty && (resized || !c.sparks[0].measured)) for (const s of c.sparks) s.measure();
    }
    resized = false;
    for (const c of cards.values()) {
      if (!c.visible || c.el.hidden) continue;
      if (c.pending) {
        writeValues(c, c.pending);
        c.pending = null;
        updateStatus(c, now);
      }
      if (c.dirty) {
        c.dirty = false;
        for (let i = 0; i < c.sparks.length; i++) c.sparks[i].draw(c.data[i]);
      }
    }
    if (firstUpdate && firstPending) {
      firstUpdate = false;
      performance.mark('vitals:first-live-update');
      document.body.dataset.firstLiveUpdate = String(Math.round(performance.now()));
    }
  }
  let firstPending = false;
  let resized = false;
  const onResize = () => {
    resized = true;
    for (const c of cards.values()) c.dirty = true;
    schedule();
  };
  window.addEventListener('resize', onResize);
  let firstUpdate = true;
  let reloadTimer = 0;
  // Samples that arrive before the cards exist are kept (the newest per device) and applied
  // as soon as the cards are built.
  const early = new Map<string, MetricsEvent>();
  const offMetrics = app.live.onMetrics(apply);
  function apply(e: MetricsEvent): void {
    const c = cards.get(e.deviceId);
    if (!c && !loaded) {
      const prev = early.get(e.deviceId);
      if (!prev || prev.ts < e.ts) early.set(e.deviceId, e);
      return;
    }
    if (!c) {
      // A device this page has not seen (just paired): reload the list once.
      if (loaded && !reloadTimer) reloadTimer = window.setTimeout(() => {
        reloadTimer = 0;
        void load();
      }, 500);
      return;
    }
    if (e.ts <= c.lastTs) return; // an older sample replayed after a reconnect
    c.lastTs = e.ts;
    const vals = cardValues(e.data);
    for (let i = 0; i < vals.length; i++) pushWindow(c.data[i], vals[i], SPARK);
    c.dev.lastSeen = Math.max(c.dev.lastSeen ?? 0, Date.now());
    c.pending = vals;
    c.dirty = true;
    if (c.visible) firstPending = true;
    schedule();
  }
  const offAlert = app.live.onAlert((a) => {
    alerts = alerts.filter((x) => x.id !== a.id);
    if (a.state === 'firing') alerts.unshift(a);
    renderBanner();
  });
  const offReconnect = app.live.onReconnect(() => {
    void load();
    void loadAlerts();
  });
  const tick = window.setInterval(() => {
    const now = Date.now();
    let changed = false;
    for (const c of cards.values()) {
      const before = c.status;
      updateStatus(c, now);
      if (c.status !== before) changed = true;
    }
    if (changed) visibleOrder();
  }, 1000);

  search.addEventListener('input', visibleOrder);
  sort.addEventListener('change', visibleOrder);
  filter.addEventListener('change', visibleOrder);

  load().catch((e) => {
    summary.textContent = `Could not load devices: ${(e as Error).message}`;
  });
  void loadAlerts();

  return () => {
    offMetrics();
    offAlert();
    offReconnect();
    window.clearInterval(tick);
    window.clearTimeout(reloadTimer);
    window.clearTimeout(flushTimer);
    window.removeEventListener('resize', onResize);
    cancelAnimationFrame(raf);
    io.disconnect();
  };
}
