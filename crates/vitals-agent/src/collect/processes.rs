//! Top processes by CPU and by memory (seed 002's `processes`), from `/proc/<pid>/stat`.
//!
//! CPU % is of one core, over the time since the previous call (the first call uses each
//! process's lifetime average, so it is never empty). `rss` is bytes. Only the top entries
//! get their owner's name looked up (`/proc/<pid>` owner uid -> `/etc/passwd`), so a call costs
//! one small read per process plus a handful of extra ones.
//!
//! `/proc/<pid>/stat` has the command name in parentheses and the name may itself contain
//! spaces and parentheses: fields are counted from the last `)`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vitals_proto::state::{ProcessInfo, Processes};

/// How many processes each list keeps.
pub const TOP_N: usize = 10;

/// The fields of `/proc/<pid>/stat` this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub name: String,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

/// Parses one `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let name = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    let n = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        pid,
        name,
        ticks: n(14)? + n(15)?,
        start_ticks: n(22)?,
        rss_pages: n(24)?,
    })
}

/// A process with its CPU % and RSS computed, before user lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub pid: u32,
    pub name: String,
    pub cpu: f64,
    pub rss: f64,
}

/// CPU % of one process: over `elapsed` seconds since `prev_ticks`, or over its lifetime
/// (`uptime_secs` since boot) when there is no previous reading.
pub fn cpu_percent(
    s: &Stat,
    prev_ticks: Option<u64>,
    elapsed: f64,
    uptime_secs: f64,
    hz: f64,
) -> f64 {
    let v = match prev_ticks {
        Some(p) if elapsed > 0.0 => s.ticks.saturating_sub(p) as f64 / hz / elapsed * 100.0,
        _ => {
            let age = uptime_secs - s.start_ticks as f64 / hz;
            if age > 0.0 {
                s.ticks as f64 / hz / age * 100.0
            } else {
                0.0
            }
        }
    };
    if v.is_finite() { v.max(0.0) } else { 0.0 }
}

/// The `n` largest by a key, descending, ties broken by pid for a stable order.
pub fn top_by(list: &[Usage], n: usize, key: impl Fn(&Usage) -> f64) -> Vec<Usage> {
    let mut v: Vec<&Usage> = list.iter().collect();
    v.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
    v.into_iter().take(n).cloned().collect()
}

/// Keeps the previous tick counts between calls.
#[derive(Debug)]
pub struct ProcessCollector {
    proc_dir: PathBuf,
    passwd: PathBuf,
    hz: f64,
    page_size: f64,
    prev: HashMap<u32, u64>,
    prev_at: Option<Instant>,
    users: HashMap<u32, String>,
}

