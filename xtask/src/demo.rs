//! `cargo xtask demo`: placeholder replaced below.
pub fn demo(_bin: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
