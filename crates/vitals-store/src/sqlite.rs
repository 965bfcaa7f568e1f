//! The SQLite backend: one file in the data directory, WAL journal, `synchronous=FULL` so a
//! committed transaction survives power loss. Group commit is the caller's job: the hub hands
//! many agents' batches to one [`Store::insert_batches`] call, one transaction, one fsync.
//! Every transaction is `BEGIN IMMEDIATE`: it takes the write lock up front (waiting up to the
//! busy timeout), so a transaction that reads before it writes never fails with `SQLITE_BUSY`
//! when another connection committed in between.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Row as _, Sqlite, Transaction};

use crate::block::WINDOW_MS as BLOCK_MS;
use crate::common::*;
use crate::shape::{self, ShapeCache};
use crate::sqlite_writer::{Commit, Convert, HotSample, HotWriter};
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A step of the tier job (rollup or compaction) groups devices into one write transaction:
/// at least `GROUP_MIN`, then more until it has worked `GROUP_BUDGET` or on `GROUP_MAX`, and
/// commits. One commit per group rather than per device (a thousand devices' rollups were a
/// thousand commits every pass), while ingest never waits for the write turn much longer
/// than a commit window.
const GROUP_MIN: usize = 8;
const GROUP_BUDGET: Duration = Duration::from_millis(5);
const GROUP_MAX: usize = 100;

/// Whether a group of `n` devices started at `started` is complete (see `GROUP_MIN`).
fn group_full(n: usize, started: Instant) -> bool {
    n >= GROUP_MAX || (n >= GROUP_MIN && started.elapsed() >= GROUP_BUDGET)
}

/// Group commits run on a second connection to the file ([`HotWriter`]), which an in-memory
/// database cannot have.
const IN_MEMORY: &str = "an in-memory SQLite database is not supported; give a file, as in sqlite:///var/lib/vitals/vitals.db";

