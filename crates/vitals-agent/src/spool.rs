//! The on-disk spool: samples the hub has not acknowledged, kept across outages and restarts.
//!
//! # Format
//! A directory of segment files named `<id>.seg` (20 decimal digits). Each segment starts with
//! the 8-byte header `VSPOOL2\n` (or `VSPOOL1\n`, written by older agents and still read),
//! then records:
//!
//! ```text
//! +----------------+----------------+------------------------------+
//! | len: u32 LE    | crc: u32 LE    | payload: len bytes           |
//! +----------------+----------------+------------------------------+
//! ```
//!
//! `crc` is the CRC-32 (IEEE) of the payload; the payload is one `MetricSample` as JSON with a
//! numeric `ts`, raw-deflated (level 1) in `VSPOOL2` segments and plain in `VSPOOL1` ones.
//! Deflate shrinks a sample with its ~600 kernel statistics about four times (21 -> 5.4 KB),
//! so the default 64 MiB bound holds about 3.5 hours of per-second samples; each record is
//! compressed on its own, so any record can be read, cut off or acknowledged alone. A record
//! whose length is 0 or above [`MAX_RECORD_BYTES`], that is cut short, whose checksum does not
//! match or that does not inflate ends its segment: on open the segment is truncated there
//! (a write torn by a crash or power loss is cut off) and everything before it is kept.
//!
//! # Ordering
//! Records are delivered in (segment id, offset) order. [`Spool::append`] writes after the
//! newest record; [`Spool::prepend`] writes a new segment with a smaller id than every other,
//! for batches that were in flight when a connection broke and are older than everything
//! spooled. Ids start at 2^40 so there is room on both sides.
//!
//! # Acknowledgement
//! The file `cursor` (replaced atomically) lists `id offset count` for each segment whose
//! first bytes are acknowledged: reading resumes at `offset`, and `count` records are already
//! delivered. A fully acknowledged segment is deleted, then the cursor rewritten, so a crash
//! in between only leaves a cursor line for a missing segment (ignored). A crash after an ack
//! but before the cursor write replays a batch the hub already stored; the hub stores a
//! (device, ts) once, so the store never holds a duplicate.
//!
//! # Bounds
//! At most `max_bytes` of segment files (default 64 MiB) and nothing older than `max_age`
//! (default 7 days): whole segments are dropped oldest first, skipping a segment that is being
//! replayed right now (its samples are about to be acknowledged). Every record dropped without
//! being acknowledged is counted in the file `dropped` (`count oldest_ts newest_ts`, `-` for an unknown time) until the
//! hub acknowledges the report, so the reported count equals the samples really lost.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Segment file header: records deflated.
pub const HEADER: &[u8; 8] = b"VSPOOL2\n";
/// Header of segments written by agents before 0.2: records are plain JSON.
pub const HEADER_V1: &[u8; 8] = b"VSPOOL1\n";
/// Deflate level of records: the fastest, since spooling happens while samples keep coming.
const DEFLATE_LEVEL: u8 = 1;
/// Largest record payload accepted (a sample is far smaller; bigger means corruption).
pub const MAX_RECORD_BYTES: u32 = vitals_proto::limits::MAX_MESSAGE_BYTES as u32;
const FIRST_ID: u64 = 1 << 40;
const HEADER_LEN: u64 = HEADER.len() as u64;

/// A spool failure: the directory or a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Spool limits.
#[derive(Debug, Clone, Copy)]
pub struct SpoolOptions {
    pub max_bytes: u64,
    pub max_age_ms: i64,
    /// Segment size at which a new segment is started (drop granularity).
    pub segment_bytes: u64,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions::new(64 << 20, 7 * 86_400_000)
    }
}

impl SpoolOptions {
    /// Limits with a segment size of 1/16 of the byte bound (64 KiB ..= 4 MiB).
    pub fn new(max_bytes: u64, max_age_ms: i64) -> Self {
        SpoolOptions {
            max_bytes,
            max_age_ms,
            segment_bytes: (max_bytes / 16).clamp(4 << 10, 4 << 20),
        }
    }
}

