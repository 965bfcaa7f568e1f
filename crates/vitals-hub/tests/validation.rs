//! One test per ingest validation rule: the hub answers with the rule's error code, stores
//! nothing of the batch, and other devices are not affected.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vitals_proto::{ErrorCode, HubMessage};
use vitals_testkit::{ApiClient, FakeAgent, TestHub, now_ms, sample};

struct Fixture {
    hub: TestHub,
    admin: ApiClient,
    token: String,
    device_id: String,
    other: FakeAgent,
}

async fn fixture() -> Fixture {
    let hub = TestHub::start_with(|c| {
        c.ingest_batches_per_sec = 1.0;
        c.ingest_batch_burst = 1000;
    })
    .await;
    let admin = hub.setup_admin().await;
    let (device_id, token) = hub.pair(&admin, "host-v", "validated").await;
    let (_, other_token) = hub.pair(&admin, "host-o", "other").await;
    let other = FakeAgent::connect(&hub.ws_url(), &other_token, "host-o")
        .await
        .expect("other agent");
    Fixture {
        hub,
        admin,
        token,
        device_id,
        other,
    }
}

async fn count(f: &Fixture) -> usize {
    let (_, m) = f
        .admin
        .get(&format!(
            "/api/metrics/{}?from=0&to={}",
            f.device_id,
            now_ms() + 600_000
        ))
        .await;
    m["timestamps"].as_array().map_or(0, Vec::len)
}

