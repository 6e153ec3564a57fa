//! `residency-agent`: the userspace half of residency.
//!
//! `run` loads the kernel program, fills its maps from the config, attaches it to the
//! configured cgroups and writes every blocked packet as an event; `check` validates a
//! config; `detach` removes what `run` left pinned. See ARCHITECTURE.md for the path of a
//! config key into a map and of an event out of the kernel.

use residency_agent::{cli, control, daemon};
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESIDENCY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run { config } => daemon::run(config.as_deref()),
        cli::Command::Check { config } => daemon::check(config.as_deref()),
        cli::Command::Detach { config } => daemon::detach(config.as_deref()),
        cli::Command::Reload {
            socket,
            config,
            dry_run,
        } => daemon::ask(
            socket.as_deref(),
            config.as_deref(),
            control::Request::Reload { dry_run },
            false,
        ),
        cli::Command::Completions { shell } => {
            let mut cmd = <cli::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "residency-agent", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(Into::into)
        }
        cli::Command::Man => {
            let cmd = <cli::Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(Into::into)
        }
        cli::Command::Explain {
            config,
            policy,
            addr,
            port,
        } => daemon::explain(config.as_deref(), policy.as_deref(), addr, port.as_deref()),
        cli::Command::Status {
            socket,
            config,
            json,
        } => daemon::ask(
            socket.as_deref(),
            config.as_deref(),
            control::Request::Status,
            json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("residency-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
