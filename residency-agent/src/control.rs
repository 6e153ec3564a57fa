//! The control socket: `residency-agent reload` and `status` talk to the running daemon
//! over a Unix stream socket at `[agent] control_socket`.
//!
//! One request per connection, one JSON line each way:
//!
//! ```text
//! -> {"command":"reload","dry_run":false}
//! <- {"ok":true,"text":"generation 2 ...","data":{...}}
//! ```
//!
//! The socket is created mode 0600 (0660 and owned by `[agent] control_group` when
//! one is set); every connection's peer credentials (`SO_PEERCRED`) are checked as
//! well, so a permissive umask or a copied socket file grants nothing.

use std::{
    ffi::CString,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Reload {
        #[serde(default)]
        dry_run: bool,
    },
    Status,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Human-readable result, printed by the CLI.
    pub text: String,
    /// Structured result, printed by `status --json`.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn error(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            text: text.into(),
            data: serde_json::Value::Null,
        }
    }
}

/// A request waiting for the daemon's main loop, with where to send the answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Who may use the socket besides root.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub group: Option<libc::gid_t>,
}

/// Resolves a group name (getgrnam_r).
pub fn group_id(name: &str) -> anyhow::Result<libc::gid_t> {
    let c = CString::new(name)?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r with buffers we own, sized as passed.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        bail!("control_group \"{name}\" does not exist on this host");
    }
    Ok(grp.gr_gid)
}

/// Whether user `uid` (primary group `gid`) is in group `group`, supplementary
/// membership included (getgrouplist).
fn in_group(uid: libc::uid_t, gid: libc::gid_t, group: libc::gid_t) -> bool {
    if gid == group {
        return true;
    }
    // SAFETY: getpwuid_r/getgrouplist with buffers we own.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) != 0
            || out.is_null()
        {
            return false;
        }
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        if libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut n) < 0 {
            return false;
        }
        groups[..n as usize].contains(&group)
    }
}

/// Creates the socket (replacing a stale one) with its permissions set before anyone
/// can connect.
pub fn bind(path: &Path, access: Access) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    // Bind under a restrictive umask so the socket is never world-accessible, even
    // between bind() and chmod().
    // SAFETY: umask has no preconditions; it is restored right after.
    let old = unsafe { libc::umask(0o177) };
    let listener = std::os::unix::net::UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener =
        listener.with_context(|| format!("binding control socket {}", path.display()))?;
    if let Some(gid) = access.group {
        let c = CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: chown on the path we just created.
        if unsafe { libc::chown(c.as_ptr(), 0, gid) } != 0 {
            return Err(std::io::Error::last_os_error()).context("chown of the control socket");
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    listener.set_nonblocking(true)?;
    Ok(UnixListener::from_std(listener)?)
}

/// Accepts connections until the task is dropped, forwarding authorised requests to
/// the daemon's main loop.
pub async fn serve(listener: UnixListener, access: Access, to_daemon: mpsc::Sender<Pending>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            let _ = handle(stream, access, to_daemon).await;
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
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_line(&mut line),
    )
    .await
    .context("request timed out")??;
    let allowed = cred.uid() == 0
        || access
            .group
            .is_some_and(|g| in_group(cred.uid(), cred.gid(), g));
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
                to_daemon.send((req, tx)).await.context("daemon gone")?;
                rx.await
                    .unwrap_or_else(|_| Response::error("the daemon dropped the request"))
            }
        }
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

/// The CLI side: sends one request and returns the daemon's answer.
pub fn call(socket: &PathBuf, request: &Request) -> anyhow::Result<Response> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the agent at {} (is `residency-agent run` running?)",
            socket.display()
        )
    })?;
    // A reload of a large policy takes a while; a wedged daemon must not hang the CLI.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(300)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer)
        .with_context(|| format!("unreadable answer from the agent: {answer:?}"))
}
