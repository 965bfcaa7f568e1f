//! Test helpers shared by every crate's tests and by the benchmarks: start a real hub on
//! `127.0.0.1:0` with a temporary data directory (in-process or as a child process), an API
//! client, and a fake agent speaking the real WebSocket protocol. Nothing here is a mock of a
//! Vitals component: the hub is the real one.

pub mod agent;
pub mod client;
pub mod hostmodel;
pub mod process;
pub mod procstat;
pub mod provision;

use std::sync::Arc;

pub use agent::FakeAgent;
pub use client::ApiClient;
use vitals_hub::{Config, RunningHub};
use vitals_proto::MetricSample;

/// Installs the ring crypto provider for rustls (reqwest and tungstenite need one). Idempotent.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Shared test password for accounts the kit creates.
pub const PASSWORD: &str = "correct-horse-battery";

/// A hub running in this process on a free loopback port, with its own temporary data dir.
pub struct TestHub {
    pub hub: RunningHub,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Kept alive for the hub's lifetime.
    pub dir: tempfile::TempDir,
}

impl TestHub {
    /// A hub with defaults suited to tests (no self-monitoring, no demo).
    pub async fn start() -> TestHub {
        Self::start_with(|_| {}).await
    }

    /// A hub whose config `f` may adjust before start.
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_path_buf(),
            self_monitor: false,
            ..Config::default()
        };
        f(&mut config);
        let hub = vitals_hub::start(config).await.expect("hub starts");
        let url = hub.public_url.clone();
        TestHub { hub, url, dir }
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        self.url.replacen("http", "ws", 1)
    }

    /// The store behind the hub.
    pub fn store(&self) -> Arc<dyn vitals_store::Store> {
        Arc::clone(&self.hub.state().store)
    }

    /// Creates the first admin through the one-time setup link and returns a signed-in client.
    pub async fn setup_admin(&self) -> ApiClient {
        let token = self
            .hub
            .setup_token
            .clone()
            .expect("fresh hub has a setup token");
        ApiClient::setup(&self.url, &token, "admin", PASSWORD)
            .await
            .expect("setup")
    }

    /// An admin client authenticated by an API token (created through the API).
    pub async fn admin_token_client(&self, admin: &ApiClient) -> ApiClient {
        let token = admin.create_token("tests", "admin").await;
        ApiClient::with_bearer(&self.url, &token)
    }

    /// Pairs a device through the real pairing flow; returns `(device_id, token)`.
    pub async fn pair(&self, admin: &ApiClient, host_id: &str, name: &str) -> (String, String) {
        let anon = ApiClient::anonymous(&self.url);
        let code = anon.request_code(host_id).await;
        admin.approve(&code, name).await;
        let (status, body) = anon.poll_token(&code).await;
        assert_eq!(status, 200, "token delivered: {body}");
        (
            body["deviceId"].as_str().expect("deviceId").to_string(),
            body["token"].as_str().expect("token").to_string(),
        )
    }

    pub async fn stop(self) {
        self.hub.shutdown();
        self.hub.wait().await.expect("hub stops cleanly");
    }
}

/// A valid sample for `host_id` at `ts` with the given CPU total; other fields realistic.
pub fn sample(host_id: &str, ts: i64, cpu: f64) -> MetricSample {
    let mut rng = rand::rng();
    let mut h = vitals_hub::demo::SimHost::new(host_id.to_string(), &mut rng);
    let mut s = h.next(ts, &mut rng);
    s.cpu.total = cpu;
    s
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    vitals_hub::now_ms()
}
