//! Rollups: per series and per time bucket (1 minute or 1 hour), the min, max, sum, count,
//! last value and a [`Sketch`] of the values. Rollups of adjacent buckets merge into the
//! rollup of their union, so any range is answered from the coarsest tier that covers it,
//! and p95 from the merged sketches.
//!
//! This module is the pure arithmetic: [`fold`] turns points into bucket rollups,
//! [`fold_samples`] does the same for stored samples (every flattened series of
//! [`vitals_proto::series`]), [`Rollup::merge`] combines them, and [`encode`]/[`decode`] give
//! the compact byte form a backend stores per (tier, device, bucket). Storing and choosing a
//! tier per query are in the backends and in [`crate::tiers`].

use std::collections::BTreeMap;

use crate::StoredSample;
use crate::sketch::{DecodeError, Reader, Sketch, put_varint};

/// A coarse tier: the width of its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Minute,
    Hour,
}

impl Tier {
    pub const fn width_ms(self) -> i64 {
        match self {
            Tier::Minute => 60_000,
            Tier::Hour => 3_600_000,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Tier::Minute => "minute",
            Tier::Hour => "hour",
        }
    }
}

/// Every series' rollup over one bucket.
pub type Series = BTreeMap<String, Rollup>;

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
    /// The rollup of one value.
    pub fn of(ts: i64, v: f64) -> Rollup {
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

    /// Adds one value.
    pub fn add(&mut self, ts: i64, v: f64) {
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

/// Folds stored samples (JSON `MetricSample`s) into per-bucket [`Series`], keyed by bucket
/// start. Samples that do not decode contribute nothing (the hub validated them on ingest).
pub fn fold_samples<'a>(
    samples: impl IntoIterator<Item = &'a StoredSample>,
    width_ms: i64,
) -> BTreeMap<i64, Series> {
    let mut out: BTreeMap<i64, Series> = BTreeMap::new();
    for s in samples {
        let Ok(sample) = serde_json::from_slice::<vitals_proto::MetricSample>(&s.data) else {
            continue;
        };
        let bucket = out.entry(bucket_start(s.ts, width_ms)).or_default();
        vitals_proto::series::for_each_series(&sample, |name, v| {
            if !v.is_finite() {
                return;
            }
            match bucket.get_mut(name) {
                Some(r) => r.add(s.ts, v),
                None => {
                    bucket.insert(name.to_string(), Rollup::of(s.ts, v));
                }
            }
        });
    }
    out
}

/// Merges every series of `other` into `into`.
pub fn merge_series(into: &mut Series, other: &Series) {
    for (name, r) in other {
        match into.get_mut(name) {
            Some(x) => x.merge(r),
            None => {
                into.insert(name.clone(), r.clone());
            }
        }
    }
}

const SERIES_VERSION: u8 = 1;

/// The stored form of a bucket's [`Series`]: a version byte, then per series its name,
/// min, max, sum, last (f64), count, last_ts (varints) and the encoded sketch.
pub fn encode(series: &Series) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + series.len() * 64);
    out.push(SERIES_VERSION);
    put_varint(&mut out, series.len() as u64);
    for (name, r) in series {
        put_varint(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        for f in [r.min, r.max, r.sum, r.last] {
            out.extend_from_slice(&f.to_le_bytes());
        }
        put_varint(&mut out, r.count);
        put_varint(&mut out, ((r.last_ts << 1) ^ (r.last_ts >> 63)) as u64);
        let sk = r.sketch.encode();
        put_varint(&mut out, sk.len() as u64);
        out.extend_from_slice(&sk);
    }
    out
}

/// Reads [`encode`]'s form.
pub fn decode(bytes: &[u8]) -> Result<Series, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    if r.byte()? != SERIES_VERSION {
        return Err(DecodeError("unknown rollup version"));
    }
    let n = r.varint()?;
    let mut out = Series::new();
    for _ in 0..n {
        let name = take(&mut r)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| DecodeError("series name is not UTF-8"))?
            .to_string();
        let mut f = [0f64; 4];
        for x in &mut f {
            let b = r
                .bytes
                .get(r.at..r.at + 8)
                .ok_or(DecodeError("truncated"))?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            *x = f64::from_le_bytes(a);
            r.at += 8;
        }
        let count = r.varint()?;
        let z = r.varint()?;
        let last_ts = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let sketch = Sketch::decode(take(&mut r)?)?;
        out.insert(
            name,
            Rollup {
                min: f[0],
                max: f[1],
                sum: f[2],
                count,
                last: f[3],
                last_ts,
                sketch,
            },
        );
    }
    if r.at != bytes.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(out)
}

/// A length-prefixed byte string.
fn take<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let len = usize::try_from(r.varint()?).map_err(|_| DecodeError("length out of range"))?;
    let end =
        r.at.checked_add(len)
            .ok_or(DecodeError("length out of range"))?;
    let b = r.bytes.get(r.at..end).ok_or(DecodeError("truncated"))?;
    r.at = end;
    Ok(b)
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

    #[test]
    fn series_round_trip_and_corruption() {
        let mut s = Series::new();
        let mut r = Rollup::of(1_000, 3.5);
        r.add(2_000, -1.0);
        s.insert("cpu".into(), r);
        s.insert("disk./.pct".into(), Rollup::of(-5, 0.0));
        let b = encode(&s);
        assert_eq!(decode(&b).expect("decode"), s);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(decode(&long).is_err());
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
