//! Alerts and notifications (issue 7): rules evaluated on ingest as samples are committed
//! (never by polling the database), device-offline detection by timer, state that survives
//! restarts, and notifications delivered through an outbox with retries.
//!
//! Flow: ingest hands each committed batch to the engine task ([`Alerts::observe`]); the
//! [`engine`] turns samples into a [`engine::Step`]; the task stores the step (states, events
//! and the notifications it causes) in ONE transaction, mirrors events into seed 001's
//! `alerts` bucket and onto the live bus, then wakes the delivery task, which sends what the
//! outbox holds and logs every attempt. A crash between commit and delivery loses nothing
//! (the outbox is durable); a crash after sending and before logging can repeat that one
//! notification, which receivers can drop by its `deliveryId`.

pub mod engine;
pub mod notify;
pub mod outbound;
pub mod rule;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot};
use vitals_proto::MetricSample;
use vitals_store::{AlertEventRow, AlertWrite, DeliveryRecord, NewNotification, OutboxItem};

use crate::live::appstore::{ALERTS, Op};
use crate::state::{AppState, LiveEvent};
use engine::{AlertEvent, DeviceInfo, Engine, Step};
use notify::{Channel, ChannelConfig, Notification, RuleBrief};
use rule::{MaintenanceWindow, Rule};

/// Channel id of the `alerts.slackWebhookUrl` setting, used by rules without channels.
pub const DEFAULT_SLACK: &str = "default-slack";
/// Delivery attempts before a notification is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// How long the engine gathers evaluations before committing their state changes together.
const PERSIST_WINDOW: Duration = Duration::from_millis(100);
/// Within a window, how often the engine takes the batches that arrived (an API call, such
/// as an acknowledgement, waits at most this long for its turn).
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// Batches queued for the engine before ingest waits.
const QUEUE: usize = 8192;

enum Msg {
    Samples {
        device_id: String,
        /// None for samples another replica received (the engine knows the device's name
        /// from the database).
        device_name: Option<String>,
        samples: Vec<MetricSample>,
    },
    Reload(oneshot::Sender<()>),
    Ack {
        id: String,
        by: String,
        reply: oneshot::Sender<Option<AlertEvent>>,
    },
}

/// Handle to the alert engine and delivery tasks.
pub struct Alerts {
    tx: mpsc::Sender<Msg>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Msg>>>,
    kick: Notify,
    /// Wakes the engine when the device list changed (so it does not listen to every
    /// sample on the bus for it).
    devices: Notify,
    /// The engine task, awaited at shutdown so its last states are stored before the store
    /// closes.
    engine_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    channels: RwLock<HashMap<String, Channel>>,
    /// Whether this replica holds the `alerts` lease (always, for a hub on its own): only
    /// the holder evaluates rules and delivers notifications.
    holding: std::sync::atomic::AtomicBool,
}

impl Default for Alerts {
    fn default() -> Self {
        Self::new()
    }
}

