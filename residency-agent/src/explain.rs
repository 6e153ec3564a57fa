//! `residency-agent explain`: the verdict a policy gives a destination and the entry
//! that decides it, computed offline from the same compiled rule keys the agent
//! writes into the kernel's tries (`policy::compile`), matched the way an LPM trie
//! matches them: the longest prefix of the destination's scope wins.

use std::net::IpAddr;

use anyhow::bail;

use crate::{
    config::{Config, Mode},
    policy,
};

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_match(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

/// The verdict text for `addr` under every selected policy.
pub fn explain(
    config: &Config,
    policy_name: Option<&str>,
    addr: IpAddr,
    port: Option<&str>,
) -> anyhow::Result<String> {
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    let rules = policy::compile(config, &ids, 0);
    // The kernel judges an IPv4-mapped IPv6 destination as the IPv4 address.
    let judged = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    let selected: Vec<(usize, &crate::config::PolicyConfig)> = config
        .policies
        .iter()
        .enumerate()
        .filter(|(_, p)| policy_name.is_none_or(|n| n == p.name))
        .collect();
    if selected.is_empty() {
        bail!(
            "{}: no policy named \"{}\"",
            config.source,
            policy_name.unwrap_or_default()
        );
    }
    let mut out = String::new();
    let what = match port {
        Some(p) => format!("{addr} {p}"),
        None => addr.to_string(),
    };
    if judged != addr {
        out.push_str(&format!("{addr} is IPv4-mapped: judged as {judged}\n"));
    }
    for (i, p) in selected {
        let scope = residency_common::scope(0, i as u32);
        // (prefix bits, rule index) of the longest match.
        let best = match judged {
            IpAddr::V4(a) => rules
                .v4
                .iter()
                .filter(|(k, _)| k.data().policy == scope)
                .filter(|(k, _)| prefix_match(&k.data().addr, &a.octets(), k.prefix_len() - 32))
                .max_by_key(|(k, _)| k.prefix_len())
                .map(|(_, v)| *v),
            IpAddr::V6(a) => rules
                .v6
                .iter()
                .filter(|(k, _)| k.data().policy == scope)
                .filter(|(k, _)| prefix_match(&k.data().addr, &a.octets(), k.prefix_len() - 32))
                .max_by_key(|(k, _)| k.prefix_len())
                .map(|(_, v)| *v),
        };
        let (allowed, why) = match best {
            Some(v) => {
                let e = &p.entries[v.rule as usize];
                (
                    v.action == residency_common::ACTION_ALLOW,
                    match &e.origin {
                        Some(o) => format!(
                            "{} {} (from {o}, {}:{})",
                            e.action.as_str(),
                            e.network,
                            config.source,
                            e.line
                        ),
                        None => format!(
                            "{} {} ({}:{})",
                            e.action.as_str(),
                            e.network,
                            config.source,
                            e.line
                        ),
                    },
                )
            }
            None => (false, "no entry matches: default deny".to_owned()),
        };
        let verdict = match (allowed, p.mode) {
            (true, _) => "ALLOWED",
            (false, Mode::Enforce) => "BLOCKED",
            (false, Mode::Audit) => "AUDITED (passes, reported)",
        };
        out.push_str(&format!(
            "{what}: {verdict} by policy {} (mode={}): {why}\n",
            p.name,
            p.mode.as_str()
        ));
    }
    if port.is_some() {
        out.push_str("note: this version judges destinations by address only; the port and protocol do not change the verdict\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[[policy]]\nname = \"eu\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/16\", \"2001:db8::/32\"]\ndeny = [\"10.0.99.0/24\"]\n\
             [[policy]]\nname = \"audit\"\nmode = \"audit\"\ncgroups = [\"y\"]\nallow = [\"10.0.0.0/8\"]\n",
            "r.toml",
        )
        .unwrap()
    }

    #[test]
    fn most_specific_entry_decides_and_is_cited() {
        let c = config();
        let t = explain(&c, Some("eu"), "10.0.99.5".parse().unwrap(), None).unwrap();
        assert_eq!(
            t,
            "10.0.99.5: BLOCKED by policy eu (mode=enforce): deny 10.0.99.0/24 (r.toml:5)\n"
        );
        let t = explain(&c, Some("eu"), "10.0.3.4".parse().unwrap(), Some("tcp/443")).unwrap();
        assert!(t.starts_with("10.0.3.4 tcp/443: ALLOWED by policy eu (mode=enforce): allow 10.0.0.0/16 (r.toml:4)"), "{t}");
        let t = explain(&c, None, "203.0.113.9".parse().unwrap(), None).unwrap();
        assert!(
            t.contains("BLOCKED by policy eu (mode=enforce): no entry matches: default deny"),
            "{t}"
        );
        assert!(
            t.contains("AUDITED (passes, reported) by policy audit"),
            "{t}"
        );
        let t = explain(&c, Some("eu"), "::ffff:10.0.99.1".parse().unwrap(), None).unwrap();
        assert!(
            t.starts_with("::ffff:10.0.99.1 is IPv4-mapped: judged as 10.0.99.1\n"),
            "{t}"
        );
        assert!(
            t.contains("BLOCKED") && t.contains("deny 10.0.99.0/24"),
            "{t}"
        );
        let t = explain(&c, Some("eu"), "2001:db8:5::1".parse().unwrap(), None).unwrap();
        assert!(
            t.contains("ALLOWED") && t.contains("allow 2001:db8::/32"),
            "{t}"
        );
        assert!(explain(&c, Some("nope"), "10.0.0.1".parse().unwrap(), None).is_err());
    }

    #[test]
    fn prefix_match_handles_partial_bytes() {
        assert!(prefix_match(
            &[10, 0, 0b1010_0000, 0],
            &[10, 0, 0b1011_1111, 9],
            19
        ));
        assert!(!prefix_match(
            &[10, 0, 0b1010_0000, 0],
            &[10, 0, 0b1000_0000, 9],
            19
        ));
        assert!(prefix_match(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
    }
}
