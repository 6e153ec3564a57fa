//! The subcommands' work: `run` (the daemon's start-up, main loop, reloads and
//! shutdown), `check`, `detach`, and the CLI side of `reload` and `status`.
//!
//! Start-up refuses to run without enforcing: every step that enforcement needs
//! (cgroup v2, a bpffs for pins, loading the program, attaching it) either succeeds or
//! stops the agent with a message naming what is missing. Shutdown leaves the pinned
//! program enforcing (fail closed); only `detach` removes it. A reload (control socket
//! or SIGHUP) validates the whole new config first and swaps it in atomically
//! (`generations.rs`); a bad one is rejected and the policy in force stays.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
    time::Instant,
};

use anyhow::{Context as _, bail};
use residency_common::Stat;
use tracing::{info, warn};

use crate::{
    bpf::{self, BoundCgroup, Loaded, MissingCgroup},
    cgroup::{Hierarchy, PathCache},
    config::{self, Config},
    control::{self, Request, Response},
    events,
    generations::Generations,
    metrics::{self, Metrics, Telemetry},
    notify, pins,
    policy::{self, Versioned},
    sinks,
    watch::CgroupWatch,
};

/// Loads the config named on the command line, else the default path, else the
/// embedded default (audit only), saying which.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    load_config_for(path, Fallback::Allowed)
}

/// Whether a missing default config may fall back to the embedded audit-only one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fallback {
    Allowed,
    /// A reload, or a start over pinned enforcement: falling back would silently turn
    /// enforcement into audit (a config file moved aside while being edited must not
    /// open the host).
    Refused,
}

fn load_config_for(path: Option<&Path>, fallback: Fallback) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let default = Path::new(config::DEFAULT_PATH);
            if default.exists() {
                Ok(Config::load(default)?)
            } else if fallback == Fallback::Refused {
                bail!(
                    "{}: no such file; refusing to replace the policy in force with the embedded \
                     audit-only default",
                    config::DEFAULT_PATH
                )
            } else {
                warn!(
                    "no config at {}; using the embedded default config (audit only, never drops). \
                     Write {} to enforce a policy.",
                    config::DEFAULT_PATH,
                    config::DEFAULT_PATH
                );
                Ok(Config::embedded_default())
            }
        }
    }
}

/// `check`: validate and summarise.
pub fn check(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let hierarchy = Hierarchy::discover()?;
    let notes = config.check_cgroups(&hierarchy)?;
    validate_compiled(&config)?;
    print!("{}", policy::summary(&config));
    for n in notes {
        println!("note: {n} (its policy applies as soon as it appears)");
    }
    Ok(())
}

/// Compiles the config once, for the limits only the compiled form shows (port rules
/// inherited per prefix, the port rule table).
fn validate_compiled(config: &Config) -> anyhow::Result<()> {
    let ids: Vec<u32> = (0..config.policies.len() as u32).collect();
    policy::compile(config, &ids, 0)
        .with_context(|| format!("{} cannot be applied", config.source))?;
    Ok(())
}

/// `detach`: remove every pinned link instance and the pinned maps.
pub fn detach(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let pin_path = &config.agent.pin_path;
    if pins::instances(pin_path)?.is_empty() && !pins::maps_dir(pin_path).exists() {
        println!("nothing to detach under {}", pin_path.display());
        return Ok(());
    }
    let (links, instances) = pins::remove_all(pin_path)?;
    println!(
        "detached {links} cgroup link(s) and removed {instances} pinned instance(s) under {}",
        pin_path.display()
    );
    Ok(())
}

/// `explain`: a verdict computed offline from the config.
pub fn explain(
    path: Option<&Path>,
    policy: Option<&str>,
    addr: std::net::IpAddr,
    port: Option<&str>,
) -> anyhow::Result<()> {
    let config = load_config(path)?;
    print!("{}", crate::explain::explain(&config, policy, addr, port)?);
    Ok(())
}

