//! Compilation, the offline verdict, rule names, diffs and summaries.

use residency_common::{ACTION_ALLOW, ACTION_DENY, RULE_NONE, RuleValue};

use super::*;
use crate::config::Config;

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
    let set = compile(&config(), &[0, 7], 1).unwrap();
    let specials_v4 = SPECIAL_DESTINATIONS
        .iter()
        .filter(|s| s.addr.is_ipv4())
        .count();
    let specials_v6 = SPECIAL_DESTINATIONS.len() - specials_v4;
    assert_eq!(set.v4.len(), 3 + 2 * specials_v4);
    assert_eq!(set.v6.len(), 1 + 2 * specials_v6);
    // Written in prefix order, the specials among the policy's own.
    let own = |len: u32| {
        set.v4
            .iter()
            .find(|(k, _)| k.data().policy == [1, 0, 0, 0] && k.prefix_len() == len)
            .unwrap()
    };
    let (k, v) = own(32 + 16);
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
            rule: 0,
            ports_start: 0,
            ports_len: 0,
        }
    );
    let (k, v) = own(32 + 24);
    assert_eq!(k.prefix_len(), 32 + 24);
    assert_eq!(v.action, ACTION_DENY);
    assert_eq!(v.rule, 2);
    assert!(
        set.v4
            .iter()
            .any(|(k, _)| k.data().policy == [1, 0, 0, 7] && k.prefix_len() == 64)
    );
    let (_, v) = set
        .v6
        .iter()
        .find(|(k, _)| {
            k.data().policy == [1, 0, 0, 0]
                && k.prefix_len() == 64
                && k.data().addr[..4] == [0x20, 0x01, 0x0d, 0xb8]
        })
        .unwrap();
    assert_eq!((v.action, v.rule), (ACTION_ALLOW, 1));
}

fn target(addr: &str, proto: Option<u8>, port: Option<u16>) -> Target {
    Target {
        addr: addr.parse().unwrap(),
        protocol: proto,
        port,
    }
}

