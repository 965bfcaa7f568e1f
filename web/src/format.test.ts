import { describe, expect, it } from 'vitest';
import { ago, bytes, count, dateTime, duration, pct, rate, status, value } from './format';

describe('format', () => {
  it('formats bytes in binary units', () => {
    expect(bytes(0)).toBe('0 B');
    expect(bytes(1023)).toBe('1023 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(16 * 1024 ** 3)).toBe('16.0 GiB');
    expect(bytes(250 * 1024 ** 4)).toBe('250 TiB');
    expect(bytes(null)).toBe('–');
    expect(bytes(Number.NaN)).toBe('–');
  });
  it('formats rates in decimal units', () => {
    expect(rate(999)).toBe('999 B/s');
    expect(rate(2500)).toBe('2.5 KB/s');
    expect(rate(1_250_000)).toBe('1.3 MB/s');
    expect(rate(undefined)).toBe('–');
  });
  it('formats counts, percentages and durations', () => {
    expect(count(12)).toBe('12');
    expect(count(1234567)).toBe('1.2M');
    expect(count(0.5)).toBe('0.50');
    expect(pct(42.123)).toBe('42.1 %');
    expect(pct(100)).toBe('100 %');
    expect(duration(59)).toBe('59s');
    expect(duration(93784)).toBe('1d 2h');
    expect(duration(3725)).toBe('1h 2m');
    expect(duration(-1)).toBe('–');
  });
  it('says how long ago', () => {
    const now = 1_000_000_000;
    expect(ago(null, now)).toBe('never');
    expect(ago(now - 500, now)).toBe('just now');
    expect(ago(now - 12_000, now)).toBe('12 s ago');
    expect(ago(now - 180_000, now)).toBe('3 min ago');
    expect(ago(now - 5 * 3_600_000, now)).toBe('5 h ago');
    expect(ago(now - 3 * 86_400_000, now)).toBe('3 days ago');
    expect(ago(now + 5000, now)).toBe('just now');
  });
  it('picks a device status from the thresholds', () => {
    const now = 100_000;
    expect(status(now - 5_000, now, 10, 60)).toBe('online');
    expect(status(now - 10_000, now, 10, 60)).toBe('online');
    expect(status(now - 10_001, now, 10, 60)).toBe('stale');
    expect(status(now - 61_000, now, 10, 60)).toBe('offline');
    expect(status(null, now, 10, 60)).toBe('offline');
  });
  it('formats by unit', () => {
    expect(value(36.66, 'celsius')).toBe('36.7 °C');
    expect(value(1.234, 'load')).toBe('1.23');
    expect(value(2048, 'bytes')).toBe('2.0 KiB');
    expect(value(1500, 'ops')).toBe('1.5K/s');
    expect(value(null, 'watts')).toBe('–');
  });
  it('formats local date-times and rejects junk', () => {
    const ts = new Date(2026, 10, 22, 9, 5, 7).getTime();
    expect(dateTime(ts)).toBe('2026-11-22 09:05:07');
    expect(dateTime('not a date')).toBe('–');
    expect(dateTime(null)).toBe('–');
  });
});
