//! Self-update against a local HTTP server serving a release in the GitHub API shape:
//! upgrade, bad checksum, nothing newer, checksum from a `.sha256` asset, pre-releases.

mod common;

use sha2::{Digest, Sha256};
use vitals_agent::update::{self, Checked, UpdateError, UpdateOptions};

const ASSET: &str = "vitals-agent-linux-test";

fn setup(
    hub: &common::FakeHub,
    tag: &str,
    bin: &[u8],
    digest: Option<String>,
    extra: Vec<(String, Vec<u8>)>,
) {
    let mut assets = vec![serde_json::json!({
        "name": ASSET,
        "browser_download_url": format!("{}/dl/{ASSET}", hub.url()),
        "digest": digest,
    })];
    for (name, _) in &extra {
        assets.push(serde_json::json!({
            "name": name,
            "browser_download_url": format!("{}/dl/{name}", hub.url()),
        }));
    }
    let mut r = hub.shared.release.lock().expect("lock");
    r.json =
        serde_json::json!({"tag_name": tag, "draft": false, "prerelease": false, "assets": assets});
    r.files = vec![(ASSET.to_string(), bin.to_vec())];
    r.files.extend(extra);
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn opts(hub: &common::FakeHub, exe: &std::path::Path) -> UpdateOptions {
    UpdateOptions {
        url: format!("{}/api/agent/release", hub.url()),
        token: Some(common::TOKEN.into()),
        current_version: "0.1.0".into(),
        exe: exe.to_path_buf(),
        asset_words: vec!["linux".into(), "test".into()],
    }
}

fn old_exe(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let exe = dir.path().join("vitals-agent");
    std::fs::write(&exe, b"old binary").expect("write");
    exe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_to_a_newer_verified_release() {
    let hub = common::FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = old_exe(&dir);
    setup(
        &hub,
        "v0.2.0",
        b"new binary",
        Some(format!("sha256:{}", sha(b"new binary"))),
        vec![],
    );
    let c = update::check(&opts(&hub, &exe)).await.expect("updates");
    assert_eq!(
        c,
        Checked::Updated {
            from: "0.1.0".into(),
            to: "v0.2.0".into()
        }
    );
    assert_eq!(std::fs::read(&exe).expect("read"), b"new binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checksum_keeps_the_old_binary() {
    let hub = common::FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = old_exe(&dir);
    setup(
        &hub,
        "v0.2.0",
        b"tampered",
        Some(format!("sha256:{}", sha(b"new binary"))),
        vec![],
    );
    let e = update::check(&opts(&hub, &exe))
        .await
        .expect_err("mismatch");
    assert!(matches!(e, UpdateError::ChecksumMismatch { .. }), "{e}");
    assert_eq!(std::fs::read(&exe).expect("read"), b"old binary");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        1,
        "no leftovers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_newer_means_no_change_and_never_a_downgrade() {
    let hub = common::FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = old_exe(&dir);
    for tag in ["v0.1.0", "0.0.9", "v0.1.0-rc.1"] {
        setup(
            &hub,
            tag,
            b"other",
            Some(format!("sha256:{}", sha(b"other"))),
            vec![],
        );
        let c = update::check(&opts(&hub, &exe)).await.expect("checks");
        assert!(matches!(c, Checked::UpToDate { .. }), "{tag}: {c:?}");
        assert_eq!(std::fs::read(&exe).expect("read"), b"old binary");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_from_a_sha256_asset_and_none_at_all() {
    let hub = common::FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = old_exe(&dir);
    setup(&hub, "v1.0.0", b"no sum", None, vec![]);
    let e = update::check(&opts(&hub, &exe))
        .await
        .expect_err("no checksum");
    assert!(matches!(e, UpdateError::NoChecksum(_)), "{e}");
    assert_eq!(std::fs::read(&exe).expect("read"), b"old binary");

    let sums = format!("{}  {ASSET}\n", sha(b"v1 binary")).into_bytes();
    setup(
        &hub,
        "v1.0.0",
        b"v1 binary",
        None,
        vec![(format!("{ASSET}.sha256"), sums)],
    );
    update::check(&opts(&hub, &exe)).await.expect("updates");
    assert_eq!(std::fs::read(&exe).expect("read"), b"v1 binary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prereleases_are_ignored() {
    let hub = common::FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = old_exe(&dir);
    setup(
        &hub,
        "v9.0.0",
        b"pre",
        Some(format!("sha256:{}", sha(b"pre"))),
        vec![],
    );
    hub.shared.release.lock().expect("lock").json["prerelease"] = serde_json::json!(true);
    let c = update::check(&opts(&hub, &exe)).await.expect("checks");
    assert!(matches!(c, Checked::UpToDate { .. }));
}
