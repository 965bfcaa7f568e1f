//! The web dashboard's server side over real HTTP: the fallback that serves the app (or says
//! how to build it), caching headers, and `GET /api/overview`, the one request that fills the
//! fleet page with every device's latest values and sparklines.

use reqwest::StatusCode;
use vitals_proto::HubMessage;
use vitals_testkit::{FakeAgent, TestHub, now_ms, sample};

#[tokio::test]
async fn unknown_paths_fall_back_to_the_app_or_say_how_to_build_it() {
    let hub = TestHub::start().await;
    let http = reqwest::Client::new();
    let built = vitals_hub::web::is_built();

    let r = http
        .get(format!("{}/devices/abc?tab=history", hub.url))
        .send()
        .await
        .expect("request");
    if built {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["cache-control"],
            "no-cache",
            "index.html is never cached"
        );
        assert!(r.headers().contains_key("content-security-policy"));
        let body = r.text().await.expect("body");
        assert!(body.contains("<div id=\"app\">"), "the app's index: {body}");
    } else {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = r.text().await.expect("body");
        assert!(body.contains("README"), "names how to build it: {body}");
    }

    // A missing hashed asset is a real 404, never the app's HTML.
    let r = http
        .get(format!("{}/assets/index-missing.js", hub.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Dotfiles of the build folder are not served; writes to page paths are not routes.
    let r = http
        .get(format!("{}/.gitignore", hub.url))
        .send()
        .await
        .expect("request");
    assert_ne!(r.text().await.expect("body"), "*\n!.gitignore\n");
    let r = http
        .post(format!("{}/devices/abc", hub.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Unknown API paths keep their JSON 404.
    let r = http
        .get(format!("{}/api/nope", hub.url))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let j: serde_json::Value = r.json().await.expect("json");
    assert_eq!(j["error"], "not_found");
}

#[tokio::test]
async fn overview_has_every_device_with_four_sparklines() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let (device_id, token) = hub.pair(&admin, "host-web", "web-1").await;
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-web")
        .await
        .expect("agent connects");
    let t0 = now_ms() - 3_000;
    let mut sent = Vec::new();
    for i in 0..3 {
        let s = sample("host-web", t0 + i * 1000, 10.0 + i as f64);
        sent.push(s.clone());
        let ack = agent.send_batch(i as u64 + 1, vec![s]).await;
        assert_eq!(
            ack,
            HubMessage::Ack {
                seq: i as u64 + 1,
                stored: 1
            }
        );
    }

    let (status, v) = admin.get("/api/overview").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let list = v.as_array().expect("array");
    let d = list
        .iter()
        .find(|d| d["id"] == device_id.as_str())
        .expect("the paired device");
    assert_eq!(d["name"], "web-1");
    assert_eq!(d["status"], "online");
    assert_eq!(d["latest"]["cpu"], 12.0);
    let spark = &d["spark"];
    assert_eq!(
        spark["ts"],
        serde_json::json!(sent.iter().map(|s| s.ts).collect::<Vec<_>>())
    );
    assert_eq!(spark["cpu"], serde_json::json!([10.0, 11.0, 12.0]));
    let last = &sent[2];
    let net = spark["net.bps"][2].as_f64().expect("net");
    assert!((net - (last.net.rx_bps + last.net.tx_bps)).abs() < 1e-6);
    let mem = spark["mem.pct"][2].as_f64().expect("mem");
    assert!((mem - 100.0 * last.mem.used / last.mem.total).abs() < 1e-6);
    assert_eq!(spark["disk.pct"].as_array().map(Vec::len), Some(3));

    // Viewers may read it; nobody signed out may.
    let (status, _) = vitals_testkit::ApiClient::anonymous(&hub.url)
        .get("/api/overview")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
