//! History and statistics (seed 003's `/api/metrics/{id}` and `/api/stats/{id}`), answered
//! from the storage tiers: raw samples, 1-minute and 1-hour rollups. Series are the flattened
//! names of [`vitals_proto::series`].
//!
//! - `/api/metrics/{id}?from=&to=&points=` answers columnar data: one `timestamps` array and one
//!   array per series (`null` where a series has no value), at most `points` rows (default
//!   1000): above that, rows are averaged into equal time buckets. The planner
//!   ([`vitals_store::tiers::plan`]) reads the coarsest tier whose buckets are no wider than
//!   one step, finer tiers at the edges and for data not rolled up yet, coarser ones where
//!   finer data has expired; `sources` says which tier answered which span.
//! - `/api/stats/{id}?from=&to=` answers count, min, max, avg and p95 per series. Over raw
//!   samples only, p95 is the exact nearest-rank percentile (the value at rank ceil(0.95 n));
//!   when rollups answer part of the range it comes from their merged sketches, within 1 %
//!   (`approximate: true`). min, max, count and avg are exact either way.
//!
//! `from` and `to` are Unix milliseconds or RFC 3339; defaults: the last hour. Both take
//! `series=` to answer only some series (exact names, or prefixes ending in `*`).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use vitals_store::rollup::Rollup;
use vitals_store::tiers::{self, Level, Segment};
use vitals_store::{Frame, Runs, SeriesFilter};

use crate::auth::Viewer;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::routes::devices::find;
use crate::state::AppState;

/// Longest range one query may cover (400 days).
const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// Most raw samples one query reads (about 28 hours at 1 Hz), so that a viewer's request
/// cannot make the hub hold unbounded data in memory. Ranges answered at a coarser step come
/// from rollups and are not limited by this.
pub const MAX_RAW_ROWS: i64 = 100_000;

/// What one segment of a plan read.
enum Part {
    Raw(Frame),
    Rollups(Runs),
}

/// Reads `[from, to]` as the planner cuts it for `desired`, only the series `filter` wants,
/// refusing more than [`MAX_RAW_ROWS`] raw samples before reading them.
async fn read_plan(
    state: &AppState,
    device_seq: i64,
    (from, to): (i64, i64),
    desired: Level,
    filter: &SeriesFilter,
    sketches: bool,
) -> ApiResult<(Vec<Segment>, Vec<Part>)> {
    let bounds = state.store.tier_bounds(device_seq).await?;
    let segments = tiers::plan(from, to.saturating_add(1), desired, &bounds);
    let mut raw = 0;
    for s in segments.iter().filter(|s| s.level == Level::Raw) {
        raw += state
            .store
            .count_samples_between(device_seq, s.from, s.to - 1)
            .await?;
    }
    if raw > MAX_RAW_ROWS {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!(
                "the range holds {raw} raw samples; at most {MAX_RAW_ROWS} are read per query, so narrow `from`/`to` or ask for fewer `points`"
            ),
        ));
    }
    let mut parts = Vec::with_capacity(segments.len());
    for s in &segments {
        parts.push(match s.level.tier() {
            None => Part::Raw(
                state
                    .store
                    .samples(device_seq, s.from, s.to - 1, filter)
                    .await?,
            ),
            Some(tier) => Part::Rollups(
                state
                    .store
                    .rollups(device_seq, tier, s.from, s.to, filter, sketches)
                    .await?,
            ),
        });
    }
    Ok((segments, parts))
}

/// The sorted, distinct buckets of all series of `runs` (usually every series has the same).
fn buckets_of(runs: &Runs) -> Vec<i64> {
    let mut it = runs.values();
    let Some(first) = it.next() else {
        return Vec::new();
    };
    let mut out: Vec<i64> = first.iter().map(|c| c.0).collect();
    for cells in it {
        if cells.len() == out.len() && cells.iter().zip(&out).all(|(c, b)| c.0 == *b) {
            continue;
        }
        out.extend(cells.iter().map(|c| c.0));
        out.sort_unstable();
        out.dedup();
    }
    out
}

fn sources(segments: &[Segment]) -> serde_json::Value {
    segments
        .iter()
        .map(|s| {
            let level = match s.level {
                Level::Raw => "raw",
                Level::Minute => "minute",
                Level::Hour => "hour",
            };
            json!({"tier": level, "from": s.from, "to": s.to})
        })
        .collect()
}

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    points: Option<String>,
    series: Option<String>,
}

