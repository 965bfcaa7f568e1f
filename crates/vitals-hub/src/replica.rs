//! Several hub replicas on one PostgreSQL database, sharing live updates through NATS.
//!
//! ```text
//! replica A: bus ──> publisher ──> NATS `vitals.live` ──> subscriber (replica B) ──> B's bus
//!                                                          (as LiveEvent::Remote)
//! ```
//!
//! - Every change event a replica publishes on its own bus (samples after commit, device
//!   state, devices changed, app-store changes, alert events) is forwarded to the others, who
//!   publish it on their bus wrapped in [`LiveEvent::Remote`], so their views update as if the
//!   agent were theirs; remote events are never forwarded again.
//! - Control messages ([`Control`]) tell the others what changed outside the live core: a
//!   revoked device token (they close its agent connections), edited settings (they reload
//!   them), edited alert rules (they reload them).
//! - An alert acknowledged on a replica that does not run alert evaluation is forwarded to the
//!   one that does (a NATS request on `vitals.alerts.ack`).
//!
//! NATS carries only fan-out: a sample is acknowledged once the database committed it,
//! whether or not NATS is up. While NATS is away, each replica still serves its own agents
//! and viewers; when it comes back every view is re-evaluated from the database. Work that must
//! run once (alert evaluation and delivery, rollups, retention) is guarded by a lease in the
//! database ([`vitals_store::Store::try_lease`]), not by NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use vitals_proto::MetricSample;

use crate::alerts::engine::AlertEvent;
use crate::live::appstore::AppChange;
use crate::state::{AppState, LiveEvent, LiveSample};

/// Subject of live change events.
pub const LIVE_SUBJECT: &str = "vitals.live";
/// Subject of alert acknowledgements forwarded to the replica evaluating alerts.
pub const ACK_SUBJECT: &str = "vitals.alerts.ack";
/// Largest message a replica accepts from NATS (a batch of 1,000 samples fits).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// The device-state kinds a remote replica may announce.
const STATE_KINDS: [&str; 3] = ["system-info", "processes", "network-interfaces"];

/// What changed outside the live core, for the other replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "camelCase")]
pub enum Control {
    /// A device's token was rotated or the device deleted: close its agent connections.
    Revoke { device_id: String },
    /// Settings were edited: reload them from the database.
    Settings,
    /// Alert rules, channels or windows were edited: reload them from the database.
    AlertRules,
}

