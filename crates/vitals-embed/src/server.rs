//! The HTTP and WebSocket surface: `GET /`, `/static/*`, `/api/metrics`, `/api/jobs`,
//! `/api/jobs/{id}`, `/api/history` and `WS /ws`, plus the [`Dashboard`] that serves them.
//!
//! Rules kept here: every error is JSON `{"error": code, "message": ...}`; auth runs before
//! anything else; `/ws` checks the Origin, then reserves a viewer slot BEFORE upgrading, so
//! the `max_clients + 1`th viewer gets an HTTP 503 with a reason rather than a dropped socket;
//! a viewer's slot is released when its task ends, whatever the reason.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::assets;
use crate::auth;
use crate::config::{Auth, Config};
use crate::error::{Error, Result};
use crate::forward::{self, ForwardQueue};
use crate::handle::DashboardHandle;
use crate::state::Shared;
use crate::ticker::{self, Frames};

/// Largest message a viewer may send us; viewers only ever send pings and close frames.
const MAX_VIEWER_MESSAGE: usize = 4096;
/// Bytes a viewer's socket may buffer before sending fails.
const MAX_VIEWER_WRITE_BUFFER: usize = 4 << 20;

/// The dashboard, configured but not yet serving. See the crate docs for the five-line setup.
pub struct Dashboard {
    config: Arc<Config>,
    handle: DashboardHandle,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct App {
    config: Arc<Config>,
    shared: Arc<Shared>,
    frames: Arc<Frames>,
    stop: watch::Receiver<bool>,
}

/// A JSON error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut res = (self.status, axum::Json(body)).into_response();
        if let Some(c) = self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            warn!("cannot serialise dashboard response: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong",
            )
            .into_response()
        }
    }
}

async fn require_auth(State(app): State<App>, req: Request, next: Next) -> Response {
    match auth::check(&app.config.auth, req.headers(), req.uri().query()) {
        Ok(()) => next.run(req).await,
        Err(_) => {
            debug!(path = %req.uri().path(), "dashboard request refused: unauthenticated");
            let mut e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this dashboard needs credentials",
            );
            e.challenge = auth::challenge(&app.config.auth);
            e.into_response()
        }
    }
}

async fn index() -> Response {
    assets::index()
}

async fn static_file(Path(path): Path<String>) -> Response {
    assets::static_file(&path).unwrap_or_else(|| not_found_response("no such file"))
}

fn not_found_response(message: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message).into_response()
}

async fn not_found() -> Response {
    not_found_response("no such route")
}

async fn metrics(State(app): State<App>) -> Response {
    json(&app.shared.snapshot(SystemTime::now()))
}

async fn jobs(State(app): State<App>) -> Response {
    json(&app.shared.jobs(SystemTime::now()))
}

async fn job(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.shared.job(&id, SystemTime::now()) {
        Some(j) => json(&j),
        None => not_found_response(&format!("no job with id {id:?}")),
    }
}

async fn history(State(app): State<App>) -> Response {
    json(&app.shared.history())
}

/// Holds one of the `max_clients` viewer slots; released on drop.
struct ViewerSlot(Arc<Shared>);

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        self.0.release_viewer();
    }
}

async fn ws(
    State(app): State<App>,
    headers: HeaderMap,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !auth::origin_allowed(&headers, &app.config.allowed_origins) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("?");
        debug!(origin = %origin, "dashboard stream refused: origin not allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("pages from {origin:?} may not open this dashboard's stream; add the origin to allowed_origins"),
        )
        .into_response();
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "websocket_required",
                format!("/ws needs a WebSocket upgrade: {rejection}"),
            )
            .into_response();
        }
    };
    let max = app.config.max_clients;
    if !app.shared.try_acquire_viewer(max) {
        debug!(
            max_clients = max,
            "dashboard viewer refused: too many viewers"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_viewers",
            format!("this dashboard already has its maximum of {max} viewers (max_clients); try again later"),
        )
        .into_response();
    }
    let slot = ViewerSlot(app.shared.clone());
    upgrade
        .max_message_size(MAX_VIEWER_MESSAGE)
        .max_frame_size(MAX_VIEWER_MESSAGE)
        .max_write_buffer_size(MAX_VIEWER_WRITE_BUFFER)
        .on_upgrade(move |socket| viewer(socket, app, slot))
}

async fn viewer(socket: WebSocket, app: App, _slot: ViewerSlot) {
    let (mut tx, mut rx) = socket.split();
    let mut frames = app.frames.subscribe();
    let mut stop = app.stop.clone();
    let send_timeout = (app.config.update_interval * 3).max(Duration::from_secs(5));
    // A new viewer gets a snapshot at once rather than after up to one interval.
    if let Some(first) = ticker::frame(&app.shared)
        && tx.send(Message::Text(first)).await.is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            changed = frames.changed() => {
                if changed.is_err() {
                    break;
                }
                let frame = frames.borrow_and_update().clone();
                if let Some(frame) = frame {
                    match tokio::time::timeout(send_timeout, tx.send(Message::Text(frame))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            debug!("dashboard viewer dropped: too slow to take a snapshot");
                            break;
                        }
                    }
                }
            }
            msg = rx.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = crate::stopped(&mut stop) => {
                let bye = CloseFrame { code: 1001, reason: "dashboard stopping".into() };
                let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(bye)))).await;
                break;
            }
        }
    }
}

