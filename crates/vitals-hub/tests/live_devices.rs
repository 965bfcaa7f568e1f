//! Device data on the live surfaces, over real sockets, with a fake agent speaking the real
//! agent protocol: seed 002's per-device channels, seed 003's `/ws/live` broadcast and the
//! dashboard's device queries on the store socket.

mod live_common;

use std::time::Duration;

use live_common::{Ws, pushes};
use serde_json::json;
use vitals_proto::state::{
    DeviceState, InterfaceInfo, NetworkInterfaces, ProcessInfo, Processes, SystemInfo,
};
use vitals_proto::{AgentMessage, HubMessage};
use vitals_testkit::{ApiClient, FakeAgent, TestHub, now_ms, sample};

struct Setup {
    hub: TestHub,
    admin: ApiClient,
    cookie: String,
    device_id: String,
    agent: FakeAgent,
}

async fn setup() -> Setup {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let (device_id, token) = hub.pair(&admin, "host-live", "web-1").await;
    let agent = FakeAgent::connect(&hub.ws_url(), &token, "host-live")
        .await
        .expect("agent connects");
    let cookie = admin.cookie().expect("cookie").to_string();
    Setup {
        hub,
        admin,
        cookie,
        device_id,
        agent,
    }
}

async fn send_sample(agent: &mut FakeAgent, seq: u64, ts: i64, cpu: f64) {
    let ack = agent
        .send_batch(seq, vec![sample("host-live", ts, cpu)])
        .await;
    assert_eq!(ack, HubMessage::Ack { seq, stored: 1 });
}

fn state_message(seq: u64) -> String {
    let st = DeviceState {
        system_info: Some(SystemInfo {
            os: "Debian 13".into(),
            hostname: "host-live".into(),
            agent_version: "test".into(),
            ..SystemInfo::default()
        }),
        processes: Some(Processes {
            top_processes: vec![ProcessInfo {
                pid: 1,
                name: "init".into(),
                ..ProcessInfo::default()
            }],
            top_by_memory: vec![],
        }),
        network_interfaces: Some(NetworkInterfaces {
            interfaces: vec![InterfaceInfo {
                name: "eth0".into(),
                up: true,
                ..InterfaceInfo::default()
            }],
        }),
    };
    serde_json::to_string(&AgentMessage::State {
        seq: Some(seq),
        state: st,
    })
    .expect("json")
}

async fn device_ws(s: &Setup) -> Ws {
    Ws::connect(
        &format!("{}/api/v1/devices/{}/ws", s.hub.ws_url(), s.device_id),
        &[("cookie", &s.cookie)],
    )
    .await
    .expect("upgrade")
}

