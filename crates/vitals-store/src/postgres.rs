//! The PostgreSQL backend: one database (or one schema of it, by `search_path`) that several
//! hubs may share at once. It keeps exactly the SQLite backend's semantics; what SQLite gets
//! from its single writer (`BEGIN IMMEDIATE`), this backend gets from locks:
//! - group commits take a *shared* advisory lock per device, and the tier work of a device
//!   (rollups, compaction, late merges, deleting it) the *exclusive* one, so a device's marks
//!   never move while samples are being stored against them; several devices are always
//!   locked in ascending order, so lock waits cannot form a cycle;
//! - single-row read-modify-write steps (pairing codes, rate buckets) read with `FOR UPDATE`;
//! - idempotent inserts use `ON CONFLICT`, and rows are inserted in key order.
//!
//! Raw samples (`samples`, `sample_blocks`) are partitioned by UTC day of their time. The
//! store creates a day's partition before it writes into it (remembering the days it knows)
//! and retention drops a whole day at once when every level above already holds it, instead
//! of deleting its rows one by one.
//!
//! Leases on singleton work are session advisory locks held on one dedicated connection: a
//! hub that dies loses its connection, and PostgreSQL hands the lease to the next hub that
//! asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Postgres, Row as _, Transaction};

use crate::block::WINDOW_MS as BLOCK_MS;
use crate::common::*;
use crate::shape::{self, ShapeCache};
use crate::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The time span of one raw-sample partition: a UTC day.
pub const DAY_MS: i64 = 86_400_000;
/// How long a request waits for a pooled connection before it fails (a database that is down
/// fails requests quickly instead of hanging them).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a lease check waits for the database.
const LEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long retention waits for the locks a partition drop needs. Shorter than PostgreSQL's
/// default `deadlock_timeout` (1 s), so that retention, not a group commit, gives up when
/// they wait on each other; every query on raw samples waits behind it meanwhile.
const DROP_LOCK_TIMEOUT: &str = "500ms";
/// After a partition drop gave up waiting for its locks, retention deletes rows for a while.
const DROP_BACKOFF: Duration = Duration::from_secs(60);
/// Rows per hot-row insert statement (four arrays, one element per row).
const INSERT_CHUNK: usize = 10_000;

type Tx = Transaction<'static, Postgres>;

/// A partitioned raw-sample table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Part {
    Samples,
    Blocks,
}

impl Part {
    fn table(self) -> &'static str {
        match self {
            Part::Samples => "samples",
            Part::Blocks => "sample_blocks",
        }
    }

    /// The partition of `day`: `samples_d19876`, `samples_dm3` for day -3.
    fn partition(self, day: i64) -> String {
        if day < 0 {
            format!("{}_dm{}", self.table(), day.unsigned_abs())
        } else {
            format!("{}_d{day}", self.table())
        }
    }

    fn day_of_partition(self, name: &str) -> Option<i64> {
        let rest = name.strip_prefix(self.table())?.strip_prefix("_d")?;
        match rest.strip_prefix('m') {
            Some(neg) => neg.parse::<i64>().ok().map(|d| -d),
            None => rest.parse().ok(),
        }
    }
}

/// The UTC day (floor division) of a time.
fn day_of(ts: i64) -> i64 {
    ts.div_euclid(DAY_MS)
}

/// The day's `[start, end)`; `None` where it passes the ends of `i64` (MINVALUE, MAXVALUE).
fn day_span(day: i64) -> (Option<i64>, Option<i64>) {
    (
        day.checked_mul(DAY_MS),
        day.checked_add(1).and_then(|d| d.checked_mul(DAY_MS)),
    )
}

fn sql_state(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A row of a day that has no partition (it was never made here, or another hub dropped it).
fn is_no_partition(e: &StoreError) -> bool {
    match e {
        StoreError::Database(err @ sqlx::Error::Database(db)) => {
            sql_state(err).as_deref() == Some("23514") && db.message().contains("no partition")
        }
        _ => false,
    }
}

/// Another session created (or attached) the same partition at the same moment: duplicate
/// table or object, a duplicate catalog key, or "is already a partition".
fn is_already_exists(e: &sqlx::Error) -> bool {
    matches!(
        sql_state(e).as_deref(),
        Some("42P07" | "42710" | "23505" | "42809")
    )
}

/// A lock wait gave up (`lock_timeout`) or was chosen to break a deadlock.
fn is_lock_wait(e: &sqlx::Error) -> bool {
    matches!(sql_state(e).as_deref(), Some("55P03" | "40P01"))
}

/// The dedicated connection that holds the leases (session advisory locks).
#[derive(Default)]
struct Leases {
    conn: Option<PgConnection>,
    held: HashSet<String>,
}

/// A [`Store`] in a PostgreSQL database (the first schema of its `search_path`).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    opts: PgConnectOptions,
    /// Shapes of hot rows seen so far.
    shapes: Arc<ShapeCache>,
    /// Day partitions known to exist.
    parts: Arc<parking_lot::Mutex<HashSet<(Part, i64)>>>,
    leases: Arc<tokio::sync::Mutex<Leases>>,
    /// Until when retention deletes rows rather than trying to drop partitions.
    drop_backoff: Arc<parking_lot::Mutex<Option<Instant>>>,
}

impl PgStore {
    /// Connects to a `postgres://` URL and applies pending migrations. A database written by
    /// a newer Vitals is refused with [`StoreError::Corrupt`] naming the versions.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with `opts` (a `search_path` option puts everything in that schema) and
    /// applies pending migrations. Hubs starting at once take turns: the migrator holds an
    /// advisory lock while it works.
    pub async fn connect_with(opts: PgConnectOptions) -> Result<Self> {
        let opts = opts
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await?;
        check_not_newer(&pool).await?;
        MIGRATOR.run(&pool).await?;
        let known = list_partitions(&pool).await?;
        Ok(Self {
            pool,
            opts,
            shapes: Arc::new(ShapeCache::default()),
            parts: Arc::new(parking_lot::Mutex::new(known.into_iter().collect())),
            leases: Arc::new(tokio::sync::Mutex::new(Leases::default())),
            drop_backoff: Arc::new(parking_lot::Mutex::new(None)),
        })
    }

    /// Makes sure the partitions of `days` exist.
    async fn ensure_partitions(&self, part: Part, days: &[i64]) -> Result<()> {
        for &day in days {
            if self.parts.lock().contains(&(part, day)) {
                continue;
            }
            create_partition(&self.pool, part, day).await?;
            self.parts.lock().insert((part, day));
        }
        Ok(())
    }

    fn forget_partitions(&self, part: Part, days: &[i64]) {
        let mut parts = self.parts.lock();
        for day in days {
            parts.remove(&(part, *day));
        }
    }