/// One sample, serialised, with its timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts: i64,
    pub json: String,
}

impl Record {
    /// Serialises a sample.
    pub fn from_sample(s: &vitals_proto::MetricSample) -> Result<Record, serde_json::Error> {
        Ok(Record {
            ts: s.ts,
            json: serde_json::to_string(s)?,
        })
    }
}

/// Samples read from the spool, to be acknowledged with [`Spool::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolBatch {
    pub seg: u64,
    pub end: u64,
    pub records: Vec<Record>,
}

/// Samples dropped and not yet reported to the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropReport {
    pub count: u64,
    pub oldest_ts: Option<i64>,
    pub newest_ts: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct Seg {
    len: u64,
    records: u64,
    /// Acknowledged prefix: reading starts here.
    start: u64,
    acked: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    /// A `VSPOOL1` segment: plain JSON records.
    plain: bool,
}

/// The spool. Not shared: one task owns it.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    segs: BTreeMap<u64, Seg>,
    writer: Option<(u64, File)>,
    /// Next read position (segment id, offset); everything before it is in flight or acked.
    read: (u64, u64),
    dropped: DropReport,
}

#[derive(Deserialize)]
struct TsOnly {
    ts: i64,
}

fn seg_name(id: u64) -> String {
    format!("{id:020}.seg")
}

impl Spool {
    /// Opens (or creates) a spool directory, cutting off torn or corrupt record tails.
    pub fn open(dir: &Path, opts: SpoolOptions) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segs = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let path = e.path();
            match scan(&path)? {
                Some(seg) => {
                    segs.insert(id, seg);
                }
                None => {
                    tracing::warn!(path = %path.display(), "spool segment without a valid header removed");
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        let mut sp = Spool {
            dir: dir.to_path_buf(),
            opts,
            segs,
            writer: None,
            read: (0, 0),
            dropped: DropReport::default(),
        };
        sp.load_cursor();
        sp.load_dropped();
        // Segments fully acknowledged before a crash.
        let done: Vec<u64> = sp
            .segs
            .iter()
            .filter(|(_, s)| s.start >= s.len)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            sp.remove_seg(id)?;
        }
        sp.rewind();
        Ok(sp)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn load_cursor(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.path("cursor")) else {
            return;
        };
        for line in text.lines() {
            let f: Vec<u64> = line
                .split_ascii_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            if let [id, off, n] = f[..]
                && let Some(s) = self.segs.get_mut(&id)
            {
                // An offset past a truncated tail means everything left was acknowledged.
                s.start = off.clamp(HEADER_LEN, s.len);
                s.acked = n.min(s.records);
            }
        }
    }

    fn save_cursor(&self) -> Result<(), SpoolError> {
        let mut text = String::new();
        for (id, s) in &self.segs {
            if s.start > HEADER_LEN {
                text.push_str(&format!("{id} {} {}\n", s.start, s.acked));
            }
        }
        write_atomic(&self.path("cursor"), text.as_bytes())
    }

    fn load_dropped(&mut self) {
        let Ok(text) = std::fs::read_to_string(self.path("dropped")) else {
            return;
        };
        let mut f = text.split_ascii_whitespace();
        let count = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut ts = || f.next().and_then(|v| v.parse::<i64>().ok());
        let oldest_ts = ts();
        let newest_ts = ts();
        self.dropped = DropReport {
            count,
            oldest_ts,
            newest_ts,
        };
    }

    fn save_dropped(&self) -> Result<(), SpoolError> {
        let d = self.dropped;
        let ts = |t: Option<i64>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
        write_atomic(
            &self.path("dropped"),
            format!("{} {} {}\n", d.count, ts(d.oldest_ts), ts(d.newest_ts)).as_bytes(),
        )
    }

