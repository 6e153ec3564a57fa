//! Project tasks, run as `cargo xtask <task>` (the alias is in `.cargo/config.toml`).
//!
//! - `setup`: install the toolchain the kernel program needs (idempotent).
//! - `build`: setup, then build the agent (which builds and embeds the kernel program).
//! - `demo`: build, then show enforcement in a sandbox cgroup and network namespace.
//! - `test`: build, then run every test: formatting, lints, unit and end-to-end tests.
//! - `manifests`: render `deploy/kubernetes/` from the Helm chart's defaults.
//! - `bench`: build, then run the `residency-bench` crate, which measures residency
//!   against no filter, nftables and iptables (BENCHMARKS.md); results under
//!   `target/bench/`.

mod demo;
mod setup;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

/// rustup toolchain linked to Debian's rustc-web; the agent's build.rs uses it too.
pub const BPF_TOOLCHAIN: &str = "residency-bpf";

#[derive(Parser)]
#[command(name = "xtask", about = "residency project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain and test tools (skips what is present).
    Setup,
    /// Build the agent binary in release mode.
    Build,
    /// Build, then run a self-contained demo in a sandbox cgroup and namespace (root).
    Demo,
    /// Build, then run formatting and lint checks, unit tests and end-to-end tests (root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Render deploy/kubernetes/ from the Helm chart with its default values (the plain
    /// manifests are never edited by hand; a test checks they match the chart).
    Manifests,
    /// Build, then benchmark per-packet cost, datapath rates against nftables and
    /// iptables, reloads and event storms (root); writes target/bench/. Options
    /// (--rounds, --secs, --trials, --repeat, --only) go to `residency-bench`;
    /// `cargo xtask bench --help` lists them.
    #[command(disable_help_flag = true)]
    Bench {
        /// Options of `residency-bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::setup(),
        Task::Build => {
            setup::setup()?;
            build(true)
        }
        Task::Demo => {
            setup::setup()?;
            build(true)?;
            demo::demo(&workspace().join("target/release/residency-agent"))
        }
        Task::Manifests => {
            setup::setup()?;
            manifests()
        }
        Task::Bench { args } => {
            setup::setup()?;
            build(true)?;
            bench(&args)
        }
        Task::Test { args } => {
            setup::setup()?;
            test(&args)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn manifests() -> anyhow::Result<()> {
    let dir = residency_tests::helm::deploy_dir().join("kubernetes");
    for (name, text) in residency_tests::helm::plain_manifests()? {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
        println!("manifests: wrote deploy/kubernetes/{name}");
    }
    Ok(())
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "--package", "residency-agent"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)
}

/// Builds `residency-bench` (release, like the agent it measures; not a dependency of
/// xtask, so that xtask builds before the BPF toolchain exists) and runs it with `args`.
fn bench(args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "--package", "residency-bench"]))?;
    let target = workspace().join("target/release");
    run(std::process::Command::new(target.join("residency-bench"))
        .arg("--agent")
        .arg(target.join("residency-agent"))
        .args(args))
}

fn test(args: &[String]) -> anyhow::Result<()> {
    println!("== formatting");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("== clippy (host crates)");
    // Default members only: the kernel crate cannot build for the host (Cargo.toml).
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    for krate in ["residency-ebpf", "residency-bench-ebpf"] {
        println!("== clippy ({krate}, for the BPF target)");
        run(Command::new("rustup")
            .args([
                "run",
                BPF_TOOLCHAIN,
                "cargo",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core", "--", "-D", "warnings"])
            .current_dir(workspace().join(krate))
            .env("RUSTC_BOOTSTRAP", "1")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER"))?;
    }
    println!("== build");
    build(false)?;
    println!("== unit and end-to-end tests");
    if !setup::is_root() && std::env::var_os("RESIDENCY_SKIP_PRIVILEGED").is_none() {
        bail!(
            "the end-to-end tests load BPF programs and build cgroups and network namespaces: \
             run as root (or set RESIDENCY_SKIP_PRIVILEGED=1 to run only the unprivileged tests)"
        );
    }
    run(cargo().arg("test").args(args))
}

/// Runs a command, failing with the command line when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
