//! The store test suite, written once and run against every backend (quickwit's
//! `metastore_test_suite!`). A backend's tests call [`store_test_suite!`] with an async
//! expression that builds a fresh, empty store.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::*;

/// Generates one `#[tokio::test]` per suite case. `$make` is an async block yielding
/// `Option<Arc<dyn Store>>` (`None` skips, for backends whose server is not configured).
#[macro_export]
macro_rules! store_test_suite {
    ($make:expr) => {
        $crate::store_test_suite!(@cases $make;
            users_and_first_admin, sessions_expire_and_cascade, api_tokens,
            pairing_lifecycle, pairing_expiry_and_deny, devices_and_tokens,
            samples_idempotent_group_commit, sample_ranges_and_retention,
            tiers_roll_up_merge_late_and_retain, compaction_is_invisible_to_reads,
            state_and_settings, meta_compare_and_delete, leases_and_rate_buckets, app_store_transactions,
            alert_docs_state_and_outbox);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(store) = $make.await else { return };
                $crate::suite::$case(store).await;
            }
        )*
    };
}

/// A new, empty schema in the PostgreSQL database at `url` (named `t_<uuid>`), and options
/// that connect with it as the `search_path`, so a store's tables and partitions all live in
/// it: one per test, so tests can run at once on one database. The caller may drop it
/// (`DROP SCHEMA ... CASCADE`) when done.
pub async fn fresh_pg_schema(url: &str) -> (String, sqlx::postgres::PgConnectOptions) {
    use sqlx::Connection as _;
    use std::str::FromStr as _;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create the test schema");
    conn.close().await.expect("close");
    let opts = sqlx::postgres::PgConnectOptions::from_str(url)
        .expect("database URL")
        .options([("search_path", schema.as_str())]);
    (schema, opts)
}

fn user(name: &str, role: Role) -> NewUser {
    NewUser {
        username: name.into(),
        role,
        password_hash: "$argon2id$fake".into(),
        now: 1,
    }
}

pub async fn users_and_first_admin(s: Arc<dyn Store>) {
    assert_eq!(s.count_users().await.expect("count"), 0);
    let first = s
        .create_first_user(user("root", Role::Admin))
        .await
        .expect("first");
    assert!(first.is_some());
    assert!(
        s.create_first_user(user("other", Role::Admin))
            .await
            .expect("second")
            .is_none(),
        "only one first admin"
    );
    let v = s
        .create_user(user("Viewer", Role::Viewer))
        .await
        .expect("viewer");
    assert!(matches!(
        s.create_user(user("viewer", Role::Viewer)).await,
        Err(StoreError::Conflict(_))
    ));
    let (found, hash) = s.user_by_name("VIEWER").await.expect("q").expect("found");
    assert_eq!(found.id, v.id);
    assert_eq!(hash, "$argon2id$fake");
    assert_eq!(s.list_users().await.expect("list").len(), 2);
    assert!(s.delete_user(&v.id).await.expect("delete"));
    assert!(s.user_by_id(&v.id).await.expect("q").is_none());
}

pub async fn sessions_expire_and_cascade(s: Arc<dyn Store>) {
    let u = s.create_user(user("a", Role::Admin)).await.expect("user");
    s.create_session(NewSession {
        token_hash: vec![1; 32],
        user_id: u.id.clone(),
        csrf: "c".into(),
        now: 0,
        expires_at: 100,
    })
    .await
    .expect("session");
    let (sess, su) = s.session(&[1; 32], 50).await.expect("q").expect("live");
    assert_eq!(sess.csrf, "c");
    assert_eq!(su.id, u.id);
    assert!(
        s.session(&[1; 32], 100).await.expect("q").is_none(),
        "expired"
    );
    assert_eq!(s.purge_sessions(101).await.expect("purge"), 1);
    s.create_session(NewSession {
        token_hash: vec![2; 32],
        user_id: u.id.clone(),
        csrf: "c".into(),
        now: 0,
        expires_at: 100,
    })
    .await
    .expect("session");
    s.delete_user(&u.id).await.expect("delete");
    assert!(
        s.session(&[2; 32], 1).await.expect("q").is_none(),
        "cascade"
    );
}

pub async fn api_tokens(s: Arc<dyn Store>) {
    let t = s
        .create_api_token(NewApiToken {
            name: "ci".into(),
            role: Role::Viewer,
            token_hash: vec![9; 32],
            created_by: None,
            now: 5,
        })
        .await
        .expect("token");
    let found = s
        .api_token_by_hash(&[9; 32])
        .await
        .expect("q")
        .expect("found");
    assert_eq!(found, t);
    assert_eq!(s.list_api_tokens().await.expect("list").len(), 1);
    assert!(s.delete_api_token(&t.id).await.expect("delete"));
    assert!(s.api_token_by_hash(&[9; 32]).await.expect("q").is_none());
}

