// Sign-in, and the first-run setup that the hub's one-time `/setup?token=` link opens.

import { api, setCsrf, type User } from '../api';
import { h, notice } from '../dom';

function field(label: string, input: HTMLInputElement): HTMLElement {
  return h('label', {}, label, input);
}

export function loginPage(root: HTMLElement, _params: URLSearchParams, done: () => Promise<void>): () => void {
  const user = h('input', { name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const msg = notice();
  const setupHint = h('p', { class: 'muted', hidden: true }, 'No admin exists yet: open the one-time setup link the hub printed when it started.');
  const form = h('form', { class: 'card form' }, field('User name', user), field('Password', pass), h('button', { type: 'submit' }, 'Sign in'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await api<{ user: User; csrfToken: string }>('POST', '/auth/login', { username: user.value, password: pass.value });
      setCsrf(r.csrfToken);
      await done();
    } catch (err) {
      msg.show('err', (err as Error).message);
      pass.select();
    }
  });
  void api<{ needed: boolean }>('GET', '/setup').then((s) => {
    setupHint.hidden = !s.needed;
  }, () => {});
  root.append(h('main', { class: 'narrow' }, h('h1', {}, 'Sign in to Vitals'), form, setupHint));
  return () => {};
}

export function setupPage(root: HTMLElement, params: URLSearchParams, done: () => Promise<void>): () => void {
  const token = params.get('token') ?? '';
  const user = h('input', { name: 'username', autocomplete: 'username', required: true, maxlength: 64, autofocus: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  const msg = notice();
  const form = h(
    'form',
    { class: 'card form' },
    h('p', {}, 'Create the first admin account. This link works once.'),
    field('User name', user),
    field('Password (at least 8 characters)', pass),
    h('button', { type: 'submit' }, 'Create admin'),
    msg,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await api<{ user: User; csrfToken: string }>('POST', '/setup', { token, username: user.value, password: pass.value });
      setCsrf(r.csrfToken);
      msg.show('ok', 'Admin created and signed in.');
      await done();
    } catch (err) {
      msg.show('err', (err as Error).message);
    }
  });
  root.append(h('main', { class: 'narrow' }, h('h1', {}, 'Welcome to Vitals'), token ? form : h('p', { class: 'notice err' }, 'This setup link has no token. Use the link the hub printed when it started.')));
  return () => {};
}
