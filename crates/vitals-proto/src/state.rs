//! Slow-changing device state in seed 002's shapes: `system-info`, `processes`,
//! `network-interfaces`. The agent sends them every 30 s and on change; the hub keeps the
//! latest of each per device and pushes them to per-device channel subscribers.

use serde::{Deserialize, Serialize};

/// Any subset of a device's state; absent parts are left as they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_info: Option<SystemInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Processes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interfaces: Option<NetworkInterfaces>,
}

/// Seed 002's `system-info` data, plus kernel, CPU model and core count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SystemInfo {
    pub os: String,
    pub architecture: String,
    /// Seconds since boot.
    pub uptime: f64,
    pub hostname: String,
    #[serde(default)]
    pub ip_address: String,
    #[serde(default)]
    pub mac_address: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub cpu_model: String,
    #[serde(default)]
    pub cpu_cores: u32,
    #[serde(default)]
    pub agent_version: String,
}

/// Seed 002's `processes` data: top processes by CPU (`top_processes`) and by memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Processes {
    pub top_processes: Vec<ProcessInfo>,
    #[serde(default)]
    pub top_by_memory: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    #[serde(default)]
    pub user: String,
    /// CPU percent of one core.
    pub cpu: f64,
    /// Resident set size in bytes.
    pub rss: f64,
}

/// Seed 002's `network-interfaces` data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkInterfaces {
    pub interfaces: Vec<InterfaceInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceInfo {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub up: bool,
    /// Link speed in Mbit/s when the kernel knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<f64>,
}
