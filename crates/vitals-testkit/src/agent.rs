//! A fake agent speaking the real agent protocol over a real WebSocket: it sends batches and
//! waits for each answer, as `vitals-agent` does.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vitals_proto::{AgentMessage, HubMessage, MetricSample};

pub struct FakeAgent {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl FakeAgent {
    /// Connects to `ws_base/agent?hostId=...` with the device token.
    pub async fn connect(ws_base: &str, token: &str, host_id: &str) -> Result<FakeAgent, WsError> {
        crate::init_crypto();
        let mut req = format!("{ws_base}/agent?hostId={host_id}").into_client_request()?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(|_| {
                WsError::Url(tokio_tungstenite::tungstenite::error::UrlError::NoPathOrQuery)
            })?,
        );
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(8 << 20);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), false).await?;
        Ok(FakeAgent { ws })
    }

    /// Sends a batch and returns the hub's answer.
    pub async fn send_batch(&mut self, seq: u64, samples: Vec<MetricSample>) -> HubMessage {
        let text = serde_json::to_string(&AgentMessage::Metrics { seq, samples }).expect("json");
        self.send_text(&text).await.expect("answer")
    }

    /// Sends raw text and returns the parsed answer, or None if the socket closed.
    pub async fn send_text(&mut self, text: &str) -> Option<HubMessage> {
        self.ws.send(Message::Text(text.into())).await.ok()?;
        self.recv().await
    }

    /// The next hub message, or None when the socket closed.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        while let Some(m) = self.ws.next().await {
            match m.ok()? {
                Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
        None
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(m) = self.ws.next().await {
            match m {
                Ok(Message::Close(Some(f))) => return Some(f.code.into()),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }
}
