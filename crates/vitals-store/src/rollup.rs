//! Rollups: per series and per time bucket (1 minute or 1 hour), the min, max, sum, count,
//! last value and a [`Sketch`] of the values. Rollups of adjacent buckets merge into the
//! rollup of their union, so any range is answered from the coarsest tier that covers it,
//! and p95 from the merged sketches.
//!
//! This module is the pure arithmetic: [`fold`] turns points into bucket rollups,
//! [`fold_frame`] does the same for raw samples in column form, [`Rollup::merge`] combines
//! them, and [`encode`]/[`encode_block`] give the compact byte forms a backend stores per
//! (tier, device, bucket) and per (device, hour of minutes). Reads decode straight into
//! [`Runs`] (series-major, only the series a query wants, sketches only when asked for).
//! Storing and choosing a tier per query are in the backends and in [`crate::tiers`].

use std::collections::BTreeMap;

use crate::codec::{DecodeError, Reader, pack, put_bytes, put_varint, unpack, unzigzag, zigzag};
use crate::frame::{Frame, SeriesFilter};
use crate::sketch::Sketch;

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

/// Folds raw samples in column form into per-bucket [`Series`], keyed by bucket start.
/// Works column by column: rows are sorted by time, so each bucket is a run of rows.
pub fn fold_frame(frame: &Frame, width_ms: i64) -> BTreeMap<i64, Series> {
    let mut out: BTreeMap<i64, Series> = BTreeMap::new();
    let ts = &frame.ts;
    let mut runs: Vec<(i64, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < ts.len() {
        let b = bucket_start(ts[i], width_ms);
        let mut j = i + 1;
        while j < ts.len() && bucket_start(ts[j], width_ms) == b {
            j += 1;
        }
        runs.push((b, i, j));
        i = j;
    }
    for (name, col) in &frame.series {
        for (b, lo, hi) in &runs {
            let mut acc: Option<Rollup> = None;
            for k in *lo..*hi {
                let v = col[k];
                if !v.is_finite() {
                    continue;
                }
                match &mut acc {
                    Some(r) => r.add(ts[k], v),
                    None => acc = Some(Rollup::of(ts[k], v)),
                }
            }
            if let Some(r) = acc {
                let series = out.entry(*b).or_default();
                match series.get_mut(name) {
                    Some(x) => x.merge(&r),
                    None => {
                        series.insert(name.clone(), r);
                    }
                }
            }
        }
    }
    out
}

/// Rollups read for a query, series-major: per series, `(bucket, rollup)` in bucket order.
pub type Runs = BTreeMap<String, Vec<(i64, Rollup)>>;

/// Turns [`Runs`] into bucket-major [`Series`] per bucket (for the job and tests).
pub fn runs_to_buckets(runs: Runs) -> Vec<(i64, Series)> {
    let mut out: BTreeMap<i64, Series> = BTreeMap::new();
    for (name, cells) in runs {
        for (b, r) in cells {
            out.entry(b).or_default().insert(name.clone(), r);
        }
    }
    out.into_iter().collect()
}

/// Sorts every run by bucket (after reading several rows or blocks into it), merging cells
/// of the same bucket (a minute can be in two segments of an hour's block).
pub fn sort_runs(runs: &mut Runs) {
    for cells in runs.values_mut() {
        if cells.windows(2).all(|w| w[0].0 < w[1].0) {
            continue;
        }
        cells.sort_by_key(|c| c.0);
        let mut out: Vec<(i64, Rollup)> = Vec::with_capacity(cells.len());
        for (b, r) in cells.drain(..) {
            match out.last_mut() {
                Some((lb, lr)) if *lb == b => lr.merge(&r),
                _ => out.push((b, r)),
            }
        }
        *cells = out;
    }
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
    let mut sk = Vec::with_capacity(64);
    for (name, r) in series {
        put_bytes(&mut out, name.as_bytes());
        for f in [r.min, r.max, r.sum, r.last] {
            out.extend_from_slice(&f.to_le_bytes());
        }
        put_varint(&mut out, r.count);
        put_varint(&mut out, zigzag(r.last_ts));
        sk.clear();
        r.sketch.encode_into(&mut sk);
        put_bytes(&mut out, &sk);
    }
    out
}

/// Reads [`encode`]'s form.
pub fn decode(bytes: &[u8]) -> Result<Series, DecodeError> {
    let mut runs = Runs::new();
    decode_into(bytes, 0, &SeriesFilter::all(), true, &mut runs)?;
    Ok(runs
        .into_iter()
        .filter_map(|(n, mut cells)| cells.pop().map(|(_, r)| (n, r)))
        .collect())
}

/// Reads [`encode`]'s form of `bucket` into `out`: only the series `filter` wants, and their
/// sketches only if `sketches` (decoding sketches is most of the cost).
pub fn decode_into(
    bytes: &[u8],
    bucket: i64,
    filter: &SeriesFilter,
    sketches: bool,
    out: &mut Runs,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    if r.byte()? != SERIES_VERSION {
        return Err(DecodeError("unknown rollup version"));
    }
    let n = r.count()?;
    for _ in 0..n {
        let name = r.text()?;
        let (min, max, sum, last) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
        let count = r.varint()?;
        let last_ts = unzigzag(r.varint()?);
        let sk = r.take()?;
        if !filter.wants(name) {
            continue;
        }
        let sketch = if sketches {
            Sketch::decode(sk)?
        } else {
            Sketch::new()
        };
        let rollup = Rollup {
            min,
            max,
            sum,
            count,
            last,
            last_ts,
            sketch,
        };
        match out.get_mut(name) {
            Some(cells) => cells.push((bucket, rollup)),
            None => {
                out.insert(name.to_string(), vec![(bucket, rollup)]);
            }
        }
    }
    r.finish()
}

const BLOCK_VERSION: u8 = 3;

/// Many buckets of one device (an hour of minutes) as one block of pco-compressed columns:
/// the series names once, then per series and bucket its min, max, sum, last, count,
/// last_ts and sketch buckets, each column holding one field of every (series, bucket) in
/// series-major order, so neighbouring values are alike and compress to a few bits. A minute
/// rollup row costs ~100 bytes per series; in a block it is a small fraction of that.
pub fn encode_block(buckets: &[(i64, Series)]) -> Result<Vec<u8>, DecodeError> {
    let mut names: Vec<&str> = buckets
        .iter()
        .flat_map(|(_, s)| s.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut per_series = Vec::with_capacity(names.len());
    let (mut bucket, mut count, mut last_ts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut min, mut max, mut sum, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut zero, mut npos, mut nneg) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pos_i, mut pos_c, mut neg_i, mut neg_c) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for name in &names {
        let mut n = 0i64;
        // A sketch's first index relative to the previous sketch's of the series (they are
        // alike minute to minute), the others as gaps less one (often zero).
        let (mut first_pos, mut first_neg) = (0i64, 0i64);
        for (b, series) in buckets {
            let Some(r) = series.get(*name) else { continue };
            n += 1;
            bucket.push(*b);
            min.push(r.min);
            max.push(r.max);
            sum.push(r.sum);
            last.push(r.last);
            count.push(i64::try_from(r.count).unwrap_or(i64::MAX));
            last_ts.push(r.last_ts - *b);
            let (z, pos, neg) = r.sketch.parts();
            zero.push(i64::try_from(z).unwrap_or(i64::MAX));
            npos.push(pos.len() as i64);
            nneg.push(neg.len() as i64);
            put_indices(&pos, &mut first_pos, &mut pos_i, &mut pos_c);
            put_indices(&neg, &mut first_neg, &mut neg_i, &mut neg_c);
        }
        per_series.push(n);
    }
    let mut out = Vec::with_capacity(1024);
    out.push(BLOCK_VERSION);
    put_varint(&mut out, names.len() as u64);
    for n in &names {
        put_bytes(&mut out, n.as_bytes());
    }
    for col in [&per_series, &bucket, &count, &last_ts, &zero, &npos, &nneg] {
        put_bytes(&mut out, &pack(col)?);
    }
    for col in [&min, &max, &sum, &last] {
        put_bytes(&mut out, &pack(col)?);
    }
    for col in [&pos_i, &pos_c, &neg_i, &neg_c] {
        put_bytes(&mut out, &pack(col)?);
    }
    Ok(out)
}

/// Appends a sketch side's buckets to the index and count columns (see [`encode_block`]).
fn put_indices(side: &[(i32, u64)], first: &mut i64, idx: &mut Vec<i64>, cnt: &mut Vec<i64>) {
    let mut prev: Option<i64> = None;
    for (i, c) in side {
        let i = i64::from(*i);
        idx.push(match prev {
            None => {
                let d = i - *first;
                *first = i;
                d
            }
            Some(p) => i - p - 1,
        });
        prev = Some(i);
        cnt.push(i64::try_from(*c).unwrap_or(i64::MAX));
    }
}

/// The inverse of [`put_indices`] for one sketch side.
fn take_indices(idx: &[i64], cnt: &[i64], first: &mut i64) -> Result<Vec<(i32, u64)>, DecodeError> {
    let bad = DecodeError("sketch index");
    let mut prev: Option<i64> = None;
    idx.iter()
        .zip(cnt)
        .map(|(d, c)| {
            let i = match prev {
                None => {
                    *first = first.checked_add(*d).ok_or(bad)?;
                    *first
                }
                Some(p) => p
                    .checked_add(*d)
                    .and_then(|x| x.checked_add(1))
                    .ok_or(bad)?,
            };
            prev = Some(i);
            Ok((
                i32::try_from(i).map_err(|_| bad)?,
                u64::try_from(*c).map_err(|_| DecodeError("sketch count"))?,
            ))
        })
        .collect()
}

/// Reads [`encode_block`]'s form: the buckets, oldest first.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<(i64, Series)>, DecodeError> {
    let mut runs = Runs::new();
    decode_block_into(
        bytes,
        i64::MIN,
        i64::MAX,
        &SeriesFilter::all(),
        true,
        &mut runs,
    )?;
    Ok(runs_to_buckets(runs))
}

