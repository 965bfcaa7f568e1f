//! `vitals-loadgen`: simulates N agents over real WebSockets on loopback, each sending samples
//! of the 40-series host model, and measures acknowledgement latency (send -> `ack`, which the
//! hub sends only after commit) and, given `--hub-pid`, the hub's CPU and RSS from `/proc`.
//!
//! Example (1,000 agents, one sample per second each, 10 s warm-up, 60 s measured):
//!   vitals-loadgen --hub http://127.0.0.1:7070 --token vat_... --agents 1000 \
//!       --samples-per-batch 1 --warmup 10 --measure 60 --hub-pid 1234
//! Devices are provisioned with `POST /api/devices` (admin token). Results go to stdout as
//! JSON. Loopback addresses only.
//!
//! `--watch URL` also opens a `/ws/live` viewer on that hub (another replica, for the
//! scale-out benchmark) and reports its push latency: the pushed sample's own timestamp (set
//! at send) -> receive, over the measured window.
//!
//! `--backfill-secs S` replays history instead (the storage benchmark): every agent sends
//! its samples of the `S` seconds ending `--backfill-end-ago` seconds ago, one per second of
//! simulated time, `--samples-per-batch` per message, each message as soon as the previous
//! one is acknowledged; the report gives the wall time and the hub's CPU for all of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vitals_testkit::procstat;

use anyhow::Result;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vitals_proto::AgentMessage;
use vitals_testkit::hostmodel::{HostModel, VALUES_PER_SAMPLE};

/// Load generator for the Vitals hub's agent ingest.
#[derive(Parser)]
struct Args {
    /// Hub base URL (loopback only).
    #[arg(long)]
    hub: String,
    /// Admin API token, used to provision the simulated devices.
    #[arg(long)]
    token: String,
    /// Number of simulated agents (one WebSocket each).
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Samples in each agent's batch; each agent sends one batch per `--interval-ms`.
    #[arg(long, default_value_t = 1)]
    samples_per_batch: usize,
    /// Milliseconds between an agent's batches.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Seconds before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 60)]
    measure: u64,
    /// PID of the hub, to measure its CPU and RSS.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Prefix for device host ids (reuse devices across runs with the same prefix).
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// Replay this many seconds of history per agent as fast as acks come, then stop.
    #[arg(long)]
    backfill_secs: Option<i64>,
    /// The replayed history ends this many seconds ago.
    #[arg(long, default_value_t = 900)]
    backfill_end_ago: i64,
    /// Also watch `/ws/live` on this hub (base URL) and report push latency.
    #[arg(long)]
    watch: Option<String>,
}

