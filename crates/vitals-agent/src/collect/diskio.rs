//! Block device throughput and IOPS from `/proc/diskstats`.
//!
//! Columns used (kernel `Documentation/admin-guide/iostats.rst`): reads completed (4), sectors
//! read (6), writes completed (8), sectors written (10). A sector here is always 512 bytes,
//! whatever the device's real sector size. Only whole devices are reported (partitions would
//! count the same bytes twice); loop, ram and zram devices and floppies are skipped.
//! Rates come from [`compute`], pure over two readings.

use vitals_proto::limits::MAX_DISKS;
use vitals_proto::sample::DiskIo;

use super::rate::per_sec;

/// Cumulative counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub write_sectors: u64,
}

/// Whether a device name from diskstats is a whole device worth reporting. `is_whole` says
/// whether `/sys/block/<name>` exists (partitions only appear below their disk).
pub fn is_reported(name: &str, is_whole: bool) -> bool {
    let skipped = ["loop", "ram", "zram", "fd", "sr"];
    is_whole && !skipped.iter().any(|p| name.starts_with(p))
}

/// Parses `/proc/diskstats`, keeping devices for which `keep(name)` is true.
pub fn parse(text: &str, mut keep: impl FnMut(&str) -> bool) -> Vec<(String, Counters)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let name = f[2];
        if !keep(name) {
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        out.push((
            name.to_string(),
            Counters {
                reads: n(3),
                read_sectors: n(5),
                writes: n(7),
                write_sectors: n(9),
            },
        ));
        if out.len() >= MAX_DISKS {
            break;
        }
    }
    out
}

/// Rates between two readings `secs` apart. A device absent from `prev` is skipped this time.
pub fn compute(prev: &[(String, Counters)], cur: &[(String, Counters)], secs: f64) -> Vec<DiskIo> {
    cur.iter()
        .filter_map(|(name, c)| {
            let (_, p) = prev.iter().find(|(n, _)| n == name)?;
            Some(DiskIo {
                name: name.clone(),
                read_bps: per_sec(p.read_sectors, c.read_sectors, secs) * 512.0,
                write_bps: per_sec(p.write_sectors, c.write_sectors, secs) * 512.0,
                read_iops: per_sec(p.reads, c.reads, secs),
                write_iops: per_sec(p.writes, c.writes, secs),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = include_str!("../../tests/fixtures/diskstats_a");
    const B: &str = include_str!("../../tests/fixtures/diskstats_b");

    fn whole(name: &str) -> bool {
        is_reported(name, matches!(name, "sda" | "nvme0n1" | "loop0"))
    }

    #[test]
    fn keeps_whole_devices_only() {
        let r = parse(A, whole);
        let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["sda", "nvme0n1"]);
    }

    #[test]
    fn bytes_and_iops_per_second() {
        let io = compute(&parse(A, whole), &parse(B, whole), 2.0);
        assert_eq!(io.len(), 2);
        let sda = &io[0];
        // +20 reads, +4096 sectors read, +10 writes, +2048 sectors written over 2 s.
        assert_eq!(sda.read_iops, 10.0);
        assert_eq!(sda.read_bps, 4096.0 * 512.0 / 2.0);
        assert_eq!(sda.write_iops, 5.0);
        assert_eq!(sda.write_bps, 2048.0 * 512.0 / 2.0);
        assert_eq!(io[1].read_bps, 0.0);
    }
}
