//! Agent distribution: `/install.sh`, the binaries under `/downloads/` with their SHA-256, and
//! the GitHub-shaped release endpoint the agents' self-updater reads.

use sha2::{Digest, Sha256};
use vitals_testkit::{ApiClient, TestHub};

#[tokio::test]
async fn install_script_downloads_and_release() {
    let bins = tempfile::tempdir().expect("tmp");
    std::fs::write(
        bins.path().join("vitals-agent-linux-x86_64"),
        b"fake agent binary",
    )
    .expect("w");
    let dir = bins.path().to_path_buf();
    let hub = TestHub::start_with(|c| c.agent_dir = Some(dir)).await;
    let http = reqwest::Client::new();

    let script = http
        .get(format!("{}/install.sh", hub.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(script.status().as_u16(), 200);
    let text = script.text().await.expect("text");
    assert!(text.starts_with("#!/bin/sh"));
    assert!(
        text.contains(&format!("'{}'", hub.url)),
        "the hub URL is one quoted word"
    );
    assert!(text.contains("/downloads/vitals-agent-linux-$ARCH"));

    let bin = http
        .get(format!("{}/downloads/vitals-agent-linux-x86_64", hub.url))
        .send()
        .await
        .expect("sent");
    assert_eq!(bin.status().as_u16(), 200);
    let bytes = bin.bytes().await.expect("bytes");
    assert_eq!(&bytes[..], b"fake agent binary");
    let want: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sum = http
        .get(format!(
            "{}/downloads/vitals-agent-linux-x86_64.sha256",
            hub.url
        ))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert_eq!(&sum[..64], want);
    for bad in [
        "vitals-agent-linux-..%2Fetc",
        "vitals-agent-linux-mips",
        "passwd",
    ] {
        let r = http
            .get(format!("{}/downloads/{bad}", hub.url))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 404, "{bad}");
    }

    let anon = ApiClient::anonymous(&hub.url);
    let (s, _) = anon.get("/api/agent/release").await;
    assert_eq!(s.as_u16(), 401);
    let admin = hub.setup_admin().await;
    let (_, token) = hub.pair(&admin, "rel-host", "rel").await;
    let dev = ApiClient::with_bearer(&hub.url, &token);
    let (s, rel) = dev.get("/api/agent/release").await;
    assert_eq!(s.as_u16(), 200, "{rel}");
    assert_eq!(rel["tag_name"], format!("v{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(rel["draft"], false);
    let asset = &rel["assets"][0];
    assert_eq!(asset["name"], "vitals-agent-linux-x86_64");
    assert_eq!(asset["digest"], format!("sha256:{want}"));
    assert_eq!(
        asset["browser_download_url"],
        format!("{}/downloads/vitals-agent-linux-x86_64", hub.url)
    );
    hub.stop().await;
}
