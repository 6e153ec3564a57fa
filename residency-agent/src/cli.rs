//! The command line: one binary, one subcommand per job.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Enforce data residency at the kernel: egress from configured cgroups is allowed only
/// to the regional networks of their policy.
#[derive(Debug, Parser)]
#[command(name = "residency-agent", version = env!("RESIDENCY_VERSION"), about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How `check` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load the policy, attach to the configured cgroups, report blocks.
    ///
    /// Without --config, reads /etc/residency/residency.toml; when that file does not
    /// exist, uses an embedded default that only audits (never drops).
    Run {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file as `run` and `reload` would and print a summary; exit
    /// non-zero with file, line and reason when it is invalid. Without --config, reads
    /// /etc/residency/residency.toml, and fails when there is none (unless --default).
    Check {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check the embedded audit-only default config when there is no config file.
        #[arg(long)]
        default: bool,
        /// Output: `text` (default) or `json` (one object, for CI).
        #[arg(long, value_enum, default_value = "text")]
        format: CheckFormat,
        /// Treat warnings (lock-out risks, overlaps, Service ranges) as errors.
        #[arg(long)]
        strict: bool,
        /// Also list each country database source's prefixes per country.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Remove everything the agent attached or pinned (the pin path of the config).
    /// When that ends enforcement for cgroups with processes in them, asks first (or,
    /// without a terminal, refuses unless --yes). Writes a journal entry.
    Detach {
        /// Config file (for its pin_path).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Remove enforcement without asking, even from cgroups with processes.
        #[arg(long, short)]
        yes: bool,
    },
    /// Ask the running agent to re-read its config file and swap the new policy in
    /// atomically; prints what changed. A bad config is rejected (non-zero exit) and the
    /// policy in force stays.
    Reload {
        /// Control socket (default: the config's control_socket, else
        /// /run/residency/agent.sock).
        #[arg(long, short)]
        socket: Option<PathBuf>,
        /// Config file to read control_socket from (the agent re-reads its own file).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Validate and show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), e.g. `residency-agent man > residency-agent.1`.
    Man,
    /// Show the verdict a policy gives a destination and the config entry that decides
    /// it, computed offline from the config (nothing needs to run).
    Explain {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this policy (default: every policy).
        #[arg(long, short)]
        policy: Option<String>,
        /// Destination address (IPv4 or IPv6).
        addr: std::net::IpAddr,
        /// Protocol and port, e.g. tcp/443, udp/53 or icmp: judged by the policy's
        /// protocol/port entries.
        port: Option<String>,
    },
    /// Compare what the kernel enforces (the pinned maps of the version in force and
    /// the attached links) with what the config on disk means; print each difference
    /// and exit non-zero on any. Works with or without a running agent.
    Verify {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Probe every prefix (default: at most 10,000 per policy, evenly spread).
        #[arg(long, conflicts_with = "sample")]
        exhaustive: bool,
        /// Probe at most this many prefixes per policy, evenly spread.
        #[arg(long, default_value_t = 10_000)]
        sample: usize,
    },
    /// Write evidence an auditor can file: host, kernel, agent version and time; the
    /// config's SHA-256 and each source file's; per policy its mode, cgroups, prefix
    /// counts, packets since the agent started and most blocked destinations; the
    /// result of `verify`; the reload history. Exits non-zero when verification
    /// found a difference.
    Report {
        /// Config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON (sorted keys, for diffing and archiving).
        #[arg(long)]
        json: bool,
        /// Probe at most this many prefixes per policy, evenly spread.
        #[arg(long, default_value_t = 10_000)]
        sample: usize,
    },
    /// Show the running agent's generation, policies, cgroups, counters and last reload.
    Status {
        /// Control socket (default as for `reload`).
        #[arg(long, short)]
        socket: Option<PathBuf>,
        /// Config file to read control_socket from.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
