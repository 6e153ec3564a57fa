//! The owner of the pinned state: the lock that makes one agent at a time the owner
//! ([`lock`], [`Owner`]), and that is also its hold on the bpffs the pins are on, so a
//! lost pin mount can be told from a removal ([`Owner::state`]) and its pins moved to
//! a new bpffs ([`repin`]).

use std::path::{Path, PathBuf};

use super::{PinError, io, links_dir, maps_dir, remove_instance};
use crate::sys::fs::{self, Locked};

/// Takes the exclusive lock on `pin_path` that makes one agent at a time the owner of
/// the pinned state (a second agent would retire the first one's links and write into
/// the slot it believes idle). Waits up to `wait` for a previous agent to exit (a
/// rolling update), then fails. The lock lives as long as the returned file, and the
/// kernel drops it when the process dies, SIGKILL included.
pub fn lock(pin_path: &Path, wait: std::time::Duration) -> Result<Owner, PinError> {
    let mut dir = std::fs::File::open(pin_path).map_err(io(pin_path))?;
    let deadline = std::time::Instant::now() + wait;
    let mut said = false;
    loop {
        match fs::try_lock_exclusive(dir).map_err(io(pin_path))? {
            Locked::Held(lock) => return Owner::new(lock),
            Locked::Busy(file) => dir = file,
        }
        if std::time::Instant::now() >= deadline {
            return Err(PinError::Locked {
                path: pin_path.to_owned(),
            });
        }
        if !said {
            tracing::info!(path = %pin_path.display(), "another residency-agent owns the pinned state; waiting for it to exit");
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The owner lock on a pin path, held until dropped. The locked directory is also the
/// agent's hold on the bpffs it is on: if that mount is taken away (a lazy unmount, a
/// mount over it), the pins in it — the enforcement — live on as long as this lock.
pub struct Owner {
    lock: nix::fcntl::Flock<std::fs::File>,
    /// Device and inode of the locked directory: the pin path seen now is still the
    /// same directory only while they match.
    identity: (u64, u64),
}

/// Where a running agent's pins stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    /// The instance is where it was pinned.
    Intact,
    /// The pin path is the directory the agent locked, and its instance is gone from
    /// it: `detach` (or a newer agent) removed it on purpose.
    Removed,
    /// The pin path no longer shows the locked directory (its bpffs was unmounted, or
    /// something was mounted over it). The pins live on in the unreachable mount only
    /// while the agent holds its lock.
    MountLost,
}

impl Owner {
    fn new(lock: nix::fcntl::Flock<std::fs::File>) -> Result<Owner, PinError> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = lock.metadata().map_err(|source| PinError::Io {
            path: PathBuf::from("(pin path lock)"),
            source,
        })?;
        Ok(Owner {
            lock,
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// The locked directory through `/proc/self/fd`: reachable while the pin path is not.
    fn held_dir(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!("/proc/self/fd/{}", self.lock.as_raw_fd()))
    }

    /// Tells an intact instance, a removal and a lost mount apart. A lost mount is
    /// one that still holds the instance through the lock: a pin directory removed
    /// whole, or an instance removed before its mount went, is a removal.
    pub fn state(&self, pin_path: &Path, instance: &Path) -> PinState {
        use std::os::unix::fs::MetadataExt as _;
        if instance.exists() {
            return PinState::Intact;
        }
        let same_dir =
            std::fs::metadata(pin_path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        let held = instance
            .strip_prefix(pin_path)
            .is_ok_and(|rel| self.held_dir().join(rel).exists());
        if !same_dir && held {
            PinState::MountLost
        } else {
            PinState::Removed
        }
    }
}

/// Pins again, under `pin_path` (a bpffs other than the lost one), what this agent
/// has pinned in the directory its `owner` lock still holds: the maps, and of its
/// link instance `instance` (a path under `pin_path`) the links of the `attached`
/// cgroups. Takes the lock at `pin_path` first, and puts the instance in place last
/// under its own name (a rename), so that a partial attempt is never taken for an
/// intact instance and is simply tried again. Then unpins the old copies (the objects
/// stay, held by the new pins), so that a covered mount keeps nothing that a later
/// `detach` would miss. Returns the new owner; the caller drops the old one.
pub fn repin(
    owner: &Owner,
    pin_path: &Path,
    instance: &Path,
    attached: &std::collections::BTreeSet<u64>,
) -> Result<Owner, PinError> {
    let repin_file = |src: &Path, dst: &Path| -> Result<(), PinError> {
        if dst.exists() {
            return Ok(());
        }
        crate::sys::bpf::repin(src, dst).map_err(io(dst))
    };
    if !fs::is_bpffs(pin_path).map_err(io(pin_path))? {
        return Err(PinError::NoHostBpffs {
            path: pin_path.to_owned(),
        });
    }
    let held = owner.held_dir();
    let rel = instance.strip_prefix(pin_path).map_err(|_| PinError::Io {
        path: instance.to_owned(),
        source: std::io::Error::other("the instance is not under the pin path"),
    })?;
    let new_owner = lock(pin_path, std::time::Duration::from_secs(5))?;
    // The maps (idempotent: a map already pinned there is the same map).
    let (old_maps, new_maps) = (maps_dir(&held), maps_dir(pin_path));
    std::fs::create_dir_all(&new_maps).map_err(io(&new_maps))?;
    let mut moved = 0;
    for e in std::fs::read_dir(&old_maps).map_err(io(&old_maps))? {
        let e = e.map_err(io(&old_maps))?;
        repin_file(&e.path(), &new_maps.join(e.file_name()))?;
        moved += 1;
    }
    // The links of the cgroups still attached, under a temporary name.
    let old_instance = held.join(rel);
    let name = instance.file_name().unwrap_or_default().to_string_lossy();
    // (bpffs refuses names with a dot.)
    let tmp = links_dir(pin_path).join(format!("partial-{name}"));
    let _ = remove_instance(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        for e in std::fs::read_dir(&old_instance).map_err(io(&old_instance))? {
            let e = e.map_err(io(&old_instance))?;
            let file = e.file_name().to_string_lossy().into_owned();
            let id = file
                .strip_prefix("link-")
                .and_then(|r| r.split('-').next())
                .and_then(|id| id.parse::<u64>().ok());
            if id.is_some_and(|id| attached.contains(&id)) {
                repin_file(&e.path(), &tmp.join(&file))?;
                moved += 1;
            }
        }
        std::fs::rename(&tmp, instance).map_err(io(instance))
    })();
    if let Err(e) = result {
        // Unpinning the partial copies detaches nothing: the old pins still hold it.
        let _ = remove_instance(&tmp);
        return Err(e);
    }
    // The old copies go: the new pins hold every object, and a covered mount must
    // keep nothing that `detach` at the pin path would not see.
    let _ = remove_instance(&old_instance);
    for e in std::fs::read_dir(&old_maps).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    tracing::info!(path = %pin_path.display(), objects = moved, "pinned again on the new bpffs");
    Ok(new_owner)
}