impl Alerts {
    pub fn new() -> Alerts {
        let (tx, rx) = mpsc::channel(QUEUE);
        Alerts {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            kick: Notify::new(),
            devices: Notify::new(),
            engine_task: std::sync::Mutex::new(None),
            channels: RwLock::new(HashMap::new()),
            holding: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Hands committed samples of a device to the engine (waits when the engine is behind,
    /// so no sample escapes evaluation).
    pub async fn observe(&self, device_id: &str, device_name: &str, samples: Vec<MetricSample>) {
        let _ = self
            .tx
            .send(Msg::Samples {
                device_id: device_id.to_string(),
                device_name: Some(device_name.to_string()),
                samples,
            })
            .await;
    }

    /// Hands samples another replica committed to the engine (only while this one holds
    /// the `alerts` lease; see [`crate::replica`]).
    pub async fn observe_remote(&self, device_id: &str, samples: Vec<MetricSample>) {
        let _ = self
            .tx
            .send(Msg::Samples {
                device_id: device_id.to_string(),
                device_name: None,
                samples,
            })
            .await;
    }

    /// Records whether this replica holds the `alerts` lease; true if that changed.
    pub(crate) fn set_holding(&self, held: bool) -> bool {
        self.holding
            .swap(held, std::sync::atomic::Ordering::Relaxed)
            != held
    }

    /// The device list changed (added, renamed, removed, or another replica said so): the
    /// engine reads it again within a second.
    pub fn devices_changed(&self) {
        self.devices.notify_one();
    }

    /// Waits (at most `limit`) for the engine to store its last states after shutdown.
    pub async fn stopped(&self, limit: Duration) {
        let task = self
            .engine_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(limit, t).await;
        }
    }

    /// Whether this replica evaluates alerts now.
    pub fn holding(&self) -> bool {
        self.holding.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reloads rules, channels and windows from the store; returns once applied.
    pub async fn reload(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Reload(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Acknowledges a firing alert held by the engine.
    pub async fn ack(&self, id: &str, by: &str) -> Option<AlertEvent> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Ack {
                id: id.to_string(),
                by: by.to_string(),
                reply,
            })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    pub fn channel(&self, id: &str) -> Option<Channel> {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    pub fn channels(&self) -> Vec<Channel> {
        let mut v: Vec<Channel> = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }
}

/// The device page a notification links to.
pub fn device_url(state: &AppState, device_id: &str) -> String {
    format!("{}/devices/{device_id}", state.public_url)
}

/// Reads every rule from the store (unreadable ones are skipped with a warning).
pub async fn load_rules(state: &AppState) -> Result<Vec<Rule>, vitals_store::StoreError> {
    Ok(state
        .store
        .alert_docs("rule")
        .await?
        .into_iter()
        .filter_map(|d| match serde_json::from_str::<Rule>(&d.data) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(id = %d.id, error = %e, "unreadable alert rule skipped");
                None
            }
        })
        .collect())
}

pub async fn load_windows(
    state: &AppState,
) -> Result<Vec<MaintenanceWindow>, vitals_store::StoreError> {
    Ok(state
        .store
        .alert_docs("window")
        .await?
        .into_iter()
        .filter_map(|d| serde_json::from_str(&d.data).ok())
        .collect())
}

async fn load_channels(state: &AppState) -> Result<(), vitals_store::StoreError> {
    let mut map = HashMap::new();
    for d in state.store.alert_docs("channel").await? {
        match serde_json::from_str::<notify::ChannelDoc>(&d.data)
            .map_err(|e| vec![e.to_string()])
            .and_then(Channel::from_doc)
        {
            Ok(c) => {
                map.insert(c.id.clone(), c);
            }
            Err(e) => tracing::warn!(id = %d.id, error = ?e, "unreadable channel skipped"),
        }
    }
    *state
        .alerts
        .channels
        .write()
        .unwrap_or_else(|p| p.into_inner()) = map;
    Ok(())
}

async fn load_devices(state: &AppState, engine: &mut Engine) -> Step {
    match state.store.list_devices().await {
        Ok(list) => engine.set_devices(list.into_iter().map(|d| {
            (
                d.device.id,
                DeviceInfo {
                    name: d.device.name,
                    last_seen: d.device.last_seen,
                },
            )
        })),
        Err(e) => {
            tracing::warn!(error = %e, "alert engine could not list devices");
            Step::default()
        }
    }
}

/// Reloads rules, windows and channels (devices are followed through their samples and
/// `DevicesChanged` events instead: listing a large fleet on every API call is costly).
async fn reload(state: &AppState, engine: &mut Engine) -> Step {
    let _ = load_channels(state).await;
    if let Ok(w) = load_windows(state).await {
        engine.set_windows(w);
    }
    match load_rules(state).await {
        Ok(rules) => engine.set_rules(rules, crate::now_ms()),
        Err(e) => {
            tracing::warn!(error = %e, "alert engine could not load rules");
            Step::default()
        }
    }
}

/// Creates the default rules once (from the `alerts.*` settings, for every device), and
/// keeps them following those settings.
pub async fn sync_builtin_rules(state: &AppState) -> Result<(), vitals_store::StoreError> {
    let s = state.settings();
    let now = crate::now_ms();
    let int = |k: &str| {
        s.as_json()
            .get(k)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    };
    let duration = u32::try_from(int("alerts.durationSec")).unwrap_or(60);
    let offline = u32::try_from(s.offline_after_ms() / 1000)
        .unwrap_or(60)
        .max(10);
    let wanted = [
        (
            "cpu",
            "High CPU",
            rule::Metric::Cpu,
            int("alerts.cpuThreshold"),
            duration,
            rule::Severity::Warning,
        ),
        (
            "memory",
            "High memory",
            rule::Metric::Memory,
            int("alerts.memoryThreshold"),
            duration,
            rule::Severity::Warning,
        ),
        (
            "disk",
            "Disk almost full",
            rule::Metric::Disk,
            int("alerts.diskThreshold"),
            duration,
            rule::Severity::Critical,
        ),
        (
            "offline",
            "Device offline",
            rule::Metric::Offline,
            0,
            offline,
            rule::Severity::Critical,
        ),
    ];
    let created = state
        .store
        .meta_get("alerts.builtin_created")
        .await?
        .is_some();
    let existing = load_rules(state).await?;
    for (tag, name, metric, threshold, dur, severity) in wanted {
        let current = existing.iter().find(|r| r.builtin.as_deref() == Some(tag));
        let next = match current {
            Some(r) => {
                if r.threshold == threshold as f64 && r.duration_sec == dur {
                    continue;
                }
                Rule {
                    threshold: threshold as f64,
                    duration_sec: dur,
                    recovery_sec: if metric == rule::Metric::Offline {
                        0
                    } else {
                        dur
                    },
                    updated_at: now,
                    ..r.clone()
                }
            }
            None if created => continue, // deleted by an admin: stays deleted
            None => Rule {
                id: uuid::Uuid::new_v4().to_string(),
                name: name.into(),
                device_ids: vec![],
                metric,
                subject: None,
                op: rule::Op::Gt,
                threshold: threshold as f64,
                duration_sec: dur,
                recovery_sec: if metric == rule::Metric::Offline {
                    0
                } else {
                    dur
                },
                hysteresis: if metric.is_percent() { 5.0 } else { 0.0 },
                severity,
                channel_ids: vec![],
                repeat_sec: 0,
                enabled: true,
                quiet_hours: None,
                builtin: Some(tag.into()),
                created_at: now,
                updated_at: now,
            },
        };
        let json = serde_json::to_string(&next).unwrap_or_default();
        state
            .store
            .alert_doc_put("rule", &next.id, &json, now)
            .await?;
    }
    if !created {
        state.store.meta_set("alerts.builtin_created", "1").await?;
    }
    Ok(())
}

/// Starts the engine and delivery tasks.
pub fn spawn(state: &AppState) {
    let rx = state
        .alerts
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(rx) = rx else { return };
    let engine = tokio::spawn(run_engine(state.clone(), rx));
    *state
        .alerts
        .engine_task
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(engine);
    tokio::spawn(run_delivery(state.clone()));
}

async fn run_engine(state: AppState, mut rx: mpsc::Receiver<Msg>) {
    if let Err(e) = sync_builtin_rules(&state).await {
        tracing::warn!(error = %e, "could not create the default alert rules");
    }
    // Whether this task's engine holds the states (the `alerts` lease was taken by it; the
    // delivery task may take the lease first, so the shared flag does not say).
    let (mut engine, mut evaluating) = take_over(&state).await;
    let mut devices_dirty = false;
    let mut ticks: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break };
                let mut step = Step::default();
                let mut reply = handle(&state, &mut engine, evaluating, m, &mut step).await;
                // Evaluate what arrives in the next PERSIST_WINDOW into the same step, so one
                // commit carries the state changes of many batches; a step with something to
                // notify, or an API call, is committed at once.
                // Batches are taken every DRAIN_EVERY rather than as each arrives, so the
                // engine wakes a few times per window, not once per agent's batch.
                let deadline = tokio::time::Instant::now() + PERSIST_WINDOW;
                let mut n = 1;
                'window: while reply.is_none() && step.notices.is_empty() && n < 4096 {
                    while let Ok(m) = rx.try_recv() {
                        reply = handle(&state, &mut engine, evaluating, m, &mut step).await;
                        n += 1;
                        if reply.is_some() || !step.notices.is_empty() || n >= 4096 {
                            break 'window;
                        }
                    }
                    let now = tokio::time::Instant::now();
                    if now >= deadline || rx.is_closed() {
                        break;
                    }
                    tokio::time::sleep_until(deadline.min(now + DRAIN_EVERY)).await;
                }
                persist(&state, step).await;
                if let Some(r) = reply {
                    r.send();
                }
            }
            _ = tick.tick() => {
                // Replicas: only the lease holder evaluates. A replica that gains the lease
                // starts from the states the last holder committed.
                let now = crate::replica::lease(&state, "alerts").await;
                if now != evaluating {
                    // Gained: start from the states the last holder committed. Lost:
                    // whatever this engine held is the new holder's now; never persist it.
                    (engine, evaluating) = take_over(&state).await;
                }
                if !evaluating {
                    continue;
                }
                ticks += 1;
                // Device changes are applied at most once a second (a fleet being
                // provisioned sends one event per device). With replicas, devices (and
                // their last contact) are also read from the database every 10 s, so a
                // device whose samples reach another replica is never taken for offline
                // when NATS loses events.
                let mut step = Step::default();
                if devices_dirty || (state.replicas.enabled() && ticks.is_multiple_of(10)) {
                    devices_dirty = false;
                    step = load_devices(&state, &mut engine).await;
                }
                merge(&mut step, engine.tick(crate::now_ms()));
                persist(&state, step).await;
            }
            _ = state.alerts.devices.notified() => devices_dirty = true,
            _ = state.shutdown.cancelled() => {
                // Evaluate what is already queued, then stop.
                let mut step = Step::default();
                let mut replies = Vec::new();
                while let Ok(m) = rx.try_recv() {
                    replies.extend(handle(&state, &mut engine, evaluating, m, &mut step).await);
                }
                persist(&state, step).await;
                replies.into_iter().for_each(Reply::send);
                break;
            }
        }
    }
    tracing::debug!("alert engine stopped");
}

