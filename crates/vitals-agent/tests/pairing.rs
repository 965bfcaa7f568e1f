//! Pairing against the fake hub: approval, rate limiting (429 + Retry-After), expiry, an
//! unknown code, and the CLI end to end (`pair` stores the token 0600, `run` then streams).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{FakeHub, wait_for};
use vitals_agent::pairing::{self, PairError, PairOptions};

fn opts(hub: &FakeHub) -> PairOptions {
    let mut o = PairOptions::new(hub.url(), "host-1".into(), Some("web-1".into()));
    o.poll_every = Duration::from_millis(300);
    o.max_wait = Duration::from_secs(20);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_once_approved_and_honours_rate_limits() {
    let hub = FakeHub::start().await;
    *hub.shared.poll_min.lock().expect("lock") = Duration::from_secs(1);
    let shared = hub.shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        shared.pairing.lock().expect("lock").approved = true;
    });
    let mut shown = None;
    let got = pairing::pair(&opts(&hub), |code, link| {
        shown = Some((code.code.clone(), link.to_string()))
    })
    .await
    .expect("paired");
    assert_eq!(got.token, common::TOKEN);
    assert_eq!(got.device_id, "dev-1");
    let (code, link) = shown.expect("code shown");
    assert_eq!(code, "ABCD-EFGH");
    assert_eq!(link, format!("{}/pair?code=ABCD-EFGH", hub.url()));

    let p = hub.shared.pairing.lock().expect("lock");
    let req = &p.requests[0];
    assert_eq!(req["hostId"], "host-1");
    assert_eq!(req["hostname"], "web-1");
    assert_eq!(req["agentVersion"], vitals_agent::AGENT_VERSION);
    assert!(
        p.rate_limited > 0,
        "the agent polled faster than allowed at least once"
    );
    for w in p.log.windows(2) {
        if w[0].1 == 429 {
            assert!(
                w[1].0.duration_since(w[0].0) >= Duration::from_millis(950),
                "after a 429 the next poll waits for Retry-After"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_ends_pairing() {
    let hub = FakeHub::start().await;
    *hub.shared.poll_min.lock().expect("lock") = Duration::from_millis(100);
    hub.shared.pairing.lock().expect("lock").expired = true;
    let e = pairing::pair(&opts(&hub), |_, _| {})
        .await
        .expect_err("expired");
    assert!(matches!(e, PairError::Expired), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_code_ends_pairing() {
    let hub = FakeHub::start().await;
    *hub.shared.poll_min.lock().expect("lock") = Duration::from_millis(100);
    hub.shared.pairing.lock().expect("lock").delivered = true;
    let e = pairing::pair(&opts(&hub), |_, _| {})
        .await
        .expect_err("not found");
    assert!(matches!(e, PairError::NotFound), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_hub_is_a_clear_error() {
    let o = PairOptions::new("http://127.0.0.1:9".into(), "h".into(), None);
    let e = pairing::pair(&o, |_, _| {}).await.expect_err("unreachable");
    assert!(e.to_string().contains("cannot reach the hub"), "{e}");
}

/// The binary: `pair` prints the code and link, stores the token with mode 0600, and `run`
/// then streams to the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pair_then_run() {
    let hub = FakeHub::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    let shared = hub.shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        shared.pairing.lock().expect("lock").approved = true;
    });
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vitals-agent"))
        .arg("--config")
        .arg(&cfg)
        .args(["pair", "--hub", &hub.url(), "--name", "web-1"])
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ABCD-EFGH"), "{stdout}");
    assert!(
        stdout.contains(&format!("{}/pair?code=ABCD-EFGH", hub.url())),
        "{stdout}"
    );
    let mode = std::fs::metadata(&cfg)
        .expect("config")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&cfg).expect("read");
    assert!(
        text.contains(common::TOKEN) && text.contains("dev-1"),
        "{text}"
    );

    std::fs::write(
        &cfg,
        format!(
            "{text}interval_secs = 0.2\ndocker = false\ngpu = false\n[update]\nenabled = false\n"
        ),
    )
    .expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vitals-agent"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    assert!(
        wait_for(Duration::from_secs(15), || hub.stored().len() >= 5).await,
        "streams after pairing"
    );
    assert!(
        hub.shared.states.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "sends its state"
    );
    child.kill().await.expect("kill");
}
