// Formatting of numbers, sizes, rates, times and statuses for display. Pure functions,
// unit-tested in format.test.ts.

export type Unit = 'pct' | 'bytes' | 'bps' | 'count' | 'celsius' | 'watts' | 'seconds' | 'load' | 'ops';

const SI = ['', 'K', 'M', 'G', 'T', 'P'];
const IEC = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

function trim(n: number, digits: number): string {
  if (!Number.isFinite(n)) return '–';
  const a = Math.abs(n);
  const d = a >= 100 ? 0 : a >= 10 ? Math.min(1, digits) : digits;
  return n.toFixed(d);
}

/** `|n|` divided by `base` until under it: the scaled value and the unit index. */
function scale(n: number, base: number, units: number): [number, number] {
  let i = 0;
  let v = Math.abs(n);
  while (v >= base && i < units - 1) {
    v /= base;
    i += 1;
  }
  return [v, i];
}

const sign = (n: number) => (n < 0 ? '-' : '');

/** Bytes in binary units: `1536` -> `1.5 KiB`. */
export function bytes(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '–';
  const [v, i] = scale(n, 1024, IEC.length);
  return `${sign(n)}${trim(v, i === 0 ? 0 : 1)} ${IEC[i]}`;
}

/** Bytes per second as a rate: `2500` -> `2.5 KB/s` (decimal, as network tools do). */
export function rate(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '–';
  const [v, i] = scale(n, 1000, SI.length);
  return `${sign(n)}${trim(v, i === 0 ? 0 : 1)} ${SI[i]}B/s`;
}

/** A plain count with K/M suffixes: `1234567` -> `1.2M`. */
export function count(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '–';
  if (Math.abs(n) < 1000) return Number.isInteger(n) ? String(n) : trim(n, 2);
  const [v, i] = scale(n, 1000, SI.length);
  return `${sign(n)}${trim(v, 1)}${SI[i]}`;
}

export function pct(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '–';
  return `${trim(n, 1)} %`;
}

/** Seconds as a short duration: `93784` -> `1d 2h`. */
export function duration(sec: number | null | undefined): string {
  if (sec == null || !Number.isFinite(sec) || sec < 0) return '–';
  const s = Math.floor(sec);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  const d = Math.floor(h / 24);
  return `${d}d ${h % 24}h`;
}

/** How long ago `ts` (Unix ms) was, seen at `now`: `just now`, `12 s ago`, `3 min ago`, ... */
export function ago(ts: number | null | undefined, now: number): string {
  if (ts == null) return 'never';
  const s = Math.max(0, Math.round((now - ts) / 1000));
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} days ago`;
}

export function value(n: number | null | undefined, unit: Unit): string {
  switch (unit) {
    case 'pct':
      return pct(n);
    case 'bytes':
      return bytes(n);
    case 'bps':
      return rate(n);
    case 'celsius':
      return n == null || !Number.isFinite(n) ? '–' : `${trim(n, 1)} °C`;
    case 'watts':
      return n == null || !Number.isFinite(n) ? '–' : `${trim(n, 1)} W`;
    case 'seconds':
      return duration(n);
    case 'ops':
      return n == null || !Number.isFinite(n) ? '–' : `${count(n)}/s`;
    case 'load':
      return n == null || !Number.isFinite(n) ? '–' : n.toFixed(2);
    default:
      return count(n);
  }
}

/** A local date and time, to the second. */
export function dateTime(ts: number | string | null | undefined): string {
  if (ts == null || ts === '') return '–';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '–';
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export type Status = 'online' | 'stale' | 'offline';

/** A device's status from when it was last seen, with the hub's thresholds (seconds). */
export function status(lastSeen: number | null | undefined, now: number, staleAfterSec: number, offlineAfterSec: number): Status {
  if (lastSeen == null) return 'offline';
  const age = (now - lastSeen) / 1000;
  if (age > offlineAfterSec) return 'offline';
  if (age > staleAfterSec) return 'stale';
  return 'online';
}

/** `datetime-local` input value for a Unix ms time, in local time. */
export function toLocalInput(ts: number): string {
  const d = new Date(ts);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
