// Charts. uPlot draws every time-series chart (live, history, app metrics) through TimeChart;
// fleet cards use Sparkline, a 60-point canvas line that costs far less than a chart instance
// per card; Gauge is an SVG arc. All are created once and updated in place.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { dateTime, value as fmt, type Unit } from './format';

export const PALETTE = ['#60a5fa', '#f472b6', '#34d399', '#fbbf24', '#a78bfa', '#f87171', '#22d3ee', '#fb923c', '#a3e635', '#e879f9'];

function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** A canvas sparkline of fixed length; `draw()` only when visible. */
export class Sparkline {
  readonly canvas: HTMLCanvasElement;
  constructor(
    private color: string,
    private max: number | null,
  ) {
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'spark';
    this.canvas.setAttribute('aria-hidden', 'true');
  }

  private w = 0;
  private h = 0;

  /** Reads the canvas's CSS size. Call for every sparkline before drawing any (reads, then
   * writes: no layout thrash); needed once, and again after a resize. */
  measure(): void {
    this.w = this.canvas.clientWidth;
    this.h = this.canvas.clientHeight;
  }

  get measured(): boolean {
    return this.w > 0;
  }

  draw(data: (number | null)[]): void {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = this.w;
    const hgt = this.h;
    if (w === 0 || hgt === 0) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
    }
    const ctx = c.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    let top = this.max ?? 0;
    if (this.max == null) for (const v of data) if (v != null && v > top) top = v;
    if (top <= 0) top = 1;
    const n = 60;
    const step = w / (n - 1);
    const off = n - data.length;
    ctx.beginPath();
    let pen = false;
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (v == null) {
        pen = false;
        continue;
      }
      const x = (off + i) * step;
      const y = hgt - 1 - (Math.min(v, top) / top) * (hgt - 2);
      if (pen) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      pen = true;
    }
    ctx.strokeStyle = this.color;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
}

const SVG = 'http://www.w3.org/2000/svg';

/** A 240° arc gauge showing a percentage. */
export class Gauge {
  readonly el: HTMLElement;
  private arc: SVGPathElement;
  private text: SVGTextElement;
  private static LEN = 2 * Math.PI * 40 * (240 / 360);

  constructor(label: string) {
    this.el = document.createElement('figure');
    this.el.className = 'gauge';
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 100 90');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
    const d = 'M 15.36 70 A 40 40 0 1 1 84.64 70';
    const bg = document.createElementNS(SVG, 'path');
    bg.setAttribute('d', d);
    bg.setAttribute('class', 'gauge-bg');
    this.arc = document.createElementNS(SVG, 'path');
    this.arc.setAttribute('d', d);
    this.arc.setAttribute('class', 'gauge-fg');
    this.arc.setAttribute('stroke-dasharray', `0 ${Gauge.LEN}`);
    this.text = document.createElementNS(SVG, 'text');
    this.text.setAttribute('x', '50');
    this.text.setAttribute('y', '56');
    this.text.setAttribute('text-anchor', 'middle');
    this.text.setAttribute('class', 'gauge-text');
    svg.append(bg, this.arc, this.text);
    const cap = document.createElement('figcaption');
    cap.textContent = label;
    this.el.append(svg, cap);
  }

  set(pct: number | null, text?: string): void {
    const v = pct == null || !Number.isFinite(pct) ? 0 : Math.max(0, Math.min(100, pct));
    this.arc.setAttribute('stroke-dasharray', `${(v / 100) * Gauge.LEN} ${Gauge.LEN}`);
    this.arc.setAttribute('data-level', v >= 90 ? 'crit' : v >= 75 ? 'warn' : 'ok');
    this.text.textContent = text ?? (pct == null ? '–' : `${v.toFixed(0)}%`);
    this.el.dataset.value = pct == null ? '' : String(pct);
  }
}

export interface TimeChartOpts {
  title: string;
  unit: Unit;
  series: string[];
  height?: number;
  /** Charts with the same key share their cursor (linked cursors). */
  syncKey?: string;
  /** Called with the selected range in Unix ms after a drag-zoom. */
  onZoom?: (from: number, to: number) => void;
  /** Fixed y range for percentages. */
  yMax?: number;
}

