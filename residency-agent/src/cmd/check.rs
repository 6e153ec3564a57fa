//! `residency-agent check`: validate a config on this host and print its summary.

use std::path::Path;

use anyhow::Context as _;

use crate::{
    cli::CheckFormat,
    config::{Config, DEFAULT_PATH},
    host::{Hierarchy, check_cgroups},
    policy,
};

/// Validates and summarises; exits non-zero with file, line and reason on an error
/// (and on a warning with `strict`).
pub fn check(
    path: Option<&Path>,
    default: bool,
    format: CheckFormat,
    strict: bool,
    verbose: bool,
) -> anyhow::Result<()> {
    let outcome = validate(path, default);
    let failed = match (&outcome, strict) {
        (Err(_), _) => true,
        (Ok(r), true) => !r.warnings.is_empty(),
        (Ok(_), false) => false,
    };
    match format {
        CheckFormat::Json => {
            let json = match &outcome {
                Ok(r) => serde_json::json!({
                    "ok": !failed,
                    "file": r.config.source,
                    "policies": r.config.policies.iter().map(|p| {
                        let c = policy::counts(p);
                        serde_json::json!({
                            "name": p.name,
                            "mode": p.mode.as_str(),
                            "cgroups": p.cgroups.iter().map(|c| &c.path).collect::<Vec<_>>(),
                            "ipv4": {"allow": c.allow_v4, "deny": c.deny_v4},
                            "ipv6": {"allow": c.allow_v6, "deny": c.deny_v6},
                            "sources": p.sources.iter().map(|s| serde_json::json!({"source": s.description, "read": s.read, "after_aggregation": s.kept, "countries": s.countries.iter().map(|(c, (r, k))| (c.clone(), serde_json::json!({"read": r, "after_aggregation": k}))).collect::<std::collections::BTreeMap<_, _>>()})).collect::<Vec<_>>(),
                        })
                    }).collect::<Vec<_>>(),
                    "notes": r.notes,
                    "warnings": r.warnings,
                    "error": serde_json::Value::Null,
                }),
                Err(e) => {
                    serde_json::json!({"ok": false, "error": format!("{e:#}"), "warnings": [], "notes": []})
                }
            };
            println!("{json:#}");
        }
        CheckFormat::Text => {
            if let Ok(r) = &outcome {
                print!("{}", policy::summary(&r.config, verbose));
                for n in &r.notes {
                    println!("note: {n}");
                }
                for w in &r.warnings {
                    println!("{}: {w}", if strict { "error" } else { "warning" });
                }
            }
        }
    }
    match outcome {
        Err(e) if format == CheckFormat::Text => Err(e),
        Err(_) => anyhow::bail!("the config is invalid (see the JSON above)"),
        Ok(r) if failed => anyhow::bail!(
            "{}: {} warning(s), and --strict makes them errors",
            r.config.source,
            r.warnings.len()
        ),
        Ok(_) => Ok(()),
    }
}

/// What `check` found of a valid config.
struct Checked {
    config: Config,
    notes: Vec<String>,
    warnings: Vec<String>,
}

