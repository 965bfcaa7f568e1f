//! Crash safety of the tier work: the rollup job, late merges and retention fail at every
//! step point in turn (inside their transactions, as a crash there would). After each
//! failure the job and retention are simply run again; then every sample is counted exactly
//! once across raw, minute and hour data, and `PRAGMA integrity_check` is clean.

use std::time::Duration;

use vitals_store::rollup::{self, Series};
use vitals_store::suite::metric_row;
use vitals_store::tiers::{self, Level, Retention};
use vitals_store::{Frame, SampleBatch, SeriesFilter, SqliteStore, Store, StoreError};

const M: i64 = 60_000;
const H: i64 = 3_600_000;
const T0: i64 = 1_000 * H;

/// Every 20 s over 1 h 10 min for two devices, except a hole that arrives late.
fn stamps() -> Vec<i64> {
    (0..(2 * H + 10 * M) / 10_000)
        .map(|i| T0 + i * 10_000)
        .collect()
}

fn in_hole(ts: i64) -> bool {
    (T0 + 20 * M..T0 + 25 * M).contains(&ts)
}

fn batch(seq: i64, late: bool) -> SampleBatch {
    SampleBatch {
        device_seq: seq,
        samples: stamps()
            .into_iter()
            .filter(|t| in_hole(*t) == late)
            .map(|t| metric_row(t, (t / 20_000 % 101) as f64))
            .collect(),
        now: 1,
    }
}

/// The whole of each device, folded straight from what was sent.
fn reference(seq: i64) -> Series {
    let mut all = Series::new();
    for b in [batch(seq, false), batch(seq, true)] {
        for (_, s) in rollup::fold_frame(&Frame::of_rows(&b.samples), 1 << 50) {
            rollup::merge_series(&mut all, &s);
        }
    }
    all
}

/// Everything the store holds for the device, read as the query planner cuts it.
async fn planned(store: &dyn Store, seq: i64) -> Series {
    let bounds = store.tier_bounds(seq).await.expect("bounds");
    let mut all = Series::new();
    for seg in tiers::plan(0, i64::MAX, Level::Hour, &bounds) {
        let parts = match seg.level.tier() {
            None => {
                let raw = store
                    .samples(seq, seg.from, seg.to - 1, &SeriesFilter::all())
                    .await
                    .expect("raw");
                rollup::fold_frame(&raw, 1 << 50).into_values().collect()
            }
            Some(t) => rollup::runs_to_buckets(
                store
                    .rollups(seq, t, seg.from, seg.to, &SeriesFilter::all(), true)
                    .await
                    .expect("rollups"),
            )
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>(),
        };
        for s in &parts {
            rollup::merge_series(&mut all, s);
        }
    }
    all
}

fn assert_same(got: &Series, want: &Series, ctx: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{ctx}"
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(
            (g.count, g.min, g.max, g.last_ts),
            (w.count, w.min, w.max, w.last_ts),
            "{ctx}: {k}"
        );
        assert!(
            (g.sum - w.sum).abs() <= 1e-6 * w.sum.abs().max(1.0),
            "{ctx}: {k}"
        );
        assert_eq!(g.sketch, w.sketch, "{ctx}: {k}");
    }
}

/// The job's second phase: the hole arrives late, then rollups and retention.
const NOW: i64 = T0 + H + 10 * M + 20_000;
const KEEP: Retention = Retention {
    raw_ms: 30 * M,
    minute_ms: 10 * M,
    hour_ms: 1000 * H,
};

async fn work(store: &SqliteStore, late_sent: &mut bool) -> Result<(), StoreError> {
    tiers::roll_up_all(store, NOW - 30 * M).await?;
    if !*late_sent {
        let seqs = store.device_seqs().await?;
        let late: Vec<SampleBatch> = seqs.iter().map(|s| batch(*s, true)).collect();
        store.insert_batches(&late).await?;
        *late_sent = true;
    }
    tiers::roll_up_all(store, NOW).await?;
    tiers::retention(store, NOW, KEEP, 200, Duration::ZERO, || false).await?;
    Ok(())
}

#[tokio::test]
async fn a_failure_at_every_step_leaves_every_sample_exactly_once() {
    let mut n = 1u64;
    loop {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("vitals.db"))
            .await
            .expect("open");
        let mut seqs = Vec::new();
        for name in ["a", "b"] {
            let d = store
                .create_device(vitals_store::suite::device(name))
                .await
                .expect("device");
            seqs.push(d.seq);
        }
        let first: Vec<SampleBatch> = seqs.iter().map(|s| batch(*s, false)).collect();
        store.insert_batches(&first).await.expect("insert");

        store.inject_failure(n);
        let mut late_sent = false;
        let failed = match work(&store, &mut late_sent).await {
            Err(StoreError::Injected(at)) => Some(at),
            Err(e) => panic!("step {n}: unexpected error {e}"),
            Ok(()) => None,
        };
        store.inject_failure(0);
        // Run again, as the hub's next pass would, to the end.
        work(&store, &mut late_sent).await.expect("rerun");
        let ctx = format!("failure at step {n} ({failed:?})");
        for seq in &seqs {
            assert_same(&planned(&store, *seq).await, &reference(*seq), &ctx);
            // All of it is in the hour and minute tiers, whatever raw retention left.
            let b = store.tier_bounds(*seq).await.expect("bounds");
            assert_eq!(b.minute, Some((T0 + H, T0 + H + 10 * M)), "{ctx}");
            assert_eq!(b.hour, Some((T0, T0 + H)), "{ctx}");
            assert_eq!(b.raw_lo, Some(T0 + 40 * M), "{ctx}");
        }
        store.integrity_check().await.expect("integrity_check");
        store.close().await;
        if failed.is_none() {
            // Every step point has failed once.
            assert!(n > 50, "the work has many step points, saw {n}");
            break;
        }
        n += 1;
    }
}
