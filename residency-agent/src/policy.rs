//! Policy compilation: from a validated [`Config`] to the exact keys and values the
//! kernel's rule tries hold, and back from a rule index to the entry that decided.
//!
//! Policy ids are the policies' positions in the config. Every rule key starts with its
//! policy id (big-endian, 32 bits that the trie must match exactly) followed by the
//! destination prefix, so one trie per family serves every policy.

use ipnetwork::IpNetwork;
use residency_common::{
    ACTION_ALLOW, ACTION_DENY, MODE_AUDIT, MODE_ENFORCE, POLICY_KEY_BITS, RULE_ERROR, RULE_NONE,
    RuleKeyV4, RuleKeyV6, RuleValue,
};

use crate::config::{Action, Config, Mode, PolicyConfig};

/// A trie key as aya's `LpmTrie` takes it: `(prefix_len, data)`.
pub type KeyV4 = aya::maps::lpm_trie::Key<RuleKeyV4>;
pub type KeyV6 = aya::maps::lpm_trie::Key<RuleKeyV6>;

/// Everything to write into the rule tries for one config.
#[derive(Default)]
pub struct RuleSet {
    pub v4: Vec<(KeyV4, RuleValue)>,
    pub v6: Vec<(KeyV6, RuleValue)>,
}

/// A config together with the policy ids its version carries in the kernel.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub config: Config,
    /// `ids[i]` is the id of `config.policies[i]`.
    pub ids: Vec<u32>,
    /// Versions applied by this agent.
    pub generation: u64,
}

impl Versioned {
    /// A config as a first version: ids in config order, generation 1.
    #[cfg(test)]
    pub fn initial(config: Config) -> Versioned {
        let ids = (0..config.policies.len() as u32).collect();
        Versioned {
            config,
            ids,
            generation: 1,
        }
    }

    /// The policy carrying kernel id `id`.
    pub fn by_id(&self, id: u32) -> Option<&PolicyConfig> {
        self.ids
            .iter()
            .position(|i| *i == id)
            .map(|i| &self.config.policies[i])
    }
}

/// Builds the trie entries of every policy, for generation slot `slot`; `ids[i]` is
/// the id of `config.policies[i]`.
pub fn compile(config: &Config, ids: &[u32], slot: u32) -> RuleSet {
    let mut set = RuleSet::default();
    for (policy, id) in config.policies.iter().zip(ids) {
        let policy_bytes = residency_common::scope(slot, *id);
        for (rule, entry) in policy.entries.iter().enumerate() {
            let value = RuleValue {
                action: match entry.action {
                    Action::Allow => ACTION_ALLOW,
                    Action::Deny => ACTION_DENY,
                },
                rule: rule as u32,
            };
            match entry.network {
                IpNetwork::V4(n) => set.v4.push((
                    KeyV4::new(
                        POLICY_KEY_BITS + u32::from(n.prefix()),
                        RuleKeyV4 {
                            policy: policy_bytes,
                            addr: n.network().octets(),
                        },
                    ),
                    value,
                )),
                IpNetwork::V6(n) => set.v6.push((
                    KeyV6::new(
                        POLICY_KEY_BITS + u32::from(n.prefix()),
                        RuleKeyV6 {
                            policy: policy_bytes,
                            addr: n.network().octets(),
                        },
                    ),
                    value,
                )),
            }
        }
    }
    set
}

/// The binding mode value for the kernel.
pub fn mode_value(mode: Mode) -> u32 {
    match mode {
        Mode::Enforce => MODE_ENFORCE,
        Mode::Audit => MODE_AUDIT,
    }
}

/// What decided a verdict, for events: the entry, or the default.
pub fn describe_rule(policy: Option<&PolicyConfig>, rule: u32) -> String {
    match rule {
        RULE_NONE => "default-deny".to_owned(),
        RULE_ERROR => "unparsable-packet".to_owned(),
        i => match policy.and_then(|p| p.entries.get(i as usize)) {
            Some(e) => format!("{}:{}", e.action.as_str(), e.network),
            None => format!("rule-{i}"),
        },
    }
}

