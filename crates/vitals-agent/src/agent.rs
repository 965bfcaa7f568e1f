//! The agent's run loop: sample every interval, deliver every sample exactly once and in
//! order, survive hub outages and restarts.
//!
//! # Delivery invariants
//! - Every sample is either in flight (sent, kept in memory until acknowledged), in the spool,
//!   or acknowledged. Nothing is dropped except by the spool's bounds, and those drops are
//!   counted and reported (`{"type":"dropped"}`).
//! - Order: samples in flight are always older than samples in the spool. A sample goes out
//!   live only when the spool is empty and no spooled batch is in flight; otherwise it is
//!   appended to the spool. So after an outage the spool is replayed in order first, then live
//!   sending resumes.
//! - When a connection breaks (or the hub answers `rate_limited`/`unavailable`/`internal`),
//!   live batches in flight are put back in front of the spool ([`Spool::prepend`]) and spooled
//!   batches in flight are re-read ([`Spool::rewind`]). The hub stores a (device, ts) once, so
//!   a batch resent after a lost ack is never stored twice.
//! - A batch the hub rejects for a validation reason is logged and dropped: resending it could
//!   only fail again.
//! - A `kill -9` loses at most the live batches in flight (normally the current second) and
//!   never corrupts the spool (see [`crate::spool`]); restarts neither duplicate nor loop.
//!
//! The collector runs on this task between network events; the network itself runs in the
//! [`Link`] task, so a slow or dead hub never delays sampling.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use vitals_proto::state::DeviceState;
use vitals_proto::{AgentMessage, ErrorCode, HubMessage, MetricSample};

use crate::collect::Collector;
use crate::spool::{Record, Spool, SpoolBatch, SpoolError, SpoolOptions};
use crate::transport::{Closed, Event, Link, LinkConfig};

/// Most batches in flight at once.
pub const WINDOW: usize = 8;
/// Most samples in one replayed batch (the hub's limit).
pub const MAX_BATCH: usize = vitals_proto::limits::MAX_SAMPLES_PER_BATCH;
/// JSON bytes of samples in one replayed batch, leaving room for the envelope under 1 MiB.
pub const MAX_BATCH_BYTES: usize = 900 * 1024;

/// Where samples and state come from: the [`Collector`], or a scripted source in tests.
pub trait Source {
    /// The next sample, or `None` to skip this tick.
    fn sample(&mut self, now_ms: i64) -> Option<MetricSample>;
    /// Full state (system info, processes, interfaces), or `None` to send none.
    fn state(&mut self) -> Option<DeviceState>;
    /// Cheap state for change detection (no processes).
    fn quick_state(&mut self) -> Option<DeviceState>;
}

impl Source for Collector {
    fn sample(&mut self, now_ms: i64) -> Option<MetricSample> {
        Some(Collector::sample(self, now_ms))
    }
    fn state(&mut self) -> Option<DeviceState> {
        Some(Collector::state(self))
    }
    fn quick_state(&mut self) -> Option<DeviceState> {
        Some(self.state_without_processes())
    }
}

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub link: LinkConfig,
    pub spool_dir: PathBuf,
    pub spool: SpoolOptions,
    pub interval: Duration,
    /// Full state at least this often (30 s), and on change (checked every 5 s).
    pub state_every: Duration,
    /// Cap of the reconnect backoff.
    pub max_backoff: Duration,
}

impl RunOptions {
    pub fn new(link: LinkConfig, spool_dir: PathBuf) -> RunOptions {
        RunOptions {
            interval: link.interval,
            link,
            spool_dir,
            spool: SpoolOptions::default(),
            state_every: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Why `run` returned without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The shutdown future completed.
    Stopped,
}

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "the hub rejected this agent's token (revoked or unknown): sending stopped. \
         Pair again with `vitals-agent pair --hub URL`, then restart the agent"
    )]
    Unauthorized,
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

enum Sent {
    Live(Vec<Record>),
    Spooled(SpoolBatch),
}

struct Inflight {
    seq: u64,
    sent: Sent,
    acked: bool,
    at: Instant,
}

