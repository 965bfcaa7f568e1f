//! The live core: one change bus, one subscription registry, and the three WebSocket surfaces
//! that stand on it.
//!
//! ```text
//! writer (samples, after commit) ─┐
//! ingest (device state)          ─┤
//! device routes (DevicesChanged) ─┼─> AppState.events (broadcast bus) ─> registry::run ─> outboxes
//! app store (after its commit)   ─┘                                          (one per connection)
//! ```
//!
//! - `GET /api/store/ws`: seed 001's reactive store protocol ([`store_ws`]); the dashboard's
//!   views (`devices`, `device-latest`, `device-series`, `fleet-overview`) are queries of it.
//! - `GET /api/v1/devices/{uuid}/ws`: seed 002's per-device channels ([`device_ws`]).
//! - `GET /ws/live`: seed 003's broadcast of every new sample ([`broadcast_ws`]).
//!
//! Invariants: events are published only after the commit they describe; the live core never
//! writes device data; no producer ever waits on a viewer (see [`outbox`]). Every [`LiveEvent`]
//! is plain data, so a later multi-replica hub can forward the same events over NATS and apply
//! the others' to its own registry.
//!
//! Limits: a viewer authenticates before the upgrade (cookie or bearer) or, on the store
//! socket, with `auth.login` within [`AUTH_TIMEOUT`]; Origin must be the hub's own or an
//! `allowed_origins` entry; messages are capped at [`MAX_VIEWER_MESSAGE_BYTES`]; there are at
//! most `max_viewers` connections per hub and `max_viewers_per_user` per user; subscribes are
//! rate limited per connection; a revoked token or deleted user loses its connections within
//! [`REVALIDATE_EVERY`].

pub mod appstore;
pub mod broadcast_ws;
pub mod device_ws;
pub mod http;
pub mod outbox;
pub mod registry;
pub mod store_ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tokio::sync::broadcast;
use vitals_store::{Store, StoreError};

use crate::auth::{Principal, UserPrincipal, Via};
use crate::error::ApiError;
use crate::ratelimit::KeyedLimiter;
use crate::state::{AppState, LiveEvent};
use appstore::{AppStore, OpError};
use outbox::Outbox;
use registry::Registry;

/// Largest message a viewer may send.
pub const MAX_VIEWER_MESSAGE_BYTES: usize = 64 * 1024;
/// A viewer's socket read buffer: viewers send little, and memory per connection matters
/// (the library's default is 128 KiB).
pub const VIEWER_READ_BUFFER: usize = 4 * 1024;
/// How long an unauthenticated store socket may stay before `auth.login`.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often open connections' credentials are checked again.
pub const REVALIDATE_EVERY: Duration = Duration::from_millis(500);
/// Shortest interval between two pushes of one view.
pub const COALESCE: Duration = Duration::from_millis(50);
/// Most subscriptions on one connection.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LiveLimits {
    pub max_viewers: usize,
    pub max_viewers_per_user: usize,
    pub send_timeout: Duration,
}

/// What a connection authenticated with, to check again later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cred {
    Session(Vec<u8>),
    ApiToken(String),
}

impl Cred {
    pub fn of(u: &UserPrincipal) -> Cred {
        match &u.via {
            Via::Session { token_hash, .. } => Cred::Session(token_hash.clone()),
            Via::ApiToken { id } => Cred::ApiToken(id.clone()),
        }
    }
}

struct ViewerInfo {
    user: Option<(String, Cred)>,
    outbox: Arc<Outbox>,
}

/// Open viewer connections: limits and revocation.
#[derive(Default)]
pub struct Viewers {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, ViewerInfo>>,
}

/// A registered connection; dropping it unregisters.
pub struct ViewerGuard {
    live: Arc<Live>,
    pub id: u64,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.live.viewers.lock().remove(&self.id);
        metrics::gauge!(crate::telemetry::CONNECTED_VIEWERS).decrement(1.0);
    }
}

impl Viewers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ViewerInfo>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// The live core.
pub struct Live {
    pub app: AppStore,
    pub registry: Registry,
    pub viewers: Viewers,
    pub limits: LiveLimits,
    /// Subscribes per connection.
    pub subscribes: KeyedLimiter,
}

impl Live {
    /// Opens the app store (loading its records) and an empty registry.
    pub async fn open(
        store: Arc<dyn Store>,
        events: broadcast::Sender<LiveEvent>,
        limits: LiveLimits,
    ) -> Result<Arc<Live>, StoreError> {
        Ok(Arc::new(Live {
            app: AppStore::open(store, events).await?,
            registry: Registry::new(COALESCE),
            viewers: Viewers::default(),
            limits,
            subscribes: KeyedLimiter::new(20.0, 100.0),
        }))
    }

