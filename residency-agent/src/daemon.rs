//! The subcommands' work: `run` (the daemon's start-up, event loop and shutdown), `check`
//! and `detach`.
//!
//! Start-up refuses to run without enforcing: every step that enforcement needs
//! (cgroup v2, a bpffs for pins, loading the program, attaching it) either succeeds or
//! stops the agent with a message naming what is missing. Shutdown leaves the pinned
//! program enforcing (fail closed); only `detach` removes it.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail};
use residency_common::Stat;
use tracing::{info, warn};

use crate::{
    bpf,
    cgroup::{Hierarchy, PathCache},
    config::{self, Config},
    events,
    metrics::{self, Metrics, Telemetry},
    pins, policy, sinks,
};

/// Loads the config named on the command line, else the default path, else the
/// embedded default (audit only), saying which.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => {
            let default = Path::new(config::DEFAULT_PATH);
            if default.exists() {
                Ok(Config::load(default)?)
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
    print!("{}", policy::summary(&config));
    for n in notes {
        println!("note: {n} (`run` refuses to start until it exists)");
    }
    Ok(())
}

/// `detach`: remove every pinned instance under the config's pin path.
pub fn detach(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let pin_path = &config.agent.pin_path;
    let instances = pins::instances(pin_path)?;
    if instances.is_empty() {
        println!("nothing to detach under {}", pin_path.display());
        return Ok(());
    }
    let links = pins::remove_others(pin_path, None)?;
    let _ = std::fs::remove_dir(pin_path.join(pins::LAYOUT));
    println!(
        "detached {links} cgroup link(s) and removed {} pinned instance(s) under {}",
        instances.len(),
        pin_path.display()
    );
    Ok(())
}

/// `run`: the daemon.
pub fn run(path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    info!(config = %config.source, policies = config.policies.len(), "residency-agent {} starting", env!("CARGO_PKG_VERSION"));

    if config.policies.is_empty() {
        // Starting would replace whatever is pinned with nothing: `detach` is the one
        // way to remove enforcement.
        bail!(
            "refusing to start: {} has no [[policy]], so there is nothing to enforce \
             (`residency-agent detach` removes enforcement)",
            config.source
        );
    }
    let hierarchy = Hierarchy::discover().context("refusing to start without enforcement")?;
    config.check_cgroups(&hierarchy)?;
    let bound = bpf::resolve_cgroups(&config, &hierarchy)
        .context("refusing to start: a configured cgroup cannot be used")?;

    let pin_path = config.agent.pin_path.clone();
    if let Some(at) =
        pins::ensure_bpffs(&pin_path).context("refusing to start: cannot pin enforcement")?
    {
        info!(path = %at.display(), "no BPF filesystem for the pins: mounted one");
    }

    // Everything that reports must be ready before anything is attached: an agent that
    // enforces but cannot say what it blocked is not started.
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

    let mut loaded = bpf::load().context("refusing to start: the kernel program did not load")?;
    loaded
        .configure(&config.events)
        .context("refusing to start")?;
    loaded
        .fill(&config, &bound)
        .context("refusing to start: filling the policy maps failed")?;

    let mut links = Vec::new();
    for point in bpf::attach_points(&bound) {
        // On error, `links` is dropped on return: links attached so far are detached,
        // and whatever an earlier agent pinned keeps enforcing.
        let link = loaded.attach(&point.path).context("refusing to start")?;
        links.push((point.id, link));
    }
    let instance = pins::pin_instance(&pin_path, &loaded, links).context("refusing to start")?;
    let replaced = pins::remove_others(&pin_path, Some(&instance))?;
    if replaced > 0 {
        info!(
            links = replaced,
            "replaced the enforcement an earlier agent left pinned"
        );
    }

    for (i, p) in config.policies.iter().enumerate() {
        let c = policy::counts(p);
        let cgroups: Vec<String> = bound
            .iter()
            .filter(|b| b.policy == i)
            .map(|b| b.path.display().to_string())
            .collect();
        info!(
            policy = %p.name,
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
    info!(pins = %instance.display(), "attached; reporting blocked packets");

    let ring = loaded.take_events()?;
    let telemetry = Arc::new(Telemetry::default());
    let metrics = Arc::new(Metrics {
        config: config.clone(),
        kernel: Mutex::new(loaded.take_counters()?),
        telemetry: telemetry.clone(),
        sinks: sink_kinds.clone(),
        attached_cgroups: bound.len(),
        instance: instance.clone(),
    });
    let logger = aya_log::EbpfLogger::init(&mut loaded.ebpf);
    if let Err(e) = &logger {
        warn!("kernel diagnostics unavailable: {e}");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let paths = PathCache::new(hierarchy, bound.iter().map(|b| (b.id, b.path.clone())));
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // SIGHUP would otherwise kill the agent (its default action).
        let mut hup = signal(SignalKind::hangup())?;
        let mut events = tokio::spawn(events::run(ring, config.clone(), paths, sinks, telemetry));
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
        let why = loop {
            tokio::select! {
                _ = hup.recv() => {
                    warn!(
                        "SIGHUP: this version cannot reload; restart the agent to apply \
                         a new config (enforcement continues unchanged)"
                    );
                    continue;
                }
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = &mut detached => {
                    kernel_log.abort();
                    info!(
                        "enforcement at {} was removed (detach, or a newer agent took \
                         over); exiting",
                        instance.display()
                    );
                    return anyhow::Ok(());
                }
                r = &mut server => {
                    kernel_log.abort();
                    match r {
                        Ok(Err(e)) => bail!("metrics endpoint failed: {e}"),
                        Ok(Ok(())) => bail!("metrics endpoint stopped"),
                        Err(e) => bail!("metrics endpoint panicked: {e}"),
                    }
                }
                r = &mut events => {
                    kernel_log.abort();
                    match r {
                        Ok(Err(e)) => bail!("event reader failed: {e}"),
                        Ok(Ok(())) => bail!("event reader stopped"),
                        Err(e) => bail!("event reader panicked: {e}"),
                    }
                }
            }
        };
        kernel_log.abort();
        info!(
            "{why}: shutting down; enforcement stays pinned at {} (fail closed). \
               `residency-agent detach` removes it.",
            instance.display()
        );
        anyhow::Ok(())
    })?;

    let kernel = metrics.kernel.lock().expect("kernel counters lock");
    for ((policy, verdict, family), n) in kernel.packets(config.policies.len()) {
        if n > 0 {
            info!(policy = %config.policies[policy].name, verdict, family, packets = n, "counted");
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
