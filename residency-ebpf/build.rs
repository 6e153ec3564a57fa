//! Rebuild the kernel program when `bpf-linker` changes (a new linker can change the
//! object), the same stanza as aya's project template.
use which::which;

fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found on PATH: run `cargo xtask setup` (see README.md)");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
