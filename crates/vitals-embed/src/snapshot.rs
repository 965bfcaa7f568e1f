//! The JSON the dashboard speaks: the seed's metrics message (`GET /api/metrics` and every
//! `/ws` frame), job and alert shapes, and the columnar chart history.
//!
//! Field names are the seed's, unchanged. `goroutines` is kept for compatibility with seed
//! clients and carries the same number as `tasks`. Timestamps are RFC 3339 strings in UTC.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    vitals_proto::sample::format_rfc3339_ms(unix_ms(t))
}

/// A job's state, shown as a coloured badge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to run.
    #[default]
    Pending,
    /// Running now.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Stopped before finishing.
    Cancelled,
}

impl JobStatus {
    /// True once the job can no longer change state.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A job as the application reports it with [`crate::DashboardHandle::add_job`]. Adding a job
/// whose `id` is already known updates it in place.
#[derive(Clone, Debug, PartialEq)]
pub struct JobInfo {
    /// Unique id; the key for updates and `GET /api/jobs/{id}`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Current state.
    pub status: JobStatus,
    /// Progress in percent, clamped to 0..=100 when shown.
    pub progress: f64,
    /// When the job started.
    pub start_time: SystemTime,
    /// When the job finished; filled in automatically when a finished status is first seen.
    pub end_time: Option<SystemTime>,
    /// Which provider runs it (`aws`, `azure`, `gcp`, ...); counted in `provider_stats`.
    pub provider: String,
    /// The machine it concerns.
    pub vm_name: String,
}

impl JobInfo {
    /// A pending job started now, with no provider or VM.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        JobInfo {
            id: id.into(),
            name: name.into(),
            status: JobStatus::Pending,
            progress: 0.0,
            start_time: SystemTime::now(),
            end_time: None,
            provider: String::new(),
            vm_name: String::new(),
        }
    }
}

/// A job as served in `recent_jobs`, `/api/jobs` and `/api/jobs/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// See [`JobInfo::id`].
    pub id: String,
    /// See [`JobInfo::name`].
    pub name: String,
    /// See [`JobInfo::status`].
    pub status: JobStatus,
    /// Progress in percent, 0..=100.
    pub progress: f64,
    /// RFC 3339 start time.
    pub start_time: String,
    /// RFC 3339 end time, `null` while the job runs.
    pub end_time: Option<String>,
    /// Seconds from start to end (or to now while running).
    pub duration_seconds: f64,
    /// See [`JobInfo::provider`].
    pub provider: String,
    /// See [`JobInfo::vm_name`].
    pub vm_name: String,
}

impl JobView {
    pub(crate) fn of(job: &JobInfo, now: SystemTime) -> Self {
        let end = job.end_time.unwrap_or(now);
        let duration = end.duration_since(job.start_time).unwrap_or(Duration::ZERO);
        let progress = if job.progress.is_finite() {
            job.progress.clamp(0.0, 100.0)
        } else {
            0.0
        };
        JobView {
            id: job.id.clone(),
            name: job.name.clone(),
            status: job.status,
            progress,
            start_time: rfc3339(job.start_time),
            end_time: job.end_time.map(rfc3339),
            duration_seconds: duration.as_secs_f64(),
            provider: job.provider.clone(),
            vm_name: job.vm_name.clone(),
        }
    }
}

/// How serious an alert is; decides its banner colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Red.
    Critical,
    /// Orange.
    Warning,
    /// Blue.
    Info,
}

/// An alert raised with [`crate::DashboardHandle::add_alert`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Increasing id; the page remembers dismissed ids.
    pub id: u64,
    /// Severity.
    pub severity: Severity,
    /// The text shown (escaped by the page).
    pub message: String,
    /// RFC 3339 time it was raised.
    pub timestamp: String,
}

/// Overall health, shown as a badge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Green.
    #[default]
    Healthy,
    /// Orange.
    Degraded,
    /// Red.
    Unhealthy,
}

impl Health {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Degraded,
            2 => Health::Unhealthy,
            _ => Health::Healthy,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Unhealthy => 2,
        }
    }
}

/// The seed's metrics message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// RFC 3339 time the snapshot was taken.
    pub timestamp: String,
    /// Running jobs.
    pub jobs_active: u64,
    /// Finished jobs.
    pub jobs_completed: u64,
    /// Failed jobs.
    pub jobs_failed: u64,
    /// Queued jobs.
    pub jobs_pending: u64,
    /// Queue length.
    pub queue_length: u64,
    /// Total HTTP requests.
    pub http_requests: u64,
    /// Total HTTP errors.
    pub http_errors: u64,
    /// Average response time in milliseconds.
    pub avg_response_time: f64,
    /// Memory in MB.
    pub memory_usage: u64,
    /// CPU in percent of one core.
    pub cpu_usage: f64,
    /// Same as `tasks`, under the seed's name.
    pub goroutines: u64,
    /// Tasks (or threads) the application reports.
    pub tasks: u64,
    /// Connected dashboard viewers.
    pub active_connections: u64,
    /// Kept jobs counted by provider.
    pub provider_stats: BTreeMap<String, u64>,
    /// Kept jobs, most recently added first.
    pub recent_jobs: Vec<JobView>,
    /// Overall health.
    pub system_health: Health,
    /// Recent alerts, newest first.
    pub alerts: Vec<Alert>,
}

/// The rolling history behind the time-series charts, in columns (`GET /api/history`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Unix seconds of each point.
    pub t: Vec<f64>,
    /// `jobs_active` at each point.
    pub jobs_active: Vec<u64>,
    /// `jobs_completed` at each point.
    pub jobs_completed: Vec<u64>,
    /// `jobs_failed` at each point.
    pub jobs_failed: Vec<u64>,
    /// `memory_usage` (MB) at each point.
    pub memory_usage: Vec<u64>,
    /// `cpu_usage` (%) at each point.
    pub cpu_usage: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_view_clamps_progress_and_measures_duration() {
        let start = UNIX_EPOCH + Duration::from_secs(1_705_314_600);
        let job = JobInfo {
            progress: 180.0,
            start_time: start,
            end_time: Some(start + Duration::from_millis(2500)),
            ..JobInfo::new("j", "n")
        };
        let v = JobView::of(&job, SystemTime::now());
        assert_eq!(v.progress, 100.0);
        assert_eq!(v.duration_seconds, 2.5);
        assert_eq!(v.start_time, "2024-01-15T10:30:00Z");
        let nan = JobInfo {
            progress: f64::NAN,
            ..job
        };
        assert_eq!(JobView::of(&nan, SystemTime::now()).progress, 0.0);
    }

    #[test]
    fn enums_use_the_seed_strings() {
        let s = serde_json::to_string(&(Health::Degraded, Severity::Critical, JobStatus::Running));
        assert_eq!(
            s.ok().as_deref(),
            Some(r#"["degraded","critical","running"]"#)
        );
    }
}
