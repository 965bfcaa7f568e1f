//! Column blocks: the compact form of older raw samples. A block holds one device's samples
//! of one window (10 minutes by default) and gives back exactly the JSON bytes that went in.
//!
//! Each sample's JSON is split into a *skeleton* (the text with every number cut out and a
//! marker left in its place) and its numbers. Samples of one device share a skeleton almost
//! always (the same host id, disks and interfaces), so skeletons are stored once per block,
//! and the n-th number of every sample with the same skeleton forms a column. Columns and
//! the timestamps are compressed with pco, which finds deltas and decimal multipliers
//! (a CPU percentage with one decimal costs a few bits, not 8 bytes).
//!
//! A number is cut out only when it prints back to the very same text (integers up to 2^53
//! as integers, others as serde_json prints an f64); anything else stays in the skeleton, so
//! the round trip is byte-exact for any JSON.
//!
//! Layout (all lengths varints): version, sample count, the pco timestamp column, skeleton
//! count, the skeletons, the pco skeleton-index column (only if more than one skeleton),
//! then per skeleton per marker one pco column.

use std::collections::HashMap;

use crate::StoredSample;
use crate::sketch::{DecodeError, Reader, put_varint};

/// Width of a block's window: one block per device per 10 minutes.
pub const WINDOW_MS: i64 = 600_000;
const VERSION: u8 = 1;
/// Marks an integer cut out of the skeleton (bytes below 0x20 never appear raw in JSON).
const INT: u8 = 0x01;
/// Marks a float cut out of the skeleton.
const FLOAT: u8 = 0x02;
const MAX_SAFE_INT: i64 = 1 << 53;

/// Why a block could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("corrupt block: {0}")]
    Corrupt(&'static str),
    #[error("column codec: {0}")]
    Codec(String),
}

impl From<DecodeError> for BlockError {
    fn from(_: DecodeError) -> Self {
        BlockError::Corrupt("truncated or malformed")
    }
}

enum Num {
    Int(i64),
    Float(f64),
}

/// Splits JSON text into its skeleton and the numbers cut out of it.
fn split(json: &[u8]) -> (Vec<u8>, Vec<Num>) {
    let mut skel = Vec::with_capacity(json.len() / 2);
    let mut nums = Vec::new();
    let mut i = 0;
    let mut in_str = false;
    while i < json.len() {
        let c = json[i];
        if in_str {
            skel.push(c);
            if c == b'\\' {
                if let Some(n) = json.get(i + 1) {
                    skel.push(*n);
                }
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            skel.push(c);
            i += 1;
            continue;
        }
        if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < json.len()
                && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            {
                i += 1;
            }
            let text = &json[start..i];
            match cut(text) {
                Some(n) => {
                    skel.push(match n {
                        Num::Int(_) => INT,
                        Num::Float(_) => FLOAT,
                    });
                    nums.push(n);
                }
                None => skel.extend_from_slice(text),
            }
            continue;
        }
        skel.push(c);
        i += 1;
    }
    (skel, nums)
}

/// The number `text` stands for, if printing it back gives `text` again.
fn cut(text: &[u8]) -> Option<Num> {
    let s = std::str::from_utf8(text).ok()?;
    if let Ok(i) = s.parse::<i64>() {
        return ((-MAX_SAFE_INT..=MAX_SAFE_INT).contains(&i) && i.to_string() == s)
            .then_some(Num::Int(i));
    }
    let f = s.parse::<f64>().ok()?;
    (print_float(f)? == s).then_some(Num::Float(f))
}

fn print_float(f: f64) -> Option<String> {
    serde_json::Number::from_f64(f).map(|n| n.to_string())
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn take<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], BlockError> {
    let len = usize::try_from(r.varint()?).map_err(|_| BlockError::Corrupt("length"))?;
    let end = r.at.checked_add(len).ok_or(BlockError::Corrupt("length"))?;
    let b = r
        .bytes
        .get(r.at..end)
        .ok_or(BlockError::Corrupt("truncated"))?;
    r.at = end;
    Ok(b)
}

/// One pco column (empty columns take no bytes).
pub(crate) fn pack<T: pco::data_types::Number>(v: &[T]) -> Result<Vec<u8>, BlockError> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    pco::standalone::simple_compress(v, &pco::ChunkConfig::default())
        .map_err(|e| BlockError::Codec(e.to_string()))
}