fn validate(path: Option<&Path>, default: bool) -> anyhow::Result<Checked> {
    let config = match path {
        Some(p) => Config::load(p)?,
        None if Path::new(DEFAULT_PATH).exists() => Config::load(Path::new(DEFAULT_PATH))?,
        None if default => {
            // As `run`: over enforcement pinned at the default pin path, the audit-only
            // default would weaken it, so there it is refused.
            let pinned =
                crate::kernel::pins::maps_dir(&crate::config::AgentConfig::default().pin_path)
                    .join(residency_common::maps::ACTIVE);
            if pinned.exists() {
                anyhow::bail!(
                    "no config at {DEFAULT_PATH}, and enforcement is pinned at the default pin \
                     path: `run` would refuse to replace it with the embedded audit-only default"
                );
            }
            Config::embedded_default()
        }
        None => anyhow::bail!(
            "no config at {DEFAULT_PATH}: name one with --config, or pass --default to check \
             the embedded audit-only default (a CI step must not pass on a config that was \
             never shipped)"
        ),
    };
    // What `run` needs of the host beside the cgroups: the control group (refused, as
    // `run` refuses), the node name (a warning: the DaemonSet sets it where it runs).
    if let Some(g) = &config.agent.control_group {
        crate::control::group_id(g)?;
    }
    let node_name = if config.kubernetes.enabled {
        crate::kubernetes::watch::node_name(&config.kubernetes)
            .err()
            .map(|e| {
                format!(
                    "{}: {e:#}; `run` refuses to start without it",
                    config.source
                )
            })
    } else {
        None
    };
    let hierarchy = Hierarchy::discover()?;
    // The same refusals as `run` and a reload (the daemon's own function); then the
    // cgroups that do not exist yet, as notes with their lines.
    crate::daemon::prepare::validate_on_host(&config, &hierarchy)?;
    let mut notes: Vec<String> = check_cgroups(&config, &hierarchy)?
        .into_iter()
        .map(|n| format!("{n} (its policy applies as soon as it appears)"))
        .collect();
    let sizes = validate_compiled(&config)?;
    notes.extend(table_notes(&config)?);
    let warnings = config
        .warnings()
        .into_iter()
        .chain(policy::lockout::lint(&config, Some(&hierarchy.mount)))
        .chain(capacity_warnings(&config, sizes))
        .chain(node_name)
        .collect();
    Ok(Checked {
        config,
        notes,
        warnings,
    })
}

/// Compiles the config once, for the limits only the compiled form shows (port rules
/// inherited per prefix, the port rule table, the trie entries against
/// `rule_capacity`), exactly as `run` would refuse it. Returns the trie entries per
/// family.
pub fn validate_compiled(config: &Config) -> anyhow::Result<(usize, usize)> {
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    let rules = policy::compile(config, &ids, 0)
        .with_context(|| format!("{} cannot be applied", config.source))?;
    let capacity = config.agent.rule_capacity as usize;
    for (family, n) in [("IPv4", rules.v4.len()), ("IPv6", rules.v6.len())] {
        if n > capacity {
            anyhow::bail!(
                "{} cannot be applied: it needs {n} {family} trie entries and [agent] \
                 rule_capacity is {capacity}; raise rule_capacity to at least {} (a reload \
                 needs room for the old and the new version together)",
                config.source,
                2 * n
            );
        }
    }
    Ok((rules.v4.len(), rules.v6.len()))
}

/// Policies whose lookup tables would not fit in `[agent] ipv4_table_chunks` or
/// `ipv6_table_chunks`: judged by the trie alone, correct but with slower first
/// packets. A note, not a warning: it costs speed, never a verdict.
fn table_notes(config: &Config) -> anyhow::Result<Vec<String>> {
    let room = config.agent.table_chunks();
    if room.v4 == 0 && room.v6 == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    let rules = policy::Compiled::new(config, &ids, 0)
        .with_context(|| format!("{} cannot be applied", config.source))?;
    let mut notes = Vec::new();
    let mut family = |name: &str, key: &str, per_slot: u32, short: Vec<(u32, u32)>, all: u32| {
        for (id, need) in &short {
            notes.push(format!(
                "{}: policy {}: its {name} lookup tables need {need} chunks, more than \
                 [agent] {key}_table_chunks ({per_slot}) leaves for it; its first packets \
                 will be judged by the trie (correct, slower)",
                config.source, config.policies[*id as usize].name
            ));
        }
        if !short.is_empty() && u64::from(all) > crate::config::MAX_TABLE_CHUNKS {
            notes.push(format!(
                "{}: every policy's {name} lookup tables together need {all} chunks, more \
                 than the largest [agent] {key}_table_chunks ({}): some policies' first \
                 packets will be judged by their tries whatever the room",
                config.source,
                crate::config::MAX_TABLE_CHUNKS
            ));
        } else if !short.is_empty() {
            // What to do about it, and when it takes effect: the room is fixed when
            // the maps are created.
            notes.push(format!(
                "{}: every policy's {name} lookup tables together need {all} chunks: \
                 [agent] {key}_table_chunks = {all} or more fits them all (1 KiB of kernel \
                 memory per chunk, twice: one room per generation slot), taking effect when \
                 the agent creates its maps (a first start, or a start after `detach`)",
                config.source
            ));
        }
    };
    if room.v4 > 0 {
        let short = crate::generations::without_room(rules.v4(), room.v4);
        let all = if short.is_empty() {
            0
        } else {
            crate::generations::room_needed(rules.v4())
        };
        family("IPv4", "ipv4", room.v4, short, all);
    }
    if room.v6 > 0 {
        let short = crate::generations::without_room(rules.v6(), room.v6);
        let all = if short.is_empty() {
            0
        } else {
            crate::generations::room_needed(rules.v6())
        };
        family("IPv6", "ipv6", room.v6, short, all);
    }
    Ok(notes)
}

