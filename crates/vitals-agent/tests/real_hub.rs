//! The agent against the real hub (`vitals-testkit`'s `TestHub`): pairing with approval, rate
//! limiting and expiry; streaming through a 30 s hub outage (hub stopped and restarted on the
//! same port and data directory) with every sample stored exactly once, in order; and a token
//! rotated by an admin stopping the agent.

mod common;

use std::time::Duration;

use common::Counter;
use vitals_agent::agent::{self, RunError};
use vitals_agent::pairing::{self, PairError, PairOptions};
use vitals_agent::transport::{Kind, LinkConfig};
use vitals_testkit::TestHub;

const HOST: &str = "test-host";

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("VITALS_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    )
}

/// Pairs through the real flow: the agent library asks and polls (faster than the hub allows,
/// so it meets 429s), an admin approves through the API.
async fn pair(hub: &TestHub) -> (String, String) {
    let admin = hub.setup_admin().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let mut o = PairOptions::new(hub.url.clone(), HOST.into(), Some("real-agent".into()));
    o.poll_every = Duration::from_millis(700);
    o.max_wait = Duration::from_secs(60);
    let approver = tokio::spawn(async move {
        let code = rx.await.expect("code shown");
        tokio::time::sleep(Duration::from_secs(3)).await;
        admin.approve(&code, "real-agent").await;
        admin
    });
    let got = pairing::pair(&o, |c, link| {
        assert!(link.ends_with(&format!("/pair?code={}", c.code)));
        let _ = tx.send(c.code.clone());
    })
    .await
    .expect("paired with the real hub");
    approver.await.expect("approver");
    (got.device_id, got.token)
}

fn options(url: &str, token: &str, spool: &std::path::Path, interval_ms: u64) -> agent::RunOptions {
    let link = LinkConfig {
        hub: url.to_string(),
        token: token.to_string(),
        host_id: HOST.into(),
        kind: Kind::Websocket,
        interval: Duration::from_millis(interval_ms),
    };
    let mut o = agent::RunOptions::new(link, spool.to_path_buf());
    o.max_backoff = Duration::from_secs(2);
    o
}

