//! The application's side of the dashboard: a cheap, cloneable handle whose update calls never
//! block on I/O or on viewers.

use std::sync::Arc;
use std::time::SystemTime;

use crate::process::ProcessSample;
use crate::snapshot::{Health, History, JobInfo, JobView, Metrics, Severity};
use crate::state::Shared;

/// Feeds the dashboard. Clone it freely (an `Arc` inside) and call it from any thread.
///
/// Counter updates are a handful of relaxed atomic stores; [`add_job`](Self::add_job) and
/// [`add_alert`](Self::add_alert) take a short in-memory lock.
#[derive(Clone)]
pub struct DashboardHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for DashboardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardHandle").finish_non_exhaustive()
    }
}

impl DashboardHandle {
    /// Sets the job counters: running, finished, failed, waiting, and the queue length.
    pub fn update_job_metrics(
        &self,
        active: u64,
        completed: u64,
        failed: u64,
        pending: u64,
        queue_len: u64,
    ) {
        self.shared
            .set_jobs(active, completed, failed, pending, queue_len);
    }

    /// Sets memory (MB), CPU (percent of one core) and the number of tasks (shown as both
    /// `tasks` and the seed's `goroutines`).
    pub fn update_system_metrics(&self, memory_mb: u64, cpu_percent: f64, tasks: u64) {
        self.shared.set_system(memory_mb, cpu_percent, tasks);
    }

    /// Measures this process (resident memory, CPU since the last call, alive tokio tasks or
    /// threads) and stores it as with [`update_system_metrics`](Self::update_system_metrics).
    /// Reads a few `/proc` files (tens of microseconds): call it about once per interval, not
    /// on a hot path. Returns `None` where `/proc` is unavailable.
    pub fn sample_process(&self) -> Option<ProcessSample> {
        let sample = self.shared.cpu.lock().sample()?;
        self.shared
            .set_system(sample.memory_mb, sample.cpu_percent, sample.tasks);
        Some(sample)
    }

    /// Sets the HTTP totals and the average response time in milliseconds.
    pub fn update_http_metrics(&self, requests: u64, errors: u64, avg_response_ms: f64) {
        self.shared.set_http(requests, errors, avg_response_ms);
    }

    /// Adds a job, or updates the job with the same id in place. Beyond `max_jobs` the oldest
    /// job is evicted. Strings longer than 1 KiB are cut.
    pub fn add_job(&self, job: JobInfo) {
        self.shared.add_job(job);
    }

    /// Raises an alert. The 20 most recent are kept; the page shows three.
    pub fn add_alert(&self, severity: Severity, message: impl Into<String>) {
        self.shared.add_alert(severity, message.into());
    }

    /// Sets the overall health badge.
    pub fn set_system_health(&self, health: Health) {
        self.shared.set_health(health);
    }

    /// The current snapshot, as `GET /api/metrics` serves it.
    pub fn metrics(&self) -> Metrics {
        self.shared.snapshot(SystemTime::now())
    }

    /// The kept jobs, most recently added first.
    pub fn jobs(&self) -> Vec<JobView> {
        self.shared.jobs(SystemTime::now())
    }

    /// The rolling chart history.
    pub fn history(&self) -> History {
        self.shared.history()
    }
}