fn router(app: App) -> Router {
    let guard = middleware::from_fn_with_state(app.clone(), require_auth);
    let data = Router::new()
        .route("/api/metrics", get(metrics))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/history", get(history))
        .route("/ws", get(ws))
        .route_layer(guard.clone());
    let page = Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/static/{*path}", get(static_file));
    // With basic auth the browser must be challenged by the page itself, so that it then
    // sends the credentials with the page's API calls and WebSocket. A bearer token cannot be
    // sent by a browser on navigation, so the data-free page stays public.
    let page = match app.config.auth {
        Auth::Basic { .. } => page.route_layer(guard),
        _ => page,
    };
    data.merge(page).fallback(not_found).with_state(app)
}

impl Dashboard {
    /// Checks the config and prepares the dashboard; nothing listens until it is started.
    pub fn new(config: Config) -> Result<Dashboard> {
        config.validate()?;
        let shared = Arc::new(Shared::new(config.max_jobs, config.history_points));
        Ok(Dashboard {
            config: Arc::new(config),
            handle: DashboardHandle { shared },
        })
    }

    /// The handle that feeds this dashboard; clone it into every part of the application.
    pub fn handle(&self) -> DashboardHandle {
        self.handle.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Listens on `bind:port` and serves until `shutdown` completes (its output is ignored, so
    /// `tokio::signal::ctrl_c()` fits). Returns at once when the dashboard is disabled.
    pub async fn start<F>(self, shutdown: F) -> Result<()>
    where
        F: Future + Send + 'static,
    {
        if !self.config.enabled {
            info!("dashboard disabled");
            return Ok(());
        }
        let addr = SocketAddr::new(self.config.bind, self.config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        self.serve(listener, shutdown).await
    }

    /// Binds now and serves in a task on the current tokio runtime. The returned value tells
    /// the bound address (useful with port 0) and stops the dashboard when shut down or dropped.
    pub fn spawn(self) -> Result<RunningDashboard> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if !self.config.enabled {
            return Err(Error::Config(
                "the dashboard is disabled (enabled = false)".into(),
            ));
        }
        let addr = SocketAddr::new(self.config.bind, self.config.port);
        let bind_err = |source| Error::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = {
            let _enter = rt.enter();
            TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let local = listener.local_addr().map_err(bind_err)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = self.handle();
        let task = rt.spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningDashboard {
            addr: local,
            handle,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Serves on a listener the application bound itself, until `shutdown` completes.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<()>
    where
        F: Future + Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let (frames, _) = watch::channel(None);
        let frames = Arc::new(frames);
        let shared = self.handle.shared.clone();
        let queue = self
            .config
            .forward
            .as_ref()
            .map(|f| Arc::new(ForwardQueue::new(f.queue_capacity)));
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(ticker::run(
            shared.clone(),
            self.config.update_interval,
            frames.clone(),
            queue.clone(),
            stop_rx.clone(),
        )));
        if let (Some(q), Some(f)) = (queue, self.config.forward.clone()) {
            tasks.push(tokio::spawn(forward::run(q, f, stop_rx.clone())));
        }
        let app = App {
            config: self.config.clone(),
            shared,
            frames,
            stop: stop_rx,
        };
        if let Ok(addr) = listener.local_addr() {
            info!(url = %format!("http://{addr}/"), "dashboard listening");
        }
        let stop_on_signal = stop_tx.clone();
        let served = axum::serve(listener, router(app))
            .with_graceful_shutdown(async move {
                shutdown.await;
                stop_on_signal.send_replace(true);
            })
            .await;
        stop_tx.send_replace(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        served.map_err(Error::Serve)
    }
}

/// A dashboard serving in a background task (from [`Dashboard::spawn`]).
#[derive(Debug)]
pub struct RunningDashboard {
    addr: SocketAddr,
    handle: DashboardHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl RunningDashboard {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The handle that feeds this dashboard.
    pub fn handle(&self) -> DashboardHandle {
        self.handle.clone()
    }

    /// Stops serving, closes viewers' sockets and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| Error::Serve(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningDashboard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{JobInfo, Metrics};
    use axum::body::{Body, to_bytes};
    use tower::ServiceExt as _;

    fn app(config: Config) -> (Router, DashboardHandle) {
        let dash = match Dashboard::new(config) {
            Ok(d) => d,
            Err(e) => panic!("config: {e}"),
        };
        let (_, stop) = watch::channel(false);
        let (frames, _) = watch::channel(None);
        let handle = dash.handle();
        let app = App {
            config: dash.config,
            shared: handle.shared.clone(),
            frames: Arc::new(frames),
            stop,
        };
        (router(app), handle)
    }

    async fn get(
        r: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let mut req = Request::builder().uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::empty()).unwrap_or_default();
        let res = match r.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = res.status();
        let headers = res.headers().clone();
        let body = to_bytes(res.into_body(), 1 << 20).await.unwrap_or_default();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    #[tokio::test]
    async fn metrics_has_every_seed_field() {
        let (r, h) = app(Config::default());
        h.update_job_metrics(5, 123, 2, 8, 15);
        h.update_http_metrics(45678, 23, 125.5);
        h.update_system_metrics(2048, 45.2, 1234);
        h.add_job(JobInfo {
            provider: "aws".into(),
            ..JobInfo::new("job-1", "export")
        });
        h.add_alert(crate::Severity::Warning, "High memory usage detected");
        h.set_system_health(crate::Health::Degraded);
        let (status, _, v) = get(&r, "/api/metrics", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let obj = v
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        for key in [
            "timestamp",
            "jobs_active",
            "jobs_completed",
            "jobs_failed",
            "jobs_pending",
            "queue_length",
            "http_requests",
            "http_errors",
            "avg_response_time",
            "memory_usage",
            "cpu_usage",
            "goroutines",
            "tasks",
            "active_connections",
            "provider_stats",
            "recent_jobs",
            "system_health",
            "alerts",
        ] {
            assert!(obj.iter().any(|k| k == key), "missing {key} in {obj:?}");
        }
        assert_eq!(v["jobs_active"], 5);
        assert_eq!(v["jobs_completed"], 123);
        assert_eq!(v["jobs_failed"], 2);
        assert_eq!(v["jobs_pending"], 8);
        assert_eq!(v["queue_length"], 15);
        assert_eq!(v["http_requests"], 45678);
        assert_eq!(v["http_errors"], 23);
        assert_eq!(v["avg_response_time"], 125.5);
        assert_eq!(v["memory_usage"], 2048);
        assert_eq!(v["cpu_usage"], 45.2);
        assert_eq!(v["goroutines"], 1234);
        assert_eq!(v["tasks"], 1234);
        assert_eq!(v["active_connections"], 0);
        assert_eq!(v["provider_stats"]["aws"], 1);
        assert_eq!(v["system_health"], "degraded");
        assert_eq!(v["alerts"][0]["severity"], "warning");
        assert_eq!(v["alerts"][0]["message"], "High memory usage detected");
        assert_eq!(v["recent_jobs"][0]["id"], "job-1");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        let typed: std::result::Result<Metrics, _> = serde_json::from_value(v);
        assert!(typed.is_ok(), "{typed:?}");
    }

    #[tokio::test]
    async fn job_by_id_found_and_not_found() {
        let (r, h) = app(Config::default());
        h.add_job(JobInfo {
            vm_name: "prod-web-01".into(),
            ..JobInfo::new("job-12345", "export-vm")
        });
        let (status, _, v) = get(&r, "/api/jobs/job-12345", &[]).await;
        assert_eq!(status, StatusCode::OK);
        for key in [
            "id",
            "name",
            "status",
            "progress",
            "start_time",
            "end_time",
            "duration_seconds",
            "provider",
            "vm_name",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["vm_name"], "prod-web-01");
        let (status, _, v) = get(&r, "/api/jobs/nope", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"], "not_found");
        let (status, _, v) = get(&r, "/api/jobs", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v.as_array().map(Vec::len), Some(1));
        let (status, _, v) = get(&r, "/nowhere", &[]).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }

    #[tokio::test]
    async fn bearer_guards_data_but_not_the_page() {
        let (r, _) = app(Config {
            auth: Auth::Bearer("tok".into()),
            ..Config::default()
        });
        let (status, headers, v) = get(&r, "/api/metrics", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"], "unauthorized");
        assert!(headers.get(header::WWW_AUTHENTICATE).is_some());
        assert_eq!(
            get(&r, "/api/metrics", &[("authorization", "Bearer tok")])
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(get(&r, "/api/jobs?token=tok", &[]).await.0, StatusCode::OK);
        assert_eq!(get(&r, "/", &[]).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn basic_guards_the_page_too() {
        let (r, _) = app(Config {
            auth: Auth::Basic {
                user: "ops".into(),
                password: "pw".into(),
            },
            ..Config::default()
        });
        let (status, headers, _) = get(&r, "/", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert!(challenge.is_some_and(|c| c.starts_with("Basic")));
        // "ops:pw" in base64.
        assert_eq!(
            get(&r, "/", &[("authorization", "Basic b3BzOnB3")]).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn ws_without_upgrade_is_a_json_400() {
        let (r, _) = app(Config::default());
        let (status, _, v) = get(&r, "/ws", &[]).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("websocket_required"))
        );
        let (status, _, v) = get(
            &r,
            "/ws",
            &[("origin", "https://evil.example"), ("host", "localhost")],
        )
        .await;
        assert_eq!(
            (status, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("origin_not_allowed"))
        );
    }

    #[tokio::test]
    async fn static_paths_cannot_escape() {
        let (r, _) = app(Config::default());
        assert_eq!(
            get(&r, "/static/../Cargo.toml", &[]).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&r, "/static/nope.js", &[]).await.0,
            StatusCode::NOT_FOUND
        );
    }
}
