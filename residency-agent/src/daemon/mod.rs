//! `residency-agent run`: the daemon — named start-up steps ([`startup`]), the main
//! loop ([`main_loop`]) and a shutdown report ([`shutdown`]); between requests, its
//! state ([`Daemon`]) is kept in step with the host by [`rescan`] and [`links`], and
//! changed by [`reload`]; [`status`] renders it.
//!
//! Shutdown leaves the pinned program enforcing (fail closed); only `detach` removes
//! it. A reload (control socket or SIGHUP) validates the whole new config first and
//! swaps it in atomically (`generations`); a bad one is rejected and the policy in
//! force stays.

mod links;
mod main_loop;
mod pin_mount;
pub mod prepare;
pub mod reload;
pub mod rescan;
mod seen;
pub mod self_verify;
mod shutdown;
mod sources;
pub mod startup;
pub mod status;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
    time::Instant,
};

use anyhow::Context as _;
use tracing::warn;

use crate::{
    generations::Generations,
    host::{BoundCgroup, DirWatch, Hierarchy, MissingCgroup, PathCache},
    kernel::Loaded,
    kubernetes::{self, ClusterState, Node},
    metrics::{Metrics, Telemetry},
    policy::Versioned,
};

/// The daemon's state between requests.
pub(crate) struct Daemon {
    config_path: Option<PathBuf>,
    hierarchy: Hierarchy,
    loaded: Loaded,
    generations: Generations,
    instance: PathBuf,
    /// Attached cgroup id -> path, for the links pinned in `instance`.
    attached: BTreeMap<u64, PathBuf>,
    bound: Vec<BoundCgroup>,
    missing: Vec<MissingCgroup>,
    watch: DirWatch,
    /// Watches the config file's directory; the digest of the file's content when
    /// last applied (a digest, not the content: a million-prefix file is 20 MB).
    config_watch: DirWatch,
    config_seen: Option<seen::Seen>,
    /// The source files of the version in force, watched through `config_watch`.
    source_files: sources::SourceFiles,
    versioned: Arc<RwLock<Versioned>>,
    telemetry: Arc<Telemetry>,
    metrics: Arc<Metrics>,
    started: Instant,
    last_reload: String,
    /// The last reloads, oldest first.
    reload_history: Vec<reload::ReloadRecord>,
    /// With `[kubernetes]` enabled: this node's pods, kept by the API watch.
    node: Option<Arc<Node>>,
    /// The lock that makes this agent the owner of the pinned state, and its hold on
    /// the bpffs the pins are on.
    owner: crate::kernel::pins::Owner,
    pin_path: PathBuf,
    /// Whether `[agent] mount_bpffs` lets the agent mount a bpffs to pin again.
    mount_bpffs: bool,
    /// A bind or attach of the last rescan failed: the next tick rescans.
    retry_pending: bool,
}

impl Daemon {
    /// The pods known now (none without `[kubernetes]`).
    fn cluster_state(&self) -> ClusterState {
        self.node
            .as_ref()
            .map(|n| n.state.read().expect("lock").clone())
            .unwrap_or_default()
    }
}

