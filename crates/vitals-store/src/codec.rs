//! Byte-level helpers shared by the stored formats ([`crate::block`], [`crate::rollup`],
//! [`crate::sketch`]): LEB128 varints, zigzag, length-prefixed byte strings, pco columns, and
//! a bounds-checked reader whose every failure is an error, never a panic: stored bytes are
//! treated as untrusted input.

/// A fast non-cryptographic hasher (FxHash, as rustc uses) for maps keyed by our own ids and
/// times during a commit: SipHash showed up in ingest profiles. Keys here are not chosen by
/// an attacker in ways that matter (device sequence numbers, validated timestamps).
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut a = [0u8; 8];
            a[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(a));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// Why stored bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt data: {0}")]
pub struct DecodeError(pub &'static str);

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag: small magnitudes of either sign become small unsigned numbers.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over stored bytes.
pub struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    /// A varint that counts things which each take at least one byte of what is left (a
    /// corrupt count can then never make a reader allocate more than the data's size).
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.bytes.len() as u64 {
            return Err(DecodeError("count larger than the data"));
        }
        Ok(n as usize)
    }

    /// A length-prefixed byte string.
    pub fn take(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError("length"))?;
        let end = self.at.checked_add(len).ok_or(DecodeError("length"))?;
        let b = self
            .bytes
            .get(self.at..end)
            .ok_or(DecodeError("truncated"))?;
        self.at = end;
        Ok(b)
    }

    /// A length-prefixed UTF-8 string.
    pub fn text(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take()?).map_err(|_| DecodeError("text is not UTF-8"))
    }

    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        let end = self.at.checked_add(8).ok_or(DecodeError("truncated"))?;
        let b = self
            .bytes
            .get(self.at..end)
            .ok_or(DecodeError("truncated"))?;
        self.at = end;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// Errors unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

/// pco's compression level. On this project's raw blocks (measured with the `pcotune`
/// example) level 4 is within 2 % of the default 8 in size at 75 % of its time, and choosing
/// the delta order with [`guess_delta`] instead of pco's own search gives the same size
/// (within 0.2 %) in half the time.
const LEVEL: usize = 4;

/// A number type stored in pco columns.
pub trait Column: pco::data_types::Number + Copy {
    /// The value as a float (approximately, for choosing an encoding).
    fn as_f64(self) -> f64;
}

impl Column for i64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Column for f64 {
    fn as_f64(self) -> f64 {
        self
    }
}

impl Column for u32 {
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

/// The delta order that narrows a column's values most (0: none, 1: differences, 2:
/// differences of differences), judged by the spread between the 5th and 95th percentiles
/// of each order's values (a few outliers, such as the start of another series in a rollup
/// block's column, do not decide). pco can choose by itself, but its search is most of its
/// compression time.
pub fn guess_delta<T: Column>(v: &[T]) -> pco::DeltaSpec {
    if v.len() < 8 {
        return pco::DeltaSpec::NoOp;
    }
    fn spread(mut x: Vec<f64>) -> f64 {
        let n = x.len();
        let (lo, hi) = (n / 20, n - 1 - n / 20);
        let (_, a, rest) = x.select_nth_unstable_by(lo, f64::total_cmp);
        let a = *a;
        let Some((_, b, _)) =
            (hi > lo).then(|| rest.select_nth_unstable_by(hi - lo - 1, f64::total_cmp))
        else {
            return 0.0;
        };
        *b - a
    }
    // At most 256 evenly spaced places, each with its next two values: enough to judge.
    let step = (v.len() - 2).div_ceil(256).max(1);
    let (mut x, mut d1, mut d2) = (Vec::new(), Vec::new(), Vec::new());
    for i in (0..v.len() - 2).step_by(step) {
        let (a, b, c) = (v[i].as_f64(), v[i + 1].as_f64(), v[i + 2].as_f64());
        x.push(a);
        d1.push(b - a);
        d2.push(c - 2.0 * b + a);
    }
    let (r0, r1, r2) = (spread(x), spread(d1), spread(d2));
    // A higher order must narrow the values clearly to pay for its extra state.
    if r1 < 0.5 * r0 {
        if r2 < 0.5 * r1 {
            pco::DeltaSpec::TryConsecutive(2)
        } else {
            pco::DeltaSpec::TryConsecutive(1)
        }
    } else {
        pco::DeltaSpec::NoOp
    }
}

/// One pco-compressed column (an empty column takes no bytes). pco finds common multipliers
/// and decimal quanta by itself (a percentage with one decimal costs a few bits); the delta
/// order is [`guess_delta`]'s.
pub fn pack<T: Column>(v: &[T]) -> Result<Vec<u8>, DecodeError> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    let config = pco::ChunkConfig::default()
        .with_compression_level(LEVEL)
        .with_delta_spec(guess_delta(v));
    pco::standalone::simple_compress(v, &config)
        .map_err(|_| DecodeError("column could not be compressed"))
}

