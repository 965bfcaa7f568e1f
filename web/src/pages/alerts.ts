// Alerts (the alerts issue's pages): active and past alerts with acknowledgement, alert
// rules, notification channels (with a test send), maintenance windows and the delivery log.
// Viewers see everything but the delivery log, read-only.

import { api, type Alert, type Device } from '../api';
import type { App } from '../app';
import { h, notice, table } from '../dom';
import { dateTime, duration } from '../format';

interface Rule {
  id: string;
  name: string;
  builtin?: boolean;
  deviceIds: string[];
  metric: string;
  subject: string | null;
  op: string;
  threshold: number | null;
  durationSec: number;
  severity: string;
  channelIds: string[];
  repeatSec: number;
  enabled: boolean;
}
interface Channel {
  id: string;
  name: string;
  kind: string;
  config: Record<string, unknown>;
}
interface Window_ {
  id: string;
  name: string;
  deviceIds: string[];
  ruleIds: string[];
  startsAt: string | number | null;
  endsAt: string | number | null;
  daily: { start: string; end: string } | null;
}
interface Delivery {
  at: string | number;
  eventId: string;
  channelId: string;
  kind: string;
  attempt: number;
  ok: boolean;
  status: number | null;
  error: string | null;
}

const METRICS = ['cpu', 'memory', 'swap', 'disk', 'inodes', 'gpu', 'gpu_memory', 'temperature', 'load', 'net_rx', 'net_tx', 'docker_size', 'container_down', 'offline'];
const EXAMPLES: Record<string, string> = {
  slack: '{"url": "https://hooks.slack.com/services/..."}',
  webhook: '{"url": "https://example.com/hook", "headers": {"Authorization": "Bearer ..."}}',
  email: '{"host": "smtp.example.com", "port": 587, "security": "starttls", "username": "...", "password": "...", "from": "vitals@example.com", "to": ["ops@example.com"]}',
  ntfy: '{"url": "https://ntfy.sh/my-topic"}',
};

