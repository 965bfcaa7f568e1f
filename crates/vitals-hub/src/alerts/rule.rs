//! Alert rules, channels' shared vocabulary and maintenance windows: the API shapes, their
//! validation (every problem reported at once), and how each metric is read from a sample.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vitals_proto::MetricSample;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Total CPU busy %.
    Cpu,
    /// Memory used %.
    Memory,
    /// Swap used %.
    Swap,
    /// Used % of each filesystem (subject: mount point).
    Disk,
    /// Inodes used % of each filesystem (subject: mount point).
    Inodes,
    /// Utilisation % of each GPU (subject: GPU name).
    Gpu,
    /// Memory used % of each GPU.
    GpuMemory,
    /// Each temperature sensor, °C.
    Temperature,
    /// 1-minute load average.
    Load,
    /// Received bytes/s, all interfaces.
    NetRx,
    /// Sent bytes/s, all interfaces.
    NetTx,
    /// Size of the Docker data directory, bytes.
    DockerSize,
    /// 1 for each container that is not running, else 0 (subject: container name).
    ContainerDown,
    /// Seconds since the device last sent data (checked by timer, not by samples).
    Offline,
}

pub const METRICS: &str = "cpu, memory, swap, disk, inodes, gpu, gpu_memory, temperature, \
                           load, net_rx, net_tx, docker_size, container_down, offline";

fn pct(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        used / total * 100.0
    } else {
        0.0
    }
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::Swap => "swap",
            Metric::Disk => "disk",
            Metric::Inodes => "inodes",
            Metric::Gpu => "gpu",
            Metric::GpuMemory => "gpu_memory",
            Metric::Temperature => "temperature",
            Metric::Load => "load",
            Metric::NetRx => "net_rx",
            Metric::NetTx => "net_tx",
            Metric::DockerSize => "docker_size",
            Metric::ContainerDown => "container_down",
            Metric::Offline => "offline",
        }
    }

    /// Percent metrics take thresholds in 0..=100.
    pub fn is_percent(self) -> bool {
        matches!(
            self,
            Metric::Cpu
                | Metric::Memory
                | Metric::Swap
                | Metric::Disk
                | Metric::Inodes
                | Metric::Gpu
                | Metric::GpuMemory
        )
    }

    /// Formats a value of this metric for people (`97.2 %`, `12.5 MB/s`, `42 s`).
    pub fn format(self, v: f64) -> String {
        match self {
            m if m.is_percent() => format!("{v:.1} %"),
            Metric::Temperature => format!("{v:.1} °C"),
            Metric::Load => format!("{v:.2}"),
            Metric::NetRx | Metric::NetTx => format!("{}/s", bytes(v)),
            Metric::DockerSize => bytes(v),
            Metric::ContainerDown => format!("{v:.0}"),
            _ => format!("{v:.0} s"),
        }
    }

    /// Calls `f(subject, value)` for every value of this metric in `s` (subject `""` for
    /// whole-device metrics). A sample without the metric yields nothing.
    pub fn values(self, s: &MetricSample, mut f: impl FnMut(&str, f64)) {
        let mut put = |subject: &str, v: f64| {
            if v.is_finite() {
                f(subject, v)
            }
        };
        match self {
            Metric::Cpu => put("", s.cpu.total),
            Metric::Memory => put("", pct(s.mem.used, s.mem.total)),
            Metric::Swap => {
                if let Some(sw) = &s.swap
                    && sw.total > 0.0
                {
                    put("", pct(sw.used, sw.total))
                }
            }
            Metric::Disk => s
                .disk
                .iter()
                .for_each(|d| put(&d.name, pct(d.used, d.total))),
            Metric::Inodes => {
                for d in &s.disk {
                    if let (Some(u), Some(t)) = (d.inodes_used, d.inodes_total)
                        && t > 0.0
                    {
                        put(&d.name, pct(u, t));
                    }
                }
            }
            Metric::Gpu => s.gpus.iter().for_each(|g| put(&g.name, g.util)),
            Metric::GpuMemory => s
                .gpus
                .iter()
                .for_each(|g| put(&g.name, pct(g.mem_used, g.mem_total))),
            Metric::Temperature => s.temps.iter().for_each(|t| put(&t.name, t.celsius)),
            Metric::Load => {
                if let Some(l) = &s.load {
                    put("", l.one)
                }
            }
            Metric::NetRx => put("", s.net.rx_bps),
            Metric::NetTx => put("", s.net.tx_bps),
            Metric::DockerSize => {
                if let Some(d) = s.docker_size {
                    put("", d)
                }
            }
            Metric::ContainerDown => s
                .containers
                .iter()
                .for_each(|c| put(&c.name, if c.state == "running" { 0.0 } else { 1.0 })),
            Metric::Offline => {}
        }
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Comparator of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Op {
    #[default]
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// The alert condition.
    pub fn holds(self, v: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => v > threshold,
            Op::Ge => v >= threshold,
            Op::Lt => v < threshold,
            Op::Le => v <= threshold,
        }
    }

    /// The recovery condition: on the other side of the threshold by more than `margin`.
    pub fn clears(self, v: f64, threshold: f64, margin: f64) -> bool {
        match self {
            Op::Gt | Op::Ge => {
                v < threshold - margin || (margin == 0.0 && !self.holds(v, threshold))
            }
            Op::Lt | Op::Le => {
                v > threshold + margin || (margin == 0.0 && !self.holds(v, threshold))
            }
        }
    }

    /// Whether `a` is worse than `b` (for the peak value).
    pub fn worse(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt | Op::Ge => a > b,
            Op::Lt | Op::Le => a < b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Seed 001's `alerts.severity` vocabulary.
    pub fn seed001(self) -> &'static str {
        match self {
            Severity::Info => "low",
            Severity::Warning => "medium",
            Severity::Critical => "high",
        }
    }
}

