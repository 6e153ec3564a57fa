//! cgroup v2 on the host: where the hierarchy is mounted, how config paths map into it,
//! and the ids the kernel program sees (`bpf_skb_cgroup_id`).
//!
//! The mount point is read from `/proc/self/mountinfo`, never assumed: most hosts mount
//! cgroup2 at `/sys/fs/cgroup`, hybrid hosts at `/sys/fs/cgroup/unified`.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Errors about cgroups on this host.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error(
        "no cgroup v2 hierarchy is mounted on this host (none in /proc/self/mountinfo); \
         residency needs cgroup v2 to attach its program"
    )]
    NoCgroup2,
    #[error("cgroup \"{path}\" is outside the cgroup v2 hierarchy mounted at {mount}")]
    Outside { path: String, mount: PathBuf },
    #[error("cannot use cgroup {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cgroup v2 directory")]
    NotCgroup { path: PathBuf },
}

/// The cgroup v2 hierarchy of this host.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mount: PathBuf,
}

impl Hierarchy {
    /// Finds the cgroup2 mount in `/proc/self/mountinfo`.
    pub fn discover() -> Result<Hierarchy, CgroupError> {
        let text =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
        Self::from_mountinfo(&text).ok_or(CgroupError::NoCgroup2)
    }

    /// The first cgroup2 mount in mountinfo text. Format (proc(5)): fields up to the
    /// mount point are positional, then optional fields, `-`, and the fs type.
    pub fn from_mountinfo(text: &str) -> Option<Hierarchy> {
        text.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| Hierarchy {
                mount: PathBuf::from(unescape(mount)),
            })
        })
    }

    /// Resolves a config path: absolute paths must lie under the mount; relative paths
    /// start at the root of the hierarchy ("." is the root).
    pub fn resolve(&self, path: &str) -> Result<PathBuf, CgroupError> {
        if path.starts_with('/') {
            let p = Path::new(path);
            if p.starts_with(&self.mount) {
                Ok(p.to_path_buf())
            } else {
                Err(CgroupError::Outside {
                    path: path.to_owned(),
                    mount: self.mount.clone(),
                })
            }
        } else if path == "." {
            Ok(self.mount.clone())
        } else {
            Ok(self.mount.join(path))
        }
    }
}

/// The cgroup id of a cgroup v2 directory: the inode number of its kernfs node, which
/// is what `bpf_skb_cgroup_id()` returns (Linux >= 5.5, 64-bit hosts).
pub fn id_of(path: &Path) -> Result<u64, CgroupError> {
    let meta = std::fs::metadata(path).map_err(|source| CgroupError::Stat {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() || !path.join("cgroup.procs").exists() {
        return Err(CgroupError::NotCgroup {
            path: path.to_owned(),
        });
    }
    Ok(meta.ino())
}

/// Undoes the octal escapes of mountinfo (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n";

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let h = Hierarchy::from_mountinfo(HYBRID).unwrap();
        assert_eq!(h.mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert!(Hierarchy::from_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n").is_none());
    }

    #[test]
    fn resolves_config_paths() {
        let h = Hierarchy {
            mount: PathBuf::from("/sys/fs/cgroup/unified"),
        };
        assert_eq!(
            h.resolve(".").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            h.resolve("system.slice/a.service").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/system.slice/a.service")
        );
        assert_eq!(
            h.resolve("/sys/fs/cgroup/unified/x").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/x")
        );
        let e = h
            .resolve("/sys/fs/cgroup/system.slice/payments.service")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outside the cgroup v2 hierarchy mounted at /sys/fs/cgroup/unified"),
            "{e}"
        );
        assert!(h.resolve("/sys/fs/cgroup/unifiedx").is_err());
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
