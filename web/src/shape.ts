// Data shaping between the hub's API and the views: card values from a sample, series grouped
// into charts, query results into uPlot's columns, app-store records per metric name, ranges.
// Pure functions, unit-tested in shape.test.ts.

import type { Unit } from './format';

/** The agent sample as the hub stores and pushes it (camelCase MetricSample). */
export interface Sample {
  ts: number | string;
  hostId?: string;
  cpu: { total: number; perCore?: number[]; user?: number; system?: number; iowait?: number; steal?: number };
  mem: { used: number; total: number; available?: number };
  disk?: { name: string; used: number; total: number; inodesUsed?: number; inodesTotal?: number }[];
  net: { rxBps: number; txBps: number };
  uptimeSec?: number;
  procCount?: number;
  swap?: { used: number; total: number };
  load?: { one: number; five: number; fifteen: number };
  temps?: { name: string; celsius: number }[];
  gpus?: { name: string; util: number; memUsed: number; memTotal: number; tempC?: number; powerW?: number }[];
  containers?: { name: string; image: string; state: string; cpu: number; memBytes: number; netRxBps: number; netTxBps: number }[];
  dockerSize?: number;
  /** Kernel statistics by name (`vmstat.pgfault`, `psi.io.some.avg10`, ...). */
  kernel?: Record<string, number>;
}

export function pctOf(used: number, total: number): number | null {
  return total > 0 ? (100 * used) / total : null;
}

/** The four values a fleet card shows, in sparkline order: cpu %, memory %, disk %, net bytes/s. */
export function cardValues(s: Sample): [number | null, number | null, number | null, number | null] {
  let used = 0;
  let total = 0;
  for (const d of s.disk ?? []) {
    used += d.used;
    total += d.total;
  }
  return [s.cpu.total, pctOf(s.mem.used, s.mem.total), pctOf(used, total), s.net.rxBps + s.net.txBps];
}

export function sampleTs(s: Sample): number {
  return typeof s.ts === 'number' ? s.ts : Date.parse(s.ts);
}

export interface Group {
  key: string;
  title: string;
  unit: Unit;
  series: string[];
}

interface Rule {
  re: RegExp;
  key: string;
  title: string;
  unit: Unit;
}

// Order here is the order of charts on the history page.
const RULES: Rule[] = [
  { re: /^cpu(\.(user|system|iowait|steal))?$/, key: 'cpu', title: 'CPU', unit: 'pct' },
  { re: /^cpu\.core\[\d+\]$/, key: 'cores', title: 'CPU per core', unit: 'pct' },
  { re: /^(mem|swap)\.pct$/, key: 'mem', title: 'Memory and swap', unit: 'pct' },
  { re: /^(mem|swap)\.(used|total|available)$/, key: 'membytes', title: 'Memory bytes', unit: 'bytes' },
  { re: /^load\./, key: 'load', title: 'Load average', unit: 'load' },
  { re: /^disk(\.pct|\[.*\]\.(pct|inodes_pct))$/, key: 'disk', title: 'Disk and inode usage', unit: 'pct' },
  { re: /^disk\[.*\]\.(used|total)$/, key: 'diskbytes', title: 'Disk space', unit: 'bytes' },
  { re: /^disk\[.*\]\.inodes_(used|total)$/, key: 'inodes', title: 'Inodes', unit: 'count' },
  { re: /^diskio\[.*\]\.(read|write)_bps$/, key: 'diskio', title: 'Disk I/O', unit: 'bps' },
  { re: /^diskio\[.*\]\.(read|write)_iops$/, key: 'iops', title: 'Disk IOPS', unit: 'ops' },
  { re: /^net(\.(rx|tx)_bps|\[.*\]\.(rx|tx)_bps)$/, key: 'net', title: 'Network', unit: 'bps' },
  { re: /^net\[.*\]\.(rx|tx)_pps$/, key: 'pps', title: 'Packets', unit: 'ops' },
  { re: /^net\[.*\]\.(rx|tx)_errs$/, key: 'errs', title: 'Network errors', unit: 'ops' },
  { re: /^(temp\[.*\]\.celsius|gpu\[\d+\]\.temp_c)$/, key: 'temp', title: 'Temperatures', unit: 'celsius' },
  { re: /^gpu\[\d+\]\.util$/, key: 'gpu', title: 'GPU utilisation', unit: 'pct' },
  { re: /^gpu\[\d+\]\.mem_(used|total)$/, key: 'gpumem', title: 'GPU memory', unit: 'bytes' },
  { re: /^gpu\[\d+\]\.power_w$/, key: 'gpupower', title: 'GPU power', unit: 'watts' },
  { re: /^container\[.*\]\.cpu$/, key: 'ccpu', title: 'Containers: CPU', unit: 'pct' },
  { re: /^container\[.*\]\.mem_bytes$/, key: 'cmem', title: 'Containers: memory', unit: 'bytes' },
  { re: /^container\[.*\]\.net_(rx|tx)_bps$/, key: 'cnet', title: 'Containers: network', unit: 'bps' },
  { re: /^container\[.*\]\.running$/, key: 'crun', title: 'Containers running', unit: 'count' },
  { re: /^docker\.size$/, key: 'docker', title: 'Docker data size', unit: 'bytes' },
  { re: /^procs$/, key: 'procs', title: 'Processes', unit: 'count' },
  { re: /^uptime$/, key: 'uptime', title: 'Uptime', unit: 'seconds' },
];

