//! The Vitals agent as a library.
//!
//! Two halves with different weights:
//!
//! - [`collect`] (always built, light: `/proc`, `/sys`, `statvfs`, optional NVML and the Docker
//!   socket) turns the host into [`vitals_proto::MetricSample`]s once per interval and
//!   [`vitals_proto::state::DeviceState`] every 30 s. The hub uses it to record its own host,
//!   so it must never pull in an async runtime or a web stack.
//! - Behind the default-on `client` feature: the on-disk [`spool`], the [`transport`] to the
//!   hub (WebSocket `/agent`, `POST /api/report` fallback), [`pairing`], [`update`]
//!   (self-update), [`install`] (systemd unit) and the [`agent`] run loop that ties them.
//!
//! The agent only ever sends monitoring data: nothing it receives from the hub is executed.

pub mod collect;
pub mod host_id;
pub mod install_script;

#[cfg(feature = "client")]
pub mod agent;
#[cfg(feature = "client")]
pub mod config;
#[cfg(feature = "client")]
pub mod http;
#[cfg(feature = "client")]
pub mod install;
#[cfg(feature = "client")]
pub mod pairing;
#[cfg(feature = "client")]
pub mod spool;
#[cfg(feature = "client")]
pub mod transport;
#[cfg(feature = "client")]
pub mod update;

pub use collect::{Collector, Options};
pub use host_id::host_id;

/// This agent's version, as reported in pairing requests and compared by the self-updater.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
