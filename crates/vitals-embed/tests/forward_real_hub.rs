//! Forwarding into a real Vitals hub (started in-process by the test kit): the dashboard's
//! metrics land in the hub's `metrics` bucket and are readable over the hub's HTTP API.

use std::time::{Duration, Instant};

use vitals_embed::{Config, Dashboard};
use vitals_testkit::TestHub;

#[tokio::test]
async fn metrics_arrive_in_the_hub_metrics_bucket() {
    let hub = TestHub::start().await;
    let admin = hub.setup_admin().await;
    let token = admin.create_token("embed", "admin").await;
    let config = Config {
        port: 0,
        update_interval: Duration::from_millis(100),
        ..Config::default().forward_to(&hub.url, &token)
    };
    let d = match Dashboard::new(config).and_then(Dashboard::spawn) {
        Ok(d) => d,
        Err(e) => panic!("dashboard did not start: {e}"),
    };
    d.handle().update_job_metrics(5, 123, 2, 8, 15);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = admin.get("/api/store/metrics?name=jobs_active").await;
        assert_eq!(status.as_u16(), 200, "{body}");
        let found = body
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["value"].as_f64() == Some(5.0)));
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no forwarded metric reached the hub: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = d.shutdown().await;
    hub.stop().await;
}
