//! Flattening a sample into named series, the unit of charts, statistics and alerts.
//!
//! Names are stable and readable: `cpu`, `cpu.user`, `cpu.core[3]`, `mem.used`, `mem.pct`,
//! `disk[/var].pct`, `diskio[sda].read_bps`, `net.rx_bps`, `net[eth0].rx_bps`, `gpu[0].util`,
//! `temp[coretemp].celsius`, `container[web].cpu`, `load.1`, `uptime`, `procs`, `docker.size`,
//! `kernel.vmstat.pgfault` (every entry of the sample's `kernel` map, prefixed).
//! A name inside brackets is the agent's own name for the thing, unchanged.

use crate::sample::MetricSample;

/// Calls `f(name, value)` for every series a sample carries, in a stable order.
pub fn for_each_series(s: &MetricSample, mut f: impl FnMut(&str, f64)) {
    let mut name = String::with_capacity(48);
    let mut num = [0u8; 20];
    let mut put = |name: &str, v: f64| {
        if v.is_finite() {
            f(name, v)
        }
    };
    put("cpu", s.cpu.total);
    for (label, v) in [
        ("cpu.user", s.cpu.user),
        ("cpu.system", s.cpu.system),
        ("cpu.iowait", s.cpu.iowait),
        ("cpu.steal", s.cpu.steal),
    ] {
        if let Some(v) = v {
            put(label, v);
        }
    }
    for (i, v) in s.cpu.per_core.iter().enumerate() {
        name.clear();
        push_parts(&mut name, &["cpu.core[", itoa(i, &mut num), "]"]);
        put(&name, *v);
    }
    put("mem.used", s.mem.used);
    put("mem.total", s.mem.total);
    if let Some(a) = s.mem.available {
        put("mem.available", a);
    }
    put("mem.pct", pct(s.mem.used, s.mem.total));
    if let Some(sw) = &s.swap {
        put("swap.used", sw.used);
        put("swap.total", sw.total);
        put("swap.pct", pct(sw.used, sw.total));
    }
    if let Some(l) = &s.load {
        put("load.1", l.one);
        put("load.5", l.five);
        put("load.15", l.fifteen);
    }
    let (mut used, mut total) = (0.0, 0.0);
    for d in &s.disk {
        used += d.used;
        total += d.total;
        for (field, v) in [
            ("used", Some(d.used)),
            ("total", Some(d.total)),
            ("pct", Some(pct(d.used, d.total))),
            ("inodes_used", d.inodes_used),
            ("inodes_total", d.inodes_total),
            (
                "inodes_pct",
                d.inodes_used.zip(d.inodes_total).map(|(u, t)| pct(u, t)),
            ),
        ] {
            if let Some(v) = v {
                name.clear();
                push_parts(&mut name, &["disk[", &d.name, "].", field]);
                put(&name, v);
            }
        }
    }
    if !s.disk.is_empty() {
        put("disk.pct", pct(used, total));
    }
    for d in &s.disk_io {
        for (field, v) in [
            ("read_bps", d.read_bps),
            ("write_bps", d.write_bps),
            ("read_iops", d.read_iops),
            ("write_iops", d.write_iops),
        ] {
            name.clear();
            push_parts(&mut name, &["diskio[", &d.name, "].", field]);
            put(&name, v);
        }
    }
    put("net.rx_bps", s.net.rx_bps);
    put("net.tx_bps", s.net.tx_bps);
    for n in &s.net_ifaces {
        for (field, v) in [
            ("rx_bps", n.rx_bps),
            ("tx_bps", n.tx_bps),
            ("rx_pps", n.rx_pps),
            ("tx_pps", n.tx_pps),
            ("rx_errs", n.rx_errs),
            ("tx_errs", n.tx_errs),
        ] {
            name.clear();
            push_parts(&mut name, &["net[", &n.name, "].", field]);
            put(&name, v);
        }
    }
    for t in &s.temps {
        name.clear();
        push_parts(&mut name, &["temp[", &t.name, "].celsius"]);
        put(&name, t.celsius);
    }
    for (i, g) in s.gpus.iter().enumerate() {
        for (field, v) in [
            ("util", Some(g.util)),
            ("mem_used", Some(g.mem_used)),
            ("mem_total", Some(g.mem_total)),
            ("temp_c", g.temp_c),
            ("power_w", g.power_w),
        ] {
            if let Some(v) = v {
                name.clear();
                push_parts(&mut name, &["gpu[", itoa(i, &mut num), "].", field]);
                put(&name, v);
            }
        }
    }
    for c in &s.containers {
        for (field, v) in [
            ("cpu", c.cpu),
            ("mem_bytes", c.mem_bytes),
            ("net_rx_bps", c.net_rx_bps),
            ("net_tx_bps", c.net_tx_bps),
            ("running", if c.state == "running" { 1.0 } else { 0.0 }),
        ] {
            name.clear();
            push_parts(&mut name, &["container[", &c.name, "].", field]);
            put(&name, v);
        }
    }
    if let Some(d) = s.docker_size {
        put("docker.size", d);
    }
    put("uptime", s.uptime_sec);
    put("procs", s.proc_count);
    for (k, v) in &s.kernel {
        name.clear();
        push_parts(&mut name, &["kernel.", &**k]);
        put(&name, *v);
    }
}

