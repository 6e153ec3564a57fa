//! Bindings: every configured cgroup that exists is bound, in the slot in force, to
//! its policy with the mode and flags the config gives (pods as the agent placed
//! them, see [`super::pods`]); and nothing else is bound.

use std::{collections::BTreeSet, path::Path};

use aya::maps::{HashMap, MapData};
use residency_common::{Binding, BindingKey, MODE_AUDIT, MODE_ENFORCE};

use super::{Report, pods::Scope};
use crate::{config::Config, generations::binding_of, host::BoundCgroup};

/// Compares the bindings map with `bound` (the config's cgroups on this host);
/// `found` is the config's policies in force with their ids.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    bindings: &HashMap<MapData, BindingKey, Binding>,
    bound: &[BoundCgroup],
    config: &Config,
    (found, ids): (&Config, &[u32]),
    slot: u32,
    mount: &Path,
    name_of: &dyn Fn(u32) -> String,
    scope: &Scope,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut bound_ids = BTreeSet::new();
    for b in bound {
        let p = &config.policies[b.policy];
        let Some(index) = found.policies.iter().position(|f| f.name == p.name) else {
            continue;
        };
        bound_ids.insert(b.id);
        report.bindings += 1;
        let key = BindingKey {
            cgroup_id: b.id,
            slot,
            _pad: 0,
        };
        let want = binding_of(found, ids, index);
        match bindings.get(&key, 0) {
            Err(_) => report.mismatches.push(format!(
                "cgroup {}: bound to policy \"{}\" in the config, bound to nothing in the kernel",
                b.path.display(),
                p.name
            )),
            Ok(have) if have != want => report.mismatches.push(format!(
                "cgroup {}: the kernel binds it to policy \"{}\" ({} mode, flags {:#x}), the config to \"{}\" ({} mode, flags {:#x})",
                b.path.display(),
                name_of(have.policy),
                mode_name(have.mode),
                have.flags,
                p.name,
                mode_name(want.mode),
                want.flags
            )),
            Ok(_) => {}
        }
    }
    let mut unchecked = 0;
    for k in bindings.keys() {
        let k = k?;
        if k.slot != slot || bound_ids.contains(&k.cgroup_id) {
            continue;
        }
        let path = crate::sys::handle::cgroup_path(mount, k.cgroup_id);
        let path = path.as_deref().unwrap_or_default();
        // Another `verify`'s own cgroup, bound for its probes, is not the config's.
        if path.contains("/residency-verify-") {
            continue;
        }
        if let Scope::BelowPodRoot(root) = scope
            && Path::new(path).starts_with(root)
        {
            unchecked += 1;
            continue;
        }
        let have = bindings.get(&k, 0)?;
        let at = if path.is_empty() {
            format!("cgroup id {}", k.cgroup_id)
        } else {
            format!("cgroup {path}")
        };
        report.mismatches.push(format!(
            "{at}: bound to policy \"{}\" in the kernel, to nothing in the config{}",
            name_of(have.policy),
            if config.kubernetes.enabled {
                " or the agent's pods"
            } else {
                ""
            }
        ));
    }
    if unchecked > 0 {
        report.unchecked.push(format!(
            "{unchecked} bindings below the pod root: no agent answered to say which pods it selected"
        ));
    }
    Ok(())
}

fn mode_name(mode: u8) -> &'static str {
    match mode {
        MODE_ENFORCE => "enforce",
        MODE_AUDIT => "audit",
        _ => "unknown",
    }
}
