//! A routed "leak" topology: the sandbox's namespace (the workload's) joined by veth
//! pairs to two peer namespaces, an *allowed* and a *forbidden* host, each with TCP/UDP
//! echo servers on [`PORT`] and a capture of every frame that reaches it. A leak test
//! then judges by where a frame arrives rather than by what a client reports: a
//! payload marker that shows up in the forbidden host's capture left the workload,
//! whatever the sending process saw (a "successful" `sendto`, an error, nothing).
//!
//! The workload has no default route: each link's /24 and /64 is on-link and nothing
//! else is routed, so a packet for the forbidden host can only leave through
//! [`TO_FORBIDDEN`], and a packet for anywhere else cannot leave at all.
//!
//! Also here: [`Sandbox::command_as_nobody`], for workloads that must not be root
//! (unprivileged ping sockets, raw sockets granted by a single capability).

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{PORT, Sandbox, py, sh};

/// The workload's end of link [`TO_ALLOWED`].
pub const WORKLOAD_ALLOWED_V4: &str = "198.51.100.1";
/// The allowed host (the peer end of [`TO_ALLOWED`]).
pub const ALLOWED_HOST_V4: &str = "198.51.100.2";
/// The workload's end of link [`TO_FORBIDDEN`].
pub const WORKLOAD_FORBIDDEN_V4: &str = "203.0.113.1";
/// The forbidden host (the peer end of [`TO_FORBIDDEN`]).
pub const FORBIDDEN_HOST_V4: &str = "203.0.113.2";
/// The workload's end of link [`TO_ALLOWED`], IPv6.
pub const WORKLOAD_ALLOWED_V6: &str = "2001:db8:1::1";
/// The allowed host, IPv6.
pub const ALLOWED_HOST_V6: &str = "2001:db8:1::2";
/// The workload's end of link [`TO_FORBIDDEN`], IPv6.
pub const WORKLOAD_FORBIDDEN_V6: &str = "2001:db8:99::1";
/// The forbidden host, IPv6.
pub const FORBIDDEN_HOST_V6: &str = "2001:db8:99::2";
/// The link to the allowed host; the interface has this name on both ends of the veth
/// pair.
pub const TO_ALLOWED: &str = "to-allowed";
/// The link to the forbidden host; the interface has this name on both ends.
pub const TO_FORBIDDEN: &str = "to-forbidden";

/// The uid and gid unprivileged workloads run as (`nobody`/`nogroup`).
pub const NOBODY: u32 = 65534;

/// How long [`Routed::forbidden_saw`] and [`Routed::allowed_saw`] give frames in
/// flight (a neighbour resolution, the capture's own scheduling) to be recorded. An
/// ICMPv6 error to a neighbour not yet resolved was seen to take more than 300 ms.
const SETTLE: Duration = Duration::from_millis(1500);

/// The routed topology made by [`Sandbox::routed`]. Each host answers on [`PORT`]
/// (TCP and UDP echo, IPv4 and IPv6) at [`ALLOWED_HOST_V4`]/[`ALLOWED_HOST_V6`] and
/// [`FORBIDDEN_HOST_V4`]/[`FORBIDDEN_HOST_V6`]. The namespaces, servers and captures
/// belong to the sandbox and go with it: read the captures before dropping it.
pub struct Routed {
    /// The allowed host's namespace.
    pub allowed_ns: String,
    /// The forbidden host's namespace.
    pub forbidden_ns: String,
    allowed: Capture,
    forbidden: Capture,
}

/// One running capture: its output file and its process.
struct Capture {
    file: PathBuf,
    pid: u32,
}