/// `reload` and `status` (the CLI side): ask the running agent.
pub fn ask(
    socket: Option<&Path>,
    config: Option<&Path>,
    request: Request,
    json: bool,
) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s.to_owned(),
        None => match config {
            Some(c) => Config::load(c)?.agent.control_socket,
            None => config::AgentConfig::default().control_socket,
        },
    };
    let response = control::call(&socket, &request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&response.data)?);
    } else {
        print!("{}", response.text);
        if !response.text.ends_with('\n') {
            println!();
        }
    }
    if !response.ok {
        bail!("{}", response.text.lines().next().unwrap_or("failed"));
    }
    Ok(())
}

/// A validated config resolved on this host, ready to apply.
struct Prepared {
    config: Config,
    bound: Vec<BoundCgroup>,
    missing: Vec<MissingCgroup>,
}

fn prepare(config: Config, hierarchy: &Hierarchy) -> anyhow::Result<Prepared> {
    if config.policies.is_empty() {
        // Applying it would replace enforcement with nothing: `detach` is the one way
        // to remove enforcement.
        bail!(
            "{} has no [[policy]], so there is nothing to enforce \
             (`residency-agent detach` removes enforcement)",
            config.source
        );
    }
    config.check_cgroups(hierarchy)?;
    let (bound, missing) =
        bpf::resolve_cgroups(&config, hierarchy).context("a configured cgroup cannot be used")?;
    for m in &missing {
        warn!(
            cgroup = %m.path.display(),
            policy = %config.policies[m.policy].name,
            "cgroup does not exist yet; its policy applies as soon as it appears"
        );
    }
    Ok(Prepared {
        config,
        bound,
        missing,
    })
}

/// The daemon's state between requests.
struct Daemon {
    config_path: Option<PathBuf>,
    hierarchy: Hierarchy,
    loaded: Loaded,
    generations: Generations,
    instance: PathBuf,
    /// Attached cgroup id -> path, for the links pinned in `instance`.
    attached: BTreeMap<u64, PathBuf>,
    bound: Vec<BoundCgroup>,
    missing: Vec<MissingCgroup>,
    watch: CgroupWatch,
    /// Watches the config file's directory; the file's content when last applied.
    config_watch: CgroupWatch,
    config_seen: Option<Vec<u8>>,
    versioned: Arc<RwLock<Versioned>>,
    telemetry: Arc<Telemetry>,
    metrics: Arc<Metrics>,
    started: Instant,
    last_reload: String,
}

