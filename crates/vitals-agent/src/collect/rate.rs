//! Per-second rates from cumulative kernel counters.
//!
//! Invariant: a counter that went backwards (wrap, device re-created, VM restored) yields 0 for
//! that interval instead of a negative or astronomically large rate; a zero or negative elapsed
//! time yields 0.

/// `(cur - prev) / secs`, or 0 when the counter went backwards or no time passed.
pub fn per_sec(prev: u64, cur: u64, secs: f64) -> f64 {
    if secs <= 0.0 || !secs.is_finite() || cur < prev {
        return 0.0;
    }
    (cur - prev) as f64 / secs
}

#[cfg(test)]
mod tests {
    use super::per_sec;

    #[test]
    fn rates_and_resets() {
        assert_eq!(per_sec(100, 300, 2.0), 100.0);
        assert_eq!(per_sec(300, 100, 1.0), 0.0);
        assert_eq!(per_sec(1, 2, 0.0), 0.0);
    }
}
