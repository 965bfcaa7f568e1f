//! Pairing rate limits per source IP: polling faster than every 2 s and guessing codes answer
//! 429 with Retry-After.

use vitals_testkit::{ApiClient, TestHub};

#[tokio::test]
async fn fast_polling_and_guessing_get_429_with_retry_after() {
    let hub = TestHub::start().await;
    let anon = ApiClient::anonymous(&hub.url);
    let code = anon.request_code("host-p").await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let res = http
            .get(format!("{}/api/device-token?code={code}", hub.url))
            .send()
            .await
            .expect("sent");
        statuses.push(res.status().as_u16());
        if res.status().as_u16() == 429 {
            retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
    }
    assert_eq!(&statuses[..3], &[404, 404, 404], "a small burst is allowed");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(matches!(retry_after, Some(1..=3)), "{retry_after:?}");

    // Guessing: after a few unknown codes, every poll from that address is refused.
    let hub2 = TestHub::start().await;
    let mut stopped = false;
    for i in 0..12 {
        let res = http
            .get(format!(
                "{}/api/device-token?code=ZZZZ-ZZZ{}",
                hub2.url,
                (b'2' + (i % 8) as u8) as char
            ))
            .send()
            .await
            .expect("sent");
        if res.status().as_u16() == 429 {
            assert!(res.headers().contains_key("retry-after"));
            let body: serde_json::Value = res.json().await.expect("json");
            if body["message"]
                .as_str()
                .unwrap_or("")
                .contains("unknown codes")
            {
                stopped = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        }
    }
    assert!(stopped, "guessing is stopped");
    hub.stop().await;
    hub2.stop().await;
}
