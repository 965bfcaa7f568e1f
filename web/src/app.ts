// What every page gets: the signed-in user, the live socket, the hub's settings and navigation.

import type { User } from './api';
import type { LiveSocket } from './live';

export interface App {
  user: User;
  live: LiveSocket;
  settings: Record<string, unknown>;
  navigate(path: string, replace?: boolean): void;
  isAdmin(): boolean;
  /** Seconds after which a silent device is stale, and offline. */
  thresholds(): { stale: number; offline: number };
}

/** A page mounts into `root` and returns its cleanup (sockets, timers, observers). */
export type Page = (root: HTMLElement, app: App, params: URLSearchParams, match: string[]) => (() => void) | void;
