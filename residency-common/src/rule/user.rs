//! Names of the actions and of the rule numbers that stand for no config entry, as the
//! config, `explain` and the events write them.

use core::{fmt, str::FromStr};

use super::{Action, Rule};
use crate::{
    UnknownName,
    special::{SPECIAL_DESTINATIONS, SpecialDestination},
};

impl Action {
    /// `allow` or `deny`: the config key of the entry.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// The action named `name` ([`Action::as_str`]).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Action, UnknownName> {
        Action::from_name(s).ok_or(UnknownName { kind: "action" })
    }
}

impl Rule {
    /// The special destination this rule denies, for [`Rule::Special`] within the table.
    pub fn special(self) -> Option<&'static SpecialDestination> {
        match self {
            Rule::Special(k) => SPECIAL_DESTINATIONS.get(k as usize),
            _ => None,
        }
    }
}

/// What decided, for rule numbers that need no config to name: `default-deny`,
/// `unparsable-packet`, `raw-socket`, `spoofed-source`, `device-binding`,
/// `special-deny:<name>:<prefix>`. An entry (which only its policy
/// can name) and a special number outside the table show as `rule-<number>`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.special()) {
            (Rule::DefaultDeny, _) => f.write_str("default-deny"),
            (Rule::Unparsable, _) => f.write_str("unparsable-packet"),
            (Rule::RawSocket, _) => f.write_str("raw-socket"),
            (Rule::SpoofedSource, _) => f.write_str("spoofed-source"),
            (Rule::DeviceBinding, _) => f.write_str("device-binding"),
            (Rule::Special(_), Some(s)) => write!(f, "special-deny:{}:{s}", s.name),
            (Rule::Entry(_) | Rule::Special(_), _) => write!(f, "rule-{}", self.raw()),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString as _;

    use super::*;
    use crate::{RULE_ERROR, RULE_NONE, RULE_SPECIAL_BASE};

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.as_str()), Some(a));
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
        }
        assert_eq!(Action::from_name("Allow"), None);
        assert!("permit".parse::<Action>().is_err());
    }

    #[test]
    fn rules_are_named_as_events_show_them() {
        let name = |raw: u32| Rule::from_raw(raw).to_string();
        assert_eq!(name(RULE_NONE), "default-deny");
        assert_eq!(name(RULE_ERROR), "unparsable-packet");
        assert_eq!(
            name(RULE_SPECIAL_BASE),
            "special-deny:multicast:224.0.0.0/4"
        );
        assert_eq!(name(RULE_SPECIAL_BASE + 7), "special-deny:teredo:2001::/32");
        assert_eq!(
            name(RULE_SPECIAL_BASE + 40),
            std::format!("rule-{}", RULE_SPECIAL_BASE + 40)
        );
        assert_eq!(name(3), "rule-3");
    }
}