/// Rules, channels or windows were edited: this replica reloads them, and so do the others.
pub async fn rules_changed(state: &AppState) {
    state.alerts.reload().await;
    state
        .replicas
        .announce(crate::replica::Control::AlertRules)
        .await;
}

/// A fresh engine with rules, devices and the states the database holds (this replica has
/// just started or gained the `alerts` lease).
async fn take_over(state: &AppState) -> (Engine, bool) {
    let mut engine = Engine::new(
        crate::now_ms(),
        Box::new(|| uuid::Uuid::new_v4().to_string()),
    );
    if !crate::replica::lease(state, "alerts").await {
        return (engine, false);
    }
    let mut step = load_devices(state, &mut engine).await;
    merge(&mut step, reload(state, &mut engine).await);
    persist(state, step).await;
    match state.store.alert_states().await {
        Ok(rows) => {
            let stale = engine.restore(rows);
            if !stale.is_empty() {
                let w = AlertWrite {
                    states: stale.into_iter().map(|k| (k, None)).collect(),
                    ..AlertWrite::default()
                };
                let _ = state.store.alert_apply(&w).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "could not restore alert states"),
    }
    (engine, true)
}

/// An answer to an API call, sent once the step it caused is committed.
enum Reply {
    Reload(oneshot::Sender<()>),
    Ack(oneshot::Sender<Option<AlertEvent>>, Option<Box<AlertEvent>>),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Reload(r) => {
                let _ = r.send(());
            }
            Reply::Ack(r, e) => {
                let _ = r.send(e.map(|e| *e));
            }
        }
    }
}