/// One message on [`LIVE_SUBJECT`].
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The replica that sent it (its own messages are skipped).
    from: String,
    /// Unix ms when it was sent (for the cross-replica latency histogram).
    at: i64,
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
enum Body {
    Samples {
        device_id: String,
        samples: Vec<MetricSample>,
    },
    State {
        device_id: String,
        kind: String,
        json: String,
    },
    DevicesChanged,
    App {
        change: AppChange,
    },
    Alert {
        json: String,
    },
    Control {
        control: Control,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct AckRequest {
    id: String,
    by: String,
}

/// This replica's link to the others (inert without `nats_url`).
pub struct Replicas {
    /// Random id of this process, to skip our own messages.
    pub id: String,
    client: std::sync::OnceLock<async_nats::Client>,
    /// Whether NATS is connected now (for `/healthz` and the metrics).
    connected: AtomicBool,
}

impl Default for Replicas {
    fn default() -> Self {
        Self::new()
    }
}

impl Replicas {
    pub fn new() -> Replicas {
        Replicas {
            id: uuid::Uuid::new_v4().simple().to_string(),
            client: std::sync::OnceLock::new(),
            connected: AtomicBool::new(false),
        }
    }

    /// Whether this hub shares live updates with other replicas.
    pub fn enabled(&self) -> bool {
        self.client.get().is_some()
    }

    /// Whether NATS is connected now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Tells the other replicas about a change outside the live core (no-op alone).
    pub async fn announce(&self, control: Control) {
        self.publish(Body::Control { control }).await;
    }

    async fn publish(&self, body: Body) {
        let Some(client) = self.client.get() else {
            return;
        };
        let env = Envelope {
            from: self.id.clone(),
            at: crate::now_ms(),
            body,
        };
        let Ok(bytes) = serde_json::to_vec(&env) else {
            return;
        };
        metrics::counter!(crate::telemetry::REPLICA_EVENTS, "direction" => "out").increment(1);
        if let Err(e) = client.publish(LIVE_SUBJECT, bytes.into()).await {
            tracing::debug!(error = %e, "could not publish a live event to NATS");
        }
    }

    /// Asks the replica evaluating alerts to acknowledge one: `None` when no replica holds
    /// it or none answered within two seconds.
    pub async fn forward_ack(&self, id: &str, by: &str) -> Option<AlertEvent> {
        let client = self.client.get()?;
        let body = serde_json::to_vec(&AckRequest {
            id: id.to_string(),
            by: by.to_string(),
        })
        .ok()?;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(ACK_SUBJECT, body.into()),
        )
        .await
        .ok()?
        .ok()?;
        serde_json::from_slice::<Option<AlertEvent>>(&reply.payload).ok()?
    }
}

/// Connects to NATS (retrying in the background until it answers) and starts forwarding.
/// Returns at once; without `nats_url` it does nothing.
pub async fn spawn(state: &AppState) -> Result<(), async_nats::ConnectError> {
    let Some(url) = state.config.nats_url.clone() else {
        return Ok(());
    };
    let st = state.clone();
    let client = async_nats::ConnectOptions::new()
        .name(format!("vitals-hub {}", state.replicas.id))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(8192)
        .event_callback(move |event| {
            let st = st.clone();
            async move { on_connection_event(&st, event) }
        })
        .connect(url.as_str())
        .await?;
    let live = client.subscribe(LIVE_SUBJECT).await;
    let acks = client.subscribe(ACK_SUBJECT).await;
    let _ = state.replicas.client.set(client);
    match (live, acks) {
        (Ok(live), Ok(acks)) => {
            tokio::spawn(forward(state.clone()));
            tokio::spawn(receive(state.clone(), live));
            tokio::spawn(answer_acks(state.clone(), acks));
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot subscribe to NATS; live updates stay local");
        }
    }
    tracing::info!(%url, replica = %state.replicas.id, "sharing live updates through NATS");
    Ok(())
}

fn on_connection_event(state: &AppState, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            let was = state.replicas.connected.swap(true, Ordering::Relaxed);
            metrics::gauge!(crate::telemetry::REPLICA_CONNECTED).set(1.0);
            if !was {
                tracing::info!("NATS connected");
            }
            // Whatever the others sent while we were away: every view is read again.
            let _ = state
                .events
                .send(LiveEvent::Remote(Box::new(LiveEvent::DevicesChanged)));
        }
        async_nats::Event::Disconnected | async_nats::Event::Closed => {
            state.replicas.connected.store(false, Ordering::Relaxed);
            metrics::gauge!(crate::telemetry::REPLICA_CONNECTED).set(0.0);
            tracing::warn!("NATS disconnected; live updates from other replicas pause");
        }
        other => tracing::debug!(event = %other, "NATS"),
    }
}

/// Forwards this replica's own bus events to NATS.
async fn forward(state: AppState) {
    let mut rx = state.events.subscribe();
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = state.shutdown.cancelled() => return,
        };
        let body = match ev {
            Ok(LiveEvent::Remote(_)) => continue,
            Ok(LiveEvent::Samples { device_id, samples }) => Body::Samples {
                device_id,
                samples: samples.iter().map(|l| l.sample.clone()).collect(),
            },
            Ok(LiveEvent::State {
                device_id,
                kind,
                json,
            }) => Body::State {
                device_id,
                kind: kind.to_string(),
                json: json.to_string(),
            },
            Ok(LiveEvent::DevicesChanged) => Body::DevicesChanged,
            Ok(LiveEvent::App(change)) => Body::App {
                change: (*change).clone(),
            },
            Ok(LiveEvent::Alert(json)) => Body::Alert {
                json: json.to_string(),
            },
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "NATS forwarding fell behind; other replicas re-read their views"
                );
                Body::DevicesChanged
            }
            Err(RecvError::Closed) => return,
        };
        state.replicas.publish(body).await;
    }
}

