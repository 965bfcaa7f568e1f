// The live dashboard page: one WebSocket, live values written into existing elements.
// All data from the application (job names, alert messages) is set with textContent only.

import './style.css';
import { Bars, Doughnut, TimeSeries } from './charts';
import type { Alert, History, Job, Metrics } from './types';

const $ = <T extends HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel);
  if (!el) throw new Error(`missing element ${sel}`);
  return el;
};

// ---- auth: a bearer token arrives as #token=... (kept out of server logs), then lives in
// sessionStorage; basic auth is handled by the browser itself.
function takeToken(): string | null {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  const fromQuery = new URLSearchParams(location.search).get('token');
  const t = fromHash ?? fromQuery;
  if (t) {
    sessionStorage.setItem('vitals-embed-token', t);
    history.replaceState(null, '', location.pathname);
  }
  return t ?? sessionStorage.getItem('vitals-embed-token');
}
const token = takeToken();
const base = location.pathname.replace(/[^/]*$/, '');

async function getJson<T>(path: string): Promise<T> {
  const res = await fetch(base + path, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    cache: 'no-store',
  });
  if (res.status === 401) throw new AuthError();
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return (await res.json()) as T;
}
class AuthError extends Error {}

// ---- connection state
const conn = $<HTMLSpanElement>('#conn');
function setConn(state: 'connecting' | 'live' | 'reconnecting' | 'unauthorized', text: string): void {
  conn.className = `conn conn-${state}`;
  conn.dataset.state = state;
  conn.textContent = text;
}

// ---- cards
const fmtInt = (n: number) => Math.round(n).toLocaleString();
const cards: Record<string, (m: Metrics) => string> = {
  jobs_active: (m) => fmtInt(m.jobs_active),
  jobs_completed: (m) => fmtInt(m.jobs_completed),
  jobs_failed: (m) => fmtInt(m.jobs_failed),
  queue_length: (m) => fmtInt(m.queue_length),
  http_requests: (m) => fmtInt(m.http_requests),
  avg_response_time: (m) => `${m.avg_response_time.toFixed(1)} ms`,
  memory_usage: (m) => `${fmtInt(m.memory_usage)} MB`,
  cpu_usage: (m) => `${m.cpu_usage.toFixed(1)} %`,
};
const cardEls = new Map<string, HTMLElement>();
for (const key of Object.keys(cards)) cardEls.set(key, $(`[data-card="${key}"] .value`));
const subErrors = $<HTMLElement>('[data-sub="http_errors"]');
const subTasks = $<HTMLElement>('[data-sub="tasks"]');

function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

// ---- health
const health = $<HTMLSpanElement>('#health');

// ---- alerts: the three most recent not dismissed in this tab
const MAX_ALERTS = 3;
const alertsHost = $<HTMLDivElement>('#alerts');
const dismissed = new Set<number>(JSON.parse(sessionStorage.getItem('vitals-embed-dismissed') ?? '[]') as number[]);
const alertEls = new Map<number, HTMLElement>();
let lastAlerts: Alert[] = [];

function renderAlerts(alerts: Alert[]): void {
  lastAlerts = alerts;
  const shown = alerts.filter((a) => !dismissed.has(a.id)).slice(0, MAX_ALERTS);
  const keep = new Set(shown.map((a) => a.id));
  for (const [id, el] of alertEls) {
    if (!keep.has(id)) {
      el.remove();
      alertEls.delete(id);
    }
  }
  shown.forEach((a, i) => {
    let el = alertEls.get(a.id);
    if (!el) {
      el = document.createElement('div');
      el.className = `alert alert-${a.severity}`;
      el.dataset.alertId = String(a.id);
      el.setAttribute('role', a.severity === 'critical' ? 'alert' : 'status');
      const sev = document.createElement('strong');
      sev.textContent = a.severity;
      const msg = document.createElement('span');
      msg.className = 'msg';
      msg.textContent = a.message;
      const time = document.createElement('time');
      time.dateTime = a.timestamp;
      time.textContent = new Date(a.timestamp).toLocaleTimeString();
      const close = document.createElement('button');
      close.type = 'button';
      close.className = 'dismiss';
      close.setAttribute('aria-label', 'Dismiss alert');
      close.textContent = '×';
      close.addEventListener('click', () => {
        dismissed.add(a.id);
        sessionStorage.setItem('vitals-embed-dismissed', JSON.stringify([...dismissed].slice(-200)));
        renderAlerts(lastAlerts);
      });
      el.append(sev, msg, time, close);
      alertEls.set(a.id, el);
    }
    if (alertsHost.children[i] !== el) alertsHost.insertBefore(el, alertsHost.children[i] ?? null);
  });
}

