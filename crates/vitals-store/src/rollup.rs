//! Rollups: per series and per time bucket (1 minute or 1 hour), the min, max, sum, count,
//! last value and a [`Sketch`] of the values. Rollups of adjacent buckets merge into the
//! rollup of their union, so any range is answered from the coarsest tier that covers it,
//! and p95 from the merged sketches.
//!
//! This module is the pure arithmetic: [`fold`] turns samples into bucket rollups, and
//! [`Rollup::merge`] combines them. Storing them (the 1-minute and 1-hour tier tables) and
//! choosing a tier per query build on it.

use std::collections::BTreeMap;

use crate::sketch::Sketch;

/// The rollup of one series over one bucket (or a merge of buckets).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollup {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    /// The value with the latest timestamp, and that timestamp.
    pub last: f64,
    pub last_ts: i64,
    pub sketch: Sketch,
}

impl Rollup {
    fn of(ts: i64, v: f64) -> Rollup {
        let mut sketch = Sketch::new();
        sketch.add(v);
        Rollup {
            min: v,
            max: v,
            sum: v,
            count: 1,
            last: v,
            last_ts: ts,
            sketch,
        }
    }

    fn add(&mut self, ts: i64, v: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
        if ts >= self.last_ts {
            self.last = v;
            self.last_ts = ts;
        }
        self.sketch.add(v);
    }

    /// Combines with the rollup of other samples of the same series.
    pub fn merge(&mut self, other: &Rollup) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.count += other.count;
        if other.last_ts >= self.last_ts {
            self.last = other.last;
            self.last_ts = other.last_ts;
        }
        self.sketch.merge(&other.sketch);
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// p95 within the sketch's relative error ([`crate::sketch::ALPHA`]).
    pub fn p95(&self) -> Option<f64> {
        self.sketch.quantile(0.95)
    }
}

/// Start of the bucket of width `width_ms` holding `ts` (floor, also for negative times).
pub fn bucket_start(ts: i64, width_ms: i64) -> i64 {
    ts.div_euclid(width_ms) * width_ms
}

/// Folds `(ts, series, value)` points into rollups keyed by `(bucket start, series)`.
/// Non-finite values are skipped.
pub fn fold<'a>(
    points: impl IntoIterator<Item = (i64, &'a str, f64)>,
    width_ms: i64,
) -> BTreeMap<(i64, String), Rollup> {
    let mut out: BTreeMap<(i64, String), Rollup> = BTreeMap::new();
    for (ts, name, v) in points {
        if !v.is_finite() {
            continue;
        }
        let key = (bucket_start(ts, width_ms), name.to_string());
        match out.get_mut(&key) {
            Some(r) => r.add(ts, v),
            None => {
                out.insert(key, Rollup::of(ts, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sketch::ALPHA;
    use proptest::prelude::*;

    #[test]
    fn buckets_floor_in_both_directions() {
        assert_eq!(bucket_start(59_999, 60_000), 0);
        assert_eq!(bucket_start(60_000, 60_000), 60_000);
        assert_eq!(bucket_start(-1, 60_000), -60_000);
    }

    proptest! {
        /// Minute rollups, merged per hour and over everything, equal what the raw points
        /// give: min, max, count and last exactly, the sum to rounding, p95 within ALPHA of
        /// the exact nearest-rank p95. Points arrive in any order.
        #[test]
        fn rollups_equal_raw_computations(
            points in prop::collection::vec((0i64..3 * 3_600_000, 0.0..1000.0f64), 1..400),
        ) {
            let pts: Vec<(i64, &str, f64)> = points.iter().map(|(t, v)| (*t, "cpu", *v)).collect();
            let minutes = fold(pts.iter().copied(), 60_000);
            // Hours from minutes, and from raw: the same.
            let mut hours: BTreeMap<i64, Rollup> = BTreeMap::new();
            for ((start, _), r) in &minutes {
                hours
                    .entry(bucket_start(*start, 3_600_000))
                    .and_modify(|h| h.merge(r))
                    .or_insert_with(|| r.clone());
            }
            let raw_hours = fold(pts.iter().copied(), 3_600_000);
            for ((start, _), want) in &raw_hours {
                let got = &hours[start];
                prop_assert_eq!(got.count, want.count);
                prop_assert_eq!(got.min, want.min);
                prop_assert_eq!(got.max, want.max);
                prop_assert!((got.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0));
                prop_assert_eq!(&got.sketch, &want.sketch);
            }
            // Everything merged.
            let mut all = hours.values().next().cloned().expect("one hour");
            for r in hours.values().skip(1) {
                all.merge(r);
            }
            let mut values: Vec<f64> = points.iter().map(|p| p.1).collect();
            values.sort_by(f64::total_cmp);
            prop_assert_eq!(all.count, values.len() as u64);
            prop_assert_eq!(all.min, values[0]);
            prop_assert_eq!(all.max, values[values.len() - 1]);
            let latest = points.iter().map(|p| p.0).max().expect("non-empty");
            prop_assert!(points.iter().any(|p| p.0 == latest && p.1 == all.last));
            let rank = ((0.95 * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let est = all.p95().expect("p95");
            prop_assert!(
                (est - exact).abs() <= ALPHA * exact.abs() + 1e-9,
                "p95 {} vs exact {}", est, exact
            );
        }
    }
}
