//! Scale-out: hub replicas as child processes on one PostgreSQL database (a fresh schema per
//! test) and one NATS server. Skipped, with the reason printed, unless
//! `VITALS_TEST_DATABASE_URL` and `VITALS_TEST_NATS_URL` are set (`.ci/run` sets both).
//!
//! - pairing and live updates across replicas (an agent on A, a viewer on B: by card figures
//!   until the viewer needs whole samples);
//! - alerts evaluated on the lease holder from another replica's agent (whole samples);
//! - `kill -9` of the replica holding the agent and the alert lease: the agent replays to B,
//!   nothing acknowledged is lost, alerting moves to B and one alert notifies once;
//! - the database away (a proxy between the hubs and PostgreSQL is cut): 503s and no acks,
//!   then recovery by themselves with nothing acknowledged lost;
//! - `migrate` from a populated SQLite hub, twice.

mod live_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use live_common::Ws;
use serde_json::{Value, json};
use vitals_proto::HubMessage;
use vitals_testkit::process::HubProcess;
use vitals_testkit::{ApiClient, FakeAgent, PASSWORD, now_ms, sample};

const BIN: &str = env!("CARGO_BIN_EXE_vitals-hub");

/// The database and NATS URLs, or None (skip) with the reason printed.
fn services() -> Option<(String, String)> {
    let db = std::env::var("VITALS_TEST_DATABASE_URL").ok();
    let nats = std::env::var("VITALS_TEST_NATS_URL").ok();
    match (db, nats) {
        (Some(d), Some(n)) if !d.is_empty() && !n.is_empty() => Some((d, n)),
        _ => {
            eprintln!(
                "skipping: VITALS_TEST_DATABASE_URL and VITALS_TEST_NATS_URL must both be set \
                 (replica tests need PostgreSQL and NATS)"
            );
            None
        }
    }
}

