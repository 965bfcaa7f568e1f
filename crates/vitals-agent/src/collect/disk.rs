//! Filesystem usage: mounts from `/proc/self/mountinfo`, sizes and inodes from `statvfs(2)`.
//!
//! Which mounts count ([`select`], pure and tested on a captured mountinfo):
//! - pseudo and in-memory filesystems (`proc`, `sysfs`, `tmpfs`, `cgroup2`, `overlay` other than
//!   the root, squashfs snaps, ...) are skipped, and so is anything under `/proc`, `/sys`, `/dev`
//!   or a container engine's private directories;
//! - network filesystems (`nfs`, `cifs`, `sshfs`, ...) are skipped because `statvfs` on a dead
//!   server blocks, and the 1-second loop must never block;
//! - a filesystem mounted several times (bind mounts) is counted once, under the mount whose
//!   root is the filesystem root and, among those, the shortest mount point.
//!
//! Used = `(f_blocks - f_bfree) * f_frsize`, total = `f_blocks * f_frsize` (what `df` shows);
//! inodes used/total likewise from `f_files`/`f_ffree`, absent when the filesystem has no fixed
//! inode table (`f_files == 0`, e.g. btrfs).

use std::collections::HashMap;

use vitals_proto::limits::MAX_DISKS;
use vitals_proto::sample::Disk;

/// One line of mountinfo, with the fields selection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem: equal for every bind mount of it.
    pub dev: String,
    /// Path inside the filesystem that is mounted (`/` unless a bind mount of a subtree).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
}

const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fusectl",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfsd",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

const NETWORK_FS: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "fuse.glusterfs",
    "fuse.rclone",
    "fuse.s3fs",
    "fuse.sshfs",
    "glusterfs",
    "lustre",
    "ncpfs",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

const SKIPPED_PREFIXES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run/credentials",
    "/var/lib/docker/",
    "/var/lib/containers/storage/",
    "/var/lib/kubelet/pods/",
    "/snap/",
];

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo`. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let _id = l.next()?;
            let _parent = l.next()?;
            let dev = l.next()?;
            let root = l.next()?;
            let mount_point = l.next()?;
            let fs_type = right.split(' ').next()?;
            Some(Mount {
                dev: dev.to_string(),
                root: unescape(root),
                mount_point: unescape(mount_point),
                fs_type: fs_type.to_string(),
            })
        })
        .collect()
}

fn under(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Whether a mount is a real, local filesystem worth reporting.
pub fn is_reportable(m: &Mount) -> bool {
    if m.fs_type == "overlay" {
        // A container's root filesystem is an overlay: report it, but not Docker's layers.
        return m.mount_point == "/";
    }
    if PSEUDO_FS.contains(&m.fs_type.as_str()) || NETWORK_FS.contains(&m.fs_type.as_str()) {
        return false;
    }
    !SKIPPED_PREFIXES.iter().any(|p| under(&m.mount_point, p))
}

/// The mounts to report, one per filesystem, in mountinfo order, at most [`MAX_DISKS`].
pub fn select(mounts: &[Mount]) -> Vec<Mount> {
    let mut best: HashMap<&str, &Mount> = HashMap::new();
    let rank = |m: &Mount| (m.root != "/", m.mount_point.len());
    for m in mounts.iter().filter(|m| is_reportable(m)) {
        best.entry(m.dev.as_str())
            .and_modify(|cur| {
                if rank(m) < rank(cur) {
                    *cur = m;
                }
            })
            .or_insert(m);
    }
    let mut out: Vec<Mount> = Vec::new();
    for m in mounts {
        if best
            .get(m.dev.as_str())
            .is_some_and(|b| std::ptr::eq(*b, m))
        {
            out.push(m.clone());
        }
    }
    out.truncate(MAX_DISKS);
    out
}

/// Raw `statvfs` numbers needed for a [`Disk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
}

/// Turns `statvfs` numbers into a [`Disk`]. `None` for a filesystem of size 0.
pub fn to_disk(name: &str, s: FsStats) -> Option<Disk> {
    if s.blocks == 0 {
        return None;
    }
    let total = s.blocks as f64 * s.frsize as f64;
    let used = s.blocks.saturating_sub(s.bfree) as f64 * s.frsize as f64;
    let (inodes_used, inodes_total) = if s.files > 0 {
        (
            Some(s.files.saturating_sub(s.ffree) as f64),
            Some(s.files as f64),
        )
    } else {
        (None, None)
    };
    Some(Disk {
        name: name.to_string(),
        used,
        total,
        inodes_used,
        inodes_total,
    })
}

/// Calls `statvfs(2)` on a mount point.
// The field types are `u64` on 64-bit targets but narrower on some 32-bit ones.
#[allow(clippy::useless_conversion)]
pub fn statvfs(path: &str) -> nix::Result<FsStats> {
    let s = nix::sys::statvfs::statvfs(path)?;
    Ok(FsStats {
        frsize: u64::from(s.fragment_size()).max(1),
        blocks: u64::from(s.blocks()),
        bfree: u64::from(s.blocks_free()),
        files: u64::from(s.files()),
        ffree: u64::from(s.files_free()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = include_str!("../../tests/fixtures/mountinfo");

    #[test]
    fn selects_real_filesystems_once() {
        let sel = select(&parse_mountinfo(MOUNTINFO));
        let names: Vec<&str> = sel.iter().map(|m| m.mount_point.as_str()).collect();
        // /srv/data is a bind mount of /home's subtree (same 8:3): counted once, as /home.
        // /mnt/my disk exercises the \040 escape.
        assert_eq!(names, vec!["/", "/boot", "/home", "/mnt/my disk"]);
    }

    #[test]
    fn pseudo_network_and_container_mounts_are_skipped() {
        let all = parse_mountinfo(MOUNTINFO);
        for skipped in [
            "/proc",
            "/sys/fs/cgroup",
            "/run",
            "/mnt/nfs",
            "/var/lib/docker/overlay2/abc/merged",
            "/snap/core/1",
        ] {
            let m = all
                .iter()
                .find(|m| m.mount_point == skipped)
                .expect(skipped);
            assert!(!is_reportable(m), "{skipped} should be skipped");
        }
    }

    #[test]
    fn overlay_root_of_a_container_is_reported() {
        let m = Mount {
            dev: "0:50".into(),
            root: "/".into(),
            mount_point: "/".into(),
            fs_type: "overlay".into(),
        };
        assert!(is_reportable(&m));
    }

    #[test]
    fn statvfs_numbers_become_bytes_and_inodes() {
        let d = to_disk(
            "/",
            FsStats {
                frsize: 4096,
                blocks: 1000,
                bfree: 250,
                files: 100,
                ffree: 40,
            },
        )
        .expect("disk");
        assert_eq!(d.total, 4_096_000.0);
        assert_eq!(d.used, 3_072_000.0);
        assert_eq!(d.inodes_used, Some(60.0));
        assert_eq!(d.inodes_total, Some(100.0));
        let btrfs = to_disk(
            "/b",
            FsStats {
                frsize: 4096,
                blocks: 10,
                bfree: 5,
                files: 0,
                ffree: 0,
            },
        )
        .expect("disk");
        assert_eq!(btrfs.inodes_total, None);
        assert!(
            to_disk(
                "/z",
                FsStats {
                    frsize: 4096,
                    blocks: 0,
                    bfree: 0,
                    files: 0,
                    ffree: 0
                }
            )
            .is_none()
        );
    }

    #[test]
    fn live_root_matches_statvfs() {
        let s = statvfs("/").expect("statvfs /");
        assert!(s.blocks > 0);
    }
}
