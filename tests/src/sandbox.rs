//! The sandbox itself: a fresh cgroup v2 subtree, a fresh network namespace (with
//! documentation addresses on its loopback and TCP/UDP echo servers, or bare), optional
//! peer namespaces joined to it by a veth pair, a scratch directory, and the processes
//! started in them. Dropping it removes all of it, on every path.
//!
//! `ip netns exec` remounts `/sys` inside the namespace, hiding the cgroup mount, so a
//! client joins its cgroup (in `pre_exec`, on the host's view of `/sys`) *before* `ip`
//! moves it into the namespace ([`crate::join_cgroup`]).

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{Agent, cgroup2_mount, free_port, join_cgroup, py, sh};

/// Port of the echo servers (TCP and UDP, IPv4 and IPv6).
pub const PORT: u16 = 8080;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A number unique within this process (sandbox names, stop files).
pub(crate) fn next_seq() -> usize {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// A sandbox: namespace, cgroups, servers, a scratch directory, maybe agents.
pub struct Sandbox {
    pub name: String,
    pub netns: String,
    pub mount: PathBuf,
    /// `<cgroup2 mount>/<name>`: every cgroup of the sandbox lives below it.
    pub cgroup_root: PathBuf,
    pub dir: PathBuf,
    /// A free loopback address for the agent's metrics endpoint.
    pub metrics: std::net::SocketAddr,
    cgroups: Vec<PathBuf>,
    peers: Vec<String>,
    servers: Vec<Child>,
    pub(crate) agents: Vec<Agent>,
}

impl Sandbox {
    /// Builds a namespace with `addrs` on its loopback and echo servers on [`PORT`].
    pub fn new(addrs: &[&str]) -> anyhow::Result<Sandbox> {
        let mut sb = Self::bare()?;
        for a in addrs {
            let mut c = Command::new("ip");
            c.args(["-n", &sb.netns, "addr", "add"]);
            if a.contains(':') {
                c.args([&format!("{a}/128"), "dev", "lo", "nodad"]);
            } else {
                c.args([&format!("{a}/32"), "dev", "lo"]);
            }
            sh(&mut c)?;
        }
        sb.serve(PORT)?;
        Ok(sb)
    }

    /// The cgroup root, the scratch directory and a namespace with only `lo` up: no
    /// addresses, no servers (the benchmark adds its own).
    pub fn bare() -> anyhow::Result<Sandbox> {
        let name = format!("rz{}-{}", std::process::id(), next_seq());
        let mount = cgroup2_mount()?;
        let cgroup_root = mount.join(&name);
        let dir = std::env::temp_dir().join(format!("residency-{name}"));
        let mut sb = Sandbox {
            netns: name.clone(),
            name,
            mount,
            cgroup_root: cgroup_root.clone(),
            dir: dir.clone(),
            metrics: free_port()?,
            cgroups: Vec::new(),
            peers: Vec::new(),
            servers: Vec::new(),
            agents: Vec::new(),
        };
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir(&cgroup_root)
            .with_context(|| format!("mkdir {}", cgroup_root.display()))?;
        sb.cgroups.push(cgroup_root);
        sh(Command::new("ip").args(["netns", "add", &sb.netns]))?;
        sh(Command::new("ip").args(["-n", &sb.netns, "link", "set", "lo", "up"]))?;
        Ok(sb)
    }

    /// Starts one more TCP and UDP echo server in the namespace, on `port`.
    pub fn serve(&mut self, port: u16) -> anyhow::Result<()> {
        let mut server = self
            .command(None, "python3", &["-c", py::SERVER, &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the echo server")?;
        let mut ready = String::new();
        BufReader::new(server.stdout.take().expect("piped")).read_line(&mut ready)?;
        self.servers.push(server);
        if ready.trim() != "ready" {
            bail!("echo server on port {port} did not start");
        }
        Ok(())
    }

    /// A second namespace joined to the sandbox's by a veth pair named `link` on both
    /// sides, with `local` addresses (CIDR, e.g. `198.18.0.1/24`) on the sandbox's end
    /// and `remote` ones on the peer's; both ends and both loopbacks up. Returns the
    /// peer namespace's name; it is deleted with the sandbox.
    pub fn add_peer(
        &mut self,
        link: &str,
        local: &[&str],
        remote: &[&str],
    ) -> anyhow::Result<String> {
        let peer = format!("{}-peer{}", self.netns, self.peers.len());
        self.peers.push(peer.clone());
        ip(&["netns", "add", &peer])?;
        ip(&[
            "-n",
            &self.netns,
            "link",
            "add",
            link,
            "type",
            "veth",
            "peer",
            "name",
            link,
            "netns",
            &peer,
        ])?;
        for (ns, addrs) in [(&self.netns, local), (&peer, remote)] {
            for a in addrs {
                ip(&["-n", ns, "addr", "add", a, "dev", link])?;
            }
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", link, "up"])?;
        }
        Ok(peer)
    }

    /// Hands a long-running process (a server) to the sandbox, which kills it on drop.
    pub fn adopt(&mut self, child: Child) {
        self.servers.push(child);
    }

    /// Creates a cgroup `<cgroup_root>/<rel>` (and its parents).
    pub fn cgroup(&mut self, rel: &str) -> anyhow::Result<PathBuf> {
        let mut path = self.cgroup_root.clone();
        for part in rel.split('/') {
            path.push(part);
            if !path.exists() {
                std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
                self.cgroups.push(path.clone());
            }
        }
        Ok(path)
    }

    /// How events name `cgroup` (a directory under the cgroup2 mount): its path from
    /// the hierarchy root, as in `/proc/<pid>/cgroup`.
    pub fn from_root(&self, cgroup: &Path) -> String {
        format!(
            "/{}",
            cgroup
                .strip_prefix(&self.mount)
                .expect("a cgroup under the mount")
                .display()
        )
    }

    /// A command run inside the namespace, and inside `cgroup` when given.
    pub fn command(&self, cgroup: Option<&Path>, program: &str, args: &[&str]) -> Command {
        let mut c = self.command_in(&self.netns, cgroup, program);
        c.args(args);
        c
    }

    /// `program` run inside namespace `netns` (the sandbox's or a peer's), and inside
    /// `cgroup` when given.
    pub fn command_in(
        &self,
        netns: &str,
        cgroup: Option<&Path>,
        program: impl AsRef<OsStr>,
    ) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns]).arg(program);
        if let Some(cg) = cgroup {
            join_cgroup(&mut c, cg);
        }
        c
    }

    /// The control socket of the sandbox's agents.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// Where the sandbox's agents pin (a bpffs the agent mounts there).
    pub fn pin_path(&self) -> PathBuf {
        self.dir.join("pins")
    }

    /// Writes a config file into the sandbox directory; `{pins}` is replaced by
    /// [`Sandbox::pin_path`], `{cg}` by the sandbox's cgroup root and `{metrics}` by
    /// [`Sandbox::metrics`]. A config that sets `pin_path` but no `control_socket` gets
    /// [`Sandbox::control_socket`], so that sandboxes never share a socket.
    pub fn write_config(&self, file: &str, text: &str) -> PathBuf {
        let text = if text.contains("control_socket") {
            text.to_owned()
        } else {
            text.replacen(
                "pin_path = \"{pins}\"",
                "pin_path = \"{pins}\"\ncontrol_socket = \"{control}\"",
                1,
            )
        };
        let text = text
            .replace("{control}", &self.control_socket().display().to_string())
            .replace("{pins}", &self.pin_path().display().to_string())
            .replace("{cg}", &self.cgroup_root.display().to_string())
            .replace("{metrics}", &self.metrics.to_string());
        let path = self.dir.join(file);
        std::fs::write(&path, text).expect("write config");
        path
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill();
        }
        // Unpin whatever the agents left (unpinning detaches), then drop the bpffs.
        let pins = self.pin_path();
        if pins.exists() {
            let _ = remove_tree(&pins.join("v3"));
            crate::agent::unmount(&pins);
        }
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        for ns in self.peers.iter().chain([&self.netns]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for cg in self.cgroups.iter().rev() {
            // A cgroup is removable once its last process has exited; clients are
            // short-lived, so retry briefly.
            for _ in 0..100 {
                if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new("ip").args(args))
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            remove_tree(&p)?
        } else {
            std::fs::remove_file(&p)?
        }
    }
    std::fs::remove_dir(dir)
}
