//! The shared store suite against the PostgreSQL backend, one fresh schema per case, and what
//! only a shared database has: leases passing between hubs, day partitions of raw samples and
//! their retention, refusing a newer schema, and group commits of two hubs at once.
//! Runs when `VITALS_TEST_DATABASE_URL` names a database (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); skipped otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use vitals_store::suite::fresh_pg_schema;
use vitals_store::{NewDevice, PgStore, Row, SampleBatch, Store, StoreError, tiers};

const M: i64 = 60_000;
const H: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn url() -> Option<String> {
    match std::env::var("VITALS_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipping: VITALS_TEST_DATABASE_URL is not set (PostgreSQL store suite)");
            None
        }
    }
}

async fn fresh() -> Option<Arc<dyn Store>> {
    let url = url()?;
    let (_, opts) = fresh_pg_schema(&url).await;
    Some(Arc::new(
        PgStore::connect_with(opts).await.expect("connect"),
    ))
}

vitals_store::store_test_suite!(fresh());

/// A schema of its own for one test, dropped at its end.
struct Schema {
    name: String,
    opts: PgConnectOptions,
}

impl Schema {
    async fn new() -> Option<Schema> {
        let (name, opts) = fresh_pg_schema(&url()?).await;
        Some(Schema { name, opts })
    }

    async fn store(&self) -> PgStore {
        PgStore::connect_with(self.opts.clone())
            .await
            .expect("connect")
    }

    /// A plain connection, in the schema.
    async fn sql(&self) -> PgConnection {
        self.opts.connect().await.expect("connect")
    }

    /// Child tables of `parent`, by name.
    async fn partitions(&self, parent: &str) -> Vec<String> {
        let mut conn = self.sql().await;
        let mut names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1::regclass",
        )
        .bind(parent)
        .fetch_all(&mut conn)
        .await
        .expect("partitions");
        names.sort();
        names
    }

    async fn drop(self) {
        let mut conn = self.sql().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&mut conn)
        .await
        .expect("drop schema");
    }
}

fn device(name: &str) -> NewDevice {
    NewDevice {
        name: name.into(),
        host_id: format!("host-{name}"),
        token_hash: None,
        simulated: false,
        agent_version: None,
        now: 1,
    }
}

/// A sample with one series.
fn tiny(ts: i64) -> Row {
    Row {
        ts,
        names: Arc::from("t"),
        values: vec![(ts / 1000) as f64],
    }
}

fn batch(seq: i64, stamps: impl Iterator<Item = i64>) -> SampleBatch {
    SampleBatch {
        device_seq: seq,
        samples: stamps.map(tiny).collect(),
        now: 1,
    }
}

