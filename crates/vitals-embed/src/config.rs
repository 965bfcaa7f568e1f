//! Dashboard configuration: the seed's `Config` with its defaults and presets, plus access
//! control and optional forwarding to a Vitals hub.
//!
//! [`Config::validate`] is the single place where ranges are checked; every problem found is
//! reported at once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::error::{Error, Result};

/// Who may read the dashboard.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anyone who can reach the port (the default; the default bind is loopback).
    #[default]
    None,
    /// `Authorization: Bearer <token>` (or `?token=<token>`) on `/api/*` and `/ws`. The page
    /// itself holds no data and stays public; open it as `/#token=<token>`.
    Bearer(String),
    /// HTTP basic authentication on every route, so the browser prompts once and then sends
    /// the credentials with the page's own requests and WebSocket.
    Basic {
        /// User name (must not contain `:`).
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { user, .. } => {
                write!(f, "Basic {{ user: {user:?}, password: <redacted> }}")
            }
        }
    }
}

/// Where and how to forward the dashboard's metrics to a Vitals hub.
#[derive(Clone)]
pub struct ForwardConfig {
    /// The hub's base URL (`http://hub:8080`, `https://...`, or a `ws://`/`wss://` URL). The
    /// store endpoint `/api/store/ws` is appended unless the URL already ends with it.
    pub hub_url: String,
    /// The token sent with `auth.login`.
    pub token: String,
    /// Batches kept while the hub is unreachable; the oldest is dropped beyond this.
    pub queue_capacity: usize,
    /// Most metric points sent in one `store.transaction`.
    pub max_points_per_transaction: usize,
}

impl std::fmt::Debug for ForwardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardConfig")
            .field("hub_url", &self.hub_url)
            .field("token", &"<redacted>")
            .field("queue_capacity", &self.queue_capacity)
            .field(
                "max_points_per_transaction",
                &self.max_points_per_transaction,
            )
            .finish()
    }
}

/// Dashboard settings. Build one from [`Config::default`], [`Config::development`] or
/// [`Config::production`] and adjust fields with struct update syntax.
#[derive(Clone, Debug)]
pub struct Config {
    /// When false, [`crate::Dashboard::start`] returns at once and serves nothing; update calls
    /// still work (and stay cheap).
    pub enabled: bool,
    /// Address to listen on (default `127.0.0.1`; use `0.0.0.0` to expose it).
    pub bind: IpAddr,
    /// TCP port (default 8080; 0 picks a free one).
    pub port: u16,
    /// How often viewers receive a snapshot (default 1 s).
    pub update_interval: Duration,
    /// Most simultaneous WebSocket viewers (default 100); one more is refused with HTTP 503.
    pub max_clients: usize,
    /// Points kept in the rolling history behind the time-series charts (default 50).
    pub history_points: usize,
    /// Most jobs kept and shown (default 50); the oldest is evicted first.
    pub max_jobs: usize,
    /// Access control (default none).
    pub auth: Auth,
    /// Extra origins (`https://ops.example.com`) whose pages may open `/ws`; same-origin is
    /// always allowed, `"*"` allows any.
    pub allowed_origins: Vec<String>,
    /// Forwarding to a Vitals hub, set with [`Config::forward_to`].
    pub forward: Option<ForwardConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            update_interval: Duration::from_secs(1),
            max_clients: 100,
            history_points: 50,
            max_jobs: 50,
            auth: Auth::None,
            allowed_origins: Vec::new(),
            forward: None,
        }
    }
}

impl Config {
    /// The seed's development preset: fast updates (500 ms), 50 viewers.
    pub fn development() -> Self {
        Config {
            update_interval: Duration::from_millis(500),
            max_clients: 50,
            ..Config::default()
        }
    }

    /// The seed's production preset: 2 s updates, 200 viewers.
    pub fn production() -> Self {
        Config {
            update_interval: Duration::from_secs(2),
            max_clients: 200,
            ..Config::default()
        }
    }

    /// Also pushes the dashboard's metrics, once per `update_interval`, into the `metrics`
    /// bucket of a Vitals hub's store, authenticating with `token`.
    pub fn forward_to(mut self, hub_url: impl Into<String>, token: impl Into<String>) -> Self {
        self.forward = Some(ForwardConfig {
            hub_url: hub_url.into(),
            token: token.into(),
            queue_capacity: 600,
            max_points_per_transaction: 500,
        });
        self
    }

    /// Checks every field and reports all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.update_interval < Duration::from_millis(50)
            || self.update_interval > Duration::from_secs(3600)
        {
            problems.push("update_interval must be between 50 ms and 1 h".to_owned());
        }
        if self.max_clients == 0 || self.max_clients > 100_000 {
            problems.push("max_clients must be between 1 and 100000".to_owned());
        }
        if self.history_points == 0 || self.history_points > 100_000 {
            problems.push("history_points must be between 1 and 100000".to_owned());
        }
        if self.max_jobs == 0 || self.max_jobs > 100_000 {
            problems.push("max_jobs must be between 1 and 100000".to_owned());
        }
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(token) if token.is_empty() => {
                problems.push("auth bearer token must not be empty".to_owned())
            }
            Auth::Bearer(_) => {}
            Auth::Basic { user, password } => {
                if user.is_empty() || user.contains(':') {
                    problems.push("auth basic user must be non-empty and without ':'".to_owned());
                }
                if password.is_empty() {
                    problems.push("auth basic password must not be empty".to_owned());
                }
            }
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                problems.push(format!(
                    "allowed_origins entry {origin:?} must be \"*\" or start with http:// or https://"
                ));
            }
        }
        if let Some(fwd) = &self.forward {
            if crate::forward::store_url(&fwd.hub_url).is_none() {
                problems.push(format!(
                    "forward hub_url {:?} must start with http://, https://, ws:// or wss://",
                    fwd.hub_url
                ));
            }
            if fwd.queue_capacity == 0 {
                problems.push("forward queue_capacity must be at least 1".to_owned());
            }
            if fwd.max_points_per_transaction == 0 {
                problems.push("forward max_points_per_transaction must be at least 1".to_owned());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let c = Config::default();
        assert!(c.enabled);
        assert_eq!(c.port, 8080);
        assert_eq!(c.update_interval, Duration::from_secs(1));
        assert_eq!(c.max_clients, 100);
        assert_eq!(c.history_points, 50);
        assert_eq!(c.max_jobs, 50);
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn presets_match_the_seed() {
        let d = Config::development();
        assert_eq!(
            (d.update_interval, d.max_clients),
            (Duration::from_millis(500), 50)
        );
        let p = Config::production();
        assert_eq!(
            (p.update_interval, p.max_clients),
            (Duration::from_secs(2), 200)
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let c = Config {
            max_clients: 0,
            max_jobs: 0,
            auth: Auth::Bearer(String::new()),
            ..Config::default()
        }
        .forward_to("ftp://x", "t");
        let err = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for needle in ["max_clients", "max_jobs", "bearer", "hub_url"] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = Config {
            auth: Auth::Basic {
                user: "u".into(),
                password: "hunter2".into(),
            },
            ..Config::default()
        }
        .forward_to("http://hub", "s3cret");
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