/// Sends `batch` (a JSON value or raw text) and checks the code, that nothing was stored and
/// that another device still gets acks.
async fn rejected(f: &mut Fixture, agent: &mut FakeAgent, text: String, code: ErrorCode) {
    let before = count(f).await;
    let reply = agent.send_text(&text).await.expect("answer");
    match reply {
        HubMessage::Error {
            code: c, message, ..
        } => {
            assert_eq!(c, code, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
    assert_eq!(count(f).await, before, "nothing stored for {code:?}");
    let ok = f
        .other
        .send_batch(1, vec![sample("host-o", now_ms() - rand_ms(), 1.0)])
        .await;
    assert!(
        matches!(ok, HubMessage::Ack { .. }),
        "other device unaffected"
    );
}

fn rand_ms() -> i64 {
    (now_ms() % 100_000) + 1000
}

fn batch(seq: u64, samples: Vec<Value>) -> String {
    json!({"type": "metrics", "seq": seq, "samples": samples}).to_string()
}

fn good(ts: i64) -> Value {
    serde_json::to_value(sample("host-v", ts, 10.0)).expect("json")
}

#[tokio::test]
async fn every_rule_rejects_with_its_code_and_stores_nothing() {
    let mut f = fixture().await;
    let mut a = FakeAgent::connect(&f.hub.ws_url(), &f.token, "host-v")
        .await
        .expect("agent");
    let now = now_ms();
    let with = |patch: &dyn Fn(&mut Value)| {
        let mut v = good(now - 5000);
        patch(&mut v);
        batch(1, vec![good(now - 4000), v])
    };
    let cases: Vec<(String, ErrorCode)> = vec![
        ("{not json".into(), ErrorCode::Malformed),
        (
            json!({"type": "metrics", "seq": 1, "samples": [{"v": 1}]}).to_string(),
            ErrorCode::Malformed,
        ),
        (with(&|v| v["v"] = json!(99)), ErrorCode::UnsupportedVersion),
        (
            with(&|v| v["cpu"]["total"] = json!(100.5)),
            ErrorCode::OutOfRange,
        ),
        (
            with(&|v| v["cpu"]["perCore"][0] = json!(-3)),
            ErrorCode::OutOfRange,
        ),
        (
            with(&|v| v["net"]["rxBps"] = json!(-1)),
            ErrorCode::OutOfRange,
        ),
        (with(&|v| v["uptimeSec"] = json!(-1)), ErrorCode::OutOfRange),
        (
            with(&|v| v["mem"]["used"] = json!(1e30)),
            ErrorCode::UsedExceedsTotal,
        ),
        (
            with(&|v| v["disk"][0]["used"] = json!(1e30)),
            ErrorCode::UsedExceedsTotal,
        ),
        (
            with(&|v| v["ts"] = json!(now + 301_000)),
            ErrorCode::TsInFuture,
        ),
        (
            with(&|v| v["ts"] = json!(now - 8 * 86_400_000)),
            ErrorCode::TsTooOld,
        ),
        (
            with(&|v| v["cpu"]["perCore"] = json!(vec![1.0; 1025])),
            ErrorCode::TooManyCores,
        ),
        (
            with(&|v| v["disk"] = json!(vec![json!({"name": "d", "used": 1, "total": 2}); 257])),
            ErrorCode::TooManyDisks,
        ),
        (
            with(&|v| {
                v["netIfaces"] = json!(vec![json!({"name": "e", "rxBps": 1, "txBps": 1}); 257])
            }),
            ErrorCode::TooManyInterfaces,
        ),
        (
            with(&|v| v["hostId"] = json!("someone-else")),
            ErrorCode::HostMismatch,
        ),
        (batch(1, vec![]), ErrorCode::EmptyBatch),
        (
            batch(1, (0..1001).map(|i| good(now - 100_000 + i)).collect()),
            ErrorCode::TooManySamples,
        ),
    ];
    for (text, code) in cases {
        rejected(&mut f, &mut a, text, code).await;
    }
    // The connection survived every rejection and still accepts good data.
    let ok = a.send_text(&batch(2, vec![good(now - 1000)])).await;
    assert_eq!(ok, Some(HubMessage::Ack { seq: 2, stored: 1 }));
}

#[tokio::test]
async fn message_over_1_mib_closes_with_1009() {
    let f = fixture().await;
    let mut a = FakeAgent::connect(&f.hub.ws_url(), &f.token, "host-v")
        .await
        .expect("agent");
    let big = format!(
        "{{\"type\":\"metrics\",\"seq\":1,\"samples\":[],\"pad\":\"{}\"}}",
        "x".repeat(1 << 20)
    );
    use futures_util::SinkExt;
    let _ =
        a.ws.send(tokio_tungstenite::tungstenite::Message::Text(big.into()))
            .await;
    assert_eq!(a.close_code().await, Some(1009));
    assert_eq!(count(&f).await, 0);
}

#[tokio::test]
async fn batch_rate_limit_per_device() {
    let hub = TestHub::start_with(|c| {
        c.ingest_batches_per_sec = 1.0;
        c.ingest_batch_burst = 3;
    })
    .await;
    let admin = hub.setup_admin().await;
    let (_, token) = hub.pair(&admin, "host-r", "r").await;
    let (_, other_token) = hub.pair(&admin, "host-s", "s").await;
    let mut a = FakeAgent::connect(&hub.ws_url(), &token, "host-r")
        .await
        .expect("a");
    let mut b = FakeAgent::connect(&hub.ws_url(), &other_token, "host-s")
        .await
        .expect("b");
    let now = now_ms();
    for i in 0..3 {
        let r = a
            .send_batch(
                i,
                vec![sample("host-r", now - 10_000 + i as i64 * 1000, 1.0)],
            )
            .await;
        assert!(matches!(r, HubMessage::Ack { .. }), "{r:?}");
    }
    let r = a
        .send_batch(9, vec![sample("host-r", now - 1000, 1.0)])
        .await;
    match r {
        HubMessage::Error {
            code,
            retry_after_ms,
            ..
        } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(retry_after_ms.unwrap_or(0) > 0);
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    let r = b
        .send_batch(1, vec![sample("host-s", now - 1000, 1.0)])
        .await;
    assert!(
        matches!(r, HubMessage::Ack { .. }),
        "other device unaffected"
    );
    hub.stop().await;
}

#[tokio::test]
async fn revoking_a_token_closes_the_connection_within_a_second() {
    let f = fixture().await;
    let mut a = FakeAgent::connect(&f.hub.ws_url(), &f.token, "host-v")
        .await
        .expect("agent");
    let started = Instant::now();
    let (s, b) = f
        .admin
        .post(
            &format!("/api/devices/{}/rotate-token", f.device_id),
            json!({}),
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{b}");
    let code = tokio::time::timeout(Duration::from_secs(1), a.close_code())
        .await
        .expect("closed within a second");
    assert_eq!(code, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(1));
    // The old token no longer connects; the new one does.
    assert!(
        FakeAgent::connect(&f.hub.ws_url(), &f.token, "host-v")
            .await
            .is_err()
    );
    let new = b["token"].as_str().expect("token");
    assert!(
        FakeAgent::connect(&f.hub.ws_url(), new, "host-v")
            .await
            .is_ok()
    );
    // Deleting the device closes its connections and deletes its data.
    let mut c = FakeAgent::connect(&f.hub.ws_url(), new, "host-v")
        .await
        .expect("c");
    let (s, _) = f
        .admin
        .send(
            reqwest::Method::DELETE,
            &format!("/api/devices/{}", f.device_id),
            None,
        )
        .await;
    assert_eq!(s.as_u16(), 204);
    let code = tokio::time::timeout(Duration::from_secs(1), c.close_code())
        .await
        .expect("closed within a second");
    assert_eq!(code, Some(4401));
}

#[tokio::test]
async fn host_id_query_must_match_the_paired_host() {
    let f = fixture().await;
    let err = FakeAgent::connect(&f.hub.ws_url(), &f.token, "not-my-host").await;
    assert!(err.is_err(), "upgrade refused");
    let err = FakeAgent::connect(&f.hub.ws_url(), "vdt_bogus", "host-v").await;
    assert!(err.is_err(), "unknown token refused");
}

#[tokio::test]
async fn report_endpoint_validates_and_limits() {
    let f = fixture().await;
    let c = ApiClient::with_bearer(&f.hub.url, &f.token);
    let mut v = good(now_ms() - 1000);
    v["cpu"]["total"] = json!(-5);
    let (s, b) = c
        .post(
            "/api/report",
            json!({"type": "metrics", "seq": 3, "samples": [v]}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["code"].as_str()),
        (400, Some("out_of_range"))
    );
    let big = "x".repeat((1 << 20) + 10);
    let res = reqwest::Client::new()
        .post(format!("{}/api/report", f.hub.url))
        .bearer_auth(&f.token)
        .body(big)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 413);
    assert_eq!(count(&f).await, 0);
    let anon = ApiClient::anonymous(&f.hub.url);
    let (s, _) = anon.post("/api/report", json!({})).await;
    assert_eq!(s.as_u16(), 401);
}
