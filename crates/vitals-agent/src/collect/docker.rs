//! Docker (or Podman) containers and the engine's data directory size (seed 003's
//! `docker_sz`), every 5 minutes on a background thread so the 1-second loop never waits.
//!
//! The engine is reached through its unix socket with plain HTTP/1.0 requests (one connection
//! per request, no chunked bodies, a 10 s timeout): `GET /containers/json?all=1`, then
//! `GET /containers/<id>/stats?stream=false` for each running container (the engine fills in
//! the previous CPU reading itself, so CPU % needs no state here), and `GET /info` for the
//! data directory. Network rates are averaged between two polls. CPU % is of one core, as
//! `docker stats` shows it. Memory excludes the page cache (`inactive_file`), like `docker stats`.
//!
//! The latest result is published into a shared slot the fast loop copies from; a failing
//! engine is logged once and retried at the next poll.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use vitals_proto::limits::{MAX_NAME_BYTES, MAX_SMALL_LISTS};
use vitals_proto::sample::Container;

/// What the background poll last saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub containers: Vec<Container>,
    /// Bytes used by the engine's data directory, if it could be walked.
    pub data_size: Option<f64>,
}

/// Why the engine could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("no docker or podman socket found")]
    NoSocket,
    #[error("engine socket {0}: {1}")]
    Io(String, std::io::Error),
    #[error("engine answered {status} to {path}")]
    Status { status: u16, path: String },
    #[error("engine sent an unreadable answer to {path}: {message}")]
    Parse { path: String, message: String },
}

/// Sockets tried in order: `$DOCKER_HOST` (unix only), Docker's, Podman's (root, then user).
pub fn socket_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(h) = std::env::var("DOCKER_HOST")
        && let Some(p) = h.strip_prefix("unix://")
    {
        v.push(PathBuf::from(p));
    }
    v.push("/var/run/docker.sock".into());
    v.push("/run/podman/podman.sock".into());
    if let Ok(d) = std::env::var("XDG_RUNTIME_DIR") {
        v.push(Path::new(&d).join("podman/podman.sock"));
    }
    v
}

/// Splits an HTTP/1.x response into status and body.
pub fn parse_response(raw: &[u8]) -> Option<(u16, &[u8])> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let status = head.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some((status, &raw[head_end + 4..]))
}

/// One GET over the engine's unix socket.
pub fn get(socket: &Path, path: &str) -> Result<Vec<u8>, DockerError> {
    let io = |e| DockerError::Io(socket.display().to_string(), e);
    let mut s = UnixStream::connect(socket).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    // One write: the engine may answer as soon as the request line arrives.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
        .map_err(io)?;
    let mut raw = Vec::new();
    // Bounded: a list of containers or one stats object is far below 16 MiB.
    s.take(16 << 20).read_to_end(&mut raw).map_err(io)?;
    let (status, body) = parse_response(&raw).ok_or_else(|| DockerError::Parse {
        path: path.into(),
        message: "no HTTP header".into(),
    })?;
    if status != 200 {
        return Err(DockerError::Status {
            status,
            path: path.into(),
        });
    }
    Ok(body.to_vec())
}

