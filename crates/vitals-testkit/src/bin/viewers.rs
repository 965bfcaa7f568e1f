//! `viewers`: the live core's benchmark. On loopback it opens `--viewers` store sockets
//! (`/api/store/ws`) spread over `fleet-overview`, `device-latest {id}` and
//! `metrics-by-name {name}` subscriptions, runs `--agents` simulated agents sending one sample
//! per second, and one admin socket inserting `--app-rate` app metrics per second (in
//! transactions of `--app-batch`). It reports push latency (the pushed record's or sample's own
//! timestamp -> client receive; an upper bound of commit -> receive), pushes delivered per
//! second, and, given `--hub-pid`, the hub's CPU and its memory per viewer connection.
//!
//! With `--fanout`, every viewer watches `latest-metrics {n: 1}` instead (saturation).
//!
//! Example (the hub started with `max_viewers_per_user = 2000`):
//!   viewers --hub http://127.0.0.1:7070 --token vat_... --viewers 1000 --agents 1000 \
//!       --app-rate 1000 --warmup 10 --measure 30 --hub-pid 1234
//! Devices are provisioned with `POST /api/devices` (admin token). Results go to stdout as
//! JSON. Loopback addresses only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vitals_testkit::procstat;

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vitals_proto::AgentMessage;
use vitals_testkit::hostmodel::HostModel;

#[derive(Parser)]
struct Args {
    /// Hub base URL (loopback only).
    #[arg(long)]
    hub: String,
    /// Admin API token (provisioning, the admin socket and the viewers).
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 1000)]
    viewers: usize,
    /// Of the viewers, how many subscribe to `fleet-overview` (the rest alternate between
    /// `device-latest` and `metrics-by-name`).
    #[arg(long, default_value_t = 10)]
    fleet_viewers: usize,
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// App metrics inserted per second by the admin.
    #[arg(long, default_value_t = 1000)]
    app_rate: u64,
    /// App metrics per transaction.
    #[arg(long, default_value_t = 10)]
    app_batch: u64,
    /// Distinct app metric names (each `metrics-by-name` viewer watches one).
    #[arg(long, default_value_t = 1000)]
    names: usize,
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    #[arg(long, default_value_t = 30)]
    measure: u64,
    #[arg(long)]
    hub_pid: Option<u32>,
    #[arg(long, default_value = "bv")]
    prefix: String,
    /// Fan-out mode: every viewer subscribes to `latest-metrics {n: 1}` (one shared view that
    /// changes with every insert), to measure delivered messages per hub core at saturation.
    #[arg(long)]
    fanout: bool,
}

