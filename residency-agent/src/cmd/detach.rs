//! `residency-agent detach`: remove every pinned link instance and the pinned maps —
//! the one way enforcement ends. Because it ends enforcement for every workload
//! under the attached cgroups, it says which and asks first when processes run there
//! (without a terminal it refuses unless `--yes`), and leaves a journal entry of its
//! own (`MESSAGE_ID` [`MESSAGE_ID_DETACH`]) saying who removed what.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    path::Path,
};

use anyhow::bail;

use crate::{config::file::load_config, host::Hierarchy, kernel::pins, sys::handle::cgroup_path};

/// `MESSAGE_ID` of the journal entry a detach leaves (`journalctl MESSAGE_ID=...`).
pub const MESSAGE_ID_DETACH: &str = "7f2c5e9a1b3d4c8e9f0a6b2d4e8c1a37";

pub fn detach(path: Option<&Path>, yes: bool) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let pin_path = &config.agent.pin_path;
    if pins::instances(pin_path)?.is_empty() && !pins::maps_dir(pin_path).exists() {
        println!("nothing to detach under {}", pin_path.display());
        return Ok(());
    }
    // The attached cgroups that have processes in them, or below them.
    let mount = Hierarchy::discover().ok().map(|h| h.mount);
    let mut busy = Vec::new();
    for id in pins::attached_cgroup_ids(pin_path)? {
        // A cgroup this command cannot see (no cgroup2 mount, no CAP_DAC_READ_SEARCH,
        // another cgroup namespace) may well hold processes: ask about it too.
        let Some(dir) = mount.as_deref().and_then(|m| cgroup_path(m, id)) else {
            busy.push((format!("cgroup id {id} (not resolvable here)"), 0));
            continue;
        };
        let n = processes_below(Path::new(&dir));
        if n > 0 {
            busy.push((dir, n));
        }
    }
    if !busy.is_empty() && !yes {
        let list: Vec<String> = busy
            .iter()
            .map(|(d, n)| match n {
                0 => format!("  {d}"),
                n => format!("  {d} ({n} process(es))"),
            })
            .collect();
        let what = format!(
            "detaching removes enforcement from cgroups with processes in them:\n{}",
            list.join("\n")
        );
        if !std::io::stdin().is_terminal() {
            bail!("{what}\nrefusing without --yes (no terminal to ask)");
        }
        print!("{what}\nRemove enforcement? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not detached");
        }
    }
    let (links, instances) = pins::remove_all(pin_path)?;
    let text = format!(
        "detached {links} cgroup link(s) and removed {instances} pinned instance(s) under {}",
        pin_path.display()
    );
    // The record first: a reader of the output that went away must not cost it.
    record(&text, pin_path, links, &busy);
    println!("{text}");
    Ok(())
}

/// Processes in `dir` and every cgroup below it.
fn processes_below(dir: &Path) -> usize {
    let own = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let below: usize = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| processes_below(&e.path()))
        .sum();
    own + below
}

/// The journal entry of a detach: who, what, and which busy cgroups lost enforcement.
/// Best effort: no journald, no entry (the command's output says the same).
fn record(text: &str, pin_path: &Path, links: usize, busy: &[(String, usize)]) {
    use libsystemd::logging::{Priority, journal_send};
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let fields = vec![
        ("SYSLOG_IDENTIFIER", "residency-agent".to_owned()),
        ("MESSAGE_ID", MESSAGE_ID_DETACH.to_owned()),
        ("RESIDENCY_PIN_PATH", pin_path.display().to_string()),
        ("RESIDENCY_DETACHED_LINKS", links.to_string()),
        ("RESIDENCY_DETACHED_BY_UID", uid.to_string()),
        (
            "RESIDENCY_BUSY_CGROUPS",
            busy.iter()
                .map(|(d, _)| d.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    let _ = journal_send(Priority::Warning, text, fields.into_iter());
}
