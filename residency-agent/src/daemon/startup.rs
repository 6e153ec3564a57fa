//! `run`'s start-up, as named steps. It refuses to run without enforcing: every step
//! that enforcement needs (cgroup v2, a bpffs for pins, the program loaded, the policy
//! written, the links attached and pinned) either succeeds or stops the agent with a
//! message naming what is missing. Everything that reports or listens is opened
//! before anything is attached: an agent that enforces but cannot say what it
//! blocked, or cannot be reloaded, is not started.

use std::{collections::BTreeMap, path::Path, path::PathBuf};

use anyhow::Context as _;
use tracing::{info, warn};

use crate::{
    config::{
        self, AgentConfig, Config, SinkKind,
        file::{Fallback, load_config_for},
    },
    control,
    events::sinks::{self, Sink},
    generations::{Applied, Generations},
    host::{BoundCgroup, attach_points},
    kernel::{self, KernelCounters, Loaded, pins},
    policy,
};

/// Reads the config. Over enforcement pinned at the default pin path, a missing
/// config is an error, not a reason to swap in the audit-only default.
pub fn read_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let default_pins = pins::maps_dir(&AgentConfig::default().pin_path);
    let fallback = if default_pins.join(residency_common::maps::ACTIVE).exists() {
        Fallback::Refused
    } else {
        Fallback::Allowed
    };
    let config = load_config_for(path, fallback).context("refusing to start")?;
    info!(config = %config.source, policies = config.policies.len(), "residency-agent {} starting", env!("CARGO_PKG_VERSION"));
    for w in config.warnings() {
        warn!("{w}");
    }
    Ok(config)
}

/// Makes the pin path usable (a bpffs, a layout this agent understands) and takes
/// the lock that makes this agent the one owner of the pinned state until it exits.
pub fn own_pins(pin_path: &Path, mount_bpffs: bool) -> anyhow::Result<pins::Owner> {
    if let Some(at) = pins::ensure_bpffs(pin_path, mount_bpffs)
        .context("refusing to start: cannot pin enforcement")?
    {
        info!(path = %at.display(), "no BPF filesystem for the pins: mounted one");
    }
    pins::check_layout(pin_path).context("refusing to start")?;
    pins::lock(pin_path, std::time::Duration::from_secs(30)).context("refusing to start")
}

/// What reports and listens, opened before anything is attached.
pub struct Outputs {
    pub sink_kinds: Vec<SinkKind>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub metrics_listener: std::net::TcpListener,
    pub access: control::Access,
}

pub fn open_outputs(config: &Config) -> anyhow::Result<Outputs> {
    let sink_kinds = sinks::selected(&config.events);
    let sinks = sinks::open(&config.events, &sink_kinds)
        .context("refusing to start: opening an event sink failed")?;
    let metrics_listener =
        std::net::TcpListener::bind(config.agent.metrics_address).with_context(|| {
            format!(
                "refusing to start: cannot listen on metrics_address {}",
                config.agent.metrics_address
            )
        })?;
    metrics_listener.set_nonblocking(true)?;
    // The socket is created after attaching (its presence says the agent serves), but
    // a path it could never take is refused now, before anything is attached.
    if let Ok(m) = std::fs::symlink_metadata(&config.agent.control_socket) {
        use std::os::unix::fs::FileTypeExt as _;
        if !m.file_type().is_socket() {
            anyhow::bail!(
                "refusing to start: control_socket {} exists and is not a socket; not replacing it",
                config.agent.control_socket.display()
            );
        }
    }
    let access = control::Access {
        group: config
            .agent
            .control_group
            .as_deref()
            .map(control::group_id)
            .transpose()
            .context("refusing to start")?,
    };
    Ok(Outputs {
        sink_kinds,
        sinks,
        metrics_listener,
        access,
    })
}

/// The program loaded and the first version of this agent's policy in force.
pub struct Enforcing {
    pub loaded: Loaded,
    pub generations: Generations,
    pub counters: KernelCounters,
    pub applied: Applied,
}

