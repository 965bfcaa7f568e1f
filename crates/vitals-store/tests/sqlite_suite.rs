//! The shared store suite against the SQLite backend, one fresh database file per case.

use std::sync::Arc;

use vitals_store::suite::device;
use vitals_store::{SqliteStore, Store};

async fn fresh() -> Option<Arc<dyn Store>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.keep().join("vitals.db");
    let store = SqliteStore::open(&path).await.expect("open sqlite");
    Some(Arc::new(store))
}

vitals_store::store_test_suite!(fresh());

/// A database written by version 1 (samples as JSON rows) is converted to series rows when it
/// is opened: every sample keeps its time and numbers; rows that are not samples are dropped.
#[tokio::test]
async fn version_1_json_samples_are_converted_on_open() {
    use vitals_store::{NewDevice, SeriesFilter};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vitals.db");
    let store = SqliteStore::open(&path).await.expect("open");
    let d = store
        .create_device(NewDevice {
            name: "old".into(),
            host_id: "h".into(),
            token_hash: None,
            simulated: false,
            agent_version: None,
            now: 1,
        })
        .await
        .expect("device");
    store.close().await;
    // What migration 4 leaves of a version 1 database: its JSON rows in `samples_v1`.
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    sqlx::query("CREATE TABLE samples_v1 (device_seq INTEGER, ts INTEGER, data BLOB, PRIMARY KEY (device_seq, ts))")
        .execute(&pool)
        .await
        .expect("table");
    for i in 0..2500i64 {
        let json = serde_json::json!({
            "v": 1, "ts": i * 1000, "hostId": "h",
            "cpu": {"total": (i % 100) as f64 + 0.5, "perCore": [1.5]},
            "mem": {"used": 1e9, "total": 8e9},
            "disk": [{"name": "/", "used": 5.0, "total": 10.0}],
            "net": {"txBps": 1.0, "rxBps": i as f64}, "uptimeSec": 10.0, "procCount": 5.0
        });
        sqlx::query("INSERT INTO samples_v1 VALUES (?, ?, ?)")
            .bind(d.seq)
            .bind(i * 1000)
            .bind(serde_json::to_vec(&json).expect("json"))
            .execute(&pool)
            .await
            .expect("row");
    }
    sqlx::query("INSERT INTO samples_v1 VALUES (?, 9999999, 'not json')")
        .bind(d.seq)
        .execute(&pool)
        .await
        .expect("row");
    pool.close().await;

    let store = SqliteStore::open(&path).await.expect("reopen converts");
    assert_eq!(store.count_samples(d.seq).await.expect("count"), 2500);
    let f = store
        .samples(d.seq, 0, i64::MAX, &SeriesFilter::all())
        .await
        .expect("read");
    assert_eq!(f.ts[2499], 2_499_000);
    assert_eq!(f.series["cpu"][42], 42.5);
    assert_eq!(f.series["net.rx_bps"][2499], 2499.0);
    assert_eq!(f.series["disk[/].pct"][0], 50.0);
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    let left: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE name = 'samples_v1'")
            .fetch_optional(&pool)
            .await
            .expect("query");
    assert!(left.is_none(), "the old table is dropped");
}

/// Group commits run on a second connection to the file, which an in-memory database cannot
/// have: such a URL is refused with a message that says to give a file, and a file URL opens.
#[tokio::test]
async fn an_in_memory_url_is_refused_and_a_file_url_opens() {
    for url in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
        match SqliteStore::open_url(url).await {
            Err(vitals_store::StoreError::Config(m)) => {
                assert!(m.contains("in-memory") && m.contains("give a file"), "{m}")
            }
            Err(e) => panic!("{url}: unexpected error {e}"),
            Ok(_) => panic!("{url}: an in-memory database was accepted"),
        }
    }
    match SqliteStore::open(std::path::Path::new(":memory:")).await {
        Err(vitals_store::StoreError::Config(m)) => assert!(m.contains("give a file"), "{m}"),
        Err(e) => panic!(":memory: path: unexpected error {e}"),
        Ok(_) => panic!(":memory: path: an in-memory database was accepted"),
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("v.db").display());
    let store = SqliteStore::open_url(&url).await.expect("a file URL opens");
    assert_eq!(store.count_users().await.expect("count"), 0);
    store.close().await;
}

