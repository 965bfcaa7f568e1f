//! Forwarding the dashboard's metrics to a Vitals hub, over the hub's store protocol (seed
//! 001): `GET {hub}/api/store/ws`, the server's `welcome`, `auth.login` with the token, then one
//! `store.transaction` of `insert`s into the `metrics` bucket per flush, each point shaped
//! `{"name", "value", "unit", "timestamp"}` with the timestamp in Unix milliseconds.
//!
//! The ticker pushes one batch per interval into a bounded queue and never waits: when the
//! queue is full its oldest batch is dropped (and counted). A background task drains the
//! queue, removes batches only once the hub acknowledged them, and reconnects with
//! exponential backoff (1 s doubling to 30 s) when anything fails.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};

use crate::config::ForwardConfig;
use crate::state::{Numbers, finite};

/// How long to wait for the hub's welcome and each answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One metric point, as inserted into the hub's `metrics` bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Point {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub timestamp: i64,
}

/// The points of one tick.
pub(crate) fn points(n: &Numbers, timestamp: i64) -> Vec<Point> {
    let p = |name, value: f64, unit| Point {
        name,
        value: finite(value),
        unit,
        timestamp,
    };
    vec![
        p("jobs_active", n.jobs_active as f64, ""),
        p("jobs_completed", n.jobs_completed as f64, ""),
        p("jobs_failed", n.jobs_failed as f64, ""),
        p("jobs_pending", n.jobs_pending as f64, ""),
        p("queue_length", n.queue_length as f64, ""),
        p("http_requests", n.http_requests as f64, ""),
        p("http_errors", n.http_errors as f64, ""),
        p("avg_response_time", n.avg_response_time, "ms"),
        p("memory_usage", n.memory_usage as f64, "MB"),
        p("cpu_usage", n.cpu_usage, "%"),
        p("tasks", n.tasks as f64, ""),
        p("active_connections", n.active_connections as f64, ""),
        p("system_health", f64::from(n.health.as_u8()), ""),
    ]
}

/// The store endpoint for a configured hub URL, or `None` for an unsupported scheme.
pub(crate) fn store_url(hub: &str) -> Option<String> {
    let hub = hub.trim().trim_end_matches('/');
    let ws = if let Some(rest) = hub.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = hub.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if hub.starts_with("ws://") || hub.starts_with("wss://") {
        hub.to_owned()
    } else {
        return None;
    };
    let host_part = ws.split_once("://").map(|(_, r)| r).unwrap_or_default();
    if host_part.is_empty() {
        return None;
    }
    Some(if ws.ends_with("/api/store/ws") {
        ws
    } else {
        format!("{ws}/api/store/ws")
    })
}

/// A bounded queue of batches that drops its oldest batch when full; pushing never waits.
pub(crate) struct ForwardQueue {
    batches: Mutex<VecDeque<Vec<Point>>>,
    capacity: usize,
    notify: Notify,
    pub(crate) dropped_batches: AtomicU64,
    pub(crate) sent_points: AtomicU64,
}

