//! The subscription registry and the dispatcher that feeds it from the bus.
//!
//! A *view* is a query with its parameters ([`QueryKey`]). Every subscription to the same view,
//! on any connection, shares one [`Node`]: the view is evaluated once, serialised once and
//! compared once with the result last pushed; only on a real change is the new result handed
//! to each subscriber's outbox. Invariants:
//! - A change event marks dirty only the views it can affect (bucket + metric name, device id).
//! - A node is evaluated at most once per `coalesce` interval (50 ms; one second for the
//!   whole-fleet views): the first change after a quiet period is evaluated at once, later
//!   ones in the same window together at its end.
//! - A subscriber's reply (with the initial data) is queued under the registry lock, before
//!   any push of that subscription can be, and the initial data is the node's current result:
//!   a change is never missed and never pushed twice.
//! - Evaluation reads memory only (the app store's index and the device cache), never the
//!   database, and never waits on a connection.
//!
//! Alongside views, the registry holds seed 002's per-device streams (one per device with at
//! least one viewer, released with the last) and seed 003's broadcast viewers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use vitals_proto::MetricSample;
use vitals_store::{Device, DeviceWithLatest};

use super::appstore::{ALERTS, AppChange, AppStore, METRICS, OpError, bucket_index};
use super::outbox::Outbox;
use crate::state::{AppState, LiveEvent, LiveSample};

/// Points in a fleet-overview sparkline.
pub const SPARK_POINTS: usize = 60;
/// Points in seed 002's `history` channel.
pub const HISTORY_POINTS: usize = 30;
/// Longest window of a `device-series` view, in seconds.
pub const MAX_SERIES_SECONDS: u32 = 3600;
/// Most records `latest-metrics` may ask for.
pub const MAX_LATEST: usize = 10_000;

/// A view: a query and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryKey {
    AllMetrics,
    MetricsByName(String),
    MetricCount,
    LatestMetrics(usize),
    ActiveAlerts,
    Devices,
    DeviceLatest(String),
    DeviceSeries(String, u32),
    FleetOverview,
}

fn param_str<'a>(params: &'a Value, name: &str, query: &str) -> Result<&'a str, OpError> {
    match params.get(name).and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= 1024 => Ok(s),
        _ => Err(OpError::new(
            "VALIDATION_ERROR",
            format!("query {query} needs a string parameter `{name}`"),
        )),
    }
}

fn param_uint(params: &Value, name: &str, query: &str, max: u64) -> Result<u64, OpError> {
    match params.get(name).and_then(Value::as_u64) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(OpError::new(
            "VALIDATION_ERROR",
            format!("query {query} needs a whole-number parameter `{name}` in 1..={max}"),
        )),
    }
}

impl QueryKey {
    /// Parses a query name and its parameters.
    pub fn parse(query: &str, params: &Value) -> Result<QueryKey, OpError> {
        Ok(match query {
            "all-metrics" => QueryKey::AllMetrics,
            "metrics-by-name" => {
                QueryKey::MetricsByName(param_str(params, "name", query)?.to_string())
            }
            "metric-count" => QueryKey::MetricCount,
            "latest-metrics" => {
                QueryKey::LatestMetrics(param_uint(params, "n", query, MAX_LATEST as u64)? as usize)
            }
            "active-alerts" => QueryKey::ActiveAlerts,
            "devices" => QueryKey::Devices,
            "device-latest" => QueryKey::DeviceLatest(param_str(params, "id", query)?.to_string()),
            "device-series" => QueryKey::DeviceSeries(
                param_str(params, "id", query)?.to_string(),
                param_uint(params, "seconds", query, u64::from(MAX_SERIES_SECONDS))? as u32,
            ),
            "fleet-overview" => QueryKey::FleetOverview,
            other => {
                return Err(OpError::new(
                    "NOT_FOUND",
                    format!(
                        "unknown query {other:?}; known: all-metrics, metrics-by-name, \
                         metric-count, latest-metrics, active-alerts, devices, device-latest, \
                         device-series, fleet-overview"
                    ),
                ));
            }
        })
    }

    /// The device a device view is about.
    pub fn device(&self) -> Option<&str> {
        match self {
            QueryKey::DeviceLatest(id) | QueryKey::DeviceSeries(id, _) => Some(id),
            _ => None,
        }
    }
}

/// Thresholds and clock for one evaluation.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub now: i64,
    pub stale_after_ms: i64,
    pub offline_after_ms: i64,
}

impl Ctx {
    pub fn of(state: &AppState) -> Ctx {
        let s = state.settings();
        Ctx {
            now: crate::now_ms(),
            stale_after_ms: s.stale_after_ms(),
            offline_after_ms: s.offline_after_ms(),
        }
    }

    fn status(&self, last_seen: Option<i64>) -> &'static str {
        match last_seen {
            Some(t) if self.now - t <= self.stale_after_ms => "online",
            Some(t) if self.now - t <= self.offline_after_ms => "stale",
            _ => "offline",
        }
    }
}

