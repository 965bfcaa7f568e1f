//! Column blocks: the compact form of older raw samples. A block holds one device's samples
//! of one window (10 minutes by default) as a [`Frame`]: the timestamps and, per series, its
//! values, each column compressed with pco (which finds deltas, common multipliers and
//! decimal quanta by itself: a CPU percentage with one decimal costs a few bits, a byte
//! counter its increments). Whole-number columns are stored as integers. Every value comes
//! back bit-exactly.
//!
//! Derived series (`mem.pct`, `disk[/].pct`, ...: [`vitals_proto::series::derivation`]) are
//! not stored when they can be recomputed bit-exactly from the others: only their names are,
//! and [`decode`] computes them again.
//!
//! Layout (all lengths and counts varints):
//! `version, n (rows), ts column, d, d x derived name, k (series),
//! k x { name, flags, [presence], values }` where
//! `flags & 1` says the series is missing from some rows and a presence bitmap of `n` bits
//! follows (only the present values are stored), and `values` is a
//! [`crate::codec::put_floats`] column. A reader that wants some series skips the others'
//! bytes without decoding them.

use crate::codec::{
    DecodeError, Reader, pack, put_bytes, put_floats, put_varint, skip_floats, take_floats, unpack,
};
use crate::frame::{Frame, SeriesFilter};

/// Width of a block's window: one block per device per 10 minutes.
pub const WINDOW_MS: i64 = 600_000;
const VERSION: u8 = 3;
const SPARSE: u8 = 1;

/// Why a block could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("corrupt block: {0}")]
    Corrupt(&'static str),
}

impl From<DecodeError> for BlockError {
    fn from(e: DecodeError) -> Self {
        BlockError::Corrupt(e.0)
    }
}

