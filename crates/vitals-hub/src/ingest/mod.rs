//! Agent ingest: one pipeline for both transports (the `/agent` WebSocket and
//! `POST /api/report`). A message is parsed, rate-limited per device, validated whole, its
//! samples checked against the token's device (never trusted from the payload), then handed
//! to the group-commit [`writer`]; the answer (`ack` or `error`) is given only after the
//! commit. A rejected batch changes nothing and affects no other device.

pub mod writer;
pub mod ws;

use std::sync::Arc;

use vitals_proto::state::DeviceState;
use vitals_proto::validate::{Window, validate_batch};
use vitals_proto::{AgentMessage, ErrorCode, HubMessage, MetricSample};
use vitals_store::{Device, Row, SampleBatch};

use crate::state::{AppState, LiveEvent, LiveSample};
use crate::telemetry;
use writer::WriteError;

fn error(seq: Option<u64>, code: ErrorCode, message: impl Into<String>) -> HubMessage {
    HubMessage::Error {
        seq,
        code,
        message: message.into(),
        retry_after_ms: None,
    }
}

/// How old a sample may be and still go to live views.
const LIVE_WINDOW_MS: i64 = 120_000;

/// Flattens validated samples for storage; consecutive samples of one shape share its names.
pub fn rows_of(samples: &[MetricSample]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::with_capacity(samples.len());
    let mut names = String::new();
    let mut values = Vec::new();
    for s in samples {
        vitals_proto::series::flatten_into(s, &mut names, &mut values);
        let shared = match rows.last() {
            Some(r) if *r.names == *names => Arc::clone(&r.names),
            _ => Arc::from(names.as_str()),
        };
        rows.push(Row {
            ts: s.ts,
            names: shared,
            values: values.clone(),
        });
    }
    rows
}

/// Handles one text message from a device and returns the answer to send.
pub async fn handle_text(state: &AppState, device: &Device, text: &str) -> HubMessage {
    let msg = match AgentMessage::from_json(text) {
        Ok(m) => m,
        Err(e) => {
            let seq = vitals_proto::messages::peek_seq(text);
            let m = format!("not a valid agent message: {e}");
            telemetry::rejected(&device.id, ErrorCode::Malformed, &m);
            return error(seq, ErrorCode::Malformed, m);
        }
    };
    match msg {
        AgentMessage::Metrics { seq, samples } => handle_metrics(state, device, seq, samples).await,
        AgentMessage::State { seq, state: st } => handle_state(state, device, seq, st).await,
        AgentMessage::Dropped {
            seq,
            count,
            oldest_ts,
            newest_ts,
        } => {
            metrics::counter!(telemetry::SPOOL_DROPPED).increment(count);
            tracing::warn!(
                device = %device.id, count, oldest_ts, newest_ts,
                "agent dropped samples from its full spool"
            );
            HubMessage::Ack { seq, stored: 0 }
        }
    }
}