/// A sample flattened into its series (without `kernel.*`: live charts show the headline
/// series, and a device's ~600 kernel statistics would multiply every window's memory).
struct Flat {
    ts: i64,
    values: Vec<(Box<str>, f64)>,
}

fn flatten(s: &MetricSample) -> Flat {
    let mut values = Vec::with_capacity(32);
    vitals_proto::series::for_each_series(s, |n, v| {
        if !n.starts_with("kernel.") {
            values.push((Box::from(n), v))
        }
    });
    Flat { ts: s.ts, values }
}

/// What the hub knows of one device, kept current from the bus.
struct DeviceEntry {
    device: Device,
    latest: Option<LiveSample>,
    key_values: Vec<(&'static str, f64)>,
    spark: VecDeque<SparkPoint>,
}

/// `(ts, [cpu, mem.pct, disk.pct, net.rx_bps + net.tx_bps])`.
type SparkPoint = (i64, [Option<f64>; 4]);
/// The series of a sparkline point, in [`SparkPoint`] order, as named in `fleet-overview`.
const SPARK_SERIES: [&str; 4] = ["cpu", "mem.pct", "disk.pct", "net.bps"];

/// Who subscribes: a connection, its subscription number and its outbox.
pub struct Subscriber<'a> {
    pub conn: u64,
    pub sub: u32,
    pub outbox: &'a Arc<Outbox>,
}

impl DeviceEntry {
    /// A sample known only by its card figures (another replica's, while no view here needs
    /// it whole) moves the cards and sparklines, and an older latest sample is dropped rather
    /// than shown as current (the store's newest sample stands in for it). A sample seen
    /// twice (a replica switching between cards and whole samples may get both) replaces its
    /// sparkline point instead of adding one.
    fn observe(&mut self, l: &LiveSample) {
        let s = l.sample();
        if self.latest.as_ref().is_some_and(|m| m.sample().ts > s.ts)
            || self.spark.back().is_some_and(|(ts, _)| *ts > s.ts)
        {
            return; // an old sample replayed: the latest stays
        }
        if l.is_whole() {
            self.latest = Some(l.clone());
        } else if self.latest.as_ref().is_some_and(|m| m.sample().ts < s.ts) {
            self.latest = None;
        }
        if self.spark.back().is_some_and(|(ts, _)| *ts == s.ts) {
            self.spark.pop_back();
        }
        self.key_values.clear();
        let mut point = [None; 4];
        vitals_proto::series::for_each_key_series(s, |n, v| {
            self.key_values.push((n, v));
            match n {
                "cpu" => point[0] = Some(v),
                "mem.pct" => point[1] = Some(v),
                "disk.pct" => point[2] = Some(v),
                _ => {}
            }
        });
        point[3] = Some(s.net.rx_bps + s.net.tx_bps);
        self.spark.push_back((s.ts, point));
        while self.spark.len() > SPARK_POINTS {
            self.spark.pop_front();
        }
    }
}

/// One shared view.
struct Node {
    subs: Vec<(u64, u32, Arc<Outbox>)>,
    last: Arc<str>,
    dirty: bool,
    last_eval: Instant,
    /// `device-series` only: the samples in the window, oldest first.
    window: VecDeque<Flat>,
}

/// A history point of seed 002's `history` channel.
#[derive(Clone, Copy)]
struct HistPoint {
    ts: i64,
    cpu: f64,
    mem_used: f64,
    mem_total: f64,
    rx: f64,
    tx: f64,
}

/// Seed 002's channels.
pub const CHANNELS: [&str; 5] = [
    "metrics",
    "system-info",
    "processes",
    "history",
    "network-interfaces",
];

pub fn channel_bit(name: &str) -> Option<u8> {
    CHANNELS.iter().position(|c| *c == name).map(|i| 1 << i)
}

/// One device's shared stream (seed 002): one per device with viewers, however many.
#[derive(Default)]
struct DeviceStream {
    viewers: HashMap<u64, (Arc<Outbox>, u8)>,
    history: VecDeque<HistPoint>,
}

