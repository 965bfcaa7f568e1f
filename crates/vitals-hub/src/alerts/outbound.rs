//! Outbound requests for notifications, guarded against server-side request forgery: only
//! http(s), the host's resolved addresses checked (loopback, private, link-local, CGNAT,
//! unspecified, multicast and documentation ranges refused unless the admin allows private
//! targets), the connection pinned to the checked address (no second DNS answer), no proxy,
//! redirects followed by hand and each hop checked again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, LOCATION};

/// Decides whether a host's resolved addresses may be contacted.
pub type Policy<'a> = dyn Fn(&str, &[SocketAddr]) -> Result<(), OutboundError> + Sync + 'a;

/// Most redirects followed.
const MAX_REDIRECTS: usize = 3;
/// Timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutboundError {
    /// The target is refused by policy (never retried).
    #[error("{0}")]
    Refused(String),
    /// The request failed or timed out (retried).
    #[error("{0}")]
    Failed(String),
}

impl OutboundError {
    pub fn permanent(&self) -> bool {
        matches!(self, OutboundError::Refused(_))
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link-local
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x0064 && seg[1] == 0xff9b) // NAT64 (may reach private v4)
                || seg[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240)
}

/// Checks a URL and resolves its host to addresses that may be contacted.
pub async fn check(
    url: &str,
    allow_private: bool,
) -> Result<(Url, Vec<SocketAddr>), OutboundError> {
    let parsed = Url::parse(url)
        .map_err(|e| OutboundError::Refused(format!("{url:?} is not a valid URL: {e}")))?;
    check_parsed(parsed, allow_private).await
}

async fn check_parsed(
    url: Url,
    allow_private: bool,
) -> Result<(Url, Vec<SocketAddr>), OutboundError> {
    check_with(url, &|host: &str, addrs: &[SocketAddr]| {
        guard(host, addrs, allow_private)
    })
    .await
}

async fn check_with(
    url: Url,
    policy: &Policy<'_>,
) -> Result<(Url, Vec<SocketAddr>), OutboundError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OutboundError::Refused(format!(
            "only http and https URLs are allowed, not {}:",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::Refused(
            "credentials in the URL are not allowed; use the channel's token".into(),
        ));
    }
    let host = url
        .host_str()
        .ok_or_else(|| OutboundError::Refused("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs = resolve(&host, port).await?;
    policy(&host, &addrs)?;
    Ok((url, addrs))
}

/// Resolves `host` (a name or an IP literal).
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| OutboundError::Failed(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(OutboundError::Failed(format!("{host} has no address")));
    }
    Ok(addrs)
}

/// Refuses non-public addresses unless allowed. Every address must pass (a name that
/// resolves to one public and one private address is refused).
pub fn guard(host: &str, addrs: &[SocketAddr], allow_private: bool) -> Result<(), OutboundError> {
    if allow_private {
        return Ok(());
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(OutboundError::Refused(format!(
            "{host} resolves to {}, a loopback, private or link-local address; an admin can \
             allow such targets with the setting alerts.allowPrivateTargets",
            bad.ip()
        )));
    }
    Ok(())
}

/// The result of a delivered request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
}

/// POSTs `body` to `url` under the guard, following up to three redirects (each checked).
pub async fn post(
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    allow_private: bool,
) -> Result<Response, OutboundError> {
    post_guarded(url, headers, body, &|host: &str, addrs: &[SocketAddr]| {
        guard(host, addrs, allow_private)
    })
    .await
}

/// [`post`] with the address policy given as a function (each hop is checked with it).
pub async fn post_guarded(
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    policy: &Policy<'_>,
) -> Result<Response, OutboundError> {
    let (mut url, mut addrs) = check_with(
        Url::parse(url)
            .map_err(|e| OutboundError::Refused(format!("{url:?} is not a valid URL: {e}")))?,
        policy,
    )
    .await?;
    for _ in 0..=MAX_REDIRECTS {
        let host = url.host_str().unwrap_or_default().to_string();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(TIMEOUT)
            .resolve_to_addrs(&host, &addrs)
            .user_agent(concat!("vitals-hub/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Failed(format!("http client: {e}")))?;
        let res = client
            .post(url.clone())
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await
            .map_err(|e| OutboundError::Failed(format!("request to {host} failed: {e}")))?;
        let status = res.status();
        if status.is_redirection() {
            let Some(next) = res
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
            else {
                return Err(OutboundError::Failed(format!(
                    "{host} answered {status} without a usable Location"
                )));
            };
            let checked = check_with(next, policy).await?;
            url = checked.0;
            addrs = checked.1;
            continue;
        }
        return Ok(Response {
            status: status.as_u16(),
        });
    }
    Err(OutboundError::Failed(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(bad.parse().expect("ip")), "{bad}");
        }
        for good in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(good.parse().expect("ip")), "{good}");
        }
    }

    #[tokio::test]
    async fn refuses_schemes_and_private_targets() {
        for url in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://127.0.0.1:9/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/",
            "http://localhost:9/x",
            "http://[::1]:9/",
            "http://user:pw@1.1.1.1/",
        ] {
            let e = check(url, false).await.expect_err(url);
            assert!(e.permanent(), "{url}: {e}");
        }
        assert!(check("http://127.0.0.1:9/x", true).await.is_ok());
    }
}
