//! The benchmark's sandbox: two network namespaces joined by a veth pair, a cgroup
//! for the sender, a scratch directory, and the agents started in it. Everything is
//! removed on drop, on every path (errors included): agents stopped, their pins
//! detached and unmounted, servers killed, namespaces and cgroups deleted.
//!
//! Addresses are in 198.18.0.0/15 (RFC 2544, benchmarking): the sender has
//! 198.18.0.1 and 198.19.0.1, the receiver 198.18.0.2 (allowed by every filter) and
//! 198.19.0.2 (allowed by none). No packet leaves the two namespaces.

use std::{
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

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

pub struct Sandbox {
    pub tag: String,
    pub dir: PathBuf,
    /// `<cgroup2 mount>/<tag>`.
    pub cgroup_root: PathBuf,
    /// The cgroup the senders run in, relative to the cgroup2 mount (for configs).
    pub sender_rel: String,
    pub sender: PathBuf,
    /// The cgroup `bench-program` runs in.
    pub program: PathBuf,
    pub tx: String,
    pub rx: String,
    /// CPUs the sender and the receiver are pinned to (when there are two or more):
    /// placement otherwise swings the rates by tens of percent from run to run.
    pub cpus: Option<(usize, usize)>,
    servers: Vec<Child>,
    netns_up: bool,
}

impl Sandbox {
    pub fn new() -> anyhow::Result<Sandbox> {
        let tag = format!("residency-bench-{}", std::process::id());
        let mount = residency_tests::cgroup2_mount()?;
        let cgroup_root = mount.join(&tag);
        let dir = std::env::temp_dir().join(&tag);
        let sb = Sandbox {
            sender_rel: format!("{tag}/sender"),
            sender: cgroup_root.join("sender"),
            program: cgroup_root.join("program"),
            tx: format!("rbtx{}", std::process::id()),
            rx: format!("rbrx{}", std::process::id()),
            cpus: (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2)
                .then_some((0, 1)),
            tag,
            dir,
            cgroup_root,
            servers: Vec::new(),
            netns_up: false,
        };
        std::fs::create_dir_all(&sb.dir)?;
        for cg in [&sb.cgroup_root, &sb.sender, &sb.program] {
            std::fs::create_dir(cg).with_context(|| format!("mkdir {}", cg.display()))?;
        }
        Ok(sb)
    }

    /// Builds the namespaces and the veth pair, and starts the servers in the receiver.
    pub fn network(&mut self, helper: &Path) -> anyhow::Result<()> {
        self.netns_up = true;
        let (tx, rx) = (self.tx.clone(), self.rx.clone());
        ip(&["netns", "add", &tx])?;
        ip(&["netns", "add", &rx])?;
        ip(&[
            "-n", &tx, "link", "add", "v0", "type", "veth", "peer", "name", "v0", "netns", &rx,
        ])?;
        for (ns, host) in [(&tx, "1"), (&rx, "2")] {
            for net in ["198.18.0", "198.19.0"] {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{net}.{host}/24"),
                    "dev",
                    "v0",
                ])?;
            }
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", "v0", "up"])?;
        }
        let mut iperf = self.in_ns(&rx, None, "iperf3");
        iperf.args(["-s", "-p", &IPERF_PORT.to_string(), "-B", ALLOWED]);
        let mut rr = self.in_ns(&rx, None, helper);
        rr.args([
            "bench-helper",
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
        self.servers.push(iperf);
        let rr = rr.spawn().context("starting the request/response server")?;
        self.servers.push(rr);
        // Both servers bind within milliseconds; the clients retry besides.
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// `program args` inside namespace `ns`, and inside `cgroup` when given. The child
    /// joins the cgroup before `ip netns exec` remounts /sys (which hides the cgroup
    /// mount inside the namespace).
    pub fn in_ns(&self, ns: &str, cgroup: Option<&Path>, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        if let Some(cg) = cgroup {
            join_cgroup(&mut c, cg);
        }
        c
    }

    /// A command run in the sender's namespace and cgroup.
    pub fn sender_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.in_ns(&self.tx, Some(&self.sender.clone()), program)
    }

    /// A command run in the sender's namespace, outside the sender cgroup (setup).
    pub fn tx_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.in_ns(&self.tx, None, program)
    }
}