fn code(c: &str, expires_at: i64) -> NewDeviceCode {
    NewDeviceCode {
        code: c.into(),
        host_id: "host-1".into(),
        hostname: Some("box".into()),
        agent_version: Some("0.1.0".into()),
        source_ip: Some("127.0.0.1".into()),
        now: 0,
        expires_at,
    }
}

pub async fn pairing_lifecycle(s: Arc<dyn Store>) {
    s.create_device_code(code("ABCDEFGH", 1000))
        .await
        .expect("code");
    assert!(matches!(
        s.create_device_code(code("ABCDEFGH", 1000)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.claim_device_token("ABCDEFGH", &[1; 32], 10)
            .await
            .expect("claim"),
        ClaimOutcome::Pending
    );
    let ApproveOutcome::Approved(dev) = s
        .approve_device_code("ABCDEFGH", "web-1", 20)
        .await
        .expect("approve")
    else {
        panic!("not approved")
    };
    assert_eq!(dev.host_id, "host-1");
    assert_eq!(
        s.approve_device_code("ABCDEFGH", "again", 21)
            .await
            .expect("approve"),
        ApproveOutcome::AlreadyApproved
    );
    assert_eq!(
        s.claim_device_token("ABCDEFGH", &[7; 32], 30)
            .await
            .expect("claim"),
        ClaimOutcome::Claimed {
            device_id: dev.id.clone()
        }
    );
    assert_eq!(
        s.claim_device_token("ABCDEFGH", &[8; 32], 31)
            .await
            .expect("claim"),
        ClaimOutcome::NotFound,
        "the token is handed out once"
    );
    let by_token = s
        .device_by_token(&[7; 32])
        .await
        .expect("q")
        .expect("found");
    assert_eq!(by_token.id, dev.id);
    assert_eq!(
        s.approve_device_code("ZZZZZZZZ", "x", 1)
            .await
            .expect("approve"),
        ApproveOutcome::NotFound
    );
}

pub async fn pairing_expiry_and_deny(s: Arc<dyn Store>) {
    s.create_device_code(code("EXPIRED2", 100))
        .await
        .expect("code");
    assert_eq!(
        s.claim_device_token("EXPIRED2", &[1; 32], 100)
            .await
            .expect("claim"),
        ClaimOutcome::Expired
    );
    assert_eq!(
        s.approve_device_code("EXPIRED2", "x", 100)
            .await
            .expect("approve"),
        ApproveOutcome::Expired
    );
    assert_eq!(s.purge_device_codes(101).await.expect("purge"), 1);
    assert_eq!(
        s.claim_device_token("EXPIRED2", &[1; 32], 102)
            .await
            .expect("claim"),
        ClaimOutcome::NotFound
    );
    s.create_device_code(code("DENYME22", 1000))
        .await
        .expect("code");
    assert!(s.delete_device_code("DENYME22").await.expect("deny"));
    assert!(s.device_code("DENYME22").await.expect("q").is_none());
}

/// A new device named `name` (host `host-NAME`, a token hash of its own).
pub fn device(name: &str) -> NewDevice {
    NewDevice {
        name: name.into(),
        host_id: format!("host-{name}"),
        token_hash: Some(name.as_bytes().to_vec()),
        simulated: false,
        agent_version: None,
        now: 1,
    }
}

pub async fn devices_and_tokens(s: Arc<dyn Store>) {
    let d = s.create_device(device("b")).await.expect("device");
    let d2 = s.create_device(device("a")).await.expect("device");
    assert_ne!(d.seq, d2.seq);
    assert!(s.rename_device(&d.id, "renamed").await.expect("rename"));
    assert_eq!(
        s.device(&d.id).await.expect("q").expect("found").name,
        "renamed"
    );
    assert!(s.set_device_token(&d.id, b"new").await.expect("rotate"));
    assert!(
        s.device_by_token(b"b").await.expect("q").is_none(),
        "old token revoked"
    );
    assert!(s.device_by_token(b"new").await.expect("q").is_some());
    s.set_device_agent_version(&d.id, "9.9")
        .await
        .expect("version");
    let list = s.list_devices().await.expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].device.name, "a", "sorted by name");
    assert!(list[0].latest.is_none());
    assert!(s.delete_device(&d.id).await.expect("delete"));
    assert!(!s.delete_device(&d.id).await.expect("delete twice"));
    assert!(s.device(&d.id).await.expect("q").is_none());
}

