//! Shared application state handed to every handler with `with_state`, and the registry of
//! open agent connections (so revoking a token closes them within a second).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use vitals_store::Store;

use crate::config::Config;
use crate::ingest::writer::Writer;
use crate::ratelimit::{KeyedLimiter, SharedLimiter};
use crate::settings::Settings;

/// A committed sample as live views get it: the sample and its JSON, serialised once.
#[derive(Debug, Clone)]
pub struct LiveSample {
    pub sample: vitals_proto::MetricSample,
    pub json: Arc<str>,
}

impl LiveSample {
    pub fn new(sample: vitals_proto::MetricSample) -> LiveSample {
        // Plain structs of numbers and strings: serialisation cannot fail.
        let json = serde_json::to_string(&sample).unwrap_or_default();
        LiveSample {
            sample,
            json: Arc::from(json),
        }
    }

    /// Every row of a stored frame, rebuilt as samples ([`vitals_store::Frame::sample`]).
    pub fn from_frame(frame: &vitals_store::Frame, host_id: &str) -> Vec<LiveSample> {
        (0..frame.len())
            .map(|i| LiveSample::new(frame.sample(i, host_id)))
            .collect()
    }
}

/// A change that live views may care about, published only after the commit it describes.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// New samples of a device, oldest first.
    Samples {
        device_id: String,
        samples: Arc<Vec<LiveSample>>,
    },
    /// A device's state (`system-info`, `processes`, `network-interfaces`) changed.
    State {
        device_id: String,
        kind: &'static str,
        json: Arc<str>,
    },
    /// Devices were added, renamed or removed.
    DevicesChanged,
    /// App-store records (seed 001 buckets: metrics, alerts) were committed.
    App(Arc<crate::live::appstore::AppChange>),
    /// An alert fired, changed or resolved: `{type:"alert", alert}` for `/ws/live`.
    Alert(Arc<str>),
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Limits {
    pub pair_create: SharedLimiter,
    pub pair_poll: SharedLimiter,
    pub pair_guess: SharedLimiter,
    pub login: SharedLimiter,
    pub batches: KeyedLimiter,
}

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub config: Config,
    /// Base URL for printed links.
    pub public_url: String,
    pub settings: RwLock<Settings>,
    pub raw_retention_ms: std::sync::atomic::AtomicI64,
    pub writer: Writer,
    pub agents: Arc<AgentRegistry>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub metrics: Option<PrometheusHandle>,
    pub events: broadcast::Sender<LiveEvent>,
    pub started: Instant,
    /// The live core (subscriptions, app store, viewer connections).
    pub live: Arc<crate::live::Live>,
    /// The alert engine and notification delivery.
    pub alerts: crate::alerts::Alerts,
    /// The other replicas on the same database (NATS), if any.
    pub replicas: crate::replica::Replicas,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Raw retention in milliseconds (read on every batch, so kept apart from the map).
    pub fn raw_retention_ms(&self) -> i64 {
        self.raw_retention_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tells the live core (through the bus) and the alert engine that the device list
    /// changed.
    pub fn devices_changed(&self) {
        let _ = self.events.send(LiveEvent::DevicesChanged);
        self.alerts.devices_changed();
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_settings(&self, s: Settings) {
        self.raw_retention_ms
            .store(s.raw_retention_ms(), std::sync::atomic::Ordering::Relaxed);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

/// Open agent connections per device id.
#[derive(Default)]
pub struct AgentRegistry {
    next: AtomicU64,
    conns: Mutex<HashMap<String, Vec<(u64, CancellationToken)>>>,
}

impl AgentRegistry {
    /// Registers a connection; dropping the guard unregisters it.
    pub fn register(self: &Arc<Self>, device_id: &str) -> AgentGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.lock()
            .entry(device_id.to_string())
            .or_default()
            .push((id, token.clone()));
        metrics::gauge!(crate::telemetry::CONNECTED_AGENTS).increment(1.0);
        AgentGuard {
            registry: Arc::clone(self),
            device_id: device_id.to_string(),
            id,
            token,
        }
    }

    /// Closes every open connection of the device (token revoked or device deleted).
    pub fn revoke(&self, device_id: &str) -> usize {
        let conns = self.lock().remove(device_id).unwrap_or_default();
        for (_, t) in &conns {
            t.cancel();
        }
        conns.len()
    }

    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(u64, CancellationToken)>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct AgentGuard {
    registry: Arc<AgentRegistry>,
    device_id: String,
    id: u64,
    /// Cancelled when the device's token is revoked.
    pub token: CancellationToken,
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        if let Some(v) = map.get_mut(&self.device_id) {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                map.remove(&self.device_id);
            }
        }
        metrics::gauge!(crate::telemetry::CONNECTED_AGENTS).decrement(1.0);
    }
}
