//! The storage tiers above raw samples: which level answers which part of a query
//! ([`plan`]), the rollup job that fills the tiers ([`roll_up_all`]) and per-tier retention
//! ([`retention`]).
//!
//! Levels, finest first: raw samples, 1-minute rollups, 1-hour rollups. The job rolls raw
//! samples into minutes up to each device's minute mark, minutes into hours up to the hour
//! mark, and merges samples that arrive late (below the minute mark) into both. Retention
//! only drops what the next coarser level already holds, so every sample is always counted
//! at some level, and each job step is one transaction, so a crash anywhere leaves each
//! sample counted exactly once.
//!
//! [`plan`] cuts a query range into segments, one level each, so that no sample is counted
//! twice and none is missed: a coarse bucket is used whole or not at all, except at the
//! query's own edges where no finer data is left.

use std::time::Duration;

use crate::rollup::{Tier, bucket_start};
use crate::{Result, Store, TierBounds};

/// A storage level, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Raw,
    Minute,
    Hour,
}

impl Level {
    /// The level whose resolution suits `step_ms` between points: the coarsest one whose
    /// buckets are no wider than a step.
    pub fn for_step(step_ms: i64) -> Level {
        if step_ms >= Tier::Hour.width_ms() {
            Level::Hour
        } else if step_ms >= Tier::Minute.width_ms() {
            Level::Minute
        } else {
            Level::Raw
        }
    }

    pub fn tier(self) -> Option<Tier> {
        match self {
            Level::Raw => None,
            Level::Minute => Some(Tier::Minute),
            Level::Hour => Some(Tier::Hour),
        }
    }

    fn finer(self) -> Level {
        match self {
            Level::Hour => Level::Minute,
            _ => Level::Raw,
        }
    }
}

/// Read `level` over `[from, to)`: raw samples with `from <= ts < to`, or the rollups whose
/// bucket starts in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub level: Level,
    pub from: i64,
    pub to: i64,
}

/// Half-open spans each level can answer, aligned so that no sample is in two of them.
#[derive(Debug, Clone, Copy)]
struct Spans {
    hour: Option<(i64, i64)>,
    minute: Option<(i64, i64)>,
    /// Raw is available from here on.
    raw: Option<i64>,
}

fn ceil(t: i64, w: i64) -> i64 {
    bucket_start(t, w).saturating_add(if t.rem_euclid(w) == 0 { 0 } else { w })
}

fn covers(span: Option<(i64, i64)>, t: i64) -> bool {
    span.is_some_and(|(lo, hi)| lo <= t && t < hi)
}

impl Spans {
    fn new(b: &TierBounds) -> Spans {
        let hour = b.hour.filter(|(lo, hi)| lo < hi);
        // Minute buckets inside an hour the hour tier holds start with the next whole hour,
        // so that hour is read whole from one tier.
        let minute = b
            .minute
            .map(|(lo, hi)| {
                if covers(hour, lo) {
                    (ceil(lo, Tier::Hour.width_ms()), hi)
                } else {
                    (lo, hi)
                }
            })
            .filter(|(lo, hi)| lo < hi);
        // Raw is complete from its floor (retention only drops below it), or everywhere
        // when retention never dropped any; a floor inside a rolled-up bucket moves to that
        // bucket's end.
        let raw = Some(b.raw_floor.unwrap_or(i64::MIN)).map(|lo| {
            if lo == i64::MIN {
                lo
            } else if covers(minute, lo) {
                ceil(lo, Tier::Minute.width_ms())
            } else if covers(hour, lo) {
                ceil(lo, Tier::Hour.width_ms())
            } else {
                lo
            }
        });
        Spans { hour, minute, raw }
    }

    fn of(&self, level: Level) -> Option<(i64, i64)> {
        match level {
            Level::Hour => self.hour,
            Level::Minute => self.minute,
            Level::Raw => self.raw.map(|lo| (lo, i64::MAX)),
        }
    }
}

/// Cuts `[from, to)` into segments, oldest first, reading `desired` wherever it can answer
/// whole buckets, finer levels at the edges and for data not rolled up yet, and coarser
/// levels for data finer levels no longer hold.
pub fn plan(from: i64, to: i64, desired: Level, bounds: &TierBounds) -> Vec<Segment> {
    let spans = Spans::new(bounds);
    let mut out = Vec::new();
    plan_into(&mut out, from, to, desired, &spans);
    out
}