async fn handle(
    state: &AppState,
    engine: &mut Engine,
    evaluating: bool,
    m: Msg,
    step: &mut Step,
) -> Option<Reply> {
    match m {
        Msg::Samples { .. } if !evaluating => None,
        Msg::Samples {
            device_id,
            device_name,
            samples,
        } => {
            let started = std::time::Instant::now();
            if let Some(name) = device_name {
                engine.note_device(&device_id, &name);
            }
            engine.observe(&device_id, &samples, crate::now_ms(), step);
            let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let rules = engine
                .rules()
                .iter()
                .filter(|r| r.metric != rule::Metric::Offline && r.applies_to(&device_id))
                .count();
            metrics::counter!(crate::telemetry::ALERT_ENGINE_NANOS).increment(spent);
            metrics::counter!(crate::telemetry::ALERT_EVALUATIONS)
                .increment((samples.len() * rules) as u64);
            None
        }
        Msg::Reload(reply) if !evaluating => {
            // Not evaluating: only the channels matter (for the test-send route).
            let _ = load_channels(state).await;
            Some(Reply::Reload(reply))
        }
        Msg::Reload(reply) => {
            let s = reload(state, engine).await;
            merge(step, s);
            Some(Reply::Reload(reply))
        }
        Msg::Ack { id, by, reply } => {
            let out = engine
                .ack(&id, &by, crate::now_ms())
                .map(|(event, key, phase)| {
                    step.states.push((key, Some(phase)));
                    step.events.push(event.clone());
                    event
                });
            Some(Reply::Ack(reply, out.map(Box::new)))
        }
    }
}

