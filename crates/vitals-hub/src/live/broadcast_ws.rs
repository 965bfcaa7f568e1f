//! `GET /ws/live`: seed 003's broadcast, for signed-in viewers: every new sample of every
//! device, as `{type:"metrics", deviceId, ts, data}`, as soon as it is committed. A viewer
//! that falls behind gets the latest sample of each device (coalesced per device), then is
//! disconnected if it stays behind. `{type:"ping"}` is answered with `pong`; other input is
//! ignored.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::json;

use super::outbox::{self, Outbox};
use super::{MAX_VIEWER_MESSAGE_BYTES, VIEWER_READ_BUFFER, ViewerGuard, to_json};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = super::upgrade_principal(&state, &headers)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let outbox = Arc::new(Outbox::new());
    let guard = state
        .live
        .register(Some(&user), &outbox)
        .map_err(super::refuse)?;
    Ok(ws
        .max_message_size(MAX_VIEWER_MESSAGE_BYTES)
        .max_frame_size(MAX_VIEWER_MESSAGE_BYTES)
        .read_buffer_size(VIEWER_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(state, outbox, guard, socket)))
}

async fn serve(state: AppState, outbox: Arc<Outbox>, guard: ViewerGuard, socket: WebSocket) {
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(outbox::write_loop(
        Arc::clone(&outbox),
        sink,
        state.live.limits.send_timeout,
    ));
    outbox.reply(to_json(
        &json!({"type": "connected", "serverTime": crate::now_ms()}),
    ));
    state.live.registry.broadcast_join(guard.id, &outbox);
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().contains("\"ping\"") {
                        outbox.reply(to_json(&json!({"type": "pong", "serverTime": crate::now_ms()})));
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    outbox.close(1000, "bye");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    outbox.close(outbox::CLOSE_TOO_BIG, "message too large or socket error");
                    break;
                }
            },
            _ = outbox.closed.cancelled() => break,
            _ = state.shutdown.cancelled() => {
                outbox.close(outbox::CLOSE_GOING_AWAY, "hub shutting down");
                break;
            }
        }
    }
    state.live.registry.broadcast_leave(guard.id);
    let _ = writer.await;
    drop(guard);
}
