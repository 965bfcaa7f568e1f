//! Self-update (seed 003's auto-updater), against a release endpoint in the GitHub releases
//! API shape (`GET /repos/OWNER/REPO/releases/latest`; by default the hub's own
//! `/api/agent/release`).
//!
//! Invariants:
//! - Never downgrades: only a release whose version is strictly greater than this binary's is
//!   installed; drafts and pre-releases are ignored.
//! - Never installs an unverified binary: the SHA-256 must come from the release (the asset's
//!   `digest: "sha256:..."`, an asset `<name>.sha256`, or a `SHA256SUMS` asset) and match the
//!   downloaded bytes. A mismatch deletes the download and keeps the running binary.
//! - Atomic: the new binary is written and fsynced next to the current one, made executable,
//!   then renamed over it; a crash leaves either the old or the new binary, never half of one.
//!
//! After a successful update the agent exits and systemd (`Restart=always`) starts the new one.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Largest binary downloaded.
pub const MAX_BINARY_BYTES: usize = 128 << 20;

/// A release in the GitHub API shape (only the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Release {
    pub tag_name: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub assets: Vec<Asset>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Asset {
    pub name: String,
    pub browser_download_url: String,
    /// GitHub's `sha256:<hex>` digest, when present.
    #[serde(default)]
    pub digest: Option<String>,
}

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("release endpoint {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("release has no asset for {0}")]
    NoAsset(String),
    #[error("release has no SHA-256 for {0}: refusing to install an unverified binary")]
    NoChecksum(String),
    #[error(
        "checksum mismatch for {name}: expected {expected}, got {actual}; keeping the current binary"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("release tag {0:?} is not a version")]
    BadVersion(String),
    #[error("replacing {path}: {source}")]
    Install {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    UpToDate { current: String, latest: String },
    Updated { from: String, to: String },
}

/// Where to look and what to replace.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    pub url: String,
    /// Sent as a Bearer token (the hub's endpoint may want the device token).
    pub token: Option<String>,
    pub current_version: String,
    /// The binary to replace (normally `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Target triple-ish words an asset name must contain, e.g. `["linux", "x86_64"]`.
    pub asset_words: Vec<String>,
}

impl UpdateOptions {
    /// Options for this running binary.
    pub fn for_current(url: String, token: Option<String>) -> std::io::Result<UpdateOptions> {
        Ok(UpdateOptions {
            url,
            token,
            current_version: crate::AGENT_VERSION.to_string(),
            exe: std::env::current_exe()?,
            asset_words: vec!["linux".into(), std::env::consts::ARCH.into()],
        })
    }
}

/// A version `MAJOR.MINOR.PATCH[-PRE]`, with an optional leading `v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub nums: (u64, u64, u64),
    pub pre: Option<String>,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches(['v', 'V']);
        let s = s.split('+').next()?;
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, Some(p.to_string())),
            None => (s, None),
        };
        let mut it = core.split('.');
        let n = |p: Option<&str>| p.map_or(Some(0), |v| v.parse::<u64>().ok());
        let major = it.next()?.parse().ok()?;
        let nums = (major, n(it.next())?, n(it.next())?);
        if it.next().is_some() {
            return None;
        }
        Some(Version { nums, pre })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.nums
            .cmp(&other.nums)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

/// Picks the binary asset: its name has every word, and it is not a checksum file.
pub fn pick_asset<'a>(r: &'a Release, words: &[String]) -> Option<&'a Asset> {
    r.assets.iter().find(|a| {
        let n = a.name.to_ascii_lowercase();
        words.iter().all(|w| n.contains(&w.to_ascii_lowercase()))
            && !n.ends_with(".sha256")
            && !n.contains("sha256sums")
    })
}

/// Extracts the hex SHA-256 for `name` from a `<hex>  <name>` list or a bare `<hex>`.
pub fn parse_sums(text: &str, name: &str) -> Option<String> {
    let valid = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(h) = f.next() else { continue };
        match f.next() {
            None if valid(h) => return Some(h.to_ascii_lowercase()),
            Some(n) if valid(h) && n.trim_start_matches('*') == name => {
                return Some(h.to_ascii_lowercase());
            }
            _ => {}
        }
    }
    None
}