fn plan_into(out: &mut Vec<Segment>, from: i64, to: i64, level: Level, spans: &Spans) {
    if from >= to {
        return;
    }
    let Some(tier) = level.tier() else {
        // Raw: from where raw begins; before it, whatever coarser data is left.
        match spans.raw {
            Some(lo) if lo < to => {
                let a = lo.max(from);
                coarse(out, from, a, spans);
                out.push(Segment {
                    level: Level::Raw,
                    from: a,
                    to,
                });
            }
            _ => coarse(out, from, to, spans),
        }
        return;
    };
    let w = tier.width_ms();
    let Some((lo, hi)) = spans.of(level) else {
        return plan_into(out, from, to, level.finer(), spans);
    };
    let a = ceil(from, w).max(lo);
    let b = bucket_start(to, w).min(hi);
    if a < b {
        plan_into(out, from, a, level.finer(), spans);
        out.push(Segment {
            level,
            from: a,
            to: b,
        });
        plan_into(out, b, to, level.finer(), spans);
    } else {
        plan_into(out, from, to, level.finer(), spans);
    }
}

/// Data older than raw: minute buckets where the minute tier has them, hour buckets before
/// that, including the partial bucket at `from` (nothing finer is left for it).
fn coarse(out: &mut Vec<Segment>, from: i64, to: i64, spans: &Spans) {
    if from >= to {
        return;
    }
    let mut to = to;
    if let Some((lo, hi)) = spans.minute
        && lo < to
        && from < hi
    {
        let a = from.max(lo);
        out_push_later(out, from, a, spans);
        out.push(Segment {
            level: Level::Minute,
            from: bucket_start(a, Tier::Minute.width_ms()),
            to: to.min(hi),
        });
        return;
    }
    if let Some((lo, hi)) = spans.hour
        && lo < to
        && from < hi
    {
        to = to.min(hi);
        out.push(Segment {
            level: Level::Hour,
            from: bucket_start(from.max(lo), Tier::Hour.width_ms()),
            to,
        });
    }
}

/// The part of a coarse range before the minute tier begins goes to the hour tier.
fn out_push_later(out: &mut Vec<Segment>, from: i64, to: i64, spans: &Spans) {
    if from >= to {
        return;
    }
    if let Some((lo, hi)) = spans.hour
        && lo < to
        && from < hi
    {
        out.push(Segment {
            level: Level::Hour,
            from: bucket_start(from.max(lo), Tier::Hour.width_ms()),
            to: to.min(hi),
        });
    }
}

/// How long the job waits after a minute ends before rolling it up, so samples in flight
/// land first (later ones are merged as late samples).
pub const LAG_MS: i64 = 10_000;
/// Most raw time one transaction rolls up per device (3,600 samples at 1 Hz; steps also stop
/// at hour boundaries).
const MINUTE_SPAN_MS: i64 = 60 * 60_000;
/// Most minute time one transaction rolls into hours per device.
const HOUR_SPAN_MS: i64 = 24 * 3_600_000;
/// Late samples merged per transaction.
const LATE_CHUNK: i64 = 500;

/// What one pass of the job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobReport {
    pub minute_buckets: u64,
    pub hour_buckets: u64,
    pub late_samples: u64,
    /// Hot raw samples moved into column blocks.
    pub compacted: u64,
}

/// One pass of the tier job at time `now`: every device's minutes up to `now - LAG_MS`,
/// then late samples, then hours, then compaction of rolled-up raw samples into column
/// blocks ([`crate::block`]). Each step is a short transaction of one device or of a few
/// (the backend's choice); a failed pass is simply run again.
pub async fn roll_up_all(store: &dyn Store, now: i64) -> Result<JobReport> {
    let to = now.saturating_sub(LAG_MS);
    let mut report = JobReport::default();
    let seqs = store.device_seqs().await?;
    report.minute_buckets +=
        each_device(store, &seqs, Pass::Roll(Tier::Minute, MINUTE_SPAN_MS), to).await?;
    loop {
        let n = store.roll_up_late(LATE_CHUNK).await?;
        report.late_samples += n;
        if n == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    report.hour_buckets +=
        each_device(store, &seqs, Pass::Roll(Tier::Hour, HOUR_SPAN_MS), to).await?;
    report.compacted += each_device(store, &seqs, Pass::Compact, to).await?;
    Ok(report)
}

/// A pass of the tier job over every device.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// Rollups into a tier, at most this span per step.
    Roll(Tier, i64),
    /// Compaction of raw samples into blocks.
    Compact,
}