/// The series a device card shows, in [`for_each_key_series`]'s order.
pub const KEY_SERIES: [&str; 9] = [
    "cpu",
    "mem.pct",
    "swap.pct",
    "disk.pct",
    "net.rx_bps",
    "net.tx_bps",
    "load.1",
    "uptime",
    "procs",
];

/// The [`KEY_SERIES`] of a sample (those it has), as [`for_each_series`] names and
/// computes them, without walking the rest (a sample with kernel statistics has hundreds of
/// series).
pub fn for_each_key_series(s: &MetricSample, mut f: impl FnMut(&'static str, f64)) {
    let mut put = |name: &'static str, v: f64| {
        if v.is_finite() {
            f(name, v)
        }
    };
    put("cpu", s.cpu.total);
    put("mem.pct", pct(s.mem.used, s.mem.total));
    if let Some(sw) = &s.swap {
        put("swap.pct", pct(sw.used, sw.total));
    }
    if !s.disk.is_empty() {
        let used: f64 = s.disk.iter().map(|d| d.used).sum();
        let total: f64 = s.disk.iter().map(|d| d.total).sum();
        put("disk.pct", pct(used, total));
    }
    put("net.rx_bps", s.net.rx_bps);
    put("net.tx_bps", s.net.tx_bps);
    if let Some(l) = &s.load {
        put("load.1", l.one);
    }
    put("uptime", s.uptime_sec);
    put("procs", s.proc_count);
}

/// Flattens a sample for storage: its series names joined by newlines into `names` (the
/// sample's *shape*, which a device's samples share almost always) and their values into
/// `values`, in the same order. Both buffers are cleared first, so they can be reused.
/// Validated names hold no control characters, so a newline never occurs inside a name.
pub fn flatten_into(s: &MetricSample, names: &mut String, values: &mut Vec<f64>) {
    names.clear();
    values.clear();
    for_each_series(s, |n, v| {
        if !values.is_empty() {
            names.push('\n');
        }
        names.push_str(n);
        values.push(v);
    });
}

/// Flattens a sample into `(name, value)` pairs.
pub fn flatten(s: &MetricSample) -> Vec<(String, f64)> {
    let mut out = Vec::with_capacity(32 + s.cpu.per_core.len());
    for_each_series(s, |n, v| out.push((n.to_string(), v)));
    out
}