/// A version that fits the tries but not twice: a reload over one as large fails.
fn capacity_warnings(config: &Config, (v4, v6): (usize, usize)) -> Vec<String> {
    let capacity = config.agent.rule_capacity as usize;
    [("IPv4", v4), ("IPv6", v6)]
        .into_iter()
        .filter(|(_, n)| 2 * n > capacity)
        .map(|(family, n)| {
            format!(
                "{}: {n} {family} trie entries is more than half of rule_capacity ({capacity}): \
                 a reload from a version as large would not fit (both are in the tries during \
                 the swap); raise [agent] rule_capacity to at least {}",
                config.source,
                2 * n
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy whose tables of either family need more than the room left is named,
    /// with the chunks it needs and the key to raise; one that fits is not.
    #[test]
    fn policies_whose_tables_do_not_fit_are_noted_per_family() {
        // Prefixes in blocks of their own: a chunk per block and level besides the root.
        let wide_v4: Vec<String> = (0..4)
            .map(|i| format!("\"{}.{i}.7.0/24\"", 20 + i))
            .collect();
        let wide_v6: Vec<String> = (0..4).map(|i| format!("\"2a0{i}:{i}::/48\"")).collect();
        let text = |v4: u32, v6: u32| {
            format!(
                "[agent]\nipv4_table_chunks = {v4}\nipv6_table_chunks = {v6}\n\n\
                 [[policy]]\nname = \"small\"\ncgroups = [\"a\"]\nallow = [\"10.0.0.0/8\"]\n\n\
                 [[policy]]\nname = \"wide\"\ncgroups = [\"b\"]\nallow = [{}, {}]\n",
                wide_v4.join(", "),
                wide_v6.join(", ")
            )
        };
        // What each policy's tables need (no room: every policy is short of it).
        let config = Config::parse(&text(1, 1), "p.toml").unwrap();
        let rules = policy::Compiled::new(&config, &[0, 1], 0).unwrap();
        let need =
            |short: Vec<(u32, u32)>| -> Vec<u32> { short.into_iter().map(|s| s.1).collect() };
        let (n4, n6) = (
            need(crate::generations::without_room(rules.v4(), 0)),
            need(crate::generations::without_room(rules.v6(), 0)),
        );
        assert!(n4[1] > n4[0] && n6[1] > n6[0], "{n4:?} {n6:?}");
        // Room for all but the last chunk: the first policy fits, the second not.
        let room = (n4[0] + n4[1] - 1, n6[0] + n6[1] - 1);
        let config = Config::parse(&text(room.0, room.1), "p.toml").unwrap();
        let notes = table_notes(&config).unwrap();
        let all = |name: &str, key: &str, need: u32| {
            format!(
                "p.toml: every policy's {name} lookup tables together need {need} chunks: \
                 [agent] {key}_table_chunks = {need} or more fits them all (1 KiB of kernel \
                 memory per chunk, twice: one room per generation slot), taking effect when \
                 the agent creates its maps (a first start, or a start after `detach`)"
            )
        };
        assert_eq!(
            notes,
            [
                format!(
                    "p.toml: policy wide: its IPv4 lookup tables need {} chunks, more than \
                     [agent] ipv4_table_chunks ({}) leaves for it; its first packets will be \
                     judged by the trie (correct, slower)",
                    n4[1], room.0
                ),
                all("IPv4", "ipv4", n4[0] + n4[1]),
                format!(
                    "p.toml: policy wide: its IPv6 lookup tables need {} chunks, more than \
                     [agent] ipv6_table_chunks ({}) leaves for it; its first packets will be \
                     judged by the trie (correct, slower)",
                    n6[1], room.1
                ),
                all("IPv6", "ipv6", n6[0] + n6[1]),
            ]
        );
    }
}
