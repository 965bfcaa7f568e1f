//! Hot rows: how a backend stores one recent sample before it is compacted into a block.
//!
//! A sample is its *shape* (its series names, newline-separated: see
//! [`vitals_proto::series::flatten_into`]) and its values. Shapes are stored once each, in a
//! table of their own, and a hot row names its shape by id; the values are little-endian
//! `f64`s in the shape's order, so encoding and decoding a row is a copy. [`ShapeCache`]
//! keeps the shapes a backend has seen in memory (it learns a shape only after the
//! transaction that stored it committed, so it never names an id the database lacks).

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

/// The stored form of a hot row's values.
pub fn encode_values(values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads [`encode_values`]' form, which must hold exactly `n` values.
pub fn decode_values(bytes: &[u8], n: usize) -> Result<Vec<f64>, DecodeError> {
    if bytes.len() != n * 8 {
        return Err(DecodeError("hot row length does not match its shape"));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_shapes_round_trip() {
        let v = [37.4, -0.0, 1e300, 4e9];
        let back = decode_values(&encode_values(&v), 4).expect("decode");
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(decode_values(&encode_values(&v), 3).is_err());
        let c = ShapeCache::default();
        assert_eq!(c.id("cpu\nmem.used"), None);
        c.learn(7, "cpu\nmem.used");
        assert_eq!(c.id("cpu\nmem.used"), Some(7));
        assert_eq!(&*c.names(7).expect("names")[1], "mem.used");
        assert!(split("").is_empty());
    }
}
