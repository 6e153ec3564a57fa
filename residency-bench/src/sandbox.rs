//! The benchmark's sandbox, built on the test harness's [`Sandbox`]: the sender's
//! namespace (the sandbox's own) joined by a veth pair to a receiver namespace (a peer),
//! a cgroup for the sender and one for the per-packet cost runs, servers in the
//! receiver, and a scratch directory. The harness removes all of it on drop, on every
//! path (errors included).
//!
//! Addresses are in 198.18.0.0/15 (RFC 2544, benchmarking): the sender has
//! 198.18.0.1 and 198.19.0.1, the receiver 198.18.0.2 (allowed by every filter) and
//! 198.19.0.2 (allowed by none). No packet leaves the two namespaces.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use residency_tests::Sandbox;

/// The receiver address every filter allows.
pub const ALLOWED: &str = "198.18.0.2";
/// The receiver address no filter allows.
pub const BLOCKED: &str = "198.19.0.2";
/// iperf3's port in the receiver namespace.
pub const IPERF_PORT: u16 = 5201;
/// The TCP request/response server's port.
pub const RR_PORT: u16 = 7001;
/// A port nothing listens on (the flood's destination).
pub const DISCARD_PORT: u16 = 9;

pub struct Bench {
    sb: Sandbox,
    pub dir: PathBuf,
    /// The cgroup root's path relative to the cgroup2 mount (for configs).
    pub tag: String,
    /// The cgroup the senders run in, relative to the cgroup2 mount (for configs).
    pub sender_rel: String,
    pub sender: PathBuf,
    /// The cgroup `program-run` runs in.
    pub program: PathBuf,
    /// CPUs the sender and the receiver are pinned to (when there are two or more):
    /// placement otherwise swings the rates by tens of percent from run to run.
    pub cpus: Option<(usize, usize)>,
}

impl Bench {
    pub fn new() -> anyhow::Result<Bench> {
        let mut sb = Sandbox::bare()?;
        let sender = sb.cgroup("sender")?;
        let program = sb.cgroup("program")?;
        Ok(Bench {
            dir: sb.dir.clone(),
            tag: sb.name.clone(),
            sender_rel: format!("{}/sender", sb.name),
            sender,
            program,
            cpus: (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2)
                .then_some((0, 1)),
            sb,
        })
    }

    /// Creates a cgroup (and its parents) below the sandbox's root, removed with it.
    pub fn cgroup(&mut self, rel: &str) -> anyhow::Result<PathBuf> {
        self.sb.cgroup(rel)
    }

    /// Builds the receiver namespace and the veth pair, and starts the servers in the
    /// receiver.
    pub fn network(&mut self, helper: &Path) -> anyhow::Result<()> {
        let rx = self.sb.add_peer(
            "v0",
            &["198.18.0.1/24", "198.19.0.1/24"],
            &["198.18.0.2/24", "198.19.0.2/24"],
        )?;
        let mut iperf = self.sb.command_in(&rx, None, "iperf3");
        iperf.args(["-s", "-p", &IPERF_PORT.to_string(), "-B", ALLOWED]);
        let mut rr = self.sb.command_in(&rx, None, helper);
        rr.args([
            "helper",
            "rr-server",
            "--addr",
            &format!("{ALLOWED}:{RR_PORT}"),
        ]);
        if let Some((_, receiver)) = self.cpus {
            iperf.args(["-A", &receiver.to_string()]);
            rr.args(["--cpu", &receiver.to_string()]);
        }
        let iperf = iperf
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        self.sb.adopt(iperf);
        let rr = rr.spawn().context("starting the request/response server")?;
        self.sb.adopt(rr);
        // Both servers bind within milliseconds; the clients retry besides.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// A command run in the sender's namespace and cgroup.
    pub fn sender_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.sb
            .command_in(&self.sb.netns, Some(&self.sender), program)
    }

    /// A command run in the sender's namespace, outside the sender cgroup (setup).
    pub fn tx_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.sb.command_in(&self.sb.netns, None, program)
    }
}
