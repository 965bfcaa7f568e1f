// The app shell: session check, first-run setup and sign-in, the header (navigation,
// connection state, theme toggle, user), and a small History API router.

import './style.css';
import { api, ApiError, prefetch, setCsrf, setUnauthorizedHandler, type User } from './api';
import type { App, Page } from './app';
import { h, setText } from './dom';
import { LiveSocket, type ConnState } from './live';
import { loginPage, setupPage } from './pages/auth';
import { overviewPage } from './pages/overview';
import { devicePage } from './pages/device';
import { pairPage } from './pages/pair';
import { appsPage } from './pages/apps';
import { alertsPage } from './pages/alerts';
import { settingsPage } from './pages/settings';

const root = document.getElementById('app')!;

// Theme: dark by default, remembered.
function applyTheme(t: string): void {
  document.documentElement.dataset.theme = t;
}
applyTheme(localStorage.getItem('vitals.theme') ?? 'dark');

const ROUTES: [RegExp, Page, string][] = [
  [/^\/$/, overviewPage, 'Overview'],
  [/^\/devices\/([^/]+)$/, devicePage, 'Device'],
  [/^\/pair$/, pairPage, 'Pair a device'],
  [/^\/apps$/, appsPage, 'App metrics'],
  [/^\/alerts$/, alertsPage, 'Alerts'],
  [/^\/settings$/, settingsPage, 'Settings'],
];

let cleanup: (() => void) | void;

function navigate(path: string, replace = false): void {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  void route();
}

// Same-origin links route on the client.
document.addEventListener('click', (e) => {
  const a = (e.target as Element).closest?.('a');
  if (!a || a.target || a.hasAttribute('download') || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || a.dataset.external != null) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => void route());

let session: { user: User; live: LiveSocket; settings: Record<string, unknown> } | null = null;

async function loadSession(): Promise<boolean> {
  // With a session cookie (its readable CSRF twin says so), the live socket opens at once,
  // beside the session check, so the first samples arrive as soon as the page can show them.
  const live = new LiveSocket();
  const early = /(?:^|; )vitals_csrf=/.test(document.cookie);
  if (early) {
    live.start();
    if (location.pathname === '/') prefetch('/overview');
  }
  try {
    const [user, settings] = await Promise.all([api<User>('GET', '/auth/me'), api<Record<string, unknown>>('GET', '/settings')]);
    if (user.csrfToken) setCsrf(user.csrfToken);
    if (!early) live.start();
    session = { user, live, settings };
    return true;
  } catch (e) {
    live.stop();
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

function endSession(): void {
  session?.live.stop();
  session = null;
}

setUnauthorizedHandler(() => {
  if (!session) return;
  endSession();
  navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, true);
});

function connIndicator(live: LiveSocket): HTMLElement {
  const el = h('span', { class: 'conn', role: 'status', 'aria-live': 'polite', title: 'Connection to the hub' });
  const labels: Record<ConnState, string> = { connecting: 'Connecting…', live: 'Live', offline: 'Reconnecting…' };
  live.onState((s) => {
    el.dataset.state = s;
    setText(el, labels[s]);
  });
  return el;
}

function header(app: App, current: string): HTMLElement {
  const link = (href: string, text: string) =>
    h('a', { href, 'aria-current': current === href ? 'page' : null }, text);
  const theme = h('button', { class: 'ghost', type: 'button', 'aria-label': 'Switch between dark and light theme' }, '');
  const setThemeLabel = () => setText(theme, document.documentElement.dataset.theme === 'light' ? '☾ Dark' : '☀ Light');
  setThemeLabel();
  theme.addEventListener('click', () => {
    const t = document.documentElement.dataset.theme === 'light' ? 'dark' : 'light';
    localStorage.setItem('vitals.theme', t);
    applyTheme(t);
    setThemeLabel();
  });
  const out = h('button', { class: 'ghost', type: 'button' }, 'Sign out');
  out.addEventListener('click', async () => {
    await api('POST', '/auth/logout').catch(() => {});
    endSession();
    navigate('/login');
  });
  return h(
    'header',
    { class: 'top' },
    h('a', { href: '/', class: 'brand', 'aria-label': 'Vitals home' }, 'Vitals'),
    h('nav', { 'aria-label': 'Main' }, link('/', 'Overview'), link('/apps', 'App metrics'), link('/alerts', 'Alerts'), link('/settings', 'Settings')),
    h('div', { class: 'right' }, connIndicator(app.live), theme, h('span', { class: 'who', 'data-role': app.user.role }, `${app.user.username} (${app.user.role})`), out),
  );
}

async function route(): Promise<void> {
  if (typeof cleanup === 'function') cleanup();
  cleanup = undefined;
  root.replaceChildren();
  const path = location.pathname;
  const params = new URLSearchParams(location.search);

  if (path === '/setup') {
    if (session) return navigate('/', true);
    cleanup = setupPage(root, params, async () => {
      await loadSession();
      navigate('/', true);
    });
    return;
  }
  if (!session) {
    let ok = false;
    try {
      ok = await loadSession();
    } catch (e) {
      root.append(h('main', { class: 'narrow' }, h('h1', {}, 'Vitals'), h('p', { class: 'notice err' }, `The hub cannot be reached: ${(e as Error).message}`)));
      window.setTimeout(() => void route(), 3000);
      return;
    }
    if (!ok && path !== '/login') {
      return navigate(`/login?next=${encodeURIComponent(path + location.search)}`, true);
    }
  }
  if (path === '/login') {
    if (session) return navigate(params.get('next') || '/', true);
    cleanup = loginPage(root, params, async () => {
      await loadSession();
      const next = params.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', true);
    });
    return;
  }
  const s = session!;
  const app: App = {
    user: s.user,
    live: s.live,
    settings: s.settings,
    navigate,
    isAdmin: () => s.user.role === 'admin',
    thresholds: () => ({
      stale: Number(s.settings['devices.staleAfterSec'] ?? 10),
      offline: Number(s.settings['devices.offlineAfterSec'] ?? 60),
    }),
  };
  for (const [re, page, title] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    document.title = `${title} · Vitals`;
    const main = h('main', { id: 'main', tabindex: -1 });
    root.append(h('a', { href: '#main', class: 'skip', 'data-external': '' }, 'Skip to content'), header(app, path), main);
    cleanup = page(main, app, params, m.slice(1).map(decodeURIComponent));
    return;
  }
  document.title = 'Not found · Vitals';
  root.append(header(app, path), h('main', { class: 'narrow' }, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '/' }, 'Back to the overview'))));
}

void route();