fn merge(into: &mut Step, from: Step) {
    into.states.extend(from.states);
    into.events.extend(from.events);
    into.notices.extend(from.notices);
}

/// Channels a rule's notifications go to.
fn targets(state: &AppState, rule: &Rule) -> Vec<String> {
    if !rule.channel_ids.is_empty() {
        return rule.channel_ids.clone();
    }
    let slack = state.settings().as_json()["alerts.slackWebhookUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if slack.is_empty() {
        Vec::new()
    } else {
        vec![DEFAULT_SLACK.to_string()]
    }
}

/// Stores a step in one transaction (retrying while the database is away), then mirrors
/// events to seed 001's `alerts` bucket and the live bus, and wakes the delivery task.
async fn persist(state: &AppState, step: Step) {
    if step.is_empty() {
        return;
    }
    let now = crate::now_ms();
    let mut w = AlertWrite::default();
    for (k, phase) in &step.states {
        w.states.push((
            k.clone(),
            phase.as_ref().and_then(|p| serde_json::to_string(p).ok()),
        ));
    }
    // The last version of each event wins (a step may touch one several times).
    let mut seen = std::collections::HashSet::new();
    let mut events: Vec<&AlertEvent> = Vec::new();
    for e in step.events.iter().rev() {
        if seen.insert(e.id.as_str()) {
            events.push(e);
        }
    }
    events.reverse();
    for e in &events {
        w.events.push(AlertEventRow {
            id: e.id.clone(),
            active: e.state == "firing",
            started_at: e.started_at,
            data: serde_json::to_string(e).unwrap_or_default(),
        });
    }
    for (notice, event, rule) in &step.notices {
        let n = Notification {
            delivery_id: format!("{}:{}:{}", event.id, notice.name(), event.notifications),
            kind: notice.name().to_string(),
            alert: event.clone(),
            rule: RuleBrief::of(rule),
            url: device_url(state, &event.device_id),
        };
        let data = serde_json::to_string(&n).unwrap_or_default();
        for ch in targets(state, rule) {
            w.outbox.push(NewNotification {
                event_id: event.id.clone(),
                channel_id: ch,
                data: data.clone(),
                next_at: now,
                created_at: now,
            });
        }
    }
    let mut wait = Duration::from_millis(100);
    loop {
        match state.store.alert_apply(&w).await {
            Ok(()) => break,
            Err(e) if !state.shutdown.is_cancelled() && wait < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "storing alert state failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, "storing alert state failed; giving up on this step");
                return;
            }
        }
    }
    let fired = step
        .notices
        .iter()
        .filter(|(n, ..)| *n == engine::Notice::Firing)
        .count();
    metrics::counter!(crate::telemetry::ALERTS_FIRED).increment(fired as u64);
    for e in events {
        mirror(state, e).await;
    }
    if !w.outbox.is_empty() {
        state.alerts.kick.notify_one();
    }
}

