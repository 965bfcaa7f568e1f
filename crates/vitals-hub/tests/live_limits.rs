//! Limits and back-pressure of the live surfaces: a client that stops reading neither slows
//! the others nor grows the hub's memory and is cut off; connection caps per hub and per user;
//! the message size cap.

mod live_common;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use live_common::Ws;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use vitals_testkit::TestHub;

async fn logged_in(hub: &TestHub, token: &str) -> Ws {
    let mut ws = Ws::connect(&format!("{}/api/store/ws", hub.ws_url()), &[])
        .await
        .expect("upgrade");
    ws.recv().await;
    let r = ws
        .call(json!({"id": 1, "type": "auth.login", "token": token}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_without_slowing_others() {
    let hub = TestHub::start_with(|c| c.viewer_send_timeout_ms = 1000).await;
    let admin_api = hub.setup_admin().await;
    let token = admin_api.create_token("t", "admin").await;
    let mut admin = logged_in(&hub, &token).await;
    let mut fast = logged_in(&hub, &token).await;
    let mut slow = logged_in(&hub, &token).await;
    let r = slow
        .call(json!({"id": 2, "type": "store.subscribe", "query": "all-metrics"}))
        .await;
    assert_eq!(r["type"], "result");
    let r = fast
        .call(json!({"id": 2, "type": "store.subscribe", "query": "metric-count"}))
        .await;
    assert_eq!(r["data"]["data"], 0);
    // From here on `slow` reads nothing; its all-metrics view grows by ~60 KB per commit.
    let live = &hub.hub.state().live;
    assert_eq!(live.viewers.count(), 3);
    let long = "x".repeat(500);
    let mut worst = Duration::ZERO;
    for round in 0..60u64 {
        let ops: Vec<_> = (0..100)
            .map(|i| {
                json!({"op": "insert", "bucket": "metrics", "data": {
                "name": format!("{long}{i}"), "value": i, "timestamp": round}})
            })
            .collect();
        let r = admin
            .call(json!({"id": round + 10, "type": "store.transaction", "operations": ops}))
            .await;
        assert_eq!(r["type"], "result", "{r}");
        let sent = Instant::now();
        // The fast reader sees every commit's count promptly.
        let want = (round + 1) * 100;
        loop {
            let m = fast.recv().await;
            if m["data"] == want {
                break;
            }
        }
        worst = worst.max(sent.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "fast reader delayed by {worst:?}"
    );

    // The slow reader was disconnected, with a reason, and its queue released.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.viewers.count() > 2 {
        assert!(Instant::now() < deadline, "slow client still connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = slow.close_frame(Duration::from_secs(10)).await;
    assert!(end.is_some(), "the slow client's socket ends");
    if let Some((code, reason)) = end
        && code != 0
    {
        assert_eq!(code, 4008, "{reason}");
        assert!(reason.contains("too slow"), "{reason}");
    }
    // The others carry on.
    let r = fast
        .call(json!({"id": 3, "type": "store.count", "bucket": "metrics"}))
        .await;
    assert_eq!(r["data"], 6000);
    hub.stop().await;
}

#[tokio::test]
async fn connection_caps_and_message_size() {
    let hub = TestHub::start_with(|c| {
        c.max_viewers = 3;
        c.max_viewers_per_user = 2;
    })
    .await;
    let admin_api = hub.setup_admin().await;
    let cookie = admin_api.cookie().expect("cookie").to_string();
    let url = format!("{}/api/store/ws", hub.ws_url());
    let mut a = Ws::connect(&url, &[("cookie", &cookie)])
        .await
        .expect("1st");
    let _b = Ws::connect(&url, &[("cookie", &cookie)])
        .await
        .expect("2nd");
    // Per user (seed 004's MaxClients, per user): refused before the upgrade.
    let third = Ws::connect(&url, &[("cookie", &cookie)]).await;
    assert_eq!(third.err(), Some(503));
    // Per hub: an anonymous socket takes the last place; the next is refused.
    let mut anon = Ws::connect(&url, &[]).await.expect("3rd overall");
    assert_eq!(Ws::connect(&url, &[]).await.err(), Some(503));
    anon.recv().await;
    // The per-user cap also holds for auth.login.
    let token = admin_api.create_token("t", "viewer").await;
    let r = anon
        .call(json!({"id": 1, "type": "auth.login", "token": token}))
        .await;
    assert_eq!(r["type"], "result", "a different principal: {r}");

    // Messages over the cap close the socket with 1009.
    a.recv().await;
    let big = format!(
        r#"{{"id":1,"type":"store.all","bucket":"metrics","pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    let _ = a.ws.send(Message::Text(big.into())).await;
    let (code, _) = a.close_frame(Duration::from_secs(3)).await.expect("closed");
    assert!(code == 1009 || code == 0, "closed for size: {code}");
    hub.stop().await;
}