/// A sample with one series, `t` = `ts / 1000`.
fn tiny(ts: i64) -> Row {
    Row {
        ts,
        names: Arc::from("t"),
        values: vec![(ts / 1000) as f64],
    }
}

pub async fn samples_idempotent_group_commit(s: Arc<dyn Store>) {
    let a = s.create_device(device("a")).await.expect("device");
    let b = s.create_device(device("b")).await.expect("device");
    let batch = |seq, from: i64, n: i64| SampleBatch {
        device_seq: seq,
        samples: (from..from + n).map(|t| tiny(t * 1000)).collect(),
        now: from * 1000 + n * 1000,
    };
    let stored = s
        .insert_batches(&[batch(a.seq, 0, 10), batch(b.seq, 0, 5)])
        .await
        .expect("insert");
    assert_eq!(stored, vec![10, 5]);
    // A replay overlapping old and new samples stores only the new ones.
    let stored = s
        .insert_batches(&[batch(a.seq, 5, 10)])
        .await
        .expect("replay");
    assert_eq!(stored, vec![5]);
    assert_eq!(s.count_samples(a.seq).await.expect("count"), 15);
    assert_eq!(s.count_samples(b.seq).await.expect("count"), 5);
    let list = s.list_devices().await.expect("list");
    let la = list.iter().find(|d| d.device.id == a.id).expect("a");
    let latest = la.latest.as_ref().expect("latest");
    assert_eq!(latest.ts, vec![14_000]);
    assert_eq!(latest.series["t"], vec![14.0]);
    assert_eq!(la.device.last_seen, Some(15_000));
    // Samples of another shape in the same device and commit: each keeps its own series.
    let odd = Row {
        ts: 20_000,
        names: Arc::from("t\ncpu.core[0]"),
        values: vec![20.0, 55.5],
    };
    let stored = s
        .insert_batches(&[SampleBatch {
            device_seq: a.seq,
            samples: vec![odd, tiny(21_000)],
            now: 22_000,
        }])
        .await
        .expect("insert");
    assert_eq!(stored, vec![2]);
    let f = s
        .samples(a.seq, 19_000, 21_000, &SeriesFilter::all())
        .await
        .expect("read");
    assert_eq!(f.ts, vec![20_000, 21_000]);
    assert_eq!(f.series["t"], vec![20.0, 21.0]);
    assert_eq!(f.series["cpu.core[0]"][0], 55.5);
    assert!(f.series["cpu.core[0]"][1].is_nan());
    // Deleting a device deletes its samples.
    s.delete_device(&b.id).await.expect("delete");
    assert_eq!(s.count_samples(b.seq).await.expect("count"), 0);
}

pub async fn sample_ranges_and_retention(s: Arc<dyn Store>) {
    let a = s.create_device(device("a")).await.expect("device");
    let samples = (0..100).map(|t| tiny(t * 1000)).collect();
    s.insert_batches(&[SampleBatch {
        device_seq: a.seq,
        samples,
        now: 0,
    }])
    .await
    .expect("insert");
    let r = s
        .samples(a.seq, 10_000, 19_000, &SeriesFilter::all())
        .await
        .expect("range");
    assert_eq!(
        s.count_samples_between(a.seq, 10_000, 19_000)
            .await
            .expect("count"),
        10
    );
    assert_eq!(r.len(), 10);
    assert_eq!(r.ts[0], 10_000);
    assert_eq!(r.ts[9], 19_000);
    assert_eq!(r.series["t"][9], 19.0);
    // Pages continue where the last one ended and stop at `to`.
    let p1 = s.samples_page(a.seq, 0, 25_000, 20).await.expect("page");
    assert_eq!(p1.ts, (0..20).map(|t| t * 1000).collect::<Vec<_>>());
    let p2 = s
        .samples_page(a.seq, 19_001, 25_000, 20)
        .await
        .expect("page");
    assert_eq!(p2.ts, (20..=25).map(|t| t * 1000).collect::<Vec<_>>());
    assert!(
        s.samples_page(a.seq, 99_001, i64::MAX, 20)
            .await
            .expect("page")
            .is_empty()
    );
    // Nothing is dropped before the minute tier holds it.
    assert_eq!(
        s.delete_samples_before(50_000, 100).await.expect("delete"),
        0
    );
    let step = s
        .roll_up(a.seq, Tier::Minute, 60_000, 3_600_000)
        .await
        .expect("roll up");
    assert!(step.done);
    let mut deleted = 0;
    loop {
        let n = s.delete_samples_before(50_000, 7).await.expect("delete");
        if n == 0 {
            break;
        }
        assert!(n <= 7, "chunked");
        deleted += n;
    }
    assert_eq!(deleted, 50);
    assert_eq!(s.count_samples(a.seq).await.expect("count"), 50);
    // Only below the minute mark (60 s), whatever the cut-off.
    assert_eq!(
        s.delete_samples_before(i64::MAX, 1000)
            .await
            .expect("delete"),
        10
    );
    assert_eq!(s.count_samples(a.seq).await.expect("count"), 40);
}

