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
    let sizes = validate_compiled(&config)?;
    print!("{}", policy::summary(&config));
    for n in notes {
        println!("note: {n} (its policy applies as soon as it appears)");
    }
    for w in config
        .warnings()
        .into_iter()
        .chain(capacity_warnings(&config, sizes))
    {
        println!("warning: {w}");
    }
    Ok(())
}

/// Compiles the config once, for the limits only the compiled form shows (port rules
/// inherited per prefix, the port rule table, the trie entries against
/// `rule_capacity`), exactly as `run` would refuse it. Returns the trie entries per
/// family.
pub fn validate_compiled(config: &Config) -> anyhow::Result<(usize, usize)> {
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    let rules = policy::compile(config, &ids, 0)
        .with_context(|| format!("{} cannot be applied", config.source))?;
    let capacity = config.agent.rule_capacity as usize;
    for (family, n) in [("IPv4", rules.v4.len()), ("IPv6", rules.v6.len())] {
        if n > capacity {
            anyhow::bail!(
                "{} cannot be applied: it needs {n} {family} trie entries and [agent] \
                 rule_capacity is {capacity}; raise rule_capacity to at least {} (a reload \
                 needs room for the old and the new version together)",
                config.source,
                2 * n
            );
        }
    }
    Ok((rules.v4.len(), rules.v6.len()))
}

/// A version that fits the tries but not twice: a reload over one as large fails.
fn capacity_warnings(config: &Config, (v4, v6): (usize, usize)) -> Vec<String> {
    let capacity = config.agent.rule_capacity as usize;
    [("IPv4", v4), ("IPv6", v6)]
        .into_iter()
        .filter(|(_, n)| 2 * n > capacity)
        .map(|(family, n)| {
            format!(
                "{}: {n} {family} trie entries is more than half of rule_capacity ({capacity}): \
                 a reload from a version as large would not fit (both are in the tries during \
                 the swap); raise [agent] rule_capacity to at least {}",
                config.source,
                2 * n
            )
        })
        .collect()
}
