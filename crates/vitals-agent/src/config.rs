//! Agent configuration: defaults -> TOML file -> `VITALS_*` environment -> command-line flags,
//! merged once at start. Unknown keys in the file are an error, and every problem found is
//! reported at once.
//!
//! The file also holds the device token written by `pair`; it is always written with mode
//! 0600 (atomically: a temporary file in the same directory, then a rename).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::transport::Kind;

/// The TOML file, every key optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Hub URL, e.g. `https://vitals.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// Device token from pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Device id from pairing (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Overrides the machine-derived host id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Sampling interval in seconds (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// `websocket` (default) or `http` (`POST /api/report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Kind>,
    /// Where unacknowledged samples are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// Spool bound in MiB (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_max_mib: Option<u64>,
    /// Spool bound in days (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_max_age_days: Option<f64>,
    /// Poll Docker/Podman (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<bool>,
    /// Read NVIDIA GPUs (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<bool>,
    /// Read kernel statistics: vmstat, meminfo, SNMP/netstat, pressure, softirqs (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_stats: Option<bool>,
    /// Self-update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateFile>,
}

/// `[update]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Release endpoint in the GitHub releases API shape (default `{hub}/api/agent/release`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_hours: Option<f64>,
}

/// The merged configuration the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub hub: String,
    pub token: String,
    pub host_id: Option<String>,
    pub interval: Duration,
    pub transport: Kind,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub spool_max_age: Duration,
    pub docker: bool,
    pub gpu: bool,
    pub kernel_stats: bool,
    pub update_enabled: bool,
    pub update_url: String,
    pub update_every: Duration,
}

/// Command-line overrides (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub hub: Option<String>,
    pub interval_secs: Option<f64>,
    pub transport: Option<Kind>,
    pub spool_dir: Option<PathBuf>,
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration ({}):\n  - {}", path.display(), problems.join("\n  - "))]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// The config file used when `--config` is not given: `/etc/vitals-agent/config.toml` for
/// root, else `$XDG_CONFIG_HOME` (or `~/.config`) `/vitals-agent/config.toml`.
pub fn default_path() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/etc/vitals-agent/config.toml");
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("vitals-agent/config.toml")
}

