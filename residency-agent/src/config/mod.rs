//! The TOML configuration: parsing, defaults and validation, into a [`Config`] that
//! the rest of the agent trusts.
//!
//! Every error names the file, the line and column, the key and the reason
//! ([`locate`]). Validation here is purely syntactic and local: the config reads its
//! own files (IP-range sources) but never the host. `policy::compile` turns a valid
//! config into the entries the kernel maps hold, and `host::resolve` places its
//! cgroups on this host.

mod agent;
mod entry;
mod events;
pub mod file;
mod locate;
mod policy;
mod raw;
pub mod sources;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use agent::AgentConfig;
pub use entry::{
    Action, Entry, PortSpec, ProtoPorts, display_entry, parse_entry, parse_prefix, parse_proto_port,
};
pub use events::{EventsConfig, SinkKind, SyslogTarget};
pub use locate::ConfigError;
pub use policy::{CgroupRef, Mode, PolicyConfig};

use locate::Locator;
use raw::RawConfig;

/// Default config path of `run`, `check` and `detach`.
pub const DEFAULT_PATH: &str = "/etc/residency/residency.toml";

/// The config used when [`DEFAULT_PATH`] does not exist: audit only, never drops.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/default.toml");
/// How the embedded default is named in messages.
pub const EMBEDDED_NAME: &str = "<embedded default config>";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path of the file, or [`EMBEDDED_NAME`].
    pub source: String,
    pub agent: AgentConfig,
    pub events: EventsConfig,
    pub policies: Vec<PolicyConfig>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file)
    }

    /// The embedded default config.
    pub fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
            .expect("the embedded default config is valid")
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let at = Locator::new(text, file);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            at.error(span, "config", e.message().trim_end())
        })?;

        let agent = agent::parse_agent(&at, raw.agent)?;
        let events = events::parse_events(&at, raw.events)?;
        if raw.policy.len() > residency_common::MAX_POLICIES as usize {
            return Err(at.error(
                0..0,
                "policy",
                &format!(
                    "{} policies; at most {} are supported",
                    raw.policy.len(),
                    residency_common::MAX_POLICIES
                ),
            ));
        }

        let mut seen = policy::Seen::default();
        let policies = raw
            .policy
            .into_iter()
            .map(|p| policy::parse_policy(&at, &mut seen, p, file))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            source: file.to_owned(),
            agent,
            events,
            policies,
        })
    }
}
