//! Validation of agent samples and batches. Every rule has an [`ErrorCode`] and a message that
//! says what was wrong and what the agent should do; a batch with any invalid sample is
//! rejected whole, so nothing of it is stored.

use crate::limits::*;
use crate::messages::ErrorCode;
use crate::sample::MetricSample;
use crate::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// A rule a sample or batch broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ValidationError {
    pub code: ErrorCode,
    pub message: String,
}

impl ValidationError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The clock and retention window a sample is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The hub's current time, Unix milliseconds.
    pub now_ms: i64,
    /// The oldest acceptable sample time (now minus raw retention), Unix milliseconds.
    pub oldest_ms: i64,
}

/// Checks the batch-level rules, then each sample. `index` in messages is 0-based.
pub fn validate_batch(samples: &[MetricSample], w: Window) -> Result<(), ValidationError> {
    if samples.is_empty() {
        return Err(ValidationError::new(
            ErrorCode::EmptyBatch,
            "the batch has no samples; send at least one",
        ));
    }
    if samples.len() > MAX_SAMPLES_PER_BATCH {
        return Err(ValidationError::new(
            ErrorCode::TooManySamples,
            format!(
                "the batch has {} samples; send at most {MAX_SAMPLES_PER_BATCH} per batch",
                samples.len()
            ),
        ));
    }
    for (i, s) in samples.iter().enumerate() {
        validate_sample(s, w).map_err(|e| ValidationError {
            code: e.code,
            message: format!("sample {i}: {}", e.message),
        })?;
    }
    Ok(())
}

/// Checks one sample against every rule.
pub fn validate_sample(s: &MetricSample, w: Window) -> Result<(), ValidationError> {
    use ErrorCode::*;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&s.v) {
        return Err(ValidationError::new(
            UnsupportedVersion,
            format!(
                "protocol version {} is not supported; this hub speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}",
                s.v
            ),
        ));
    }
    if s.ts > w.now_ms + MAX_FUTURE_SKEW_MS {
        return Err(ValidationError::new(
            TsInFuture,
            format!(
                "ts is {} s ahead of the hub's clock; at most 300 s is allowed, check the agent's clock",
                (s.ts - w.now_ms) / 1000
            ),
        ));
    }
    if s.ts < w.oldest_ms {
        return Err(ValidationError::new(
            TsTooOld,
            "ts is older than the hub keeps raw data; drop this sample",
        ));
    }
    if s.host_id.is_empty() || s.host_id.len() > MAX_HOST_ID_BYTES {
        return Err(ValidationError::new(
            Malformed,
            format!("hostId must be 1..={MAX_HOST_ID_BYTES} bytes"),
        ));
    }
    if s.cpu.per_core.len() > MAX_CORES {
        return Err(ValidationError::new(
            TooManyCores,
            format!(
                "{} cores; at most {MAX_CORES} are accepted",
                s.cpu.per_core.len()
            ),
        ));
    }
    if s.disk.len() > MAX_DISKS || s.disk_io.len() > MAX_DISKS {
        return Err(ValidationError::new(
            TooManyDisks,
            format!(
                "{} disks; at most {MAX_DISKS} are accepted",
                s.disk.len().max(s.disk_io.len())
            ),
        ));
    }
    if s.net_ifaces.len() > MAX_INTERFACES {
        return Err(ValidationError::new(
            TooManyInterfaces,
            format!(
                "{} interfaces; at most {MAX_INTERFACES} are accepted",
                s.net_ifaces.len()
            ),
        ));
    }
    if s.temps.len() > MAX_SMALL_LISTS
        || s.gpus.len() > MAX_SMALL_LISTS
        || s.containers.len() > MAX_SMALL_LISTS
    {
        return Err(ValidationError::new(
            TooManyItems,
            format!("at most {MAX_SMALL_LISTS} temperatures, GPUs or containers are accepted"),
        ));
    }

    percent("cpu.total", s.cpu.total)?;
    for (i, v) in s.cpu.per_core.iter().enumerate() {
        percent_at("cpu.perCore", i, *v)?;
    }
    for (f, v) in [
        ("cpu.user", s.cpu.user),
        ("cpu.system", s.cpu.system),
        ("cpu.iowait", s.cpu.iowait),
        ("cpu.steal", s.cpu.steal),
    ] {
        if let Some(v) = v {
            percent(f, v)?;
        }
    }
    used_total("mem", s.mem.used, s.mem.total)?;
    if let Some(a) = s.mem.available {
        non_negative("mem.available", a)?;
    }
    if let Some(sw) = &s.swap {
        used_total("swap", sw.used, sw.total)?;
    }
    if let Some(l) = &s.load {
        non_negative("load.one", l.one)?;
        non_negative("load.five", l.five)?;
        non_negative("load.fifteen", l.fifteen)?;
    }
    for d in &s.disk {
        name("disk.name", &d.name)?;
        used_total(format_args!("disk[{}]", d.name), d.used, d.total)?;
        if let (Some(u), Some(t)) = (d.inodes_used, d.inodes_total) {
            used_total(format_args!("disk[{}].inodes", d.name), u, t)?;
        } else if let Some(v) = d.inodes_used.or(d.inodes_total) {
            non_negative("disk.inodes", v)?;
        }
    }
    for d in &s.disk_io {
        name("diskIo.name", &d.name)?;
        for v in [d.read_bps, d.write_bps, d.read_iops, d.write_iops] {
            non_negative("diskIo", v)?;
        }
    }
    non_negative("net.txBps", s.net.tx_bps)?;
    non_negative("net.rxBps", s.net.rx_bps)?;
    for n in &s.net_ifaces {
        name("netIfaces.name", &n.name)?;
        for v in [n.rx_bps, n.tx_bps, n.rx_pps, n.tx_pps, n.rx_errs, n.tx_errs] {
            non_negative("netIfaces", v)?;
        }
    }
    for t in &s.temps {
        name("temps.name", &t.name)?;
        finite_in("temps.celsius", t.celsius, -273.15, 1000.0)?;
    }
    for g in &s.gpus {
        name("gpus.name", &g.name)?;
        percent("gpus.util", g.util)?;
        used_total("gpus.mem", g.mem_used, g.mem_total)?;
        if let Some(t) = g.temp_c {
            finite_in("gpus.tempC", t, -273.15, 1000.0)?;
        }
        if let Some(p) = g.power_w {
            non_negative("gpus.powerW", p)?;
        }
    }
    for c in &s.containers {
        name("containers.name", &c.name)?;
        if c.image.len() > MAX_NAME_BYTES * 4 || c.state.len() > MAX_NAME_BYTES {
            return Err(ValidationError::new(
                NameTooLong,
                "container image or state too long",
            ));
        }
        for v in [c.cpu, c.mem_bytes, c.net_rx_bps, c.net_tx_bps] {
            non_negative("containers", v)?;
        }
    }
    if let Some(d) = s.docker_size {
        non_negative("dockerSize", d)?;
    }
    if s.kernel.len() > MAX_KERNEL_STATS {
        return Err(ValidationError::new(
            TooManyItems,
            format!(
                "{} kernel statistics; at most {MAX_KERNEL_STATS} are accepted",
                s.kernel.len()
            ),
        ));
    }
    for (k, v) in &s.kernel {
        kernel_name(k)?;
        if !(v.is_finite() && *v >= 0.0) {
            return Err(ValidationError::new(
                OutOfRange,
                format!("kernel.{k} = {v} must be a finite number >= 0"),
            ));
        }
    }
    non_negative("uptimeSec", s.uptime_sec)?;
    non_negative("procCount", s.proc_count)?;
    Ok(())
}

