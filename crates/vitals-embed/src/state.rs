//! The dashboard's shared state, written by update calls and read by the HTTP handlers, the
//! ticker and the forwarder.
//!
//! Counters are relaxed atomics (an `f64` is stored as its bits): a snapshot may mix values
//! from two concurrent update calls, which is fine for a dashboard and keeps every update call
//! free of locks. Jobs and alerts sit behind `parking_lot` mutexes held only for in-memory
//! work; anything evicted is dropped after the lock is released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::process::CpuTracker;
use crate::snapshot::{Alert, Health, History, JobInfo, JobView, Metrics, Severity, rfc3339};

/// Alerts kept; the page shows at most three of them.
pub(crate) const ALERTS_KEPT: usize = 20;
/// Longest alert message or job string kept, in bytes; longer ones are cut.
pub(crate) const MAX_TEXT_BYTES: usize = 1024;

#[derive(Default)]
struct Counters {
    jobs_active: AtomicU64,
    jobs_completed: AtomicU64,
    jobs_failed: AtomicU64,
    jobs_pending: AtomicU64,
    queue_length: AtomicU64,
    http_requests: AtomicU64,
    http_errors: AtomicU64,
    avg_response_bits: AtomicU64,
    memory_mb: AtomicU64,
    cpu_bits: AtomicU64,
    tasks: AtomicU64,
}

/// An alert as kept: formatting its time waits until someone reads it.
struct AlertRecord {
    id: u64,
    severity: Severity,
    message: String,
    at: SystemTime,
}

/// The numeric part of a snapshot, cheap to take (no locks).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Numbers {
    pub jobs_active: u64,
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub jobs_pending: u64,
    pub queue_length: u64,
    pub http_requests: u64,
    pub http_errors: u64,
    pub avg_response_time: f64,
    pub memory_usage: u64,
    pub cpu_usage: f64,
    pub tasks: u64,
    pub active_connections: u64,
    pub health: Health,
}

/// FxHash-style hasher for job ids. Ids come from the application, not from the network, so
/// hash flooding is not a concern and SipHash's cost on every `add_job` is not needed.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Jobs keyed by id, in insertion order. Sequence numbers keep order stable across updates.
#[derive(Default)]
struct JobTable {
    next_seq: u64,
    by_seq: BTreeMap<u64, JobInfo>,
    seq_of: HashMap<String, u64, BuildHasherDefault<IdHasher>>,
}

