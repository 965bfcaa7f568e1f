//! Device pairing exactly as seed 000 describes it. An agent asks for a code (anonymous), a
//! person approves it (admin), the agent polls until it receives its token, exactly once.
//!
//! Rate limits per source IP: creating codes, polling (one poll per 2 s sustained), and
//! guessing (answers of `not_found`), each with `429` and `Retry-After`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use vitals_proto::pairing::{
    CODE_ALPHABET, CODE_LEN, DeviceCodeRequest, DeviceCodeResponse, display_code, normalize_code,
};
use vitals_store::{ApproveOutcome, ClaimOutcome, NewDeviceCode, StoreError};

use crate::auth::{self, Admin};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::ratelimit::retry_secs;
use crate::state::AppState;

fn random_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

fn check_text(field: &str, v: &str, max: usize) -> ApiResult<()> {
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("`{field}` must be at most {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// `POST /api/device-codes {hostId, hostname?, agentVersion?}` -> `201 {code, expiresAt}`.
pub async fn create_code(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<DeviceCodeRequest>,
) -> ApiResult<Response> {
    let ip = peer.ip().to_string();
    if let Err(wait) = state.limits.pair_create.check(&ip).await {
        return Err(ApiError::too_many(
            retry_secs(wait),
            "too many pairing codes requested from this address; wait and retry",
        ));
    }
    if body.host_id.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "`hostId` must not be empty",
        ));
    }
    check_text(
        "hostId",
        &body.host_id,
        vitals_proto::limits::MAX_HOST_ID_BYTES,
    )?;
    check_text("hostname", body.hostname.as_deref().unwrap_or(""), 255)?;
    check_text(
        "agentVersion",
        body.agent_version.as_deref().unwrap_or(""),
        64,
    )?;
    let now = crate::now_ms();
    let expires_at = now + i64::from(state.config.pairing_code_ttl_secs) * 1000;
    for _ in 0..5 {
        let code = random_code();
        let res = state
            .store
            .create_device_code(NewDeviceCode {
                code: code.clone(),
                host_id: body.host_id.clone(),
                hostname: body.hostname.clone(),
                agent_version: body.agent_version.clone(),
                source_ip: Some(ip.clone()),
                now,
                expires_at,
            })
            .await;
        match res {
            Ok(()) => {
                let out = DeviceCodeResponse {
                    code: display_code(&code),
                    expires_at: vitals_proto::sample::format_rfc3339_ms(expires_at),
                };
                return Ok((StatusCode::CREATED, ApiJson(out)).into_response());
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal("could not find a free pairing code"))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    code: Option<String>,
}

fn status(code: StatusCode, s: &str) -> Response {
    (code, axum::Json(json!({"status": s}))).into_response()
}

/// Takes a guess token for answers that reveal nothing (unknown code), so guessing stops.
async fn guessed(state: &AppState, ip: &str) -> Response {
    let _ = state.limits.pair_guess.check(ip).await;
    status(StatusCode::NOT_FOUND, "not_found")
}

/// `GET /api/device-token?code=` -> 404 pending | 404 not_found | 410 expired |
/// 200 `{token, deviceId}` exactly once.
pub async fn poll_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Response> {
    let ip = peer.ip().to_string();
    if let Err(wait) = state.limits.pair_guess.peek(&ip).await {
        return Err(ApiError::too_many(
            retry_secs(wait),
            "too many unknown codes from this address; wait and retry",
        ));
    }
    if let Err(wait) = state.limits.pair_poll.check(&ip).await {
        return Err(ApiError::too_many(
            retry_secs(wait),
            "poll at most every 2 seconds",
        ));
    }
    let Some(code) = q.code.as_deref().and_then(normalize_code) else {
        return Ok(guessed(&state, &ip).await);
    };
    let token = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
    let outcome = state
        .store
        .claim_device_token(&code, &auth::hash_token(&token), crate::now_ms())
        .await?;
    Ok(match outcome {
        ClaimOutcome::Claimed { device_id } => {
            tracing::info!(device = %device_id, "device token delivered");
            state.devices_changed();
            (
                StatusCode::OK,
                axum::Json(json!({"token": token, "deviceId": device_id})),
            )
                .into_response()
        }
        ClaimOutcome::Pending => status(StatusCode::NOT_FOUND, "pending"),
        ClaimOutcome::Expired => status(StatusCode::GONE, "expired"),
        ClaimOutcome::NotFound => guessed(&state, &ip).await,
    })
}

fn code_param(raw: &str) -> ApiResult<String> {
    normalize_code(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such pairing code; check it and try again",
        )
    })
}

/// `GET /api/device-codes/{code}` (admin): who is asking, so the approver knows.
pub async fn show_code(
    State(state): State<AppState>,
    _a: Admin,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let code = code_param(&raw)?;
    let Some(c) = state.store.device_code(&code).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such pairing code; it may have been used or mistyped",
        ));
    };
    let now = crate::now_ms();
    let st = if c.device_id.is_some() {
        "approved"
    } else if c.expires_at <= now {
        "expired"
    } else {
        "pending"
    };
    Ok(ApiJson(json!({
        "code": display_code(&c.code),
        "status": st,
        "hostId": c.host_id,
        "hostname": c.hostname,
        "agentVersion": c.agent_version,
        "sourceIp": c.source_ip,
        "requestedAt": vitals_proto::sample::format_rfc3339_ms(c.created_at),
        "expiresAt": vitals_proto::sample::format_rfc3339_ms(c.expires_at),
        "deviceId": c.device_id,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    name: String,
}

/// Checks a device name: 1..=100 characters, no control characters.
pub fn check_device_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a device name is 1 to 100 characters without control characters",
        ));
    }
    Ok(name.to_string())
}

/// `POST /api/device-codes/{code}/approve {name}` (admin): creates the device.
pub async fn approve_code(
    State(state): State<AppState>,
    _a: Admin,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> ApiResult<Response> {
    let code = code_param(&raw)?;
    let name = check_device_name(&body.name)?;
    match state
        .store
        .approve_device_code(&code, &name, crate::now_ms())
        .await?
    {
        ApproveOutcome::Approved(device) => {
            tracing::info!(device = %device.id, name = %device.name, "pairing approved");
            state.devices_changed();
            Ok((StatusCode::CREATED, ApiJson(device)).into_response())
        }
        ApproveOutcome::NotFound => Err(ApiError::not_found("pairing code")),
        ApproveOutcome::Expired => Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this pairing code expired; run the agent's pair command again",
        )),
        ApproveOutcome::AlreadyApproved => {
            Err(ApiError::conflict("this pairing code was already approved"))
        }
    }
}

/// `POST /api/device-codes/{code}/deny` (admin): deletes a pending code.
pub async fn deny_code(
    State(state): State<AppState>,
    _a: Admin,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let code = code_param(&raw)?;
    if state.store.delete_device_code(&code).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("pending pairing code"))
    }
}
