//! Devices: list, rename, delete (with all their data), token rotation, state and seed 003's
//! `/api/clients` view with status and latest sample.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use vitals_store::{Device, DeviceWithLatest};

use crate::auth::{self, Admin, Viewer};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::routes::pairing::check_device_name;
use crate::state::AppState;

/// online / stale / offline from the last sample time.
pub fn status_of(state: &AppState, last_seen: Option<i64>, now: i64) -> &'static str {
    let s = state.settings();
    match last_seen {
        Some(t) if now - t <= s.stale_after_ms() => "online",
        Some(t) if now - t <= s.offline_after_ms() => "stale",
        _ => "offline",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    #[serde(flatten)]
    pub device: Device,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_ts: Option<i64>,
}

pub fn view(state: &AppState, d: DeviceWithLatest, now: i64, with_latest: bool) -> DeviceView {
    let status = status_of(state, d.device.last_seen, now);
    // The live core holds the newest sample as the agent sent it (container images, GPU
    // names); the store keeps its numbers only, rebuilt here when the hub has no newer one.
    let live = if with_latest {
        state.live.registry.latest(&d.device.id)
    } else {
        None
    };
    let stored_ts = d.latest.as_ref().and_then(|l| l.ts.last().copied());
    let (latest, latest_ts) = match (live, d.latest) {
        (Some((ts, json)), _) if stored_ts.is_none_or(|s| ts >= s) => {
            (RawValue::from_string(json.to_string()).ok(), Some(ts))
        }
        (_, Some(l)) if with_latest && !l.is_empty() => {
            let sample = l.sample(l.len() - 1, &d.device.host_id);
            (
                serde_json::to_string(&sample)
                    .ok()
                    .and_then(|s| RawValue::from_string(s).ok()),
                Some(sample.ts),
            )
        }
        _ => (None, None),
    };
    DeviceView {
        device: d.device,
        status,
        latest,
        latest_ts,
    }
}

/// `GET /api/devices`.
pub async fn list(State(state): State<AppState>, _v: Viewer) -> ApiResult<impl IntoResponse> {
    let now = crate::now_ms();
    let all = state.store.list_devices().await?;
    Ok(ApiJson(
        all.into_iter()
            .map(|d| view(&state, d, now, false))
            .collect::<Vec<_>>(),
    ))
}

/// `GET /api/clients` (seed 003): devices with status, last seen, agent version and latest
/// sample, in one query.
pub async fn clients(State(state): State<AppState>, _v: Viewer) -> ApiResult<impl IntoResponse> {
    let now = crate::now_ms();
    let all = state.store.list_devices().await?;
    Ok(ApiJson(
        all.into_iter()
            .map(|d| view(&state, d, now, true))
            .collect::<Vec<_>>(),
    ))
}

/// Looks a device up by its public id.
pub async fn find(state: &AppState, id: &str) -> ApiResult<Device> {
    if id.len() > 64 {
        return Err(ApiError::not_found("device"));
    }
    state
        .store
        .device(id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))
}

pub async fn get(
    State(state): State<AppState>,
    _v: Viewer,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let d = find(&state, &id).await?;
    let status = status_of(&state, d.last_seen, crate::now_ms());
    Ok(ApiJson(DeviceView {
        device: d,
        status,
        latest: None,
        latest_ts: None,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    host_id: String,
}

/// `POST /api/devices {name, hostId}` (admin): provisions a device without the pairing
/// dance (automation, fleets, benchmarks). The token is in this answer only.
pub async fn create(
    State(state): State<AppState>,
    _a: Admin,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let name = check_device_name(&body.name)?;
    let host_id = body.host_id.trim();
    if host_id.is_empty()
        || host_id.len() > vitals_proto::limits::MAX_HOST_ID_BYTES
        || host_id.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            "`hostId` must be 1 to 128 bytes without control characters",
        ));
    }
    let token = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
    let device = state
        .store
        .create_device(vitals_store::NewDevice {
            name,
            host_id: host_id.to_string(),
            token_hash: Some(auth::hash_token(&token)),
            simulated: false,
            agent_version: None,
            now: crate::now_ms(),
        })
        .await?;
    state.devices_changed();
    Ok((
        StatusCode::CREATED,
        ApiJson(json!({"device": device, "token": token})),
    ))
}

/// `PATCH /api/devices/{id} {name}`.
pub async fn rename(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchBody>,
) -> ApiResult<impl IntoResponse> {
    let name = check_device_name(&body.name)?;
    find(&state, &id).await?;
    state.store.rename_device(&id, &name).await?;
    state.devices_changed();
    Ok(ApiJson(find(&state, &id).await?))
}

/// `DELETE /api/devices/{id}`: the device, its token, samples and state.
pub async fn delete(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    find(&state, &id).await?;
    state.agents.revoke(&id);
    state.store.delete_device(&id).await?;
    announce_revoked(&state, &id).await;
    state.devices_changed();
    tracing::info!(device = %id, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/devices/{id}/rotate-token`: a new token (shown once); the old one stops working
/// and the device's open connections close.
pub async fn rotate_token(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    find(&state, &id).await?;
    let token = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
    state
        .store
        .set_device_token(&id, &auth::hash_token(&token))
        .await?;
    let closed = state.agents.revoke(&id);
    announce_revoked(&state, &id).await;
    tracing::info!(device = %id, closed, "device token rotated");
    Ok(ApiJson(json!({"deviceId": id, "token": token})))
}

/// Other replicas close the device's agent connections too.
async fn announce_revoked(state: &AppState, id: &str) {
    let control = crate::replica::Control::Revoke {
        device_id: id.to_string(),
    };
    state.replicas.announce(control).await;
}

/// `GET /api/devices/{id}/state`: latest system info, processes and interfaces (seed 002).
pub async fn device_state(
    State(state): State<AppState>,
    _v: Viewer,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let d = find(&state, &id).await?;
    let records = state.store.states(d.seq).await?;
    let mut out = serde_json::Map::new();
    let mut updated = serde_json::Map::new();
    for r in records {
        let key = match r.kind.as_str() {
            "system-info" => "systemInfo",
            "processes" => "processes",
            "network-interfaces" => "networkInterfaces",
            _ => continue,
        };
        let v: serde_json::Value = serde_json::from_str(&r.data).unwrap_or(serde_json::Value::Null);
        out.insert(key.into(), v);
        updated.insert(key.into(), json!(r.updated_at));
    }
    out.insert("deviceId".into(), json!(d.id));
    out.insert("updatedAt".into(), serde_json::Value::Object(updated));
    Ok(ApiJson(serde_json::Value::Object(out)))
}