/// What a reload changes, per policy: the text `reload` prints and its JSON form.
pub fn diff(old: &Config, new: &Config) -> (String, serde_json::Value) {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;
    let entries = |p: &PolicyConfig| -> BTreeSet<String> {
        p.entries
            .iter()
            .map(|e| format!("{}:{}", e.action.as_str(), e.network))
            .collect()
    };
    let cgroups = |p: &PolicyConfig| -> BTreeSet<String> {
        p.cgroups.iter().map(|c| c.path.clone()).collect()
    };
    let mut text = String::new();
    let mut json = Vec::new();
    for p in &new.policies {
        match old.policies.iter().find(|o| o.name == p.name) {
            None => {
                let _ = writeln!(
                    text,
                    "  + policy {} (new, mode={}, {} prefixes, {} cgroups)",
                    p.name,
                    p.mode.as_str(),
                    p.entries.len(),
                    p.cgroups.len()
                );
                json.push(serde_json::json!({"policy": p.name, "change": "added", "prefixes_added": p.entries.len()}));
            }
            Some(o) => {
                let (eo, en) = (entries(o), entries(p));
                let added: Vec<&String> = en.difference(&eo).collect();
                let removed: Vec<&String> = eo.difference(&en).collect();
                let (co, cn) = (cgroups(o), cgroups(p));
                let cg_added: Vec<&String> = cn.difference(&co).collect();
                let cg_removed: Vec<&String> = co.difference(&cn).collect();
                let mode = (o.mode != p.mode)
                    .then(|| format!("{} -> {}", o.mode.as_str(), p.mode.as_str()));
                if added.is_empty()
                    && removed.is_empty()
                    && cg_added.is_empty()
                    && cg_removed.is_empty()
                    && mode.is_none()
                {
                    let _ = writeln!(text, "  = policy {} (unchanged)", p.name);
                    json.push(serde_json::json!({"policy": p.name, "change": "unchanged"}));
                    continue;
                }
                let _ = write!(
                    text,
                    "  ~ policy {}: +{} -{} prefixes",
                    p.name,
                    added.len(),
                    removed.len()
                );
                if let Some(m) = &mode {
                    let _ = write!(text, ", mode {m}");
                }
                if !cg_added.is_empty() || !cg_removed.is_empty() {
                    let _ = write!(text, ", cgroups +{} -{}", cg_added.len(), cg_removed.len());
                }
                text.push('\n');
                for e in added.iter().take(20) {
                    let _ = writeln!(text, "      + {e}");
                }
                for e in removed.iter().take(20) {
                    let _ = writeln!(text, "      - {e}");
                }
                if added.len() > 20 || removed.len() > 20 {
                    let _ = writeln!(text, "      ... (first 20 of each shown)");
                }
                json.push(serde_json::json!({
                    "policy": p.name, "change": "modified",
                    "prefixes_added": added.len(), "prefixes_removed": removed.len(),
                    "cgroups_added": cg_added, "cgroups_removed": cg_removed, "mode": mode,
                }));
            }
        }
    }
    for o in &old.policies {
        if !new.policies.iter().any(|p| p.name == o.name) {
            let _ = writeln!(
                text,
                "  - policy {} (removed, {} prefixes)",
                o.name,
                o.entries.len()
            );
            json.push(serde_json::json!({"policy": o.name, "change": "removed", "prefixes_removed": o.entries.len()}));
        }
    }
    if old.agent != new.agent || old.events != new.events {
        text.push_str(
            "  note: [agent] and [events] changes take effect when the agent restarts \
             (mask_addresses applies at once)\n",
        );
    }
    (text, serde_json::Value::Array(json))
}

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

/// A human summary of a config, printed by `check`.
pub fn summary(config: &Config) -> String {
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
        for (origin, read, kept) in &p.sources {
            let _ = writeln!(
                s,
                "    source {origin}: {read} prefixes, {kept} after aggregation"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/16\", \"2001:db8::/32\"]\ndeny = [\"10.0.99.0/24\"]\n\
             [[policy]]\nname = \"b\"\nmode = \"audit\"\ncgroups = [\"y\"]\nallow = [\"198.51.100.7\"]\n",
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn keys_carry_policy_id_and_prefix() {
        let set = compile(&config(), &[0, 7], 1);
        assert_eq!(set.v4.len(), 3);
        assert_eq!(set.v6.len(), 1);
        let (k, v) = &set.v4[0];
        let (prefix_len, data) = (k.prefix_len(), k.data());
        assert_eq!(prefix_len, 32 + 16);
        assert_eq!(
            data.policy,
            [1, 0, 0, 0],
            "slot 1 in the top byte, policy id 0"
        );
        assert_eq!(data.addr, [10, 0, 0, 0]);
        assert_eq!(
            *v,
            RuleValue {
                action: ACTION_ALLOW,
                rule: 0
            }
        );
        let (k, v) = &set.v4[1];
        assert_eq!(k.prefix_len(), 32 + 24);
        assert_eq!(v.action, ACTION_DENY);
        assert_eq!(v.rule, 2);
        let (k, _) = &set.v4[2];
        assert_eq!(k.data().policy, [1, 0, 0, 7]);
        assert_eq!(k.prefix_len(), 64);
        let (k, _) = &set.v6[0];
        assert_eq!(k.prefix_len(), 32 + 32);
        assert_eq!(&k.data().addr[..4], &[0x20, 0x01, 0x0d, 0xb8]);
    }

    #[test]
    fn rules_are_described_by_their_entry() {
        let c = config();
        assert_eq!(describe_rule(c.policies.first(), 2), "deny:10.0.99.0/24");
        assert_eq!(describe_rule(c.policies.first(), RULE_NONE), "default-deny");
        assert_eq!(describe_rule(None, 7), "rule-7");
    }

    #[test]
    fn diff_names_what_changes() {
        let old = config();
        let new = Config::parse(
            "[[policy]]\nname = \"a\"\nmode = \"audit\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/16\", \"203.0.113.0/24\"]\n\
             [[policy]]\nname = \"c\"\ncgroups = [\"z\"]\n",
            "t.toml",
        )
        .unwrap();
        let (text, json) = diff(&old, &new);
        assert!(
            text.contains("~ policy a: +1 -2 prefixes, mode enforce -> audit"),
            "{text}"
        );
        assert!(text.contains("+ allow:203.0.113.0/24"), "{text}");
        assert!(text.contains("- deny:10.0.99.0/24"), "{text}");
        assert!(text.contains("+ policy c (new"), "{text}");
        assert!(text.contains("- policy b (removed"), "{text}");
        assert_eq!(json.as_array().unwrap().len(), 3);
        assert!(diff(&old, &old).0.contains("= policy a (unchanged)"));
    }

    #[test]
    fn summary_counts_per_family() {
        let s = summary(&config());
        assert!(s.contains("2 policies"), "{s}");
        assert!(
            s.contains("ipv4: allow=1 deny=1  ipv6: allow=1 deny=0"),
            "{s}"
        );
        assert!(s.contains("mode=audit"), "{s}");
    }
}
