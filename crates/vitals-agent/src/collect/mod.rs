//! Host collectors: one file per source, pure maths apart from the reads.
//!
//! [`Collector::sample`] is the fast path (every interval, default 1 s): it reads `/proc/stat`,
//! `/proc/meminfo`, `/proc/loadavg`, `/proc/uptime`, `/proc/diskstats`, `/proc/net/dev`, one
//! `statvfs` per filesystem, the temperature files and NVML, and copies the latest Docker
//! snapshot that a background thread refreshes every 5 minutes. It never blocks on anything
//! but local kernel files. Lists that rarely change (mounts, block devices, interface kinds,
//! sensors) are re-discovered every minute, not every second.
//!
//! [`Collector::state`] is the slow path (every 30 s): system info, top processes and network
//! interfaces.
//!
//! Invariants: `sample` never fails and never panics on odd kernel output; a collector that
//! cannot work (no permission, no GPU, no Docker) is skipped with exactly one `warn` line until
//! it works again; rates are per second over the real elapsed (monotonic) time; every list is
//! within the proto limits so a sample never fails hub validation for its size.

pub mod cpu;
pub mod disk;
pub mod diskio;
pub mod docker;
pub mod gpu;
pub mod interfaces;
pub mod kernel;
pub mod memory;
pub mod network;
pub mod processes;
pub mod rate;
pub mod sysinfo;
pub mod system;
pub mod temps;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vitals_proto::MetricSample;
use vitals_proto::sample::{Cpu, Load, Mem, Net};
use vitals_proto::state::DeviceState;

/// What to collect and where from.
#[derive(Debug, Clone)]
pub struct Options {
    /// Filesystem root the kernel files are read under (`/` except in tests).
    pub root: PathBuf,
    /// Poll Docker/Podman in the background.
    pub docker: bool,
    /// How often Docker is polled.
    pub docker_every: Duration,
    /// Read NVIDIA GPUs through NVML.
    pub gpu: bool,
    /// Read temperature sensors.
    pub temps: bool,
    /// Read kernel statistics ([`kernel`]: vmstat, meminfo, SNMP, PSI, ...).
    pub kernel: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: PathBuf::from("/"),
            docker: true,
            docker_every: Duration::from_secs(300),
            gpu: true,
            temps: true,
            kernel: true,
        }
    }
}

const REDISCOVER: Duration = Duration::from_secs(60);
/// How often the process count is refreshed (see [`Collector::sample`]).
const PROC_COUNT_EVERY: Duration = Duration::from_secs(5);

/// Collects samples and state of one host. See the module docs.
pub struct Collector {
    host_id: String,
    opts: Options,
    last_at: Instant,
    cpu_prev: Option<cpu::Reading>,
    kernel_prev: Option<kernel::Reading>,
    /// The reading before `kernel_prev`, refilled next time (its names are reused).
    kernel_spare: Option<kernel::Reading>,
    proc_count: Option<(Instant, f64)>,
    diskio_prev: Vec<(String, diskio::Counters)>,
    net_prev: Vec<(String, network::Counters)>,
    discovered_at: Option<Instant>,
    mounts: Vec<disk::Mount>,
    whole_disks: HashSet<String>,
    net_in_total: HashMap<String, bool>,
    sensors: Vec<temps::Sensor>,
    gpus: Option<gpu::Gpus>,
    docker: Option<docker::Background>,
    procs: processes::ProcessCollector,
    warned: HashSet<&'static str>,
    /// Kernel files kept open between intervals (see [`Collector::read`]).
    open: std::sync::Mutex<HashMap<String, std::fs::File>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("host_id", &self.host_id)
            .field("root", &self.opts.root)
            .finish_non_exhaustive()
    }
}

impl Collector {
    /// A collector for this host with default options. Never fails: what cannot be read is
    /// skipped with one log line.
    pub fn new(host_id: String) -> Collector {
        Collector::with_options(host_id, Options::default())
    }

