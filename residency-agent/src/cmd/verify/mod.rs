//! `residency-agent verify`: does the kernel hold what the config on disk means?
//!
//! Reads the pinned state of the version in force, with or without a running agent,
//! and compares it exactly with what the config compiles to: every rule trie entry of
//! every policy (prefix, action, deciding rule, and its protocol/port rules resolved
//! from the port table), every cgroup binding (policy, mode, flags), every interface
//! a policy names, and the lookup tables of both families chunk by chunk; then checks that every
//! configured cgroup that exists has each program attached through a pinned link the
//! kernel still holds. Each difference is one line a user can act on; any difference
//! makes the exit status non-zero.
//!
//! Policies are matched by name through the pinned names map the agent writes with
//! each version (`kernel::names`): ids are the agent's own. Then the live egress
//! program itself is driven with packets made from each policy (`probe`), and every
//! verdict compared with the offline one.

mod bindings;
mod interfaces;
mod links;
mod pods;
mod probe;
mod rules;
mod settings;
mod tables;

use std::{collections::BTreeMap, net::IpAddr, os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, bail};
use aya::maps::{Array, HashMap, Map, MapData};
use residency_common::{
    Binding, BindingKey, InterfaceKey, PROGRAM_EGRESS, PortRule, maps, slot_of,
};

use crate::{
    config::file::{Fallback, load_config_for},
    daemon::prepare::validate_on_host,
    generations::binding_of,
    host::{Hierarchy, attach_points},
    kernel::{names::PolicyNames, pins, short_name},
    policy,
    sys::bpf,
};

/// What was compared, and every difference found.
#[derive(Default, serde::Serialize)]
pub struct Report {
    pub policies: usize,
    pub prefixes: usize,
    pub bindings: usize,
    pub links: usize,
    /// Pods whose bindings were checked (with `[kubernetes]` and an agent answering).
    pub pods: usize,
    pub probes: usize,
    /// Lookup table chunks compared (both families).
    pub table_chunks: usize,
    /// Policies whose verdicts could not be probed, and why.
    pub unprobed: Vec<String>,
    /// Kernel state that could not be checked, and why.
    pub unchecked: Vec<String>,
    /// What costs speed, never a verdict (lookup tables left unread): reported, but
    /// no difference from the config.
    pub notes: Vec<String>,
    pub mismatches: Vec<String>,
}

pub fn verify(config_path: Option<&Path>, json: bool, sample: usize) -> anyhow::Result<()> {
    let (config, report) = check(config_path, sample)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for m in &report.mismatches {
            println!("mismatch: {m}");
        }
        for u in &report.unprobed {
            println!("not probed: {u}");
        }
        for u in &report.unchecked {
            println!("not checked: {u}");
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        println!("{}", report.summary());
    }
    if !report.mismatches.is_empty() {
        bail!(
            "the kernel state differs from {} in {} places",
            config.source,
            report.mismatches.len()
        );
    }
    Ok(())
}

impl Report {
    /// The one line that sums the verification up.
    pub fn summary(&self) -> String {
        format!(
            "verified {} policies, {} prefixes, {} cgroup bindings, {} links, {} probes: {}",
            self.policies,
            self.prefixes,
            self.bindings,
            self.links,
            self.probes,
            if self.mismatches.is_empty() {
                "kernel state = config".to_owned()
            } else {
                format!("{} mismatches", self.mismatches.len())
            }
        )
    }
}