/// Reads a [`pack`]ed column, checking its length when `n` is given.
pub(crate) fn unpack<T: pco::data_types::Number>(
    b: &[u8],
    n: impl Into<Option<usize>>,
) -> Result<Vec<T>, BlockError> {
    let v: Vec<T> = if b.is_empty() {
        Vec::new()
    } else {
        pco::standalone::simple_decompress(b).map_err(|e| BlockError::Codec(e.to_string()))?
    };
    if n.into().is_some_and(|n| v.len() != n) {
        return Err(BlockError::Corrupt("column length"));
    }
    Ok(v)
}

/// Column `j` of a skeleton's rows.
fn column<T>(rows: &[Vec<Num>], j: usize, f: impl Fn(Option<&Num>) -> T) -> Vec<T> {
    rows.iter().map(|r| f(r.get(j))).collect()
}

/// Encodes samples (sorted by time, distinct times) into a block.
pub fn encode(samples: &[StoredSample]) -> Result<Vec<u8>, BlockError> {
    let mut out = Vec::with_capacity(64 + samples.len() * 64);
    out.push(VERSION);
    put_varint(&mut out, samples.len() as u64);
    let ts: Vec<i64> = samples.iter().map(|s| s.ts).collect();
    put_bytes(&mut out, &pack(&ts)?);
    let mut skeletons: Vec<Vec<u8>> = Vec::new();
    let mut index: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut which: Vec<u32> = Vec::with_capacity(samples.len());
    let mut numbers: Vec<Vec<Vec<Num>>> = Vec::new();
    for s in samples {
        let (skel, nums) = split(&s.data);
        let id = match index.get(&skel) {
            Some(id) => *id,
            None => {
                let id = skeletons.len() as u32;
                index.insert(skel.clone(), id);
                skeletons.push(skel);
                numbers.push(Vec::new());
                id
            }
        };
        which.push(id);
        numbers[id as usize].push(nums);
    }
    put_varint(&mut out, skeletons.len() as u64);
    for s in &skeletons {
        put_bytes(&mut out, s);
    }
    if skeletons.len() > 1 {
        put_bytes(&mut out, &pack(&which)?);
    }
    for (k, rows) in numbers.iter().enumerate() {
        let width = skeletons[k]
            .iter()
            .filter(|b| **b == INT || **b == FLOAT)
            .count();
        for j in 0..width {
            let bytes = match rows.first().and_then(|r| r.get(j)) {
                Some(Num::Int(_)) => pack(&column(rows, j, |n| match n {
                    Some(Num::Int(i)) => *i,
                    _ => 0,
                }))?,
                _ => pack(&column(rows, j, |n| match n {
                    Some(Num::Float(f)) => *f,
                    _ => 0.0,
                }))?,
            };
            put_bytes(&mut out, &bytes);
        }
    }
    Ok(out)
}

/// A numeric column of one skeleton.
enum Col {
    Int(Vec<i64>),
    Float(Vec<f64>),
}

impl Col {
    fn text(&self, row: usize) -> Result<String, BlockError> {
        match self {
            Col::Int(v) => Ok(v[row].to_string()),
            Col::Float(v) => print_float(v[row]).ok_or(BlockError::Corrupt("non-finite number")),
        }
    }
}

/// A block, parsed but not yet turned back into samples.
struct Parsed<'a> {
    ts: Vec<i64>,
    skeletons: Vec<&'a [u8]>,
    which: Vec<u32>,
    /// Per skeleton, its columns (one per marker, in order).
    columns: Vec<Vec<Col>>,
    /// Per sample, its row within its skeleton's columns.
    rows: Vec<usize>,
}

impl Parsed<'_> {
    /// The JSON text of sample `i`.
    fn json(&self, i: usize) -> Result<Vec<u8>, BlockError> {
        let k = self.which[i] as usize;
        let skel = self.skeletons[k];
        let mut data = Vec::with_capacity(skel.len() * 2);
        let mut j = 0;
        for b in skel.iter() {
            if *b == INT || *b == FLOAT {
                data.extend_from_slice(self.columns[k][j].text(self.rows[i])?.as_bytes());
                j += 1;
            } else {
                data.push(*b);
            }
        }
        Ok(data)
    }
}

