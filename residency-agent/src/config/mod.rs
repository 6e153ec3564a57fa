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
mod interfaces;
pub mod kubernetes;
pub(crate) mod lift;
mod locate;
mod policy;
mod raw;
pub mod selector;
pub mod sources;
mod taken;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use agent::{AgentConfig, MAX_TABLE_CHUNKS};
pub use entry::{
    Action, Entry, OriginId, PortSpec, ProtoPorts, display_entry, parse_entry, parse_prefix,
    parse_proto_port,
};
pub use events::{EventsConfig, SinkKind, SyslogTarget};
pub use kubernetes::{CgroupDriver, KubernetesConfig, PodSelection};
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
    /// The text it was read from, kept when a policy reads IP-range sources: a
    /// source file's live refresh reads the same text again (with the new source),
    /// whatever has become of the file since. Without sources nothing reads it again,
    /// and a million written prefixes are 20 MB.
    pub text: Option<String>,
    pub agent: AgentConfig,
    pub events: EventsConfig,
    pub kubernetes: KubernetesConfig,
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
        Config::parse_owned(text, &file)
    }

    /// The embedded default config.
    pub fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
            .expect("the embedded default config is valid")
    }

    /// What is valid but probably not meant, one line each: sources whose allow and
    /// deny overlap, then the Kubernetes lints. `check` prints them, `run` and every
    /// reload log them.
    pub fn warnings(&self) -> Vec<String> {
        self.policies
            .iter()
            .flat_map(|p| p.notes.iter().cloned())
            .chain(crate::kubernetes::lint::lint(self))
            .collect()
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse_owned(text.to_owned(), file)
    }

    /// [`Config::parse`] of owned text, which the config keeps ([`Config::text`])
    /// without a copy when it has sources.
    pub fn parse_owned(text: String, file: &str) -> Result<Config, ConfigError> {
        let at = Locator::new(&text, file);
        // The long lists are read where they are; toml reads the rest (`lift`).
        let mut lifted = lift::lift(&text);
        let raw = deserialize(&at, &lifted.take_text())?;

        let agent = agent::parse_agent(&at, raw.agent)?;
        let events = events::parse_events(&at, raw.events)?;
        let default_span = raw.kubernetes.default_policy.as_ref().map(|d| d.span());
        let kubernetes = kubernetes::parse_kubernetes(&at, raw.kubernetes)?;
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

        let mut seen = policy::Seen::new(kubernetes.default_policy.clone());
        let policies = raw
            .policy
            .into_iter()
            .map(|p| policy::parse_policy(&at, &lifted, &mut seen, p, file))
            .collect::<Result<Vec<_>, _>>()?;
        check_default_policy(&at, &kubernetes, default_span, &policies)?;
        check_binding_count(file, &policies)?;
        drop(lifted);
        drop(at);
        let text = policies
            .iter()
            .any(|p| !p.sources.is_empty())
            .then_some(text);
        Ok(Config {
            source: file.to_owned(),
            text,
            agent,
            events,
            kubernetes,
            policies,
        })
    }
}

/// At most [`residency_common::MAX_BINDINGS`] cgroups across the policies: what one
/// version of the bindings map holds (two versions share it during a reload), so a
/// config that starts is a config that reloads.
fn check_binding_count(file: &str, policies: &[PolicyConfig]) -> Result<(), ConfigError> {
    let max = residency_common::MAX_BINDINGS as usize;
    let over = policies
        .iter()
        .flat_map(|p| p.cgroups.iter().map(move |c| (p, c)))
        .nth(max);
    match over {
        Some((p, c)) => Err(ConfigError::Invalid {
            file: file.to_owned(),
            line: c.line,
            column: c.column,
            key: format!("policy \"{}\".cgroups", p.name),
            reason: format!(
                "more than {max} cgroups across the policies; one policy version binds at most \
                 {max} (the old and the new version share the map during a reload). Bind a \
                 common parent cgroup instead: its children inherit its policy"
            ),
        }),
        None => Ok(()),
    }
}

/// `default_policy` names a policy of the file.
fn check_default_policy(
    at: &Locator,
    kubernetes: &KubernetesConfig,
    default_span: Option<std::ops::Range<usize>>,
    policies: &[PolicyConfig],
) -> Result<(), ConfigError> {
    match &kubernetes.default_policy {
        Some(d) if !policies.iter().any(|p| &p.name == d) => Err(at.error(
            default_span.unwrap_or(0..0),
            "kubernetes.default_policy",
            &format!("names no policy: \"{d}\" is not defined"),
        )),
        _ => Ok(()),
    }
}

/// The TOML text as [`RawConfig`]. A syntax error is reported against `config`; a
/// type, unknown-key or duplicate-key error against the key path where serde stopped
/// (`policy[2].cgroups`), found by `serde_path_to_error`, since toml's own error
/// carries only the span.
fn deserialize(at: &Locator, text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // A key written twice: name it, in its table.
        let key = if e.message().contains("duplicate key") {
            key_at(text, span.start).unwrap_or_else(|| "config".to_owned())
        } else {
            "config".to_owned()
        };
        at.error(span, &key, e.message().trim_end())
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_path(e.path());
        let inner = e.into_inner();
        let span = inner.span().unwrap_or(0..0);
        // serde knows no path for some errors (a duplicate key): name the key the
        // span points at, in the table that holds it.
        let key = if key.is_empty() {
            key_at(text, span.start).unwrap_or_else(|| "config".to_owned())
        } else {
            key
        };
        at.error(span, &key, inner.message().trim_end())
    })
}

/// The key written at byte `at` of `text`, with the table it is in: `agent.pin_path`,
/// `policy[1].name` (the second `[[policy]]`).
fn key_at(text: &str, at: usize) -> Option<String> {
    let rest = text.get(at..)?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect();
    if name.is_empty() {
        return None;
    }
    // Table headers before the key, without their comments.
    let headers: Vec<&str> = text[..at]
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.starts_with('['))
        .collect();
    let bare = |h: &str| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .trim()
            .to_owned()
    };
    let table = match headers.last() {
        None => return Some(name),
        // `[[policy]]`, the n-th: policy[n-1]. A sub-table of it (`[policy.x]`) is in
        // the last one.
        Some(h) => {
            let t = bare(h);
            let array = t.split('.').next().unwrap_or("").to_owned();
            let index = headers
                .iter()
                .filter(|l| l.starts_with("[[") && bare(l) == array)
                .count();
            match (h.starts_with("[["), index) {
                (true, n) => format!("{t}[{}]", n.saturating_sub(1)),
                (false, 0) => t,
                (false, n) => format!("{array}[{}]{}", n - 1, &t[array.len()..]),
            }
        }
    };
    Some(format!("{table}.{name}"))
}

/// `policy[2].cgroups` from serde's path, without the private field through which
/// `toml::Spanned` reads its value.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}
