//! `residency-agent status` without an agent: the pinned program keeps enforcing when
//! no agent runs (after a crash, between a stop and a start), so `status` says what
//! is pinned — which cgroups are attached and with which programs — read from the
//! pin path, and says that no agent answers.

use std::{collections::BTreeMap, path::Path};

use anyhow::bail;

use crate::{host::Hierarchy, kernel::pins, sys::handle::cgroup_path};

/// Prints the pinned state under `pin_path` (JSON with `json`); fails when nothing
/// is pinned there (then nothing enforces).
pub fn status(
    pin_path: &Path,
    socket: &Path,
    why: &anyhow::Error,
    json: bool,
) -> anyhow::Result<()> {
    let instances = pins::instances(pin_path)?;
    let mut cgroups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for dir in &instances {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.strip_prefix("link-").unwrap_or("").splitn(2, '-');
            if let (Some(Ok(id)), Some(program)) =
                (parts.next().map(str::parse::<u64>), parts.next())
            {
                cgroups.entry(id).or_default().push(program.to_owned());
            }
        }
    }
    if cgroups.is_empty() {
        bail!(
            "no agent answers at {} ({why:#}), and nothing is pinned under {}: nothing enforces",
            socket.display(),
            pin_path.display()
        );
    }
    let mount = Hierarchy::discover().ok().map(|h| h.mount);
    let path_of = |id: u64| mount.as_deref().and_then(|m| cgroup_path(m, id));
    if json {
        let list: Vec<_> = cgroups
            .iter()
            .map(|(id, programs)| {
                serde_json::json!({"cgroup_id": id, "cgroup": path_of(*id), "programs": programs})
            })
            .collect();
        let v = serde_json::json!({
            "agent": false,
            "pin_path": pin_path.display().to_string(),
            "instances": instances.len(),
            "attached": list,
        });
        println!("{v:#}");
        return Ok(());
    }
    println!(
        "no agent answers at {} ({why:#}); the pinned program keeps enforcing without it",
        socket.display()
    );
    println!(
        "pinned under {}: {} link instance(s), {} cgroup(s) attached",
        pin_path.display(),
        instances.len(),
        cgroups.len()
    );
    for (id, programs) in &cgroups {
        println!(
            "  cgroup {} (id {id}): {}",
            path_of(*id).unwrap_or_else(|| "(gone)".to_owned()),
            programs.join(", ")
        );
    }
    println!("start the agent to report blocks again (`residency-agent run`)");
    Ok(())
}
