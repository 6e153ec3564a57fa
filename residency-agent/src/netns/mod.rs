//! The network namespaces of the workloads, and their own addresses: what the kernel
//! programs' source check (`rule=spoofed-source`) compares a source with.
//!
//! The programs ask for a namespace (the `RES_NETNS_ASKS` ring: its cookie, a process
//! that met it and its inode) when a socket there may send from an address the kernel
//! does not check and the source is not in the table, and when such a socket is made.
//! This task answers: it finds and enters the namespace ([`enter`]), reads its
//! addresses and local routes ([`dump`]), writes them to `RES_LOCAL_ADDRS`
//! ([`table`]), and from then on follows the namespace's address and route changes,
//! until neither a process nor an `ip netns` name holds it.
//!
//! Entering a namespace and dumping it are blocking system calls: they run on the
//! blocking pool, never on the agent's one runtime thread, which also carries events,
//! metrics and reloads.

pub mod dump;
pub mod enter;
pub mod table;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use residency_common::NetnsAsk;
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};
use tracing::{debug, info, warn};

pub use table::LocalMaps;

/// How often the followed namespaces are checked for something still holding them.
const SWEEP: Duration = Duration::from_secs(5);
/// How long a namespace that could not be learned is left before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// What a follower reports: a namespace's prefixes, or that it stopped following.
type Report = (u64, Option<Vec<dump::Prefix>>);

/// A namespace followed: its inode (to tell whether anything holds it) and the task
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
    let (report, mut reports) = mpsc::channel::<Report>(64);
    let mut watched: HashMap<u64, Watched> = HashMap::new();
    // Namespaces that could not be learned: when, and whether that was said.
    let mut failed: HashMap<u64, Instant> = HashMap::new();
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
                    let recent = failed.get(&cookie).is_some_and(|t| t.elapsed() < RETRY);
                    if watched.contains_key(&cookie) || recent {
                        continue;
                    }
                    match learn(ask, &mut maps, report.clone()).await {
                        Ok(w) => {
                            failed.remove(&cookie);
                            watched.insert(cookie, w);
                        }
                        // The next source refused there asks again.
                        Err(e) => {
                            if failed.insert(cookie, Instant::now()).is_none() {
                                warn!(
                                    netns = cookie,
                                    inode = ask.inode,
                                    pid = ask.tgid,
                                    "cannot learn the addresses of a network namespace whose \
                                     sockets may bind anywhere; its sources are refused until \
                                     the agent can: {e}"
                                );
                            }
                        }
                    }
                }
            }
            Some((cookie, prefixes)) = reports.recv() => {
                match prefixes {
                    Some(prefixes) if watched.contains_key(&cookie) => {
                        if let Err(e) = maps.set(cookie, &prefixes) {
                            warn!(netns = cookie, "network namespace addresses not written: {e}");
                        }
                    }
                    Some(_) => {}
                    // Its follower stopped: forget the namespace, so that the next ask
                    // learns it afresh instead of trusting entries no one keeps.
                    None => {
                        watched.remove(&cookie);
                        let _ = maps.set(cookie, &[]);
                    }
                }
            }
            _ = sweep.tick() => {
                if watched.is_empty() {
                    continue;
                }
                let live = tokio::task::spawn_blocking(enter::live_namespaces)
                    .await
                    .unwrap_or_default();
                let gone: Vec<u64> = watched
                    .iter()
                    .filter(|(_, w)| !live.contains(&w.inode))
                    .map(|(c, _)| *c)
                    .collect();
                for cookie in gone {
                    if let Some(w) = watched.remove(&cookie) {
                        w.follower.abort();
                    }
                    let _ = maps.set(cookie, &[]);
                    debug!(netns = cookie, "network namespace left: nothing holds it");
                }
            }
        }
    }
}

/// Enters the namespace asked for, writes its addresses, and starts following its
/// changes.
async fn learn(
    ask: NetnsAsk,
    maps: &mut LocalMaps,
    report: mpsc::Sender<Report>,
) -> std::io::Result<Watched> {
    let cookie = ask.netns;
    let (entered, prefixes) = tokio::task::spawn_blocking(move || {
        let entered = enter::enter(enter::find(ask)?)?;
        if entered.cookie != cookie {
            return Err(std::io::Error::other(format!(
                "found namespace {} instead",
                entered.cookie
            )));
        }
        let prefixes = dump::local_prefixes(&entered.dump)?;
        Ok((entered, prefixes))
    })
    .await
    .map_err(std::io::Error::other)??;
    maps.set(cookie, &prefixes).map_err(std::io::Error::other)?;
    info!(
        netns = cookie,
        inode = ask.inode,
        addresses = prefixes.len(),
        "learned the addresses of a network namespace whose sockets may bind anywhere"
    );
    let inode = entered.inode;
    let follower = tokio::spawn(follow(entered, report));
    Ok(Watched { inode, follower })
}

/// Reads a namespace's change notices; after each batch, dumps its prefixes again and
/// hands them over. A dump is the truth: notices are only the cue to take one. Says
/// when it stops (`None`), whatever the reason.
async fn follow(entered: enter::Entered, report: mpsc::Sender<Report>) {
    let cookie = entered.cookie;
    following(entered, &report).await;
    let _ = report.send((cookie, None)).await;
}

async fn following(entered: enter::Entered, report: &mpsc::Sender<Report>) {
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
    let dump_socket = std::sync::Arc::new(dump_socket);
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
                Err(_) => break,
            }
        }
        guard.clear_ready();
        let socket = dump_socket.clone();
        let dumped = tokio::task::spawn_blocking(move || dump::local_prefixes(&socket)).await;
        match dumped {
            Ok(Ok(prefixes)) => {
                if report.send((cookie, Some(prefixes))).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                warn!(netns = cookie, "network namespace addresses not read: {e}");
                return;
            }
            Err(_) => return,
        }
    }
}
