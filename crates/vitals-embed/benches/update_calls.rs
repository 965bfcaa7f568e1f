//! Cost of each update call while 8 threads call it concurrently.
//!
//! Each measurement runs 8 threads that make `iters` calls each, timing every batch of 64
//! calls. The reported time per iteration is the MEDIAN batch time divided by 64, i.e. the
//! median cost of one call under contention. Batches during which the OS preempted the thread
//! (8 threads on fewer cores) land in the tail and do not move the median.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use vitals_embed::{Config, Dashboard, DashboardHandle, Health, JobInfo, JobStatus, Severity};

const THREADS: usize = 8;
const BATCH: u64 = 64;

fn contended(
    iters: u64,
    handle: &DashboardHandle,
    call: fn(&DashboardHandle, usize, u64),
) -> Duration {
    prepared(iters, handle, |_, i| i, call)
}

/// Like `contended`, but the input of each call is built by `prep` before its batch is timed,
/// so only the call itself is measured.
fn prepared<T: Send>(
    iters: u64,
    handle: &DashboardHandle,
    prep: fn(usize, u64) -> T,
    call: fn(&DashboardHandle, usize, T),
) -> Duration {
    let barrier = Arc::new(Barrier::new(THREADS));
    let batches = iters.div_ceil(BATCH).max(1);
    let mut samples: Vec<Duration> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    let mut times = Vec::with_capacity(batches as usize);
                    let mut inputs = Vec::with_capacity(BATCH as usize);
                    barrier.wait();
                    for b in 0..batches {
                        inputs.extend((0..BATCH).map(|i| prep(t, b * BATCH + i)));
                        let start = Instant::now();
                        for input in inputs.drain(..) {
                            call(handle, t, input);
                        }
                        times.push(start.elapsed());
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or_default();
    median / BATCH as u32 * iters as u32
}

fn job(t: usize, i: u64) -> JobInfo {
    JobInfo {
        id: format!("job-{:05}", (t * 7 + i as usize) % 50),
        name: String::from("export-vm-prod-01"),
        status: JobStatus::Running,
        progress: (i % 100) as f64,
        start_time: SystemTime::UNIX_EPOCH,
        end_time: None,
        provider: String::from("aws"),
        vm_name: String::from("prod-web-01"),
    }
}

fn bench(c: &mut Criterion) {
    let dash = Dashboard::new(Config::default()).unwrap_or_else(|e| panic!("{e}"));
    let handle = dash.handle();
    // A full job table, as in a busy application.
    for i in 0..50 {
        handle.add_job(JobInfo::new(format!("job-{i:05}"), "warm-up"));
    }
    let mut g = c.benchmark_group("update_calls_8_threads");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);

    g.bench_function("update_job_metrics", |b| {
        b.iter_custom(|n| {
            contended(n, &handle, |h, t, i| {
                h.update_job_metrics(black_box(i), i, t as u64, 3, 4)
            })
        })
    });
    g.bench_function("update_system_metrics", |b| {
        b.iter_custom(|n| {
            contended(n, &handle, |h, _, i| {
                h.update_system_metrics(black_box(i), i as f64 * 0.5, 12)
            })
        })
    });
    g.bench_function("update_http_metrics", |b| {
        b.iter_custom(|n| {
            contended(n, &handle, |h, _, i| {
                h.update_http_metrics(black_box(i), i / 100, 12.5)
            })
        })
    });
    g.bench_function("set_system_health", |b| {
        b.iter_custom(|n| {
            contended(n, &handle, |h, _, i| {
                h.set_system_health(if i % 2 == 0 {
                    Health::Healthy
                } else {
                    Health::Degraded
                })
            })
        })
    });
    g.bench_function("add_job_update_existing", |b| {
        // The JobInfo is built before the batch is timed: this is the call's own cost,
        // including dropping the job it replaces.
        b.iter_custom(|n| prepared(n, &handle, job, |h, _, j| h.add_job(j)))
    });
    g.bench_function("add_job_including_building_jobinfo", |b| {
        // Building the JobInfo (a format! and three Strings) inside the timed loop, as a
        // caller that makes a fresh JobInfo per update would.
        b.iter_custom(|n| contended(n, &handle, |h, t, i| h.add_job(job(t, i))))
    });
    g.bench_function("add_alert", |b| {
        b.iter_custom(|n| {
            contended(n, &handle, |h, _, _| {
                h.add_alert(Severity::Warning, "High memory usage detected")
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