/// Rebuilds a sample from its series (the inverse of [`flatten`], for CSV import). Derived
/// series (`mem.pct`, `disk[..].pct`, ...) are recomputed, not read. What series cannot carry
/// comes back empty: GPU names (`gpu0`, ...), container images, and container states other
/// than running (`exited`). Unknown names are ignored and counted in the second value.
pub fn unflatten(ts: i64, host_id: &str, values: &[(String, f64)]) -> (MetricSample, usize) {
    let mut s = MetricSample {
        v: crate::PROTOCOL_VERSION,
        ts,
        host_id: host_id.to_string(),
        ..MetricSample::default()
    };
    let mut unknown = 0;
    for (name, v) in values {
        let v = *v;
        if !set(&mut s, name, v) {
            unknown += 1;
        }
    }
    (s, unknown)
}

/// `kind[key].field` -> `(kind, key, field)`; the key may itself contain `]` or `.`.
fn indexed(name: &str) -> Option<(&str, &str, &str)> {
    let open = name.find('[')?;
    let close = name.rfind("].")?;
    (close > open).then(|| (&name[..open], &name[open + 1..close], &name[close + 2..]))
}

/// Finds the item named `key` in `list`, adding it (with `make`) when missing.
fn item<'a, T>(
    list: &'a mut Vec<T>,
    key: &str,
    name: impl Fn(&T) -> &str,
    make: impl FnOnce() -> T,
) -> &'a mut T {
    let at = match list.iter().position(|x| name(x) == key) {
        Some(i) => i,
        None => {
            list.push(make());
            list.len() - 1
        }
    };
    &mut list[at]
}

