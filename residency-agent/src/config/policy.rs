//! One `[[policy]]`: its name, mode, cgroups and entries, validated in named steps
//! (name, cgroups, hand-written entries, IP-range sources). Every error points at the
//! key that caused it.

use std::{collections::HashMap, path::Path};

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

use super::{
    ConfigError,
    entry::{Action, Entry, PortSpec, display_entry, parse_entry},
    kubernetes::{PodSelection, parse_pod_selection},
    locate::Locator,
    raw::RawPolicy,
};

/// Longest policy name; names appear in logs, journal fields and metric labels.
const MAX_NAME_LEN: usize = 64;

/// Enforcement mode of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop what the policy does not allow.
    Enforce,
    /// Pass everything; report what enforce mode would drop.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// What one IP-range source contributed to a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    /// Its format and path as written (`mmdb GeoLite2-Country.mmdb`).
    pub description: String,
    /// Its file, resolved against the config's directory.
    pub path: std::path::PathBuf,
    /// Prefixes read (selected) and after aggregation.
    pub read: usize,
    pub kept: usize,
    /// Country databases: per country, prefixes read and after aggregation.
    pub countries: std::collections::BTreeMap<String, (usize, usize)>,
    /// `max_age`: the age past which the file is stale.
    pub max_age: Option<std::time::Duration>,
    /// The entry as written, to read the source again (`explain`).
    pub spec: super::sources::SourceSpec,
}

/// One `[[policy]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub name: String,
    pub mode: Mode,
    /// As written: absolute paths under the cgroup v2 mount, or paths relative to it.
    pub cgroups: Vec<CgroupRef>,
    /// The Kubernetes pods this policy selects (`namespaces`, `namespace_selector`,
    /// `pod_selector`), bound by the node agent as they run on its node.
    pub pods: Option<PodSelection>,
    /// Allow entries first, then deny entries, each in file order, then the entries of
    /// the IP-range sources.
    pub entries: Vec<Entry>,
    /// What each IP-range source contributed.
    pub sources: Vec<SourceSummary>,
    /// Workloads may create packet sockets (AF_PACKET), which no IP egress hook sees.
    /// Off by default; only enforce policies deny them, audit policies report them.
    pub allow_packet_sockets: bool,
    /// Workloads may create raw IP sockets (`SOCK_RAW` in AF_INET/AF_INET6, never with
    /// `IPPROTO_RAW`). Off by default; only enforce policies deny them.
    pub allow_raw_sockets: bool,
    /// Inbound connection attempts (TCP SYNs) from sources the policy does not allow
    /// are dropped before the kernel answers them.
    pub judge_inbound: bool,
    /// Interfaces the policy's workloads may bind sockets to with `SO_BINDTODEVICE`;
    /// every other choice of interface is refused in enforce mode.
    pub interfaces: Vec<String>,
    /// What `check` and `run` report about this policy's sources: prefixes that an
    /// allow source and a deny source both list (denied), with file and line.
    pub notes: Vec<String>,
}

/// A cgroup named in a policy, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    pub path: String,
    pub line: usize,
    pub column: usize,
}

/// What the policies of one file share while they are validated: names must be
/// unique, and a cgroup has one policy.
#[derive(Default)]
pub(crate) struct Seen {
    /// `[kubernetes] default_policy`: a policy that needs no cgroup or selection.
    pub default_policy: Option<String>,
    names: HashMap<String, usize>,
    cgroup_owner: HashMap<String, String>,
}

impl Seen {
    pub(crate) fn new(default_policy: Option<String>) -> Seen {
        Seen {
            default_policy,
            ..Seen::default()
        }
    }
}

/// Entries already taken in one policy, by prefix and ports: a duplicate or an
/// allow/deny conflict is an error, and a source never overrides a written entry.
/// Prefixes taken so far (hashed with foldhash: a country database adds 100,000s).
type Taken = foldhash::HashMap<(IpNetwork, Option<PortSpec>), (Action, usize)>;