async fn get_bytes(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    limit: usize,
) -> Result<Vec<u8>, UpdateError> {
    let fetch = |message: String| UpdateError::Fetch {
        url: url.to_string(),
        message,
    };
    let mut req = client.get(url).header(
        reqwest::header::ACCEPT,
        "application/vnd.github+json, application/octet-stream, */*",
    );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut resp = req.send().await.map_err(|e| fetch(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fetch(format!("answered {}", resp.status())));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fetch(e.to_string()))? {
        if out.len() + chunk.len() > limit {
            return Err(fetch(format!("larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Checks the release endpoint once and installs a newer verified binary.
pub async fn check(opts: &UpdateOptions) -> Result<Checked, UpdateError> {
    let client = crate::http::client(Duration::from_secs(300)).map_err(|e| UpdateError::Fetch {
        url: opts.url.clone(),
        message: e.to_string(),
    })?;
    // The token goes only to the endpoint itself, never to download hosts.
    let body = get_bytes(&client, &opts.url, opts.token.as_deref(), 4 << 20).await?;
    let rel: Release = serde_json::from_slice(&body).map_err(|e| UpdateError::Fetch {
        url: opts.url.clone(),
        message: format!("not a release: {e}"),
    })?;
    let current = Version::parse(&opts.current_version)
        .ok_or_else(|| UpdateError::BadVersion(opts.current_version.clone()))?;
    let latest = Version::parse(&rel.tag_name)
        .ok_or_else(|| UpdateError::BadVersion(rel.tag_name.clone()))?;
    if rel.draft || rel.prerelease || latest <= current {
        return Ok(Checked::UpToDate {
            current: opts.current_version.clone(),
            latest: rel.tag_name,
        });
    }
    let asset = pick_asset(&rel, &opts.asset_words)
        .ok_or_else(|| UpdateError::NoAsset(opts.asset_words.join("-")))?;
    let same_origin = |u: &str| origin(u) == origin(&opts.url);
    let expected = match asset
        .digest
        .as_deref()
        .and_then(|d| d.strip_prefix("sha256:"))
        .and_then(|h| parse_sums(h, &asset.name))
    {
        Some(h) => h,
        None => {
            let sums = rel.assets.iter().find(|a| {
                a.name == format!("{}.sha256", asset.name)
                    || a.name.eq_ignore_ascii_case("SHA256SUMS")
            });
            let Some(sums) = sums else {
                return Err(UpdateError::NoChecksum(asset.name.clone()));
            };
            let tok = opts
                .token
                .as_deref()
                .filter(|_| same_origin(&sums.browser_download_url));
            let text = get_bytes(&client, &sums.browser_download_url, tok, 1 << 20).await?;
            parse_sums(&String::from_utf8_lossy(&text), &asset.name)
                .ok_or_else(|| UpdateError::NoChecksum(asset.name.clone()))?
        }
    };
    let tok = opts
        .token
        .as_deref()
        .filter(|_| same_origin(&asset.browser_download_url));
    let bin = get_bytes(&client, &asset.browser_download_url, tok, MAX_BINARY_BYTES).await?;
    install_verified(&opts.exe, &bin, &expected, &asset.name)?;
    Ok(Checked::Updated {
        from: opts.current_version.clone(),
        to: rel.tag_name,
    })
}

fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

/// Verifies `bin` against `expected_hex`, then atomically replaces `exe` with it.
pub fn install_verified(
    exe: &Path,
    bin: &[u8],
    expected_hex: &str,
    name: &str,
) -> Result<(), UpdateError> {
    let actual = hex::encode(Sha256::digest(bin));
    if !actual.eq_ignore_ascii_case(expected_hex) {
        return Err(UpdateError::ChecksumMismatch {
            name: name.to_string(),
            expected: expected_hex.to_string(),
            actual,
        });
    }
    let err = |source| UpdateError::Install {
        path: exe.display().to_string(),
        source,
    };
    let dir = exe.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".vitals-agent.new.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bin)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        f.sync_all()?;
        std::fs::rename(&tmp, exe)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Checks every `every` (first check after `first`) until an update is installed.
pub async fn periodically(opts: UpdateOptions, first: Duration, every: Duration) -> Checked {
    tokio::time::sleep(first).await;
    loop {
        match check(&opts).await {
            Ok(c @ Checked::Updated { .. }) => return c,
            Ok(Checked::UpToDate { latest, .. }) => {
                tracing::debug!(latest, "agent is up to date")
            }
            Err(e) => tracing::warn!("self-update: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_and_never_downgrade() {
        let v = |s| Version::parse(s).expect(s);
        assert!(v("v0.2.0") > v("0.1.9"));
        assert!(v("1.0.0") > v("1.0.0-rc.1"));
        assert!(v("0.10.0") > v("0.9.0"));
        assert_eq!(v("v1.2"), v("1.2.0"));
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
    }

    #[test]
    fn sums_files() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_sums(
                &format!("{h}  vitals-agent-linux-x86_64\n"),
                "vitals-agent-linux-x86_64"
            ),
            Some(h.clone())
        );
        assert_eq!(parse_sums(&format!("{h} *other\n"), "vitals-agent"), None);
        assert_eq!(parse_sums(&format!("{h}\n"), "x"), Some(h));
    }

    #[test]
    fn origin_of_urls() {
        assert_eq!(origin("http://h:1/api/x"), "http://h:1");
        assert_eq!(origin("https://h"), "https://h");
    }

    #[test]
    fn bad_checksum_keeps_the_old_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("vitals-agent");
        std::fs::write(&exe, b"old").expect("write");
        let e = install_verified(&exe, b"new", &"0".repeat(64), "a").expect_err("mismatch");
        assert!(matches!(e, UpdateError::ChecksumMismatch { .. }));
        assert_eq!(std::fs::read(&exe).expect("read"), b"old");
        let good = hex::encode(Sha256::digest(b"new"));
        install_verified(&exe, b"new", &good, "a").expect("installs");
        assert_eq!(std::fs::read(&exe).expect("read"), b"new");
        let mode = std::fs::metadata(&exe).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "no temp file left"
        );
    }
}
