//! The agent process: `residency-agent run` started by a test (or the benchmark), its
//! event lines (stdout) and log (stderr) collected, waited for until it enforces, and
//! stopped; plus the [`Sandbox`] methods that start agents and run the agent's client
//! commands (`reload`, `status`, `detach`) against the sandbox.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{Sandbox, agent_binary, http_get, output_within};

/// How an agent is started: its environment, where its output goes, and when it counts
/// as started.
#[derive(Clone, Debug)]
pub struct Launch<'a> {
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// Write the log (stderr) to this file instead of collecting it, and discard the
    /// event lines (stdout): a benchmark's event storm would fill memory with them.
    pub log_file: Option<PathBuf>,
    /// Started once `/healthz` at this address answers 200; without it, once the log
    /// says the agent attached.
    pub healthz: Option<SocketAddr>,
    /// How long starting may take.
    pub within: Duration,
    /// Leave the agent's stdout (its event lines) in a pipe nobody reads, as a
    /// consumer that stopped reading would: once the pipe is full, writes to it block.
    pub stdout_unread: bool,
    /// Write the agent's stdout (its event lines) to this file.
    pub stdout_file: Option<PathBuf>,
}

impl<'a> Launch<'a> {
    /// Output collected, started once attached, within 20 s: what the tests use.
    pub fn new(env: &'a [(&'a str, &'a str)]) -> Launch<'a> {
        Launch {
            env,
            log_file: None,
            healthz: None,
            within: Duration::from_secs(20),
            stdout_unread: false,
            stdout_file: None,
        }
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A running `residency-agent run`, with its stdout (events) and stderr (log) collected.
pub struct Agent {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    log_file: Option<PathBuf>,
    /// The read end of an unread stdout pipe, held open so that writes block.
    _unread: Option<std::process::ChildStdout>,
    pub exit: Option<ExitStatus>,
}

impl Agent {
    /// Starts `bin run --config <config>` as `launch` says and waits until it is
    /// enforcing. The sandbox's [`Sandbox::start_agent`] is the usual way in; the
    /// benchmark starts and stops agents of its own with this.
    pub fn start(bin: &Path, config: &Path, launch: &Launch<'_>) -> anyhow::Result<Agent> {
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(config)
            .envs(launch.env.iter().copied())
            .env("NO_COLOR", "1");
        match &launch.log_file {
            Some(log) => cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log)?),
            None => match &launch.stdout_file {
                Some(f) => cmd.stdout(std::fs::File::create(f)?).stderr(Stdio::piped()),
                None => cmd.stdout(Stdio::piped()).stderr(Stdio::piped()),
            },
        };
        let mut child = crate::commands::spawn(&mut cmd).context("starting the agent")?;
        let mut unread = None;
        let (stdout, stderr) = match launch.log_file {
            Some(_) => (Lines::default(), Lines::default()),
            None if launch.stdout_file.is_some() => (
                Lines::default(),
                collect(child.stderr.take().expect("piped"), true),
            ),
            None if launch.stdout_unread => {
                unread = child.stdout.take();
                (
                    Lines::default(),
                    collect(child.stderr.take().expect("piped"), true),
                )
            }
            None => (
                collect(child.stdout.take().expect("piped"), false),
                collect(child.stderr.take().expect("piped"), true),
            ),
        };
        let mut agent = Agent {
            child,
            stdout,
            stderr,
            log_file: launch.log_file.clone(),
            _unread: unread,
            exit: None,
        };
        if let Err(e) = agent.wait_started(launch) {
            // Not left running (and enforcing) after a start that failed.
            agent.kill();
            return Err(e);
        }
        Ok(agent)
    }

    fn wait_started(&mut self, launch: &Launch<'_>) -> anyhow::Result<()> {
        let deadline = Instant::now() + launch.within;
        let secs = launch.within.as_secs();
        loop {
            let started = match launch.healthz {
                Some(addr) => matches!(http_get(addr, "/healthz"), Ok((200, _))),
                None => self
                    .stderr()
                    .iter()
                    .any(|l| l.contains("attached; reporting")),
            };
            if started {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                self.exit = Some(status);
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "agent exited ({status}) before attaching:\n{}",
                    self.stderr().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent did not attach within {secs} s:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Event lines printed so far (none when they are discarded, see [`Launch`]).
    pub fn events(&self) -> Vec<String> {
        self.stdout.lock().expect("lock").clone()
    }

    /// Log lines printed so far.
    pub fn stderr(&self) -> Vec<String> {
        match &self.log_file {
            Some(log) => std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
            None => self.stderr.lock().expect("lock").clone(),
        }
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
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        self.send(sig);
        self.wait_exit()
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 10 s) for the agent to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = self
            .wait_for(Duration::from_secs(10))
            .expect("wait")
            .expect("agent did not exit within 10 s");
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        status
    }

    /// Stops the agent with SIGTERM, and kills it when it has not exited `within`.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        self.send(libc::SIGTERM);
        if self.wait_for(within)?.is_none() {
            self.kill();
        }
        Ok(())
    }

    fn send(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// The exit status once the agent has exited, or `None` after `within`.
    fn wait_for(&mut self, within: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                self.exit = Some(s);
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static, echo: bool) -> Lines {
    let lines = Lines::default();
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

/// Runs `bin detach --config <config>`, then unmounts the bpffs the agent mounted on
/// `pins` and removes the directory: what an agent left pinned is gone.
pub fn release_pins(bin: &Path, config: &Path, pins: &Path) -> anyhow::Result<()> {
    if !pins.exists() {
        return Ok(());
    }
    let detach = Command::new(bin)
        .args(["detach", "--yes", "--config"])
        .arg(config)
        .output()
        .context("running residency-agent detach")?;
    unmount(pins);
    let _ = std::fs::remove_dir_all(pins);
    if !detach.status.success() {
        bail!(
            "residency-agent detach failed: {}",
            String::from_utf8_lossy(&detach.stderr)
        );
    }
    Ok(())
}

/// Lazily unmounts what is mounted on `path` (nothing mounted is fine).
pub(crate) fn unmount(path: &Path) {
    let Ok(target) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: umount2 on a path of our own; failure (not mounted) is fine.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

impl Sandbox {
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

    /// Starts `residency-agent run --config <config>` and waits until it is enforcing.
    pub fn start_agent(&mut self, bin: &Path, config: &Path) -> anyhow::Result<&mut Agent> {
        self.start_agent_with_env(bin, config, &[])
    }

    /// As [`Sandbox::start_agent`], with extra environment variables.
    /// Starts an agent as `launch` says, owned by the sandbox.
    pub fn start_agent_with(
        &mut self,
        bin: &Path,
        config: &Path,
        launch: &Launch<'_>,
    ) -> anyhow::Result<&mut Agent> {
        let agent = Agent::start(bin, config, launch)?;
        self.agents.push(agent);
        Ok(self.agents.last_mut().expect("pushed"))
    }

    pub fn start_agent_with_env(
        &mut self,
        bin: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<&mut Agent> {
        let agent = Agent::start(bin, config, &Launch::new(env))?;
        self.agents.push(agent);
        Ok(self.agents.last_mut().expect("pushed"))
    }

    /// The agent started last.
    pub fn agent(&mut self) -> &mut Agent {
        self.agents.last_mut().expect("an agent was started")
    }

    /// `residency-agent verify --config config`: whether the kernel state is the
    /// config's, and what it printed.
    pub fn verify(&self, bin: &Path, config: &Path) -> (bool, String) {
        let o = output_within(
            Command::new(bin).arg("verify").arg("--config").arg(config),
            120,
        );
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
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

    /// Runs `residency-agent detach --yes` for the sandbox's pin path (its cgroups may
    /// hold processes; without `--yes` and a terminal, detach would refuse).
    pub fn detach(&self, bin: &Path, config: &Path) -> std::process::Output {
        output_within(
            Command::new(bin)
                .args(["detach", "--yes", "--config"])
                .arg(config),
            20,
        )
    }

    /// Runs `residency-agent detach` without `--yes` (no terminal: it refuses when
    /// enforcement would end for cgroups with processes).
    pub fn detach_asking(&self, bin: &Path, config: &Path) -> std::process::Output {
        output_within(
            Command::new(bin)
                .args(["detach", "--config"])
                .arg(config)
                .stdin(std::process::Stdio::null()),
            20,
        )
    }
}