/// Runs `pass` over every device until each is done, below `to`. Each call to the store
/// takes the devices still to do from some point on and steps as many of the first as it
/// groups into one transaction. Returns the buckets written or samples compacted.
async fn each_device(store: &dyn Store, seqs: &[i64], pass: Pass, to: i64) -> Result<u64> {
    let mut total = 0;
    let mut pending: Vec<i64> = seqs.to_vec();
    while !pending.is_empty() {
        let mut again = Vec::new();
        let mut at = 0;
        while let Some(rest) = pending.get(at..).filter(|r| !r.is_empty()) {
            let steps: Vec<(u64, bool)> = match pass {
                Pass::Roll(tier, span) => store
                    .roll_up_devices(rest, tier, to, span)
                    .await?
                    .into_iter()
                    .map(|s| (s.buckets, s.done))
                    .collect(),
                Pass::Compact => store
                    .compact_devices(rest, to)
                    .await?
                    .into_iter()
                    .map(|s| (s.samples, s.done))
                    .collect(),
            };
            if steps.is_empty() {
                break;
            }
            for (seq, (n, done)) in rest.iter().zip(&steps) {
                total += n;
                if !done {
                    again.push(*seq);
                }
            }
            at += steps.len();
            tokio::task::yield_now().await;
        }
        pending = again;
    }
    Ok(total)
}

/// How long each level keeps data.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub raw_ms: i64,
    pub minute_ms: i64,
    pub hour_ms: i64,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub raw: u64,
    pub minute: u64,
    pub hour: u64,
}

