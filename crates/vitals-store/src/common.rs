//! What the SQL backends ([`crate::sqlite`], [`crate::postgres`]) share and that holds no SQL:
//! reading result rows into the crate's types, and the pure steps of group commit,
//! compaction, rollups and late merges. Each backend runs its own statements around these, so
//! both compute exactly the same answers from the same rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use sqlx::Row as _;

use crate::block::WINDOW_MS as BLOCK_MS;
use crate::shape::{self, Names};
use crate::*;

/// Samples in a full block at 1 Hz.
pub(crate) const BLOCK_SAMPLES: i64 = 600;
/// Segments of an hour's minute block before they are merged into one.
pub(crate) const MAX_SEGMENTS: i64 = 12;

/// A hot row as read: `(ts, shape id, values)`.
pub(crate) type HotRow = (i64, i64, Vec<u8>);

pub(crate) fn corrupt(device_seq: i64, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} of device {device_seq}: {e}"))
}

/// Refuses a database whose newest applied migration (`newest`) is one `migrator` does not
/// know: it was written by a newer Vitals.
pub(crate) fn not_newer(newest: Option<i64>, migrator: &sqlx::migrate::Migrator) -> Result<()> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match newest {
        Some(v) if v > known => Err(StoreError::Corrupt(format!(
            "the database schema is version {v} but this hub knows only up to {known}; \
             run a newer vitals-hub or restore a backup"
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown role {s:?}")))
}

/// A result row of either backend, read by column name. Flags are stored as integers (0/1)
/// by both backends, so the same rows copy from one to the other unchanged.
pub(crate) trait Get {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.int(col)? != 0)
    }
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                Ok(self.try_get(col)?)
            }
        }
    };
}
impl_get!(sqlx::sqlite::SqliteRow);
impl_get!(sqlx::postgres::PgRow);