#[derive(Default)]
struct Stats {
    acked_samples: AtomicU64,
    errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    vitals_testkit::init_crypto();
    let a = Args::parse();
    let tokens: Vec<(String, String)> =
        vitals_testkit::provision::provision_devices(&a.hub, &a.token, &a.prefix, a.agents)
            .await?
            .into_iter()
            .map(|d| (d.host_id, d.token))
            .collect();
    let ws_base = a.hub.replacen("http", "ws", 1);
    if let Some(secs) = a.backfill_secs {
        return backfill(&a, &ws_base, tokens, secs).await;
    }
    let stats = Arc::new(Stats::default());
    let start = Instant::now() + Duration::from_millis(500);
    let measure_from = start + Duration::from_secs(a.warmup);
    let measure_to = measure_from + Duration::from_secs(a.measure);
    let watcher = a.watch.as_deref().map(|url| {
        let (url, token) = (url.replacen("http", "ws", 1), a.token.clone());
        tokio::spawn(watch(url, token, measure_from, measure_to))
    });
    let mut tasks = Vec::new();
    for (i, (host_id, token)) in tokens.into_iter().enumerate() {
        let stats = Arc::clone(&stats);
        let ws_base = ws_base.clone();
        let spb = a.samples_per_batch;
        let interval = Duration::from_millis(a.interval_ms);
        // Spread agents evenly over the interval, as real agents are.
        let offset = interval.mul_f64(i as f64 / a.agents.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            let ws = connect(&ws_base, &host_id, &token).await?;
            let (mut tx, mut rx) = ws.split();
            let mut model = HostModel::new(i, 7);
            model.host_id = host_id.clone();
            let mut tick = tokio::time::interval_at((start + offset).into(), interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seq = 0u64;
            let mut last_ts = 0i64;
            loop {
                let now = tick.tick().await;
                if now.into_std() >= measure_to {
                    break;
                }
                seq += 1;
                let base = vitals_testkit::now_ms();
                let samples = (0..spb)
                    .map(|k| {
                        let ts = (base + k as i64).max(last_ts + 1);
                        last_ts = ts;
                        model.step(ts)
                    })
                    .collect();
                let text = serde_json::to_string(&AgentMessage::Metrics { seq, samples })?;
                let sent = Instant::now();
                tx.send(Message::Text(text.into())).await?;
                let ok = loop {
                    match rx.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let ok = t.as_str().contains("\"ack\"");
                            if !ok && stats.errors.load(Ordering::Relaxed) == 0 {
                                eprintln!("first error: {}", t.as_str());
                            }
                            break ok;
                        }
                        Some(Ok(_)) => continue,
                        _ => anyhow::bail!("socket closed"),
                    }
                };
                if sent >= measure_from {
                    if ok {
                        stats.acked_samples.fetch_add(spb as u64, Ordering::Relaxed);
                        let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                        stats.latencies_us.lock().await.push(us);
                    } else {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    // Hub CPU/RSS over the measured window.
    let pid = a.hub_pid;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let cpu0 = pid.and_then(procstat::cpu_secs);
        let mut rss = Vec::new();
        while Instant::now() < measure_to {
            if let Some(r) = pid.and_then(procstat::rss_kib) {
                rss.push(r);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let cpu1 = pid.and_then(procstat::cpu_secs);
        (cpu0.zip(cpu1).map(|(a, b)| b - a), rss)
    });
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let (cpu, mut rss) = sampler.await?;
    let watched = match watcher {
        Some(w) => {
            let mut l = w.await??;
            l.sort_unstable();
            json!({"pushes": l.len(), "push_ms_p50": procstat::percentile_ms(&l, 0.50),
                   "push_ms_p99": procstat::percentile_ms(&l, 0.99),
                   "push_ms_max": l.last().map(|v| f64::from(*v) / 1000.0)})
        }
        None => serde_json::Value::Null,
    };
    rss.sort_unstable();
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock().await);
    lat.sort_unstable();
    let secs = a.measure as f64;
    let samples = stats.acked_samples.load(Ordering::Relaxed) as f64;
    let out = json!({
        "agents": a.agents,
        "samples_per_batch": a.samples_per_batch,
        "interval_ms": a.interval_ms,
        "measure_s": a.measure,
        "target_samples_per_s": a.agents as f64 * a.samples_per_batch as f64 * 1000.0 / a.interval_ms as f64,
        "acked_samples_per_s": samples / secs,
        "acked_values_per_s": samples * VALUES_PER_SAMPLE as f64 / secs,
        "batches_measured": lat.len(),
        "errors": stats.errors.load(Ordering::Relaxed),
        "failed_agents": failed,
        "ack_ms_p50": procstat::percentile_ms(&lat, 0.50),
        "ack_ms_p99": procstat::percentile_ms(&lat, 0.99),
        "ack_ms_max": lat.last().map(|v| f64::from(*v) / 1000.0),
        "hub_cpu_pct_core": cpu.map(|c| 100.0 * c / secs),
        "hub_rss_mib_median": rss.get(rss.len() / 2).map(|k| *k as f64 / 1024.0),
        "hub_rss_mib_peak": rss.last().map(|k| *k as f64 / 1024.0),
        "watch": watched,
    });
    println!("{out}");
    Ok(())
}

/// A `/ws/live` viewer: latency (µs) from each pushed sample's timestamp to its arrival,
/// for samples stamped inside the measured window.
async fn watch(url: String, token: String, from: Instant, to: Instant) -> Result<Vec<u32>> {
    let mut req = format!("{url}/ws/live").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    // Wall-clock bounds of the window, to compare with the samples' timestamps.
    let wall = |at: Instant| {
        let now = Instant::now();
        let ms = vitals_testkit::now_ms();
        if at >= now {
            ms + (at - now).as_millis() as i64
        } else {
            ms - (now - at).as_millis() as i64
        }
    };
    let (from_ms, to_ms) = (wall(from), wall(to));
    let mut out = Vec::new();
    let deadline = to + Duration::from_secs(2);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline.into(), ws.next()).await {
        let Ok(Message::Text(t)) = m else { continue };
        let now = vitals_testkit::now_ms();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
            continue;
        };
        let Some(ts) = v["ts"].as_i64() else { continue };
        if (from_ms..to_ms).contains(&ts) {
            out.push(u32::try_from((now - ts).max(0) * 1000).unwrap_or(u32::MAX));
        }
    }
    Ok(out)
}

/// Opens an agent's WebSocket.
async fn connect(
    ws_base: &str,
    host_id: &str,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut req = format!("{ws_base}/agent?hostId={host_id}").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// The `--backfill-secs` mode: see the module docs.
async fn backfill(a: &Args, ws_base: &str, tokens: Vec<(String, String)>, secs: i64) -> Result<()> {
    let end = vitals_testkit::now_ms() / 1000 * 1000 - a.backfill_end_ago * 1000;
    let start_ts = end - secs * 1000;
    let spb = a.samples_per_batch.max(1);
    let stats = Arc::new(Stats::default());
    let mut sockets = Vec::with_capacity(tokens.len());
    for (host_id, token) in &tokens {
        sockets.push(connect(ws_base, host_id, token).await?);
    }
    let cpu0 = a.hub_pid.and_then(procstat::cpu_secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, (ws, (host_id, _))) in sockets.into_iter().zip(tokens).enumerate() {
        let stats = Arc::clone(&stats);
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let mut model = HostModel::new(i, 7);
            model.host_id = host_id;
            let mut seq = 0u64;
            let mut ts = start_ts;
            while ts < end {
                seq += 1;
                let mut samples = Vec::with_capacity(spb);
                while samples.len() < spb && ts < end {
                    samples.push(model.step(ts));
                    ts += 1000;
                }
                let n = samples.len() as u64;
                let text = serde_json::to_string(&AgentMessage::Metrics { seq, samples })?;
                let sent = Instant::now();
                tx.send(Message::Text(text.into())).await?;
                loop {
                    match rx.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => break,
                        Some(Ok(Message::Text(t))) => {
                            anyhow::bail!("not acknowledged: {}", t.as_str())
                        }
                        Some(Ok(_)) => continue,
                        _ => anyhow::bail!("socket closed"),
                    }
                }
                stats.acked_samples.fetch_add(n, Ordering::Relaxed);
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                stats.latencies_us.lock().await.push(us);
            }
            anyhow::Ok(())
        }));
    }
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if failed == 0 {
                    eprintln!("agent failed: {e:#}");
                }
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = a
        .hub_pid
        .and_then(procstat::cpu_secs)
        .zip(cpu0)
        .map(|(b, a)| b - a);
    let samples = stats.acked_samples.load(Ordering::Relaxed) as f64;
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock().await);
    lat.sort_unstable();
    let values = samples * VALUES_PER_SAMPLE as f64;
    println!(
        "{}",
        json!({
            "mode": "backfill",
            "agents": a.agents,
            "samples_per_batch": spb,
            "history_start_ms": start_ts,
            "history_end_ms": end,
            "acked_samples": samples,
            "acked_values": values,
            "wall_s": wall,
            "values_per_s": values / wall,
            "failed_agents": failed,
            "ack_ms_p50": procstat::percentile_ms(&lat, 0.50),
            "ack_ms_p99": procstat::percentile_ms(&lat, 0.99),
            "hub_cpu_s": cpu,
            "hub_cpu_s_per_million_values": cpu.map(|c| c * 1e6 / values.max(1.0)),
        })
    );
    Ok(())
}