/// Verifies the kernel state against the config at `config_path`, probing at most
/// `sample` prefixes per policy; the config read and what was found.
pub fn check(
    config_path: Option<&Path>,
    sample: usize,
) -> anyhow::Result<(crate::config::Config, Report)> {
    let config = load_config_for(config_path, Fallback::Refused)?;
    let hierarchy = Hierarchy::discover()?;
    let (mut bound, _missing) = validate_on_host(&config, &hierarchy)?;
    let pin_path = &config.agent.pin_path;
    let maps_dir = pins::maps_dir(pin_path);
    if !maps_dir.exists() {
        bail!(
            "nothing is pinned under {}: no policy is in force (start the agent)",
            pin_path.display()
        );
    }
    let open = |name: &str| -> anyhow::Result<MapData> {
        let path = maps_dir.join(name);
        MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
    };
    let active: Array<MapData, u32> = Array::try_from(Map::from_map_data(open(maps::ACTIVE)?)?)?;
    let epoch = active.get(&0, 0)?;
    let slot = slot_of(epoch);
    let names = PolicyNames::open(&maps_dir)
        .with_context(|| format!("opening the policy names under {}", maps_dir.display()))?
        .read(slot)?;
    let mut report = Report::default();
    let scope = pods::place(&config, &hierarchy, &mut bound, &mut report);

    // Which policy is which id in the version in force.
    let id_of: BTreeMap<&str, u32> = names.iter().map(|(id, n)| (n.as_str(), *id)).collect();
    let mut ids = Vec::new();
    let mut found = config.clone();
    found.policies.clear();
    for p in &config.policies {
        match id_of.get(p.name.as_str()) {
            Some(id) => {
                ids.push(*id);
                found.policies.push(p.clone());
            }
            None => report.mismatches.push(format!(
                "policy \"{}\": in the config, not in the kernel (the config on disk is newer than the version in force: reload)",
                p.name
            )),
        }
    }
    for name in names.values() {
        if !config.policies.iter().any(|p| &p.name == name) {
            report.mismatches.push(format!(
                "policy \"{name}\": in force in the kernel, not in the config"
            ));
        }
    }
    report.policies = found.policies.len();
    let name_of = |id: u32| {
        names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("policy-{id}"))
    };

    // The rule tries and the port table.
    let rules = policy::compile(&found, &ids, slot)?;
    let want = rules::compare(&open, &rules, slot, (&found, &ids), &name_of, &mut report)?;

    // The lookup tables, which judge before the trie.
    let at = (slot, &name_of as &dyn Fn(u32) -> String);
    tables::compare_pinned(
        &open,
        (maps::TABLE_V4, maps::TABLE_ROOTS),
        || rules.v4.iter().copied(),
        at,
        &mut report,
    )?;
    tables::compare_pinned(
        &open,
        (maps::TABLE_V6, maps::TABLE_ROOTS_V6),
        || rules.v6.iter().copied(),
        at,
        &mut report,
    )?;
    tables::compare_epoch(&open, epoch, &mut report)?;

    // Bindings of the configured cgroups that exist.
    let mut bindings: HashMap<MapData, BindingKey, Binding> =
        HashMap::try_from(Map::from_map_data(open(maps::BINDINGS)?)?)?;
    bindings::compare(
        &bindings,
        &bound,
        &config,
        (&found, &ids),
        slot,
        &hierarchy.mount,
        &name_of,
        &scope,
        &mut report,
    )?;

    // Interfaces the policies name.
    let interfaces: HashMap<MapData, InterfaceKey, u8> =
        HashMap::try_from(Map::from_map_data(open(maps::INTERFACES)?)?)?;
    let named: Vec<(u32, &[String])> = found
        .policies
        .iter()
        .zip(&ids)
        .map(|(p, id)| (*id, p.interfaces.as_slice()))
        .collect();
    interfaces::compare(&interfaces, &named, slot, &name_of, &mut report)?;

    // The settings the programs read.
    let kernel_settings = Array::try_from(Map::from_map_data(open(maps::SETTINGS)?)?)?;
    settings::compare(&kernel_settings, &config, &mut report);

    // Every attach point has every program, through a link the kernel still holds.
    let instances = pins::instances(pin_path)?;
    links::check(&attach_points(&bound), &instances, &mut report);

    // The live program's verdicts, policy by policy, from a cgroup bound to each.
    let egress = attach_points(&bound).into_iter().find_map(|point| {
        let file = format!("link-{}-{}", point.id, short_name(PROGRAM_EGRESS));
        let path = instances
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.exists())?;
        let info = bpf::obj_get(&path)
            .and_then(|fd| bpf::cgroup_link_info(fd.as_fd()))
            .ok()?;
        bpf::prog_by_id(info.prog_id).ok()
    });
    let index = policy::decide::Index::new(&rules, slot);
    let joined = match probe::Joined::private(&hierarchy.mount) {
        Ok(j) => Some(j),
        Err(e) => {
            // A read-only cgroupfs (a container's), for one.
            report.unprobed.push(format!(
                "every policy: cannot run from a cgroup of its own: {e:#}"
            ));
            None
        }
    };
    for (p, id) in found.policies.iter().zip(&ids) {
        let Some(prog) = egress.as_ref() else {
            report.unprobed.push(format!(
                "policy \"{}\": no egress program is attached",
                p.name
            ));
            continue;
        };
        let Some(joined) = joined.as_ref() else {
            continue;
        };
        let prefixes: Vec<(IpAddr, u8, Vec<PortRule>)> = want
            .iter()
            .filter(|((pid, _, _), _)| pid == id)
            .map(|((_, addr, len), e)| (*addr, *len, e.ports.clone()))
            .collect();
        // This process's cgroup bound to the policy for the time of its probes.
        let key = BindingKey {
            cgroup_id: joined.id,
            slot,
            _pad: 0,
        };
        let index_of = found
            .policies
            .iter()
            .position(|f| f.name == p.name)
            .expect("found");
        bindings
            .insert(key, binding_of(&found, &ids, index_of), 0)
            .context("binding verify's own cgroup for its probes")?;
        let probed = probe::probe(prog.as_fd(), &index, *id, &p.name, &prefixes, sample);
        let _ = bindings.remove(&key);
        let probed = probed?;
        report.probes += probed.probes;
        report.mismatches.extend(probed.mismatches);
    }

    // A version swapped in meanwhile makes the comparison meaningless, not wrong.
    if active.get(&0, 0)? != epoch {
        bail!("{CHANGED}; run verify again");
    }
    Ok((config, report))
}

/// The error of a verification that a policy change overtook.
pub const CHANGED: &str = "the version in force changed during verification";
