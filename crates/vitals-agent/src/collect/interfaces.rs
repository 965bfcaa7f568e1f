//! Network interfaces (seed 002's `network-interfaces`): name, MAC, addresses, up/down, speed.
//!
//! Names, MACs, state and speed come from `/sys/class/net`; addresses from `getifaddrs(3)`
//! (IPv4 and IPv6, written `address/prefix`). `speed` is absent when the kernel does not know
//! it (virtual interfaces, links that are down report -1 or fail to read).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use vitals_proto::limits::MAX_INTERFACES;
use vitals_proto::state::{InterfaceInfo, NetworkInterfaces};

/// Addresses per interface, from one `getifaddrs` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addrs {
    /// name -> (address, prefix length), in the order getifaddrs gave them.
    pub by_iface: BTreeMap<String, Vec<(IpAddr, u8)>>,
}

impl Addrs {
    /// Reads every interface address; on failure (should not happen) returns none.
    pub fn read() -> Addrs {
        let mut by_iface: BTreeMap<String, Vec<(IpAddr, u8)>> = BTreeMap::new();
        let Ok(list) = nix::ifaddrs::getifaddrs() else {
            return Addrs::default();
        };
        for ifa in list {
            let Some(addr) = ifa.address else { continue };
            let mask = ifa.netmask;
            let entry = if let Some(v4) = addr.as_sockaddr_in() {
                let prefix = mask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in())
                    .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
                (IpAddr::V4(v4.ip()), prefix)
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let prefix = mask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in6())
                    .map_or(128, |m| u128::from(m.ip()).count_ones() as u8);
                (IpAddr::V6(v6.ip()), prefix)
            } else {
                continue;
            };
            by_iface.entry(ifa.interface_name).or_default().push(entry);
        }
        Addrs { by_iface }
    }

    /// The first IPv4 address of an interface.
    pub fn ipv4_of(&self, name: &str) -> Option<String> {
        self.by_iface
            .get(name)?
            .iter()
            .find(|(a, _)| a.is_ipv4())
            .map(|(a, _)| a.to_string())
    }

    /// The first interface that is not loopback and has an IPv4 address.
    pub fn first_non_loopback_with_ipv4(&self) -> Option<String> {
        self.by_iface
            .iter()
            .find(|(_, v)| v.iter().any(|(a, _)| a.is_ipv4() && !a.is_loopback()))
            .map(|(n, _)| n.clone())
    }
}

/// The MAC address of an interface, empty if none (`class_net` is `/sys/class/net`).
pub fn read_mac(class_net: &Path, name: &str) -> String {
    std::fs::read_to_string(class_net.join(name).join("address"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether an interface is up: `operstate` `up`, or `unknown` (loopback, tunnels) with the
/// `IFF_UP` flag set.
pub fn is_up(operstate: &str, flags: &str) -> bool {
    match operstate.trim() {
        "up" => true,
        "unknown" => {
            let f = flags.trim().trim_start_matches("0x");
            u32::from_str_radix(f, 16).is_ok_and(|v| v & 1 == 1)
        }
        _ => false,
    }
}

/// Parses `/sys/class/net/<name>/speed` (Mbit/s); absent if unknown or negative.
pub fn parse_speed(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| *v > 0.0)
}

/// Reads every interface under `class_net` (normally `/sys/class/net`), sorted by name.
pub fn read(class_net: &Path, addrs: &Addrs) -> std::io::Result<NetworkInterfaces> {
    let mut names: Vec<String> = std::fs::read_dir(class_net)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.truncate(MAX_INTERFACES);
    let interfaces = names
        .into_iter()
        .map(|name| {
            let dir = class_net.join(&name);
            let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            let addresses = addrs
                .by_iface
                .get(&name)
                .map(|v| v.iter().map(|(a, p)| format!("{a}/{p}")).collect())
                .unwrap_or_default();
            InterfaceInfo {
                mac: read_mac(class_net, &name),
                addresses,
                up: is_up(&rd("operstate"), &rd("flags")),
                speed_mbps: parse_speed(&rd("speed")),
                name,
            }
        })
        .collect();
    Ok(NetworkInterfaces { interfaces })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_down_and_speed() {
        assert!(is_up("up\n", "0x1003\n"));
        assert!(is_up("unknown\n", "0x9\n"));
        assert!(!is_up("unknown\n", "0x8\n"));
        assert!(!is_up("down\n", "0x1003\n"));
        assert_eq!(parse_speed("1000\n"), Some(1000.0));
        assert_eq!(parse_speed("-1\n"), None);
        assert_eq!(parse_speed(""), None);
    }

    #[test]
    fn live_interfaces_include_loopback_with_its_address() {
        let addrs = Addrs::read();
        let n = read(Path::new("/sys/class/net"), &addrs).expect("reads sysfs");
        let lo = n.interfaces.iter().find(|i| i.name == "lo").expect("lo");
        assert!(
            lo.addresses.iter().any(|a| a == "127.0.0.1/8"),
            "{:?}",
            lo.addresses
        );
        assert!(lo.up);
    }
}
