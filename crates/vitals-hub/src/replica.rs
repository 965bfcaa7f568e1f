//! Several hub replicas on one PostgreSQL database, sharing live updates through NATS.
//!
//! ```text
//! replica A: bus ──> publisher ──> NATS `vitals.<cluster>.live` ────> subscriber (replica B)
//!                              └─> NATS `vitals.<cluster>.samples` ─┘  (while B needs them)
//!                                             ──> B's live core (and alert engine)
//! ```
//!
//! - Every change event a replica publishes on its own bus (samples after commit, device
//!   state, devices changed, app-store changes, alert events) is forwarded to the others, who
//!   apply it to their live core directly (not through their bus, so it is never forwarded
//!   again and wakes nothing else), so their views update as if the agent were theirs.
//! - Samples travel twice: their card figures on `live` (what device cards, sparklines and
//!   statuses show, a few dozen bytes each) and whole, as the agent sent them, on `samples`.
//!   A replica subscribes to `samples` only while it needs whole samples: it evaluates alerts,
//!   or one of its viewers watches a broadcast, a device stream, a series window or a device's
//!   latest sample ([`crate::live::registry::Registry::wants_whole_samples`]). While it does,
//!   it takes samples from there and skips their cards on `live`; otherwise it reads cards
//!   only, so a replica nobody watches pays little for the others' agents. Both messages of
//!   one gathering round carry its number, so at the switch a replica still applies the
//!   cards whose whole copies were sent before its subscription took effect, and when it
//!   unsubscribes it applies the whole samples already delivered.
//! - Messages carry a protocol version ([`PROTOCOL`]); a replica ignores (and reports once)
//!   those of another version, so replicas are upgraded together.
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
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use vitals_proto::MetricSample;

use crate::alerts::engine::AlertEvent;
use crate::live::appstore::AppChange;
use crate::state::{AppState, LiveEvent, LiveSample};

/// Subject of live change events, after `vitals.<cluster>.` (see [`Replicas::subject`]).
pub const LIVE_SUBJECT: &str = "live";
/// Version of the messages replicas exchange: a replica drops (and reports once) messages
/// of another version, so a rolling upgrade never misreads them.
pub const PROTOCOL: u32 = 2;
/// Subject of whole samples, after `vitals.<cluster>.` (subscribed only while needed).
pub const SAMPLES_SUBJECT: &str = "samples";
/// Subject of alert acknowledgements forwarded to the replica evaluating alerts.
pub const ACK_SUBJECT: &str = "alerts.ack";
/// The `meta` key of this database's cluster id: replicas of one database share it, so hubs
/// of other databases on the same NATS server never hear each other.
const CLUSTER_KEY: &str = "replica_cluster_id";
/// Largest message a replica accepts from NATS (NATS's own default limit is 1 MiB).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// A replica gathers its events for this long into one NATS message, so the others wake
/// once per message rather than once per sample.
const GATHER: Duration = Duration::from_millis(25);
/// A NATS message is sent once its events reach this size (under NATS's 1 MiB default).
const MESSAGE_BYTES: usize = 256 * 1024;
/// Most samples one event may carry (an agent batch holds at most 1,000).
const MAX_SAMPLES_PER_EVENT: usize = 1000;
/// Most other replicas whose first whole round is remembered (see [`Replicas::note_whole`]).
const MAX_SENDERS: usize = 256;
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

/// One message on [`LIVE_SUBJECT`]: the events a replica published in a few milliseconds.
#[derive(Debug, Deserialize)]
struct Envelope {
    /// The replicas' protocol version ([`PROTOCOL`]); other versions are dropped.
    #[serde(default)]
    v: u32,
    /// The replica that sent it (its own messages are skipped).
    from: String,
    /// The sender's gathering round: its `live` and `samples` messages of one round share it,
    /// so a replica starting to take whole samples knows which cards it must still apply.
    #[serde(default)]
    seq: u64,
    /// Unix ms when it was sent (for the cross-replica latency histogram).
    at: i64,
    bodies: Vec<Body>,
}

