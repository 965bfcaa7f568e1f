//! A stable host id for this machine.
//!
//! Order: `/etc/machine-id` (or `/var/lib/dbus/machine-id`), else the hostname, else a random
//! id persisted in a state file. The machine id is a secret-ish local identifier (systemd asks
//! applications not to expose it), so what is sent is derived from it: the first 32 hex digits
//! of `SHA-256("vitals-host-id:" + source)`. The same machine therefore always gets the same
//! id, across reinstalls of the agent and restarts of the hub.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn derive(source: &str) -> String {
    let d = Sha256::digest(format!("vitals-host-id:{source}").as_bytes());
    hex::encode(&d[..16])
}

fn read_nonempty(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty() && s != "uninitialized").then(|| s.to_string())
}

/// Where the random fallback id is kept: `$STATE_DIRECTORY` (systemd), else
/// `/var/lib/vitals-agent` when writable, else `$HOME/.local/state/vitals-agent`.
fn state_file() -> PathBuf {
    if let Ok(d) = std::env::var("STATE_DIRECTORY")
        && let Some(first) = d.split(':').next()
    {
        return Path::new(first).join("host-id");
    }
    let system = Path::new("/var/lib/vitals-agent");
    if system.is_dir() {
        return system.join("host-id");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    Path::new(&home).join(".local/state/vitals-agent/host-id")
}

/// This machine's host id (see the module docs for where it comes from).
pub fn host_id() -> String {
    host_id_from(
        &[
            Path::new("/etc/machine-id"),
            Path::new("/var/lib/dbus/machine-id"),
        ],
        Path::new("/proc/sys/kernel/hostname"),
        &state_file(),
    )
}

/// [`host_id`] with explicit sources, for tests.
pub fn host_id_from(machine_ids: &[&Path], hostname: &Path, state: &Path) -> String {
    for p in machine_ids {
        if let Some(id) = read_nonempty(p) {
            return derive(&format!("machine-id:{id}"));
        }
    }
    if let Some(h) = read_nonempty(hostname).filter(|h| h != "localhost") {
        return derive(&format!("hostname:{h}"));
    }
    if let Some(id) = read_nonempty(state) {
        return id;
    }
    let mut raw = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .is_ok();
    let id = if random {
        hex::encode(raw)
    } else {
        // No randomness source: time and pid still make collisions unlikely on one network.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        derive(&format!("fallback:{t}:{}", std::process::id()))
    };
    if let Some(dir) = state.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(state, &id) {
        tracing::warn!(path = %state.display(), "host id not persisted, it will change on restart: {e}");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_then_hostname_then_persisted_random() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mid = dir.path().join("machine-id");
        let host = dir.path().join("hostname");
        let state = dir.path().join("state/host-id");
        std::fs::write(&mid, "3d1219c7c4c5404aaa1f6d2a48adfda4\n").expect("write");
        std::fs::write(&host, "box\n").expect("write");
        let a = host_id_from(&[&mid], &host, &state);
        assert_eq!(a.len(), 32);
        assert_eq!(a, host_id_from(&[&mid], &host, &state), "stable");
        assert!(!a.contains("3d1219c7"), "the raw machine id is not exposed");

        let missing = dir.path().join("nope");
        let b = host_id_from(&[&missing], &host, &state);
        assert_ne!(a, b);

        let r1 = host_id_from(&[&missing], &missing, &state);
        let r2 = host_id_from(&[&missing], &missing, &state);
        assert_eq!(r1, r2, "random id is persisted");
        assert_eq!(r1.len(), 32);
    }

    #[test]
    fn live_host_id_is_stable() {
        assert_eq!(host_id(), host_id());
    }
}