/// A URL of a fresh, empty schema of the test database.
async fn fresh_schema(db: &str) -> String {
    use sqlx::Connection as _;
    let schema = format!("r_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(db).await.expect("postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("schema");
    let sep = if db.contains('?') { '&' } else { '?' };
    format!("{db}{sep}options=-c%20search_path%3D{schema}")
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

fn replica(db: &str, nats: &str) -> (HubProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let hub = HubProcess::spawn(
        Path::new(BIN),
        dir.path(),
        "127.0.0.1:0",
        &["--database-url", db, "--nats-url", nats],
    );
    (hub, dir)
}

fn setup_token(hub: &HubProcess) -> String {
    hub.setup_url
        .as_deref()
        .and_then(|u| u.split("token=").nth(1))
        .expect("setup link printed")
        .to_string()
}

fn ws_of(hub: &HubProcess) -> String {
    hub.url.replacen("http", "ws", 1)
}

/// Waits until `/healthz` of `hub` says it evaluates alerts (or not).
async fn wait_alert_lease(hub_url: &str, want: bool, within: Duration) -> bool {
    let c = ApiClient::anonymous(hub_url);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (s, b) = c.get("/healthz").await;
        if s == 200 && b["alerts"] == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Pairs a device: code asked on `ask`, approved by `admin` (another replica), polled on `ask`.
async fn pair(ask: &ApiClient, admin: &ApiClient, host: &str) -> (String, String) {
    let code = ask.request_code(host).await;
    let (s, _) = ask.poll_token(&code).await;
    assert_eq!(s, 404, "pending before approval");
    admin.approve(&code, host).await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // one poll per 2 s
    let (s, b) = ask.poll_token(&code).await;
    assert_eq!(s, 200, "{b}");
    (
        b["deviceId"].as_str().expect("id").to_string(),
        b["token"].as_str().expect("token").to_string(),
    )
}

/// Sends a batch; None when the socket died or nothing came back within 8 s.
async fn try_send(
    agent: &mut FakeAgent,
    seq: u64,
    ts: &[i64],
    cpu: f64,
    host: &str,
) -> Option<HubMessage> {
    let samples = ts.iter().map(|&t| sample(host, t, cpu)).collect();
    let text =
        serde_json::to_string(&vitals_proto::AgentMessage::Metrics { seq, samples }).expect("json");
    tokio::time::timeout(Duration::from_secs(8), agent.send_text(&text))
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn replicas_share_pairing_and_live_updates() {
    let Some((db, nats)) = services() else { return };
    let db = fresh_schema(&db).await;
    let (a, _da) = replica(&db, &nats);
    // A, started first, evaluates alerts; B then needs other replicas' samples whole only
    // for its viewers.
    assert!(wait_alert_lease(&a.url, true, Duration::from_secs(10)).await);
    let (b, _db) = replica(&db, &nats);
    // Both printed a setup link; either creates the one first admin.
    let admin_b = ApiClient::setup(&b.url, &setup_token(&b), "admin", PASSWORD)
        .await
        .expect("setup on B");
    // A session made on B works on A: sessions live in the database.
    let admin_a = ApiClient::login(&a.url, "admin", PASSWORD)
        .await
        .expect("login on A");
    let (s, me) = admin_a.get("/api/auth/me").await;
    assert_eq!(s, 200, "{me}");
    let token = admin_b.create_token("viewer", "viewer").await;

    // Pair on A, approve on B, poll on A.
    let anon_a = ApiClient::anonymous(&a.url);
    let (device, dtoken) = pair(&anon_a, &admin_b, "host-r1").await;
    let (_, list) = admin_a.get("/api/devices").await;
    assert!(
        list.to_string().contains(&device),
        "A lists the device approved on B"
    );

    // With no view of whole samples on B, A's samples reach B's device cards by their card
    // figures alone.
    let bearer = format!("Bearer {token}");
    let mut agent = FakeAgent::connect(&ws_of(&a), &dtoken, "host-r1")
        .await
        .expect("agent on A");
    let mut cards = Ws::connect(
        &format!("{}/api/store/ws", ws_of(&b)),
        &[("authorization", &bearer)],
    )
    .await
    .expect("store socket on B");
    cards.recv().await;
    let r = cards
        .call(json!({"id": 1, "type": "store.subscribe", "query": "fleet-overview"}))
        .await;
    assert_eq!(r["data"]["data"][0]["id"], device.as_str(), "{r}");
    assert!(!whole_samples(&b).await, "B needs no whole samples yet");
    let t0 = (now_ms() / 1000 - 60) * 1000;
    for (i, cpu) in [(0i64, 11.5), (1, 12.5)] {
        let ack = agent
            .send_batch(100 + i as u64, vec![sample("host-r1", t0 + i * 1000, cpu)])
            .await;
        assert!(matches!(ack, HubMessage::Ack { stored: 1, .. }), "{ack:?}");
    }
    let fleet = fleet_push(&mut cards, 12.5).await;
    assert_eq!(fleet["spark"]["cpu"], json!([11.5, 12.5]), "{fleet}");
    assert_eq!(fleet["status"], "online", "{fleet}");

    // A viewer on B sees samples an agent sends to A, whole.
    let mut viewer = Ws::connect(
        &format!("{}/ws/live", ws_of(&b)),
        &[("authorization", &bearer)],
    )
    .await
    .expect("viewer on B");
    assert_eq!(viewer.recv().await["type"], "connected");
    let until = Instant::now() + Duration::from_secs(5);
    while !whole_samples(&b).await {
        assert!(
            Instant::now() < until,
            "B subscribes to whole samples for its viewer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = (now_ms() / 1000 - 30) * 1000;
    let mut lat = Vec::new();
    for i in 0..20i64 {
        let ack = agent
            .send_batch(
                i as u64 + 1,
                vec![sample("host-r1", t0 + i * 1000, i as f64)],
            )
            .await;
        let acked = Instant::now();
        assert!(matches!(ack, HubMessage::Ack { stored: 1, .. }), "{ack:?}");
        let m = viewer
            .recv_within(Duration::from_secs(2))
            .await
            .expect("pushed on B");
        lat.push(acked.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(m["type"], "metrics", "{m}");
        assert_eq!(m["deviceId"], device.as_str());
        assert_eq!(m["ts"].as_i64(), Some(t0 + i * 1000));
        assert_eq!(m["data"]["hostId"], "host-r1", "the whole sample: {m}");
        assert!(m["data"]["cpu"]["perCore"].is_array(), "{m}");
        assert_eq!(m["data"]["cpu"]["total"].as_f64(), Some(i as f64));
    }
    // The device card follows the whole samples too (their cards on `live` are skipped), and
    // each sample is one sparkline point.
    let fleet = fleet_push(&mut cards, 19.0).await;
    let spark: Vec<f64> = serde_json::from_value(fleet["spark"]["cpu"].clone()).expect("spark");
    let whole: Vec<f64> = (0..20).map(|i| i as f64).collect();
    assert!(spark.ends_with(&whole), "{spark:?}");
    // Without the viewer, B goes back to cards.
    drop(viewer);
    let until = Instant::now() + Duration::from_secs(5);
    while whole_samples(&b).await {
        assert!(
            Instant::now() < until,
            "B unsubscribes once its viewer left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ack = agent
        .send_batch(200, vec![sample("host-r1", t0 + 25_000, 33.0)])
        .await;
    assert!(matches!(ack, HubMessage::Ack { stored: 1, .. }), "{ack:?}");
    let fleet = fleet_push(&mut cards, 33.0).await;
    let spark: Vec<f64> = serde_json::from_value(fleet["spark"]["cpu"].clone()).expect("spark");
    assert!(spark.ends_with(&[18.0, 19.0, 33.0]), "{spark:?}");
    lat.sort_by(f64::total_cmp);
    eprintln!(
        "ack on A -> push on B, ms: median {:.1}, max {:.1}",
        lat[10], lat[19]
    );
    assert!(
        lat[10] < 100.0,
        "median cross-replica push under 100 ms: {lat:?}"
    );

    // Rotating the token on B closes the agent's connection on A within a second.
    let (s, _) = admin_b
        .post(&format!("/api/devices/{device}/rotate-token"), json!({}))
        .await;
    assert_eq!(s, 200);
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(2), agent.close_code()).await;
    assert!(closed.is_ok(), "agent on A closed after rotation on B");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Whether the replica at `url` receives the others' samples whole now (its `/healthz`).
async fn whole_samples(hub: &HubProcess) -> bool {
    let (_, h) = ApiClient::anonymous(&hub.url).get("/healthz").await;
    h["wholeSamples"]
        .as_bool()
        .expect("wholeSamples in /healthz")
}

/// Waits for a `fleet-overview` push whose first device shows `cpu`; returns that device.
async fn fleet_push(ws: &mut Ws, cpu: f64) -> Value {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let m = ws
            .recv_within(left)
            .await
            .unwrap_or_else(|| panic!("a fleet-overview push with cpu {cpu}"));
        let d = &m["data"][0];
        if d["latest"]["cpu"].as_f64() == Some(cpu) {
            return d.clone();
        }
    }
}

/// A webhook receiver counting notifications by kind.
async fn counter() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = Arc::clone(&got);
    let app = axum::Router::new().fallback(move |body: String| {
        let g = Arc::clone(&g);
        async move {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                g.lock().expect("lock").push(v);
            }
            "ok"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, got)
}

/// A webhook channel to a [`counter`] (private targets allowed): its id and what it got.
async fn hook_channel(admin: &ApiClient) -> (Value, Arc<std::sync::Mutex<Vec<Value>>>) {
    let (s, _) = admin
        .post("/api/settings", json!({"alerts.allowPrivateTargets": true}))
        .await;
    assert_eq!(s, 200);
    let (hook, got) = counter().await;
    let (s, ch) = admin
        .post(
            "/api/notification-channels",
            json!({"name": "hook", "kind": "webhook", "config": {"url": hook}}),
        )
        .await;
    assert_eq!(s, 201, "{ch}");
    (ch["id"].clone(), got)
}

fn kinds(got: &std::sync::Mutex<Vec<Value>>) -> Vec<String> {
    got.lock()
        .expect("lock")
        .iter()
        .map(|v| v["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

// Multi-threaded: the in-process webhook receiver must run while a child hub starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_on_the_lease_holder_from_another_replicas_agent() {
    let Some((db, nats)) = services() else { return };
    let db = fresh_schema(&db).await;
    let (a, _da) = replica(&db, &nats);
    assert!(wait_alert_lease(&a.url, true, Duration::from_secs(10)).await);
    let admin_a = ApiClient::setup(&a.url, &setup_token(&a), "admin", PASSWORD)
        .await
        .expect("setup");
    let (b, _db) = replica(&db, &nats);
    // The lease holder takes other replicas' samples whole (its alert engine needs every
    // series); B, with no viewer, needs only cards.
    assert!(whole_samples(&a).await, "A evaluates alerts: whole samples");
    assert!(!whole_samples(&b).await);
    let (ch, got) = hook_channel(&admin_a).await;
    let (device, dtoken) = pair(&ApiClient::anonymous(&b.url), &admin_a, "host-x").await;
    // A series of the whole sample only (temperatures are not card figures).
    let (s, r) = admin_a
        .post(
            "/api/alert-rules",
            json!({"name": "hot", "deviceIds": [device], "metric": "temperature",
                   "threshold": 90, "durationSec": 3, "recoverySec": 0,
                   "channelIds": [ch]}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let mut agent = FakeAgent::connect(&ws_of(&b), &dtoken, "host-x")
        .await
        .expect("agent on B");
    let base = now_ms() - 60_000;
    for i in 0..6i64 {
        let mut s = sample("host-x", base + i * 1000, 10.0);
        assert!(!s.temps.is_empty(), "the simulated host has temperatures");
        s.temps.iter_mut().for_each(|t| t.celsius = 95.0);
        let ack = agent.send_batch(i as u64 + 1, vec![s]).await;
        assert!(matches!(ack, HubMessage::Ack { stored: 1, .. }), "{ack:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds(&got).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kinds(&got), vec!["firing"], "one notification, from A");
}

// Multi-threaded: the in-process receiver/proxy must run while a child hub starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_moves_agents_and_alerting_to_the_other_replica() {
    let Some((db, nats)) = services() else { return };
    let db = fresh_schema(&db).await;
    let (mut a, _da) = replica(&db, &nats);
    assert!(
        wait_alert_lease(&a.url, true, Duration::from_secs(10)).await,
        "A, alone, evaluates alerts"
    );
    let admin_a = ApiClient::setup(&a.url, &setup_token(&a), "admin", PASSWORD)
        .await
        .expect("setup");
    let key = admin_a.create_token("k", "admin").await;
    let (b, _db) = replica(&db, &nats);
    assert!(wait_alert_lease(&b.url, false, Duration::from_secs(5)).await);
    let admin_b = ApiClient::with_bearer(&b.url, &key);
    let (ch, got) = hook_channel(&admin_b).await;
    let (device, dtoken) = pair(&ApiClient::anonymous(&a.url), &admin_b, "host-k").await;
    let (s, r) = admin_b
        .post(
            "/api/alert-rules",
            json!({"name": "cpu", "deviceIds": [device], "metric": "cpu", "threshold": 90,
                   "durationSec": 5, "recoverySec": 0, "channelIds": [ch]}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await; // A reloads the rules (NATS)

    // The agent on A: 8 s above the threshold fires; the notification goes out once.
    let mut agent = FakeAgent::connect(&ws_of(&a), &dtoken, "host-k")
        .await
        .expect("agent");
    let base = now_ms() - 120_000;
    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut seq = 0u64;
    for s in 0..8i64 {
        seq += 1;
        let ts = base + s * 1000;
        match agent
            .send_batch(seq, vec![sample("host-k", ts, 95.0)])
            .await
        {
            HubMessage::Ack { .. } => {
                acked.insert(ts);
            }
            other => panic!("{other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds(&got).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kinds(&got), vec!["firing"]);

    // Stream while A is killed: what A acknowledged must all be there.
    let mut unacked = Vec::new();
    let killer = {
        let pid = a.child.id();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        })
    };
    for s in 0..2000i64 {
        seq += 1;
        let ts = base + 8000 + s * 10; // still above the threshold
        match try_send(&mut agent, seq, &[ts], 95.0, "host-k").await {
            Some(HubMessage::Ack { .. }) => {
                acked.insert(ts);
            }
            _ => {
                unacked.push(ts);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!unacked.is_empty(), "A died mid-stream");
    killer.await.expect("killer");
    a.kill9();
    assert!(
        wait_alert_lease(&b.url, true, Duration::from_secs(15)).await,
        "B took over alert evaluation"
    );

    // The agent reconnects to B and replays what was not acknowledged.
    let mut agent = FakeAgent::connect(&ws_of(&b), &dtoken, "host-k")
        .await
        .expect("agent on B");
    seq += 1;
    let replay: Vec<_> = unacked
        .iter()
        .map(|&ts| sample("host-k", ts, 95.0))
        .collect();
    if !replay.is_empty() {
        assert!(matches!(
            agent.send_batch(seq, replay).await,
            HubMessage::Ack { .. }
        ));
        acked.extend(&unacked);
    }
    let stored = admin_b.stored_ts(&device, base).await;
    let set: BTreeSet<i64> = stored.iter().copied().collect();
    assert_eq!(stored.len(), set.len(), "no sample stored twice");
    assert!(acked.is_subset(&set), "every acknowledged sample is there");

    // Still firing on B: no second notification; then recovery notifies once.
    let later = base + 60_000;
    for s in 0..3i64 {
        seq += 1;
        let m = agent
            .send_batch(seq, vec![sample("host-k", later + s * 1000, 95.0)])
            .await;
        assert!(matches!(m, HubMessage::Ack { .. }), "{m:?}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(kinds(&got), vec!["firing"], "no repeat after the take-over");
    seq += 1;
    let m = agent
        .send_batch(seq, vec![sample("host-k", later + 4000, 10.0)])
        .await;
    assert!(matches!(m, HubMessage::Ack { stored: 1, .. }), "{m:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds(&got).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, alerts) = admin_b.get("/api/alerts").await;
    let (_, log) = admin_b.get("/api/alert-deliveries").await;

    assert_eq!(
        kinds(&got),
        vec!["firing", "resolved"],
        "alerts {alerts}, deliveries {log}"
    );
}

/// A TCP proxy to PostgreSQL that can be cut (every connection closed, new ones refused).
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    epoch: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let epoch = Arc::new(AtomicUsize::new(0));
        let (u, e) = (Arc::clone(&up), Arc::clone(&epoch));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let (u, e, target) = (Arc::clone(&u), Arc::clone(&e), target.clone());
                let mine = e.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let cut = async {
                        while u.load(Ordering::SeqCst) && e.load(Ordering::SeqCst) == mine {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Proxy { addr, up, epoch }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

// Multi-threaded: the in-process receiver/proxy must run while a child hub starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_away_answers_503_acks_nothing_and_recovers() {
    let Some((db, nats)) = services() else { return };
    let db = fresh_schema(&db).await;
    // host:port of the database, from its URL.
    let hostport = db
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_string();
    let proxy = Proxy::start(hostport.clone()).await;
    let via = db.replacen(&hostport, &proxy.addr.to_string(), 1);
    let (a, _da) = replica(&via, &nats);
    let (b, _db) = replica(&via, &nats);
    let admin = ApiClient::setup(&b.url, &setup_token(&b), "admin", PASSWORD)
        .await
        .expect("setup");
    let key = admin.create_token("k", "admin").await;
    let admin_a = ApiClient::with_bearer(&a.url, &key);
    let (device, dtoken) = pair(&ApiClient::anonymous(&a.url), &admin, "host-pg").await;
    let mut agent = FakeAgent::connect(&ws_of(&a), &dtoken, "host-pg")
        .await
        .expect("agent");
    let base = now_ms() - 200_000;
    let mut acked = BTreeSet::new();
    let mut pending: Vec<i64> = Vec::new();
    let mut refused = 0;
    let mut seq = 0u64;
    let mut saw_503 = (false, false);
    // Up for 3 s, away for 8 s, then up until everything pending is acknowledged.
    let started = Instant::now();
    let mut i = 0i64;
    loop {
        let t = started.elapsed();
        let down = t >= Duration::from_secs(3) && t < Duration::from_secs(11);
        if down == proxy.up.load(Ordering::SeqCst) {
            proxy.set(!down);
            // The proxy closes open connections within 20 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !down && t >= Duration::from_secs(11) && pending.is_empty() && refused > 0 {
            break;
        }
        assert!(t < Duration::from_secs(60), "acks did not resume");
        pending.push(base + i * 1000);
        i += 1;
        seq += 1;
        match try_send(&mut agent, seq, &pending, 5.0, "host-pg").await {
            Some(HubMessage::Ack { .. }) => {
                assert!(
                    proxy.up.load(Ordering::SeqCst),
                    "acknowledged while the database was away"
                );
                acked.extend(pending.drain(..));
            }
            _ => refused += 1,
        }
        if down {
            let (s, _) = admin_a.get("/api/devices").await;
            saw_503.0 |= s == 503;
            let (s, _) = admin.get("/healthz").await;
            saw_503.1 |= s == 503;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused > 0,
        "batches were refused while the database was away"
    );
    assert!(
        saw_503.0 && saw_503.1,
        "the API and /healthz said 503: {saw_503:?}"
    );
    assert!(pending.is_empty(), "acks resumed by themselves");
    let stored = admin.stored_ts(&device, base).await;
    let set: BTreeSet<i64> = stored.iter().copied().collect();
    assert_eq!(stored.len(), set.len(), "no sample twice");
    assert_eq!(set, acked, "every acknowledged sample, nothing else");
}

#[tokio::test]
async fn migrate_copies_a_sqlite_hub_once() {
    let Some((db, _)) = services() else { return };
    let db = fresh_schema(&db).await;
    // A populated SQLite hub: an admin, a token, a device with samples, a setting, and a
    // simulated device (no token: NULL columns).
    let dir = tempfile::tempdir().expect("dir");
    let hub = HubProcess::spawn(Path::new(BIN), dir.path(), "127.0.0.1:0", &["--demo", "1"]);
    let admin = ApiClient::setup(&hub.url, &setup_token(&hub), "admin", PASSWORD)
        .await
        .expect("setup");
    let key = admin.create_token("script", "admin").await;
    let code = ApiClient::anonymous(&hub.url).request_code("host-m").await;
    admin.approve(&code, "mig").await;
    let (_, t) = ApiClient::anonymous(&hub.url).poll_token(&code).await;
    let device = t["deviceId"].as_str().expect("id").to_string();
    let mut agent = FakeAgent::connect(
        &hub.url.replacen("http", "ws", 1),
        t["token"].as_str().expect("token"),
        "host-m",
    )
    .await
    .expect("agent");
    let base = now_ms() - 3_000_000;
    for b in 0..30i64 {
        let batch = (0..100)
            .map(|i| sample("host-m", base + (b * 100 + i) * 1000, (i % 50) as f64))
            .collect();
        assert!(matches!(
            agent.send_batch(b as u64 + 1, batch).await,
            HubMessage::Ack { stored: 100, .. }
        ));
    }
    let (s, _) = admin
        .post("/api/settings", json!({"retention.rawDays": 9}))
        .await;
    assert_eq!(s, 200);
    let stats_path = format!("/api/stats/{device}?from={base}&to={}", base + 3_000_000);
    let (s, stats) = admin.get(&stats_path).await;
    assert_eq!(s, 200, "{stats}");
    drop(agent);
    let (_, before) = admin.get(&format!("/api/devices/{device}")).await;
    let last_seen = before["lastSeen"].as_i64().expect("last seen");
    let mut hub = hub;
    assert!(hub.terminate(), "stopped cleanly");
    let from = format!("sqlite:{}", dir.path().join("vitals.db").display());
    let migrate = || {
        let mut c = std::process::Command::new(BIN);
        c.args(["migrate", "--from", &from, "--to", &db]);
        c
    };
    // Interrupted (kill -9 at some point of the copy), then run to the end, then again.
    let mut cut = migrate()
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("migrate starts");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = cut.kill();
    let _ = cut.wait();
    let first = migrate().output().expect("migrate runs");
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(err.contains("samples:"), "{err}");
    let second = migrate().output().expect("migrate runs");
    let err2 = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err2}");
    assert!(err2.contains("done: 0 rows added"), "{err2}");

    // A hub on PostgreSQL has it all: the token, the device, every sample once, the setting.
    let pg = tempfile::tempdir().expect("dir");
    let hub = HubProcess::spawn(
        Path::new(BIN),
        pg.path(),
        "127.0.0.1:0",
        &["--database-url", &db],
    );
    assert!(hub.setup_url.is_none(), "users came along");
    let api = ApiClient::with_bearer(&hub.url, &key);
    let ts = api.stored_ts(&device, base).await;
    assert_eq!(ts.len(), 3000);
    assert_eq!(ts.iter().collect::<BTreeSet<_>>().len(), 3000);
    let (_, settings) = api.get("/api/settings").await;
    assert_eq!(settings["retention.rawDays"], 9, "{settings}");
    let (_, pg_stats) = api.get(&stats_path).await;
    assert_eq!(pg_stats["samples"], 3000, "{pg_stats}");
    // Exact figures match; p95 may come from the rollups' sketches on one side (1 %).
    let want = stats["series"].as_object().expect("series");
    let got = &pg_stats["series"];
    assert_eq!(want.len(), got.as_object().map_or(0, |o| o.len()));
    for (name, w) in want {
        let g = &got[name];
        for f in ["count", "min", "max"] {
            assert_eq!(w[f], g[f], "{name} {f}");
        }
        let close = |f: &str, tol: f64| {
            let (a, b) = (
                w[f].as_f64().expect("number"),
                g[f].as_f64().expect("number"),
            );
            assert!(
                (a - b).abs() <= tol * a.abs().max(1.0),
                "{name} {f}: {a} vs {b}"
            );
        };
        close("avg", 1e-9);
        close("p95", 0.03);
    }
    let (_, devices) = api.get("/api/devices").await;
    assert!(devices.to_string().contains("simulated"), "{devices}");
    // `last_seen` as the SQLite hub had it (there a table of its own), not only the newest
    // sample's time.
    let (_, after) = api.get(&format!("/api/devices/{device}")).await;
    assert_eq!(after["lastSeen"].as_i64(), Some(last_seen), "{after}");
    let (s, _) = api.get("/api/auth/me").await;
    assert_eq!(s, 200);
}
