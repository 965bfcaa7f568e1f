//! Network throughput, packets and errors per interface from `/proc/net/dev`, plus totals.
//!
//! Totals must not count the same bytes twice. The rule ([`counts_in_total`], pure):
//! loopback never counts; a bond counts and its slaves do not (their sum is the bond); bridges,
//! veth pairs, tunnels and other virtual interfaces do not count when the host has a physical
//! interface (their traffic also crosses a physical one, or never leaves the host). A host with
//! no physical interface at all (a container, some VMs) counts its non-bridge virtual
//! interfaces instead, so that its totals are not always zero.
//!
//! Errors are reported per second like the byte and packet rates.

use std::path::Path;

use vitals_proto::limits::MAX_INTERFACES;
use vitals_proto::sample::{Net, NetIface};

use super::rate::per_sec;

/// Cumulative counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
}

/// What `/sys/class/net/<name>` says about an interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kind {
    pub loopback: bool,
    /// Lives under `/sys/devices/virtual` (bridge, veth, tun, bond, dummy, ...).
    pub virtual_: bool,
    pub bond_master: bool,
    pub bond_slave: bool,
    pub bridge: bool,
}

impl Kind {
    /// Reads an interface's kind from sysfs (`class_net` is normally `/sys/class/net`).
    pub fn read(class_net: &Path, name: &str) -> Kind {
        let dir = class_net.join(name);
        let virtual_ = std::fs::read_link(&dir)
            .map(|t| t.to_string_lossy().contains("/virtual/"))
            .unwrap_or(false);
        Kind {
            loopback: name == "lo",
            virtual_,
            bond_master: dir.join("bonding").exists(),
            bond_slave: dir.join("bonding_slave").exists(),
            bridge: dir.join("bridge").exists(),
        }
    }
}

/// Whether an interface's traffic goes into the host totals; `has_physical` says whether the
/// host has any physical, non-loopback interface.
pub fn counts_in_total(k: Kind, has_physical: bool) -> bool {
    if k.loopback || k.bond_slave {
        return false;
    }
    if k.bond_master {
        return true;
    }
    if has_physical { !k.virtual_ } else { !k.bridge }
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`).
pub fn parse(text: &str) -> Vec<(String, Counters)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let f: Vec<u64> = rest
                .split_ascii_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if f.len() < 16 {
                return None;
            }
            Some((
                name.trim().to_string(),
                Counters {
                    rx_bytes: f[0],
                    rx_packets: f[1],
                    rx_errs: f[2],
                    tx_bytes: f[8],
                    tx_packets: f[9],
                    tx_errs: f[10],
                },
            ))
        })
        .collect()
}

/// Per-interface rates (loopback left out) and totals over the interfaces `in_total` selects.
pub fn compute(
    prev: &[(String, Counters)],
    cur: &[(String, Counters)],
    secs: f64,
    mut in_total: impl FnMut(&str) -> bool,
) -> (Net, Vec<NetIface>) {
    let mut total = Net::default();
    let mut ifaces = Vec::new();
    for (name, c) in cur {
        let Some((_, p)) = prev.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let i = NetIface {
            name: name.clone(),
            rx_bps: per_sec(p.rx_bytes, c.rx_bytes, secs),
            tx_bps: per_sec(p.tx_bytes, c.tx_bytes, secs),
            rx_pps: per_sec(p.rx_packets, c.rx_packets, secs),
            tx_pps: per_sec(p.tx_packets, c.tx_packets, secs),
            rx_errs: per_sec(p.rx_errs, c.rx_errs, secs),
            tx_errs: per_sec(p.tx_errs, c.tx_errs, secs),
        };
        if in_total(name) {
            total.rx_bps += i.rx_bps;
            total.tx_bps += i.tx_bps;
        }
        if name != "lo" && ifaces.len() < MAX_INTERFACES {
            ifaces.push(i);
        }
    }
    (total, ifaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = include_str!("../../tests/fixtures/net_dev_a");
    const B: &str = include_str!("../../tests/fixtures/net_dev_b");

    fn kind(name: &str) -> Kind {
        Kind {
            loopback: name == "lo",
            virtual_: matches!(name, "lo" | "bond0" | "docker0" | "veth1"),
            bond_master: name == "bond0",
            bond_slave: matches!(name, "eth0" | "eth1"),
            bridge: name == "docker0",
        }
    }

    #[test]
    fn parses_counters() {
        let r = parse(A);
        assert_eq!(r.len(), 6);
        assert_eq!(r[1].0, "eth0");
        assert_eq!(r[1].1.rx_bytes, 1000);
        assert_eq!(r[1].1.tx_packets, 20);
        assert_eq!(r[1].1.rx_errs, 1);
    }

    #[test]
    fn bond_and_virtual_interfaces_are_not_double_counted() {
        let (net, ifaces) = compute(&parse(A), &parse(B), 1.0, |n| {
            counts_in_total(kind(n), true)
        });
        // bond0 (+3000 rx) is eth0 (+1000) + eth1 (+2000); docker0 and veth1 carry the same
        // container traffic (+500 each); lo (+100) is local. Only bond0 counts.
        assert_eq!(net.rx_bps, 3000.0);
        assert_eq!(net.tx_bps, 300.0);
        assert_eq!(ifaces.len(), 5, "every interface but lo is reported");
        let eth1 = ifaces.iter().find(|i| i.name == "eth1").expect("eth1");
        assert_eq!(eth1.rx_bps, 2000.0);
        assert_eq!(eth1.rx_pps, 20.0);
        assert_eq!(eth1.rx_errs, 2.0);
    }

    #[test]
    fn a_container_with_only_virtual_interfaces_counts_them() {
        let veth = Kind {
            virtual_: true,
            ..Kind::default()
        };
        let bridge = Kind {
            virtual_: true,
            bridge: true,
            ..Kind::default()
        };
        assert!(counts_in_total(veth, false));
        assert!(!counts_in_total(veth, true));
        assert!(!counts_in_total(bridge, false));
    }
}
