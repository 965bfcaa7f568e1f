//! The HTTP surface: every route of the API reference in the README, wired to its handler.
//! Every `/api/*` route needs a signed-in user or API token except pairing-code creation and
//! polling; `/healthz`, `/metrics` and the pages are open; `/agent` and `/api/report` take a
//! device token. Any other path is the web dashboard ([`crate::web`]).

pub mod accounts;
pub mod agent_dist;
pub mod alerts;
pub mod devices;
pub mod pairing;
pub mod queries;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::auth::{Admin, DeviceAuth, Viewer};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::settings;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/setup", get(accounts::setup_status).post(accounts::setup))
        .route("/auth/login", post(accounts::login))
        .route("/auth/logout", post(accounts::logout))
        .route("/auth/me", get(accounts::me))
        .route(
            "/users",
            get(accounts::list_users).post(accounts::create_user),
        )
        .route("/users/{id}", axum::routing::delete(accounts::delete_user))
        .route(
            "/tokens",
            get(accounts::list_tokens).post(accounts::create_token),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(accounts::delete_token),
        )
        .route("/device-codes", post(pairing::create_code))
        .route("/device-codes/{code}", get(pairing::show_code))
        .route("/device-codes/{code}/approve", post(pairing::approve_code))
        .route("/device-codes/{code}/deny", post(pairing::deny_code))
        .route("/device-token", get(pairing::poll_token))
        .route("/devices", get(devices::list).post(devices::create))
        .route(
            "/devices/{id}",
            get(devices::get)
                .patch(devices::rename)
                .delete(devices::delete),
        )
        .route("/devices/{id}/rotate-token", post(devices::rotate_token))
        .route("/devices/{id}/state", get(devices::device_state))
        .route("/clients", get(devices::clients))
        .route("/metrics/{id}", get(queries::metrics))
        .route("/stats/{id}", get(queries::stats))
        .route("/settings", get(get_settings).post(post_settings))
        .route(
            "/alert-rules",
            get(alerts::list_rules).post(alerts::create_rule),
        )
        .route(
            "/alert-rules/{id}",
            axum::routing::patch(alerts::patch_rule).delete(alerts::delete_rule),
        )
        .route(
            "/notification-channels",
            get(alerts::list_channels).post(alerts::create_channel),
        )
        .route(
            "/notification-channels/{id}",
            axum::routing::delete(alerts::delete_channel),
        )
        .route(
            "/notification-channels/{id}/test",
            post(alerts::test_channel),
        )
        .route("/alerts", get(alerts::list_alerts))
        .route("/alerts/{id}/ack", post(alerts::ack_alert))
        .route(
            "/maintenance-windows",
            get(alerts::list_windows).post(alerts::create_window),
        )
        .route(
            "/maintenance-windows/{id}",
            axum::routing::delete(alerts::delete_window),
        )
        .route("/alert-deliveries", get(alerts::deliveries))
        .route("/report", post(report))
        .route("/agent/release", get(agent_dist::release))
        .merge(crate::live::api_router())
        .fallback(api_not_found);

    Router::new()
        .nest("/api", api)
        .route("/agent", get(crate::ingest::ws::agent_ws))
        .route("/ws/live", get(crate::live::broadcast_ws::handler))
        .route("/healthz", get(healthz))
        .route("/install.sh", get(agent_dist::install_sh))
        .route("/downloads/{file}", get(agent_dist::download))
        .route("/metrics", get(prometheus))
        .merge(crate::pages::router())
        .fallback(
            axum::routing::any(crate::web::fallback)
                .layer(tower_http::compression::CompressionLayer::new()),
        )
        .layer(DefaultBodyLimit::max(
            vitals_proto::limits::MAX_MESSAGE_BYTES,
        ))
        .with_state(state)
}

async fn api_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API route; see the API reference in the README",
    )
}

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => {
            let mut body = json!({"status": "ok", "backend": state.store.backend(),
                "uptimeSec": state.started.elapsed().as_secs()});
            if state.replicas.enabled() {
                body["replica"] = json!(state.replicas.id);
                body["nats"] = json!(if state.replicas.connected() {
                    "connected"
                } else {
                    "disconnected"
                });
                body["alerts"] = json!(state.alerts.holding());
                body["wholeSamples"] = json!(state.replicas.whole_samples());
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: the hub's own metrics in Prometheus text format.
async fn prometheus(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed").into_response(),
    }
}

/// `GET /api/settings`. The Slack webhook URL is a secret: viewers see only its origin.
async fn get_settings(State(state): State<AppState>, v: Viewer) -> impl IntoResponse {
    let mut all = state.settings().as_json();
    if !v.0.is_admin()
        && let Some(url) = all.get_mut("alerts.slackWebhookUrl")
        && let Some(u) = url.as_str().filter(|u| !u.is_empty())
    {
        let shown = reqwest::Url::parse(u)
            .map(|p| format!("{}/…", p.origin().ascii_serialization()))
            .unwrap_or_else(|_| "…".into());
        *url = serde_json::Value::String(shown);
    }
    ApiJson(all)
}

/// `POST /api/settings {key: value, ...}`: a partial update, all or nothing.
async fn post_settings(
    State(state): State<AppState>,
    _a: Admin,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<impl IntoResponse> {
    let values = settings::validate_update(&body)
        .map_err(|errs| ApiError::bad_request("invalid_settings", errs.join("; ")))?;
    let next = settings::apply(&state.settings(), &values);
    settings::check_combined(&next)
        .map_err(|errs| ApiError::bad_request("invalid_settings", errs.join("; ")))?;
    state.store.put_settings(&values).await?;
    state.set_settings(next);
    if values
        .keys()
        .any(|k| k.starts_with("alerts.") || k.starts_with("devices."))
    {
        crate::alerts::sync_builtin_rules(&state).await?;
        crate::alerts::rules_changed(&state).await;
    }
    state
        .replicas
        .announce(crate::replica::Control::Settings)
        .await;
    tracing::info!(keys = ?values.keys().collect::<Vec<_>>(), "settings updated");
    Ok(ApiJson(state.settings().as_json()))
}

/// `POST /api/report` (seed 003): the agent batch over HTTP, answered after commit.
async fn report(
    State(state): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    body: String,
) -> Response {
    let reply = crate::ingest::handle_text(&state, &device, &body).await;
    let status = match &reply {
        vitals_proto::HubMessage::Ack { .. } => StatusCode::OK,
        vitals_proto::HubMessage::Error { code, .. } => match code {
            vitals_proto::ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            vitals_proto::ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            vitals_proto::ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            vitals_proto::ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        },
    };
    let mut res = (status, axum::Json(&reply)).into_response();
    if let vitals_proto::HubMessage::Error {
        retry_after_ms: Some(ms),
        ..
    } = &reply
        && let Ok(v) = (ms.div_ceil(1000).max(1)).to_string().parse()
    {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}
