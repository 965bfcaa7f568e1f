//! Start-up configuration, merged once from four layers: built-in defaults, then a TOML file
//! (`--config`), then `VITALS_*` environment variables, then command-line flags. Unknown keys
//! and bad values are errors, and every error of every layer is reported at once (vector's
//! habit), so a user fixes their file in one go. Runtime-editable knobs (retention, thresholds)
//! are not here: they are settings in the store (`/api/settings`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The hub's start-up configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Loopback by default: expose it deliberately.
    pub listen: SocketAddr,
    /// Folder for the SQLite database and other state.
    pub data_dir: PathBuf,
    /// `sqlite:PATH` or `postgres://...`; overrides `data_dir`'s database when set.
    pub database_url: Option<String>,
    /// `nats://host:port` of the NATS server replicas share live updates through (only with
    /// a PostgreSQL `database_url`; one hub on its own needs none).
    pub nats_url: Option<String>,
    /// URL users reach the hub at, used in printed links (`/setup`, `/pair`). Defaults to
    /// `http(s)://<listen>`.
    pub public_url: Option<String>,
    /// PEM certificate chain; with `tls_key`, the hub serves HTTPS and WSS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Number of simulated devices to add (clearly labelled as simulated).
    pub demo: u32,
    /// Record the hub's own host as a device.
    pub self_monitor: bool,
    /// Extra origins allowed for browser requests and WebSocket upgrades.
    pub allowed_origins: Vec<String>,
    /// How long a sign-in lasts, in hours.
    pub session_ttl_hours: u32,
    /// Batches per second one device may send (sustained).
    pub ingest_batches_per_sec: f64,
    /// Batches one device may send in a burst (replays after an outage).
    pub ingest_batch_burst: u32,
    /// How long a pairing code stays valid, in seconds (seed 000: 5 minutes).
    pub pairing_code_ttl_secs: u32,
    /// Most live (WebSocket) viewer connections the hub accepts.
    pub max_viewers: u32,
    /// Most live viewer connections per user or API token.
    pub max_viewers_per_user: u32,
    /// A viewer whose socket accepts nothing for this long is disconnected, in milliseconds.
    pub viewer_send_timeout_ms: u64,
    /// How long the group-commit writer waits for more batches before committing, in ms.
    pub ingest_commit_window_ms: u32,
    /// Threads running the hub's async work (HTTP, WebSockets, live views, alerts); `0`: one
    /// fewer than the machine's cores, at least one, leaving a core to the database threads
    /// (the SQLite writer and checkpoints run outside the async runtime).
    pub workers: u32,
    /// Folder with the agent binaries the hub serves (`vitals-agent-linux-<arch>`); default:
    /// the folder of the hub's executable.
    pub agent_dir: Option<PathBuf>,
}

impl Config {
    /// The number of async worker threads `workers` asks for (`0`: cores - 1, at least 1).
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            n => n as usize,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("vitals-data"),
            database_url: None,
            nats_url: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            demo: 0,
            self_monitor: true,
            allowed_origins: Vec::new(),
            session_ttl_hours: 24 * 7,
            ingest_batches_per_sec: 20.0,
            ingest_batch_burst: 200,
            pairing_code_ttl_secs: vitals_proto::pairing::CODE_TTL_SECS as u32,
            max_viewers: 10_000,
            max_viewers_per_user: 256,
            viewer_send_timeout_ms: 10_000,
            ingest_commit_window_ms: 20,
            workers: 0,
            agent_dir: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    List,
}

/// Every key, its type (for parsing environment strings) and what it means.
const KEYS: &[(&str, Kind)] = &[
    ("listen", Kind::Str),
    ("data_dir", Kind::Str),
    ("database_url", Kind::Str),
    ("nats_url", Kind::Str),
    ("public_url", Kind::Str),
    ("tls_cert", Kind::Str),
    ("tls_key", Kind::Str),
    ("demo", Kind::Int),
    ("self_monitor", Kind::Bool),
    ("allowed_origins", Kind::List),
    ("session_ttl_hours", Kind::Int),
    ("ingest_batches_per_sec", Kind::Float),
    ("ingest_batch_burst", Kind::Int),
    ("pairing_code_ttl_secs", Kind::Int),
    ("max_viewers", Kind::Int),
    ("max_viewers_per_user", Kind::Int),
    ("viewer_send_timeout_ms", Kind::Int),
    ("ingest_commit_window_ms", Kind::Int),
    ("workers", Kind::Int),
    ("agent_dir", Kind::Str),
];