/// `run`: the daemon, until SIGTERM, SIGINT or the removal of its pins.
pub fn run(path: Option<&Path>) -> anyhow::Result<()> {
    crate::sys::fs::ignore_lease_breaks();
    let config = startup::read_config(path)?;
    let hierarchy = Hierarchy::discover().context("refusing to start without enforcement")?;
    // The node name is needed before anything is enforced: without it the agent
    // would bind the default policy and never learn a pod.
    let node_name = if config.kubernetes.enabled {
        Some(kubernetes::watch::node_name(&config.kubernetes).context("refusing to start")?)
    } else {
        None
    };
    let prepare::Prepared {
        config,
        bound,
        missing,
    } = prepare::prepare(config, &hierarchy, &ClusterState::default())
        .context("refusing to start")?;
    // Shared from here on, never copied: a million-prefix config is 70 MB.
    let config = Arc::new(config);
    let node = node_name.as_ref().map(|_| Node::new());
    let pin_path = config.agent.pin_path.clone();
    // Held until the process exits: one agent owns the pinned state at a time.
    let owner = startup::own_pins(&pin_path, config.agent.mount_bpffs)?;
    let outputs = startup::open_outputs(&config)?;
    let startup::Enforcing {
        mut loaded,
        generations,
        counters,
        applied,
    } = startup::load_and_apply(&config, &bound)?;
    let (instance, attached) = startup::attach_all(&mut loaded, &pin_path, &bound)?;
    startup::log_policies(&config, &bound, &applied, &outputs.sink_kinds);

    let ring = loaded.take_events()?;
    let (local_maps, netns_asks) = loaded.take_local_maps()?;
    if let Some(why) = &loaded.source_check_missing {
        warn!(
            "source check off: {why}; in namespaces that let sockets bind anywhere \
             (ip_nonlocal_bind), sources are not compared with the namespace's addresses"
        );
    }
    let (telemetry, versioned, metrics) = shared_state(
        config.clone(),
        &applied,
        counters,
        &loaded,
        bound.len(),
        &outputs.sink_kinds,
        &instance,
    );
    let logger = aya_log::EbpfLogger::init(&mut loaded.ebpf);
    if let Err(e) = &logger {
        warn!("kernel diagnostics unavailable: {e}");
    }
    let paths = PathCache::new(
        hierarchy.clone(),
        bound.iter().map(|b| (b.id, b.path.clone())),
    );
    let bound_count = bound.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The inotify watches register with the runtime's reactor.
    let _entered = runtime.enter();
    let daemon = Daemon {
        config_path: path.map(Path::to_owned),
        hierarchy,
        loaded,
        generations,
        instance: instance.clone(),
        attached,
        bound,
        missing,
        watch: DirWatch::new().context("refusing to start: inotify")?,
        config_watch: DirWatch::new().context("refusing to start: inotify")?,
        config_seen: None,
        source_files: sources::SourceFiles::default(),
        versioned: versioned.clone(),
        telemetry: telemetry.clone(),
        metrics: metrics.clone(),
        started: Instant::now(),
        last_reload: String::new(),
        reload_history: Vec::new(),
        node: node.clone(),
        owner,
        pin_path: pin_path.clone(),
        mount_bpffs: config.agent.mount_bpffs,
        retry_pending: false,
    };
    if let (Some(node), Some(node_name)) = (&node, node_name) {
        metrics.set_kubernetes(node.clone());
        runtime.spawn(kubernetes::watch::start(
            config.kubernetes.clone(),
            node_name,
            node.clone(),
        ));
    }
    runtime.spawn(crate::netns::run(local_maps, netns_asks));
    let tasks = main_loop::Inputs {
        config: &config,
        ring,
        paths,
        sinks: outputs.sinks,
        metrics_listener: outputs.metrics_listener,
        access: outputs.access,
        logger,
        ready: format!(
            "enforcing generation {} on {} cgroup(s)",
            applied.generation, bound_count
        ),
    };
    runtime.block_on(main_loop::serve(daemon, tasks))?;
    shutdown::report(&versioned, &metrics);
    Ok(())
}

/// The state the daemon, the event reader and the metrics endpoint share.
/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn shared_state(
    config: Arc<crate::config::Config>,
    applied: &crate::generations::Applied,
    counters: crate::kernel::KernelCounters,
    loaded: &Loaded,
    bound: usize,
    sinks: &[crate::config::SinkKind],
    instance: &Path,
) -> (Arc<Telemetry>, Arc<RwLock<Versioned>>, Arc<Metrics>) {
    let telemetry = Arc::new(Telemetry::default());
    telemetry.attached_cgroups.store(bound, Ordering::Relaxed);
    telemetry
        .last_reload_success
        .store(unix_now(), Ordering::Relaxed);
    telemetry
        .packet_socket_guard
        .store(loaded.socket_guard_missing.is_none(), Ordering::Relaxed);
    let versioned = Arc::new(RwLock::new(Versioned::applied(config, applied)));
    let metrics = Arc::new(Metrics {
        versioned: versioned.clone(),
        kernel: Mutex::new(counters),
        telemetry: telemetry.clone(),
        sinks: sinks.to_vec(),
        instance: instance.to_owned(),
        kubernetes: std::sync::OnceLock::new(),
    });
    (telemetry, versioned, metrics)
}
