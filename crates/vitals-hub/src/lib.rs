//! The Vitals hub as a library: [`start`] runs a hub from a [`Config`] and returns a handle with
//! its bound address, so the binary, the tests and the benchmarks all run the same code.
//!
//! Shutdown order keeps "acknowledged means durable": stop accepting, let every agent
//! connection finish the batch it is committing (and acknowledge it), then drain the
//! group-commit writer, then close the store.

pub mod alerts;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod ingest;
pub mod live;
pub mod origin;
pub mod pages;
pub mod ratelimit;
pub mod replica;
pub mod routes;
pub mod selfmon;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod transfer;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use vitals_store::{SqliteStore, Store};

pub use config::Config;
use state::{AgentRegistry, AppState, Inner, Limits};

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Store(#[from] vitals_store::StoreError),
    #[error("cannot listen on {addr}: {source} (is another hub running? choose another --listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load the TLS certificate or key: {0}")]
    Tls(std::io::Error),
    #[error("cannot use the NATS server: {0} (check nats_url)")]
    Nats(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Opens the store the configuration names (creating the data directory if needed).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, HubError> {
    match config.database_url.as_deref() {
        Some(url) => Ok(vitals_store::open(url).await?),
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| HubError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
            Ok(Arc::new(SqliteStore::open(&config.sqlite_path()).await?))
        }
    }
}

/// A running hub.
pub struct RunningHub {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Base URL for links.
    pub public_url: String,
    /// The one-time first-admin link, when the hub has no user yet.
    pub setup_url: Option<String>,
    /// The setup token itself (for tests).
    pub setup_token: Option<String>,
    state: AppState,
    task: tokio::task::JoinHandle<Result<(), HubError>>,
}

impl RunningHub {
    /// Asks the hub to stop (as SIGTERM does).
    pub fn shutdown(&self) {
        self.state.shutdown.cancel();
    }

    /// Waits until the hub has stopped.
    pub async fn wait(self) -> Result<(), HubError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(HubError::Serve(std::io::Error::other(e))),
        }
    }

    /// The shared state (tests use it to reach the store).
    pub fn state(&self) -> &AppState {
        &self.state
    }
}

/// Starts a hub: opens the store, binds the listener and spawns every task.
pub async fn start(config: Config) -> Result<RunningHub, HubError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&config).await?;
    start_with_store(config, store).await
}

/// Starts a hub on an already opened store.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<RunningHub, HubError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(c, k)
                .await
                .map_err(HubError::Tls)?,
        ),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| HubError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(HubError::Serve)?;
    let public_url = config.public_url(addr);

    let settings = settings::Settings::from_stored(&store.settings().await?);
    let (events, _) = broadcast::channel(4096);
    let shutdown = CancellationToken::new();
    let writer_stop = CancellationToken::new();
    let (writer, writer_task) = ingest::writer::Writer::spawn(
        Arc::clone(&store),
        events.clone(),
        writer_stop.clone(),
        Duration::from_millis(u64::from(config.ingest_commit_window_ms)),
    );
    let live = live::Live::open(
        Arc::clone(&store),
        events.clone(),
        live::LiveLimits {
            max_viewers: config.max_viewers as usize,
            max_viewers_per_user: config.max_viewers_per_user as usize,
            send_timeout: Duration::from_millis(config.viewer_send_timeout_ms),
        },
    )
    .await?;
    let burst = f64::from(config.ingest_batch_burst);
    let rate = config.ingest_batches_per_sec;
    let state = AppState::new(Inner {
        store: Arc::clone(&store),
        public_url: public_url.clone(),
        raw_retention_ms: std::sync::atomic::AtomicI64::new(settings.raw_retention_ms()),
        settings: std::sync::RwLock::new(settings),
        writer,
        agents: Arc::new(AgentRegistry::default()),
        limits: Limits {
            pair_create: ratelimit::SharedLimiter::new("pair_create", 1.0 / 6.0, 10.0, &store),
            pair_poll: ratelimit::SharedLimiter::new("pair_poll", 0.5, 3.0, &store),
            pair_guess: ratelimit::SharedLimiter::new("pair_guess", 0.1, 5.0, &store),
            login: ratelimit::SharedLimiter::new("login", 1.0 / 6.0, 10.0, &store),
            batches: ratelimit::KeyedLimiter::new(rate, burst),
        },
        shutdown: shutdown.clone(),
        metrics: telemetry::handle(),
        events,
        started: Instant::now(),
        live,
        alerts: alerts::Alerts::new(),
        replicas: replica::Replicas::new(),
        config,
    });

    let (setup_url, setup_token) = if store.count_users().await? == 0 {
        let token = auth::new_token("");
        let hash = routes::accounts::hex(&auth::hash_token(&token));
        store
            .meta_set(&routes::accounts::setup_key(&*store, &hash), &hash)
            .await?;
        let url = format!("{public_url}/setup?token={token}");
        tracing::info!("no users yet: create the first admin at {url}");
        (Some(url), Some(token))
    } else {
        (None, None)
    };

    replica::spawn(&state).await?;
    spawn_background(&state);
    spawn_rollups(&state);
    live::spawn(&state);
    alerts::spawn(&state);
    if state.config.demo > 0 {
        tokio::spawn(demo::run(state.clone(), state.config.demo));
    }
    if state.config.self_monitor {
        tokio::spawn(selfmon::run(state.clone()));
    }

    let app = routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let served = match tls {
            None => axum::serve(listener, app)
                .with_graceful_shutdown(task_state.shutdown.clone().cancelled_owned())
                .await
                .map_err(HubError::Serve),
            Some(tls) => {
                let handle = axum_server::Handle::new();
                let h2 = handle.clone();
                let stop = task_state.shutdown.clone();
                tokio::spawn(async move {
                    stop.cancelled().await;
                    h2.graceful_shutdown(Some(Duration::from_secs(10)));
                });
                let std_listener = listener.into_std().map_err(HubError::Serve)?;
                axum_server::from_tcp_rustls(std_listener, tls)
                    .map_err(HubError::Serve)?
                    .handle(handle)
                    .serve(app)
                    .await
                    .map_err(HubError::Serve)
            }
        };
        // Agent connections finish the batch they are committing, then close.
        let deadline = Instant::now() + Duration::from_secs(10);
        while task_state.agents.count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer_stop.cancel();
        let _ = writer_task.await;
        task_state.alerts.stopped(Duration::from_secs(5)).await;
        task_state.store.close().await;
        tracing::info!("hub stopped");
        served
    });
    tracing::info!(%addr, backend = store.backend(), "vitals hub listening on {public_url}");
    Ok(RunningHub {
        addr,
        public_url,
        setup_url,
        setup_token,
        state,
        task,
    })
}