/** The unit of a series name. */
export function unitOf(name: string): Unit {
  return RULES.find((r) => r.re.test(name))?.unit ?? 'count';
}

/** Groups series names into charts, in a stable order; unknown names get a chart of their own. */
export function groupSeries(names: string[]): Group[] {
  const groups = new Map<string, Group>();
  const order: string[] = [];
  const sorted = [...names].sort(naturalCompare);
  for (const name of sorted) {
    const rule = RULES.find((r) => r.re.test(name));
    const key = rule?.key ?? `other:${name}`;
    let g = groups.get(key);
    if (!g) {
      g = { key, title: rule?.title ?? name, unit: rule?.unit ?? 'count', series: [] };
      groups.set(key, g);
      order.push(key);
    }
    g.series.push(name);
  }
  const rank = (k: string) => {
    const i = RULES.findIndex((r) => r.key === k);
    return i < 0 ? RULES.length : i;
  };
  return order.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).map((k) => groups.get(k)!);
}

/** What the History tab asks for: every series but the kernel statistics (the Kernel tab's). */
export const HISTORY_SERIES = 'cpu*,mem*,swap*,load*,disk*,net*,temp*,gpu*,container*,docker*,procs,uptime';

/** The agent's kernel statistics sources, in the order the Kernel tab offers them. */
export const KERNEL_SOURCES = ['psi', 'stat', 'vmstat', 'meminfo', 'netstat', 'snmp', 'sockstat', 'softirq', 'fs'] as const;

/** The unit of a `kernel.*` series: meminfo in bytes, pressure and CPU modes in percent. */
export function kernelUnit(name: string): Unit {
  const n = name.replace(/^kernel\./, '');
  if (/^meminfo\./.test(n)) return /HugePages_/.test(n) ? 'count' : 'bytes';
  if (/^psi\./.test(n) || /^stat\.cpu\d*\./.test(n)) return 'pct';
  return 'count';
}

/**
 * Groups `kernel.*` series into charts: series sharing everything but their last name part
 * (`kernel.psi.io.some`, `kernel.snmp.Tcp`) share a chart, at most `perChart` lines each.
 */
export function kernelGroups(names: string[], perChart = 6): Group[] {
  // Charts share a parent name and a unit (meminfo's HugePages_* counts beside its bytes).
  const byParent = new Map<string, string[]>();
  for (const name of [...names].sort(naturalCompare)) {
    const parent = name.slice(0, Math.max(0, name.lastIndexOf('.'))) || name;
    const k = `${parent}\u0000${kernelUnit(name)}`;
    const list = byParent.get(k) ?? [];
    list.push(name);
    byParent.set(k, list);
  }
  const out: Group[] = [];
  const seen = new Map<string, number>();
  for (const [k, list] of byParent) {
    const parent = k.slice(0, k.indexOf('\u0000'));
    const nth = seen.get(parent) ?? 0;
    seen.set(parent, nth + 1);
    const chunks = Math.ceil(list.length / perChart);
    for (let i = 0; i < chunks; i++) {
      const series = list.slice(i * perChart, (i + 1) * perChart);
      // A chart of one line has no legend: its title names the series.
      const title =
        series.length === 1 ? series[0].replace(/^kernel\./, '') : parent.replace(/^kernel\./, '') + (chunks > 1 ? ` (${i + 1}/${chunks})` : '');
      out.push({ key: `${parent}#${nth ? `${nth}.` : ''}${i}`, title, unit: kernelUnit(series[0]), series });
    }
  }
  return out;
}

