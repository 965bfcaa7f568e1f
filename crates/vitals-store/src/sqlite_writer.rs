//! The SQLite hot-row writer: one connection of its own on one thread of its own, which runs
//! every group commit of agent samples from start to end (`BEGIN IMMEDIATE` .. `COMMIT`).
//!
//! Through sqlx, each statement of a commit is a round trip to sqlx's worker thread and back
//! (two thread switches), and a commit has several; here a commit is one hand-off each way,
//! its statements are prepared once for the life of the connection, and the connection's page
//! cache stays warm from one commit to the next. Everything else (queries, the tier job,
//! accounts) stays on the sqlx pool; write transactions of both take turns through the
//! store's write mutex, whose guard travels with the job and is dropped when its transaction
//! ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::common::{Marks, block_stamps, in_blocks, late_of, windows_to_check};
use crate::shape::{self, ShapeCache};
use crate::{Result, Row, StoreError};

/// A sample ready for the hot table: which batch of the commit it came from, its device,
/// time, shape names and encoded values.
pub(crate) struct HotSample {
    pub batch: usize,
    pub device_seq: i64,
    pub ts: i64,
    pub names: Arc<str>,
    pub vals: Vec<u8>,
}

impl HotSample {
    pub(crate) fn of(batch: usize, device_seq: i64, row: &Row) -> HotSample {
        HotSample {
            batch,
            device_seq,
            ts: row.ts,
            names: Arc::clone(&row.names),
            vals: shape::encode_values(&row.values),
        }
    }
}

/// One group commit: the samples, how many batches they came from, and the devices to mark
/// seen at `now`.
pub(crate) struct Commit {
    pub samples: Vec<HotSample>,
    pub batches: usize,
    pub seen: Vec<i64>,
    pub now: Option<i64>,
}

/// Version 1 rows to convert: parsed samples by device, and the last `(device, ts)` read.
pub(crate) struct Convert {
    pub samples: Vec<HotSample>,
    pub upto: (i64, i64),
}

/// Shapes stored by a transaction, `(id, names)`, for the cache once it commits.
type Learned = Vec<(i64, String)>;

/// The store's write mutex, held by a job until its transaction ends (on the thread, so a
/// caller that stops waiting does not let another write start meanwhile).
pub(crate) type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

enum Job {
    Commit(Commit, WriteTurn, oneshot::Sender<Result<Vec<u64>>>),
    Convert(Convert, oneshot::Sender<Result<()>>),
}