/// Deletes what each level no longer keeps, `chunk` rows per transaction with `pause`
/// between them, so ingest never waits long for the write lock. Cut-offs are aligned to the
/// next coarser bucket, so a bucket is dropped whole. `stop` ends the pass early.
pub async fn retention(
    store: &dyn Store,
    now: i64,
    keep: Retention,
    chunk: i64,
    pause: Duration,
    stop: impl Fn() -> bool,
) -> Result<RetentionReport> {
    let minute = Tier::Minute.width_ms();
    let hour = Tier::Hour.width_ms();
    let mut report = RetentionReport::default();
    let raw_cut = bucket_start(now.saturating_sub(keep.raw_ms), minute);
    let minute_cut = bucket_start(now.saturating_sub(keep.minute_ms), hour);
    let hour_cut = bucket_start(now.saturating_sub(keep.hour_ms), hour);
    for level in [Level::Raw, Level::Minute, Level::Hour] {
        loop {
            let n = match level {
                Level::Raw => store.delete_samples_before(raw_cut, chunk).await?,
                Level::Minute => {
                    store
                        .delete_rollups_before(Tier::Minute, minute_cut, chunk)
                        .await?
                }
                Level::Hour => {
                    store
                        .delete_rollups_before(Tier::Hour, hour_cut, chunk)
                        .await?
                }
            };
            match level {
                Level::Raw => report.raw += n,
                Level::Minute => report.minute += n,
                Level::Hour => report.hour += n,
            }
            if n == 0 || stop() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: i64 = 60_000;
    const H: i64 = 3_600_000;

    /// A world of one sample per second over `[0, end)`: raw from `raw_lo`, minute buckets
    /// in `[m_lo, m_hi)`, hour buckets in `[h_lo, h_hi)`, as the job and retention leave them.
    #[derive(Debug, Clone, Copy)]
    struct World {
        end: i64,
        start: i64,
        /// Raw retention's cut-off (0: never ran).
        cut: i64,
        raw_lo: i64,
        m_lo: i64,
        m_hi: i64,
        h_lo: i64,
        h_hi: i64,
    }

    impl World {
        fn bounds(&self) -> TierBounds {
            TierBounds {
                raw_lo: (self.raw_lo < self.end).then_some(self.raw_lo),
                raw_floor: (self.cut > 0).then_some(self.cut),
                minute: (self.m_lo < self.m_hi).then_some((self.m_lo, self.m_hi)),
                hour: (self.h_lo < self.h_hi).then_some((self.h_lo, self.h_hi)),
            }
        }

        /// Is the sample at `ts` held by `level`?
        fn holds(&self, level: Level, ts: i64) -> bool {
            if ts < self.start {
                return false;
            }
            match level {
                Level::Raw => ts >= self.raw_lo && ts < self.end,
                Level::Minute => {
                    let b = bucket_start(ts, M);
                    b >= self.m_lo && b < self.m_hi && ts < self.end
                }
                Level::Hour => {
                    let b = bucket_start(ts, H);
                    b >= self.h_lo && b < self.h_hi && ts < self.end
                }
            }
        }

        /// Does the segment count the sample at `ts`?
        fn counts(&self, seg: &Segment, ts: i64) -> bool {
            let key = match seg.level {
                Level::Raw => ts,
                Level::Minute => bucket_start(ts, M),
                Level::Hour => bucket_start(ts, H),
            };
            key >= seg.from && key < seg.to && self.holds(seg.level, ts)
        }
    }

    fn world() -> impl Strategy<Value = World> {
        // Data from `start` (any second) on; marks and retention cut-offs as the job and
        // `retention` leave them: the hour mark at or below the minute mark, each level
        // dropped (bucket-aligned) only below the next one's mark.
        (
            (1i64..30, 0i64..=100),
            (0i64..=100, 0i64..=100, 0i64..=100, 0i64..=100, 0i64..=100),
        )
            .prop_map(|((hours, st), (hm, mm, mlo, hlo, rlo))| {
                let end = hours * H;
                let start = (end * st / 100) / 1000 * 1000;
                let m_hi = bucket_start(end * mm / 100, M);
                let h_hi = bucket_start(m_hi * hm / 100, H);
                let m_lo = bucket_start(start, M).max(bucket_start(h_hi * mlo / 100, H));
                let h_lo = bucket_start(start, H).max(bucket_start(m_lo * hlo / 100, H));
                let cut = bucket_start(m_hi * rlo / 100, M);
                let raw_lo = start.max(cut);
                World {
                    end,
                    start,
                    cut,
                    raw_lo,
                    m_lo,
                    m_hi,
                    h_lo,
                    h_hi,
                }
            })
    }

    proptest! {
        /// Whatever the query and level, each stored sample in the range is counted exactly
        /// once, and samples outside it only through a partial bucket at an edge.
        #[test]
        fn every_sample_exactly_once(
            w in world(),
            a in 0.0..1.0f64,
            b in 0.0..1.0f64,
            level in prop_oneof![Just(Level::Raw), Just(Level::Minute), Just(Level::Hour)],
        ) {
            let span = w.end + 2 * H;
            let (x, y) = ((a * span as f64) as i64 - H, (b * span as f64) as i64 - H);
            let (from, to) = (x.min(y), x.max(y));
            let segs = plan(from, to, level, &w.bounds());
            for pair in segs.windows(2) {
                prop_assert!(pair[0].to <= pair[1].from, "ordered, disjoint: {:?}", segs);
            }
            let lo = from.max(0) - H;
            let hi = to.min(w.end) + H;
            let mut t = lo - lo.rem_euclid(1000);
            while t < hi {
                let n = segs.iter().filter(|s| w.counts(s, t)).count();
                let stored = [Level::Raw, Level::Minute, Level::Hour].iter().any(|l| w.holds(*l, t));
                if t >= from && t < to && stored {
                    prop_assert_eq!(n, 1, "sample {} counted {} times: {:?} {:?}", t, n, w, segs);
                } else {
                    prop_assert!(n <= 1, "sample {} counted {} times: {:?}", t, n, segs);
                }
                t += 1000;
            }
        }
    }

    #[test]
    fn the_desired_level_answers_whole_buckets_and_raw_the_rest() {
        let w = World {
            end: 5 * H,
            start: 0,
            cut: 0,
            raw_lo: 0,
            m_lo: 0,
            m_hi: 4 * H + 30 * M,
            h_lo: 0,
            h_hi: 4 * H,
        };
        let segs = plan(H / 2, 5 * H, Level::Hour, &w.bounds());
        assert_eq!(
            segs,
            vec![
                Segment {
                    level: Level::Minute,
                    from: H / 2,
                    to: H
                },
                Segment {
                    level: Level::Hour,
                    from: H,
                    to: 4 * H
                },
                Segment {
                    level: Level::Minute,
                    from: 4 * H,
                    to: 4 * H + 30 * M
                },
                Segment {
                    level: Level::Raw,
                    from: 4 * H + 30 * M,
                    to: 5 * H
                },
            ]
        );
        assert_eq!(
            plan(10, 20 * M, Level::Raw, &w.bounds()),
            vec![Segment {
                level: Level::Raw,
                from: 10,
                to: 20 * M
            }]
        );
    }
}