    /// A collector with explicit options.
    pub fn with_options(host_id: String, opts: Options) -> Collector {
        let procs =
            processes::ProcessCollector::new(opts.root.join("proc"), opts.root.join("etc/passwd"));
        let mut c = Collector {
            host_id,
            last_at: Instant::now(),
            cpu_prev: None,
            kernel_prev: None,
            kernel_spare: None,
            proc_count: None,
            diskio_prev: Vec::new(),
            net_prev: Vec::new(),
            discovered_at: None,
            mounts: Vec::new(),
            whole_disks: HashSet::new(),
            net_in_total: HashMap::new(),
            sensors: Vec::new(),
            gpus: None,
            docker: None,
            procs,
            warned: HashSet::new(),
            open: std::sync::Mutex::new(HashMap::new()),
            opts,
        };
        if c.opts.gpu {
            match gpu::Gpus::open() {
                Ok(g) => c.gpus = Some(g),
                Err(e) => c.skip("gpu", &e),
            }
        }
        if c.opts.docker {
            match docker::Poller::find() {
                Ok(p) => match docker::Background::start(p, c.opts.docker_every) {
                    Ok(b) => c.docker = Some(b),
                    Err(e) => c.skip("docker", &e),
                },
                Err(e) => c.skip("docker", &e),
            }
        }
        // A first reading so that the first sample already has rates.
        c.discover();
        let stat = c.read("proc/stat");
        c.cpu_prev = c.read_cpu(stat.as_deref());
        c.kernel_prev = c.read_kernel(None, stat.as_deref().ok(), None);
        c.diskio_prev = c.read_diskio();
        c.net_prev = c.read_net();
        c.last_at = Instant::now();
        c
    }

