//! The group-commit writer. Every accepted batch, from any agent or transport, goes through one
//! task that takes whatever batches are waiting, commits them in ONE durable transaction, and
//! only then answers each submitter (who then acks its agent) and publishes the change events.
//! While a commit is in flight, new batches queue and join the next one: the busier the hub,
//! the more batches share an fsync.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vitals_store::{SampleBatch, Store};

use crate::state::{LiveEvent, LiveSample};
use crate::telemetry;

/// Most batches in one group commit.
const MAX_GROUP: usize = 1024;
/// Most samples in one group commit: a replaying fleet (1,000 agents sending 300 samples
/// each) must not hold the write lock for seconds.
const MAX_GROUP_SAMPLES: usize = 20_000;
/// Batches waiting for the writer before submitters wait (back-pressure).
const QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the hub is shutting down")]
    ShuttingDown,
}

struct WriteRequest {
    device_id: String,
    batch: SampleBatch,
    /// The batch's samples as live views get them, published after the commit.
    live: Vec<LiveSample>,
    reply: oneshot::Sender<Result<u64, WriteError>>,
}

/// Handle to submit batches to the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<WriteRequest>,
}

impl Writer {
    /// Starts the writer task. It stops after `shutdown` once the queue is drained; the
    /// returned handle completes then.
    /// `window` is how long the writer waits for more batches to join a commit once one has
    /// arrived: a few milliseconds of ack latency buy far fewer fsyncs under load.
    pub fn spawn(
        store: Arc<dyn Store>,
        events: broadcast::Sender<LiveEvent>,
        shutdown: CancellationToken,
        window: std::time::Duration,
    ) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(run(store, events, rx, shutdown, window));
        (Writer { tx }, handle)
    }

    /// Commits `batch` durably; returns how many samples were new. `live` (the same samples)
    /// goes to live views once they are committed.
    pub async fn submit(
        &self,
        device_id: &str,
        batch: SampleBatch,
        live: Vec<LiveSample>,
    ) -> Result<u64, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteRequest {
                device_id: device_id.to_string(),
                batch,
                live,
                reply,
            })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        rx.await.map_err(|_| WriteError::ShuttingDown)?
    }
}

async fn run(
    store: Arc<dyn Store>,
    events: broadcast::Sender<LiveEvent>,
    mut rx: mpsc::Receiver<WriteRequest>,
    shutdown: CancellationToken,
    window: std::time::Duration,
) {
    let mut group: Vec<WriteRequest> = Vec::with_capacity(MAX_GROUP);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.cancelled() => {
                // Finish everything already queued, then stop.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut samples = first.batch.samples.len();
        group.push(first);
        let deadline = tokio::time::Instant::now() + window;
        loop {
            // Take what waits, without sleeping.
            while group.len() < MAX_GROUP && samples < MAX_GROUP_SAMPLES {
                let Ok(next) = rx.try_recv() else { break };
                samples += next.batch.samples.len();
                group.push(next);
            }
            let full = group.len() >= MAX_GROUP || samples >= MAX_GROUP_SAMPLES;
            if full
                || window.is_zero()
                || shutdown.is_cancelled()
                || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            // Sleep out the window once, then take what arrived meanwhile: the writer wakes
            // once per commit, not once per agent's batch (each wake-up of a task costs a
            // thread hand-off on an idle hub).
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        commit(&*store, &events, &mut group).await;
    }
    tracing::debug!("writer stopped");
}

async fn commit(
    store: &dyn Store,
    events: &broadcast::Sender<LiveEvent>,
    group: &mut Vec<WriteRequest>,
) {
    let batches: Vec<SampleBatch> = group
        .iter_mut()
        .map(|r| SampleBatch {
            device_seq: r.batch.device_seq,
            samples: std::mem::take(&mut r.batch.samples),
            now: r.batch.now,
        })
        .collect();
    let started = Instant::now();
    let result = store.insert_batches(&batches).await;
    metrics::histogram!(telemetry::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::histogram!(telemetry::COMMIT_BATCHES).record(group.len() as f64);
    match result {
        Ok(stored) => {
            let total: u64 = stored.iter().sum();
            metrics::counter!(telemetry::INGESTED_SAMPLES).increment(total);
            for (mut req, n) in group.drain(..).zip(stored) {
                if events.receiver_count() > 0 && n > 0 {
                    let _ = events.send(LiveEvent::Samples {
                        device_id: req.device_id.clone(),
                        samples: Arc::new(std::mem::take(&mut req.live)),
                    });
                }
                let _ = req.reply.send(Ok(n));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batches = group.len(), "group commit failed; nothing acknowledged");
            for req in group.drain(..) {
                let _ = req.reply.send(Err(WriteError::Unavailable));
            }
        }
    }
}