/// Validates one `[[policy]]`; `file` names the config (sources are relative to it).
pub(crate) fn parse_policy(
    at: &Locator<'_>,
    seen: &mut Seen,
    p: RawPolicy,
    file: &str,
) -> Result<PolicyConfig, ConfigError> {
    let name = p.name.get_ref().clone();
    let key = format!("policy \"{name}\"");
    validate_name(at, &p.name)?;
    if let Some(first) = seen
        .names
        .insert(name.clone(), at.line(p.name.span().start))
    {
        return Err(at.error(
            p.name.span(),
            "policy.name",
            &format!("duplicate policy name \"{name}\" (first defined on line {first})"),
        ));
    }
    let mode = p.mode.map(|m| *m.get_ref()).unwrap_or(Mode::Enforce);
    let pods = parse_pod_selection(at, &key, p.namespaces, p.namespace_selector, p.pod_selector)?;
    let cgroups = match p.cgroups {
        Some(list) => parse_cgroups(at, seen, &key, &name, list)?,
        None if pods.is_some() || seen.default_policy.as_deref() == Some(name.as_str()) => {
            Vec::new()
        }
        None => {
            return Err(at.error(
                p.name.span(),
                &key,
                "binds nothing: give it cgroups, a pod selection (namespaces, namespace_selector, pod_selector), or name it as [kubernetes] default_policy",
            ));
        }
    };
    let interfaces = super::interfaces::parse(at, &key, p.interfaces)?;
    let mut taken = Taken::default();
    let entries = parse_entries(at, &key, &mut taken, p.allow, p.deny)?;
    let mut notes = Vec::new();
    let (entries, sources) = add_sources(
        at,
        &key,
        &mut taken,
        entries,
        [
            (Action::Allow, p.allow_sources),
            (Action::Deny, p.deny_sources),
        ],
        file,
        &mut notes,
    )?;
    Ok(PolicyConfig {
        name,
        mode,
        cgroups,
        pods,
        entries,
        sources,
        allow_packet_sockets: p.allow_packet_sockets,
        allow_raw_sockets: p.allow_raw_sockets,
        judge_inbound: p.judge_inbound,
        interfaces,
        notes,
    })
}

/// `cgroups`: at least one, each a usable path bound by no other policy.
fn parse_cgroups(
    at: &Locator<'_>,
    seen: &mut Seen,
    key: &str,
    name: &str,
    list: Spanned<Vec<Spanned<String>>>,
) -> Result<Vec<CgroupRef>, ConfigError> {
    if list.get_ref().is_empty() {
        return Err(at.error(
            list.span(),
            &format!("{key}.cgroups"),
            "binds no cgroup; name at least one",
        ));
    }
    let mut cgroups = Vec::new();
    for c in list.into_inner() {
        let path = c.get_ref().trim_end_matches('/').to_owned();
        let path = if path.is_empty() && c.get_ref().starts_with('/') {
            "/".to_owned()
        } else {
            path
        };
        if path.is_empty() || path.contains('\0') || path.split('/').any(|s| s == "..") {
            return Err(at.error(
                c.span(),
                &format!("{key}.cgroups"),
                &format!("\"{}\" is not a usable cgroup path", c.get_ref()),
            ));
        }
        if let Some(other) = seen.cgroup_owner.insert(path.clone(), name.to_owned()) {
            return Err(at.error(
                c.span(),
                &format!("{key}.cgroups"),
                &format!("cgroup \"{path}\" is already bound to policy \"{other}\"; a cgroup has one policy"),
            ));
        }
        let line = at.line(c.span().start);
        let column = at.column(c.span().start);
        cgroups.push(CgroupRef { path, line, column });
    }
    Ok(cgroups)
}

/// `allow` then `deny`, in file order: no entry twice, none both allowed and denied,
/// at most as many protocol/port entries per prefix as the kernel walks.
fn parse_entries(
    at: &Locator<'_>,
    key: &str,
    seen: &mut Taken,
    allow: Vec<Spanned<String>>,
    deny: Vec<Spanned<String>>,
) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::new();
    // Protocol/port entries per prefix, bounded by what the kernel walks.
    let mut port_entries: HashMap<IpNetwork, usize> = HashMap::new();
    for (action, list) in [(Action::Allow, allow), (Action::Deny, deny)] {
        let entry_key = format!("{key}.{}", action.as_str());
        for item in list {
            let (network, ports) = parse_entry(item.get_ref())
                .map_err(|reason| at.error(item.span(), &entry_key, &reason))?;
            let line = at.line(item.span().start);
            let shown = display_entry(network, ports);
            if let Some((prev, prev_line)) = seen.insert((network, ports), (action, line)) {
                let reason = if prev == action {
                    format!("{shown} is listed twice (also on line {prev_line})")
                } else {
                    format!(
                        "{shown} is both allowed and denied (the {} entry is on line {prev_line})",
                        prev.as_str()
                    )
                };
                return Err(at.error(item.span(), &entry_key, &reason));
            }
            let same_prefix = match ports {
                Some(_) => {
                    let n = port_entries.entry(network).or_insert(0usize);
                    *n += 1;
                    *n
                }
                None => 0,
            };
            if same_prefix > residency_common::MAX_PORT_RULES_PER_PREFIX as usize {
                return Err(at.error(
                    item.span(),
                    &entry_key,
                    &format!(
                        "{network} has more than {} protocol/port entries; merge ranges",
                        residency_common::MAX_PORT_RULES_PER_PREFIX
                    ),
                ));
            }
            entries.push(Entry {
                action,
                network,
                ports,
                line,
                origin: None,
            });
        }
    }
    Ok(entries)
}

