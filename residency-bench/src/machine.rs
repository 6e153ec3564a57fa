//! Where and how a run happened, for the report: CPUs, kernel, load average, the
//! versions of the tools the benchmark drives (checked to be installed first).

use std::path::PathBuf;

use anyhow::bail;

/// Where and how the run happened.
#[derive(Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub started: String,
    pub duration_s: f64,
    pub command: String,
    /// Seconds per datapath measurement and for the flood.
    pub secs: u32,
    pub tools: Vec<String>,
}

impl Machine {
    /// This machine now; `command` and `secs` describe the run.
    pub fn now(command: String, secs: u32, tools: Vec<String>) -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            loadavg_start: loadavg(),
            started: residency_tests::stdout_of(
                std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]),
            )
            .unwrap_or_default()
            .trim()
            .to_owned(),
            command,
            secs,
            tools,
            ..Default::default()
        }
    }
}

/// The programs the benchmark drives, with their versions for the report.
pub fn check_tools() -> anyhow::Result<Vec<String>> {
    let mut versions = Vec::new();
    for (tool, package, version_arg) in [
        ("iperf3", "iperf3", "--version"),
        ("nft", "nftables", "--version"),
        ("iptables", "iptables", "--version"),
        ("iptables-restore", "iptables", "--version"),
        ("gnuplot", "gnuplot-nox", "--version"),
        ("ip", "iproute2", "-V"),
    ] {
        let Some(path) = which(tool) else {
            bail!(
                "`{tool}` is not installed (Debian package {package}); `cargo xtask setup` installs it"
            );
        };
        if tool == "iptables-restore" || tool == "ip" {
            continue;
        }
        let out = std::process::Command::new(&path)
            .arg(version_arg)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        versions.push(text.lines().next().unwrap_or(tool).trim().to_owned());
    }
    Ok(versions)
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `/proc/loadavg`, trimmed.
pub fn loadavg() -> String {
    read_trim("/proc/loadavg")
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cpu_model() -> String {
    read_trim("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}
