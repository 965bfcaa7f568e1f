//! The connection to the hub, run as its own task so the sampling loop never waits on the
//! network.
//!
//! [`Link::start`] spawns a task that connects and then relays: the agent loop pushes message
//! texts with [`Link::send`] and reads [`Event`]s with [`Link::recv`]. The first event is
//! [`Event::Connected`] or [`Event::Closed`]; after `Closed` the task has ended and a new link
//! must be started (the agent loop does that with exponential backoff and jitter).
//!
//! - WebSocket (default): `GET /agent?hostId=H` with `Authorization: Bearer TOKEN`. The task
//!   pings every interval and closes the link when nothing at all (pong, ack, error) has arrived
//!   for 3 intervals, so a half-open TCP connection is detected within 3 intervals. A 401 on
//!   the upgrade or a close with code 4401 means the token is revoked: [`Closed::Unauthorized`].
//!   A 429 on the upgrade gives [`Closed::RetryAfter`].
//! - HTTP fallback: every message is one `POST /api/report` whose `200` body is the hub's
//!   answer (an ack); 401 and 429 are mapped like above.
//!
//! Incoming messages are only ever parsed as [`HubMessage`]: acks and errors. Nothing received
//! is executed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use vitals_proto::HubMessage;

use crate::http;

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Websocket,
    Http,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub hub: String,
    pub token: String,
    pub host_id: String,
    pub kind: Kind,
    /// The sampling interval: pings go out at this pace, 3 silent intervals close the link.
    pub interval: Duration,
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The hub refused the token (HTTP 401, close code 4401): stop sending.
    Unauthorized,
    /// The hub asked to come back later (HTTP 429 with `Retry-After`).
    RetryAfter(Duration),
    /// Anything else: network error, hub restart, ping timeout.
    Error(String),
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Unauthorized => f.write_str("the hub rejected the token (401)"),
            Closed::RetryAfter(d) => write!(f, "rate limited, retry after {d:?}"),
            Closed::Error(e) => f.write_str(e),
        }
    }
}

/// Something that happened on a link.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connected,
    Hub(HubMessage),
    Closed(Closed),
}

/// A running connection task.
#[derive(Debug)]
pub struct Link {
    out: mpsc::Sender<String>,
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Link {
    /// Starts connecting in the background.
    pub fn start(cfg: LinkConfig) -> Link {
        let (out_tx, out_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let end = match cfg.kind {
                Kind::Websocket => run_ws(&cfg, out_rx, &ev_tx).await,
                Kind::Http => run_http(&cfg, out_rx, &ev_tx).await,
            };
            let _ = ev_tx.send(Event::Closed(end)).await;
        });
        Link {
            out: out_tx,
            events: ev_rx,
            task,
        }
    }

    /// Queues a message text. `false` if the link has ended.
    pub fn send(&self, text: String) -> bool {
        self.out.try_send(text).is_ok()
    }

    /// The next event; `Closed` once the task has ended.
    pub async fn recv(&mut self) -> Event {
        self.events
            .recv()
            .await
            .unwrap_or(Event::Closed(Closed::Error("connection task ended".into())))
    }
}

