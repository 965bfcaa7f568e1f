//! Hot rows: how a backend stores one recent sample before it is compacted into a block.
//!
//! A sample is its *shape* (its series names, newline-separated: see
//! [`vitals_proto::series::flatten_into`]) and its values. Shapes are stored once each, in a
//! table of their own, and a hot row names its shape by id; the values are little-endian
//! `f64`s in the shape's order, so encoding and decoding a row is a copy. [`ShapeCache`]
//! keeps the shapes a backend has seen in memory (it learns a shape only after the
//! transaction that stored it committed, so it never names an id the database lacks).
//!
//! Values are stored compactly ([`encode_values`]): most are whole numbers or have one or two
//! decimals (percentages, byte counts, rates), which take a varint of a few bytes instead of
//! eight. Every value comes back bit-exactly. Smaller rows mean fewer pages for SQLite to
//! allocate and free as rows come and go.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::codec::DecodeError;

/// A shape's names, split.
pub type Names = Arc<[Box<str>]>;

/// Shape ids and names seen so far.
#[derive(Default)]
pub struct ShapeCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<Arc<str>, i64>,
    by_id: HashMap<i64, Names>,
}

impl ShapeCache {
    /// The id of the shape with these names, if known.
    pub fn id(&self, key: &str) -> Option<i64> {
        self.inner.read().by_key.get(key).copied()
    }

    /// The names of shape `id`, if known.
    pub fn names(&self, id: i64) -> Option<Names> {
        self.inner.read().by_id.get(&id).cloned()
    }

    /// Records that shape `id` has these (newline-separated) names.
    pub fn learn(&self, id: i64, key: &str) -> Names {
        let names: Names = split(key);
        let mut inner = self.inner.write();
        inner.by_key.insert(Arc::from(key), id);
        inner.by_id.insert(id, Arc::clone(&names));
        names
    }

    /// Forgets everything (after a transaction that may have taught wrong ids rolled back).
    pub fn clear(&self) {
        let mut inner = self.inner.write();
        inner.by_key.clear();
        inner.by_id.clear();
    }
}

/// A shape's names, split at newlines.
pub fn split(key: &str) -> Names {
    if key.is_empty() {
        return Arc::from(Vec::<Box<str>>::new());
    }
    key.split('\n').map(Box::from).collect()
}

/// The stored form of a hot row's values: per value a varint `zigzag(m) << 2 | k`, meaning
/// `m / 10^k` for `k` in 0..=2 when that gives the very same bits back, else `k = 3` and the
/// value's eight bytes follow.
pub fn encode_values(values: &[f64]) -> Vec<u8> {
    const SCALE: [f64; 3] = [1.0, 10.0, 100.0];
    const LIMIT: f64 = (1u64 << 52) as f64;
    let mut out = Vec::with_capacity(values.len() * 4);
    'next: for v in values {
        for (k, s) in SCALE.iter().enumerate() {
            let m = (v * s).round();
            // Compared as the decoder will compute it (so -0.0 does not pass as 0).
            if m.abs() < LIMIT && ((m as i64) as f64 / s).to_bits() == v.to_bits() {
                let z = crate::codec::zigzag(m as i64);
                crate::codec::put_varint(&mut out, (z << 2) | k as u64);
                continue 'next;
            }
        }
        out.push(3);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads [`encode_values`]' form, which must hold exactly `n` values.
pub fn decode_values(bytes: &[u8], n: usize) -> Result<Vec<f64>, DecodeError> {
    const SCALE: [f64; 3] = [1.0, 10.0, 100.0];
    let mut r = crate::codec::Reader::new(bytes);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let x = r.varint()?;
        let k = (x & 3) as usize;
        out.push(match SCALE.get(k) {
            Some(s) => crate::codec::unzigzag(x >> 2) as f64 / s,
            None => r.f64()?,
        });
    }
    r.finish()
        .map_err(|_| DecodeError("hot row length does not match its shape"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any value comes back bit-exactly.
        #[test]
        fn any_values_round_trip(v in prop::collection::vec(any::<f64>(), 0..50)) {
            let back = decode_values(&encode_values(&v), v.len()).expect("decode");
            prop_assert_eq!(
                back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn values_and_shapes_round_trip() {
        let v = [
            37.4,
            -0.0,
            1e300,
            4e9,
            0.07,
            -12.5,
            99.99,
            1.0 / 3.0,
            f64::MAX,
            4503599627370497.0,
        ];
        let bytes = encode_values(&v);
        let back = decode_values(&bytes, v.len()).expect("decode");
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(decode_values(&bytes, 3).is_err());
        assert!(decode_values(&bytes, 11).is_err());
        // Percentages with one decimal and byte counts take a few bytes, not eight.
        assert!(encode_values(&[37.4, 4e9, 12.0]).len() <= 10);
        let c = ShapeCache::default();
        assert_eq!(c.id("cpu\nmem.used"), None);
        c.learn(7, "cpu\nmem.used");
        assert_eq!(c.id("cpu\nmem.used"), Some(7));
        assert_eq!(&*c.names(7).expect("names")[1], "mem.used");
        assert!(split("").is_empty());
    }
}
