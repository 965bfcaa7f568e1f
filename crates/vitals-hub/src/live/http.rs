//! The app store over HTTP, for scripts and pages that do not hold a socket:
//! `GET /api/overview` (the `fleet-overview` view: every device with its latest key values and
//! 60-point sparklines, from memory, in one request), `GET /api/store/{bucket}` (records in insertion order; `?name=` filters `metrics` by name and
//! `alerts` by metric; `?last=N` keeps the last N) and `GET /api/store/{bucket}/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::appstore::bucket_index;
use crate::auth::Viewer;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    last: Option<usize>,
}

fn json(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn bucket(name: &str) -> ApiResult<usize> {
    bucket_index(name).map_err(|_| ApiError::not_found("bucket"))
}

/// `GET /api/store/{bucket}`.
pub async fn list(
    State(state): State<AppState>,
    _v: Viewer,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let b = bucket(&name)?;
    let app = &state.live.app;
    let body = match (&q.name, q.last) {
        (Some(n), _) => app.read(|d| d.by_index_json(b, n)),
        (None, Some(n)) => app.read(|d| d.last_json(b, n)),
        (None, None) => app.read(|d| d.all_json(b)),
    };
    Ok(json(body))
}

/// `GET /api/store/{bucket}/{id}`.
pub async fn get(
    State(state): State<AppState>,
    _v: Viewer,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let b = bucket(&name)?;
    match state.live.app.read(|d| d.get_json(b, &id)) {
        Some(j) => Ok(json(j.to_string())),
        None => Err(ApiError::not_found("record")),
    }
}

/// `GET /api/overview`.
pub async fn overview(State(state): State<AppState>, _v: Viewer) -> Response {
    let ctx = super::registry::Ctx::of(&state);
    json(state.live.registry.snapshot(
        &super::registry::QueryKey::FleetOverview,
        &state.live.app,
        ctx,
    ))
}
