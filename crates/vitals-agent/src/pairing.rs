//! Pairing (seed 000): ask the hub for a code, show it with its `/pair?code=` link, poll until
//! a person approves it, keep the token.
//!
//! - `POST /api/device-codes {hostId, hostname?, agentVersion?}` -> `201 {code, expiresAt}`.
//! - `GET /api/device-token?code=` every 2-3 s -> `404 {status:"pending"}` (keep polling),
//!   `404 {status:"not_found"}` (the hub does not know the code: stop), `410` (expired: stop),
//!   `429` + `Retry-After` (wait that long), `200 {token, deviceId}` (done; given once).
//! - Network errors and 5xx while polling are retried until the code's expiry.

use std::time::Duration;

use serde::Deserialize;
use vitals_proto::pairing::{DeviceCodeRequest, DeviceCodeResponse, DeviceTokenResponse};

use crate::http;

/// Why pairing failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("cannot reach the hub at {hub}: {message}")]
    Unreachable { hub: String, message: String },
    #[error("the hub answered {status} to {what}: {body}")]
    Status {
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("the code expired before it was approved: run `vitals-agent pair` again")]
    Expired,
    #[error(
        "the hub does not know this code any more (was it restarted?): run `vitals-agent pair` again"
    )]
    NotFound,
    #[error("gave up waiting for approval")]
    TimedOut,
}

/// What to pair and how fast to poll.
#[derive(Debug, Clone)]
pub struct PairOptions {
    pub hub: String,
    pub host_id: String,
    /// Suggested device name (sent as `hostname`).
    pub name: Option<String>,
    /// Poll interval; the hub rate-limits polls faster than every 2 s.
    pub poll_every: Duration,
    /// Give up after this long even if the hub never says expired.
    pub max_wait: Duration,
}

impl PairOptions {
    pub fn new(hub: String, host_id: String, name: Option<String>) -> PairOptions {
        PairOptions {
            hub: hub.trim_end_matches('/').to_string(),
            host_id,
            name,
            poll_every: Duration::from_millis(2500),
            max_wait: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Deserialize)]
struct StatusBody {
    #[serde(default)]
    status: String,
}

/// Requests a code (retrying once per `Retry-After` on 429, at most 5 times).
pub async fn request_code(
    client: &reqwest::Client,
    o: &PairOptions,
) -> Result<DeviceCodeResponse, PairError> {
    let hostname = o.name.clone().or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
    });
    let body = DeviceCodeRequest {
        host_id: o.host_id.clone(),
        hostname,
        agent_version: Some(crate::AGENT_VERSION.to_string()),
    };
    let url = http::join(&o.hub, "/api/device-codes");
    for _ in 0..5 {
        let resp =
            client
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| PairError::Unreachable {
                    hub: o.hub.clone(),
                    message: e.to_string(),
                })?;
        let status = resp.status().as_u16();
        if status == 429 {
            let wait = http::retry_after(resp.headers()).unwrap_or(Duration::from_secs(3));
            tokio::time::sleep(wait).await;
            continue;
        }
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            return Err(PairError::Status {
                what: "POST /api/device-codes",
                status,
                body,
            });
        }
        return resp.json().await.map_err(|e| PairError::Status {
            what: "POST /api/device-codes",
            status,
            body: e.to_string(),
        });
    }
    Err(PairError::Status {
        what: "POST /api/device-codes",
        status: 429,
        body: "still rate limited after 5 tries".into(),
    })
}

/// Polls until the code is approved, expires or is unknown.
pub async fn poll_token(
    client: &reqwest::Client,
    o: &PairOptions,
    code: &str,
) -> Result<DeviceTokenResponse, PairError> {
    let url = http::join(
        &o.hub,
        &format!("/api/device-token?code={}", http::encode_query(code)),
    );
    let deadline = tokio::time::Instant::now() + o.max_wait;
    let mut wait = o.poll_every;
    loop {
        tokio::time::sleep(wait).await;
        if tokio::time::Instant::now() > deadline {
            return Err(PairError::TimedOut);
        }
        wait = o.poll_every;
        let resp = match client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("poll failed, retrying: {e}");
                continue;
            }
        };
        match resp.status().as_u16() {
            200 => {
                return resp.json().await.map_err(|e| PairError::Status {
                    what: "GET /api/device-token",
                    status: 200,
                    body: e.to_string(),
                });
            }
            404 => {
                let b: StatusBody = resp.json().await.unwrap_or(StatusBody {
                    status: "pending".into(),
                });
                if b.status == "not_found" {
                    return Err(PairError::NotFound);
                }
            }
            410 => return Err(PairError::Expired),
            429 => {
                wait = http::retry_after(resp.headers())
                    .unwrap_or(Duration::from_secs(3))
                    .max(o.poll_every);
            }
            s if s >= 500 => tracing::debug!(status = s, "hub error while polling, retrying"),
            s => {
                let body = resp.text().await.unwrap_or_default();
                return Err(PairError::Status {
                    what: "GET /api/device-token",
                    status: s,
                    body,
                });
            }
        }
    }
}

/// The link a person opens to approve a code.
pub fn approval_link(hub: &str, code: &str) -> String {
    http::join(hub, &format!("/pair?code={}", http::encode_query(code)))
}

/// The whole flow. `show` is called once with the code and the link.
pub async fn pair(
    o: &PairOptions,
    show: impl FnOnce(&DeviceCodeResponse, &str),
) -> Result<DeviceTokenResponse, PairError> {
    let client = http::client(Duration::from_secs(30)).map_err(|e| PairError::Unreachable {
        hub: o.hub.clone(),
        message: e.to_string(),
    })?;
    let code = request_code(&client, o).await?;
    show(&code, &approval_link(&o.hub, &code.code));
    poll_token(&client, o, &code.code).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_has_the_code() {
        assert_eq!(
            approval_link("http://h:1/", "ABCD-EFGH"),
            "http://h:1/pair?code=ABCD-EFGH"
        );
    }
}
