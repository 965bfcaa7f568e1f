//! A small WebSocket client for the live tests: JSON in, JSON out, with timeouts.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How long a test waits for a message it expects.
pub const WAIT: Duration = Duration::from_secs(5);

impl Ws {
    /// Connects to `url` with extra headers; returns the HTTP status on a refused upgrade.
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
        vitals_testkit::init_crypto();
        let mut req = url.into_client_request().expect("request");
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("name"),
                v.parse().expect("value"),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Ws { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    /// The next JSON message, or None when the socket closed or nothing came within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match m.ok()? {
                Message::Text(t) => return Some(serde_json::from_str(t.as_str()).expect("json")),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        self.recv_within(WAIT).await.expect("a message")
    }

    /// Sends a request and returns the next message (its answer).
    pub async fn call(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Asserts nothing arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(m) = self.recv_within(d).await {
            panic!("unexpected message: {m}");
        }
    }

    /// Reads until the close frame; returns its code and reason.
    pub async fn close_frame(&mut self, d: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    return Some((f.code.into(), f.reason.to_string()));
                }
                Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => {
                    return Some((0, String::new()));
                }
                Ok(Some(Ok(_))) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// Collects `n` pushes and returns them by subscription id.
pub async fn pushes(ws: &mut Ws, n: usize) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..n {
        let m = ws.recv().await;
        assert_eq!(m["type"], "push", "{m}");
        assert_eq!(m["channel"], "subscription", "{m}");
        let id = m["subscriptionId"].as_str().expect("id").to_string();
        assert!(
            out.insert(id.clone(), m["data"].clone()).is_none(),
            "one push per subscription: {id} twice"
        );
    }
    out
}
