//! Lossless delivery over real sockets against a fake hub (see `common`): hub outages, the HTTP
//! fallback, spool overflow accounting, a corrupted spool tail, revoked tokens and half-open
//! connections.

mod common;

use std::time::{Duration, Instant};

use common::{Counter, FakeHub, run_options, wait_for};
use vitals_agent::agent::{self, Outcome, RunError};
use vitals_agent::spool::{Record, Spool, SpoolOptions};
use vitals_agent::transport::Kind;

type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<Outcome, RunError>>,
);

fn spawn_agent(src: Counter, opts: agent::RunOptions) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(agent::run(src, opts, async {
        let _ = rx.await;
    }));
    (tx, h)
}

async fn stop(r: Running) -> Result<Outcome, RunError> {
    let _ = r.0.send(());
    r.1.await.expect("agent task")
}

fn outage() -> Duration {
    let secs = std::env::var("VITALS_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// The scenario: stop the hub for 30 s mid-stream and restart it; every sample reaches
/// the store exactly once, in order, without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_outage_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hub = FakeHub::start().await;
    let interval = 100;
    let n = (outage().as_millis() as i64 / interval as i64) + 100;
    let base = vitals_agent::collect::now_ms();
    let (src, produced) = Counter::new(base, n);
    let agent = spawn_agent(
        src,
        run_options(&hub, dir.path(), interval, Kind::Websocket),
    );

    assert!(wait_for(Duration::from_secs(10), || hub.stored().len() >= 20).await);
    hub.down().await;
    let during = hub.stored().len();
    tokio::time::sleep(outage()).await;
    assert_eq!(
        hub.stored().len(),
        during,
        "nothing stored while the hub is down"
    );
    hub.up().await;

    let all = wait_for(Duration::from_secs(60), || hub.stored().len() as i64 == n).await;
    let stored = hub.stored();
    assert!(
        all,
        "stored {} of {n} (produced {produced:?})",
        stored.len()
    );
    assert_eq!(
        stored,
        (base..base + n).collect::<Vec<_>>(),
        "in order, no gap, once each"
    );
    // The hub stores a batch before its ack reaches the agent; stopped in between, the agent
    // rightly spools that batch again (unacknowledged). Let the last acks arrive first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(agent).await.expect("clean stop");
    let sp = Spool::open(dir.path(), SpoolOptions::default()).expect("spool");
    assert!(sp.is_empty(), "nothing left in the spool");
}

/// `POST /api/report` as the transport: the same guarantees across a short outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fallback_delivers_in_order_across_an_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hub = FakeHub::start().await;
    let base = vitals_agent::collect::now_ms();
    let (src, _) = Counter::new(base, 60);
    let agent = spawn_agent(src, run_options(&hub, dir.path(), 50, Kind::Http));
    assert!(wait_for(Duration::from_secs(10), || hub.stored().len() >= 10).await);
    hub.down().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    hub.up().await;
    assert!(
        wait_for(Duration::from_secs(20), || hub.stored().len() == 60).await,
        "{}",
        hub.stored().len()
    );
    assert_eq!(hub.stored(), (base..base + 60).collect::<Vec<_>>());
    stop(agent).await.expect("clean stop");
}

/// Spool overflow: the number of dropped samples the hub is told equals the number that never
/// reached it, and the ones kept are the newest, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_overflow_reports_exactly_what_was_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hub = FakeHub::start().await;
    hub.down().await;
    let n = 400;
    let base = vitals_agent::collect::now_ms();
    let (src, produced) = Counter::new(base, n);
    let mut opts = run_options(&hub, dir.path(), 5, Kind::Websocket);
    opts.spool = SpoolOptions {
        max_bytes: 16 * 1024,
        max_age_ms: i64::MAX,
        segment_bytes: 4 * 1024,
    };
    let agent = spawn_agent(src, opts);
    assert!(
        wait_for(Duration::from_secs(20), || produced
            .load(std::sync::atomic::Ordering::SeqCst)
            == n as u64)
        .await
    );
    hub.up().await;
    let done = wait_for(Duration::from_secs(20), || {
        hub.dropped_reported() > 0 && hub.stored().len() as u64 + hub.dropped_reported() == n as u64
    })
    .await;
    let stored = hub.stored();
    assert!(
        done,
        "stored {} + reported dropped {} != {n}",
        stored.len(),
        hub.dropped_reported()
    );
    let first = stored[0];
    assert_eq!(
        (first - base) as u64,
        hub.dropped_reported(),
        "the oldest were dropped"
    );
    assert_eq!(stored, (first..base + n).collect::<Vec<_>>());
    stop(agent).await.expect("clean stop");
}