/// A `MetricSample` (flattened) whose CPU is `cpu` and memory 1..=4 GB.
pub fn metric_row(ts: i64, cpu: f64) -> Row {
    let s: vitals_proto::MetricSample = serde_json::from_value(serde_json::json!({
        "v": 1, "ts": ts, "hostId": "h",
        "cpu": {"total": cpu, "perCore": [cpu, 100.0 - cpu]},
        "mem": {"used": 1e9 + (ts % 3) as f64 * 1e9, "total": 8e9},
        "disk": [], "net": {"txBps": 1.0, "rxBps": 2.0},
        "uptimeSec": 10.0, "procCount": 5.0
    }))
    .expect("sample");
    Row::of(&s)
}

/// Every series of the device's raw samples in `[from, to)`, folded into one rollup each.
async fn raw_fold(s: &Arc<dyn Store>, seq: i64, from: i64, to: i64) -> rollup::Series {
    let raw = s
        .samples(seq, from, to - 1, &SeriesFilter::all())
        .await
        .expect("raw");
    let mut all = rollup::Series::new();
    for (_, b) in rollup::fold_frame(&raw, 1 << 50) {
        rollup::merge_series(&mut all, &b);
    }
    all
}

async fn tier_fold(s: &Arc<dyn Store>, seq: i64, tier: Tier, from: i64, to: i64) -> rollup::Series {
    let mut all = rollup::Series::new();
    let runs = s
        .rollups(seq, tier, from, to, &SeriesFilter::all(), true)
        .await
        .expect("rollups");
    for (_, b) in rollup::runs_to_buckets(runs) {
        rollup::merge_series(&mut all, &b);
    }
    all
}

fn same(a: &rollup::Series, b: &rollup::Series) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, x) in a {
        let y = &b[k];
        assert_eq!(
            (x.count, x.min, x.max, x.last, x.last_ts),
            (y.count, y.min, y.max, y.last, y.last_ts),
            "{k}"
        );
        assert!(
            (x.sum - y.sum).abs() <= 1e-6 * x.sum.abs().max(1.0),
            "{k} sum"
        );
        assert_eq!(x.sketch, y.sketch, "{k} sketch");
    }
}