    async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// One attempt at a group commit; the caller makes the partitions first.
    async fn insert_once(
        &self,
        batches: &[SampleBatch],
        rows: &[(usize, i64, &Row)],
    ) -> Result<(Vec<u64>, Vec<(i64, String)>)> {
        let seen = devices_seen(batches);
        let mut tx = self.begin().await?;
        lock_devices(&mut tx, &seen, false).await?;
        let (stored, learned) = insert_rows(&mut tx, &self.shapes, rows, batches.len()).await?;
        if let Some(now) = batches.iter().map(|b| b.now).max()
            && !seen.is_empty()
        {
            // Rows locked in key order, as every commit does, so two commits never wait on
            // each other's devices in a cycle.
            sqlx::query(
                "UPDATE devices SET last_seen = GREATEST(COALESCE(last_seen, 0), $1)
                  WHERE seq IN (SELECT seq FROM devices WHERE seq = ANY($2)
                                 ORDER BY seq FOR UPDATE)",
            )
            .bind(now)
            .bind(&seen)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok((stored, learned))
    }

    /// One attempt at a compaction step: `Err(day)` when the day's block partition is
    /// missing (nothing was written).
    async fn compact_once(
        &self,
        device_seq: i64,
        before: i64,
    ) -> Result<std::result::Result<CompactStep, i64>> {
        let done = CompactStep {
            samples: 0,
            done: true,
        };
        let mut tx = self.begin().await?;
        lock_devices(&mut tx, &[device_seq], true).await?;
        // Only what the minute tier holds and no late sample still needs from the hot table.
        let limit: Option<i64> = sqlx::query_scalar(
            "SELECT LEAST($2, minute_mark,
                          COALESCE((SELECT MIN(ts) FROM rollup_late WHERE device_seq = $1), $2))
               FROM rollup_marks WHERE device_seq = $1 AND minute_mark IS NOT NULL",
        )
        .bind(device_seq)
        .bind(before)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(limit) = limit.map(|l| rollup::bucket_start(l, BLOCK_MS)) else {
            return Ok(Ok(done));
        };
        let first: Option<i64> =
            sqlx::query_scalar("SELECT MIN(ts) FROM samples WHERE device_seq = $1 AND ts < $2")
                .bind(device_seq)
                .bind(limit)
                .fetch_one(&mut *tx)
                .await?;
        let Some(first) = first else {
            return Ok(Ok(done));
        };
        let start = rollup::bucket_start(first, BLOCK_MS);
        let end = start + BLOCK_MS;
        let day = day_of(start);
        if !self.parts.lock().contains(&(Part::Blocks, day)) {
            return Ok(Err(day));
        }
        // Locked, so retention cannot delete what is being moved.
        let rows: Vec<HotRow> = sqlx::query_as(
            "SELECT ts, shape, vals FROM samples
              WHERE device_seq = $1 AND ts >= $2 AND ts < $3 ORDER BY ts FOR UPDATE",
        )
        .bind(device_seq)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
        let moved = rows.len() as u64;
        // Late samples of a window already compacted join its block.
        let existing: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM sample_blocks WHERE device_seq = $1 AND start_ts = $2 FOR UPDATE",
        )
        .bind(device_seq)
        .bind(start)
        .fetch_optional(&mut *tx)
        .await?;
        let hot = hot_frame(&mut tx, &self.shapes, &rows, &SeriesFilter::all()).await?;
        let Some(block) = merge_block(device_seq, existing, hot)? else {
            return Ok(Ok(done));
        };
        let written = sqlx::query(
            "INSERT INTO sample_blocks (device_seq, start_ts, first_ts, last_ts, count, data)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (device_seq, start_ts) DO UPDATE
               SET first_ts = excluded.first_ts, last_ts = excluded.last_ts,
                   count = excluded.count, data = excluded.data",
        )
        .bind(device_seq)
        .bind(start)
        .bind(block.first_ts)
        .bind(block.last_ts)
        .bind(block.count)
        .bind(block.data)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from);
        match written {
            Err(e) if is_no_partition(&e) => return Ok(Err(day)),
            other => other?,
        };
        sqlx::query("DELETE FROM samples WHERE device_seq = $1 AND ts >= $2 AND ts < $3")
            .bind(device_seq)
            .bind(start)
            .bind(end)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE rollup_marks SET block_mark = GREATEST(COALESCE(block_mark, 0), $1)
              WHERE device_seq = $2",
        )
        .bind(end)
        .bind(device_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(CompactStep {
            samples: moved,
            done: false,
        }))
    }

    /// Drops the day partitions of raw samples that lie wholly below the deletable line of
    /// every device (below `before`, below the minute mark of each device with data there,
    /// and below the oldest late sample still to merge). Returns the samples they held.
    async fn drop_old_days(&self, before: i64) -> Result<u64> {
        if self.drop_backoff.lock().is_some_and(|t| Instant::now() < t) {
            return Ok(0);
        }
        let late: Option<i64> = sqlx::query_scalar("SELECT MIN(ts) FROM rollup_late")
            .fetch_one(&self.pool)
            .await?;
        let line = before.min(late.unwrap_or(i64::MAX));
        let mut days: BTreeMap<i64, Vec<Part>> = BTreeMap::new();
        for (part, day) in list_partitions(&self.pool).await? {
            if day_span(day).1.is_some_and(|end| end <= line) {
                days.entry(day).or_default().push(part);
            }
        }
        let mut total = 0u64;
        for (day, parts) in days {
            // A first look without locks, so a day that must stay costs no lock.
            let mut conn = self.pool.acquire().await?;
            if !day_is_done(&mut conn, day, &parts).await? {
                continue;
            }
            drop(conn);
            match self.drop_day(day, &parts, before).await {
                Ok(n) => total += n.unwrap_or(0),
                Err(StoreError::Database(e)) if is_lock_wait(&e) => {
                    tracing::debug!(day, "partition drop postponed: raw samples are busy");
                    *self.drop_backoff.lock() = Some(Instant::now() + DROP_BACKOFF);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Drops the day's partitions if they may still go, once nothing else can write into
    /// them; `None` if they must stay.
    async fn drop_day(&self, day: i64, parts: &[Part], before: i64) -> Result<Option<u64>> {
        let Some(end) = day_span(day).1 else {
            return Ok(None);
        };
        let mut tx = self.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"
        )))
        .execute(&mut *tx)
        .await?;
        // Dropping a partition locks its parent anyway; taking both parents first means a
        // late sample being stored into this day right now either commits before the checks
        // below (and is seen) or waits until the day is gone (and makes it anew).
        sqlx::query("LOCK TABLE samples, sample_blocks IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let late: Option<i64> = sqlx::query_scalar("SELECT MIN(ts) FROM rollup_late")
            .fetch_one(&mut *tx)
            .await?;
        if late.is_some_and(|l| l < end) {
            return Ok(None);
        }
        let mut present = Vec::new();
        for part in parts {
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(part.partition(day))
                .fetch_one(&mut *tx)
                .await?;
            if exists {
                present.push(*part);
            }
        }
        if !day_is_done(&mut tx, day, &present).await? {
            return Ok(None);
        }
        let mut n: i64 = 0;
        for part in &present {
            let name = part.partition(day);
            let count_sql = match part {
                Part::Samples => format!("SELECT COUNT(*) FROM {name}"),
                Part::Blocks => format!("SELECT COALESCE(SUM(count), 0)::int8 FROM {name}"),
            };
            let c: i64 = sqlx::query_scalar(AssertSqlSafe(count_sql))
                .fetch_one(&mut *tx)
                .await?;
            n += c;
            sqlx::query(AssertSqlSafe(format!("DROP TABLE {name}")))
                .execute(&mut *tx)
                .await?;
        }
        raise_raw_floor(&mut tx, before).await?;
        tx.commit().await?;
        self.forget_partitions(Part::Samples, &[day]);
        self.forget_partitions(Part::Blocks, &[day]);
        tracing::info!(day, samples = n, "dropped a day of raw samples");
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }
}

/// Refuses a database whose schema is newer than this build's migrations.
async fn check_not_newer(pool: &PgPool) -> Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(());
    }
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await?;
    not_newer(newest, &MIGRATOR)
}