/// Applies the other replicas' events to this replica.
async fn receive(state: AppState, mut sub: async_nats::Subscriber) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = state.shutdown.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        if msg.payload.len() > MAX_EVENT_BYTES {
            tracing::warn!(bytes = msg.payload.len(), "dropped an oversized NATS event");
            continue;
        }
        let env: Envelope = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "dropped a NATS event this hub cannot read");
                continue;
            }
        };
        if env.from == state.replicas.id {
            continue;
        }
        metrics::counter!(crate::telemetry::REPLICA_EVENTS, "direction" => "in").increment(1);
        let lag = (crate::now_ms() - env.at).max(0) as f64 / 1000.0;
        metrics::histogram!(crate::telemetry::REPLICA_LAG).record(lag);
        apply(&state, env.body).await;
    }
}

async fn apply(state: &AppState, body: Body) {
    let ev = match body {
        Body::Samples { device_id, samples } => {
            if state.alerts.holding() {
                state
                    .alerts
                    .observe_remote(&device_id, samples.clone())
                    .await;
            }
            LiveEvent::Samples {
                device_id,
                samples: Arc::new(samples.into_iter().map(LiveSample::new).collect()),
            }
        }
        Body::State {
            device_id,
            kind,
            json,
        } => {
            let Some(kind) = STATE_KINDS.iter().find(|k| **k == kind) else {
                return;
            };
            LiveEvent::State {
                device_id,
                kind,
                json: Arc::from(json),
            }
        }
        Body::DevicesChanged => LiveEvent::DevicesChanged,
        Body::App { change } => {
            // The other replica committed app records: read them, then update views.
            if let Err(e) = state.live.app.refresh().await {
                tracing::warn!(error = %e, "could not re-read the app store");
            }
            LiveEvent::App(Arc::new(change))
        }
        Body::Alert { json } => LiveEvent::Alert(Arc::from(json)),
        Body::Control { control } => {
            control_received(state, control).await;
            return;
        }
    };
    let _ = state.events.send(LiveEvent::Remote(Box::new(ev)));
}

async fn control_received(state: &AppState, control: Control) {
    match control {
        Control::Revoke { device_id } => {
            let n = state.agents.revoke(&device_id);
            tracing::info!(device = %device_id, closed = n, "token revoked on another replica");
        }
        Control::Settings => match state.store.settings().await {
            Ok(kv) => state.set_settings(crate::settings::Settings::from_stored(&kv)),
            Err(e) => tracing::warn!(error = %e, "could not reload settings"),
        },
        Control::AlertRules => {
            let st = state.clone();
            tokio::spawn(async move { st.alerts.reload().await });
        }
    }
}

/// Takes (or confirms) the lease `name` and records it in the metrics; for alerts also in
/// [`Alerts::holding`]. A database error counts as not holding (another replica may).
pub async fn lease(state: &AppState, name: &'static str) -> bool {
    let held = match state.store.try_lease(name).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, lease = name, "cannot check the lease");
            false
        }
    };
    metrics::gauge!(crate::telemetry::LEASES_HELD, "lease" => name).set(f64::from(u8::from(held)));
    if name == "alerts" && state.alerts.set_holding(held) {
        tracing::info!(held, "alert evaluation lease changed");
    }
    held
}

/// Answers forwarded acknowledgements while this replica evaluates alerts.
async fn answer_acks(state: AppState, mut sub: async_nats::Subscriber) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = state.shutdown.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        let (Some(reply), true) = (msg.reply, state.alerts.holding()) else {
            continue;
        };
        let Ok(req) = serde_json::from_slice::<AckRequest>(&msg.payload) else {
            continue;
        };
        let out = state.alerts.ack(&req.id, &req.by).await;
        let body = serde_json::to_vec(&out).unwrap_or_default();
        if let (Some(client), _) = (state.replicas.client.get(), ()) {
            let _ = client.publish(reply, body.into()).await;
        }
    }
}
