//! Flattening a sample into named series, the unit of charts, statistics and alerts.
//!
//! Names are stable and readable: `cpu`, `cpu.user`, `cpu.core[3]`, `mem.used`, `mem.pct`,
//! `disk[/var].pct`, `diskio[sda].read_bps`, `net.rx_bps`, `net[eth0].rx_bps`, `gpu[0].util`,
//! `temp[coretemp].celsius`, `container[web].cpu`, `load.1`, `uptime`, `procs`, `docker.size`.
//! A name inside brackets is the agent's own name for the thing, unchanged.

use crate::sample::MetricSample;

/// Calls `f(name, value)` for every series a sample carries, in a stable order.
pub fn for_each_series(s: &MetricSample, mut f: impl FnMut(&str, f64)) {
    let mut name = String::with_capacity(48);
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
        push_fmt(&mut name, format_args!("cpu.core[{i}]"));
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
                push_fmt(&mut name, format_args!("disk[{}].{field}", d.name));
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
            push_fmt(&mut name, format_args!("diskio[{}].{field}", d.name));
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
            push_fmt(&mut name, format_args!("net[{}].{field}", n.name));
            put(&name, v);
        }
    }
    for t in &s.temps {
        name.clear();
        push_fmt(&mut name, format_args!("temp[{}].celsius", t.name));
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
                push_fmt(&mut name, format_args!("gpu[{i}].{field}"));
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
            push_fmt(&mut name, format_args!("container[{}].{field}", c.name));
            put(&name, v);
        }
    }
    if let Some(d) = s.docker_size {
        put("docker.size", d);
    }
    put("uptime", s.uptime_sec);
    put("procs", s.proc_count);
}

/// Flattens a sample into `(name, value)` pairs.
pub fn flatten(s: &MetricSample) -> Vec<(String, f64)> {
    let mut out = Vec::with_capacity(32 + s.cpu.per_core.len());
    for_each_series(s, |n, v| out.push((n.to_string(), v)));
    out
}

fn pct(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        used / total * 100.0
    } else {
        0.0
    }
}

fn push_fmt(buf: &mut String, args: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = buf.write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::*;

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
}
