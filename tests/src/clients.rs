//! Clients run inside the sandbox (and inside a cgroup when given): one TCP or UDP
//! echo, a UDP burst, a continuous prober and an ICMP echo, each a Python program from
//! [`crate::py`], and what they saw.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
};

use crate::{PORT, Sandbox, py, sandbox::next_seq};

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// "ok", or what failed ("EPERM", "timeout", ...).
    pub detail: String,
}

impl Outcome {
    fn of(out: &std::process::Output) -> Outcome {
        let detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Outcome {
            ok: out.status.success() && detail == "ok",
            detail,
        }
    }
}

impl Sandbox {
    /// TCP or UDP echo to `addr`:[`PORT`] from inside `cgroup` (or outside any test cgroup).
    pub fn client(&self, cgroup: Option<&Path>, proto: &str, addr: &str) -> Outcome {
        self.client_to(cgroup, proto, addr, PORT)
    }

    /// TCP or UDP echo to `addr`:`port` from inside `cgroup`.
    pub fn client_to(&self, cgroup: Option<&Path>, proto: &str, addr: &str, port: u16) -> Outcome {
        let out = self
            .command(
                cgroup,
                "python3",
                &["-c", py::CLIENT, proto, addr, &port.to_string()],
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("running the client");
        Outcome::of(&out)
    }

    /// Sends `count` UDP datagrams to `addr`:[`PORT`] from inside `cgroup` as fast as
    /// one socket can; returns how many `sendto` calls succeeded and failed.
    pub fn udp_burst(&self, cgroup: Option<&Path>, addr: &str, count: u32) -> (u32, u32) {
        let out = self
            .command(
                cgroup,
                "python3",
                &["-c", py::BURST, addr, &PORT.to_string(), &count.to_string()],
            )
            .output()
            .expect("running the burst client");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text
            .split_whitespace()
            .map(|n| n.parse::<u32>().expect("a count"));
        (
            it.next().expect("ok count"),
            it.next().expect("failed count"),
        )
    }

    /// Starts a continuous prober inside `cgroup`: UDP to `both` (allowed by every
    /// policy version under test) and to `neither` (allowed by none), until
    /// [`Probe::finish`]. Each `sendto` to a dropped destination fails with EPERM at
    /// once, so every packet's verdict is seen.
    pub fn probe(&self, cgroup: &Path, both: &str, neither: &str) -> Probe {
        let stop = self.dir.join(format!("probe-stop-{}", next_seq()));
        let child = self
            .command(
                Some(cgroup),
                "python3",
                &[
                    "-c",
                    py::PROBE,
                    &stop.display().to_string(),
                    both,
                    neither,
                    &PORT.to_string(),
                ],
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the prober");
        Probe { child, stop }
    }

    /// One ICMP echo to `addr` from inside `cgroup`.
    pub fn ping(&self, cgroup: Option<&Path>, addr: &str) -> Outcome {
        let out = self
            .command(cgroup, "python3", &["-c", py::PING, addr])
            .stderr(Stdio::inherit())
            .output()
            .expect("running the ICMP echo");
        Outcome::of(&out)
    }
}

/// A running prober (see [`Sandbox::probe`]).
pub struct Probe {
    child: Child,
    stop: PathBuf,
}

/// What a prober saw.
#[derive(Debug, Clone, Copy)]
pub struct ProbeResult {
    pub sent: u64,
    /// Packets to the destination every version allows that were dropped.
    pub wrongly_dropped: u64,
    /// Packets to the destination no version allows that passed.
    pub leaked: u64,
}

impl Probe {
    pub fn finish(self) -> ProbeResult {
        std::fs::write(&self.stop, b"").expect("stop file");
        let out = self.child.wait_with_output().expect("prober");
        let text = String::from_utf8_lossy(&out.stdout);
        let n: Vec<u64> = text
            .split_whitespace()
            .map(|v| v.parse().expect("a count"))
            .collect();
        assert_eq!(n.len(), 3, "prober output: {text:?}");
        ProbeResult {
            sent: n[0],
            wrongly_dropped: n[1],
            leaked: n[2],
        }
    }
}
