//! `residency-agent check`: validate a config on this host and print its summary.

use std::path::Path;

use anyhow::Context as _;

use crate::{
    config::{Config, file::load_config},
    host::{Hierarchy, check_cgroups},
    policy,
};

/// Validates and summarises; exits non-zero with file, line and reason on an error.
pub fn check(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let hierarchy = Hierarchy::discover()?;
    let notes = check_cgroups(&config, &hierarchy)?;
    validate_compiled(&config)?;
    print!("{}", policy::summary(&config));
    for n in notes {
        println!("note: {n} (its policy applies as soon as it appears)");
    }
    for w in config.warnings() {
        println!("warning: {w}");
    }
    Ok(())
}

/// Compiles the config once, for the limits only the compiled form shows (port rules
/// inherited per prefix, the port rule table).
pub fn validate_compiled(config: &Config) -> anyhow::Result<()> {
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    policy::compile(config, &ids, 0)
        .with_context(|| format!("{} cannot be applied", config.source))?;
    Ok(())
}
