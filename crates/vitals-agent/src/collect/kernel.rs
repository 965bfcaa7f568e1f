//! Kernel statistics beyond the headline metrics: the counters and gauges a kernel already
//! keeps, read every interval and sent as the sample's `kernel` map (series `kernel.NAME`).
//!
//! Sources and names (the kernel's own field names, prefixed by their file):
//! - `vmstat.*` from `/proc/vmstat`: `nr_*` are gauges (pages), everything else is an event
//!   counter (page faults, reclaim, swap-ins, OOM kills, ...);
//! - `meminfo.*` from `/proc/meminfo`: gauges in bytes (`HugePages_*` counts stay counts);
//! - `snmp.PROTO.FIELD` from `/proc/net/snmp` and `netstat.PROTO.FIELD` from
//!   `/proc/net/netstat` (IP, ICMP, TCP, UDP and the extended TCP/IP counters);
//! - `psi.RESOURCE.some|full.avg10|avg60|avg300` (the kernel's averages, percent) and
//!   `.stall_pct` (percent of the interval stalled, from the `total` microsecond counter) from
//!   `/proc/pressure/*`;
//! - `stat.ctxt`, `stat.intr`, `stat.forks`, `stat.softirq` (counters), `stat.procs_running`,
//!   `stat.procs_blocked` (gauges) and `stat.cpuN.MODE` / `stat.cpu.MODE`: percent of each
//!   core's (or all cores') time in user, nice, system, idle, iowait, irq, softirq, steal;
//! - `softirq.TYPE` from `/proc/softirqs` (summed over CPUs, counter);
//! - `sockstat.PROTO.FIELD` from `/proc/net/sockstat` (gauges: sockets in use, orphans,
//!   TIME_WAIT, memory pages);
//! - `fs.files_open`, `fs.files_max` from `/proc/sys/fs/file-nr`.
//!
//! Counters are sent as per-second rates (see [`super::rate`]); gauges as read. Names keep
//! only ASCII letters, digits, `_` and `.` (`Active(anon)` becomes `Active_anon`), which is
//! what the hub accepts. A file that is missing (an old kernel, no PSI) contributes nothing.
//!
//! Parsing is pure (the `parse_*` functions take the text); [`compute`] turns two readings into
//! the map that is sent. The collector keeps two readings and refills the older one each
//! interval ([`Reading::refill`]), so steady state allocates only the map's nodes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::rate::per_sec;

/// One reading: gauges as they are, counters still cumulative. Kept and refilled every
/// interval: a name that is the same as last time (almost all of them) is not allocated again.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub gauges: Vec<(Arc<str>, f64)>,
    pub counters: Vec<(Arc<str>, u64)>,
    pub cpu_modes: Vec<CpuModes>,
    fill: [usize; 3],
    scratch: String,
    /// When the reading was taken: rates divide by the time between two readings.
    pub at: Option<std::time::Instant>,
}

/// One `cpu` line of `/proc/stat`.
#[derive(Debug, Clone)]
pub struct CpuModes {
    pub cpu: Arc<str>,
    /// `stat.CPU.MODE` for each of [`MODES`].
    pub keys: [Arc<str>; 8],
    /// Clock ticks in each of [`MODES`].
    pub ticks: [u64; 8],
}

/// The files read, relative to the filesystem root, each with its parser.
pub const SOURCES: [(&str, Parser); 11] = [
    ("proc/vmstat", parse_vmstat),
    ("proc/meminfo", parse_meminfo),
    ("proc/net/snmp", parse_snmp),
    ("proc/net/netstat", parse_netstat),
    ("proc/pressure/cpu", parse_psi_cpu),
    ("proc/pressure/memory", parse_psi_memory),
    ("proc/pressure/io", parse_psi_io),
    ("proc/stat", parse_stat),
    ("proc/softirqs", parse_softirqs),
    ("proc/net/sockstat", parse_sockstat),
    ("proc/sys/fs/file-nr", parse_file_nr),
];

/// A parser of one source file into a reading.
pub type Parser = fn(&str, &mut Reading);

/// The CPU modes of `/proc/stat`, in its column order.
pub const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Writes a series name from parts into `out`, keeping only the characters the hub accepts.
fn key_into(out: &mut String, parts: &[&str]) {
    out.clear();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            out.push_str(p);
            continue;
        }
        for c in p.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => out.push(c),
                '(' | '-' | ' ' | '/' => out.push('_'),
                _ => {}
            }
        }
    }
}

