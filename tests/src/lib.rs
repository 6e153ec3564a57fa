//! The sandbox the end-to-end tests and the demo run in: a fresh cgroup v2 subtree, a
//! fresh network namespace holding every destination (documentation addresses on its
//! loopback, with TCP/UDP echo servers), and the real `residency-agent` binary.
//!
//! Nothing here sends a packet outside a namespace it made. Everything is torn down on
//! drop — agent, pinned programs, bpffs mount, servers, namespace, cgroups — on every
//! path, failing tests included.
//!
//! `ip netns exec` remounts `/sys` inside the namespace, hiding the cgroup mount, so a
//! client joins its cgroup (in `pre_exec`, on the host's view of `/sys`) *before* `ip`
//! moves it into the namespace.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Port of the echo servers (TCP and UDP, IPv4 and IPv6).
pub const PORT: u16 = 8080;

/// What the agent attaches to each topmost configured cgroup, each exactly once
/// (besides the packet socket guard, see [`Sandbox::residency_programs`]).
pub const PROGRAMS: &[&str] = &[
    "residency_connect4",
    "residency_connect6",
    "residency_egress",
    "residency_sendmsg4",
    "residency_sendmsg6",
];

const SERVER: &str = r#"
import socket, sys, threading
port = int(sys.argv[1])
def tcp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(128)
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(2); c.sendall(c.recv(64))
        except OSError:
            pass
        finally:
            c.close()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", port))
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    d, a = u.recvfrom(2048)
    u.sendto(d, a)
"#;

const CLIENT: &str = r#"
import errno, socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
try:
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(1.5)
        s.connect((addr, port)); s.sendall(b"residency"); d = s.recv(64)
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b"residency", (addr, port)); d, _ = s.recvfrom(64)
    print("ok" if d == b"residency" else "bad-reply")
    sys.exit(0 if d == b"residency" else 3)
except socket.timeout:
    print("timeout"); sys.exit(1)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno))); sys.exit(1)
"#;

const BURST: &str = r#"
import socket, sys
addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
ok = failed = 0
for _ in range(count):
    try:
        s.sendto(b"residency", (addr, port)); ok += 1
    except OSError:
        failed += 1
print(ok, failed)
"#;

const PROBE: &str = r#"
import os, socket, sys, time
stop, both, neither, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fam = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET
sb, sn = socket.socket(fam(both), socket.SOCK_DGRAM), socket.socket(fam(neither), socket.SOCK_DGRAM)
sent = wrongly_dropped = leaked = 0
deadline = time.time() + 600
while not os.path.exists(stop) and time.time() < deadline:
    for _ in range(50):
        sent += 1
        try:
            sb.sendto(b"residency", (both, port))
        except OSError:
            wrongly_dropped += 1
        try:
            sn.sendto(b"residency", (neither, port))
            leaked += 1
        except OSError:
            pass
print(sent, wrongly_dropped, leaked, flush=True)
"#;

/// An ICMP echo over a raw socket, as monitoring agents send it. (iputils `ping` first
/// probes the route with a UDP `connect()`, which a port-restricted policy judges as
/// UDP; this sends only ICMP.)
const PING: &str = r#"
import errno, os, select, socket, struct, sys, time
addr = sys.argv[1]
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident = os.getpid() & 0xffff
def csum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    n = (n >> 16) + (n & 0xffff); n += n >> 16
    return ~n & 0xffff
msg = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, 1) + b"residency!"
if not v6:
    msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
try:
    s.sendto(msg, (addr, 0))
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno))); sys.exit(1)
deadline = time.time() + 1
want = 129 if v6 else 0
while time.time() < deadline:
    r, _, _ = select.select([s], [], [], max(0, deadline - time.time()))
    if not r:
        break
    d = s.recv(2048)
    if not v6:
        d = d[(d[0] & 15) * 4:]
    if d[0] == want and struct.unpack("!H", d[4:6])[0] == ident:
        print("ok"); sys.exit(0)
