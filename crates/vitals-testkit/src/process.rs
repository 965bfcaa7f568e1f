//! A hub as a child process (for crash tests: `kill -9` and restart on the same data dir).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct HubProcess {
    pub child: Child,
    pub url: String,
    pub setup_url: Option<String>,
}

impl HubProcess {
    /// Starts `bin` on `listen` (e.g. `127.0.0.1:0`) with `data_dir`, and waits until it prints
    /// its URL.
    pub fn spawn(bin: &Path, data_dir: &Path, listen: &str, extra: &[&str]) -> HubProcess {
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--no-self-monitor")
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hub binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut setup_url = None;
        let url = loop {
            assert!(Instant::now() < deadline, "hub did not start in time");
            let Some(Ok(line)) = lines.next() else {
                panic!("hub exited before printing its URL");
            };
            if line.contains("/setup?token=") {
                setup_url = Some(line.trim().to_string());
            }
            if let Some(u) = line.strip_prefix("vitals hub listening on ") {
                break u.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        HubProcess {
            child,
            url,
            setup_url,
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of a workspace binary built by cargo next to the test executable.
pub fn workspace_bin(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test exe");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join(name)
}