/** Tooltip plugin: time and every series' value at the cursor, beside the cursor. */
function tooltip(unit: Unit): uPlot.Plugin {
  let tip: HTMLDivElement;
  return {
    hooks: {
      init: (u) => {
        tip = document.createElement('div');
        tip.className = 'u-tip';
        tip.hidden = true;
        u.over.append(tip);
        u.over.addEventListener('mouseleave', () => {
          tip.hidden = true;
        });
      },
      setCursor: (u) => {
        const i = u.cursor.idx;
        if (i == null || u.cursor.left == null || u.cursor.left < 0) {
          tip.hidden = true;
          return;
        }
        const lines = [dateTime((u.data[0][i] as number) * 1000)];
        for (let s = 1; s < u.series.length; s++) {
          if (!u.series[s].show) continue;
          const v = u.data[s][i];
          lines.push(`${u.series[s].label}: ${fmt(v as number | null, unit)}`);
        }
        tip.textContent = lines.join('\n');
        tip.hidden = false;
        const left = u.cursor.left + 12;
        tip.style.left = `${left + tip.offsetWidth > u.over.clientWidth ? u.cursor.left - tip.offsetWidth - 12 : left}px`;
        tip.style.top = `${Math.max(0, (u.cursor.top ?? 0) - 10)}px`;
      },
    },
  };
}

/** A uPlot line chart that follows its container's width. */
export class TimeChart {
  readonly el: HTMLElement;
  private plot: uPlot;
  private ro: ResizeObserver;

  constructor(opts: TimeChartOpts, data: uPlot.AlignedData) {
    this.el = document.createElement('section');
    this.el.className = 'chart';
    const h2 = document.createElement('h3');
    h2.textContent = opts.title;
    this.el.append(h2);
    const body = document.createElement('div');
    this.el.append(body);
    const axis = cssVar('--muted', '#9aa5b1');
    const grid = cssVar('--grid', '#2a323d');
    const axisOpts = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const plotOpts: uPlot.Options = {
      width: 600,
      height: opts.height ?? 180,
      cursor: {
        sync: opts.syncKey ? { key: opts.syncKey } : undefined,
        drag: { x: true, y: false, setScale: !opts.onZoom },
      },
      legend: { show: opts.series.length > 1 },
      scales: { y: opts.yMax != null ? { range: [0, opts.yMax] } : { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { ...axisOpts },
        { ...axisOpts, size: 70, values: (_u, vals) => vals.map((v) => fmt(v, opts.unit)) },
      ],
      series: [
        {},
        ...opts.series.map((name, i) => ({
          label: name,
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          spanGaps: false,
          points: { show: false },
          value: (_u: uPlot, v: number | null) => fmt(v, opts.unit),
        })),
      ],
      plugins: [tooltip(opts.unit)],
      hooks: opts.onZoom
        ? {
            setSelect: [
              (u) => {
                if (u.select.width < 5) return;
                const from = u.posToVal(u.select.left, 'x') * 1000;
                const to = u.posToVal(u.select.left + u.select.width, 'x') * 1000;
                u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
                opts.onZoom?.(Math.round(from), Math.round(to));
              },
            ],
          }
        : {},
    };
    this.plot = new uPlot(plotOpts, data, body);
    this.setPoints(data);
    this.ro = new ResizeObserver(() => {
      const w = body.clientWidth;
      if (w > 0 && Math.abs(w - this.plot.width) > 1) this.plot.setSize({ width: w, height: this.plot.height });
    });
    this.ro.observe(body);
  }

  setData(data: uPlot.AlignedData): void {
    this.plot.setData(data);
    this.setPoints(data);
  }

  private setPoints(data: uPlot.AlignedData): void {
    let n = 0;
    for (let i = 0; i < data[0].length; i++) {
      for (let s = 1; s < data.length; s++) {
        if (data[s][i] != null) {
          n += 1;
          break;
        }
      }
    }
    this.el.dataset.points = String(n);
  }

  destroy(): void {
    this.ro.disconnect();
    this.plot.destroy();
    this.el.remove();
  }
}
