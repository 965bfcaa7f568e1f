// The pairing approval page, `/pair?code=XXXX-XXXX` (seed 000): shows what is asking (host,
// host id, IP address, agent version, time), takes a name, and approves or denies the code.

import { api, ApiError } from '../api';
import type { App } from '../app';
import { dateTime } from '../format';
import { h, notice } from '../dom';

interface CodeInfo {
  code: string;
  status: 'pending' | 'approved' | 'expired';
  hostId: string;
  hostname: string | null;
  agentVersion: string | null;
  sourceIp: string | null;
  requestedAt: string | number;
  expiresAt: string | number;
  deviceId: string | null;
}

export function pairPage(root: HTMLElement, app: App, params: URLSearchParams): () => void {
  const code = (params.get('code') ?? '').trim();
  const msg = notice();
  const box = h('div', { class: 'card' });
  const codeIn = h('input', { name: 'code', placeholder: 'XXXX-XXXX', 'aria-label': 'Pairing code', maxlength: 9, value: code });
  const lookup = h('form', { class: 'inline' }, codeIn, h('button', { type: 'submit' }, 'Look up'));
  lookup.addEventListener('submit', (e) => {
    e.preventDefault();
    app.navigate(`/pair?code=${encodeURIComponent(codeIn.value.trim())}`, true);
  });
  root.append(h('div', { class: 'narrow' }, h('h1', {}, 'Approve a device'), lookup, box, msg));

  if (!app.isAdmin()) {
    msg.show('err', 'Only an admin can approve devices. Ask an admin to open this link.');
    return () => {};
  }
  if (!code) {
    box.append(h('p', {}, 'Enter the code the agent printed (vitals-agent pair --hub URL).'));
    return () => {};
  }

  void (async () => {
    let info: CodeInfo;
    try {
      info = await api<CodeInfo>('GET', `/device-codes/${encodeURIComponent(code)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) msg.show('err', `Unknown code ${code}: check it, or run the agent's pair command again for a new one.`);
      else if (e instanceof ApiError && e.status === 410) msg.show('err', `Code ${code} expired: run the agent's pair command again for a new one.`);
      else msg.show('err', (e as Error).message);
      return;
    }
    if (info.status === 'expired') {
      msg.show('err', `Code ${info.code} expired at ${dateTime(info.expiresAt)}: run the agent's pair command again for a new one.`);
      return;
    }
    if (info.status === 'approved') {
      msg.show('ok', 'This code is already approved.');
      if (info.deviceId) box.append(h('a', { href: `/devices/${encodeURIComponent(info.deviceId)}` }, 'Open the device'));
      return;
    }
    const dl = h('dl', { class: 'facts' });
    const row = (k: string, v: string | null | undefined) => dl.append(h('dt', {}, k), h('dd', {}, v || '–'));
    row('Code', info.code);
    row('Hostname', info.hostname);
    row('Host id', info.hostId);
    row('IP address', info.sourceIp);
    row('Agent version', info.agentVersion);
    row('Requested', dateTime(info.requestedAt));
    row('Expires', dateTime(info.expiresAt));
    const name = h('input', { name: 'name', required: true, maxlength: 100, value: info.hostname ?? '' });
    const approve = h('button', { type: 'submit' }, 'Approve');
    const deny = h('button', { type: 'button', class: 'danger' }, 'Deny');
    const form = h('form', { class: 'form' }, h('label', {}, 'Device name', name), h('div', { class: 'buttons' }, approve, deny));
    box.append(h('p', {}, 'Approve only if you recognise this machine.'), dl, form);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const dev = await api<{ id: string; name: string }>('POST', `/device-codes/${encodeURIComponent(info.code)}/approve`, { name: name.value });
        form.remove();
        msg.show('ok', `Approved “${dev.name}”. The agent starts sending within seconds.`);
        box.append(h('a', { href: `/devices/${encodeURIComponent(dev.id)}`, class: 'button' }, 'Open the device'));
      } catch (err) {
        msg.show('err', (err as Error).message);
      }
    });
    deny.addEventListener('click', async () => {
      try {
        await api('POST', `/device-codes/${encodeURIComponent(info.code)}/deny`);
        form.remove();
        msg.show('ok', 'Denied. The agent is told no.');
      } catch (err) {
        msg.show('err', (err as Error).message);
      }
    });
  })();
  return () => {};
}
