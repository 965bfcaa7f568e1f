//! The authorization matrix: every route x {anonymous, viewer, admin, device token} -> status.
//! A route is checked for its auth outcome only (401/403 or "allowed": anything else).

use reqwest::Method;
use serde_json::json;
use vitals_testkit::{ApiClient, TestHub};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// Authorized: the answer is neither 401 nor 403.
    Ok,
    Unauth,
    Forbidden,
}
use Want::*;

#[tokio::test]
async fn every_route_for_every_kind_of_caller() {
    let hub = TestHub::start().await;
    let admin_session = hub.setup_admin().await;
    let admin = hub.admin_token_client(&admin_session).await;
    admin_session
        .create_user("v", "viewer", "viewer-password")
        .await;
    let viewer = ApiClient::login(&hub.url, "v", "viewer-password")
        .await
        .expect("viewer");
    let viewer_token = ApiClient::with_bearer(&hub.url, &admin.create_token("vt", "viewer").await);
    let (dev, dev_token) = hub.pair(&admin, "host-z", "z").await;
    let (dev2, _) = hub.pair(&admin, "host-x", "x").await;
    let device = ApiClient::with_bearer(&hub.url, &dev_token);
    let anon = ApiClient::anonymous(&hub.url);
    let bogus = ApiClient::with_bearer(&hub.url, "vat_not-a-real-token");
    let code = anon.request_code("host-y").await;

    // (method, path, body, anonymous, viewer, admin, device)
    let d = format!("/api/devices/{dev}");
    let routes: Vec<(Method, String, serde_json::Value, [Want; 4])> = vec![
        (
            Method::GET,
            "/healthz".into(),
            json!(null),
            [Ok, Ok, Ok, Ok],
        ),
        (
            Method::GET,
            "/metrics".into(),
            json!(null),
            [Ok, Ok, Ok, Ok],
        ),
        (
            Method::GET,
            "/api/setup".into(),
            json!(null),
            [Ok, Ok, Ok, Ok],
        ),
        (
            Method::GET,
            "/api/auth/me".into(),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::GET,
            "/api/users".into(),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/users".into(),
            json!({"username": "n", "password": "password1", "role": "viewer"}),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::DELETE,
            "/api/users/none".into(),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::GET,
            "/api/tokens".into(),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/tokens".into(),
            json!({"name": "t", "role": "viewer"}),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::DELETE,
            "/api/tokens/none".into(),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/device-codes".into(),
            json!({"hostId": "h"}),
            [Ok, Ok, Ok, Ok],
        ),
        (
            Method::GET,
            format!("/api/device-codes/{code}"),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/device-codes/AAAA-AAAA/approve".into(),
            json!({"name": "x"}),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/device-codes/AAAA-AAAA/deny".into(),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::GET,
            "/api/devices".into(),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::GET,
            d.clone(),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::PATCH,
            d.clone(),
            json!({"name": "renamed"}),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::GET,
            format!("{d}/state"),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::GET,
            "/api/clients".into(),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::GET,
            format!("/api/metrics/{dev}"),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::GET,
            format!("/api/stats/{dev}"),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::GET,
            "/api/settings".into(),
            json!(null),
            [Unauth, Ok, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/settings".into(),
            json!({"retention.rawDays": 7}),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            "/api/report".into(),
            json!({"type": "metrics", "seq": 1, "samples": []}),
            [Unauth, Forbidden, Forbidden, Ok],
        ),
        (
            Method::DELETE,
            "/api/devices/none".into(),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
        (
            Method::POST,
            format!("/api/devices/{dev2}/rotate-token"),
            json!(null),
            [Unauth, Forbidden, Ok, Forbidden],
        ),
    ];
    let callers: [(&str, &ApiClient); 4] = [
        ("anonymous", &anon),
        ("viewer", &viewer),
        ("admin", &admin),
        ("device", &device),
    ];
    let mut failures = Vec::new();
    for (method, path, body, wants) in &routes {
        for ((who, client), want) in callers.iter().zip(wants) {
            let body = (!body.is_null()).then(|| body.clone());
            let (status, b) = client.send(method.clone(), path, body.clone()).await;
            let got = match status.as_u16() {
                401 => Unauth,
                403 => Forbidden,
                _ => Ok,
            };
            if got != *want {
                failures.push(format!(
                    "{method} {path} as {who}: want {want:?}, got {status} {b}"
                ));
            }
            // A viewer token behaves like a viewer session.
            if *who == "viewer" {
                let (s2, _) = viewer_token.send(method.clone(), path, body).await;
                let got2 = match s2.as_u16() {
                    401 => Unauth,
                    403 => Forbidden,
                    _ => Ok,
                };
                if got2 != *want {
                    failures.push(format!(
                        "{method} {path} as viewer token: want {want:?}, got {s2}"
                    ));
                }
            }
        }
    }
    // An unknown bearer token is 401 everywhere auth is needed.
    let (s, _) = bogus.get("/api/devices").await;
    assert_eq!(s.as_u16(), 401);
    assert!(
        failures.is_empty(),
        "authorization mismatches:\n{}",
        failures.join("\n")
    );
    hub.stop().await;
}
