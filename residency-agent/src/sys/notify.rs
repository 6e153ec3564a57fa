//! systemd integration (`Type=notify`): READY=1 once the program is attached and the
//! control socket answers, STATUS= lines, RELOADING/READY around reloads, STOPPING on
//! shutdown, and watchdog pings while the agent is healthy. Without `NOTIFY_SOCKET`
//! (not started by systemd) every call is a no-op.

use std::time::Duration;

use libsystemd::daemon::{self, NotifyState};

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = daemon::notify(false, states) {
        tracing::warn!("sd_notify failed: {e}");
    }
}

/// Enforcement is in place: systemd may start the units ordered after this one.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status.to_owned())]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status.to_owned())]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// One watchdog ping.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half its timeout, if systemd set one.
pub fn watchdog_interval() -> Option<Duration> {
    daemon::watchdog_enabled(false).map(|d| d / 2)
}
