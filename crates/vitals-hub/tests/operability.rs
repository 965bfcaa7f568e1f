//! Operability: TLS (HTTPS and WSS over a self-signed certificate), `/metrics`, `/healthz`,
//! settings validation, and the CLI (`check-config`, `user add`, `token create`).

use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::json;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vitals_proto::HubMessage;
use vitals_testkit::{ApiClient, FakeAgent, PASSWORD, TestHub, now_ms, sample};

const BIN: &str = env!("CARGO_BIN_EXE_vitals-hub");

#[tokio::test]
async fn tls_serves_https_and_wss_with_secure_cookies() {
    vitals_testkit::init_crypto();
    let dir = tempfile::tempdir().expect("tmp");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert_pem = ck.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).expect("write");
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).expect("write");
    let hub = TestHub::start_with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    assert!(hub.url.starts_with("https://"));
    let port = hub.hub.addr.port();
    let base = format!("https://localhost:{port}");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let res = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("https works");
    assert_eq!(res.status().as_u16(), 200);
    // Secure flag on the session cookie under TLS.
    let token = hub.hub.setup_token.clone().expect("token");
    let res = http
        .post(format!("{base}/api/setup"))
        .json(&json!({"token": token, "username": "root", "password": PASSWORD}))
        .send()
        .await
        .expect("setup");
    assert_eq!(res.status().as_u16(), 201);
    let secure = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .all(|c| c.contains("; Secure"));
    assert!(secure, "cookies are Secure under TLS");
    // Plain HTTP on the TLS port does not work.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(
        plain.map(|r| r.status().as_u16() != 200).unwrap_or(true),
        "no plain HTTP under TLS"
    );

    // WSS ingest.
    let body: serde_json::Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert!(body["csrfToken"].is_string());
    let code: serde_json::Value = http
        .post(format!("{base}/api/device-codes"))
        .json(&json!({"hostId": "tls-host"}))
        .send()
        .await
        .expect("code")
        .json()
        .await
        .expect("json");
    let code = code["code"].as_str().expect("code").to_string();
    let admin_token = {
        // Use the store-independent CLI-free path: an API token through the session.
        let res = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": "root", "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("vitals_session="))
            .and_then(|c| c.split(';').next())
            .expect("cookie")
            .to_string();
        let csrf: serde_json::Value = res.json().await.expect("json");
        let t: serde_json::Value = http
            .post(format!("{base}/api/tokens"))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf["csrfToken"].as_str().expect("csrf"))
            .json(&json!({"name": "tls", "role": "admin"}))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        t["token"].as_str().expect("token").to_string()
    };
    let res = http
        .post(format!("{base}/api/device-codes/{code}/approve"))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "tls"}))
        .send()
        .await
        .expect("approve");
    assert_eq!(res.status().as_u16(), 201);
    let tok: serde_json::Value = http
        .get(format!("{base}/api/device-token?code={code}"))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json");
    let dev_token = tok["token"].as_str().expect("token");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).expect("root");
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut req = format!("wss://localhost:{port}/agent?hostId=tls-host")
        .into_client_request()
        .expect("req");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {dev_token}").parse().expect("hdr"),
    );
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(Connector::Rustls(Arc::new(cfg))),
    )
    .await
    .expect("wss connects");
    let mut agent = FakeAgent { ws };
    let r = agent
        .send_batch(1, vec![sample("tls-host", now_ms() - 1000, 3.0)])
        .await;
    assert_eq!(r, HubMessage::Ack { seq: 1, stored: 1 });
    drop(agent);
    hub.stop().await;
}

#[tokio::test]
async fn metrics_healthz_and_settings() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let (_, token) = hub.pair(&admin, "m-host", "m").await;
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "m-host")
        .await
        .expect("agent");
    agent
        .send_batch(1, vec![sample("m-host", now_ms() - 1000, 1.0)])
        .await;
    agent.send_text("{bad").await;
    let text = reqwest::get(format!("{}/metrics", hub.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "vitals_ingested_samples_total",
        "vitals_rejected_batches_total{reason=\"malformed\"}",
        "vitals_connected_agents",
        "vitals_commit_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let (s, h) = ApiClient::anonymous(&hub.url).get("/healthz").await;
    assert_eq!((s.as_u16(), h["status"].as_str()), (200, Some("ok")));

    // Settings: defaults, a valid partial update, and every bad key reported at once.
    let (_, st) = admin.get("/api/settings").await;
    assert_eq!(st["retention.rawDays"], 7);
    let (s, st) = admin
        .post("/api/settings", json!({"retention.rawDays": 3}))
        .await;
    assert_eq!((s.as_u16(), &st["retention.rawDays"]), (200, &json!(3)));
    let (s, e) = admin
        .post(
            "/api/settings",
            json!({"retention.rawDays": 0, "bogus": 1, "alerts.slackWebhookUrl": "file:///etc/passwd"}),
        )
        .await;
    assert_eq!(
        (s.as_u16(), e["error"].as_str()),
        (400, Some("invalid_settings"))
    );
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("retention.rawDays")
            && msg.contains("bogus")
            && msg.contains("slackWebhookUrl"),
        "{msg}"
    );
    let (_, st) = admin.get("/api/settings").await;
    assert_eq!(
        st["retention.rawDays"], 3,
        "a rejected update changes nothing"
    );
    // Retention applies without a restart: a 4-day-old sample is now too old.
    let r = agent
        .send_batch(2, vec![sample("m-host", now_ms() - 4 * 86_400_000, 1.0)])
        .await;
    assert!(
        matches!(
            r,
            HubMessage::Error {
                code: vitals_proto::ErrorCode::TsTooOld,
                ..
            }
        ),
        "{r:?}"
    );
    let (s, _) = admin
        .post(
            "/api/settings",
            json!({"devices.staleAfterSec": 100, "devices.offlineAfterSec": 50}),
        )
        .await;
    assert_eq!(s.as_u16(), 400, "stale must be below offline");
    hub.stop().await;
}

#[test]
fn check_config_reports_every_error_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("hub.toml");
    std::fs::write(&cfg, "listne = \"x\"\ndemo = \"lots\"\n").expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .env("VITALS_SELF_MONITOR", "perhaps")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listne") && err.contains("demo") && err.contains("VITALS_SELF_MONITOR"),
        "{err}"
    );

    std::fs::write(&cfg, "listen = \"127.0.0.1:9999\"\n").expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1:9999"));
}

#[tokio::test]
async fn cli_user_add_and_token_create_work_against_a_running_hub() {
    let hub = TestHub::start().await;
    let data = hub.dir.path().to_path_buf();
    let mut child = Command::new(BIN)
        .args(["user", "add", "carol", "--role", "viewer", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"carol-password\n")
        .expect("write");
    let out = child.wait_with_output().expect("exit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let carol = ApiClient::login(&hub.url, "carol", "carol-password")
        .await
        .expect("login");
    let (_, me) = carol.get("/api/auth/me").await;
    assert_eq!(me["role"], "viewer");

    let out = Command::new(BIN)
        .args(["token", "create", "ci", "--role", "admin", "--data-dir"])
        .arg(&data)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("vat_"));
    let c = ApiClient::with_bearer(&hub.url, &token);
    let (s, users) = c.get("/api/users").await;
    assert_eq!(s.as_u16(), 200);
    assert!(
        users
            .as_array()
            .expect("list")
            .iter()
            .any(|u| u["username"] == "carol")
    );
    hub.stop().await;
}
