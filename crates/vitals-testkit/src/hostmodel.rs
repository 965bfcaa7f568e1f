//! The 40-series host model of `shared/peers/ingest/hostgen.py`, as `MetricSample`s: per-host
//! random walks and counters (CPU split, memory, load, two disks, one interface, processes,
//! one filesystem), so our hub and the peers ingest the same workload.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vitals_proto::MetricSample;
use vitals_proto::sample::*;

const MEM_TOTAL: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0;
const DISK_TOTAL: f64 = 200.0 * 1024.0 * 1024.0 * 1024.0;

pub struct HostModel {
    pub host_id: String,
    rng: SmallRng,
    busy: f64,
    mem_used: f64,
    cached: f64,
    load: f64,
    procs: f64,
    fs_used: f64,
    inodes: f64,
    uptime: f64,
}

impl HostModel {
    pub fn new(idx: usize, seed: u64) -> HostModel {
        let mut rng = SmallRng::seed_from_u64(seed * 1_000_003 + idx as u64);
        HostModel {
            host_id: format!("h{idx:04}"),
            busy: rng.random_range(2.0..60.0),
            mem_used: MEM_TOTAL * rng.random_range(0.2..0.7),
            cached: MEM_TOTAL * rng.random_range(0.05..0.2),
            load: rng.random_range(0.1..3.0),
            procs: rng.random_range(150.0..600.0),
            fs_used: DISK_TOTAL * rng.random_range(0.2..0.8),
            inodes: rng.random_range(100_000.0..2_000_000.0),
            uptime: rng.random_range(1000.0..1e6),
            rng,
        }
    }

    /// One second later: a sample of 40 values.
    pub fn step(&mut self, ts: i64) -> MetricSample {
        let r = &mut self.rng;
        self.busy = (self.busy + (r.random::<f64>() - 0.5) * 6.0).clamp(0.5, 95.0);
        let b = (self.busy * 10.0).round() / 10.0;
        let sys = (b * (0.2 + 0.2 * r.random::<f64>()) * 10.0).round() / 10.0;
        let iow = (r.random::<f64>() * 2.0 * 10.0).round() / 10.0;
        let steal = (r.random::<f64>() * 0.5 * 10.0).round() / 10.0;
        self.mem_used = (self.mem_used + (r.random::<f64>() - 0.5) * 8.0 * 1048576.0)
            .clamp(MEM_TOTAL * 0.05, MEM_TOTAL * 0.95)
            .round();
        self.cached = (self.cached + (r.random::<f64>() - 0.48) * 2.0 * 1048576.0)
            .max(0.0)
            .round();
        self.load =
            (self.load * 0.98 + self.busy / 100.0 * 4.0 * 0.02 + (r.random::<f64>() - 0.5) * 0.05)
                .max(0.0);
        self.procs = (self.procs + ((r.random::<f64>() - 0.5) * 4.0).round()).max(50.0);
        if r.random::<f64>() < 0.2 {
            self.fs_used += (r.random::<f64>() * 1048576.0).round();
            self.inodes += (r.random::<f64>() * 10.0).round();
        }
        self.uptime += 1.0;
        let disk_io = ["vda", "vdb"]
            .iter()
            .map(|d| {
                let rd = (r.random::<f64>() * r.random::<f64>() * 4096.0).round() * 4096.0;
                let wr = (r.random::<f64>() * r.random::<f64>() * 8192.0).round() * 4096.0;
                DiskIo {
                    name: (*d).to_string(),
                    read_bps: rd,
                    write_bps: wr,
                    read_iops: (rd / 65536.0).round(),
                    write_iops: (wr / 65536.0).round(),
                }
            })
            .collect();
        let rxp = (r.random::<f64>() * 2000.0).round();
        let txp = (r.random::<f64>() * 2000.0).round();
        let free = (MEM_TOTAL - self.mem_used - self.cached).max(0.0);
        let core = |r: &mut SmallRng, b: f64| {
            ((b + (r.random::<f64>() - 0.5) * 10.0).clamp(0.0, 100.0) * 10.0).round() / 10.0
        };
        let per_core = vec![core(r, b), core(r, b), core(r, b), core(r, b)];
        MetricSample {
            v: vitals_proto::PROTOCOL_VERSION,
            ts,
            host_id: self.host_id.clone(),
            cpu: Cpu {
                total: b,
                per_core,
                user: Some(((b - sys).max(0.0) * 10.0).round() / 10.0),
                system: Some(sys),
                iowait: Some(iow),
                steal: Some(steal),
            },
            mem: Mem {
                used: self.mem_used,
                total: MEM_TOTAL,
                available: Some(free + self.cached),
            },
            disk: vec![Disk {
                name: "/".into(),
                used: self.fs_used,
                total: DISK_TOTAL,
                inodes_used: Some(self.inodes),
                inodes_total: Some(13_107_200.0),
            }],
            net: Net {
                tx_bps: txp * 700.0,
                rx_bps: rxp * 900.0,
            },
            uptime_sec: self.uptime,
            proc_count: self.procs,
            swap: Some(Swap {
                used: 0.0,
                total: 0.0,
            }),
            load: Some(Load {
                one: (self.load * 100.0).round() / 100.0,
                five: (self.load * 97.0).round() / 100.0,
                fifteen: (self.load * 95.0).round() / 100.0,
            }),
            disk_io,
            net_ifaces: vec![NetIface {
                name: "eth0".into(),
                rx_bps: rxp * 900.0,
                tx_bps: txp * 700.0,
                rx_pps: rxp,
                tx_pps: txp,
                rx_errs: 0.0,
                tx_errs: 0.0,
            }],
            temps: vec![Temp {
                name: "cpu".into(),
                celsius: (35.0 + b * 0.4).round(),
            }],
            gpus: vec![],
            containers: vec![],
            docker_size: None,
            kernel: Default::default(),
        }
    }
}

/// Number of stored values one sample of this model carries (the raw fields an agent sends).
pub const VALUES_PER_SAMPLE: usize = 40;