/// Sets the next entry of `list` (at `*at`) to `(name of parts, v)`, reusing the name there
/// when it is the same.
fn put<T>(
    list: &mut Vec<(Arc<str>, T)>,
    at: &mut usize,
    scratch: &mut String,
    parts: &[&str],
    v: T,
) {
    key_into(scratch, parts);
    match list.get_mut(*at) {
        Some(e) if *e.0 == **scratch => e.1 = v,
        Some(e) => *e = (Arc::from(scratch.as_str()), v),
        None => list.push((Arc::from(scratch.as_str()), v)),
    }
    *at += 1;
}

impl Reading {
    fn gauge(&mut self, parts: &[&str], v: f64) {
        put(
            &mut self.gauges,
            &mut self.fill[0],
            &mut self.scratch,
            parts,
            v,
        );
    }

    fn counter(&mut self, parts: &[&str], v: u64) {
        put(
            &mut self.counters,
            &mut self.fill[1],
            &mut self.scratch,
            parts,
            v,
        );
    }

    fn modes(&mut self, cpu: &str, ticks: [u64; 8]) {
        let at = self.fill[2];
        self.fill[2] += 1;
        if let Some(m) = self.cpu_modes.get_mut(at)
            && *m.cpu == *cpu
        {
            m.ticks = ticks;
            return;
        }
        let keys = MODES.map(|mode| {
            key_into(&mut self.scratch, &["stat", cpu, mode]);
            Arc::from(self.scratch.as_str())
        });
        let m = CpuModes {
            cpu: Arc::from(cpu),
            keys,
            ticks,
        };
        match self.cpu_modes.get_mut(at) {
            Some(e) => *e = m,
            None => self.cpu_modes.push(m),
        }
    }

    /// Refills the reading from every source that `read` returns text for (missing files are
    /// skipped). Text the caller already holds is lent, not copied.
    pub fn refill<'t>(&mut self, mut read: impl FnMut(&str) -> Option<Cow<'t, str>>) {
        self.fill = [0; 3];
        self.at = Some(std::time::Instant::now());
        for (path, parse) in SOURCES {
            if let Some(text) = read(path) {
                parse(&text, self);
            }
        }
        self.gauges.truncate(self.fill[0]);
        self.counters.truncate(self.fill[1]);
        self.cpu_modes.truncate(self.fill[2]);
    }

    /// A new reading of every source.
    pub fn read(mut read: impl FnMut(&str) -> Option<String>) -> Reading {
        let mut r = Reading::default();
        r.refill(|p| read(p).map(Cow::Owned));
        r
    }
}

/// Whether a `/proc/vmstat` field is a gauge: the `nr_*` page counts, except the `nr_*` fields
/// that count events (pages dirtied, written, ...), plus `workingset_nodes`.
fn vmstat_is_gauge(name: &str) -> bool {
    const NR_EVENTS: [&str; 7] = [
        "nr_dirtied",
        "nr_written",
        "nr_throttled_written",
        "nr_vmscan_write",
        "nr_vmscan_immediate_reclaim",
        "nr_foll_pin_acquired",
        "nr_foll_pin_released",
    ];
    (name.starts_with("nr_") && !NR_EVENTS.contains(&name) && !name.starts_with("nr_tlb_"))
        || name == "workingset_nodes"
}

/// `/proc/vmstat`: `name value` lines.
pub fn parse_vmstat(text: &str, r: &mut Reading) {
    for l in text.lines() {
        let mut it = l.split_ascii_whitespace();
        let (Some(name), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        if vmstat_is_gauge(name) {
            r.gauge(&["vmstat", name], v as f64);
        } else {
            r.counter(&["vmstat", name], v);
        }
    }
}

/// `/proc/meminfo`: `Name:   123 kB` lines, in bytes.
pub fn parse_meminfo(text: &str, r: &mut Reading) {
    for l in text.lines() {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let mut it = rest.split_ascii_whitespace();
        let Some(Ok(v)) = it.next().map(str::parse::<f64>) else {
            continue;
        };
        let v = if it.next() == Some("kB") {
            v * 1024.0
        } else {
            v
        };
        r.gauge(&["meminfo", name], v);
    }
}

/// Pairs of `Proto: Field Field ...` / `Proto: 1 2 ...` lines (`/proc/net/snmp`, `netstat`).
fn parse_pairs(prefix: &str, text: &str, r: &mut Reading, gauge: impl Fn(&str, &str) -> bool) {
    let mut lines = text.lines().peekable();
    while let Some(head) = lines.next() {
        // A header and its values share the protocol name; a line without its partner is
        // skipped alone, so the pairs after it still line up.
        let Some((proto, names)) = head.split_once(':') else {
            continue;
        };
        let Some((_, values)) = lines
            .peek()
            .and_then(|v| v.split_once(':'))
            .filter(|(p, _)| *p == proto)
        else {
            continue;
        };
        lines.next();
        for (n, v) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            // Some fields (Tcp MaxConn) are -1 for "no limit": not a counter, skipped.
            let Ok(v) = v.parse::<u64>() else { continue };
            if gauge(proto, n) {
                r.gauge(&[prefix, proto, n], v as f64);
            } else {
                r.counter(&[prefix, proto, n], v);
            }
        }
    }
}

