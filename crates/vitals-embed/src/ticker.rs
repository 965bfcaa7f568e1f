//! The per-interval heartbeat: records a history point, hands a batch to the forwarder and,
//! when anyone watches, serialises ONE snapshot that every viewer then sends as is.
//!
//! Frames travel through a `watch` channel, which holds only the latest frame: a viewer whose
//! socket is slower than the interval skips frames instead of queueing them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use crate::forward::{ForwardQueue, points};
use crate::snapshot::unix_ms;
use crate::state::Shared;

/// The latest serialised snapshot, `None` until a viewer first needs one.
pub(crate) type Frames = watch::Sender<Option<Utf8Bytes>>;

/// Serialises a fresh snapshot.
pub(crate) fn frame(shared: &Shared) -> Option<Utf8Bytes> {
    match serde_json::to_string(&shared.snapshot(SystemTime::now())) {
        Ok(s) => Some(Utf8Bytes::from(s)),
        Err(e) => {
            warn!("cannot serialise dashboard snapshot: {e}");
            None
        }
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    interval: Duration,
    frames: Arc<Frames>,
    forward: Option<Arc<ForwardQueue>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        let now = SystemTime::now();
        let numbers = shared.numbers();
        let ms = unix_ms(now);
        shared.record_history(ms as f64 / 1000.0, numbers);
        if let Some(q) = &forward {
            q.push(points(&numbers, ms));
        }
        if frames.receiver_count() > 0
            && let Some(f) = frame(&shared)
        {
            frames.send_replace(Some(f));
        }
    }
}
