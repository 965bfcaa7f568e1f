//! Alerts end to end over real sockets: a hub, a fake agent sending timed samples, and local
//! receivers standing in for Slack, a webhook and an SMTP server. Checks the lifecycle
//! (pending -> firing -> repeat -> resolved) with exact timings, payloads field by field,
//! escaping of hostile device names, retries, restarts mid-pending and mid-firing, the SSRF
//! guard, seed 001's `alerts` bucket and the API's validation and roles.

mod live_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use vitals_proto::HubMessage;
use vitals_testkit::{ApiClient, FakeAgent, TestHub, now_ms, sample};

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

#[derive(Clone)]
struct Receiver {
    tx: mpsc::UnboundedSender<Got>,
    /// Statuses to answer, in order (then 200).
    script: Arc<Mutex<Vec<u16>>>,
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let _ = r.tx.send(Got {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let status = {
        let mut s = r.script.lock().expect("lock");
        if s.is_empty() { 200 } else { s.remove(0) }
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

/// Starts an HTTP receiver on loopback; returns its base URL and what it receives.
async fn receiver(script: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/redirect",
            axum::routing::post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", "http://127.0.0.1:9/internal")],
                )
            }),
        )
        .fallback(receive)
        .with_state(Receiver {
            tx,
            script: Arc::new(Mutex::new(script)),
        });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, rx)
}

/// Collects what arrives until `n` requests or `timeout`.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Got>, n: usize, timeout: Duration) -> Vec<Got> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(g)) => out.push(g),
            _ => break,
        }
    }
    out
}