/// A [`Store`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Write transactions of this process take turns here, first come first served, rather
    /// than in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) while it
    /// waits for the lock.
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Shapes of hot rows seen so far.
    shapes: Arc<ShapeCache>,
    /// Group commits of agent samples run on their own connection and thread.
    hot: Arc<HotWriter>,
    /// Crash tests: when non-zero, the step point that brings it to zero fails.
    fail_countdown: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and applies pending migrations. A database written by
    /// a newer Vitals is refused with [`StoreError::Corrupt`] naming the versions.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            // The WAL file is cut back to 64 MiB after checkpoints instead of keeping its peak.
            .pragma("journal_size_limit", "67108864")
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        Self::with_options(opts).await
    }

    /// Opens a `sqlite:` URL (as given to `--database-url`).
    pub async fn open_url(url: &str) -> Result<Self> {
        // `sqlite::memory:` shows in the file name `with_options` checks; `mode=memory` on a
        // file name does not.
        if url.contains("mode=memory") {
            return Err(StoreError::Config(format!("{url}: {IN_MEMORY}")));
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            // The WAL file is cut back to 64 MiB after checkpoints instead of keeping its peak.
            .pragma("journal_size_limit", "67108864")
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(opts).await
    }

    /// Opens the store, trying again for a few seconds while the file is locked: a command
    /// such as `vitals-hub user add` runs beside a live hub, and SQLite answers "database is
    /// locked" at once, without waiting out the busy timeout, when a connection's read
    /// snapshot must become a write in the middle of another's commit.
    async fn with_options(opts: SqliteConnectOptions) -> Result<Self> {
        let file = opts.get_filename();
        if file == Path::new(":memory:")
            || file.to_string_lossy().starts_with("file:sqlx-in-memory")
        {
            return Err(StoreError::Config(IN_MEMORY.into()));
        }
        let mut pause = Duration::from_millis(50);
        for _ in 0..OPEN_TRIES - 1 {
            match Self::open_once(opts.clone()).await {
                Err(e) if is_locked(&e) => {
                    tracing::debug!(error = %e, "the database is locked; opening it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                r => return r,
            }
        }
        Self::open_once(opts).await
    }

    async fn open_once(opts: SqliteConnectOptions) -> Result<Self> {
        // Statements are not logged (the tier job's are large); slow ones only at debug
        // level, where waiting for the write lock also shows.
        // Rows come back from SQLite's worker thread through a channel: a small one makes
        // the worker wait for the reader every few rows (a thread switch each time).
        // Checkpoints (copying the WAL into the database, with an fsync) run in a background
        // task, never inside a commit: an automatic checkpoint would stall whichever commit
        // crossed the WAL threshold, and with it every acknowledgement waiting on it.
        let opts = opts
            .pragma("wal_autocheckpoint", "0")
            .row_buffer_size(4096)
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        // A connection to a local file does not go stale: no ping (a round trip to the
        // connection's thread) before each use.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await?;
        check_not_newer(&pool).await?;
        MIGRATOR.run(&pool).await?;
        let shapes = Arc::new(ShapeCache::default());
        let hot = Arc::new(HotWriter::start(opts.get_filename(), Arc::clone(&shapes))?);
        convert_v1(&pool, &hot).await?;
        tokio::spawn(checkpoints(pool.clone()));
        Ok(Self {
            pool,
            writes: Arc::new(tokio::sync::Mutex::new(())),
            shapes,
            hot,
            fail_countdown: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`) in turn with this process's others; the
    /// guard must live until the transaction ends.
    async fn begin_write(
        &self,
    ) -> Result<(
        tokio::sync::OwnedMutexGuard<()>,
        Transaction<'static, Sqlite>,
    )> {
        let guard = Arc::clone(&self.writes).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((guard, tx))
    }

    /// One rollup step of one device inside the caller's write transaction.
    async fn roll_up_in(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        device_seq: i64,
        tier: Tier,
        to: i64,
        max_span_ms: i64,
    ) -> Result<RollStep> {
        let w = tier.width_ms();
        let marks: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT minute_mark, hour_mark FROM rollup_marks WHERE device_seq = ?")
                .bind(device_seq)
                .fetch_optional(&mut **tx)
                .await?;
        let (minute_mark, hour_mark) = marks.unwrap_or((None, None));
        let Some((mark, limit)) = roll_range(tier, to, minute_mark, hour_mark) else {
            return Ok(RollStep {
                buckets: 0,
                done: true,
            });
        };
        self.step("rollup read")?;
        let lo = mark.unwrap_or(i64::MIN);
        let first: Option<i64> = match tier {
            Tier::Minute => {
                sqlx::query_scalar(
                    "SELECT MIN(ts) FROM samples WHERE device_seq = ? AND ts >= ? AND ts < ?",
                )
                .bind(device_seq)
                .bind(lo)
                .bind(limit)
                .fetch_one(&mut **tx)
                .await?
            }
            Tier::Hour => {
                sqlx::query_scalar(
                    "SELECT MIN(first_bucket) FROM rollup_blocks
                      WHERE device_seq = ? AND hour + ? > ? AND hour < ?",
                )
                .bind(device_seq)
                .bind(Tier::Hour.width_ms())
                .bind(lo)
                .bind(limit)
                .fetch_one(&mut **tx)
                .await?
            }
        };
        let (end, buckets) = match first {
            None => (limit, BTreeMap::new()),
            Some(first) => {
                let (start, end) = step_span(tier, first, lo, limit, max_span_ms);
                let all = SeriesFilter::all();
                let buckets = match tier {
                    Tier::Minute => {
                        let rows = hot_rows(tx, device_seq, start, end).await?;
                        let frame = hot_frame(tx, &self.shapes, &rows, &all).await?;
                        rollup::fold_frame(&frame, w)
                    }
                    Tier::Hour => hours_of(
                        read_rollups(tx, device_seq, Tier::Minute, start, end, &all, true).await?,
                    ),
                };
                (end, buckets)
            }
        };
        match tier {
            // Minutes live in compressed blocks of one device and hour: this pass's minutes
            // are appended as a segment (a row per minute would cost several times the bytes).
            Tier::Minute => {
                for (h, minutes) in minutes_by_hour(&buckets) {
                    append_minutes(tx, device_seq, h, minutes).await?;
                }
            }
            // The hour's segments become one block as the hour is rolled up.
            Tier::Hour => {
                for (b, series) in &buckets {
                    write_rollup(tx, device_seq, tier, *b, series).await?;
                    rewrite_hour(tx, device_seq, *b, Vec::new(), false).await?;
                }
            }
        }
        self.step("rollup mark")?;
        let column = match tier {
            Tier::Minute => "minute_mark",
            Tier::Hour => "hour_mark",
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rollup_marks (device_seq, {column}) VALUES (?, ?)
             ON CONFLICT (device_seq) DO UPDATE SET {column} = excluded.{column}"
        )))
        .bind(device_seq)
        .bind(end)
        .execute(&mut **tx)
        .await?;
        Ok(RollStep {
            buckets: buckets.len() as u64,
            done: end >= limit,
        })
    }

    /// One compaction step of one device inside the caller's write transaction.
    async fn compact_in(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        device_seq: i64,
        before: i64,
    ) -> Result<CompactStep> {
        // Only what the minute tier holds and no late sample still needs from the hot table.
        let limit: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(?2, minute_mark,
                        COALESCE((SELECT MIN(ts) FROM rollup_late WHERE device_seq = ?1), ?2))
               FROM rollup_marks WHERE device_seq = ?1 AND minute_mark IS NOT NULL",
        )
        .bind(device_seq)
        .bind(before)
        .fetch_optional(&mut **tx)
        .await?;
        let done = CompactStep {
            samples: 0,
            done: true,
        };
        let Some(limit) = limit.map(|l| rollup::bucket_start(l, BLOCK_MS)) else {
            return Ok(done);
        };
        let first: Option<i64> =
            sqlx::query_scalar("SELECT MIN(ts) FROM samples WHERE device_seq = ? AND ts < ?")
                .bind(device_seq)
                .bind(limit)
                .fetch_one(&mut **tx)
                .await?;
        let Some(first) = first else {
            return Ok(done);
        };
        self.step("compact read")?;
        let start = rollup::bucket_start(first, BLOCK_MS);
        let end = start + BLOCK_MS;
        let rows = hot_rows(tx, device_seq, start, end).await?;
        let moved = rows.len() as u64;
        // Late samples of a window already compacted join its block.
        let existing: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM sample_blocks WHERE device_seq = ? AND start_ts = ?",
        )
        .bind(device_seq)
        .bind(start)
        .fetch_optional(&mut **tx)
        .await?;
        let hot = hot_frame(tx, &self.shapes, &rows, &SeriesFilter::all()).await?;
        let Some(block) = merge_block(device_seq, existing, hot)? else {
            return Ok(done);
        };
        sqlx::query(
            "INSERT OR REPLACE INTO sample_blocks
               (device_seq, start_ts, first_ts, last_ts, count, data) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(device_seq)
        .bind(start)
        .bind(block.first_ts)
        .bind(block.last_ts)
        .bind(block.count)
        .bind(block.data)
        .execute(&mut **tx)
        .await?;
        self.step("compact write")?;
        sqlx::query("DELETE FROM samples WHERE device_seq = ? AND ts >= ? AND ts < ?")
            .bind(device_seq)
            .bind(start)
            .bind(end)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE rollup_marks SET block_mark = MAX(COALESCE(block_mark, 0), ?) WHERE device_seq = ?",
        )
        .bind(end)
        .bind(device_seq)
        .execute(&mut **tx)
        .await?;
        Ok(CompactStep {
            samples: moved,
            done: false,
        })
    }

    /// For crash tests: the `n`-th step point of the tier work from now (rollups, late merges,
    /// retention) fails with [`StoreError::Injected`], inside its transaction, as a crash
    /// there would; `0` turns injection off.
    pub fn inject_failure(&self, n: u64) {
        self.fail_countdown.store(n, Ordering::SeqCst);
    }

    fn step(&self, at: &'static str) -> Result<()> {
        let hit = self
            .fail_countdown
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok_and(|before| before == 1);
        if hit {
            return Err(StoreError::Injected(at));
        }
        Ok(())
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite finds nothing wrong, else its report.
    pub async fn integrity_check(&self) -> Result<(), String> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        if rows == ["ok"] {
            Ok(())
        } else {
            Err(rows.join("; "))
        }
    }
}

/// How many times [`SqliteStore::open`] tries while the database is locked (about 6 s).
const OPEN_TRIES: usize = 8;

/// Whether an error is SQLite's `SQLITE_BUSY` ("database is locked", in any of its extended
/// forms), from the pool, the migrator or the writer's connection.
fn is_locked(e: &StoreError) -> bool {
    /// `SQLITE_BUSY`; extended codes (`SQLITE_BUSY_SNAPSHOT`, ...) keep it in their low byte.
    const BUSY: i32 = 5;
    fn sqlx_busy(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(db)
            if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == BUSY))
    }
    match e {
        StoreError::Database(e) | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => {
            sqlx_busy(e)
        }
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::DatabaseBusy
        }
        _ => false,
    }
}

/// Checkpoints the WAL every two seconds until the pool closes (a page written many times in
/// between is copied once). PASSIVE: it copies what no reader still needs and never blocks a
/// writer; the WAL is reused from its start once it is all copied (and cut back to
/// `journal_size_limit`).
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_millis(2000));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
            && !pool.is_closed()
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

async fn check_not_newer(pool: &SqlitePool) -> Result<()> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if exists.is_none() {
        return Ok(());
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?;
    not_newer(newest, &MIGRATOR)
}

const DEVICE_COLS: &str = "seq, id, name, host_id, simulated, agent_version, created_at,
     (SELECT last_seen FROM device_seen WHERE device_seq = seq) AS last_seen,
     token_hash IS NOT NULL AS has_token";

async fn insert_device(tx: &mut Transaction<'_, Sqlite>, d: &NewDevice) -> Result<Device> {
    let id = uuid::Uuid::new_v4().to_string();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO devices (id, name, host_id, token_hash, simulated, agent_version, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {DEVICE_COLS}"
    )))
    .bind(&id)
    .bind(&d.name)
    .bind(&d.host_id)
    .bind(d.token_hash.as_deref())
    .bind(i64::from(d.simulated))
    .bind(d.agent_version.as_deref())
    .bind(d.now)
    .fetch_one(&mut **tx)
    .await?;
    device_from(&row)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_user(&self, u: NewUser) -> Result<User> {
        let _write = self.writes.lock().await;
        let id = uuid::Uuid::new_v4().to_string();
        let res = sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?)
             RETURNING id, username, role, created_at",
        )
        .bind(&id)
        .bind(&u.username)
        .bind(u.role.as_str())
        .bind(&u.password_hash)
        .bind(u.now)
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(row) => user_from(&row),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a user named {:?} already exists",
                u.username
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_first_user(&self, u: NewUser) -> Result<Option<User>> {
        let _write = self.writes.lock().await;
        let id = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, created_at)
             SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM users)
             RETURNING id, username, role, created_at",
        )
        .bind(&id)
        .bind(&u.username)
        .bind(u.role.as_str())
        .bind(&u.password_hash)
        .bind(u.now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT id, username, role, created_at, password_hash FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some((user_from(&r)?, r.try_get("password_hash")?))),
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, username, role, created_at FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows =
            sqlx::query("SELECT id, username, role, created_at FROM users ORDER BY username")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(user_from).collect()
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let _write = self.writes.lock().await;
        let n = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn create_session(&self, s: NewSession) -> Result<()> {
        let _write = self.writes.lock().await;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&s.token_hash)
        .bind(&s.user_id)
        .bind(&s.csrf)
        .bind(s.now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &[u8], now: i64) -> Result<Option<(Session, User)>> {
        let row = sqlx::query(
            "SELECT s.csrf, s.expires_at, u.id, u.username, u.role, u.created_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => {
                let user = user_from(&r)?;
                Ok(Some((
                    Session {
                        user_id: user.id.clone(),
                        csrf: r.try_get("csrf")?,
                        expires_at: r.try_get("expires_at")?,
                    },
                    user,
                )))
            }
            None => Ok(None),
        }
    }

    async fn delete_session(&self, token_hash: &[u8]) -> Result<()> {
        let _write = self.writes.lock().await;
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_sessions(&self, now: i64) -> Result<u64> {
        let _write = self.writes.lock().await;
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn create_api_token(&self, t: NewApiToken) -> Result<ApiToken> {
        let _write = self.writes.lock().await;
        let id = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_by, created_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id, name, role, created_by, created_at",
        )
        .bind(&id)
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(&t.token_hash)
        .bind(t.created_by.as_deref())
        .bind(t.now)
        .fetch_one(&self.pool)
        .await?;
        token_from(&row)
    }

    async fn api_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<ApiToken>> {
        let row = sqlx::query(
            "SELECT id, name, role, created_by, created_at FROM api_tokens WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from).transpose()
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_by, created_at FROM api_tokens ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from).collect()
    }

    async fn delete_api_token(&self, id: &str) -> Result<bool> {
        let _write = self.writes.lock().await;
        Ok(sqlx::query("DELETE FROM api_tokens WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        let _write = self.writes.lock().await;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        let _write = self.writes.lock().await;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn meta_take(&self, key: &str, value: &str) -> Result<bool> {
        let _write = self.writes.lock().await;
        Ok(sqlx::query("DELETE FROM meta WHERE key = ? AND value = ?")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn create_device_code(&self, c: NewDeviceCode) -> Result<()> {
        let _write = self.writes.lock().await;
        let res = sqlx::query(
            "INSERT INTO device_codes (code, host_id, hostname, agent_version, source_ip, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.code)
        .bind(&c.host_id)
        .bind(c.hostname.as_deref())
        .bind(c.agent_version.as_deref())
        .bind(c.source_ip.as_deref())
        .bind(c.now)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict("pairing code already exists".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn device_code(&self, code: &str) -> Result<Option<DeviceCode>> {
        let row = sqlx::query("SELECT * FROM device_codes WHERE code = ?")
            .bind(code)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(code_from).transpose()
    }

    async fn approve_device_code(
        &self,
        code: &str,
        name: &str,
        now: i64,
    ) -> Result<ApproveOutcome> {
        let (_write, mut tx) = self.begin_write().await?;
        let row = sqlx::query("SELECT * FROM device_codes WHERE code = ?")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?;
        let new = match approval(row.as_ref().map(code_from).transpose()?, name, now) {
            Ok(new) => new,
            Err(outcome) => return Ok(outcome),
        };
        let device = insert_device(&mut tx, &new).await?;
        let n = sqlx::query(
            "UPDATE device_codes SET device_id = ?, approved_at = ? WHERE code = ? AND device_id IS NULL",
        )
        .bind(&device.id)
        .bind(now)
        .bind(code)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(ApproveOutcome::AlreadyApproved);
        }
        tx.commit().await?;
        Ok(ApproveOutcome::Approved(device))
    }

    async fn claim_device_token(
        &self,
        code: &str,
        token_hash: &[u8],
        now: i64,
    ) -> Result<ClaimOutcome> {
        let (_write, mut tx) = self.begin_write().await?;
        let row = sqlx::query("SELECT * FROM device_codes WHERE code = ?")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?;
        let device_id = match claim(row.as_ref().map(code_from).transpose()?, now) {
            Ok(id) => id,
            Err(outcome) => return Ok(outcome),
        };
        let deleted = sqlx::query("DELETE FROM device_codes WHERE code = ?")
            .bind(code)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let updated = sqlx::query("UPDATE devices SET token_hash = ? WHERE id = ?")
            .bind(token_hash)
            .bind(&device_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted != 1 || updated != 1 {
            // The device was deleted between approval and claim: nothing to hand out.
            return Ok(ClaimOutcome::NotFound);
        }
        tx.commit().await?;
        Ok(ClaimOutcome::Claimed { device_id })
    }

    async fn delete_device_code(&self, code: &str) -> Result<bool> {
        let _write = self.writes.lock().await;
        Ok(
            sqlx::query("DELETE FROM device_codes WHERE code = ? AND device_id IS NULL")
                .bind(code)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn purge_device_codes(&self, before: i64) -> Result<u64> {
        let _write = self.writes.lock().await;
        Ok(sqlx::query("DELETE FROM device_codes WHERE expires_at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn create_device(&self, d: NewDevice) -> Result<Device> {
        let (_write, mut tx) = self.begin_write().await?;
        let dev = insert_device(&mut tx, &d).await?;
        tx.commit().await?;
        Ok(dev)
    }

    async fn device(&self, id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from).transpose()
    }

    async fn device_by_token(&self, token_hash: &[u8]) -> Result<Option<Device>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE token_hash = ?"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from).transpose()
    }

    async fn list_devices(&self) -> Result<Vec<DeviceWithLatest>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS}, l.ts AS latest_ts, l.shape AS latest_shape, l.vals AS latest_vals
             FROM devices d LEFT JOIN samples l
               ON l.device_seq = d.seq
              AND l.ts = (SELECT MAX(ts) FROM samples WHERE device_seq = d.seq)
             ORDER BY d.name COLLATE NOCASE, d.id"
        )))
        .fetch_all(&mut *conn)
        .await?;
        let all = SeriesFilter::all();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let ts: Option<i64> = r.try_get("latest_ts")?;
            let shape: Option<i64> = r.try_get("latest_shape")?;
            let vals: Option<Vec<u8>> = r.try_get("latest_vals")?;
            let latest = match (ts, shape, vals) {
                (Some(ts), Some(shape), Some(vals)) => {
                    Some(hot_frame(&mut conn, &self.shapes, &[(ts, shape, vals)], &all).await?)
                }
                _ => None,
            };
            out.push(DeviceWithLatest {
                device: device_from(r)?,
                latest,
            });
        }
        // A device whose newest data is compacted (silent for a while): from its last block.
        let newest: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT b.device_seq, b.last_ts, b.data FROM sample_blocks b
              WHERE b.start_ts = (SELECT MAX(start_ts) FROM sample_blocks WHERE device_seq = b.device_seq)",
        )
        .fetch_all(&mut *conn)
        .await?;
        latest_from_blocks(&mut out, newest)?;
        Ok(out)
    }

    async fn rename_device(&self, id: &str, name: &str) -> Result<bool> {
        let _write = self.writes.lock().await;
        Ok(sqlx::query("UPDATE devices SET name = ? WHERE id = ?")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn set_device_token(&self, id: &str, token_hash: &[u8]) -> Result<bool> {
        let _write = self.writes.lock().await;
        Ok(
            sqlx::query("UPDATE devices SET token_hash = ? WHERE id = ?")
                .bind(token_hash)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn set_device_agent_version(&self, id: &str, version: &str) -> Result<()> {
        let _write = self.writes.lock().await;
        sqlx::query("UPDATE devices SET agent_version = ? WHERE id = ?")
            .bind(version)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_device(&self, id: &str) -> Result<bool> {
        let (_write, mut tx) = self.begin_write().await?;
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM devices WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        for sql in [
            "DELETE FROM samples WHERE device_seq = ?",
            "DELETE FROM rollups WHERE device_seq = ?",
            "DELETE FROM rollup_marks WHERE device_seq = ?",
            "DELETE FROM rollup_late WHERE device_seq = ?",
            "DELETE FROM sample_blocks WHERE device_seq = ?",
            "DELETE FROM rollup_blocks WHERE device_seq = ?",
        ] {
            sqlx::query(sql).bind(seq).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM device_seen WHERE device_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM device_state WHERE device_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM devices WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_batches(&self, batches: &[SampleBatch]) -> Result<Vec<u64>> {
        let commit = Commit {
            samples: batches
                .iter()
                .enumerate()
                .flat_map(|(i, b)| {
                    b.samples
                        .iter()
                        .map(move |r| HotSample::of(i, b.device_seq, r))
                })
                .collect(),
            batches: batches.len(),
            seen: devices_seen(batches),
            now: batches.iter().map(|b| b.now).max(),
        };
        let turn = Arc::clone(&self.writes).lock_owned().await;
        self.hot.commit(commit, turn).await
    }

    async fn samples(
        &self,
        device_seq: i64,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
    ) -> Result<Frame> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<HotRow> = sqlx::query_as(
            "SELECT ts, shape, vals FROM samples
              WHERE device_seq = ? AND ts BETWEEN ? AND ? ORDER BY ts",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        let mut frame = block_frame(&mut conn, device_seq, from, to, usize::MAX, filter).await?;
        frame.append(hot_frame(&mut conn, &self.shapes, &rows, filter).await?);
        frame.sort();
        Ok(frame)
    }

    async fn count_samples(&self, device_seq: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM samples WHERE device_seq = ?1)
                  + (SELECT COALESCE(SUM(count), 0) FROM sample_blocks WHERE device_seq = ?1)",
        )
        .bind(device_seq)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn samples_page(&self, device_seq: i64, from: i64, to: i64, limit: i64) -> Result<Frame> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<HotRow> = sqlx::query_as(
            "SELECT ts, shape, vals FROM samples
              WHERE device_seq = ? AND ts BETWEEN ? AND ? ORDER BY ts LIMIT ?",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let limit = usize::try_from(limit).unwrap_or(0);
        let horizon = page_horizon(&rows, limit, to);
        let all = SeriesFilter::all();
        let mut frame = block_frame(&mut conn, device_seq, from, horizon, limit, &all).await?;
        frame.append(hot_frame(&mut conn, &self.shapes, &rows, &all).await?);
        frame.sort();
        frame.truncate(limit);
        Ok(frame)
    }

    async fn count_samples_between(&self, device_seq: i64, from: i64, to: i64) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        let hot: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM samples WHERE device_seq = ? AND ts BETWEEN ? AND ?",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await?;
        // Whole blocks by their count; the (at most two) partial ones by their timestamps.
        let whole: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(count), 0) FROM sample_blocks
              WHERE device_seq = ? AND first_ts >= ? AND last_ts <= ?",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await?;
        let partial: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM sample_blocks
              WHERE device_seq = ? AND last_ts >= ? AND first_ts <= ?
                AND NOT (first_ts >= ? AND last_ts <= ?)",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        Ok(hot + whole + count_in_blocks(device_seq, &partial, from, to)?)
    }
    async fn delete_samples_before(&self, before: i64, limit: i64) -> Result<u64> {
        let (_write, mut tx) = self.begin_write().await?;
        self.step("raw retention")?;
        let mut n = sqlx::query(
            "DELETE FROM samples WHERE (device_seq, ts) IN
               (SELECT s.device_seq, s.ts FROM rollup_marks m
                  JOIN samples s ON s.device_seq = m.device_seq AND s.ts < MIN(?1, m.minute_mark)
                 WHERE s.ts < (SELECT COALESCE(MIN(ts), ?1) FROM rollup_late)
                 LIMIT ?2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Whole blocks that end below the cut-off, about `limit` samples' worth.
        let blocks: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT b.device_seq, b.start_ts, b.count FROM rollup_marks m
               JOIN sample_blocks b ON b.device_seq = m.device_seq
                                   AND b.last_ts < MIN(?1, m.minute_mark)
              WHERE b.last_ts < (SELECT COALESCE(MIN(ts), ?1) FROM rollup_late)
              LIMIT ?2",
        )
        .bind(before)
        .bind((limit / BLOCK_SAMPLES).max(1))
        .fetch_all(&mut *tx)
        .await?;
        for (seq, start, count) in blocks {
            sqlx::query("DELETE FROM sample_blocks WHERE device_seq = ? AND start_ts = ?")
                .bind(seq)
                .bind(start)
                .execute(&mut *tx)
                .await?;
            n += u64::try_from(count).unwrap_or(0);
        }
        // Queries read coarser tiers below this, so a half-deleted minute is never read raw.
        sqlx::query(
            "UPDATE rollup_marks SET raw_floor = MIN(?1, minute_mark)
              WHERE minute_mark IS NOT NULL
                AND (raw_floor IS NULL OR raw_floor < MIN(?1, minute_mark))",
        )
        .bind(rollup::bucket_start(before.min(i64::MAX - 1), 60_000))
        .execute(&mut *tx)
        .await?;
        self.step("raw retention commit")?;
        tx.commit().await?;
        Ok(n)
    }

    async fn compact(&self, device_seq: i64, before: i64) -> Result<CompactStep> {
        let mut steps = self.compact_devices(&[device_seq], before).await?;
        Ok(steps.pop().unwrap_or(CompactStep {
            samples: 0,
            done: true,
        }))
    }

    async fn compact_devices(&self, seqs: &[i64], before: i64) -> Result<Vec<CompactStep>> {
        let (_write, mut tx) = self.begin_write().await?;
        let mut steps = Vec::new();
        let started = Instant::now();
        for seq in seqs {
            steps.push(self.compact_in(&mut tx, *seq, before).await?);
            if group_full(steps.len(), started) {
                break;
            }
        }
        self.step("compact commit")?;
        tx.commit().await?;
        Ok(steps)
    }

    async fn device_seqs(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT seq FROM devices ORDER BY seq")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn roll_up(
        &self,
        device_seq: i64,
        tier: Tier,
        to: i64,
        max_span_ms: i64,
    ) -> Result<RollStep> {
        let mut steps = self
            .roll_up_devices(&[device_seq], tier, to, max_span_ms)
            .await?;
        Ok(steps.pop().unwrap_or(RollStep {
            buckets: 0,
            done: true,
        }))
    }

    async fn roll_up_devices(
        &self,
        seqs: &[i64],
        tier: Tier,
        to: i64,
        max_span_ms: i64,
    ) -> Result<Vec<RollStep>> {
        let (_write, mut tx) = self.begin_write().await?;
        let mut steps = Vec::new();
        let started = Instant::now();
        for seq in seqs {
            steps.push(
                self.roll_up_in(&mut tx, *seq, tier, to, max_span_ms)
                    .await?,
            );
            if group_full(steps.len(), started) {
                break;
            }
        }
        self.step("rollup commit")?;
        tx.commit().await?;
        Ok(steps)
    }

    async fn roll_up_late(&self, limit: i64) -> Result<u64> {
        let (_write, mut tx) = self.begin_write().await?;
        let late: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT device_seq, ts FROM rollup_late ORDER BY device_seq, ts LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if late.is_empty() {
            return Ok(0);
        }
        self.step("late read")?;
        // The chosen rows are, per device, a run of its oldest late samples: one range each.
        let ranges = late_ranges(&late);
        let mut by_device: BTreeMap<i64, Frame> = BTreeMap::new();
        let all = SeriesFilter::all();
        for (seq, (lo, hi)) in &ranges {
            let rows: Vec<HotRow> = sqlx::query_as(
                "SELECT s.ts, s.shape, s.vals FROM rollup_late l
                   JOIN samples s ON s.device_seq = l.device_seq AND s.ts = l.ts
                  WHERE l.device_seq = ? AND l.ts BETWEEN ? AND ? ORDER BY l.ts",
            )
            .bind(seq)
            .bind(lo)
            .bind(hi)
            .fetch_all(&mut *tx)
            .await?;
            by_device.insert(*seq, hot_frame(&mut tx, &self.shapes, &rows, &all).await?);
        }
        for (seq, samples) in &by_device {
            let hour_mark: Option<i64> =
                sqlx::query_scalar("SELECT hour_mark FROM rollup_marks WHERE device_seq = ?")
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
            let (by_hour, hours) = late_deltas(samples, hour_mark);
            for (h, list) in by_hour {
                append_minutes(&mut tx, *seq, h, list).await?;
            }
            self.step("late minute merge")?;
            for (h, delta) in &hours {
                merge_into_rollup(&mut tx, *seq, Tier::Hour, *h, delta).await?;
            }
        }
        self.step("late hour merge")?;
        for (seq, (lo, hi)) in &ranges {
            sqlx::query("DELETE FROM rollup_late WHERE device_seq = ? AND ts BETWEEN ? AND ?")
                .bind(seq)
                .bind(lo)
                .bind(hi)
                .execute(&mut *tx)
                .await?;
        }
        self.step("late commit")?;
        tx.commit().await?;
        Ok(late.len() as u64)
    }

    async fn rollups(
        &self,
        device_seq: i64,
        tier: Tier,
        from: i64,
        to: i64,
        filter: &SeriesFilter,
        sketches: bool,
    ) -> Result<Runs> {
        let mut conn = self.pool.acquire().await?;
        read_rollups(&mut conn, device_seq, tier, from, to, filter, sketches).await
    }

    async fn tier_bounds(&self, device_seq: i64) -> Result<TierBounds> {
        let (raw_lo, min_lo, min_hi, hour_lo, hour_hi, raw_floor): (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = sqlx::query_as(
            "SELECT (SELECT MIN(COALESCE(h.lo, b.lo), COALESCE(b.lo, h.lo)) FROM
                      (SELECT MIN(ts) AS lo FROM samples WHERE device_seq = ?1) h,
                      (SELECT MIN(first_ts) AS lo FROM sample_blocks WHERE device_seq = ?1) b),
                    (SELECT MIN(COALESCE(r.lo, b.lo), COALESCE(b.lo, r.lo)) FROM
                      (SELECT MIN(bucket) AS lo FROM rollups WHERE tier = ?2 AND device_seq = ?1) r,
                      (SELECT MIN(first_bucket) AS lo FROM rollup_blocks WHERE device_seq = ?1) b),
                    (SELECT minute_mark FROM rollup_marks WHERE device_seq = ?1),
                    (SELECT MIN(bucket) FROM rollups WHERE tier = ?3 AND device_seq = ?1),
                    (SELECT hour_mark FROM rollup_marks WHERE device_seq = ?1),
                    (SELECT raw_floor FROM rollup_marks WHERE device_seq = ?1)",
        )
        .bind(device_seq)
        .bind(Tier::Minute.width_ms())
        .bind(Tier::Hour.width_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(TierBounds {
            raw_lo,
            raw_floor,
            minute: min_lo.zip(min_hi),
            hour: hour_lo.zip(hour_hi),
        })
    }

    async fn delete_rollups_before(&self, tier: Tier, before: i64, limit: i64) -> Result<u64> {
        let (_write, mut tx) = self.begin_write().await?;
        self.step("rollup retention")?;
        let n = match tier {
            // Whole hour blocks of minutes, once the hour tier holds their hour; each counts
            // the minutes it holds.
            Tier::Minute => {
                let blocks: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT b.device_seq, b.hour, b.first_bucket, b.minutes FROM rollup_marks m
                       JOIN rollup_blocks b ON b.device_seq = m.device_seq
                                           AND b.hour + ?3 <= MIN(?1, m.hour_mark)
                      LIMIT ?2",
                )
                .bind(before)
                .bind((limit / 60).max(1))
                .bind(Tier::Hour.width_ms())
                .fetch_all(&mut *tx)
                .await?;
                let mut n = 0u64;
                for (seq, hour, first, minutes) in blocks {
                    sqlx::query(
                        "DELETE FROM rollup_blocks WHERE device_seq = ? AND hour = ? AND first_bucket = ?",
                    )
                    .bind(seq)
                    .bind(hour)
                    .bind(first)
                    .execute(&mut *tx)
                    .await?;
                    n += u64::try_from(minutes).unwrap_or(0);
                }
                n
            }
            Tier::Hour => sqlx::query(
                "DELETE FROM rollups WHERE (tier, device_seq, bucket) IN
                   (SELECT tier, device_seq, bucket FROM rollups
                     WHERE tier = ?1 AND bucket < ?2 LIMIT ?3)",
            )
            .bind(tier.width_ms())
            .bind(before)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        tx.commit().await?;
        Ok(n)
    }

    async fn put_state(&self, device_seq: i64, kind: &str, json: &str, now: i64) -> Result<()> {
        let _write = self.writes.lock().await;
        sqlx::query(
            "INSERT INTO device_state (device_seq, kind, data, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT(device_seq, kind) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(device_seq)
        .bind(kind)
        .bind(json)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn states(&self, device_seq: i64) -> Result<Vec<StateRecord>> {
        let rows = sqlx::query(
            "SELECT kind, data, updated_at FROM device_state WHERE device_seq = ? ORDER BY kind",
        )
        .bind(device_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(state_from).collect()
    }

    async fn settings(&self) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT key, value FROM settings")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect()
    }

    async fn put_settings(&self, values: &BTreeMap<String, String>) -> Result<()> {
        let (_write, mut tx) = self.begin_write().await?;
        for (k, v) in values {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn size_bytes(&self) -> Result<u64> {
        let total: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await?;
        let pages = total - free;
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(pages.saturating_mul(size)).unwrap_or(0))
    }

    async fn free_bytes(&self) -> Result<u64> {
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await?;
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(free.saturating_mul(size)).unwrap_or(0))
    }

    async fn reclaim_space(&self, max_pages: i64) -> Result<u64> {
        // A no-op on databases created before auto_vacuum was on; their free pages are
        // reused by new data instead.
        let _write = self.writes.lock().await;
        let mut conn = self.pool.acquire().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA incremental_vacuum({})",
            max_pages.max(1)
        )))
        .execute(&mut *conn)
        .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&mut *conn)
            .await?;
        Ok(u64::try_from(free).unwrap_or(0))
    }

    async fn try_lease(&self, _name: &str) -> Result<bool> {
        // One hub per SQLite file: it holds every lease.
        Ok(true)
    }

    async fn rate_take(
        &self,
        key: &str,
        rate_per_sec: f64,
        burst: f64,
        cost: f64,
        now: i64,
    ) -> Result<Option<i64>> {
        let (_write, mut tx) = self.begin_write().await?;
        let held: Option<(f64, i64)> =
            sqlx::query_as("SELECT tokens, at FROM rate_buckets WHERE key = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let (tokens, wait) = bucket_take(held, rate_per_sec, burst, cost, now);
        sqlx::query(
            "INSERT INTO rate_buckets (key, tokens, at) VALUES (?, ?, ?) \
             ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
        )
        .bind(key)
        .bind(tokens)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(wait)
    }

    async fn rate_purge(&self, before: i64) -> Result<u64> {
        let _write = self.writes.lock().await;
        Ok(sqlx::query("DELETE FROM rate_buckets WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.hot.alive() {
            return Err(StoreError::Database(sqlx::Error::WorkerCrashed));
        }
        Ok(())
    }

    async fn close(&self) {
        self.hot.close().await;
        self.pool.close().await;
    }

    async fn app_records(&self) -> Result<Vec<AppRecord>> {
        let rows = sqlx::query(
            "SELECT bucket, id, seq, data, version, created_at FROM app_records ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(app_record_from).collect()
    }

    async fn app_write(&self, writes: &[AppWrite]) -> Result<()> {
        let (_write, mut tx) = self.begin_write().await?;
        for w in writes {
            match w {
                AppWrite::Insert(r) => {
                    let res = sqlx::query(
                        "INSERT INTO app_records (bucket, id, seq, data, version, created_at)
                         VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&r.bucket)
                    .bind(&r.id)
                    .bind(r.seq)
                    .bind(&r.data)
                    .bind(r.version)
                    .bind(r.created_at)
                    .execute(&mut *tx)
                    .await;
                    match res {
                        Ok(_) => {}
                        Err(e) if is_unique_violation(&e) => {
                            return Err(StoreError::Conflict(format!(
                                "record {} already exists in {}",
                                r.id, r.bucket
                            )));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                AppWrite::Update {
                    bucket,
                    id,
                    data,
                    version,
                    expected_version,
                } => {
                    let n = sqlx::query(
                        "UPDATE app_records SET data = ?, version = ?
                         WHERE bucket = ? AND id = ? AND version = ?",
                    )
                    .bind(data)
                    .bind(version)
                    .bind(bucket)
                    .bind(id)
                    .bind(expected_version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Conflict(format!(
                            "record {id} in {bucket} is missing or not at version {expected_version}"
                        )));
                    }
                }
                AppWrite::Delete { bucket, id } => {
                    let n = sqlx::query("DELETE FROM app_records WHERE bucket = ? AND id = ?")
                        .bind(bucket)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Conflict(format!(
                            "record {id} in {bucket} does not exist"
                        )));
                    }
                }
                AppWrite::Clear { bucket } => {
                    sqlx::query("DELETE FROM app_records WHERE bucket = ?")
                        .bind(bucket)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn app_delete_before(&self, before: i64, limit: i64) -> Result<Vec<(String, String)>> {
        let _write = self.writes.lock().await;
        let rows = sqlx::query(
            "DELETE FROM app_records WHERE rowid IN
               (SELECT rowid FROM app_records WHERE created_at < ? LIMIT ?)
             RETURNING bucket, id",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("bucket")?, r.try_get("id")?)))
            .collect()
    }
    async fn alert_docs(&self, kind: &str) -> Result<Vec<AlertDoc>> {
        let rows = sqlx::query(
            "SELECT id, data, updated_at FROM alert_docs WHERE kind = ? ORDER BY rowid",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_doc_from).collect()
    }

    async fn alert_doc_put(&self, kind: &str, id: &str, data: &str, now: i64) -> Result<()> {
        let _write = self.writes.lock().await;
        sqlx::query(
            "INSERT INTO alert_docs (kind, id, data, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data,
                                                  updated_at = excluded.updated_at",
        )
        .bind(kind)
        .bind(id)
        .bind(data)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn alert_doc_delete(&self, kind: &str, id: &str) -> Result<bool> {
        let _write = self.writes.lock().await;
        let n = sqlx::query("DELETE FROM alert_docs WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn alert_states(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key, data FROM alert_state ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("data")?)))
            .collect()
    }

    async fn alert_apply(&self, w: &AlertWrite) -> Result<()> {
        let (_write, mut tx) = self.begin_write().await?;
        for (key, data) in &w.states {
            match data {
                Some(d) => {
                    sqlx::query(
                        "INSERT INTO alert_state (key, data) VALUES (?, ?)
                         ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                    )
                    .bind(key)
                    .bind(d)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM alert_state WHERE key = ?")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for e in &w.events {
            sqlx::query(
                "INSERT INTO alert_events (id, active, started_at, data) VALUES (?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET active = excluded.active, data = excluded.data",
            )
            .bind(&e.id)
            .bind(e.active)
            .bind(e.started_at)
            .bind(&e.data)
            .execute(&mut *tx)
            .await?;
        }
        for n in &w.outbox {
            sqlx::query(
                "INSERT INTO alert_outbox (event_id, channel_id, data, next_at, created_at)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&n.event_id)
            .bind(&n.channel_id)
            .bind(&n.data)
            .bind(n.next_at)
            .bind(n.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alert_events(&self, active_only: bool, limit: i64) -> Result<Vec<AlertEventRow>> {
        let rows = sqlx::query(
            "SELECT id, active, started_at, data FROM alert_events
             WHERE active = 1 OR ? = 0 ORDER BY started_at DESC, id LIMIT ?",
        )
        .bind(active_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from).collect()
    }

    async fn alert_event(&self, id: &str) -> Result<Option<AlertEventRow>> {
        let row = sqlx::query("SELECT id, active, started_at, data FROM alert_events WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from).transpose()
    }

    async fn alert_outbox_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxItem>> {
        let rows = sqlx::query(
            "SELECT id, event_id, channel_id, data, attempts, next_at FROM alert_outbox
             WHERE done = 0 AND next_at <= ? ORDER BY next_at, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from).collect()
    }

    async fn alert_delivery(&self, d: &DeliveryRecord) -> Result<()> {
        let (_write, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO alert_deliveries
               (at, outbox_id, event_id, channel_id, kind, attempt, ok, status, error)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.at)
        .bind(d.outbox_id)
        .bind(&d.event_id)
        .bind(&d.channel_id)
        .bind(&d.kind)
        .bind(d.attempt)
        .bind(d.ok)
        .bind(d.status)
        .bind(&d.error)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = d.outbox_id {
            match d.retry_at {
                Some(t) => {
                    sqlx::query("UPDATE alert_outbox SET attempts = ?, next_at = ? WHERE id = ?")
                        .bind(d.attempt)
                        .bind(t)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                }
                None => {
                    sqlx::query("UPDATE alert_outbox SET attempts = ?, done = 1 WHERE id = ?")
                        .bind(d.attempt)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                }
            };
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alert_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT d.at, d.outbox_id, d.event_id, d.channel_id, d.kind, d.attempt, d.ok,
                    d.status, d.error,
                    CASE WHEN o.done = 0 THEN o.next_at END AS retry_at
             FROM alert_deliveries d LEFT JOIN alert_outbox o ON o.id = d.outbox_id
             ORDER BY d.id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from).collect()
    }

    async fn alert_purge_before(&self, before: i64) -> Result<u64> {
        let (_write, mut tx) = self.begin_write().await?;
        let mut n = sqlx::query("DELETE FROM alert_events WHERE active = 0 AND started_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM alert_outbox WHERE done = 1 AND created_at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM alert_deliveries WHERE at < ?")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

/// The names of shape `id`, from the cache or the database.
async fn names_of(
    conn: &mut sqlx::SqliteConnection,
    cache: &ShapeCache,
    id: i64,
) -> Result<shape::Names> {
    if let Some(n) = cache.names(id) {
        return Ok(n);
    }
    let key: Option<String> = sqlx::query_scalar("SELECT names FROM shapes WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match key {
        Some(k) => Ok(cache.learn(id, &k)),
        None => Err(StoreError::Corrupt(format!(
            "a hot row names shape {id}, which does not exist"
        ))),
    }
}

/// The device's hot rows with `start <= ts < end`, by time.
async fn hot_rows(
    conn: &mut sqlx::SqliteConnection,
    device_seq: i64,
    start: i64,
    end: i64,
) -> Result<Vec<HotRow>> {
    Ok(sqlx::query_as(
        "SELECT ts, shape, vals FROM samples
          WHERE device_seq = ? AND ts >= ? AND ts < ? ORDER BY ts",
    )
    .bind(device_seq)
    .bind(start)
    .bind(end)
    .fetch_all(conn)
    .await?)
}

/// Hot rows (sorted by time) as a frame of the series `filter` wants.
async fn hot_frame(
    conn: &mut sqlx::SqliteConnection,
    cache: &ShapeCache,
    rows: &[HotRow],
    filter: &SeriesFilter,
) -> Result<Frame> {
    let mut frame = Frame::default();
    for (id, run) in shape_runs(rows) {
        let names = names_of(conn, cache, id).await?;
        push_hot_run(&mut frame, &names, &rows[run], filter)?;
    }
    Ok(frame)
}

/// The device's blocks with `from <= ts <= to` as one frame, oldest first; stops after the
/// block that brings the count to `limit`.
async fn block_frame(
    conn: &mut sqlx::SqliteConnection,
    device_seq: i64,
    from: i64,
    to: i64,
    limit: usize,
    filter: &SeriesFilter,
) -> Result<Frame> {
    let blocks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM sample_blocks
          WHERE device_seq = ? AND last_ts >= ? AND first_ts <= ? ORDER BY start_ts",
    )
    .bind(device_seq)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    blocks_frame(device_seq, blocks, from, to, limit, filter)
}

/// Converts version 1's JSON sample rows (`samples_v1`, left by migration 4) into hot rows,
/// a chunk per transaction, then drops the table. Rows that are not samples are dropped.
async fn convert_v1(pool: &SqlitePool, hot: &HotWriter) -> Result<()> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples_v1'",
    )
    .fetch_optional(pool)
    .await?;
    if exists.is_none() {
        return Ok(());
    }
    let mut converted = 0u64;
    loop {
        let old: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT device_seq, ts, data FROM samples_v1 ORDER BY device_seq, ts LIMIT 2000",
        )
        .fetch_all(pool)
        .await?;
        let Some((last_seq, last_ts, _)) = old.last().cloned() else {
            sqlx::query("DROP TABLE samples_v1").execute(pool).await?;
            break;
        };
        let samples: Vec<HotSample> = old
            .iter()
            .filter_map(|(seq, ts, data)| {
                let mut s: vitals_proto::MetricSample = serde_json::from_slice(data).ok()?;
                s.ts = *ts;
                Some(HotSample::of(0, *seq, &Row::of(&s)))
            })
            .collect();
        hot.convert(Convert {
            samples,
            upto: (last_seq, last_ts),
        })
        .await?;
        converted += old.len() as u64;
    }
    if converted > 0 {
        tracing::info!(
            samples = converted,
            "converted version 1 samples to series rows"
        );
    }
    Ok(())
}

async fn read_rollups(
    conn: &mut sqlx::SqliteConnection,
    device_seq: i64,
    tier: Tier,
    from: i64,
    to: i64,
    filter: &SeriesFilter,
    sketches: bool,
) -> Result<Runs> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT bucket, data FROM rollups
          WHERE tier = ? AND device_seq = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
    )
    .bind(tier.width_ms())
    .bind(device_seq)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let mut runs = Runs::new();
    decode_rollups(device_seq, tier, rows, filter, sketches, &mut runs)?;
    if tier == Tier::Minute {
        let hour = Tier::Hour.width_ms();
        let blocks: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM rollup_blocks
              WHERE device_seq = ? AND hour >= ? AND hour < ? ORDER BY hour",
        )
        .bind(device_seq)
        .bind(rollup::bucket_start(from, hour))
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        decode_minute_blocks(device_seq, blocks, from, to, filter, sketches, &mut runs)?;
    }
    rollup::sort_runs(&mut runs);
    Ok(runs)
}

/// Stores a block of `minutes` (sorted) of hour `h`.
async fn write_minute_block(
    tx: &mut Transaction<'_, Sqlite>,
    device_seq: i64,
    hour: i64,
    minutes: &[(i64, rollup::Series)],
    data: &[u8],
) -> Result<()> {
    let Some(first) = minutes.first().map(|m| m.0) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT OR REPLACE INTO rollup_blocks (device_seq, hour, first_bucket, minutes, data)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(device_seq)
    .bind(hour)
    .bind(first)
    .bind(minutes.len() as i64)
    .bind(data)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_rollup(
    tx: &mut Transaction<'_, Sqlite>,
    device_seq: i64,
    tier: Tier,
    bucket: i64,
    series: &rollup::Series,
) -> Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO rollups (tier, device_seq, bucket, data) VALUES (?, ?, ?, ?)",
    )
    .bind(tier.width_ms())
    .bind(device_seq)
    .bind(bucket)
    .bind(rollup::encode(series))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Replaces the segments of the device's hour `h` by one block holding them and `extra`,
/// minutes of the same bucket merged. With `always` false, an hour already in one block
/// (and nothing extra) is left as it is.
async fn rewrite_hour(
    tx: &mut Transaction<'_, Sqlite>,
    device_seq: i64,
    h: i64,
    extra: Vec<(i64, rollup::Series)>,
    always: bool,
) -> Result<()> {
    let blocks: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT data FROM rollup_blocks WHERE device_seq = ? AND hour = ?")
            .bind(device_seq)
            .bind(h)
            .fetch_all(&mut **tx)
            .await?;
    if blocks.len() <= 1 && extra.is_empty() && !always {
        return Ok(());
    }
    let minutes = merge_minutes(device_seq, &blocks, extra)?;
    sqlx::query("DELETE FROM rollup_blocks WHERE device_seq = ? AND hour = ?")
        .bind(device_seq)
        .bind(h)
        .execute(&mut **tx)
        .await?;
    let data =
        rollup::encode_block(&minutes).map_err(|e| corrupt(device_seq, "minute block", e))?;
    write_minute_block(tx, device_seq, h, &minutes, &data).await
}

/// Adds minutes (sorted) to the device's hour `h` as a new segment of its block; reads merge
/// a minute found in several segments. Merges the hour's segments into one block when there
/// are many (small segments cost more bytes), or when a segment starts at the same minute.
async fn append_minutes(
    tx: &mut Transaction<'_, Sqlite>,
    device_seq: i64,
    h: i64,
    minutes: Vec<(i64, rollup::Series)>,
) -> Result<()> {
    let Some(first) = minutes.first().map(|m| m.0) else {
        return Ok(());
    };
    let (segments, clash): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(first_bucket = ?3), 0) FROM rollup_blocks
          WHERE device_seq = ?1 AND hour = ?2",
    )
    .bind(device_seq)
    .bind(h)
    .bind(first)
    .fetch_one(&mut **tx)
    .await?;
    if clash > 0 || segments >= MAX_SEGMENTS {
        return rewrite_hour(tx, device_seq, h, minutes, true).await;
    }
    let data =
        rollup::encode_block(&minutes).map_err(|e| corrupt(device_seq, "minute block", e))?;
    write_minute_block(tx, device_seq, h, &minutes, &data).await
}

/// Merges `delta` into the stored rollup of the bucket (creating it if absent); the hour
/// tier's rows (minutes go through [`append_minutes`]).
async fn merge_into_rollup(
    tx: &mut Transaction<'_, Sqlite>,
    device_seq: i64,
    tier: Tier,
    bucket: i64,
    delta: &rollup::Series,
) -> Result<()> {
    let all = SeriesFilter::all();
    let runs = read_rollups(tx, device_seq, tier, bucket, bucket + 1, &all, true).await?;
    write_rollup(tx, device_seq, tier, bucket, &merged_bucket(runs, delta)).await
}

#[cfg(test)]
mod open_tests {
    use super::*;

    /// SQLite's answer while another connection holds the write lock is what `open` retries
    /// on, whichever connection (the pool's or the writer's) meets it.
    #[tokio::test]
    async fn a_locked_database_is_told_apart_from_other_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("locked.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let holder = rusqlite::Connection::open(&path).expect("holder");
        holder.execute_batch("BEGIN IMMEDIATE").expect("lock");

        let other = rusqlite::Connection::open(&path).expect("other");
        other.busy_timeout(Duration::ZERO).expect("timeout");
        let e = other
            .execute_batch("BEGIN IMMEDIATE")
            .expect_err("the lock is held");
        assert!(is_locked(&StoreError::Sqlite(e)));

        // The pool's connections wait out their busy timeout; a zero timeout answers at once.
        let mut conn = store.pool.acquire().await.expect("acquire");
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut *conn)
            .await
            .expect("pragma");
        let e = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .expect_err("the lock is held");
        assert!(is_locked(&StoreError::Database(e)));
        // Not back to the pool with a zero timeout.
        drop(conn.detach());

        // Told by SQLite's code, not by words in a message.
        assert!(!is_locked(&StoreError::Corrupt(
            "database is locked".into()
        )));
        holder.execute_batch("ROLLBACK").expect("unlock");
        // With the lock gone, opening the same file again works at once.
        SqliteStore::open(&path).await.expect("open again");
    }
}
