//! End to end over real sockets: a hub on 127.0.0.1:0 with a temporary data dir -> first admin
//! -> pairing through every status -> WebSocket ingest with acks -> `/api/metrics` and
//! `/api/stats` return exactly what was sent (p95 against a reference computed here).

use std::time::Duration;

use serde_json::json;
use vitals_proto::HubMessage;
use vitals_testkit::{ApiClient, FakeAgent, TestHub, now_ms, sample};

#[tokio::test]
async fn first_admin_pairing_ingest_and_queries() {
    let hub = TestHub::start_with(|c| c.pairing_code_ttl_secs = 2).await;
    let anon = ApiClient::anonymous(&hub.url);

    // First run: setup is needed, a wrong token is refused, the right one works once.
    let (s, b) = anon.get("/api/setup").await;
    assert_eq!((s.as_u16(), b["needed"].as_bool()), (200, Some(true)));
    let (s, b) = anon
        .post(
            "/api/setup",
            json!({"token": "nope", "username": "x", "password": "long-enough"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), b["error"].as_str()),
        (403, Some("invalid_setup_token"))
    );
    let admin = hub.setup_admin().await;
    let token = hub.hub.setup_token.clone().expect("token");
    let again = ApiClient::setup(&hub.url, &token, "second", "long-enough-pw").await;
    assert!(again.is_err(), "the setup link works once");
    let (s, me) = admin.get("/api/auth/me").await;
    assert_eq!((s.as_u16(), me["role"].as_str()), (200, Some("admin")));

    // Pairing: pending -> approve -> token exactly once -> not_found.
    let code = anon.request_code("host-e2e").await;
    assert_eq!(code.len(), 9);
    assert_eq!(&code[4..5], "-");
    let (s, b) = anon.poll_token(&code).await;
    assert_eq!((s, b["status"].as_str()), (404, Some("pending")));
    let (s, who) = admin
        .get(&format!("/api/device-codes/{}", code.to_lowercase()))
        .await;
    assert_eq!(s.as_u16(), 200, "codes are accepted in any case: {who}");
    assert_eq!(who["hostId"], "host-e2e");
    assert_eq!(who["hostname"], "host-e2e.local");
    assert_eq!(who["agentVersion"], "test");
    assert_eq!(who["sourceIp"], "127.0.0.1");
    admin.approve(&code.replace('-', ""), "web-1").await;
    let (s, b) = admin
        .post(
            &format!("/api/device-codes/{code}/approve"),
            json!({"name": "twice"}),
        )
        .await;
    assert_eq!(s.as_u16(), 409, "a code is approved once: {b}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = anon.poll_token(&code).await;
    assert_eq!(s, 200, "{b}");
    let device_id = b["deviceId"].as_str().expect("id").to_string();
    let dev_token = b["token"].as_str().expect("token").to_string();
    assert!(dev_token.starts_with("vdt_") && dev_token.len() >= 4 + 43);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = anon.poll_token(&code).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (404, Some("not_found")),
        "token given once"
    );

    // Expiry: a code not approved within its TTL answers 410.
    let late = anon.request_code("host-late").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, b) = anon.poll_token(&late).await;
    assert_eq!((s, b["status"].as_str()), (410, Some("expired")));

    // Ingest over the agent WebSocket, with acks after commit.
    let mut agent = FakeAgent::connect(&hub.ws_url(), &dev_token, "host-e2e")
        .await
        .expect("agent connects");
    let t0 = (now_ms() / 1000 - 120) * 1000;
    let cpus: Vec<f64> = (0..100).map(|i| ((i * 37) % 101) as f64).collect();
    let samples: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(i, c)| sample("host-e2e", t0 + i as i64 * 1000, *c))
        .collect();
    for (seq, chunk) in samples.chunks(25).enumerate() {
        let ack = agent.send_batch(seq as u64 + 1, chunk.to_vec()).await;
        assert_eq!(
            ack,
            HubMessage::Ack {
                seq: seq as u64 + 1,
                stored: 25
            }
        );
    }
    // A replay stores nothing new.
    let ack = agent.send_batch(9, samples[..25].to_vec()).await;
    assert_eq!(ack, HubMessage::Ack { seq: 9, stored: 0 });

    // History returns exactly what was sent.
    let q = format!("/api/metrics/{device_id}?from={t0}&to={}", t0 + 99_000);
    let (s, m) = admin.get(&q).await;
    assert_eq!(s.as_u16(), 200, "{m}");
    let ts: Vec<i64> = serde_json::from_value(m["timestamps"].clone()).expect("ts");
    assert_eq!(ts, (0..100).map(|i| t0 + i * 1000).collect::<Vec<_>>());
    let cpu: Vec<f64> = serde_json::from_value(m["series"]["cpu"].clone()).expect("cpu");
    assert_eq!(cpu, cpus);
    let mem: Vec<f64> = serde_json::from_value(m["series"]["mem.used"].clone()).expect("mem");
    assert_eq!(mem, samples.iter().map(|s| s.mem.used).collect::<Vec<_>>());

    // Downsampled to at most `points` rows, averaging buckets.
    let (_, m) = admin.get(&format!("{q}&points=10")).await;
    let n = m["timestamps"].as_array().expect("ts").len();
    assert!((1..=10).contains(&n), "{n} rows");
    let avg: Vec<f64> = serde_json::from_value(m["series"]["cpu"].clone()).expect("cpu");
    let mean_all = cpus.iter().sum::<f64>() / 100.0;
    let mean_buckets = avg.iter().sum::<f64>() / avg.len() as f64;
    assert!((mean_all - mean_buckets).abs() < 5.0);

    // Statistics against a reference computed here (nearest-rank p95).
    let (s, st) = admin
        .get(&format!(
            "/api/stats/{device_id}?from={t0}&to={}",
            t0 + 99_000
        ))
        .await;
    assert_eq!(s.as_u16(), 200, "{st}");
    let mut sorted = cpus.clone();
    sorted.sort_by(f64::total_cmp);
    let p95 = sorted[(0.95f64 * 100.0).ceil() as usize - 1];
    let c = &st["series"]["cpu"];
    assert_eq!(c["count"], 100);
    assert_eq!(c["min"].as_f64(), Some(sorted[0]));
    assert_eq!(c["max"].as_f64(), Some(sorted[99]));
    assert_eq!(c["p95"].as_f64(), Some(p95));
    let avg = cpus.iter().sum::<f64>() / 100.0;
    assert!((c["avg"].as_f64().expect("avg") - avg).abs() < 1e-9);

    // The device shows up with its latest sample.
    let (_, clients) = admin.get("/api/clients").await;
    let d = &clients.as_array().expect("list")[0];
    assert_eq!(d["id"], device_id.as_str());
    assert_eq!(d["name"], "web-1");
    assert_eq!(d["simulated"], false);
    assert_eq!(d["latest"]["cpu"]["total"].as_f64(), cpus.last().copied());
    assert!(matches!(
        d["status"].as_str(),
        Some("online" | "stale" | "offline")
    ));

    // State (seed 002 shapes) round-trips.
    let state_msg = json!({"type": "state", "seq": 50,
        "systemInfo": {"os": "Debian 12", "architecture": "x86_64", "uptime": 5.0, "hostname": "h",
                       "ipAddress": "10.0.0.2", "macAddress": "aa:bb", "agentVersion": "1.2.3"},
        "processes": {"top_processes": [{"pid": 1, "name": "init", "user": "root", "cpu": 0.1, "rss": 1024.0}]}});
    let ack = agent.send_text(&state_msg.to_string()).await.expect("ack");
    assert_eq!(ack, HubMessage::Ack { seq: 50, stored: 0 });
    let (_, st) = admin.get(&format!("/api/devices/{device_id}/state")).await;
    assert_eq!(st["systemInfo"]["os"], "Debian 12");
    assert_eq!(st["processes"]["top_processes"][0]["name"], "init");
    let (_, dev) = admin.get(&format!("/api/devices/{device_id}")).await;
    assert_eq!(dev["agentVersion"], "1.2.3");

    // POST /api/report takes the same batch, answers after commit, idempotently.
    let report = ApiClient::with_bearer(&hub.url, &dev_token);
    let batch = json!({"type": "metrics", "seq": 77,
        "samples": [sample("host-e2e", t0 + 100_000, 12.0), sample("host-e2e", t0 + 99_000, 1.0)]});
    let (s, b) = report.post("/api/report", batch.clone()).await;
    assert_eq!(
        (s.as_u16(), b["type"].as_str(), b["stored"].as_u64()),
        (200, Some("ack"), Some(1))
    );
    let (s, b) = report.post("/api/report", batch).await;
    assert_eq!((s.as_u16(), b["stored"].as_u64()), (200, Some(0)));

    hub.stop().await;
}

