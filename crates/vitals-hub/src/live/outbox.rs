//! The bounded, coalescing send queue of one viewer connection, and the task that writes it to
//! the socket.
//!
//! Invariants:
//! - Replies (answers to requests) keep their order and are never dropped.
//! - A push carries a key (a subscription, a channel, a device); a newer push with the same key
//!   replaces the one still waiting, in place. A slow reader therefore gets the latest result of
//!   each view, never a backlog of stale ones, and the queue length is bounded by the number of
//!   keys plus the replies in flight.
//! - Nobody ever waits on a connection: producers only lock, replace or append, and notify. A
//!   connection whose queue passes its bound, or whose socket accepts nothing for the send
//!   timeout, is closed with code 4008 and a reason saying so.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Close code for a client that does not keep up (4000-4999 are application codes).
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code for revoked or expired credentials.
pub const CLOSE_REVOKED: u16 = 4401;
/// Close code when no `auth.login` arrived in time.
pub const CLOSE_AUTH_TIMEOUT: u16 = 4001;
/// Close code for a message over the size cap.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the hub stops.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Most frames waiting for one connection.
pub const MAX_PENDING_FRAMES: usize = 4096;
/// Most bytes waiting for one connection.
pub const MAX_PENDING_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Queue {
    /// `(key, frame)`, oldest first. `None` keys are replies.
    entries: VecDeque<(Option<u64>, Utf8Bytes)>,
    /// Sequence number of `entries[0]`.
    head: u64,
    /// Key -> sequence number of its waiting entry.
    waiting: HashMap<u64, u64>,
    bytes: usize,
    close: Option<(u16, String)>,
}

/// The send side of one connection.
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Cancelled when the connection must end (too slow, revoked, shutting down).
    pub closed: CancellationToken,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            closed: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a reply (kept in order, never coalesced).
    pub fn reply(&self, frame: impl Into<Utf8Bytes>) {
        self.put(None, frame.into());
    }

    /// Queues a push; replaces a waiting push with the same key.
    pub fn push(&self, key: u64, frame: Utf8Bytes) {
        self.put(Some(key), frame);
    }

    fn put(&self, key: Option<u64>, frame: Utf8Bytes) {
        let mut q = self.lock();
        if q.close.is_some() {
            return;
        }
        let len = frame.len();
        if let Some(k) = key
            && let Some(&seq) = q.waiting.get(&k)
        {
            let idx = (seq - q.head) as usize;
            let old = std::mem::replace(&mut q.entries[idx].1, frame);
            q.bytes = q.bytes + len - old.len();
        } else {
            let seq = q.head + q.entries.len() as u64;
            q.entries.push_back((key, frame));
            q.bytes += len;
            if let Some(k) = key {
                q.waiting.insert(k, seq);
            }
        }
        if q.entries.len() > MAX_PENDING_FRAMES || q.bytes > MAX_PENDING_BYTES {
            let reason = format!(
                "too slow: {} messages ({} bytes) waiting; read faster or subscribe to less",
                q.entries.len(),
                q.bytes
            );
            drop(q);
            self.close(CLOSE_TOO_SLOW, reason);
            return;
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Ends the connection with `code` and `reason` (the first reason wins). Closes the hub
    /// decides on are counted and logged.
    pub fn close(&self, code: u16, reason: impl Into<String>) {
        let mut q = self.lock();
        if q.close.is_some() {
            return;
        }
        let reason = reason.into();
        let label = match code {
            CLOSE_TOO_SLOW => Some("slow"),
            CLOSE_REVOKED => Some("revoked"),
            CLOSE_AUTH_TIMEOUT => Some("auth_timeout"),
            CLOSE_TOO_BIG => Some("too_big"),
            _ => None,
        };
        if let Some(label) = label {
            metrics::counter!(crate::telemetry::LIVE_DISCONNECTS, "reason" => label).increment(1);
            tracing::info!(code, reason = label, "viewer disconnected: {reason}");
        }
        q.close = Some((code, reason));
        drop(q);
        self.closed.cancel();
    }

    /// The close code and reason, once closed.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.lock().close.clone()
    }

    /// Frames waiting (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.lock().entries.len()
    }

    fn take_all(&self) -> Vec<Utf8Bytes> {
        let mut q = self.lock();
        let out: Vec<Utf8Bytes> = q.entries.drain(..).map(|(_, f)| f).collect();
        q.head += out.len() as u64;
        q.waiting.clear();
        q.bytes = 0;
        out
    }
}

/// Writes the outbox to the socket until the connection closes. `send_timeout` bounds how long
/// one flush may wait for a client that does not read.
pub async fn write_loop(
    outbox: std::sync::Arc<Outbox>,
    mut sink: SplitSink<WebSocket, Message>,
    send_timeout: Duration,
) {
    loop {
        tokio::select! {
            _ = outbox.notify.notified() => {}
            _ = outbox.closed.cancelled() => break,
        }
        let frames = outbox.take_all();
        if frames.is_empty() {
            continue;
        }
        let send = async {
            for f in frames {
                sink.feed(Message::Text(f)).await?;
            }
            sink.flush().await
        };
        let res = tokio::select! {
            r = tokio::time::timeout(send_timeout, send) => r,
            _ = outbox.closed.cancelled() => break,
        };
        match res {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                outbox.close(CLOSE_GOING_AWAY, "socket error");
                return;
            }
            Err(_) => {
                outbox.close(
                    CLOSE_TOO_SLOW,
                    format!(
                        "too slow: the client read nothing for {} ms",
                        send_timeout.as_millis()
                    ),
                );
                break;
            }
        }
    }
    // Best effort: the close frame queues behind whatever the socket still holds.
    let (code, reason) = outbox
        .close_reason()
        .unwrap_or((CLOSE_GOING_AWAY, "closing".into()));
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_coalesce_in_place_and_replies_keep_order() {
        let o = Outbox::new();
        o.reply("r1");
        o.push(7, "a1".into());
        o.push(8, "b1".into());
        o.push(7, "a2".into());
        o.reply("r2");
        let got: Vec<String> = o.take_all().iter().map(|f| f.to_string()).collect();
        assert_eq!(got, ["r1", "a2", "b1", "r2"]);
        o.push(7, "a3".into());
        assert_eq!(o.pending(), 1, "a key is waiting again after a drain");
    }

    #[test]
    fn overflow_closes_as_too_slow() {
        let o = Outbox::new();
        for i in 0..=MAX_PENDING_FRAMES as u64 {
            o.push(i, "x".into());
        }
        assert!(o.closed.is_cancelled());
        assert_eq!(o.close_reason().map(|r| r.0), Some(CLOSE_TOO_SLOW));
    }
}
