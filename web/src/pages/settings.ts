// Settings (seed 003): devices (rename, remove, rotate token, install command), users and
// roles, API tokens, retention per tier and device thresholds, and notification settings.
// Viewers see devices and settings read-only; users and tokens are for admins.

import { api, type Device, type User } from '../api';
import type { App } from '../app';
import { copy, h, notice, table } from '../dom';
import { ago, dateTime } from '../format';

const TABS = ['devices', 'users', 'tokens', 'retention', 'notifications'] as const;
type Tab = (typeof TABS)[number];
const NAMES: Record<Tab, string> = { devices: 'Devices', users: 'Users', tokens: 'API tokens', retention: 'Retention', notifications: 'Notifications' };

interface Token {
  id: string;
  name: string;
  role: string;
  createdBy?: string;
  createdAt: string | number;
}

export function settingsPage(root: HTMLElement, app: App, params: URLSearchParams): () => void {
  const admin = app.isAdmin();
  const tabs = h('nav', { class: 'tabs', role: 'tablist', 'aria-label': 'Settings sections' });
  const body = h('div', { class: 'tab-body', role: 'tabpanel' });
  const msg = notice();
  root.append(h('h1', {}, 'Settings'), tabs, msg, body);
  const visible = TABS.filter((t) => admin || (t !== 'users' && t !== 'tokens'));

  function show(t: Tab): void {
    for (const a of tabs.querySelectorAll('a')) a.setAttribute('aria-selected', String(a.dataset.tab === t));
    body.replaceChildren();
    body.dataset.tab = t;
    msg.textContent = '';
    ({ devices, users, tokens, retention, notifications })[t](body);
  }
  for (const t of visible) {
    const a = h('a', { href: `/settings?tab=${t}`, role: 'tab', 'data-tab': t }, NAMES[t]);
    a.addEventListener('click', (e) => {
      e.preventDefault();
      e.stopPropagation();
      history.replaceState(null, '', `/settings?tab=${t}`);
      show(t);
    });
    tabs.append(a);
  }

  const fail = (e: unknown) => msg.show('err', (e as Error).message);
  const btn = (label: string, f: () => void, cls = 'ghost') => {
    const b = h('button', { type: 'button', class: cls }, label);
    b.addEventListener('click', f);
    return b;
  };
  /** Shows a secret once, with a copy button. */
  function secret(label: string, value: string): HTMLElement {
    const code = h('code', { class: 'secret' }, value);
    return h('div', { class: 'card secret-box', role: 'alert' }, h('p', {}, label), code, btn('Copy', () => void copy(value)));
  }

  function devices(el: HTMLElement): void {
    const install = `curl -fsSL ${location.origin}/install.sh | sudo sh`;
    el.append(
      h('div', { class: 'card' }, h('h2', {}, 'Add a machine'), h('p', {}, 'Run this on the machine to monitor; it downloads the agent from this hub, pairs it and installs a service:'), h('pre', { class: 'install' }, install), btn('Copy install command', () => void copy(install).then((ok) => msg.show(ok ? 'ok' : 'err', ok ? 'Copied.' : 'Copy failed: select the text instead.')))),
    );
    const list = h('div', { class: 'table-wrap' });
    const out = h('div', {});
    el.append(list, out);
    async function load(): Promise<void> {
      const devs = await api<Device[]>('GET', '/devices');
      list.replaceChildren(
        table(
          ['Name', 'Host id', 'Status', 'Last seen', 'Agent', ...(admin ? ['Actions'] : [])],
          devs.map((d) => {
            const name = h('input', { value: d.name, maxlength: 100, 'aria-label': `Name of ${d.name}`, disabled: !admin });
            const cells: (Node | string)[] = [admin ? name : h('a', { href: `/devices/${encodeURIComponent(d.id)}` }, d.name), d.hostId, h('span', { class: `badge ${d.status}` }, d.status), ago(d.lastSeen, Date.now()), d.agentVersion ?? '–'];
            if (admin) {
              cells.push(
                h(
                  'span',
                  { class: 'buttons' },
                  btn('Rename', () =>
                    void api('PATCH', `/devices/${encodeURIComponent(d.id)}`, { name: name.value }).then(() => {
                      msg.show('ok', `Renamed to ${name.value}.`);
                      return load();
                    }, fail),
                  ),
                  btn('Rotate token', () => {
                    if (!confirm(`Rotate the token of ${d.name}? Its agent must be given the new token.`)) return;
                    void api<{ token: string }>('POST', `/devices/${encodeURIComponent(d.id)}/rotate-token`).then((r) => out.replaceChildren(secret(`New token for ${d.name} (shown once; the old one stopped working):`, r.token)), fail);
                  }),
                  btn(
                    'Remove',
                    () => {
                      if (!confirm(`Remove ${d.name} with all its data?`)) return;
                      void api('DELETE', `/devices/${encodeURIComponent(d.id)}`).then(() => {
                        msg.show('ok', `Removed ${d.name}.`);
                        return load();
                      }, fail);
                    },
                    'danger',
                  ),
                ),
              );
            }
            return cells;
          }),
        ),
      );
    }
    load().catch(fail);
  }

  function users(el: HTMLElement): void {
    const list = h('div', { class: 'table-wrap' });
    const name = h('input', { required: true, maxlength: 64, placeholder: 'User name', autocomplete: 'off' });
    const pass = h('input', { required: true, type: 'password', minlength: 8, placeholder: 'Password (8+ characters)', autocomplete: 'new-password' });
    const role = h('select', { 'aria-label': 'Role' }, h('option', { value: 'viewer' }, 'viewer'), h('option', { value: 'admin' }, 'admin'));
    const form = h('form', { class: 'inline' }, name, pass, role, h('button', { type: 'submit' }, 'Add user'));
    el.append(list, h('div', { class: 'card' }, h('h2', {}, 'Add a user'), form));
    async function load(): Promise<void> {
      const us = await api<(User & { createdAt: string | number })[]>('GET', '/users');
      list.replaceChildren(
        table(
          ['User', 'Role', 'Created', ''],
          us.map((u) => [u.username, u.role, dateTime(u.createdAt), u.id === app.user.id ? '(you)' : btn('Delete', () => confirm(`Delete ${u.username}?`) && void api('DELETE', `/users/${encodeURIComponent(u.id)}`).then(load, fail), 'danger')]),
        ),
      );
    }
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void api('POST', '/users', { username: name.value, password: pass.value, role: role.value }).then(() => {
        msg.show('ok', `Added ${name.value}.`);
        form.reset();
        return load();
      }, fail);
    });
    load().catch(fail);
  }

  function tokens(el: HTMLElement): void {
    const list = h('div', { class: 'table-wrap' });
    const out = h('div', {});
    const name = h('input', { required: true, maxlength: 100, placeholder: 'Token name, e.g. grafana' });
    const role = h('select', { 'aria-label': 'Role' }, h('option', { value: 'viewer' }, 'viewer'), h('option', { value: 'admin' }, 'admin'));
    const form = h('form', { class: 'inline' }, name, role, h('button', { type: 'submit' }, 'Create token'));
    el.append(h('p', { class: 'muted' }, 'Tokens let scripts and applications call the API with Authorization: Bearer.'), list, h('div', { class: 'card' }, h('h2', {}, 'New token'), form), out);
    async function load(): Promise<void> {
      const ts = await api<Token[]>('GET', '/tokens');
      list.replaceChildren(
        ts.length
          ? table(
              ['Name', 'Role', 'Created', ''],
              ts.map((t) => [t.name, t.role, dateTime(t.createdAt), btn('Revoke', () => confirm(`Revoke ${t.name}?`) && void api('DELETE', `/tokens/${encodeURIComponent(t.id)}`).then(load, fail), 'danger')]),
            )
          : h('p', { class: 'muted' }, 'No API tokens.'),
      );
    }
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      void api<{ token: string; name: string }>('POST', '/tokens', { name: name.value, role: role.value }).then((r) => {
        out.replaceChildren(secret(`Token ${r.name} (shown only now):`, r.token));
        form.reset();
        return load();
      }, fail);
    });
    load().catch(fail);
  }

  /** A form over some settings keys; saved together with POST /api/settings. */
  function settingsForm(el: HTMLElement, fields: { key: string; label: string; type: 'number' | 'text' | 'checkbox'; help?: string }[]): void {
    const inputs = new Map<string, HTMLInputElement>();
    const form = h('form', { class: 'form card' });
    for (const f of fields) {
      const v = app.settings[f.key];
      const input = h('input', { type: f.type, name: f.key, disabled: !admin, step: f.type === 'number' ? 'any' : null });
      if (f.type === 'checkbox') input.checked = v === true;
      else input.value = v == null ? '' : String(v);
      inputs.set(f.key, input);
      form.append(h('label', { class: f.type === 'checkbox' ? 'check' : '' }, f.label, input, f.help ? h('small', { class: 'muted' }, f.help) : null));
    }
    if (admin) form.append(h('button', { type: 'submit' }, 'Save'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const body: Record<string, unknown> = {};
      for (const f of fields) {
        const i = inputs.get(f.key)!;
        if (f.type === 'checkbox') body[f.key] = i.checked;
        else if (f.type === 'number') body[f.key] = Number(i.value);
        else body[f.key] = i.value;
      }
      void api<Record<string, unknown>>('POST', '/settings', body).then((s) => {
        Object.assign(app.settings, s);
        msg.show('ok', 'Saved; applied now, no restart needed.');
      }, fail);
    });
    el.append(form);
  }

  function retention(el: HTMLElement): void {
    settingsForm(el, [
      { key: 'retention.rawDays', label: 'Per-second samples: days kept', type: 'number' },
      { key: 'retention.minuteDays', label: '1-minute rollups and alert history: days kept', type: 'number' },
      { key: 'retention.hourDays', label: '1-hour rollups: days kept', type: 'number' },
      { key: 'devices.staleAfterSec', label: 'A device is stale after (seconds without data)', type: 'number' },
      { key: 'devices.offlineAfterSec', label: 'A device is offline after (seconds without data)', type: 'number' },
    ]);
  }

  function notifications(el: HTMLElement): void {
    settingsForm(el, [
      { key: 'alerts.slackWebhookUrl', label: 'Slack incoming webhook URL', type: 'text', help: 'Used by rules without channels of their own.' },
      { key: 'alerts.allowPrivateTargets', label: 'Allow webhooks to private and loopback addresses', type: 'checkbox', help: 'Off by default: protects internal services from forged requests.' },
      { key: 'alerts.cpuThreshold', label: 'Default rule “High CPU”: threshold %', type: 'number' },
      { key: 'alerts.memoryThreshold', label: 'Default rule “High memory”: threshold %', type: 'number' },
      { key: 'alerts.diskThreshold', label: 'Default rule “Disk almost full”: threshold %', type: 'number' },
      { key: 'alerts.durationSec', label: 'Default rules fire after (seconds)', type: 'number' },
    ]);
    el.append(h('p', {}, 'Rules, channels (Slack, webhooks, e-mail, ntfy) and maintenance windows: ', h('a', { href: '/alerts' }, 'Alerts'), '.'));
  }

  const want = params.get('tab') as Tab | null;
  show(want && visible.includes(want) ? want : 'devices');
  return () => {};
}
