//! Running commands: to completion with their stderr as the error, under a deadline,
//! and inside a cgroup.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Runs a command, failing with its stderr.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command and returns its stdout, failing with its stderr (and stdout).
pub fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Spawns `cmd`. A program the tests have just written (a copy of the agent for
/// another user, a wrapper script) can be busy for a moment: a child that another
/// test thread forked meanwhile holds the file's write descriptor until its own exec
/// closes it (ETXTBSY). That is retried briefly.
pub fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Runs a command to completion, killing it after `secs` seconds: a command the tests
/// expect to return (a refusal, `check`, `detach`) must never hang the suite.
pub fn output_within(cmd: &mut Command, secs: u64) -> std::process::Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd).unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{cmd:?} did not finish within {secs} s; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// Makes `cmd`'s child join `cgroup` before it execs. Joining first matters under
/// `ip netns exec`, which remounts `/sys` inside the namespace and hides the cgroup
/// mount from the child.
pub fn join_cgroup(cmd: &mut Command, cgroup: &Path) {
    let procs = cgroup.join("cgroup.procs");
    // SAFETY: only async-signal-safe work between fork and exec: open/write/close.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
}