fn json<T: for<'de> Deserialize<'de>>(path: &str, body: &[u8]) -> Result<T, DockerError> {
    serde_json::from_slice(body).map_err(|e| DockerError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

/// An entry of `GET /containers/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListEntry {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub state: String,
}

/// The parts of `GET /containers/<id>/stats?stream=false` used here.
#[derive(Debug, Default, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub cpu_stats: CpuStats,
    #[serde(default)]
    pub precpu_stats: CpuStats,
    #[serde(default)]
    pub memory_stats: MemStats,
    #[serde(default)]
    pub networks: HashMap<String, NetStats>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CpuStats {
    #[serde(default)]
    pub cpu_usage: CpuUsage,
    #[serde(default)]
    pub system_cpu_usage: u64,
    #[serde(default)]
    pub online_cpus: u32,
}

#[derive(Debug, Default, Deserialize)]
pub struct CpuUsage {
    #[serde(default)]
    pub total_usage: u64,
    #[serde(default)]
    pub percpu_usage: Vec<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MemStats {
    #[serde(default)]
    pub usage: u64,
    #[serde(default)]
    pub stats: HashMap<String, u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NetStats {
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
}

/// CPU % of one core as `docker stats` computes it.
pub fn cpu_percent(s: &Stats) -> f64 {
    let cpu = s
        .cpu_stats
        .cpu_usage
        .total_usage
        .saturating_sub(s.precpu_stats.cpu_usage.total_usage) as f64;
    let sys = s
        .cpu_stats
        .system_cpu_usage
        .saturating_sub(s.precpu_stats.system_cpu_usage) as f64;
    let n = match s.cpu_stats.online_cpus {
        0 => s.cpu_stats.cpu_usage.percpu_usage.len().max(1) as f64,
        n => f64::from(n),
    };
    if sys > 0.0 && cpu > 0.0 {
        cpu / sys * n * 100.0
    } else {
        0.0
    }
}

/// Memory use without the page cache (cgroup v2 `inactive_file`, v1 `total_inactive_file`).
pub fn memory_bytes(s: &Stats) -> f64 {
    let cache = s
        .memory_stats
        .stats
        .get("inactive_file")
        .or_else(|| s.memory_stats.stats.get("total_inactive_file"))
        .copied()
        .unwrap_or(0);
    s.memory_stats.usage.saturating_sub(cache) as f64
}

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Polls an engine; keeps network counters between polls for rates.
#[derive(Debug)]
pub struct Poller {
    socket: PathBuf,
    prev_net: HashMap<String, (u64, u64, Instant)>,
    data_dir: Option<PathBuf>,
}

impl Poller {
    /// Finds a reachable engine socket.
    pub fn find() -> Result<Poller, DockerError> {
        for s in socket_candidates() {
            if s.exists() {
                return Ok(Poller {
                    socket: s,
                    prev_net: HashMap::new(),
                    data_dir: None,
                });
            }
        }
        Err(DockerError::NoSocket)
    }

    /// For tests: an engine at a given socket.
    pub fn at(socket: PathBuf) -> Poller {
        Poller {
            socket,
            prev_net: HashMap::new(),
            data_dir: None,
        }
    }

    /// One poll: containers (with stats for running ones) and the data directory size.
    pub fn poll(&mut self) -> Result<Snapshot, DockerError> {
        let path = "/containers/json?all=1";
        let list: Vec<ListEntry> = json(path, &get(&self.socket, path)?)?;
        let mut containers = Vec::new();
        let mut seen = HashMap::new();
        for c in list.into_iter().take(MAX_SMALL_LISTS) {
            let name = c
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| c.id.chars().take(12).collect());
            let mut out = Container {
                name: clip(name, MAX_NAME_BYTES),
                image: clip(c.image, MAX_NAME_BYTES * 4),
                state: clip(c.state, MAX_NAME_BYTES),
                ..Container::default()
            };
            if out.state == "running" {
                let p = format!("/containers/{}/stats?stream=false", c.id);
                if let Ok(stats) = get(&self.socket, &p).and_then(|b| json::<Stats>(&p, &b)) {
                    out.cpu = cpu_percent(&stats);
                    out.mem_bytes = memory_bytes(&stats);
                    let rx: u64 = stats.networks.values().map(|n| n.rx_bytes).sum();
                    let tx: u64 = stats.networks.values().map(|n| n.tx_bytes).sum();
                    let now = Instant::now();
                    if let Some((prx, ptx, at)) = self.prev_net.get(&c.id) {
                        let secs = now.duration_since(*at).as_secs_f64();
                        out.net_rx_bps = super::rate::per_sec(*prx, rx, secs);
                        out.net_tx_bps = super::rate::per_sec(*ptx, tx, secs);
                    }
                    seen.insert(c.id.clone(), (rx, tx, now));
                }
            }
            containers.push(out);
        }
        self.prev_net = seen;
        if self.data_dir.is_none() {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Info {
                #[serde(default)]
                docker_root_dir: String,
            }
            let dir = get(&self.socket, "/info")
                .and_then(|b| json::<Info>("/info", &b))
                .map(|i| i.docker_root_dir)
                .unwrap_or_default();
            self.data_dir = Some(if dir.is_empty() {
                "/var/lib/docker".into()
            } else {
                dir.into()
            });
        }
        let data_size = self
            .data_dir
            .as_deref()
            .and_then(|d| dir_size(d).ok())
            .map(|b| b as f64);
        Ok(Snapshot {
            containers,
            data_size,
        })
    }
}

/// Bytes allocated under a directory (like `du -s`): blocks x 512, each hard-linked inode once,
/// symlinks not followed, other filesystems not entered.
pub fn dir_size(root: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(root)?;
    let dev = meta.dev();
    let mut seen = std::collections::HashSet::new();
    let mut total = meta.blocks() * 512;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
}

/// The background poller and the slot it fills. Dropping it stops the thread within a second.
#[derive(Debug)]
pub struct Background {
    slot: Arc<Mutex<Option<Snapshot>>>,
    stop: Arc<AtomicBool>,
}

impl Background {
    /// Starts polling every `every`, the first poll right away.
    pub fn start(mut poller: Poller, every: Duration) -> std::io::Result<Background> {
        let slot = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (slot.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vitals-docker".into())
            .spawn(move || {
                let mut warned = false;
                while !st.load(Ordering::Relaxed) {
                    match poller.poll() {
                        Ok(snap) => {
                            warned = false;
                            if let Ok(mut g) = s.lock() {
                                *g = Some(snap);
                            }
                        }
                        Err(e) => {
                            if !warned {
                                tracing::warn!(collector = "docker", "collector skipped: {e}");
                                warned = true;
                            }
                        }
                    }
                    let until = Instant::now() + every;
                    while Instant::now() < until && !st.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            })?;
        Ok(Background { slot, stop })
    }

    /// The latest snapshot, if a poll has succeeded.
    pub fn latest(&self) -> Option<Snapshot> {
        self.slot.lock().ok().and_then(|g| g.clone())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_like_docker_stats() {
        let s: Stats = serde_json::from_str(
            r#"{"cpu_stats":{"cpu_usage":{"total_usage":300000000},"system_cpu_usage":2000000000,"online_cpus":4},
                "precpu_stats":{"cpu_usage":{"total_usage":100000000},"system_cpu_usage":1000000000},
                "memory_stats":{"usage":1000,"stats":{"inactive_file":200}},
                "networks":{"eth0":{"rx_bytes":10,"tx_bytes":20}}}"#,
        )
        .expect("parses");
        // 0.2 s of CPU over 1 s of 4-CPU system time = 0.2 / 1 * 4 * 100 = 80 %.
        assert!((cpu_percent(&s) - 80.0).abs() < 1e-9);
        assert_eq!(memory_bytes(&s), 800.0);
    }

    #[test]
    fn http_response_split() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[]";
        assert_eq!(parse_response(raw), Some((200, &b"[]"[..])));
        assert_eq!(parse_response(b"garbage"), None);
    }

    /// A fake engine on a unix socket: the poller lists, reads stats and reports.
    #[test]
    fn polls_a_fake_engine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("f"), vec![1u8; 10_000]).expect("write");
        let data_s = data.display().to_string();
        let server = std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut c, _) = listener.accept().expect("accept");
                let mut req = Vec::new();
                let mut buf = [0u8; 256];
                while !req.ends_with(b"\r\n\r\n") {
                    let n = c.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let body = if req.starts_with("GET /containers/json") {
                    r#"[{"Id":"abc","Names":["/web"],"Image":"nginx","State":"running"}]"#
                        .to_string()
                } else if req.starts_with("GET /containers/abc/stats") {
                    r#"{"memory_stats":{"usage":5000},"networks":{"eth0":{"rx_bytes":1,"tx_bytes":2}}}"#.to_string()
                } else {
                    format!(r#"{{"DockerRootDir":"{data_s}"}}"#)
                };
                let _ = write!(c, "HTTP/1.0 200 OK\r\n\r\n{body}");
            }
        });
        let snap = Poller::at(sock).poll().expect("polls");
        server.join().expect("server");
        assert_eq!(snap.containers.len(), 1);
        assert_eq!(snap.containers[0].name, "web");
        assert_eq!(snap.containers[0].mem_bytes, 5000.0);
        assert!(snap.data_size.expect("size") >= 10_000.0);
    }
}