/// Every day partition of the raw-sample tables in the store's schema.
async fn list_partitions(pool: &PgPool) -> Result<Vec<(Part, i64)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.relname::text, c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
          WHERE i.inhparent IN ('samples'::regclass, 'sample_blocks'::regclass)",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(parent, child)| {
            let part = if parent == Part::Samples.table() {
                Part::Samples
            } else {
                Part::Blocks
            };
            part.day_of_partition(&child).map(|day| (part, day))
        })
        .collect())
}

/// Creates the day's partition unless it exists, as a table of its own then attached:
/// `ATTACH PARTITION` takes a lock on the parent that reads and writes do not wait for, where
/// `CREATE TABLE .. PARTITION OF` would take one that stops every query on raw samples until
/// the longest running one ends. Two hubs may make the same day at once: the loser sees
/// "already exists" (or a duplicate catalog key, or "already a partition") and looks again.
async fn create_partition(pool: &PgPool, part: Part, day: i64) -> Result<()> {
    let name = part.partition(day);
    let (start, end) = day_span(day);
    let bound = |v: Option<i64>, edge: &str| v.map_or_else(|| edge.to_string(), |v| v.to_string());
    let create = format!("CREATE TABLE IF NOT EXISTS {name} (LIKE {})", part.table());
    let attach = format!(
        "ALTER TABLE {} ATTACH PARTITION {name} FOR VALUES FROM ({}) TO ({})",
        part.table(),
        bound(start, "MINVALUE"),
        bound(end, "MAXVALUE"),
    );
    let mut attempt = 0;
    loop {
        let made: Result<(), sqlx::Error> = async {
            let mut tx = pool.begin().await?;
            let attached: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
            )
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
            if !attached {
                sqlx::query(AssertSqlSafe(create.clone()))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(AssertSqlSafe(attach.clone()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await;
        match made {
            Ok(()) => return Ok(()),
            Err(e) if is_already_exists(&e) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether every device with raw data in the day's partitions has it all in the minute tier
/// (its minute mark is at or past the day's end).
async fn day_is_done(conn: &mut PgConnection, day: i64, parts: &[Part]) -> Result<bool> {
    let Some(end) = day_span(day).1 else {
        return Ok(false);
    };
    for part in parts {
        let done: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {} s WHERE NOT EXISTS
               (SELECT 1 FROM rollup_marks m WHERE m.device_seq = s.device_seq
                                               AND m.minute_mark >= $1))",
            part.partition(day)
        )))
        .bind(end)
        .fetch_one(&mut *conn)
        .await?;
        if !done {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Queries read coarser tiers below `raw_floor`, so a half-deleted minute is never read raw.
async fn raise_raw_floor(conn: &mut PgConnection, before: i64) -> Result<()> {
    sqlx::query(
        "UPDATE rollup_marks SET raw_floor = LEAST($1, minute_mark)
          WHERE minute_mark IS NOT NULL
            AND (raw_floor IS NULL OR raw_floor < LEAST($1, minute_mark))",
    )
    .bind(rollup::bucket_start(before.min(i64::MAX - 1), 60_000))
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the transaction's advisory lock of each device (ascending), shared or exclusive.
/// The keys include the schema, so stores in other schemas never wait on each other.
async fn lock_devices(conn: &mut PgConnection, seqs: &[i64], exclusive: bool) -> Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut seqs = seqs.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    let f = if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    };
    sqlx::query(AssertSqlSafe(format!(
        "SELECT {f}(hashtextextended('vitals:device:' || current_schema(), s))
           FROM unnest($1::int8[]) WITH ORDINALITY AS t(s, i) ORDER BY i"
    )))
    .bind(&seqs)
    .execute(conn)
    .await?;
    Ok(())
}

const DEVICE_COLS: &str = "seq, id, name, host_id, simulated, agent_version, created_at, last_seen, CASE WHEN token_hash IS NULL THEN 0::int8 ELSE 1::int8 END AS has_token";

async fn insert_device(conn: &mut PgConnection, d: &NewDevice) -> Result<Device> {
    let id = uuid::Uuid::new_v4().to_string();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO devices (id, name, host_id, token_hash, simulated, agent_version, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {DEVICE_COLS}"
    )))
    .bind(&id)
    .bind(&d.name)
    .bind(&d.host_id)
    .bind(d.token_hash.as_deref())
    .bind(i64::from(d.simulated))
    .bind(d.agent_version.as_deref())
    .bind(d.now)
    .fetch_one(conn)
    .await?;
    device_from(&row)
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn create_user(&self, u: NewUser) -> Result<User> {
        let id = uuid::Uuid::new_v4().to_string();
        let res = sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id, username, role, created_at",
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
        let mut tx = self.begin().await?;
        // Two hubs setting up at once: the second waits here and then sees the first user.
        sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let id = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(
            "INSERT INTO users (id, username, role, password_hash, created_at)
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM users)
             RETURNING id, username, role, created_at",
        )
        .bind(&id)
        .bind(&u.username)
        .bind(u.role.as_str())
        .bind(&u.password_hash)
        .bind(u.now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT id, username, role, created_at, password_hash FROM users
              WHERE lower(username) = lower($1)",
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
        let row = sqlx::query("SELECT id, username, role, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT id, username, role, created_at FROM users ORDER BY lower(username), username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from).collect()
    }

    async fn delete_user(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn create_session(&self, s: NewSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
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
             WHERE s.token_hash = $1 AND s.expires_at > $2",
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
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_sessions(&self, now: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn create_api_token(&self, t: NewApiToken) -> Result<ApiToken> {
        let id = uuid::Uuid::new_v4().to_string();
        let row = sqlx::query(
            "INSERT INTO api_tokens (id, name, role, token_hash, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, name, role, created_by, created_at",
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
            "SELECT id, name, role, created_by, created_at FROM api_tokens WHERE token_hash = $1",
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
        Ok(sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn meta_take(&self, key: &str, value: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM meta WHERE key = $1 AND value = $2")
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn create_device_code(&self, c: NewDeviceCode) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO device_codes
               (code, host_id, hostname, agent_version, source_ip, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
        let row = sqlx::query("SELECT * FROM device_codes WHERE code = $1")
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
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT * FROM device_codes WHERE code = $1 FOR UPDATE")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?;
        let new = match approval(row.as_ref().map(code_from).transpose()?, name, now) {
            Ok(new) => new,
            Err(outcome) => return Ok(outcome),
        };
        let device = insert_device(&mut tx, &new).await?;
        let n = sqlx::query(
            "UPDATE device_codes SET device_id = $1, approved_at = $2
              WHERE code = $3 AND device_id IS NULL",
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
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT * FROM device_codes WHERE code = $1 FOR UPDATE")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?;
        let device_id = match claim(row.as_ref().map(code_from).transpose()?, now) {
            Ok(id) => id,
            Err(outcome) => return Ok(outcome),
        };
        let deleted = sqlx::query("DELETE FROM device_codes WHERE code = $1")
            .bind(code)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let updated = sqlx::query("UPDATE devices SET token_hash = $1 WHERE id = $2")
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
        Ok(
            sqlx::query("DELETE FROM device_codes WHERE code = $1 AND device_id IS NULL")
                .bind(code)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn purge_device_codes(&self, before: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM device_codes WHERE expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn create_device(&self, d: NewDevice) -> Result<Device> {
        let mut conn = self.pool.acquire().await?;
        insert_device(&mut conn, &d).await
    }

    async fn device(&self, id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from).transpose()
    }

    async fn device_by_token(&self, token_hash: &[u8]) -> Result<Option<Device>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from).transpose()
    }

    async fn list_devices(&self) -> Result<Vec<DeviceWithLatest>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLS}, l.ts AS latest_ts, l.shape AS latest_shape,
                    l.vals AS latest_vals
               FROM devices d LEFT JOIN LATERAL
                    (SELECT ts, shape, vals FROM samples
                      WHERE device_seq = d.seq ORDER BY ts DESC LIMIT 1) l ON true
              ORDER BY lower(d.name), d.id"
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
            "SELECT d.seq, b.last_ts, b.data FROM devices d JOIN LATERAL
                    (SELECT last_ts, data FROM sample_blocks
                      WHERE device_seq = d.seq ORDER BY start_ts DESC LIMIT 1) b ON true",
        )
        .fetch_all(&mut *conn)
        .await?;
        latest_from_blocks(&mut out, newest)?;
        Ok(out)
    }

    async fn rename_device(&self, id: &str, name: &str) -> Result<bool> {
        Ok(sqlx::query("UPDATE devices SET name = $1 WHERE id = $2")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn set_device_token(&self, id: &str, token_hash: &[u8]) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE devices SET token_hash = $1 WHERE id = $2")
                .bind(token_hash)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn set_device_agent_version(&self, id: &str, version: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET agent_version = $1 WHERE id = $2")
            .bind(version)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_device(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        // The device's lock before any of its rows, as group commits take them.
        lock_devices(&mut tx, &[seq], true).await?;
        for sql in [
            "DELETE FROM samples WHERE device_seq = $1",
            "DELETE FROM rollups WHERE device_seq = $1",
            "DELETE FROM rollup_marks WHERE device_seq = $1",
            "DELETE FROM rollup_late WHERE device_seq = $1",
            "DELETE FROM sample_blocks WHERE device_seq = $1",
            "DELETE FROM rollup_blocks WHERE device_seq = $1",
            "DELETE FROM device_state WHERE device_seq = $1",
        ] {
            sqlx::query(sql).bind(seq).execute(&mut *tx).await?;
        }
        let n = sqlx::query("DELETE FROM devices WHERE seq = $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn insert_batches(&self, batches: &[SampleBatch]) -> Result<Vec<u64>> {
        let rows = flat_rows(batches);
        let mut days: Vec<i64> = rows.iter().map(|r| day_of(r.2.ts)).collect();
        days.sort_unstable();
        days.dedup();
        let mut attempt = 0;
        loop {
            self.ensure_partitions(Part::Samples, &days).await?;
            match self.insert_once(batches, &rows).await {
                Ok((stored, learned)) => {
                    for (id, key) in learned {
                        self.shapes.learn(id, &key);
                    }
                    return Ok(stored);
                }
                // Another hub dropped a day this one still knew: make it again.
                Err(e) if is_no_partition(&e) && attempt < 3 => {
                    attempt += 1;
                    self.forget_partitions(Part::Samples, &days);
                }
                Err(e) => return Err(e),
            }
        }
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
              WHERE device_seq = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts",
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
            "SELECT ((SELECT COUNT(*) FROM samples WHERE device_seq = $1)
                   + (SELECT COALESCE(SUM(count), 0) FROM sample_blocks WHERE device_seq = $1))::int8",
        )
        .bind(device_seq)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn samples_page(&self, device_seq: i64, from: i64, to: i64, limit: i64) -> Result<Frame> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<HotRow> = sqlx::query_as(
            "SELECT ts, shape, vals FROM samples
              WHERE device_seq = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts LIMIT $4",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .bind(limit.max(0))
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
            "SELECT COUNT(*) FROM samples WHERE device_seq = $1 AND ts BETWEEN $2 AND $3",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await?;
        // Whole blocks by their count; the (at most two) partial ones by their timestamps.
        // `start_ts` bounds let the planner skip the days outside the range.
        let whole: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(count), 0)::int8 FROM sample_blocks
              WHERE device_seq = $1 AND first_ts >= $2 AND last_ts <= $3
                AND start_ts >= $4 AND start_ts <= $3",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .bind(block_floor(from))
        .fetch_one(&mut *conn)
        .await?;
        let partial: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM sample_blocks
              WHERE device_seq = $1 AND last_ts >= $2 AND first_ts <= $3
                AND NOT (first_ts >= $2 AND last_ts <= $3)
                AND start_ts >= $4 AND start_ts <= $3",
        )
        .bind(device_seq)
        .bind(from)
        .bind(to)
        .bind(block_floor(from))
        .fetch_all(&mut *conn)
        .await?;
        Ok(hot + whole + count_in_blocks(device_seq, &partial, from, to)?)
    }

    /// Whole days are dropped as partitions when they may go entirely: then this returns
    /// every sample of those days, which may be more than `limit` (a partition drop costs the
    /// same whatever it holds). Otherwise rows and blocks are deleted, at most about `limit`
    /// samples' worth, as in SQLite.
    async fn delete_samples_before(&self, before: i64, limit: i64) -> Result<u64> {
        let dropped = self.drop_old_days(before).await?;
        if dropped > 0 {
            return Ok(dropped);
        }
        let mut tx = self.begin().await?;
        let mut n = sqlx::query(
            "DELETE FROM samples WHERE (device_seq, ts) IN
               (SELECT s.device_seq, s.ts FROM rollup_marks m
                  JOIN samples s ON s.device_seq = m.device_seq
                                AND s.ts < LEAST($1, m.minute_mark)
                 WHERE m.minute_mark IS NOT NULL
                   AND s.ts < (SELECT COALESCE(MIN(ts), $1) FROM rollup_late)
                 LIMIT $2)",
        )
        .bind(before)
        .bind(limit.max(0))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Whole blocks that end below the cut-off, about `limit` samples' worth; each counts
        // what it held when it was deleted (a compaction may have merged into it meanwhile).
        let counts: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM sample_blocks WHERE (device_seq, start_ts) IN
               (SELECT b.device_seq, b.start_ts FROM rollup_marks m
                  JOIN sample_blocks b ON b.device_seq = m.device_seq
                                      AND b.last_ts < LEAST($1, m.minute_mark)
                 WHERE m.minute_mark IS NOT NULL
                   AND b.last_ts < (SELECT COALESCE(MIN(ts), $1) FROM rollup_late)
                 LIMIT $2)
             RETURNING count",
        )
        .bind(before)
        .bind((limit / BLOCK_SAMPLES).max(1))
        .fetch_all(&mut *tx)
        .await?;
        n += counts
            .into_iter()
            .map(|c| u64::try_from(c).unwrap_or(0))
            .sum::<u64>();
        raise_raw_floor(&mut tx, before).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn compact(&self, device_seq: i64, before: i64) -> Result<CompactStep> {
        let mut attempt = 0;
        loop {
            match self.compact_once(device_seq, before).await? {
                Ok(step) => return Ok(step),
                Err(day) if attempt < 3 => {
                    attempt += 1;
                    self.forget_partitions(Part::Blocks, &[day]);
                    self.ensure_partitions(Part::Blocks, &[day]).await?;
                }
                Err(day) => {
                    return Err(StoreError::Corrupt(format!(
                        "the block partition of day {day} cannot be made"
                    )));
                }
            }
        }
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
        let w = tier.width_ms();
        let mut tx = self.begin().await?;
        lock_devices(&mut tx, &[device_seq], true).await?;
        let marks: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT minute_mark, hour_mark FROM rollup_marks WHERE device_seq = $1")
                .bind(device_seq)
                .fetch_optional(&mut *tx)
                .await?;
        let (minute_mark, hour_mark) = marks.unwrap_or((None, None));
        let Some((mark, limit)) = roll_range(tier, to, minute_mark, hour_mark) else {
            return Ok(RollStep {
                buckets: 0,
                done: true,
            });
        };
        let lo = mark.unwrap_or(i64::MIN);
        let first: Option<i64> =
            match tier {
                Tier::Minute => sqlx::query_scalar(
                    "SELECT MIN(ts) FROM samples WHERE device_seq = $1 AND ts >= $2 AND ts < $3",
                )
                .bind(device_seq)
                .bind(lo)
                .bind(limit)
                .fetch_one(&mut *tx)
                .await?,
                Tier::Hour => {
                    sqlx::query_scalar(
                        "SELECT MIN(first_bucket) FROM rollup_blocks
                      WHERE device_seq = $1 AND hour + $3 > $2 AND hour < $4",
                    )
                    .bind(device_seq)
                    .bind(lo)
                    .bind(Tier::Hour.width_ms())
                    .bind(limit)
                    .fetch_one(&mut *tx)
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
                        let rows: Vec<HotRow> = sqlx::query_as(
                            "SELECT ts, shape, vals FROM samples
                              WHERE device_seq = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
                        )
                        .bind(device_seq)
                        .bind(start)
                        .bind(end)
                        .fetch_all(&mut *tx)
                        .await?;
                        let frame = hot_frame(&mut tx, &self.shapes, &rows, &all).await?;
                        rollup::fold_frame(&frame, w)
                    }
                    Tier::Hour => hours_of(
                        read_rollups(&mut tx, device_seq, Tier::Minute, start, end, &all, true)
                            .await?,
                    ),
                };
                (end, buckets)
            }
        };
        match tier {
            // This pass's minutes are appended to their hours' blocks as segments.
            Tier::Minute => {
                for (h, minutes) in minutes_by_hour(&buckets) {
                    append_minutes(&mut tx, device_seq, h, minutes).await?;
                }
            }
            // The hour's segments become one block as the hour is rolled up.
            Tier::Hour => {
                for (b, series) in &buckets {
                    write_rollup(&mut tx, device_seq, tier, *b, series).await?;
                    rewrite_hour(&mut tx, device_seq, *b, Vec::new(), false).await?;
                }
            }
        }
        let column = match tier {
            Tier::Minute => "minute_mark",
            Tier::Hour => "hour_mark",
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO rollup_marks (device_seq, {column}) VALUES ($1, $2)
             ON CONFLICT (device_seq) DO UPDATE SET {column} = excluded.{column}"
        )))
        .bind(device_seq)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RollStep {
            buckets: buckets.len() as u64,
            done: end >= limit,
        })
    }

    async fn roll_up_late(&self, limit: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        // One late merge at a time in the store; each then locks the devices it merges.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('vitals:late:' || current_schema(), 0))",
        )
        .execute(&mut *tx)
        .await?;
        let late: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT device_seq, ts FROM rollup_late ORDER BY device_seq, ts LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&mut *tx)
        .await?;
        if late.is_empty() {
            return Ok(0);
        }
        let ranges = late_ranges(&late);
        let seqs: Vec<i64> = ranges.keys().copied().collect();
        lock_devices(&mut tx, &seqs, true).await?;
        let mut by_device: BTreeMap<i64, Frame> = BTreeMap::new();
        let all = SeriesFilter::all();
        for (seq, (lo, hi)) in &ranges {
            let rows: Vec<HotRow> = sqlx::query_as(
                "SELECT s.ts, s.shape, s.vals FROM rollup_late l
                   JOIN samples s ON s.device_seq = l.device_seq AND s.ts = l.ts
                  WHERE l.device_seq = $1 AND l.ts BETWEEN $2 AND $3 ORDER BY l.ts",
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
                sqlx::query_scalar("SELECT hour_mark FROM rollup_marks WHERE device_seq = $1")
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
            let (by_hour, hours) = late_deltas(samples, hour_mark);
            for (h, list) in by_hour {
                append_minutes(&mut tx, *seq, h, list).await?;
            }
            for (h, delta) in &hours {
                merge_into_rollup(&mut tx, *seq, Tier::Hour, *h, delta).await?;
            }
        }
        let mut merged = 0u64;
        for (seq, (lo, hi)) in &ranges {
            merged += sqlx::query(
                "DELETE FROM rollup_late WHERE device_seq = $1 AND ts BETWEEN $2 AND $3",
            )
            .bind(seq)
            .bind(lo)
            .bind(hi)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(merged)
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
            "SELECT LEAST((SELECT MIN(ts) FROM samples WHERE device_seq = $1),
                          (SELECT first_ts FROM sample_blocks WHERE device_seq = $1
                            ORDER BY start_ts LIMIT 1)),
                    LEAST((SELECT MIN(bucket) FROM rollups WHERE tier = $2 AND device_seq = $1),
                          (SELECT MIN(first_bucket) FROM rollup_blocks WHERE device_seq = $1)),
                    (SELECT minute_mark FROM rollup_marks WHERE device_seq = $1),
                    (SELECT MIN(bucket) FROM rollups WHERE tier = $3 AND device_seq = $1),
                    (SELECT hour_mark FROM rollup_marks WHERE device_seq = $1),
                    (SELECT raw_floor FROM rollup_marks WHERE device_seq = $1)",
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
        let n = match tier {
            // Whole hour blocks of minutes, once the hour tier holds their hour; each counts
            // the minutes it holds.
            Tier::Minute => {
                let minutes: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM rollup_blocks WHERE (device_seq, hour, first_bucket) IN
                       (SELECT b.device_seq, b.hour, b.first_bucket FROM rollup_marks m
                          JOIN rollup_blocks b ON b.device_seq = m.device_seq
                                              AND b.hour + $3 <= LEAST($1, m.hour_mark)
                         WHERE m.hour_mark IS NOT NULL
                         LIMIT $2)
                     RETURNING minutes",
                )
                .bind(before)
                .bind((limit / 60).max(1))
                .bind(Tier::Hour.width_ms())
                .fetch_all(&self.pool)
                .await?;
                minutes
                    .into_iter()
                    .map(|m| u64::try_from(m).unwrap_or(0))
                    .sum()
            }
            Tier::Hour => sqlx::query(
                "DELETE FROM rollups WHERE (tier, device_seq, bucket) IN
                   (SELECT tier, device_seq, bucket FROM rollups
                     WHERE tier = $1 AND bucket < $2 LIMIT $3)",
            )
            .bind(tier.width_ms())
            .bind(before)
            .bind(limit.max(0))
            .execute(&self.pool)
            .await?
            .rows_affected(),
        };
        Ok(n)
    }

    async fn put_state(&self, device_seq: i64, kind: &str, json: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_state (device_seq, kind, data, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_seq, kind)
             DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
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
            "SELECT kind, data, updated_at FROM device_state WHERE device_seq = $1 ORDER BY kind",
        )
        .bind(device_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(state_from).collect()
    }

    async fn settings(&self) -> Result<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM settings")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn put_settings(&self, values: &BTreeMap<String, String>) -> Result<()> {
        let mut tx = self.begin().await?;
        for (k, v) in values {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
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
        // The store's own tables (with their indexes and TOAST) in its schema, partitions
        // included; other schemas of the database are not the store's.
        let size: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::int8
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(size).unwrap_or(0))
    }

    async fn reclaim_space(&self, _max_pages: i64) -> Result<u64> {
        // Autovacuum makes deleted rows' space reusable on its own, and whole days of raw
        // samples go back to the file system as their partitions are dropped. Giving the rest
        // back would take VACUUM FULL, which locks the table: not something to run unasked.
        Ok(0)
    }

    async fn try_lease(&self, name: &str) -> Result<bool> {
        let mut guard = self.leases.lock().await;
        let Leases { conn, held } = &mut *guard;
        if held.contains(name) {
            let alive = match conn.as_mut() {
                Some(c) => matches!(
                    tokio::time::timeout(LEASE_TIMEOUT, sqlx::query("SELECT 1").execute(c)).await,
                    Ok(Ok(_))
                ),
                None => false,
            };
            if alive {
                return Ok(true);
            }
            tracing::warn!(
                lease = name,
                "lease connection lost; every lease is released"
            );
            *conn = None;
            held.clear();
            return Ok(false);
        }
        if conn.is_none() {
            match tokio::time::timeout(LEASE_TIMEOUT, self.opts.connect()).await {
                Ok(Ok(c)) => *conn = Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(lease = name, error = %e, "cannot open the lease connection");
                    return Ok(false);
                }
                Err(_) => {
                    tracing::warn!(lease = name, "timed out opening the lease connection");
                    return Ok(false);
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            return Ok(false);
        };
        let took = tokio::time::timeout(
            LEASE_TIMEOUT,
            sqlx::query_scalar::<_, bool>(
                "SELECT pg_try_advisory_lock(
                          hashtextextended('vitals:' || current_schema() || ':' || $1, 0))",
            )
            .bind(name)
            .fetch_one(c),
        )
        .await;
        match took {
            Ok(Ok(true)) => {
                held.insert(name.to_string());
                Ok(true)
            }
            Ok(Ok(false)) => Ok(false),
            Ok(Err(e)) => {
                tracing::warn!(lease = name, error = %e, "lease check failed; leases released");
                *conn = None;
                held.clear();
                Ok(false)
            }
            Err(_) => {
                tracing::warn!(lease = name, "lease check timed out; leases released");
                *conn = None;
                held.clear();
                Ok(false)
            }
        }
    }

    async fn rate_take(
        &self,
        key: &str,
        rate_per_sec: f64,
        burst: f64,
        cost: f64,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        // A new bucket is full: made so, it has a row to lock whoever asks first.
        sqlx::query(
            "INSERT INTO rate_buckets (key, tokens, at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(burst)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let held: Option<(f64, i64)> =
            sqlx::query_as("SELECT tokens, at FROM rate_buckets WHERE key = $1 FOR UPDATE")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let (tokens, wait) = bucket_take(held, rate_per_sec, burst, cost, now);
        sqlx::query(
            "INSERT INTO rate_buckets (key, tokens, at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
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
        Ok(sqlx::query("DELETE FROM rate_buckets WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        // Closing the lease connection hands every lease to the next hub that asks.
        let conn = {
            let mut leases = self.leases.lock().await;
            leases.held.clear();
            leases.conn.take()
        };
        if let Some(c) = conn
            && let Err(e) = c.close().await
        {
            tracing::debug!(error = %e, "closing the lease connection failed");
        }
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
        let mut tx = self.begin().await?;
        for w in writes {
            match w {
                AppWrite::Insert(r) => {
                    let res = sqlx::query(
                        "INSERT INTO app_records (bucket, id, seq, data, version, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
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
                        "UPDATE app_records SET data = $1, version = $2
                         WHERE bucket = $3 AND id = $4 AND version = $5",
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
                    let n = sqlx::query("DELETE FROM app_records WHERE bucket = $1 AND id = $2")
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
                    sqlx::query("DELETE FROM app_records WHERE bucket = $1")
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
        let rows: Vec<(String, String)> = sqlx::query_as(
            "DELETE FROM app_records WHERE (bucket, id) IN
               (SELECT bucket, id FROM app_records WHERE created_at < $1 LIMIT $2)
             RETURNING bucket, id",
        )
        .bind(before)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn alert_docs(&self, kind: &str) -> Result<Vec<AlertDoc>> {
        let rows = sqlx::query(
            "SELECT id, data, updated_at FROM alert_docs WHERE kind = $1 ORDER BY rowid",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_doc_from).collect()
    }

    async fn alert_doc_put(&self, kind: &str, id: &str, data: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO alert_docs (kind, id, data, updated_at) VALUES ($1, $2, $3, $4)
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
        let n = sqlx::query("DELETE FROM alert_docs WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn alert_states(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT key, data FROM alert_state ORDER BY key")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn alert_apply(&self, w: &AlertWrite) -> Result<()> {
        let mut tx = self.begin().await?;
        for (key, data) in &w.states {
            match data {
                Some(d) => {
                    sqlx::query(
                        "INSERT INTO alert_state (key, data) VALUES ($1, $2)
                         ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                    )
                    .bind(key)
                    .bind(d)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM alert_state WHERE key = $1")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for e in &w.events {
            sqlx::query(
                "INSERT INTO alert_events (id, active, started_at, data) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET active = excluded.active, data = excluded.data",
            )
            .bind(&e.id)
            .bind(i64::from(e.active))
            .bind(e.started_at)
            .bind(&e.data)
            .execute(&mut *tx)
            .await?;
        }
        for n in &w.outbox {
            sqlx::query(
                "INSERT INTO alert_outbox (event_id, channel_id, data, next_at, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
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
             WHERE active = 1 OR NOT $1 ORDER BY started_at DESC, id LIMIT $2",
        )
        .bind(active_only)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from).collect()
    }

    async fn alert_event(&self, id: &str) -> Result<Option<AlertEventRow>> {
        let row =
            sqlx::query("SELECT id, active, started_at, data FROM alert_events WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(event_from).transpose()
    }

    async fn alert_outbox_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxItem>> {
        let rows = sqlx::query(
            "SELECT id, event_id, channel_id, data, attempts, next_at FROM alert_outbox
             WHERE done = 0 AND next_at <= $1 ORDER BY next_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from).collect()
    }

    async fn alert_delivery(&self, d: &DeliveryRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO alert_deliveries
               (at, outbox_id, event_id, channel_id, kind, attempt, ok, status, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(d.at)
        .bind(d.outbox_id)
        .bind(&d.event_id)
        .bind(&d.channel_id)
        .bind(&d.kind)
        .bind(d.attempt)
        .bind(i64::from(d.ok))
        .bind(d.status)
        .bind(&d.error)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = d.outbox_id {
            match d.retry_at {
                Some(t) => {
                    sqlx::query("UPDATE alert_outbox SET attempts = $1, next_at = $2 WHERE id = $3")
                        .bind(d.attempt)
                        .bind(t)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                }
                None => {
                    sqlx::query("UPDATE alert_outbox SET attempts = $1, done = 1 WHERE id = $2")
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
             ORDER BY d.id DESC LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from).collect()
    }

    async fn alert_purge_before(&self, before: i64) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut n = 0;
        for sql in [
            "DELETE FROM alert_events WHERE active = 0 AND started_at < $1",
            "DELETE FROM alert_outbox WHERE done = 1 AND created_at < $1",
            "DELETE FROM alert_deliveries WHERE at < $1",
        ] {
            n += sqlx::query(sql)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}

/// The lowest `start_ts` of a block that may hold samples at or after `from` (a block's
/// samples lie in `[start_ts, start_ts + BLOCK_MS)`): lets the planner skip older days.
fn block_floor(from: i64) -> i64 {
    from.saturating_sub(BLOCK_MS - 1)
}

/// The names of shape `id`, from the cache or the database.
async fn names_of(conn: &mut PgConnection, cache: &ShapeCache, id: i64) -> Result<shape::Names> {
    if let Some(n) = cache.names(id) {
        return Ok(n);
    }
    let key: Option<String> = sqlx::query_scalar("SELECT names FROM shapes WHERE id = $1")
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

/// Hot rows (sorted by time) as a frame of the series `filter` wants.
async fn hot_frame(
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
    device_seq: i64,
    from: i64,
    to: i64,
    limit: usize,
    filter: &SeriesFilter,
) -> Result<Frame> {
    let blocks: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM sample_blocks
          WHERE device_seq = $1 AND last_ts >= $2 AND first_ts <= $3
            AND start_ts >= $4 AND start_ts <= $3
          ORDER BY start_ts",
    )
    .bind(device_seq)
    .bind(from)
    .bind(to)
    .bind(block_floor(from))
    .fetch_all(&mut *conn)
    .await?;
    blocks_frame(device_seq, blocks, from, to, limit, filter)
}

/// Inserts rows `(batch index, device, row)` into the hot table, skipping samples already
/// stored (hot or in a block), and records those below their minute mark as late. New
/// shapes are stored in the same transaction; they are returned as `(id, names)` for the
/// cache to learn once the transaction commits. Returns per batch how many were new.
async fn insert_rows(
    tx: &mut PgConnection,
    cache: &ShapeCache,
    rows: &[(usize, i64, &Row)],
    batches: usize,
) -> Result<(Vec<u64>, Vec<(i64, String)>)> {
    let mut stored = vec![0u64; batches];
    let mut learned: Vec<(i64, String)> = Vec::new();
    if rows.is_empty() {
        return Ok((stored, learned));
    }
    let owner = owners(rows);
    // Shape ids: from the cache, else stored now.
    let mut ids: codec::FastMap<&str, i64> = codec::FastMap::default();
    for (_, _, r) in rows {
        let key: &str = &r.names;
        if ids.contains_key(key) {
            continue;
        }
        let id = match cache.id(key) {
            Some(id) => id,
            None => {
                sqlx::query(
                    "INSERT INTO shapes (names) VALUES ($1) ON CONFLICT (names) DO NOTHING",
                )
                .bind(key)
                .execute(&mut *tx)
                .await?;
                let id: i64 = sqlx::query_scalar("SELECT id FROM shapes WHERE names = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
                learned.push((id, key.to_string()));
                id
            }
        };
        ids.insert(key, id);
    }
    let marks = marks_of(tx, rows.iter().map(|r| r.1)).await?;
    let mut keep = encode_rows(rows, &ids);
    drop_compacted(tx, &marks, &mut keep).await?;
    // In key order (the first of equal keys kept, as in batch order), so two hubs storing
    // the same samples wait on each other's rows in one order, never in a cycle.
    keep.sort_by_key(|r| (r.0, r.1));
    keep.dedup_by_key(|r| (r.0, r.1));
    let mut inserted: Vec<(i64, i64)> = Vec::with_capacity(keep.len());
    for chunk in keep.chunks(INSERT_CHUNK) {
        let seqs: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let ts: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        let shapes: Vec<i64> = chunk.iter().map(|r| r.2).collect();
        let vals: Vec<&[u8]> = chunk.iter().map(|r| r.3.as_slice()).collect();
        let new: Vec<(i64, i64)> = sqlx::query_as(
            "INSERT INTO samples (device_seq, ts, shape, vals)
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::bytea[])
             ON CONFLICT DO NOTHING RETURNING device_seq, ts",
        )
        .bind(&seqs)
        .bind(&ts)
        .bind(&shapes)
        .bind(&vals)
        .fetch_all(&mut *tx)
        .await?;
        for key in new {
            if let Some(i) = owner.get(&key) {
                stored[*i] += 1;
            }
            inserted.push(key);
        }
    }
    mark_late(tx, &marks, &inserted).await?;
    Ok((stored, learned))
}

/// The marks of each of the devices that has any (they cannot move during the commit: it
/// holds the devices' shared locks, and the tier work takes them exclusively).
async fn marks_of(
    conn: &mut PgConnection,
    seqs: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, Marks>> {
    let mut seqs: Vec<i64> = seqs.collect();
    seqs.sort_unstable();
    seqs.dedup();
    let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT device_seq, minute_mark, block_mark FROM rollup_marks
          WHERE device_seq = ANY($1)",
    )
    .bind(&seqs)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, minute, block)| (seq, Marks { minute, block }))
        .collect())
}

/// Drops from `rows` the samples already stored in blocks (replays of compacted data).
async fn drop_compacted(
    conn: &mut PgConnection,
    marks: &HashMap<i64, Marks>,
    rows: &mut Vec<(i64, i64, i64, Vec<u8>)>,
) -> Result<()> {
    let windows = windows_to_check(marks, rows.iter().map(|r| (r.0, r.1)));
    if windows.is_empty() {
        return Ok(());
    }
    let (seqs, starts): (Vec<i64>, Vec<i64>) = windows.into_iter().unzip();
    let blocks: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT b.device_seq, b.start_ts, b.data FROM sample_blocks b
           JOIN UNNEST($1::int8[], $2::int8[]) AS w(seq, start)
             ON b.device_seq = w.seq AND b.start_ts = w.start",
    )
    .bind(&seqs)
    .bind(&starts)
    .fetch_all(conn)
    .await?;
    let mut found = BTreeMap::new();
    for (seq, start, data) in blocks {
        found.insert((seq, start), block_stamps(seq, &data)?);
    }
    drop_in_blocks(rows, &found);
    Ok(())
}

/// Records newly inserted samples that fall below their device's minute mark as late, so
/// the rollup job merges them into the tiers (in the same transaction as the insert).
async fn mark_late(
    conn: &mut PgConnection,
    marks: &HashMap<i64, Marks>,
    inserted: &[(i64, i64)],
) -> Result<()> {
    let late = late_of(marks, inserted);
    if late.is_empty() {
        return Ok(());
    }
    let (seqs, ts): (Vec<i64>, Vec<i64>) = late.into_iter().copied().unzip();
    sqlx::query(
        "INSERT INTO rollup_late (device_seq, ts)
         SELECT * FROM UNNEST($1::int8[], $2::int8[]) ON CONFLICT DO NOTHING",
    )
    .bind(&seqs)
    .bind(&ts)
    .execute(conn)
    .await?;
    Ok(())
}

async fn read_rollups(
    conn: &mut PgConnection,
    device_seq: i64,
    tier: Tier,
    from: i64,
    to: i64,
    filter: &SeriesFilter,
    sketches: bool,
) -> Result<Runs> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT bucket, data FROM rollups
          WHERE tier = $1 AND device_seq = $2 AND bucket >= $3 AND bucket < $4 ORDER BY bucket",
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
              WHERE device_seq = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
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
    conn: &mut PgConnection,
    device_seq: i64,
    hour: i64,
    minutes: &[(i64, rollup::Series)],
) -> Result<()> {
    let Some(first) = minutes.first().map(|m| m.0) else {
        return Ok(());
    };
    let data = rollup::encode_block(minutes).map_err(|e| corrupt(device_seq, "minute block", e))?;
    sqlx::query(
        "INSERT INTO rollup_blocks (device_seq, hour, first_bucket, minutes, data)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_seq, hour, first_bucket)
         DO UPDATE SET minutes = excluded.minutes, data = excluded.data",
    )
    .bind(device_seq)
    .bind(hour)
    .bind(first)
    .bind(minutes.len() as i64)
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_rollup(
    conn: &mut PgConnection,
    device_seq: i64,
    tier: Tier,
    bucket: i64,
    series: &rollup::Series,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rollups (tier, device_seq, bucket, data) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tier, device_seq, bucket) DO UPDATE SET data = excluded.data",
    )
    .bind(tier.width_ms())
    .bind(device_seq)
    .bind(bucket)
    .bind(rollup::encode(series))
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the segments of the device's hour `h` by one block holding them and `extra`,
/// minutes of the same bucket merged. With `always` false, an hour already in one block
/// (and nothing extra) is left as it is.
async fn rewrite_hour(
    conn: &mut PgConnection,
    device_seq: i64,
    h: i64,
    extra: Vec<(i64, rollup::Series)>,
    always: bool,
) -> Result<()> {
    let blocks: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT data FROM rollup_blocks WHERE device_seq = $1 AND hour = $2")
            .bind(device_seq)
            .bind(h)
            .fetch_all(&mut *conn)
            .await?;
    if blocks.len() <= 1 && extra.is_empty() && !always {
        return Ok(());
    }
    let minutes = merge_minutes(device_seq, &blocks, extra)?;
    sqlx::query("DELETE FROM rollup_blocks WHERE device_seq = $1 AND hour = $2")
        .bind(device_seq)
        .bind(h)
        .execute(&mut *conn)
        .await?;
    write_minute_block(conn, device_seq, h, &minutes).await
}

/// Adds minutes (sorted) to the device's hour `h` as a new segment of its block; reads merge
/// a minute found in several segments. Merges the hour's segments into one block when there
/// are many (small segments cost more bytes), or when a segment starts at the same minute.
async fn append_minutes(
    conn: &mut PgConnection,
    device_seq: i64,
    h: i64,
    minutes: Vec<(i64, rollup::Series)>,
) -> Result<()> {
    let Some(first) = minutes.first().map(|m| m.0) else {
        return Ok(());
    };
    let (segments, clash): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE first_bucket = $3) FROM rollup_blocks
          WHERE device_seq = $1 AND hour = $2",
    )
    .bind(device_seq)
    .bind(h)
    .bind(first)
    .fetch_one(&mut *conn)
    .await?;
    if clash > 0 || segments >= MAX_SEGMENTS {
        return rewrite_hour(conn, device_seq, h, minutes, true).await;
    }
    write_minute_block(conn, device_seq, h, &minutes).await
}

/// Merges `delta` into the stored rollup of the bucket (creating it if absent); the hour
/// tier's rows (minutes go through [`append_minutes`]).
async fn merge_into_rollup(
    conn: &mut PgConnection,
    device_seq: i64,
    tier: Tier,
    bucket: i64,
    delta: &rollup::Series,
) -> Result<()> {
    let all = SeriesFilter::all();
    let runs = read_rollups(conn, device_seq, tier, bucket, bucket + 1, &all, true).await?;
    write_rollup(conn, device_seq, tier, bucket, &merged_bucket(runs, delta)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_and_days() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(Part::Samples.partition(19_876), "samples_d19876");
        assert_eq!(Part::Blocks.partition(-3), "sample_blocks_dm3");
        assert_eq!(Part::Blocks.day_of_partition("sample_blocks_dm3"), Some(-3));
        assert_eq!(Part::Samples.day_of_partition("samples_d7"), Some(7));
        assert_eq!(Part::Samples.day_of_partition("sample_blocks_d7"), None);
        assert_eq!(day_span(0), (Some(0), Some(DAY_MS)));
        assert_eq!(day_span(day_of(i64::MAX)).1, None);
        assert_eq!(day_span(day_of(i64::MIN)).0, None);
    }
}