impl Daemon {
    /// Attaches the program where `bound` needs it and detaches it where it no longer
    /// does. Called after a flip, so new cgroups are judged by the new policy from their
    /// first packet and removed ones keep the policy until their link goes.
    fn reconcile_links(&mut self) -> anyhow::Result<()> {
        let wanted: BTreeMap<u64, PathBuf> = bpf::attach_points(&self.bound)
            .into_iter()
            .map(|b| (b.id, b.path.clone()))
            .collect();
        // Every attach point is tried, and a failed one is tried again at the next
        // rescan; the first error is reported.
        let mut first_error = None;
        for (id, path) in &wanted {
            if !self.attached.contains_key(id) {
                let attached = self
                    .loaded
                    .attach(path)
                    .map_err(anyhow::Error::from)
                    .and_then(|links| {
                        pins::pin_cgroup_links(&self.instance, *id, links)
                            .map_err(anyhow::Error::from)
                    });
                match attached {
                    Ok(()) => {
                        self.attached.insert(*id, path.clone());
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let stale: Vec<u64> = self
            .attached
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in stale {
            pins::unpin_cgroup_links(&self.instance, id);
            self.attached.remove(&id);
        }
        // Configured cgroups actually judged: attached themselves, or below an attached one.
        let judged = self
            .bound
            .iter()
            .filter(|b| self.attached.values().any(|a| b.path.starts_with(a)))
            .count();
        self.telemetry
            .attached_cgroups
            .store(judged, Ordering::Relaxed);
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(())
    }

    /// Watches where configured cgroups live or will live: the parent of each bound
    /// one (re-creation) and the nearest existing ancestor of each missing one.
    fn watch_cgroups(&self) {
        for b in &self.bound {
            if let Some(parent) = b.path.parent() {
                self.watch.watch(parent);
            }
        }
        for m in &self.missing {
            if let Some(dir) = m.path.ancestors().skip(1).find(|p| p.exists()) {
                self.watch.watch(dir);
            }
        }
    }

    /// Re-resolves the configured cgroups of the version in force: binds cgroups that
    /// appeared (or were re-created under a new id) before attaching to them, and
    /// unbinds those that are gone.
    fn rescan(&mut self) {
        let (config, ids) = {
            let v = self.versioned.read().expect("lock");
            (v.config.clone(), v.ids.clone())
        };
        let (bound, missing) = match bpf::resolve_cgroups(&config, &self.hierarchy) {
            Ok(r) => r,
            Err(e) => {
                warn!("re-resolving cgroups failed: {e:#}");
                return;
            }
        };
        let same = bound.len() == self.bound.len()
            && bound
                .iter()
                .zip(&self.bound)
                .all(|(a, b)| a.id == b.id && a.path == b.path);
        let all_attached = bpf::attach_points(&bound)
            .iter()
            .all(|b| self.attached.contains_key(&b.id));
        if same && missing == self.missing && all_attached {
            return;
        }
        let mut bound = bound;
        let mut failed = Vec::new();
        for b in &bound {
            if !self.bound.iter().any(|o| o.id == b.id) {
                let binding = crate::generations::binding_of(&config, &ids, b.policy);
                match self.generations.bind(b.id, binding) {
                    Ok(()) => {
                        info!(cgroup = %b.path.display(), policy = %config.policies[b.policy].name, "cgroup appeared: its policy applies")
                    }
                    Err(e) => {
                        // Left out of `bound`, so the next rescan tries again.
                        warn!(cgroup = %b.path.display(), "binding a new cgroup failed: {e}");
                        failed.push(b.id);
                    }
                }
            }
        }
        bound.retain(|b| !failed.contains(&b.id));
        for o in &self.bound {
            if !bound.iter().any(|b| b.id == o.id) {
                self.generations.unbind(o.id);
                info!(cgroup = %o.path.display(), "cgroup is gone; its policy applies again when it reappears");
            }
        }
        self.bound = bound;
        self.missing = missing;
        if let Err(e) = self.reconcile_links() {
            warn!("attaching to a new cgroup failed: {e:#}");
        }
        self.watch_cgroups();
    }

    /// The file the agent reads its config from, when there is one.
    fn config_file(&self) -> Option<PathBuf> {
        match &self.config_path {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(config::DEFAULT_PATH)).filter(|p| p.exists()),
        }
    }

    /// Reloads when the config file's content changed since it was last applied (or
    /// last rejected): an edit, or a ConfigMap update. A file caught mid-swap or
    /// missing is left for the next look.
    fn check_config_changed(&mut self) {
        let Some(path) = self.config_file() else {
            return;
        };
        let Ok(now) = std::fs::read(&path) else {
            return;
        };
        if self.config_seen.as_deref() == Some(now.as_slice()) {
            return;
        }
        let first = self.config_seen.is_none();
        self.config_seen = Some(now);
        if !first {
            info!(config = %path.display(), "config file changed: reloading");
            self.reload(false);
        }
    }

    /// Re-reads the config file and applies it, or only reports the change.
    fn reload(&mut self, dry_run: bool) -> Response {
        let result = self.try_reload(dry_run);
        if !dry_run {
            // What this reload read counts as seen: the file watch must not apply (or
            // reject) the same content a second time.
            self.config_seen = self.config_file().and_then(|p| std::fs::read(p).ok());
        }
        if !dry_run && result.ok {
            notify::status(result.text.lines().next().unwrap_or_default());
        }
        if !dry_run {
            let counter = if result.ok {
                &self.telemetry.reloads_ok
            } else {
                &self.telemetry.reloads_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.last_reload = result.text.lines().next().unwrap_or_default().to_owned();
            if result.ok {
                info!("{}", result.text.trim_end());
            } else {
                warn!(
                    "reload rejected; the policy in force is unchanged: {}",
                    result.text.trim_end()
                );
            }
        }
        result
    }

    fn try_reload(&mut self, dry_run: bool) -> Response {
        let config = match load_config_for(self.config_path.as_deref(), Fallback::Refused) {
            Ok(c) => c,
            Err(e) => return Response::error(format!("rejected: {e:#}")),
        };
        let prepared = match prepare(config, &self.hierarchy) {
            Ok(p) => p,
            Err(e) => return Response::error(format!("rejected: {e:#}")),
        };
        if let Err(e) = self.loaded.check_socket_guard(&prepared.config) {
            return Response::error(format!("rejected: {e}"));
        }
        let old = self.versioned.read().expect("lock").config.clone();
        let (diff, diff_json) = policy::diff(&old, &prepared.config);
        if dry_run {
            if let Err(e) = validate_compiled(&prepared.config) {
                return Response::error(format!("rejected: {e:#}"));
            }
            return Response {
                ok: true,
                text: format!(
                    "dry run: {} is valid; a reload would change:\n{diff}",
                    prepared.config.source
                ),
                data: serde_json::json!({"dry_run": true, "changes": diff_json}),
            };
        }
        // Counters of ids new to this version start at zero, before any packet is
        // judged under them.
        let old_ids = self.versioned.read().expect("lock").ids.clone();
        let fresh: Vec<u32> = self
            .generations
            .preview_ids(&prepared.config)
            .into_iter()
            .filter(|id| !old_ids.contains(id))
            .collect();
        if let Err(e) = self.metrics.kernel.lock().expect("lock").reset(&fresh) {
            warn!("zeroing the counters of new policies failed: {e}");
        }
        let applied = match self.generations.apply(&prepared.config, &prepared.bound) {
            Ok(a) => a,
            Err(e) => return Response::error(format!("rejected: {e}")),
        };
        self.bound = prepared.bound;
        self.missing = prepared.missing;
        self.watch_cgroups();
        *self.versioned.write().expect("lock") = Versioned {
            config: prepared.config,
            ids: applied.ids.clone(),
            generation: applied.generation,
        };
        if let Err(e) = self.reconcile_links() {
            // The new policy is in force for every cgroup that was attached before;
            // say loudly which attachment is missing.
            return Response::error(format!(
                "generation {} applied, but attaching a new cgroup failed: {e:#}",
                applied.generation
            ));
        }
        Response {
            ok: true,
            text: format!(
                "reloaded: generation {} in force ({} prefixes applied in {:.1} ms)\n{diff}",
                applied.generation,
                applied.entries,
                applied.duration.as_secs_f64() * 1000.0
            ),
            data: serde_json::json!({
                "generation": applied.generation,
                "prefixes": applied.entries,
                "duration_ms": applied.duration.as_secs_f64() * 1000.0,
                "changes": diff_json,
            }),
        }
    }

    fn status(&self) -> Response {
        let v = self.versioned.read().expect("lock");
        let packets = self.metrics.kernel.lock().expect("lock").packets(&v.ids);
        let mut text = format!(
            "residency-agent {} — generation {}, up {}s, pins {}\n",
            env!("CARGO_PKG_VERSION"),
            v.generation,
            self.started.elapsed().as_secs(),
            self.instance.display()
        );
        let mut policies = Vec::new();
        for (p, id) in v.config.policies.iter().zip(&v.ids) {
            let c = policy::counts(p);
            let count = |verdict: &str| -> u64 {
                packets
                    .iter()
                    .filter(|((pid, vd, _), _)| *pid == *id && *vd == verdict)
                    .map(|(_, n)| n)
                    .sum()
            };
            let cgroups: Vec<String> = self
                .bound
                .iter()
                .filter(|b| v.config.policies[b.policy].name == p.name)
                .map(|b| b.path.display().to_string())
                .collect();
            text.push_str(&format!(
                "  policy {} mode={} ipv4={} ipv6={} allowed={} blocked={} audited={}\n",
                p.name,
                p.mode.as_str(),
                c.allow_v4 + c.deny_v4,
                c.allow_v6 + c.deny_v6,
                count("allowed"),
                count("blocked"),
                count("audited")
            ));
            for cg in &cgroups {
                text.push_str(&format!("    cgroup {cg}\n"));
            }
            policies.push(serde_json::json!({
                "name": p.name, "mode": p.mode.as_str(), "id": id,
                "prefixes": {"ipv4": c.allow_v4 + c.deny_v4, "ipv6": c.allow_v6 + c.deny_v6},
                "cgroups": cgroups,
                "packets": {"allowed": count("allowed"), "blocked": count("blocked"), "audited": count("audited")},
            }));
        }
        text.push_str(&format!(
            "  attached at {} cgroup(s); last reload: {}\n",
            self.attached.len(),
            if self.last_reload.is_empty() {
                "none"
            } else {
                &self.last_reload
            }
        ));
        Response {
            ok: true,
            text,
            data: serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "generation": v.generation,
                "uptime_seconds": self.started.elapsed().as_secs(),
                "config": v.config.source,
                "pins": self.instance,
                "attached_cgroups": self.attached.values().collect::<Vec<_>>(),
                "policies": policies,
                "reloads": {"success": self.telemetry.reloads_ok.load(Ordering::Relaxed), "failure": self.telemetry.reloads_failed.load(Ordering::Relaxed)},
                "last_reload": self.last_reload,
            }),
        }
    }
}

/// `run`: the daemon.
pub fn run(path: Option<&Path>) -> anyhow::Result<()> {
    // Over enforcement pinned at the default pin path, a missing config is an error,
    // not a reason to swap in the audit-only default.
    let default_pins = pins::maps_dir(&config::AgentConfig::default().pin_path);
    let fallback = if default_pins.join(residency_common::maps::ACTIVE).exists() {
        Fallback::Refused
    } else {
        Fallback::Allowed
    };
    let config = load_config_for(path, fallback).context("refusing to start")?;
    info!(config = %config.source, policies = config.policies.len(), "residency-agent {} starting", env!("CARGO_PKG_VERSION"));

    let hierarchy = Hierarchy::discover().context("refusing to start without enforcement")?;
    let Prepared {
        config,
        bound,
        missing,
    } = prepare(config, &hierarchy).context("refusing to start")?;

    let pin_path = config.agent.pin_path.clone();
    if let Some(at) =
        pins::ensure_bpffs(&pin_path).context("refusing to start: cannot pin enforcement")?
    {
        info!(path = %at.display(), "no BPF filesystem for the pins: mounted one");
    }
    pins::check_layout(&pin_path).context("refusing to start")?;
    // Held until the process exits: one agent owns the pinned state at a time.
    let _owner =
        pins::lock(&pin_path, std::time::Duration::from_secs(30)).context("refusing to start")?;

    // Everything that reports or listens must be ready before anything is attached: an
    // agent that enforces but cannot say what it blocked, or cannot be reloaded, is not
    // started.
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
    let access = control::Access {
        group: config
            .agent
            .control_group
            .as_deref()
            .map(control::group_id)
            .transpose()
            .context("refusing to start")?,
    };

    let maps_dir = pins::maps_dir(&pin_path);
    let adopting = maps_dir.join(residency_common::maps::ACTIVE).exists();
    let mut loaded = bpf::load(&maps_dir, config.agent.rule_capacity)
        .context("refusing to start: the kernel program did not load")?;
    loaded.configure(&config).context("refusing to start")?;
    loaded
        .check_socket_guard(&config)
        .context("refusing to start")?;
    let mut generations =
        Generations::new(loaded.take_policy_maps()?).context("refusing to start")?;
    if adopting {
        info!(maps = %maps_dir.display(), "adopting the pinned policy maps: the policy in force keeps enforcing until this agent's is swapped in");
    }
    // Counts adopted from an earlier agent may sit under ids this agent gives to other
    // policies: every series starts from zero, before any packet is judged under it.
    let mut kernel_counters = loaded.take_counters()?;
    kernel_counters
        .reset(&generations.preview_ids(&config))
        .context("refusing to start: zeroing the packet counters")?;
    let applied = generations
        .apply(&config, &bound)
        .context("refusing to start: writing the policy failed")?;

    // Attach and pin as one new instance; only then retire older instances. Old and
    // new links read the same maps, so they agree on every verdict.
    let mut links = Vec::new();
    let mut attached = BTreeMap::new();
    for point in bpf::attach_points(&bound) {
        // On error, `links` is dropped on return: links attached so far are detached,
        // and whatever an earlier agent pinned keeps enforcing.
        let link = loaded.attach(&point.path).context("refusing to start")?;
        links.push((point.id, link));
        attached.insert(point.id, point.path.clone());
    }
    let instance = pins::pin_links(&pin_path, links).context("refusing to start")?;
    let replaced = pins::remove_others(&pin_path, Some(&instance))?;
    if replaced > 0 {
        info!(
            links = replaced,
            "took over from the enforcement an earlier agent left pinned"
        );
    }

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

    let ring = loaded.take_events()?;
    let telemetry = Arc::new(Telemetry::default());
    telemetry
        .attached_cgroups
        .store(bound.len(), Ordering::Relaxed);
    telemetry
        .packet_socket_guard
        .store(loaded.socket_guard_missing.is_none(), Ordering::Relaxed);
    let versioned = Arc::new(RwLock::new(Versioned {
        config: config.clone(),
        ids: applied.ids.clone(),
        generation: applied.generation,
    }));
    let metrics = Arc::new(Metrics {
        versioned: versioned.clone(),
        kernel: Mutex::new(kernel_counters),
        telemetry: telemetry.clone(),
        sinks: sink_kinds.clone(),
        instance: instance.clone(),
    });
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
    // The inotify watch registers with the runtime's reactor.
    let _entered = runtime.enter();
    let mut daemon = Daemon {
        config_path: path.map(Path::to_owned),
        hierarchy,
        loaded,
        generations,
        instance: instance.clone(),
        attached,
        bound,
        missing,
        watch: CgroupWatch::new().context("refusing to start: inotify")?,
        config_watch: CgroupWatch::new().context("refusing to start: inotify")?,
        config_seen: None,
        versioned: versioned.clone(),
        telemetry: telemetry.clone(),
        metrics: metrics.clone(),
        started: Instant::now(),
        last_reload: String::new(),
    };

    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let control_listener = control::bind(&config.agent.control_socket, access).context("refusing to serve")?;
        info!(
            pins = %instance.display(),
            control = %config.agent.control_socket.display(),
            "attached; reporting blocked packets"
        );
        notify::ready(&format!("enforcing generation {} on {} cgroup(s)", applied.generation, bound_count));
        // Pinged only while healthy: a wedged agent is restarted by systemd, and the
        // pinned program keeps enforcing meanwhile.
        let mut watchdog = tokio::time::interval(notify::watchdog_interval().unwrap_or(std::time::Duration::from_secs(3600)));
        let watchdog_on = notify::watchdog_interval().is_some();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (to_daemon, mut requests) = tokio::sync::mpsc::channel(16);
        let control_task = tokio::spawn(control::serve(control_listener, access, to_daemon));
        let mut events = tokio::spawn(events::run(ring, versioned.clone(), paths, sinks, telemetry.clone(), config.events.clone()));
        let listener = tokio::net::TcpListener::from_std(metrics_listener)?;
        let mut server = tokio::spawn(metrics::serve(listener, metrics.clone()));
        let kernel_log = tokio::spawn(async move {
            if let Ok(logger) = logger
                && let Ok(mut fd) = events::readable(logger)
            {
                while let Ok(mut guard) = fd.readable_mut().await {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        });
        // `detach` (or another agent taking over) removes this instance's pins; an agent
        // whose enforcement is gone must not keep running as if it enforced.
        let watched = instance.clone();
        let detached = async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            while watched.exists() {
                tick.tick().await;
            }
        };
        tokio::pin!(detached);
        daemon.watch_cgroups();
        let watch_config = config.agent.watch_config;
        if watch_config {
            if let Some(dir) = daemon.config_file().as_deref().and_then(Path::parent) {
                daemon.config_watch.watch_config_dir(dir);
            }
            daemon.check_config_changed();
        }
        let mut rescan = tokio::time::interval(std::time::Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                _ = daemon.watch.changed() => daemon.rescan(),
                _ = daemon.config_watch.changed(), if watch_config => {
                    // A ConfigMap swap is several renames: let it settle.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    daemon.check_config_changed();
                }
                _ = rescan.tick() => {
                    daemon.rescan();
                    if watch_config {
                        daemon.check_config_changed();
                    }
                }
                _ = watchdog.tick(), if watchdog_on => {
                    if metrics.healthy() {
                        notify::watchdog();
                    }
                }
                _ = hup.recv() => {
                    info!("SIGHUP: reloading {}", daemon.versioned.read().expect("lock").config.source);
                    daemon.reload(false);
                }
                Some((request, answer)) = requests.recv() => {
                    let response = match request {
                        Request::Reload { dry_run } => daemon.reload(dry_run),
                        Request::Status => daemon.status(),
                    };
                    let _ = answer.send(response);
                }
                _ = term.recv() => break Ok("SIGTERM"),
                _ = int.recv() => break Ok("SIGINT"),
                _ = &mut detached => {
                    info!(
                        "enforcement at {} was removed (detach, or a newer agent took \
                         over); exiting",
                        instance.display()
                    );
                    break Ok("");
                }
                r = &mut server => {
                    break Err(match r {
                        Ok(Err(e)) => anyhow::anyhow!("metrics endpoint failed: {e}"),
                        Ok(Ok(())) => anyhow::anyhow!("metrics endpoint stopped"),
                        Err(e) => anyhow::anyhow!("metrics endpoint panicked: {e}"),
                    });
                }
                r = &mut events => {
                    break Err(match r {
                        Ok(Err(e)) => anyhow::anyhow!("event reader failed: {e}"),
                        Ok(Ok(())) => anyhow::anyhow!("event reader stopped"),
                        Err(e) => anyhow::anyhow!("event reader panicked: {e}"),
                    });
                }
            }
        };
        notify::stopping();
        kernel_log.abort();
        control_task.abort();
        // The socket is ours only while we answer on it.
        let _ = std::fs::remove_file(&config.agent.control_socket);
        let why = outcome?;
        if !why.is_empty() {
            info!(
                "{why}: shutting down; enforcement stays pinned at {} (fail closed). \
                 `residency-agent detach` removes it.",
                instance.display()
            );
        }
        anyhow::Ok(())
    })?;

    let v = versioned.read().expect("lock");
    let kernel = metrics.kernel.lock().expect("kernel counters lock");
    for ((id, verdict, family), n) in kernel.packets(&v.ids) {
        if n > 0 {
            let name = v.by_id(id).map(|p| p.name.as_str()).unwrap_or("?");
            info!(policy = %name, verdict, family, packets = n, "counted");
        }
    }
    for (stat, name) in [
        (Stat::EventsLost, "events_lost_ring_full"),
        (Stat::EventsRateLimited, "events_rate_limited"),
        (Stat::ParseErrors, "parse_errors"),
        (Stat::NoBinding, "no_binding"),
    ] {
        let n = kernel.stat(stat);
        if n > 0 {
            warn!(stat = name, count = n, "kernel program health");
        }
    }
    Ok(())
}