/// One event. Samples, state and alerts travel as the JSON the sending replica already
/// made for its own viewers, so the receiver parses each sample once and serialises nothing.
/// (Externally tagged: serde cannot read raw JSON inside an internally tagged enum.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Body {
    /// Samples by their card figures only (on [`LIVE_SUBJECT`]).
    Cards {
        device_id: String,
        cards: Vec<Card>,
    },
    /// Whole samples (on [`SAMPLES_SUBJECT`]).
    Samples {
        device_id: String,
        samples: Vec<Box<RawValue>>,
        /// Each sample's card figures, in the same order: enough for device cards,
        /// sparklines, per-device streams and the broadcast, so the receiver parses a whole
        /// sample only where a view or the alert engine needs every series.
        #[serde(default)]
        cards: Vec<Card>,
    },
    State {
        device_id: String,
        kind: String,
        json: Box<RawValue>,
    },
    DevicesChanged,
    App {
        change: AppChange,
    },
    Alert {
        json: Box<RawValue>,
    },
    Control {
        control: Control,
    },
}

/// What a device card shows of a sample: `(ts, cpu, mem used, mem total, swap used/total,
/// load 1, disks' used/total sums, rx, tx, uptime, procs)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::type_complexity)]
struct Card(
    i64,
    Bits,
    Bits,
    Bits,
    Option<(Bits, Bits)>,
    Option<Bits>,
    Option<(Bits, Bits)>,
    Bits,
    Bits,
    Bits,
    Bits,
);

/// An `f64` on the wire as its IEEE-754 bits, a JSON integer: exact, and several times
/// cheaper to read than a 17-digit decimal (replicas are its only readers).
#[derive(Debug, Clone, Copy)]
struct Bits(f64);

impl Serialize for Bits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.to_bits())
    }
}

impl<'de> Deserialize<'de> for Bits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(|b| Bits(f64::from_bits(b)))
    }
}

impl Card {
    fn of(s: &MetricSample) -> Card {
        let disks = (!s.disk.is_empty()).then(|| {
            let used: f64 = s.disk.iter().map(|d| d.used).sum();
            let total: f64 = s.disk.iter().map(|d| d.total).sum();
            (Bits(used), Bits(total))
        });
        Card(
            s.ts,
            Bits(s.cpu.total),
            Bits(s.mem.used),
            Bits(s.mem.total),
            s.swap.as_ref().map(|w| (Bits(w.used), Bits(w.total))),
            s.load.as_ref().map(|l| Bits(l.one)),
            disks,
            Bits(s.net.rx_bps),
            Bits(s.net.tx_bps),
            Bits(s.uptime_sec),
            Bits(s.proc_count),
        )
    }

    /// A sample holding only the card figures (one disk standing for all): its key series
    /// ([`vitals_proto::series::for_each_key_series`]) are the full sample's, bit for bit.
    fn sample(&self) -> MetricSample {
        use vitals_proto::sample::{Disk, Load, Net, Swap};
        let Card(ts, cpu, used, total, swap, load, disks, rx, tx, uptime, procs) = self.clone();
        let mut s = MetricSample {
            ts,
            uptime_sec: uptime.0,
            proc_count: procs.0,
            net: Net {
                rx_bps: rx.0,
                tx_bps: tx.0,
            },
            swap: swap.map(|(used, total)| Swap {
                used: used.0,
                total: total.0,
            }),
            load: load.map(|one| Load {
                one: one.0,
                five: f64::NAN,
                fifteen: f64::NAN,
            }),
            disk: disks
                .map(|(used, total)| Disk {
                    name: "*".into(),
                    used: used.0,
                    total: total.0,
                    ..Disk::default()
                })
                .into_iter()
                .collect(),
            ..MetricSample::default()
        };
        s.cpu.total = cpu.0;
        s.mem.used = used.0;
        s.mem.total = total.0;
        s
    }
}