struct Loop {
    opts: RunOptions,
    spool: Spool,
    link: Option<Link>,
    connected: bool,
    inflight: VecDeque<Inflight>,
    next_seq: u64,
    dropped_inflight: Option<(u64, u64)>,
    paused_until: Option<Instant>,
    retry_at: Instant,
    backoff: Duration,
    last_state: Option<DeviceState>,
    last_state_at: Option<Instant>,
}

/// Runs until `shutdown` completes (then everything unacknowledged is spooled) or the token is
/// rejected.
pub async fn run<S: Source>(
    mut source: S,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, RunError> {
    let spool = Spool::open(&opts.spool_dir, opts.spool)?;
    if !spool.is_empty() {
        tracing::info!(
            samples = spool.pending(),
            "spool holds samples from before: replaying them first"
        );
    }
    let mut l = Loop {
        spool,
        link: None,
        connected: false,
        inflight: VecDeque::new(),
        next_seq: 1,
        dropped_inflight: None,
        paused_until: None,
        retry_at: Instant::now(),
        backoff: Duration::from_secs(1),
        last_state: None,
        last_state_at: None,
        opts,
    };
    let mut sample_tick = tokio::time::interval(l.opts.interval);
    // A tick delayed by a stall (or a suspended machine) is taken once, not replayed in a
    // burst of identical readings.
    sample_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Changes of system info and interfaces are looked for every 10 s (a check reads a dozen
    // files and asks the kernel for addresses: not worth doing every second).
    let mut state_tick = tokio::time::interval(Duration::from_secs(10).min(l.opts.state_every));
    state_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);

    let result = loop {
        let linked = l.link.is_some();
        let paused_until = l.paused_until;
        tokio::select! {
            _ = &mut shutdown => break Ok(Outcome::Stopped),
            _ = sample_tick.tick() => {
                if let Some(s) = source.sample(crate::collect::now_ms())
                    && let Err(e) = l.on_sample(&s)
                {
                    break Err(e);
                }
            }
            _ = state_tick.tick() => {
                if let Err(e) = l.on_state_tick(&mut source) {
                    break Err(e);
                }
            }
            ev = recv(&mut l.link) => {
                match l.on_event(ev, &mut source) {
                    Ok(()) => {}
                    Err(e) => break Err(e),
                }
            }
            _ = tokio::time::sleep_until(l.retry_at), if !linked => {
                l.link = Some(Link::start(l.opts.link.clone()));
            }
            _ = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused_until.is_some() => {
                l.paused_until = None;
                if let Err(e) = l.pump() {
                    break Err(e);
                }
            }
        }
    };
    // Whatever happens, nothing unacknowledged is left only in memory.
    l.link = None;
    l.requeue()?;
    result
}

async fn recv(link: &mut Option<Link>) -> Event {
    match link {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

fn batch_text(seq: u64, records: &[Record]) -> String {
    let mut s = String::with_capacity(records.iter().map(|r| r.json.len() + 1).sum::<usize>() + 48);
    s.push_str(r#"{"type":"metrics","seq":"#);
    s.push_str(&seq.to_string());
    s.push_str(r#","samples":["#);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&r.json);
    }
    s.push_str("]}");
    s
}

fn without_uptime(mut s: DeviceState) -> DeviceState {
    if let Some(i) = s.system_info.as_mut() {
        i.uptime = 0.0;
    }
    s
}

impl Loop {
    fn now_ms() -> i64 {
        crate::collect::now_ms()
    }

    fn live_ok(&self) -> bool {
        self.connected
            && self.paused_until.is_none()
            && self.spool.is_empty()
            && self.inflight.len() < WINDOW
            && self
                .inflight
                .iter()
                .all(|i| matches!(i.sent, Sent::Live(_)))
    }

    fn on_sample(&mut self, s: &MetricSample) -> Result<(), RunError> {
        let rec = match Record::from_sample(s) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("sample not serialisable, skipped: {e}");
                return Ok(());
            }
        };
        self.check_ack_timeout()?;
        if self.live_ok() && self.send_live(vec![rec.clone()]) {
            return Ok(());
        }
        self.spool.append(&[rec], Self::now_ms())?;
        self.pump()
    }

    fn send_live(&mut self, records: Vec<Record>) -> bool {
        let seq = self.next_seq;
        let Some(link) = &self.link else { return false };
        if !link.send(batch_text(seq, &records)) {
            return false;
        }
        self.next_seq += 1;
        self.inflight.push_back(Inflight {
            seq,
            sent: Sent::Live(records),
            acked: false,
            at: Instant::now(),
        });
        true
    }

    /// Sends the drop report and replays the spool while there is room in the window.
    fn pump(&mut self) -> Result<(), RunError> {
        if !self.connected || self.paused_until.is_some() {
            return Ok(());
        }
        let Some(link) = &self.link else {
            return Ok(());
        };
        let d = self.spool.dropped();
        if d.count > 0 && self.dropped_inflight.is_none() {
            let seq = self.next_seq;
            let msg = AgentMessage::Dropped {
                seq,
                count: d.count,
                oldest_ts: d.oldest_ts,
                newest_ts: d.newest_ts,
            };
            if let Ok(text) = serde_json::to_string(&msg)
                && link.send(text)
            {
                self.next_seq += 1;
                self.dropped_inflight = Some((seq, d.count));
            }
        }
        if self
            .inflight
            .iter()
            .any(|i| matches!(i.sent, Sent::Live(_)))
        {
            return Ok(());
        }
        while self.inflight.len() < WINDOW {
            let Some(b) = self.spool.read_batch(MAX_BATCH, MAX_BATCH_BYTES)? else {
                break;
            };
            let seq = self.next_seq;
            if !link.send(batch_text(seq, &b.records)) {
                // The link is going away; the batch will be re-read after rewind.
                break;
            }
            self.next_seq += 1;
            self.inflight.push_back(Inflight {
                seq,
                sent: Sent::Spooled(b),
                acked: false,
                at: Instant::now(),
            });
        }
        Ok(())
    }

    /// Puts everything in flight back into the spool, in order.
    fn requeue(&mut self) -> Result<(), RunError> {
        let mut live = Vec::new();
        for i in self.inflight.drain(..) {
            if let Sent::Live(r) = i.sent
                && !i.acked
            {
                live.extend(r);
            }
        }
        self.spool.prepend(&live, Self::now_ms())?;
        self.spool.rewind();
        self.dropped_inflight = None;
        Ok(())
    }

    fn on_ack(&mut self, seq: u64) -> Result<(), RunError> {
        if let Some((s, count)) = self.dropped_inflight
            && s == seq
        {
            self.spool.dropped_reported(count)?;
            self.dropped_inflight = None;
            tracing::info!(
                samples = count,
                "hub acknowledged the report of dropped samples"
            );
        }
        if let Some(i) = self.inflight.iter_mut().find(|i| i.seq == seq) {
            i.acked = true;
            self.backoff = Duration::from_secs(1);
        }
        while self.inflight.front().is_some_and(|i| i.acked) {
            if let Some(Inflight {
                sent: Sent::Spooled(b),
                ..
            }) = self.inflight.pop_front()
            {
                self.spool.commit(&b)?;
                if self.spool.is_empty() {
                    tracing::info!("spool replayed: back to live sending");
                }
            }
        }
        self.pump()
    }

    fn on_event<S: Source>(&mut self, ev: Event, source: &mut S) -> Result<(), RunError> {
        match ev {
            Event::Connected => {
                tracing::info!(hub = %self.opts.link.hub, "connected");
                self.connected = true;
                self.send_state(source, true);
                self.pump()
            }
            Event::Hub(HubMessage::Ack { seq, .. }) => self.on_ack(seq),
            Event::Hub(HubMessage::Error {
                seq,
                code,
                message,
                retry_after_ms,
            }) => match code {
                ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal => {
                    let wait = retry_after_ms
                        .map(Duration::from_millis)
                        .unwrap_or(self.backoff)
                        .clamp(Duration::from_millis(100), Duration::from_secs(300));
                    tracing::warn!(?seq, %code, "hub asked to slow down, resending in {wait:?}: {message}");
                    self.requeue()?;
                    self.paused_until = Some(Instant::now() + wait);
                    Ok(())
                }
                ErrorCode::Unauthorized => self.closed(Closed::Unauthorized),
                _ => {
                    tracing::warn!(?seq, %code, "batch rejected by the hub and dropped: {message}");
                    match seq {
                        Some(seq) => self.on_ack(seq),
                        None => Ok(()),
                    }
                }
            },
            Event::Closed(c) => self.closed(c),
        }
    }

    fn closed(&mut self, c: Closed) -> Result<(), RunError> {
        let was_connected = self.connected;
        self.link = None;
        self.connected = false;
        self.requeue()?;
        match c {
            Closed::Unauthorized => {
                tracing::error!("{}", RunError::Unauthorized);
                Err(RunError::Unauthorized)
            }
            Closed::RetryAfter(d) => {
                tracing::warn!("hub is rate limiting connections, retrying in {d:?}");
                self.retry_at = Instant::now() + d;
                Ok(())
            }
            Closed::Error(e) => {
                let jitter = rand::random_range(0.5..=1.0);
                let wait = self.backoff.mul_f64(jitter);
                if was_connected {
                    tracing::warn!(
                        pending = self.spool.pending(),
                        "connection lost ({e}); spooling, reconnecting in {wait:?}"
                    );
                } else {
                    tracing::debug!("connect failed ({e}); retrying in {wait:?}");
                }
                self.retry_at = Instant::now() + wait;
                self.backoff = (self.backoff * 2).min(self.opts.max_backoff);
                Ok(())
            }
        }
    }

    /// A batch not acknowledged for a long time means a stuck hub: reconnect.
    fn check_ack_timeout(&mut self) -> Result<(), RunError> {
        let limit = (self.opts.interval * 10).max(Duration::from_secs(10));
        if self.connected
            && self
                .inflight
                .front()
                .is_some_and(|i| i.at.elapsed() > limit)
        {
            tracing::warn!("no ack for {limit:?}: reconnecting");
            // Dropping the link ends its task; the Closed path requeues and backs off.
            return self.closed(Closed::Error("ack timeout".into()));
        }
        Ok(())
    }

    fn on_state_tick<S: Source>(&mut self, source: &mut S) -> Result<(), RunError> {
        self.check_ack_timeout()?;
        let due = self
            .last_state_at
            .is_none_or(|t| t.elapsed() >= self.opts.state_every);
        self.send_state(source, due);
        Ok(())
    }

    /// Sends full state when `force`d or when the cheap part changed since the last send.
    fn send_state<S: Source>(&mut self, source: &mut S, force: bool) {
        if !self.connected {
            return;
        }
        if !force {
            let Some(quick) = source.quick_state() else {
                return;
            };
            let changed = self.last_state.as_ref().is_none_or(|last| {
                without_uptime(quick.clone()).system_info
                    != without_uptime(last.clone()).system_info
                    || quick.network_interfaces != last.network_interfaces
            });
            if !changed {
                return;
            }
        }
        let Some(state) = source.state() else { return };
        let msg = AgentMessage::State {
            seq: None,
            state: state.clone(),
        };
        if let (Some(link), Ok(text)) = (&self.link, serde_json::to_string(&msg))
            && link.send(text)
        {
            self.last_state = Some(state);
            self.last_state_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_text_is_a_metrics_message() {
        let s = vitals_proto::MetricSample {
            v: 1,
            ts: 5,
            host_id: "h".into(),
            cpu: Default::default(),
            mem: Default::default(),
            disk: vec![],
            net: Default::default(),
            uptime_sec: 1.0,
            proc_count: 1.0,
            swap: None,
            load: None,
            disk_io: vec![],
            net_ifaces: vec![],
            temps: vec![],
            gpus: vec![],
            containers: vec![],
            docker_size: None,
            kernel: Default::default(),
        };
        let r = Record::from_sample(&s).expect("json");
        let text = batch_text(9, &[r.clone(), r]);
        match serde_json::from_str::<AgentMessage>(&text).expect("parses") {
            AgentMessage::Metrics { seq, samples } => {
                assert_eq!(seq, 9);
                assert_eq!(samples, vec![s.clone(), s]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
