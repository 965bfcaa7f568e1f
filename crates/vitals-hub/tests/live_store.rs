//! Seed 001's reactive store protocol on `/api/store/ws`, over real sockets against a real hub:
//! the walkthrough step by step and message by message, its exercise, and the invariants
//! (no push without a change, all-or-nothing transactions, versions, auth and revocation).

mod live_common;

use std::time::Duration;

use futures_util::SinkExt;
use live_common::{Ws, pushes};
use serde_json::{Value, json};
use vitals_testkit::{ApiClient, TestHub};

async fn store_ws(hub: &TestHub) -> Ws {
    Ws::connect(&format!("{}/api/store/ws", hub.ws_url()), &[])
        .await
        .expect("upgrade")
}

fn record(v: &Value, name: &str, value: f64, unit: &str, ts: i64) {
    assert_eq!(v["name"], name, "{v}");
    assert_eq!(v["value"].as_f64(), Some(value), "{v}");
    assert_eq!(v["unit"], unit, "{v}");
    assert_eq!(v["timestamp"], ts, "{v}");
    assert_eq!(v["_version"], 1, "{v}");
    assert_eq!(v["id"].as_str().map(str::len), Some(36), "a uuid: {v}");
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect()
}

struct Pair {
    hub: TestHub,
    admin_api: ApiClient,
    admin_token: String,
    viewer_token: String,
}

async fn hub() -> Pair {
    let hub = TestHub::start().await;
    let admin_api = hub.setup_admin().await;
    let admin_token = admin_api.create_token("admin-token", "admin").await;
    let viewer_token = admin_api.create_token("viewer-token", "viewer").await;
    Pair {
        hub,
        admin_api,
        admin_token,
        viewer_token,
    }
}

async fn login(ws: &mut Ws, token: &str, role: &str) -> Value {
    let welcome = ws.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["version"], "1.0.0");
    assert!(welcome["serverTime"].as_i64().is_some_and(|t| t > 0));
    assert_eq!(welcome["requiresAuth"], true);
    let r = ws
        .call(json!({"id": 1, "type": "auth.login", "token": token}))
        .await;
    assert_eq!(r["id"], 1, "{r}");
    assert_eq!(r["type"], "result", "{r}");
    assert_eq!(r["data"]["roles"], json!([role]), "{r}");
    assert!(r["data"]["userId"].as_str().is_some_and(|s| !s.is_empty()));
    r
}

