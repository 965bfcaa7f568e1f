//! Runtime settings (seed 003's global key-values), editable through `/api/settings` and
//! applied without a restart. Every key is declared here with its type, range and default; a
//! write with any unknown key or bad value is refused whole, naming every problem.

use std::collections::BTreeMap;

use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Spec {
    Int {
        min: i64,
        max: i64,
        default: i64,
    },
    Bool {
        default: bool,
    },
    /// An http(s) URL or the empty string.
    Url,
}

const SPECS: &[(&str, Spec, &str)] = &[
    (
        "retention.rawDays",
        Spec::Int {
            min: 1,
            max: 3650,
            default: 7,
        },
        "days of per-second samples kept",
    ),
    (
        "retention.minuteDays",
        Spec::Int {
            min: 1,
            max: 3650,
            default: 90,
        },
        "days of 1-minute rollups kept",
    ),
    (
        "retention.hourDays",
        Spec::Int {
            min: 1,
            max: 36500,
            default: 730,
        },
        "days of 1-hour rollups kept",
    ),
    (
        "devices.staleAfterSec",
        Spec::Int {
            min: 2,
            max: 86400,
            default: 10,
        },
        "a device with no sample for this long is stale",
    ),
    (
        "devices.offlineAfterSec",
        Spec::Int {
            min: 3,
            max: 604800,
            default: 60,
        },
        "a device with no sample for this long is offline",
    ),
    (
        "alerts.slackWebhookUrl",
        Spec::Url,
        "Slack incoming webhook for alerts",
    ),
    (
        "alerts.allowPrivateTargets",
        Spec::Bool { default: false },
        "allow notifications to loopback/private addresses",
    ),
    (
        "alerts.cpuThreshold",
        Spec::Int {
            min: 1,
            max: 100,
            default: 90,
        },
        "default CPU % alert threshold for new devices",
    ),
    (
        "alerts.memoryThreshold",
        Spec::Int {
            min: 1,
            max: 100,
            default: 90,
        },
        "default memory % alert threshold",
    ),
    (
        "alerts.diskThreshold",
        Spec::Int {
            min: 1,
            max: 100,
            default: 90,
        },
        "default disk % alert threshold",
    ),
    (
        "alerts.durationSec",
        Spec::Int {
            min: 0,
            max: 86400,
            default: 60,
        },
        "default alert duration",
    ),
];

/// Effective settings (defaults overlaid with stored values).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings(BTreeMap<String, Value>);

impl Default for Settings {
    fn default() -> Self {
        Settings(
            SPECS
                .iter()
                .map(|(k, spec, _)| (k.to_string(), default_of(*spec)))
                .collect(),
        )
    }
}

fn default_of(spec: Spec) -> Value {
    match spec {
        Spec::Int { default, .. } => json!(default),
        Spec::Bool { default } => json!(default),
        Spec::Url => json!(""),
    }
}

impl Settings {
    /// Builds from stored `key -> JSON` strings; unreadable or unknown stored values fall back
    /// to defaults with a warning (they were validated when written).
    pub fn from_stored(stored: &BTreeMap<String, String>) -> Settings {
        let mut s = Settings::default();
        for (k, raw) in stored {
            match serde_json::from_str::<Value>(raw) {
                Ok(v) if check(k, &v).is_ok() => {
                    s.0.insert(k.clone(), v);
                }
                _ => tracing::warn!(key = %k, "ignoring stored setting"),
            }
        }
        s
    }

    pub fn as_json(&self) -> Value {
        Value::Object(self.0.clone().into_iter().collect())
    }

    fn int(&self, key: &str) -> i64 {
        self.0.get(key).and_then(Value::as_i64).unwrap_or(0)
    }

    pub fn raw_retention_ms(&self) -> i64 {
        self.int("retention.rawDays") * 86_400_000
    }
    /// Also how long alert history and the delivery log are kept.
    pub fn minute_retention_ms(&self) -> i64 {
        self.int("retention.minuteDays") * 86_400_000
    }
    pub fn hour_retention_ms(&self) -> i64 {
        self.int("retention.hourDays") * 86_400_000
    }
    pub fn stale_after_ms(&self) -> i64 {
        self.int("devices.staleAfterSec") * 1000
    }
    pub fn offline_after_ms(&self) -> i64 {
        self.int("devices.offlineAfterSec") * 1000
    }
}

/// Validates a partial update; returns the values to store as JSON strings.
pub fn validate_update(
    update: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    for (k, v) in update {
        match check(k, v) {
            Ok(()) => {
                out.insert(k.clone(), v.to_string());
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn check(key: &str, v: &Value) -> Result<(), String> {
    let Some((_, spec, _)) = SPECS.iter().find(|(k, _, _)| *k == key) else {
        return Err(format!(
            "unknown setting `{key}` (known: {})",
            SPECS
                .iter()
                .map(|(k, _, _)| *k)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    match *spec {
        Spec::Int { min, max, .. } => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(format!("`{key}` must be a whole number in {min}..={max}")),
        },
        Spec::Bool { .. } => v
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| format!("`{key}` must be true or false")),
        Spec::Url => match v.as_str() {
            Some("") => Ok(()),
            Some(s)
                if (s.starts_with("https://") || s.starts_with("http://")) && s.len() <= 2048 =>
            {
                Ok(())
            }
            _ => Err(format!("`{key}` must be an http(s) URL or \"\"")),
        },
    }
}

/// Cross-key rules on the effective result of an update.
pub fn check_combined(s: &Settings) -> Result<(), Vec<String>> {
    if s.stale_after_ms() >= s.offline_after_ms() {
        return Err(vec![
            "`devices.staleAfterSec` must be less than `devices.offlineAfterSec`".to_string(),
        ]);
    }
    Ok(())
}

/// Applies validated values onto `s`.
pub fn apply(s: &Settings, values: &BTreeMap<String, String>) -> Settings {
    let mut next = s.clone();
    for (k, raw) in values {
        if let Ok(v) = serde_json::from_str(raw) {
            next.0.insert(k.clone(), v);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let s = Settings::default();
        assert_eq!(s.raw_retention_ms(), 7 * 86_400_000);
        let mut m = serde_json::Map::new();
        m.insert("retention.rawDays".into(), json!(0));
        m.insert("nope".into(), json!(1));
        m.insert("alerts.slackWebhookUrl".into(), json!("ftp://x"));
        let errs = validate_update(&m).expect_err("bad");
        assert_eq!(errs.len(), 3);
        let mut ok = serde_json::Map::new();
        ok.insert("retention.rawDays".into(), json!(3));
        let vals = validate_update(&ok).expect("ok");
        assert_eq!(apply(&s, &vals).raw_retention_ms(), 3 * 86_400_000);
    }
}
