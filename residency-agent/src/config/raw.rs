//! The config file as serde reads it: every key optional where it has a default,
//! unknown keys rejected (a misspelt `deny` must not silently allow everything), and
//! values wrapped in [`Spanned`] so that validation can point at them.

use serde::Deserialize;
use toml::Spanned;

use super::{kubernetes::RawKubernetes, policy::Mode, selector::RawSelector, sources::SourceSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub events: RawEvents,
    #[serde(default)]
    pub kubernetes: RawKubernetes,
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvents {
    pub sinks: Option<Spanned<Vec<Spanned<String>>>>,
    pub mask_addresses: Option<bool>,
    pub aggregate_window_ms: Option<u64>,
    pub aggregate_max_keys: Option<Spanned<u64>>,
    pub rate_limit_per_cpu: Option<Spanned<u32>>,
    pub rate_limit_burst: Option<Spanned<u32>>,
    pub syslog_target: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub pin_path: Option<Spanned<String>>,
    pub control_socket: Option<Spanned<String>>,
    pub metrics_address: Option<Spanned<String>>,
    pub control_group: Option<Spanned<String>>,
    pub rule_capacity: Option<Spanned<u64>>,
    pub ipv4_table_chunks: Option<Spanned<u64>>,
    pub ipv6_table_chunks: Option<Spanned<u64>>,
    pub watch_config: Option<bool>,
    pub watch_sources: Option<bool>,
    pub require_packet_socket_guard: Option<bool>,
    pub verdict_cache: Option<bool>,
    pub mount_bpffs: Option<bool>,
    pub self_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub name: Spanned<String>,
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    #[serde(default)]
    pub cgroups: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub namespaces: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, alias = "namespaceSelector")]
    pub namespace_selector: Option<Spanned<RawSelector>>,
    #[serde(default, alias = "podSelector")]
    pub pod_selector: Option<Spanned<RawSelector>>,
    /// Usually lifted out before toml reads the file (`super::lift`): toml then sees
    /// an empty list, whose span finds the lifted items.
    #[serde(default)]
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub allow_sources: Vec<Spanned<SourceSpec>>,
    #[serde(default)]
    pub deny_sources: Vec<Spanned<SourceSpec>>,
    #[serde(default)]
    pub allow_packet_sockets: bool,
    #[serde(default)]
    pub allow_raw_sockets: bool,
    #[serde(default)]
    pub judge_inbound: bool,
    #[serde(default)]
    pub interfaces: Vec<Spanned<String>>,
}