fn raw(json: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(json.to_string()).ok()
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
    /// `vitals.<cluster id>.`: the subjects' prefix.
    prefix: std::sync::OnceLock<String>,
    /// Whether NATS is connected now (for `/healthz` and the metrics).
    connected: AtomicBool,
    /// Whether this replica is subscribed to whole samples now (then it skips cards).
    whole: AtomicBool,
    /// Per sender, the round of the first whole samples received since subscribing: cards
    /// of earlier rounds are still applied (their whole copies were sent before the
    /// subscription took effect).
    first_whole: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// This replica's gathering round ([`Envelope::seq`]).
    round: std::sync::atomic::AtomicU64,
    /// Whether a message of another protocol version was reported already.
    version_reported: AtomicBool,
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
            prefix: std::sync::OnceLock::new(),
            connected: AtomicBool::new(false),
            whole: AtomicBool::new(false),
            first_whole: std::sync::Mutex::new(std::collections::HashMap::new()),
            round: std::sync::atomic::AtomicU64::new(0),
            version_reported: AtomicBool::new(false),
        }
    }

    /// Whether this hub shares live updates with other replicas.
    pub fn enabled(&self) -> bool {
        self.client.get().is_some()
    }

    /// The full subject of `name` for this database's replicas.
    fn subject(&self, name: &str) -> String {
        let prefix = self.prefix.get().map_or("vitals.", String::as_str);
        format!("{prefix}{name}")
    }

    /// Whether this replica receives the others' samples whole now (else by their cards).
    pub fn whole_samples(&self) -> bool {
        self.whole.load(Ordering::Relaxed)
    }

    fn first_whole(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.first_whole.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn first_whole_reset(&self) {
        self.first_whole().clear();
    }

    /// Records that whole samples of `from`'s round `seq` arrived (the first one counts).
    /// At most [`MAX_SENDERS`] senders are kept: cards of others are applied as well as their
    /// whole samples (views keep one of each), so nothing is lost past the cap.
    fn note_whole(&self, from: &str, seq: u64) {
        let mut m = self.first_whole();
        if !m.contains_key(from) && m.len() < MAX_SENDERS {
            m.insert(from.to_string(), seq);
        }
    }

    /// The first round of `from` whose whole samples arrived since subscribing.
    fn whole_since(&self, from: &str) -> Option<u64> {
        self.first_whole().get(from).copied()
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
        if let Ok(b) = serde_json::to_vec(&body) {
            self.publish_encoded(LIVE_SUBJECT, &[b]).await;
        }
    }

    /// Sends encoded bodies as one envelope (`{"from","at","bodies":[...]}`) on `subject`.
    async fn publish_encoded(&self, subject: &str, bodies: &[Vec<u8>]) {
        let Some(client) = self.client.get() else {
            return;
        };
        if bodies.is_empty() {
            return;
        }
        let head = format!(
            r#"{{"v":{PROTOCOL},"from":"{}","seq":{},"at":{},"bodies":["#,
            self.id,
            self.round.load(Ordering::Relaxed),
            crate::now_ms()
        );
        let mut msg =
            Vec::with_capacity(head.len() + bodies.iter().map(Vec::len).sum::<usize>() + 8);
        msg.extend_from_slice(head.as_bytes());
        for (i, b) in bodies.iter().enumerate() {
            if i > 0 {
                msg.push(b',');
            }
            msg.extend_from_slice(b);
        }
        msg.extend_from_slice(b"]}");
        metrics::counter!(crate::telemetry::REPLICA_EVENTS, "direction" => "out")
            .increment(bodies.len() as u64);
        if let Err(e) = client.publish(self.subject(subject), msg.into()).await {
            tracing::warn!(error = %e, "could not publish live events to NATS; other replicas re-read their views when it recovers");
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
            client.request(self.subject(ACK_SUBJECT), body.into()),
        )
        .await
        .ok()?
        .ok()?;
        serde_json::from_slice::<Option<AlertEvent>>(&reply.payload).ok()?
    }
}