    /// Samples not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.segs.values().map(|s| s.records - s.acked).sum()
    }

    /// Whether every spooled sample is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.segs.values().map(|s| s.len).sum()
    }

    /// Samples dropped and not yet reported.
    pub fn dropped(&self) -> DropReport {
        self.dropped
    }

    /// The hub acknowledged a report of `count` dropped samples.
    pub fn dropped_reported(&mut self, count: u64) -> Result<(), SpoolError> {
        self.dropped.count = self.dropped.count.saturating_sub(count);
        if self.dropped.count == 0 {
            self.dropped = DropReport::default();
        }
        self.save_dropped()
    }

    /// Restarts reading at the oldest unacknowledged sample (after a broken connection).
    pub fn rewind(&mut self) {
        self.read = self.segs.keys().next().map_or((0, 0), |id| (*id, 0));
    }

    /// Appends records after the newest one and enforces the bounds.
    pub fn append(&mut self, records: &[Record], now_ms: i64) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let need_new = match (&self.writer, self.segs.keys().next_back()) {
            (Some((id, _)), Some(last)) => {
                id != last
                    || self
                        .segs
                        .get(id)
                        .is_none_or(|s| s.len >= self.opts.segment_bytes)
            }
            _ => true,
        };
        if need_new {
            let id = self.segs.keys().next_back().map_or(FIRST_ID, |l| l + 1);
            let f = self.create_seg(id)?;
            self.writer = Some((id, f));
        }
        let Some((id, f)) = self.writer.as_mut() else {
            return Ok(());
        };
        let id = *id;
        let path = self.dir.join(seg_name(id));
        let buf = encode(records);
        f.write_all(&buf).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        if let Some(s) = self.segs.get_mut(&id) {
            s.len += buf.len() as u64;
            note(s, records);
        }
        self.enforce(now_ms)
    }

    /// Writes records as a new segment before every other (they are older than all spooled).
    pub fn prepend(&mut self, records: &[Record], now_ms: i64) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let id = self.segs.keys().next().map_or(FIRST_ID, |f| f - 1);
        let mut f = self.create_seg(id)?;
        let path = self.dir.join(seg_name(id));
        let buf = encode(records);
        f.write_all(&buf).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        if let Some(s) = self.segs.get_mut(&id) {
            s.len += buf.len() as u64;
            note(s, records);
        }
        self.rewind();
        self.enforce(now_ms)
    }

    fn create_seg(&mut self, id: u64) -> Result<File, SpoolError> {
        let path = self.dir.join(seg_name(id));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(HEADER).map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        // Make the new file's name durable too.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.segs.insert(
            id,
            Seg {
                len: HEADER_LEN,
                start: HEADER_LEN,
                ..Seg::default()
            },
        );
        Ok(f)
    }

    /// Whether some of a segment has been read but not acknowledged (in flight).
    fn in_flight(&self, id: u64) -> bool {
        let (rid, roff) = self.read;
        let start = self.segs.get(&id).map_or(0, |s| s.start);
        id < rid || (id == rid && roff > start)
    }

    fn enforce(&mut self, now_ms: i64) -> Result<(), SpoolError> {
        loop {
            let over_bytes = self.bytes() > self.opts.max_bytes;
            let oldest_allowed = now_ms.saturating_sub(self.opts.max_age_ms);
            let alone = self.segs.len() == 1;
            let victim = self
                .segs
                .iter()
                .filter(|(id, _)| !self.in_flight(**id))
                .find_map(|(id, s)| {
                    let too_old = s.last_ts.is_some_and(|t| t < oldest_allowed);
                    // The segment being written is dropped for size only when it is alone.
                    let writing = self.writer.as_ref().is_some_and(|(w, _)| w == id);
                    (too_old || (over_bytes && (!writing || alone))).then_some(*id)
                });
            match victim {
                Some(id) => self.drop_seg(id)?,
                None => return Ok(()),
            }
        }
    }

    fn drop_seg(&mut self, id: u64) -> Result<(), SpoolError> {
        let Some(s) = self.segs.get(&id).cloned() else {
            return Ok(());
        };
        let lost = s.records - s.acked;
        if lost > 0 {
            // The first_ts of a partly acknowledged segment is a little early; it only
            // bounds the report, the count is exact.
            self.dropped.count += lost;
            self.dropped.oldest_ts = min_opt(self.dropped.oldest_ts, s.first_ts);
            self.dropped.newest_ts = max_opt(self.dropped.newest_ts, s.last_ts);
            tracing::warn!(
                samples = lost,
                "spool full: dropped the oldest samples (bound {} bytes, {} days)",
                self.opts.max_bytes,
                self.opts.max_age_ms / 86_400_000
            );
        }
        self.remove_seg(id)?;
        self.save_dropped()?;
        self.save_cursor()
    }

    fn remove_seg(&mut self, id: u64) -> Result<(), SpoolError> {
        if self.writer.as_ref().is_some_and(|(w, _)| *w == id) {
            self.writer = None;
        }
        self.segs.remove(&id);
        let p = self.dir.join(seg_name(id));
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Reads the next records (at most `max_records`, about `max_bytes` of JSON) from one
    /// segment. `None` when everything spooled has been read.
    pub fn read_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<SpoolBatch>, SpoolError> {
        let ids: Vec<u64> = self.segs.range(self.read.0..).map(|(id, _)| *id).collect();
        for id in ids {
            let Some(s) = self.segs.get(&id) else {
                continue;
            };
            let from = if id == self.read.0 {
                self.read.1.max(s.start)
            } else {
                s.start
            };
            if from >= s.len {
                continue;
            }
            let path = self.dir.join(seg_name(id));
            let mut f = File::open(&path).map_err(io_err(&path))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from)).map_err(io_err(&path))?;
            let mut r = std::io::BufReader::new(f.take(s.len - from));
            let mut records = Vec::new();
            let mut size = 0usize;
            let mut off = from;
            let plain = s.plain;
            while records.len() < max_records && size < max_bytes {
                match read_record(&mut r).and_then(|rec| decode(plain, rec)) {
                    Ok(Some((payload, n))) => {
                        let ts = serde_json::from_slice::<TsOnly>(&payload)
                            .map(|t| t.ts)
                            .unwrap_or(0);
                        size += payload.len() + 1;
                        records.push(Record {
                            ts,
                            json: String::from_utf8_lossy(&payload).into_owned(),
                        });
                        off += n;
                    }
                    // The segment was checked on open and we wrote the rest ourselves.
                    Ok(None) | Err(_) => break,
                }
            }
            self.read = (id, off);
            if records.is_empty() {
                continue;
            }
            return Ok(Some(SpoolBatch {
                seg: id,
                end: off,
                records,
            }));
        }
        Ok(None)
    }

    /// Marks a batch as acknowledged. Batches must be committed in the order they were read.
    pub fn commit(&mut self, b: &SpoolBatch) -> Result<(), SpoolError> {
        let writing = self.writer.as_ref().is_some_and(|(w, _)| *w == b.seg);
        let Some(s) = self.segs.get_mut(&b.seg) else {
            // Dropped meanwhile (age bound); nothing left to acknowledge.
            return Ok(());
        };
        if b.end <= s.start {
            return Ok(());
        }
        s.start = b.end;
        s.acked = (s.acked + b.records.len() as u64).min(s.records);
        if s.start >= s.len && !writing {
            self.remove_seg(b.seg)?;
        }
        if self.is_empty() {
            // Nothing pending: start afresh so that the next outage begins a clean segment.
            let ids: Vec<u64> = self.segs.keys().copied().collect();
            for id in ids {
                self.remove_seg(id)?;
            }
            self.read = (0, 0);
        }
        self.save_cursor()
    }
}

