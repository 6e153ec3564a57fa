//! What a reload changes, per policy: the text `reload` prints and its JSON form.

use std::{collections::BTreeSet, fmt::Write as _};

use foldhash::HashSet;

use ipnetwork::IpNetwork;

use crate::config::{Action, Config, PolicyConfig, PortSpec, display_entry};

/// An entry as a reload compares it.
type Compared = (Action, IpNetwork, Option<PortSpec>);

/// Entries for set differences (hashed, not formatted: a country database's policy
/// has 100,000s, and a refresh changes a few).
fn entries(p: &PolicyConfig) -> HashSet<Compared> {
    p.entries
        .iter()
        .map(|e| (e.action, e.network, e.ports))
        .collect()
}

/// `action:entry`, sorted, of the entries in `a` but not `b`.
fn shown(a: &HashSet<Compared>, b: &HashSet<Compared>) -> Vec<String> {
    let mut out: Vec<String> = a
        .difference(b)
        .map(|(action, network, ports)| {
            format!("{}:{}", action.as_str(), display_entry(*network, *ports))
        })
        .collect();
    out.sort();
    out
}

fn cgroups(p: &PolicyConfig) -> BTreeSet<String> {
    p.cgroups.iter().map(|c| c.path.clone()).collect()
}

/// What a reload from `old` to `new` changes: text lines and one JSON object per
/// policy.
pub fn diff(old: &Config, new: &Config) -> (String, serde_json::Value) {
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
            Some(o) => json.push(changed(o, p, &mut text)),
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
             (mask_addresses, rate_limit_per_cpu, rate_limit_burst and verdict_cache apply at once)\n",
        );
    }
    (text, serde_json::Value::Array(json))
}

/// One policy present in both versions: unchanged, or what changed (the first 20
/// entries of each direction listed).
fn changed(o: &PolicyConfig, p: &PolicyConfig, text: &mut String) -> serde_json::Value {
    let (eo, en) = (entries(o), entries(p));
    let added = shown(&en, &eo);
    let removed = shown(&eo, &en);
    let (co, cn) = (cgroups(o), cgroups(p));
    let cg_added: Vec<&String> = cn.difference(&co).collect();
    let cg_removed: Vec<&String> = co.difference(&cn).collect();
    let mode = (o.mode != p.mode).then(|| format!("{} -> {}", o.mode.as_str(), p.mode.as_str()));
    if added.is_empty()
        && removed.is_empty()
        && cg_added.is_empty()
        && cg_removed.is_empty()
        && mode.is_none()
    {
        let _ = writeln!(text, "  = policy {} (unchanged)", p.name);
        return serde_json::json!({"policy": p.name, "change": "unchanged"});
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
    serde_json::json!({
        "policy": p.name, "change": "modified",
        "prefixes_added": added.len(), "prefixes_removed": removed.len(),
        "cgroups_added": cg_added, "cgroups_removed": cg_removed, "mode": mode,
    })
}