fn set(s: &mut MetricSample, name: &str, v: f64) -> bool {
    use crate::sample::*;
    match name {
        "cpu" => s.cpu.total = v,
        "cpu.user" => s.cpu.user = Some(v),
        "cpu.system" => s.cpu.system = Some(v),
        "cpu.iowait" => s.cpu.iowait = Some(v),
        "cpu.steal" => s.cpu.steal = Some(v),
        "mem.used" => s.mem.used = v,
        "mem.total" => s.mem.total = v,
        "mem.available" => s.mem.available = Some(v),
        "swap.used" => s.swap.get_or_insert_with(Swap::default).used = v,
        "swap.total" => s.swap.get_or_insert_with(Swap::default).total = v,
        "load.1" => s.load.get_or_insert_with(Load::default).one = v,
        "load.5" => s.load.get_or_insert_with(Load::default).five = v,
        "load.15" => s.load.get_or_insert_with(Load::default).fifteen = v,
        "net.rx_bps" => s.net.rx_bps = v,
        "net.tx_bps" => s.net.tx_bps = v,
        "docker.size" => s.docker_size = Some(v),
        "uptime" => s.uptime_sec = v,
        "procs" => s.proc_count = v,
        "mem.pct" | "swap.pct" | "disk.pct" => {}
        _ if name.starts_with("kernel.") => {
            s.kernel
                .insert(std::sync::Arc::from(&name["kernel.".len()..]), v);
        }
        _ if name.starts_with("cpu.core[") && name.ends_with(']') => {
            let Ok(i) = name["cpu.core[".len()..name.len() - 1].parse::<usize>() else {
                return false;
            };
            if i >= crate::limits::MAX_CORES {
                return false;
            }
            if s.cpu.per_core.len() <= i {
                s.cpu.per_core.resize(i + 1, 0.0);
            }
            s.cpu.per_core[i] = v;
        }
        _ => {
            let Some((kind, key, field)) = indexed(name) else {
                return false;
            };
            match kind {
                "disk" => {
                    let d = item(
                        &mut s.disk,
                        key,
                        |d| &d.name,
                        || Disk {
                            name: key.to_string(),
                            ..Disk::default()
                        },
                    );
                    match field {
                        "used" => d.used = v,
                        "total" => d.total = v,
                        "inodes_used" => d.inodes_used = Some(v),
                        "inodes_total" => d.inodes_total = Some(v),
                        "pct" | "inodes_pct" => {}
                        _ => return false,
                    }
                }
                "diskio" => {
                    let d = item(
                        &mut s.disk_io,
                        key,
                        |d| &d.name,
                        || DiskIo {
                            name: key.to_string(),
                            ..DiskIo::default()
                        },
                    );
                    match field {
                        "read_bps" => d.read_bps = v,
                        "write_bps" => d.write_bps = v,
                        "read_iops" => d.read_iops = v,
                        "write_iops" => d.write_iops = v,
                        _ => return false,
                    }
                }
                "net" => {
                    let n = item(
                        &mut s.net_ifaces,
                        key,
                        |n| &n.name,
                        || NetIface {
                            name: key.to_string(),
                            ..NetIface::default()
                        },
                    );
                    match field {
                        "rx_bps" => n.rx_bps = v,
                        "tx_bps" => n.tx_bps = v,
                        "rx_pps" => n.rx_pps = v,
                        "tx_pps" => n.tx_pps = v,
                        "rx_errs" => n.rx_errs = v,
                        "tx_errs" => n.tx_errs = v,
                        _ => return false,
                    }
                }
                "temp" if field == "celsius" => s.temps.push(Temp {
                    name: key.to_string(),
                    celsius: v,
                }),
                "gpu" => {
                    let Ok(i) = key.parse::<usize>() else {
                        return false;
                    };
                    if i >= crate::limits::MAX_SMALL_LISTS {
                        return false;
                    }
                    while s.gpus.len() <= i {
                        let n = s.gpus.len();
                        s.gpus.push(Gpu {
                            name: format!("gpu{n}"),
                            ..Gpu::default()
                        });
                    }
                    let g = &mut s.gpus[i];
                    match field {
                        "util" => g.util = v,
                        "mem_used" => g.mem_used = v,
                        "mem_total" => g.mem_total = v,
                        "temp_c" => g.temp_c = Some(v),
                        "power_w" => g.power_w = Some(v),
                        _ => return false,
                    }
                }
                "container" => {
                    let c = item(
                        &mut s.containers,
                        key,
                        |c| &c.name,
                        || Container {
                            name: key.to_string(),
                            state: "exited".into(),
                            ..Container::default()
                        },
                    );
                    match field {
                        "cpu" => c.cpu = v,
                        "mem_bytes" => c.mem_bytes = v,
                        "net_rx_bps" => c.net_rx_bps = v,
                        "net_tx_bps" => c.net_tx_bps = v,
                        "running" => c.state = if v >= 0.5 { "running" } else { "exited" }.into(),
                        _ => return false,
                    }
                }
                _ => return false,
            }
        }
    }
    true
}

/// How a derived series is computed from others (see [`derivation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derivation {
    /// `pct(used, total)` of two other series.
    Pct { used: String, total: String },
    /// `pct(Σ disk[*].used, Σ disk[*].total)`: `disk.pct`.
    AllDisks,
}

/// How `name` is computed from other series of the same sample, if it is derived: `mem.pct`,
/// `swap.pct`, `disk[K].pct`, `disk[K].inodes_pct` and `disk.pct`. A store can keep only the
/// other series and compute these when it reads ([`pct`] gives the same bits).
pub fn derivation(name: &str) -> Option<Derivation> {
    let pair = |prefix: &str, used: &str, total: &str| Derivation::Pct {
        used: format!("{prefix}{used}"),
        total: format!("{prefix}{total}"),
    };
    match name {
        "mem.pct" => Some(pair("mem.", "used", "total")),
        "swap.pct" => Some(pair("swap.", "used", "total")),
        "disk.pct" => Some(Derivation::AllDisks),
        _ if name.starts_with("disk[") => {
            if let Some(p) = name.strip_suffix("].inodes_pct") {
                Some(pair(p, "].inodes_used", "].inodes_total"))
            } else {
                name.strip_suffix("].pct")
                    .map(|p| pair(p, "].used", "].total"))
            }
        }
        _ => None,
    }
}

