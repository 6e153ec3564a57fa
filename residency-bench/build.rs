//! Builds the benchmark's empty program (`residency-bench-ebpf`) for the BPF target and
//! leaves the object in `OUT_DIR`, from where `src/empty.rs` embeds it.
//!
//! The same toolchain as the agent's build script: Debian's `rustc-web`, linked by
//! `cargo xtask setup` as the rustup toolchain `residency-bpf`, with
//! `RUSTC_BOOTSTRAP=1` for `-Z build-std=core` (see xtask/src/setup.rs).
use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// rustup toolchain that `cargo xtask setup` links to Debian's rustc-web.
const BPF_TOOLCHAIN: &str = "residency-bpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=RESIDENCY_BPF_TOOLCHAIN");
    let toolchain =
        std::env::var("RESIDENCY_BPF_TOOLCHAIN").unwrap_or_else(|_| BPF_TOOLCHAIN.to_owned());
    // SAFETY: the build script is single-threaded at this point; aya-build reads this
    // variable and its child cargo inherits it.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../residency-bench-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .context("residency-bench-ebpf path is not UTF-8")?
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: "residency-bench-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building the empty program with toolchain `{toolchain}` failed; \
             run `cargo xtask setup` to install it and bpf-linker"
        )
    })
}
