// Charts: a hand-drawn SVG doughnut and bar chart, and two uPlot time series.
// Every chart is created once; updates only change attributes or call setData.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { History, Metrics } from './types';

const SVG = 'http://www.w3.org/2000/svg';

function svgEl<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export const COLORS = {
  active: '#3b82f6',
  completed: '#10b981',
  failed: '#ef4444',
  pending: '#f59e0b',
  memory: '#a78bfa',
  cpu: '#f472b6',
  grid: '#374151',
  text: '#9ca3af',
};

/** Job status doughnut: active, completed, failed, pending. */
export class Doughnut {
  private arcs: SVGCircleElement[] = [];
  private total: SVGTextElement;
  private legend: HTMLSpanElement[] = [];
  private static R = 40;
  private static C = 2 * Math.PI * Doughnut.R;
  private keys = ['active', 'completed', 'failed', 'pending'] as const;

  constructor(host: HTMLElement) {
    const svg = svgEl('svg', { viewBox: '0 0 120 120', role: 'img', 'aria-label': 'Job status distribution' });
    svg.classList.add('doughnut');
    svg.appendChild(svgEl('circle', { cx: 60, cy: 60, r: Doughnut.R, fill: 'none', stroke: COLORS.grid, 'stroke-width': 16 }));
    for (const k of this.keys) {
      const c = svgEl('circle', {
        cx: 60, cy: 60, r: Doughnut.R, fill: 'none', stroke: COLORS[k], 'stroke-width': 16,
        'stroke-dasharray': `0 ${Doughnut.C}`, transform: 'rotate(-90 60 60)',
      });
      c.dataset.segment = k;
      svg.appendChild(c);
      this.arcs.push(c);
    }
    this.total = svgEl('text', { x: 60, y: 66, 'text-anchor': 'middle', 'font-size': 16, fill: '#e5e7eb' });
    this.total.textContent = '0';
    svg.appendChild(this.total);
    const legend = document.createElement('div');
    legend.className = 'legend';
    for (const k of this.keys) {
      const item = document.createElement('span');
      item.className = 'legend-item';
      const sw = document.createElement('i');
      sw.style.background = COLORS[k];
      const label = document.createElement('span');
      item.append(sw, label);
      legend.appendChild(item);
      this.legend.push(label);
    }
    host.append(svg, legend);
  }

  update(m: Metrics): void {
    const values = [m.jobs_active, m.jobs_completed, m.jobs_failed, m.jobs_pending];
    const sum = values.reduce((a, b) => a + b, 0);
    let offset = 0;
    values.forEach((v, i) => {
      const len = sum > 0 ? (v / sum) * Doughnut.C : 0;
      this.arcs[i].setAttribute('stroke-dasharray', `${len} ${Doughnut.C - len}`);
      this.arcs[i].setAttribute('stroke-dashoffset', String(-offset));
      offset += len;
      this.legend[i].textContent = `${this.keys[i]} ${v.toLocaleString()}`;
    });
    this.total.textContent = sum.toLocaleString();
  }
}

/** Jobs by provider: one bar per provider, rebuilt only when the set of providers changes. */
export class Bars {
  private svg: SVGSVGElement;
  private bars = new Map<string, { rect: SVGRectElement; value: SVGTextElement }>();
  private keys = '';
  private empty: SVGTextElement;

  constructor(host: HTMLElement) {
    this.svg = svgEl('svg', { viewBox: '0 0 300 150', role: 'img', 'aria-label': 'Jobs by provider' });
    this.svg.classList.add('bars');
    this.empty = svgEl('text', { x: 150, y: 80, 'text-anchor': 'middle', fill: COLORS.text, 'font-size': 12 });
    this.empty.textContent = 'no jobs yet';
    this.svg.appendChild(this.empty);
    host.appendChild(this.svg);
  }

