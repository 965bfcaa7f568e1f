//! CPU cost of one sample on this machine, split into collecting and serialising:
//! `cargo run --release -p vitals-agent --example sample_cost [-- N]`.

use std::time::Instant;

use vitals_agent::collect::{Collector, Options};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    per_source(n);
    state_cost(n);
    for kernel in [false, true] {
        let mut c = Collector::with_options(
            "bench".into(),
            Options {
                docker: false,
                gpu: false,
                kernel,
                ..Options::default()
            },
        );
        let (mut collect, mut json, mut bytes, mut values) = (0.0, 0.0, 0, 0);
        for i in 0..n {
            let t = Instant::now();
            let s = c.sample(1_700_000_000_000 + i64::from(i) * 1000);
            let t1 = Instant::now();
            let text = serde_json::to_string(&s).unwrap_or_default();
            let t2 = Instant::now();
            collect += (t1 - t).as_secs_f64();
            json += (t2 - t1).as_secs_f64();
            bytes = text.len();
            values = 0;
            vitals_proto::series::for_each_series(&s, |_, _| values += 1);
        }
        let per = |x: f64| x / f64::from(n) * 1e6;
        println!(
            "kernel={kernel}: collect {:.0} us, serialise {:.0} us per sample; {values} values, {bytes} bytes of JSON",
            per(collect),
            per(json)
        );
    }
}

/// Per kernel source: reading the file and parsing it, microseconds.
#[allow(dead_code)]
pub fn per_source(n: u32) {
    use vitals_agent::collect::kernel::{Reading, SOURCES};
    for (path, parse) in SOURCES {
        let (mut read, mut parsed) = (0.0, 0.0);
        for _ in 0..n {
            let t = Instant::now();
            let text =
                std::fs::read_to_string(std::path::Path::new("/").join(path)).unwrap_or_default();
            let t1 = Instant::now();
            let mut r = Reading::default();
            parse(&text, &mut r);
            parsed += t1.elapsed().as_secs_f64();
            read += (t1 - t).as_secs_f64();
        }
        println!(
            "{path}: read {:.1} us, parse {:.1} us",
            read / f64::from(n) * 1e6,
            parsed / f64::from(n) * 1e6
        );
    }
}

/// The slow path: state with and without the process list, microseconds.
pub fn state_cost(n: u32) {
    let mut c = Collector::new("bench".into());
    let t = Instant::now();
    for _ in 0..n {
        let _ = c.state_without_processes();
    }
    let light = t.elapsed().as_secs_f64() / f64::from(n) * 1e6;
    let t = Instant::now();
    for _ in 0..n / 10 {
        let _ = c.state();
    }
    let full = t.elapsed().as_secs_f64() / f64::from(n / 10) * 1e6;
    println!("state without processes {light:.0} us, full state {full:.0} us");
}
