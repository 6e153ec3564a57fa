//! `residency-agent explain`: a verdict computed offline from the config.

use std::path::Path;

use crate::{config::file::load_config, policy};

pub fn explain(
    path: Option<&Path>,
    policy: Option<&str>,
    addr: std::net::IpAddr,
    port: Option<&str>,
) -> anyhow::Result<()> {
    let config = load_config(path)?;
    print!("{}", policy::explain::explain(&config, policy, addr, port)?);
    Ok(())
}
