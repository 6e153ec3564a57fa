//! How a rule number is named in events and `explain`: the entry that decided, a
//! special destination, or the default.

use residency_common::rule::Rule;

use crate::config::PolicyConfig;

/// What decided a verdict, for events: the entry, or the default.
pub fn describe_rule(policy: Option<&PolicyConfig>, rule: u32) -> String {
    let i = match Rule::from_raw(rule) {
        Rule::Entry(i) => i,
        // Names shared with the kernel crate: default-deny, unparsable-packet,
        // special-deny:<name>:<prefix>.
        other => return other.to_string(),
    };
    match policy.and_then(|p| p.entries.get(i as usize)) {
        Some(e) => format!(
            "{}:{}",
            e.action.as_str(),
            crate::config::display_entry(e.network, e.ports)
        ),
        None => format!("rule-{i}"),
    }
}