/// Validates and durably stores a batch of samples.
pub async fn handle_metrics(
    state: &AppState,
    device: &Device,
    seq: u64,
    samples: Vec<MetricSample>,
) -> HubMessage {
    if let Err(wait) = state.limits.batches.check(&device.id) {
        let m = "the device sends batches too fast; slow down and retry later";
        telemetry::rejected(&device.id, ErrorCode::RateLimited, m);
        return HubMessage::Error {
            seq: Some(seq),
            code: ErrorCode::RateLimited,
            message: m.into(),
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
        };
    }
    let now = crate::now_ms();
    let window = Window {
        now_ms: now,
        oldest_ms: now - state.raw_retention_ms(),
    };
    if let Err(e) = validate_batch(&samples, window) {
        telemetry::rejected(&device.id, e.code, &e.message);
        return error(Some(seq), e.code, e.message);
    }
    if !device.host_id.is_empty()
        && let Some((i, s)) = samples
            .iter()
            .enumerate()
            .find(|(_, s)| s.host_id != device.host_id)
    {
        let m = format!(
            "sample {i}: hostId {:?} is not this device's host id; the token belongs to another host",
            s.host_id
        );
        telemetry::rejected(&device.id, ErrorCode::HostMismatch, &m);
        return error(Some(seq), ErrorCode::HostMismatch, m);
    }
    let rows = rows_of(&samples);
    // Live views get what is live: samples of the last two minutes, and the batch's newest
    // (a replayed spool is history, read from the store).
    let newest = samples.iter().map(|s| s.ts).max().unwrap_or(i64::MIN);
    let live: Vec<LiveSample> = samples
        .iter()
        .filter(|s| s.ts >= now - LIVE_WINDOW_MS || s.ts == newest)
        .cloned()
        .map(LiveSample::new)
        .collect();
    let batch = SampleBatch {
        device_seq: device.seq,
        samples: rows,
        now,
    };
    match state.writer.submit(&device.id, batch, live).await {
        Ok(stored) => {
            if stored > 0 {
                state
                    .alerts
                    .observe(&device.id, &device.name, samples)
                    .await;
            }
            HubMessage::Ack { seq, stored }
        }
        Err(WriteError::Unavailable) => {
            telemetry::rejected(&device.id, ErrorCode::Unavailable, "store unavailable");
            HubMessage::Error {
                seq: Some(seq),
                code: ErrorCode::Unavailable,
                message: "the hub could not store the batch; keep it and retry".into(),
                retry_after_ms: Some(2000),
            }
        }
        Err(WriteError::ShuttingDown) => HubMessage::Error {
            seq: Some(seq),
            code: ErrorCode::Unavailable,
            message: "the hub is shutting down; keep the batch and retry".into(),
            retry_after_ms: Some(2000),
        },
    }
}

pub async fn handle_state(
    state: &AppState,
    device: &Device,
    seq: Option<u64>,
    st: DeviceState,
) -> HubMessage {
    let now = crate::now_ms();
    let mut parts: Vec<(&'static str, String)> = Vec::new();
    if let Some(si) = &st.system_info {
        if si.hostname.len() > 256 || si.os.len() > 256 {
            return error(
                seq,
                ErrorCode::NameTooLong,
                "system info fields are too long",
            );
        }
        parts.push(("system-info", to_json(si)));
    }
    if let Some(p) = &st.processes {
        if p.top_processes.len() > 100 || p.top_by_memory.len() > 100 {
            return error(
                seq,
                ErrorCode::TooManyItems,
                "at most 100 processes per list",
            );
        }
        parts.push(("processes", to_json(p)));
    }
    if let Some(n) = &st.network_interfaces {
        if n.interfaces.len() > vitals_proto::limits::MAX_INTERFACES {
            return error(seq, ErrorCode::TooManyInterfaces, "at most 256 interfaces");
        }
        parts.push(("network-interfaces", to_json(n)));
    }
    for (kind, json) in parts {
        if let Err(e) = state.store.put_state(device.seq, kind, &json, now).await {
            tracing::error!(error = %e, "storing device state failed");
            return error(
                seq,
                ErrorCode::Unavailable,
                "could not store state; retry later",
            );
        }
        let _ = state.events.send(LiveEvent::State {
            device_id: device.id.clone(),
            kind,
            json: Arc::from(json),
        });
    }
    if let Some(v) = st.system_info.as_ref().map(|s| s.agent_version.as_str())
        && !v.is_empty()
        && device.agent_version.as_deref() != Some(v)
        && v.len() <= 64
    {
        let _ = state.store.set_device_agent_version(&device.id, v).await;
    }
    match seq {
        Some(seq) => HubMessage::Ack { seq, stored: 0 },
        None => HubMessage::Ack { seq: 0, stored: 0 },
    }
}

/// Serialises a state part (plain structs: serialisation cannot fail).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
