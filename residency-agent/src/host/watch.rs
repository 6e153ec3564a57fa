//! Noticing cgroups that appear, disappear or are re-created (a restarted systemd
//! unit, a new pod), so that their policy applies at once: inotify on the directories
//! where configured cgroups live or will live. The same mechanism notices a changed
//! config file (an edit, or a Kubernetes ConfigMap's symlink swap).
//!
//! inotify only wakes the daemon up; what changed is found by re-resolving every
//! configured cgroup (`daemon::rescan`), so a missed or coalesced event costs nothing
//! but latency, and a periodic rescan backs it up.

use std::path::Path;

use futures_util::{FutureExt as _, StreamExt as _};
use inotify::{EventStream, Inotify, WatchMask};

/// One inotify instance and its event stream. Must be created inside the tokio
/// runtime (the stream registers with the reactor).
pub struct DirWatch {
    events: EventStream<Vec<u8>>,
    /// A watch could not be added (other than for a directory that is gone): events
    /// may be missed, so the caller must not wait for them.
    pub incomplete: std::cell::Cell<bool>,
}

impl DirWatch {
    pub fn new() -> std::io::Result<DirWatch> {
        let events = Inotify::init()?.into_event_stream(vec![0u8; 4096])?;
        Ok(DirWatch {
            events,
            incomplete: std::cell::Cell::new(false),
        })
    }

    /// Watches `dir` for entries created, deleted or moved in (adding a watch twice is
    /// harmless: the kernel returns the same one).
    pub fn watch(&self, dir: &Path) {
        self.add(
            dir,
            WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
        );
    }

    /// Watches the directory holding a config file for edits in place, renames over it,
    /// and Kubernetes ConfigMap updates (an atomic swap of the `..data` symlink).
    pub fn watch_config_dir(&self, dir: &Path) {
        self.add(
            dir,
            WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_TO
                | WatchMask::CLOSE_WRITE
                | WatchMask::ONLYDIR,
        );
    }

    fn add(&self, dir: &Path, mask: WatchMask) {
        // A directory that is gone is fine: the periodic rescan covers it. Any other
        // failure (fs.inotify.max_user_watches reached) means changes can go unseen.
        if let Err(e) = self.events.watches().add(dir, mask)
            && e.kind() != std::io::ErrorKind::NotFound
            && !self.incomplete.replace(true)
        {
            tracing::warn!(
                dir = %dir.display(),
                "cannot watch for cgroup changes ({e}); rescanning every second instead"
            );
        }
    }

    /// Waits for any change, then drains what is already queued, so that a burst of
    /// events (a pod's cgroups created at once) wakes the daemon once.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        if let Some(event) = self.events.next().await {
            event?;
        }
        while let Some(Some(_)) = self.events.next().now_or_never() {}
        Ok(())
    }
}