/// A daily time range (`"22:00"` to `"07:00"` crosses midnight) at a fixed UTC offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Daily {
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub utc_offset_min: i32,
}

fn minutes(hhmm: &str) -> Option<i64> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && hhmm.len() == 5).then_some(h * 60 + m)
}

impl Daily {
    fn check(&self, field: &str, errors: &mut Vec<String>) {
        for (k, v) in [("start", &self.start), ("end", &self.end)] {
            if minutes(v).is_none() {
                errors.push(format!("`{field}.{k}` must be a time as \"HH:MM\" (24 h)"));
            }
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_min) {
            errors.push(format!("`{field}.utcOffsetMin` must be in -840..=840"));
        }
        if self.start == self.end {
            errors.push(format!("`{field}` start and end must differ"));
        }
    }

    /// Whether `now_ms` falls in the range.
    pub fn contains(&self, now_ms: i64) -> bool {
        let (Some(s), Some(e)) = (minutes(&self.start), minutes(&self.end)) else {
            return false;
        };
        let local = (now_ms / 60_000 + i64::from(self.utc_offset_min)).rem_euclid(1440);
        if s < e {
            (s..e).contains(&local)
        } else {
            local >= s || local < e
        }
    }
}

/// A stored rule (the API's view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub name: String,
    /// Empty means every device, including ones added later.
    pub device_ids: Vec<String>,
    pub metric: Metric,
    /// Only this mount point, GPU, sensor or container; `None` means each of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub op: Op,
    pub threshold: f64,
    pub duration_sec: u32,
    pub recovery_sec: u32,
    /// Recovery needs the value past the threshold by this margin (anti-flapping).
    pub hysteresis: f64,
    pub severity: Severity,
    /// Empty means the default channel (the `alerts.slackWebhookUrl` setting), if set.
    pub channel_ids: Vec<String>,
    /// Re-notify while firing every this many seconds; 0 never.
    pub repeat_sec: u32,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<Daily>,
    /// Set on the default rules that follow the `alerts.*Threshold` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Rule {
    pub fn applies_to(&self, device_id: &str) -> bool {
        self.device_ids.is_empty() || self.device_ids.iter().any(|d| d == device_id)
    }
}

/// What a client may send for a rule (create, or an existing rule merged with a patch).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleInput {
    pub name: String,
    #[serde(default)]
    pub device_ids: Vec<String>,
    pub metric: Metric,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub op: Op,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub duration_sec: Option<u32>,
    #[serde(default)]
    pub recovery_sec: Option<u32>,
    #[serde(default)]
    pub hysteresis: Option<f64>,
    #[serde(default)]
    pub severity: Severity,
    #[serde(default)]
    pub channel_ids: Vec<String>,
    #[serde(default)]
    pub repeat_sec: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub quiet_hours: Option<Daily>,
}

fn yes() -> bool {
    true
}

pub const MAX_RULES: usize = 1000;

/// A rule's, channel's or window's name, trimmed; a problem is added to `errors`.
pub fn checked_name(name: &str, errors: &mut Vec<String>) -> String {
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.push("`name` must be 1 to 100 characters without control characters".into());
    }
    name
}
pub const MAX_WINDOW_SEC: u32 = 7 * 86_400;