/// `/proc/net/snmp`. Settings and current counts are gauges; the rest are event counters.
pub fn parse_snmp(text: &str, r: &mut Reading) {
    parse_pairs("snmp", text, r, |proto, n| {
        matches!(
            (proto, n),
            ("Ip", "Forwarding" | "DefaultTTL")
                | (
                    "Tcp",
                    "RtoAlgorithm" | "RtoMin" | "RtoMax" | "MaxConn" | "CurrEstab"
                )
        )
    });
}

/// `/proc/net/netstat`: extended TCP and IP counters (all counters).
pub fn parse_netstat(text: &str, r: &mut Reading) {
    parse_pairs("netstat", text, r, |_, _| false);
}

fn parse_psi(resource: &str, text: &str, r: &mut Reading) {
    for l in text.lines() {
        let mut it = l.split_ascii_whitespace();
        let Some(kind @ ("some" | "full")) = it.next() else {
            continue;
        };
        for field in it {
            let Some((name, v)) = field.split_once('=') else {
                continue;
            };
            if name == "total" {
                // Microseconds stalled: [`compute`] turns its rate into a percent.
                if let Ok(v) = v.parse::<u64>() {
                    r.counter(&["psi", resource, kind, STALL], v);
                }
            } else if let Ok(v) = v.parse::<f64>() {
                r.gauge(&["psi", resource, kind, name], v);
            }
        }
    }
}

/// The last name part of the counter made of PSI's `total` (microseconds stalled).
const STALL: &str = "stall_pct";

/// `/proc/pressure/cpu`.
pub fn parse_psi_cpu(text: &str, r: &mut Reading) {
    parse_psi("cpu", text, r)
}

/// `/proc/pressure/memory`.
pub fn parse_psi_memory(text: &str, r: &mut Reading) {
    parse_psi("memory", text, r)
}

/// `/proc/pressure/io`.
pub fn parse_psi_io(text: &str, r: &mut Reading) {
    parse_psi("io", text, r)
}

/// `/proc/stat`: per-CPU mode ticks, context switches, interrupts, forks, run queue.
pub fn parse_stat(text: &str, r: &mut Reading) {
    for l in text.lines() {
        let mut it = l.split_ascii_whitespace();
        let Some(name) = it.next() else { continue };
        if name.starts_with("cpu") {
            let mut ticks = [0u64; 8];
            for t in ticks.iter_mut() {
                *t = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
            r.modes(name, ticks);
            continue;
        }
        let Some(Ok(v)) = it.next().map(str::parse::<u64>) else {
            continue;
        };
        match name {
            "ctxt" | "intr" | "softirq" => r.counter(&["stat", name], v),
            "processes" => r.counter(&["stat", "forks"], v),
            "procs_running" | "procs_blocked" => r.gauge(&["stat", name], v as f64),
            _ => {}
        }
    }
}

/// `/proc/softirqs`: a header of CPUs, then `TYPE: n n ...` per softirq type.
pub fn parse_softirqs(text: &str, r: &mut Reading) {
    for l in text.lines().skip(1) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let sum = rest
            .split_ascii_whitespace()
            .filter_map(|v| v.parse::<u64>().ok())
            .fold(0u64, u64::wrapping_add);
        r.counter(&["softirq", name.trim()], sum);
    }
}

