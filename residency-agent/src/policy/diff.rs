//! What a reload changes, per policy: the text `reload` prints and its JSON form.

use std::{cmp::Ordering, collections::BTreeSet, fmt::Write as _};

use ipnetwork::IpNetwork;

use crate::config::{Action, Config, Entry, PolicyConfig, display_entry};

/// Entries listed per direction in the text.
const SHOWN: usize = 20;

/// An entry as a reload compares it, ordered: allow before deny, then by prefix and
/// protocol/ports.
type Compared = (u8, IpNetwork, Option<(u8, u16, u16)>);

fn compared(e: &Entry) -> Compared {
    let action = match e.action {
        Action::Allow => 0,
        Action::Deny => 1,
    };
    (
        action,
        e.network,
        e.ports.map(|p| (p.protocol.get(), p.lo, p.hi)),
    )
}

/// A policy's entries in [`Compared`] order, as positions: a country database's
/// policy has 100,000s and a written one up to millions, while a refresh changes a
/// few; sorted positions (4 bytes each) are compared in one pass, and only what is
/// shown is ever formatted.
fn sorted(p: &PolicyConfig, range: std::ops::Range<usize>) -> Vec<u32> {
    let mut order: Vec<u32> = (range.start as u32..range.end as u32).collect();
    order.sort_unstable_by_key(|i| compared(&p.entries[*i as usize]));
    order
}

/// The positions of `o` and `p` whose entries can differ: what lies between their
/// longest common start and end. An edit to a file (a line changed, lines added at
/// the end, a source refreshed) leaves most of a policy's entries where they were, and
/// a policy's entries are distinct, so what is only in one of them lies in the middle.
fn middles(o: &[Entry], p: &[Entry]) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let same = |a: &Entry, b: &Entry| compared(a) == compared(b);
    let head = o.iter().zip(p).take_while(|(a, b)| same(a, b)).count();
    let tail = o[head..]
        .iter()
        .rev()
        .zip(p[head..].iter().rev())
        .take_while(|(a, b)| same(a, b))
        .count();
    (head..o.len() - tail, head..p.len() - tail)
}

/// One direction of a policy's changes: how many entries, and the first [`SHOWN`] as
/// `action:entry`.
#[derive(Default)]
struct Side {
    count: usize,
    shown: Vec<String>,
}

impl Side {
    fn add(&mut self, e: &Entry) {
        self.count += 1;
        if self.shown.len() < SHOWN {
            let entry = display_entry(e.network, e.ports);
            self.shown.push(format!("{}:{entry}", e.action.as_str()));
        }
    }
}

/// Entries only in `o` (removed) and only in `p` (added).
fn entry_changes(o: &PolicyConfig, p: &PolicyConfig) -> (Side, Side) {
    let (mo, mp) = middles(&o.entries, &p.entries);
    let (so, sp) = (sorted(o, mo), sorted(p, mp));
    let (mut added, mut removed) = (Side::default(), Side::default());
    let (mut i, mut j) = (0, 0);
    loop {
        let eo = so.get(i).map(|k| &o.entries[*k as usize]);
        let ep = sp.get(j).map(|k| &p.entries[*k as usize]);
        let order = match (eo, ep) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => compared(a).cmp(&compared(b)),
        };
        match order {
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
            Ordering::Less => {
                removed.add(eo.expect("an old entry"));
                i += 1;
            }
            Ordering::Greater => {
                added.add(ep.expect("a new entry"));
                j += 1;
            }
        }
    }
    (added, removed)
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
    let (added, removed) = entry_changes(o, p);
    let (shown_added, shown_removed) = (&added.shown, &removed.shown);
    let (added, removed) = (added.count, removed.count);
    let (co, cn) = (cgroups(o), cgroups(p));
    let cg_added: Vec<&String> = cn.difference(&co).collect();
    let cg_removed: Vec<&String> = co.difference(&cn).collect();
    let mode = (o.mode != p.mode).then(|| format!("{} -> {}", o.mode.as_str(), p.mode.as_str()));
    if added == 0 && removed == 0 && cg_added.is_empty() && cg_removed.is_empty() && mode.is_none()
    {
        let _ = writeln!(text, "  = policy {} (unchanged)", p.name);
        return serde_json::json!({"policy": p.name, "change": "unchanged"});
    }
    let _ = write!(
        text,
        "  ~ policy {}: +{} -{} prefixes",
        p.name, added, removed
    );
    if let Some(m) = &mode {
        let _ = write!(text, ", mode {m}");
    }
    if !cg_added.is_empty() || !cg_removed.is_empty() {
        let _ = write!(text, ", cgroups +{} -{}", cg_added.len(), cg_removed.len());
    }
    text.push('\n');
    for e in shown_added {
        let _ = writeln!(text, "      + {e}");
    }
    for e in shown_removed {
        let _ = writeln!(text, "      - {e}");
    }
    if added > SHOWN || removed > SHOWN {
        let _ = writeln!(text, "      ... (first {SHOWN} of each shown)");
    }
    serde_json::json!({
        "policy": p.name, "change": "modified",
        "prefixes_added": added, "prefixes_removed": removed,
        "cgroups_added": cg_added, "cgroups_removed": cg_removed, "mode": mode,
    })
}
