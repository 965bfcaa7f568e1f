//! Notification channels (Slack incoming webhook, generic JSON webhook, e-mail over SMTP,
//! ntfy): their configuration and validation, the payload each receives, and delivery through
//! the [`outbound`](super::outbound) guard. Names and values from devices are data, never
//! markup or commands: JSON is built with serde, Slack text has `&`, `<` and `>` escaped,
//! header values are reduced to printable ASCII, mail is plain text built by lettre.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::engine::AlertEvent;
use super::outbound::{self, OutboundError};
use super::rule::Rule;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlackConfig {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Extra request headers (for example an authorization header of the receiver).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP (only sensible on a trusted network).
    None,
    /// STARTTLS, required.
    #[default]
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
}

fn smtp_port() -> u16 {
    587
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NtfyConfig {
    /// Server and topic, e.g. `https://ntfy.sh/my-alerts`.
    pub url: String,
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChannelConfig {
    Slack(SlackConfig),
    Webhook(WebhookConfig),
    Email(EmailConfig),
    Ntfy(NtfyConfig),
}

pub const KINDS: &str = "slack, webhook, email, ntfy";

impl ChannelConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Ntfy(_) => "ntfy",
        }
    }

    fn config_json(&self) -> Value {
        match self {
            ChannelConfig::Slack(c) => json!(c),
            ChannelConfig::Webhook(c) => json!(c),
            ChannelConfig::Email(c) => json!(c),
            ChannelConfig::Ntfy(c) => json!(c),
        }
    }

    /// Parses and validates `config` for `kind`, reporting every problem.
    pub fn parse(kind: &str, config: Value) -> Result<ChannelConfig, Vec<String>> {
        fn de<T: serde::de::DeserializeOwned>(kind: &str, v: Value) -> Result<T, Vec<String>> {
            serde_json::from_value(v)
                .map_err(|e| vec![format!("`config` of a {kind} channel: {e}")])
        }
        let parsed = match kind {
            "slack" => ChannelConfig::Slack(de(kind, config)?),
            "webhook" => ChannelConfig::Webhook(de(kind, config)?),
            "email" => ChannelConfig::Email(de(kind, config)?),
            "ntfy" => ChannelConfig::Ntfy(de(kind, config)?),
            other => {
                return Err(vec![format!(
                    "unknown channel kind {other:?} (known: {KINDS})"
                )]);
            }
        };
        let mut errors = Vec::new();
        let check_url = |u: &str, errors: &mut Vec<String>| {
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.len() > 2048
                || reqwest::Url::parse(u).is_err()
            {
                errors.push(format!(
                    "`config.url` must be an http(s) URL of at most 2048 bytes, not {u:?}"
                ));
            }
        };
        match &parsed {
            ChannelConfig::Slack(c) => check_url(&c.url, &mut errors),
            ChannelConfig::Ntfy(c) => check_url(&c.url, &mut errors),
            ChannelConfig::Webhook(c) => {
                check_url(&c.url, &mut errors);
                if c.headers.len() > 20 {
                    errors.push("`config.headers` holds at most 20 headers".into());
                }
                for (k, v) in &c.headers {
                    let reserved = [
                        "host",
                        "content-length",
                        "content-type",
                        "transfer-encoding",
                    ];
                    if HeaderName::from_bytes(k.as_bytes()).is_err()
                        || reserved.contains(&k.to_ascii_lowercase().as_str())
                    {
                        errors.push(format!(
                            "`config.headers`: {k:?} is not an allowed header name"
                        ));
                    }
                    if HeaderValue::from_str(v).is_err() || v.len() > 1024 {
                        errors.push(format!("`config.headers.{k}` is not a valid header value"));
                    }
                }
            }
            ChannelConfig::Email(c) => {
                if c.host.is_empty() || c.host.len() > 253 || c.host.contains(['/', ' ', ':']) {
                    errors.push("`config.host` must be a host name or address".into());
                }
                if c.port == 0 {
                    errors.push("`config.port` must be 1..=65535".into());
                }
                if c.from.parse::<lettre::message::Mailbox>().is_err() {
                    errors.push(format!(
                        "`config.from` {:?} is not an e-mail address",
                        c.from
                    ));
                }
                if c.to.is_empty() || c.to.len() > 20 {
                    errors.push("`config.to` lists 1 to 20 addresses".into());
                }
                for t in &c.to {
                    if t.parse::<lettre::message::Mailbox>().is_err() {
                        errors.push(format!("`config.to`: {t:?} is not an e-mail address"));
                    }
                }
                if c.username.is_some() != c.password.is_some() {
                    errors.push("`config.username` and `config.password` go together".into());
                }
            }
        }
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(errors)
        }
    }
}

/// A notification channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub config: ChannelConfig,
    pub created_at: i64,
}

/// The stored (and API) form of a channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDoc {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub config: Value,
    pub created_at: i64,
}

impl Channel {
    pub fn to_doc(&self) -> ChannelDoc {
        ChannelDoc {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.config.kind().to_string(),
            config: self.config.config_json(),
            created_at: self.created_at,
        }
    }

