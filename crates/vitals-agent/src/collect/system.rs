//! Load averages (`/proc/loadavg`), uptime (`/proc/uptime`) and the process count (numeric
//! entries of `/proc`, i.e. thread-group leaders, not threads).

use std::path::Path;

use vitals_proto::sample::Load;

/// Parses the first three fields of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<Load> {
    let mut it = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    Some(Load {
        one: it.next()??,
        five: it.next()??,
        fifteen: it.next()??,
    })
}

/// Parses seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Counts processes: the all-digit names in a `/proc` directory.
pub fn count_processes(proc_dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(proc_dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .as_encoded_bytes()
            .iter()
            .all(u8::is_ascii_digit)
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg_and_uptime() {
        let l = parse_loadavg("0.30 0.37 0.20 1/142 9395\n").expect("parses");
        assert_eq!((l.one, l.five, l.fifteen), (0.30, 0.37, 0.20));
        assert_eq!(parse_uptime("412.04 595.70\n"), Some(412.04));
        assert!(parse_loadavg("0.30 x").is_none());
    }

    #[test]
    fn counts_only_numeric_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["1", "42", "self", "net", "4a"] {
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        assert_eq!(count_processes(dir.path()).expect("count"), 2);
    }
}