#[derive(Default)]
struct Stats {
    measuring: AtomicBool,
    pushes: AtomicU64,
    bytes: AtomicU64,
    fleet_pushes: AtomicU64,
    /// Push latency in microseconds: (kind, value).
    lat_app: Mutex<Vec<u32>>,
    lat_dev: Mutex<Vec<u32>>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The number right after the last occurrence of `key` in `text`.
fn last_number(text: &str, key: &str) -> Option<f64> {
    let at = text.rfind(key)? + key.len();
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn store_socket(ws_base: &str, token: &str) -> Result<Socket> {
    let mut req = format!("{ws_base}/api/store/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let _welcome = ws.next().await.context("welcome")??;
    Ok(ws)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    vitals_testkit::init_crypto();
    let a = Args::parse();
    let devices: Vec<(String, String, String)> =
        vitals_testkit::provision::provision_devices(&a.hub, &a.token, &a.prefix, a.agents)
            .await?
            .into_iter()
            .map(|d| (d.host_id, d.id, d.token))
            .collect();
    let ws_base = a.hub.replacen("http", "ws", 1);
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));

    // Agents: one sample per second each, spread over the second.
    eprintln!("starting {} agents", a.agents);
    let start = Instant::now() + Duration::from_millis(500);
    for (i, (host_id, _, token)) in devices.iter().cloned().enumerate() {
        let ws_base = ws_base.clone();
        let stop = Arc::clone(&stop);
        let n = a.agents;
        tokio::spawn(async move {
            let mut req = format!("{ws_base}/agent?hostId={host_id}").into_client_request()?;
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let (ws, _) = tokio_tungstenite::connect_async(req).await?;
            let (mut tx, mut rx) = ws.split();
            let mut model = HostModel::new(i, 7);
            model.host_id = host_id;
            let offset = Duration::from_secs(1).mul_f64(i as f64 / n.max(1) as f64);
            let mut tick =
                tokio::time::interval_at((start + offset).into(), Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                seq += 1;
                let samples = vec![model.step(vitals_testkit::now_ms())];
                let text = serde_json::to_string(&AgentMessage::Metrics { seq, samples })?;
                tx.send(Message::Text(text.into())).await?;
                while let Some(m) = rx.next().await {
                    if matches!(m?, Message::Text(_)) {
                        break;
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss0 = a.hub_pid.and_then(procstat::rss_kib);

    // Viewers.
    eprintln!("connecting {} viewers", a.viewers);
    let mut ready = Vec::new();
    for i in 0..a.viewers {
        let (query, params, kind) = if a.fanout {
            ("latest-metrics", json!({"n": 1}), 2u8)
        } else if i < a.fleet_viewers {
            ("fleet-overview", json!({}), 0u8)
        } else if i % 2 == 0 && !devices.is_empty() {
            let id = &devices[i % devices.len()].1;
            ("device-latest", json!({"id": id}), 1)
        } else {
            (
                "metrics-by-name",
                json!({"name": format!("m{}", i % a.names.max(1))}),
                2,
            )
        };
        let mut ws = store_socket(&ws_base, &a.token).await?;
        ws.send(Message::Text(
            json!({"id": 1, "type": "store.subscribe", "query": query, "params": params})
                .to_string()
                .into(),
        ))
        .await?;
        let stats = Arc::clone(&stats);
        let stop = Arc::clone(&stop);
        let (tx_ready, rx_ready) = tokio::sync::oneshot::channel::<()>();
        ready.push(rx_ready);
        tokio::spawn(async move {
            let mut tx_ready = Some(tx_ready);
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let t = t.as_str();
                if let Some(r) = tx_ready.take() {
                    let _ = r.send(());
                    continue;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if !stats.measuring.load(Ordering::Relaxed) {
                    continue;
                }
                let recv = now_us();
                stats.pushes.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                match kind {
                    0 => {
                        stats.fleet_pushes.fetch_add(1, Ordering::Relaxed);
                    }
                    1 => {
                        if let Some(ts) = last_number(t, "\"ts\":") {
                            let us = (recv - ts as i64 * 1000).max(0);
                            stats
                                .lat_dev
                                .lock()
                                .await
                                .push(us.min(u32::MAX as i64) as u32);
                        }
                    }
                    _ => {
                        if let Some(ts) = last_number(t, "\"timestamp\":") {
                            let us = (recv as f64 - ts * 1000.0).max(0.0);
                            stats
                                .lat_app
                                .lock()
                                .await
                                .push(us.min(u32::MAX as f64) as u32);
                        }
                    }
                }
            }
        });
    }
    for r in ready {
        let _ = r.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = a.hub_pid.and_then(procstat::rss_kib);

    // The admin: app metrics at `app_rate`, in transactions of `app_batch`.
    eprintln!("admin inserting {} app metrics/s", a.app_rate);
    let admin = store_socket(&ws_base, &a.token).await?;
    let (mut atx, mut arx) = admin.split();
    tokio::spawn(async move { while let Some(Ok(_)) = arx.next().await {} });
    let admin_stop = Arc::clone(&stop);
    let (rate, batch, names) = (a.app_rate.max(1), a.app_batch.max(1), a.names.max(1));
    tokio::spawn(async move {
        let per_sec = (rate / batch).max(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec as u32);
        let mut k = 0usize;
        let mut id = 10u64;
        while !admin_stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let ts = now_us() as f64 / 1000.0;
            let ops: Vec<_> = (0..batch)
                .map(|_| {
                    k += 1;
                    json!({"op": "insert", "bucket": "metrics", "data": {
                        "name": format!("m{}", k % names), "value": k, "unit": "", "timestamp": ts}})
                })
                .collect();
            id += 1;
            let msg = json!({"id": id, "type": "store.transaction", "operations": ops});
            if atx
                .send(Message::Text(msg.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let cpu0 = a.hub_pid.and_then(procstat::cpu_secs);
    stats.measuring.store(true, Ordering::Relaxed);
    let mut rss = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(a.measure) {
        if let Some(r) = a.hub_pid.and_then(procstat::rss_kib) {
            rss.push(r);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stats.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = a.hub_pid.and_then(procstat::cpu_secs);
    stop.store(true, Ordering::Relaxed);
    rss.sort_unstable();
    let mut app = std::mem::take(&mut *stats.lat_app.lock().await);
    let mut dev = std::mem::take(&mut *stats.lat_dev.lock().await);
    app.sort_unstable();
    dev.sort_unstable();
    let mut all: Vec<u32> = app.iter().chain(dev.iter()).copied().collect();
    all.sort_unstable();
    let pushes = stats.pushes.load(Ordering::Relaxed) as f64;
    let cpu = cpu0.zip(cpu1).map(|(c0, c1)| c1 - c0);
    let nv = a.viewers.max(1) as f64;
    let out = json!({
        "viewers": a.viewers,
        "fleet_viewers": a.fleet_viewers,
        "agents": a.agents,
        "app_rate": a.app_rate,
        "app_batch": a.app_batch,
        "measure_s": secs,
        "pushes_per_s": pushes / secs,
        "push_mib_per_s": stats.bytes.load(Ordering::Relaxed) as f64 / secs / 1048576.0,
        "fleet_pushes_per_s": stats.fleet_pushes.load(Ordering::Relaxed) as f64 / secs,
        "latency_ms_p50": procstat::percentile_ms(&all, 0.50),
        "latency_ms_p99": procstat::percentile_ms(&all, 0.99),
        "app_latency_ms_p50": procstat::percentile_ms(&app, 0.50),
        "app_latency_ms_p99": procstat::percentile_ms(&app, 0.99),
        "device_latency_ms_p50": procstat::percentile_ms(&dev, 0.50),
        "device_latency_ms_p99": procstat::percentile_ms(&dev, 0.99),
        "hub_cpu_cores": cpu.map(|c| c / secs),
        "pushes_per_s_per_hub_core": cpu.map(|c| pushes / c),
        "hub_rss_mib_before_viewers": rss0.map(|k| k as f64 / 1024.0),
        "hub_rss_mib_idle_viewers": rss1.map(|k| k as f64 / 1024.0),
        "hub_kib_per_viewer_idle": rss0.zip(rss1).map(|(r0, r1)| (r1 as f64 - r0 as f64) / nv),
        "hub_rss_mib_median": rss.get(rss.len() / 2).map(|k| *k as f64 / 1024.0),
        "hub_rss_mib_peak": rss.last().map(|k| *k as f64 / 1024.0),
    });
    println!("{out}");
    Ok(())
}