pub(crate) fn user_from(row: &impl Get) -> Result<User> {
    Ok(User {
        id: row.text("id")?,
        username: row.text("username")?,
        role: role(&row.text("role")?)?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn device_from(row: &impl Get) -> Result<Device> {
    Ok(Device {
        seq: row.int("seq")?,
        id: row.text("id")?,
        name: row.text("name")?,
        host_id: row.text("host_id")?,
        simulated: row.flag("simulated")?,
        agent_version: row.opt_text("agent_version")?,
        created_at: row.int("created_at")?,
        last_seen: row.opt_int("last_seen")?,
        has_token: row.flag("has_token")?,
    })
}

pub(crate) fn token_from(row: &impl Get) -> Result<ApiToken> {
    Ok(ApiToken {
        id: row.text("id")?,
        name: row.text("name")?,
        role: role(&row.text("role")?)?,
        created_by: row.opt_text("created_by")?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn code_from(row: &impl Get) -> Result<DeviceCode> {
    Ok(DeviceCode {
        code: row.text("code")?,
        host_id: row.text("host_id")?,
        hostname: row.opt_text("hostname")?,
        agent_version: row.opt_text("agent_version")?,
        source_ip: row.opt_text("source_ip")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        device_id: row.opt_text("device_id")?,
        approved_at: row.opt_int("approved_at")?,
    })
}

pub(crate) fn state_from(r: &impl Get) -> Result<StateRecord> {
    Ok(StateRecord {
        kind: r.text("kind")?,
        data: r.text("data")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(crate) fn app_record_from(r: &impl Get) -> Result<AppRecord> {
    Ok(AppRecord {
        bucket: r.text("bucket")?,
        id: r.text("id")?,
        seq: r.int("seq")?,
        data: r.text("data")?,
        version: r.int("version")?,
        created_at: r.int("created_at")?,
    })
}

pub(crate) fn alert_doc_from(r: &impl Get) -> Result<AlertDoc> {
    Ok(AlertDoc {
        id: r.text("id")?,
        data: r.text("data")?,
        updated_at: r.int("updated_at")?,
    })
}

pub(crate) fn event_from(r: &impl Get) -> Result<AlertEventRow> {
    Ok(AlertEventRow {
        id: r.text("id")?,
        active: r.flag("active")?,
        started_at: r.int("started_at")?,
        data: r.text("data")?,
    })
}

pub(crate) fn outbox_from(r: &impl Get) -> Result<OutboxItem> {
    Ok(OutboxItem {
        id: r.int("id")?,
        event_id: r.text("event_id")?,
        channel_id: r.text("channel_id")?,
        data: r.text("data")?,
        attempts: r.int("attempts")?,
        next_at: r.int("next_at")?,
    })
}

pub(crate) fn delivery_from(r: &impl Get) -> Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        at: r.int("at")?,
        outbox_id: r.opt_int("outbox_id")?,
        event_id: r.opt_text("event_id")?,
        channel_id: r.text("channel_id")?,
        kind: r.text("kind")?,
        attempt: r.int("attempt")?,
        ok: r.flag("ok")?,
        status: r.opt_int("status")?,
        error: r.opt_text("error")?,
        retry_at: r.opt_int("retry_at")?,
    })
}

// ---- pairing ----------------------------------------------------------------------------

/// What approving the stored code `c` at `now` does: `Err(outcome)` when it cannot be
/// approved, else the device to create for it.
#[allow(clippy::result_large_err)] // the refusal is returned to the caller as it is
pub(crate) fn approval(
    c: Option<DeviceCode>,
    name: &str,
    now: i64,
) -> std::result::Result<NewDevice, ApproveOutcome> {
    let Some(c) = c else {
        return Err(ApproveOutcome::NotFound);
    };
    if c.device_id.is_some() {
        return Err(ApproveOutcome::AlreadyApproved);
    }
    if c.expires_at <= now {
        return Err(ApproveOutcome::Expired);
    }
    Ok(NewDevice {
        name: name.to_string(),
        host_id: c.host_id,
        token_hash: None,
        simulated: false,
        agent_version: c.agent_version,
        now,
    })
}

/// Whether the stored code `c` has a token to hand out at `now`: the approved device's id, or
/// `Err(outcome)`.
pub(crate) fn claim(c: Option<DeviceCode>, now: i64) -> std::result::Result<String, ClaimOutcome> {
    let Some(c) = c else {
        return Err(ClaimOutcome::NotFound);
    };
    c.device_id.ok_or(if c.expires_at <= now {
        ClaimOutcome::Expired
    } else {
        ClaimOutcome::Pending
    })
}

// ---- hot rows and blocks ----------------------------------------------------------------

/// Hot rows (sorted by time) cut into runs of one shape: `(shape id, rows)`.
pub(crate) fn shape_runs(rows: &[HotRow]) -> Vec<(i64, Range<usize>)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let id = rows[i].1;
        let mut j = i + 1;
        while j < rows.len() && rows[j].1 == id {
            j += 1;
        }
        runs.push((id, i..j));
        i = j;
    }
    runs
}

/// Adds a run of hot rows of one shape (`names`) to `frame`.
pub(crate) fn push_hot_run(
    frame: &mut Frame,
    names: &Names,
    rows: &[HotRow],
    filter: &SeriesFilter,
) -> Result<()> {
    let values = rows
        .iter()
        .map(|r| shape::decode_values(&r.2, names.len()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let refs: Vec<&str> = names.iter().map(|n| &**n).collect();
    frame.push_rows(
        &refs,
        rows.iter().zip(&values).map(|(r, v)| (r.0, v.as_slice())),
        filter,
    );
    Ok(())
}

/// Blocks (oldest first) as one frame of the samples with `from <= ts <= to`; stops after the
/// block that brings the count to `limit`.
pub(crate) fn blocks_frame(
    device_seq: i64,
    blocks: Vec<Vec<u8>>,
    from: i64,
    to: i64,
    limit: usize,
    filter: &SeriesFilter,
) -> Result<Frame> {
    let mut out = Frame::default();
    for data in blocks {
        if out.len() >= limit {
            break;
        }
        let mut f =
            block::decode(&data, filter).map_err(|e| corrupt(device_seq, "sample block", e))?;
        f.retain_range(from, to);
        out.append(f);
    }
    Ok(out)
}

/// How far blocks matter to a page of at most `limit` samples up to `to` whose hot rows are
/// `rows`: blocks past the last hot row of a full page cannot make the page.
pub(crate) fn page_horizon(rows: &[HotRow], limit: usize, to: i64) -> i64 {
    match rows.last() {
        Some(last) if rows.len() >= limit => last.0,
        _ => to,
    }
}

/// Samples with `from <= ts <= to` in blocks that lie partly in the range.
pub(crate) fn count_in_blocks(
    device_seq: i64,
    partial: &[Vec<u8>],
    from: i64,
    to: i64,
) -> Result<i64> {
    let mut n = 0;
    for data in partial {
        let ts = block::timestamps(data).map_err(|e| corrupt(device_seq, "sample block", e))?;
        n += ts.iter().filter(|t| (from..=to).contains(*t)).count() as i64;
    }
    Ok(n)
}

/// For devices whose newest data is compacted (silent for a while): their latest sample from
/// their newest block, given as `device -> (last_ts, block)`.
pub(crate) fn latest_from_blocks(
    out: &mut [DeviceWithLatest],
    newest: Vec<(i64, i64, Vec<u8>)>,
) -> Result<()> {
    let newest: HashMap<i64, (i64, Vec<u8>)> =
        newest.into_iter().map(|(s, t, d)| (s, (t, d))).collect();
    let all = SeriesFilter::all();
    for d in out {
        let Some((last, data)) = newest.get(&d.device.seq) else {
            continue;
        };
        if d.latest
            .as_ref()
            .is_none_or(|l| l.ts.last().is_none_or(|t| t < last))
        {
            let mut f =
                block::decode(data, &all).map_err(|e| corrupt(d.device.seq, "sample block", e))?;
            f.retain_range(*last, *last);
            f.drop_empty_series();
            d.latest = Some(f);
        }
    }
    Ok(())
}

/// A window's block after compaction: its existing block (late samples of a window already
/// compacted join it) and the hot rows moved into it.
pub(crate) struct NewBlock {
    pub data: Vec<u8>,
    pub first_ts: i64,
    pub last_ts: i64,
    pub count: i64,
}

pub(crate) fn merge_block(
    device_seq: i64,
    existing: Option<Vec<u8>>,
    hot: Frame,
) -> Result<Option<NewBlock>> {
    let mut frame = match existing {
        Some(b) => block::decode(&b, &SeriesFilter::all())
            .map_err(|e| corrupt(device_seq, "sample block", e))?,
        None => Frame::default(),
    };
    frame.append(hot);
    frame.sort();
    let data = block::encode(&frame).map_err(|e| corrupt(device_seq, "sample block", e))?;
    let (Some(lo), Some(hi)) = (frame.ts.first().copied(), frame.ts.last().copied()) else {
        return Ok(None);
    };
    Ok(Some(NewBlock {
        data,
        first_ts: lo,
        last_ts: hi,
        count: frame.len() as i64,
    }))
}

// ---- group commit -----------------------------------------------------------------------

/// A device's marks as group commit needs them.
pub(crate) struct Marks {
    pub minute: Option<i64>,
    pub block: Option<i64>,
}

/// Which batch each `(device, ts)` of a commit belongs to (the first that carries it).
pub(crate) fn owners(rows: &[(usize, i64, &Row)]) -> codec::FastMap<(i64, i64), usize> {
    let mut owner: codec::FastMap<(i64, i64), usize> = codec::FastMap::default();
    owner.reserve(rows.len());
    for (i, seq, r) in rows {
        owner.entry((*seq, r.ts)).or_insert(*i);
    }
    owner
}

/// Rows to store: `(device, ts, shape id, values)`, given each shape's id.
pub(crate) fn encode_rows(
    rows: &[(usize, i64, &Row)],
    ids: &codec::FastMap<&str, i64>,
) -> Vec<(i64, i64, i64, Vec<u8>)> {
    rows.iter()
        .map(|(_, seq, r)| {
            let id = ids.get(&*r.names).copied().unwrap_or_default();
            (*seq, r.ts, id, shape::encode_values(&r.values))
        })
        .collect()
}

/// The `(device, window start)` of the blocks that may already hold some of the samples
/// `(device, ts)` (those below their device's block mark).
pub(crate) fn windows_to_check(
    marks: &HashMap<i64, Marks>,
    samples: impl Iterator<Item = (i64, i64)>,
) -> Vec<(i64, i64)> {
    let mut windows: Vec<(i64, i64)> = samples
        .filter(|(seq, ts)| {
            marks
                .get(seq)
                .and_then(|m| m.block)
                .is_some_and(|m| *ts < m)
        })
        .map(|(seq, ts)| (seq, rollup::bucket_start(ts, BLOCK_MS)))
        .collect();
    windows.sort_unstable();
    windows.dedup();
    windows
}

/// Whether one of the blocks `found` (`(device, window) -> timestamps`) already holds the
/// sample `(device, ts)` (a replay of compacted data).
pub(crate) fn in_blocks(found: &BTreeMap<(i64, i64), HashSet<i64>>, seq: i64, ts: i64) -> bool {
    found
        .get(&(seq, rollup::bucket_start(ts, BLOCK_MS)))
        .is_some_and(|s| s.contains(&ts))
}

/// Drops from `rows` the samples the blocks `found` already hold.
pub(crate) fn drop_in_blocks(
    rows: &mut Vec<(i64, i64, i64, Vec<u8>)>,
    found: &BTreeMap<(i64, i64), HashSet<i64>>,
) {
    if found.is_empty() {
        return;
    }
    rows.retain(|(seq, ts, _, _)| !in_blocks(found, *seq, *ts));
}

/// The timestamps a stored block holds, as a set.
pub(crate) fn block_stamps(device_seq: i64, data: &[u8]) -> Result<HashSet<i64>> {
    let ts = block::timestamps(data).map_err(|e| corrupt(device_seq, "sample block", e))?;
    Ok(ts.into_iter().collect())
}

/// Newly inserted samples that fall below their device's minute mark: late ones, for the
/// rollup job to merge into the tiers.
pub(crate) fn late_of<'a>(
    marks: &HashMap<i64, Marks>,
    inserted: &'a [(i64, i64)],
) -> Vec<&'a (i64, i64)> {
    inserted
        .iter()
        .filter(|(seq, ts)| {
            marks
                .get(seq)
                .and_then(|m| m.minute)
                .is_some_and(|m| *ts < m)
        })
        .collect()
}

/// Distinct device seqs of a commit's batches that carry samples, sorted.
pub(crate) fn devices_seen(batches: &[SampleBatch]) -> Vec<i64> {
    let mut seen: Vec<i64> = batches
        .iter()
        .filter(|b| !b.samples.is_empty())
        .map(|b| b.device_seq)
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// Every sample of a commit as `(batch index, device, row)`.
pub(crate) fn flat_rows(batches: &[SampleBatch]) -> Vec<(usize, i64, &Row)> {
    batches
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.samples.iter().map(move |r| (i, b.device_seq, r)))
        .collect()
}

// ---- rollups ----------------------------------------------------------------------------

/// Where a rollup step of `tier` starts (the tier's mark) and the bucket-aligned limit it
/// may reach; `None` when there is nothing to do.
pub(crate) fn roll_range(
    tier: Tier,
    to: i64,
    minute_mark: Option<i64>,
    hour_mark: Option<i64>,
) -> Option<(Option<i64>, i64)> {
    let w = tier.width_ms();
    let (mark, limit) = match tier {
        Tier::Minute => (minute_mark, rollup::bucket_start(to, w)),
        Tier::Hour => (hour_mark, rollup::bucket_start(to.min(minute_mark?), w)),
    };
    if mark.is_some_and(|m| m >= limit) {
        return None;
    }
    Some((mark, limit))
}

/// The buckets `[start, end)` of one rollup step whose first data is at `first`.
pub(crate) fn step_span(
    tier: Tier,
    first: i64,
    lo: i64,
    limit: i64,
    max_span_ms: i64,
) -> (i64, i64) {
    let w = tier.width_ms();
    let start = rollup::bucket_start(first.max(lo), w);
    let mut end = rollup::bucket_start(start.saturating_add(max_span_ms.max(w)), w).min(limit);
    if tier == Tier::Minute {
        // A step never crosses an hour, so a replayed hour is one segment of its minute
        // block, not several and a merge.
        let hour = Tier::Hour.width_ms();
        end = end.min(rollup::bucket_start(start, hour).saturating_add(hour));
    }
    (start, end)
}

/// Minute rollups folded into their hours.
pub(crate) fn hours_of(minutes: Runs) -> BTreeMap<i64, rollup::Series> {
    let w = Tier::Hour.width_ms();
    let mut out: BTreeMap<i64, rollup::Series> = BTreeMap::new();
    for (b, series) in rollup::runs_to_buckets(minutes) {
        rollup::merge_series(out.entry(rollup::bucket_start(b, w)).or_default(), &series);
    }
    out
}

/// Minute buckets grouped by their hour.
pub(crate) fn minutes_by_hour(
    buckets: &BTreeMap<i64, rollup::Series>,
) -> BTreeMap<i64, Vec<(i64, rollup::Series)>> {
    let mut by_hour: BTreeMap<i64, Vec<(i64, rollup::Series)>> = BTreeMap::new();
    for (b, series) in buckets {
        by_hour
            .entry(rollup::bucket_start(*b, Tier::Hour.width_ms()))
            .or_default()
            .push((*b, series.clone()));
    }
    by_hour
}

/// Late rows `(device, ts)` chosen for a merge as one `(lo, hi)` range per device (they are,
/// per device, a run of its oldest late samples).
pub(crate) fn late_ranges(late: &[(i64, i64)]) -> BTreeMap<i64, (i64, i64)> {
    let mut ranges: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (seq, ts) in late {
        let r = ranges.entry(*seq).or_insert((*ts, *ts));
        r.0 = r.0.min(*ts);
        r.1 = r.1.max(*ts);
    }
    ranges
}

/// What a device's late samples add: minutes per hour (for the minute blocks) and, for hours
/// the hour tier already holds (below `hour_mark`), the hours' deltas.
#[allow(clippy::type_complexity)]
pub(crate) fn late_deltas(
    samples: &Frame,
    hour_mark: Option<i64>,
) -> (
    BTreeMap<i64, Vec<(i64, rollup::Series)>>,
    BTreeMap<i64, rollup::Series>,
) {
    let minutes = rollup::fold_frame(samples, Tier::Minute.width_ms());
    let mut hours: BTreeMap<i64, rollup::Series> = BTreeMap::new();
    let mut by_hour: BTreeMap<i64, Vec<(i64, rollup::Series)>> = BTreeMap::new();
    for (b, delta) in minutes {
        let h = rollup::bucket_start(b, Tier::Hour.width_ms());
        if hour_mark.is_some_and(|m| h < m) {
            rollup::merge_series(hours.entry(h).or_default(), &delta);
        }
        by_hour.entry(h).or_default().push((b, delta));
    }
    (by_hour, hours)
}

/// The minutes of an hour's segments and `extra`, minutes of the same bucket merged, sorted.
pub(crate) fn merge_minutes(
    device_seq: i64,
    blocks: &[Vec<u8>],
    extra: Vec<(i64, rollup::Series)>,
) -> Result<Vec<(i64, rollup::Series)>> {
    let mut minutes: BTreeMap<i64, rollup::Series> = BTreeMap::new();
    for data in blocks {
        for (b, s) in
            rollup::decode_block(data).map_err(|e| corrupt(device_seq, "minute block", e))?
        {
            rollup::merge_series(minutes.entry(b).or_default(), &s);
        }
    }
    for (b, s) in &extra {
        rollup::merge_series(minutes.entry(*b).or_default(), s);
    }
    Ok(minutes.into_iter().collect())
}

/// The one bucket of `runs` with `delta` merged into it.
pub(crate) fn merged_bucket(runs: Runs, delta: &rollup::Series) -> rollup::Series {
    let mut merged = rollup::runs_to_buckets(runs)
        .pop()
        .map(|(_, s)| s)
        .unwrap_or_default();
    rollup::merge_series(&mut merged, delta);
    merged
}

/// Decodes stored rollup rows `(bucket, data)` of `tier` into `runs`.
pub(crate) fn decode_rollups(
    device_seq: i64,
    tier: Tier,
    rows: Vec<(i64, Vec<u8>)>,
    filter: &SeriesFilter,
    sketches: bool,
    runs: &mut Runs,
) -> Result<()> {
    for (b, data) in rows {
        rollup::decode_into(&data, b, filter, sketches, runs)
            .map_err(|e| corrupt(device_seq, tier.name(), format!("rollup at {b}: {e}")))?;
    }
    Ok(())
}

/// Decodes minute blocks into `runs` (minutes in `[from, to)`).
pub(crate) fn decode_minute_blocks(
    device_seq: i64,
    blocks: Vec<Vec<u8>>,
    from: i64,
    to: i64,
    filter: &SeriesFilter,
    sketches: bool,
    runs: &mut Runs,
) -> Result<()> {
    for data in blocks {
        rollup::decode_block_into(&data, from, to, filter, sketches, runs)
            .map_err(|e| corrupt(device_seq, "minute block", e))?;
    }
    Ok(())
}
