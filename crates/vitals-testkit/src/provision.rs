//! Device provisioning for the benchmark tools: many devices at once through the hub's
//! `POST /api/devices` (admin token), without the pairing dance. Loopback hubs only.

use anyhow::{Context, Result, bail};
use serde_json::json;

/// A provisioned device: its host id, public id and device token.
pub struct Provisioned {
    pub host_id: String,
    pub id: String,
    pub token: String,
}

/// Creates `n` devices named `<prefix>-00000`, `<prefix>-00001`, ... on the hub at `hub`.
pub async fn provision_devices(
    hub: &str,
    admin_token: &str,
    prefix: &str,
    n: usize,
) -> Result<Vec<Provisioned>> {
    let url = reqwest::Url::parse(hub)?;
    if !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "::1")) {
        bail!("loopback hubs only");
    }
    crate::init_crypto();
    let http = reqwest::Client::new();
    eprintln!("provisioning {n} devices");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let host_id = format!("{prefix}-{i:05}");
        let res = http
            .post(format!("{hub}/api/devices"))
            .bearer_auth(admin_token)
            .json(&json!({"name": host_id, "hostId": host_id}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!(
                "provisioning failed: {} {}",
                res.status(),
                res.text().await?
            );
        }
        let b: serde_json::Value = res.json().await?;
        out.push(Provisioned {
            id: b["device"]["id"].as_str().context("device id")?.to_string(),
            token: b["token"].as_str().context("token")?.to_string(),
            host_id,
        });
    }
    Ok(out)
}
