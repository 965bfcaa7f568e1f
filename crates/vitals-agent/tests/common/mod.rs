//! A fake hub for the agent's integration tests, speaking the hub's agent protocol over real
//! sockets: WebSocket `/agent` (Bearer token, acks by seq, close 4401 on revocation),
//! `POST /api/report`, pairing (`/api/device-codes`, `/api/device-token` with 404/410/429),
//! and a release endpoint in the GitHub API shape. Like the real hub it stores a (device, ts)
//! once, so replays are idempotent; it also counts every sample it receives, duplicates
//! included, so tests can see resends.
//!
//! Used until `vitals-testkit` can start a real hub for these scenarios.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;
use vitals_proto::{AgentMessage, HubMessage, MetricSample};

pub const TOKEN: &str = "test-token";

#[derive(Debug, Default)]
pub struct Pairing {
    pub requests: Vec<serde_json::Value>,
    pub approved: bool,
    pub expired: bool,
    pub delivered: bool,
    pub last_poll: Option<Instant>,
    pub polls: u64,
    pub rate_limited: u64,
    /// Every poll: when, and the status answered.
    pub log: Vec<(Instant, u16)>,
}

#[derive(Debug, Default)]
pub struct Release {
    pub json: serde_json::Value,
    pub files: Vec<(String, Vec<u8>)>,
}

pub struct Shared {
    pub token: Mutex<String>,
    pub stored: Mutex<Vec<i64>>,
    seen: Mutex<HashSet<i64>>,
    pub received: AtomicU64,
    /// Values (flattened series points) in stored samples.
    pub values: AtomicU64,
    pub dropped_reports: Mutex<Vec<u64>>,
    pub connections: AtomicU64,
    pub states: AtomicU64,
    /// Accept connections but never read or answer (a half-open hub).
    pub silent: AtomicBool,
    pub pairing: Mutex<Pairing>,
    /// Minimum time between two token polls before 429.
    pub poll_min: Mutex<Duration>,
    pub release: Mutex<Release>,
    stop: watch::Sender<u64>,
    revoke: watch::Sender<bool>,
}

impl Shared {
    fn process(&self, text: &str) -> Option<HubMessage> {
        match serde_json::from_str::<AgentMessage>(text) {
            Ok(AgentMessage::Metrics { seq, samples }) => {
                let mut stored = 0;
                {
                    let mut seen = self.seen.lock().expect("lock");
                    let mut order = self.stored.lock().expect("lock");
                    for s in &samples {
                        self.received.fetch_add(1, Ordering::SeqCst);
                        if seen.insert(s.ts) {
                            order.push(s.ts);
                            stored += 1;
                            let mut n = 0;
                            vitals_proto::series::for_each_series(s, |_, _| n += 1);
                            self.values.fetch_add(n, Ordering::SeqCst);
                        }
                    }
                }
                Some(HubMessage::Ack { seq, stored })
            }
            Ok(AgentMessage::Dropped { seq, count, .. }) => {
                self.dropped_reports.lock().expect("lock").push(count);
                Some(HubMessage::Ack { seq, stored: 0 })
            }
            Ok(AgentMessage::State { .. }) => {
                self.states.fetch_add(1, Ordering::SeqCst);
                None
            }
            Err(e) => Some(HubMessage::Error {
                seq: vitals_proto::messages::peek_seq(text),
                code: vitals_proto::ErrorCode::Malformed,
                message: e.to_string(),
                retry_after_ms: None,
            }),
        }
    }

    fn authorized(&self, h: &HeaderMap) -> bool {
        let want = format!("Bearer {}", self.token.lock().expect("lock"));
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
    }
}

pub struct FakeHub {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Logs to the test output (`RUST_LOG=debug cargo test -- --nocapture` to see them).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(
            std::env::var("RUST_LOG")
                .ok()
                .and_then(|v| v.parse::<tracing::Level>().ok())
                .unwrap_or(tracing::Level::INFO),
        )
        .try_init();
}

impl FakeHub {
    pub async fn start() -> FakeHub {
        init_logs();
        let (stop, _) = watch::channel(0);
        let (revoke, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            token: Mutex::new(TOKEN.into()),
            stored: Mutex::default(),
            seen: Mutex::default(),
            received: AtomicU64::new(0),
            values: AtomicU64::new(0),
            dropped_reports: Mutex::default(),
            connections: AtomicU64::new(0),
            states: AtomicU64::new(0),
            silent: AtomicBool::new(false),
            pairing: Mutex::default(),
            poll_min: Mutex::new(Duration::from_secs(2)),
            release: Mutex::default(),
            stop,
            revoke,
        });
        let mut hub = FakeHub {
            addr: "127.0.0.1:0".parse().expect("addr"),
            shared,
            server: None,
        };
        hub.up().await;
        hub
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (Re)starts serving on the same address.
    pub async fn up(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/agent", get(ws_upgrade))
            .route("/api/report", post(report))
            .route("/api/device-codes", post(device_codes))
            .route("/api/device-token", get(device_token))
            .route("/api/agent/release", get(release))
            .route("/dl/{name}", get(download))
            .route("/stats", get(stats))
            .with_state(self.shared.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops accepting and drops every open connection, like a crashed hub.
    pub async fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
        }
        self.shared.stop.send_modify(|g| *g += 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Revokes the token: open sockets are closed with 4401, new upgrades get 401.
    pub fn revoke(&self) {
        *self.shared.token.lock().expect("lock") = "revoked".into();
        self.shared.revoke.send_replace(true);
    }

    pub fn stored(&self) -> Vec<i64> {
        self.shared.stored.lock().expect("lock").clone()
    }

    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn dropped_reported(&self) -> u64 {
        self.shared
            .dropped_reports
            .lock()
            .expect("lock")
            .iter()
            .sum()
    }
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    State(st): State<Arc<Shared>>,
) -> Response {
    if !st.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    st.connections.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(move |socket| handle_socket(socket, st))
}

async fn handle_socket(mut socket: WebSocket, st: Arc<Shared>) {
    let mut stop = st.stop.subscribe();
    let mut revoke = st.revoke.subscribe();
    if *revoke.borrow() {
        return;
    }
    if st.silent.load(Ordering::SeqCst) {
        // Half-open: hold the socket, never read (so never pong) nor answer.
        let _ = stop.changed().await;
        return;
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = revoke.changed() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: 4401, reason: "token revoked".into() })))
                    .await;
                return;
            }
            m = socket.recv() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Some(reply) = st.process(t.as_str()) {
                        let text = serde_json::to_string(&reply).expect("json");
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }
}

