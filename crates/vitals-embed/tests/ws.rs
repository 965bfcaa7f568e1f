//! `/ws` driven by a real WebSocket client against a real server on 127.0.0.1:0: snapshots
//! per interval, the max_clients limit, auth and Origin rules, shutdown.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use vitals_embed::{Auth, Config, Dashboard, JobInfo, Metrics, RunningDashboard};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn start(config: Config) -> RunningDashboard {
    let config = Config { port: 0, ..config };
    match Dashboard::new(config).and_then(Dashboard::spawn) {
        Ok(r) => r,
        Err(e) => panic!("dashboard did not start: {e}"),
    }
}

fn fast() -> Config {
    Config {
        update_interval: Duration::from_millis(100),
        ..Config::default()
    }
}

async fn connect(
    d: &RunningDashboard,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<Client, WsError> {
    let url = format!("ws://{}/ws{query}", d.local_addr());
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            req.headers_mut().insert(*k, v);
        }
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn must_connect(
    d: &RunningDashboard,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Client {
    match connect(d, query, headers).await {
        Ok(ws) => ws,
        Err(e) => panic!("connect failed: {e}"),
    }
}

async fn next_metrics(ws: &mut Client) -> Metrics {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match msg {
            Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str(t.as_str()) {
                Ok(m) => return m,
                Err(e) => panic!("frame is not a metrics snapshot: {e}: {t}"),
            },
            Ok(Some(Ok(_))) => continue,
            other => panic!("no snapshot: {other:?}"),
        }
    }
}

/// The HTTP status and body of a refused handshake.
fn refusal(r: Result<Client, WsError>) -> (u16, String) {
    match r {
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
}

#[tokio::test]
async fn a_snapshot_arrives_per_interval_and_reflects_updates() {
    let d = start(fast());
    let h = d.handle();
    let mut ws = must_connect(&d, "", &[]).await;
    let first = next_metrics(&mut ws).await;
    assert_eq!(first.jobs_active, 0);
    assert_eq!(first.active_connections, 1);

    h.update_job_metrics(7, 100, 3, 2, 9);
    h.add_job(JobInfo {
        provider: "gcp".into(),
        ..JobInfo::new("j-1", "build")
    });
    let m = next_metrics(&mut ws).await;
    assert_eq!(
        (
            m.jobs_active,
            m.jobs_completed,
            m.jobs_failed,
            m.jobs_pending,
            m.queue_length
        ),
        (7, 100, 3, 2, 9)
    );
    assert_eq!(m.recent_jobs.len(), 1);
    assert_eq!(m.provider_stats.get("gcp"), Some(&1));

    h.update_job_metrics(8, 100, 3, 2, 9);
    let m = next_metrics(&mut ws).await;
    assert_eq!(m.jobs_active, 8);

    // Frames keep coming at the interval: 5 more take about 500 ms.
    let t0 = Instant::now();
    for _ in 0..5 {
        next_metrics(&mut ws).await;
    }
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "5 frames took {took:?}"
    );
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn the_viewer_after_max_clients_is_refused_with_a_reason() {
    let d = start(Config {
        max_clients: 2,
        ..fast()
    });
    let mut a = must_connect(&d, "", &[]).await;
    let b = must_connect(&d, "", &[]).await;
    next_metrics(&mut a).await;
    let (status, body) = refusal(connect(&d, "", &[]).await);
    assert_eq!(status, 503);
    assert!(
        body.contains("too_many_viewers") && body.contains("max_clients"),
        "{body}"
    );

    // A slot is freed when a viewer leaves.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect(&d, "", &[]).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn bearer_token_is_required_by_header_or_query() {
    let d = start(Config {
        auth: Auth::Bearer("s3cret".into()),
        ..fast()
    });
    let (status, body) = refusal(connect(&d, "", &[]).await);
    assert_eq!(status, 401);
    assert!(body.contains("unauthorized"), "{body}");
    assert_eq!(refusal(connect(&d, "?token=wrong", &[]).await).0, 401);
    let mut ws = must_connect(&d, "?token=s3cret", &[]).await;
    next_metrics(&mut ws).await;
    let mut ws = must_connect(&d, "", &[("authorization", "Bearer s3cret")]).await;
    next_metrics(&mut ws).await;
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn basic_credentials_are_required() {
    let d = start(Config {
        auth: Auth::Basic {
            user: "ops".into(),
            password: "pw".into(),
        },
        ..fast()
    });
    assert_eq!(refusal(connect(&d, "", &[]).await).0, 401);
    // "ops:pw"
    let mut ws = must_connect(&d, "", &[("authorization", "Basic b3BzOnB3")]).await;
    next_metrics(&mut ws).await;
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn origin_must_be_same_or_allowed() {
    let d = start(Config {
        allowed_origins: vec!["https://ops.example.com".into()],
        ..fast()
    });
    let (status, body) = refusal(connect(&d, "", &[("origin", "https://evil.example")]).await);
    assert_eq!(status, 403);
    assert!(body.contains("origin_not_allowed"), "{body}");
    let same = format!("http://{}", d.local_addr());
    must_connect(&d, "", &[("origin", &same)]).await;
    must_connect(&d, "", &[("origin", "https://ops.example.com")]).await;
    // Non-browser clients send no Origin.
    must_connect(&d, "", &[]).await;
    let _ = d.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_viewers() {
    let d = start(fast());
    let mut ws = must_connect(&d, "", &[]).await;
    next_metrics(&mut ws).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), d.shutdown()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "viewer was not closed");
}

#[tokio::test]
async fn a_disabled_dashboard_serves_nothing_but_updates_still_work() {
    let dash = match Dashboard::new(Config {
        enabled: false,
        ..Config::default()
    }) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let h = dash.handle();
    let started = tokio::time::timeout(
        Duration::from_secs(1),
        dash.start(std::future::pending::<()>()),
    )
    .await;
    assert!(
        matches!(started, Ok(Ok(()))),
        "start should return at once: {started:?}"
    );
    h.update_job_metrics(1, 2, 3, 4, 5);
    assert_eq!(h.metrics().queue_length, 5);
}

#[tokio::test]
async fn history_endpoint_is_capped_at_history_points() {
    let d = start(Config {
        history_points: 3,
        update_interval: Duration::from_millis(50),
        ..Config::default()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let h = d.handle().history();
    assert_eq!(h.t.len(), 3, "{h:?}");
    assert!(h.t.windows(2).all(|w| w[0] < w[1]));
    let _ = d.shutdown().await;
}