impl ProcessCollector {
    pub fn new(proc_dir: PathBuf, passwd: PathBuf) -> Self {
        use nix::unistd::{SysconfVar, sysconf};
        let hz = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|v| *v > 0)
            .map_or(100.0, |v| v as f64);
        let page_size = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|v| *v > 0)
            .map_or(4096.0, |v| v as f64);
        ProcessCollector {
            proc_dir,
            passwd,
            hz,
            page_size,
            prev: HashMap::new(),
            prev_at: None,
            users: HashMap::new(),
        }
    }

    /// Reads every process and returns the top lists.
    pub fn collect(&mut self) -> std::io::Result<Processes> {
        let now = Instant::now();
        let elapsed = self
            .prev_at
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let uptime = std::fs::read_to_string(self.proc_dir.join("uptime"))
            .ok()
            .and_then(|t| super::system::parse_uptime(&t))
            .unwrap_or(0.0);
        let mut usages = Vec::new();
        let mut next = HashMap::new();
        for entry in std::fs::read_dir(&self.proc_dir)? {
            let Ok(entry) = entry else { continue };
            let fname = entry.file_name();
            let Some(pid) = fname.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // A process may exit between readdir and read: skip it silently.
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(s) = parse_stat(&text) else { continue };
            let prev = if self.prev_at.is_some() {
                Some(self.prev.get(&pid).copied().unwrap_or(0))
            } else {
                None
            };
            let cpu = cpu_percent(&s, prev, elapsed, uptime, self.hz);
            next.insert(pid, s.ticks);
            usages.push(Usage {
                pid,
                name: s.name,
                cpu,
                rss: s.rss_pages as f64 * self.page_size,
            });
        }
        self.prev = next;
        self.prev_at = Some(now);
        let by_cpu = top_by(&usages, TOP_N, |u| u.cpu);
        let by_mem = top_by(&usages, TOP_N, |u| u.rss);
        Ok(Processes {
            top_processes: by_cpu.into_iter().map(|u| self.info(u)).collect(),
            top_by_memory: by_mem.into_iter().map(|u| self.info(u)).collect(),
        })
    }

    fn info(&mut self, u: Usage) -> ProcessInfo {
        let user = std::fs::metadata(self.proc_dir.join(u.pid.to_string()))
            .map(|m| self.user_name(m.uid()))
            .unwrap_or_default();
        ProcessInfo {
            pid: u.pid,
            name: u.name,
            user,
            cpu: u.cpu,
            rss: u.rss,
        }
    }

    fn user_name(&mut self, uid: u32) -> String {
        if !self.users.contains_key(&uid) {
            self.users = parse_passwd(&std::fs::read_to_string(&self.passwd).unwrap_or_default());
        }
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

/// Parses `/etc/passwd` into uid -> name.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _pw = f.next()?;
            let uid = f.next()?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// Whether `/proc` looks readable (used to decide whether to skip this collector).
pub fn available(proc_dir: &Path) -> bool {
    proc_dir.join("self/stat").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let text = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 123456789 2560 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.pid, 1234);
        assert_eq!(s.name, "my (odd) proc");
        assert_eq!(s.ticks, 300);
        assert_eq!(s.start_ticks, 1000);
        assert_eq!(s.rss_pages, 2560);
    }

    #[test]
    fn cpu_over_interval_and_over_lifetime() {
        let s = Stat {
            pid: 1,
            name: "x".into(),
            ticks: 300,
            start_ticks: 1000,
            rss_pages: 1,
        };
        // 100 ticks at 100 Hz over 2 s = 50 % of one core.
        assert_eq!(cpu_percent(&s, Some(200), 2.0, 0.0, 100.0), 50.0);
        // Lifetime: 3 s of CPU over (40 - 10) s of life = 10 %.
        assert_eq!(cpu_percent(&s, None, 0.0, 40.0, 100.0), 10.0);
    }

    #[test]
    fn top_lists_are_sorted_and_bounded() {
        let list: Vec<Usage> = (0..20)
            .map(|i| Usage {
                pid: i,
                name: format!("p{i}"),
                cpu: f64::from(i % 7),
                rss: f64::from(i),
            })
            .collect();
        let t = top_by(&list, 10, |u| u.rss);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0].pid, 19);
        let c = top_by(&list, 3, |u| u.cpu);
        assert_eq!(c.iter().map(|u| u.pid).collect::<Vec<_>>(), vec![6, 13, 5]);
    }

    #[test]
    fn live_processes_include_this_test() {
        let mut c = ProcessCollector::new("/proc".into(), "/etc/passwd".into());
        let p = c.collect().expect("reads /proc");
        assert!(!p.top_processes.is_empty());
        assert!(p.top_by_memory.len() <= TOP_N);
        assert!(
            p.top_by_memory
                .iter()
                .all(|p| p.rss >= 0.0 && !p.user.is_empty())
        );
    }

    #[test]
    fn passwd_maps_uids() {
        let m = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nbad line\nbob:x:1000:1000::/home/bob:/bin/sh\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&1000).map(String::as_str), Some("bob"));
    }
}
