//! `GET /api/v1/devices/{uuid}/ws`: seed 002's per-device channels, for signed-in viewers
//! (cookie or bearer, checked before the upgrade).
//!
//! Server -> client: `{type:"connected", data:{deviceUuid, timestamp}}` on connect, then
//! `{type:<channel>, data}` frames for the channels subscribed to, `pong` for `ping`.
//! Client -> server: `{type:"subscribe"|"unsubscribe", channels:[...]}` with channels
//! `metrics`, `system-info`, `processes`, `history`, `network-interfaces`; `{type:"ping"}`.
//!
//! Unlike the seed, nothing is polled on a timer: a channel's current value is sent when it is
//! subscribed to, then every change arrives from the bus as it is committed (`metrics` and
//! `history` with each new sample, the state channels when the agent reports them). All
//! viewers of a device share one stream (see [`super::registry`]), released with the last.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use vitals_store::Device;

use super::outbox::{self, Outbox};
use super::registry::{CHANNELS, HISTORY_POINTS, channel_bit};
use super::{MAX_VIEWER_MESSAGE_BYTES, VIEWER_READ_BUFFER, ViewerGuard, to_json};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn handler(
    State(state): State<AppState>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = super::upgrade_principal(&state, &headers)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let device = crate::routes::devices::find(&state, &uuid).await?;
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
        .on_upgrade(move |socket| serve(state, device, outbox, guard, socket)))
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn error(message: &str) -> String {
    to_json(&json!({"type": "error", "data": {"message": message}}))
}

async fn serve(
    state: AppState,
    device: Device,
    outbox: Arc<Outbox>,
    guard: ViewerGuard,
    socket: WebSocket,
) {
    let (sink, mut stream) = socket.split();
    let writer = tokio::spawn(outbox::write_loop(
        Arc::clone(&outbox),
        sink,
        state.live.limits.send_timeout,
    ));
    let registry = &state.live.registry;
    let conn = guard.id;
    if registry.stream_join(&device.id, conn, &outbox) {
        let now = crate::now_ms();
        let all = vitals_store::SeriesFilter::all();
        if let Ok(mut rows) = state
            .store
            .samples(device.seq, now - 3_600_000, now, &all)
            .await
        {
            let skip = rows.len().saturating_sub(HISTORY_POINTS);
            rows.retain_range(rows.ts.get(skip).copied().unwrap_or(i64::MIN), i64::MAX);
            let samples = crate::state::LiveSample::from_frame(&rows, &device.host_id);
            registry.seed_history(&device.id, &samples);
        }
    }
    outbox.reply(to_json(&json!({
        "type": "connected",
        "data": {"deviceUuid": device.id, "timestamp": rfc3339_now()},
    })));
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => handle(&state, &device, conn, &outbox, t.as_str()).await,
                Some(Ok(Message::Close(_))) | None => {
                    outbox.close(1000, "bye");
                    break;
                }
                Some(Ok(Message::Binary(_))) => outbox.reply(error("send JSON text frames")),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        outbox.close(outbox::CLOSE_TOO_BIG, "message too large");
                    } else {
                        outbox.close(outbox::CLOSE_GOING_AWAY, "socket error");
                    }
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
    registry.stream_leave(&device.id, conn);
    let _ = writer.await;
    drop(guard);
}

fn channels(v: &Value) -> Result<(u8, Vec<String>), String> {
    let Some(list) = v.get("channels").and_then(Value::as_array) else {
        return Err("`channels` must be an array of channel names".into());
    };
    let mut bits = 0u8;
    let mut names = Vec::new();
    for c in list {
        let name = c.as_str().unwrap_or("");
        match channel_bit(name) {
            Some(b) => {
                bits |= b;
                names.push(name.to_string());
            }
            None => {
                return Err(format!(
                    "unknown channel {c}; channels are {}",
                    CHANNELS.join(", ")
                ));
            }
        }
    }
    Ok((bits, names))
}

async fn handle(state: &AppState, device: &Device, conn: u64, outbox: &Arc<Outbox>, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        outbox.reply(error("not valid JSON"));
        return;
    };
    let registry = &state.live.registry;
    match v.get("type").and_then(Value::as_str) {
        Some("ping") => outbox.reply(to_json(&json!({
            "type": "pong",
            "data": {"timestamp": rfc3339_now()},
        }))),
        Some("subscribe") => {
            if state.live.subscribes.check(&conn.to_string()).is_err() {
                outbox.reply(error("too many subscribes; slow down"));
                return;
            }
            let (bits, names) = match channels(&v) {
                Ok(c) => c,
                Err(m) => return outbox.reply(error(&m)),
            };
            let (added, frames) = registry.stream_set(&device.id, conn, bits, 0);
            outbox.reply(to_json(
                &json!({"type": "subscribed", "data": {"channels": names}}),
            ));
            for f in frames {
                outbox.reply(f);
            }
            let wants_state = ["system-info", "processes", "network-interfaces"]
                .iter()
                .any(|c| channel_bit(c).is_some_and(|b| added & b != 0));
            if wants_state && let Ok(records) = state.store.states(device.seq).await {
                for r in records {
                    if channel_bit(&r.kind).is_some_and(|b| added & b != 0) {
                        outbox.reply(format!(r#"{{"type":"{}","data":{}}}"#, r.kind, r.data));
                    }
                }
            }
        }
        Some("unsubscribe") => {
            let (bits, names) = match channels(&v) {
                Ok(c) => c,
                Err(m) => return outbox.reply(error(&m)),
            };
            registry.stream_set(&device.id, conn, 0, bits);
            outbox.reply(to_json(
                &json!({"type": "unsubscribed", "data": {"channels": names}}),
            ));
        }
        _ => outbox.reply(error(
            "unknown message type; use subscribe, unsubscribe or ping",
        )),
    }
}