/// The tier job's steps group devices into one transaction: one call rolls up, and then
/// compacts, every device of a small fleet, each exactly as a call of its own would.
#[tokio::test]
async fn tier_steps_group_devices_into_one_transaction() {
    use vitals_store::suite::metric_row;
    use vitals_store::{SampleBatch, SeriesFilter, Tier};
    const M: i64 = 60_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("vitals.db"))
        .await
        .expect("open");
    let t0 = 100 * M;
    let mut seqs = Vec::new();
    let mut batches = Vec::new();
    for (k, name) in ["a", "b", "c"].iter().enumerate() {
        let d = store.create_device(device(name)).await.expect("device");
        seqs.push(d.seq);
        // 12 minutes a device, at CPU levels of its own.
        let samples = (0..12 * 60)
            .map(|i| metric_row(t0 + i * 1000, (k * 30) as f64 + (i % 7) as f64))
            .collect();
        batches.push(SampleBatch {
            device_seq: d.seq,
            samples,
            now: t0,
        });
    }
    store.insert_batches(&batches).await.expect("insert");
    let to = t0 + 12 * M;
    let steps = store
        .roll_up_devices(&seqs, Tier::Minute, to, 3_600_000)
        .await
        .expect("roll up");
    assert_eq!(steps.len(), 3, "one call, every device: {steps:?}");
    for (k, (seq, step)) in seqs.iter().zip(&steps).enumerate() {
        assert_eq!((step.buckets, step.done), (12, true), "device {k}");
        let runs = store
            .rollups(*seq, Tier::Minute, t0, to, &SeriesFilter::all(), false)
            .await
            .expect("rollups");
        let cpu = &runs["cpu"];
        assert_eq!(cpu.len(), 12, "device {k}");
        // Each device's minutes are its own: min and max of its CPU levels, 60 samples each.
        let base = (k * 30) as f64;
        assert!(
            cpu.iter()
                .all(|(_, r)| r.min == base && r.max == base + 6.0 && r.count == 60),
            "device {k}: {cpu:?}"
        );
    }
    let compacted = store.compact_devices(&seqs, to).await.expect("compact");
    assert_eq!(compacted.len(), 3, "{compacted:?}");
    assert!(compacted.iter().all(|c| c.samples == 600), "{compacted:?}");
    for seq in &seqs {
        assert_eq!(store.count_samples(*seq).await.expect("count"), 720);
    }
    store.close().await;
}

/// Migration 6 moves each device's `last_seen` out of `devices` into `device_seen`: a
/// database of version 5 keeps every device's value, and new commits move it forward.
#[tokio::test]
async fn last_seen_survives_its_move_to_device_seen() {
    use vitals_store::{SampleBatch, suite::metric_row};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vitals.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    let mut v5 = sqlx::migrate!("./migrations/sqlite");
    v5.migrations = v5
        .migrations
        .iter()
        .filter(|m| m.version <= 5)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    v5.run(&pool).await.expect("migrate to version 5");
    sqlx::query(
        "INSERT INTO devices (seq, id, name, host_id, created_at, last_seen)
         VALUES (1, 'id-a', 'a', 'a', 1, 123456), (2, 'id-b', 'b', 'b', 1, NULL)",
    )
    .execute(&pool)
    .await
    .expect("devices");
    pool.close().await;

    let store = SqliteStore::open(&path).await.expect("open migrates");
    let a = store.device("id-a").await.expect("a").expect("a exists");
    let b = store.device("id-b").await.expect("b").expect("b exists");
    assert_eq!((a.last_seen, b.last_seen), (Some(123_456), None));
    store
        .insert_batches(&[SampleBatch {
            device_seq: b.seq,
            samples: vec![metric_row(200_000, 5.0)],
            now: 200_500,
        }])
        .await
        .expect("insert");
    let list = store.list_devices().await.expect("list");
    let seen: Vec<Option<i64>> = list.iter().map(|d| d.device.last_seen).collect();
    assert_eq!(seen, vec![Some(123_456), Some(200_500)]);
    // A deleted device leaves no `last_seen` behind for a device that reuses its number.
    assert!(store.delete_device("id-b").await.expect("delete"));
    let c = store.create_device(device("c")).await.expect("device");
    assert_eq!(c.last_seen, None);
    store.close().await;
}
