//! The system journal: a journald that accepts messages (started standalone where
//! systemd is not PID 1), and the agent's entries read back with `journalctl`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Makes sure a journald accepts messages on its native socket, starting a standalone
/// `systemd-journald` when none does (hosts without systemd as PID 1). The socket
/// file outlives a stopped journald, so a datagram is sent to check.
pub fn ensure_journald() -> anyhow::Result<()> {
    const SOCKET: &str = "/run/systemd/journal/socket";
    let accepts = || {
        std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| {
                s.send_to(
                    b"SYSLOG_IDENTIFIER=residency-tests\nMESSAGE=probe\n",
                    SOCKET,
                )
            })
            .is_ok()
    };
    if accepts() {
        return Ok(());
    }
    Command::new("/lib/systemd/systemd-journald")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting systemd-journald (Debian package systemd)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !accepts() {
        if Instant::now() > deadline {
            bail!("systemd-journald did not start accepting messages on {SOCKET}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Journal entries of `residency-agent` matching `field=value`, as JSON objects.
pub fn journal_entries(field: &str, value: &str) -> Vec<serde_json::Value> {
    let out = Command::new("journalctl")
        .args([
            "-o",
            "json",
            "--no-pager",
            "-t",
            "residency-agent",
            &format!("{field}={value}"),
        ])
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
