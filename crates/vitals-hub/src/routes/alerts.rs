//! The alerting API: rules, notification channels (with a test send), maintenance windows,
//! alert events (active and history, acknowledge) and the delivery log. Everyone signed in
//! reads; only admins write. Every write is validated whole (all problems in one answer),
//! then applied to the engine before the response.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alerts::notify::{Channel, ChannelConfig};
use crate::alerts::rule::{self, MaintenanceWindow, Rule, WindowInput};
use crate::alerts::{self, engine::AlertEvent};
use crate::auth::{Admin, Viewer};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::state::AppState;

fn invalid(errors: Vec<String>) -> ApiError {
    ApiError::bad_request("invalid_request", errors.join("; "))
}

/// Checks that every device and channel a rule names exists.
async fn check_refs(state: &AppState, r: &Rule) -> ApiResult<()> {
    let mut errors = Vec::new();
    if !r.device_ids.is_empty() {
        let devices = state.store.list_devices().await?;
        for id in &r.device_ids {
            if !devices.iter().any(|d| &d.device.id == id) {
                errors.push(format!("`deviceIds`: no device {id:?}"));
            }
        }
    }
    for id in &r.channel_ids {
        if id != alerts::DEFAULT_SLACK && state.alerts.channel(id).is_none() {
            errors.push(format!(
                "`channelIds`: no channel {id:?} (create it with POST /api/notification-channels)"
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(errors))
    }
}

async fn store_rule(state: &AppState, r: &Rule) -> ApiResult<()> {
    let json = serde_json::to_string(r).map_err(ApiError::internal)?;
    state
        .store
        .alert_doc_put("rule", &r.id, &json, r.updated_at)
        .await?;
    crate::alerts::rules_changed(state).await;
    Ok(())
}

/// `GET /api/alert-rules`.
pub async fn list_rules(State(state): State<AppState>, _v: Viewer) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(alerts::load_rules(&state).await?))
}

/// `POST /api/alert-rules` (admin).
pub async fn create_rule(
    State(state): State<AppState>,
    _a: Admin,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    if alerts::load_rules(&state).await?.len() >= rule::MAX_RULES {
        return Err(ApiError::conflict(format!(
            "at most {} rules; delete some first",
            rule::MAX_RULES
        )));
    }
    let now = crate::now_ms();
    let r = rule::parse_input(body)
        .and_then(|i| i.into_rule(uuid::Uuid::new_v4().to_string(), now, now, None))
        .map_err(invalid)?;
    check_refs(&state, &r).await?;
    store_rule(&state, &r).await?;
    tracing::info!(rule = %r.id, name = %r.name, "alert rule created");
    Ok((StatusCode::CREATED, ApiJson(r)))
}

async fn find_rule(state: &AppState, id: &str) -> ApiResult<Rule> {
    alerts::load_rules(state)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found("alert rule"))
}

/// `PATCH /api/alert-rules/{id}` (admin): the given fields replace the rule's.
pub async fn patch_rule(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Map<String, Value>>,
) -> ApiResult<impl IntoResponse> {
    let old = find_rule(&state, &id).await?;
    let mut merged = rule::editable_json(&old);
    for (k, v) in body {
        merged.insert(k, v);
    }
    let r = rule::parse_input(Value::Object(merged))
        .and_then(|i| {
            i.into_rule(
                old.id.clone(),
                old.created_at,
                crate::now_ms().max(old.updated_at + 1),
                old.builtin.clone(),
            )
        })
        .map_err(invalid)?;
    check_refs(&state, &r).await?;
    store_rule(&state, &r).await?;
    Ok(ApiJson(r))
}

