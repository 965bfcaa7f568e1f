//! Seed 000's `MetricSample`, extended with optional fields the full agent fills in.
//!
//! The mandatory part is exactly seed 000's shape: `v, ts, hostId, cpu{total, perCore},
//! mem{used, total}, disk[{name, used, total}], net{txBps, rxBps}, uptimeSec, procCount`.
//! Everything added later is optional so that a seed-000 agent keeps working unchanged.
//! `ts` is accepted as an RFC 3339 string (seed 000) or as Unix milliseconds, and is always
//! sent back as Unix milliseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

/// One reading of a host, as sent by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricSample {
    /// Protocol version of the agent that produced the sample.
    pub v: u32,
    /// Sample time in Unix milliseconds.
    #[serde(deserialize_with = "de_timestamp")]
    pub ts: i64,
    /// Stable host id of the agent (checked against the paired device's host id).
    pub host_id: String,
    pub cpu: Cpu,
    pub mem: Mem,
    #[serde(default)]
    pub disk: Vec<Disk>,
    pub net: Net,
    pub uptime_sec: f64,
    pub proc_count: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Swap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_io: Vec<DiskIo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_ifaces: Vec<NetIface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temps: Vec<Temp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    /// Size of the Docker data directory in bytes (seed 003's `docker_sz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_size: Option<f64>,
    /// Kernel statistics by name (`vmstat.pgfault`, `psi.io.some.avg10`, ...): counters as
    /// per-second rates, gauges as read. Names are ASCII letters, digits, `_` and `.`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kernel: BTreeMap<Arc<str>, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// Busy percent over all cores, 0..=100.
    pub total: f64,
    /// Busy percent per core, 0..=100 each.
    #[serde(default)]
    pub per_core: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iowait: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steal: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Mem {
    /// Bytes in use.
    pub used: f64,
    /// Bytes installed.
    pub total: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Mount point (or device name for seed-000 agents).
    pub name: String,
    pub used: f64,
    pub total: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_total: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Net {
    pub tx_bps: f64,
    pub rx_bps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Swap {
    pub used: f64,
    pub total: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DiskIo {
    /// Block device name, e.g. `sda` or `nvme0n1`.
    pub name: String,
    pub read_bps: f64,
    pub write_bps: f64,
    pub read_iops: f64,
    pub write_iops: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetIface {
    pub name: String,
    pub rx_bps: f64,
    pub tx_bps: f64,
    #[serde(default)]
    pub rx_pps: f64,
    #[serde(default)]
    pub tx_pps: f64,
    #[serde(default)]
    pub rx_errs: f64,
    #[serde(default)]
    pub tx_errs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Temp {
    pub name: String,
    pub celsius: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    pub name: String,
    /// Utilisation percent, 0..=100.
    pub util: f64,
    pub mem_used: f64,
    pub mem_total: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Engine state, e.g. `running`, `exited`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub cpu: f64,
    #[serde(default)]
    pub mem_bytes: f64,
    #[serde(default)]
    pub net_rx_bps: f64,
    #[serde(default)]
    pub net_tx_bps: f64,
}

/// Accepts an RFC 3339 string or a number of Unix milliseconds (a visitor, not an untagged
/// enum: those buffer the value first, an allocation per sample).
fn de_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Ts;
    impl serde::de::Visitor<'_> for Ts {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("Unix milliseconds or an RFC 3339 time")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom("ts is out of range"))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            if v.is_finite() {
                Ok(v as i64)
            } else {
                Err(E::custom("ts must be a finite number"))
            }
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<i64, E> {
            parse_rfc3339_ms(s).ok_or_else(|| {
                E::custom(format!(
                    "ts {s:?} is neither RFC 3339 nor Unix milliseconds"
                ))
            })
        }
    }
    d.deserialize_any(Ts)
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats Unix milliseconds as RFC 3339 (UTC).
pub fn format_rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_000_sample_parses_with_string_ts() {
        let json = r#"{"v":1,"ts":"2024-01-01T00:00:00Z","hostId":"h1",
            "cpu":{"total":12.5,"perCore":[10,15]},"mem":{"used":1,"total":2},
            "disk":[{"name":"/","used":1,"total":2}],"net":{"txBps":1,"rxBps":2},
            "uptimeSec":10,"procCount":100}"#;
        let s: MetricSample = serde_json::from_str(json).expect("parses");
        assert_eq!(s.ts, 1_704_067_200_000);
        assert_eq!(s.cpu.per_core, vec![10.0, 15.0]);
        assert!(s.swap.is_none());
    }

    #[test]
    fn numeric_ts_is_milliseconds() {
        let json = r#"{"v":1,"ts":1704067200123,"hostId":"h1","cpu":{"total":1},
            "mem":{"used":1,"total":2},"net":{"txBps":0,"rxBps":0},"uptimeSec":1,"procCount":1}"#;
        let s: MetricSample = serde_json::from_str(json).expect("parses");
        assert_eq!(s.ts, 1_704_067_200_123);
        assert_eq!(format_rfc3339_ms(s.ts), "2024-01-01T00:00:00.123Z");
    }
}