#[tokio::test]
async fn seed_001_walkthrough_and_exercise() {
    let p = hub().await;
    let mut admin = store_ws(&p.hub).await;
    let mut viewer = store_ws(&p.hub).await;

    // Step 1: connect and authenticate.
    login(&mut admin, &p.admin_token, "admin").await;
    login(&mut viewer, &p.viewer_token, "viewer").await;

    // Step 2: the viewer subscribes to three views.
    let r = viewer
        .call(json!({"id": 2, "type": "store.subscribe", "query": "all-metrics"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 2, "type": "result", "data": {"subscriptionId": "sub-1", "data": []}})
    );
    let r = viewer
        .call(json!({"id": 3, "type": "store.subscribe", "query": "metrics-by-name", "params": {"name": "cpu"}}))
        .await;
    assert_eq!(
        r,
        json!({"id": 3, "type": "result", "data": {"subscriptionId": "sub-2", "data": []}})
    );
    let r = viewer
        .call(json!({"id": 4, "type": "store.subscribe", "query": "metric-count"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 4, "type": "result", "data": {"subscriptionId": "sub-3", "data": 0}})
    );

    // Step 3: the admin inserts; the viewer gets one push per subscription.
    let r = admin
        .call(
            json!({"id": 2, "type": "store.insert", "bucket": "metrics", "data": {
            "name": "cpu", "value": 72.5, "unit": "%", "timestamp": 1706745600000i64}}),
        )
        .await;
    assert_eq!(
        (r["id"].clone(), r["type"].clone()),
        (json!(2), json!("result")),
        "{r}"
    );
    record(&r["data"], "cpu", 72.5, "%", 1706745600000);
    let first = r["data"].clone();
    let got = pushes(&mut viewer, 3).await;
    assert_eq!(got["sub-1"], json!([first]));
    assert_eq!(got["sub-2"], json!([first]));
    assert_eq!(got["sub-3"], json!(1));

    // Step 4: the viewer may not write.
    let r = viewer
        .call(
            json!({"id": 5, "type": "store.insert", "bucket": "metrics", "data": {
            "name": "hack", "value": 0, "unit": "", "timestamp": 0}}),
        )
        .await;
    assert_eq!(
        r,
        json!({"id": 5, "type": "error", "code": "FORBIDDEN",
               "message": "No permission for store.insert on metrics"})
    );

    // Step 5: a two-operation transaction; one push per affected subscription.
    let r = admin
        .call(json!({"id": 3, "type": "store.transaction", "operations": [
            {"op": "insert", "bucket": "metrics", "data": {
                "name": "memory", "value": 4200, "unit": "MB", "timestamp": 1706745660000i64}},
            {"op": "insert", "bucket": "metrics", "data": {
                "name": "cpu", "value": 68.1, "unit": "%", "timestamp": 1706745660000i64}}
        ]}))
        .await;
    assert_eq!(r["id"], 3, "{r}");
    assert_eq!(r["type"], "result", "{r}");
    let results = r["data"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 0);
    assert_eq!(results[1]["index"], 1);
    record(&results[0]["data"], "memory", 4200.0, "MB", 1706745660000);
    record(&results[1]["data"], "cpu", 68.1, "%", 1706745660000);
    let (mem, cpu2) = (results[0]["data"].clone(), results[1]["data"].clone());
    let got = pushes(&mut viewer, 3).await;
    assert_eq!(got["sub-1"], json!([first, mem, cpu2]), "insertion order");
    assert_eq!(got["sub-2"], json!([first, cpu2]));
    assert_eq!(got["sub-3"], json!(3));
    viewer.expect_silence(Duration::from_millis(200)).await;

    // Step 6: unsubscribe, then the admin clears the bucket.
    let r = viewer
        .call(json!({"id": 6, "type": "store.unsubscribe", "subscriptionId": "sub-1"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 6, "type": "result", "data": {"unsubscribed": true}})
    );
    let r = admin
        .call(json!({"id": 4, "type": "store.clear", "bucket": "metrics"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 4, "type": "result", "data": {"cleared": true}})
    );
    let got = pushes(&mut viewer, 2).await;
    assert_eq!(got["sub-2"], json!([]));
    assert_eq!(got["sub-3"], json!(0));
    assert!(!got.contains_key("sub-1"), "unsubscribed");
    viewer.expect_silence(Duration::from_millis(200)).await;

    // Exercise: active-alerts and an atomic metric + alert insert.
    let r = viewer
        .call(json!({"id": 7, "type": "store.subscribe", "query": "active-alerts"}))
        .await;
    assert_eq!(
        r,
        json!({"id": 7, "type": "result", "data": {"subscriptionId": "sub-4", "data": []}})
    );
    let r = viewer
        .call(
            json!({"id": 8, "type": "store.insert", "bucket": "alerts", "data": {
            "metric": "cpu", "threshold": 90, "severity": "high", "timestamp": 1}}),
        )
        .await;
    assert_eq!(
        r["code"], "FORBIDDEN",
        "viewers read alerts but cannot create them"
    );
    let r = admin
        .call(json!({"id": 5, "type": "store.transaction", "operations": [
            {"op": "insert", "bucket": "metrics", "data": {
                "name": "cpu", "value": 95.2, "unit": "%", "timestamp": 1706745720000i64}},
            {"op": "insert", "bucket": "alerts", "data": {
                "metric": "cpu", "threshold": 90, "severity": "high", "timestamp": 1706745720000i64}}
        ]}))
        .await;
    let results = r["data"]["results"].as_array().expect("results");
    assert_eq!(results[0]["data"]["value"].as_f64(), Some(95.2));
    let alert = results[1]["data"].clone();
    assert_eq!(alert["metric"], "cpu");
    assert_eq!(alert["threshold"], 90);
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["_version"], 1);
    let got = pushes(&mut viewer, 3).await;
    assert_eq!(got["sub-4"], json!([alert]));
    assert_eq!(got["sub-2"], json!([results[0]["data"]]));
    assert_eq!(got["sub-3"], json!(1));
    viewer.expect_silence(Duration::from_millis(200)).await;

    // App metrics are persisted in the store and readable over HTTP too.
    let rows = p.hub.store().app_records().await.expect("records");
    assert_eq!(rows.len(), 2);
    let (s, body) = p.admin_api.get("/api/store/alerts").await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(body, json!([alert]));
    p.hub.stop().await;
}