impl Sandbox {
    /// Joins the sandbox's namespace to an allowed and a forbidden host (each its own
    /// namespace, a /24 and a /64 on each link, IPv6 with `nodad`), starts TCP/UDP echo
    /// servers on [`PORT`] in both peers and a capture in each peer. Both peers get a
    /// default route back to the workload, so they answer whatever source a test's
    /// packet carries (a raw socket's hand-written header included) instead of
    /// dropping the reply for want of a route; the workload gets none (see the module
    /// doc).
    ///
    /// Sets `net.ipv4.ping_group_range = 0 2147483647` in all three namespaces (the
    /// sysctl is per namespace and also governs ICMPv6 ping sockets). Its default, `1 0`,
    /// lets no group open a `SOCK_DGRAM`/`IPPROTO_ICMP` socket; opening the range lets
    /// an unprivileged workload ([`Sandbox::command_as_nobody`]) send pings, a way out
    /// that leak tests must cover, and lets the peers' replies come back to it.
    pub fn routed(&mut self) -> anyhow::Result<Routed> {
        let allowed_ns = self.routed_peer(
            TO_ALLOWED,
            (WORKLOAD_ALLOWED_V4, ALLOWED_HOST_V4),
            (WORKLOAD_ALLOWED_V6, ALLOWED_HOST_V6),
        )?;
        let forbidden_ns = self.routed_peer(
            TO_FORBIDDEN,
            (WORKLOAD_FORBIDDEN_V4, FORBIDDEN_HOST_V4),
            (WORKLOAD_FORBIDDEN_V6, FORBIDDEN_HOST_V6),
        )?;
        for ns in [&self.netns, &allowed_ns, &forbidden_ns] {
            sh(Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ping_group_range=0 2147483647",
            ]))?;
        }
        let mut captures = Vec::new();
        for (ns, link) in [(&allowed_ns, TO_ALLOWED), (&forbidden_ns, TO_FORBIDDEN)] {
            let mut server = self.command_in(ns, None, "python3");
            server.args(["-c", py::SERVER, &PORT.to_string()]);
            self.start_until_ready(server, &format!("echo server in {ns}"))?;
            let file = self.dir.join(format!("capture-{link}.hex"));
            let mut capture = self.command_in(ns, None, "python3");
            capture.args(["-c", py::CAPTURE, link]).arg(&file);
            let pid = self.start_until_ready(capture, &format!("capture on {link} in {ns}"))?;
            captures.push(Capture { file, pid });
        }
        let forbidden = captures.pop().expect("two captures");
        let allowed = captures.pop().expect("two captures");
        Ok(Routed {
            allowed_ns,
            forbidden_ns,
            allowed,
            forbidden,
        })
    }

    /// One peer of [`Sandbox::routed`]: the veth pair `link`, the workload's and the
    /// host's address of each family on it, and the host's default routes back.
    fn routed_peer(
        &mut self,
        link: &str,
        (workload_v4, host_v4): (&str, &str),
        (workload_v6, host_v6): (&str, &str),
    ) -> anyhow::Result<String> {
        let peer = self.add_peer(
            link,
            &[&format!("{workload_v4}/24")],
            &[&format!("{host_v4}/24")],
        )?;
        // `add_peer` takes bare addresses; IPv6 is added here with `nodad`, so that the
        // addresses are usable at once rather than tentative (unusable as a source, and
        // not answered for) during a second of duplicate address detection.
        for (ns, addr) in [(&self.netns, workload_v6), (&peer, host_v6)] {
            sh(Command::new("ip").args([
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                link,
                "nodad",
            ]))?;
        }
        for (family, gateway) in [("-4", workload_v4), ("-6", workload_v6)] {
            sh(Command::new("ip").args([
                "-n", &peer, family, "route", "add", "default", "via", gateway, "dev", link,
            ]))?;
        }
        Ok(peer)
    }

    /// Spawns `cmd` (a server or capture that prints `ready` once it is listening),
    /// hands it to the sandbox and waits for that line, as [`Sandbox::serve`] does.
    /// Returns its process id.
    fn start_until_ready(&mut self, mut cmd: Command, what: &str) -> anyhow::Result<u32> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        let stdout = child.stdout.take().expect("piped");
        let pid = child.id();
        // Adopted before waiting, so that it is killed with the sandbox even when it
        // fails to start.
        self.adopt(child);
        let mut ready = String::new();
        BufReader::new(stdout)
            .read_line(&mut ready)
            .with_context(|| format!("reading the {what}'s output"))?;
        if ready.trim() != "ready" {
            bail!("the {what} did not start (see its stderr above)");
        }
        Ok(pid)
    }

    /// `program args` run inside the sandbox namespace and `cgroup` as uid/gid 65534
    /// (nobody), no supplementary groups, with exactly the capabilities in `caps` (e.g.
    /// `&["net_raw"]`, as `setpriv` names them) as ambient, inheritable, permitted and
    /// effective, and none otherwise (the bounding set holds only `caps`).
    ///
    /// `ip netns exec` needs root, so `setpriv` runs inside it, after the cgroup join
    /// (done before `ip` execs, and inherited). `PATH` is cut down to the directories
    /// nobody can reach: a `python3` found first in root's home (a pyenv shim under
    /// `/root`, mode 0700) fails with EACCES once the user has changed.
    pub fn command_as_nobody(
        &self,
        cgroup: Option<&Path>,
        caps: &[&str],
        program: &str,
        args: &[&str],
    ) -> Command {
        let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
        let set = format!("-all{set}");
        let mut c = self.command_in(&self.netns, cgroup, "setpriv");
        c.args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_owned(),
            format!("--inh-caps={set}"),
            format!("--ambient-caps={set}"),
            format!("--bounding-set={set}"),
            "--".to_owned(),
            program.to_owned(),
        ])
        .args(args)
        .env("PATH", path_for_nobody());
        c
    }
}