/// Loads the program (adopting pinned maps, whose policy keeps enforcing meanwhile),
/// writes the settings and swaps this config's policy in.
///
/// The packet socket guard is probed first: an agent that must not run without it
/// refuses before it writes any map. Then the verifier and writing a large version
/// each take about a second, and neither needs the other: the version is written into
/// the idle slot while the programs are loaded, and goes in force only once they have
/// loaded (otherwise it is deleted, and an adopted version stays in force).
pub fn load_and_apply(
    config: &std::sync::Arc<Config>,
    bound: &[BoundCgroup],
) -> anyhow::Result<Enforcing> {
    let maps_dir = pins::maps_dir(&config.agent.pin_path);
    let adopting = maps_dir.join(residency_common::maps::ACTIVE).exists();
    let mut loaded = kernel::open(
        &maps_dir,
        config.agent.rule_capacity,
        config.agent.table_chunks(),
    )
    .context("refusing to start: the kernel program did not load")?;
    loaded
        .load_socket_guard()
        .context("refusing to start: the kernel program did not load")?;
    loaded
        .check_socket_guard(config)
        .context("refusing to start")?;
    let mut generations =
        Generations::new(loaded.take_policy_maps()?).context("refusing to start")?;
    if adopting {
        info!(maps = %maps_dir.display(), "adopting the pinned policy maps: the policy in force keeps enforcing until this agent's is swapped in");
    }
    let (programs, prepared) = std::thread::scope(|s| {
        let programs = s.spawn(|| loaded.load_programs());
        let prepared = generations.prepare(config, bound);
        let programs = match programs.join() {
            Ok(loaded) => loaded.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!("the program loader panicked")),
        };
        (programs, prepared)
    });
    // What the kernel's BTF, parsed three times over (aya's relocations, the LSM
    // program, the layout), left freed: tens of MB the allocator would keep resident.
    crate::sys::return_free_memory();
    let prepared = prepared.context("refusing to start: writing the policy failed")?;
    // Nothing the programs already attached by an earlier agent read is changed
    // before every program has loaded: the settings, and the counters (counts adopted
    // from an earlier agent may sit under ids this agent gives to other policies, so
    // every series starts from zero, before any packet is judged under it).
    let ready = programs
        .context("refusing to start: the kernel program did not load")
        .and_then(|()| loaded.configure(config).context("refusing to start"))
        .and_then(|()| {
            let mut counters = loaded.take_counters()?;
            counters
                .reset(&generations.preview_ids(config))
                .context("refusing to start: zeroing the packet counters")?;
            Ok(counters)
        });
    let counters = match ready {
        Ok(counters) => counters,
        Err(e) => {
            generations.abandon(prepared);
            return Err(e);
        }
    };
    let applied = generations
        .commit(prepared)
        .context("refusing to start: writing the policy failed")?;
    // An earlier agent's version, swapped out: nobody waits for an answer here.
    generations.retire();
    Ok(Enforcing {
        loaded,
        generations,
        counters,
        applied,
    })
}

/// Attaches and pins as one new instance; only then retires older instances. Old and
/// new links read the same maps, so they agree on every verdict. Returns the
/// instance's directory and the attached cgroups.
pub fn attach_all(
    loaded: &mut Loaded,
    pin_path: &Path,
    bound: &[BoundCgroup],
) -> anyhow::Result<(PathBuf, BTreeMap<u64, PathBuf>)> {
    let mut attached = BTreeMap::new();
    let instance = pins::new_instance(pin_path).context("refusing to start")?;
    for point in attach_points(bound) {
        // Each cgroup's links are pinned as soon as they are attached and their
        // descriptors closed, so thousands of attach points need no more descriptors
        // than one. On error the new instance is removed (detaching what it held), and
        // whatever an earlier agent pinned keeps enforcing.
        let pinned = loaded
            .attach(&point.path)
            .map_err(anyhow::Error::from)
            .and_then(|links| {
                pins::pin_cgroup_links(&instance, point.id, links).map_err(anyhow::Error::from)
            });
        if let Err(e) = pinned {
            let _ = pins::remove_instance(&instance);
            return Err(e.context("refusing to start"));
        }
        attached.insert(point.id, point.path.clone());
    }
    let replaced = pins::remove_others(pin_path, Some(&instance))?;
    if replaced > 0 {
        info!(
            links = replaced,
            "took over from the enforcement an earlier agent left pinned"
        );
    }
    Ok((instance, attached))
}

/// Says what each policy enforces and where events go.
pub fn log_policies(
    config: &Config,
    bound: &[BoundCgroup],
    applied: &Applied,
    sink_kinds: &[SinkKind],
) {
    for (p, id) in config.policies.iter().zip(&applied.ids) {
        let c = policy::counts(p);
        let cgroups: Vec<String> = bound
            .iter()
            .filter(|b| config.policies[b.policy].name == p.name)
            .map(|b| b.path.display().to_string())
            .collect();
        info!(
            policy = %p.name,
            id,
            mode = p.mode.as_str(),
            ipv4 = c.allow_v4 + c.deny_v4,
            ipv6 = c.allow_v6 + c.deny_v6,
            cgroups = %cgroups.join(","),
            "policy {}",
            if p.mode == config::Mode::Enforce { "enforcing" } else { "auditing" }
        );
    }
    let names: Vec<&str> = sink_kinds.iter().map(|k| k.as_str()).collect();
    info!(sinks = %names.join(","), metrics = %config.agent.metrics_address, "events go to: {}", names.join(", "));
}