pub(crate) struct Shared {
    counters: Counters,
    health: AtomicU8,
    viewers: AtomicUsize,
    max_jobs: usize,
    history_points: usize,
    jobs: Mutex<JobTable>,
    alerts: Mutex<VecDeque<AlertRecord>>,
    next_alert_id: AtomicU64,
    history: Mutex<VecDeque<(f64, Numbers)>>,
    pub(crate) cpu: Mutex<CpuTracker>,
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Shared {
    pub(crate) fn new(max_jobs: usize, history_points: usize) -> Self {
        Shared {
            counters: Counters::default(),
            health: AtomicU8::new(Health::Healthy.as_u8()),
            viewers: AtomicUsize::new(0),
            max_jobs,
            history_points,
            jobs: Mutex::new(JobTable::default()),
            alerts: Mutex::new(VecDeque::with_capacity(ALERTS_KEPT + 1)),
            next_alert_id: AtomicU64::new(1),
            history: Mutex::new(VecDeque::with_capacity(history_points + 1)),
            cpu: Mutex::new(CpuTracker::default()),
        }
    }

    pub(crate) fn set_jobs(
        &self,
        active: u64,
        completed: u64,
        failed: u64,
        pending: u64,
        queue: u64,
    ) {
        let c = &self.counters;
        c.jobs_active.store(active, Relaxed);
        c.jobs_completed.store(completed, Relaxed);
        c.jobs_failed.store(failed, Relaxed);
        c.jobs_pending.store(pending, Relaxed);
        c.queue_length.store(queue, Relaxed);
    }

    pub(crate) fn set_system(&self, memory_mb: u64, cpu_percent: f64, tasks: u64) {
        let c = &self.counters;
        c.memory_mb.store(memory_mb, Relaxed);
        c.cpu_bits.store(cpu_percent.to_bits(), Relaxed);
        c.tasks.store(tasks, Relaxed);
    }

    pub(crate) fn set_http(&self, requests: u64, errors: u64, avg_ms: f64) {
        let c = &self.counters;
        c.http_requests.store(requests, Relaxed);
        c.http_errors.store(errors, Relaxed);
        c.avg_response_bits.store(avg_ms.to_bits(), Relaxed);
    }

    pub(crate) fn set_health(&self, h: Health) {
        self.health.store(h.as_u8(), Relaxed);
    }

    pub(crate) fn add_job(&self, mut job: JobInfo) {
        let auto_end = job.status.is_finished() && job.end_time.is_none();
        if auto_end {
            job.end_time = Some(SystemTime::now());
        }
        job.name = cut(job.name);
        job.provider = cut(job.provider);
        job.vm_name = cut(job.vm_name);
        // Whatever is replaced or evicted is dropped after the lock is released.
        let _garbage: (Option<JobInfo>, Option<JobInfo>);
        {
            let mut t = self.jobs.lock();
            if let Some(&seq) = t.seq_of.get(job.id.as_str()) {
                let slot = t.by_seq.get_mut(&seq);
                _garbage = match slot {
                    Some(old) => {
                        // A job reported finished again keeps the end time first seen.
                        if auto_end && old.end_time.is_some() {
                            job.end_time = old.end_time;
                        }
                        (Some(std::mem::replace(old, job)), None)
                    }
                    None => (None, None),
                };
            } else {
                let seq = t.next_seq;
                t.next_seq += 1;
                t.seq_of.insert(job.id.clone(), seq);
                t.by_seq.insert(seq, job);
                let evicted = if t.by_seq.len() > self.max_jobs {
                    t.by_seq.pop_first().map(|(_, old)| {
                        t.seq_of.remove(old.id.as_str());
                        old
                    })
                } else {
                    None
                };
                _garbage = (None, evicted);
            }
        }
    }

    pub(crate) fn add_alert(&self, severity: Severity, message: String) {
        let alert = AlertRecord {
            id: self.next_alert_id.fetch_add(1, Relaxed),
            severity,
            message: cut(message),
            at: SystemTime::now(),
        };
        let _evicted = {
            let mut a = self.alerts.lock();
            a.push_back(alert);
            if a.len() > ALERTS_KEPT {
                a.pop_front()
            } else {
                None
            }
        };
    }

    pub(crate) fn try_acquire_viewer(&self, max: usize) -> bool {
        self.viewers
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    pub(crate) fn release_viewer(&self) {
        self.viewers.fetch_sub(1, Relaxed);
    }

    pub(crate) fn numbers(&self) -> Numbers {
        let c = &self.counters;
        Numbers {
            jobs_active: c.jobs_active.load(Relaxed),
            jobs_completed: c.jobs_completed.load(Relaxed),
            jobs_failed: c.jobs_failed.load(Relaxed),
            jobs_pending: c.jobs_pending.load(Relaxed),
            queue_length: c.queue_length.load(Relaxed),
            http_requests: c.http_requests.load(Relaxed),
            http_errors: c.http_errors.load(Relaxed),
            avg_response_time: f64::from_bits(c.avg_response_bits.load(Relaxed)),
            memory_usage: c.memory_mb.load(Relaxed),
            cpu_usage: f64::from_bits(c.cpu_bits.load(Relaxed)),
            tasks: c.tasks.load(Relaxed),
            active_connections: self.viewers.load(Relaxed) as u64,
            health: Health::from_u8(self.health.load(Relaxed)),
        }
    }

    /// Kept jobs, most recently added first.
    pub(crate) fn jobs(&self, now: SystemTime) -> Vec<JobView> {
        let t = self.jobs.lock();
        t.by_seq
            .values()
            .rev()
            .map(|j| JobView::of(j, now))
            .collect()
    }

    pub(crate) fn job(&self, id: &str, now: SystemTime) -> Option<JobView> {
        let t = self.jobs.lock();
        let seq = t.seq_of.get(id)?;
        t.by_seq.get(seq).map(|j| JobView::of(j, now))
    }

    pub(crate) fn snapshot(&self, now: SystemTime) -> Metrics {
        let n = self.numbers();
        let recent_jobs = self.jobs(now);
        let mut provider_stats = BTreeMap::new();
        for j in &recent_jobs {
            if !j.provider.is_empty() {
                *provider_stats.entry(j.provider.clone()).or_insert(0u64) += 1;
            }
        }
        let alerts = self
            .alerts
            .lock()
            .iter()
            .rev()
            .map(|a| Alert {
                id: a.id,
                severity: a.severity,
                message: a.message.clone(),
                timestamp: rfc3339(a.at),
            })
            .collect();
        Metrics {
            timestamp: rfc3339(now),
            jobs_active: n.jobs_active,
            jobs_completed: n.jobs_completed,
            jobs_failed: n.jobs_failed,
            jobs_pending: n.jobs_pending,
            queue_length: n.queue_length,
            http_requests: n.http_requests,
            http_errors: n.http_errors,
            avg_response_time: finite(n.avg_response_time),
            memory_usage: n.memory_usage,
            cpu_usage: finite(n.cpu_usage),
            goroutines: n.tasks,
            tasks: n.tasks,
            active_connections: n.active_connections,
            provider_stats,
            recent_jobs,
            system_health: n.health,
            alerts,
        }
    }

    /// Records one history point, dropping the oldest beyond `history_points`.
    pub(crate) fn record_history(&self, unix_secs: f64, n: Numbers) {
        let mut h = self.history.lock();
        h.push_back((unix_secs, n));
        while h.len() > self.history_points {
            h.pop_front();
        }
    }

    pub(crate) fn history(&self) -> History {
        let h = self.history.lock();
        let mut out = History::default();
        for (t, n) in h.iter() {
            out.t.push(*t);
            out.jobs_active.push(n.jobs_active);
            out.jobs_completed.push(n.jobs_completed);
            out.jobs_failed.push(n.jobs_failed);
            out.memory_usage.push(n.memory_usage);
            out.cpu_usage.push(finite(n.cpu_usage));
        }
        out
    }
}

/// JSON has no NaN or infinity; a non-finite value reads as 0.
pub(crate) fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::JobStatus;

    #[test]
    fn job_with_same_id_is_updated_in_place() {
        let s = Shared::new(50, 50);
        s.add_job(JobInfo::new("a", "first"));
        s.add_job(JobInfo::new("b", "second"));
        s.add_job(JobInfo {
            status: JobStatus::Running,
            progress: 40.0,
            ..JobInfo::new("a", "first")
        });
        let jobs = s.jobs(SystemTime::now());
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "b");
        assert_eq!(
            (jobs[1].status, jobs[1].progress),
            (JobStatus::Running, 40.0)
        );
    }

