//! System information (seed 002's `system-info`): hostname, OS, kernel, architecture, CPU
//! model and core count, uptime, and the primary interface's IP and MAC addresses.
//!
//! The primary interface is the one carrying the IPv4 default route (`/proc/net/route`), else
//! the first non-loopback interface with an address. Parsers are pure and tested on fixtures.

use std::path::Path;

use vitals_proto::state::SystemInfo;

use super::interfaces::{Addrs, read_mac};

/// `PRETTY_NAME` (else `NAME`) from an os-release file, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').trim_matches('\'').to_string())
        })
    };
    get("PRETTY_NAME")
        .or_else(|| get("NAME"))
        .filter(|s| !s.is_empty())
}

/// CPU model and logical core count from `/proc/cpuinfo` (x86 `model name`; ARM `Model`,
/// `Hardware` or `CPU part`; other architectures `cpu model` or `cpu`).
pub fn parse_cpuinfo(text: &str) -> (String, u32) {
    let mut cores = 0u32;
    let mut model: Option<String> = None;
    let mut fallback: Option<String> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cores += 1,
            "model name" | "cpu model" | "Model" if model.is_none() && !v.is_empty() => {
                model = Some(v.to_string())
            }
            "Hardware" | "cpu" | "CPU part" if fallback.is_none() && !v.is_empty() => {
                fallback = Some(v.to_string())
            }
            _ => {}
        }
    }
    (model.or(fallback).unwrap_or_default(), cores)
}

/// The interface of the IPv4 default route in `/proc/net/route`.
pub fn parse_default_route(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_ascii_whitespace().collect();
        (f.len() > 1 && f[1] == "00000000").then(|| f[0].to_string())
    })
}

/// Reads system info. `root` is `/` outside tests.
pub fn read(root: &Path, addrs: &Addrs) -> SystemInfo {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    let uts = nix::sys::utsname::uname().ok();
    let uts_field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let hostname = Some(read("proc/sys/kernel/hostname").trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uts_field(|u| u.nodename()));
    let kernel = Some(read("proc/sys/kernel/osrelease").trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uts_field(|u| u.release()));
    let mut architecture = uts_field(|u| u.machine());
    if architecture.is_empty() {
        architecture = std::env::consts::ARCH.to_string();
    }
    let os = parse_os_release(&read("etc/os-release"))
        .or_else(|| parse_os_release(&read("usr/lib/os-release")))
        .unwrap_or_else(|| "Linux".into());
    let (cpu_model, cpu_cores) = parse_cpuinfo(&read("proc/cpuinfo"));
    let uptime = super::system::parse_uptime(&read("proc/uptime")).unwrap_or(0.0);
    let primary = parse_default_route(&read("proc/net/route"))
        .or_else(|| addrs.first_non_loopback_with_ipv4());
    let (ip_address, mac_address) = match primary {
        Some(i) => (
            addrs.ipv4_of(&i).unwrap_or_default(),
            read_mac(&root.join("sys/class/net"), &i),
        ),
        None => (String::new(), String::new()),
    };
    SystemInfo {
        os,
        architecture,
        uptime,
        hostname,
        ip_address,
        mac_address,
        kernel,
        cpu_model,
        cpu_cores,
        agent_version: crate::AGENT_VERSION.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_pretty_name() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_os_release(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_os_release("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(parse_os_release(""), None);
    }

    #[test]
    fn cpuinfo_model_and_cores() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(x86), ("AMD EPYC 7B13".to_string(), 2));
        let arm = "processor\t: 0\nCPU part\t: 0xd08\n\nprocessor\t: 1\nCPU part\t: 0xd08\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            parse_cpuinfo(arm),
            ("Raspberry Pi 4 Model B Rev 1.4".to_string(), 2)
        );
    }

    #[test]
    fn default_route_interface() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_default_route(t).as_deref(), Some("eth0"));
        assert_eq!(parse_default_route("Iface\tDestination\n"), None);
    }

    #[test]
    fn live_system_info_matches_independent_reads() {
        let info = read(Path::new("/"), &Addrs::read());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(info.hostname, hostname.trim());
        assert!(info.cpu_cores >= 1);
        assert!(!info.kernel.is_empty());
        assert!(info.uptime > 0.0);
    }
}