/// Mirrors an event into seed 001's `alerts` bucket (present while firing) and onto the
/// live bus (for `/ws/live` viewers).
async fn mirror(state: &AppState, e: &AlertEvent) {
    let present = state.live.app.read(|d| d.get_json(ALERTS, &e.id).is_some());
    let op = match (e.state == "firing", present) {
        (true, false) => Some(Op::Insert {
            bucket: ALERTS,
            data: json!({
                "id": e.id,
                "metric": if e.subject.is_empty() { e.metric.name().to_string() } else { format!("{} {}", e.metric.name(), e.subject) },
                "threshold": e.threshold,
                "severity": e.severity.seed001(),
                "timestamp": e.fired_at,
            }),
        }),
        (false, true) => Some(Op::Delete {
            bucket: ALERTS,
            key: e.id.clone(),
        }),
        _ => None,
    };
    if let Some(op) = op
        && let Err(err) = state.live.app.execute(vec![op], crate::now_ms()).await
    {
        tracing::warn!(error = %err.message, "could not mirror the alert into the alerts bucket");
    }
    if let Ok(j) = serde_json::to_string(&json!({"type": "alert", "alert": e})) {
        let _ = state.events.send(LiveEvent::Alert(Arc::from(j)));
    }
}

fn backoff_ms(attempt: i64) -> i64 {
    (1000i64 << attempt.clamp(0, 8)).min(300_000)
}

async fn run_delivery(state: AppState) {
    loop {
        tokio::select! {
            _ = state.alerts.kick.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.shutdown.cancelled() => return,
        }
        // Each round checks the lease again, so a replica that lost it stops sending.
        while crate::replica::lease(&state, "alerts").await {
            let due = match state.store.alert_outbox_due(crate::now_ms(), 16).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the notification outbox");
                    break;
                }
            };
            if due.is_empty() {
                break;
            }
            futures_util::future::join_all(due.into_iter().map(|i| deliver_item(&state, i))).await;
        }
    }
}