    pub fn from_doc(d: ChannelDoc) -> Result<Channel, Vec<String>> {
        Ok(Channel {
            config: ChannelConfig::parse(&d.kind, d.config)?,
            id: d.id,
            name: d.name,
            created_at: d.created_at,
        })
    }

    /// The API view: passwords and tokens never leave the hub; for viewers, URLs (which are
    /// secrets for Slack) are cut to their origin and extra headers hidden.
    pub fn redacted(&self, admin: bool) -> Value {
        let mut doc = self.to_doc();
        if let Some(obj) = doc.config.as_object_mut() {
            for k in ["password", "token"] {
                if obj.get(k).is_some_and(|v| !v.is_null()) {
                    obj.insert(k.into(), json!("********"));
                }
            }
            if !admin {
                if let Some(u) = obj.get("url").and_then(Value::as_str)
                    && let Ok(p) = reqwest::Url::parse(u)
                {
                    obj.insert(
                        "url".into(),
                        json!(format!("{}/…", p.origin().ascii_serialization())),
                    );
                }
                if obj.contains_key("headers") {
                    obj.insert("headers".into(), json!({}));
                }
            }
        }
        json!(doc)
    }
}

/// What the rule says about itself in a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleBrief {
    pub id: String,
    pub name: String,
    pub duration_sec: u32,
    pub recovery_sec: u32,
    pub hysteresis: f64,
    pub repeat_sec: u32,
}

impl RuleBrief {
    pub fn of(r: &Rule) -> Self {
        RuleBrief {
            id: r.id.clone(),
            name: r.name.clone(),
            duration_sec: r.duration_sec,
            recovery_sec: r.recovery_sec,
            hysteresis: r.hysteresis,
            repeat_sec: r.repeat_sec,
        }
    }
}

/// One notification as queued in the outbox: everything needed to render it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Unique per notification (receivers can use it to drop duplicates).
    pub delivery_id: String,
    /// `firing`, `repeat`, `resolved` or `test`.
    pub kind: String,
    pub alert: AlertEvent,
    pub rule: RuleBrief,
    /// The device page.
    pub url: String,
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Printable ASCII only (for header values).
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

impl Notification {
    fn what(&self) -> String {
        let m = self.alert.metric.name();
        if self.alert.subject.is_empty() {
            m.to_string()
        } else {
            format!("{m} {}", self.alert.subject)
        }
    }

    fn verb(&self) -> &'static str {
        match self.kind.as_str() {
            "firing" => "FIRING",
            "repeat" => "STILL FIRING",
            "resolved" => "RESOLVED",
            _ => "TEST",
        }
    }

    fn value_text(&self) -> String {
        self.alert.metric.format(self.alert.value)
    }

    fn threshold_text(&self) -> String {
        if self.alert.metric == super::rule::Metric::Offline {
            format!("no data for {} s", self.alert.duration_sec)
        } else {
            format!(
                "{} {}",
                self.alert.op,
                self.alert.metric.format(self.alert.threshold)
            )
        }
    }

    /// One line for people (mail subject, ntfy title, Slack fallback).
    pub fn headline(&self) -> String {
        format!(
            "[{}] {} {}: {} on {} is {}",
            self.verb(),
            self.alert.severity.name(),
            self.rule.name,
            self.what(),
            self.alert.device_name,
            self.value_text()
        )
    }

    /// Plain text body (mail, ntfy).
    pub fn text(&self) -> String {
        format!(
            "{}\n\nDevice: {} ({})\nMetric: {}\nValue: {} (peak {})\nThreshold: {} for {} s\n\
             Severity: {}\nStarted: {}\n{}\nOpen the device: {}\n",
            self.headline(),
            self.alert.device_name,
            self.alert.device_id,
            self.what(),
            self.value_text(),
            self.alert.metric.format(self.alert.peak),
            self.threshold_text(),
            self.alert.duration_sec,
            self.alert.severity.name(),
            fmt_time(self.alert.started_at),
            match self.alert.ended_at {
                Some(e) => format!("Ended: {}\n", fmt_time(e)),
                None => String::new(),
            },
            self.url
        )
    }

    /// Slack incoming-webhook payload (seed 003: device, metric, value, threshold, duration
    /// and a link to the device page).
    pub fn slack(&self) -> Value {
        let icon = match self.kind.as_str() {
            "resolved" => ":white_check_mark:",
            "test" => ":test_tube:",
            _ => ":rotating_light:",
        };
        let text = format!(
            "{icon} *{}* [{}] {}: {} on {} is {} ({} for {} s) <{}|Open device>",
            self.verb(),
            self.alert.severity.name(),
            slack_escape(&self.rule.name),
            slack_escape(&self.what()),
            slack_escape(&self.alert.device_name),
            slack_escape(&self.value_text()),
            slack_escape(&self.threshold_text()),
            self.alert.duration_sec,
            self.url
        );
        let field = |k: &str, v: String| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(&v))});
        json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "section", "fields": [
                    field("Device", self.alert.device_name.clone()),
                    field("Metric", self.what()),
                    field("Value", self.value_text()),
                    field("Threshold", self.threshold_text()),
                    field("Duration", format!("{} s", self.alert.duration_sec)),
                    field("Severity", self.alert.severity.name().to_string()),
                ]},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": format!("<{}|Open {} in Vitals>", self.url, slack_escape(&self.alert.device_name))}
                ]}
            ]
        })
    }

    /// Generic webhook payload: the whole alert as data.
    pub fn webhook(&self, sent_at: i64) -> Value {
        json!({
            "version": 1,
            "deliveryId": self.delivery_id,
            "kind": self.kind,
            "alert": self.alert,
            "rule": self.rule,
            "url": self.url,
            "valueText": self.value_text(),
            "thresholdText": self.threshold_text(),
            "summary": self.headline(),
            "sentAt": sent_at,
        })
    }
}

