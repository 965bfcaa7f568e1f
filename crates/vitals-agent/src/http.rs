//! HTTP plumbing shared by pairing, the `POST /api/report` transport and self-update: one
//! reqwest client with rustls (ring) and sane timeouts, URL helpers, and `Retry-After`.

use std::time::Duration;

/// Installs ring as the process-wide rustls crypto provider. Idempotent. Without it a TLS
/// connection (reqwest with `rustls-no-provider`, tokio-tungstenite `wss://`) panics.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client with a connect timeout and an overall request timeout.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .user_agent(concat!("vitals-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `hub` (`http(s)://host[:port][/prefix]`) joined with an absolute path.
pub fn join(hub: &str, path: &str) -> String {
    format!("{}{}", hub.trim_end_matches('/'), path)
}

/// The WebSocket URL for a hub URL: `http` -> `ws`, `https` -> `wss`.
pub fn ws_url(hub: &str, path: &str) -> String {
    let u = join(hub, path);
    if let Some(rest) = u.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = u.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        u
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Retry-After` header in seconds (HTTP-dates are not used by the hub), clamped to 1 h.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// Parses a `Retry-After` value in seconds.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(ws_url("http://h:8080/", "/agent"), "ws://h:8080/agent");
        assert_eq!(ws_url("https://h/x", "/agent"), "wss://h/x/agent");
        assert_eq!(encode_query("ab-C 9/"), "ab-C%209%2F");
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