/// `/proc/net/sockstat`: `TCP: inuse 3 orphan 0 tw 1 alloc 4 mem 1`.
pub fn parse_sockstat(text: &str, r: &mut Reading) {
    for l in text.lines() {
        let Some((proto, rest)) = l.split_once(':') else {
            continue;
        };
        let mut it = rest.split_ascii_whitespace();
        while let (Some(field), Some(v)) = (it.next(), it.next()) {
            if let Ok(v) = v.parse::<f64>() {
                r.gauge(&["sockstat", proto, field], v);
            }
        }
    }
}

/// `/proc/sys/fs/file-nr`: allocated, free (always 0 since 2.6), maximum.
pub fn parse_file_nr(text: &str, r: &mut Reading) {
    let mut it = text.split_ascii_whitespace().map(str::parse::<f64>);
    if let (Some(Ok(open)), Some(Ok(_)), Some(Ok(max))) = (it.next(), it.next(), it.next()) {
        r.gauge(&["fs", "files_open"], open);
        r.gauge(&["fs", "files_max"], max);
    }
}

/// Per-CPU mode series are sent for at most this many CPUs (8 series each); bigger machines
/// get the all-CPU modes only, so the map stays well within the hub's 4,096 entries.
pub const MAX_CPUS_WITH_MODES: usize = 128;

/// The rate divisor of two readings: the time between them, or `fallback` seconds when
/// either has no time (readings built by hand in tests).
pub fn elapsed(prev: &Reading, cur: &Reading, fallback: f64) -> f64 {
    match (prev.at, cur.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => fallback,
    }
}

