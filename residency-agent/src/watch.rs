//! Noticing cgroups that appear, disappear or are re-created (a restarted systemd
//! unit, a new pod), so that their policy applies at once: inotify on the directories
//! where configured cgroups live or will live. The same mechanism notices a changed
//! config file (an edit, or a Kubernetes ConfigMap's symlink swap).
//!
//! inotify only wakes the daemon up; what changed is found by re-resolving every
//! configured cgroup (`Daemon::rescan`), so a missed or coalesced event costs nothing
//! but latency, and a periodic rescan backs it up.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use tokio::io::unix::AsyncFd;

// Must be created inside the tokio runtime (it registers with the reactor).

pub struct CgroupWatch {
    fd: AsyncFd<OwnedFd>,
}

impl CgroupWatch {
    pub fn new() -> std::io::Result<CgroupWatch> {
        // SAFETY: inotify_init1 returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(CgroupWatch {
            fd: crate::events::readable(fd)?,
        })
    }

    /// Watches `dir` for entries created, deleted or moved in (adding a watch twice is
    /// harmless: the kernel returns the same one).
    pub fn watch(&self, dir: &Path) {
        self.watch_mask(
            dir,
            libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_TO | libc::IN_ONLYDIR,
        );
    }

    /// Watches the directory holding a config file for edits in place, renames over it,
    /// and Kubernetes ConfigMap updates (an atomic swap of the `..data` symlink).
    pub fn watch_config_dir(&self, dir: &Path) {
        self.watch_mask(
            dir,
            libc::IN_CREATE
                | libc::IN_DELETE
                | libc::IN_MOVED_TO
                | libc::IN_CLOSE_WRITE
                | libc::IN_ONLYDIR,
        );
    }

    fn watch_mask(&self, dir: &Path, mask: u32) {
        let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: valid fd and NUL-terminated path; a failure (dir gone) is fine.
        unsafe { libc::inotify_add_watch(self.fd.get_ref().as_raw_fd(), c.as_ptr(), mask) };
    }

    /// Waits for any change and drains the queue.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read into a buffer we own, of the size we pass.
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
        }
        guard.clear_ready();
        Ok(())
    }
}
