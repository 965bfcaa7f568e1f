//! Shared application state handed to every handler with `with_state`, and the registry of
//! open agent connections (so revoking a token closes them within a second).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use vitals_store::Store;

use crate::config::Config;
use crate::ingest::writer::Writer;
use crate::ratelimit::{KeyedLimiter, SharedLimiter};
use crate::settings::Settings;

/// A committed sample as live views get it: the sample, and its JSON, serialised at most once
/// and only when something wants it (a viewer, another replica, the API), not for every
/// sample ingested. Clones share both.
#[derive(Debug, Clone)]
pub struct LiveSample(Arc<LiveInner>);

#[derive(Debug)]
struct LiveInner {
    sample: vitals_proto::MetricSample,
    /// `None` for a sample known by its card figures alone (another replica's).
    json: Option<OnceLock<Arc<str>>>,
}

impl LiveSample {
    /// A whole sample, its JSON made when first wanted.
    pub fn new(sample: vitals_proto::MetricSample) -> LiveSample {
        LiveSample(Arc::new(LiveInner {
            sample,
            json: Some(OnceLock::new()),
        }))
    }

    /// A whole sample with the JSON it arrived as.
    pub fn with_json(sample: vitals_proto::MetricSample, json: Arc<str>) -> LiveSample {
        LiveSample(Arc::new(LiveInner {
            sample,
            json: Some(OnceLock::from(json)),
        }))
    }

    /// A sample known by its card figures alone: no JSON to show as it was sent.
    pub fn card(sample: vitals_proto::MetricSample) -> LiveSample {
        LiveSample(Arc::new(LiveInner { sample, json: None }))
    }

    pub fn sample(&self) -> &vitals_proto::MetricSample {
        &self.0.sample
    }

    /// Whether the sample is whole (has JSON to show), not only card figures.
    pub fn is_whole(&self) -> bool {
        self.0.json.is_some()
    }

    /// The sample's JSON, serialised on the first call; `None` for a card.
    pub fn json(&self) -> Option<&Arc<str>> {
        self.0.json.as_ref().map(|j| {
            // Plain structs of numbers and strings: serialisation cannot fail.
            j.get_or_init(|| Arc::from(serde_json::to_string(&self.0.sample).unwrap_or_default()))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_sample_is_serialised_once_when_wanted_and_clones_share_it() {
        let s: vitals_proto::MetricSample = serde_json::from_str(
            r#"{"v":1,"ts":7,"hostId":"h","cpu":{"total":12.5},"mem":{"used":1,"total":2},
            "net":{"txBps":0,"rxBps":0},"uptimeSec":1,"procCount":1}"#,
        )
        .expect("sample");
        let live = LiveSample::new(s.clone());
        let copy = live.clone();
        let json = Arc::clone(copy.json().expect("whole"));
        let back: vitals_proto::MetricSample = serde_json::from_str(&json).expect("its JSON");
        assert_eq!(back.ts, 7);
        assert_eq!(back.cpu.total, 12.5);
        // The clone made it; the original has the very same string.
        assert!(Arc::ptr_eq(live.json().expect("whole"), &json));
        let sent = LiveSample::with_json(s.clone(), Arc::from(r#"{"as":"sent"}"#));
        assert_eq!(sent.json().map(|j| &**j), Some(r#"{"as":"sent"}"#));
        let card = LiveSample::card(s);
        assert!(!card.is_whole() && card.json().is_none());
    }
}
