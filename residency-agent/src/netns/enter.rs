//! Reaching into another network namespace: netlink sockets made inside it, and the
//! namespace's cookie, the number the kernel programs know it by.

use std::{
    collections::HashSet,
    fs::File,
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use residency_common::NetnsAsk;

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h, Linux 5.14).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The legacy rtnetlink groups of address and route changes (`RTMGRP_*`): a local
/// route comes with every address, and `ip route add local` adds whole prefixes.
const CHANGE_GROUPS: u32 = 0x10 | 0x40 | 0x100 | 0x400;

/// A namespace entered: its identity and two rtnetlink sockets living in it.
pub struct Entered {
    /// The namespace's cookie (`SO_NETNS_COOKIE`, `bpf_get_netns_cookie`).
    pub cookie: u64,
    /// The namespace's inode number, as `/proc/<pid>/ns/net` shows it.
    pub inode: u64,
    /// For dumps of its addresses and routes.
    pub dump: Socket,
    /// Subscribed to its address and route changes, non-blocking.
    pub changes: Socket,
}

/// Finds the network namespace a program asked for: the agent's own, the process that
/// met it, else (that process gone, or elsewhere now) by its inode number among the
/// names `ip netns` gives namespaces and every process's namespace.
pub fn find(ask: NetnsAsk) -> io::Result<File> {
    let of = |path: &Path| -> Option<File> {
        let f = File::open(path).ok()?;
        (f.metadata().ok()?.ino() == u64::from(ask.inode)).then_some(f)
    };
    // The agent's own namespace first (a host's services share it), then the asking
    // process's (opening another uid's needs CAP_SYS_PTRACE).
    for own in [
        Path::new("/proc/self/ns/net"),
        Path::new(&format!("/proc/{}/ns/net", ask.tgid)),
    ] {
        if let Some(f) = of(own) {
            return Ok(f);
        }
    }
    if ask.inode == 0 {
        return Err(io::Error::other(format!("process {} is gone", ask.tgid)));
    }
    holders()
        .find_map(|p| of(&p))
        .ok_or_else(|| io::Error::other(format!("no process in namespace {}", ask.inode)))
}

/// Every file that holds a network namespace: the names `ip netns` gives, then every
/// process's `ns/net`.
fn holders() -> impl Iterator<Item = PathBuf> {
    let named = ["/run/netns", "/var/run/netns"]
        .into_iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()));
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .as_encoded_bytes()
                .iter()
                .all(u8::is_ascii_digit)
        })
        .map(|e| e.path().join("ns/net"));
    named.chain(processes)
}

/// Enters network namespace `ns`. The sockets are made by a thread that joins the
/// namespace and then ends, so the agent's own threads stay where they are; a socket
/// belongs to the namespace it was made in for its whole life.
pub fn enter(ns: File) -> io::Result<Entered> {
    let inode = ns.metadata()?.ino();
    let sockets = || -> io::Result<(Socket, Socket)> {
        let mut dump = Socket::new(NETLINK_ROUTE)?;
        dump.bind_auto()?;
        // Lets a route dump ask for the local table alone (a BGP host's main table can
        // hold a million routes); a kernel without it dumps them all, filtered here.
        let _ = dump.set_netlink_get_strict_chk(true);
        let mut changes = Socket::new(NETLINK_ROUTE)?;
        changes.bind(&SocketAddr::new(0, CHANGE_GROUPS))?;
        changes.set_non_blocking(true)?;
        Ok((dump, changes))
    };
    // The agent's own namespace needs no setns (nor the CAP_SYS_ADMIN it takes).
    let own = std::fs::metadata("/proc/self/ns/net").is_ok_and(|m| m.ino() == inode);
    let (dump, changes) = if own {
        sockets()?
    } else {
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<(Socket, Socket)> {
                // SAFETY: setns on this thread only, with a namespace fd we hold open.
                if unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                sockets()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })?
    };
    let cookie = cookie_of(&dump)?;
    Ok(Entered {
        cookie,
        inode,
        dump,
        changes,
    })
}

/// The cookie of the namespace a socket lives in.
fn cookie_of(socket: &Socket) -> io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The inodes of the network namespaces in use: a process's, or named by `ip netns`.
/// A namespace neither holds sends nothing, and the agent's sockets alone would keep
/// it alive. One scan for every namespace followed.
pub fn live_namespaces() -> HashSet<u64> {
    holders()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
        .collect()
}