    /// The host id samples are stamped with.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.opts.root.join(rel)
    }

    /// Reads a kernel file. Files under `proc/` stay open and are re-read from offset 0
    /// (the kernel regenerates them), which spares a path walk, an open and a close each
    /// interval for the dozen files read every second.
    fn read(&self, rel: &str) -> std::io::Result<String> {
        if !rel.starts_with("proc/") {
            return std::fs::read_to_string(self.path(rel));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let f = match open.get(rel) {
            Some(f) => f,
            None => {
                let f = std::fs::File::open(self.path(rel))?;
                open.entry(rel.to_string()).or_insert(f)
            }
        };
        match read_from_start(f) {
            Ok(s) => Ok(s),
            Err(_) => {
                open.remove(rel);
                std::fs::read_to_string(self.path(rel))
            }
        }
    }

    /// Logs a collector failure once; later failures of the same collector stay quiet.
    fn skip(&mut self, name: &'static str, err: &dyn std::fmt::Display) {
        if self.warned.insert(name) {
            tracing::warn!(collector = name, "collector skipped: {err}");
        }
    }

    fn ok(&mut self, name: &'static str) {
        if self.warned.remove(name) {
            tracing::info!(collector = name, "collector working again");
        }
    }

    fn discover(&mut self) {
        self.discovered_at = Some(Instant::now());
        match self.read("proc/self/mountinfo") {
            Ok(t) => self.mounts = disk::select(&disk::parse_mountinfo(&t)),
            Err(e) => self.skip("filesystems", &e),
        }
        let sys_block = self.path("sys/block");
        self.whole_disks = std::fs::read_dir(&sys_block)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let class_net = self.path("sys/class/net");
        let names: Vec<String> = std::fs::read_dir(&class_net)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let kinds: Vec<(String, network::Kind)> = names
            .into_iter()
            .map(|n| {
                let k = network::Kind::read(&class_net, &n);
                (n, k)
            })
            .collect();
        let has_physical = kinds.iter().any(|(_, k)| !k.virtual_ && !k.loopback);
        self.net_in_total = kinds
            .into_iter()
            .map(|(n, k)| (n, network::counts_in_total(k, has_physical)))
            .collect();
        if self.opts.temps {
            self.sensors = temps::discover(&self.path("sys"));
        }
    }

    fn read_cpu(&mut self, stat: Result<&str, &std::io::Error>) -> Option<cpu::Reading> {
        match stat.map(cpu::parse) {
            Ok(Some(r)) => Some(r),
            Ok(None) => {
                self.skip("cpu", &"no cpu line in /proc/stat");
                None
            }
            Err(e) => {
                self.skip("cpu", &e);
                None
            }
        }
    }

    /// Kernel statistics into `into` (a reading two intervals old, refilled), reusing the
    /// `/proc/stat` and `/proc/meminfo` text already read this round.
    fn read_kernel(
        &self,
        into: Option<kernel::Reading>,
        stat: Option<&str>,
        meminfo: Option<&str>,
    ) -> Option<kernel::Reading> {
        if !self.opts.kernel {
            return None;
        }
        let mut r = into.unwrap_or_default();
        r.refill(|p| match (p, stat, meminfo) {
            ("proc/stat", Some(t), _) | ("proc/meminfo", _, Some(t)) => Some(Cow::Borrowed(t)),
            _ => self.read(p).ok().map(Cow::Owned),
        });
        Some(r)
    }

    fn read_diskio(&mut self) -> Vec<(String, diskio::Counters)> {
        match self.read("proc/diskstats") {
            Ok(t) => {
                let whole = &self.whole_disks;
                diskio::parse(&t, |n| diskio::is_reported(n, whole.contains(n)))
            }
            Err(e) => {
                self.skip("diskio", &e);
                Vec::new()
            }
        }
    }

    fn read_net(&mut self) -> Vec<(String, network::Counters)> {
        match self.read("proc/net/dev") {
            Ok(t) => network::parse(&t),
            Err(e) => {
                self.skip("network", &e);
                Vec::new()
            }
        }
    }

    /// One sample, stamped `now_ms` (Unix milliseconds). Cheap and synchronous.
    pub fn sample(&mut self, now_ms: i64) -> MetricSample {
        let now = Instant::now();
        let secs = now.duration_since(self.last_at).as_secs_f64();
        self.last_at = now;
        if self
            .discovered_at
            .is_none_or(|t| now.duration_since(t) >= REDISCOVER)
        {
            self.discover();
        }

        let stat = self.read("proc/stat");
        let cpu = match (
            self.cpu_prev.take(),
            self.read_cpu(stat.as_ref().map(String::as_str)),
        ) {
            (Some(p), Some(c)) => {
                let v = cpu::compute(&p, &c);
                self.cpu_prev = Some(c);
                v
            }
            (_, c) => {
                let cores = c.as_ref().map_or(0, |c| c.cores.len());
                self.cpu_prev = c;
                Cpu {
                    per_core: vec![0.0; cores],
                    ..Cpu::default()
                }
            }
        };

        let meminfo = self.read("proc/meminfo");
        let (mem, swap) = match meminfo.as_deref().map(memory::parse) {
            Ok(Some(m)) => (m.mem, Some(m.swap)),
            Ok(None) => {
                self.skip("memory", &"no MemTotal in /proc/meminfo");
                (Mem::default(), None)
            }
            Err(e) => {
                self.skip("memory", &e);
                (Mem::default(), None)
            }
        };

        let load: Option<Load> = self
            .read("proc/loadavg")
            .ok()
            .and_then(|t| system::parse_loadavg(&t));
        let uptime_sec = self
            .read("proc/uptime")
            .ok()
            .and_then(|t| system::parse_uptime(&t))
            .unwrap_or(0.0);
        // Counting processes walks every /proc/PID entry (the costliest read of a sample),
        // so the count is refreshed every PROC_COUNT_EVERY and repeated in between.
        let proc_count = match self.proc_count {
            Some((at, n)) if now.duration_since(at) < PROC_COUNT_EVERY => n,
            _ => {
                let n = match system::count_processes(&self.path("proc")) {
                    Ok(n) => n as f64,
                    Err(e) => {
                        self.skip("processes", &e);
                        0.0
                    }
                };
                self.proc_count = Some((now, n));
                n
            }
        };

        let mut disks = Vec::with_capacity(self.mounts.len());
        let mut fs_err = None;
        for m in &self.mounts {
            let p = self.opts.root.join(m.mount_point.trim_start_matches('/'));
            match disk::statvfs(&p.to_string_lossy()) {
                Ok(s) => disks.extend(disk::to_disk(&m.mount_point, s)),
                Err(e) => fs_err = Some(format!("statvfs {}: {e}", m.mount_point)),
            }
        }
        match fs_err {
            Some(e) => self.skip("filesystems", &e),
            None => self.ok("filesystems"),
        }

        let diskio_cur = self.read_diskio();
        let disk_io = diskio::compute(&self.diskio_prev, &diskio_cur, secs);
        self.diskio_prev = diskio_cur;

        let net_cur = self.read_net();
        let in_total = &self.net_in_total;
        let (net, net_ifaces) = network::compute(&self.net_prev, &net_cur, secs, |n| {
            in_total.get(n).copied().unwrap_or(false)
        });
        self.net_prev = net_cur;

        let temps = temps::read(&self.sensors);

        let gpus = match self.gpus.as_ref().map(gpu::Gpus::read) {
            Some(Ok(g)) => g,
            Some(Err(e)) => {
                self.skip("gpu", &e);
                Vec::new()
            }
            None => Vec::new(),
        };

        let spare = self.kernel_spare.take();
        let kernel_cur = self.read_kernel(spare, stat.as_deref().ok(), meminfo.as_deref().ok());
        let kernel = match (&self.kernel_prev, &kernel_cur) {
            (Some(p), Some(c)) => kernel::compute(p, c, kernel::elapsed(p, c, secs)),
            _ => Default::default(),
        };
        self.kernel_spare = std::mem::replace(&mut self.kernel_prev, kernel_cur);

        let snap = self.docker.as_ref().and_then(docker::Background::latest);
        let (containers, docker_size) =
            snap.map_or((Vec::new(), None), |s| (s.containers, s.data_size));

        MetricSample {
            v: vitals_proto::PROTOCOL_VERSION,
            ts: now_ms,
            host_id: self.host_id.clone(),
            cpu,
            mem,
            disk: disks,
            net: Net {
                tx_bps: net.tx_bps,
                rx_bps: net.rx_bps,
            },
            uptime_sec,
            proc_count,
            swap,
            load,
            disk_io,
            net_ifaces,
            temps,
            gpus,
            containers,
            docker_size,
            kernel,
        }
    }

    /// System info, top processes and network interfaces (the slow path, every 30 s).
    pub fn state(&mut self) -> DeviceState {
        let mut s = self.state_without_processes();
        match self.procs.collect() {
            Ok(p) => s.processes = Some(p),
            Err(e) => self.skip("top-processes", &e),
        }
        s
    }

    /// System info and network interfaces only: cheap enough to check often for changes.
    pub fn state_without_processes(&mut self) -> DeviceState {
        let addrs = interfaces::Addrs::read();
        let network_interfaces = match interfaces::read(&self.path("sys/class/net"), &addrs) {
            Ok(n) => Some(n),
            Err(e) => {
                self.skip("interfaces", &e);
                None
            }
        };
        DeviceState {
            system_info: Some(sysinfo::read(&self.opts.root, &addrs)),
            processes: None,
            network_interfaces,
        }
    }
}