/// The delivery log once it holds `n` lines (a request is logged just after it is answered).
async fn deliveries(admin: &ApiClient, n: usize) -> Vec<Value> {
    for _ in 0..50 {
        let (_, log) = admin.get("/api/alert-deliveries").await;
        let log = log.as_array().cloned().unwrap_or_default();
        if log.len() >= n {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .get("/api/alert-deliveries")
        .await
        .1
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A hub with its admin, whose notifications may go to loopback (the receivers here).
async fn hub_allowing_private_targets() -> (TestHub, ApiClient) {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    allow_private(&admin).await;
    (hub, admin)
}

async fn allow_private(admin: &ApiClient) {
    let (s, b) = admin
        .post("/api/settings", json!({"alerts.allowPrivateTargets": true}))
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn channel(admin: &ApiClient, name: &str, kind: &str, config: Value) -> String {
    let (s, b) = admin
        .post(
            "/api/notification-channels",
            json!({"name": name, "kind": kind, "config": config}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["id"].as_str().expect("id").to_string()
}

async fn create_rule(admin: &ApiClient, rule: Value) -> Value {
    let (s, b) = admin.post("/api/alert-rules", rule).await;
    assert_eq!(s, 201, "{b}");
    b
}

/// Sends one sample per second of CPU `values`, from second `from` after `base`, in
/// batches of 10; every batch must be acknowledged.
async fn send_cpu(
    agent: &mut FakeAgent,
    host: &str,
    base: i64,
    from: i64,
    values: &[f64],
    seq: &mut u64,
) {
    for chunk in values.iter().enumerate().collect::<Vec<_>>().chunks(10) {
        let samples = chunk
            .iter()
            .map(|(i, v)| sample(host, base + (from + *i as i64) * 1000, **v))
            .collect();
        *seq += 1;
        match agent.send_batch(*seq, samples).await {
            HubMessage::Ack { .. } => {}
            other => panic!("batch refused: {other:?}"),
        }
    }
}

#[tokio::test]
async fn lifecycle_payloads_escaping_and_bucket() {
    let (hub, admin) = hub_allowing_private_targets().await;
    let (recv_url, mut rx) = receiver(vec![]).await;
    let hook = channel(
        &admin,
        "ops hook",
        "webhook",
        json!({"url": format!("{recv_url}/hook"), "headers": {"X-Team": "ops"}}),
    )
    .await;
    let slack = channel(
        &admin,
        "slack",
        "slack",
        json!({"url": format!("{recv_url}/slack")}),
    )
    .await;
    let pwned = format!("/tmp/vitals-pwned-{}", std::process::id());
    let name = format!("<script>alert(1)</script> $(touch {pwned})");
    let (device_id, token) = hub.pair(&admin, "host-alerts", &name).await;
    let rule = create_rule(
        &admin,
        json!({
            "name": "CPU hot", "deviceIds": [device_id], "metric": "cpu", "op": ">",
            "threshold": 90, "durationSec": 5, "recoverySec": 3, "severity": "critical",
            "channelIds": [hook, slack], "repeatSec": 60, "enabled": true
        }),
    )
    .await;
    let rule_id = rule["id"].as_str().expect("id").to_string();

    let viewer_token = admin.create_token("live", "viewer").await;
    let mut live = live_common::Ws::connect(
        &format!("{}/ws/live", hub.ws_url()),
        &[("authorization", &format!("Bearer {viewer_token}"))],
    )
    .await
    .expect("live upgrade");
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-alerts")
        .await
        .expect("agent");
    let base = now_ms() - 200_000;
    let mut seq = 0;
    let mut v = vec![50.0; 10];
    v.extend([95.0; 40]);
    send_cpu(&mut agent, "host-alerts", base, 0, &v, &mut seq).await;

    // Firing: both channels, once each.
    let got = collect(&mut rx, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "firing went to both channels: {got:?}");
    let hook_msg = got.iter().find(|g| g.path == "/hook").expect("webhook");
    let w = hook_msg.json();
    assert_eq!(w["version"], 1);
    assert_eq!(w["kind"], "firing");
    let a = &w["alert"];
    assert_eq!(a["ruleId"], rule_id.as_str());
    assert_eq!(a["ruleName"], "CPU hot");
    assert_eq!(a["deviceId"], device_id.as_str());
    assert_eq!(
        a["deviceName"],
        name.as_str(),
        "names travel as data, unchanged"
    );
    assert_eq!(a["metric"], "cpu");
    assert_eq!(a["op"], ">");
    assert_eq!(a["threshold"], 90.0);
    assert_eq!(a["value"], 95.0);
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["state"], "firing");
    assert_eq!(
        a["startedAt"],
        base + 10_000,
        "the condition started at second 10"
    );
    assert_eq!(a["firedAt"], base + 15_000, "and held for the 5 s duration");
    assert_eq!(a["durationSec"], 5);
    assert_eq!(w["rule"]["repeatSec"], 60);
    assert_eq!(w["url"], format!("{}/devices/{device_id}", hub.url));
    assert_eq!(w["valueText"], "95.0 %");
    assert_eq!(w["thresholdText"], "> 90.0 %");
    assert_eq!(hook_msg.headers["x-vitals-event"], "firing");
    assert_eq!(hook_msg.headers["x-team"], "ops");
    assert_eq!(hook_msg.headers["content-type"], "application/json");
    assert!(
        w["deliveryId"]
            .as_str()
            .expect("id")
            .starts_with(a["id"].as_str().expect("id"))
    );

    let s = got
        .iter()
        .find(|g| g.path == "/slack")
        .expect("slack")
        .json();
    let text = s["text"].as_str().expect("text");
    assert!(
        text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{text}"
    );
    assert!(!text.contains("<script>"), "markup is escaped: {text}");
    assert!(
        text.contains("FIRING") && text.contains("95.0 %") && text.contains("&gt; 90.0 %"),
        "{text}"
    );
    assert!(
        text.contains(&format!("<{}/devices/{device_id}|Open device>", hub.url)),
        "{text}"
    );
    let fields: Vec<String> = s["blocks"][1]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["text"].as_str().unwrap_or_default().to_string())
        .collect();
    for (label, value) in [
        ("Device", "&lt;script&gt;".to_string()),
        ("Metric", "cpu".into()),
        ("Value", "95.0 %".into()),
        ("Threshold", "&gt; 90.0 %".into()),
        ("Duration", "5 s".into()),
        ("Severity", "critical".into()),
    ] {
        assert!(
            fields
                .iter()
                .any(|f| f.starts_with(&format!("*{label}*\n")) && f.contains(&value)),
            "{label} {value} in {fields:?}"
        );
    }

    // The dashboard's live socket is told.
    let pushed = loop {
        let m = live
            .recv_within(Duration::from_secs(5))
            .await
            .expect("an alert push");
        if m["type"] == "alert" {
            break m;
        }
    };
    assert_eq!(pushed["alert"]["state"], "firing");
    assert_eq!(pushed["alert"]["ruleId"], rule_id.as_str());

    // Firing: the alert is active, and in seed 001's alerts bucket.
    let (_, active) = admin.get("/api/alerts?state=active").await;
    let mine: Vec<&Value> = active
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["ruleId"] == rule_id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{active}");
    let alert_id = mine[0]["id"].as_str().expect("id").to_string();
    let (s, rec) = admin.get(&format!("/api/store/alerts/{alert_id}")).await;
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["metric"], "cpu");
    assert_eq!(rec["severity"], "high");
    assert_eq!(rec["threshold"], 90.0);

    // Still above until second 89: one repeat at second 75 (60 s after firing).
    let v = vec![95.0; 40];
    send_cpu(&mut agent, "host-alerts", base, 50, &v, &mut seq).await;
    let got = collect(&mut rx, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let r = got
        .iter()
        .find(|g| g.path == "/hook")
        .expect("webhook")
        .json();
    assert_eq!(r["kind"], "repeat");
    assert_eq!(r["alert"]["firedAt"], base + 15_000);
    assert_eq!(r["alert"]["notifications"], 2);

    // Below from second 90: resolved at 93 (3 s recovery).
    send_cpu(&mut agent, "host-alerts", base, 90, &[40.0; 5], &mut seq).await;
    let got = collect(&mut rx, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let r = got
        .iter()
        .find(|g| g.path == "/hook")
        .expect("webhook")
        .json();
    assert_eq!(r["kind"], "resolved");
    assert_eq!(r["alert"]["state"], "resolved");
    assert_eq!(r["alert"]["endedAt"], base + 93_000);
    assert_eq!(r["alert"]["peak"], 95.0);
    // Nothing more arrives.
    assert!(
        collect(&mut rx, 1, Duration::from_millis(1500))
            .await
            .is_empty()
    );

    // History holds it, the bucket no longer does, the delivery log has 6 successes.
    let (_, all) = admin.get("/api/alerts?state=all").await;
    let e = all
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["id"] == alert_id.as_str())
        .expect("in history")
        .clone();
    assert_eq!(e["state"], "resolved");
    assert_eq!(e["notifications"], 3);
    let (s, _) = admin.get(&format!("/api/store/alerts/{alert_id}")).await;
    assert_eq!(s, 404);
    // The retention pass keeps history younger than retention.minuteDays.
    vitals_hub::retention(hub.hub.state()).await;
    let (_, all) = admin.get("/api/alerts?state=all").await;
    assert!(
        all.as_array()
            .expect("list")
            .iter()
            .any(|e| e["id"] == alert_id.as_str())
    );
    let log = deliveries(&admin, 6).await;
    assert_eq!(log.iter().filter(|d| d["ok"] == true).count(), 6, "{log:?}");
    assert!(
        !std::path::Path::new(&pwned).exists(),
        "nothing ran the device name"
    );
    hub.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff_and_logged() {
    let (hub, admin) = hub_allowing_private_targets().await;
    let (recv_url, mut rx) = receiver(vec![500, 503]).await;
    let hook = channel(
        &admin,
        "flaky",
        "webhook",
        json!({"url": format!("{recv_url}/flaky")}),
    )
    .await;
    let (device_id, token) = hub.pair(&admin, "host-retry", "retry").await;
    create_rule(
        &admin,
        json!({"name": "any cpu", "deviceIds": [device_id], "metric": "cpu",
        "threshold": 10, "channelIds": [hook]}),
    )
    .await;
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-retry")
        .await
        .expect("agent");
    let mut seq = 0;
    send_cpu(
        &mut agent,
        "host-retry",
        now_ms() - 5000,
        0,
        &[50.0],
        &mut seq,
    )
    .await;
    let got = collect(&mut rx, 3, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 3, "two failures then success: {got:?}");
    let ids: Vec<Value> = got.iter().map(|g| g.json()["deliveryId"].clone()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "the same notification each time"
    );
    let log = deliveries(&admin, 3).await;
    assert_eq!(log.len(), 3, "{log:?}");
    // Newest first: ok on attempt 3 after 500 and 503.
    assert_eq!(
        (log[0]["ok"].clone(), log[0]["attempt"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(
        (log[1]["status"].clone(), log[1]["attempt"].clone()),
        (Value::Null, json!(2))
    );
    assert!(log[2]["error"].as_str().expect("error").contains("500"));
    let gap1 = log[1]["at"].as_i64().expect("at") - log[2]["at"].as_i64().expect("at");
    let gap2 = log[0]["at"].as_i64().expect("at") - log[1]["at"].as_i64().expect("at");
    assert!(
        gap1 >= 900 && gap2 >= 1900,
        "backoff 1 s then 2 s: {gap1} {gap2}"
    );
    hub.stop().await;
}

/// A minimal SMTP server: accepts one message per connection and hands over its DATA.
async fn smtp_server() -> (u16, mpsc::UnboundedReceiver<(String, String)>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                let _ = w.write_all(b"220 test ESMTP\r\n").await;
                let mut envelope = String::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.to_ascii_uppercase();
                    if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        let _ = w.write_all(b"250-test\r\n250 8BITMIME\r\n").await;
                    } else if cmd.starts_with("MAIL") || cmd.starts_with("RCPT") {
                        envelope.push_str(&line);
                        let _ = w.write_all(b"250 OK\r\n").await;
                    } else if cmd.starts_with("DATA") {
                        let _ = w.write_all(b"354 go on\r\n").await;
                        let mut data = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        let _ = tx.send((envelope.clone(), data));
                        let _ = w.write_all(b"250 queued\r\n").await;
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        let _ = w.write_all(b"250 OK\r\n").await;
                    }
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn email_over_smtp_and_ntfy() {
    let (hub, admin) = hub_allowing_private_targets().await;
    let (port, mut mails) = smtp_server().await;
    let mail = channel(
        &admin,
        "mail",
        "email",
        json!({"host": "127.0.0.1", "port": port,
        "security": "none", "from": "Vitals <vitals@example.com>", "to": ["ops@example.com"]}),
    )
    .await;
    let (s, b) = admin
        .post(
            &format!("/api/notification-channels/{mail}/test"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["ok"], true, "{b}");
    let (envelope, data) = tokio::time::timeout(Duration::from_secs(5), mails.recv())
        .await
        .expect("in time")
        .expect("a mail");
    assert!(
        envelope.contains("<vitals@example.com>") && envelope.contains("<ops@example.com>"),
        "{envelope}"
    );
    assert!(
        data.contains(
            "Subject: [TEST] info Test notification: cpu on Vitals test device is 95.0 %"
        ),
        "{data}"
    );
    assert!(data.contains("Threshold: > 90.0 % for 60 s"), "{data}");

    let (recv_url, mut rx) = receiver(vec![]).await;
    let ntfy = channel(
        &admin,
        "phone",
        "ntfy",
        json!({"url": format!("{recv_url}/alerts"), "token": "tk_secret"}),
    )
    .await;
    let (_, b) = admin
        .post(
            &format!("/api/notification-channels/{ntfy}/test"),
            json!({}),
        )
        .await;
    assert_eq!(b["ok"], true, "{b}");
    let got = collect(&mut rx, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/alerts");
    assert_eq!(got[0].headers["authorization"], "Bearer tk_secret");
    assert_eq!(got[0].headers["priority"], "3");
    assert!(
        got[0].headers["title"]
            .to_str()
            .expect("ascii")
            .contains("[TEST]")
    );
    assert!(got[0].body.contains("Open the device:"));
    // Secrets never come back from the API.
    let (_, list) = admin.get("/api/notification-channels").await;
    assert!(!list.to_string().contains("tk_secret"), "{list}");
    hub.stop().await;
}

#[tokio::test]
async fn restart_mid_pending_and_mid_firing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().to_path_buf();
    let (recv_url, mut rx) = receiver(vec![]).await;
    let base = now_ms() - 100_000;
    let mut seq = 0;

    // Run 1: rule (cpu > 90 for 10 s), pending from second 0 to 6, then the hub stops.
    let p = path.clone();
    let hub = TestHub::start_with(move |c| c.data_dir = p).await;
    let admin = hub.setup_admin().await;
    let api_token = admin.create_token("restart", "admin").await;
    allow_private(&admin).await;
    let hook = channel(
        &admin,
        "hook",
        "webhook",
        json!({"url": format!("{recv_url}/hook")}),
    )
    .await;
    let (device_id, token) = hub.pair(&admin, "host-restart", "restart").await;
    create_rule(
        &admin,
        json!({"name": "cpu", "deviceIds": [device_id], "metric": "cpu",
        "threshold": 90, "durationSec": 10, "recoverySec": 0, "channelIds": [hook]}),
    )
    .await;
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-restart")
        .await
        .expect("agent");
    send_cpu(&mut agent, "host-restart", base, 0, &[95.0; 7], &mut seq).await;
    drop(agent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.stop().await;
    assert!(
        collect(&mut rx, 1, Duration::from_millis(500))
            .await
            .is_empty(),
        "still pending"
    );

    // Run 2: the pending timer survived: it fires at second 10, once.
    let p = path.clone();
    let hub = TestHub::start_with(move |c| c.data_dir = p).await;
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-restart")
        .await
        .expect("agent");
    send_cpu(&mut agent, "host-restart", base, 7, &[95.0; 8], &mut seq).await;
    let got = collect(&mut rx, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "exactly one firing notification: {got:?}");
    let a = got[0].json()["alert"].clone();
    assert_eq!(got[0].json()["kind"], "firing");
    assert_eq!(
        a["startedAt"], base,
        "pending since second 0, before the restart"
    );
    assert_eq!(a["firedAt"], base + 10_000);
    drop(agent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.stop().await;

    // Run 3: still firing after the restart: no second firing; resolves once.
    let p = path.clone();
    let hub = TestHub::start_with(move |c| c.data_dir = p).await;
    let admin = ApiClient::with_bearer(&hub.url, &api_token);
    let (_, active) = admin.get("/api/alerts").await;
    assert_eq!(
        active
            .as_array()
            .expect("list")
            .iter()
            .filter(|e| e["ruleName"] == "cpu")
            .count(),
        1
    );
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-restart")
        .await
        .expect("agent");
    send_cpu(
        &mut agent,
        "host-restart",
        base,
        15,
        &[95.0, 95.0],
        &mut seq,
    )
    .await;
    assert!(
        collect(&mut rx, 1, Duration::from_millis(1500))
            .await
            .is_empty(),
        "no duplicate"
    );
    send_cpu(&mut agent, "host-restart", base, 17, &[50.0], &mut seq).await;
    let got = collect(&mut rx, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].json()["kind"], "resolved");
    assert_eq!(got[0].json()["alert"]["endedAt"], base + 17_000);
    hub.stop().await;
}

#[tokio::test]
async fn ssrf_targets_are_refused() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let (recv_url, mut rx) = receiver(vec![]).await;
    let port = recv_url.rsplit(':').next().expect("port").to_string();
    for url in [
        format!("{recv_url}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.1.2.3/hook".to_string(),
        "http://192.168.0.10/hook".to_string(),
        format!("http://localhost:{port}/hook"),
        "http://[::1]:9/hook".to_string(),
    ] {
        let id = channel(&admin, "bad", "webhook", json!({"url": url})).await;
        let (s, b) = admin
            .post(&format!("/api/notification-channels/{id}/test"), json!({}))
            .await;
        assert_eq!(s, 200);
        assert_eq!(b["ok"], false, "{url}: {b}");
        assert_eq!(b["permanent"], true, "{url}: {b}");
        assert!(
            b["error"]
                .as_str()
                .expect("error")
                .contains("alerts.allowPrivateTargets"),
            "{b}"
        );
    }
    assert!(
        collect(&mut rx, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing reached loopback"
    );

    // Other schemes are refused when the channel is created.
    let (s, b) = admin
        .post(
            "/api/notification-channels",
            json!({"name": "x", "kind": "webhook", "config": {"url": "file:///etc/passwd"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    // A redirect is checked again: the first hop is allowed here, its redirect to loopback
    // is not.
    let first = recv_url.trim_start_matches("http://").to_string();
    let policy = move |host: &str, addrs: &[std::net::SocketAddr]| {
        if addrs.iter().all(|a| a.to_string() == first) {
            Ok(())
        } else {
            vitals_hub::alerts::outbound::guard(host, addrs, false)
        }
    };
    let err = vitals_hub::alerts::outbound::post_guarded(
        &format!("{recv_url}/redirect"),
        reqwest::header::HeaderMap::new(),
        b"{}".to_vec(),
        &policy,
    )
    .await
    .expect_err("redirect to loopback refused");
    assert!(err.permanent(), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    hub.stop().await;
}

#[tokio::test]
async fn api_validation_and_roles() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    admin
        .create_user("val", "viewer", vitals_testkit::PASSWORD)
        .await;
    let viewer = ApiClient::login(&hub.url, "val", vitals_testkit::PASSWORD)
        .await
        .expect("login");

    // Default rules exist (from the alerts.* settings) and follow them.
    let (s, rules) = viewer.get("/api/alert-rules").await;
    assert_eq!(s, 200);
    let cpu = rules
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["builtin"] == "cpu")
        .expect("default cpu rule")
        .clone();
    assert_eq!(cpu["threshold"], 90.0);
    assert_eq!(cpu["deviceIds"], json!([]));
    let (s, _) = admin
        .post("/api/settings", json!({"alerts.cpuThreshold": 80}))
        .await;
    assert_eq!(s, 200);
    let (_, rules) = viewer.get("/api/alert-rules").await;
    let cpu = rules
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["builtin"] == "cpu")
        .expect("cpu")
        .clone();
    assert_eq!(cpu["threshold"], 80.0);

    // Every problem at once.
    let (s, b) = admin
        .post(
            "/api/alert-rules",
            json!({"name": "", "metric": "cpu",
        "threshold": 200, "repeatSec": 5, "durationSec": 1_000_000}),
        )
        .await;
    assert_eq!(s, 400);
    let m = b["message"].as_str().expect("message");
    for part in ["`name`", "`threshold`", "`repeatSec`", "`durationSec`"] {
        assert!(m.contains(part), "{part} in {m}");
    }
    let (s, b) = admin
        .post(
            "/api/alert-rules",
            json!({"name": "x", "metric": "cpu", "threshold": 1, "bogus": 1}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().expect("m").contains("bogus"), "{b}");
    let (s, b) = admin
        .post(
            "/api/alert-rules",
            json!({"name": "x", "metric": "cpu", "threshold": 1,
        "channelIds": ["nope"], "deviceIds": ["nope"]}),
        )
        .await;
    assert_eq!(s, 400);
    let m = b["message"].as_str().expect("m");
    assert!(m.contains("no channel") && m.contains("no device"), "{m}");

    // Viewers read, never write.
    let (s, _) = viewer
        .post(
            "/api/alert-rules",
            json!({"name": "x", "metric": "cpu", "threshold": 1}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = viewer
        .post(
            "/api/notification-channels",
            json!({"name": "x", "kind": "slack", "config": {"url": "https://hooks.slack.com/x"}}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = viewer.get("/api/alerts?state=all").await;
    assert_eq!(s, 200);
    let (s, _) = viewer.get("/api/alerts?state=nope").await;
    assert_eq!(s, 400);

    // Patch, channel in use, windows, delete.
    let slack = channel(
        &admin,
        "s",
        "slack",
        json!({"url": "https://hooks.slack.com/services/T/B/secret"}),
    )
    .await;
    let (s, _) = admin
        .post(
            "/api/settings",
            json!({"alerts.slackWebhookUrl": "https://hooks.slack.com/services/T/B/topsecret"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, settings) = viewer.get("/api/settings").await;
    assert_eq!(
        settings["alerts.slackWebhookUrl"],
        "https://hooks.slack.com/…"
    );
    let (_, settings) = admin.get("/api/settings").await;
    assert!(
        settings["alerts.slackWebhookUrl"]
            .as_str()
            .expect("url")
            .ends_with("topsecret")
    );
    let (_, list) = viewer.get("/api/notification-channels").await;
    assert!(
        !list.to_string().contains("secret"),
        "viewers see no webhook secret: {list}"
    );
    let r = create_rule(
        &admin,
        json!({"name": "mem", "metric": "memory", "threshold": 80, "channelIds": [slack]}),
    )
    .await;
    let id = r["id"].as_str().expect("id");
    let (s, b) = admin
        .send(
            Method::PATCH,
            &format!("/api/alert-rules/{id}"),
            Some(json!({"threshold": 85, "enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["threshold"].clone(),
            b["enabled"].clone(),
            b["name"].clone()
        ),
        (json!(85.0), json!(false), json!("mem"))
    );
    let (s, _) = admin
        .send(
            Method::DELETE,
            &format!("/api/notification-channels/{slack}"),
            None,
        )
        .await;
    assert_eq!(s, 409);
    let (s, b) = admin
        .post(
            "/api/maintenance-windows",
            json!({"name": "nightly", "daily": {"start": "01:00", "end": "02:00"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = admin
        .post("/api/maintenance-windows", json!({"name": "bad"}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = admin
        .send(Method::DELETE, &format!("/api/alert-rules/{id}"), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = admin
        .send(
            Method::DELETE,
            &format!("/api/notification-channels/{slack}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = admin.post("/api/alerts/nope/ack", json!({})).await;
    assert_eq!(s, 404);
    hub.stop().await;
}

#[tokio::test]
async fn kill_9_between_a_failed_attempt_and_its_retry_loses_nothing_and_repeats_nothing() {
    use vitals_testkit::process::HubProcess;
    const BIN: &str = env!("CARGO_BIN_EXE_vitals-hub");
    let dir = tempfile::tempdir().expect("dir");
    // The receiver refuses the first request (503): the retry is due one second later.
    let (recv_url, mut rx) = receiver(vec![503]).await;
    let mut hub = HubProcess::spawn(std::path::Path::new(BIN), dir.path(), "127.0.0.1:0", &[]);
    let setup = hub
        .setup_url
        .as_deref()
        .and_then(|u| u.split("token=").nth(1))
        .expect("setup link")
        .to_string();
    let admin = ApiClient::setup(&hub.url, &setup, "admin", vitals_testkit::PASSWORD)
        .await
        .expect("setup");
    let api_token = admin.create_token("k9", "admin").await;
    allow_private(&admin).await;
    let hook = channel(
        &admin,
        "hook",
        "webhook",
        json!({"url": format!("{recv_url}/hook")}),
    )
    .await;
    let anon = ApiClient::anonymous(&hub.url);
    let code = anon.request_code("host-k9").await;
    admin.approve(&code, "k9").await;
    let (_, b) = anon.poll_token(&code).await;
    let (device_id, token) = (
        b["deviceId"].as_str().expect("id").to_string(),
        b["token"].as_str().expect("token").to_string(),
    );
    create_rule(
        &admin,
        json!({"name": "cpu", "deviceIds": [device_id], "metric": "cpu", "threshold": 90,
        "durationSec": 5, "recoverySec": 0, "channelIds": [hook]}),
    )
    .await;
    let ws = hub.url.replacen("http", "ws", 1);
    let mut agent = FakeAgent::connect(&ws, &token, "host-k9")
        .await
        .expect("agent");
    let base = now_ms() - 60_000;
    let mut seq = 0;
    send_cpu(&mut agent, "host-k9", base, 0, &[95.0; 8], &mut seq).await;
    let first = collect(&mut rx, 1, Duration::from_secs(5)).await;
    assert_eq!(
        first.len(),
        1,
        "the first attempt arrived (and was refused)"
    );
    hub.kill9();
    drop(agent);

    // Restarted: the queued retry is delivered, once; the alert does not fire again.
    let hub = HubProcess::spawn(std::path::Path::new(BIN), dir.path(), "127.0.0.1:0", &[]);
    let ws = hub.url.replacen("http", "ws", 1);
    let got = collect(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "the retry survived kill -9");
    assert_eq!(got[0].json()["deliveryId"], first[0].json()["deliveryId"]);
    assert_eq!(got[0].json()["kind"], "firing");
    let mut agent = FakeAgent::connect(&ws, &token, "host-k9")
        .await
        .expect("agent");
    send_cpu(&mut agent, "host-k9", base, 8, &[95.0; 4], &mut seq).await;
    assert!(
        collect(&mut rx, 1, Duration::from_millis(1500))
            .await
            .is_empty(),
        "no second firing notification"
    );
    send_cpu(&mut agent, "host-k9", base, 12, &[50.0], &mut seq).await;
    let got = collect(&mut rx, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].json()["kind"], "resolved");
    let admin = ApiClient::with_bearer(&hub.url, &api_token);
    let log = deliveries(&admin, 3).await;
    assert_eq!(log.iter().filter(|d| d["ok"] == true).count(), 2, "{log:?}");
}