    /// Registers a connection, or refuses it when the hub is full (seed 004's MaxClients).
    pub fn register(
        self: &Arc<Self>,
        user: Option<&UserPrincipal>,
        outbox: &Arc<Outbox>,
    ) -> Result<ViewerGuard, OpError> {
        let mut conns = self.viewers.lock();
        if conns.len() >= self.limits.max_viewers {
            return Err(OpError::new(
                "RATE_LIMITED",
                format!(
                    "the hub has its maximum of {} live connections; try again later",
                    self.limits.max_viewers
                ),
            ));
        }
        if let Some(u) = user {
            check_per_user(&conns, &u.id, self.limits.max_viewers_per_user)?;
        }
        let id = self.viewers.next.fetch_add(1, Ordering::Relaxed);
        conns.insert(
            id,
            ViewerInfo {
                user: user.map(|u| (u.id.clone(), Cred::of(u))),
                outbox: Arc::clone(outbox),
            },
        );
        metrics::gauge!(crate::telemetry::CONNECTED_VIEWERS).increment(1.0);
        Ok(ViewerGuard {
            live: Arc::clone(self),
            id,
        })
    }

    /// Records who a connection authenticated as (`auth.login`), within the per-user limit.
    pub fn set_user(&self, conn: u64, u: &UserPrincipal) -> Result<(), OpError> {
        let mut conns = self.viewers.lock();
        let already = conns
            .get(&conn)
            .and_then(|v| v.user.as_ref())
            .is_some_and(|(id, _)| *id == u.id);
        if !already {
            check_per_user(&conns, &u.id, self.limits.max_viewers_per_user)?;
        }
        if let Some(v) = conns.get_mut(&conn) {
            v.user = Some((u.id.clone(), Cred::of(u)));
        }
        Ok(())
    }
}

fn check_per_user(conns: &HashMap<u64, ViewerInfo>, user: &str, max: usize) -> Result<(), OpError> {
    let n = conns
        .values()
        .filter(|v| v.user.as_ref().is_some_and(|(id, _)| id == user))
        .count();
    if n >= max {
        return Err(OpError::new(
            "RATE_LIMITED",
            format!("at most {max} live connections per user; close some tabs"),
        ));
    }
    Ok(())
}

/// The routes under `/api`.
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/overview", get(http::overview))
        .route("/store/ws", get(store_ws::handler))
        .route("/store/{bucket}", get(http::list))
        .route("/store/{bucket}/{id}", get(http::get))
        .route("/v1/devices/{uuid}/ws", get(device_ws::handler))
}

/// Starts the dispatcher and the credential re-validation task.
pub fn spawn(state: &AppState) {
    tokio::spawn(registry::run(state.clone()));
    tokio::spawn(revalidate(state.clone()));
}

/// Checks the upgrade request: Origin, then credentials. `Ok(None)` for an anonymous request.
pub async fn upgrade_principal(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<UserPrincipal>, ApiError> {
    if !crate::origin::allowed(state, headers) {
        return Err(ApiError::forbidden(
            "this Origin may not open live connections; add it to allowed_origins",
        ));
    }
    match crate::auth::principal_from_headers(state, headers).await? {
        None => Ok(None),
        Some(Principal::User(u)) => Ok(Some(u)),
        Some(Principal::Device(_)) => Err(ApiError::forbidden(
            "device tokens may only send metrics; use a user session or API token",
        )),
    }
}

/// Maps a refused registration to an HTTP answer before the upgrade.
pub fn refuse(e: OpError) -> ApiError {
    ApiError {
        retry_after_secs: Some(5),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            e.message,
        )
    }
}

/// Closes connections whose session expired or was deleted (sign-out, user deleted) or whose
/// API token was revoked.
async fn revalidate(state: AppState) {
    let mut tick = tokio::time::interval(REVALIDATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let creds: Vec<Cred> = {
            let conns = state.live.viewers.lock();
            let mut v: Vec<Cred> = conns
                .values()
                .filter_map(|c| c.user.as_ref().map(|(_, c)| c.clone()))
                .collect();
            v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            v.dedup();
            v
        };
        if creds.is_empty() {
            continue;
        }
        let now = crate::now_ms();
        let mut tokens: Option<Vec<String>> = None;
        let mut dead = Vec::new();
        for c in creds {
            let alive = match &c {
                Cred::Session(hash) => match state.store.session(hash, now).await {
                    Ok(s) => s.is_some(),
                    Err(_) => true, // the database is down: keep viewers, check again later
                },
                Cred::ApiToken(id) => {
                    if tokens.is_none() {
                        tokens = match state.store.list_api_tokens().await {
                            Ok(t) => Some(t.into_iter().map(|t| t.id).collect()),
                            Err(_) => continue,
                        };
                    }
                    tokens.as_ref().is_some_and(|t| t.contains(id))
                }
            };
            if !alive {
                dead.push(c);
            }
        }
        if dead.is_empty() {
            continue;
        }
        let conns = state.live.viewers.lock();
        for v in conns.values() {
            if v.user.as_ref().is_some_and(|(_, c)| dead.contains(c)) {
                v.outbox
                    .close(outbox::CLOSE_REVOKED, "credentials revoked or expired");
            }
        }
    }
}

/// Serialises a JSON value for a reply (plain data: cannot fail).
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}
