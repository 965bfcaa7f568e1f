//! History and statistics (seed 003's `/api/metrics/{id}` and `/api/stats/{id}`), computed from
//! raw samples. Series are the flattened names of [`vitals_proto::series`].
//!
//! - `/api/metrics/{id}?from=&to=&points=` answers columnar data: one `timestamps` array and one
//!   array per series (`null` where a series has no value), at most `points` rows (default
//!   1000): above that, rows are averaged into equal time buckets.
//! - `/api/stats/{id}?from=&to=` answers min, max, avg and p95 per series. p95 is the
//!   nearest-rank percentile: the value at rank ceil(0.95 n) of the sorted values.
//!
//! `from` and `to` are Unix milliseconds or RFC 3339; defaults: the last hour.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use vitals_proto::MetricSample;

use crate::auth::Viewer;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::routes::devices::find;
use crate::state::AppState;

/// Longest range one query may cover (400 days).
const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// Most raw samples one query reads (about 28 hours at 1 Hz), so that a viewer's request
/// cannot make the hub hold unbounded data in memory. Longer ranges are answered from rollups
/// once the storage engine keeps them.
pub const MAX_RAW_ROWS: i64 = 100_000;

/// Reads the samples of a range, refusing ranges over [`MAX_RAW_ROWS`] before reading them.
async fn read_range(
    state: &AppState,
    device_seq: i64,
    from: i64,
    to: i64,
) -> ApiResult<Vec<vitals_store::StoredSample>> {
    let n = state
        .store
        .count_samples_between(device_seq, from, to)
        .await?;
    if n > MAX_RAW_ROWS {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!(
                "the range holds {n} raw samples; at most {MAX_RAW_ROWS} are read per query, so narrow `from`/`to`"
            ),
        ));
    }
    Ok(state.store.samples(device_seq, from, to).await?)
}

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    points: Option<String>,
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

fn decode(data: &[u8]) -> Option<MetricSample> {
    serde_json::from_slice(data).ok()
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
    let device = find(&state, &id).await?;
    let rows = read_range(&state, device.seq, from, to).await?;
    let (step, nbuckets) = if rows.len() <= points {
        (0, rows.len())
    } else {
        let step = ((to - from) / points as i64 + 1).max(1);
        (step, ((to - from) / step + 1) as usize)
    };
    let bucket_of = |i: usize, ts: i64| -> usize {
        if step == 0 {
            i
        } else {
            ((ts - from) / step) as usize
        }
    };
    let mut sums: BTreeMap<String, (Vec<f64>, Vec<u32>)> = BTreeMap::new();
    let mut present = vec![false; nbuckets];
    let mut ts_of = vec![0i64; nbuckets];
    for (i, r) in rows.iter().enumerate() {
        let Some(s) = decode(&r.data) else { continue };
        let b = bucket_of(i, r.ts).min(nbuckets.saturating_sub(1));
        present[b] = true;
        ts_of[b] = if step == 0 {
            r.ts
        } else {
            from + b as i64 * step
        };
        vitals_proto::series::for_each_series(&s, |name, v| {
            let e = sums
                .entry(name.to_string())
                .or_insert_with(|| (vec![0.0; nbuckets], vec![0; nbuckets]));
            e.0[b] += v;
            e.1[b] += 1;
        });
    }
    let keep: Vec<usize> = (0..nbuckets).filter(|b| present[*b]).collect();
    let timestamps: Vec<i64> = keep.iter().map(|b| ts_of[*b]).collect();
    let series: serde_json::Map<String, serde_json::Value> = sums
        .into_iter()
        .map(|(name, (sum, count))| {
            let col: Vec<Option<f64>> = keep
                .iter()
                .map(|b| (count[*b] > 0).then(|| sum[*b] / f64::from(count[*b])))
                .collect();
            (name, json!(col))
        })
        .collect();
    Ok(ApiJson(json!({
        "deviceId": device.id,
        "from": from,
        "to": to,
        "stepMs": step,
        "timestamps": timestamps,
        "series": series,
    })))
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
    let device = find(&state, &id).await?;
    let rows = read_range(&state, device.seq, from, to).await?;
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &rows {
        let Some(s) = decode(&r.data) else { continue };
        vitals_proto::series::for_each_series(&s, |name, v| {
            values.entry(name.to_string()).or_default().push(v);
        });
    }
    let series: BTreeMap<String, Stat> = values
        .into_iter()
        .filter_map(|(k, mut v)| stat(&mut v).map(|s| (k, s)))
        .collect();
    Ok(ApiJson(json!({
        "deviceId": device.id,
        "from": from,
        "to": to,
        "samples": rows.len(),
        "series": series,
    })))
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
