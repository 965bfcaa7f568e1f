//! Origin checks for browser requests and WebSocket upgrades: a request that carries an
//! `Origin` header must come from the hub's own origin (same host as the `Host` header) or from
//! one of the configured `allowed_origins`. Requests without `Origin` (CLI tools, agents) pass.

use axum::http::{HeaderMap, header};

use crate::state::AppState;

pub fn allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if state
        .config
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
    {
        return true;
    }
    if let Some(public) = &state.config.public_url
        && public.trim_end_matches('/') == origin
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}
