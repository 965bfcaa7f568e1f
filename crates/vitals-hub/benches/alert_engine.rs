//! CPU cost of the alert engine per (sample, rule): 1,000 devices, 10 rules that apply to
//! every device (so 10 rule evaluations per sample, per-mount rules evaluating each mount),
//! one realistic sample per device per iteration-second. A handful of devices run hot, so
//! states go pending, fire and resolve during the run as they would in a fleet.
//!
//! The reported time is for ONE second of the whole fleet (1,000 samples x 10 rules =
//! 10,000 evaluations); divide by 10,000 for the cost of one (sample, rule).
//!   cargo bench -p vitals-hub --bench alert_engine

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use vitals_hub::alerts::engine::{DeviceInfo, Engine, Step};
use vitals_hub::alerts::rule::{Metric, Op, Rule, Severity};
use vitals_hub::demo::SimHost;
use vitals_proto::MetricSample;

const DEVICES: usize = 1000;
const T0: i64 = 1_700_000_000_000;

fn rule(i: usize, metric: Metric, threshold: f64, duration: u32) -> Rule {
    Rule {
        id: format!("00000000-0000-0000-0000-{i:012}"),
        name: format!("rule {i}"),
        device_ids: vec![],
        metric,
        subject: None,
        op: Op::Gt,
        threshold,
        duration_sec: duration,
        recovery_sec: duration,
        hysteresis: 2.0,
        severity: Severity::Warning,
        channel_ids: vec![],
        repeat_sec: 300,
        enabled: true,
        quiet_hours: None,
        builtin: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn rules() -> Vec<Rule> {
    vec![
        rule(1, Metric::Cpu, 80.0, 30),
        rule(2, Metric::Memory, 90.0, 60),
        rule(3, Metric::Swap, 50.0, 60),
        rule(4, Metric::Disk, 90.0, 60),
        rule(5, Metric::Inodes, 90.0, 60),
        rule(6, Metric::Load, 8.0, 60),
        rule(7, Metric::NetRx, 100e6, 30),
        rule(8, Metric::NetTx, 100e6, 30),
        rule(9, Metric::Temperature, 85.0, 30),
        rule(10, Metric::Cpu, 95.0, 5),
    ]
}

fn bench(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let ids: Vec<String> = (0..DEVICES)
        .map(|i| format!("d{i:04}-0000-0000-0000-000000000000"))
        .collect();
    let mut hosts: Vec<SimHost> = ids
        .iter()
        .map(|id| SimHost::new(id.clone(), &mut rng))
        .collect();
    // 60 s of samples per device, precomputed so only the engine is timed.
    let seconds = 60;
    let mut samples: Vec<Vec<MetricSample>> = Vec::with_capacity(seconds);
    for s in 0..seconds {
        samples.push(
            hosts
                .iter_mut()
                .enumerate()
                .map(|(i, h)| {
                    let mut x = h.next(T0 + s as i64 * 1000, &mut rng);
                    // 2 % of the fleet runs hot half of the time.
                    if i % 50 == 0 && (s / 15) % 2 == 1 {
                        x.cpu.total = 99.0;
                    }
                    x
                })
                .collect(),
        );
    }
    let mut engine = Engine::new(T0, Box::new(|| uuid::Uuid::new_v4().to_string()));
    engine.set_devices(ids.iter().map(|id| {
        (
            id.clone(),
            DeviceInfo {
                name: id.clone(),
                last_seen: Some(T0),
            },
        )
    }));
    engine.set_rules(rules(), T0);
    let mut second = 0usize;
    let mut round = 0i64;
    c.bench_function("fleet_second_1000_devices_x_10_rules", |b| {
        b.iter(|| {
            let batch = &mut samples[second];
            // Keep timestamps moving forward across rounds (older ones are ignored).
            for s in batch.iter_mut() {
                s.ts = T0 + (round * seconds as i64 + second as i64) * 1000;
            }
            let mut step = Step::default();
            for (id, s) in ids.iter().zip(batch.iter()) {
                engine.observe(id, std::slice::from_ref(s), s.ts, &mut step);
            }
            black_box(&step);
            second += 1;
            if second == seconds {
                second = 0;
                round += 1;
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
