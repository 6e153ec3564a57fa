//! `residency-agent`: the userspace half of residency. Sets up the agent's own log
//! (`tracing`, on stderr, filtered by `RESIDENCY_LOG`), parses the command line and
//! runs the subcommand (`residency_agent::cmd`).

use std::process::ExitCode;

use clap::Parser as _;
use residency_agent::{cli::Cli, cmd};

/// The log filter without `RESIDENCY_LOG`. kube-client's request trace logs every
/// failed API request at error level; the Kubernetes watch reports those failures
/// itself, once per outage, so the trace is off.
const DEFAULT_LOG: &str = "info,kube_client::client::builder=off";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESIDENCY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, residency_agent::cli::Command::Run { .. }) {
        // A command whose reader goes away (`check | head -1`) ends quietly, as other
        // command-line tools do, instead of panicking on the failed write. The daemon
        // keeps SIGPIPE ignored: a sink whose reader is gone is an error it counts.
        residency_agent::sys::restore_sigpipe();
    }
    match cmd::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("residency-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