/// The map sent to the hub: gauges of `cur`, rates of its counters since `prev` over `secs`,
/// CPU mode percentages. Never more than [`vitals_proto::limits::MAX_KERNEL_STATS`] entries. A counter missing from `prev` (new, or the first reading) is left
/// out of this interval rather than reported as a burst. Names are shared with the readings,
/// not copied.
pub fn compute(prev: &Reading, cur: &Reading, secs: f64) -> BTreeMap<Arc<str>, f64> {
    let mut out: BTreeMap<Arc<str>, f64> = cur
        .gauges
        .iter()
        .filter(|(_, v)| v.is_finite() && *v >= 0.0)
        .cloned()
        .collect();
    let mut prev_at: Option<std::collections::HashMap<&str, u64>> = None;
    for (i, (name, v)) in cur.counters.iter().enumerate() {
        // The files keep their order, so the same index almost always holds the same name.
        let p = match prev.counters.get(i) {
            Some((n, p)) if n == name => Some(*p),
            _ => prev_at
                .get_or_insert_with(|| prev.counters.iter().map(|(n, v)| (&**n, *v)).collect())
                .get(&**name)
                .copied(),
        };
        let Some(p) = p else { continue };
        let rate = per_sec(p, *v, secs);
        let value = if name.ends_with(STALL) {
            // Microseconds stalled per second, as a percent of the interval.
            (rate / 1e4).min(100.0)
        } else {
            rate
        };
        out.insert(Arc::clone(name), value);
    }
    let per_cpu = cur.cpu_modes.len() <= MAX_CPUS_WITH_MODES + 1;
    for m in &cur.cpu_modes {
        if !per_cpu && &*m.cpu != "cpu" {
            continue;
        }
        let Some(before) = prev.cpu_modes.iter().find(|p| p.cpu == m.cpu) else {
            continue;
        };
        let mut d = [0u64; 8];
        for (i, x) in d.iter_mut().enumerate() {
            *x = m.ticks[i].saturating_sub(before.ticks[i]);
        }
        let all: u64 = d.iter().sum();
        if all == 0 {
            continue;
        }
        for (k, dt) in m.keys.iter().zip(d) {
            out.insert(Arc::clone(k), (dt as f64 * 100.0 / all as f64).min(100.0));
        }
    }
    // A kernel with far more statistics than any seen so far: send what fits, never a
    // sample the hub must refuse.
    while out.len() > vitals_proto::limits::MAX_KERNEL_STATS {
        out.pop_last();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges(r: &Reading) -> Vec<(String, f64)> {
        r.gauges.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn counters(r: &Reading) -> Vec<(String, u64)> {
        r.counters
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn vmstat_gauges_and_counters() {
        let mut r = Reading::default();
        parse_vmstat(
            "nr_free_pages 1000\npgfault 500\noom_kill 0\nbad line\n",
            &mut r,
        );
        assert_eq!(gauges(&r), vec![("vmstat.nr_free_pages".into(), 1000.0)]);
        assert_eq!(
            r.counters,
            vec![
                ("vmstat.pgfault".into(), 500),
                ("vmstat.oom_kill".into(), 0)
            ]
        );
    }

    #[test]
    fn meminfo_in_bytes_with_clean_names() {
        let mut r = Reading::default();
        parse_meminfo(
            "MemTotal:  100 kB\nActive(anon):  2 kB\nHugePages_Total:   4\n",
            &mut r,
        );
        assert_eq!(
            gauges(&r),
            vec![
                ("meminfo.MemTotal".into(), 102400.0),
                ("meminfo.Active_anon".into(), 2048.0),
                ("meminfo.HugePages_Total".into(), 4.0),
            ]
        );
    }

    #[test]
    fn snmp_pairs_gauges_counters_and_negative_settings() {
        let text = "Tcp: RtoAlgorithm MaxConn ActiveOpens CurrEstab\nTcp: 1 -1 40 3\n\
                    Udp: InDatagrams\nUdp: 7\n";
        let mut r = Reading::default();
        parse_snmp(text, &mut r);
        assert_eq!(
            gauges(&r),
            vec![
                ("snmp.Tcp.RtoAlgorithm".into(), 1.0),
                ("snmp.Tcp.CurrEstab".into(), 3.0),
            ]
        );
        assert_eq!(
            counters(&r),
            vec![
                ("snmp.Tcp.ActiveOpens".into(), 40),
                ("snmp.Udp.InDatagrams".into(), 7)
            ]
        );
    }

    #[test]
    fn vmstat_event_counters_named_nr_are_counters() {
        let mut r = Reading::default();
        parse_vmstat(
            "nr_dirty 5\nnr_dirtied 100\nnr_tlb_remote_flush 3\nworkingset_nodes 7\n",
            &mut r,
        );
        assert_eq!(
            gauges(&r),
            vec![
                ("vmstat.nr_dirty".into(), 5.0),
                ("vmstat.workingset_nodes".into(), 7.0)
            ]
        );
        assert_eq!(
            counters(&r),
            vec![
                ("vmstat.nr_dirtied".into(), 100),
                ("vmstat.nr_tlb_remote_flush".into(), 3)
            ]
        );
    }

    #[test]
    fn an_unpaired_snmp_line_does_not_shift_the_rest() {
        let mut r = Reading::default();
        parse_snmp(
            "Ip: Forwarding\nStray: line\nTcp: ActiveOpens\nTcp: 4\nUdp: InErrors\nUdp: 2\n",
            &mut r,
        );
        assert_eq!(
            counters(&r),
            vec![
                ("snmp.Tcp.ActiveOpens".into(), 4),
                ("snmp.Udp.InErrors".into(), 2)
            ]
        );
    }

    /// Huge machines send all-CPU modes only, and the map never passes the hub's limit.
    #[test]
    fn many_cpus_stay_within_the_hub_limit() {
        let line = |i: usize, t: u64| format!("cpu{i} {t} 0 {t} {t} 0 0 0 0\n");
        let text = |t: u64| -> String {
            let mut s = format!("cpu {t} 0 {t} {t} 0 0 0 0\n");
            for i in 0..1024 {
                s.push_str(&line(i, t));
            }
            s
        };
        let (mut a, mut b) = (Reading::default(), Reading::default());
        parse_stat(&text(10), &mut a);
        parse_stat(&text(20), &mut b);
        let m = compute(&a, &b, 1.0);
        assert_eq!(m.len(), 8, "{:?}", m.keys().take(10).collect::<Vec<_>>());
        assert!(m.contains_key("stat.cpu.user"));
        let huge = Reading {
            gauges: (0..5000)
                .map(|i| (format!("g{i:05}").into(), 1.0))
                .collect(),
            ..Reading::default()
        };
        assert_eq!(
            compute(&Reading::default(), &huge, 1.0).len(),
            vitals_proto::limits::MAX_KERNEL_STATS
        );
    }

    #[test]
    fn psi_averages_and_stall_percent() {
        let a = "some avg10=1.50 avg60=0.00 avg300=0.00 total=1000000\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let b = "some avg10=1.50 avg60=0.00 avg300=0.00 total=1250000\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let (mut ra, mut rb) = (Reading::default(), Reading::default());
        parse_psi_io(a, &mut ra);
        parse_psi_io(b, &mut rb);
        let m = compute(&ra, &rb, 1.0);
        assert_eq!(m["psi.io.some.avg10"], 1.5);
        // 250 ms stalled in one second.
        assert_eq!(m["psi.io.some.stall_pct"], 25.0);
        assert_eq!(m["psi.io.full.stall_pct"], 0.0);
        assert!(!m.contains_key("psi.io.some.total"));
    }

    /// A refilled reading reuses its names, drops what disappeared and takes in what is new.
    #[test]
    fn refill_reuses_names_and_follows_changes() {
        let mut r = Reading::default();
        r.refill(|p| (p == "proc/vmstat").then(|| "nr_a 1\npgfault 5\npgmajfault 1\n".into()));
        let before = Arc::clone(&r.counters[0].0);
        r.refill(|p| (p == "proc/vmstat").then(|| "nr_a 2\npgfault 9\n".into()));
        assert!(
            Arc::ptr_eq(&before, &r.counters[0].0),
            "the same name is not allocated again"
        );
        assert_eq!(counters(&r), vec![("vmstat.pgfault".into(), 9)]);
        r.refill(|p| (p == "proc/vmstat").then(|| "nr_a 2\nnew_one 1\npgfault 10\n".into()));
        assert_eq!(
            counters(&r),
            vec![("vmstat.new_one".into(), 1), ("vmstat.pgfault".into(), 10)]
        );
        assert_eq!(gauges(&r), vec![("vmstat.nr_a".into(), 2.0)]);
    }

    #[test]
    fn stat_modes_are_percent_of_each_core() {
        let (mut a, mut b) = (Reading::default(), Reading::default());
        parse_stat(&fixture("proc_stat_a"), &mut a);
        parse_stat(&fixture("proc_stat_b"), &mut b);
        let m = compute(&a, &b, 1.0);
        for cpu in ["cpu", "cpu0"] {
            let sum: f64 = MODES
                .iter()
                .map(|md| m[format!("stat.{cpu}.{md}").as_str()])
                .sum();
            assert!((sum - 100.0).abs() < 1e-9, "{cpu}: {sum}");
        }
        assert!(m.contains_key("stat.ctxt"));
        assert!(m.contains_key("stat.forks"));
        assert!(m.contains_key("stat.procs_running"));
    }

    #[test]
    fn counters_become_rates_and_new_counters_wait_a_round() {
        let prev = Reading {
            counters: vec![("a".into(), 10), ("b".into(), 100)],
            ..Reading::default()
        };
        let cur = Reading {
            counters: vec![("new".into(), 5), ("a".into(), 30), ("b".into(), 50)],
            ..Reading::default()
        };
        let m = compute(&prev, &cur, 2.0);
        assert_eq!(m["a"], 10.0);
        // A counter that went backwards reads 0, never negative.
        assert_eq!(m["b"], 0.0);
        assert!(!m.contains_key("new"));
    }

    #[test]
    fn softirqs_sockstat_and_file_nr() {
        let mut r = Reading::default();
        parse_softirqs("   CPU0 CPU1\n  HI:  1  2\n NET_RX:  10  20\n", &mut r);
        parse_sockstat(
            "sockets: used 5\nTCP: inuse 3 orphan 0 tw 1 alloc 4 mem 1\n",
            &mut r,
        );
        parse_file_nr("1024\t0\t9223372036854775807\n", &mut r);
        assert_eq!(
            counters(&r),
            vec![("softirq.HI".into(), 3), ("softirq.NET_RX".into(), 30)]
        );
        let g = gauges(&r);
        assert!(g.contains(&("sockstat.TCP.tw".into(), 1.0)));
        assert!(g.contains(&("sockstat.sockets.used".into(), 5.0)));
        assert!(g.contains(&("fs.files_open".into(), 1024.0)));
    }

    #[test]
    fn this_hosts_kernel_gives_hundreds_of_valid_names() {
        let read = |p: &str| std::fs::read_to_string(std::path::Path::new("/").join(p)).ok();
        let a = Reading::read(read);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = Reading::read(read);
        let m = compute(&a, &b, 0.05);
        if std::fs::metadata("/proc/vmstat").is_err() {
            eprintln!("skipped: no /proc/vmstat on this machine");
            return;
        }
        assert!(m.len() > 300, "only {} kernel values", m.len());
        for (k, v) in &m {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
                "{k}"
            );
            assert!(v.is_finite() && *v >= 0.0, "{k} = {v}");
        }
        // Cross-check one gauge against an independent read of the same file.
        let total_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))?
                    .split_ascii_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        assert_eq!(m["meminfo.MemTotal"], total_kb * 1024.0);
    }
}
