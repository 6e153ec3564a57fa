//! One file per subcommand; [`dispatch`] runs the one the command line names.

pub mod ask;
pub mod check;
pub mod detach;
pub mod docs;
pub mod explain;
pub mod pinned;
mod report;
pub mod verify;

use crate::{
    cli::{Cli, Command},
    control::Request,
    daemon,
};

/// Runs the subcommand of `cli`.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => daemon::run(config.as_deref()),
        Command::Check {
            config,
            default,
            format,
            strict,
            verbose,
        } => check::check(config.as_deref(), default, format, strict, verbose),
        Command::Detach { config, yes } => detach::detach(config.as_deref(), yes),
        Command::Reload {
            socket,
            config,
            dry_run,
        } => ask::ask(
            socket.as_deref(),
            config.as_deref(),
            Request::Reload { dry_run },
            false,
        ),
        Command::Status {
            socket,
            config,
            json,
        } => ask::ask(socket.as_deref(), config.as_deref(), Request::Status, json),
        Command::Explain {
            config,
            policy,
            addr,
            port,
        } => explain::explain(config.as_deref(), policy.as_deref(), addr, port.as_deref()),
        Command::Verify {
            config,
            json,
            exhaustive,
            sample,
        } => verify::verify(
            config.as_deref(),
            json,
            if exhaustive {
                usize::MAX
            } else {
                sample.max(1)
            },
        ),
        Command::Report {
            config,
            json,
            sample,
        } => report::report(config.as_deref(), json, sample.max(1)),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man => docs::man(),
    }
}