#[tokio::test]
async fn seed_002_channels_flow() {
    let mut s = setup().await;
    let base = s.hub.ws_url();

    // Viewer auth is required, and the device must exist.
    let anon = Ws::connect(&format!("{base}/api/v1/devices/{}/ws", s.device_id), &[]).await;
    assert_eq!(anon.err(), Some(401));
    let missing = Ws::connect(
        &format!("{base}/api/v1/devices/00000000-0000-0000-0000-000000000000/ws"),
        &[("cookie", &s.cookie)],
    )
    .await;
    assert_eq!(missing.err(), Some(404));

    let mut v = device_ws(&s).await;
    let c = v.recv().await;
    assert_eq!(c["type"], "connected", "{c}");
    assert_eq!(c["data"]["deviceUuid"], s.device_id.as_str());
    assert!(
        c["data"]["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );
    let registry = &s.hub.hub.state().live.registry;
    assert_eq!(registry.stream_viewers(&s.device_id), Some(1));

    // A second viewer shares the device's one stream.
    let mut v2 = device_ws(&s).await;
    v2.recv().await;
    assert_eq!(registry.stream_viewers(&s.device_id), Some(2));

    v.send(json!({"type": "subscribe", "channels":
        ["metrics", "system-info", "processes", "history", "network-interfaces"]}))
        .await;
    let r = v.recv().await;
    assert_eq!(r["type"], "subscribed", "{r}");
    let h = v.recv().await;
    assert_eq!(h["type"], "history", "current history on subscribe: {h}");
    assert_eq!(h["data"]["cpu"], json!([]));
    v.expect_silence(Duration::from_millis(200)).await;

    // Data arrives as the agent sends it, not on a timer.
    let t0 = (now_ms() / 1000 - 5) * 1000;
    send_sample(&mut s.agent, 1, t0, 42.0).await;
    let m = v.recv().await;
    assert_eq!(m["type"], "metrics", "{m}");
    assert_eq!(m["data"]["cpu"]["total"], 42.0);
    assert_eq!(m["data"]["ts"].as_i64(), Some(t0));
    let h = v.recv().await;
    assert_eq!(h["type"], "history", "{h}");
    assert_eq!(h["data"]["cpu"], json!([{"time": t0, "value": 42.0}]));
    assert_eq!(h["data"]["memory"].as_array().map(Vec::len), Some(1));
    assert_eq!(h["data"]["network"].as_array().map(Vec::len), Some(1));
    v2.expect_silence(Duration::from_millis(100)).await; // v2 subscribed to nothing

    let ack = s.agent.send_text(&state_message(2)).await;
    assert_eq!(ack, Some(HubMessage::Ack { seq: 2, stored: 0 }));
    let mut kinds = std::collections::BTreeMap::new();
    for _ in 0..3 {
        let m = v.recv().await;
        kinds.insert(
            m["type"].as_str().expect("type").to_string(),
            m["data"].clone(),
        );
    }
    assert_eq!(kinds["system-info"]["os"], "Debian 13");
    assert_eq!(kinds["processes"]["top_processes"][0]["name"], "init");
    assert_eq!(kinds["network-interfaces"]["interfaces"][0]["name"], "eth0");

    // A late subscriber gets the current values at once.
    v2.send(json!({"type": "subscribe", "channels": ["system-info", "metrics"]}))
        .await;
    assert_eq!(v2.recv().await["type"], "subscribed");
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(v2.recv().await["type"].as_str().expect("type").to_string());
    }
    got.sort();
    assert_eq!(got, ["metrics", "system-info"]);

    // ping -> pong.
    let p = v.call(json!({"type": "ping"})).await;
    assert_eq!(p["type"], "pong");

    // Unsubscribed channels stop.
    let r = v
        .call(json!({"type": "unsubscribe", "channels": ["metrics"]}))
        .await;
    assert_eq!(r["type"], "unsubscribed");
    send_sample(&mut s.agent, 3, t0 + 1000, 43.0).await;
    let h = v.recv().await;
    assert_eq!(h["type"], "history", "history only: {h}");
    assert_eq!(h["data"]["cpu"].as_array().map(Vec::len), Some(2));
    v.expect_silence(Duration::from_millis(200)).await;
    let m = v2.recv().await;
    assert_eq!(m["type"], "metrics", "{m}");

    // Unknown channels are refused without closing.
    let e = v
        .call(json!({"type": "subscribe", "channels": ["bogus"]}))
        .await;
    assert_eq!(e["type"], "error");

    // The last viewer leaving releases the device's stream.
    v.ws.close(None).await.expect("close");
    v2.ws.close(None).await.expect("close");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while registry.stream_viewers(&s.device_id).is_some() {
        assert!(std::time::Instant::now() < deadline, "stream released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s.admin);
    s.hub.stop().await;
}

#[tokio::test]
async fn ws_live_broadcasts_every_new_sample() {
    let mut s = setup().await;
    let token = s.admin.create_token("live", "viewer").await;
    let mut v = Ws::connect(
        &format!("{}/ws/live", s.hub.ws_url()),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("upgrade");
    assert_eq!(v.recv().await["type"], "connected");
    let anon = Ws::connect(&format!("{}/ws/live", s.hub.ws_url()), &[]).await;
    assert_eq!(anon.err(), Some(401));
    let t0 = (now_ms() / 1000 - 5) * 1000;
    for i in 0..3 {
        send_sample(&mut s.agent, i + 1, t0 + i as i64 * 1000, 10.0 + i as f64).await;
        let m = v.recv().await;
        assert_eq!(m["type"], "metrics", "{m}");
        assert_eq!(m["deviceId"], s.device_id.as_str());
        assert_eq!(m["ts"].as_i64(), Some(t0 + i as i64 * 1000));
        assert_eq!(m["data"]["cpu"]["total"].as_f64(), Some(10.0 + i as f64));
    }
    // A replayed batch stores nothing new and broadcasts nothing.
    let ack = s
        .agent
        .send_batch(9, vec![sample("host-live", t0, 10.0)])
        .await;
    assert_eq!(ack, HubMessage::Ack { seq: 9, stored: 0 });
    v.expect_silence(Duration::from_millis(200)).await;
    s.hub.stop().await;
}

#[tokio::test]
async fn dashboard_device_queries_push_on_new_samples() {
    let mut s = setup().await;
    let t0 = (now_ms() / 1000 - 30) * 1000;
    send_sample(&mut s.agent, 1, t0, 5.0).await;
    let mut v = Ws::connect(
        &format!("{}/api/store/ws", s.hub.ws_url()),
        &[("cookie", &s.cookie)],
    )
    .await
    .expect("upgrade");
    assert_eq!(v.recv().await["requiresAuth"], false);
    let id = s.device_id.as_str();
    let r = v
        .call(json!({"id": 1, "type": "store.subscribe", "query": "device-latest", "params": {"id": id}}))
        .await;
    assert_eq!(r["data"]["data"]["ts"].as_i64(), Some(t0), "{r}");
    let r = v
        .call(json!({"id": 2, "type": "store.subscribe", "query": "device-series", "params": {"id": id, "seconds": 600}}))
        .await;
    assert_eq!(r["data"]["data"]["timestamps"], json!([t0]), "{r}");
    assert_eq!(r["data"]["data"]["series"]["cpu"], json!([5.0]));
    let r = v
        .call(json!({"id": 3, "type": "store.subscribe", "query": "fleet-overview"}))
        .await;
    let fleet = &r["data"]["data"][0];
    assert_eq!(fleet["id"], id, "{r}");
    assert_eq!(fleet["latest"]["cpu"], 5.0);
    assert_eq!(fleet["spark"]["cpu"], json!([5.0]));
    let r = v
        .call(json!({"id": 4, "type": "store.subscribe", "query": "devices"}))
        .await;
    assert_eq!(r["data"]["data"][0]["status"], "online", "{r}");
    let r = v
        .call(json!({"id": 5, "type": "store.subscribe", "query": "device-latest", "params": {"id": "nope"}}))
        .await;
    assert_eq!(r["code"], "NOT_FOUND");

    send_sample(&mut s.agent, 2, t0 + 1000, 7.0).await;
    let got = pushes(&mut v, 4).await;
    assert_eq!(got["sub-1"]["sample"]["cpu"]["total"], 7.0);
    assert_eq!(got["sub-2"]["series"]["cpu"], json!([5.0, 7.0]));
    assert_eq!(got["sub-3"][0]["spark"]["cpu"], json!([5.0, 7.0]));
    assert_eq!(got["sub-4"][0]["id"], id);
    s.hub.stop().await;
}
