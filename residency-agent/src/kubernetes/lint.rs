//! What `check` (and `run`, in its log) says about a config's Kubernetes side that is
//! valid but probably not meant: policies that may claim the same pod (only the first
//! applies), pods left unjudged because there is no default policy, pod selection
//! with `[kubernetes]` off, and allows that cover a Service range (a ClusterIP is
//! judged as the ClusterIP, before kube-proxy translates it, so allowing the range
//! allows every Service behind it).

use crate::config::{Action, Config};

/// The warnings, one line each, in config order.
pub fn lint(config: &Config) -> Vec<String> {
    let k = &config.kubernetes;
    let mut out = Vec::new();
    let selecting: Vec<_> = config
        .policies
        .iter()
        .filter_map(|p| p.pods.as_ref().map(|s| (p, s)))
        .collect();
    if !k.enabled && !selecting.is_empty() {
        out.push(format!(
            "{}:{}: policy \"{}\" selects pods but [kubernetes] is not enabled: it selects none on this host",
            config.source, selecting[0].1.line, selecting[0].0.name
        ));
    }
    if k.enabled && k.default_policy.is_none() {
        out.push(format!(
            "{}: [kubernetes] has no default_policy: a new pod is unjudged until its own policy is bound, and pods no policy selects are never judged",
            config.source
        ));
    }
    for (i, (a, sa)) in selecting.iter().enumerate() {
        for (b, sb) in &selecting[i + 1..] {
            if sa.overlaps(sb) {
                out.push(format!(
                    "{}:{}: policies \"{}\" and \"{}\" (line {}) may select the same pod; such a pod gets \"{}\", the first in config order",
                    config.source, sb.line, a.name, b.name, sa.line, a.name
                ));
            }
        }
    }
    for cidr in &k.service_cidrs {
        for p in &config.policies {
            let covering = p.entries.iter().find(|e| {
                e.action == Action::Allow
                    && e.network.prefix() <= cidr.prefix()
                    && e.network.contains(cidr.network())
                    && e.network.is_ipv4() == cidr.is_ipv4()
            });
            if let Some(e) = covering {
                out.push(format!(
                    "{}:{}: policy \"{}\" allows {}, which covers the Service range {cidr}: every Service's ClusterIP is allowed, whatever the pods behind it",
                    config.source, e.line, p.name, e.network
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_missing_default_and_service_ranges_are_reported() {
        let c = Config::parse(
            "[kubernetes]\nenabled = true\nservice_cidrs = [\"10.96.0.0/12\"]\n\
             [[policy]]\nname = \"a\"\nnamespaces = [\"pay\"]\nallow = [\"10.0.0.0/8\"]\n\
             [[policy]]\nname = \"b\"\npod_selector = { match_labels = { app = \"api\" } }\n\
             [[policy]]\nname = \"c\"\nnamespaces = [\"web\"]\n",
            "t.toml",
        )
        .unwrap();
        let w = lint(&c);
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(w[0].contains("no default_policy"));
        assert!(
            w[1].starts_with("t.toml:10:") && w[1].contains("\"a\" and \"b\" (line 6)"),
            "{}",
            w[1]
        );
        assert!(w[2].contains("\"b\" and \"c\""), "{}", w[2]);
        assert!(
            w[3].starts_with("t.toml:7:") && w[3].contains("covers the Service range 10.96.0.0/12"),
            "{}",
            w[3]
        );
        let off = Config::parse(
            "[[policy]]\nname = \"a\"\nnamespaces = [\"pay\"]\n",
            "t.toml",
        )
        .unwrap();
        assert!(lint(&off)[0].contains("[kubernetes] is not enabled"));
    }
}