  update(stats: Record<string, number>): void {
    const names = Object.keys(stats).sort();
    const key = names.join('\u0000');
    const palette = ['#f59e0b', '#3b82f6', '#10b981', '#a78bfa', '#f472b6', '#22d3ee'];
    if (key !== this.keys) {
      this.keys = key;
      for (const b of this.bars.values()) {
        b.rect.parentElement?.remove();
      }
      this.bars.clear();
      const slot = names.length > 0 ? 280 / names.length : 280;
      names.forEach((name, i) => {
        const g = svgEl('g');
        g.dataset.provider = name;
        const x = 10 + i * slot + slot * 0.15;
        const w = slot * 0.7;
        const rect = svgEl('rect', { x, y: 130, width: w, height: 0, rx: 3, fill: palette[i % palette.length] });
        const label = svgEl('text', { x: x + w / 2, y: 145, 'text-anchor': 'middle', fill: COLORS.text, 'font-size': 10 });
        label.textContent = name;
        const value = svgEl('text', { x: x + w / 2, y: 125, 'text-anchor': 'middle', fill: '#e5e7eb', 'font-size': 10 });
        g.append(rect, label, value);
        this.svg.appendChild(g);
        this.bars.set(name, { rect, value });
      });
    }
    this.empty.style.display = names.length ? 'none' : '';
    const max = Math.max(1, ...names.map((n) => stats[n]));
    for (const name of names) {
      const b = this.bars.get(name);
      if (!b) continue;
      const h = (stats[name] / max) * 110;
      b.rect.setAttribute('y', String(130 - h));
      b.rect.setAttribute('height', String(h));
      b.value.setAttribute('y', String(126 - h));
      b.value.textContent = String(stats[name]);
    }
  }
}

function size(host: HTMLElement): { width: number; height: number } {
  const width = Math.max(200, Math.floor(host.clientWidth));
  return { width, height: 200 };
}

const axis = (extra: Partial<uPlot.Axis> = {}): uPlot.Axis => ({
  stroke: COLORS.text,
  grid: { stroke: COLORS.grid, width: 1 },
  ticks: { stroke: COLORS.grid, width: 1 },
  ...extra,
});

/** A rolling window of points for both time-series charts. */
export class TimeSeries {
  private jobs: uPlot;
  private res: uPlot;
  private data: { t: number[]; a: number[]; c: number[]; f: number[]; mem: number[]; cpu: number[] } = {
    t: [], a: [], c: [], f: [], mem: [], cpu: [],
  };
  private lastT = 0;

  constructor(jobsHost: HTMLElement, resHost: HTMLElement, private maxPoints = 50) {
    this.jobs = new uPlot(
      {
        ...size(jobsHost),
        legend: { live: false },
        cursor: { sync: { key: 'embed' } },
        scales: { x: { time: true } },
        axes: [axis(), axis()],
        series: [
          {},
          { label: 'active', stroke: COLORS.active, width: 2 },
          { label: 'completed', stroke: COLORS.completed, width: 2 },
          { label: 'failed', stroke: COLORS.failed, width: 2 },
        ],
      },
      [[], [], [], []],
      jobsHost,
    );
    this.res = new uPlot(
      {
        ...size(resHost),
        legend: { live: false },
        cursor: { sync: { key: 'embed' } },
        scales: { x: { time: true }, mb: {}, pct: { range: (_u, _min, max) => [0, Math.max(100, max)] } },
        axes: [
          axis(),
          axis({ scale: 'mb', label: 'MB', values: (_u, v) => v.map((x) => x.toLocaleString()) }),
          axis({ scale: 'pct', side: 1, label: '%', grid: { show: false } }),
        ],
        series: [
          {},
          { label: 'memory (MB)', scale: 'mb', stroke: COLORS.memory, width: 2, fill: 'rgba(167,139,250,0.12)' },
          { label: 'cpu (%)', scale: 'pct', stroke: COLORS.cpu, width: 2 },
        ],
      },
      [[], [], []],
      resHost,
    );
    const ro = new ResizeObserver(() => {
      this.jobs.setSize(size(jobsHost));
      this.res.setSize(size(resHost));
    });
    ro.observe(jobsHost);
    ro.observe(resHost);
  }

  /** Replaces the window with the server's history (on every (re)connect). */
  load(h: History): void {
    this.maxPoints = Math.max(this.maxPoints, h.t.length);
    this.data = {
      t: [...h.t], a: [...h.jobs_active], c: [...h.jobs_completed], f: [...h.jobs_failed],
      mem: [...h.memory_usage], cpu: [...h.cpu_usage],
    };
    this.lastT = h.t.length ? h.t[h.t.length - 1] : 0;
    this.redraw();
  }

  push(m: Metrics): void {
    const t = Date.parse(m.timestamp) / 1000;
    if (!Number.isFinite(t) || t <= this.lastT) return;
    this.lastT = t;
    const d = this.data;
    d.t.push(t); d.a.push(m.jobs_active); d.c.push(m.jobs_completed); d.f.push(m.jobs_failed);
    d.mem.push(m.memory_usage); d.cpu.push(m.cpu_usage);
    if (d.t.length > this.maxPoints) {
      for (const col of Object.values(d)) col.splice(0, col.length - this.maxPoints);
    }
    this.redraw();
  }

  private redraw(): void {
    const d = this.data;
    this.jobs.setData([d.t, d.a, d.c, d.f]);
    this.res.setData([d.t, d.mem, d.cpu]);
  }
}