/// Connects to NATS (retrying in the background until it answers) and starts forwarding.
/// Returns at once; without `nats_url` it does nothing.
pub async fn spawn(state: &AppState) -> Result<(), crate::HubError> {
    let Some(url) = state.config.nats_url.clone() else {
        return Ok(());
    };
    let cluster = state
        .store
        .meta_init(CLUSTER_KEY, &uuid::Uuid::new_v4().simple().to_string())
        .await?;
    let _ = state.replicas.prefix.set(format!("vitals.{cluster}."));
    let st = state.clone();
    let client = async_nats::ConnectOptions::new()
        .name(format!("vitals-hub {}", state.replicas.id))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(8192)
        // Our own messages are of no use to us: the server does not send them back.
        .no_echo()
        .event_callback(move |event| {
            let st = st.clone();
            async move { on_connection_event(&st, event) }
        })
        .connect(url.as_str())
        .await
        .map_err(|e| crate::HubError::Nats(e.to_string()))?;
    let live = client.subscribe(state.replicas.subject(LIVE_SUBJECT)).await;
    let acks = client.subscribe(state.replicas.subject(ACK_SUBJECT)).await;
    let _ = state.replicas.client.set(client);
    match (live, acks) {
        (Ok(live), Ok(acks)) => {
            tokio::spawn(forward(state.clone()));
            tokio::spawn(receive(state.clone(), live));
            tokio::spawn(receive_whole(state.clone()));
            tokio::spawn(answer_acks(state.clone(), acks));
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot subscribe to NATS; live updates stay local");
        }
    }
    tracing::info!(%url, replica = %state.replicas.id, %cluster, "sharing live updates through NATS");
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
            // Whatever the others sent while we were away: every view, the settings, the
            // alert rules and the app store are read again.
            let st = state.clone();
            tokio::spawn(async move {
                apply_remote(&st, &[LiveEvent::DevicesChanged]).await;
                control_received(&st, Control::Settings).await;
                control_received(&st, Control::AlertRules).await;
                if let Err(e) = st.live.app.refresh().await {
                    tracing::warn!(error = %e, "could not re-read the app store");
                }
            });
        }
        async_nats::Event::Disconnected | async_nats::Event::Closed => {
            state.replicas.connected.store(false, Ordering::Relaxed);
            metrics::gauge!(crate::telemetry::REPLICA_CONNECTED).set(0.0);
            tracing::warn!("NATS disconnected; live updates from other replicas pause");
        }
        other => tracing::debug!(event = %other, "NATS"),
    }
}

/// Forwards this replica's own bus events to NATS, gathered for [`GATHER`] into messages of
/// at most [`MESSAGE_BYTES`].
async fn forward(state: AppState) {
    let mut rx = state.events.subscribe();
    let mut live = Pending::new(LIVE_SUBJECT);
    let mut whole = Pending::new(SAMPLES_SUBJECT);
    loop {
        let first = tokio::select! {
            ev = rx.recv() => ev,
            _ = state.shutdown.cancelled() => return,
        };
        let deadline = tokio::time::Instant::now() + GATHER;
        state.replicas.round.fetch_add(1, Ordering::Relaxed);
        let mut next = Some(first);
        loop {
            while let Some(ev) = next.take() {
                if matches!(ev, Err(RecvError::Closed)) {
                    return;
                }
                let (for_whole, for_live) = encode(ev);
                if let Some(body) = for_whole {
                    whole.push(&state, body).await;
                }
                if let Some(body) = for_live {
                    live.push(&state, body).await;
                }
                next = try_next(&mut rx);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // Sleep out the window, then take what arrived: one wake-up per message.
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = state.shutdown.cancelled() => return,
            }
            next = try_next(&mut rx);
        }
        whole.send(&state).await;
        live.send(&state).await;
    }
}

/// The next bus event if one waits.
fn try_next(
    rx: &mut tokio::sync::broadcast::Receiver<LiveEvent>,
) -> Option<Result<LiveEvent, RecvError>> {
    use tokio::sync::broadcast::error::TryRecvError;
    match rx.try_recv() {
        Ok(ev) => Some(Ok(ev)),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
    }
}

/// Encoded bodies waiting for their NATS message on one subject.
struct Pending {
    subject: &'static str,
    bodies: Vec<Vec<u8>>,
    size: usize,
}

impl Pending {
    fn new(subject: &'static str) -> Pending {
        Pending {
            subject,
            bodies: Vec::new(),
            size: 0,
        }
    }

    /// Adds a body, first sending what waits if the message would grow past
    /// [`MESSAGE_BYTES`].
    async fn push(&mut self, state: &AppState, body: Vec<u8>) {
        if self.size + body.len() > MESSAGE_BYTES {
            self.send(state).await;
        }
        self.size += body.len();
        self.bodies.push(body);
    }

    async fn send(&mut self, state: &AppState) {
        state
            .replicas
            .publish_encoded(self.subject, &self.bodies)
            .await;
        self.bodies.clear();
        self.size = 0;
    }
}