fn finite_in(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), ValidationError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(ValidationError::new(
            ErrorCode::OutOfRange,
            format!("{field} = {v} is outside {lo}..={hi}"),
        ))
    }
}

fn percent(field: &str, v: f64) -> Result<(), ValidationError> {
    finite_in(field, v, 0.0, 100.0)
}

fn percent_at(field: &str, i: usize, v: f64) -> Result<(), ValidationError> {
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(ValidationError::new(
            ErrorCode::OutOfRange,
            format!("{field}[{i}] = {v} is outside 0..=100"),
        ))
    }
}

fn non_negative(field: &str, v: f64) -> Result<(), ValidationError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(ValidationError::new(
            ErrorCode::OutOfRange,
            format!("{field} = {v} must be a finite number >= 0"),
        ))
    }
}

/// `field` is formatted only for an error message (this runs for every disk of every sample).
fn used_total(field: impl std::fmt::Display, used: f64, total: f64) -> Result<(), ValidationError> {
    for (part, v) in [("used", used), ("total", total)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(ValidationError::new(
                ErrorCode::OutOfRange,
                format!("{field}.{part} = {v} must be a finite number >= 0"),
            ));
        }
    }
    if used > total {
        return Err(ValidationError::new(
            ErrorCode::UsedExceedsTotal,
            format!("{field}.used = {used} exceeds {field}.total = {total}"),
        ));
    }
    Ok(())
}

/// A kernel statistic name: 1..=96 bytes of ASCII letters, digits, `_` and `.`.
fn kernel_name(n: &str) -> Result<(), ValidationError> {
    if n.is_empty() || n.len() > MAX_KERNEL_NAME_BYTES {
        return Err(ValidationError::new(
            ErrorCode::NameTooLong,
            format!("kernel statistic names must be 1..={MAX_KERNEL_NAME_BYTES} bytes"),
        ));
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(ValidationError::new(
            ErrorCode::InvalidName,
            format!("kernel statistic {n:?} may hold only ASCII letters, digits, '_' and '.'"),
        ));
    }
    Ok(())
}

