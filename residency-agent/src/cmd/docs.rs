//! `residency-agent completions` and `man`: shell completions and the man page,
//! generated from the CLI definition.

use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "residency-agent", &mut script);
    std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(Into::into)
}

pub fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command())
        .render(&mut std::io::stdout())
        .map_err(Into::into)
}