/// One bus event as encoded [`Body`]s: `(for SAMPLES_SUBJECT, for LIVE_SUBJECT)`, None where
/// nothing is sent. Samples go whole to the first and as their cards to the second.
fn encode(ev: Result<LiveEvent, RecvError>) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let body = match ev {
        Err(RecvError::Closed) => return (None, None),
        Ok(LiveEvent::Samples { device_id, samples }) => {
            let cards: Vec<Card> = samples.iter().map(|l| Card::of(l.sample())).collect();
            let whole = encode_samples(&device_id, &samples, &cards);
            let cards = serde_json::to_vec(&Body::Cards { device_id, cards }).ok();
            return (whole, cards.and_then(sized));
        }
        Ok(LiveEvent::State {
            device_id,
            kind,
            json,
        }) => match raw(&json) {
            Some(json) => Body::State {
                device_id,
                kind: kind.to_string(),
                json,
            },
            None => return (None, None),
        },
        Ok(LiveEvent::DevicesChanged) => Body::DevicesChanged,
        Ok(LiveEvent::App(change)) => Body::App {
            change: (*change).clone(),
        },
        Ok(LiveEvent::Alert(json)) => match raw(&json) {
            Some(json) => Body::Alert { json },
            None => return (None, None),
        },
        Err(RecvError::Lagged(n)) => {
            tracing::warn!(
                missed = n,
                "NATS forwarding fell behind; other replicas re-read their views"
            );
            Body::DevicesChanged
        }
    };
    (None, serde_json::to_vec(&body).ok().and_then(sized))
}

/// `bytes` if they fit in one NATS message ([`MESSAGE_BYTES`]); else None, reported.
fn sized(bytes: Vec<u8>) -> Option<Vec<u8>> {
    if bytes.len() > MESSAGE_BYTES {
        tracing::warn!(
            bytes = bytes.len(),
            "a live event too large for NATS was not forwarded"
        );
        return None;
    }
    Some(bytes)
}

/// A [`Body::Samples`], written around each sample's JSON as it is (the hub made it and
/// sends it to its own viewers already): no copy, no second serialisation. `cards` are the
/// samples' card figures, in the same order.
fn encode_samples(device_id: &str, samples: &[LiveSample], cards: &[Card]) -> Option<Vec<u8>> {
    let json: Vec<&Arc<str>> = samples.iter().filter_map(LiveSample::json).collect();
    let size = json.iter().map(|j| j.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(size + 64 * samples.len() + 64);
    out.extend_from_slice(br#"{"samples":{"device_id":"#);
    serde_json::to_writer(&mut out, device_id).ok()?;
    out.extend_from_slice(br#","samples":["#);
    for (i, j) in json.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(j.as_bytes());
    }
    out.extend_from_slice(br#"],"cards":"#);
    serde_json::to_writer(&mut out, cards).ok()?;
    out.extend_from_slice(b"}}");
    sized(out)
}

/// Applies the other replicas' events to this replica.
async fn receive(state: AppState, mut sub: async_nats::Subscriber) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = state.shutdown.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        receive_one(&state, msg, false).await;
    }
}

/// Keeps the subscription to whole samples while this replica needs them (alert evaluation,
/// or a view of whole samples: [`Registry::wants_whole_samples`]) and applies them.
///
/// [`Registry::wants_whole_samples`]: crate::live::registry::Registry::wants_whole_samples
async fn receive_whole(state: AppState) {
    let Some(client) = state.replicas.client.get().cloned() else {
        return;
    };
    let mut sub: Option<async_nats::Subscriber> = None;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = async {
            match sub.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = next => {
                match m {
                    Some(msg) => receive_one(&state, msg, true).await,
                    // The client closed the subscription: take a new one if still needed.
                    None => {
                        sub = None;
                        state.replicas.whole.store(false, Ordering::Relaxed);
                    }
                }
                continue;
            }
            _ = check.tick() => {}
            _ = state.live.registry.interest.notified() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let want = state.alerts.holding() || state.live.registry.wants_whole_samples();
        if want && sub.is_none() {
            match client
                .subscribe(state.replicas.subject(SAMPLES_SUBJECT))
                .await
            {
                Ok(s) => {
                    // Once the server has the subscription, samples come from it; until then
                    // from their cards (a sample may then arrive both ways: views keep one).
                    state.replicas.first_whole_reset();
                    if let Err(e) = client.flush().await {
                        tracing::debug!(error = %e, "NATS flush after subscribing");
                    }
                    sub = Some(s);
                    state.replicas.whole.store(true, Ordering::Relaxed);
                    tracing::debug!("subscribed to other replicas' whole samples");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to whole samples"),
            }
        } else if !want && let Some(mut s) = sub.take() {
            // Cards apply again from now; whole samples already delivered are applied too,
            // so none whose card was skipped is lost (views keep one of each).
            state.replicas.whole.store(false, Ordering::Relaxed);
            let _ = s.unsubscribe().await;
            while let Ok(Some(msg)) =
                tokio::time::timeout(Duration::from_millis(100), s.next()).await
            {
                receive_one(&state, msg, true).await;
            }
            state.replicas.first_whole_reset();
            tracing::debug!("unsubscribed from other replicas' whole samples");
        }
    }
}

/// Applies one NATS message of events; `whole_subject` when it came on [`SAMPLES_SUBJECT`].
async fn receive_one(state: &AppState, msg: async_nats::Message, whole_subject: bool) {
    if msg.payload.len() > MAX_EVENT_BYTES {
        tracing::warn!(bytes = msg.payload.len(), "dropped an oversized NATS event");
        return;
    }
    let env: Envelope = match serde_json::from_slice(&msg.payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "dropped a NATS event this hub cannot read");
            return;
        }
    };
    if env.v != PROTOCOL {
        if !state
            .replicas
            .version_reported
            .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                theirs = env.v,
                ours = PROTOCOL,
                from = %env.from,
                "a replica of another version shares this database's NATS subjects; its live \
                 updates are ignored until every replica runs the same version"
            );
        }
        return;
    }
    if env.from == state.replicas.id {
        return;
    }
    let skip_cards = if whole_subject {
        state.replicas.note_whole(&env.from, env.seq);
        false
    } else {
        state.replicas.whole.load(Ordering::Relaxed)
            && state
                .replicas
                .whole_since(&env.from)
                .is_some_and(|f| env.seq >= f)
    };
    metrics::counter!(crate::telemetry::REPLICA_EVENTS, "direction" => "in")
        .increment(env.bodies.len() as u64);
    let lag = crate::now_ms().saturating_sub(env.at).max(0) as f64 / 1000.0;
    metrics::histogram!(crate::telemetry::REPLICA_LAG).record(lag);
    // The app store is read again once per message, however many changes it carries.
    let mut app_refreshed = false;
    let mut batch = Vec::with_capacity(env.bodies.len());
    for body in env.bodies {
        batch.extend(apply(state, body, skip_cards, &mut app_refreshed).await);
    }
    if !batch.is_empty() {
        apply_remote(state, &batch).await;
    }
}

