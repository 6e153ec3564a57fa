//! Builds the kernel program (`residency-ebpf`) for the BPF target and leaves the object
//! in `OUT_DIR`, from where `src/bpf.rs` embeds it in the agent binary.
//!
//! The BPF target needs `-Z build-std=core` and a compiler whose `rust-src` matches it
//! exactly. rustup cannot fetch one on our machines, so `cargo xtask setup` links
//! Debian's `rustc-web` (with `rust-web-src`) as the rustup toolchain named below;
//! `RUSTC_BOOTSTRAP=1` lets that stable compiler take `-Z` flags (see
//! xtask/src/setup.rs and README.md).
//!
//! When it reruns: aya-build emits `rerun-if-changed` for the kernel crate's directory
//! (the program's sources), and the kernel crate is a build-dependency of the agent
//! (`Cargo.toml`), so cargo also reruns this script when `residency-common` changes:
//! the embedded object never lags behind the shared types.
use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// rustup toolchain that `cargo xtask setup` links to Debian's rustc-web.
const BPF_TOOLCHAIN: &str = "residency-bpf";

/// `--version`: the crate version, the commit it was built from (when built from a
/// git checkout) and the kernel-side toolchain.
fn version_string() -> String {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
    format!(
        "{} (commit {}, {rustc}, kernel program built with toolchain residency-bpf)",
        env!("CARGO_PKG_VERSION"),
        commit.as_deref().unwrap_or("unknown")
    )
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=RESIDENCY_VERSION={}", version_string());
    // Outside a git checkout there is no commit to track (and a missing path would
    // make cargo rerun this script, and rebuild the kernel program, every time).
    if std::path::Path::new("../.git/HEAD").exists() {
        println!("cargo:rerun-if-changed=../.git/HEAD");
    }
    println!("cargo:rerun-if-env-changed=RESIDENCY_BPF_TOOLCHAIN");
    let toolchain =
        std::env::var("RESIDENCY_BPF_TOOLCHAIN").unwrap_or_else(|_| BPF_TOOLCHAIN.to_owned());
    // SAFETY: the build script is single-threaded at this point; aya-build reads this
    // variable and its child cargo inherits it.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../residency-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("residency-ebpf path is not UTF-8")?
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: "residency-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building the kernel program with toolchain `{toolchain}` failed; \
             run `cargo xtask setup` to install it and bpf-linker"
        )
    })
}
