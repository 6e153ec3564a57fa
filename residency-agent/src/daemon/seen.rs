//! What the config watch remembers of the config file last applied (or rejected): the
//! digest of its content, and the file's identity, size and times when it was read, so
//! that a file nobody touched since is neither read nor hashed again on every tick (a
//! million-prefix file is 20 MB; hashing it takes 17 ms with SHA instructions, several
//! times that without).

use std::{os::unix::fs::MetadataExt as _, path::Path};

/// SHA-256 of a config file's content.
pub type Digest = [u8; 32];

/// The [`Digest`] of `content`.
pub fn digest(content: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(content).into()
}

/// A file's identity, size and modification and change times: any write, rename over
/// it or ConfigMap swap (a new file behind the symlink) changes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The [`FileStat`] of `path` (following symlinks), if it can be read. Taken before
/// the file is read: a write in between then shows as a change next time, never as
/// none.
pub fn stat(path: &Path) -> Option<FileStat> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStat {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// The content last applied or rejected, and the file as it was when read.
#[derive(Debug, Clone)]
pub struct Seen {
    pub digest: Digest,
    pub stat: Option<FileStat>,
}

impl Seen {
    /// Whether the file is known to be as it was when read: same identity, size and
    /// times.
    pub fn untouched(&self, now: Option<FileStat>) -> bool {
        now.is_some() && self.stat == now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_or_replaced_is_no_longer_untouched() {
        let dir = std::env::temp_dir().join(format!("residency-seen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("residency.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let seen = Seen {
            digest: digest(b"a = 1\n"),
            stat: stat(&path),
        };
        assert!(seen.untouched(stat(&path)));
        // Replaced by a rename (a new inode), as editors and ConfigMaps do.
        let next = dir.join("next.toml");
        std::fs::write(&next, "a = 2\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(!seen.untouched(stat(&path)));
        // Gone: never untouched.
        std::fs::remove_file(&path).unwrap();
        assert!(!seen.untouched(stat(&path)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