/// Applies other replicas' events to the live core (not through the bus: they are never
/// forwarded again, and the alert engine takes their samples from [`apply`]).
async fn apply_remote(state: &AppState, events: &[LiveEvent]) {
    if crate::live::registry::apply_remote(&state.live, events) {
        crate::live::registry::load_devices(state, false).await;
        state.alerts.devices_changed();
    }
}

/// The bus event a body stands for (None for control messages, applied here).
/// `skip_cards`: the samples of this message's cards come whole on the other subject.
async fn apply(
    state: &AppState,
    body: Body,
    skip_cards: bool,
    app_refreshed: &mut bool,
) -> Option<LiveEvent> {
    Some(match body {
        // Cards serve while whole samples are not subscribed to; then those come instead.
        Body::Cards { device_id, cards } => {
            if skip_cards {
                return None;
            }
            let samples: Vec<LiveSample> = cards
                .iter()
                .take(MAX_SAMPLES_PER_EVENT)
                .map(|c| LiveSample::card(c.sample()))
                .collect();
            if samples.is_empty() {
                return None;
            }
            LiveEvent::Samples {
                device_id,
                samples: Arc::new(samples),
            }
        }
        Body::Samples {
            device_id,
            samples,
            cards,
        } => {
            // Every series only where it is used: by the alert engine, or by a view of this
            // device's series; the card figures serve everything else.
            let full = cards.len() != samples.len()
                || state.alerts.holding()
                || state.live.registry.needs_every_series(&device_id);
            let samples: Vec<LiveSample> = samples
                .into_iter()
                .zip(cards.iter().map(Some).chain(std::iter::repeat(None)))
                .take(MAX_SAMPLES_PER_EVENT)
                .filter_map(|(raw, card)| {
                    let sample = match card {
                        Some(c) if !full => c.sample(),
                        _ => serde_json::from_str::<MetricSample>(raw.get()).ok()?,
                    };
                    Some(LiveSample::with_json(sample, Arc::from(raw.get())))
                })
                .collect();
            if samples.is_empty() {
                return None;
            }
            if state.alerts.holding() {
                let plain = samples.iter().map(|l| l.sample().clone()).collect();
                state.alerts.observe_remote(&device_id, plain).await;
            }
            LiveEvent::Samples {
                device_id,
                samples: Arc::new(samples),
            }
        }
        Body::State {
            device_id,
            kind,
            json,
        } => {
            let kind = STATE_KINDS.iter().find(|k| **k == kind)?;
            LiveEvent::State {
                device_id,
                kind,
                json: Arc::from(json.get()),
            }
        }
        Body::DevicesChanged => LiveEvent::DevicesChanged,
        Body::App { change } => {
            // The other replica committed app records: read them, then update views.
            if !*app_refreshed {
                *app_refreshed = true;
                if let Err(e) = state.live.app.refresh().await {
                    tracing::warn!(error = %e, "could not re-read the app store");
                }
            }
            LiveEvent::App(Arc::new(change))
        }
        Body::Alert { json } => LiveEvent::Alert(Arc::from(json.get())),
        Body::Control { control } => {
            control_received(state, control).await;
            return None;
        }
    })
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
        // The alert engine needs the other replicas' samples whole.
        state.live.registry.interest.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &MetricSample) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        vitals_proto::series::for_each_key_series(s, |n, x| v.push((n.to_string(), x.to_bits())));
        v
    }

    #[test]
    fn a_card_gives_the_cards_figures_bit_for_bit() {
        let s: MetricSample = serde_json::from_str(
            r#"{"v":1,"ts":1700000000123,"hostId":"h","cpu":{"total":12.3,"perCore":[1,2]},
            "mem":{"used":3.3e9,"total":7.1e9},"swap":{"used":1,"total":3},
            "load":{"one":0.7,"five":1,"fifteen":2},
            "disk":[{"name":"/","used":5.5,"total":11.1},{"name":"/var","used":2.2,"total":8.3}],
            "net":{"txBps":7.5,"rxBps":9.25},"uptimeSec":100,"procCount":42}"#,
        )
        .expect("sample");
        let card = Card::of(&s);
        let wire: Card =
            serde_json::from_str(&serde_json::to_string(&card).expect("json")).expect("card");
        let back = wire.sample();
        assert_eq!(keys(&back), keys(&s));
        assert_eq!(back.ts, s.ts);
        assert_eq!((back.mem.used, back.mem.total), (s.mem.used, s.mem.total));
        assert_eq!(back.net, s.net);
        // No disks, no swap, no load: none appear.
        let bare = MetricSample {
            ts: 5,
            ..MetricSample::default()
        };
        assert_eq!(keys(&Card::of(&bare).sample()), keys(&bare));
    }

    #[test]
    fn samples_encode_whole_and_as_cards_and_read_back() {
        let s: MetricSample = serde_json::from_str(
            r#"{"v":1,"ts":7,"hostId":"h","cpu":{"total":1},"mem":{"used":1,"total":2},
            "net":{"txBps":0,"rxBps":0},"uptimeSec":1,"procCount":1}"#,
        )
        .expect("sample");
        let live = Arc::new(vec![LiveSample::new(s.clone()), LiveSample::new(s)]);
        let (whole, cards) = encode(Ok(LiveEvent::Samples {
            device_id: "dev \"1\"".into(),
            samples: Arc::clone(&live),
        }));
        let Body::Samples {
            device_id,
            samples,
            cards: with_whole,
        } = serde_json::from_slice(&whole.expect("whole")).expect("a body")
        else {
            panic!("not samples")
        };
        assert_eq!(device_id, "dev \"1\"");
        assert_eq!(samples.len(), 2);
        assert_eq!(Some(samples[0].get()), live[0].json().map(|j| &**j));
        assert_eq!(with_whole.len(), 2);
        let Body::Cards { device_id, cards } =
            serde_json::from_slice(&cards.expect("cards")).expect("a body")
        else {
            panic!("not cards")
        };
        assert_eq!(device_id, "dev \"1\"");
        assert_eq!(cards.len(), 2);
        assert_eq!(cards[1].0, 7);
        // Other events go to `live` only.
        let (whole, other) = encode(Ok(LiveEvent::DevicesChanged));
        assert!(whole.is_none() && other.is_some());
    }
}
