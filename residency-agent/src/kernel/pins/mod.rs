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

use super::attach::AttachedLink;

mod owner;

pub use owner::{Owner, PinState, lock, repin};

use crate::sys::fs;

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

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PinError + '_ {
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
    links: Vec<(&'static str, AttachedLink)>,
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
