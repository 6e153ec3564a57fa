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

/// Builds the trie entries of every policy.
pub fn compile(config: &Config) -> RuleSet {
    let mut set = RuleSet::default();
    for (id, policy) in config.policies.iter().enumerate() {
        let policy_bytes = (id as u32).to_be_bytes();
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
        let set = compile(&config());
        assert_eq!(set.v4.len(), 3);
        assert_eq!(set.v6.len(), 1);
        let (k, v) = &set.v4[0];
        let (prefix_len, data) = (k.prefix_len(), k.data());
        assert_eq!(prefix_len, 32 + 16);
        assert_eq!(data.policy, [0, 0, 0, 0]);
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
        assert_eq!(k.data().policy, [0, 0, 0, 1]);
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