/// `series=cpu,mem.pct,disk.*`: which series to answer (exact names, or a prefix before
/// `*`); all when absent.
fn series_filter(q: &RangeQuery) -> ApiResult<SeriesFilter> {
    let Some(list) = q.series.as_deref() else {
        return Ok(SeriesFilter::all());
    };
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() || names.len() > 200 || names.iter().any(|n| n.len() > 256) {
        return Err(ApiError::bad_request(
            "invalid_series",
            "`series` must list 1 to 200 series names (each at most 256 bytes), comma-separated; end a name with `*` to match a prefix",
        ));
    }
    Ok(SeriesFilter::only(names))
}

fn parse_time(field: &str, v: &str) -> ApiResult<i64> {
    if let Ok(ms) = v.trim().parse::<i64>() {
        return Ok(ms);
    }
    vitals_proto::sample::parse_rfc3339_ms(v.trim()).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_range",
            format!("`{field}` must be Unix milliseconds or an RFC 3339 time"),
        )
    })
}

pub fn range(q: &RangeQuery) -> ApiResult<(i64, i64)> {
    let now = crate::now_ms();
    let to =
        q.to.as_deref()
            .map(|v| parse_time("to", v))
            .transpose()?
            .unwrap_or(now);
    let from = q
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to - 3_600_000);
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` must not be after `to`",
        ));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::bad_request(
            "invalid_range",
            "a range may cover at most 400 days",
        ));
    }
    Ok((from, to))
}

/// `GET /api/metrics/{id}`.
pub async fn metrics(
    State(state): State<AppState>,
    _v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<impl IntoResponse> {
    let (from, to) = range(&q)?;
    let points: usize = match q.points.as_deref() {
        None => 1000,
        Some(p) => match p.parse::<usize>() {
            Ok(n) if (1..=20_000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_points",
                    "`points` must be a whole number in 1..=20000",
                ));
            }
        },
    };
    let filter = series_filter(&q)?;
    let device = find(&state, &id).await?;
    let desired = Level::for_step((to - from) / points as i64);
    let (segments, parts) =
        read_plan(&state, device.seq, (from, to), desired, &filter, false).await?;
    // Each raw sample and each rollup bucket is one record at its time; segments are in
    // time order and disjoint, so the records are sorted.
    let mut records: Vec<i64> = Vec::new();
    let part_buckets: Vec<Vec<i64>> = parts
        .iter()
        .map(|p| match p {
            Part::Raw(f) => f.ts.clone(),
            Part::Rollups(r) => buckets_of(r),
        })
        .collect();
    for b in &part_buckets {
        records.extend_from_slice(b);
    }
    let (step, nslots) = if records.len() <= points {
        (0, records.len())
    } else {
        let step = ((to - from) / points as i64 + 1).max(1);
        (step, ((to - from) / step + 1) as usize)
    };
    // The output row of a record at `ts`: the record itself, or its equal-width bucket.
    let slot = |ts: i64| -> usize {
        if step == 0 {
            records.partition_point(|t| *t < ts)
        } else {
            (((ts - from).max(0) / step) as usize).min(nslots.saturating_sub(1))
        }
    };
    let mut present = vec![false; nslots];
    let mut ts_of = vec![0i64; nslots];
    for t in &records {
        let k = slot(*t);
        present[k] = true;
        ts_of[k] = if step == 0 {
            *t
        } else {
            from + k as i64 * step
        };
    }
    let mut sums: BTreeMap<String, (Vec<f64>, Vec<u64>)> = BTreeMap::new();
    fn column<'a>(
        sums: &'a mut BTreeMap<String, (Vec<f64>, Vec<u64>)>,
        name: &str,
        n: usize,
    ) -> &'a mut (Vec<f64>, Vec<u64>) {
        if !sums.contains_key(name) {
            sums.insert(name.to_string(), (vec![0.0; n], vec![0; n]));
        }
        sums.entry(name.to_string()).or_default()
    }
    for part in &parts {
        match part {
            Part::Raw(frame) => {
                let slots: Vec<usize> = frame.ts.iter().map(|t| slot(*t)).collect();
                for (name, col) in &frame.series {
                    let (sum, count) = column(&mut sums, name, nslots);
                    for (v, k) in col.iter().zip(&slots) {
                        if !v.is_nan() {
                            sum[*k] += v;
                            count[*k] += 1;
                        }
                    }
                }
            }
            Part::Rollups(runs) => {
                for (name, cells) in runs {
                    let (sum, count) = column(&mut sums, name, nslots);
                    for (b, r) in cells {
                        let k = slot(*b);
                        sum[k] += r.sum;
                        count[k] += r.count;
                    }
                }
            }
        }
    }
    let keep: Vec<usize> = (0..nslots).filter(|k| present[*k]).collect();
    let timestamps: Vec<i64> = keep.iter().map(|k| ts_of[*k]).collect();
    let series: BTreeMap<String, Vec<Option<f64>>> = sums
        .into_iter()
        .map(|(name, (sum, count))| {
            let col = keep
                .iter()
                .map(|k| (count[*k] > 0).then(|| sum[*k] / count[*k] as f64))
                .collect();
            (name, col)
        })
        .collect();
    // Serialised straight from these vectors: a 3,600 x 45 answer builds no JSON tree.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct History {
        device_id: String,
        from: i64,
        to: i64,
        step_ms: i64,
        timestamps: Vec<i64>,
        series: BTreeMap<String, Vec<Option<f64>>>,
        sources: serde_json::Value,
    }
    Ok(ApiJson(History {
        device_id: device.id,
        from,
        to,
        step_ms: step,
        timestamps,
        series,
        sources: sources(&segments),
    }))
}

/// Summary statistics of one series.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stat {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub p95: f64,
}

/// min/max/avg and nearest-rank p95 of `values` (sorted in place). None when empty.
pub fn stat(values: &mut [f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
    Some(Stat {
        count: n,
        min: values[0],
        max: values[n - 1],
        avg: values.iter().sum::<f64>() / n as f64,
        p95: values[rank - 1],
    })
}

/// `GET /api/stats/{id}`.
pub async fn stats(
    State(state): State<AppState>,
    _v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<impl IntoResponse> {
    let (from, to) = range(&q)?;
    let filter = series_filter(&q)?;
    let device = find(&state, &id).await?;
    let (segments, parts) =
        read_plan(&state, device.seq, (from, to), Level::Hour, &filter, true).await?;
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut rolled: BTreeMap<String, Rollup> = BTreeMap::new();
    let mut raw_rows = 0usize;
    for part in parts {
        match part {
            Part::Raw(frame) => {
                raw_rows += frame.len();
                for (name, col) in frame.series {
                    let v = values.entry(name).or_default();
                    v.extend(col.into_iter().filter(|x| !x.is_nan()));
                }
            }
            Part::Rollups(runs) => {
                for (name, cells) in runs {
                    for (_, r) in cells {
                        match rolled.get_mut(&name) {
                            Some(x) => x.merge(&r),
                            None => {
                                rolled.insert(name.clone(), r);
                            }
                        }
                    }
                }
            }
        }
    }
    let approximate = !rolled.is_empty();
    let mut series: BTreeMap<String, Stat> = BTreeMap::new();
    for (name, mut v) in values {
        match rolled.remove(&name) {
            None => {
                if let Some(s) = stat(&mut v) {
                    series.insert(name, s);
                }
            }
            Some(mut r) => {
                for x in v {
                    r.add(0, x);
                }
                series.insert(name, stat_of_rollup(&r));
            }
        }
    }
    for (name, r) in rolled {
        series.insert(name, stat_of_rollup(&r));
    }
    let samples = if approximate {
        series.values().map(|s| s.count).max().unwrap_or(0)
    } else {
        raw_rows
    };
    Ok(ApiJson(json!({
        "deviceId": device.id,
        "from": from,
        "to": to,
        "samples": samples,
        "approximate": approximate,
        "series": series,
        "sources": sources(&segments),
    })))
}

/// min/max/avg exactly and p95 from the sketch.
fn stat_of_rollup(r: &Rollup) -> Stat {
    Stat {
        count: r.count as usize,
        min: r.min,
        max: r.max,
        avg: r.avg(),
        p95: r.p95().unwrap_or(r.max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_p95() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = stat(&mut v).expect("stat");
        assert_eq!((s.min, s.max, s.avg, s.p95), (1.0, 100.0, 50.5, 95.0));
        let mut one = vec![3.0];
        assert_eq!(stat(&mut one).expect("stat").p95, 3.0);
        assert!(stat(&mut []).is_none());
    }
}
