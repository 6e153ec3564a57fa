//! The pinned state under `[agent] pin_path`: what keeps enforcement in place when the
//! agent is gone, and what `detach` removes.
//!
//! Layout (version 3):
//!
//! ```text
//! <pin_path>/v3/maps/RES_*                        the programs' maps, shared by
//!                                                 successive agents
//! <pin_path>/v3/links/<instance>/link-<cgroup id>-<program>
//!                                                 one BPF link per attach point and program
//! ```
//!
//! A link exists as long as it is pinned or open, so an agent that exits — cleanly or by
//! SIGKILL — leaves its pinned links enforcing (fail closed). A restarted agent adopts
//! the pinned maps (the policy in force keeps judging), swaps its own policy in
//! atomically (`generations`), pins its links as a new instance and only then
//! removes the older instances. Old and new links run programs reading the same maps,
//! so their verdicts agree: there is no window in which a blocked destination passes
//! or an allowed one is dropped. Unpinning the last reference to a link detaches it.

use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;

use crate::sys::fs::{self, Locked};

/// Version of the pin layout; a directory of another version is never touched.
pub const LAYOUT: &str = "v3";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pin path {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pin path {path} is not on a BPF filesystem and mounting one there failed: {source} \
         (mount one with `mount -t bpf bpf {path}`)"
    )]
    NoBpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pin path {path} is not on a BPF filesystem and [agent] mount_bpffs = false: the \
         host must mount its bpffs there (systemd does at boot; in Kubernetes, mount the \
         host's /sys/fs/bpf into the pod, or use the chart's bpffs.mountOnHost)"
    )]
    NoHostBpffs { path: PathBuf },
    #[error(
        "pin path {path} is not on a BPF filesystem and is not empty: mounting one there \
         would hide what it holds; mount the bpffs yourself (`mount -t bpf bpf {path}`) \
         or choose an empty or new directory as pin_path"
    )]
    NotEmpty { path: PathBuf },
    #[error(
        "{path} holds pinned state of layout \"{found}\", which this agent does not \
         understand (it uses \"{LAYOUT}\"); remove it with the agent that created it \
         (`residency-agent detach`) before starting this one"
    )]
    UnknownLayout { path: PathBuf, found: String },
    #[error(
        "another residency-agent is running with pin path {path} (it holds the lock); stop \
         it first, or give this one another pin_path"
    )]
    Locked { path: PathBuf },
    #[error("pinning {what} at {path} failed: {source}")]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes sure `pin_path` exists on a bpffs, mounting one when it does not (hosts
/// without systemd as PID 1, and pods whose host path is not a bpffs, have none at
/// `/sys/fs/bpf`). The bpffs goes on the pin path itself, or — when the pin path cannot
/// be created, as under sysfs' empty `/sys/fs/bpf` — on its nearest existing ancestor if
/// that is an empty directory. Returns where a bpffs was mounted, if one was. With
/// `mount` false a missing bpffs is an error: a pod's own mount would hide the
/// pins from the host and drop them with the pod.
pub fn ensure_bpffs(pin_path: &Path, mount: bool) -> Result<Option<PathBuf>, PinError> {
    let existing = pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if fs::is_bpffs(existing).map_err(io(existing))? {
        std::fs::create_dir_all(pin_path).map_err(io(pin_path))?;
        return Ok(None);
    }
    if !mount {
        return Err(PinError::NoHostBpffs {
            path: pin_path.to_owned(),
        });
    }
    let target = match std::fs::create_dir_all(pin_path) {
        Ok(()) => {
            // Never over something: a mount would hide it (and whoever relies on it).
            let empty = std::fs::read_dir(pin_path)
                .map(|mut d| d.next().is_none())
                .map_err(io(pin_path))?;
            if !empty {
                return Err(PinError::NotEmpty {
                    path: pin_path.to_owned(),
                });
            }
            pin_path.to_owned()
        }
        Err(e) => {
            let empty = std::fs::read_dir(existing)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(PinError::NoBpffs {
                    path: pin_path.to_owned(),
                    source: e,
                });
            }
            existing.to_owned()
        }
    };
    fs::mount_bpffs(&target).map_err(|source| PinError::NoBpffs {
        path: target.clone(),
        source,
    })?;
    std::fs::create_dir_all(pin_path).map_err(io(pin_path))?;
    Ok(Some(target))
}

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