print("timeout"); sys.exit(1)
"#;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Fails loudly when the tests cannot run here (they need root for BPF, cgroups and
/// namespaces). `RESIDENCY_SKIP_PRIVILEGED=1` is the explicit opt-out: then it returns
/// false and the caller returns early, saying so.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("RESIDENCY_SKIP_PRIVILEGED").is_some() {
        eprintln!("RESIDENCY_SKIP_PRIVILEGED is set: skipping a test that needs root");
        return false;
    }
    panic!(
        "this end-to-end test needs root (BPF, cgroups, network namespaces); run it as root or set RESIDENCY_SKIP_PRIVILEGED=1"
    );
}

/// The agent binary: `RESIDENCY_AGENT` or the workspace's debug build.
pub fn agent_binary() -> PathBuf {
    let path = std::env::var_os("RESIDENCY_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/residency-agent")
        });
    assert!(
        path.exists(),
        "agent binary {} not found: build it first (`cargo xtask test` does) or set RESIDENCY_AGENT",
        path.display()
    );
    path
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .context("no cgroup2 mount")
}

/// Runs a command to completion, killing it after `secs` seconds: a command the tests
/// expect to return (a refusal, `check`, `detach`) must never hang the suite.
pub fn output_within(cmd: &mut Command, secs: u64) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
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

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// "ok", or what failed ("EPERM", "timeout", ...).
    pub detail: String,
}

/// A sandbox: namespace, cgroups, servers, a scratch directory, maybe an agent.
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
    servers: Vec<Child>,
    agents: Vec<Agent>,
}

impl Sandbox {
    /// Builds a namespace with `addrs` on its loopback and echo servers on [`PORT`].
    pub fn new(addrs: &[&str]) -> anyhow::Result<Sandbox> {
        let name = format!(
            "rz{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
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
            servers: Vec::new(),
            agents: Vec::new(),
        };
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir(&cgroup_root)
            .with_context(|| format!("mkdir {}", cgroup_root.display()))?;
        sb.cgroups.push(cgroup_root);
        sh(Command::new("ip").args(["netns", "add", &sb.netns]))?;
        sh(Command::new("ip").args(["-n", &sb.netns, "link", "set", "lo", "up"]))?;
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

    /// Starts one more TCP and UDP echo server in the namespace, on `port`.
    pub fn serve(&mut self, port: u16) -> anyhow::Result<()> {
        let mut server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "python3",
                "-c",
                SERVER,
                &port.to_string(),
            ])
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

