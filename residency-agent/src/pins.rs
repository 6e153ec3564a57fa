//! The pinned state under `[agent] pin_path`: what keeps enforcement in place when the
//! agent is gone, and what `detach` removes.
//!
//! Layout (version 1):
//!
//! ```text
//! <pin_path>/v1/<instance>/link-<cgroup id>   one BPF link per attached cgroup
//! <pin_path>/v1/<instance>/map-<MAP NAME>     every map of the program
//! ```
//!
//! A link exists as long as it is pinned or open, so an agent that exits — cleanly or by
//! SIGKILL — leaves its pinned links enforcing (fail closed). A new agent pins a new
//! instance first and only then removes the older ones, so there is never a moment with
//! neither attached (during the overlap both judge, and a packet passes only if both
//! allow it: stricter, never looser). Unpinning the last reference to a link detaches it.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::programs::links::FdLink;

use crate::bpf::Loaded;

/// Version of the pin layout; a directory of another version is never touched.
pub const LAYOUT: &str = "v1";
/// `BPF_FS_MAGIC` from include/uapi/linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

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
/// that is an empty directory. Returns where a bpffs was mounted, if one was.
pub fn ensure_bpffs(pin_path: &Path) -> Result<Option<PathBuf>, PinError> {
    let existing = pin_path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing).map_err(io(existing))? {
        std::fs::create_dir_all(pin_path).map_err(io(pin_path))?;
        return Ok(None);
    }
    let target = match std::fs::create_dir_all(pin_path) {
        Ok(()) => pin_path.to_owned(),
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
    mount_bpffs(&target).map_err(|source| PinError::NoBpffs {
        path: target.clone(),
        source,
    })?;
    std::fs::create_dir_all(pin_path).map_err(io(pin_path))?;
    Ok(Some(target))
}

fn mount_bpffs(target: &Path) -> std::io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: mount(2) with static, NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs(2) into a zeroed struct we own.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The instance directories of this layout, oldest first (names sort by time).
pub fn instances(pin_path: &Path) -> Result<Vec<PathBuf>, PinError> {
    let dir = pin_path.join(LAYOUT);
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

/// Pins every map and link of a freshly attached program into a new instance directory
/// and returns it. On failure the partial directory is removed; older instances are
/// left alone either way.
/// Call it before any map is taken out of the object (the event ring buffer, the log
/// buffer), so that every map is pinned.
pub fn pin_instance(
    pin_path: &Path,
    loaded: &Loaded,
    links: Vec<(u64, FdLink)>,
) -> Result<PathBuf, PinError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = pin_path
        .join(LAYOUT)
        .join(format!("{:020}-{}", now.as_nanos(), std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let result = (|| {
        // Internal maps (.rodata, .bss) are reachable through the program; bpffs
        // reserves names with dots anyway.
        for (name, map) in loaded
            .ebpf
            .maps()
            .filter(|(name, _)| !name.starts_with('.'))
        {
            let path = dir.join(format!("map-{name}"));
            map.pin(&path).map_err(|source| PinError::Pin {
                what: format!("map {name}"),
                path,
                source,
            })?;
        }
        for (cgroup_id, link) in links {
            let path = dir.join(format!("link-{cgroup_id}"));
            // The pin holds the link; the returned handle is dropped (closing only our fd).
            link.pin(&path).map_err(|source| PinError::Pin {
                what: format!("link for cgroup {cgroup_id}"),
                path,
                source,
            })?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = remove_instance(&dir);
        return Err(e);
    }
    Ok(dir)
}

/// Removes one instance: unpinning its links detaches them.
pub fn remove_instance(dir: &Path) -> Result<usize, PinError> {
    let mut links = 0;
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        if e.file_name().to_string_lossy().starts_with("link-") {
            links += 1;
        }
        std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
    }
    std::fs::remove_dir(dir).map_err(io(dir))?;
    Ok(links)
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
