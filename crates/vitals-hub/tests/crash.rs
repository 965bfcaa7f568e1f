//! Crash safety with the hub as a child process: a fake agent streams, the hub is killed with
//! SIGKILL mid-stream and restarted on the same data dir. Every acknowledged sample is there
//! exactly once, and replaying the unacknowledged batches adds no duplicates. Also: SIGTERM
//! finishes the batches in flight before exiting.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use vitals_proto::HubMessage;
use vitals_testkit::process::HubProcess;
use vitals_testkit::{ApiClient, FakeAgent, PASSWORD, now_ms, sample};

const BIN: &str = env!("CARGO_BIN_EXE_vitals-hub");

async fn setup(hub: &HubProcess) -> (ApiClient, String, String) {
    let token = hub
        .setup_url
        .as_deref()
        .and_then(|u| u.split("token=").nth(1))
        .expect("setup link printed")
        .to_string();
    let admin = ApiClient::setup(&hub.url, &token, "admin", PASSWORD)
        .await
        .expect("setup");
    let anon = ApiClient::anonymous(&hub.url);
    let code = anon.request_code("crash-host").await;
    admin.approve(&code, "crashy").await;
    let (s, b) = anon.poll_token(&code).await;
    assert_eq!(s, 200);
    (
        admin,
        b["deviceId"].as_str().expect("id").to_string(),
        b["token"].as_str().expect("token").to_string(),
    )
}

/// Streams batches of 10 samples until the socket dies; returns (acked, unacked) batches.
async fn stream_until_dead(
    agent: &mut FakeAgent,
    t0: i64,
    kill_after: Duration,
    mut on_kill: impl FnMut(),
) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let started = Instant::now();
    let mut acked = Vec::new();
    let mut unacked = Vec::new();
    for seq in 0u64.. {
        let ts: Vec<i64> = (0..10).map(|i| t0 + (seq as i64 * 10 + i) * 10).collect();
        let samples = ts.iter().map(|t| sample("crash-host", *t, 5.0)).collect();
        if started.elapsed() > kill_after {
            // Send, then kill before the answer can be read.
            let text = serde_json::to_string(&vitals_proto::AgentMessage::Metrics { seq, samples })
                .expect("json");
            use futures_util::SinkExt;
            let _ = agent
                .ws
                .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
                .await;
            on_kill();
            match agent.recv().await {
                Some(HubMessage::Ack { .. }) => acked.push(ts),
                _ => unacked.push(ts),
            }
            break;
        }
        match agent.send_batch(seq, samples).await {
            HubMessage::Ack { stored, .. } => {
                assert_eq!(stored, 10);
                acked.push(ts);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (acked, unacked)
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_acknowledged_sample_and_replays_add_no_duplicates() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut hub = HubProcess::spawn(Path::new(BIN), dir.path(), "127.0.0.1:0", &[]);
    let (_, device, token) = setup(&hub).await;
    let ws = hub.url.replacen("http", "ws", 1);
    let mut agent = FakeAgent::connect(&ws, &token, "crash-host")
        .await
        .expect("agent");
    let t0 = now_ms() - 3_600_000;
    let (acked, unacked) =
        stream_until_dead(&mut agent, t0, Duration::from_millis(1500), || hub.kill9()).await;
    assert!(
        acked.len() > 10,
        "streamed for a while: {} batches",
        acked.len()
    );

    let hub2 = HubProcess::spawn(Path::new(BIN), dir.path(), "127.0.0.1:0", &[]);
    assert!(hub2.setup_url.is_none(), "the admin survived the crash");
    let admin = ApiClient::login(&hub2.url, "admin", PASSWORD)
        .await
        .expect("login");
    let ts = admin.stored_ts(&device, t0).await;
    let set: BTreeSet<i64> = ts.iter().copied().collect();
    assert_eq!(set.len(), ts.len(), "no duplicates");
    for b in &acked {
        for t in b {
            assert!(set.contains(t), "acknowledged sample {t} lost");
        }
    }
    let all_acked: usize = acked.iter().map(Vec::len).sum();
    assert!(
        ts.len() == all_acked || ts.len() == all_acked + 10,
        "only the in-flight batch may differ"
    );

    // The agent replays what was not acknowledged, and (being unsure) the last acked batch.
    let ws2 = hub2.url.replacen("http", "ws", 1);
    let mut agent = FakeAgent::connect(&ws2, &token, "crash-host")
        .await
        .expect("reconnect");
    let mut replay = unacked.clone();
    replay.extend(acked.last().cloned());
    for (i, b) in replay.iter().enumerate() {
        let samples = b.iter().map(|t| sample("crash-host", *t, 5.0)).collect();
        let r = agent.send_batch(1000 + i as u64, samples).await;
        assert!(matches!(r, HubMessage::Ack { .. }), "{r:?}");
    }
    let ts = admin.stored_ts(&device, t0).await;
    let set: BTreeSet<i64> = ts.iter().copied().collect();
    assert_eq!(set.len(), ts.len(), "no duplicates after replay");
    let expected: BTreeSet<i64> = acked
        .iter()
        .chain(unacked.iter())
        .flatten()
        .copied()
        .collect();
    assert_eq!(set, expected, "every sample exactly once");
}

#[tokio::test]
async fn sigterm_finishes_batches_in_flight() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut hub = HubProcess::spawn(Path::new(BIN), dir.path(), "127.0.0.1:0", &[]);
    let (_, device, token) = setup(&hub).await;
    let ws = hub.url.replacen("http", "ws", 1);
    let mut agent = FakeAgent::connect(&ws, &token, "crash-host")
        .await
        .expect("agent");
    let t0 = now_ms() - 3_600_000;
    let mut exited_ok = false;
    let (acked, _unacked) = stream_until_dead(&mut agent, t0, Duration::from_millis(800), || {
        let pid = hub.child.id();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    })
    .await;
    for _ in 0..100 {
        if let Ok(Some(status)) = hub.child.try_wait() {
            exited_ok = status.success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited_ok, "the hub exits 0 after SIGTERM");
    let hub2 = HubProcess::spawn(Path::new(BIN), dir.path(), "127.0.0.1:0", &[]);
    let admin = ApiClient::login(&hub2.url, "admin", PASSWORD)
        .await
        .expect("login");
    let set: BTreeSet<i64> = admin.stored_ts(&device, t0).await.into_iter().collect();
    for t in acked.iter().flatten() {
        assert!(set.contains(t), "acknowledged sample {t} lost at shutdown");
    }
}