pub async fn tiers_roll_up_merge_late_and_retain(s: Arc<dyn Store>) {
    const H: i64 = 3_600_000;
    let a = s.create_device(device("a")).await.expect("device");
    let b = s.create_device(device("b")).await.expect("device");
    // Three hours at 1 Hz, minus a gap of 10 minutes, for `a`; nothing yet for `b`.
    let t0 = 10 * H;
    let samples: Vec<Row> = (0..3 * 3600)
        .map(|i| t0 + i * 1000)
        .filter(|ts| !(t0 + H..t0 + H + 600_000).contains(ts))
        .map(|ts| metric_row(ts, (ts / 1000 % 97) as f64))
        .collect();
    s.insert_batches(&[SampleBatch {
        device_seq: a.seq,
        samples,
        now: 1,
    }])
    .await
    .expect("insert");
    let now = t0 + 3 * H + 30_000;
    let r = tiers::roll_up_all(&*s, now).await.expect("job");
    assert_eq!(r.minute_buckets, 170, "3 hours of minutes less the gap");
    assert_eq!(r.hour_buckets, 3);
    assert_eq!(r.late_samples, 0);
    // A second pass finds nothing new.
    assert_eq!(
        tiers::roll_up_all(&*s, now).await.expect("job"),
        tiers::JobReport::default()
    );
    let bounds = s.tier_bounds(a.seq).await.expect("bounds");
    assert_eq!(bounds.raw_lo, Some(t0));
    assert_eq!(bounds.minute, Some((t0, t0 + 3 * H)));
    assert_eq!(bounds.hour, Some((t0, t0 + 3 * H)));
    let want = raw_fold(&s, a.seq, t0, t0 + 3 * H).await;
    assert_eq!(want["cpu"].count, 3 * 3600 - 600);
    same(
        &tier_fold(&s, a.seq, Tier::Minute, 0, i64::MAX).await,
        &want,
    );
    same(&tier_fold(&s, a.seq, Tier::Hour, 0, i64::MAX).await, &want);
    // One minute equals its raw samples.
    same(
        &tier_fold(&s, a.seq, Tier::Minute, t0 + 60_000, t0 + 120_000).await,
        &raw_fold(&s, a.seq, t0 + 60_000, t0 + 120_000).await,
    );

    // Late samples (a replayed spool filling the gap) are merged into both tiers once,
    // replays of them are ignored, and `b`'s first data below its mark counts too.
    let late: Vec<Row> = (0..600)
        .map(|i| t0 + H + i * 1000)
        .map(|ts| metric_row(ts, 50.0))
        .collect();
    let batch = SampleBatch {
        device_seq: a.seq,
        samples: late,
        now: 2,
    };
    s.insert_batches(std::slice::from_ref(&batch))
        .await
        .expect("late");
    s.insert_batches(std::slice::from_ref(&batch))
        .await
        .expect("replay");
    s.insert_batches(&[SampleBatch {
        device_seq: b.seq,
        samples: vec![metric_row(t0 + 5_000, 7.0)],
        now: 2,
    }])
    .await
    .expect("b");
    let r = tiers::roll_up_all(&*s, now).await.expect("job");
    assert_eq!(
        r.late_samples, 601,
        "600 for a, 1 for b (whose mark was set while empty)"
    );
    let want = raw_fold(&s, a.seq, t0, t0 + 3 * H).await;
    assert_eq!(want["cpu"].count, 3 * 3600);
    same(
        &tier_fold(&s, a.seq, Tier::Minute, 0, i64::MAX).await,
        &want,
    );
    same(&tier_fold(&s, a.seq, Tier::Hour, 0, i64::MAX).await, &want);
    same(
        &tier_fold(&s, b.seq, Tier::Hour, 0, i64::MAX).await,
        &raw_fold(&s, b.seq, 0, i64::MAX).await,
    );

    // Retention drops raw below the minute mark, minutes below the hour mark, whole buckets.
    let keep = tiers::Retention {
        raw_ms: H + 1,
        minute_ms: 2 * H,
        hour_ms: 100 * H,
    };
    let r = tiers::retention(&*s, now, keep, 1000, std::time::Duration::ZERO, || false)
        .await
        .expect("retention");
    assert_eq!(r.raw, 2 * 3600 + 1, "two hours of a, and b's one sample");
    assert_eq!(r.minute, 61, "the first hour of a, and b's one minute");
    assert_eq!(r.hour, 0);
    let bounds = s.tier_bounds(a.seq).await.expect("bounds");
    assert_eq!(bounds.raw_lo, Some(t0 + 2 * H));
    assert_eq!(bounds.minute, Some((t0 + H, t0 + 3 * H)));
    // Every level still sums to the same whole.
    same(&tier_fold(&s, a.seq, Tier::Hour, 0, i64::MAX).await, &want);

    // Deleting the device deletes its tiers.
    assert!(s.delete_device(&a.id).await.expect("delete"));
    assert!(
        s.rollups(a.seq, Tier::Hour, 0, i64::MAX, &SeriesFilter::all(), true)
            .await
            .expect("rollups")
            .is_empty()
    );
    assert_eq!(
        s.tier_bounds(a.seq).await.expect("bounds"),
        TierBounds::default()
    );
}

pub async fn state_and_settings(s: Arc<dyn Store>) {
    let a = s.create_device(device("a")).await.expect("device");
    s.put_state(a.seq, "processes", "[1]", 1)
        .await
        .expect("put");
    s.put_state(a.seq, "processes", "[2]", 2)
        .await
        .expect("put");
    s.put_state(a.seq, "system-info", "{}", 3)
        .await
        .expect("put");
    let st = s.states(a.seq).await.expect("states");
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].data, "[2]");
    let mut kv = BTreeMap::new();
    kv.insert("retention.rawDays".to_string(), "7".to_string());
    s.put_settings(&kv).await.expect("settings");
    kv.insert("retention.rawDays".to_string(), "3".to_string());
    s.put_settings(&kv).await.expect("settings");
    assert_eq!(s.settings().await.expect("settings"), kv);
    assert!(s.size_bytes().await.expect("size") > 0);
    s.ping().await.expect("ping");
}

