//! The agent WebSocket, `GET /agent?hostId=H` with `Authorization: Bearer <device token>`
//! (seed 000). Authentication happens before the upgrade. Messages are handled in order, each
//! answered after its commit. The socket closes with 1009 for a message over 1 MiB, with 4401
//! when the device's token is revoked, and with 1001 when the hub shuts down (after the batch
//! in flight is committed and acknowledged).

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use vitals_proto::limits::MAX_MESSAGE_BYTES;
use vitals_proto::{ErrorCode, HubMessage};
use vitals_store::Device;

use crate::auth::DeviceAuth;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentQuery {
    host_id: Option<String>,
}

pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_REVOKED: u16 = 4401;
pub const CLOSE_GOING_AWAY: u16 = 1001;

pub async fn agent_ws(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    Query(q): Query<AgentQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(h) = &q.host_id
        && !device.host_id.is_empty()
        && *h != device.host_id
    {
        return Err(ApiError::forbidden(format!(
            "hostId {h:?} does not match the host this token was paired on"
        )));
    }
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(state, device, socket)))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

async fn send(socket: &mut WebSocket, msg: &HubMessage) -> bool {
    match serde_json::to_string(msg) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn serve(state: AppState, device: Device, mut socket: WebSocket) {
    let guard = state.agents.register(&device.id);
    tracing::info!(device = %device.id, name = %device.name, "agent connected");
    loop {
        let msg = tokio::select! {
            m = socket.recv() => m,
            _ = guard.token.cancelled() => {
                close(&mut socket, CLOSE_REVOKED, "token revoked").await;
                tracing::info!(device = %device.id, "agent disconnected: token revoked");
                return;
            }
            _ = state.shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "hub shutting down").await;
                return;
            }
        };
        let reply = match msg {
            Some(Ok(Message::Text(text))) => {
                crate::ingest::handle_text(&state, &device, text.as_str()).await
            }
            Some(Ok(Message::Binary(_))) => HubMessage::Error {
                seq: None,
                code: ErrorCode::Malformed,
                message: "send JSON text frames, not binary".into(),
                retry_after_ms: None,
            },
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue, // ping/pong are answered by the library
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit") {
                    crate::telemetry::rejected(&device.id, ErrorCode::MessageTooLarge, &text);
                    close(
                        &mut socket,
                        CLOSE_TOO_BIG,
                        "message too large: at most 1 MiB per message",
                    )
                    .await;
                } else {
                    tracing::debug!(device = %device.id, error = %text, "agent socket error");
                }
                break;
            }
        };
        if !send(&mut socket, &reply).await {
            break;
        }
    }
    tracing::info!(device = %device.id, "agent disconnected");
}