/// Reads the file; a missing file is an empty configuration.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => {
            return Err(ConfigError {
                path: path.into(),
                problems: vec![format!("cannot read: {e}")],
            });
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError {
        path: path.into(),
        problems: vec![e.to_string().trim().replace('\n', "\n    ")],
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Merges defaults, the file, the environment and flags, and checks the result.
/// `need_token` is false for commands that do not talk to the hub with a token.
pub fn load(path: &Path, o: &Overrides, need_token: bool) -> Result<Config, ConfigError> {
    let f = read_file(path)?;
    let mut problems = Vec::new();

    let hub = o
        .hub
        .clone()
        .or_else(|| env("VITALS_HUB"))
        .or(f.hub.clone())
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    if hub.is_empty() {
        problems.push(
            "hub is not set: pair first (`vitals-agent pair --hub URL`) or set `hub` / VITALS_HUB"
                .into(),
        );
    } else if !(hub.starts_with("http://") || hub.starts_with("https://")) {
        problems.push(format!("hub {hub:?} must start with http:// or https://"));
    }
    let token = env("VITALS_TOKEN").or(f.token.clone()).unwrap_or_default();
    if need_token && token.is_empty() {
        problems.push("no device token: run `vitals-agent pair --hub URL` first".into());
    }

    let mut num = |name: &str,
                   file: Option<f64>,
                   env_name: &str,
                   flag: Option<f64>,
                   min: f64,
                   max: f64,
                   default: f64|
     -> f64 {
        let from_env = env(env_name).map(|v| v.parse::<f64>().map_err(|_| v));
        let v = match (flag, from_env) {
            (Some(v), _) => v,
            (None, Some(Ok(v))) => v,
            (None, Some(Err(raw))) => {
                problems.push(format!("{env_name}={raw:?} is not a number"));
                default
            }
            (None, None) => file.unwrap_or(default),
        };
        if !(v.is_finite() && (min..=max).contains(&v)) {
            problems.push(format!("{name} = {v} must be within {min}..={max}"));
            return default;
        }
        v
    };
    let interval = num(
        "interval_secs",
        f.interval_secs,
        "VITALS_INTERVAL",
        o.interval_secs,
        0.1,
        3600.0,
        1.0,
    );
    let spool_mib = num(
        "spool_max_mib",
        f.spool_max_mib.map(|v| v as f64),
        "VITALS_SPOOL_MAX_MIB",
        None,
        1.0,
        1_048_576.0,
        64.0,
    );
    let spool_days = num(
        "spool_max_age_days",
        f.spool_max_age_days,
        "VITALS_SPOOL_MAX_AGE_DAYS",
        None,
        0.001,
        3650.0,
        7.0,
    );
    let upd = f.update.clone().unwrap_or_default();
    let update_hours = num(
        "update.interval_hours",
        upd.interval_hours,
        "VITALS_UPDATE_INTERVAL_HOURS",
        None,
        0.001,
        8760.0,
        24.0,
    );

    let transport = match (o.transport, env("VITALS_TRANSPORT")) {
        (Some(k), _) => k,
        (None, Some(v)) => match v.as_str() {
            "websocket" | "ws" => Kind::Websocket,
            "http" => Kind::Http,
            _ => {
                problems.push(format!("VITALS_TRANSPORT={v:?} must be websocket or http"));
                Kind::Websocket
            }
        },
        (None, None) => f.transport.unwrap_or_default(),
    };

    let spool_dir = o
        .spool_dir
        .clone()
        .or_else(|| env("VITALS_SPOOL_DIR").map(PathBuf::from))
        .or(f.spool_dir.clone())
        .unwrap_or_else(|| default_spool_dir(path));

    let update_url = upd
        .url
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("{hub}/api/agent/release"));

    if !problems.is_empty() {
        return Err(ConfigError {
            path: path.into(),
            problems,
        });
    }
    Ok(Config {
        path: path.into(),
        hub,
        token,
        host_id: env("VITALS_HOST_ID").or(f.host_id),
        interval: Duration::from_secs_f64(interval),
        transport,
        spool_dir,
        spool_max_bytes: (spool_mib * 1_048_576.0) as u64,
        spool_max_age: Duration::from_secs_f64(spool_days * 86_400.0),
        docker: f.docker.unwrap_or(true),
        gpu: f.gpu.unwrap_or(true),
        kernel_stats: f.kernel_stats.unwrap_or(true),
        update_enabled: upd.enabled.unwrap_or(true),
        update_url,
        update_every: Duration::from_secs_f64(update_hours * 3600.0),
    })
}

/// `$STATE_DIRECTORY/spool` under systemd, else `spool/` beside the config file.
fn default_spool_dir(config: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = d.to_string_lossy().split(':').next()
    {
        return Path::new(first).join("spool");
    }
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("spool")
}

/// Writes a config file atomically with mode 0600.
pub fn write_file(path: &Path, f: &FileConfig) -> std::io::Result<()> {
    let text = toml::to_string_pretty(f).map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config".into())
    ));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(
            b"# vitals-agent configuration (the token is a secret: keep this file 0600)\n",
        )?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unknown_keys_and_bad_values_are_all_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "hub = \"http://h\"\nbogus = 1\n").expect("write");
        let e = load(&p, &Overrides::default(), false).expect_err("unknown key");
        assert!(e.to_string().contains("bogus"), "{e}");

        std::fs::write(&p, "hub = \"ftp://h\"\ninterval_secs = 0\n").expect("write");
        let e = load(&p, &Overrides::default(), true).expect_err("bad values");
        assert_eq!(e.problems.len(), 3, "{e}");
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "hub = \"http://h/\"\ntoken = \"t\"\ninterval_secs = 5\n",
        )
        .expect("write");
        let c = load(
            &p,
            &Overrides {
                interval_secs: Some(2.0),
                ..Overrides::default()
            },
            true,
        )
        .expect("loads");
        assert_eq!(c.hub, "http://h");
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.spool_max_bytes, 64 << 20);
        assert_eq!(c.update_url, "http://h/api/agent/release");
        assert_eq!(c.transport, Kind::Websocket);
    }

    #[test]
    fn written_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/c.toml");
        let f = FileConfig {
            hub: Some("http://h".into()),
            token: Some("secret".into()),
            ..FileConfig::default()
        };
        write_file(&p, &f).expect("write");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_file(&p).expect("read"), f);
    }
}