/// `used` as a percentage of `total` (0 when `total` is 0), as derived series compute it.
pub fn pct(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        used / total * 100.0
    } else {
        0.0
    }
}

/// Replaces `buf` by the concatenation of `parts` (names are built per series per sample:
/// plain copies, not the formatting machinery).
fn push_parts(buf: &mut String, parts: &[&str]) {
    buf.clear();
    for p in parts {
        buf.push_str(p);
    }
}

/// `i` in decimal, written into `num`.
fn itoa(mut i: usize, num: &mut [u8; 20]) -> &str {
    let mut at = num.len();
    loop {
        at -= 1;
        num[at] = b'0' + (i % 10) as u8;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&num[at..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::*;

    #[test]
    fn key_series_are_the_flattened_ones() {
        let s: MetricSample = serde_json::from_str(
            r#"{"v":1,"ts":1,"hostId":"h","cpu":{"total":12.5,"perCore":[1,2]},
            "mem":{"used":3.3,"total":7.1},"swap":{"used":1,"total":4},"load":{"one":0.5,"five":1,"fifteen":2},
            "disk":[{"name":"/","used":5.5,"total":11},{"name":"/var","used":2.25,"total":8.5}],
            "net":{"txBps":7,"rxBps":9},"uptimeSec":100,"procCount":42,
            "kernel":{"pgfault":5}}"#,
        )
        .expect("sample");
        let mut want = Vec::new();
        for_each_series(&s, |n, v| {
            if KEY_SERIES.contains(&n) {
                want.push((n.to_string(), v.to_bits()));
            }
        });
        let mut got = Vec::new();
        for_each_key_series(&s, |n, v| got.push((n.to_string(), v.to_bits())));
        want.sort();
        got.sort();
        assert_eq!(want.len(), 9);
        assert_eq!(got, want);
    }

    #[test]
    fn derivations_recompute_the_flattened_values() {
        let s: MetricSample = serde_json::from_str(
            r#"{"v":1,"ts":1,"hostId":"h","cpu":{"total":1},"mem":{"used":3.3,"total":7.1},
            "swap":{"used":1,"total":0},
            "disk":[{"name":"/","used":5.5,"total":11,"inodesUsed":3,"inodesTotal":9},
                    {"name":"/var","used":2,"total":8}],
            "net":{"txBps":0,"rxBps":0},"uptimeSec":1,"procCount":1}"#,
        )
        .expect("sample");
        let all = flatten(&s);
        let get = |n: &str| all.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        let mut derived = 0;
        for (name, v) in &all {
            match derivation(name) {
                Some(Derivation::Pct { used, total }) => {
                    let got = pct(get(&used).expect("used"), get(&total).expect("total"));
                    assert_eq!(got.to_bits(), v.to_bits(), "{name}");
                    derived += 1;
                }
                Some(Derivation::AllDisks) => derived += 1,
                None => {}
            }
        }
        assert_eq!(
            derived, 6,
            "mem, swap, two disks, one inodes, and all disks"
        );
        assert_eq!(derivation("cpu"), None);
        assert_eq!(derivation("disk[weird].pct].used"), None);
    }

    #[test]
    fn flattens_nested_parts_with_stable_names() {
        let s = MetricSample {
            v: 1,
            ts: 0,
            host_id: "h".into(),
            cpu: Cpu {
                total: 50.0,
                per_core: vec![40.0, 60.0],
                ..Default::default()
            },
            mem: Mem {
                used: 1.0,
                total: 4.0,
                available: None,
            },
            disk: vec![Disk {
                name: "/".into(),
                used: 1.0,
                total: 2.0,
                ..Default::default()
            }],
            net: Net {
                tx_bps: 3.0,
                rx_bps: 4.0,
            },
            uptime_sec: 9.0,
            proc_count: 7.0,
            swap: None,
            load: None,
            disk_io: vec![],
            net_ifaces: vec![],
            temps: vec![],
            gpus: vec![],
            containers: vec![],
            docker_size: None,
            kernel: Default::default(),
        };
        let f = flatten(&s);
        let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("cpu"), Some(50.0));
        assert_eq!(get("cpu.core[1]"), Some(60.0));
        assert_eq!(get("mem.pct"), Some(25.0));
        assert_eq!(get("disk[/].pct"), Some(50.0));
        assert_eq!(get("disk.pct"), Some(50.0));
        assert_eq!(get("net.rx_bps"), Some(4.0));
        assert_eq!(get("procs"), Some(7.0));
    }
    #[test]
    fn unflatten_inverts_flatten() {
        let s = MetricSample {
            v: crate::PROTOCOL_VERSION,
            ts: 1_700_000_000_000,
            host_id: "h".into(),
            cpu: Cpu {
                total: 50.0,
                per_core: vec![40.0, 60.0, 55.5],
                user: Some(30.0),
                system: Some(15.0),
                iowait: Some(1.0),
                steal: Some(0.5),
            },
            mem: Mem {
                used: 4e9,
                total: 8e9,
                available: Some(3e9),
            },
            disk: vec![
                Disk {
                    name: "/".into(),
                    used: 5e10,
                    total: 1e11,
                    inodes_used: Some(1e5),
                    inodes_total: Some(1e6),
                },
                Disk {
                    name: "/mnt/odd].name".into(),
                    used: 1.0,
                    total: 2.0,
                    ..Disk::default()
                },
            ],
            net: Net {
                tx_bps: 100.0,
                rx_bps: 200.0,
            },
            uptime_sec: 3600.0,
            proc_count: 211.0,
            swap: Some(Swap {
                used: 1.0,
                total: 4.0,
            }),
            load: Some(Load {
                one: 0.5,
                five: 0.4,
                fifteen: 0.3,
            }),
            disk_io: vec![DiskIo {
                name: "sda".into(),
                read_bps: 1.0,
                write_bps: 2.0,
                read_iops: 3.0,
                write_iops: 4.0,
            }],
            net_ifaces: vec![NetIface {
                name: "eth0".into(),
                rx_bps: 1.0,
                tx_bps: 2.0,
                rx_pps: 3.0,
                tx_pps: 4.0,
                rx_errs: 5.0,
                tx_errs: 6.0,
            }],
            temps: vec![Temp {
                name: "cpu".into(),
                celsius: 45.0,
            }],
            gpus: vec![Gpu {
                name: "gpu0".into(),
                util: 10.0,
                mem_used: 1.0,
                mem_total: 2.0,
                temp_c: Some(60.0),
                power_w: None,
            }],
            containers: vec![Container {
                name: "web".into(),
                image: String::new(),
                state: "running".into(),
                cpu: 1.0,
                mem_bytes: 2.0,
                net_rx_bps: 3.0,
                net_tx_bps: 4.0,
            }],
            docker_size: Some(9.0),
            kernel: [(std::sync::Arc::from("vmstat.pgfault"), 12.5)].into(),
        };
        let flat = flatten(&s);
        let (back, unknown) = unflatten(s.ts, "h", &flat);
        assert_eq!(unknown, 0);
        assert_eq!(back, s, "every field series can carry comes back");
        assert_eq!(flatten(&back), flat);
        let (_, unknown) = unflatten(
            0,
            "h",
            &[("nope".into(), 1.0), ("disk[/].bogus".into(), 1.0)],
        );
        assert_eq!(unknown, 2);
        let (huge, unknown) = unflatten(0, "h", &[("cpu.core[99999999]".into(), 1.0)]);
        assert_eq!(unknown, 1);
        assert!(huge.cpu.per_core.is_empty());
    }
}
