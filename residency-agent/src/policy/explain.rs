//! `residency-agent explain`: the verdict a policy gives a destination and the entry
//! that decides it, computed offline from the same compiled rule keys the agent
//! writes into the kernel's tries (`policy::compile`), matched the way an LPM trie
//! matches them: the longest prefix of the destination's scope wins.

use std::net::IpAddr;

use anyhow::bail;

use residency_common::{RULE_NONE, rule::Rule};

use crate::{
    config::{Config, Mode, PolicyConfig, ProtoPorts, display_entry, parse_proto_port},
    policy,
};

/// Parses `tcp/443`, `udp/53`, `tcp` or `icmp` into (protocol, port), with the
/// entries' own protocol parser.
fn parse_port(text: &str) -> anyhow::Result<(u8, Option<u16>)> {
    // Messages quote the protocol as written.
    let name = text.split_once('/').map_or(text, |(n, _)| n);
    let Some(ProtoPorts {
        protocol,
        has_ports,
        ports,
        ..
    }) = parse_proto_port(text)
    else {
        bail!("\"{text}\" does not name a protocol (tcp/PORT, udp/PORT, sctp/PORT, icmp, icmpv6)");
    };
    let port = ports
        .map(|p| p.parse::<u16>())
        .transpose()
        .map_err(|_| anyhow::anyhow!("\"{text}\": the port is not a number 0-65535"))?;
    match (has_ports, port) {
        // The kernel always knows a TCP/UDP/SCTP packet's port (but for a later
        // fragment); guessing "unknown" would answer a question nobody asked.
        (true, None) => bail!("\"{text}\": give the port too, e.g. {name}/443"),
        (false, Some(_)) => bail!("\"{text}\": {name} has no ports"),
        _ => {}
    }
    Ok((protocol, port))
}

/// How an entry is cited: action, prefix, ports and where it was written.
fn cite(config: &Config, p: &PolicyConfig, rule: u32) -> String {
    if rule == RULE_NONE {
        return "no entry matches: default deny".to_owned();
    }
    if matches!(Rule::from_raw(rule), Rule::Special(_)) {
        return format!(
            "{} (denied unless the policy names it itself)",
            policy::describe_rule(Some(p), rule)
        );
    }
    let e = &p.entries[rule as usize];
    let what = display_entry(e.network, e.ports);
    match p.origin_of(e) {
        Some(o) => format!(
            "{} {what} (from {o}, {}:{})",
            e.action.as_str(),
            config.source,
            e.line
        ),
        None => format!(
            "{} {what} ({}:{})",
            e.action.as_str(),
            config.source,
            e.line
        ),
    }
}

/// For an entry that aggregation merged from several countries' networks, the
/// country of `addr` itself, read again from the source (a second or so for a
/// whole country database: only `explain` pays it).
fn country_of(p: &PolicyConfig, rule: u32, addr: IpAddr) -> Option<String> {
    if rule == RULE_NONE || matches!(Rule::from_raw(rule), Rule::Special(_)) {
        return None;
    }
    let origin = p.origin_of(p.entries.get(rule as usize)?)?;
    let (source, countries) = origin.rsplit_once(": ")?;
    if !countries.contains('+') {
        return None;
    }
    let summary = p.sources.iter().find(|s| s.description == source)?;
    let loaded = crate::config::sources::load(&summary.spec, summary.path.parent()?).ok()?;
    let i = loaded.listed.iter().position(|n| n.contains(addr))?;
    Some(format!(
        "  {addr} is in {} of {source}: {}\n",
        loaded.listed[i],
        loaded.listed_labels.get(i)?
    ))
}

/// The verdict text for `addr` (and, if given, a protocol and port such as `tcp/443`)
/// under every selected policy.
pub fn explain(
    config: &Config,
    policy_name: Option<&str>,
    addr: IpAddr,
    port: Option<&str>,
) -> anyhow::Result<String> {
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    let rules = policy::compile(config, &ids, 0)?;
    let (protocol, port_number) = match port {
        Some(p) => {
            let (proto, n) = parse_port(p)?;
            (Some(proto), n)
        }
        None => (None, None),
    };
    // The kernel judges an IPv4-mapped IPv6 destination as the IPv4 address.
    let judged = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    let selected: Vec<(usize, &PolicyConfig)> = config
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
    let mut port_rules_seen = false;
    for (i, p) in selected {
        let target = policy::Target {
            addr: judged,
            protocol,
            port: port_number,
        };
        let (allowed, rule) = policy::decide(&rules, 0, i as u32, &target);
        if protocol.is_none() {
            // Would a protocol/port change this verdict?
            port_rules_seen |= p.entries.iter().any(|e| e.ports.is_some());
        }
        let verdict = match (allowed, p.mode) {
            (true, _) => "ALLOWED",
            (false, Mode::Enforce) => "BLOCKED",
            (false, Mode::Audit) => "AUDITED (passes, reported)",
        };
        out.push_str(&format!(
            "{what}: {verdict} by policy {} (mode={}): {}\n",
            p.name,
            p.mode.as_str(),
            cite(config, p, rule)
        ));
        if let Some(line) = country_of(p, rule, judged) {
            out.push_str(&line);
        }
    }
    if port_rules_seen {
        out.push_str("note: the policy has protocol/port entries; add a protocol and port (e.g. tcp/443) to see their verdict\n");
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
}