#[tokio::test]
async fn sessions_logout_and_csrf() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    admin
        .create_user("viewer1", "viewer", "viewer-password")
        .await;
    let viewer = ApiClient::login(&hub.url, "viewer1", "viewer-password")
        .await
        .expect("viewer signs in");
    let (s, me) = viewer.get("/api/auth/me").await;
    assert_eq!((s.as_u16(), me["role"].as_str()), (200, Some("viewer")));
    let bad = ApiClient::login(&hub.url, "viewer1", "wrong-password").await;
    assert!(bad.is_err());

    // A cookie-authenticated write without the CSRF header is refused.
    let http = reqwest::Client::new();
    let cookie = admin.cookie().expect("cookie").to_string();
    let res = http
        .post(format!("{}/api/tokens", hub.url))
        .header("cookie", &cookie)
        .json(&json!({"name": "x", "role": "viewer"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 403);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "csrf_failed");

    // Logout ends the session.
    let (s, _) = admin.post("/api/auth/logout", json!({})).await;
    assert_eq!(s.as_u16(), 204);
    let (s, _) = admin.get("/api/auth/me").await;
    assert_eq!(s.as_u16(), 401);
    hub.stop().await;
}

#[tokio::test]
async fn login_cookie_flags() {
    let hub = TestHub::start().await;
    let token = hub.hub.setup_token.clone().expect("token");
    let res = reqwest::Client::new()
        .post(format!("{}/api/setup", hub.url))
        .json(&json!({"token": token, "username": "root", "password": "long-enough"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 201);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("vitals_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly"));
    assert!(session.contains("SameSite=Strict"));
    assert!(!session.contains("Secure"), "no Secure flag without TLS");
    hub.stop().await;
}

#[tokio::test]
async fn a_range_over_the_raw_row_cap_is_refused_with_a_clear_error() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let (device_id, _) = hub.pair(&admin, "big-host", "big").await;
    let store = hub.store();
    let dev = store.device(&device_id).await.expect("q").expect("device");
    let t0 = now_ms() - 86_400_000;
    let rows = vitals_hub::routes::queries::MAX_RAW_ROWS + 1;
    let names: std::sync::Arc<str> = std::sync::Arc::from("cpu");
    let samples: Vec<vitals_store::Row> = (0..rows)
        .map(|i| vitals_store::Row {
            ts: t0 + i,
            names: names.clone(),
            values: vec![1.0],
        })
        .collect();
    store
        .insert_batches(&[vitals_store::SampleBatch {
            device_seq: dev.seq,
            samples,
            now: t0,
        }])
        .await
        .expect("insert");
    for path in ["metrics", "stats"] {
        let (s, b) = admin
            .get(&format!(
                "/api/{path}/{device_id}?from={t0}&to={}",
                t0 + rows
            ))
            .await;
        assert_eq!(
            (s.as_u16(), b["error"].as_str()),
            (400, Some("range_too_large")),
            "{b}"
        );
    }
    let (s, _) = admin
        .get(&format!(
            "/api/metrics/{device_id}?from={t0}&to={}",
            t0 + 1000
        ))
        .await;
    assert_eq!(s.as_u16(), 200, "a narrower range works");
    hub.stop().await;
}