pub async fn meta_compare_and_delete(s: Arc<dyn Store>) {
    s.meta_set("setup", "abc").await.expect("set");
    assert_eq!(
        s.meta_get("setup").await.expect("get").as_deref(),
        Some("abc")
    );
    assert_eq!(s.meta_init("cluster", "a").await.expect("init"), "a");
    assert_eq!(
        s.meta_init("cluster", "b").await.expect("init"),
        "a",
        "first wins"
    );
    assert!(!s.meta_take("setup", "wrong").await.expect("take"));
    assert!(s.meta_take("setup", "abc").await.expect("take"));
    assert!(!s.meta_take("setup", "abc").await.expect("take twice"));
}

pub async fn leases_and_rate_buckets(s: Arc<dyn Store>) {
    // The only (or first) hub on a store takes a lease and keeps it.
    assert!(s.try_lease("alerts").await.expect("lease"));
    assert!(s.try_lease("alerts").await.expect("lease again"));
    // A bucket of 2 refilled at 1 per second: two takes, then a wait of about a second.
    assert_eq!(
        s.rate_take("ip:a", 1.0, 2.0, 1.0, 0).await.expect("take"),
        None
    );
    assert_eq!(
        s.rate_take("ip:a", 1.0, 2.0, 1.0, 0).await.expect("take"),
        None
    );
    assert_eq!(
        s.rate_take("ip:a", 1.0, 2.0, 1.0, 0).await.expect("take"),
        Some(1000)
    );
    assert_eq!(
        s.rate_take("ip:a", 1.0, 2.0, 0.0, 0).await.expect("peek"),
        Some(1000)
    );
    assert_eq!(
        s.rate_take("ip:b", 1.0, 2.0, 1.0, 0)
            .await
            .expect("other key"),
        None
    );
    assert_eq!(
        s.rate_take("ip:a", 1.0, 2.0, 1.0, 500).await.expect("half"),
        Some(500)
    );
    assert_eq!(
        s.rate_take("ip:a", 1.0, 2.0, 1.0, 1000)
            .await
            .expect("refilled"),
        None
    );
    assert_eq!(
        s.rate_purge(600).await.expect("purge"),
        1,
        "b, untouched since 0"
    );
    assert_eq!(
        s.rate_take("ip:b", 1.0, 2.0, 1.0, 700)
            .await
            .expect("new again"),
        None
    );
}

fn app(bucket: &str, id: &str, seq: i64, created_at: i64) -> AppRecord {
    AppRecord {
        bucket: bucket.into(),
        id: id.into(),
        seq,
        data: format!("{{\"n\":{seq}}}"),
        version: 1,
        created_at,
    }
}

pub async fn app_store_transactions(s: Arc<dyn Store>) {
    s.app_write(&[
        AppWrite::Insert(app("metrics", "a", 1, 10)),
        AppWrite::Insert(app("alerts", "a", 2, 20)),
    ])
    .await
    .expect("insert");
    // A failing operation rolls back the whole transaction.
    let err = s
        .app_write(&[
            AppWrite::Insert(app("metrics", "b", 3, 30)),
            AppWrite::Insert(app("metrics", "a", 4, 30)),
        ])
        .await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    let err = s
        .app_write(&[
            AppWrite::Insert(app("metrics", "c", 5, 30)),
            AppWrite::Update {
                bucket: "metrics".into(),
                id: "a".into(),
                data: "{}".into(),
                version: 3,
                expected_version: 2,
            },
        ])
        .await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "stale version");
    let all = s.app_records().await.expect("records");
    assert_eq!(all.len(), 2, "nothing of the failed transactions applied");
    assert_eq!(all[0], app("metrics", "a", 1, 10));
    s.app_write(&[
        AppWrite::Update {
            bucket: "metrics".into(),
            id: "a".into(),
            data: "{\"n\":9}".into(),
            version: 2,
            expected_version: 1,
        },
        AppWrite::Insert(app("metrics", "d", 6, 40)),
        AppWrite::Delete {
            bucket: "alerts".into(),
            id: "a".into(),
        },
    ])
    .await
    .expect("update");
    let all = s.app_records().await.expect("records");
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].version, all[0].data.as_str()), (2, "{\"n\":9}"));
    assert_eq!(all[1].id, "d", "insertion order");
    assert!(matches!(
        s.app_write(&[AppWrite::Delete {
            bucket: "alerts".into(),
            id: "a".into()
        }])
        .await,
        Err(StoreError::Conflict(_))
    ));
    let gone = s.app_delete_before(35, 100).await.expect("retention");
    assert_eq!(gone, vec![("metrics".to_string(), "a".to_string())]);
    s.app_write(&[AppWrite::Clear {
        bucket: "metrics".into(),
    }])
    .await
    .expect("clear");
    assert!(s.app_records().await.expect("records").is_empty());
}