async fn stored_ts(hub: &TestHub, device_id: &str) -> Vec<i64> {
    let store = hub.store();
    let Ok(Some(d)) = store.device(device_id).await else {
        return Vec::new();
    };
    store
        .samples(d.seq, 0, i64::MAX, &vitals_store::SeriesFilter::all())
        .await
        .map(|f| f.ts)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_through_a_real_hub_outage_exactly_once_in_order() {
    common::init_logs();
    let data = tempfile::tempdir().expect("tempdir");
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_path_buf();
    let hub = TestHub::start_with(|c| c.data_dir = dir.clone()).await;
    let addr = hub.hub.addr;
    let (device_id, token) = pair(&hub).await;

    let interval = 200;
    let n = (outage().as_millis() as i64 / interval) + 60;
    let base = vitals_agent::collect::now_ms();
    let (src, _) = Counter::new(base, n);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(
        src,
        options(&hub.url, &token, spool.path(), interval as u64),
        async {
            let _ = stop_rx.await;
        },
    ));

    let mut ok = false;
    for _ in 0..100 {
        if stored_ts(&hub, &device_id).await.len() >= 15 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "streams before the outage");

    // Stop the real hub (graceful shutdown, as systemd would), keep its data directory.
    hub.hub.shutdown();
    let TestHub {
        hub: running,
        dir: _keep,
        ..
    } = hub;
    running.wait().await.expect("hub stops");
    tokio::time::sleep(outage()).await;
    let dir = data.path().to_path_buf();
    let hub = TestHub::start_with(move |c| {
        c.data_dir = dir;
        c.listen = addr;
    })
    .await;

    let mut all = Vec::new();
    for _ in 0..600 {
        all = stored_ts(&hub, &device_id).await;
        if all.len() as i64 >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        all,
        (base..base + n).collect::<Vec<_>>(),
        "every sample once, in order, no gap"
    );
    let _ = stop_tx.send(());
    agent.await.expect("task").expect("clean stop");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_stops_the_agent() {
    common::init_logs();
    let hub = TestHub::start().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let (device_id, token) = pair(&hub).await;
    let (src, _) = Counter::new(vitals_agent::collect::now_ms(), 100_000);
    let run = tokio::spawn(agent::run(
        src,
        options(&hub.url, &token, spool.path(), 200),
        std::future::pending(),
    ));
    let mut n = 0;
    for _ in 0..100 {
        n = stored_ts(&hub, &device_id).await.len();
        if n >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 3, "streams");
    let admin = vitals_testkit::ApiClient::login(&hub.url, "admin", vitals_testkit::PASSWORD)
        .await
        .expect("login");
    let (status, body) = admin
        .post(
            &format!("/api/devices/{device_id}/rotate-token"),
            serde_json::json!({}),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let res = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the agent stops by itself")
        .expect("task");
    assert!(matches!(res, Err(RunError::Unauthorized)), "{res:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_code_expires() {
    common::init_logs();
    let hub = TestHub::start_with(|c| c.pairing_code_ttl_secs = 3).await;
    let mut o = PairOptions::new(hub.url.clone(), HOST.into(), None);
    o.poll_every = Duration::from_millis(2100);
    o.max_wait = Duration::from_secs(30);
    let e = pairing::pair(&o, |_, _| {}).await.expect_err("expires");
    assert!(matches!(e, PairError::Expired), "{e}");
    hub.stop().await;
}

/// The `POST /api/report` fallback against the real hub: acks parsed, every sample stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fallback_against_the_real_hub() {
    common::init_logs();
    let hub = TestHub::start().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let (device_id, token) = pair(&hub).await;
    let base = vitals_agent::collect::now_ms();
    let (src, _) = Counter::new(base, 20);
    let mut o = options(&hub.url, &token, spool.path(), 100);
    o.link.kind = Kind::Http;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(src, o, async {
        let _ = stop_rx.await;
    }));
    let mut all = Vec::new();
    for _ in 0..150 {
        all = stored_ts(&hub, &device_id).await;
        if all.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all, (base..base + 20).collect::<Vec<_>>());
    let _ = stop_tx.send(());
    agent.await.expect("task").expect("clean stop");
    let sp = vitals_agent::spool::Spool::open(spool.path(), Default::default()).expect("spool");
    assert!(sp.is_empty(), "every batch acknowledged over HTTP");
    hub.stop().await;
}

/// The real collectors through the real hub: every kernel statistic arrives as its own series
/// (`kernel.*`), and a stored gauge equals an independent read of `/proc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_collectors_reach_the_store_as_series() {
    common::init_logs();
    if std::fs::metadata("/proc/vmstat").is_err() {
        eprintln!("skipped: no /proc/vmstat on this machine");
        return;
    }
    let hub = TestHub::start().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let (device_id, token) = pair(&hub).await;
    let col = vitals_agent::Collector::with_options(
        HOST.into(),
        vitals_agent::collect::Options {
            docker: false,
            gpu: false,
            ..Default::default()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(agent::run(
        col,
        options(&hub.url, &token, spool.path(), 200),
        async {
            let _ = stop_rx.await;
        },
    ));
    let store = hub.store();
    let dev = store
        .device(&device_id)
        .await
        .expect("store")
        .expect("device");
    let mut frame = None;
    for _ in 0..100 {
        let f = store
            .samples(dev.seq, 0, i64::MAX, &vitals_store::SeriesFilter::all())
            .await
            .expect("samples");
        if f.ts.len() >= 3 {
            frame = Some(f);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    agent.await.expect("task").expect("clean stop");
    let frame = frame.expect("three samples stored");
    let kernel: Vec<&String> = frame
        .series
        .keys()
        .filter(|k| k.starts_with("kernel."))
        .collect();
    assert!(
        kernel.len() > 300,
        "{} kernel series stored: {kernel:?}",
        kernel.len()
    );
    assert!(frame.series.len() > 340, "{} series", frame.series.len());
    let total_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_ascii_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    let stored = &frame.series["kernel.meminfo.MemTotal"];
    assert!(
        stored.iter().all(|v| *v == total_kb * 1024.0),
        "{stored:?} vs {total_kb} kB"
    );
    hub.stop().await;
}
