//! Storage for Vitals: the [`Store`] trait and its backends, [`SqliteStore`] (one file, one
//! hub) and [`PgStore`] (PostgreSQL, which several hubs may share); [`open`] picks one by URL.
//!
//! The hub talks to storage only through [`Store`]; it never writes SQL. Each backend keeps
//! its migrations in `migrations/<backend>/` and must pass the one shared test suite in
//! [`suite`] (SQLite always; PostgreSQL whenever a database URL is given). What the backends
//! share besides the trait (row mapping, the SQL-free steps of the tier work) lives in a
//! private `common` module, so both compute the same answers. All times are Unix
//! milliseconds. Invariants every backend keeps:
//! - a `(device, ts)` sample is stored at most once, so replays are idempotent;
//! - [`Store::insert_batches`] commits all its batches in one durable transaction, or none;
//! - a pairing code's token is handed out at most once ([`Store::claim_device_token`]).

pub mod block;
pub mod codec;
mod common;
pub mod copy;
pub mod frame;
pub mod postgres;
pub mod rollup;
pub mod shape;
pub mod sketch;
pub mod sqlite;
mod sqlite_writer;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;
pub mod tiers;
mod types;

use std::collections::BTreeMap;

use std::sync::Arc;

use async_trait::async_trait;

pub use frame::{Frame, Row, SeriesFilter};
pub use postgres::PgStore;
pub use rollup::{Runs, Tier};
pub use sqlite::SqliteStore;
/// The database error type, for callers that classify failures (unavailable vs. bug).
pub use sqlx::Error as SqlxError;
pub use types::*;