/// Parses a JSON body as a [`RuleInput`], with serde's message made readable.
pub fn parse_input(v: Value) -> Result<RuleInput, Vec<String>> {
    serde_json::from_value(v).map_err(|e| {
        vec![format!(
            "{e} (a rule is {{name, deviceIds, metric, subject?, op, threshold, durationSec, \
             recoverySec, hysteresis, severity, channelIds, repeatSec, enabled, quietHours?}}; \
             metrics: {METRICS})"
        )]
    })
}

impl RuleInput {
    /// Checks ranges and builds the rule. Device and channel ids are checked by the caller
    /// (they need the store).
    pub fn into_rule(
        self,
        id: String,
        created_at: i64,
        now: i64,
        builtin: Option<String>,
    ) -> Result<Rule, Vec<String>> {
        let mut errors = Vec::new();
        let name = checked_name(&self.name, &mut errors);
        if self.device_ids.len() > 1000 {
            errors.push("`deviceIds` holds at most 1000 devices".into());
        }
        if self.channel_ids.len() > 20 {
            errors.push("`channelIds` holds at most 20 channels".into());
        }
        let offline = self.metric == Metric::Offline;
        let threshold = match (self.threshold, offline) {
            (Some(t), _) if !t.is_finite() => {
                errors.push("`threshold` must be a finite number".into());
                0.0
            }
            (Some(t), false) if self.metric.is_percent() && !(0.0..=100.0).contains(&t) => {
                errors.push(format!(
                    "`threshold` of `{}` is a percentage in 0..=100",
                    self.metric.name()
                ));
                t
            }
            (Some(t), _) => t,
            (None, true) => 0.0,
            (None, false) => {
                errors.push("`threshold` is required".into());
                0.0
            }
        };
        let duration_sec = self.duration_sec.unwrap_or(if offline { 60 } else { 0 });
        if duration_sec > MAX_WINDOW_SEC {
            errors.push(format!("`durationSec` must be at most {MAX_WINDOW_SEC}"));
        }
        if offline && duration_sec < 10 {
            errors.push("`durationSec` of an `offline` rule must be at least 10".into());
        }
        let recovery_sec = self.recovery_sec.unwrap_or(duration_sec);
        if recovery_sec > MAX_WINDOW_SEC {
            errors.push(format!("`recoverySec` must be at most {MAX_WINDOW_SEC}"));
        }
        let hysteresis = self.hysteresis.unwrap_or(0.0);
        if !hysteresis.is_finite() || hysteresis < 0.0 {
            errors.push("`hysteresis` must be a number >= 0".into());
        }
        if self.repeat_sec != 0 && !(60..=MAX_WINDOW_SEC).contains(&self.repeat_sec) {
            errors.push(format!(
                "`repeatSec` must be 0 (never) or in 60..={MAX_WINDOW_SEC}"
            ));
        }
        if let Some(s) = &self.subject
            && (s.is_empty() || s.len() > 256)
        {
            errors.push("`subject` must be 1 to 256 bytes (or left out for each)".into());
        }
        if let Some(q) = &self.quiet_hours {
            q.check("quietHours", &mut errors);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rule {
            id,
            name,
            device_ids: self.device_ids,
            metric: self.metric,
            subject: self.subject,
            op: self.op,
            threshold,
            duration_sec,
            recovery_sec,
            hysteresis,
            severity: self.severity,
            channel_ids: self.channel_ids,
            repeat_sec: self.repeat_sec,
            enabled: self.enabled,
            quiet_hours: self.quiet_hours,
            builtin,
            created_at,
            updated_at: now,
        })
    }
}

/// The editable part of a stored rule as JSON (for merging a PATCH).
pub fn editable_json(r: &Rule) -> serde_json::Map<String, Value> {
    let mut m = match serde_json::to_value(r) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for k in ["id", "builtin", "createdAt", "updatedAt"] {
        m.remove(k);
    }
    m
}

/// A maintenance window: notifications for the matching devices and rules are held back
/// while it is active (events are still recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    pub id: String,
    pub name: String,
    /// Empty means every device.
    pub device_ids: Vec<String>,
    /// Empty means every rule.
    pub rule_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    /// A recurring daily window (quiet hours for these devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Daily>,
    pub created_at: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowInput {
    pub name: String,
    #[serde(default)]
    pub device_ids: Vec<String>,
    #[serde(default)]
    pub rule_ids: Vec<String>,
    #[serde(default)]
    pub starts_at: Option<i64>,
    #[serde(default)]
    pub ends_at: Option<i64>,
    #[serde(default)]
    pub daily: Option<Daily>,
}