/// Encodes a frame (sorted by time, distinct times).
pub fn encode(frame: &Frame) -> Result<Vec<u8>, BlockError> {
    let n = frame.len();
    let mut out = Vec::with_capacity(64 + n * 16);
    out.push(VERSION);
    put_varint(&mut out, n as u64);
    put_bytes(&mut out, &pack(&frame.ts)?);
    let present: Vec<(&String, &Vec<f64>)> = frame
        .series
        .iter()
        .filter(|(_, col)| col.iter().any(|v| !v.is_nan()))
        .collect();
    let recomputable = |name: &str, col: &[f64]| {
        frame.derive(name).is_some_and(|d| {
            d.len() == col.len() && d.iter().zip(col).all(|(a, b)| a.to_bits() == b.to_bits())
        })
    };
    let (derived, series): (Vec<_>, Vec<_>) = present
        .into_iter()
        .partition(|(name, col)| recomputable(name, col));
    put_varint(&mut out, derived.len() as u64);
    for (name, _) in &derived {
        put_bytes(&mut out, name.as_bytes());
    }
    put_varint(&mut out, series.len() as u64);
    let mut present: Vec<f64> = Vec::with_capacity(n);
    for (name, col) in series {
        put_bytes(&mut out, name.as_bytes());
        present.clear();
        present.extend(col.iter().copied().filter(|v| !v.is_nan()));
        if present.len() == n {
            out.push(0);
            put_floats(&mut out, col)?;
        } else {
            out.push(SPARSE);
            let mut bits = vec![0u8; n.div_ceil(8)];
            for (i, v) in col.iter().enumerate() {
                if !v.is_nan() {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            put_bytes(&mut out, &bits);
            put_floats(&mut out, &present)?;
        }
    }
    Ok(out)
}

/// The version, the row count and the timestamp column: `(reader after them, ts)`.
fn head(bytes: &[u8]) -> Result<(Reader<'_>, Vec<i64>), BlockError> {
    let mut r = Reader::new(bytes);
    if r.byte()? != VERSION {
        return Err(BlockError::Corrupt("unknown block version"));
    }
    // The count is only compared with the decoded column's length: nothing is sized by it.
    let n = usize::try_from(r.varint()?).map_err(|_| BlockError::Corrupt("row count"))?;
    let ts = unpack(r.take()?, n)?;
    Ok((r, ts))
}

/// Decodes a block into a frame of the series `filter` wants.
pub fn decode(bytes: &[u8], filter: &SeriesFilter) -> Result<Frame, BlockError> {
    let (mut r, ts) = head(bytes)?;
    let n = ts.len();
    let d = r.count()?;
    let mut derived = Vec::with_capacity(d);
    for _ in 0..d {
        derived.push(r.text()?);
    }
    let wanted: Vec<&str> = derived
        .iter()
        .copied()
        .filter(|x| filter.wants(x))
        .collect();
    // The inputs of wanted derived series are read too (and dropped after, if not wanted).
    let inputs: Vec<String> = wanted
        .iter()
        .filter_map(|x| vitals_proto::series::derivation(x))
        .flat_map(|x| match x {
            vitals_proto::series::Derivation::Pct { used, total } => vec![used, total],
            vitals_proto::series::Derivation::AllDisks => vec!["disk[".to_string()],
        })
        .collect();
    let needed = |name: &str| {
        inputs.iter().any(|i| {
            if i == "disk[" {
                name.starts_with("disk[") && (name.ends_with("].used") || name.ends_with("].total"))
            } else {
                i == name
            }
        })
    };
    let k = r.count()?;
    let mut frame = Frame {
        ts,
        ..Frame::default()
    };
    let mut extra: Vec<String> = Vec::new();
    for _ in 0..k {
        let name = r.text()?;
        let flags = r.byte()?;
        let bits = if flags & SPARSE != 0 {
            let b = r.take()?;
            if b.len() != n.div_ceil(8) {
                return Err(BlockError::Corrupt("presence bitmap length"));
            }
            Some(b)
        } else {
            None
        };
        if !filter.wants(name) {
            if !needed(name) {
                skip_floats(&mut r)?;
                continue;
            }
            extra.push(name.to_string());
        }
        let col = match bits {
            None => take_floats(&mut r, n)?,
            Some(bits) => {
                let at = |i: usize| bits[i / 8] & (1 << (i % 8)) != 0;
                let count = (0..n).filter(|i| at(*i)).count();
                let mut values = take_floats(&mut r, count)?.into_iter();
                (0..n)
                    .map(|i| {
                        if at(i) {
                            values.next().unwrap_or(f64::NAN)
                        } else {
                            f64::NAN
                        }
                    })
                    .collect()
            }
        };
        if frame.series.insert(name.to_string(), col).is_some() {
            return Err(BlockError::Corrupt("a series twice"));
        }
    }
    r.finish()?;
    for name in wanted {
        let col = frame
            .derive(name)
            .ok_or(BlockError::Corrupt("a derived series without its inputs"))?;
        frame.series.insert(name.to_string(), col);
    }
    for name in extra {
        frame.series.remove(&name);
    }
    Ok(frame)
}

/// Only the timestamps of a block (cheap: the first column).
pub fn timestamps(bytes: &[u8]) -> Result<Vec<i64>, BlockError> {
    Ok(head(bytes)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_bit_exactly_with_missing_values() {
        let mut f = Frame::default();
        f.push_rows(
            &["cpu", "mem.used", "neg"],
            [
                (1_000, &[37.4, 4e9, -0.0][..]),
                (2_000, &[0.1, 4.1e9, -1e-300][..]),
            ],
            &SeriesFilter::all(),
        );
        f.push_rows(
            &["cpu", "gpu[0].util"],
            [(3_000, &[99.9, 12.0][..])],
            &SeriesFilter::all(),
        );
        let b = encode(&f).expect("encode");
        let back = decode(&b, &SeriesFilter::all()).expect("decode");
        assert_eq!(back.ts, f.ts);
        for (name, col) in &f.series {
            let got: Vec<u64> = back.series[name].iter().map(|v| v.to_bits()).collect();
            let want: Vec<u64> = col.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(timestamps(&b).expect("ts"), vec![1_000, 2_000, 3_000]);
        let only = decode(&b, &SeriesFilter::only(vec!["mem.*".into()])).expect("decode");
        assert_eq!(only.series.keys().collect::<Vec<_>>(), vec!["mem.used"]);
        for cut in 0..b.len() {
            assert!(
                decode(&b[..cut], &SeriesFilter::all()).is_err(),
                "truncated at {cut}"
            );
        }
    }

    #[test]
    fn derived_series_are_recomputed_not_stored() {
        let sample: vitals_proto::MetricSample = serde_json::from_str(
            r#"{"v":1,"ts":1000,"hostId":"h","cpu":{"total":1},"mem":{"used":3.3,"total":7.1},
            "disk":[{"name":"/","used":5,"total":11},{"name":"/var","used":2,"total":8}],
            "net":{"txBps":0,"rxBps":0},"uptimeSec":1,"procCount":1}"#,
        )
        .expect("sample");
        let rows: Vec<crate::Row> = (0..50)
            .map(|i| {
                let mut s = sample.clone();
                s.ts = 1000 * i;
                s.mem.used = 1.0 + i as f64 / 7.0;
                crate::Row::of(&s)
            })
            .collect();
        let f = Frame::of_rows(&rows);
        let b = encode(&f).expect("encode");
        assert_eq!(decode(&b, &SeriesFilter::all()).expect("decode"), f);
        // Asked alone, a derived series still comes back (its inputs are read and dropped).
        let only = decode(
            &b,
            &SeriesFilter::only(vec!["mem.pct".into(), "disk.pct".into()]),
        )
        .expect("decode");
        assert_eq!(
            only.series.keys().collect::<Vec<_>>(),
            vec!["disk.pct", "mem.pct"]
        );
        assert_eq!(only.series["mem.pct"], f.series["mem.pct"]);
        // And it costs no column: the block without derived series is no larger.
        let mut plain = f.clone();
        plain
            .series
            .retain(|n, _| vitals_proto::series::derivation(n).is_none());
        assert!(b.len() <= encode(&plain).expect("encode").len() + 64);
    }

    proptest! {
        /// Any finite values, any pattern of missing ones, come back bit-exactly.
        #[test]
        fn any_values_round_trip(
            rows in prop::collection::vec(
                (prop::option::of(any::<f64>().prop_filter("finite", |v| v.is_finite())),
                 prop::option::of(-1_000_000i64..1_000_000)),
                1..80,
            ),
        ) {
            let mut f = Frame::default();
            for (i, (a, b)) in rows.iter().enumerate() {
                let (names, values): (Vec<&str>, Vec<f64>) = [("a", *a), ("b", b.map(|x| x as f64))]
                    .into_iter()
                    .filter_map(|(n, v)| v.map(|v| (n, v)))
                    .unzip();
                f.push_rows(&names, [(i as i64 * 1000, &values[..])], &SeriesFilter::all());
            }
            let back = decode(&encode(&f).expect("encode"), &SeriesFilter::all()).expect("decode");
            prop_assert_eq!(&back.ts, &f.ts);
            for (name, col) in &f.series {
                if col.iter().all(|v| v.is_nan()) {
                    prop_assert!(!back.series.contains_key(name));
                    continue;
                }
                let got: Vec<u64> = back.series[name].iter().map(|v| v.to_bits()).collect();
                let want: Vec<u64> = col.iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
