// App metrics (seed 001): the reactive store's buckets, live. `metrics`: the latest value,
// count and a chart per metric name; `alerts`: the records with their severity. For everyone
// to read; admins insert into and clear either bucket.

import type { App } from '../app';
import { TimeChart } from '../charts';
import { h, notice, setText, table } from '../dom';
import { count, dateTime } from '../format';
import { StoreSocket } from '../live';
import { appSeries, type AppMetric } from '../shape';

interface Panel {
  el: HTMLElement;
  latest: HTMLElement;
  meta: HTMLElement;
  chart: TimeChart;
}

export function appsPage(root: HTMLElement, app: App): () => void {
  const store = new StoreSocket();
  const total = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Connecting…');
  const grid = h('div', { class: 'app-grid' });
  const panels = new Map<string, Panel>();
  const msg = notice();
  root.append(h('div', { class: 'toolbar' }, h('h1', {}, 'App metrics')), h('p', { class: 'muted' }, 'Metrics that applications push to the hub’s store (see the README: /api/store/ws).'), total);

  if (app.isAdmin()) {
    const name = h('input', { name: 'name', required: true, maxlength: 200, placeholder: 'name, e.g. queue_depth', 'aria-label': 'Metric name' });
    const val = h('input', { name: 'value', required: true, type: 'number', step: 'any', placeholder: 'value', 'aria-label': 'Value' });
    const unit = h('input', { name: 'unit', maxlength: 32, placeholder: 'unit (optional)', 'aria-label': 'Unit' });
    const form = h('form', { class: 'inline admin-only' }, name, val, unit, h('button', { type: 'submit' }, 'Insert'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await store.request('store.insert', { bucket: 'metrics', data: { name: name.value.trim(), value: Number(val.value), unit: unit.value.trim(), timestamp: Date.now() } });
        msg.show('ok', `Inserted ${name.value.trim()} = ${val.value}`);
        val.value = '';
      } catch (err) {
        msg.show('err', (err as Error).message);
      }
    });
    const clearBtn = h('button', { type: 'button', class: 'danger admin-only' }, 'Clear all');
    clearBtn.addEventListener('click', async () => {
      if (!confirm('Delete every app metric record?')) return;
      try {
        await store.request('store.clear', { bucket: 'metrics' });
        msg.show('ok', 'Cleared.');
      } catch (err) {
        msg.show('err', (err as Error).message);
      }
    });
    root.append(h('div', { class: 'card' }, form, clearBtn, msg));
  }
  root.append(grid);

  // The `alerts` bucket (seed 001): applications' own alert records, and the hub's firing alerts.
  const alertCount = h('span', { class: 'muted' });
  const alertList = h('div', { class: 'table-wrap' });
  const alertSection = h('section', { class: 'card', 'data-bucket': 'alerts' }, h('div', { class: 'card-head' }, h('h2', {}, 'Alerts bucket'), alertCount), alertList);
  if (app.isAdmin()) {
    const metric = h('input', { name: 'alert-metric', required: true, maxlength: 200, placeholder: 'metric', 'aria-label': 'Alert metric' });
    const threshold = h('input', { name: 'alert-threshold', required: true, type: 'number', step: 'any', placeholder: 'threshold', 'aria-label': 'Alert threshold' });
    const severity = h('select', { name: 'alert-severity', 'aria-label': 'Alert severity' }, ...['low', 'medium', 'high'].map((v) => h('option', { value: v }, v)));
    const form = h('form', { class: 'inline admin-only' }, metric, threshold, severity, h('button', { type: 'submit' }, 'Insert alert'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await store.request('store.insert', { bucket: 'alerts', data: { metric: metric.value.trim(), threshold: Number(threshold.value), severity: severity.value, timestamp: Date.now() } });
        msg.show('ok', `Inserted alert ${metric.value.trim()}`);
      } catch (err) {
        msg.show('err', (err as Error).message);
      }
    });
    const clearAlerts = h('button', { type: 'button', class: 'danger admin-only' }, 'Clear alerts');
    clearAlerts.addEventListener('click', async () => {
      if (!confirm('Delete every record of the alerts bucket?')) return;
      await store.request('store.clear', { bucket: 'alerts' }).then(() => msg.show('ok', 'Alerts bucket cleared.'), (err) => msg.show('err', (err as Error).message));
    });
    alertSection.append(form, clearAlerts);
  }
  root.append(alertSection);
  store.subscribe('active-alerts', {}, (d) => {
    const list = ((d as { id: string; metric: string; threshold: number; severity: string; timestamp: number }[]) ?? []).slice().reverse();
    setText(alertCount, `${list.length} record${list.length === 1 ? '' : 's'}`);
    alertList.replaceChildren(
      list.length
        ? table(
            ['Metric', 'Threshold', 'Severity', 'Time'],
            list.map((a) => [a.metric, String(a.threshold), h('span', { class: `sev sev-${a.severity === 'high' ? 'critical' : a.severity === 'medium' ? 'warning' : 'info'}` }, a.severity), dateTime(a.timestamp)]),
          )
        : h('p', { class: 'muted' }, 'No alert records.'),
    );
  });

  function render(records: AppMetric[]): void {
    const series = appSeries(records);
    setText(total, `${count(records.length)} records · ${series.length} metric names`);
    const names = new Set(series.map((s) => s.name));
    for (const [n, p] of panels) {
      if (!names.has(n)) {
        p.chart.destroy();
        p.el.remove();
        panels.delete(n);
      }
    }
    for (const s of series) {
      let p = panels.get(s.name);
      const data = [s.xs, s.ys] as never;
      if (!p) {
        const latest = h('span', { class: 'big' });
        const meta = h('span', { class: 'muted' });
        const chart = new TimeChart({ title: s.name, unit: 'count', series: [s.name], height: 140 }, data);
        const el = h('section', { class: 'card app-metric', 'data-name': s.name }, h('div', { class: 'card-head' }, latest, meta), chart.el);
        p = { el, latest, meta, chart };
        panels.set(s.name, p);
      } else {
        p.chart.setData(data);
      }
      setText(p.latest, `${s.latest}${s.unit ? ` ${s.unit}` : ''}`);
      setText(p.meta, `${s.count} values · last ${dateTime(s.latestTs)}`);
      grid.append(p.el); // keeps the sorted order
    }
    if (series.length === 0) grid.replaceChildren(h('p', { class: 'muted' }, 'No app metrics yet.'));
    else grid.querySelector(':scope > p')?.remove();
  }

  const off = store.onState((s) => {
    if (s !== 'live') setText(total, s === 'connecting' ? 'Connecting…' : 'Reconnecting…');
  });
  store.subscribe('all-metrics', {}, (d) => render((d as AppMetric[]) ?? []));
  store.start();
  return () => {
    off();
    store.stop();
    for (const p of panels.values()) p.chart.destroy();
  };
}