impl Routed {
    /// Every frame the forbidden host has received so far: raw bytes as read from an
    /// `AF_PACKET` socket on its end of [`TO_FORBIDDEN`], from the Ethernet header on.
    /// Frames it sent itself are not included.
    pub fn forbidden_frames(&self) -> Vec<Vec<u8>> {
        self.forbidden.frames()
    }

    /// Every frame the allowed host has received so far (as
    /// [`Routed::forbidden_frames`]).
    pub fn allowed_frames(&self) -> Vec<Vec<u8>> {
        self.allowed.frames()
    }

    /// True when any frame that reached the forbidden host contains `marker` anywhere:
    /// payload markers are how leak tests recognise their own data, including data
    /// quoted inside an ICMP error. Gives frames in flight 1.5 s to arrive (returning
    /// as soon as the marker is seen), so a `false` takes that long.
    pub fn forbidden_saw(&self, marker: &[u8]) -> bool {
        self.forbidden.saw(marker)
    }

    /// True when any frame that reached the allowed host contains `marker` (as
    /// [`Routed::forbidden_saw`]).
    pub fn allowed_saw(&self, marker: &[u8]) -> bool {
        self.allowed.saw(marker)
    }
}

impl Capture {
    /// The frames recorded so far. Panics rather than returning nothing when the
    /// capture cannot be read or has died: to a leak test, "no frames" means "no
    /// leak", so a broken capture must never look like an empty one.
    fn frames(&self) -> Vec<Vec<u8>> {
        self.assert_running();
        let text = std::fs::read_to_string(&self.file)
            .unwrap_or_else(|e| panic!("reading the capture {}: {e}", self.file.display()));
        // Only whole lines: the last one may be a write still under way.
        text.split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
            .map(|l| {
                decode_hex(l).unwrap_or_else(|| {
                    panic!("a line of {} is not hex: {l:?}", self.file.display())
                })
            })
            .collect()
    }

    fn saw(&self, marker: &[u8]) -> bool {
        let deadline = Instant::now() + SETTLE;
        loop {
            if self.frames().iter().any(|f| contains(f, marker)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics when the capture process has exited. The sandbox reaps its children
    /// only on drop, so an exited capture is still there, as a zombie, with its pid.
    fn assert_running(&self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // The state is the first field after the command name, which is in parentheses.
        let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
        assert!(
            matches!(state, Some(s) if s != "Z" && s != "X"),
            "the capture writing {} (pid {}) has died: see its stderr",
            self.file.display(),
            self.pid
        );
    }
}

/// `PATH`, without the directories that nobody cannot search (checked on every
/// ancestor, by the "other" permission bits; nobody owns none of them).
fn path_for_nobody() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let reachable: Vec<&str> = path
        .split(':')
        .filter(|dir| {
            Path::new(dir).canonicalize().is_ok_and(|dir| {
                dir.ancestors().all(|a| {
                    std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
                })
            })
        })
        .collect();
    if reachable.is_empty() {
        "/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
    } else {
        reachable.join(":")
    }
}

fn decode_hex(line: &str) -> Option<Vec<u8>> {
    if !line.len().is_multiple_of(2) {
        return None;
    }
    (0..line.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(line.get(i..i + 2)?, 16).ok())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