/// Handle to the writer thread; the thread ends (closing its connection) on [`close`].
///
/// [`close`]: HotWriter::close
pub(crate) struct HotWriter {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl HotWriter {
    /// Opens a second connection to the database file at `path` (already created and
    /// migrated by the pool) and starts the thread.
    pub(crate) fn start(path: &Path, cache: Arc<ShapeCache>) -> Result<HotWriter> {
        let conn = open(path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("vitals-sqlite-writer".into())
            .spawn(move || run(conn, &cache, rx))
            .map_err(|e| {
                StoreError::Config(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok(HotWriter {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether the thread still takes jobs (for health checks).
    pub(crate) fn alive(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    fn send(&self, job: Job) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => Err(StoreError::Database(sqlx::Error::PoolClosed)),
        }
    }

    /// Runs one group commit in the write turn `turn`, which ends with its transaction;
    /// returns per batch how many samples were new.
    pub(crate) async fn commit(&self, commit: Commit, turn: WriteTurn) -> Result<Vec<u64>> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Commit(commit, turn, reply))?;
        rx.await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// Stores converted version 1 rows and deletes them from `samples_v1`, in one
    /// transaction. The caller holds the store's write mutex.
    pub(crate) async fn convert(&self, convert: Convert) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Convert(convert, reply))?;
        rx.await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }

    /// Ends the thread once the jobs already sent are done, and waits until it has closed its
    /// connection.
    pub(crate) async fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        PathBuf::from(path),
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // As the pool's connections: durable commits, and checkpoints left to the store's
    // background task rather than run inside a commit.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 67_108_864)?;
    // Room to spare for the pages commits touch in turn (each device's newest leaf, their
    // parents, `device_seen`, `rollup_marks`) at a thousand devices and more: agents take
    // turns, so a cache just short of that set misses on every page (least recently used is
    // next needed), re-reading a page per sample. 10 MB holds about 2,500 pages. The pool's
    // connections keep their own caches for queries.
    conn.pragma_update(None, "cache_size", -10_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn run(mut conn: Connection, cache: &ShapeCache, rx: mpsc::Receiver<Job>) {
    for job in rx {
        match job {
            Job::Commit(c, turn, reply) => {
                let result = guarded(|| commit(&mut conn, cache, c));
                drop(turn);
                let _ = reply.send(result);
            }
            Job::Convert(c, reply) => {
                let result = guarded(|| convert(&mut conn, cache, c));
                let _ = reply.send(result);
            }
        }
    }
    tracing::debug!("SQLite writer stopped");
}

/// Runs a job; a panic in it (a bug) fails that job only: its transaction rolls back as it
/// unwinds and the thread goes on with the next one.
fn guarded<T>(job: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("the SQLite writer failed on a transaction (rolled back)");
            Err(StoreError::Corrupt(
                "the SQLite writer failed on this transaction; it was rolled back".into(),
            ))
        }
    }
}

fn commit(conn: &mut Connection, cache: &ShapeCache, c: Commit) -> Result<Vec<u64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (stored, learned) = insert(&tx, cache, c.samples, c.batches)?;
    if let Some(now) = c.now {
        let mut seen = tx.prepare_cached(
            "INSERT INTO device_seen (device_seq, last_seen)
             SELECT ?2, ?1 WHERE EXISTS (SELECT 1 FROM devices WHERE seq = ?2)
             ON CONFLICT (device_seq) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)",
        )?;
        for seq in &c.seen {
            seen.execute(params![now, seq])?;
        }
    }
    tx.commit()?;
    for (id, key) in learned {
        cache.learn(id, &key);
    }
    Ok(stored)
}

fn convert(conn: &mut Connection, cache: &ShapeCache, c: Convert) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (_, learned) = insert(&tx, cache, c.samples, 1)?;
    tx.execute(
        "DELETE FROM samples_v1 WHERE device_seq < ?1 OR (device_seq = ?1 AND ts <= ?2)",
        params![c.upto.0, c.upto.1],
    )?;
    tx.commit()?;
    for (id, key) in learned {
        cache.learn(id, &key);
    }
    Ok(())
}

/// Inserts samples into the hot table, skipping those already stored (hot or in a block),
/// and records those below their minute mark as late, so the rollup job merges them into
/// the tiers. New shapes are stored in the same transaction and returned as `(id, names)`
/// for the cache to learn once it commits. Returns per batch how many samples were new; a
/// sample carried by two batches of one commit counts for the first.
fn insert(
    tx: &rusqlite::Transaction<'_>,
    cache: &ShapeCache,
    mut samples: Vec<HotSample>,
    batches: usize,
) -> Result<(Vec<u64>, Learned)> {
    let mut stored = vec![0u64; batches];
    let mut learned: Learned = Vec::new();
    if samples.is_empty() {
        return Ok((stored, learned));
    }
    let mut ids: crate::codec::FastMap<Arc<str>, i64> = crate::codec::FastMap::default();
    for s in &samples {
        if ids.contains_key(&s.names) {
            continue;
        }
        let id = match cache.id(&s.names) {
            Some(id) => id,
            None => {
                tx.prepare_cached(
                    "INSERT INTO shapes (names) VALUES (?1) ON CONFLICT (names) DO NOTHING",
                )?
                .execute(params![&*s.names])?;
                let id: i64 = tx
                    .prepare_cached("SELECT id FROM shapes WHERE names = ?1")?
                    .query_row(params![&*s.names], |r| r.get(0))?;
                learned.push((id, s.names.to_string()));
                id
            }
        };
        ids.insert(Arc::clone(&s.names), id);
    }
    let marks = marks_of(tx, &samples)?;
    drop_compacted(tx, &marks, &mut samples)?;
    let mut inserted: Vec<(i64, i64)> = Vec::with_capacity(samples.len());
    let mut put = tx.prepare_cached(
        "INSERT INTO samples (device_seq, ts, shape, vals) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
    )?;
    // In order: of two samples with the same (device, ts), the first is stored.
    for s in &samples {
        let id = ids.get(&s.names).copied().unwrap_or_default();
        if put.execute(params![s.device_seq, s.ts, id, s.vals])? == 1 {
            if let Some(n) = stored.get_mut(s.batch) {
                *n += 1;
            }
            inserted.push((s.device_seq, s.ts));
        }
    }
    let late = late_of(&marks, &inserted);
    if !late.is_empty() {
        let mut mark = tx.prepare_cached(
            "INSERT INTO rollup_late (device_seq, ts) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?;
        for (seq, ts) in late {
            mark.execute(params![seq, ts])?;
        }
    }
    Ok((stored, learned))
}

/// The marks of each device of the commit that has any (the write lock is held, so they
/// cannot move during it).
fn marks_of(tx: &rusqlite::Transaction<'_>, samples: &[HotSample]) -> Result<HashMap<i64, Marks>> {
    let mut seqs: Vec<i64> = samples.iter().map(|s| s.device_seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut get = tx
        .prepare_cached("SELECT minute_mark, block_mark FROM rollup_marks WHERE device_seq = ?1")?;
    let mut marks = HashMap::with_capacity(seqs.len());
    for seq in seqs {
        let row: Option<(Option<i64>, Option<i64>)> = get
            .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((minute, block)) = row {
            marks.insert(seq, Marks { minute, block });
        }
    }
    Ok(marks)
}

/// Drops the samples already stored in blocks (replays of compacted data).
fn drop_compacted(
    tx: &rusqlite::Transaction<'_>,
    marks: &HashMap<i64, Marks>,
    samples: &mut Vec<HotSample>,
) -> Result<()> {
    let windows = windows_to_check(marks, samples.iter().map(|s| (s.device_seq, s.ts)));
    if windows.is_empty() {
        return Ok(());
    }
    let mut get = tx
        .prepare_cached("SELECT data FROM sample_blocks WHERE device_seq = ?1 AND start_ts = ?2")?;
    let mut found = std::collections::BTreeMap::new();
    for (seq, start) in windows {
        let data: Option<Vec<u8>> = get
            .query_row(params![seq, start], |r| r.get(0))
            .optional()?;
        if let Some(data) = data {
            found.insert((seq, start), block_stamps(seq, &data)?);
        }
    }
    samples.retain(|s| !in_blocks(&found, s.device_seq, s.ts));
    Ok(())
}