/** Compares strings with embedded numbers in numeric order (`core[2]` before `core[10]`). */
export function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true });
}

export interface MetricsResponse {
  deviceId: string;
  from: number;
  to: number;
  stepMs: number;
  timestamps: number[];
  series: Record<string, (number | null)[]>;
}

/** uPlot columns for a group: seconds on x, then one column per series. */
export function columns(res: MetricsResponse, series: string[]): (number | null)[][] {
  const xs = res.timestamps.map((t) => t / 1000);
  return [xs, ...series.map((n) => res.series[n] ?? xs.map(() => null))];
}

/** Count of timestamps where at least one series of the response has a value. */
export function pointCount(res: MetricsResponse): number {
  let n = 0;
  const cols = Object.values(res.series);
  for (let i = 0; i < res.timestamps.length; i++) {
    if (cols.some((c) => c[i] != null)) n += 1;
  }
  return n;
}

export interface Range {
  from: number;
  to: number;
}

export const RANGES: Record<string, number> = {
  '1h': 3_600_000,
  '12h': 43_200_000,
  '24h': 86_400_000,
  '7d': 604_800_000,
  '30d': 2_592_000_000,
};

/** The range named `1h` ... `30d` ending at `now`. */
export function rangeOf(name: string, now: number): Range {
  const span = RANGES[name] ?? RANGES['1h'];
  return { from: now - span, to: now };
}

/** Record of seed 001's `metrics` bucket. */
export interface AppMetric {
  id: string;
  name: string;
  value: number;
  unit?: string;
  timestamp: number | string;
  _version?: number;
}

export interface AppSeries {
  name: string;
  unit: string;
  count: number;
  latest: number;
  latestTs: number;
  xs: number[];
  ys: number[];
}

/** Groups app metrics by name, points sorted by time, names sorted. */
export function appSeries(records: AppMetric[]): AppSeries[] {
  const by = new Map<string, { unit: string; pts: [number, number][] }>();
  for (const r of records) {
    const ts = typeof r.timestamp === 'number' ? r.timestamp : Date.parse(r.timestamp);
    if (!Number.isFinite(ts) || typeof r.value !== 'number') continue;
    let e = by.get(r.name);
    if (!e) {
      e = { unit: r.unit ?? '', pts: [] };
      by.set(r.name, e);
    }
    e.pts.push([ts, r.value]);
    if (r.unit) e.unit = r.unit;
  }
  return [...by.entries()]
    .sort((a, b) => naturalCompare(a[0], b[0]))
    .map(([name, e]) => {
      e.pts.sort((a, b) => a[0] - b[0]);
      const last = e.pts[e.pts.length - 1];
      return {
        name,
        unit: e.unit,
        count: e.pts.length,
        latest: last[1],
        latestTs: last[0],
        xs: e.pts.map((p) => p[0] / 1000),
        ys: e.pts.map((p) => p[1]),
      };
    });
}

/** Pushes a point into a fixed-length window (oldest dropped). */
export function pushWindow(arr: (number | null)[], v: number | null, max: number): void {
  arr.push(v);
  if (arr.length > max) arr.splice(0, arr.length - max);
}

/** Keeps alerts to show in a banner: active, not dismissed, most severe then newest, at most `max`. */
export interface AlertLite {
  id: string;
  severity: string;
  state: string;
  startedAt?: number | string | null;
  firedAt?: number | string | null;
}

const SEVERITY_RANK: Record<string, number> = { critical: 0, warning: 1, info: 2 };

export function bannerAlerts<T extends AlertLite>(alerts: T[], dismissed: Set<string>, max = 3): { shown: T[]; more: number } {
  const active = alerts.filter((a) => a.state === 'firing' && !dismissed.has(a.id));
  const t = (a: AlertLite) => new Date(a.firedAt ?? a.startedAt ?? 0).getTime() || 0;
  active.sort((a, b) => (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3) || t(b) - t(a));
  return { shown: active.slice(0, max), more: Math.max(0, active.length - max) };
}
