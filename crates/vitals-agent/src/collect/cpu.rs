//! CPU busy percentages from `/proc/stat`.
//!
//! `/proc/stat` holds cumulative jiffies per state (`user nice system idle iowait irq softirq
//! steal guest guest_nice`) for all CPUs (`cpu`) and each online core (`cpuN`). A percentage is
//! only meaningful between two readings, so [`parse`] (text -> counters) and [`compute`] (two
//! readings -> percentages) are pure and tested on captured fixtures; the reader is one line.
//!
//! Invariants: busy = everything but `idle` and `iowait`; `guest` is already inside `user` so it
//! is not added again; every percentage is clamped to 0..=100; a counter that went backwards
//! (CPU hot-plug, VM restore) gives 0 rather than a negative or huge value.

use vitals_proto::sample::Cpu;

/// Cumulative jiffies of one CPU line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl Times {
    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// One reading of `/proc/stat`: the aggregate line and each core by its number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    pub total: Times,
    /// `(core number, times)` in file order.
    pub cores: Vec<(u32, Times)>,
}

/// Parses the `cpu` lines of `/proc/stat`. Other lines are ignored.
pub fn parse(text: &str) -> Option<Reading> {
    let mut out = Reading::default();
    let mut seen_total = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut it = rest.split_ascii_whitespace();
        let label = if rest.starts_with(' ') {
            ""
        } else {
            it.next()?
        };
        let mut n = [0u64; 8];
        for slot in n.iter_mut() {
            // Old kernels lack the later columns: missing ones stay 0.
            *slot = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
        let t = Times {
            user: n[0],
            nice: n[1],
            system: n[2],
            idle: n[3],
            iowait: n[4],
            irq: n[5],
            softirq: n[6],
            steal: n[7],
        };
        if label.is_empty() {
            out.total = t;
            seen_total = true;
        } else if let Ok(id) = label.parse::<u32>() {
            out.cores.push((id, t));
        }
    }
    seen_total.then_some(out)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 / whole as f64 * 100.0).clamp(0.0, 100.0)
}

/// Busy percentage of one CPU line between two readings.
pub fn busy(prev: &Times, cur: &Times) -> f64 {
    let total = cur.total().saturating_sub(prev.total());
    let idle = (cur.idle + cur.iowait).saturating_sub(prev.idle + prev.iowait);
    pct(total.saturating_sub(idle), total)
}

/// Percentages between two readings: total busy with its user/system/iowait/steal split, and
/// busy per core (a core missing from either reading is reported as 0).
pub fn compute(prev: &Reading, cur: &Reading) -> Cpu {
    let (p, c) = (&prev.total, &cur.total);
    let total = c.total().saturating_sub(p.total());
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let per_core = cur
        .cores
        .iter()
        .map(|(id, t)| {
            prev.cores
                .iter()
                .find(|(pid, _)| pid == id)
                .map_or(0.0, |(_, pt)| busy(pt, t))
        })
        .collect();
    Cpu {
        total: busy(p, c),
        per_core,
        user: Some(pct(d(p.user + p.nice, c.user + c.nice), total)),
        system: Some(pct(
            d(p.system + p.irq + p.softirq, c.system + c.irq + c.softirq),
            total,
        )),
        iowait: Some(pct(d(p.iowait, c.iowait), total)),
        steal: Some(pct(d(p.steal, c.steal), total)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = include_str!("../../tests/fixtures/proc_stat_a");
    const B: &str = include_str!("../../tests/fixtures/proc_stat_b");

    #[test]
    fn parses_total_and_cores() {
        let r = parse(A).expect("parses");
        assert_eq!(r.cores.len(), 2);
        assert_eq!(r.total.user, 11014);
        assert_eq!(r.total.steal, 2669);
        assert_eq!(r.cores[1].0, 1);
        assert_eq!(r.cores[1].1.idle, 27723);
    }

    #[test]
    fn percentages_between_captured_readings() {
        let (a, b) = (parse(A).expect("a"), parse(B).expect("b"));
        let cpu = compute(&a, &b);
        // Fixture deltas: total 200 jiffies = user 60 + system 30 + idle 90 + iowait 10 + steal 10.
        assert!((cpu.total - 50.0).abs() < 1e-9, "{}", cpu.total);
        assert_eq!(cpu.user, Some(30.0));
        assert_eq!(cpu.system, Some(15.0));
        assert_eq!(cpu.iowait, Some(5.0));
        assert_eq!(cpu.steal, Some(5.0));
        // Core 0: 100 jiffies with 20 idle -> 80 %; core 1: 100 with 80 idle -> 20 %.
        assert_eq!(cpu.per_core, vec![80.0, 20.0]);
    }

    #[test]
    fn counters_going_backwards_give_zero_not_garbage() {
        let (a, b) = (parse(A).expect("a"), parse(B).expect("b"));
        let cpu = compute(&b, &a);
        assert_eq!(cpu.total, 0.0);
        assert!(cpu.per_core.iter().all(|v| (0.0..=100.0).contains(v)));
    }

    #[test]
    fn rejects_text_without_a_cpu_line() {
        assert_eq!(parse("intr 1 2 3\n"), None);
    }
}
