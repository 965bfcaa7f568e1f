//! Memory and swap from `/proc/meminfo`.
//!
//! Used memory is `MemTotal - MemAvailable` (what `free` calls used, counting reclaimable
//! cache as free). Kernels older than 3.14 have no `MemAvailable`: it is then estimated as
//! `MemFree + Buffers + Cached + SReclaimable - Shmem`. All values are bytes (`kB` x 1024).

use vitals_proto::sample::{Mem, Swap};

/// Memory and swap in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub mem: Mem,
    pub swap: Swap,
}

/// Parses `/proc/meminfo`. `None` if `MemTotal` is missing.
pub fn parse(text: &str) -> Option<Reading> {
    let get = |key: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kb: f64 = rest.split_ascii_whitespace().next()?.parse().ok()?;
            Some(kb * 1024.0)
        })
    };
    let total = get("MemTotal")?;
    let available = match get("MemAvailable") {
        Some(a) => a,
        None => {
            let free = get("MemFree").unwrap_or(0.0);
            let buffers = get("Buffers").unwrap_or(0.0);
            let cached = get("Cached").unwrap_or(0.0);
            let reclaim = get("SReclaimable").unwrap_or(0.0);
            let shmem = get("Shmem").unwrap_or(0.0);
            (free + buffers + cached + reclaim - shmem).max(0.0)
        }
    }
    .min(total);
    let swap_total = get("SwapTotal").unwrap_or(0.0);
    let swap_free = get("SwapFree").unwrap_or(0.0).min(swap_total);
    Some(Reading {
        mem: Mem {
            used: total - available,
            total,
            available: Some(available),
        },
        swap: Swap {
            used: swap_total - swap_free,
            total: swap_total,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_is_total_minus_available() {
        let r = parse(include_str!("../../tests/fixtures/meminfo")).expect("parses");
        assert_eq!(r.mem.total, 16_384_000.0 * 1024.0);
        assert_eq!(r.mem.available, Some(8_192_000.0 * 1024.0));
        assert_eq!(r.mem.used, 8_192_000.0 * 1024.0);
        assert_eq!(r.swap.total, 4_194_304.0 * 1024.0);
        assert_eq!(r.swap.used, 1_048_576.0 * 1024.0);
    }

    #[test]
    fn old_kernels_without_mem_available_are_estimated() {
        let r = parse(include_str!("../../tests/fixtures/meminfo_old_kernel")).expect("parses");
        // free 200 + buffers 100 + cached 300 + sreclaimable 50 - shmem 50 = 600 kB available.
        assert_eq!(r.mem.available, Some(600.0 * 1024.0));
        assert_eq!(r.mem.used, 400.0 * 1024.0);
        assert_eq!(r.swap.used, 0.0);
    }

    #[test]
    fn missing_total_is_an_error() {
        assert_eq!(parse("MemFree: 1 kB\n"), None);
    }
}