    /// A copy of the agent binary that users other than root can run: the checkout (a
    /// fresh clone under a 0700 `mktemp -d`, say) may not be reachable for them.
    pub fn agent_for_other_users(&self) -> PathBuf {
        let copy = self.dir.join("residency-agent");
        std::fs::copy(agent_binary(), &copy).expect("copying the agent binary");
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
            .expect("opening the sandbox directory");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("making the copy executable");
        copy
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

    /// A command run inside the namespace, and inside `cgroup` when given.
    pub fn command(&self, cgroup: Option<&Path>, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]).args(args);
        if let Some(cg) = cgroup {
            let procs = cg.join("cgroup.procs");
            // SAFETY: only async-signal-safe work between fork and exec: open/write/close.
            unsafe {
                c.pre_exec(move || std::fs::write(&procs, b"0"));
            }
        }
        c
    }

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
                &["-c", CLIENT, proto, addr, &port.to_string()],
            )
            .stderr(Stdio::inherit())
            .output()
            .expect("running the client");
        let detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Outcome {
            ok: out.status.success() && detail == "ok",
            detail,
        }
    }

    /// Sends `count` UDP datagrams to `addr`:[`PORT`] from inside `cgroup` as fast as
    /// one socket can; returns how many `sendto` calls succeeded and failed.
    pub fn udp_burst(&self, cgroup: Option<&Path>, addr: &str, count: u32) -> (u32, u32) {
        let out = self
            .command(
                cgroup,
                "python3",
                &["-c", BURST, addr, &PORT.to_string(), &count.to_string()],
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
        let stop = self
            .dir
            .join(format!("probe-stop-{}", SEQ.fetch_add(1, Ordering::SeqCst)));
        let child = self
            .command(
                Some(cgroup),
                "python3",
                &[
                    "-c",
                    PROBE,
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
            .command(cgroup, "python3", &["-c", PING, addr])
            .stderr(Stdio::inherit())
            .output()
            .expect("running the ICMP echo");
        let detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Outcome {
            ok: out.status.success() && detail == "ok",
            detail,
        }
    }

    /// The control socket of the sandbox's agents.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// Runs `residency-agent <args> --socket <sandbox socket>` (reload, status).
    pub fn ctl(&self, bin: &Path, args: &[&str]) -> std::process::Output {
        output_within(
            Command::new(bin)
                .args(args)
                .arg("--socket")
                .arg(self.control_socket()),
            120,
        )
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

    /// Starts `residency-agent run --config <config>` and waits until it is enforcing.
    pub fn start_agent(&mut self, bin: &Path, config: &Path) -> anyhow::Result<&mut Agent> {
        self.start_agent_with_env(bin, config, &[])
    }

    /// As [`Sandbox::start_agent`], with extra environment variables.
    pub fn start_agent_with_env(
        &mut self,
        bin: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<&mut Agent> {
        let agent = Agent::start(bin, config, env)?;
        self.agents.push(agent);
        Ok(self.agents.last_mut().expect("pushed"))
    }

    /// The agent started last.
    pub fn agent(&mut self) -> &mut Agent {
        self.agents.last_mut().expect("an agent was started")
    }

    /// Runs `residency-agent detach` for the sandbox's pin path.
    pub fn detach(&self, bin: &Path, config: &Path) -> std::process::Output {
        output_within(
            Command::new(bin).args(["detach", "--config"]).arg(config),
            20,
        )
    }

    /// Programs attached to a cgroup, as bpftool lists them (names).
    /// The residency programs attached to `cgroup`, sorted; the packet socket guard
    /// (`residency_socket_create`) is left out, as it attaches only where the kernel
    /// allows BPF LSM programs.
    pub fn residency_programs(cgroup: &Path) -> Vec<String> {
        let mut progs = Self::attached(cgroup);
        progs.sort();
        progs.retain(|p| p != "residency_socket_create");
        progs
    }

    pub fn attached(cgroup: &Path) -> Vec<String> {
        let out = Command::new("bpftool")
            .args(["cgroup", "show"])
            .arg(cgroup)
            .output();
        match out {
            Ok(o) if !o.status.success() => panic!(
                "bpftool cgroup show {} failed: {}",
                cgroup.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
                .collect(),
            Err(e) => panic!("bpftool (Debian package bpftool) cannot run: {e}"),
        }
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
            let target = std::ffi::CString::new(pins.display().to_string()).expect("no NUL");
            // SAFETY: umount2 on a path we own; failure (not mounted) is fine.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        for cg in self.cgroups.iter().rev() {
            // A cgroup is removable once its last process has exited; clients are
            // short-lived, so retry briefly.
            for _ in 0..50 {
                if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

/// A running `residency-agent run`, with its stdout (events) and stderr (log) collected.
pub struct Agent {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub exit: Option<std::process::ExitStatus>,
}

impl Agent {
    fn start(bin: &Path, config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Agent> {
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the agent")?;
        let stdout = collect(child.stdout.take().expect("piped"), false);
        let stderr = collect(child.stderr.take().expect("piped"), true);
        let mut agent = Agent {
            child,
            stdout,
            stderr,
            exit: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if agent
                .stderr()
                .iter()
                .any(|l| l.contains("attached; reporting"))
            {
                return Ok(agent);
            }
            if let Some(status) = agent.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "agent exited ({status}) before attaching:\n{}",
                    agent.stderr().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent did not attach within 20 s:\n{}",
                    agent.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Event lines printed so far.
    pub fn events(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    /// Log lines printed so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits up to 5 s for an event line containing every one of `needles`.
    pub fn wait_event(&self, needles: &[&str]) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self
                .events()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal and waits (up to 10 s) for the agent to exit.
    pub fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.wait_exit()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 10 s) for the agent to exit on its own.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                self.exit = Some(s);
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            assert!(Instant::now() < deadline, "agent did not exit within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static, echo: bool) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if echo && std::env::var_os("RESIDENCY_TEST_VERBOSE").is_some() {
                let _ = writeln!(std::io::stderr(), "agent: {line}");
            }
            sink.lock().expect("lock").push(line);
        }
    });
    lines
}

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

/// A loopback address with a port nothing listens on right now.
fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET path` on the agent's metrics endpoint: status code and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one sample in a Prometheus/OpenMetrics exposition, e.g.
/// `residency_packets_total{policy="p",verdict="blocked",family="ipv4"}`.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

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
