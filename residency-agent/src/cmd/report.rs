//! `residency-agent report`: evidence an auditor can file. One self-contained JSON
//! object (or its readable text form) saying what this host enforces and that the
//! kernel enforces exactly that: host, kernel, agent version and time; the config's
//! SHA-256 and each source file's; per policy its mode, cgroups (and, with
//! `[kubernetes]` and an agent running, the pods it selected), prefix counts,
//! packets counted since the agent started and, while an agent runs, its most blocked
//! destinations (masked as its events are); the result of `verify`; and the reload
//! history with who asked for each reload.
//!
//! Stable and diffable: keys sorted, lists sorted by name, the one timestamp of the
//! report itself at the top (the reload history carries the time of each reload, its
//! content).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};
use residency_common::{Verdict, counter_index, maps, slot_of};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{
    cmd::verify,
    config::Config,
    control::{Request, client},
    kernel::{names::PolicyNames, pins},
    policy,
};

/// Prints the report (JSON with `json`) of the config at `config_path`; `sample` as
/// for `verify`. Fails (after printing) when verification found a difference.
pub fn report(config_path: Option<&Path>, json: bool, sample: usize) -> anyhow::Result<()> {
    let (config, verified) = verify::check(config_path, sample)?;
    let agent = client::call(&config.agent.control_socket, &Request::Status)
        .ok()
        .filter(|r| r.ok)
        .map(|r| r.data);
    let packets = pinned_packets(&config).unwrap_or_default();
    let mut policies = Vec::new();
    let mut sources = Vec::new();
    let mut names: Vec<&crate::config::PolicyConfig> = config.policies.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for p in names {
        let c = policy::counts(p);
        let mut cgroups: Vec<String> = p.cgroups.iter().map(|c| c.path.clone()).collect();
        cgroups.sort();
        let counted = packets.get(&p.name).copied().unwrap_or_default();
        // Pods selected for it, as the running agent placed them (with `[kubernetes]`).
        let mut pods: Vec<String> = agent
            .as_ref()
            .and_then(|a| a["policies"].as_array().cloned())
            .into_iter()
            .flatten()
            .filter(|q| q["name"] == p.name.as_str())
            .flat_map(|q| q["pods"].as_array().cloned().unwrap_or_default())
            .filter_map(|pod| pod.as_str().map(str::to_owned))
            .collect();
        pods.sort();
        let top = agent
            .as_ref()
            .and_then(|a| a["top_blocked"].get(&p.name).cloned())
            .unwrap_or_else(|| json!([]));
        policies.push(json!({
            "name": p.name,
            "mode": p.mode.as_str(),
            "cgroups": cgroups,
            "pods": pods,
            "prefixes": {"ipv4": c.allow_v4 + c.deny_v4, "ipv6": c.allow_v6 + c.deny_v6},
            "packets_since_start": {"allowed": counted[0], "blocked": counted[1], "audited": counted[2]},
            "top_blocked": top,
        }));
        for src in &p.sources {
            sources.push(json!({
                "policy": p.name,
                "source": src.description,
                "sha256": sha256_of(&src.path).unwrap_or_else(|e| format!("unreadable: {e}")),
            }));
        }
    }
    let report = json!({
        "report": {
            "generated": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "host": crate::events::format::hostname(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "agent_version": env!("CARGO_PKG_VERSION"),
        },
        "config": {
            "path": config.source,
            "sha256": sha256_of(Path::new(&config.source)).unwrap_or_else(|e| format!("unreadable: {e}")),
        },
        "sources": sources,
        "policies": policies,
        "verification": {
            "result": verified.summary(),
            "policies": verified.policies,
            "prefixes": verified.prefixes,
            "bindings": verified.bindings,
            "links": verified.links,
            "pods": verified.pods,
            "unchecked": verified.unchecked,
            "notes": verified.notes,
            "probes": verified.probes,
            "mismatches": verified.mismatches,
            "unprobed": verified.unprobed,
        },
        "agent": match &agent {
            Some(a) => json!({
                "running": true,
                "generation": a["generation"],
                "reloads": a["reloads"],
                "reload_history": a["reload_history"],
            }),
            None => json!({"running": false}),
        },
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    if !verified.mismatches.is_empty() {
        anyhow::bail!(
            "the kernel state differs from {} in {} places",
            config.source,
            verified.mismatches.len()
        );
    }
    Ok(())
}

/// The readable form of a report.
fn text(r: &Value) -> String {
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut out = format!(
        "residency enforcement report\n  generated {} on {} (kernel {}), agent {}\n  config {} sha256 {}\n",
        s(&r["report"]["generated"]),
        s(&r["report"]["host"]),
        s(&r["report"]["kernel"]),
        s(&r["report"]["agent_version"]),
        s(&r["config"]["path"]),
        s(&r["config"]["sha256"]),
    );
    for src in r["sources"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  source of {}: {} sha256 {}\n",
            s(&src["policy"]),
            s(&src["source"]),
            s(&src["sha256"])
        ));
    }
    out.push_str(&format!(
        "verification: {}\n",
        s(&r["verification"]["result"])
    ));
    for m in r["verification"]["mismatches"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!("  mismatch: {}\n", s(m)));
    }
    for (key, label) in [("unchecked", "not checked"), ("notes", "note")] {
        for m in r["verification"][key].as_array().into_iter().flatten() {
            out.push_str(&format!("  {label}: {}\n", s(m)));
        }
    }
    for p in r["policies"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "policy {} mode={} ipv4={} ipv6={} allowed={} blocked={} audited={}\n",
            s(&p["name"]),
            s(&p["mode"]),
            p["prefixes"]["ipv4"],
            p["prefixes"]["ipv6"],
            p["packets_since_start"]["allowed"],
            p["packets_since_start"]["blocked"],
            p["packets_since_start"]["audited"],
        ));
        for c in p["cgroups"].as_array().into_iter().flatten() {
            out.push_str(&format!("  cgroup {}\n", s(c)));
        }
        for pod in p["pods"].as_array().into_iter().flatten() {
            out.push_str(&format!("  pod {}\n", s(pod)));
        }
        for t in p["top_blocked"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  blocked {} x{}\n",
                s(&t["destination"]),
                t["count"]
            ));
        }
    }
    if r["agent"]["running"] == true {
        out.push_str(&format!(
            "agent: running, generation {}\n",
            r["agent"]["generation"]
        ));
        for h in r["agent"]["reload_history"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "  reload at {} by {}: generation {}, {}\n",
                h["time"],
                s(&h["by"]),
                h["generation"],
                s(&h["summary"])
            ));
        }
    } else {
        out.push_str("agent: not running (the pinned program enforces alone)\n");
    }
    out
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Packets counted since the agent started, per policy name: allowed, blocked,
/// audited (both families), read from the pinned per-CPU counters.
fn pinned_packets(config: &Config) -> anyhow::Result<BTreeMap<String, [u64; 3]>> {
    let dir: PathBuf = pins::maps_dir(&config.agent.pin_path);
    let open =
        |name: &str| MapData::from_pin(dir.join(name)).with_context(|| format!("opening {name}"));
    let active: aya::maps::Array<MapData, u32> =
        aya::maps::Array::try_from(Map::from_map_data(open(maps::ACTIVE)?)?)?;
    let slot = slot_of(active.get(&0, 0)?);
    let names = PolicyNames::open(&dir)?.read(slot)?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::from_map_data(open(maps::COUNTERS)?)?)?;
    let mut out = BTreeMap::new();
    for (id, name) in names {
        let mut sums = [0u64; 3];
        for (i, verdict) in [Verdict::Allowed, Verdict::Blocked, Verdict::Audited]
            .into_iter()
            .enumerate()
        {
            for family in 0..2 {
                if let Ok(values) = counters.get(&counter_index(id, verdict, family), 0) {
                    sums[i] += values.iter().sum::<u64>();
                }
            }
        }
        out.insert(name, sums);
    }
    Ok(out)
}