/// Reads a [`pack`]ed column, checking its length when `n` is given.
pub fn unpack<T: pco::data_types::Number>(
    b: &[u8],
    n: impl Into<Option<usize>>,
) -> Result<Vec<T>, DecodeError> {
    let v: Vec<T> = if b.is_empty() {
        Vec::new()
    } else {
        pco::standalone::simple_decompress(b).map_err(|_| DecodeError("column codec"))?
    };
    if n.into().is_some_and(|n| v.len() != n) {
        return Err(DecodeError("column length"));
    }
    Ok(v)
}

/// True when every value is a whole number that an `i64` holds exactly (not -0.0): such a
/// column is stored as integers, which pco compresses far better than their float bits.
pub fn all_integers(values: &[f64]) -> bool {
    const LIMIT: f64 = (1u64 << 53) as f64;
    values
        .iter()
        .all(|v| v.fract() == 0.0 && v.abs() <= LIMIT && !(*v == 0.0 && v.is_sign_negative()))
}

/// Appends a column of floats: a flag byte (1 = stored as integers) and the pco bytes.
pub fn put_floats(out: &mut Vec<u8>, values: &[f64]) -> Result<(), DecodeError> {
    if all_integers(values) {
        out.push(1);
        let ints: Vec<i64> = values.iter().map(|v| *v as i64).collect();
        put_bytes(out, &pack(&ints)?);
    } else {
        out.push(0);
        put_bytes(out, &pack(values)?);
    }
    Ok(())
}

/// Reads a [`put_floats`] column of `n` values.
pub fn take_floats(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, DecodeError> {
    match r.byte()? {
        0 => unpack(r.take()?, n),
        1 => Ok(unpack::<i64>(r.take()?, n)?
            .into_iter()
            .map(|v| v as f64)
            .collect()),
        _ => Err(DecodeError("unknown column kind")),
    }
}

/// Skips a [`put_floats`] column.
pub fn skip_floats(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    r.byte()?;
    r.take()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_columns_round_trip_bit_exactly() {
        for col in [
            vec![1.0, 2.0, 3.0, 9_007_199_254_740_992.0],
            vec![37.4, 0.1, 99.9, 0.0],
            vec![-0.0, 1.0],
            vec![1e300, -1e-300, 5.5],
            vec![],
        ] {
            let mut b = Vec::new();
            put_floats(&mut b, &col).expect("pack");
            let mut r = Reader::new(&b);
            let back = take_floats(&mut r, col.len()).expect("unpack");
            r.finish().expect("all read");
            assert_eq!(
                back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                col.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn readers_fail_on_short_or_lying_input() {
        let mut r = Reader::new(&[0xff; 3]);
        assert!(r.varint().is_err());
        let mut r = Reader::new(&[200, 1]);
        assert!(r.count().is_err(), "a count larger than the data");
        let mut r = Reader::new(&[5, 1, 2]);
        assert!(r.take().is_err());
        assert_eq!(unzigzag(zigzag(-7)), -7);
        assert_eq!(unzigzag(zigzag(i64::MIN)), i64::MIN);
    }
}