function section(title: string, ...children: (Node | null)[]): HTMLElement {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

export function alertsPage(root: HTMLElement, app: App): () => void {
  const admin = app.isAdmin();
  const msg = notice();
  const active = h('div', { class: 'table-wrap' });
  const past = h('div', { class: 'table-wrap' });
  const rules = h('div', { class: 'table-wrap' });
  const channels = h('div', { class: 'table-wrap' });
  const windows = h('div', { class: 'table-wrap' });
  const deliveries = h('div', { class: 'table-wrap' });
  let devices: Device[] = [];
  let channelList: Channel[] = [];
  let ruleList: Rule[] = [];

  const run = async (f: () => Promise<unknown>, ok?: string) => {
    try {
      await f();
      if (ok) msg.show('ok', ok);
      await load();
    } catch (e) {
      msg.show('err', (e as Error).message);
    }
  };
  const btn = (label: string, f: () => void, cls = 'ghost') => {
    const b = h('button', { type: 'button', class: cls }, label);
    b.addEventListener('click', f);
    return b;
  };

  function alertRows(list: Alert[], withAck: boolean) {
    return list.map((a) => [
      h('span', { class: `sev sev-${a.severity}` }, a.severity),
      h('a', { href: `/devices/${encodeURIComponent(a.deviceId)}` }, a.deviceName),
      `${a.ruleName}${a.subject ? ` (${a.subject})` : ''}`,
      `${a.metric} ${a.op} ${a.threshold}`,
      String(Math.round(a.value * 100) / 100),
      dateTime(a.firedAt ?? a.startedAt),
      a.endedAt ? dateTime(a.endedAt) : a.state,
      a.ackedAt ? `acknowledged by ${a.ackedBy ?? '?'}` : withAck && admin ? btn('Acknowledge', () => void run(() => api('POST', `/alerts/${encodeURIComponent(a.id)}/ack`), 'Acknowledged: no more repeats.')) : '–',
    ]);
  }
  /** A Delete button for an admin (nothing for a viewer): asks, deletes, reloads. */
  const del = (what: string, path: string, ok: string) =>
    admin ? btn('Delete', () => confirm(`Delete ${what}?`) && void run(() => api('DELETE', path), ok), 'danger') : '';
  const alertHead = ['Severity', 'Device', 'Rule', 'Condition', 'Value', 'Since', 'Ended', 'Acknowledged'];

  async function load(): Promise<void> {
    const [act, all, rl, ch, win, devs] = await Promise.all([
      api<Alert[]>('GET', '/alerts?state=active&limit=200'),
      api<Alert[]>('GET', '/alerts?state=all&limit=100'),
      api<Rule[]>('GET', '/alert-rules'),
      api<Channel[]>('GET', '/notification-channels'),
      api<Window_[]>('GET', '/maintenance-windows'),
      api<Device[]>('GET', '/devices'),
    ]);
    devices = devs;
    channelList = ch;
    ruleList = rl;
    const devName = (id: string) => devices.find((d) => d.id === id)?.name ?? id;
    active.replaceChildren(act.length ? table(alertHead, alertRows(act, true)) : h('p', { class: 'muted' }, 'No active alerts.'));
    const ended = all.filter((a) => a.state !== 'firing');
    past.replaceChildren(ended.length ? table(alertHead, alertRows(ended, false)) : h('p', { class: 'muted' }, 'No past alerts.'));
    rules.replaceChildren(
      table(
        ['Name', 'Condition', 'For', 'Severity', 'Devices', 'Channels', 'Enabled', ''],
        rl.map((r) => [
          r.name + (r.builtin ? ' (default)' : ''),
          r.metric === 'offline' ? 'no data' : `${r.metric}${r.subject ? `[${r.subject}]` : ''} ${r.op} ${r.threshold}`,
          duration(r.durationSec),
          h('span', { class: `sev sev-${r.severity}` }, r.severity),
          r.deviceIds.length ? r.deviceIds.map(devName).join(', ') : 'all',
          r.channelIds.length ? r.channelIds.map((c) => channelList.find((x) => x.id === c)?.name ?? c).join(', ') : 'Slack setting',
          admin ? btn(r.enabled ? 'Disable' : 'Enable', () => void run(() => api('PATCH', `/alert-rules/${encodeURIComponent(r.id)}`, { enabled: !r.enabled }))) : r.enabled ? 'yes' : 'no',
          del(`rule ${r.name}`, `/alert-rules/${encodeURIComponent(r.id)}`, 'Rule deleted.'),
        ]),
      ),
    );
    channels.replaceChildren(
      ch.length
        ? table(
            ['Name', 'Kind', 'Target', ''],
            ch.map((c) => [
              c.name,
              c.kind,
              String(c.config.url ?? c.config.host ?? ''),
              admin
                ? h(
                    'span',
                    { class: 'buttons' },
                    btn('Send test', () =>
                      void api<{ ok: boolean; status?: number; error?: string }>('POST', `/notification-channels/${encodeURIComponent(c.id)}/test`).then(
                        (r) => msg.show(r.ok ? 'ok' : 'err', r.ok ? `Test sent (HTTP ${r.status ?? 'ok'}).` : `Test failed: ${r.error}`),
                        (e) => msg.show('err', (e as Error).message),
                      ),
                    ),
                    del(`channel ${c.name}`, `/notification-channels/${encodeURIComponent(c.id)}`, 'Channel deleted.'),
                  )
                : '',
            ]),
          )
        : h('p', { class: 'muted' }, 'No channels. Without one, rules notify the Slack webhook of the settings, if set.'),
    );
    windows.replaceChildren(
      win.length
        ? table(
            ['Name', 'Devices', 'When', ''],
            win.map((w) => [
              w.name,
              w.deviceIds.length ? w.deviceIds.map(devName).join(', ') : 'all',
              w.daily ? `daily ${w.daily.start}–${w.daily.end}` : `${dateTime(w.startsAt)} – ${dateTime(w.endsAt)}`,
              del(`window ${w.name}`, `/maintenance-windows/${encodeURIComponent(w.id)}`, 'Window deleted.'),
            ]),
          )
        : h('p', { class: 'muted' }, 'No maintenance windows.'),
    );
    if (admin) {
      const log = await api<Delivery[]>('GET', '/alert-deliveries?limit=50');
      deliveries.replaceChildren(
        log.length
          ? table(
              ['Time', 'Kind', 'Channel', 'Attempt', 'Result'],
              log.map((d) => [dateTime(d.at), d.kind, channelList.find((c) => c.id === d.channelId)?.name ?? d.channelId, String(d.attempt), d.ok ? `ok (${d.status ?? ''})` : `failed: ${d.error ?? d.status}`]),
            )
          : h('p', { class: 'muted' }, 'Nothing sent yet.'),
      );
    }
    refreshForms();
  }

  // --- forms (admins)
  const ruleChannels = h('select', { multiple: true, 'aria-label': 'Channels', size: 3 });
  const ruleDevices = h('select', { multiple: true, 'aria-label': 'Devices (none selected: all)', size: 3 });
  const winDevices = h('select', { multiple: true, 'aria-label': 'Devices (none selected: all)', size: 3 });
  function refreshForms(): void {
    const opts = (list: { id: string; name: string }[]) => list.map((x) => h('option', { value: x.id }, x.name));
    ruleChannels.replaceChildren(...opts(channelList));
    ruleDevices.replaceChildren(...opts(devices));
    winDevices.replaceChildren(...opts(devices));
    void ruleList;
  }
  const selected = (s: HTMLSelectElement) => [...s.selectedOptions].map((o) => o.value);

  function ruleForm(): HTMLElement {
    const name = h('input', { required: true, maxlength: 100, placeholder: 'Name' });
    const metric = h('select', {}, ...METRICS.map((m) => h('option', { value: m }, m)));
    const op = h('select', {}, ...['>', '>=', '<', '<='].map((o) => h('option', { value: o }, o)));
    const threshold = h('input', { type: 'number', step: 'any', value: '90', 'aria-label': 'Threshold' });
    const dur = h('input', { type: 'number', min: 0, value: '60', 'aria-label': 'For (seconds)' });
    const sev = h('select', {}, ...['warning', 'critical', 'info'].map((s) => h('option', { value: s }, s)));
    const repeat = h('input', { type: 'number', min: 0, value: '0', 'aria-label': 'Repeat every (seconds, 0 = never)' });
    const f = h(
      'form',
      { class: 'form grid-form' },
      h('label', {}, 'Name', name),
      h('label', {}, 'Metric', metric),
      h('label', {}, 'Operator', op),
      h('label', {}, 'Threshold', threshold),
      h('label', {}, 'For (s)', dur),
      h('label', {}, 'Severity', sev),
      h('label', {}, 'Repeat (s)', repeat),
      h('label', {}, 'Devices', ruleDevices),
      h('label', {}, 'Channels', ruleChannels),
      h('button', { type: 'submit' }, 'Add rule'),
    );
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      const body: Record<string, unknown> = {
        name: name.value,
        metric: metric.value,
        op: op.value,
        durationSec: Number(dur.value),
        severity: sev.value,
        repeatSec: Number(repeat.value),
        deviceIds: selected(ruleDevices),
        channelIds: selected(ruleChannels),
      };
      if (metric.value !== 'offline') body.threshold = Number(threshold.value);
      void run(() => api('POST', '/alert-rules', body), 'Rule added.');
    });
    return f;
  }

  function channelForm(): HTMLElement {
    const name = h('input', { required: true, maxlength: 100, placeholder: 'Name' });
    const kind = h('select', {}, ...Object.keys(EXAMPLES).map((k) => h('option', { value: k }, k)));
    const config = h('textarea', { rows: 3, 'aria-label': 'Configuration (JSON)', spellcheck: 'false' });
    config.value = EXAMPLES.slack;
    kind.addEventListener('change', () => {
      config.value = EXAMPLES[kind.value];
    });
    const f = h('form', { class: 'form grid-form' }, h('label', {}, 'Name', name), h('label', {}, 'Kind', kind), h('label', { class: 'wide' }, 'Configuration (JSON)', config), h('button', { type: 'submit' }, 'Add channel'));
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      let cfg: unknown;
      try {
        cfg = JSON.parse(config.value);
      } catch {
        msg.show('err', 'The configuration is not valid JSON.');
        return;
      }
      void run(() => api('POST', '/notification-channels', { name: name.value, kind: kind.value, config: cfg }), 'Channel added.');
    });
    return f;
  }

  function windowForm(): HTMLElement {
    const name = h('input', { required: true, maxlength: 100, placeholder: 'Name' });
    const hours = h('input', { type: 'number', min: 1, max: 720, value: '2', 'aria-label': 'Hours from now' });
    const f = h('form', { class: 'form grid-form' }, h('label', {}, 'Name', name), h('label', {}, 'Hours from now', hours), h('label', {}, 'Devices', winDevices), h('button', { type: 'submit' }, 'Add window'));
    f.addEventListener('submit', (e) => {
      e.preventDefault();
      const now = Date.now();
      void run(
        () => api('POST', '/maintenance-windows', { name: name.value, deviceIds: selected(winDevices), ruleIds: [], startsAt: now, endsAt: now + Number(hours.value) * 3_600_000 }),
        'Maintenance window added.',
      );
    });
    return f;
  }

  root.append(
    h('h1', {}, 'Alerts'),
    msg,
    section('Active', active),
    section('Rules', rules, admin ? ruleForm() : null),
    section('Notification channels', channels, admin ? channelForm() : null),
    section('Maintenance windows', windows, admin ? windowForm() : null),
    section('History', past),
  );
  if (admin) root.append(section('Delivery log', deliveries));
  load().catch((e) => msg.show('err', (e as Error).message));
  const off = app.live.onAlert(() => void load().catch(() => {}));
  return off;
}