/// Makes `c`'s child join `cgroup` before it execs.
pub fn join_cgroup(c: &mut Command, cgroup: &Path) {
    let procs = cgroup.join("cgroup.procs");
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        c.pre_exec(move || std::fs::write(&procs, b"0"));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        if self.netns_up {
            for ns in [&self.tx, &self.rx] {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for cg in [&self.sender, &self.program, &self.cgroup_root] {
            // Removable once its last process has exited.
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

pub use residency_tests::sh;

/// Runs a command and returns its stdout, failing with its stderr.
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

/// A running `residency-agent run`. Dropping it stops the agent, runs `detach` for its
/// pin path, and unmounts the bpffs the agent mounted there.
pub struct Agent {
    child: Option<Child>,
    bin: PathBuf,
    pub config: PathBuf,
    pins: PathBuf,
    pub metrics: std::net::SocketAddr,
    log: PathBuf,
}

/// What an agent's config needs from the caller.
pub struct AgentSetup<'a> {
    pub name: &'a str,
    pub cgroup_rel: &'a str,
    pub allow: &'a [String],
    /// Extra `[events]` keys.
    pub events: &'a str,
}

impl Agent {
    /// Writes a config for `setup` under `dir` and returns its path, pins and metrics.
    pub fn write_config(
        dir: &Path,
        setup: &AgentSetup<'_>,
        metrics: std::net::SocketAddr,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let pins = dir.join(format!("pins-{}", setup.name));
        let config = dir.join(format!("{}.toml", setup.name));
        std::fs::write(&config, config_text(dir, &pins, metrics, setup))?;
        Ok((config, pins))
    }

    /// Starts `bin run --config <config>` and waits until /healthz answers 200.
    pub fn start(bin: &Path, dir: &Path, setup: &AgentSetup<'_>) -> anyhow::Result<Agent> {
        let metrics = free_port()?;
        let (config, pins) = Self::write_config(dir, setup, metrics)?;
        let log = dir.join(format!("{}.log", setup.name));
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            // Event lines (the json sink) are not part of the output.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the agent")?;
        let mut agent = Agent {
            child: Some(child),
            bin: bin.to_owned(),
            config,
            pins,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _)) = residency_tests::http_get(metrics, "/healthz") {
                return Ok(agent);
            }
            if let Some(status) = agent.child.as_mut().expect("running").try_wait()? {
                agent.child = None;
                bail!(
                    "the agent exited ({status}) before it was ready:\n{}",
                    agent.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent was not ready within 120 s:\n{}",
                    agent.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's /metrics text.
    pub fn scrape(&self) -> anyhow::Result<String> {
        let (code, body) = residency_tests::http_get(self.metrics, "/metrics")?;
        anyhow::ensure!(code == 200, "/metrics answered {code}");
        Ok(body)
    }

    /// Stops the agent (SIGTERM), detaches its pins and unmounts its bpffs.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !self.pins.exists() {
            return Ok(());
        }
        let detach = Command::new(&self.bin)
            .args(["detach", "--config"])
            .arg(&self.config)
            .output()
            .context("running residency-agent detach")?;
        let target = std::ffi::CString::new(self.pins.as_os_str().as_encoded_bytes())?;
        // SAFETY: umount2 of the bpffs the agent mounted on our own pin path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir_all(&self.pins);
        if !detach.status.success() {
            bail!(
                "residency-agent detach failed: {}",
                String::from_utf8_lossy(&detach.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("bench: cleaning up an agent: {e:#}");
        }
    }
}

/// The agent config of the benchmarks: one enforcing policy on the sender cgroup.
pub fn config_text(
    dir: &Path,
    pins: &Path,
    metrics: std::net::SocketAddr,
    setup: &AgentSetup<'_>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(setup.allow.len() * 24 + 1024);
    let _ = write!(
        s,
        "[agent]\npin_path = \"{}\"\ncontrol_socket = \"{}\"\nmetrics_address = \"{metrics}\"\n\
         # Room for 1M prefixes in force plus 1M being swapped in.\nrule_capacity = 2097152\n\n\
         [events]\nsinks = [\"json\"]\n{}\n\n\
         [[policy]]\nname = \"bench\"\nmode = \"enforce\"\ncgroups = [\"{}\"]\nallow = [\n",
        pins.display(),
        dir.join(format!("{}.sock", setup.name)).display(),
        setup.events,
        setup.cgroup_rel,
    );
    for c in setup.allow {
        let _ = writeln!(s, "  \"{c}\",");
    }
    s.push_str("]\n");
    s
}

/// A free TCP port on loopback for an agent's metrics endpoint.
pub fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Resident set size and its peak, in KiB, of a process.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = text.rsplit_once(") ").context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f[11].parse()?, f[12].parse()?);
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) as f64 / tck)
}
