//! Sampling the running process itself for `sample_process()`: resident memory, CPU use and
//! the number of tasks.
//!
//! On Linux this reads `/proc/self/stat`, `/proc/self/status` and `/proc/uptime`; the parsing
//! is kept apart from the reads so it is tested on captured text. CPU is measured between two
//! calls (the first call averages over the process's lifetime). Clock ticks are assumed to be
//! 100 per second, the value of `USER_HZ` on every Linux architecture we target. Elsewhere
//! sampling returns `None`.

use std::time::Instant;

/// What one call to [`crate::DashboardHandle::sample_process`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessSample {
    /// Resident memory in MB.
    pub memory_mb: u64,
    /// CPU in percent of one core since the previous sample.
    pub cpu_percent: f64,
    /// Alive tokio tasks when called inside a tokio runtime, else OS threads.
    pub tasks: u64,
    /// OS threads of the process.
    pub threads: u64,
}

const TICKS_PER_SEC: f64 = 100.0;

/// The previous CPU reading, to turn cumulative ticks into a percentage.
#[derive(Default)]
pub(crate) struct CpuTracker {
    last: Option<(Instant, u64)>,
}

/// Fields of `/proc/self/stat` we use.
#[derive(Debug, PartialEq)]
pub(crate) struct Stat {
    pub cpu_ticks: u64,
    pub threads: u64,
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        cpu_ticks: num(14)? + num(15)?,
        threads: num(20)?,
        start_ticks: num(22)?,
    })
}

/// Parses the `VmRSS:` line of `/proc/<pid>/status`, in kB.
pub(crate) fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU percent from a tick delta over a wall-clock interval.
pub(crate) fn cpu_percent(ticks: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        ticks as f64 / TICKS_PER_SEC / secs * 100.0
    }
}

impl CpuTracker {
    pub(crate) fn sample(&mut self) -> Option<ProcessSample> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let rss_kb = parse_rss_kb(&std::fs::read_to_string("/proc/self/status").ok()?)?;
        let now = Instant::now();
        let cpu = match self.last {
            Some((at, ticks)) => cpu_percent(
                stat.cpu_ticks.saturating_sub(ticks),
                now.duration_since(at).as_secs_f64(),
            ),
            None => {
                let uptime: f64 = std::fs::read_to_string("/proc/uptime")
                    .ok()
                    .and_then(|u| u.split_whitespace().next().and_then(|v| v.parse().ok()))
                    .unwrap_or(0.0);
                cpu_percent(
                    stat.cpu_ticks,
                    uptime - stat.start_ticks as f64 / TICKS_PER_SEC,
                )
            }
        };
        self.last = Some((now, stat.cpu_ticks));
        let tasks = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_alive_tasks() as u64)
            .unwrap_or(stat.threads);
        Some(ProcessSample {
            memory_mb: rss_kb / 1024,
            cpu_percent: cpu,
            tasks,
            threads: stat.threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a real process whose name holds a space and a parenthesis.
    const STAT: &str = "4242 (my (app) x) S 1 4242 4242 0 -1 4194560 2417 0 0 0 150 50 0 0 20 0 7 0 123456 \
                        1234567 890 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let s = parse_stat(STAT);
        assert_eq!(
            s,
            Some(Stat {
                cpu_ticks: 200,
                threads: 7,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tapp\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t7\n";
        assert_eq!(parse_rss_kb(status), Some(5120));
        assert_eq!(parse_rss_kb("Name: x\n"), None);
    }

    #[test]
    fn cpu_percent_is_of_one_core() {
        assert_eq!(cpu_percent(50, 1.0), 50.0);
        assert_eq!(cpu_percent(400, 2.0), 200.0);
        assert_eq!(cpu_percent(10, 0.0), 0.0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sampling_this_process_works() {
        let mut t = CpuTracker::default();
        let s = t.sample();
        assert!(
            s.is_some_and(|s| s.memory_mb > 0 && s.threads >= 1),
            "{s:?}"
        );
        assert!(t.sample().is_some());
    }
}