/// A spool whose last record was torn by a crash: the tail is cut off, the rest replayed first,
/// then live samples follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_spool_tail_is_cut_and_the_rest_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = vitals_agent::collect::now_ms();
    {
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("spool");
        let recs: Vec<Record> = (base..base + 50)
            .map(|t| Record::from_sample(&common::sample(t)).expect("record"))
            .collect();
        sp.append(&recs, base).expect("append");
    }
    let seg = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let len = bytes.len();
    bytes.truncate(len - 10); // the last record loses its end
    std::fs::write(&seg, &bytes).expect("write");

    let hub = FakeHub::start().await;
    let (src, _) = Counter::new(base + 50, 20);
    let agent = spawn_agent(src, run_options(&hub, dir.path(), 50, Kind::Websocket));
    let ok = wait_for(Duration::from_secs(15), || hub.stored().len() == 69).await;
    let stored = hub.stored();
    assert!(ok, "stored {}", stored.len());
    let mut want: Vec<i64> = (base..base + 49).collect();
    want.extend(base + 50..base + 70);
    assert_eq!(
        stored, want,
        "49 good spooled samples, then live ones, in order"
    );
    stop(agent).await.expect("clean stop");
}

/// A token revoked mid-stream (close 4401) stops sending and says why; samples stay spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_stops_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = FakeHub::start().await;
    let (src, _) = Counter::new(vitals_agent::collect::now_ms(), 10_000);
    let agent = spawn_agent(src, run_options(&hub, dir.path(), 50, Kind::Websocket));
    assert!(wait_for(Duration::from_secs(10), || hub.stored().len() >= 5).await);
    hub.revoke();
    let res = tokio::time::timeout(Duration::from_secs(10), agent.1)
        .await
        .expect("agent stops by itself")
        .expect("task");
    assert!(matches!(res, Err(RunError::Unauthorized)), "{res:?}");
    assert!(
        res.expect_err("unauthorized")
            .to_string()
            .contains("vitals-agent pair")
    );
    let connections = hub.connections();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.connections(), connections, "no reconnect loop");
}

/// A token the hub never knew: the upgrade's 401 stops the agent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_is_refused_at_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = FakeHub::start().await;
    let (src, _) = Counter::new(vitals_agent::collect::now_ms(), 100);
    let mut opts = run_options(&hub, dir.path(), 50, Kind::Websocket);
    opts.link.token = "wrong".into();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        agent::run(src, opts, std::future::pending()),
    )
    .await
    .expect("stops");
    assert!(matches!(res, Err(RunError::Unauthorized)));
    assert_eq!(hub.stored().len(), 0);
}

/// A hub that accepts the connection but never answers (half-open): detected within 3
/// intervals by the ping/pong timeout, then the agent reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connection_is_detected_within_three_intervals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = FakeHub::start().await;
    hub.shared
        .silent
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let base = vitals_agent::collect::now_ms();
    let (src, _) = Counter::new(base, 100_000);
    let interval = 200;
    let agent = spawn_agent(
        src,
        run_options(&hub, dir.path(), interval, Kind::Websocket),
    );
    assert!(wait_for(Duration::from_secs(5), || hub.connections() == 1).await);
    let t = Instant::now();
    assert!(wait_for(Duration::from_secs(5), || hub.connections() == 2).await);
    let took = t.elapsed();
    // 3 intervals of silence (+1 tick), a reconnect backoff of <= 1 s, and slack for a loaded
    // CI machine (without the ping timeout the reconnect would never happen).
    assert!(
        took < Duration::from_millis(4 * interval + 2_000),
        "took {took:?}"
    );
    hub.shared
        .silent
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(wait_for(Duration::from_secs(10), || hub.stored().len() > 10).await);
    let stored = hub.stored();
    assert_eq!(
        stored,
        (base..base + stored.len() as i64).collect::<Vec<_>>(),
        "nothing lost while half-open"
    );
    stop(agent).await.expect("clean stop");
}
