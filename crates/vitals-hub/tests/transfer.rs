//! `vitals-hub export` and `import` as a user runs them: the real binary against the database
//! of a running hub that a fake agent filled over its real socket. JSON Lines round-trips
//! exactly; CSV round-trips every series; a second import stores nothing; a bad line stops
//! with its line number.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use vitals_proto::HubMessage;
use vitals_testkit::{ApiClient, FakeAgent, TestHub, now_ms, sample};

const BIN: &str = env!("CARGO_BIN_EXE_vitals-hub");

/// Runs the binary off the runtime's thread: the hub in this process must keep serving (and
/// finish its own short transactions) while the command runs.
async fn run(data: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run vitals-hub");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn stats(admin: &ApiClient, id: &str, from: i64, to: i64) -> Value {
    let (status, v) = admin
        .get(&format!("/api/stats/{id}?from={from}&to={to}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn new_device(admin: &ApiClient, name: &str) -> String {
    let (status, v) = admin
        .post("/api/devices", json!({"name": name, "hostId": "host-x"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["device"]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn export_and_import_round_trip_idempotently() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let (source, token) = hub.pair(&admin, "host-x", "web-x").await;
    let mut agent = FakeAgent::connect(&hub.ws_url(), &token, "host-x")
        .await
        .expect("agent connects");
    // 150 samples over the last 2.5 hours: the export reads across hour boundaries.
    let t0 = now_ms() - 150 * 60_000;
    for b in 0..3u64 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                let k = (b * 50 + i) as i64;
                sample("host-x", t0 + k * 60_000, (k % 97) as f64)
            })
            .collect();
        let ack = agent.send_batch(b + 1, batch).await;
        assert_eq!(
            ack,
            HubMessage::Ack {
                seq: b + 1,
                stored: 50
            }
        );
    }
    let data = hub.dir.path().to_path_buf();
    let files = tempfile::tempdir().expect("tempdir");
    let jsonl = files.path().join("web-x.jsonl");
    let csv = files.path().join("web-x.csv");

    // JSON Lines: one stored sample per line, by name or id.
    let (ok, _, err) = run(
        &data,
        &[
            "export",
            "--device",
            "web-x",
            "--from",
            "1d",
            "--out",
            jsonl.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("exported 150 samples"), "{err}");
    let text = std::fs::read_to_string(&jsonl).expect("read");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 150);
    assert_eq!(lines[0]["ts"], json!(t0));
    assert_eq!(lines[149]["ts"], json!(t0 + 149 * 60_000));

    // A time range limits it; stdout works too.
    let (ok, out, err) = run(
        &data,
        &[
            "export",
            "--device",
            &source,
            "--from",
            &t0.to_string(),
            "--to",
            &(t0 + 9 * 60_000).to_string(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 10);

    // CSV: a header of series and one row per sample.
    let (ok, _, err) = run(
        &data,
        &[
            "export",
            "--device",
            "web-x",
            "--format",
            "csv",
            "--out",
            csv.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&csv).expect("read");
    let header = text.lines().next().expect("header");
    assert!(header.starts_with("ts,cpu,"), "{header}");
    assert_eq!(text.lines().count(), 151);

    // Import into copies: everything arrives once; a second run stores nothing.
    let copy = new_device(&admin, "copy-jsonl").await;
    let (ok, _, err) = run(
        &data,
        &[
            "import",
            "--device",
            "copy-jsonl",
            jsonl.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("read 150 samples, stored 150 new"), "{err}");
    let (ok, _, err) = run(
        &data,
        &[
            "import",
            "--device",
            "copy-jsonl",
            jsonl.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        err.contains("stored 0 new (150 were stored already)"),
        "{err}"
    );
    let csv_copy = new_device(&admin, "copy-csv").await;
    let (ok, _, err) = run(
        &data,
        &["import", "--device", &csv_copy, csv.to_str().expect("path")],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("stored 150 new"), "{err}");

    let (from, to) = (t0 - 1, now_ms());
    let want = stats(&admin, &source, from, to).await;
    for id in [&copy, &csv_copy] {
        let got = stats(&admin, id, from, to).await;
        assert_eq!(got["samples"], json!(150));
        for (name, s) in want["series"].as_object().expect("series") {
            let g = &got["series"][name];
            for f in ["count", "min", "max", "p95"] {
                assert_eq!(g[f], s[f], "{id} {name}.{f}");
            }
            let (a, b) = (
                g["avg"].as_f64().expect("avg"),
                s["avg"].as_f64().expect("avg"),
            );
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                "{id} {name}.avg {a} vs {b}"
            );
        }
    }

    // A bad line stops the import, naming the line; the lines before it are kept.
    let bad = files.path().join("bad.jsonl");
    let good_line = std::fs::read_to_string(&jsonl).expect("read");
    let good_line = good_line.lines().next().expect("line");
    std::fs::write(&bad, format!("{good_line}\n{{\"ts\": \"never\"}}\n")).expect("write");
    let other = new_device(&admin, "copy-bad").await;
    let (ok, _, err) = run(
        &data,
        &["import", "--device", &other, bad.to_str().expect("path")],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(stats(&admin, &other, from, to).await["samples"], json!(1));

    // A line longer than a protocol message is refused without reading it all.
    let long = files.path().join("long.jsonl");
    std::fs::write(&long, "x".repeat(3 << 20)).expect("write");
    let (ok, _, err) = run(
        &data,
        &["import", "--device", &other, long.to_str().expect("path")],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("line 1") && err.contains("longer than"),
        "{err}"
    );

    // Unknown devices and times are explained.
    let (ok, _, err) = run(&data, &["export", "--device", "nope"]).await;
    assert!(!ok);
    assert!(
        err.contains("no device \"nope\"") && err.contains("web-x"),
        "{err}"
    );
    let (ok, _, err) = run(
        &data,
        &["export", "--device", "web-x", "--from", "yesterday"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("RFC 3339"), "{err}");
}
