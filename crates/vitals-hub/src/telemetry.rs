//! The hub's own metrics, defined in one place so that `/metrics` and the logs never disagree
//! (vector's habit: one event = one log line + one counter). Rendered in Prometheus text format
//! at `/metrics` through the `metrics` crate.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const INGESTED_SAMPLES: &str = "vitals_ingested_samples_total";
pub const REJECTED_BATCHES: &str = "vitals_rejected_batches_total";
pub const CONNECTED_AGENTS: &str = "vitals_connected_agents";
pub const CONNECTED_VIEWERS: &str = "vitals_connected_viewers";
pub const COMMIT_SECONDS: &str = "vitals_commit_seconds";
pub const COMMIT_BATCHES: &str = "vitals_commit_batches";
pub const DATABASE_BYTES: &str = "vitals_database_bytes";
pub const SPOOL_DROPPED: &str = "vitals_agent_spool_dropped_samples_total";
pub const LIVE_PUSHES: &str = "vitals_live_pushes_total";
pub const LIVE_DISCONNECTS: &str = "vitals_live_disconnects_total";
pub const ALERTS_FIRED: &str = "vitals_alerts_fired_total";
pub const ALERT_ENGINE_NANOS: &str = "vitals_alert_engine_nanoseconds_total";
pub const ALERT_EVALUATIONS: &str = "vitals_alert_evaluations_total";
pub const NOTIFICATIONS: &str = "vitals_notifications_total";
pub const NOTIFY_SECONDS: &str = "vitals_notification_seconds";
pub const ROLLUP_BUCKETS: &str = "vitals_rollup_buckets_total";
pub const ROLLUP_LATE: &str = "vitals_rollup_late_samples_total";
pub const RETENTION_DELETED: &str = "vitals_retention_deleted_total";
pub const COMPACTED: &str = "vitals_compacted_samples_total";
pub const REPLICA_EVENTS: &str = "vitals_replica_events_total";
pub const REPLICA_CONNECTED: &str = "vitals_replica_nats_connected";
pub const REPLICA_LAG: &str = "vitals_replica_event_lag_seconds";
pub const LEASES_HELD: &str = "vitals_leases_held";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (None if another recorder
/// was installed first, e.g. by an embedding application).
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(COMMIT_SECONDS.to_string()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(COMMIT_BATCHES.to_string()),
                        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(REPLICA_LAG.to_string()),
                        &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0],
                    )
                });
            let builder = match builder {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets not set");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(INGESTED_SAMPLES, "Samples stored (replays excluded)");
    describe_counter!(ROLLUP_BUCKETS, "Rollup buckets written, by tier");
    describe_counter!(
        ROLLUP_LATE,
        "Late samples merged into rollups after their minute was rolled up"
    );
    describe_counter!(RETENTION_DELETED, "Rows dropped by retention, by tier");
    describe_counter!(COMPACTED, "Raw samples moved into compressed column blocks");
    describe_counter!(
        REPLICA_EVENTS,
        "Live events exchanged with other replicas over NATS, by direction"
    );
    describe_gauge!(
        REPLICA_CONNECTED,
        "1 while NATS is connected (replicas only)"
    );
    describe_histogram!(
        REPLICA_LAG,
        Unit::Seconds,
        "Time from another replica publishing a live event to this one applying it"
    );
    describe_gauge!(
        LEASES_HELD,
        "Singleton jobs this replica runs now, by lease"
    );
    describe_counter!(REJECTED_BATCHES, "Agent batches rejected, by reason");
    describe_gauge!(CONNECTED_AGENTS, "Agents connected over WebSocket");
    describe_gauge!(CONNECTED_VIEWERS, "Viewers connected over WebSocket");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Group-commit latency");
    describe_histogram!(COMMIT_BATCHES, "Batches per group commit");
    describe_gauge!(DATABASE_BYTES, Unit::Bytes, "Size of the database");
    describe_counter!(LIVE_PUSHES, "Live messages handed to viewer connections");
    describe_counter!(
        LIVE_DISCONNECTS,
        "Viewer connections closed by the hub, by reason (slow, revoked, auth_timeout, too_big)"
    );
    describe_counter!(ALERTS_FIRED, "Alerts that started firing (notified)");
    describe_counter!(
        ALERT_ENGINE_NANOS,
        "Time the alert engine spent evaluating samples, in nanoseconds"
    );
    describe_counter!(
        ALERT_EVALUATIONS,
        "(sample, rule) evaluations made by the alert engine"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notification delivery attempts, by outcome (sent, retry, failed)"
    );
    describe_histogram!(
        NOTIFY_SECONDS,
        Unit::Seconds,
        "Time to deliver one notification"
    );
    describe_counter!(
        SPOOL_DROPPED,
        "Samples agents report dropped from their spool"
    );
}

/// Counts and logs a rejected batch.
pub fn rejected(device: &str, code: vitals_proto::ErrorCode, message: &str) {
    metrics::counter!(REJECTED_BATCHES, "reason" => code.as_str()).increment(1);
    tracing::warn!(device, reason = code.as_str(), "batch rejected: {message}");
}
