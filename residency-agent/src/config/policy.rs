//! One `[[policy]]`: its name, mode, cgroups and entries, validated in named steps
//! (name, cgroups, hand-written entries, IP-range sources: [`super::sources::merge`]).
//! Every error points at the key that caused it.

use std::collections::HashMap;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

use super::sources::merge::SourceSummary;
use super::{
    ConfigError,
    entry::{Action, Entry, display_entry, parse_entry},
    kubernetes::{PodSelection, parse_pod_selection},
    lift::Lifted,
    locate::Locator,
    raw::RawPolicy,
    taken::Taken,
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
    /// What the entries of the sources cite ([`PolicyConfig::origin_of`]).
    pub origins: Vec<String>,
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

impl PolicyConfig {
    /// Where entry `e` of this policy came from, for an entry of an IP-range source.
    pub fn origin_of(&self, e: &Entry) -> Option<&str> {
        e.origin
            .and_then(|id| self.origins.get(id.index()))
            .map(String::as_str)
    }
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

/// Validates one `[[policy]]`; `file` names the config (sources are relative to it).
pub(crate) fn parse_policy(
    at: &Locator<'_>,
    lifted: &Lifted,
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
    let listed = [&p.allow, &p.deny]
        .iter()
        .filter_map(|l| l.as_ref())
        .map(|l| {
            lifted
                .list(l.span().start)
                .map_or(l.get_ref().len(), <[_]>::len)
        })
        .sum();
    let mut taken = Taken::with_capacity(listed);
    let entries = parse_entries(
        at,
        &key,
        &mut taken,
        [
            (Action::Allow, items(at, lifted, p.allow)),
            (Action::Deny, items(at, lifted, p.deny)),
        ],
    )?;
    let mut notes = Vec::new();
    let super::sources::merge::Merged {
        entries,
        sources,
        origins,
    } = super::sources::merge::add_sources(
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
        origins,
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

/// The items of an `allow` or `deny` list: where each is, and its text.
enum Items<'t> {
    /// Read where they are (`super::lift`): where each starts in `text`.
    Lifted(&'t str, &'t [u32]),
    /// Read by toml.
    Read(Vec<Spanned<String>>),
}

impl Items<'_> {
    fn len(&self) -> usize {
        match self {
            Items::Lifted(_, spans) => spans.len(),
            Items::Read(list) => list.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (std::ops::Range<usize>, &str)> {
        let (lifted, read) = match self {
            Items::Lifted(text, spans) => (Some((*text, *spans)), None),
            Items::Read(list) => (None, Some(list)),
        };
        let lifted = lifted
            .into_iter()
            .flat_map(|(text, starts)| starts.iter().map(move |s| super::lift::item(text, *s)));
        let read = read
            .into_iter()
            .flatten()
            .map(|item| (item.span(), item.get_ref().as_str()));
        lifted.chain(read)
    }
}

/// The items of a list as toml gave it: lifted ones by its span.
fn items<'t>(
    at: &Locator<'t>,
    lifted: &'t Lifted,
    list: Option<Spanned<Vec<Spanned<String>>>>,
) -> Items<'t> {
    match list {
        None => Items::Read(Vec::new()),
        Some(list) => match lifted.list(list.span().start) {
            Some(spans) => Items::Lifted(at.text(), spans),
            None => Items::Read(list.into_inner()),
        },
    }
}

/// `allow` then `deny`, in file order: no entry twice, none both allowed and denied,
/// at most as many protocol/port entries per prefix as the kernel walks.
fn parse_entries<'t>(
    at: &Locator<'_>,
    key: &str,
    seen: &mut Taken,
    lists: [(Action, Items<'t>); 2],
) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::with_capacity(lists.iter().map(|(_, l)| l.len()).sum());
    // Protocol/port entries per prefix, bounded by what the kernel walks.
    let mut port_entries: HashMap<IpNetwork, usize> = HashMap::new();
    for (action, list) in lists {
        let entry_key = format!("{key}.{}", action.as_str());
        let mut cursor = 0;
        for (span, text) in list.iter() {
            let (network, ports) =
                parse_entry(text).map_err(|reason| at.error(span.clone(), &entry_key, &reason))?;
            let line = at.line_from(&mut cursor, span.start);
            entries.push(Entry {
                action,
                network,
                ports,
                line,
                origin: None,
            });
            if let Some(prev) = seen.take(&entries, entries.len() - 1) {
                let (prev, prev_line) = (entries[prev].action, entries[prev].line);
                let shown = display_entry(network, ports);
                let reason = if prev == action {
                    format!("{shown} is listed twice (also on line {prev_line})")
                } else {
                    format!(
                        "{shown} is both allowed and denied (the {} entry is on line {prev_line})",
                        prev.as_str()
                    )
                };
                return Err(at.error(span, &entry_key, &reason));
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
                    span,
                    &entry_key,
                    &format!(
                        "{network} has more than {} protocol/port entries; merge ranges",
                        residency_common::MAX_PORT_RULES_PER_PREFIX
                    ),
                ));
            }
        }
    }
    Ok(entries)
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
