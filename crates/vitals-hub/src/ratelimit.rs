//! Keyed token buckets for rate limits (pairing polls and guesses per source IP, sign-in
//! attempts, agent batches per device). Memory is bounded: when the map grows past its cap,
//! buckets that are full again (idle keys) are dropped. Limits a client must meet whichever
//! replica it reaches ([`SharedLimiter`]) live in the database when it is shared.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 100_000;

pub struct KeyedLimiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl KeyedLimiter {
    /// `rate_per_sec` tokens refill each second, up to `burst`.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            rate_per_sec,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.take(key, 1.0)
    }

    /// Whether `key` has a token, without taking it.
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        self.take(key, 0.0)
    }

    fn take(&self, key: &str, cost: f64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (rate, burst) = (self.rate_per_sec, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_KEYS {
                return Err(Duration::from_secs(1));
            }
        }
        // Looked up by `&str` first: the key is allocated only for a new bucket.
        if !map.contains_key(key) {
            map.insert(key.to_string(), (self.burst, now));
        }
        let Some((tokens, at)) = map.get_mut(key) else {
            return Err(Duration::from_secs(1));
        };
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate_per_sec).min(self.burst);
        *at = now;
        let need = cost.max(1.0);
        if *tokens >= need {
            *tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (need - *tokens) / self.rate_per_sec,
            ))
        }
    }
}

/// A limit kept in the database when several replicas share it (PostgreSQL), else in memory.
/// If the database cannot answer, this replica's memory limits alone.
pub struct SharedLimiter {
    name: &'static str,
    rate_per_sec: f64,
    burst: f64,
    local: KeyedLimiter,
    store: Option<std::sync::Arc<dyn vitals_store::Store>>,
}

impl SharedLimiter {
    /// `name` prefixes the keys in the database.
    pub fn new(
        name: &'static str,
        rate_per_sec: f64,
        burst: f64,
        store: &std::sync::Arc<dyn vitals_store::Store>,
    ) -> Self {
        Self {
            name,
            rate_per_sec,
            burst,
            local: KeyedLimiter::new(rate_per_sec, burst),
            store: store.shared().then(|| std::sync::Arc::clone(store)),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        self.take(key, 1.0).await
    }

    /// Whether `key` has a token, without taking it.
    pub async fn peek(&self, key: &str) -> Result<(), Duration> {
        self.take(key, 0.0).await
    }

    async fn take(&self, key: &str, cost: f64) -> Result<(), Duration> {
        let Some(store) = &self.store else {
            return self.local.take(key, cost);
        };
        let shared_key = format!("{}:{key}", self.name);
        let now = crate::now_ms();
        match store
            .rate_take(&shared_key, self.rate_per_sec, self.burst, cost, now)
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(ms)) => Err(Duration::from_millis(ms.max(0) as u64)),
            Err(e) => {
                tracing::warn!(error = %e, limit = self.name, "shared rate limit unavailable; using this replica's");
                self.local.take(key, cost)
            }
        }
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_and_refills() {
        // One token per 50 ms: the checks below take far less, even on a busy machine (at
        // 1,000 a second, a thread paused for 1 ms between them saw a token come back).
        let l = KeyedLimiter::new(20.0, 2.0);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok(), "keys are independent");
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.check("a").is_ok(), "refilled");
    }

    #[test]
    fn peek_does_not_consume() {
        let l = KeyedLimiter::new(0.001, 1.0);
        assert!(l.peek("a").is_ok());
        assert!(l.peek("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.peek("a").is_err());
    }
}
