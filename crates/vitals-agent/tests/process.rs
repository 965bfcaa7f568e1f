//! The real binary under `kill -9`: no crash loop, no duplicates, and what was spooled before
//! the kill is delivered after the restart, in order and without a gap.

mod common;

use std::time::Duration;

use common::{FakeHub, wait_for};
use tokio::process::{Child, Command};

const INTERVAL_MS: i64 = 200;

fn config(dir: &std::path::Path, hub: &FakeHub) -> std::path::PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "hub = \"{}\"\ntoken = \"{}\"\ninterval_secs = 0.2\ndocker = false\ngpu = false\n\
             spool_dir = \"{}\"\n[update]\nenabled = false\n",
            hub.url(),
            common::TOKEN,
            dir.join("spool").display()
        ),
    )
    .expect("config");
    p
}

fn start(cfg: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vitals-agent"))
        .arg("--config")
        .arg(cfg)
        .arg("run")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn")
}

/// Gaps larger than 1.5 intervals between consecutive stored timestamps within `[from, to]`.
fn gaps(stored: &[i64], from: i64, to: i64) -> Vec<(i64, i64)> {
    stored
        .windows(2)
        .filter(|w| w[0] >= from && w[1] <= to && w[1] - w[0] > INTERVAL_MS * 3 / 2)
        .map(|w| (w[0], w[1]))
        .collect()
}

fn strictly_increasing(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_send_and_mid_spool_then_restart() {
    let mut hub = FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &hub);

    // 1. Streaming live, then kill -9 mid-send.
    let mut agent = start(&cfg);
    assert!(wait_for(Duration::from_secs(15), || hub.stored().len() >= 10).await);
    agent.start_kill().expect("kill -9");
    let _ = agent.wait().await;
    let before = hub.stored().len();

    // 2. Restart: it runs, streams again, no crash loop.
    let mut agent = start(&cfg);
    assert!(
        wait_for(Duration::from_secs(15), || hub.stored().len()
            >= before + 10)
        .await
    );
    assert!(agent.try_wait().expect("status").is_none(), "still running");

    // 3. Hub goes down; the agent spools; kill -9 while spooling.
    hub.down().await;
    let t_down = vitals_agent::collect::now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent.start_kill().expect("kill -9");
    let _ = agent.wait().await;
    let t_kill = vitals_agent::collect::now_ms();

    // 4. Restart the agent while the hub is still down, then bring the hub back.
    let mut agent = start(&cfg);
    tokio::time::sleep(Duration::from_secs(1)).await;
    hub.up().await;
    let t_up = vitals_agent::collect::now_ms();
    assert!(
        wait_for(Duration::from_secs(20), || hub
            .stored()
            .last()
            .is_some_and(|t| *t > t_up + 1000))
        .await,
        "live again after the replay"
    );
    assert!(agent.try_wait().expect("status").is_none(), "no crash loop");

    let stored = hub.stored();
    assert!(
        strictly_increasing(&stored),
        "in order and never stored twice"
    );
    // Everything sampled while the hub was down, before the kill, was spooled and replayed.
    let g = gaps(&stored, t_down - 1000, t_kill - 2 * INTERVAL_MS);
    assert!(g.is_empty(), "gaps in the spooled range: {g:?}");
    // And the restarted agent spooled and replayed its own outage time too.
    let g = gaps(&stored, t_kill + 2000, t_up + 1000);
    assert!(g.is_empty(), "gaps after the restart: {g:?}");
    let dup = hub.received() - stored.len() as u64;
    assert!(dup <= 20, "resends are bounded ({dup})");

    // A graceful stop (SIGTERM) exits 0.
    let pid = agent.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status:?}");
}

/// A revoked token makes the binary exit with 78, which the systemd unit does not restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_exits_78() {
    let hub = FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &hub);
    let mut agent = start(&cfg);
    assert!(wait_for(Duration::from_secs(15), || hub.stored().len() >= 3).await);
    hub.revoke();
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(vitals_agent::install::EXIT_REVOKED));
}
