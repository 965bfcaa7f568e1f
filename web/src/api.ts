// The hub's JSON API: every call goes through `api()`, which adds the CSRF header to writes
// and turns error answers (`{error, message}`) into an ApiError with the hub's message.

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf = '';

export function setCsrf(token: string): void {
  csrf = token;
}

function cookieCsrf(): string {
  const m = document.cookie.match(/(?:^|; )vitals_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

/** Called with 401 answers (the session ended): the app goes back to sign-in. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void): void {
  onUnauthorized = f;
}

const prefetched = new Map<string, Promise<unknown>>();

/** Starts a GET now, for the page about to ask for it (boot time, beside the session check).
 * The next `api('GET', path)` takes this answer instead of asking again. */
export function prefetch(path: string): void {
  const p = api('GET', path);
  p.catch(() => {});
  prefetched.set(path, p);
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  if (method === 'GET') {
    const p = prefetched.get(path);
    if (p) {
      prefetched.delete(path);
      return p as Promise<T>;
    }
  }
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['x-csrf-token'] = csrf || cookieCsrf();
  let r: Response;
  try {
    r = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'network', 'The hub cannot be reached. Check that it is running; the page retries by itself.');
  }
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  let j: unknown = null;
  try {
    j = text ? JSON.parse(text) : null;
  } catch {
    j = null;
  }
  if (!r.ok) {
    const o = (j ?? {}) as { error?: string; status?: string; message?: string };
    if (r.status === 401 && !path.startsWith('/auth/')) onUnauthorized();
    throw new ApiError(r.status, o.error ?? o.status ?? `http_${r.status}`, o.message ?? `The hub answered ${r.status}.`);
  }
  return j as T;
}

export interface User {
  id: string;
  username: string;
  role: 'admin' | 'viewer';
  csrfToken?: string;
}

export interface Device {
  id: string;
  name: string;
  hostId: string;
  simulated: boolean;
  agentVersion: string | null;
  createdAt?: number | string;
  lastSeen: number | null;
  status: 'online' | 'stale' | 'offline';
}

export interface OverviewDevice extends Device {
  latest: Record<string, number>;
  spark: { ts: number[]; cpu: (number | null)[]; 'mem.pct': (number | null)[]; 'disk.pct': (number | null)[]; 'net.bps': (number | null)[] };
}

export interface Alert {
  id: string;
  ruleId: string;
  ruleName: string;
  deviceId: string;
  deviceName: string;
  metric: string;
  subject: string | null;
  op: string;
  threshold: number;
  severity: 'info' | 'warning' | 'critical';
  state: 'firing' | 'resolved';
  startedAt: number | string;
  firedAt: number | string | null;
  endedAt: number | string | null;
  value: number;
  peak: number;
  durationSec: number;
  ackedAt: number | string | null;
  ackedBy: string | null;
  notifications: number;
}
