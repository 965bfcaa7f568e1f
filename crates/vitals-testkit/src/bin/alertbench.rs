//! `vitals-alertbench`: measures the time from the sample that completes an alert's duration
//! to the webhook request, on a live hub (run it beside `vitals-loadgen` for fleet load).
//!
//! It creates a webhook channel pointing at a receiver it runs on loopback, ten rules that
//! apply to every device (one of them `cpu > 95 for 5 s` notifying that channel), and
//! `--probes` devices whose CPU goes hot for 10 s in every 20 s. For each firing it matches
//! the alert's `firedAt` (the timestamp of the sample that completed the duration) with the
//! instant that sample was sent, and reports the delay to the webhook's arrival.
//!   vitals-alertbench --hub http://127.0.0.1:7070 --token vat_... --measure 60

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vitals_proto::AgentMessage;
use vitals_testkit::hostmodel::HostModel;
use vitals_testkit::procstat;

/// Trigger-to-delivery benchmark for Vitals alerts.
#[derive(Parser)]
struct Args {
    /// Hub base URL (loopback only).
    #[arg(long)]
    hub: String,
    /// Admin API token.
    #[arg(long)]
    token: String,
    /// Devices that cross the threshold periodically.
    #[arg(long, default_value_t = 10)]
    probes: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 60)]
    measure: u64,
}

type Sent = Arc<Mutex<HashMap<(String, i64), Instant>>>;

#[derive(Clone)]
struct Recv {
    sent: Sent,
    delays_us: Arc<Mutex<Vec<u32>>>,
}

async fn hook(axum::extract::State(r): axum::extract::State<Recv>, body: String) -> &'static str {
    let arrived = Instant::now();
    if let Ok(v) = serde_json::from_str::<Value>(&body)
        && v["kind"] == "firing"
    {
        let dev = v["alert"]["deviceId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ts = v["alert"]["firedAt"].as_i64().unwrap_or_default();
        let sent = r
            .sent
            .lock()
            .map(|m| m.get(&(dev, ts)).copied())
            .ok()
            .flatten();
        if let Some(s) = sent
            && let Ok(mut d) = r.delays_us.lock()
        {
            d.push(u32::try_from(arrived.duration_since(s).as_micros()).unwrap_or(u32::MAX));
        }
    }
    "ok"
}

async fn api(http: &reqwest::Client, a: &Args, path: &str, body: Value) -> Result<Value> {
    let res = http
        .post(format!("{}{path}", a.hub))
        .bearer_auth(&a.token)
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {v}");
    }
    Ok(v)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    vitals_testkit::init_crypto();
    let a = Args::parse();
    let http = reqwest::Client::new();
    let recv = Recv {
        sent: Arc::new(Mutex::new(HashMap::new())),
        delays_us: Arc::new(Mutex::new(Vec::new())),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", l.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(recv.clone());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });

    api(
        &http,
        &a,
        "/api/settings",
        json!({"alerts.allowPrivateTargets": true}),
    )
    .await?;
    let ch = api(
        &http,
        &a,
        "/api/notification-channels",
        json!({"name": "bench", "kind": "webhook", "config": {"url": hook_url}}),
    )
    .await?;
    let ch = ch["id"].as_str().unwrap_or_default().to_string();
    let rules = [
        json!({"metric": "cpu", "threshold": 95, "durationSec": 5, "recoverySec": 0, "channelIds": [ch]}),
        json!({"metric": "cpu", "threshold": 80, "durationSec": 30}),
        json!({"metric": "memory", "threshold": 90, "durationSec": 60}),
        json!({"metric": "swap", "threshold": 50, "durationSec": 60}),
        json!({"metric": "disk", "threshold": 90, "durationSec": 60}),
        json!({"metric": "inodes", "threshold": 90, "durationSec": 60}),
        json!({"metric": "load", "threshold": 8, "durationSec": 60}),
        json!({"metric": "net_rx", "threshold": 100e6, "durationSec": 30}),
        json!({"metric": "net_tx", "threshold": 100e6, "durationSec": 30}),
        json!({"metric": "temperature", "threshold": 85, "durationSec": 30}),
    ];
    for (i, mut r) in rules.into_iter().enumerate() {
        r["name"] = json!(format!("bench rule {i}"));
        api(&http, &a, "/api/alert-rules", r).await?;
    }
    let probes =
        vitals_testkit::provision::provision_devices(&a.hub, &a.token, "probe", a.probes).await?;
    let ws_base = a.hub.replacen("http", "ws", 1);
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs(a.measure);
    let mut tasks = Vec::new();
    for (i, p) in probes.into_iter().enumerate() {
        let sent = Arc::clone(&recv.sent);
        let ws_base = ws_base.clone();
        let n = a.probes;
        tasks.push(tokio::spawn(async move {
            let mut req = format!("{ws_base}/agent?hostId={}", p.host_id).into_client_request()?;
            req.headers_mut()
                .insert("authorization", format!("Bearer {}", p.token).parse()?);
            let (ws, _) = tokio_tungstenite::connect_async(req).await?;
            let (mut tx, mut rx) = ws.split();
            let mut model = HostModel::new(10_000 + i, 11);
            model.host_id = p.host_id.clone();
            let offset = Duration::from_millis(1000 * i as u64 / n.max(1) as u64);
            let mut tick =
                tokio::time::interval_at((start + offset).into(), Duration::from_secs(1));
            let mut seq = 0u64;
            loop {
                let now = tick.tick().await;
                if now.into_std() >= end {
                    break;
                }
                seq += 1;
                let ts = vitals_testkit::now_ms();
                let mut s = model.step(ts);
                // Hot for 10 s in every 20 s, phases staggered across probes.
                let hot = ((seq as usize + i * 2) / 10) % 2 == 1;
                s.cpu.total = if hot { 99.0 } else { 20.0 };
                if hot && let Ok(mut m) = sent.lock() {
                    m.insert((p.id.clone(), ts), Instant::now());
                }
                let text = serde_json::to_string(&AgentMessage::Metrics {
                    seq,
                    samples: vec![s],
                })?;
                tx.send(Message::Text(text.into())).await?;
                while let Some(m) = rx.next().await {
                    if let Ok(Message::Text(_)) = m {
                        break;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut d = recv.delays_us.lock().map(|d| d.clone()).unwrap_or_default();
    d.sort_unstable();
    println!(
        "{}",
        json!({
            "probes": a.probes,
            "measure_s": a.measure,
            "firings_delivered": d.len(),
            "trigger_to_webhook_ms_p50": procstat::percentile_ms(&d, 0.50),
            "trigger_to_webhook_ms_p99": procstat::percentile_ms(&d, 0.99),
            "trigger_to_webhook_ms_max": d.last().map(|v| f64::from(*v) / 1000.0),
        })
    );
    Ok(())
}