impl DeviceStream {
    fn history_frame(&self) -> String {
        let mut cpu = String::from("[");
        let mut mem = String::from("[");
        let mut net = String::from("[");
        for (i, p) in self.history.iter().enumerate() {
            if i > 0 {
                cpu.push(',');
                mem.push(',');
                net.push(',');
            }
            let _ = write!(cpu, r#"{{"time":{},"value":{}}}"#, p.ts, num(p.cpu));
            let _ = write!(
                mem,
                r#"{{"time":{},"used":{},"available":{}}}"#,
                p.ts,
                num(p.mem_used),
                num((p.mem_total - p.mem_used).max(0.0))
            );
            let _ = write!(
                net,
                r#"{{"time":{},"download":{},"upload":{}}}"#,
                p.ts,
                num(p.rx),
                num(p.tx)
            );
        }
        format!(r#"{{"type":"history","data":{{"cpu":{cpu}],"memory":{mem}],"network":{net}]}}}}"#)
    }

    fn observe(&mut self, s: &MetricSample) {
        if self.history.iter().any(|p| p.ts == s.ts) {
            return;
        }
        let p = HistPoint {
            ts: s.ts,
            cpu: s.cpu.total,
            mem_used: s.mem.used,
            mem_total: s.mem.total,
            rx: s.net.rx_bps,
            tx: s.net.tx_bps,
        };
        let at = self.history.partition_point(|q| q.ts < s.ts);
        self.history.insert(at, p);
        while self.history.len() > HISTORY_POINTS {
            self.history.pop_front();
        }
    }
}

/// A finite number as JSON (non-finite values become `null`).
fn num(v: f64) -> String {
    if v.is_finite() {
        Value::from(v).to_string()
    } else {
        "null".into()
    }
}

fn key_hash(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish() | (1 << 63)
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<QueryKey, Node>,
    dirty: HashSet<QueryKey>,
    /// `latest-metrics` sizes with a node.
    latest_ns: BTreeSet<usize>,
    /// device id -> `device-series` windows with a node.
    series: HashMap<String, BTreeSet<u32>>,
    devices: HashMap<String, DeviceEntry>,
    /// Device ids in list order.
    order: Vec<String>,
    streams: HashMap<String, DeviceStream>,
    broadcast: HashMap<u64, Arc<Outbox>>,
    pushes: u64,
}

/// The registry (see the module docs).
pub struct Registry {
    inner: Mutex<Inner>,
    coalesce: Duration,
    /// Notified when a view that needs whole samples opens (a stream, a broadcast viewer, a
    /// series window, a device's latest sample): a replica then subscribes to the other
    /// replicas' whole samples ([`Registry::wants_whole_samples`]).
    pub interest: tokio::sync::Notify,
    /// Wakes the dispatcher to flush views changed outside it ([`apply_remote`]).
    kick: tokio::sync::Notify,
}

fn push_frame(sub: u32, data: &str) -> String {
    let mut f = String::with_capacity(data.len() + 80);
    let _ = write!(
        f,
        r#"{{"type":"push","channel":"subscription","subscriptionId":"sub-{sub}","data":{data}}}"#
    );
    f
}

fn evaluate(
    inner: &Inner,
    key: &QueryKey,
    window: &VecDeque<Flat>,
    app: &AppStore,
    ctx: Ctx,
) -> String {
    match key {
        QueryKey::AllMetrics => app.read(|d| d.all_json(METRICS)),
        QueryKey::MetricsByName(n) => app.read(|d| d.by_index_json(METRICS, n)),
        QueryKey::MetricCount => app.read(|d| d.count(METRICS, None)).to_string(),
        QueryKey::LatestMetrics(n) => app.read(|d| d.last_json(METRICS, *n)),
        QueryKey::ActiveAlerts => app.read(|d| d.all_json(ALERTS)),
        QueryKey::Devices => {
            let mut out = String::from("[");
            for (i, e) in inner
                .order
                .iter()
                .filter_map(|id| inner.devices.get(id))
                .enumerate()
            {
                if i > 0 {
                    out.push(',');
                }
                device_json(&mut out, e, ctx);
                out.push('}');
            }
            out.push(']');
            out
        }
        QueryKey::DeviceLatest(id) => match inner
            .devices
            .get(id)
            .and_then(|e| e.latest.as_ref())
            .and_then(|l| Some((l.sample().ts, l.json()?)))
        {
            Some((ts, json)) => format!(
                r#"{{"deviceId":{},"ts":{ts},"sample":{json}}}"#,
                Value::from(id.as_str())
            ),
            None => "null".into(),
        },
        QueryKey::DeviceSeries(id, secs) => {
            if !inner.devices.contains_key(id) {
                return "null".into();
            }
            let from = ctx.now - i64::from(*secs) * 1000;
            let rows: Vec<&Flat> = window.iter().filter(|f| f.ts >= from).collect();
            let mut cols: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
            for (i, f) in rows.iter().enumerate() {
                for (n, v) in &f.values {
                    cols.entry(n).or_insert_with(|| vec![None; rows.len()])[i] = Some(*v);
                }
            }
            let ts: Vec<i64> = rows.iter().map(|f| f.ts).collect();
            serde_json::json!({"deviceId": id, "seconds": secs, "timestamps": ts, "series": cols})
                .to_string()
        }
        QueryKey::FleetOverview => {
            let mut out = String::from("[");
            for (i, e) in inner
                .order
                .iter()
                .filter_map(|id| inner.devices.get(id))
                .enumerate()
            {
                if i > 0 {
                    out.push(',');
                }
                device_json(&mut out, e, ctx);
                out.push_str(r#","latest":{"#);
                for (j, (k, v)) in e.key_values.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, r#""{k}":{}"#, num(*v));
                }
                out.push_str(r#"},"spark":{"ts":["#);
                let join = |out: &mut String, f: &dyn Fn(&SparkPoint) -> String| {
                    for (j, p) in e.spark.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        out.push_str(&f(p));
                    }
                };
                join(&mut out, &|p| p.0.to_string());
                for (k, name) in SPARK_SERIES.iter().enumerate() {
                    let _ = write!(out, r#"],"{name}":["#);
                    join(&mut out, &|p| p.1[k].map_or("null".into(), num));
                }
                out.push_str("]}}");
            }
            out.push(']');
            out
        }
    }
}

/// Writes a device's summary, leaving the object open.
fn device_json(out: &mut String, e: &DeviceEntry, ctx: Ctx) {
    let d = &e.device;
    let _ = write!(
        out,
        r#"{{"id":{},"name":{},"hostId":{},"simulated":{},"agentVersion":{},"lastSeen":{},"status":"{}""#,
        Value::from(d.id.as_str()),
        Value::from(d.name.as_str()),
        Value::from(d.host_id.as_str()),
        d.simulated,
        d.agent_version.as_deref().map_or(Value::Null, Value::from),
        d.last_seen.map_or(Value::Null, Value::from),
        ctx.status(d.last_seen),
    );
}

impl Registry {
    pub fn new(coalesce: Duration) -> Self {
        Registry {
            inner: Mutex::new(Inner::default()),
            coalesce,
            interest: tokio::sync::Notify::new(),
            kick: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whole-fleet views change with every sample of every device and are large; their
    /// sparklines and statuses have one-second resolution, so they are pushed at most once
    /// a second.
    fn coalesce_for(&self, key: &QueryKey) -> Duration {
        match key {
            QueryKey::FleetOverview | QueryKey::Devices => {
                self.coalesce.max(Duration::from_secs(1))
            }
            _ => self.coalesce,
        }
    }

    /// Replaces the device list (start-up and after `DevicesChanged`), keeping what is known
    /// of devices that remain.
    pub fn set_devices(&self, list: Vec<DeviceWithLatest>) {
        let mut inner = self.lock();
        let mut old = std::mem::take(&mut inner.devices);
        inner.order.clear();
        for d in list {
            let id = d.device.id.clone();
            let entry = match old.remove(&id) {
                Some(mut e) => {
                    let seen = e.device.last_seen.max(d.device.last_seen);
                    e.device = d.device;
                    e.device.last_seen = seen;
                    e
                }
                None => {
                    let mut e = DeviceEntry {
                        device: d.device,
                        latest: None,
                        key_values: Vec::new(),
                        spark: VecDeque::new(),
                    };
                    if let Some(l) = d.latest {
                        for l in LiveSample::from_frame(&l, &e.device.host_id) {
                            e.observe(&l);
                        }
                    }
                    e
                }
            };
            inner.order.push(id.clone());
            inner.devices.insert(id, entry);
        }
        let keys: Vec<QueryKey> = inner
            .nodes
            .keys()
            .filter(|k| {
                matches!(k, QueryKey::Devices | QueryKey::FleetOverview) || k.device().is_some()
            })
            .cloned()
            .collect();
        for k in keys {
            mark(&mut inner, k);
        }
    }

    /// Seeds a device's sparkline (start-up), oldest first.
    pub fn seed_spark(&self, id: &str, samples: &[LiveSample]) {
        let mut inner = self.lock();
        if let Some(e) = inner.devices.get_mut(id) {
            e.spark.clear();
            let last = e.latest.take();
            for l in samples {
                e.observe(l);
            }
            if e.latest.is_none() {
                e.latest = last;
            }
        }
    }

    /// The device's newest sample as its agent sent it (`ts`, JSON), if one arrived or was
    /// loaded since the hub started.
    pub fn latest(&self, id: &str) -> Option<(i64, Arc<str>)> {
        let latest = self.lock().devices.get(id).and_then(|e| e.latest.clone())?;
        Some((latest.sample().ts, Arc::clone(latest.json()?)))
    }

    /// Whether the device is known.
    pub fn has_device(&self, id: &str) -> bool {
        self.lock().devices.contains_key(id)
    }

    /// Evaluates a view once, without subscribing (the HTTP `GET /api/overview`).
    pub fn snapshot(&self, key: &QueryKey, app: &AppStore, ctx: Ctx) -> String {
        let inner = self.lock();
        evaluate(&inner, key, &VecDeque::new(), app, ctx)
    }

    /// Subscribes `(conn, sub)` to `key`. `reply` is called under the lock with the initial
    /// data, so the reply is queued before any push of this subscription. `preload` seeds a new
    /// `device-series` window.
    pub fn subscribe(
        &self,
        key: QueryKey,
        who: Subscriber<'_>,
        preload: Vec<LiveSample>,
        app: &AppStore,
        ctx: Ctx,
        reply: impl FnOnce(&str),
    ) {
        // Told once the view exists, so a replica sees it when it checks.
        let wants_whole = matches!(key, QueryKey::DeviceSeries(..) | QueryKey::DeviceLatest(_));
        let mut inner = self.lock();
        if !inner.nodes.contains_key(&key) {
            let mut window = VecDeque::new();
            if let QueryKey::DeviceSeries(id, secs) = &key {
                let from = ctx.now - i64::from(*secs) * 1000;
                let mut flats: Vec<Flat> = preload.iter().map(|l| flatten(l.sample())).collect();
                // Read back from its JSON: another replica's sample may hold only its card
                // figures in `sample()`, while its JSON is whole.
                if let Some(j) = inner
                    .devices
                    .get(id)
                    .and_then(|e| e.latest.as_ref())
                    .and_then(LiveSample::json)
                    && let Ok(s) = serde_json::from_str::<MetricSample>(j)
                    && !flats.iter().any(|f| f.ts == s.ts)
                {
                    flats.push(flatten(&s));
                }
                flats.retain(|f| f.ts >= from);
                flats.sort_by_key(|f| f.ts);
                window = flats.into();
                inner.series.entry(id.clone()).or_default().insert(*secs);
            }
            if let QueryKey::LatestMetrics(n) = &key {
                inner.latest_ns.insert(*n);
            }
            let last: Arc<str> = Arc::from(evaluate(&inner, &key, &window, app, ctx));
            inner.nodes.insert(
                key.clone(),
                Node {
                    subs: Vec::new(),
                    last,
                    dirty: false,
                    last_eval: Instant::now(),
                    window,
                },
            );
        }
        if let Some(node) = inner.nodes.get_mut(&key) {
            node.subs.push((who.conn, who.sub, Arc::clone(who.outbox)));
            reply(&node.last);
        }
        drop(inner);
        if wants_whole {
            self.interest.notify_one();
        }
    }

    /// Removes a subscription; a view without subscribers is dropped.
    pub fn unsubscribe(&self, key: &QueryKey, conn: u64, sub: u32) {
        let mut inner = self.lock();
        let empty = match inner.nodes.get_mut(key) {
            Some(node) => {
                node.subs.retain(|(c, s, _)| !(*c == conn && *s == sub));
                node.subs.is_empty()
            }
            None => false,
        };
        if empty {
            inner.nodes.remove(key);
            inner.dirty.remove(key);
            match key {
                QueryKey::LatestMetrics(n) => {
                    inner.latest_ns.remove(n);
                }
                QueryKey::DeviceSeries(id, secs) => {
                    if let Some(set) = inner.series.get_mut(id) {
                        set.remove(secs);
                        if set.is_empty() {
                            inner.series.remove(id);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Views with a node (for tests and metrics).
    pub fn node_count(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Pushes handed to outboxes so far.
    pub fn pushes(&self) -> u64 {
        self.lock().pushes
    }

    // ---- seed 002: per-device streams --------------------------------------------------------

    /// Adds a viewer to the device's stream, creating the stream for the first one. Returns
    /// whether the stream is new (its history should then be seeded with [`Self::seed_history`]).
    pub fn stream_join(&self, device: &str, conn: u64, outbox: &Arc<Outbox>) -> bool {
        let new = {
            let mut inner = self.lock();
            let new = !inner.streams.contains_key(device);
            inner
                .streams
                .entry(device.to_string())
                .or_default()
                .viewers
                .insert(conn, (Arc::clone(outbox), 0));
            new
        };
        self.interest.notify_one();
        new
    }

    /// Merges stored samples into a stream's history.
    pub fn seed_history(&self, device: &str, samples: &[LiveSample]) {
        let mut inner = self.lock();
        if let Some(st) = inner.streams.get_mut(device) {
            for l in samples {
                st.observe(l.sample());
            }
        }
    }

    /// Changes a viewer's channels; returns the channels newly added and, for them, the
    /// current frames held in memory (`metrics` latest, `history`).
    pub fn stream_set(&self, device: &str, conn: u64, add: u8, remove: u8) -> (u8, Vec<String>) {
        let mut inner = self.lock();
        let latest = inner.devices.get(device).and_then(|e| e.latest.clone());
        let Some(st) = inner.streams.get_mut(device) else {
            return (0, Vec::new());
        };
        let history = st.history_frame();
        let Some((_, mask)) = st.viewers.get_mut(&conn) else {
            return (0, Vec::new());
        };
        let added = add & !*mask;
        *mask = (*mask | add) & !remove;
        let mut frames = Vec::new();
        if added & 1 != 0
            && let Some(j) = latest.as_ref().and_then(LiveSample::json)
        {
            frames.push(format!(r#"{{"type":"metrics","data":{j}}}"#));
        }
        if added & channel_bit("history").unwrap_or(0) != 0 {
            frames.push(history);
        }
        (added, frames)
    }

    /// Removes a viewer; the stream is released with its last viewer.
    pub fn stream_leave(&self, device: &str, conn: u64) {
        let mut inner = self.lock();
        if let Some(st) = inner.streams.get_mut(device) {
            st.viewers.remove(&conn);
            if st.viewers.is_empty() {
                inner.streams.remove(device);
            }
        }
    }

    /// Viewers of a device's stream (None when released).
    pub fn stream_viewers(&self, device: &str) -> Option<usize> {
        self.lock().streams.get(device).map(|s| s.viewers.len())
    }

    /// Whether a view of this device needs every series of its samples (a series window),
    /// not only what its card shows.
    pub fn needs_every_series(&self, device_id: &str) -> bool {
        self.lock().series.contains_key(device_id)
    }

    // ---- seed 003: broadcast --------------------------------------------------------------

    pub fn broadcast_join(&self, conn: u64, outbox: &Arc<Outbox>) {
        self.lock().broadcast.insert(conn, Arc::clone(outbox));
        self.interest.notify_one();
    }

    /// Whether a view here needs other replicas' samples whole (their JSON or every series),
    /// not only their card figures: a broadcast viewer, a device stream, a series window or a
    /// device's latest sample.
    pub fn wants_whole_samples(&self) -> bool {
        let inner = self.lock();
        !inner.broadcast.is_empty()
            || !inner.streams.is_empty()
            || !inner.series.is_empty()
            || inner
                .nodes
                .keys()
                .any(|k| matches!(k, QueryKey::DeviceLatest(_)))
    }

    pub fn broadcast_leave(&self, conn: u64) {
        self.lock().broadcast.remove(&conn);
    }

    /// Sends an alert change to every `/ws/live` viewer (never coalesced: each is news).
    pub fn on_alert(&self, json: &str) {
        let inner = self.lock();
        for o in inner.broadcast.values() {
            o.reply(json.to_string());
        }
    }

    // ---- the dispatcher ------------------------------------------------------------------

    fn on_samples(&self, device_id: &str, samples: &[LiveSample], now: i64) -> bool {
        // Viewers of whole samples get their JSON: made here, before the lock, not under it.
        let wanted = {
            let inner = self.lock();
            inner.streams.contains_key(device_id) || !inner.broadcast.is_empty()
        };
        if wanted {
            for l in samples {
                l.json();
            }
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let known = match inner.devices.get_mut(device_id) {
            Some(e) => {
                for l in samples {
                    e.observe(l);
                }
                e.device.last_seen = Some(now);
                true
            }
            None => false,
        };
        // Views of whole samples get only those another replica sent whole (a sample known
        // by its card figures alone has no JSON).
        let whole: Vec<&LiveSample> = samples.iter().filter(|l| l.is_whole()).collect();
        // Device views (none open: nothing to mark, no key to build).
        if !inner.nodes.is_empty() {
            mark(inner, QueryKey::DeviceLatest(device_id.to_string()));
            mark(inner, QueryKey::FleetOverview);
            mark(inner, QueryKey::Devices);
        }
        if let Some(secs) = inner.series.get(device_id).cloned() {
            for s in secs {
                let key = QueryKey::DeviceSeries(device_id.to_string(), s);
                if let Some(node) = inner.nodes.get_mut(&key) {
                    for m in whole.iter().map(|l| l.sample()) {
                        if !node.window.iter().any(|f| f.ts == m.ts) {
                            let at = node.window.partition_point(|f| f.ts < m.ts);
                            node.window.insert(at, flatten(m));
                        }
                    }
                    let from = now - i64::from(s) * 1000;
                    while node.window.front().is_some_and(|f| f.ts < from) {
                        node.window.pop_front();
                    }
                }
                mark(inner, key);
            }
        }
        // Seed 002: the device's shared stream.
        if let Some(st) = inner.streams.get_mut(device_id) {
            let hist_bit = channel_bit("history").unwrap_or(0);
            for l in &whole {
                let (s, j) = (l.sample(), l.json().map_or("null", |j| &**j));
                st.observe(s);
                let frame = Utf8Bytes::from(format!(r#"{{"type":"metrics","data":{j}}}"#));
                for (o, mask) in st.viewers.values() {
                    if mask & 1 != 0 {
                        o.push(0, frame.clone());
                        count_pushes(&mut inner.pushes, 1);
                    }
                }
            }
            if st.viewers.values().any(|(_, m)| m & hist_bit != 0) {
                let frame = Utf8Bytes::from(st.history_frame());
                for (o, mask) in st.viewers.values() {
                    if mask & hist_bit != 0 {
                        o.push(u64::from(hist_bit), frame.clone());
                        count_pushes(&mut inner.pushes, 1);
                    }
                }
            }
        }
        // Seed 003: every sample to every broadcast viewer, coalesced per device.
        if !inner.broadcast.is_empty() {
            let key = key_hash(device_id);
            let id = Value::from(device_id);
            for l in &whole {
                let (s, j) = (l.sample(), l.json().map_or("null", |j| &**j));
                let frame = Utf8Bytes::from(format!(
                    r#"{{"type":"metrics","deviceId":{id},"ts":{},"data":{j}}}"#,
                    s.ts
                ));
                for o in inner.broadcast.values() {
                    o.push(key, frame.clone());
                }
                let n = inner.broadcast.len() as u64;
                count_pushes(&mut inner.pushes, n);
            }
        }
        known
    }

    fn on_state(&self, device_id: &str, kind: &str, json: &str) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(bit) = channel_bit(kind) else { return };
        if let Some(st) = inner.streams.get(device_id) {
            let frame = Utf8Bytes::from(format!(r#"{{"type":"{kind}","data":{json}}}"#));
            for (o, mask) in st.viewers.values() {
                if mask & bit != 0 {
                    o.push(u64::from(bit), frame.clone());
                    count_pushes(&mut inner.pushes, 1);
                }
            }
        }
    }

    fn on_app(&self, change: &AppChange) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for c in &change.buckets {
            let Ok(b) = bucket_index(&c.bucket) else {
                continue;
            };
            if b == ALERTS {
                mark(inner, QueryKey::ActiveAlerts);
                continue;
            }
            mark(inner, QueryKey::AllMetrics);
            mark(inner, QueryKey::MetricCount);
            for n in inner.latest_ns.clone() {
                mark(inner, QueryKey::LatestMetrics(n));
            }
            if c.cleared {
                let keys: Vec<QueryKey> = inner
                    .nodes
                    .keys()
                    .filter(|k| matches!(k, QueryKey::MetricsByName(_)))
                    .cloned()
                    .collect();
                for k in keys {
                    mark(inner, k);
                }
            } else {
                for name in &c.keys {
                    mark(inner, QueryKey::MetricsByName(name.clone()));
                }
            }
        }
    }

    fn mark_all(&self) {
        let mut inner = self.lock();
        let keys: Vec<QueryKey> = inner.nodes.keys().cloned().collect();
        for k in keys {
            mark(&mut inner, k);
        }
    }

    fn mark_status_views(&self) {
        let mut inner = self.lock();
        mark(&mut inner, QueryKey::Devices);
        mark(&mut inner, QueryKey::FleetOverview);
        let keys: Vec<QueryKey> = inner
            .nodes
            .keys()
            .filter(|k| matches!(k, QueryKey::DeviceSeries(..)))
            .cloned()
            .collect();
        for k in keys {
            mark(&mut inner, k);
        }
    }

    /// Evaluates the dirty views whose coalescing window has passed and pushes real changes.
    /// Returns when the next waiting view is due.
    fn flush(&self, app: &AppStore, ctx: Ctx) -> Option<Instant> {
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut next: Option<Instant> = None;
        let dirty: Vec<QueryKey> = inner.dirty.drain().collect();
        for key in dirty {
            let Some(node) = inner.nodes.get(&key) else {
                continue;
            };
            let due = node.last_eval + self.coalesce_for(&key);
            if due > now {
                next = Some(next.map_or(due, |n: Instant| n.min(due)));
                inner.dirty.insert(key);
                continue;
            }
            if let QueryKey::DeviceSeries(_, secs) = &key
                && let Some(node) = inner.nodes.get_mut(&key)
            {
                let from = ctx.now - i64::from(*secs) * 1000;
                while node.window.front().is_some_and(|f| f.ts < from) {
                    node.window.pop_front();
                }
            }
            let Some(node) = inner.nodes.get(&key) else {
                continue;
            };
            let result = evaluate(inner, &key, &node.window, app, ctx);
            let Some(node) = inner.nodes.get_mut(&key) else {
                continue;
            };
            node.dirty = false;
            node.last_eval = now;
            if *node.last == *result {
                continue;
            }
            for (_, sub, outbox) in &node.subs {
                outbox.push(u64::from(*sub), Utf8Bytes::from(push_frame(*sub, &result)));
            }
            let n = node.subs.len() as u64;
            count_pushes(&mut inner.pushes, n);
            node.last = Arc::from(result);
        }
        next
    }
}

fn count_pushes(total: &mut u64, n: u64) {
    *total += n;
    metrics::counter!(crate::telemetry::LIVE_PUSHES).increment(n);
}

fn mark(inner: &mut Inner, key: QueryKey) {
    if let Some(node) = inner.nodes.get_mut(&key)
        && !node.dirty
    {
        node.dirty = true;
        inner.dirty.insert(key);
    }
}

/// Applies one bus event to the registry; `reload` is set when the device list must be read.
fn on_event(live: &super::Live, ev: &LiveEvent, reload: &mut bool) {
    match ev {
        LiveEvent::Samples { device_id, samples } => {
            if !live
                .registry
                .on_samples(device_id, samples, crate::now_ms())
            {
                *reload = true;
            }
        }
        LiveEvent::State {
            device_id,
            kind,
            json,
        } => live.registry.on_state(device_id, kind, json),
        LiveEvent::DevicesChanged => *reload = true,
        LiveEvent::App(change) => live.registry.on_app(change),
        LiveEvent::Alert(json) => live.registry.on_alert(json),
    }
}

/// Applies events another replica sent ([`crate::replica`]) straight to the registry, not
/// through the bus (whose other listeners have no use for them); returns whether the device
/// list must be read again. The dispatcher is woken to flush only when a view changed.
pub fn apply_remote(live: &super::Live, events: &[LiveEvent]) -> bool {
    let mut reload = false;
    for e in events {
        on_event(live, e, &mut reload);
    }
    if !live.registry.lock().dirty.is_empty() {
        live.registry.kick.notify_one();
    }
    reload
}

/// Loads the device list (and recent samples for the sparklines) into the registry.
pub async fn load_devices(state: &AppState, with_spark: bool) {
    let list = match state.store.list_devices().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "live core: cannot load devices");
            return;
        }
    };
    let ids: Vec<(String, i64, String)> = list
        .iter()
        .map(|d| (d.device.id.clone(), d.device.seq, d.device.host_id.clone()))
        .collect();
    state.live.registry.set_devices(list);
    if with_spark {
        let now = crate::now_ms();
        let all = vitals_store::SeriesFilter::all();
        for (id, seq, host_id) in ids {
            if let Ok(mut rows) = state
                .store
                .samples(seq, now - (SPARK_POINTS as i64 + 30) * 1000, now, &all)
                .await
            {
                let skip = rows.len().saturating_sub(SPARK_POINTS);
                rows.retain_range(rows.ts.get(skip).copied().unwrap_or(i64::MIN), i64::MAX);
                let samples = LiveSample::from_frame(&rows, &host_id);
                state.live.registry.seed_spark(&id, &samples);
            }
        }
    }
}

/// The dispatcher: applies bus events to the registry and flushes dirty views, until shutdown.
pub async fn run(state: AppState) {
    let mut rx = state.events.subscribe();
    load_devices(&state, true).await;
    let live = &state.live;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next: Option<Instant> = None;
    loop {
        let sleep_until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let mut events = Vec::new();
        tokio::select! {
            ev = rx.recv() => {
                events.push(ev);
                while events.len() < 1024 {
                    match rx.try_recv() {
                        Ok(e) => events.push(Ok(e)),
                        Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                            events.push(Err(RecvError::Lagged(n)));
                        }
                        Err(tokio::sync::broadcast::error::TryRecvError::Closed) => {
                            events.push(Err(RecvError::Closed));
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(sleep_until.into()), if next.is_some() => {}
            _ = tick.tick() => live.registry.mark_status_views(),
            _ = live.registry.kick.notified() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let mut reload = false;
        for ev in events {
            match ev {
                Ok(e) => on_event(live, &e, &mut reload),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "live core fell behind the bus; re-evaluating every view"
                    );
                    live.registry.mark_all();
                    reload = true;
                }
                Err(RecvError::Closed) => return,
            }
        }
        if reload {
            load_devices(&state, false).await;
        }
        next = live.registry.flush(&live.app, Ctx::of(&state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DeviceEntry {
        DeviceEntry {
            device: Device {
                id: "d".into(),
                seq: 1,
                name: "d".into(),
                host_id: "h".into(),
                simulated: false,
                agent_version: None,
                created_at: 0,
                last_seen: None,
                has_token: true,
            },
            latest: None,
            key_values: Vec::new(),
            spark: VecDeque::new(),
        }
    }

    fn at(ts: i64, cpu: f64) -> MetricSample {
        let mut s = MetricSample {
            ts,
            ..MetricSample::default()
        };
        s.cpu.total = cpu;
        s
    }

    #[test]
    fn a_sample_seen_twice_is_one_point_and_a_card_drops_an_older_latest() {
        let mut e = entry();
        let whole = |ts, cpu| LiveSample::new(at(ts, cpu));
        let card = |ts, cpu| LiveSample::card(at(ts, cpu));
        let spark = |e: &DeviceEntry| e.spark.iter().map(|p| p.0).collect::<Vec<_>>();
        e.observe(&whole(1000, 1.0));
        assert_eq!(e.latest.as_ref().map(|l| l.sample().ts), Some(1000));
        // A newer sample known by its card only: the older JSON is not shown as current.
        e.observe(&card(2000, 2.0));
        assert!(e.latest.is_none());
        // The same sample whole, then its card again: one point, the whole JSON kept.
        e.observe(&whole(2000, 2.0));
        e.observe(&card(2000, 2.0));
        assert_eq!(spark(&e), vec![1000, 2000]);
        assert_eq!(e.latest.as_ref().map(|l| l.sample().ts), Some(2000));
        assert_eq!(
            e.key_values.iter().find(|(n, _)| *n == "cpu").map(|x| x.1),
            Some(2.0)
        );
        // An older sample replayed changes nothing.
        e.observe(&whole(500, 9.0));
        assert_eq!(spark(&e), vec![1000, 2000]);
        assert_eq!(e.latest.as_ref().map(|l| l.sample().ts), Some(2000));
    }
}
