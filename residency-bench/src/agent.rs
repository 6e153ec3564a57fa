//! The agents the benchmark runs: a config of one enforcing policy on a cgroup of the
//! sandbox, started through the test harness's [`residency_tests::Agent`] with its log
//! in a file and its event lines discarded (an event storm prints millions), ready once
//! `/healthz` answers. Dropping one stops it, runs `detach` for its pin path and
//! unmounts the bpffs it mounted there. Also the agent's memory and CPU from /proc.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use residency_tests::{Launch, free_port, http_get, release_pins};

/// A running `residency-agent run` of the benchmark.
pub struct Agent {
    agent: Option<residency_tests::Agent>,
    bin: PathBuf,
    pub config: PathBuf,
    pins: PathBuf,
    pub metrics: SocketAddr,
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
    /// Writes a config for `setup` under `dir`, starts `bin run --config <config>` and
    /// waits (up to 120 s) until /healthz answers 200.
    pub fn start(bin: &Path, dir: &Path, setup: &AgentSetup<'_>) -> anyhow::Result<Agent> {
        Agent::start_with(bin, dir, setup.name, |pins, metrics| {
            config_text(dir, pins, metrics, setup)
        })
    }

    /// [`Agent::start`] with a config of the caller's: `config` gets the pin path
    /// and the metrics address and returns the config text (its control socket must
    /// be `<dir>/<name>.sock`, see [`config_text`]).
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        name: &str,
        config: impl FnOnce(&Path, SocketAddr) -> String,
    ) -> anyhow::Result<Agent> {
        let metrics = free_port()?;
        let pins = dir.join(format!("pins-{name}"));
        let text = config(&pins, metrics);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text)?;
        let launch = Launch {
            log_file: Some(dir.join(format!("{name}.log"))),
            healthz: Some(metrics),
            within: Duration::from_secs(120),
            ..Launch::new(&[])
        };
        let mut agent = Agent {
            agent: None,
            bin: bin.to_owned(),
            config,
            pins,
            metrics,
        };
        // On failure the agent's drop still detaches whatever it pinned.
        agent.agent = Some(residency_tests::Agent::start(bin, &agent.config, &launch)?);
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.agent.as_ref().map_or(0, residency_tests::Agent::pid)
    }

    /// The agent's /metrics text.
    pub fn scrape(&self) -> anyhow::Result<String> {
        let (code, body) = http_get(self.metrics, "/metrics")?;
        anyhow::ensure!(code == 200, "/metrics answered {code}");
        Ok(body)
    }

    /// Stops the agent (SIGTERM), detaches its pins and unmounts its bpffs.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(mut agent) = self.agent.take() {
            agent.terminate(Duration::from_secs(30))?;
        }
        release_pins(&self.bin, &self.config, &self.pins)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("bench: cleaning up an agent: {e:#}");
        }
    }
}

/// The agent config of the benchmarks: one enforcing policy on `setup.cgroup_rel`.
pub fn config_text(dir: &Path, pins: &Path, metrics: SocketAddr, setup: &AgentSetup<'_>) -> String {
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