/// Waits until `store` takes the lease `name`, for at most `within`.
async fn takes_within(store: &PgStore, name: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if store.try_lease(name).await.expect("lease") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_lease_passes_to_another_hub_when_its_holder_closes_or_dies() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let a = schema.store().await;
    let b = schema.store().await;
    assert!(a.try_lease("x").await.expect("lease"));
    assert!(!b.try_lease("x").await.expect("lease"), "a holds it");
    assert!(a.try_lease("x").await.expect("lease"), "a keeps it");
    // A hub that shuts down hands its leases over.
    a.close().await;
    assert!(takes_within(&b, "x", Duration::from_secs(3)).await);

    // A hub killed with `kill -9` loses its connection: its lease goes to the next asker.
    let c = schema.store().await;
    assert!(b.try_lease("y").await.expect("lease"));
    assert!(!c.try_lease("y").await.expect("lease"));
    let mut admin = schema.sql().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
          WHERE locktype = 'advisory' AND objsubid = 1 AND granted
            AND (classid::int8 << 32 | objid::int8)
                = hashtextextended('vitals:' || current_schema() || ':y', 0)",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    assert_eq!(killed, vec![true], "the lease connection of b");
    assert!(takes_within(&c, "y", Duration::from_secs(3)).await);
    assert!(
        !b.try_lease("y").await.expect("lease"),
        "b notices its connection is gone"
    );
    assert!(!b.try_lease("y").await.expect("lease"), "and c holds it");
    b.close().await;
    c.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn retention_drops_whole_days_of_raw_samples() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let s = schema.store().await;
    let dev = s.create_device(device("a")).await.expect("device");
    // One sample a minute over three days.
    let stored = s
        .insert_batches(&[batch(dev.seq, (0..3 * 1440).map(|i| i * M))])
        .await
        .expect("insert");
    assert_eq!(stored, vec![3 * 1440]);
    assert_eq!(
        schema.partitions("samples").await,
        ["samples_d0", "samples_d1", "samples_d2"]
    );
    // A second hub that knows the days as they are now.
    let other = schema.store().await;
    // Minutes, hours, and every sample compacted into blocks.
    let r = tiers::roll_up_all(&s, 3 * DAY + 20_000).await.expect("job");
    assert_eq!(r.compacted, 3 * 1440);
    assert_eq!(
        schema.partitions("sample_blocks").await,
        ["sample_blocks_d0", "sample_blocks_d1", "sample_blocks_d2"]
    );
    // Days 0 and 1 lie wholly below the line: dropped, every sample counted (more than the
    // limit: a partition goes whole).
    assert_eq!(
        s.delete_samples_before(2 * DAY, 100).await.expect("delete"),
        2 * 1440
    );
    assert_eq!(schema.partitions("samples").await, ["samples_d2"]);
    assert_eq!(
        schema.partitions("sample_blocks").await,
        ["sample_blocks_d2"]
    );
    assert_eq!(s.count_samples(dev.seq).await.expect("count"), 1440);
    let bounds = s.tier_bounds(dev.seq).await.expect("bounds");
    assert_eq!(bounds.raw_lo, Some(2 * DAY));
    assert_eq!(bounds.raw_floor, Some(2 * DAY));
    // Part of a day: rows (here blocks of ten samples) in chunks, as in SQLite.
    assert_eq!(
        s.delete_samples_before(2 * DAY + H, 10)
            .await
            .expect("delete"),
        10
    );
    assert_eq!(s.count_samples(dev.seq).await.expect("count"), 1430);

    // A late sample of a dropped day, stored through the hub that still knew the day: the
    // partition is made again, and kept until the sample is merged into the tiers.
    assert_eq!(
        other
            .insert_batches(&[batch(dev.seq, [5 * M].into_iter())])
            .await
            .expect("late"),
        vec![1]
    );
    assert_eq!(
        schema.partitions("samples").await,
        ["samples_d0", "samples_d2"]
    );
    assert_eq!(
        s.delete_samples_before(2 * DAY, 100).await.expect("delete"),
        0
    );
    assert_eq!(
        schema.partitions("samples").await,
        ["samples_d0", "samples_d2"]
    );
    let r = tiers::roll_up_all(&s, 3 * DAY + 20_000).await.expect("job");
    assert_eq!((r.late_samples, r.compacted), (1, 1));
    assert_eq!(
        s.delete_samples_before(2 * DAY, 100).await.expect("delete"),
        1
    );
    assert_eq!(schema.partitions("samples").await, ["samples_d2"]);
    assert_eq!(s.count_samples(dev.seq).await.expect("count"), 1430);
    s.close().await;
    other.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    schema.store().await.close().await;
    let mut conn = schema.sql().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99999, 'from a newer hub', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("fake migration");
    conn.close().await.expect("close");
    match PgStore::connect_with(schema.opts.clone()).await {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains("version 99999"), "{msg}");
            assert!(msg.contains("only up to 1"), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_storing_the_same_batch_store_each_sample_once() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let a = schema.store().await;
    let b = schema.store().await;
    let dev = a.create_device(device("a")).await.expect("device");
    let mut total = 0;
    // Each round spans two days neither hub has made a partition for yet.
    for round in 0..4i64 {
        let start = (10 + 2 * round) * DAY + DAY - 500 * 1000;
        let one = batch(dev.seq, (0..1000).map(|i| start + i * 1000));
        let (ra, rb) = (a.clone(), b.clone());
        let (x, y) = (one.clone(), one.clone());
        let ta = tokio::spawn(async move { ra.insert_batches(&[x]).await });
        let tb = tokio::spawn(async move { rb.insert_batches(&[y]).await });
        let na = ta.await.expect("join").expect("insert a");
        let nb = tb.await.expect("join").expect("insert b");
        assert_eq!(na[0] + nb[0], 1000, "round {round}: {na:?} + {nb:?}");
        total += 1000;
        assert_eq!(a.count_samples(dev.seq).await.expect("count"), total);
    }
    a.close().await;
    b.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_starting_at_once_both_open_the_schema() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    // The migrator takes an advisory lock: the second waits and then finds nothing to do.
    let (x, y) = (schema.opts.clone(), schema.opts.clone());
    let ta = tokio::spawn(async move { PgStore::connect_with(x).await });
    let tb = tokio::spawn(async move { PgStore::connect_with(y).await });
    let a = ta.await.expect("join").expect("first hub");
    let b = tb.await.expect("join").expect("second hub");
    let mut conn = schema.sql().await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("migrations");
    assert_eq!(applied, 1);
    assert_eq!(a.count_users().await.expect("users"), 0);
    a.close().await;
    b.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_ingesting_while_the_tier_job_runs_count_each_sample_once() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let a = schema.store().await;
    let b = schema.store().await;
    let dev = a.create_device(device("a")).await.expect("device");
    // Two hours at 1 Hz in batches of 100, sent by both hubs (b backwards), while a third
    // runs the rollup job (with compaction) over and over: many samples arrive late, and
    // many replays meet samples already moved into blocks. (Retention runs afterwards: a
    // replay of samples retention already dropped is stored again, by design.)
    const N: i64 = 7200;
    let batches: Vec<SampleBatch> = (0..N / 100)
        .map(|k| batch(dev.seq, (k * 100..k * 100 + 100).map(|i| i * 1000)))
        .collect();
    let ingest = |store: PgStore, order: Vec<SampleBatch>| {
        tokio::spawn(async move {
            let mut n = 0;
            for one in order {
                n += store.insert_batches(&[one]).await.expect("insert")[0];
            }
            n
        })
    };
    let ta = ingest(a.clone(), batches.clone());
    let tb = ingest(b.clone(), batches.iter().rev().cloned().collect());
    let job = schema.store().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tj = {
        let done = Arc::clone(&done);
        let job = job.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                tiers::roll_up_all(&job, 3 * H).await.expect("job");
            }
        })
    };
    let stored = ta.await.expect("join") + tb.await.expect("join");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    tj.await.expect("join");
    let mut deleted = 0;
    assert_eq!(stored, N as u64, "each sample stored once");
    tiers::roll_up_all(&job, 3 * H).await.expect("job");
    loop {
        let n = job.delete_samples_before(H, 500).await.expect("retention");
        if n == 0 {
            break;
        }
        deleted += n;
    }
    assert_eq!(
        job.count_samples(dev.seq).await.expect("count") + deleted as i64,
        N,
        "raw samples: kept and deleted"
    );
    let runs = job
        .rollups(
            dev.seq,
            vitals_store::Tier::Minute,
            0,
            i64::MAX,
            &vitals_store::SeriesFilter::all(),
            false,
        )
        .await
        .expect("minutes");
    let counted: u64 = runs["t"].iter().map(|(_, r)| r.count).sum();
    assert_eq!(counted, N as u64, "the minute tier counts each sample once");
    for s in [a, b, job] {
        s.close().await;
    }
    schema.drop().await;
}