async fn report(headers: HeaderMap, State(st): State<Arc<Shared>>, body: String) -> Response {
    if !st.authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match st.process(&body) {
        Some(m @ HubMessage::Ack { .. }) => Json(m).into_response(),
        Some(m) => (StatusCode::BAD_REQUEST, Json(m)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn device_codes(
    State(st): State<Arc<Shared>>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    st.pairing.lock().expect("lock").requests.push(body);
    (
        StatusCode::CREATED,
        Json(serde_json::json!({"code": "ABCD-EFGH", "expiresAt": "2099-01-01T00:00:00Z"})),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct CodeQuery {
    code: String,
}

async fn device_token(State(st): State<Arc<Shared>>, Query(q): Query<CodeQuery>) -> Response {
    let min = *st.poll_min.lock().expect("lock");
    let mut p = st.pairing.lock().expect("lock");
    let now = Instant::now();
    if let Some(last) = p.last_poll
        && now.duration_since(last) < min
    {
        p.rate_limited += 1;
        p.log.push((now, 429));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", min.as_secs().max(1).to_string())],
            Json(serde_json::json!({"error": "rate_limited"})),
        )
            .into_response();
    }
    p.last_poll = Some(now);
    p.polls += 1;
    p.log.push((now, 0));
    if q.code != "ABCD-EFGH" || p.delivered {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"status": "not_found"})),
        )
            .into_response();
    }
    if p.expired {
        return (
            StatusCode::GONE,
            Json(serde_json::json!({"status": "expired"})),
        )
            .into_response();
    }
    if p.approved {
        p.delivered = true;
        return Json(serde_json::json!({"token": TOKEN, "deviceId": "dev-1"})).into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"status": "pending"})),
    )
        .into_response()
}

async fn stats(State(st): State<Arc<Shared>>) -> Response {
    Json(serde_json::json!({
        "stored": st.stored.lock().expect("lock").len(),
        "received": st.received.load(Ordering::SeqCst),
        "values": st.values.load(Ordering::SeqCst),
        "connections": st.connections.load(Ordering::SeqCst),
        "states": st.states.load(Ordering::SeqCst),
    }))
    .into_response()
}

async fn release(State(st): State<Arc<Shared>>) -> Response {
    Json(st.release.lock().expect("lock").json.clone()).into_response()
}

async fn download(
    State(st): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let r = st.release.lock().expect("lock");
    match r.files.iter().find(|(n, _)| *n == name) {
        Some((_, b)) => b.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A scripted sample source: `n` samples with `ts = base + i`, then nothing.
pub struct Counter {
    pub next: i64,
    pub end: i64,
    pub produced: Arc<AtomicU64>,
}

impl Counter {
    pub fn new(base: i64, n: i64) -> (Counter, Arc<AtomicU64>) {
        let produced = Arc::new(AtomicU64::new(0));
        (
            Counter {
                next: base,
                end: base + n,
                produced: produced.clone(),
            },
            produced,
        )
    }
}

pub fn sample(ts: i64) -> MetricSample {
    serde_json::from_value(serde_json::json!({
        "v": 1, "ts": ts, "hostId": "test-host",
        "cpu": {"total": 1.0, "perCore": [1.0, 2.0]},
        "mem": {"used": 1.0, "total": 2.0},
        "disk": [], "net": {"txBps": 0.0, "rxBps": 0.0},
        "uptimeSec": 1.0, "procCount": 1.0
    }))
    .expect("sample")
}

impl vitals_agent::agent::Source for Counter {
    fn sample(&mut self, _now_ms: i64) -> Option<MetricSample> {
        if self.next >= self.end {
            return None;
        }
        let s = sample(self.next);
        self.next += 1;
        self.produced.fetch_add(1, Ordering::SeqCst);
        Some(s)
    }
    fn state(&mut self) -> Option<vitals_proto::state::DeviceState> {
        Some(vitals_proto::state::DeviceState::default())
    }
    fn quick_state(&mut self) -> Option<vitals_proto::state::DeviceState> {
        Some(vitals_proto::state::DeviceState::default())
    }
}

/// Waits until `cond` holds, up to `limit`.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Run options for tests: fast interval, short backoff.
pub fn run_options(
    hub: &FakeHub,
    spool: &std::path::Path,
    interval_ms: u64,
    kind: vitals_agent::transport::Kind,
) -> vitals_agent::agent::RunOptions {
    let link = vitals_agent::transport::LinkConfig {
        hub: hub.url(),
        token: TOKEN.into(),
        host_id: "test-host".into(),
        kind,
        interval: Duration::from_millis(interval_ms),
    };
    let mut o = vitals_agent::agent::RunOptions::new(link, spool.to_path_buf());
    o.max_backoff = Duration::from_secs(1);
    o
}
