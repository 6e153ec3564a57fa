//! Filesystem calls the pins and the control socket need, through `nix`: mounting a
//! bpffs, telling whether a path is on one, the pin path's owner lock, and a socket
//! created under a restrictive umask and handed to a group.

use std::path::Path;

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    mount::MsFlags,
    sys::stat::Mode,
    sys::statfs::{BPF_FS_MAGIC, statfs},
    unistd::{Gid, Uid},
};

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Mounts a new bpffs at `target` (mount(2), `mount -t bpf bpf <target>`).
pub fn mount_bpffs(target: &Path) -> std::io::Result<()> {
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io)
}

/// Whether `path` is on a BPF filesystem (statfs(2), `BPF_FS_MAGIC`).
pub fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let st = statfs(path).map_err(io)?;
    Ok(st.filesystem_type() == BPF_FS_MAGIC)
}

/// Outcome of one attempt at an exclusive lock.
pub enum Locked {
    /// Held until the value is dropped (or the process dies).
    Held(Flock<std::fs::File>),
    /// Another process holds it; the file is handed back for the next try.
    Busy(std::fs::File),
}

/// Tries `flock(LOCK_EX | LOCK_NB)` on `file`.
pub fn try_lock_exclusive(file: std::fs::File) -> std::io::Result<Locked> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Locked::Held(lock)),
        Err((file, Errno::EWOULDBLOCK)) => Ok(Locked::Busy(file)),
        Err((_, e)) => Err(io(e)),
    }
}

/// Runs `f` with the process umask set to `mask`, restoring it after: a socket bound
/// meanwhile is never more accessible than the mask allows, even before its chmod.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(mask as nix::libc::mode_t));
    let out = f();
    nix::sys::stat::umask(old);
    out
}

/// Gives `path` to root and group `gid` (chown(2)).
pub fn chown_root_group(path: &Path, gid: u32) -> std::io::Result<()> {
    nix::unistd::chown(path, Some(Uid::from_raw(0)), Some(Gid::from_raw(gid))).map_err(io)
}
