//! An in-process live web dashboard for Rust applications.
//!
//! Add the crate, create a [`Dashboard`], start it on your tokio runtime and feed it through a
//! cheap, cloneable [`DashboardHandle`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), vitals_embed::Error> {
//! use vitals_embed::{Config, Dashboard};
//! let dashboard = Dashboard::new(Config::default())?;
//! let metrics = dashboard.handle();
//! tokio::spawn(dashboard.start(tokio::signal::ctrl_c()));
//! metrics.update_job_metrics(5, 123, 2, 8, 15);
//! # Ok(()) }
//! ```
//!
//! The page at `http://127.0.0.1:8080/` then shows the application's jobs, resources, HTTP
//! traffic, alerts and health, refreshed over a WebSocket every `update_interval`.
//!
//! Invariants the crate keeps:
//! - update calls ([`DashboardHandle::update_job_metrics`] and friends) never wait on I/O or
//!   on viewers: counters are atomics, jobs and alerts sit behind short in-memory locks;
//! - one snapshot is serialised per interval and the same bytes are shared by every viewer,
//!   so viewers cost a socket write each, not a serialisation each;
//! - forwarding to a Vitals hub ([`Config::forward_to`]) runs in a background task fed by a
//!   bounded queue that drops its oldest batch when full.

mod assets;
mod auth;
mod config;
mod error;
mod forward;
mod handle;
mod process;
mod server;
mod snapshot;
mod state;
mod ticker;

pub use config::{Auth, Config, ForwardConfig};
pub use error::{Error, Result};
pub use handle::DashboardHandle;
pub use process::ProcessSample;
pub use server::{Dashboard, RunningDashboard};
pub use snapshot::{Alert, Health, History, JobInfo, JobStatus, JobView, Metrics, Severity};

/// Completes once the stop flag turns true (or its sender is gone). The watch guard is dropped
/// here, so callers may await other things after it inside `select!` arms and stay `Send`.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
