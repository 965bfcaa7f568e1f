//! Forwarding to a Vitals hub, against a tiny in-test hub that speaks seed 001's store
//! protocol: welcome, `auth.login`, `store.transaction` of inserts into `metrics`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use vitals_embed::{Config, Dashboard, RunningDashboard};

/// What the fake hub saw.
#[derive(Debug)]
enum Seen {
    Connected { path: String },
    Login { token: String },
    Transaction { operations: Vec<Value> },
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Accept everything.
    Good,
    /// Close the first connection right after the welcome, then behave.
    DropFirst,
}

async fn fake_hub(behaviour: Behaviour) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            let tx = tx.clone();
            let drop_now = matches!(behaviour, Behaviour::DropFirst) && n == 1;
            tokio::spawn(async move {
                let tx_path = tx.clone();
                // The callback's signature is tungstenite's; its error type is not ours to shrink.
                #[allow(clippy::result_large_err)]
                let callback = move |req: &Request, resp: Response| {
                    let _ = tx_path.send(Seen::Connected {
                        path: req.uri().path().to_owned(),
                    });
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                let welcome = json!({"type": "welcome", "version": "1.0.0", "serverTime": 0, "requiresAuth": true});
                if ws.send(Message::text(welcome.to_string())).await.is_err() || drop_now {
                    return;
                }
                let mut authed = false;
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        return;
                    };
                    let id = v["id"].clone();
                    let answer = match v["type"].as_str() {
                        Some("auth.login") => {
                            let token = v["token"].as_str().unwrap_or_default().to_owned();
                            authed = token == "hub-token";
                            let _ = tx.send(Seen::Login { token });
                            if authed {
                                json!({"id": id, "type": "result", "data": {"userId": "embed", "roles": ["admin"]}})
                            } else {
                                json!({"id": id, "type": "error", "code": "UNAUTHORIZED", "message": "bad token"})
                            }
                        }
                        Some("store.transaction") if authed => {
                            let ops = v["operations"].as_array().cloned().unwrap_or_default();
                            let results: Vec<Value> = (0..ops.len())
                                .map(|i| json!({"index": i, "data": {"id": format!("m-{i}")}}))
                                .collect();
                            let _ = tx.send(Seen::Transaction { operations: ops });
                            json!({"id": id, "type": "result", "data": {"results": results}})
                        }
                        _ => {
                            json!({"id": id, "type": "error", "code": "FORBIDDEN", "message": "login first"})
                        }
                    };
                    if ws.send(Message::text(answer.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), rx)
}

fn start(config: Config) -> RunningDashboard {
    let config = Config {
        port: 0,
        update_interval: Duration::from_millis(100),
        ..config
    };
    match Dashboard::new(config).and_then(Dashboard::spawn) {
        Ok(r) => r,
        Err(e) => panic!("dashboard did not start: {e}"),
    }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(s)) => s,
        other => panic!("the hub saw nothing more: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_are_inserted_into_the_hub_metrics_bucket() {
    let (hub, mut seen) = fake_hub(Behaviour::Good).await;
    let d = start(Config::default().forward_to(&hub, "hub-token"));
    let h = d.handle();
    h.update_job_metrics(5, 123, 2, 8, 15);
    h.update_system_metrics(2048, 45.2, 12);

    match next_seen(&mut seen).await {
        Seen::Connected { path } => assert_eq!(path, "/api/store/ws"),
        other => panic!("expected a connection, got {other:?}"),
    }
    match next_seen(&mut seen).await {
        Seen::Login { token } => assert_eq!(token, "hub-token"),
        other => panic!("expected a login, got {other:?}"),
    }
    let ops = match next_seen(&mut seen).await {
        Seen::Transaction { operations } => operations,
        other => panic!("expected a transaction, got {other:?}"),
    };
    assert!(!ops.is_empty());
    for op in &ops {
        assert_eq!(op["op"], "insert");
        assert_eq!(op["bucket"], "metrics");
        let data = &op["data"];
        assert!(data["name"].is_string() && data["value"].is_number() && data["unit"].is_string());
        assert!(
            data["timestamp"]
                .as_i64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "timestamp in ms: {data}"
        );
    }
    let value = |name: &str| {
        ops.iter()
            .find(|o| o["data"]["name"] == name)
            .map(|o| o["data"]["value"].clone())
    };
    assert_eq!(value("jobs_active"), Some(json!(5.0)));
    assert_eq!(value("queue_length"), Some(json!(15.0)));
    assert_eq!(value("cpu_usage"), Some(json!(45.2)));
    let unit = ops
        .iter()
        .find(|o| o["data"]["name"] == "memory_usage")
        .map(|o| o["data"]["unit"].clone());
    assert_eq!(unit, Some(json!("MB")));

    // Later ticks keep arriving as further transactions.
    assert!(matches!(
        next_seen(&mut seen).await,
        Seen::Transaction { .. }
    ));
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn forwarding_reconnects_after_the_hub_drops_it() {
    let (hub, mut seen) = fake_hub(Behaviour::DropFirst).await;
    let d = start(Config::default().forward_to(&hub, "hub-token"));
    d.handle().update_job_metrics(1, 2, 3, 4, 5);
    assert!(matches!(next_seen(&mut seen).await, Seen::Connected { .. }));
    assert!(
        matches!(next_seen(&mut seen).await, Seen::Connected { .. }),
        "no reconnect"
    );
    assert!(matches!(next_seen(&mut seen).await, Seen::Login { .. }));
    // Batches queued while disconnected are delivered, oldest first, after reconnecting.
    match next_seen(&mut seen).await {
        Seen::Transaction { operations } => {
            assert!(operations.len() > 13, "only {} ops", operations.len())
        }
        other => panic!("expected a transaction, got {other:?}"),
    }
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_sends_no_data() {
    let (hub, mut seen) = fake_hub(Behaviour::Good).await;
    let d = start(Config::default().forward_to(&hub, "wrong"));
    assert!(matches!(next_seen(&mut seen).await, Seen::Connected { .. }));
    assert!(matches!(next_seen(&mut seen).await, Seen::Login { .. }));
    // The forwarder backs off and tries again; it never sends a transaction.
    assert!(matches!(next_seen(&mut seen).await, Seen::Connected { .. }));
    assert!(matches!(next_seen(&mut seen).await, Seen::Login { .. }));
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_hub_never_slows_the_application() {
    // Reserve a port, then free it: nothing listens there.
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("{e}"),
    };
    let d = start(Config::default().forward_to(format!("http://127.0.0.1:{port}"), "t"));
    let h = d.handle();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    for i in 0..100_000 {
        h.update_job_metrics(i, i, 0, 0, 0);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "updates slowed: {:?}",
        t0.elapsed()
    );
    assert_eq!(h.metrics().jobs_active, 99_999);
    let _ = d.shutdown().await;
}
