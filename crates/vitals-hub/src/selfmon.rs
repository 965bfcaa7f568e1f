//! The hub monitors its own host with the agent's collector library, as a device like any
//! other (on by default, `--no-self-monitor` turns it off). Samples go through the same ingest
//! path as an agent's; the collector runs on its own thread because it reads `/proc`
//! synchronously.

use std::time::Duration;

use tokio::sync::mpsc;
use vitals_proto::MetricSample;
use vitals_proto::state::DeviceState;
use vitals_store::{Device, NewDevice};

use crate::state::AppState;

const SELF_DEVICE_KEY: &str = "self_device_id";

enum Reading {
    Sample(Box<MetricSample>),
    State(Box<DeviceState>),
}

pub async fn run(state: AppState) {
    let device = match ensure_device(&state).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "self-monitoring disabled: could not create the hub's device");
            return;
        }
    };
    tracing::info!(device = %device.id, name = %device.name, "monitoring the hub's own host");
    let (tx, mut rx) = mpsc::channel::<Reading>(8);
    let host_id = device.host_id.clone();
    let stop = state.shutdown.clone();
    std::thread::Builder::new()
        .name("vitals-selfmon".into())
        .spawn(move || collect_loop(host_id, tx, stop))
        .ok();
    let mut seq = 0u64;
    while let Some(r) = rx.recv().await {
        seq += 1;
        match r {
            Reading::Sample(s) => {
                let reply = crate::ingest::handle_metrics(&state, &device, seq, vec![*s]).await;
                if let vitals_proto::HubMessage::Error { message, .. } = reply {
                    tracing::debug!("self sample not stored: {message}");
                }
            }
            Reading::State(st) => {
                crate::ingest::handle_state(&state, &device, None, *st).await;
            }
        }
    }
}

fn collect_loop(
    host_id: String,
    tx: mpsc::Sender<Reading>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut c = vitals_agent::Collector::new(host_id);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let started = std::time::Instant::now();
        let s = c.sample(crate::now_ms());
        if tx.blocking_send(Reading::Sample(Box::new(s))).is_err() {
            return;
        }
        if n.is_multiple_of(30)
            && tx
                .blocking_send(Reading::State(Box::new(c.state())))
                .is_err()
        {
            return;
        }
        n += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
}

async fn ensure_device(state: &AppState) -> vitals_store::Result<Device> {
    if let Some(id) = state.store.meta_get(SELF_DEVICE_KEY).await?
        && let Some(d) = state.store.device(&id).await?
    {
        return Ok(d);
    }
    let host_id = vitals_agent::host_id();
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vitals-hub".to_string());
    let d = state
        .store
        .create_device(NewDevice {
            name,
            host_id,
            token_hash: None,
            simulated: false,
            agent_version: Some(format!("hub {}", env!("CARGO_PKG_VERSION"))),
            now: crate::now_ms(),
        })
        .await?;
    state.store.meta_set(SELF_DEVICE_KEY, &d.id).await?;
    Ok(d)
}