fn note(s: &mut Seg, records: &[Record]) {
    s.records += records.len() as u64;
    for r in records {
        s.first_ts = min_opt(s.first_ts, Some(r.ts));
        s.last_ts = max_opt(s.last_ts, Some(r.ts));
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn encode(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(records.iter().map(|r| r.json.len() / 3 + 8).sum());
    for r in records {
        let p = miniz_oxide::deflate::compress_to_vec(r.json.as_bytes(), DEFLATE_LEVEL);
        buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        buf.extend_from_slice(&p);
    }
    buf
}

/// A record's JSON from its payload: inflated unless the segment is plain. A payload that
/// does not inflate (within [`MAX_RECORD_BYTES`]) is corrupt.
fn decode(plain: bool, rec: Option<(Vec<u8>, u64)>) -> Result<Option<(Vec<u8>, u64)>, ()> {
    match rec {
        Some((payload, n)) if !plain => {
            miniz_oxide::inflate::decompress_to_vec_with_limit(&payload, MAX_RECORD_BYTES as usize)
                .map(|json| Some((json, n)))
                .map_err(|_| ())
        }
        other => Ok(other),
    }
}

/// Reads one record: `Ok(None)` at a clean end, `Err` at a torn or corrupt record.
fn read_record(r: &mut impl Read) -> Result<Option<(Vec<u8>, u64)>, ()> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < 8 {
        return Err(());
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_RECORD_BYTES {
        return Err(());
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(|_| ())?;
    if crc32fast::hash(&payload) != crc {
        return Err(());
    }
    Ok(Some((payload, 8 + u64::from(len))))
}

/// Checks a segment, truncating it at the first bad record. `None` if the header is wrong.
fn scan(path: &Path) -> Result<Option<Seg>, SpoolError> {
    let f = File::open(path).map_err(io_err(path))?;
    let file_len = f.metadata().map_err(io_err(path))?.len();
    let mut r = std::io::BufReader::new(f);
    let mut head = [0u8; 8];
    if r.read_exact(&mut head).is_err() || (&head != HEADER && &head != HEADER_V1) {
        return Ok(None);
    }
    let mut seg = Seg {
        len: HEADER_LEN,
        start: HEADER_LEN,
        plain: &head == HEADER_V1,
        ..Seg::default()
    };
    loop {
        match read_record(&mut r).and_then(|rec| decode(seg.plain, rec)) {
            Ok(Some((payload, n))) => {
                seg.len += n;
                let ts = serde_json::from_slice::<TsOnly>(&payload)
                    .map(|t| t.ts)
                    .ok();
                seg.records += 1;
                seg.first_ts = min_opt(seg.first_ts, ts);
                seg.last_ts = max_opt(seg.last_ts, ts);
            }
            Ok(None) => break,
            Err(()) => {
                tracing::warn!(
                    path = %path.display(),
                    kept = seg.records,
                    cut_bytes = file_len - seg.len,
                    "spool: torn or corrupt record, segment cut off there"
                );
                break;
            }
        }
    }
    if seg.len < file_len {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(seg.len).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(Some(seg))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_data().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of about 130 bytes that deflate cannot shrink much (pseudo-random padding),
    /// so that size bounds in these tests mean what they say.
    fn rec(ts: i64) -> Record {
        let mut x = (ts as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pad: String = (0..100)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                char::from(b'!' + ((x >> 33) % 90) as u8)
            })
            .filter(|c| *c != '"' && *c != '\\')
            .collect();
        Record {
            ts,
            json: format!(r#"{{"ts":{ts},"pad":"{pad}"}}"#),
        }
    }

    fn drain(sp: &mut Spool) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(b) = sp.read_batch(7, 1 << 20).expect("read") {
            out.extend(b.records.iter().map(|r| r.ts));
            sp.commit(&b).expect("commit");
        }
        out
    }

    #[test]
    fn appended_records_come_back_in_order_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        for t in 0..30 {
            sp.append(&[rec(t)], t).expect("append");
        }
        let b = sp.read_batch(5, 1 << 20).expect("read").expect("batch");
        sp.commit(&b).expect("commit");
        drop(sp);
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("reopen");
        assert_eq!(sp.pending(), 25);
        assert_eq!(drain(&mut sp), (5..30).collect::<Vec<_>>());
        assert!(sp.is_empty());
        assert_eq!(sp.bytes(), 0, "an empty spool leaves no segment behind");
    }

    #[test]
    fn rewind_rereads_unacknowledged_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        sp.append(&(0..10).map(rec).collect::<Vec<_>>(), 0)
            .expect("append");
        let a = sp.read_batch(4, 1 << 20).expect("read").expect("a");
        let _b = sp.read_batch(4, 1 << 20).expect("read").expect("b");
        sp.commit(&a).expect("commit");
        sp.rewind();
        assert_eq!(drain(&mut sp), (4..10).collect::<Vec<_>>());
    }

    #[test]
    fn prepend_goes_before_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        sp.append(&[rec(5), rec(6)], 0).expect("append");
        sp.prepend(&[rec(3), rec(4)], 0).expect("prepend");
        sp.append(&[rec(7)], 0).expect("append");
        drop(sp);
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("reopen");
        assert_eq!(drain(&mut sp), vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn torn_tail_is_cut_and_the_rest_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        for t in 0..10 {
            sp.append(&[rec(t)], t).expect("append");
        }
        drop(sp);
        let seg = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .expect("segment");
        // A torn write: half a record header and garbage after the last good record.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open seg");
        f.write_all(&[200, 0, 0, 0, 1, 2]).expect("write");
        drop(f);
        let len_before = std::fs::metadata(&seg).expect("meta").len();
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("reopen");
        assert_eq!(std::fs::metadata(&seg).expect("meta").len(), len_before - 6);
        assert_eq!(drain(&mut sp), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_checksum_cuts_from_that_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        for t in 0..10 {
            sp.append(&[rec(t)], t).expect("append");
        }
        drop(sp);
        let seg = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .expect("segment");
        let mut bytes = std::fs::read(&seg).expect("read");
        let n = bytes.len();
        bytes[n - 3] ^= 0xff; // inside the last record's payload
        std::fs::write(&seg, &bytes).expect("write");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("reopen");
        assert_eq!(drain(&mut sp), (0..9).collect::<Vec<_>>());
    }

    fn first_segment(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .expect("segment")
    }

    /// Segments written by older agents (`VSPOOL1`, plain JSON) are still replayed after an
    /// upgrade, before newer compressed ones.
    #[test]
    fn plain_segments_of_older_agents_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut old = HEADER_V1.to_vec();
        for t in 0..3i64 {
            let p = rec(t).json.into_bytes();
            old.extend_from_slice(&(p.len() as u32).to_le_bytes());
            old.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
            old.extend_from_slice(&p);
        }
        std::fs::write(dir.path().join(seg_name(FIRST_ID)), &old).expect("write v1");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        assert_eq!(sp.pending(), 3);
        sp.append(&[rec(3), rec(4)], 4).expect("append");
        let b = sp.read_batch(10, 1 << 20).expect("read").expect("batch");
        assert_eq!(b.records[0], rec(0), "plain records come back unchanged");
        sp.commit(&b).expect("commit");
        assert_eq!(drain(&mut sp), vec![3, 4]);
    }

    /// Records are deflated: a realistic sample takes a fraction of its JSON on disk, and a
    /// record whose checksum holds but which does not inflate ends the segment like a torn one.
    #[test]
    fn records_are_compressed_and_bad_deflate_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
        let mut json = String::from("{\"ts\":7,\"kernel\":{");
        for i in 0..600 {
            json.push_str(&format!("\"netstat.TcpExt.Counter{i}\":{}.0,", i % 7));
        }
        json.push_str("\"end\":0}}");
        let r = Record { ts: 7, json };
        sp.append(std::slice::from_ref(&r), 7).expect("append");
        let on_disk = sp.bytes() - HEADER_LEN;
        assert!(
            on_disk * 3 < r.json.len() as u64,
            "{on_disk} bytes on disk for {} of JSON",
            r.json.len()
        );
        assert_eq!(
            sp.read_batch(1, 1 << 20).expect("read").expect("b").records,
            [r]
        );
        drop(sp);
        // Append a record with a valid checksum over bytes that are not deflate data.
        let seg = first_segment(dir.path());
        let junk = [0xffu8; 16];
        let mut f = OpenOptions::new().append(true).open(&seg).expect("open");
        f.write_all(&(junk.len() as u32).to_le_bytes()).expect("w");
        f.write_all(&crc32fast::hash(&junk).to_le_bytes())
            .expect("w");
        f.write_all(&junk).expect("w");
        drop(f);
        let len_before = std::fs::metadata(&seg).expect("meta").len();
        let mut sp = Spool::open(dir.path(), SpoolOptions::default()).expect("reopen");
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len(),
            len_before - 24
        );
        assert_eq!(drain(&mut sp), vec![7]);
    }

    #[test]
    fn overflow_drops_oldest_and_counts_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SpoolOptions {
            max_bytes: 20_000,
            max_age_ms: i64::MAX,
            segment_bytes: 4_000,
        };
        let mut sp = Spool::open(dir.path(), opts).expect("open");
        let total = 500;
        for t in 0..total {
            sp.append(&[rec(t)], t).expect("append");
            assert!(sp.bytes() <= 20_000 + 4_000, "bounded: {}", sp.bytes());
        }
        let dropped = sp.dropped();
        drop(sp);
        let mut sp = Spool::open(dir.path(), opts).expect("reopen");
        assert_eq!(sp.dropped(), dropped, "the drop report survives a restart");
        let kept = drain(&mut sp);
        assert_eq!(kept.len() as u64 + dropped.count, total as u64);
        assert_eq!(
            kept.first().copied(),
            Some(dropped.count as i64),
            "oldest dropped first"
        );
        assert_eq!(dropped.newest_ts, Some(dropped.count as i64 - 1));
        assert_eq!(*kept.last().expect("kept"), total - 1);
        sp.dropped_reported(dropped.count).expect("reported");
        assert_eq!(sp.dropped().count, 0);
    }

    #[test]
    fn old_segments_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SpoolOptions {
            max_bytes: 1 << 20,
            max_age_ms: 1000,
            segment_bytes: 1000,
        };
        let mut sp = Spool::open(dir.path(), opts).expect("open");
        for t in 0..20 {
            sp.append(&[rec(t * 100)], t * 100).expect("append");
        }
        sp.append(&[rec(5000)], 5000).expect("append");
        let kept = drain(&mut sp);
        assert!(sp.dropped().count > 0, "old segments were dropped");
        assert!(kept.contains(&5000));
        assert_eq!(kept.len() as u64 + sp.dropped().count, 21);
    }

    #[test]
    fn segments_being_replayed_are_not_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SpoolOptions {
            max_bytes: 3_000,
            max_age_ms: i64::MAX,
            segment_bytes: 1_000,
        };
        let mut sp = Spool::open(dir.path(), opts).expect("open");
        for t in 0..20 {
            sp.append(&[rec(t)], t).expect("append");
        }
        let before = sp.dropped().count;
        let b = sp.read_batch(2, 1 << 20).expect("read").expect("batch");
        for t in 20..25 {
            sp.append(&[rec(t)], t).expect("append");
        }
        sp.commit(&b).expect("commit");
        let rest = drain(&mut sp);
        let delivered = b.records.len() as u64 + rest.len() as u64;
        assert_eq!(delivered + sp.dropped().count, 25, "before={before}");
    }
}
