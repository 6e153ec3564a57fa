//! The daemon's side of the control socket: created with its permissions set before
//! anyone can connect, each peer's credentials checked, one request per connection
//! forwarded to the main loop.

use std::{
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{Pending, Request, Response};
use crate::sys::{fs, users};

/// Who may use the socket besides root.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub group: Option<u32>,
}

/// Resolves `[agent] control_group`.
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    match users::group_id(name) {
        Some(gid) => Ok(gid),
        None => bail!("control_group \"{name}\" does not exist on this host"),
    }
}

/// Creates the socket (replacing a stale one) with its permissions set before anyone
/// can connect.
pub fn bind(path: &Path, access: Access) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Only a stale socket is replaced: anything else at that path (a file someone
    // keeps there, a typo in the config) is not ours to delete.
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing stale {}", path.display()))?,
        Ok(_) => bail!(
            "control_socket {} exists and is not a socket; not replacing it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    // Bind under a restrictive umask so the socket is never world-accessible, even
    // between bind() and chmod().
    let listener = fs::with_umask(0o177, || std::os::unix::net::UnixListener::bind(path));
    let listener =
        listener.with_context(|| format!("binding control socket {}", path.display()))?;
    if let Some(gid) = access.group {
        fs::chown_root_group(path, gid).context("chown of the control socket")?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

/// Connections served at once; further clients wait in the socket's backlog (they
/// cost the agent no descriptor) until one ends.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request, and to take the answer.
const CLIENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections until the task is dropped, forwarding authorised requests to
/// the daemon's main loop. At most [`MAX_CONNECTIONS`] at once, each with deadlines,
/// so idle or slow clients cannot take the agent's descriptors; a failed accept (out
/// of descriptors) backs off instead of spinning.
pub async fn serve(listener: UnixListener, access: Access, to_daemon: mpsc::Sender<Pending>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut failures: u64 = 0;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if failures.is_multiple_of(100) {
                    tracing::warn!("control socket: accept failed ({e}); backing off");
                }
                failures += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            let _ = handle(stream, access, to_daemon).await;
            drop(slot);
        });
    }
}

async fn handle(
    stream: UnixStream,
    access: Access,
    to_daemon: mpsc::Sender<Pending>,
) -> anyhow::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    // Read the request before answering, even a refused one: answering first and
    // closing would race the client's write (it would see EPIPE, not the refusal).
    let mut line = String::new();
    // One request is a short JSON line: bound what a client can make the agent hold.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 64 * 1024));
    tokio::time::timeout(CLIENT_DEADLINE, reader.read_line(&mut line))
        .await
        .context("request timed out")??;
    let allowed = cred.uid() == 0
        || access
            .group
            .is_some_and(|g| users::in_group(cred.uid(), cred.gid(), g));
    let response = if !allowed {
        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "control socket: refused a client that is neither root nor in control_group");
        Response::error(format!(
            "permission denied: uid {} is not root{}",
            cred.uid(),
            if access.group.is_some() {
                " and not in the control group"
            } else {
                ""
            }
        ))
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                to_daemon
                    .send((req, cred.uid(), tx))
                    .await
                    .context("daemon gone")?;
                rx.await
                    .unwrap_or_else(|_| Response::error("the daemon dropped the request"))
            }
        }
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    tokio::time::timeout(CLIENT_DEADLINE, write.write_all(out.as_bytes()))
        .await
        .context("answer timed out")??;
    Ok(())
}
