import { describe, expect, it } from 'vitest';
import { appSeries, bannerAlerts, cardValues, columns, groupSeries, kernelGroups, kernelUnit, pointCount, pushWindow, rangeOf, unitOf, type Sample } from './shape';

const sample: Sample = {
  ts: 1_700_000_000_000,
  cpu: { total: 12.5, perCore: [10, 15] },
  mem: { used: 2e9, total: 8e9 },
  disk: [
    { name: '/', used: 50, total: 100 },
    { name: '/data', used: 150, total: 300 },
  ],
  net: { rxBps: 1000, txBps: 250 },
};

describe('shape', () => {
  it('computes card values over every disk', () => {
    expect(cardValues(sample)).toEqual([12.5, 25, 50, 1250]);
    expect(cardValues({ ...sample, disk: [], mem: { used: 0, total: 0 } })).toEqual([12.5, null, null, 1250]);
  });

  it('groups series into charts in a stable order, cores numerically', () => {
    const groups = groupSeries(['net.rx_bps', 'cpu.core[10]', 'cpu', 'cpu.core[2]', 'mem.pct', 'disk[/].pct', 'disk.pct', 'custom.thing', 'temp[cpu].celsius', 'gpu[0].temp_c']);
    expect(groups.map((g) => g.key)).toEqual(['cpu', 'cores', 'mem', 'disk', 'net', 'temp', 'other:custom.thing']);
    expect(groups[1].series).toEqual(['cpu.core[2]', 'cpu.core[10]']);
    expect(groups.find((g) => g.key === 'temp')?.series).toEqual(['gpu[0].temp_c', 'temp[cpu].celsius']);
    expect(groups.find((g) => g.key === 'disk')?.unit).toBe('pct');
  });

  it('knows series units', () => {
    expect(unitOf('mem.used')).toBe('bytes');
    expect(unitOf('net[eth0].rx_bps')).toBe('bps');
    expect(unitOf('diskio[sda].read_iops')).toBe('ops');
    expect(unitOf('container[web].cpu')).toBe('pct');
    expect(unitOf('uptime')).toBe('seconds');
    expect(unitOf('whatever')).toBe('count');
  });

  it('turns a metrics answer into uPlot columns, missing series as nulls', () => {
    const res = { deviceId: 'd', from: 0, to: 3000, stepMs: 1000, timestamps: [1000, 2000, 3000], series: { cpu: [1, null, 3] } };
    expect(columns(res, ['cpu', 'nope'])).toEqual([
      [1, 2, 3],
      [1, null, 3],
      [null, null, null],
    ]);
    expect(pointCount(res)).toBe(2);
  });

  it('keeps a fixed window', () => {
    const a: (number | null)[] = [1, 2, 3];
    pushWindow(a, 4, 3);
    expect(a).toEqual([2, 3, 4]);
    pushWindow(a, null, 5);
    expect(a).toEqual([2, 3, 4, null]);
  });

  it('names ranges ending now', () => {
    expect(rangeOf('12h', 100_000_000)).toEqual({ from: 100_000_000 - 43_200_000, to: 100_000_000 });
    expect(rangeOf('bogus', 10_000_000)).toEqual({ from: 10_000_000 - 3_600_000, to: 10_000_000 });
  });

  it('groups app metrics per name with sorted points', () => {
    const s = appSeries([
      { id: '1', name: 'q', value: 5, unit: 'jobs', timestamp: 3000 },
      { id: '2', name: 'q', value: 2, timestamp: 1000 },
      { id: '3', name: 'a', value: 7, timestamp: '1970-01-01T00:00:02Z' },
      { id: '4', name: 'bad', value: 1, timestamp: 'never' },
    ]);
    expect(s.map((x) => x.name)).toEqual(['a', 'q']);
    expect(s[1]).toMatchObject({ count: 2, latest: 5, latestTs: 3000, unit: 'jobs', xs: [1, 3], ys: [2, 5] });
    expect(s[0].latestTs).toBe(2000);
  });

  it('shows at most three firing alerts, most severe first, minus dismissed', () => {
    const mk = (id: string, severity: string, firedAt: number, state = 'firing') => ({ id, severity, firedAt, state });
    const list = [mk('a', 'info', 5), mk('b', 'critical', 1), mk('c', 'warning', 9), mk('d', 'critical', 3), mk('e', 'warning', 2), mk('f', 'critical', 10, 'resolved')];
    const { shown, more } = bannerAlerts(list, new Set(['c']), 3);
    expect(shown.map((a) => a.id)).toEqual(['d', 'b', 'e']);
    expect(more).toBe(1);
    expect(bannerAlerts([], new Set()).shown).toEqual([]);
  });
  it('groups kernel statistics by parent name, a few lines per chart, with units', () => {
    const vm = Array.from({ length: 13 }, (_, i) => `kernel.vmstat.c${i}`);
    const g = kernelGroups(['kernel.psi.io.some.avg10', 'kernel.psi.io.some.stall_pct', 'kernel.meminfo.Cached', ...vm], 6);
    expect(g.map((x) => x.title)).toEqual(['meminfo.Cached', 'psi.io.some', 'vmstat (1/3)', 'vmstat (2/3)', 'vmstat.c12']);
    expect(g[1].series).toEqual(['kernel.psi.io.some.avg10', 'kernel.psi.io.some.stall_pct']);
    expect(g[2].series).toEqual(['kernel.vmstat.c0', 'kernel.vmstat.c1', 'kernel.vmstat.c2', 'kernel.vmstat.c3', 'kernel.vmstat.c4', 'kernel.vmstat.c5']);
    expect(g[4].series).toEqual(['kernel.vmstat.c12']);
    expect(g.map((x) => x.unit)).toEqual(['bytes', 'pct', 'count', 'count', 'count']);
    expect(kernelUnit('kernel.meminfo.HugePages_Total')).toBe('count');
    const mem = kernelGroups(['kernel.meminfo.Cached', 'kernel.meminfo.HugePages_Total', 'kernel.meminfo.MemFree']);
    expect(mem.map((x) => [x.key, x.unit, x.series.length])).toEqual([
      ['kernel.meminfo#0', 'bytes', 2],
      ['kernel.meminfo#1.0', 'count', 1],
    ]);
    expect(kernelUnit('kernel.stat.cpu1.iowait')).toBe('pct');
  });
});