/// The version, the sample count and the timestamp column: `(reader after them, ts)`.
fn head(bytes: &[u8]) -> Result<(Reader<'_>, Vec<i64>), BlockError> {
    let mut r = Reader { bytes, at: 0 };
    if r.byte()? != VERSION {
        return Err(BlockError::Corrupt("unknown version"));
    }
    let n = usize::try_from(r.varint()?).map_err(|_| BlockError::Corrupt("count"))?;
    if n > bytes.len() * 64 {
        return Err(BlockError::Corrupt("count larger than the data"));
    }
    let ts = unpack(take(&mut r)?, n)?;
    Ok((r, ts))
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, BlockError> {
    let (mut r, ts) = head(bytes)?;
    let n = ts.len();
    let nskel = usize::try_from(r.varint()?).map_err(|_| BlockError::Corrupt("count"))?;
    if nskel > bytes.len() {
        return Err(BlockError::Corrupt("skeleton count"));
    }
    let mut skeletons = Vec::with_capacity(nskel);
    for _ in 0..nskel {
        skeletons.push(take(&mut r)?);
    }
    let which: Vec<u32> = if nskel > 1 {
        unpack(take(&mut r)?, n)?
    } else {
        vec![0; n]
    };
    if which.iter().any(|w| *w as usize >= nskel) {
        return Err(BlockError::Corrupt("skeleton index"));
    }
    let mut row_of = vec![0usize; nskel];
    let rows: Vec<usize> = which
        .iter()
        .map(|w| {
            let row = row_of[*w as usize];
            row_of[*w as usize] += 1;
            row
        })
        .collect();
    let mut columns = Vec::with_capacity(nskel);
    for (k, skel) in skeletons.iter().enumerate() {
        let mut cols = Vec::new();
        for m in skel.iter().filter(|b| **b == INT || **b == FLOAT) {
            let b = take(&mut r)?;
            cols.push(if *m == INT {
                Col::Int(unpack(b, row_of[k])?)
            } else {
                Col::Float(unpack(b, row_of[k])?)
            });
        }
        columns.push(cols);
    }
    if r.at != bytes.len() {
        return Err(BlockError::Corrupt("trailing bytes"));
    }
    Ok(Parsed {
        ts,
        skeletons,
        which,
        columns,
        rows,
    })
}

/// Decodes a block into its samples, oldest first.
pub fn decode(bytes: &[u8]) -> Result<Vec<StoredSample>, BlockError> {
    let p = parse(bytes)?;
    (0..p.ts.len())
        .map(|i| {
            Ok(StoredSample {
                ts: p.ts[i],
                data: p.json(i)?,
            })
        })
        .collect()
}

/// Only the timestamps of a block (cheap: the first column).
pub fn timestamps(bytes: &[u8]) -> Result<Vec<i64>, BlockError> {
    Ok(head(bytes)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(ts: i64, json: &str) -> StoredSample {
        StoredSample {
            ts,
            data: json.as_bytes().to_vec(),
        }
    }

    #[test]
    fn round_trips_byte_exactly_with_odd_numbers_and_strings() {
        let samples = vec![
            s(
                1,
                r#"{"v":1,"ts":1,"cpu":{"total":37.4,"perCore":[1.5,-0.0]},"n":"a\"1.5"}"#,
            ),
            s(
                2,
                r#"{"v":1,"ts":2,"cpu":{"total":1e21,"perCore":[2.25,3.0]},"n":"a\"1.5"}"#,
            ),
            s(
                3,
                r#"{"big":123456789012345678901,"x":1.50,"y":-7,"z":0.1}"#,
            ),
            s(4, "{}"),
            s(5, r#"[1,2.5e-7,"\\",null,true]"#),
        ];
        let b = encode(&samples).expect("encode");
        assert_eq!(decode(&b).expect("decode"), samples);
        assert_eq!(timestamps(&b).expect("ts"), vec![1, 2, 3, 4, 5]);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "truncated at {cut}");
        }
    }

    proptest! {
        /// Any finite numbers in a sample-shaped document come back byte-exactly.
        #[test]
        fn any_numbers_round_trip(
            rows in prop::collection::vec(
                (any::<f64>(), -1_000_000i64..1_000_000, prop::collection::vec(any::<f64>(), 0..4)),
                1..50,
            ),
        ) {
            let samples: Vec<StoredSample> = rows
                .iter()
                .enumerate()
                .map(|(i, (a, b, c))| {
                    let v = serde_json::json!({"ts": i, "a": a, "b": b, "c": c, "h": "host"});
                    StoredSample { ts: i as i64, data: serde_json::to_vec(&v).expect("json") }
                })
                .collect();
            let b = encode(&samples).expect("encode");
            prop_assert_eq!(decode(&b).expect("decode"), samples);
        }
    }
}