fn name(field: &str, n: &str) -> Result<(), ValidationError> {
    if n.is_empty() || n.len() > MAX_NAME_BYTES {
        return Err(ValidationError::new(
            ErrorCode::NameTooLong,
            format!("{field} must be 1..={MAX_NAME_BYTES} bytes"),
        ));
    }
    // Names become parts of series names, which are stored newline-separated.
    if n.chars().any(char::is_control) {
        return Err(ValidationError::new(
            ErrorCode::InvalidName,
            format!("{field} {n:?} contains a control character; send printable names only"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::*;

    fn sample(ts: i64) -> MetricSample {
        MetricSample {
            v: 1,
            ts,
            host_id: "h".into(),
            cpu: Cpu {
                total: 5.0,
                per_core: vec![5.0],
                ..Default::default()
            },
            mem: Mem {
                used: 1.0,
                total: 2.0,
                available: None,
            },
            disk: vec![],
            net: Net::default(),
            uptime_sec: 1.0,
            proc_count: 1.0,
            swap: None,
            load: None,
            disk_io: vec![],
            net_ifaces: vec![],
            temps: vec![],
            gpus: vec![],
            containers: vec![],
            docker_size: None,
            kernel: Default::default(),
        }
    }

    const W: Window = Window {
        now_ms: 1_000_000_000,
        oldest_ms: 1_000_000_000 - 7 * 86_400_000,
    };

    #[test]
    fn each_rule_has_its_code() {
        let ok = sample(W.now_ms);
        assert!(validate_sample(&ok, W).is_ok());
        type Mutation = Box<dyn Fn(&mut MetricSample)>;
        let cases: Vec<(ErrorCode, Mutation)> = vec![
            (ErrorCode::UnsupportedVersion, Box::new(|s| s.v = 99)),
            (ErrorCode::TsInFuture, Box::new(|s| s.ts += 301_000)),
            (ErrorCode::TsTooOld, Box::new(|s| s.ts = W.oldest_ms - 1)),
            (ErrorCode::OutOfRange, Box::new(|s| s.cpu.total = 100.5)),
            (
                ErrorCode::OutOfRange,
                Box::new(|s| s.cpu.per_core[0] = -1.0),
            ),
            (ErrorCode::OutOfRange, Box::new(|s| s.net.rx_bps = f64::NAN)),
            (ErrorCode::UsedExceedsTotal, Box::new(|s| s.mem.used = 3.0)),
            (
                ErrorCode::TooManyCores,
                Box::new(|s| s.cpu.per_core = vec![1.0; 1025]),
            ),
            (
                ErrorCode::TooManyDisks,
                Box::new(|s| {
                    s.disk = vec![
                        Disk {
                            name: "d".into(),
                            ..Default::default()
                        };
                        257
                    ]
                }),
            ),
            (
                ErrorCode::TooManyItems,
                Box::new(|s| {
                    s.kernel = (0..=MAX_KERNEL_STATS)
                        .map(|i| (format!("k{i}").into(), 1.0))
                        .collect()
                }),
            ),
            (
                ErrorCode::InvalidName,
                Box::new(|s| {
                    s.kernel.insert("meminfo.Active(anon)".into(), 1.0);
                }),
            ),
            (
                ErrorCode::NameTooLong,
                Box::new(|s| {
                    s.kernel.insert("k".repeat(97).into(), 1.0);
                }),
            ),
            (
                ErrorCode::OutOfRange,
                Box::new(|s| {
                    s.kernel.insert("vmstat.pgfault".into(), -1.0);
                }),
            ),
        ];
        for (code, mutate) in cases {
            let mut s = sample(W.now_ms);
            mutate(&mut s);
            assert_eq!(validate_sample(&s, W).map_err(|e| e.code), Err(code));
        }
    }

    #[test]
    fn batch_limits() {
        assert_eq!(
            validate_batch(&[], W).map_err(|e| e.code),
            Err(ErrorCode::EmptyBatch)
        );
        let many = vec![sample(W.now_ms); 1001];
        assert_eq!(
            validate_batch(&many, W).map_err(|e| e.code),
            Err(ErrorCode::TooManySamples)
        );
        let mut two = vec![sample(W.now_ms), sample(W.now_ms)];
        two[1].mem.used = 9.0;
        let err = validate_batch(&two, W).expect_err("second is bad");
        assert!(err.message.starts_with("sample 1:"), "{}", err.message);
    }
}