/// The channel config for `id` (the default Slack channel comes from settings).
fn channel_config(state: &AppState, id: &str) -> Option<ChannelConfig> {
    if id == DEFAULT_SLACK {
        let url = state.settings().as_json()["alerts.slackWebhookUrl"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return (!url.is_empty()).then_some(ChannelConfig::Slack(notify::SlackConfig { url }));
    }
    state.alerts.channel(id).map(|c| c.config)
}

fn allow_private(state: &AppState) -> bool {
    state.settings().as_json()["alerts.allowPrivateTargets"]
        .as_bool()
        .unwrap_or(false)
}

async fn deliver_item(state: &AppState, item: OutboxItem) {
    let attempt = item.attempts + 1;
    let parsed: Result<Notification, _> = serde_json::from_str(&item.data);
    let kind = parsed
        .as_ref()
        .map(|n| n.kind.clone())
        .unwrap_or_else(|_| "unknown".into());
    let result = match (&parsed, channel_config(state, &item.channel_id)) {
        (Err(e), _) => Err(outbound::OutboundError::Refused(format!(
            "unreadable notification: {e}"
        ))),
        (_, None) => Err(outbound::OutboundError::Refused(
            "the channel no longer exists".into(),
        )),
        (Ok(n), Some(c)) => {
            let started = std::time::Instant::now();
            let r = notify::deliver(&c, n, allow_private(state), crate::now_ms()).await;
            metrics::histogram!(crate::telemetry::NOTIFY_SECONDS)
                .record(started.elapsed().as_secs_f64());
            r
        }
    };
    let now = crate::now_ms();
    let (ok, status, error, retry_at) = match &result {
        Ok(d) => (true, d.status, None, None),
        Err(e) => {
            let retry =
                (!e.permanent() && attempt < MAX_ATTEMPTS).then(|| now + backoff_ms(attempt - 1));
            tracing::warn!(channel = %item.channel_id, attempt, error = %e, retry = retry.is_some(), "notification not delivered");
            (false, None, Some(e.to_string()), retry)
        }
    };
    metrics::counter!(crate::telemetry::NOTIFICATIONS, "outcome" => if ok { "sent" } else if retry_at.is_some() { "retry" } else { "failed" }).increment(1);
    let rec = DeliveryRecord {
        at: now,
        outbox_id: Some(item.id),
        event_id: Some(item.event_id.clone()),
        channel_id: item.channel_id.clone(),
        kind,
        attempt,
        ok,
        status: status.map(i64::from),
        error,
        retry_at,
    };
    if let Err(e) = state.store.alert_delivery(&rec).await {
        tracing::error!(error = %e, "could not log a delivery");
    }
}

/// Sends a test notification through a channel now and logs it.
pub async fn send_test(
    state: &AppState,
    channel: &Channel,
) -> Result<notify::Delivered, outbound::OutboundError> {
    let now = crate::now_ms();
    let event = AlertEvent {
        id: format!("test-{}", uuid::Uuid::new_v4()),
        rule_id: "test".into(),
        rule_name: "Test notification".into(),
        device_id: "00000000-0000-0000-0000-000000000000".into(),
        device_name: "Vitals test device".into(),
        metric: rule::Metric::Cpu,
        subject: String::new(),
        op: ">".into(),
        threshold: 90.0,
        severity: rule::Severity::Info,
        state: "firing".into(),
        started_at: now,
        fired_at: now,
        ended_at: None,
        value: 95.0,
        peak: 95.0,
        duration_sec: 60,
        acked_at: None,
        acked_by: None,
        notifications: 1,
    };
    let n = Notification {
        delivery_id: event.id.clone(),
        kind: "test".into(),
        rule: RuleBrief {
            id: "test".into(),
            name: "Test notification".into(),
            duration_sec: 60,
            recovery_sec: 60,
            hysteresis: 0.0,
            repeat_sec: 0,
        },
        url: format!("{}/", state.public_url),
        alert: event,
    };
    let r = notify::deliver(&channel.config, &n, allow_private(state), now).await;
    let rec = DeliveryRecord {
        at: crate::now_ms(),
        outbox_id: None,
        event_id: None,
        channel_id: channel.id.clone(),
        kind: "test".into(),
        attempt: 1,
        ok: r.is_ok(),
        status: r.as_ref().ok().and_then(|d| d.status).map(i64::from),
        error: r.as_ref().err().map(ToString::to_string),
        retry_at: None,
    };
    if let Err(e) = state.store.alert_delivery(&rec).await {
        tracing::warn!(error = %e, "could not log the test delivery");
    }
    r
}