// ---- jobs table: rows keyed by job id, cells touched only when they change
const MAX_ROWS = 50;
const tbody = $<HTMLTableSectionElement>('#jobs tbody');
const jobsCount = $<HTMLSpanElement>('#jobs-count');
interface Row { tr: HTMLTableRowElement; cells: HTMLTableCellElement[]; badge: HTMLSpanElement; bar: HTMLDivElement; pct: HTMLSpanElement }
const rows = new Map<string, Row>();

function fmtDuration(s: number): string {
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

function makeRow(): Row {
  const tr = document.createElement('tr');
  const cells = Array.from({ length: 8 }, () => document.createElement('td'));
  const badge = document.createElement('span');
  badge.className = 'badge';
  cells[2].appendChild(badge);
  const progress = document.createElement('div');
  progress.className = 'progress';
  const bar = document.createElement('div');
  bar.className = 'bar';
  const pct = document.createElement('span');
  progress.appendChild(bar);
  cells[3].append(progress, pct);
  tr.append(...cells);
  return { tr, cells, badge, bar, pct };
}

function renderJobs(jobs: Job[]): void {
  const shown = jobs.slice(0, MAX_ROWS);
  const keep = new Set(shown.map((j) => j.id));
  for (const [id, r] of rows) {
    if (!keep.has(id)) {
      r.tr.remove();
      rows.delete(id);
    }
  }
  shown.forEach((j, i) => {
    let r = rows.get(j.id);
    if (!r) {
      r = makeRow();
      rows.set(j.id, r);
    }
    r.tr.dataset.status = j.status;
    setText(r.cells[0], j.id);
    setText(r.cells[1], j.name);
    setText(r.badge, j.status);
    r.badge.className = `badge status-${j.status}`;
    const p = Math.max(0, Math.min(100, j.progress));
    r.bar.style.width = `${p}%`;
    setText(r.pct, `${Math.round(p)}%`);
    setText(r.cells[4], j.provider || '–');
    setText(r.cells[5], j.vm_name || '–');
    setText(r.cells[6], fmtDuration(j.duration_seconds));
    setText(r.cells[7], new Date(j.start_time).toLocaleTimeString());
    if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] ?? null);
  });
  setText(jobsCount, `(${jobs.length})`);
}

// ---- charts
const doughnut = new Doughnut($('#chart-status'));
const bars = new Bars($('#chart-providers'));
const series = new TimeSeries($('#chart-jobs'), $('#chart-resources'));
const updated = $<HTMLSpanElement>('#updated');

function update(m: Metrics): void {
  for (const [key, fmt] of Object.entries(cards)) {
    const el = cardEls.get(key);
    if (el) setText(el, fmt(m));
  }
  setText(subErrors, `${fmtInt(m.http_errors)} errors`);
  setText(subTasks, `${fmtInt(m.tasks)} tasks`);
  health.className = `badge health-${m.system_health}`;
  health.dataset.health = m.system_health;
  setText(health, m.system_health);
  renderAlerts(m.alerts);
  renderJobs(m.recent_jobs);
  doughnut.update(m);
  bars.update(m.provider_stats);
  series.push(m);
  setText(updated, new Date(m.timestamp).toLocaleTimeString());
}

// ---- the socket, with backoff reconnects and a visible state
let retry = 0;
function connect(): void {
  setConn(retry ? 'reconnecting' : 'connecting', retry ? 'reconnecting…' : 'connecting…');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const q = token ? `?token=${encodeURIComponent(token)}` : '';
  const ws = new WebSocket(`${scheme}://${location.host}${base}ws${q}`);
  let opened = false;
  ws.onopen = () => {
    opened = true;
    retry = 0;
    setConn('live', 'live');
    getJson<History>('api/history').then((h) => series.load(h)).catch(() => undefined);
  };
  ws.onmessage = (ev) => {
    try {
      update(JSON.parse(ev.data as string) as Metrics);
    } catch (e) {
      console.error('bad snapshot', e);
    }
  };
  ws.onclose = () => {
    const delay = Math.min(10, 2 ** retry);
    retry += 1;
    if (!opened) {
      // A refused handshake says nothing to the page; ask the API why.
      getJson<Metrics>('api/metrics')
        .then(() => setConn('reconnecting', `disconnected · retrying in ${delay}s`))
        .catch((e) => {
          if (e instanceof AuthError) setConn('unauthorized', 'unauthorized · open this page as /#token=<token>');
          else setConn('reconnecting', `disconnected · retrying in ${delay}s`);
        });
    } else {
      setConn('reconnecting', `disconnected · retrying in ${delay}s`);
    }
    setTimeout(connect, delay * 1000);
  };
}
connect();