/// The whole text of an open kernel file, read with `pread` from offset 0.
fn read_from_start(f: &std::fs::File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(buf.capacity().max(4096));
        }
        let at = buf.len();
        buf.resize(buf.capacity(), 0);
        match f.read_at(&mut buf[at..], at as u64) {
            Ok(0) => {
                buf.truncate(at);
                break;
            }
            Ok(n) => buf.truncate(at + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(at),
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Unix milliseconds now, for stamping samples.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `path` exists under the collector's root (used by tests and diagnostics).
pub fn exists_under(root: &Path, rel: &str) -> bool {
    root.join(rel).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            docker: false,
            gpu: false,
            ..Options::default()
        }
    }

    /// A kept-open kernel file read again gives the kernel's new text, whole, and a file
    /// larger than one read buffer comes back complete.
    #[test]
    fn kept_open_files_are_read_afresh_and_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("proc/x"), &big).expect("write");
        let c = Collector::with_options(
            "h".into(),
            Options {
                root: dir.path().to_path_buf(),
                ..opts()
            },
        );
        assert_eq!(c.read("proc/x").expect("read"), big);
        std::fs::write(dir.path().join("proc/x"), "short\n").expect("rewrite");
        assert_eq!(c.read("proc/x").expect("read again"), "short\n");
        assert!(c.read("proc/missing").is_err());
        if std::path::Path::new("/proc/stat").exists() {
            let real = Collector::with_options("h".into(), opts());
            let a = real.read("proc/stat").expect("stat");
            let b = real.read("proc/stat").expect("stat again");
            assert!(a.starts_with("cpu ") && b.starts_with("cpu "), "{a:.40}");
            assert!(b.contains("\nctxt "), "the whole file: {} bytes", b.len());
        }
    }

    /// Live readings are cross-checked against independent reads of `/proc` in the same test.
    #[test]
    fn live_sample_agrees_with_proc() {
        let mut c = Collector::with_options("h".into(), opts());
        std::thread::sleep(Duration::from_millis(200));
        let s = c.sample(now_ms());
        assert_eq!(s.v, vitals_proto::PROTOCOL_VERSION);

        let stat = std::fs::read_to_string("/proc/stat").expect("stat");
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .count();
        assert_eq!(s.cpu.per_core.len(), cores);
        assert!((0.0..=100.0).contains(&s.cpu.total));

        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
        let total_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("MemTotal");
        assert_eq!(s.mem.total, total_kb * 1024.0);
        assert!(s.mem.used <= s.mem.total);

        let up: f64 = std::fs::read_to_string("/proc/uptime")
            .expect("uptime")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("uptime value");
        assert!((up - s.uptime_sec).abs() < 5.0, "{up} vs {}", s.uptime_sec);

        let procs = std::fs::read_dir("/proc")
            .expect("proc")
            .filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
            })
            .count() as f64;
        assert!(
            (procs - s.proc_count).abs() < 20.0,
            "{procs} vs {}",
            s.proc_count
        );

        let root = s
            .disk
            .iter()
            .find(|d| d.name == "/")
            .expect("root filesystem");
        let vfs = disk::statvfs("/").expect("statvfs");
        assert_eq!(root.total, vfs.blocks as f64 * vfs.frsize as f64);

        let devs = std::fs::read_to_string("/proc/net/dev").expect("net/dev");
        for i in &s.net_ifaces {
            assert!(
                devs.contains(&format!("{}:", i.name)),
                "{} not in /proc/net/dev",
                i.name
            );
        }
        assert!(!s.net_ifaces.iter().any(|i| i.name == "lo"));

        let now = now_ms();
        let w = vitals_proto::validate::Window {
            now_ms: now,
            oldest_ms: now - 86_400_000,
        };
        vitals_proto::validate_sample(&s, w).expect("a live sample passes hub validation");
    }

    #[test]
    fn state_has_all_three_parts() {
        let mut c = Collector::with_options("h".into(), opts());
        let st = c.state();
        assert!(st.system_info.is_some());
        assert!(st.processes.is_some_and(|p| !p.top_processes.is_empty()));
        assert!(
            st.network_interfaces
                .is_some_and(|n| !n.interfaces.is_empty())
        );
    }

    /// A root without kernel files: every collector is skipped, nothing panics, the sample is
    /// still well formed.
    #[test]
    fn empty_root_yields_an_empty_but_valid_sample() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Collector::with_options(
            "h".into(),
            Options {
                root: dir.path().to_path_buf(),
                ..opts()
            },
        );
        let s = c.sample(now_ms());
        assert_eq!(s.cpu.total, 0.0);
        assert!(s.disk.is_empty());
        let st = c.state();
        assert!(st.network_interfaces.is_none());
        assert!(exists_under(dir.path(), "."));
    }

    #[test]
    fn fixture_root_gives_rates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        std::fs::create_dir_all(root.join("proc/net")).expect("mkdir");
        std::fs::create_dir_all(root.join("sys/block/sda")).expect("mkdir");
        let put = |name: &str, to: &str| {
            std::fs::copy(fx.join(name), root.join(to)).expect("copy fixture");
        };
        put("proc_stat_a", "proc/stat");
        put("meminfo", "proc/meminfo");
        put("diskstats_a", "proc/diskstats");
        put("net_dev_a", "proc/net/dev");
        let mut c = Collector::with_options(
            "h".into(),
            Options {
                root: root.to_path_buf(),
                ..opts()
            },
        );
        put("proc_stat_b", "proc/stat");
        put("diskstats_b", "proc/diskstats");
        put("net_dev_b", "proc/net/dev");
        std::thread::sleep(Duration::from_millis(50));
        let s = c.sample(1);
        assert!((s.cpu.total - 50.0).abs() < 1e-9);
        assert_eq!(s.cpu.per_core, vec![80.0, 20.0]);
        assert_eq!(s.mem.used, 8_192_000.0 * 1024.0);
        assert_eq!(
            s.disk_io.len(),
            1,
            "only sda is a whole device under this root"
        );
        assert!(s.disk_io[0].read_bps > 0.0);
        assert_eq!(s.net_ifaces.len(), 5);
    }
}
