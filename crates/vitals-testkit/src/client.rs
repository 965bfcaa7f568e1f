//! A small HTTP client for the hub's API: session (cookie + CSRF) or bearer authentication.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    csrf: Option<String>,
    bearer: Option<String>,
}

impl ApiClient {
    pub fn anonymous(base: &str) -> ApiClient {
        crate::init_crypto();
        ApiClient {
            base: base.to_string(),
            http: reqwest::Client::new(),
            cookie: None,
            csrf: None,
            bearer: None,
        }
    }

    pub fn with_bearer(base: &str, token: &str) -> ApiClient {
        ApiClient {
            bearer: Some(token.to_string()),
            ..ApiClient::anonymous(base)
        }
    }

    /// Creates the first admin with the setup token and keeps the session.
    pub async fn setup(base: &str, token: &str, user: &str, pw: &str) -> anyhow::Result<ApiClient> {
        let c = ApiClient::anonymous(base);
        let res = c
            .http
            .post(format!("{base}/api/setup"))
            .json(&json!({"token": token, "username": user, "password": pw}))
            .send()
            .await?;
        c.with_session(res).await
    }

    /// Signs in and keeps the session cookie and CSRF token.
    pub async fn login(base: &str, user: &str, pw: &str) -> anyhow::Result<ApiClient> {
        let c = ApiClient::anonymous(base);
        let res = c
            .http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": user, "password": pw}))
            .send()
            .await?;
        c.with_session(res).await
    }

    async fn with_session(mut self, res: reqwest::Response) -> anyhow::Result<ApiClient> {
        if !res.status().is_success() {
            anyhow::bail!("sign-in failed: {} {}", res.status(), res.text().await?);
        }
        let cookie = res
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("vitals_session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        let body: Value = res.json().await?;
        self.cookie = cookie;
        self.csrf = body["csrfToken"].as_str().map(str::to_string);
        Ok(self)
    }

    /// The session cookie (`vitals_session=...`), if signed in.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(reqwest::header::COOKIE, c);
        }
        if let Some(c) = &self.csrf {
            req = req.header("x-csrf-token", c);
        }
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// Timestamps of every raw sample of `device` from `from` to a minute from now (at most
    /// 20,000), as `/api/metrics` returns them.
    pub async fn stored_ts(&self, device: &str, from: i64) -> Vec<i64> {
        let to = crate::now_ms() + 60_000;
        let (s, m) = self
            .get(&format!(
                "/api/metrics/{device}?from={from}&to={to}&points=20000"
            ))
            .await;
        assert_eq!(s.as_u16(), 200, "{m}");
        serde_json::from_value(m["timestamps"].clone()).expect("timestamps")
    }

    pub async fn create_token(&self, name: &str, role: &str) -> String {
        let (s, b) = self
            .post("/api/tokens", json!({"name": name, "role": role}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "token created: {b}");
        b["token"].as_str().expect("token").to_string()
    }

    pub async fn create_user(&self, name: &str, role: &str, pw: &str) {
        let (s, b) = self
            .post(
                "/api/users",
                json!({"username": name, "password": pw, "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "user created: {b}");
    }

    /// `POST /api/device-codes`; returns the code.
    pub async fn request_code(&self, host_id: &str) -> String {
        let (s, b) = self
            .post(
                "/api/device-codes",
                json!({"hostId": host_id, "hostname": format!("{host_id}.local"), "agentVersion": "test"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "code created: {b}");
        b["code"].as_str().expect("code").to_string()
    }

    pub async fn approve(&self, code: &str, name: &str) {
        let (s, b) = self
            .post(
                &format!("/api/device-codes/{code}/approve"),
                json!({"name": name}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "approved: {b}");
    }

    /// `GET /api/device-token?code=`, waiting out the 2 s poll limit if needed.
    pub async fn poll_token(&self, code: &str) -> (u16, Value) {
        for _ in 0..10 {
            let (s, b) = self.get(&format!("/api/device-token?code={code}")).await;
            if s == StatusCode::TOO_MANY_REQUESTS {
                tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
                continue;
            }
            return (s.as_u16(), b);
        }
        panic!("poll kept being rate limited");
    }
}
