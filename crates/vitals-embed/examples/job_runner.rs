//! A simulated job-processing service that uses every call of the dashboard.
//!
//! ```text
//! cargo run -p vitals-embed --example job_runner -- --port 8080
//! ```
//!
//! Prints `dashboard listening on http://ADDR/` once it serves (with `--port 0`, ADDR holds the
//! port the OS picked) and runs until Ctrl-C.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use clap::Parser;
use parking_lot::Mutex;
use rand::random_range;
use vitals_embed::{
    Auth, Config, Dashboard, DashboardHandle, Health, JobInfo, JobStatus, Severity,
};

#[derive(Parser, Debug)]
#[command(about = "A simulated job runner with a live vitals-embed dashboard")]
struct Args {
    /// Port for the dashboard (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Snapshot interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Most dashboard viewers.
    #[arg(long, default_value_t = 100)]
    max_clients: usize,
    /// Require this bearer token (open the page as /#token=...).
    #[arg(long)]
    token: Option<String>,
    /// Also forward metrics to this Vitals hub (http://hub:8080).
    #[arg(long)]
    forward_to: Option<String>,
    /// Token for the hub.
    #[arg(long, default_value = "")]
    forward_token: String,
    /// Jobs started per second.
    #[arg(long, default_value_t = 1.5)]
    jobs_per_sec: f64,
}

const PROVIDERS: [&str; 3] = ["aws", "azure", "gcp"];
const WORKERS: usize = 4;

/// The simulated service's own bookkeeping.
#[derive(Default)]
struct Sim {
    queue: Mutex<VecDeque<JobInfo>>,
    active: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    next_id: AtomicU64,
    last_failure_ms: AtomicU64,
    last_backlog_alert_ms: AtomicU64,
}

impl Sim {
    fn publish(&self, dash: &DashboardHandle) {
        let queued = self.queue.lock().len() as u64;
        dash.update_job_metrics(
            self.active.load(Relaxed),
            self.completed.load(Relaxed),
            self.failed.load(Relaxed),
            queued,
            queued,
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_job(sim: &Sim) -> JobInfo {
    let n = sim.next_id.fetch_add(1, Relaxed) + 1;
    let provider = PROVIDERS[random_range(0..PROVIDERS.len())];
    let tier = ["prod", "staging", "dev"][random_range(0..3)];
    let role = ["web", "db", "cache", "worker"][random_range(0..4)];
    let vm = format!("{tier}-{role}-{:02}", random_range(1..20));
    JobInfo {
        provider: provider.to_owned(),
        vm_name: vm.clone(),
        ..JobInfo::new(format!("job-{n:05}"), format!("export-vm-{vm}"))
    }
}

async fn generator(sim: Arc<Sim>, dash: DashboardHandle, per_sec: f64) {
    let period = Duration::from_secs_f64(1.0 / per_sec.clamp(0.05, 1000.0));
    loop {
        let job = new_job(&sim);
        dash.add_job(job.clone());
        let backlog = {
            let mut q = sim.queue.lock();
            q.push_back(job);
            q.len()
        };
        let quiet = now_ms().saturating_sub(sim.last_backlog_alert_ms.load(Relaxed)) > 15_000;
        if backlog >= 8 && quiet {
            sim.last_backlog_alert_ms.store(now_ms(), Relaxed);
            dash.add_alert(
                Severity::Warning,
                format!("queue backlog: {backlog} jobs waiting"),
            );
        }
        sim.publish(&dash);
        // Bursty arrivals make the queue move.
        let jitter = random_range(0.3..1.7);
        tokio::time::sleep(period.mul_f64(jitter)).await;
    }
}

async fn worker(sim: Arc<Sim>, dash: DashboardHandle) {
    loop {
        let next = sim.queue.lock().pop_front();
        let Some(mut job) = next else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        job.status = JobStatus::Running;
        job.start_time = SystemTime::now();
        sim.active.fetch_add(1, Relaxed);
        dash.add_job(job.clone());
        sim.publish(&dash);
        let fail_at = if random_range(0..100) < 8 {
            random_range(10.0..90.0)
        } else {
            f64::INFINITY
        };
        while job.progress < 100.0 {
            tokio::time::sleep(Duration::from_millis(random_range(150..400))).await;
            job.progress = (job.progress + random_range(4.0..18.0)).min(100.0);
            if job.progress >= fail_at {
                break;
            }
            dash.add_job(job.clone());
        }
        sim.active.fetch_sub(1, Relaxed);
        if job.progress < 100.0 {
            job.status = JobStatus::Failed;
            sim.failed.fetch_add(1, Relaxed);
            sim.last_failure_ms.store(now_ms(), Relaxed);
            dash.add_alert(
                Severity::Critical,
                format!("{} failed on {} ({})", job.name, job.vm_name, job.provider),
            );
        } else {
            job.status = JobStatus::Completed;
            sim.completed.fetch_add(1, Relaxed);
        }
        dash.add_job(job);
        sim.publish(&dash);
    }
}

async fn http_traffic(sim: Arc<Sim>, dash: DashboardHandle) {
    let mut avg = 120.0_f64;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = random_range(5..40);
        let requests = sim.requests.fetch_add(n, Relaxed) + n;
        let errors = if random_range(0..100) < 15 {
            sim.errors.fetch_add(1, Relaxed) + 1
        } else {
            sim.errors.load(Relaxed)
        };
        avg = (avg + random_range(-8.0..8.0)).clamp(40.0, 400.0);
        dash.update_http_metrics(requests, errors, avg);
    }
}

async fn housekeeping(sim: Arc<Sim>, dash: DashboardHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seconds = 0u64;
    loop {
        tick.tick().await;
        seconds += 1;
        dash.sample_process();
        let backlog = sim.queue.lock().len();
        let recent_failure = now_ms().saturating_sub(sim.last_failure_ms.load(Relaxed)) < 10_000;
        let health = if backlog > 12 {
            Health::Unhealthy
        } else if backlog > 6 || recent_failure {
            Health::Degraded
        } else {
            Health::Healthy
        };
        dash.set_system_health(health);
        if seconds.is_multiple_of(30) {
            dash.add_alert(Severity::Info, "backup completed successfully");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let mut config = Config {
        bind: args.bind,
        port: args.port,
        update_interval: Duration::from_millis(args.interval_ms),
        max_clients: args.max_clients,
        auth: args.token.map(Auth::Bearer).unwrap_or_default(),
        ..Config::default()
    };
    if let Some(hub) = args.forward_to {
        config = config.forward_to(hub, args.forward_token);
    }
    let dashboard = Dashboard::new(config)?;
    let dash = dashboard.handle();
    let running = dashboard.spawn()?;
    println!("dashboard listening on {}", running.url());

    dash.add_alert(Severity::Info, "job runner started");
    dash.add_alert(
        Severity::Warning,
        "simulated workload: numbers are not real",
    );
    dash.set_system_health(Health::Healthy);
    dash.sample_process();

    let sim = Arc::new(Sim::default());
    // A few jobs right away so the table is never empty for long.
    for _ in 0..3 {
        let job = new_job(&sim);
        dash.add_job(job.clone());
        sim.queue.lock().push_back(job);
    }
    sim.publish(&dash);
    tokio::spawn(generator(sim.clone(), dash.clone(), args.jobs_per_sec));
    for _ in 0..WORKERS {
        tokio::spawn(worker(sim.clone(), dash.clone()));
    }
    tokio::spawn(http_traffic(sim.clone(), dash.clone()));
    tokio::spawn(housekeeping(sim, dash));

    tokio::signal::ctrl_c().await?;
    running.shutdown().await?;
    Ok(())
}