/// Reads the buckets in `[from, to)` of the series `filter` wants from an
/// [`encode_block`] block into `out`, with sketches only if `sketches`.
pub fn decode_block_into(
    bytes: &[u8],
    from: i64,
    to: i64,
    filter: &SeriesFilter,
    sketches: bool,
    out: &mut Runs,
) -> Result<(), DecodeError> {
    let bad = DecodeError;
    let mut r = Reader::new(bytes);
    if r.byte()? != BLOCK_VERSION {
        return Err(bad("unknown rollup block version"));
    }
    let n = r.count()?;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(r.text()?);
    }
    let per_series: Vec<i64> = unpack(r.take()?, n)?;
    let cells = per_series
        .iter()
        .try_fold(0usize, |a, c| {
            usize::try_from(*c).ok().and_then(|c| a.checked_add(c))
        })
        .ok_or(bad("cell count"))?;
    let mut ints = || -> Result<Vec<i64>, DecodeError> { unpack(r.take()?, cells) };
    let bucket = ints()?;
    let count = ints()?;
    let last_ts = ints()?;
    let zero = ints()?;
    let npos = ints()?;
    let nneg = ints()?;
    let mut floats = Vec::with_capacity(4);
    for _ in 0..4 {
        floats.push(unpack::<f64>(r.take()?, cells)?);
    }
    let sizes = |v: &[i64]| {
        v.iter()
            .try_fold(0usize, |a, c| {
                usize::try_from(*c).ok().and_then(|c| a.checked_add(c))
            })
            .ok_or(DecodeError("sketch bucket count"))
    };
    let (tp, tn) = (sizes(&npos)?, sizes(&nneg)?);
    let (pos_i, pos_c, neg_i, neg_c) = if sketches {
        (
            unpack::<i64>(r.take()?, tp)?,
            unpack::<i64>(r.take()?, tp)?,
            unpack::<i64>(r.take()?, tn)?,
            unpack::<i64>(r.take()?, tn)?,
        )
    } else {
        for _ in 0..4 {
            r.take()?;
        }
        (Vec::new(), Vec::new(), Vec::new(), Vec::new())
    };
    r.finish()?;
    let (mut cell, mut p, mut q) = (0usize, 0usize, 0usize);
    for (name, k) in names.iter().zip(&per_series) {
        let k = *k as usize;
        let wanted = filter.wants(name);
        let mut cells_out = Vec::new();
        let (mut first_pos, mut first_neg) = (0i64, 0i64);
        for _ in 0..k {
            let (np, nn) = (npos[cell] as usize, nneg[cell] as usize);
            let b = bucket[cell];
            // Sketch indices are relative to the series' previous sketch: decode them all.
            let sketch = if sketches {
                let pos = pos_i.get(p..p + np).zip(pos_c.get(p..p + np));
                let neg = neg_i.get(q..q + nn).zip(neg_c.get(q..q + nn));
                let ((pi, pc), (ni, nc)) = pos.zip(neg).ok_or(bad("sketch buckets"))?;
                Sketch::from_parts(
                    u64::try_from(zero[cell]).map_err(|_| bad("zero count"))?,
                    take_indices(pi, pc, &mut first_pos)?,
                    take_indices(ni, nc, &mut first_neg)?,
                )
            } else {
                Sketch::new()
            };
            if wanted && (from..to).contains(&b) {
                cells_out.push((
                    b,
                    Rollup {
                        min: floats[0][cell],
                        max: floats[1][cell],
                        sum: floats[2][cell],
                        count: u64::try_from(count[cell]).map_err(|_| bad("count"))?,
                        last: floats[3][cell],
                        last_ts: b.saturating_add(last_ts[cell]),
                        sketch,
                    },
                ));
            }
            p += np;
            q += nn;
            cell += 1;
        }
        if !cells_out.is_empty() {
            match out.get_mut(*name) {
                Some(cells) => cells.extend(cells_out),
                None => {
                    out.insert((*name).to_string(), cells_out);
                }
            }
        }
    }
    Ok(())
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
    fn blocks_round_trip_and_are_small() {
        let pts: Vec<(i64, String, f64)> = (0..3600)
            .flat_map(|s| {
                let t = s * 1000;
                [
                    (t, "cpu".to_string(), ((s * 7919) % 1000) as f64 / 10.0),
                    (t, "mem.used".to_string(), 4e9 + (s * 4096) as f64),
                    (t, "neg".to_string(), -((s % 13) as f64)),
                ]
            })
            .filter(|(t, n, _)| !(n == "neg" && *t > 1_800_000))
            .collect();
        let minutes = fold(pts.iter().map(|(t, n, v)| (*t, n.as_str(), *v)), 60_000);
        let mut buckets: BTreeMap<i64, Series> = BTreeMap::new();
        for ((b, name), r) in minutes {
            buckets.entry(b).or_default().insert(name, r);
        }
        let buckets: Vec<(i64, Series)> = buckets.into_iter().collect();
        let b = encode_block(&buckets).expect("encode");
        assert_eq!(decode_block(&b).expect("decode"), buckets);
        let rows: usize = buckets.iter().map(|(_, s)| encode(s).len()).sum();
        assert!(b.len() * 3 < rows, "block {} bytes vs rows {rows}", b.len());
        for cut in 0..b.len() {
            assert!(decode_block(&b[..cut]).is_err(), "truncated at {cut}");
        }
        assert_eq!(
            decode_block(&encode_block(&[]).expect("empty")).expect("empty"),
            vec![]
        );
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