/// `DELETE /api/alert-rules/{id}` (admin): its firing alerts end without a notification.
pub async fn delete_rule(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if !state.store.alert_doc_delete("rule", &id).await? {
        return Err(ApiError::not_found("alert rule"));
    }
    crate::alerts::rules_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/notification-channels` (secrets redacted).
pub async fn list_channels(
    State(state): State<AppState>,
    v: Viewer,
) -> ApiResult<impl IntoResponse> {
    let admin = v.0.is_admin();
    Ok(ApiJson(
        state
            .alerts
            .channels()
            .iter()
            .map(|c| c.redacted(admin))
            .collect::<Vec<_>>(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBody {
    name: String,
    kind: String,
    #[serde(default)]
    config: Value,
}

/// `POST /api/notification-channels {name, kind, config}` (admin).
pub async fn create_channel(
    State(state): State<AppState>,
    _a: Admin,
    ApiJson(body): ApiJson<ChannelBody>,
) -> ApiResult<impl IntoResponse> {
    let mut errors = Vec::new();
    let name = rule::checked_name(&body.name, &mut errors);
    let config = match ChannelConfig::parse(&body.kind, body.config) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if state.alerts.channels().len() >= 100 {
        errors.push("at most 100 channels; delete some first".into());
    }
    let (Some(config), true) = (config, errors.is_empty()) else {
        return Err(invalid(errors));
    };
    let c = Channel {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        config,
        created_at: crate::now_ms(),
    };
    let json = serde_json::to_string(&c.to_doc()).map_err(ApiError::internal)?;
    state
        .store
        .alert_doc_put("channel", &c.id, &json, c.created_at)
        .await?;
    crate::alerts::rules_changed(&state).await;
    tracing::info!(channel = %c.id, kind = c.config.kind(), "notification channel created");
    Ok((StatusCode::CREATED, ApiJson(c.redacted(true))))
}

/// `DELETE /api/notification-channels/{id}` (admin): refused while a rule uses it.
pub async fn delete_channel(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let users: Vec<String> = alerts::load_rules(&state)
        .await?
        .into_iter()
        .filter(|r| r.channel_ids.contains(&id))
        .map(|r| r.name)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "the channel is used by the rules {}; remove it from them first",
            users.join(", ")
        )));
    }
    if !state.store.alert_doc_delete("channel", &id).await? {
        return Err(ApiError::not_found("notification channel"));
    }
    crate::alerts::rules_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/notification-channels/{id}/test` (admin): sends a test notification now.
pub async fn test_channel(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = state
        .alerts
        .channel(&id)
        .ok_or_else(|| ApiError::not_found("notification channel"))?;
    Ok(match alerts::send_test(&state, &c).await {
        Ok(d) => ApiJson(json!({"ok": true, "status": d.status})),
        Err(e) => ApiJson(json!({"ok": false, "error": e.to_string(), "permanent": e.permanent()})),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/alerts?state=active|all&limit=N` (newest first; at most 1000).
pub async fn list_alerts(
    State(state): State<AppState>,
    _v: Viewer,
    Query(q): Query<AlertsQuery>,
) -> ApiResult<impl IntoResponse> {
    let active = match q.state.as_deref() {
        None | Some("active") => true,
        Some("all") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("`state` is `active` or `all`, not {other:?}"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`limit` must be in 1..=1000",
        ));
    }
    let rows = state.store.alert_events(active, limit).await?;
    let events: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.data).ok())
        .collect();
    Ok(ApiJson(events))
}

/// `POST /api/alerts/{id}/ack` (admin): stops repeats of a firing alert and records who.
pub async fn ack_alert(
    State(state): State<AppState>,
    a: Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let by = a.0.name.clone();
    // Replicas: the one evaluating alerts holds the firing ones.
    let local = state.alerts.holding() || !state.replicas.enabled();
    let firing = if local {
        state.alerts.ack(&id, &by).await
    } else {
        state.replicas.forward_ack(&id, &by).await
    };
    if let Some(e) = firing {
        return Ok(ApiJson(e));
    }
    // Not firing: acknowledge the stored (resolved) event.
    let row = state
        .store
        .alert_event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    if row.active && !local {
        // Firing, but the replica evaluating alerts did not answer: writing the row here
        // would be undone by its next commit.
        return Err(ApiError {
            retry_after_secs: Some(3),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the replica evaluating alerts did not answer (is NATS up?); retry in a few seconds",
            )
        });
    }
    let mut e: AlertEvent = serde_json::from_str(&row.data).map_err(ApiError::internal)?;
    if e.acked_at.is_none() {
        e.acked_at = Some(crate::now_ms());
        e.acked_by = Some(by);
        let w = vitals_store::AlertWrite {
            events: vec![vitals_store::AlertEventRow {
                data: serde_json::to_string(&e).map_err(ApiError::internal)?,
                ..row
            }],
            ..Default::default()
        };
        state.store.alert_apply(&w).await?;
    }
    Ok(ApiJson(e))
}

/// `GET /api/maintenance-windows`.
pub async fn list_windows(
    State(state): State<AppState>,
    _v: Viewer,
) -> ApiResult<impl IntoResponse> {
    Ok(ApiJson(alerts::load_windows(&state).await?))
}

/// `POST /api/maintenance-windows {name, deviceIds, ruleIds, startsAt?, endsAt?, daily?}`.
pub async fn create_window(
    State(state): State<AppState>,
    _a: Admin,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<impl IntoResponse> {
    let input: WindowInput = serde_json::from_value(body).map_err(|e| {
        invalid(vec![format!(
            "{e} (a window is {{name, deviceIds, ruleIds, startsAt?, endsAt?, daily?: {{start, end, utcOffsetMin}}}})"
        )])
    })?;
    let now = crate::now_ms();
    let w: MaintenanceWindow = input
        .into_window(uuid::Uuid::new_v4().to_string(), now)
        .map_err(invalid)?;
    if alerts::load_windows(&state).await?.len() >= 1000 {
        return Err(ApiError::conflict("at most 1000 maintenance windows"));
    }
    let json = serde_json::to_string(&w).map_err(ApiError::internal)?;
    state
        .store
        .alert_doc_put("window", &w.id, &json, now)
        .await?;
    crate::alerts::rules_changed(&state).await;
    Ok((StatusCode::CREATED, ApiJson(w)))
}

/// `DELETE /api/maintenance-windows/{id}`.
pub async fn delete_window(
    State(state): State<AppState>,
    _a: Admin,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if !state.store.alert_doc_delete("window", &id).await? {
        return Err(ApiError::not_found("maintenance window"));
    }
    crate::alerts::rules_changed(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /api/alert-deliveries?limit=N` (admin): the delivery log, newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    _a: Admin,
    Query(q): Query<LimitQuery>,
) -> ApiResult<impl IntoResponse> {
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let rows = state.store.alert_deliveries(limit).await?;
    Ok(ApiJson(
        rows.into_iter()
            .map(|d| {
                json!({
                    "at": d.at, "eventId": d.event_id, "channelId": d.channel_id,
                    "kind": d.kind, "attempt": d.attempt, "ok": d.ok, "status": d.status,
                    "error": d.error, "retryAt": d.retry_at,
                })
            })
            .collect::<Vec<_>>(),
    ))
}
