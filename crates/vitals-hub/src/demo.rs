//! Simulated devices (`--demo N`, seed 000's simulated fallback): realistic random-walk hosts
//! that go through the same ingest path as real agents. They are stored with `simulated =
//! true`, which every API answer and page shows, so they are never mistaken for real machines.

use rand::Rng;
use vitals_proto::MetricSample;
use vitals_proto::sample::*;
use vitals_store::{Device, NewDevice};

use crate::state::AppState;

/// One simulated host's drifting state.
pub struct SimHost {
    pub host_id: String,
    cores: Vec<f64>,
    mem_used: f64,
    mem_total: f64,
    disk_used: [f64; 2],
    net: (f64, f64),
    uptime: f64,
    procs: f64,
}

impl SimHost {
    pub fn new(host_id: String, rng: &mut impl Rng) -> Self {
        let ncores = [2usize, 4, 8, 16][rng.random_range(0..4)];
        let mem_total = [8.0, 16.0, 32.0, 64.0][rng.random_range(0..4)] * 1_073_741_824.0;
        SimHost {
            host_id,
            cores: (0..ncores).map(|_| rng.random_range(5.0..40.0)).collect(),
            mem_used: mem_total * rng.random_range(0.3..0.7),
            mem_total,
            disk_used: [
                rng.random_range(0.2..0.8) * 500e9,
                rng.random_range(0.1..0.9) * 2e12,
            ],
            net: (rng.random_range(1e4..1e6), rng.random_range(1e4..1e6)),
            uptime: rng.random_range(3600.0..3e6),
            procs: rng.random_range(120.0..400.0),
        }
    }

    /// The next sample, one second after the previous one.
    pub fn next(&mut self, ts: i64, rng: &mut impl Rng) -> MetricSample {
        let walk = |v: f64, step: f64, lo: f64, hi: f64, rng: &mut dyn rand::RngCore| {
            (v + (rand::Rng::random::<f64>(rng) - 0.5) * 2.0 * step).clamp(lo, hi)
        };
        for c in &mut self.cores {
            *c = walk(*c, 6.0, 0.0, 100.0, rng);
        }
        self.mem_used = walk(
            self.mem_used,
            self.mem_total * 0.01,
            self.mem_total * 0.1,
            self.mem_total * 0.95,
            rng,
        );
        self.disk_used[0] = walk(self.disk_used[0], 1e6, 1e9, 499e9, rng);
        self.disk_used[1] = walk(self.disk_used[1], 5e6, 1e9, 1.99e12, rng);
        self.net.0 = walk(self.net.0, 5e4, 0.0, 1.25e8, rng);
        self.net.1 = walk(self.net.1, 5e4, 0.0, 1.25e8, rng);
        self.procs = walk(self.procs, 2.0, 50.0, 2000.0, rng).round();
        self.uptime += 1.0;
        let total = self.cores.iter().sum::<f64>() / self.cores.len() as f64;
        let load = total / 100.0 * self.cores.len() as f64;
        MetricSample {
            v: vitals_proto::PROTOCOL_VERSION,
            ts,
            host_id: self.host_id.clone(),
            cpu: Cpu {
                total,
                per_core: self.cores.clone(),
                user: Some(total * 0.7),
                system: Some(total * 0.25),
                iowait: Some(total * 0.04),
                steal: Some(total * 0.01),
            },
            mem: Mem {
                used: self.mem_used,
                total: self.mem_total,
                available: Some(self.mem_total - self.mem_used),
            },
            disk: vec![
                Disk {
                    name: "/".into(),
                    used: self.disk_used[0],
                    total: 500e9,
                    inodes_used: Some(self.disk_used[0] / 65536.0),
                    inodes_total: Some(500e9 / 16384.0),
                },
                Disk {
                    name: "/data".into(),
                    used: self.disk_used[1],
                    total: 2e12,
                    inodes_used: Some(self.disk_used[1] / 1e6),
                    inodes_total: Some(2e12 / 65536.0),
                },
            ],
            net: Net {
                tx_bps: self.net.0,
                rx_bps: self.net.1,
            },
            uptime_sec: self.uptime,
            proc_count: self.procs,
            swap: Some(Swap {
                used: 0.0,
                total: 2_147_483_648.0,
            }),
            load: Some(Load {
                one: load,
                five: load * 0.9,
                fifteen: load * 0.8,
            }),
            disk_io: vec![],
            net_ifaces: vec![],
            temps: vec![Temp {
                name: "cpu".into(),
                celsius: 35.0 + total * 0.4,
            }],
            gpus: vec![],
            containers: vec![],
            docker_size: None,
            kernel: Default::default(),
        }
    }
}

/// Creates (or reuses) `n` simulated devices and feeds them one sample per second until
/// shutdown.
pub async fn run(state: AppState, n: u32) {
    let devices = match ensure_devices(&state, n).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "demo devices could not be created");
            return;
        }
    };
    tracing::info!(count = devices.len(), "simulated devices running");
    let mut hosts: Vec<(Device, SimHost)> = {
        let mut rng = rand::rng();
        devices
            .into_iter()
            .map(|d| {
                let h = SimHost::new(d.host_id.clone(), &mut rng);
                (d, h)
            })
            .collect()
    };
    // Like real agents, the simulated devices do not all report at the same instant: each
    // second is cut into SLOTS and every device reports in its own slot, once per second.
    let slots = SLOTS.min(hosts.len().max(1));
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(1000 / slots as u64));
    let mut seq = 0u64;
    let mut slot = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        if slot == 0 {
            seq += 1;
        }
        let now = crate::now_ms();
        let batches: Vec<(Device, MetricSample)> = {
            let mut rng = rand::rng();
            hosts
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| i % slots == slot)
                .map(|(_, (d, h))| (d.clone(), h.next(now, &mut rng)))
                .collect()
        };
        slot = (slot + 1) % slots;
        let futs = batches
            .iter()
            .map(|(d, s)| crate::ingest::handle_metrics(&state, d, seq, vec![s.clone()]));
        futures_util::future::join_all(futs).await;
    }
}

/// Report slots per second of the simulated devices.
const SLOTS: usize = 20;

async fn ensure_devices(state: &AppState, n: u32) -> vitals_store::Result<Vec<Device>> {
    let existing = state.store.list_devices().await?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let host_id = format!("demo-{i:04}");
        if let Some(d) = existing
            .iter()
            .find(|d| d.device.simulated && d.device.host_id == host_id)
        {
            out.push(d.device.clone());
            continue;
        }
        out.push(
            state
                .store
                .create_device(NewDevice {
                    name: format!("demo-{:03}", i + 1),
                    host_id,
                    token_hash: None,
                    simulated: true,
                    agent_version: Some("simulated".into()),
                    now: crate::now_ms(),
                })
                .await?,
        );
    }
    Ok(out)
}