/// Where the maps are pinned (and adopted from).
pub fn maps_dir(pin_path: &Path) -> PathBuf {
    pin_path.join(LAYOUT).join("maps")
}

fn links_dir(pin_path: &Path) -> PathBuf {
    pin_path.join(LAYOUT).join("links")
}

/// Refuses pinned state of a layout this agent does not understand.
pub fn check_layout(pin_path: &Path) -> Result<(), PinError> {
    let entries = match std::fs::read_dir(pin_path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(pin_path)(e)),
    };
    for e in entries {
        let name = e
            .map_err(io(pin_path))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        // bpffs shows its own debug files at its root.
        if name != LAYOUT && !name.ends_with(".debug") {
            return Err(PinError::UnknownLayout {
                path: pin_path.join(&name),
                found: name,
            });
        }
    }
    Ok(())
}

/// The link instance directories, oldest first (names sort by time).
pub fn instances(pin_path: &Path) -> Result<Vec<PathBuf>, PinError> {
    let dir = links_dir(pin_path);
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e.map_err(io(&dir))?;
                out.push(e.path());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&dir)(e)),
    }
    out.sort();
    Ok(out)
}

/// Creates the directory of a new link instance (named by time, so instances sort
/// oldest first) and returns it; the caller pins each cgroup's links into it.
pub fn new_instance(pin_path: &Path) -> Result<PathBuf, PinError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = links_dir(pin_path).join(format!("{:020}-{}", now.as_nanos(), std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

/// Pins the links of one cgroup in an instance directory.
pub fn pin_cgroup_links(
    dir: &Path,
    cgroup_id: u64,
    links: Vec<(&'static str, FdLink)>,
) -> Result<(), PinError> {
    for (program, link) in links {
        let path = dir.join(format!("link-{cgroup_id}-{program}"));
        // The pin holds the link; the returned handle is dropped (closing only our fd).
        if let Err(source) = link.pin(&path) {
            // All or nothing per cgroup: a retry attaches every program again.
            unpin_cgroup_links(dir, cgroup_id);
            return Err(PinError::Pin {
                what: format!("{program} link for cgroup {cgroup_id}"),
                path,
                source,
            });
        }
    }
    Ok(())
}

/// Unpins (detaching) the links of one cgroup in an instance directory.
pub fn unpin_cgroup_links(dir: &Path, cgroup_id: u64) {
    let prefix = format!("link-{cgroup_id}-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Removes one instance: unpinning its links detaches them.
/// Returns how many cgroups' links were detached.
pub fn remove_instance(dir: &Path) -> Result<usize, PinError> {
    let mut cgroups = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("link-") {
            cgroups.insert(rest.split('-').next().unwrap_or_default().to_owned());
        }
        std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
    }
    std::fs::remove_dir(dir).map_err(io(dir))?;
    Ok(cgroups.len())
}

/// The cgroup ids that pinned link instances attach to (from the pins' names).
pub fn attached_cgroup_ids(pin_path: &Path) -> Result<std::collections::BTreeSet<u64>, PinError> {
    let mut ids = std::collections::BTreeSet::new();
    for dir in instances(pin_path)? {
        for e in std::fs::read_dir(&dir).map_err(io(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix("link-")
                .and_then(|r| r.split('-').next())
                .and_then(|id| id.parse().ok())
            {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Removes every instance but `keep`; returns how many links were detached.
pub fn remove_others(pin_path: &Path, keep: Option<&Path>) -> Result<usize, PinError> {
    let mut detached = 0;
    for dir in instances(pin_path)? {
        if Some(dir.as_path()) != keep {
            detached += remove_instance(&dir)?;
        }
    }
    Ok(detached)
}

/// `detach`: every link instance, then the maps. Returns (links, instances).
pub fn remove_all(pin_path: &Path) -> Result<(usize, usize), PinError> {
    let instances = instances(pin_path)?.len();
    let links = remove_others(pin_path, None)?;
    let maps = maps_dir(pin_path);
    if maps.exists() {
        for e in std::fs::read_dir(&maps).map_err(io(&maps))? {
            let p = e.map_err(io(&maps))?.path();
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        std::fs::remove_dir(&maps).map_err(io(&maps))?;
    }
    for d in [links_dir(pin_path), pin_path.join(LAYOUT)] {
        if d.exists() {
            std::fs::remove_dir(&d).map_err(io(&d))?;
        }
    }
    Ok((links, instances))
}