fn fmt_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub status: Option<u16>,
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

fn body_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn status_result(status: u16, what: &str) -> Result<Delivered, OutboundError> {
    match status {
        200..=299 => Ok(Delivered {
            status: Some(status),
        }),
        400..=499 if status != 408 && status != 429 => Err(OutboundError::Refused(format!(
            "{what} refused the notification with HTTP {status}; check the channel's settings"
        ))),
        _ => Err(OutboundError::Failed(format!(
            "{what} answered HTTP {status}"
        ))),
    }
}

/// Sends `n` through `channel`.
pub async fn deliver(
    channel: &ChannelConfig,
    n: &Notification,
    allow_private: bool,
    now: i64,
) -> Result<Delivered, OutboundError> {
    match channel {
        ChannelConfig::Slack(c) => {
            let r =
                outbound::post(&c.url, json_headers(), body_of(&n.slack()), allow_private).await?;
            status_result(r.status, "Slack")
        }
        ChannelConfig::Webhook(c) => {
            let mut h = json_headers();
            for (k, v) in &c.headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    h.insert(k, v);
                }
            }
            for (k, v) in [
                ("x-vitals-event", n.kind.as_str()),
                ("x-vitals-delivery", n.delivery_id.as_str()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&header_safe(v)) {
                    h.insert(HeaderName::from_static(k), v);
                }
            }
            let r = outbound::post(&c.url, h, body_of(&n.webhook(now)), allow_private).await?;
            status_result(r.status, "the webhook")
        }
        ChannelConfig::Ntfy(c) => {
            let mut h = HeaderMap::new();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            let priority = match (n.kind.as_str(), n.alert.severity) {
                ("resolved", _) | (_, super::rule::Severity::Info) => "3",
                (_, super::rule::Severity::Warning) => "4",
                (_, super::rule::Severity::Critical) => "5",
            };
            let tags = if n.kind == "resolved" {
                "white_check_mark"
            } else {
                "rotating_light"
            };
            for (k, v) in [
                ("title", header_safe(&n.headline())),
                ("priority", priority.to_string()),
                ("tags", tags.to_string()),
                ("click", header_safe(&n.url)),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(HeaderName::from_static(k), v);
                }
            }
            if let Some(t) = &c.token
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", header_safe(t)))
            {
                h.insert(reqwest::header::AUTHORIZATION, v);
            }
            let r = outbound::post(&c.url, h, n.text().into_bytes(), allow_private).await?;
            status_result(r.status, "ntfy")
        }
        ChannelConfig::Email(c) => send_mail(c, n, allow_private).await,
    }
}

async fn send_mail(
    c: &EmailConfig,
    n: &Notification,
    allow_private: bool,
) -> Result<Delivered, OutboundError> {
    use lettre::message::Mailbox;
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let refused = |m: String| OutboundError::Refused(m);
    let addrs = outbound::resolve(&c.host, c.port).await?;
    outbound::guard(&c.host, &addrs, allow_private)?;
    let from: Mailbox = c.from.parse().map_err(|e| refused(format!("from: {e}")))?;
    let mut b = Message::builder()
        .from(from)
        .subject(n.headline().replace(['\r', '\n'], " "));
    for t in &c.to {
        b = b.to(t.parse().map_err(|e| refused(format!("to {t}: {e}")))?);
    }
    let msg = b
        .header(ContentType::TEXT_PLAIN)
        .body(n.text())
        .map_err(|e| refused(format!("cannot build the message: {e}")))?;
    let tls_params =
        || TlsParameters::new(c.host.clone()).map_err(|e| refused(format!("TLS set-up: {e}")));
    let tls = match c.security {
        Security::None => Tls::None,
        Security::Starttls => Tls::Required(tls_params()?),
        Security::Tls => Tls::Wrapper(tls_params()?),
    };
    // Connect to the checked address; TLS still verifies the configured host name.
    let ip = addrs[0].ip().to_string();
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip)
        .port(c.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(15)));
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        t = t.credentials(Credentials::new(u.clone(), p.clone()));
    }
    let res = t.build().send(msg).await.map_err(|e| {
        if e.is_permanent() {
            OutboundError::Refused(format!("the SMTP server refused the mail: {e}"))
        } else {
            OutboundError::Failed(format!("SMTP delivery failed: {e}"))
        }
    })?;
    Ok(Delivered {
        status: res.code().to_string().parse().ok(),
    })
}