async fn run_ws(
    cfg: &LinkConfig,
    mut out: mpsc::Receiver<String>,
    ev: &mpsc::Sender<Event>,
) -> Closed {
    http::install_crypto_provider();
    let url = http::ws_url(
        &cfg.hub,
        &format!("/agent?hostId={}", http::encode_query(&cfg.host_id)),
    );
    let mut req = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Closed::Error(format!("bad hub url {url}: {e}")),
    };
    match tungstenite::http::HeaderValue::from_str(&format!("Bearer {}", cfg.token)) {
        Ok(v) => {
            req.headers_mut()
                .insert(tungstenite::http::header::AUTHORIZATION, v);
        }
        Err(_) => return Closed::Unauthorized,
    }
    // The hub never sends large messages: keep the client's buffers small.
    let ws_cfg = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let connect = tokio_tungstenite::connect_async_with_config(req, Some(ws_cfg), true);
    let ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Err(_) => return Closed::Error("connect timed out".into()),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status().as_u16();
            return match status {
                401 | 403 => Closed::Unauthorized,
                429 => Closed::RetryAfter(
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(http::parse_retry_after)
                        .unwrap_or(Duration::from_secs(5)),
                ),
                s => Closed::Error(format!("websocket upgrade answered {s}")),
            };
        }
        Ok(Err(e)) => return Closed::Error(format!("connect: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    if ev.send(Event::Connected).await.is_err() {
        return Closed::Error("agent loop gone".into());
    }
    let (mut sink, mut stream) = ws.split();
    let mut ping = tokio::time::interval(cfg.interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    let silence = cfg.interval * 3;
    loop {
        tokio::select! {
            text = out.recv() => {
                let Some(text) = text else {
                    let _ = sink.close().await;
                    return Closed::Error("agent loop gone".into());
                };
                if let Err(e) = sink.send(Message::text(text)).await {
                    return Closed::Error(format!("send: {e}"));
                }
            }
            msg = stream.next() => {
                last_rx = Instant::now();
                match msg {
                    None => return Closed::Error("hub closed the connection".into()),
                    Some(Err(e)) => return Closed::Error(format!("receive: {e}")),
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<HubMessage>(&t) {
                        Ok(m) => {
                            if ev.send(Event::Hub(m)).await.is_err() {
                                return Closed::Error("agent loop gone".into());
                            }
                        }
                        Err(e) => tracing::debug!("ignoring an unknown hub message: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(f) if u16::from(f.code) == 4401 => Closed::Unauthorized,
                            Some(f) => Closed::Error(format!("hub closed the connection ({}: {})", u16::from(f.code), f.reason)),
                            None => Closed::Error("hub closed the connection".into()),
                        };
                    }
                    // Pongs count as life; pings are answered by tungstenite itself.
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                let quiet = last_rx.elapsed();
                if quiet > silence {
                    return Closed::Error(format!("no answer from the hub for {silence:?} (ping timeout)"));
                }
                // Acks every interval already prove the hub alive: ping only a quiet hub.
                if quiet < cfg.interval {
                    continue;
                }
                if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                    return Closed::Error(format!("ping: {e}"));
                }
            }
        }
    }
}

async fn run_http(
    cfg: &LinkConfig,
    mut out: mpsc::Receiver<String>,
    ev: &mpsc::Sender<Event>,
) -> Closed {
    let client = match http::client(Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => return Closed::Error(format!("http client: {e}")),
    };
    let url = http::join(&cfg.hub, "/api/report");
    if ev.send(Event::Connected).await.is_err() {
        return Closed::Error("agent loop gone".into());
    }
    while let Some(text) = out.recv().await {
        let is_metrics = text.starts_with(r#"{"type":"metrics""#);
        let seq = vitals_proto::messages::peek_seq(&text);
        let resp = client
            .post(&url)
            .bearer_auth(&cfg.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(text)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Closed::Error(format!("POST /api/report: {e}")),
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => {
                let body = resp.bytes().await.unwrap_or_default();
                match serde_json::from_slice::<HubMessage>(&body) {
                    Ok(m) => {
                        if ev.send(Event::Hub(m)).await.is_err() {
                            break;
                        }
                    }
                    // A 2xx without an ack body still means the hub took it.
                    Err(_) => {
                        if let Some(seq) = seq
                            && ev
                                .send(Event::Hub(HubMessage::Ack { seq, stored: 0 }))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            401 | 403 => return Closed::Unauthorized,
            429 => {
                let after = http::retry_after(resp.headers()).unwrap_or(Duration::from_secs(5));
                let m = HubMessage::Error {
                    seq,
                    code: vitals_proto::ErrorCode::RateLimited,
                    message: "rate limited".into(),
                    retry_after_ms: Some(after.as_millis() as u64),
                };
                if ev.send(Event::Hub(m)).await.is_err() {
                    break;
                }
            }
            400..=499 if is_metrics => {
                // A validation error: the body says which; the agent loop drops the batch.
                let body = resp.bytes().await.unwrap_or_default();
                let m = serde_json::from_slice::<HubMessage>(&body).unwrap_or(HubMessage::Error {
                    seq,
                    code: vitals_proto::ErrorCode::Malformed,
                    message: format!("hub answered {status}"),
                    retry_after_ms: None,
                });
                if ev.send(Event::Hub(m)).await.is_err() {
                    break;
                }
            }
            // State and drop reports are best effort over HTTP.
            400..=499 => {
                tracing::debug!(status, "hub did not take a non-metrics message over http")
            }
            s => return Closed::Error(format!("POST /api/report answered {s}")),
        }
    }
    Closed::Error("agent loop gone".into())
}
