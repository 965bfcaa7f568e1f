// The two sockets the app holds: `/ws/live` (every new sample and alert, seed 003) and
// `/api/store/ws` (seed 001's reactive store, for the app-metrics page). Both reconnect by
// themselves with exponential backoff and jitter, report their state for the header's
// connection indicator, and tell their users to resubscribe or refetch after a reconnect.

export type ConnState = 'connecting' | 'live' | 'offline';

function wsUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

abstract class Reconnecting {
  state: ConnState = 'connecting';
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: number | undefined;
  private stopped = false;
  private stateListeners = new Set<(s: ConnState) => void>();
  private lastMessage = 0;
  private watchdog: number | undefined;

  constructor(private path: string) {}

  start(): void {
    this.stopped = false;
    this.connect();
    // A socket silent for 20 s (the hub sends at least pongs) is treated as dead.
    this.watchdog = window.setInterval(() => {
      if (this.ws?.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify(this.pingFrame()));
        if (Date.now() - this.lastMessage > 20_000) this.ws.close();
      }
    }, 10_000);
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    window.clearInterval(this.watchdog);
    this.ws?.close(1000);
    this.ws = null;
  }

  onState(f: (s: ConnState) => void): () => void {
    this.stateListeners.add(f);
    f(this.state);
    return () => this.stateListeners.delete(f);
  }

  protected send(frame: unknown): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  protected abstract pingFrame(): unknown;
  protected abstract onMessage(msg: Record<string, unknown>): void;
  protected abstract onOpen(): void;

  private setState(s: ConnState): void {
    if (s === this.state) return;
    this.state = s;
    for (const f of this.stateListeners) f(s);
  }

  private connect(): void {
    this.setState(this.attempt === 0 ? 'connecting' : this.state);
    const ws = new WebSocket(wsUrl(this.path));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.lastMessage = Date.now();
    };
    ws.onmessage = (ev) => {
      this.lastMessage = Date.now();
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(String(ev.data));
      } catch {
        return;
      }
      if (this.state !== 'live' && (msg.type === 'connected' || msg.type === 'welcome')) {
        this.setState('live');
        this.onOpen();
      }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.setState('offline');
      this.attempt += 1;
      const base = Math.min(10_000, 500 * 2 ** Math.min(this.attempt - 1, 5));
      this.timer = window.setTimeout(() => this.connect(), base / 2 + Math.random() * (base / 2));
    };
  }
}

export interface MetricsEvent {
  deviceId: string;
  ts: number;
  data: import('./shape').Sample;
}

/** `/ws/live`: listeners get every sample and alert; `onReconnect` lets views refetch what they missed. */
export class LiveSocket extends Reconnecting {
  private metricListeners = new Set<(e: MetricsEvent) => void>();
  private alertListeners = new Set<(a: import('./api').Alert) => void>();
  private reconnectListeners = new Set<() => void>();
  private opened = 0;
  private gotMetrics = false;

  constructor() {
    super('/ws/live');
  }

  onMetrics(f: (e: MetricsEvent) => void): () => void {
    this.metricListeners.add(f);
    return () => this.metricListeners.delete(f);
  }

  onAlert(f: (a: import('./api').Alert) => void): () => void {
    this.alertListeners.add(f);
    return () => this.alertListeners.delete(f);
  }

  onReconnect(f: () => void): () => void {
    this.reconnectListeners.add(f);
    return () => this.reconnectListeners.delete(f);
  }

  protected pingFrame(): unknown {
    return { type: 'ping' };
  }

  protected onOpen(): void {
    if (this.opened === 0) performance.mark('vitals:live-connected');
    this.opened += 1;
    if (this.opened > 1) for (const f of this.reconnectListeners) f();
  }

  protected onMessage(msg: Record<string, unknown>): void {
    if (msg.type === 'metrics') {
      if (!this.gotMetrics) {
        this.gotMetrics = true;
        performance.mark('vitals:first-sample');
      }
      for (const f of this.metricListeners) f(msg as unknown as MetricsEvent);
    } else if (msg.type === 'alert') {
      for (const f of this.alertListeners) f(msg.alert as import('./api').Alert);
    }
  }
}

type Pending = { resolve: (d: unknown) => void; reject: (e: Error) => void };

/** `/api/store/ws`: request/response with ids, and subscriptions that survive reconnects. */
export class StoreSocket extends Reconnecting {
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private subs = new Map<string, { query: string; params: unknown; cb: (data: unknown) => void; serverId?: string }>();

  constructor() {
    super('/api/store/ws');
  }

  protected pingFrame(): unknown {
    return { id: 0, type: 'store.count', bucket: 'metrics' };
  }

  request<T = unknown>(type: string, payload: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (!this.send({ id, type, ...payload })) {
        reject(new Error('Not connected to the hub; try again in a moment.'));
        return;
      }
      this.pending.set(id, { resolve: resolve as (d: unknown) => void, reject });
      window.setTimeout(() => {
        if (this.pending.delete(id)) reject(new Error('The hub did not answer within 10 s.'));
      }, 10_000);
    });
  }

  /** Subscribes to a live query; `cb` gets the first result and every change. Returns an unsubscribe. */
  subscribe(query: string, params: unknown, cb: (data: unknown) => void): () => void {
    const key = `${query}:${JSON.stringify(params)}:${this.nextId++}`;
    const sub: { query: string; params: unknown; cb: (data: unknown) => void; serverId?: string } = { query, params, cb };
    this.subs.set(key, sub);
    if (this.state === 'live') void this.open(sub);
    return () => {
      this.subs.delete(key);
      if (sub.serverId) void this.request('store.unsubscribe', { subscriptionId: sub.serverId }).catch(() => {});
    };
  }

  private async open(sub: { query: string; params: unknown; cb: (data: unknown) => void; serverId?: string }): Promise<void> {
    try {
      const r = await this.request<{ subscriptionId: string; data: unknown }>('store.subscribe', { query: sub.query, params: sub.params });
      sub.serverId = r.subscriptionId;
      sub.cb(r.data);
    } catch {
      /* retried on the next reconnect */
    }
  }

  protected onOpen(): void {
    for (const sub of this.subs.values()) {
      sub.serverId = undefined;
      void this.open(sub);
    }
  }

  protected onMessage(msg: Record<string, unknown>): void {
    if (msg.type === 'push') {
      for (const sub of this.subs.values()) {
        if (sub.serverId === msg.subscriptionId) sub.cb(msg.data);
      }
      return;
    }
    const id = Number(msg.id);
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (msg.type === 'error') p.reject(new Error(String(msg.message ?? msg.code)));
    else p.resolve(msg.data);
  }
}