#[tokio::test]
async fn no_push_when_the_result_does_not_change() {
    let p = hub().await;
    let mut admin = store_ws(&p.hub).await;
    let mut viewer = store_ws(&p.hub).await;
    login(&mut admin, &p.admin_token, "admin").await;
    login(&mut viewer, &p.viewer_token, "viewer").await;
    viewer
        .call(json!({"id": 2, "type": "store.subscribe", "query": "metrics-by-name", "params": {"name": "cpu"}}))
        .await;
    viewer
        .call(json!({"id": 3, "type": "store.subscribe", "query": "latest-metrics", "params": {"n": 1}}))
        .await;
    admin
        .call(
            json!({"id": 2, "type": "store.insert", "bucket": "metrics", "data": {
            "name": "memory", "value": 1, "timestamp": 1}}),
        )
        .await;
    // Only latest-metrics changed: a memory insert does not wake metrics-by-name {cpu}.
    let got = pushes(&mut viewer, 1).await;
    assert_eq!(got["sub-2"][0]["name"], "memory");
    assert_eq!(got["sub-2"][0]["unit"], "", "default applied");
    viewer.expect_silence(Duration::from_millis(300)).await;
    p.hub.stop().await;
}

#[tokio::test]
async fn a_transaction_with_one_invalid_operation_changes_nothing() {
    let p = hub().await;
    let mut admin = store_ws(&p.hub).await;
    let mut viewer = store_ws(&p.hub).await;
    login(&mut admin, &p.admin_token, "admin").await;
    login(&mut viewer, &p.viewer_token, "viewer").await;
    viewer
        .call(json!({"id": 2, "type": "store.subscribe", "query": "all-metrics"}))
        .await;
    viewer
        .call(json!({"id": 3, "type": "store.subscribe", "query": "metric-count"}))
        .await;
    let r = admin
        .call(json!({"id": 2, "type": "store.transaction", "operations": [
            {"op": "insert", "bucket": "metrics", "data": {"name": "cpu", "value": 1, "timestamp": 1}},
            {"op": "insert", "bucket": "metrics", "data": {"name": "cpu", "timestamp": 1}}
        ]}))
        .await;
    assert_eq!(r["type"], "error", "{r}");
    assert_eq!(r["id"], 2);
    assert_eq!(r["code"], "VALIDATION_ERROR");
    viewer.expect_silence(Duration::from_millis(300)).await;
    let r = admin
        .call(json!({"id": 3, "type": "store.count", "bucket": "metrics"}))
        .await;
    assert_eq!(r["data"], 0);
    assert!(p.hub.store().app_records().await.expect("rows").is_empty());

    // Other errors: unknown bucket, unknown query, bad JSON; the connection stays usable.
    let r = admin
        .call(json!({"id": 4, "type": "store.insert", "bucket": "nope", "data": {}}))
        .await;
    assert_eq!(r["code"], "NOT_FOUND");
    let r = viewer
        .call(json!({"id": 4, "type": "store.subscribe", "query": "nope"}))
        .await;
    assert_eq!(r["code"], "NOT_FOUND");
    viewer
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{not json".into(),
        ))
        .await
        .expect("send");
    let r = viewer.recv().await;
    assert_eq!(
        (r["type"].clone(), r["code"].clone()),
        (json!("error"), json!("BAD_REQUEST"))
    );
    let r = viewer
        .call(json!({"id": 5, "type": "store.all", "bucket": "metrics"}))
        .await;
    assert_eq!(r["data"], json!([]));
    p.hub.stop().await;
}

#[tokio::test]
async fn update_checks_the_version_and_reads_work() {
    let p = hub().await;
    let mut admin = store_ws(&p.hub).await;
    login(&mut admin, &p.admin_token, "admin").await;
    let r = admin
        .call(
            json!({"id": 2, "type": "store.insert", "bucket": "metrics", "data": {
            "name": "disk", "value": 10, "unit": "GB", "timestamp": 5}}),
        )
        .await;
    let id = r["data"]["id"].as_str().expect("id").to_string();
    let r = admin
        .call(
            json!({"id": 3, "type": "store.update", "bucket": "metrics", "key": id,
                     "data": {"value": 11, "_version": 1}}),
        )
        .await;
    assert_eq!(r["data"]["_version"], 2, "{r}");
    assert_eq!(r["data"]["value"], 11);
    let r = admin
        .call(
            json!({"id": 4, "type": "store.update", "bucket": "metrics", "key": id,
                     "data": {"value": 12, "_version": 1}}),
        )
        .await;
    assert_eq!(r["code"], "CONFLICT", "{r}");
    let r = admin
        .call(json!({"id": 5, "type": "store.get", "bucket": "metrics", "key": id}))
        .await;
    assert_eq!(r["data"]["value"], 11);
    let r = admin
        .call(
            json!({"id": 6, "type": "store.where", "bucket": "metrics", "filter": {"unit": "GB"}}),
        )
        .await;
    assert_eq!(ids(&r["data"]), vec![id.clone()]);
    let r = admin
        .call(json!({"id": 7, "type": "store.delete", "bucket": "metrics", "key": id}))
        .await;
    assert_eq!(r["data"], json!({"deleted": true}));
    let r = admin
        .call(json!({"id": 8, "type": "store.delete", "bucket": "metrics", "key": id}))
        .await;
    assert_eq!(r["code"], "NOT_FOUND");
    let r = admin
        .call(
            json!({"id": 9, "type": "store.insert", "bucket": "alerts", "data": {
            "metric": "cpu", "threshold": 1, "severity": "dire", "timestamp": 1}}),
        )
        .await;
    assert_eq!(r["code"], "VALIDATION_ERROR");
    p.hub.stop().await;
}