#[test]
fn port_rules_decide_within_the_most_specific_prefix() {
    let c = Config::parse(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
         allow = [\"10.0.0.0/16 tcp/5432\", \"10.0.0.0/16 udp/53\", \"203.0.113.0/24 tcp/8000-8100\", \"10.0.0.0/8\", \"2001:db8::/32 tcp/443\"]\n\
         deny = [\"10.1.0.0/16 tcp/22\"]\n",
        "t.toml",
    )
    .unwrap();
    let set = compile(&c, &[0], 0).unwrap();
    let d = |a, p, port| decide(&set, 0, 0, &target(a, p, port)).0;
    assert!(d("10.0.1.1", Some(6), Some(5432)));
    assert!(
        d("10.0.1.1", Some(6), Some(5433)),
        "no bare entry at the /16: the /8 it sits in allows the other ports"
    );
    assert!(d("10.0.1.1", Some(17), Some(53)));
    assert!(d("203.0.113.5", Some(6), Some(8050)));
    assert!(!d("203.0.113.5", Some(6), Some(8101)), "outside the range");
    assert!(!d("203.0.113.5", Some(17), Some(8050)), "wrong protocol");
    assert!(
        !d("203.0.113.5", Some(6), None),
        "unknown port: no port allow"
    );
    assert!(
        !d("10.1.2.3", Some(6), Some(22)),
        "denied port inside an allowed /8"
    );
    assert!(d("10.1.2.3", Some(6), Some(23)), "other ports of the /8");
    assert!(
        !d("10.1.2.3", Some(6), None),
        "an unknown port may be the denied one"
    );
    assert!(d("2001:db8::1", Some(6), Some(443)));
    assert!(!d("2001:db8::1", Some(17), Some(443)));
}

#[test]
fn port_only_prefixes_inherit_their_wider_prefix_default() {
    let c = Config::parse(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
         allow = [\"10.0.0.0/8\", \"10.9.0.0/16 tcp/5432\"]\n\
         [[policy]]\nname = \"b\"\ncgroups = [\"y\"]\n\
         allow = [\"10.9.0.0/16 tcp/5432\"]\n",
        "t.toml",
    )
    .unwrap();
    let set = compile(&c, &[0, 1], 0).unwrap();
    let d = |id, a, p, port| decide(&set, 0, id, &target(a, p, port)).0;
    assert!(
        d(0, "10.9.1.1", Some(17), Some(53)),
        "the /8 allows the rest"
    );
    assert!(d(0, "10.9.1.1", Some(6), Some(5432)));
    assert!(d(1, "10.9.1.1", Some(6), Some(5432)));
    assert!(
        !d(1, "10.9.1.1", Some(6), Some(5433)),
        "no wider prefix: denied"
    );
}

#[test]
fn special_destinations_are_denied_unless_named() {
    let c = Config::parse(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\n\
         allow = [\"0.0.0.0/0\", \"::/0\", \"64:ff9b::/96\"]\n",
        "t.toml",
    )
    .unwrap();
    let set = compile(&c, &[0], 0).unwrap();
    let d = |a| decide(&set, 0, 0, &target(a, Some(17), Some(53)));
    for a in [
        "224.0.0.251",
        "255.255.255.255",
        "::198.51.100.1",
        "2002:c633:6401::1",
        "2001:0:c633:6401::1",
        "ff02::1",
    ] {
        let (allowed, rule) = d(a);
        assert!(!allowed, "{a} must be denied");
        assert!(rule >= RULE_SPECIAL_BASE, "{a}: {rule}");
    }
    assert!(d("64:ff9b::c633:6401").0, "named explicitly");
    assert!(d("198.51.100.1").0);
    assert!(d("2001:db8::1").0);
    assert_eq!(
        describe_rule(c.policies.first(), d("2002::1").1),
        "special-deny:6to4:2002::/16"
    );
}

#[test]
fn inherited_port_rules_are_bounded() {
    let mut allow: Vec<String> = (0..16).map(|p| format!("\"10.0.0.0/8 tcp/{p}\"")).collect();
    allow.push("\"10.1.0.0/16 udp/53\"".into());
    let c = Config::parse(
        &format!(
            "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [{}]\n",
            allow.join(", ")
        ),
        "t.toml",
    )
    .unwrap();
    let e = compile(&c, &[0], 0).err().expect("too many").to_string();
    assert!(
        e.contains("10.1.0.0/16 carries 17 protocol/port rules"),
        "{e}"
    );
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
    let s = summary(&config(), false);
    assert!(s.contains("2 policies"), "{s}");
    assert!(
        s.contains("ipv4: allow=1 deny=1  ipv6: allow=1 deny=0"),
        "{s}"
    );
    assert!(s.contains("mode=audit"), "{s}");
}

#[test]
fn the_index_decides_as_the_walk_over_every_entry() {
    let c = Config::parse(
        "[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [\"10.0.0.0/8\", \"10.1.0.0/16 tcp/443\", \"10.1.2.0/24 udp/53\", \"2001:db8::/32\", \"2001:db8:1::/48 tcp/22\"]\ndeny = [\"10.1.2.3\", \"10.1.0.0/16 tcp/8080\"]\n\
         [[policy]]\nname = \"b\"\ncgroups = [\"y\"]\nallow = [\"0.0.0.0/0\"]\n",
        "t.toml",
    )
    .unwrap();
    let rules = compile(&c, &[3, 5], 1).unwrap();
    let index = decide::Index::new(&rules, 1);
    let addrs = [
        "10.0.0.0",
        "10.1.0.0",
        "10.1.2.3",
        "10.1.2.4",
        "10.255.255.255",
        "11.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "2001:db8::1",
        "2001:db8:1::5",
        "2001:db9::",
        "::ffff:10.1.2.3",
        "2002::1",
        "ff02::1",
    ];
    for id in [3, 5, 9] {
        for a in addrs {
            for (protocol, port) in [
                (Some(6), Some(443)),
                (Some(6), Some(8080)),
                (Some(6), Some(22)),
                (Some(17), Some(53)),
                (Some(1), None),
                (Some(6), None),
            ] {
                let t = Target {
                    addr: a.parse().unwrap(),
                    protocol,
                    port,
                };
                assert_eq!(
                    index.decide(id, &t),
                    decide(&rules, 1, id, &t),
                    "policy {id}, {a} {protocol:?}/{port:?}"
                );
            }
        }
    }
}

#[test]
fn diff_counts_entries_as_sets_whatever_moved() {
    let policy = |allow: &str| {
        Config::parse(
            &format!("[[policy]]\nname = \"a\"\ncgroups = [\"x\"]\nallow = [{allow}]\n"),
            "t.toml",
        )
        .unwrap()
    };
    let base = policy("\"10.0.0.0/8\", \"10.1.0.0/16\", \"10.2.0.0/16\", \"10.3.0.0/16\"");
    for (new, summary) in [
        // One line changed in the middle, one appended, the order reversed.
        (
            "\"10.0.0.0/8\", \"10.9.0.0/16\", \"10.2.0.0/16\", \"10.3.0.0/16\"",
            "+1 -1 prefixes",
        ),
        (
            "\"10.0.0.0/8\", \"10.1.0.0/16\", \"10.2.0.0/16\", \"10.3.0.0/16\", \"10.4.0.0/16\"",
            "+1 -0 prefixes",
        ),
        (
            "\"10.3.0.0/16\", \"10.2.0.0/16\", \"10.1.0.0/16\", \"10.0.0.0/8\"",
            "unchanged",
        ),
    ] {
        let (text, _) = diff(&base, &policy(new));
        assert!(text.contains(summary), "{new}: {text}");
    }
    let (text, _) = diff(
        &base,
        &policy("\"10.0.0.0/8\", \"10.9.0.0/16\", \"10.2.0.0/16\", \"10.3.0.0/16\""),
    );
    assert!(text.contains("+ allow:10.9.0.0/16"), "{text}");
    assert!(text.contains("- allow:10.1.0.0/16"), "{text}");
}
