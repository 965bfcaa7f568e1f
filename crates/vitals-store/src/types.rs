//! Plain records the [`crate::Store`] trait reads and writes.

use serde::Serialize;

/// A user's role. Admins may do everything; viewers only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub role: Role,
    /// An argon2id PHC string.
    pub password_hash: String,
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub token_hash: Vec<u8>,
    pub user_id: String,
    pub csrf: String,
    pub now: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub user_id: String,
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewApiToken {
    pub name: String,
    pub role: Role,
    pub token_hash: Vec<u8>,
    pub created_by: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub created_by: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewDeviceCode {
    /// Normalised (no dash, upper case).
    pub code: String,
    pub host_id: String,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
    pub source_ip: Option<String>,
    pub now: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCode {
    pub code: String,
    pub host_id: String,
    pub hostname: Option<String>,
    pub agent_version: Option<String>,
    pub source_ip: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub device_id: Option<String>,
    pub approved_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApproveOutcome {
    Approved(Device),
    NotFound,
    Expired,
    AlreadyApproved,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The token was stored for this device; hand it out now.
    Claimed {
        device_id: String,
    },
    Pending,
    Expired,
    NotFound,
}

#[derive(Debug, Clone)]
pub struct NewDevice {
    pub name: String,
    pub host_id: String,
    pub token_hash: Option<Vec<u8>>,
    pub simulated: bool,
    pub agent_version: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Public UUID.
    pub id: String,
    /// Compact internal key used by sample tables.
    #[serde(skip)]
    pub seq: i64,
    pub name: String,
    pub host_id: String,
    pub simulated: bool,
    pub agent_version: Option<String>,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    #[serde(skip)]
    pub has_token: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceWithLatest {
    pub device: Device,
    /// The newest stored sample (a frame of one row), if any.
    pub latest: Option<crate::Frame>,
}

/// Samples of one device to store together.
#[derive(Debug, Clone)]
pub struct SampleBatch {
    pub device_seq: i64,
    /// The validated samples, flattened.
    pub samples: Vec<crate::Row>,
    /// Becomes the device's `last_seen`.
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    pub kind: String,
    pub data: String,
    pub updated_at: i64,
}

/// One record of the live core's app store (a bucket such as `metrics` or `alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct AppRecord {
    pub bucket: String,
    pub id: String,
    /// Insertion order, assigned by the hub; unique across buckets.
    pub seq: i64,
    /// JSON object of the record's fields, without `id` and `_version`.
    pub data: String,
    /// The record's `_version`, 1 on insert.
    pub version: i64,
    /// Hub time of the insert (retention).
    pub created_at: i64,
}

/// One write of an app-store transaction ([`crate::Store::app_write`]).
#[derive(Debug, Clone, PartialEq)]
pub enum AppWrite {
    /// Fails the transaction with a conflict if `(bucket, id)` exists.
    Insert(AppRecord),
    /// Replaces `data` and sets `version`, only if the stored version is `expected_version`.
    Update {
        bucket: String,
        id: String,
        data: String,
        version: i64,
        expected_version: i64,
    },
    /// Fails the transaction with a conflict if the record does not exist.
    Delete { bucket: String, id: String },
    /// Deletes every record of the bucket.
    Clear { bucket: String },
}

/// A stored alerting document (a rule, a notification channel or a maintenance window).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDoc {
    pub id: String,
    /// The validated JSON document.
    pub data: String,
    pub updated_at: i64,
}

/// One alert (fired .. resolved) as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEventRow {
    pub id: String,
    /// Still firing.
    pub active: bool,
    pub started_at: i64,
    /// The event's JSON view.
    pub data: String,
}

/// A notification to enqueue ([`AlertWrite::outbox`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub event_id: String,
    pub channel_id: String,
    /// What to send (rendered context), JSON.
    pub data: String,
    pub next_at: i64,
    pub created_at: i64,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub event_id: String,
    pub channel_id: String,
    pub data: String,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_at: i64,
}

/// Everything one alert-engine step changes, applied in ONE transaction
/// ([`crate::Store::alert_apply`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertWrite {
    /// `(key, Some(state JSON))` upserts, `(key, None)` deletes.
    pub states: Vec<(String, Option<String>)>,
    /// Inserted or replaced events.
    pub events: Vec<AlertEventRow>,
    pub outbox: Vec<NewNotification>,
}

/// One delivery attempt, for the delivery log. Recording it also settles the outbox item:
/// `retry_at: Some(t)` schedules another attempt, `None` marks it done.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub at: i64,
    pub outbox_id: Option<i64>,
    pub event_id: Option<String>,
    pub channel_id: String,
    /// `firing`, `repeat`, `resolved` or `test`.
    pub kind: String,
    pub attempt: i64,
    pub ok: bool,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub retry_at: Option<i64>,
}

/// What each storage level of one device holds, for the query planner
/// ([`crate::tiers::plan`]). `hi` values are the rollup marks (exclusive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierBounds {
    /// Oldest raw sample.
    pub raw_lo: Option<i64>,
    /// Raw samples below this may have been dropped by retention (`None`: none ever were,
    /// so raw is complete).
    pub raw_floor: Option<i64>,
    /// Oldest minute bucket and the minute mark.
    pub minute: Option<(i64, i64)>,
    /// Oldest hour bucket and the hour mark.
    pub hour: Option<(i64, i64)>,
}

/// One step of the rollup job for one device and tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollStep {
    /// Buckets written.
    pub buckets: u64,
    /// True when the tier's mark reached the target.
    pub done: bool,
}

/// One step of compaction for one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStep {
    /// Hot samples moved into a block.
    pub samples: u64,
    /// True when nothing is left to compact below the limit.
    pub done: bool,
}