pub async fn alert_docs_state_and_outbox(s: Arc<dyn Store>) {
    // Documents: put, replace, list in insertion order, delete.
    s.alert_doc_put("rule", "r1", r#"{"a":1}"#, 10)
        .await
        .expect("put");
    s.alert_doc_put("rule", "r2", r#"{"a":2}"#, 11)
        .await
        .expect("put");
    s.alert_doc_put("rule", "r1", r#"{"a":3}"#, 12)
        .await
        .expect("replace");
    s.alert_doc_put("channel", "c1", "{}", 12)
        .await
        .expect("put");
    let rules = s.alert_docs("rule").await.expect("list");
    assert_eq!(
        rules.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert_eq!(rules[0].data, r#"{"a":3}"#);
    assert_eq!(rules[0].updated_at, 12);
    assert!(s.alert_doc_delete("rule", "r2").await.expect("delete"));
    assert!(!s.alert_doc_delete("rule", "r2").await.expect("again"));
    assert_eq!(s.alert_docs("channel").await.expect("list").len(), 1);

    // One engine step: state, event and notifications together.
    let step = AlertWrite {
        states: vec![("r1|d1|".into(), Some(r#"{"s":"firing"}"#.into()))],
        events: vec![AlertEventRow {
            id: "e1".into(),
            active: true,
            started_at: 100,
            data: r#"{"state":"firing"}"#.into(),
        }],
        outbox: vec![
            NewNotification {
                event_id: "e1".into(),
                channel_id: "c1".into(),
                data: "{}".into(),
                next_at: 100,
                created_at: 100,
            },
            NewNotification {
                event_id: "e1".into(),
                channel_id: "c2".into(),
                data: "{}".into(),
                next_at: 500,
                created_at: 100,
            },
        ],
    };
    s.alert_apply(&step).await.expect("apply");
    assert_eq!(
        s.alert_states().await.expect("states"),
        vec![("r1|d1|".to_string(), r#"{"s":"firing"}"#.to_string())]
    );
    assert_eq!(s.alert_events(true, 10).await.expect("active").len(), 1);
    let due = s.alert_outbox_due(200, 10).await.expect("due");
    assert_eq!(due.len(), 1, "only the item whose time has come");
    assert_eq!(due[0].channel_id, "c1");

    // A failed attempt schedules a retry; a successful one settles the item.
    let mut rec = DeliveryRecord {
        at: 200,
        outbox_id: Some(due[0].id),
        event_id: Some("e1".into()),
        channel_id: "c1".into(),
        kind: "firing".into(),
        attempt: 1,
        ok: false,
        status: Some(500),
        error: Some("server error".into()),
        retry_at: Some(300),
    };
    s.alert_delivery(&rec).await.expect("log");
    assert!(s.alert_outbox_due(250, 10).await.expect("due").is_empty());
    let again = s.alert_outbox_due(300, 10).await.expect("due");
    assert_eq!(again[0].attempts, 1);
    rec.at = 300;
    rec.attempt = 2;
    rec.ok = true;
    rec.status = Some(200);
    rec.error = None;
    rec.retry_at = None;
    s.alert_delivery(&rec).await.expect("log");
    assert!(s.alert_outbox_due(400, 10).await.expect("due").is_empty());
    let log = s.alert_deliveries(10).await.expect("log");
    assert_eq!(log.len(), 2);
    assert!(log[0].ok && !log[1].ok, "newest first");
    assert_eq!(log[1].retry_at, None, "the item is settled now");

    // Resolve: state gone, event inactive; purge removes only old settled rows.
    let resolve = AlertWrite {
        states: vec![("r1|d1|".into(), None)],
        events: vec![AlertEventRow {
            id: "e1".into(),
            active: false,
            started_at: 100,
            data: r#"{"state":"resolved"}"#.into(),
        }],
        outbox: vec![],
    };
    s.alert_apply(&resolve).await.expect("apply");
    assert!(s.alert_states().await.expect("states").is_empty());
    assert!(s.alert_events(true, 10).await.expect("active").is_empty());
    let e = s.alert_event("e1").await.expect("get").expect("exists");
    assert!(!e.active);
    assert_eq!(e.data, r#"{"state":"resolved"}"#);
    assert!(s.alert_purge_before(150).await.expect("purge") >= 1);
    assert!(s.alert_event("e1").await.expect("get").is_none());
    assert_eq!(
        s.alert_outbox_due(1000, 10).await.expect("due").len(),
        1,
        "the pending c2 item is kept"
    );
}

pub async fn compaction_is_invisible_to_reads(s: Arc<dyn Store>) {
    const M: i64 = 60_000;
    let a = s.create_device(device("a")).await.expect("device");
    let t0 = 100 * M;
    let mut sent: Vec<Row> = (0..25 * 60)
        .map(|i| t0 + i * 1000)
        .map(|ts| metric_row(ts, (ts / 1000 % 89) as f64 + 0.5))
        .collect();
    let batch = |v: &[Row]| SampleBatch {
        device_seq: a.seq,
        samples: v.to_vec(),
        now: 1,
    };
    s.insert_batches(&[batch(&sent)]).await.expect("insert");
    // Rolled up to t0 + 25 min, so the first two 10-minute windows are compacted.
    let r = tiers::roll_up_all(&*s, t0 + 25 * M + 20_000)
        .await
        .expect("job");
    assert_eq!(r.compacted, 1200);
    let everything = SeriesFilter::all();
    let all = s
        .samples(a.seq, 0, i64::MAX, &everything)
        .await
        .expect("samples");
    assert!(
        all == Frame::of_rows(&sent),
        "reads give back exactly what was stored"
    );
    assert_eq!(s.count_samples(a.seq).await.expect("count"), 1500);
    let (from, to) = (t0 + 5 * M + 500, t0 + 22 * M);
    let want = sent.iter().filter(|x| (from..=to).contains(&x.ts)).count() as i64;
    assert_eq!(
        s.count_samples_between(a.seq, from, to)
            .await
            .expect("count"),
        want
    );
    // A read of some series across blocks and hot rows.
    let some = s
        .samples(a.seq, from, to, &SeriesFilter::only(vec!["cpu*".into()]))
        .await
        .expect("samples");
    assert_eq!(some.len() as i64, want);
    assert_eq!(
        some.series.keys().collect::<Vec<_>>(),
        vec!["cpu", "cpu.core[0]", "cpu.core[1]"]
    );
    let mut paged = Frame::default();
    let mut cursor = 0;
    loop {
        let page = s
            .samples_page(a.seq, cursor, i64::MAX, 250)
            .await
            .expect("page");
        let Some(last) = page.ts.last() else { break };
        cursor = last + 1;
        assert!(page.len() <= 250);
        paged.append(page);
    }
    assert!(
        paged == Frame::of_rows(&sent),
        "pages across blocks and hot rows"
    );
    // A replay of compacted samples stores nothing; a new late one joins its block.
    assert_eq!(
        s.insert_batches(&[batch(&sent[..100])])
            .await
            .expect("replay"),
        vec![0]
    );
    let late = metric_row(t0 + 500, 1.0);
    assert_eq!(
        s.insert_batches(&[batch(std::slice::from_ref(&late))])
            .await
            .expect("late"),
        vec![1]
    );
    let r = tiers::roll_up_all(&*s, t0 + 25 * M + 20_000)
        .await
        .expect("job");
    assert_eq!((r.late_samples, r.compacted), (1, 1));
    sent.insert(1, late);
    assert!(
        s.samples(a.seq, 0, i64::MAX, &everything)
            .await
            .expect("samples")
            == Frame::of_rows(&sent)
    );
    let minute = s
        .rollups(a.seq, Tier::Minute, t0, t0 + 1, &everything, true)
        .await
        .expect("rollups");
    assert_eq!(
        minute["cpu"][0].1.count, 61,
        "the late sample is in its minute"
    );
    // Everything compacted: the latest sample still comes back, from its block.
    tiers::roll_up_all(&*s, t0 + 60 * M).await.expect("job");
    let listed = s.list_devices().await.expect("list");
    let last = sent.last().expect("sent");
    assert_eq!(
        listed[0].latest.as_ref(),
        Some(&Frame::of_rows(std::slice::from_ref(last)))
    );
    assert_eq!(s.tier_bounds(a.seq).await.expect("bounds").raw_lo, Some(t0));
    // Retention drops whole blocks.
    let mut gone = 0;
    loop {
        let n = s
            .delete_samples_before(i64::MAX, 1000)
            .await
            .expect("delete");
        if n == 0 {
            break;
        }
        gone += n;
    }
    assert_eq!(gone, 1501);
    assert_eq!(s.count_samples(a.seq).await.expect("count"), 0);
}
