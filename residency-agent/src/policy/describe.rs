//! How a rule number is named in events and `explain`: the entry that decided, a
//! special destination, or the default.

use residency_common::{RULE_ERROR, RULE_NONE};

use super::compile::{RULE_SPECIAL_BASE, SPECIAL_DESTINATIONS};
use crate::config::PolicyConfig;

/// What decided a verdict, for events: the entry, or the default.
pub fn describe_rule(policy: Option<&PolicyConfig>, rule: u32) -> String {
    match rule {
        RULE_NONE => "default-deny".to_owned(),
        RULE_ERROR => "unparsable-packet".to_owned(),
        i if i >= RULE_SPECIAL_BASE => {
            match SPECIAL_DESTINATIONS.get((i - RULE_SPECIAL_BASE) as usize) {
                Some((prefix, name)) => format!("special-deny:{name}:{prefix}"),
                None => format!("rule-{i}"),
            }
        }
        i => match policy.and_then(|p| p.entries.get(i as usize)) {
            Some(e) => format!(
                "{}:{}",
                e.action.as_str(),
                crate::config::display_entry(e.network, e.ports)
            ),
            None => format!("rule-{i}"),
        },
    }
}