/// Periodic housekeeping: retention (hourly, in small chunks), expired sessions and pairing
/// codes, and the database size gauge.
fn spawn_background(state: &AppState) {
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = st.shutdown.cancelled() => return,
            }
            if let Ok(b) = st.store.size_bytes().await {
                metrics::gauge!(telemetry::DATABASE_BYTES).set(b as f64);
            }
            let now = now_ms();
            let _ = st.store.purge_sessions(now).await;
            // Expired codes answer 410 for an hour, then `not_found`.
            let _ = st.store.purge_device_codes(now - 3_600_000).await;
            if st.store.shared() {
                let _ = st.store.rate_purge(now - 3_600_000).await;
            }
            // Replicas: one at a time runs retention (a database lease).
            if n.is_multiple_of(120) && replica::lease(&st, "retention").await {
                retention(&st).await;
            }
            n += 1;
        }
    });
}

/// Rolls raw samples into the minute and hour tiers every 30 s (each step a short
/// transaction of its own), merging late samples, and compacts rolled-up raw samples into
/// column blocks; see [`vitals_store::tiers`].
fn spawn_rollups(state: &AppState) {
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = st.shutdown.cancelled() => return,
            }
            if replica::lease(&st, "rollups").await {
                roll_up(&st).await;
            }
        }
    });
}

/// One pass of the rollup job.
pub async fn roll_up(state: &AppState) {
    match vitals_store::tiers::roll_up_all(&*state.store, now_ms()).await {
        Ok(r) => {
            metrics::counter!(telemetry::ROLLUP_BUCKETS, "tier" => "minute")
                .increment(r.minute_buckets);
            metrics::counter!(telemetry::ROLLUP_BUCKETS, "tier" => "hour")
                .increment(r.hour_buckets);
            metrics::counter!(telemetry::ROLLUP_LATE).increment(r.late_samples);
            metrics::counter!(telemetry::COMPACTED).increment(r.compacted);
            tracing::debug!(?r, "rollup pass");
            if r.compacted > 0 {
                reclaim(state, 0.5).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "rollup pass failed; the next one resumes it"),
    }
}

/// Gives free pages back to the file system, a little at a time (each step holds the write
/// lock), when more than `min_free` (a fraction) of the file is free: compaction frees the
/// rows it moved, retention what it dropped.
async fn reclaim(state: &AppState, min_free: f64) {
    let (Ok(live), Ok(free)) = (
        state.store.size_bytes().await,
        state.store.free_bytes().await,
    ) else {
        return;
    };
    if free == 0 || (free as f64) < min_free * (live.saturating_add(free) as f64) {
        return;
    }
    let mut left = u64::MAX;
    while !state.shutdown.is_cancelled() {
        match state.store.reclaim_space(2048).await {
            Ok(n) if n > 0 && n < left => left = n,
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Drops what each tier no longer keeps (`retention.rawDays`, `minuteDays`, `hourDays`, read
/// at each pass so edits apply without a restart), a chunk at a time so ingest never waits
/// long for the write lock. Raw data goes only once rolled up, minutes once in hours.
pub async fn retention(state: &AppState) {
    let settings = state.settings();
    let keep = vitals_store::tiers::Retention {
        raw_ms: settings.raw_retention_ms(),
        minute_ms: settings.minute_retention_ms(),
        hour_ms: settings.hour_retention_ms(),
    };
    let cutoff = now_ms() - keep.raw_ms;
    let stop = || state.shutdown.is_cancelled();
    match vitals_store::tiers::retention(
        &*state.store,
        now_ms(),
        keep,
        5000,
        Duration::from_millis(5),
        stop,
    )
    .await
    {
        Ok(r) => {
            for (tier, n) in [("raw", r.raw), ("minute", r.minute), ("hour", r.hour)] {
                metrics::counter!(telemetry::RETENTION_DELETED, "tier" => tier).increment(n);
            }
            if r != Default::default() {
                tracing::info!(
                    raw = r.raw,
                    minute = r.minute,
                    hour = r.hour,
                    "retention pass"
                );
                reclaim(state, 0.0).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
    }
    // Resolved alerts, settled notifications and the delivery log follow the 1-minute tier.
    match state
        .store
        .alert_purge_before(now_ms() - state.settings().minute_retention_ms())
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "retention removed old alert history"),
        Err(e) => tracing::warn!(error = %e, "alert history retention failed; will retry"),
    }
    let app = state.live.app.retention(cutoff).await;
    if app > 0 {
        tracing::info!(deleted = app, "retention removed old app-store records");
    }
}
