//! Filesystem calls the pins, the control socket and the config watch need, through
//! `nix`: mounting a bpffs, telling whether a path is on one, the pin path's owner
//! lock, a socket created under a restrictive umask and handed to a group, and a file
//! read only when no one is writing it.

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

/// Reads `path` whole if no process has it open for writing, else `None`. A read
/// lease (`F_SETLEASE`, `F_RDLCK`) is refused with `EAGAIN` exactly while the file is
/// open for writing anywhere; held during the read, it makes a writer that opens the
/// file meanwhile wait until it is released (the agent ignores the lease-break
/// signal, SIGIO). Where leases are unavailable (not the file's owner without
/// CAP_LEASE, a filesystem without them) the file is read as it is.
pub fn read_when_complete(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::{io::Read as _, os::fd::AsRawFd as _};
    let mut file = std::fs::File::open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(2) on a descriptor we own, with integer arguments.
    let leased = unsafe { nix::libc::fcntl(fd, nix::libc::F_SETLEASE, nix::libc::F_RDLCK) } == 0;
    if !leased {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(nix::libc::EAGAIN) {
            return Ok(None);
        }
    }
    let mut text = Vec::new();
    let read = file.read_to_end(&mut text);
    if leased {
        // SAFETY: as above.
        unsafe { nix::libc::fcntl(fd, nix::libc::F_SETLEASE, nix::libc::F_UNLCK) };
    }
    read?;
    Ok(Some(text))
}

/// Whether `path` is complete: no process has it open for writing (the read lease of
/// [`read_when_complete`], taken and given back at once). Where leases are
/// unavailable the file counts as complete.
pub fn read_when_complete_probe(path: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl(2) on a descriptor we own, with integer arguments.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_SETLEASE, nix::libc::F_RDLCK) } == 0 {
        // SAFETY: as above.
        unsafe { nix::libc::fcntl(fd, nix::libc::F_SETLEASE, nix::libc::F_UNLCK) };
        return Ok(true);
    }
    Ok(std::io::Error::last_os_error().raw_os_error() != Some(nix::libc::EAGAIN))
}

/// Ignores SIGIO, which the kernel sends to the holder of a file lease when another
/// process opens the file for writing ([`read_when_complete`]); its default action
/// would end the agent.
pub fn ignore_lease_breaks() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGIO,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
}
