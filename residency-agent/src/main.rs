//! `residency-agent`: the userspace half of residency. Sets up the agent's own log
//! (`residency_agent::log`: journald under systemd, priority-prefixed lines
//! elsewhere, filtered by `RESIDENCY_LOG`), parses the command line and runs the
//! subcommand (`residency_agent::cmd`).

use std::process::ExitCode;

use clap::Parser as _;
use residency_agent::{cli::Cli, cmd};

fn main() -> ExitCode {
    residency_agent::log::init();
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
            // An error, also for journald and log collectors reading stderr.
            let prefix = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                ""
            } else {
                "<3>"
            };
            eprintln!("{prefix}residency-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