/// IP-range sources: aggregated, and never overriding an entry written by hand (nor
/// an earlier source) for the same prefix. Returns the entries with the sources'
/// appended, and what each source contributed.
fn add_sources(
    at: &Locator<'_>,
    key: &str,
    seen: &mut Taken,
    mut entries: Vec<Entry>,
    lists: [(Action, Vec<Spanned<super::sources::SourceSpec>>); 2],
    file: &str,
    notes: &mut Vec<String>,
) -> Result<(Vec<Entry>, Vec<SourceSummary>), ConfigError> {
    let mut sources = Vec::new();
    let base = Path::new(file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Entries from allow sources, by prefix: a deny source's own prefix that equals
    // one of them wins over it (looked up, not searched: sources run to 100,000s).
    let mut from_allow_source: foldhash::HashMap<IpNetwork, usize> = foldhash::HashMap::default();
    for (action, list) in lists {
        let entry_key = format!("{key}.{}_sources", action.as_str());
        for item in list {
            let spec = item.get_ref();
            let loaded = super::sources::load(spec, base)
                .map_err(|reason| at.error(item.span(), &entry_key, &reason))?;
            let line = at.line(item.span().start);
            let origin = spec.describe();
            sources.push(SourceSummary {
                description: origin.clone(),
                path: base.join(&spec.path),
                read: loaded.read,
                kept: loaded.prefixes.len(),
                countries: loaded
                    .countries
                    .iter()
                    .map(|(c, n)| ((*c).to_owned(), *n))
                    .collect(),
                max_age: spec.max_age,
                spec: spec.clone(),
            });

            if action == Action::Deny {
                // Between sources a deny wins (fail closed), judged on the prefixes
                // the deny source lists, and reported. An entry written by hand wins
                // over both, reported too.
                for network in &loaded.listed {
                    if let Some(&i) = from_allow_source.get(network) {
                        let e = &mut entries[i];
                        if e.action == Action::Allow {
                            notes.push(format!(
                                "{file}:{line}: {key}: {network} is in allow source \"{}\" (line {}) and in deny source \"{origin}\": denied (between sources a deny wins)",
                                e.origin.as_deref().unwrap_or_default(),
                                e.line
                            ));
                            e.action = Action::Deny;
                            e.line = line;
                            e.origin = Some(origin.as_str().into());
                        }
                    } else if let Some((Action::Allow, hand_line)) = seen.get(&(*network, None)) {
                        notes.push(format!(
                            "{file}:{line}: {key}: {network} is in deny source \"{origin}\" but allowed by hand on line {hand_line}: allowed (an entry written by hand wins)"
                        ));
                    }
                }
            }
            // A country database's entries cite their countries too; each distinct
            // citation is made once and shared.
            let plain: std::sync::Arc<str> = origin.as_str().into();
            let mut citations: foldhash::HashMap<&str, std::sync::Arc<str>> =
                foldhash::HashMap::default();
            for (i, network) in loaded.prefixes.iter().copied().enumerate() {
                if seen.contains_key(&(network, None)) {
                    continue;
                }
                let cited = match loaded.labels.get(i) {
                    Some(countries) => citations
                        .entry(countries.as_str())
                        .or_insert_with(|| format!("{origin}: {countries}").into())
                        .clone(),
                    None => plain.clone(),
                };
                seen.insert((network, None), (action, line));
                if action == Action::Allow {
                    from_allow_source.insert(network, entries.len());
                }
                entries.push(Entry {
                    action,
                    network,
                    ports: None,
                    line,
                    origin: Some(cited),
                });
            }
        }
    }
    Ok((entries, sources))
}

fn validate_name(at: &Locator<'_>, name: &Spanned<String>) -> Result<(), ConfigError> {
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(at.error(
            name.span(),
            "policy.name",
            &format!("\"{n}\" is not a valid name: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 - _ ."),
        ))
    }
}