#[tokio::test]
async fn auth_cookie_upgrade_timeout_origin_and_revocation() {
    let p = hub().await;
    // A signed-in browser connects with its cookie: no login needed.
    let cookie = p.admin_api.cookie().expect("cookie").to_string();
    let mut ws = Ws::connect(
        &format!("{}/api/store/ws", p.hub.ws_url()),
        &[("cookie", &cookie)],
    )
    .await
    .expect("upgrade");
    let w = ws.recv().await;
    assert_eq!(w["requiresAuth"], false);
    let r = ws
        .call(json!({"id": 1, "type": "store.subscribe", "query": "devices"}))
        .await;
    assert_eq!(r["data"]["data"], json!([]));

    // A foreign Origin is refused before the upgrade.
    let refused = Ws::connect(
        &format!("{}/api/store/ws", p.hub.ws_url()),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.err(), Some(403));

    // Requests before auth.login are refused; a bad token too.
    let mut anon = store_ws(&p.hub).await;
    anon.recv().await;
    let r = anon
        .call(json!({"id": 1, "type": "store.all", "bucket": "metrics"}))
        .await;
    assert_eq!(r["code"], "UNAUTHORIZED");
    let r = anon
        .call(json!({"id": 2, "type": "auth.login", "token": "vat_nope"}))
        .await;
    assert_eq!(r["code"], "UNAUTHORIZED");
    // ... and the socket is closed when no login comes within 5 s.
    let (code, reason) = anon
        .close_frame(Duration::from_secs(8))
        .await
        .expect("closed");
    assert_eq!(code, 4001, "{reason}");

    // Revoking the API token closes its connections within a second.
    let mut v = store_ws(&p.hub).await;
    login(&mut v, &p.viewer_token, "viewer").await;
    let (_, tokens) = p.admin_api.get("/api/tokens").await;
    let id = tokens
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["name"] == "viewer-token")
        .and_then(|t| t["id"].as_str())
        .expect("token id")
        .to_string();
    let started = std::time::Instant::now();
    let (s, _) = p
        .admin_api
        .send(reqwest::Method::DELETE, &format!("/api/tokens/{id}"), None)
        .await;
    assert!(s.is_success());
    let (code, _) = v.close_frame(Duration::from_secs(3)).await.expect("closed");
    assert_eq!(code, 4401);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    p.hub.stop().await;
}

#[tokio::test]
async fn deleting_a_user_closes_their_connections() {
    let p = hub().await;
    p.admin_api
        .create_user("carol", "viewer", vitals_testkit::PASSWORD)
        .await;
    let carol = ApiClient::login(&p.hub.url, "carol", vitals_testkit::PASSWORD)
        .await
        .expect("login");
    let cookie = carol.cookie().expect("cookie").to_string();
    let mut ws = Ws::connect(
        &format!("{}/api/store/ws", p.hub.ws_url()),
        &[("cookie", &cookie)],
    )
    .await
    .expect("upgrade");
    assert_eq!(ws.recv().await["requiresAuth"], false);
    let (_, users) = p.admin_api.get("/api/users").await;
    let id = users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["username"] == "carol")
        .and_then(|u| u["id"].as_str())
        .expect("carol")
        .to_string();
    let started = std::time::Instant::now();
    let (s, _) = p
        .admin_api
        .send(reqwest::Method::DELETE, &format!("/api/users/{id}"), None)
        .await;
    assert!(s.is_success(), "{s}");
    let (code, _) = ws
        .close_frame(Duration::from_secs(3))
        .await
        .expect("closed");
    assert_eq!(code, 4401);
    assert!(started.elapsed() < Duration::from_millis(1500));
    p.hub.stop().await;
}