impl ForwardQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        ForwardQueue {
            batches: Mutex::new(VecDeque::new()),
            capacity,
            notify: Notify::new(),
            dropped_batches: AtomicU64::new(0),
            sent_points: AtomicU64::new(0),
        }
    }

    pub(crate) fn push(&self, batch: Vec<Point>) {
        let dropped = {
            let mut q = self.batches.lock();
            q.push_back(batch);
            if q.len() > self.capacity {
                q.pop_front()
            } else {
                None
            }
        };
        if dropped.is_some() {
            self.dropped_batches.fetch_add(1, Relaxed);
        }
        self.notify.notify_one();
    }

    /// Copies whole batches from the front, up to `max_points` points (at least one batch).
    fn peek(&self, max_points: usize) -> (usize, Vec<Point>) {
        let q = self.batches.lock();
        let mut out = Vec::new();
        let mut n = 0;
        for b in q.iter() {
            if n > 0 && out.len() + b.len() > max_points {
                break;
            }
            out.extend_from_slice(b);
            n += 1;
        }
        (n, out)
    }

    /// Removes `n` batches from the front once the hub acknowledged them. Batches dropped
    /// meanwhile (queue overflow) shift the front, so at most `n` are removed.
    fn pop(&self, n: usize) {
        let mut q = self.batches.lock();
        for _ in 0..n.min(q.len()) {
            q.pop_front();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.batches.lock().len()
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect failed: {0}")]
    Connect(#[source] tokio_tungstenite::tungstenite::Error),
    #[error("websocket failed: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("hub did not answer within {0:?}")]
    Timeout(Duration),
    #[error("hub closed the connection")]
    Closed,
    #[error("hub sent an unexpected message: {0}")]
    Protocol(String),
    #[error("hub refused the token: {code}: {message}")]
    AuthRejected { code: String, message: String },
    #[error("hub refused a transaction: {code}: {message}")]
    Rejected { code: String, message: String },
}

enum Ended {
    Stopped,
}

/// Runs until `stop` turns true, forwarding whatever the queue receives.
pub(crate) async fn run(
    queue: Arc<ForwardQueue>,
    cfg: ForwardConfig,
    mut stop: watch::Receiver<bool>,
) {
    let Some(url) = store_url(&cfg.hub_url) else {
        warn!(hub = %cfg.hub_url, "forwarding disabled: unsupported hub url");
        return;
    };
    if url.starts_with("wss://") {
        ensure_crypto_provider();
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        match session(&url, &queue, &cfg, &mut stop, &mut backoff).await {
            Ok(Ended::Stopped) => return,
            Err(e) => warn!(hub = %url, retry_in = ?backoff, "forwarding to hub failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// tokio-tungstenite enables rustls without choosing a crypto provider; a `wss://` connect
/// panics unless one is installed. Installs ring's unless the application already chose one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Result<serde_json::Value, SessionError> {
    loop {
        let msg = tokio::time::timeout(ANSWER_TIMEOUT, ws.next())
            .await
            .map_err(|_| SessionError::Timeout(ANSWER_TIMEOUT))?;
        match msg {
            None | Some(Ok(Message::Close(_))) => return Err(SessionError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|e| SessionError::Protocol(format!("invalid json: {e}")));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Waits for the answer to request `id`, skipping pushes and other traffic.
async fn answer(ws: &mut Ws, id: u64) -> Result<Result<(), (String, String)>, SessionError> {
    loop {
        let v = next_json(ws).await?;
        if v.get("id").and_then(|i| i.as_u64()) != Some(id) {
            continue;
        }
        return match v.get("type").and_then(|t| t.as_str()) {
            Some("result") => Ok(Ok(())),
            Some("error") => {
                let field = |k: &str| {
                    v.get(k)
                        .and_then(|x| x.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                Ok(Err((field("code"), field("message"))))
            }
            other => Err(SessionError::Protocol(format!("answer of type {other:?}"))),
        };
    }
}

async fn session(
    url: &str,
    queue: &ForwardQueue,
    cfg: &ForwardConfig,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
) -> Result<Ended, SessionError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(vitals_proto::limits::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(vitals_proto::limits::MAX_MESSAGE_BYTES))
        .max_write_buffer_size(4 * vitals_proto::limits::MAX_MESSAGE_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), false);
    let (mut ws, _) = tokio::time::timeout(ANSWER_TIMEOUT, connect)
        .await
        .map_err(|_| SessionError::Timeout(ANSWER_TIMEOUT))?
        .map_err(SessionError::Connect)?;

    let welcome = next_json(&mut ws).await?;
    if welcome.get("type").and_then(|t| t.as_str()) != Some("welcome") {
        return Err(SessionError::Protocol(
            "expected a welcome message first".into(),
        ));
    }
    let login = serde_json::json!({ "id": 1, "type": "auth.login", "token": cfg.token });
    ws.send(Message::text(login.to_string())).await?;
    if let Err((code, message)) = answer(&mut ws, 1).await? {
        return Err(SessionError::AuthRejected { code, message });
    }
    info!(hub = %url, "forwarding metrics to hub");
    *backoff = BACKOFF_MIN;

    let mut next_id: u64 = 2;
    loop {
        let (n, points) = queue.peek(cfg.max_points_per_transaction);
        if n == 0 {
            tokio::select! {
                _ = queue.notify.notified() => continue,
                _ = crate::stopped(stop) => {
                    let _ = ws.close(None).await;
                    return Ok(Ended::Stopped);
                }
                msg = ws.next() => match msg {
                    None | Some(Ok(Message::Close(_))) => return Err(SessionError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(_)) => continue,
                },
            }
        }
        let id = next_id;
        next_id += 1;
        let ops: Vec<_> = points
            .iter()
            .map(|p| serde_json::json!({ "op": "insert", "bucket": "metrics", "data": p }))
            .collect();
        let tx = serde_json::json!({ "id": id, "type": "store.transaction", "operations": ops });
        ws.send(Message::text(tx.to_string())).await?;
        match answer(&mut ws, id).await? {
            Ok(()) => {
                queue.sent_points.fetch_add(points.len() as u64, Relaxed);
                debug!(points = points.len(), "forwarded metrics to hub");
                queue.pop(n);
            }
            // A refusal about the data itself would repeat forever: drop the batches and go on.
            Err((code, message)) if code == "VALIDATION_ERROR" || code == "FORBIDDEN" => {
                warn!(code = %code, "hub rejected forwarded metrics, dropping them: {message}");
                queue.pop(n);
            }
            Err((code, message)) => return Err(SessionError::Rejected { code, message }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            store_url("http://hub:8080").as_deref(),
            Some("ws://hub:8080/api/store/ws")
        );
        assert_eq!(
            store_url("https://hub/").as_deref(),
            Some("wss://hub/api/store/ws")
        );
        assert_eq!(
            store_url("ws://h/api/store/ws").as_deref(),
            Some("ws://h/api/store/ws")
        );
        assert_eq!(store_url("ftp://h"), None);
        assert_eq!(store_url("http://"), None);
    }

    #[test]
    fn queue_drops_oldest_when_full() {
        let q = ForwardQueue::new(2);
        for i in 0..5 {
            q.push(vec![Point {
                name: "x",
                value: f64::from(i),
                unit: "",
                timestamp: 0,
            }]);
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped_batches.load(Relaxed), 3);
        let (n, pts) = q.peek(100);
        assert_eq!((n, pts[0].value, pts[1].value), (2, 3.0, 4.0));
    }

    #[test]
    fn peek_takes_whole_batches_up_to_the_limit() {
        let q = ForwardQueue::new(10);
        let batch = points(&Numbers::default(), 1);
        let per = batch.len();
        for _ in 0..3 {
            q.push(batch.clone());
        }
        assert_eq!(q.peek(per * 2).0, 2);
        assert_eq!(q.peek(1).0, 1, "one batch is always taken");
        q.pop(2);
        assert_eq!(q.len(), 1);
    }
}
