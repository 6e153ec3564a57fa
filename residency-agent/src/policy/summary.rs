//! Prefix counts per policy and family, and the summary `check` prints.

use crate::config::{Action, Config, PolicyConfig};

/// Prefix counts of one policy, for `check` and the agent's start-up log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allow_v4: usize,
    pub allow_v6: usize,
    pub deny_v4: usize,
    pub deny_v6: usize,
}

pub fn counts(policy: &PolicyConfig) -> Counts {
    let mut c = Counts::default();
    for e in &policy.entries {
        match (e.action, e.network.is_ipv4()) {
            (Action::Allow, true) => c.allow_v4 += 1,
            (Action::Allow, false) => c.allow_v6 += 1,
            (Action::Deny, true) => c.deny_v4 += 1,
            (Action::Deny, false) => c.deny_v6 += 1,
        }
    }
    c
}

/// A human summary of a config, printed by `check`; `verbose` adds each country
/// database source's counts per country.
pub fn summary(config: &Config, verbose: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: OK, {} policies",
        config.source,
        config.policies.len()
    );
    for p in &config.policies {
        let c = counts(p);
        let _ = writeln!(
            s,
            "  policy {:<20} mode={:<7} cgroups={} ipv4: allow={} deny={}  ipv6: allow={} deny={}",
            p.name,
            p.mode.as_str(),
            p.cgroups.len(),
            c.allow_v4,
            c.deny_v4,
            c.allow_v6,
            c.deny_v6
        );
        for cg in &p.cgroups {
            let _ = writeln!(s, "    cgroup {}", cg.path);
        }
        for src in &p.sources {
            let _ = writeln!(
                s,
                "    source {}: {} prefixes, {} after aggregation",
                src.description, src.read, src.kept
            );
            if verbose {
                for (country, (read, kept)) in &src.countries {
                    let _ = writeln!(
                        s,
                        "      {country}: {read} prefixes, {kept} after aggregation"
                    );
                }
            }
        }
    }
    s
}
