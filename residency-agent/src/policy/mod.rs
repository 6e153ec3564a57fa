//! Policy: pure functions of a validated config, unit-tested without a kernel.
//!
//! - [`compile`] — where a config key becomes a map entry (trie keys, port rules);
//! - `prefixes` — one policy's entries sorted by prefix, as compiling reads them;
//! - [`decide`] — the offline twin of the kernel's verdict;
//! - [`describe`] — how a rule number is named in events;
//! - [`diff`], [`summary`] — what a reload changes, what `check` prints;
//! - [`explain`] — `residency-agent explain`;
//! - [`versioned`] — a config with the policy ids it carries in the kernel.

pub mod compile;
pub mod decide;
pub mod describe;
pub mod diff;
pub mod explain;
pub mod lockout;
mod prefixes;
pub mod summary;
#[cfg(test)]
mod tests;
pub mod versioned;

pub use compile::{
    CompileError, Compiled, KeyV4, KeyV6, RULE_SPECIAL_BASE, RuleSet, SPECIAL_DESTINATIONS,
    compile, mode_value, ports_base,
};
pub use decide::{Target, decide};
pub use describe::describe_rule;
pub use diff::diff;
pub use summary::{Counts, counts, summary};
pub use versioned::Versioned;
