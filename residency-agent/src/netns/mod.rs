//! The network namespaces of the workloads, and their own addresses: what the kernel
//! programs' source check (`rule=spoofed-source`) compares a source with.
//!
//! The programs ask for a namespace (the `RES_NETNS_ASKS` ring: its cookie, a process
//! that met it and its inode)
//! when a socket there may send from an address the kernel does not check and the
//! source is not in the table. This task answers: it enters the namespace through the
//! process ([`enter`]), reads its addresses and local routes ([`dump`]), writes them to
//! `RES_LOCAL_ADDRS` ([`table`]), and from then on follows the namespace's address and
//! route changes, until no process lives in it.

pub mod dump;
pub mod enter;
pub mod table;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use residency_common::NetnsAsk;
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};
use tracing::{debug, info, warn};

pub use table::LocalMaps;

/// How often the watched namespaces are checked for a process still inside.
const SWEEP: Duration = Duration::from_secs(5);

/// A namespace followed: its inode (to tell whether anyone lives in it) and the task
/// that reads its changes.
struct Watched {
    inode: u64,
    follower: JoinHandle<()>,
}

/// Runs until the agent stops (or, without a readable ask ring, never learns).
pub async fn run(mut maps: LocalMaps, asks: RingBuf<MapData>) {
    let mut asks = match crate::events::readable(asks) {
        Ok(fd) => fd,
        Err(e) => {
            warn!("source check: namespace asks unreadable, none will be learned: {e}");
            return;
        }
    };
    let (changed, mut changes) = mpsc::channel::<(u64, Vec<dump::Prefix>)>(64);
    let mut watched: HashMap<u64, Watched> = HashMap::new();
    // Namespaces that could not be learned, warned about once each.
    let mut unreachable: HashSet<u64> = HashSet::new();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            Ok(mut guard) = asks.readable_mut() => {
                let mut asked = Vec::new();
                while let Some(record) = guard.get_inner_mut().next() {
                    if record.len() >= std::mem::size_of::<NetnsAsk>() {
                        // SAFETY: the kernel wrote a whole `NetnsAsk` (checked length);
                        // an unaligned read of plain integers.
                        asked.push(unsafe { record.as_ptr().cast::<NetnsAsk>().read_unaligned() });
                    }
                }
                guard.clear_ready();
                for ask in asked {
                    let cookie = ask.netns;
                    if watched.contains_key(&cookie) {
                        continue;
                    }
                    match learn(cookie, ask, &mut maps, changed.clone()) {
                        Ok(w) => {
                            unreachable.remove(&cookie);
                            watched.insert(cookie, w);
                        }
                        // The next source refused there asks again.
                        Err(e) if unreachable.insert(cookie) => warn!(
                            netns = cookie,
                            inode = ask.inode,
                            pid = ask.tgid,
                            "cannot learn the addresses of a network namespace whose sockets \
                             may bind anywhere; its sources are refused until the agent can: {e}"
                        ),
                        Err(e) => debug!(netns = cookie, "cannot learn network namespace: {e}"),
                    }
                }
            }
            Some((cookie, prefixes)) = changes.recv() => {
                if watched.contains_key(&cookie)
                    && let Err(e) = maps.set(cookie, &prefixes)
                {
                    warn!(cookie, "network namespace addresses not written: {e}");
                }
            }
            _ = sweep.tick() => {
                let gone: Vec<u64> = watched
                    .iter()
                    .filter(|(_, w)| !enter::inhabited(w.inode))
                    .map(|(c, _)| *c)
                    .collect();
                for cookie in gone {
                    if let Some(w) = watched.remove(&cookie) {
                        w.follower.abort();
                    }
                    let _ = maps.set(cookie, &[]);
                    debug!(cookie, "network namespace left: no process inside");
                }
            }
        }
    }
}

/// Enters namespace `cookie` as asked, writes its addresses, and starts following its
/// changes.
fn learn(
    cookie: u64,
    ask: NetnsAsk,
    maps: &mut LocalMaps,
    changed: mpsc::Sender<(u64, Vec<dump::Prefix>)>,
) -> std::io::Result<Watched> {
    let entered = enter::enter(enter::find(ask)?)?;
    if entered.cookie != cookie {
        return Err(std::io::Error::other(format!(
            "found namespace {} instead",
            entered.cookie
        )));
    }
    let prefixes = dump::local_prefixes(&entered.dump)?;
    maps.set(cookie, &prefixes).map_err(std::io::Error::other)?;
    info!(
        netns = cookie,
        inode = ask.inode,
        addresses = prefixes.len(),
        "learned the addresses of a network namespace whose sockets may bind anywhere"
    );
    let inode = entered.inode;
    let follower = tokio::spawn(follow(entered, changed));
    Ok(Watched { inode, follower })
}

/// Reads a namespace's change notices; after each batch, dumps its prefixes again and
/// hands them over. A dump is the truth: notices are only the cue to take one.
async fn follow(entered: enter::Entered, changed: mpsc::Sender<(u64, Vec<dump::Prefix>)>) {
    let enter::Entered {
        cookie,
        dump: dump_socket,
        changes,
        ..
    } = entered;
    // SAFETY: the socket owns its fd for its whole life and never swaps it, which is
    // what `register` asks of its caller.
    let Ok(changes) =
        (unsafe { AsyncFd::register_with_interest(changes, tokio::io::Interest::READABLE) })
    else {
        return;
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let Ok(mut guard) = changes.readable().await else {
            return;
        };
        // Drain every notice queued (an overrun, ENOBUFS, just means "dump again").
        loop {
            buf.clear();
            match guard.get_inner().recv(&mut buf, 0) {
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        guard.clear_ready();
        match dump::local_prefixes(&dump_socket) {
            Ok(prefixes) => {
                if changed.send((cookie, prefixes)).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(cookie, "network namespace addresses not read: {e}"),
        }
    }
}