/// What went wrong in the store, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique thing (user name, code) already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite writer's own connection answered with an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations could not be applied.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database holds something this build cannot read.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The store was configured wrongly (an unknown kind of database URL).
    #[error("configuration error: {0}")]
    Config(String),
    /// A failure injected by a crash test (see `SqliteStore::inject_failure`).
    #[error("injected failure at {0}")]
    Injected(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything the hub persists. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short name of the backend, for logs (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    // ---- accounts -------------------------------------------------------------------------
    async fn count_users(&self) -> Result<i64>;
    /// Fails with [`StoreError::Conflict`] when the user name is taken (case-insensitively).
    async fn create_user(&self, user: NewUser) -> Result<User>;
    /// Creates the first admin only if there are no users yet, atomically. `Ok(None)` if a user
    /// already exists.
    async fn create_first_user(&self, user: NewUser) -> Result<Option<User>>;
    async fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Deletes the user and their sessions.
    async fn delete_user(&self, id: &str) -> Result<bool>;

    async fn create_session(&self, session: NewSession) -> Result<()>;
    /// The live (unexpired) session with this token hash, with its user.
    async fn session(&self, token_hash: &[u8], now: i64) -> Result<Option<(Session, User)>>;
    async fn delete_session(&self, token_hash: &[u8]) -> Result<()>;
    async fn purge_sessions(&self, now: i64) -> Result<u64>;

    async fn create_api_token(&self, token: NewApiToken) -> Result<ApiToken>;
    async fn api_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>>;
    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>>;
    async fn delete_api_token(&self, id: &str) -> Result<bool>;

    async fn meta_get(&self, key: &str) -> Result<Option<String>>;
    async fn meta_set(&self, key: &str, value: &str) -> Result<()>;
    /// Stores `value` under `key` unless the key exists; returns what the key holds after
    /// (the first writer wins, however many hubs race).
    async fn meta_init(&self, key: &str, value: &str) -> Result<String>;
    /// Deletes the key if it holds `value`; true if it did (a compare-and-delete).
    async fn meta_take(&self, key: &str, value: &str) -> Result<bool>;

    // ---- pairing --------------------------------------------------------------------------
    /// Fails with [`StoreError::Conflict`] if the code exists.
    async fn create_device_code(&self, code: NewDeviceCode) -> Result<()>;
    async fn device_code(&self, code: &str) -> Result<Option<DeviceCode>>;
    /// Approves a pending, unexpired code by creating its device (without a token yet).
    async fn approve_device_code(&self, code: &str, name: &str, now: i64)
    -> Result<ApproveOutcome>;
    /// For an approved code: stores `token_hash` as the device's token and deletes the code, in
    /// one transaction, so the token is handed out once.
    async fn claim_device_token(
        &self,
        code: &str,
        token_hash: &[u8],
        now: i64,
    ) -> Result<ClaimOutcome>;
    /// Deletes the code (deny). True if it existed and was not yet approved.
    async fn delete_device_code(&self, code: &str) -> Result<bool>;
    /// Deletes codes that expired before `before`.
    async fn purge_device_codes(&self, before: i64) -> Result<u64>;

    // ---- devices --------------------------------------------------------------------------
    async fn create_device(&self, device: NewDevice) -> Result<Device>;
    async fn device(&self, id: &str) -> Result<Option<Device>>;
    async fn device_by_token(&self, token_hash: &[u8]) -> Result<Option<Device>>;
    /// Every device with its newest sample, in one query.
    async fn list_devices(&self) -> Result<Vec<DeviceWithLatest>>;
    async fn rename_device(&self, id: &str, name: &str) -> Result<bool>;
    /// Replaces the device's token hash (rotation). False if the device does not exist.
    async fn set_device_token(&self, id: &str, token_hash: &[u8]) -> Result<bool>;
    async fn set_device_agent_version(&self, id: &str, version: &str) -> Result<()>;
    /// Deletes the device with all its samples and state.
    async fn delete_device(&self, id: &str) -> Result<bool>;

    // ---- samples --------------------------------------------------------------------------
    /// Stores every batch in ONE durable transaction (group commit) and updates each device's
    /// `last_seen`. Returns, per batch, how many samples were new (replays count 0).
    async fn insert_batches(&self, batches: &[SampleBatch]) -> Result<Vec<u64>>;
    /// Raw samples of one device with `from <= ts <= to`, of the series `filter` wants,
    /// oldest first, from hot rows and blocks alike.
    async fn samples(
        &self,
        device_seq: i64,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
    ) -> Result<Frame>;
    /// At most `limit` samples of one device with `from <= ts <= to`, oldest first: a page of a
    /// long read (export), continued with `from` = the last `ts` + 1.
    async fn samples_page(&self, device_seq: i64, from: i64, to: i64, limit: i64) -> Result<Frame>;
    /// Number of samples of one device (for tests and stats).
    async fn count_samples(&self, device_seq: i64) -> Result<i64>;
    /// Number of samples of one device with `from <= ts <= to` (to bound a query before
    /// reading it).
    async fn count_samples_between(&self, device_seq: i64, from: i64, to: i64) -> Result<i64>;
    /// Deletes at most `limit` raw samples older than `before` that the minute tier already
    /// holds (below their device's minute mark, and older than any late sample still to be
    /// merged); returns how many. Raw data is never dropped before it is rolled up.
    async fn delete_samples_before(&self, before: i64, limit: i64) -> Result<u64>;

    /// Moves the device's oldest hot window (10 minutes) of raw samples below `before` into a
    /// compact column block ([`block`]), in ONE transaction, merging into the window's block
    /// if late samples arrived after it was made. Only samples the minute tier already holds
    /// and no pending late sample needs are compacted. Reads see hot rows and blocks as one.
    async fn compact(&self, device_seq: i64, before: i64) -> Result<CompactStep>;
    /// [`compact`] for the first devices of `seqs`, as many as the backend groups into one
    /// transaction (at least one when `seqs` is not empty): returns their steps, in order.
    /// By default, one device per transaction.
    ///
    /// [`compact`]: Store::compact
    async fn compact_devices(&self, seqs: &[i64], before: i64) -> Result<Vec<CompactStep>> {
        match seqs.first() {
            Some(seq) => Ok(vec![self.compact(*seq, before).await?]),
            None => Ok(Vec::new()),
        }
    }

    // ---- rollup tiers (see `tiers`) -------------------------------------------------------
    /// Sequence numbers of every device.
    async fn device_seqs(&self) -> Result<Vec<i64>>;
    /// One step of the rollup job, in ONE transaction: rolls the device's data below `to`
    /// (bucket-aligned) into `tier` (raw samples into minutes, minutes into hours), from the
    /// tier's mark, covering at most `max_span_ms`, and advances the mark. The hour tier never
    /// passes the minute mark. Empty stretches are skipped without work.
    async fn roll_up(
        &self,
        device_seq: i64,
        tier: Tier,
        to: i64,
        max_span_ms: i64,
    ) -> Result<RollStep>;
    /// [`roll_up`] for the first devices of `seqs`, as many as the backend groups into one
    /// transaction (at least one when `seqs` is not empty): returns their steps, in order.
    /// By default, one device per transaction.
    ///
    /// [`roll_up`]: Store::roll_up
    async fn roll_up_devices(
        &self,
        seqs: &[i64],
        tier: Tier,
        to: i64,
        max_span_ms: i64,
    ) -> Result<Vec<RollStep>> {
        match seqs.first() {
            Some(seq) => Ok(vec![self.roll_up(*seq, tier, to, max_span_ms).await?]),
            None => Ok(Vec::new()),
        }
    }
    /// Merges at most `limit` late samples (stored below their minute mark) into the minute
    /// and, where already rolled up, hour rollups, in ONE transaction; returns how many.
    async fn roll_up_late(&self, limit: i64) -> Result<u64>;
    /// The device's rollups of `tier` with `from <= bucket < to` of the series `filter`
    /// wants, series-major; sketches only if `sketches` (charts need only min, max, sum, count
    /// and last, and decoding sketches is most of the cost).
    async fn rollups(
        &self,
        device_seq: i64,
        tier: Tier,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
        sketches: bool,
    ) -> Result<Runs>;
    /// What each level of the device holds.
    async fn tier_bounds(&self, device_seq: i64) -> Result<TierBounds>;
    /// Deletes at most `limit` rollups of `tier` with `bucket < before`; minute rollups only
    /// once the hour tier holds them. Returns how many.
    async fn delete_rollups_before(&self, tier: Tier, before: i64, limit: i64) -> Result<u64>;

    // ---- device state ---------------------------------------------------------------------
    async fn put_state(&self, device_seq: i64, kind: &str, json: &str, now: i64) -> Result<()>;
    async fn states(&self, device_seq: i64) -> Result<Vec<StateRecord>>;

    // ---- settings -------------------------------------------------------------------------
    async fn settings(&self) -> Result<BTreeMap<String, String>>;
    /// Writes all keys in one transaction.
    async fn put_settings(&self, values: &BTreeMap<String, String>) -> Result<()>;

    /// Bytes the database's live data occupies (free pages excluded).
    async fn size_bytes(&self) -> Result<u64>;
    /// Bytes of free pages (kept by the file for reuse).
    async fn free_bytes(&self) -> Result<u64> {
        Ok(0)
    }
    /// Gives up to `max_pages` free pages back to the file system (after retention);
    /// returns how many free pages are left.
    async fn reclaim_space(&self, max_pages: i64) -> Result<u64>;
    // ---- replicas --------------------------------------------------------------------------
    /// Whether several hubs may share this store (PostgreSQL). A hub whose store is not
    /// shared keeps its rate limits in memory and runs singleton work without asking.
    fn shared(&self) -> bool {
        false
    }
    /// Tries to take, or confirms this store still holds, the lease on the singleton work
    /// `name` (alert evaluation, retention, rollups). True while this store holds it; false
    /// while another hub does. A lease ends when its holder's process or connection dies.
    /// A store only one hub uses always holds every lease.
    async fn try_lease(&self, name: &str) -> Result<bool>;
    /// Takes `cost` tokens from the token bucket `key` (refilled at `rate_per_sec` up to
    /// `burst`, full when new) at time `now` (ms): `None` when taken, or `Some(ms)` to wait
    /// until enough tokens are there (nothing taken). A cost of 0 only looks. Shared by every
    /// hub on the store, so a client gets the same limit whichever replica it reaches.
    async fn rate_take(
        &self,
        key: &str,
        rate_per_sec: f64,
        burst: f64,
        cost: f64,
        now: i64,
    ) -> Result<Option<i64>>;
    /// Deletes buckets untouched since `before`; returns how many.
    async fn rate_purge(&self, before: i64) -> Result<u64>;

    /// Checks the database can answer (for `/healthz`).
    async fn ping(&self) -> Result<()>;
    /// Closes connections, flushing what must be flushed.
    async fn close(&self);

    // ---- live app store (seed 001 buckets) ------------------------------------------------
    /// Every app-store record, in insertion (`seq`) order.
    async fn app_records(&self) -> Result<Vec<AppRecord>>;
    /// Applies every write in ONE transaction, or none: a failed precondition (insert of an
    /// existing id, update with a stale version, update or delete of a missing record) fails
    /// the whole transaction with [`StoreError::Conflict`].
    async fn app_write(&self, writes: &[AppWrite]) -> Result<()>;
    /// Deletes at most `limit` records created before `before`; returns their `(bucket, id)`.
    async fn app_delete_before(&self, before: i64, limit: i64) -> Result<Vec<(String, String)>>;

    // ---- alerts ---------------------------------------------------------------------------
    /// Every document of `kind` (`rule`, `channel`, `window`), oldest first.
    async fn alert_docs(&self, kind: &str) -> Result<Vec<AlertDoc>>;
    /// Inserts or replaces a document.
    async fn alert_doc_put(&self, kind: &str, id: &str, data: &str, now: i64) -> Result<()>;
    /// Deletes a document; false when there was none.
    async fn alert_doc_delete(&self, kind: &str, id: &str) -> Result<bool>;
    /// Every persisted engine state `(key, JSON)`.
    async fn alert_states(&self) -> Result<Vec<(String, String)>>;
    /// Applies state changes, event upserts and new notifications in ONE transaction.
    async fn alert_apply(&self, write: &AlertWrite) -> Result<()>;
    /// Events, newest first: only active ones, or all (at most `limit`).
    async fn alert_events(&self, active_only: bool, limit: i64) -> Result<Vec<AlertEventRow>>;
    async fn alert_event(&self, id: &str) -> Result<Option<AlertEventRow>>;
    /// Outbox items not done whose `next_at <= now`, oldest first.
    async fn alert_outbox_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxItem>>;
    /// Logs a delivery attempt and settles its outbox item (retry or done), atomically.
    async fn alert_delivery(&self, record: &DeliveryRecord) -> Result<()>;
    /// The delivery log, newest first.
    async fn alert_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>>;
    /// Deletes resolved events, settled outbox items and log lines older than `before`.
    async fn alert_purge_before(&self, before: i64) -> Result<u64>;
}

/// Opens the store a database URL names: `sqlite:PATH` for [`SqliteStore`],
/// `postgres://...` or `postgresql://...` for [`PgStore`]. Pending migrations are applied.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_url(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        Err(StoreError::Config(format!(
            "unsupported database URL scheme {scheme:?}: use sqlite:PATH, postgres:// or postgresql://"
        )))
    }
}

/// One token-bucket step, shared by the backends' [`Store::rate_take`]: the bucket held
/// `tokens` at `at` (None: new, so full); returns the tokens to store (at `now`) and, when
/// there are not enough, the milliseconds to wait (then nothing is taken).
pub fn bucket_take(
    held: Option<(f64, i64)>,
    rate_per_sec: f64,
    burst: f64,
    cost: f64,
    now: i64,
) -> (f64, Option<i64>) {
    let tokens = match held {
        None => burst,
        Some((tokens, at)) => {
            let secs = (now.saturating_sub(at)).max(0) as f64 / 1000.0;
            (tokens + secs * rate_per_sec).min(burst)
        }
    };
    let need = cost.max(1.0);
    if tokens >= need {
        (tokens - cost, None)
    } else {
        let wait = ((need - tokens) / rate_per_sec.max(1e-9) * 1000.0).ceil();
        (tokens, Some(wait.clamp(1.0, 1e12) as i64))
    }
}