/// Environment variables with this prefix that are not config keys (test harness settings).
const ENV_IGNORED_PREFIXES: &[&str] = &["VITALS_TEST_", "VITALS_LOG"];

/// All problems found while loading, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

/// Values set on the command line (already typed by clap).
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides(pub BTreeMap<String, toml::Value>);

impl FlagOverrides {
    pub fn set(&mut self, key: &str, v: impl Into<toml::Value>) {
        self.0.insert(key.to_string(), v.into());
    }
}

impl Config {
    /// Merges the layers. `file` is the TOML text of `--config` (with its path for messages),
    /// `env` the process environment.
    pub fn load(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let mut merged = toml::Table::new();

        if let Some((path, text)) = file {
            match text.parse::<toml::Table>() {
                Ok(table) => {
                    for (k, v) in table {
                        if known(&k) {
                            merged.insert(k, v);
                        } else {
                            errors.push(format!(
                                "{path}: unknown key `{k}` (known keys: {})",
                                key_list()
                            ));
                        }
                    }
                }
                Err(e) => errors.push(format!("{path}: not valid TOML: {e}")),
            }
        }

        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("VITALS_"))
            .collect();
        env.sort();
        for (name, raw) in env {
            if ENV_IGNORED_PREFIXES.iter().any(|p| name.starts_with(p)) || name == "VITALS_CONFIG" {
                continue;
            }
            let key = name["VITALS_".len()..].to_ascii_lowercase();
            let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
                errors.push(format!(
                    "environment: unknown variable {name} (known: {})",
                    KEYS.iter()
                        .map(|(k, _)| format!("VITALS_{}", k.to_ascii_uppercase()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            };
            match parse_env(*kind, &raw) {
                Ok(v) => {
                    merged.insert(key, v);
                }
                Err(e) => errors.push(format!("environment: {name}={raw:?}: {e}")),
            }
        }

        for (k, v) in &flags.0 {
            merged.insert(k.clone(), v.clone());
        }

        // Check each key on its own against the defaults, so every bad value is named.
        for (k, v) in &merged {
            let mut one = toml::Table::new();
            one.insert(k.clone(), v.clone());
            if let Err(e) = Config::deserialize(toml::Value::Table(one)) {
                errors.push(format!("`{k}`: {}", e.message()));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let cfg = Config::deserialize(toml::Value::Table(merged))
            .map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        cfg.check().map_err(ConfigErrors)?;
        Ok(cfg)
    }

    /// Rules that involve more than one key or a range.
    fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            errors.push("`tls_cert` and `tls_key` must be given together".to_string());
        }
        if self.session_ttl_hours == 0 || self.session_ttl_hours > 24 * 365 {
            errors.push("`session_ttl_hours` must be 1..=8760".to_string());
        }
        if !(self.ingest_batches_per_sec > 0.0 && self.ingest_batches_per_sec <= 10_000.0) {
            errors.push("`ingest_batches_per_sec` must be in (0, 10000]".to_string());
        }
        if self.ingest_batch_burst == 0 {
            errors.push("`ingest_batch_burst` must be at least 1".to_string());
        }
        if self.pairing_code_ttl_secs == 0 || self.pairing_code_ttl_secs > 3600 {
            errors.push("`pairing_code_ttl_secs` must be 1..=3600".to_string());
        }
        if self.max_viewers == 0 || self.max_viewers_per_user == 0 {
            errors.push("`max_viewers` and `max_viewers_per_user` must be at least 1".to_string());
        }
        if !(100..=600_000).contains(&self.viewer_send_timeout_ms) {
            errors.push("`viewer_send_timeout_ms` must be 100..=600000".to_string());
        }
        if self.workers > 1024 {
            errors.push("`workers` must be 0 (automatic) to 1024".to_string());
        }
        if self.ingest_commit_window_ms > 1000 {
            errors.push("`ingest_commit_window_ms` must be 0..=1000".to_string());
        }
        if self.demo > 10_000 {
            errors.push("`demo` must be at most 10000".to_string());
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            errors.push(format!(
                "`database_url` {url:?} must start with sqlite:, postgres:// or postgresql://"
            ));
        }
        if let Some(url) = &self.nats_url {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                errors.push(format!(
                    "`nats_url` {url:?} must look like nats://host:4222 (or tls://host:4222)"
                ));
            }
            let pg = self
                .database_url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
            if !pg {
                errors.push(
                    "`nats_url` needs a PostgreSQL `database_url`: replicas must share one \
                     database (a SQLite file belongs to one hub)"
                        .to_string(),
                );
            }
        }
        for o in &self.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) {
                errors.push(format!(
                    "`allowed_origins` entry {o:?} must be an origin like https://example.com"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Whether the hub serves TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The URL printed in links, without a trailing slash.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{}://{}", if self.tls() { "https" } else { "http" }, bound),
        }
    }

    /// The SQLite path used when no `database_url` is set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("vitals.db")
    }
}

fn known(k: &str) -> bool {
    KEYS.iter().any(|(key, _)| *key == k)
}

fn key_list() -> String {
    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

fn parse_env(kind: Kind, raw: &str) -> Result<toml::Value, String> {
    Ok(match kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| "expected a whole number".to_string())?,
        ),
        Kind::Float => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| "expected a number".to_string())?,
        ),
        Kind::Bool => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err("expected true or false".to_string()),
        }),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let c = Config::load(None, vec![], &FlagOverrides::default()).expect("defaults");
        assert!(c.listen.ip().is_loopback());
        assert!(c.self_monitor);
    }

    #[test]
    fn layers_apply_in_order() {
        let file = "listen = \"127.0.0.1:1000\"\ndemo = 1\nself_monitor = false\n";
        let mut flags = FlagOverrides::default();
        flags.set("demo", 3i64);
        let c = Config::load(
            Some(("f.toml", file)),
            env(&[
                ("VITALS_LISTEN", "127.0.0.1:2000"),
                ("VITALS_DEMO", "2"),
                ("HOME", "/x"),
            ]),
            &flags,
        )
        .expect("valid");
        assert_eq!(c.listen.port(), 2000, "env beats file");
        assert_eq!(c.demo, 3, "flags beat env");
        assert!(!c.self_monitor, "file beats defaults");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let file = "listne = \"x\"\ndemo = \"many\"\n";
        let err = Config::load(
            Some(("f.toml", file)),
            env(&[
                ("VITALS_SELF_MONITOR", "maybe"),
                ("VITALS_NOPE", "1"),
                ("VITALS_TEST_DATABASE_URL", "ignored"),
            ]),
            &FlagOverrides::default(),
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert_eq!(err.0.len(), 4, "{text}");
        assert!(text.contains("unknown key `listne`"), "{text}");
        assert!(text.contains("`demo`"), "{text}");
        assert!(text.contains("VITALS_SELF_MONITOR"), "{text}");
        assert!(text.contains("VITALS_NOPE"), "{text}");
    }

    #[test]
    fn live_limits_load_and_are_checked() {
        let c = Config::load(
            Some(("f.toml", "max_viewers = 5\nmax_viewers_per_user = 2\n")),
            env(&[("VITALS_VIEWER_SEND_TIMEOUT_MS", "2000")]),
            &FlagOverrides::default(),
        )
        .expect("valid");
        assert_eq!(
            (
                c.max_viewers,
                c.max_viewers_per_user,
                c.viewer_send_timeout_ms
            ),
            (5, 2, 2000)
        );
        let err = Config::load(
            Some(("f.toml", "max_viewers = 0\n")),
            vec![],
            &FlagOverrides::default(),
        )
        .expect_err("zero");
        assert!(err.to_string().contains("max_viewers"), "{err}");
    }

    #[test]
    fn tls_needs_both_files() {
        let mut flags = FlagOverrides::default();
        flags.set("tls_cert", "/c.pem");
        let err = Config::load(None, vec![], &flags).expect_err("half tls");
        assert!(err.to_string().contains("together"));
    }
}