    #[test]
    fn finished_job_gets_an_end_time_once() {
        let s = Shared::new(50, 50);
        s.add_job(JobInfo {
            status: JobStatus::Completed,
            ..JobInfo::new("a", "x")
        });
        let first = s.job("a", SystemTime::now()).and_then(|j| j.end_time);
        assert!(first.is_some());
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.add_job(JobInfo {
            status: JobStatus::Completed,
            ..JobInfo::new("a", "x")
        });
        assert_eq!(
            s.job("a", SystemTime::now()).and_then(|j| j.end_time),
            first
        );
    }

    #[test]
    fn job_cap_evicts_the_oldest() {
        let s = Shared::new(3, 50);
        for i in 0..5 {
            s.add_job(JobInfo::new(format!("j{i}"), "x"));
        }
        let ids: Vec<_> = s
            .jobs(SystemTime::now())
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids, ["j4", "j3", "j2"]);
        assert!(s.job("j0", SystemTime::now()).is_none());
    }

    #[test]
    fn history_and_alert_caps_hold() {
        let s = Shared::new(50, 4);
        for i in 0..10 {
            s.record_history(
                f64::from(i),
                Numbers {
                    jobs_active: i as u64,
                    ..Numbers::default()
                },
            );
        }
        let h = s.history();
        assert_eq!(h.t, [6.0, 7.0, 8.0, 9.0]);
        assert_eq!(h.jobs_active, [6, 7, 8, 9]);
        for i in 0..30 {
            s.add_alert(Severity::Info, format!("a{i}"));
        }
        let alerts = s.snapshot(SystemTime::now()).alerts;
        assert_eq!(alerts.len(), ALERTS_KEPT);
        assert_eq!(alerts[0].message, "a29");
    }

    #[test]
    fn viewer_slots_are_bounded() {
        let s = Shared::new(1, 1);
        assert!(s.try_acquire_viewer(2));
        assert!(s.try_acquire_viewer(2));
        assert!(!s.try_acquire_viewer(2));
        s.release_viewer();
        assert!(s.try_acquire_viewer(2));
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_TEXT_BYTES);
        let c = cut(s);
        assert!(c.len() <= MAX_TEXT_BYTES && c.chars().all(|ch| ch == 'é'));
    }
}