impl WindowInput {
    pub fn into_window(self, id: String, now: i64) -> Result<MaintenanceWindow, Vec<String>> {
        let mut errors = Vec::new();
        let name = checked_name(&self.name, &mut errors);
        if self.device_ids.len() > 1000 || self.rule_ids.len() > 1000 {
            errors.push("`deviceIds` and `ruleIds` hold at most 1000 ids each".into());
        }
        if self.ends_at.is_none() && self.daily.is_none() {
            errors.push("a window needs `endsAt` (Unix ms) or `daily` ({start, end})".into());
        }
        if let (Some(s), Some(e)) = (self.starts_at, self.ends_at)
            && s >= e
        {
            errors.push("`startsAt` must be before `endsAt`".into());
        }
        if let Some(d) = &self.daily {
            d.check("daily", &mut errors);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(MaintenanceWindow {
            id,
            name,
            device_ids: self.device_ids,
            rule_ids: self.rule_ids,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            daily: self.daily,
            created_at: now,
        })
    }
}

impl MaintenanceWindow {
    pub fn covers(&self, rule_id: &str, device_id: &str, now: i64) -> bool {
        (self.device_ids.is_empty() || self.device_ids.iter().any(|d| d == device_id))
            && (self.rule_ids.is_empty() || self.rule_ids.iter().any(|r| r == rule_id))
            && self.starts_at.is_none_or(|s| now >= s)
            && self.ends_at.is_none_or(|e| now < e)
            && self.daily.as_ref().is_none_or(|d| d.contains(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn daily_ranges_cross_midnight_and_offsets() {
        let q = Daily {
            start: "22:00".into(),
            end: "07:00".into(),
            utc_offset_min: 0,
        };
        let at = |h: i64, m: i64| (h * 60 + m) * 60_000 + 20_000 * 86_400_000;
        assert!(q.contains(at(23, 0)));
        assert!(q.contains(at(3, 0)));
        assert!(!q.contains(at(7, 0)));
        assert!(!q.contains(at(12, 0)));
        let shifted = Daily {
            utc_offset_min: 120,
            ..q.clone()
        };
        assert!(shifted.contains(at(21, 0)), "23:00 local");
        assert!(!shifted.contains(at(5, 0)), "07:00 local");
    }

    #[test]
    fn rule_validation_reports_every_problem() {
        let input = parse_input(json!({
            "name": "", "metric": "cpu", "threshold": 150, "repeatSec": 5,
            "hysteresis": -1, "quietHours": {"start": "25:00", "end": "07:00"}
        }))
        .expect("shape is fine");
        let errs = input.into_rule("r".into(), 0, 0, None).expect_err("bad");
        assert_eq!(errs.len(), 5, "{errs:?}");
        let unknown = parse_input(json!({"name": "x", "metric": "cpu", "thresh": 1}))
            .expect_err("unknown field");
        assert!(unknown[0].contains("thresh"), "{unknown:?}");
        let bad_metric = parse_input(json!({"name": "x", "metric": "nope", "threshold": 1}))
            .expect_err("unknown metric");
        assert!(bad_metric[0].contains("docker_size"), "{bad_metric:?}");
        let ok = parse_input(json!({"name": "cpu", "metric": "cpu", "threshold": 90,
            "durationSec": 60}))
        .expect("ok")
        .into_rule("r".into(), 0, 0, None)
        .expect("valid");
        assert_eq!(ok.recovery_sec, 60, "recovery defaults to the duration");
        assert_eq!(ok.op, Op::Gt);
        assert!(ok.enabled);
    }

    #[test]
    fn hysteresis_clears_only_past_the_margin() {
        assert!(!Op::Gt.clears(89.0, 90.0, 5.0));
        assert!(Op::Gt.clears(84.9, 90.0, 5.0));
        assert!(Op::Gt.clears(90.0, 90.0, 0.0));
        assert!(!Op::Ge.clears(90.0, 90.0, 0.0));
        assert!(Op::Lt.clears(16.0, 10.0, 5.0));
        assert!(!Op::Lt.clears(14.0, 10.0, 5.0));
    }

    #[test]
    fn formats_by_unit() {
        assert_eq!(Metric::Cpu.format(97.25), "97.2 %");
        assert_eq!(Metric::NetRx.format(12_500_000.0), "12.5 MB/s");
        assert_eq!(Metric::DockerSize.format(512.0), "512 B");
        assert_eq!(Metric::Offline.format(75.0), "75 s");
    }
}
