//! Messages on the agent connection (`GET /agent` WebSocket, and `POST /api/report`).
//!
//! Agent -> hub: `{type:"metrics", seq, samples}` (seed 000), `{type:"state", ...}` (seed 002's
//! shapes), `{type:"dropped", seq, count}` (spool overflow report). Hub -> agent:
//! `{type:"ack", seq}` once the batch is durably committed, or `{type:"error", seq, code, message}`.

use serde::{Deserialize, Serialize};

use crate::sample::MetricSample;
use crate::state::DeviceState;

/// A message from an agent to the hub.
// `State` is larger than the others, but messages are short-lived: boxing would only cost.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// A batch of samples. `seq` is chosen by the agent and echoed in the ack.
    Metrics {
        seq: u64,
        samples: Vec<MetricSample>,
    },
    /// Slow-changing state: system info, top processes, network interfaces.
    State {
        #[serde(default)]
        seq: Option<u64>,
        #[serde(flatten)]
        state: DeviceState,
    },
    /// The agent's spool overflowed and dropped `count` samples (oldest first).
    #[serde(rename_all = "camelCase")]
    Dropped {
        seq: u64,
        count: u64,
        #[serde(default)]
        oldest_ts: Option<i64>,
        #[serde(default)]
        newest_ts: Option<i64>,
    },
}

impl AgentMessage {
    /// Parses a message. Equivalent to `serde_json::from_str`, but a `metrics` batch is read
    /// straight into its samples: serde's internally tagged enums first buffer the whole
    /// message as generic values (an allocation per number), which for a 1,000-sample batch
    /// costs more than the rest of ingest.
    pub fn from_json(text: &str) -> Result<AgentMessage, serde_json::Error> {
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Metrics {
            // Named so that a second `type` key is an error, as in the derived parser.
            #[serde(rename = "type")]
            _kind: String,
            seq: u64,
            samples: Vec<MetricSample>,
        }
        // Agents write `type` first: then the message need not be scanned twice.
        let starts_as_metrics = text
            .trim_start()
            .strip_prefix('{')
            .map(str::trim_start)
            .and_then(|t| t.strip_prefix("\"type\""))
            .map(str::trim_start)
            .and_then(|t| t.strip_prefix(':'))
            .map(str::trim_start)
            .is_some_and(|t| t.starts_with("\"metrics\""));
        if starts_as_metrics
            || serde_json::from_str::<Kind<'_>>(text)?.kind.as_deref() == Some("metrics")
        {
            let m: Metrics = serde_json::from_str(text)?;
            return Ok(AgentMessage::Metrics {
                seq: m.seq,
                samples: m.samples,
            });
        }
        serde_json::from_str(text)
    }
}

/// A message from the hub to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum HubMessage {
    /// The batch `seq` is committed; `stored` counts samples that were new (replays store 0).
    Ack {
        seq: u64,
        #[serde(default)]
        stored: u64,
    },
    /// The message `seq` was rejected; nothing of it was stored.
    #[serde(rename_all = "camelCase")]
    Error {
        #[serde(default)]
        seq: Option<u64>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Why the hub rejected something an agent sent. Serialised in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not the expected shape.
    Malformed,
    /// `v` is a protocol version this hub does not speak.
    UnsupportedVersion,
    /// A number outside its range (negative, percent above 100, not finite).
    OutOfRange,
    /// A `used` value larger than its `total`.
    UsedExceedsTotal,
    /// `ts` more than 5 minutes ahead of the hub's clock.
    TsInFuture,
    /// `ts` older than the raw retention.
    TsTooOld,
    /// More than 1024 cores in one sample.
    TooManyCores,
    /// More than 256 disks in one sample.
    TooManyDisks,
    /// More than 256 interfaces in one sample.
    TooManyInterfaces,
    /// More than 256 sensors, GPUs or containers in one sample.
    TooManyItems,
    /// More than 1000 samples in one batch.
    TooManySamples,
    /// A batch without samples.
    EmptyBatch,
    /// A name longer than allowed.
    NameTooLong,
    /// A name with a control character (a newline, a tab, NUL, ...) in it.
    InvalidName,
    /// The sample's `hostId` is not the paired device's host id.
    HostMismatch,
    /// More than 1 MiB in one message.
    MessageTooLarge,
    /// The device sends batches faster than allowed.
    RateLimited,
    /// The token is unknown or revoked.
    Unauthorized,
    /// The store is unavailable; retry later.
    Unavailable,
    /// Something went wrong in the hub; the cause is in its log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire and in `/metrics` labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::UsedExceedsTotal => "used_exceeds_total",
            ErrorCode::TsInFuture => "ts_in_future",
            ErrorCode::TsTooOld => "ts_too_old",
            ErrorCode::TooManyCores => "too_many_cores",
            ErrorCode::TooManyDisks => "too_many_disks",
            ErrorCode::TooManyInterfaces => "too_many_interfaces",
            ErrorCode::TooManyItems => "too_many_items",
            ErrorCode::TooManySamples => "too_many_samples",
            ErrorCode::EmptyBatch => "empty_batch",
            ErrorCode::NameTooLong => "name_too_long",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::HostMismatch => "host_mismatch",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads just the `seq` of a message that failed to parse, so the error can name it.
pub fn peek_seq(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Peek {
        seq: Option<u64>,
    }
    serde_json::from_str::<Peek>(text).ok().and_then(|p| p.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_and_error_shapes() {
        let ack = serde_json::to_value(HubMessage::Ack { seq: 7, stored: 3 }).expect("json");
        assert_eq!(ack, serde_json::json!({"type":"ack","seq":7,"stored":3}));
        let err = serde_json::to_value(HubMessage::Error {
            seq: Some(2),
            code: ErrorCode::TsInFuture,
            message: "x".into(),
            retry_after_ms: None,
        })
        .expect("json");
        assert_eq!(
            err,
            serde_json::json!({"type":"error","seq":2,"code":"ts_in_future","message":"x"})
        );
    }

    #[test]
    fn from_json_agrees_with_the_derived_parser() {
        for text in [
            r#"{"type":"metrics","seq":3,"samples":[{"v":1,"ts":5,"hostId":"h","cpu":{"total":1},
                "mem":{"used":1,"total":2},"net":{"txBps":0,"rxBps":0},"uptimeSec":1,"procCount":1}]}"#,
            r#"{"seq":4,"type":"dropped","count":7}"#,
            r#" { "type" : "metrics", "seq":3,"samples":[]}"#,
            r#"{"seq":3,"samples":[],"type":"metrics"}"#,
            r#"{"type":"state","seq":1}"#,
        ] {
            let fast = AgentMessage::from_json(text).expect("fast");
            let slow: AgentMessage = serde_json::from_str(text).expect("derived");
            assert_eq!(fast, slow);
        }
        for bad in [
            r#"{"type":"metrics","seq":3}"#,
            r#"{"type":"metrics","seq":3,"samples":[],"type":"state"}"#,
            r#"{"type":"nope","seq":3}"#,
            r#"{"seq":3}"#,
            "[1,2]",
            "",
        ] {
            assert!(AgentMessage::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peek_seq_reads_broken_batches() {
        assert_eq!(
            peek_seq(r#"{"type":"metrics","seq":42,"samples":"nope"}"#),
            Some(42)
        );
        assert_eq!(peek_seq("not json"), None);
    }
}
