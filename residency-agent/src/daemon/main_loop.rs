//! The daemon's main loop: the event reader, the metrics endpoint, the control socket
//! and the kernel log run as tasks; the loop itself serves signals, control requests,
//! the cgroup and config watches, the periodic rescan, the pins' check and the
//! systemd watchdog, and ends on SIGTERM/SIGINT, on the removal of its pins, or when a
//! task it needs fails.

use std::path::Path;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::info;

use super::{Daemon, pin_mount::PinCheck};
use crate::{
    config::Config,
    control::{self, Pending, Request},
    events::{self, sinks::Sink},
    host::PathCache,
    metrics,
    sys::notify,
};

/// What the loop's tasks are made from.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub ring: RingBuf<MapData>,
    pub paths: PathCache,
    pub sinks: Vec<Box<dyn Sink>>,
    pub metrics_listener: std::net::TcpListener,
    pub access: control::Access,
    pub logger: Result<aya_log::EbpfLogger<&'static dyn log::Log>, aya_log::Error>,
    /// The status line sent to systemd with READY=1.
    pub ready: String,
}

/// The tasks the loop watches (or only holds).
struct Tasks {
    requests: mpsc::Receiver<Pending>,
    control: JoinHandle<()>,
    events: JoinHandle<std::io::Result<()>>,
    server: JoinHandle<std::io::Result<()>>,
    kernel_log: JoinHandle<()>,
    /// SIGTERM, SIGINT and SIGHUP, taken over before the agent says it is attached:
    /// a signal sent right after that line must find the handlers in place (the
    /// default action of each would end the process).
    term: Signal,
    int: Signal,
    hup: Signal,
}

/// Runs the loop until shutdown; the control socket is removed on the way out.
pub async fn serve(mut daemon: Daemon, inputs: Inputs<'_>) -> anyhow::Result<()> {
    let socket = inputs.config.agent.control_socket.clone();
    let watch_config = inputs.config.agent.watch_config;
    let mut tasks = spawn(&daemon, inputs)?;
    let instance = daemon.instance.clone();
    let outcome = run_loop(&mut daemon, &mut tasks, watch_config).await;
    notify::stopping();
    tasks.kernel_log.abort();
    tasks.control.abort();
    // The socket is ours only while we answer on it.
    let _ = std::fs::remove_file(&socket);
    let why = outcome?;
    if !why.is_empty() {
        info!(
            "{why}: shutting down; enforcement stays pinned at {} (fail closed). \
             `residency-agent detach` removes it.",
            instance.display()
        );
    }
    Ok(())
}

fn spawn(daemon: &Daemon, inputs: Inputs<'_>) -> anyhow::Result<Tasks> {
    let config = inputs.config;
    let control_listener =
        control::bind(&config.agent.control_socket, inputs.access).context("refusing to serve")?;
    let term = signal(SignalKind::terminate())?;
    let int = signal(SignalKind::interrupt())?;
    let hup = signal(SignalKind::hangup())?;
    info!(
        pins = %daemon.instance.display(),
        control = %config.agent.control_socket.display(),
        "attached; reporting blocked packets"
    );
    notify::ready(&inputs.ready);
    let (to_daemon, requests) = mpsc::channel(16);
    let control = tokio::spawn(control::serve(control_listener, inputs.access, to_daemon));
    let events = tokio::spawn(events::run(
        inputs.ring,
        daemon.versioned.clone(),
        inputs.paths,
        inputs.sinks,
        daemon.telemetry.clone(),
        config.events.clone(),
        match &daemon.node {
            Some(node) => events::Namer::with_pods(
                node.clone(),
                crate::kubernetes::Layout::detect(&config.kubernetes, &daemon.hierarchy.mount),
            ),
            None => events::Namer::default(),
        },
    ));
    if config.agent.self_verify
        && let Some(path) = daemon.config_file()
    {
        tokio::spawn(super::self_verify::run(path, daemon.telemetry.clone()));
        // The version the agent started with.
        daemon.telemetry.request_verification();
    }
    let listener = tokio::net::TcpListener::from_std(inputs.metrics_listener)?;
    let server = tokio::spawn(metrics::serve(listener, daemon.metrics.clone()));
    let logger = inputs.logger;
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
    Ok(Tasks {
        requests,
        control,
        events,
        server,
        kernel_log,
        term,
        int,
        hup,
    })
}

/// Serves until shutdown; returns why it ended ("" when its pins were removed), or
/// the failure of a task the agent cannot run without.
async fn run_loop(
    daemon: &mut Daemon,
    tasks: &mut Tasks,
    watch_config: bool,
) -> anyhow::Result<&'static str> {
    // Pinged only while healthy: a wedged agent is restarted by systemd, and the
    // pinned program keeps enforcing meanwhile.
    let watchdog_every = notify::watchdog_interval();
    let mut watchdog =
        tokio::time::interval(watchdog_every.unwrap_or(std::time::Duration::from_secs(3600)));
    // `detach` (or another agent taking over) removes this instance's pins; an agent
    // whose enforcement is gone must not keep running as if it enforced. A lost pin
    // mount is not that (pin_mount.rs).
    let mut pin_check = tokio::time::interval(std::time::Duration::from_millis(500));
    daemon.watch_cgroups();
    daemon.record_coverage();
    if watch_config {
        if let Some(dir) = daemon.config_file().as_deref().and_then(Path::parent) {
            daemon.config_watch.watch_config_dir(dir);
        }
        daemon.check_config_changed(false);
    }
    let watch_sources = daemon
        .versioned
        .read()
        .expect("lock")
        .config
        .agent
        .watch_sources;
    {
        let config = daemon.versioned.read().expect("lock").config.clone();
        *daemon.telemetry.sources.lock().expect("lock") = super::sources::publish(&config, &[]);
        if watch_sources {
            daemon.source_files.follow(&config, &daemon.config_watch);
        }
    }
    // inotify drives rescans; the tick backs it up: every second it looks only at what
    // is awaited (missing cgroups, a failed attach), every thirtieth second it
    // re-resolves everything, so idle cost stays small with thousands of bound cgroups
    // (a full pass over 10,000 took about 0.1 s in a release build, 0.26 s in a debug
    // one, on the 2-core test VM).
    let mut rescan = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let node = daemon.node.clone();
    loop {
        tokio::select! {
            _ = daemon.watch.changed() => daemon.rescan(),
            () = pods_changed(node.as_deref()) => daemon.rescan(),
            _ = daemon.config_watch.changed(), if watch_config || watch_sources => {
                // A source file is replaced by one rename (or waits for its writer's
                // close): applied at once. A ConfigMap swap is several renames: let
                // it settle.
                if watch_sources {
                    daemon.check_sources_changed();
                }
                if watch_config {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    daemon.check_config_changed(true);
                }
            }
            _ = rescan.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(FULL_RESCAN_EVERY) || daemon.awaited_changed() {
                    daemon.rescan();
                }
                if watch_config {
                    daemon.check_config_changed(false);
                }
                if watch_sources {
                    daemon.check_sources_changed();
                }
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                if daemon.metrics.healthy() {
                    notify::watchdog();
                }
            }
            _ = tasks.hup.recv() => {
                info!("SIGHUP: reloading {}", daemon.versioned.read().expect("lock").config.source);
                daemon.reload(false, "SIGHUP".to_owned());
            }
            Some((request, uid, answer)) = tasks.requests.recv() => {
                let response = match request {
                    Request::Reload { dry_run } => {
                        daemon.reload(dry_run, format!("uid {uid} (control socket)"))
                    }
                    Request::Status => daemon.status(),
                };
                let _ = answer.send(response);
            }
            _ = tasks.term.recv() => return stop(daemon, "SIGTERM"),
            _ = tasks.int.recv() => return stop(daemon, "SIGINT"),
            _ = pin_check.tick() => {
                if daemon.check_pins() == PinCheck::Removed {
                    info!(
                        "enforcement at {} was removed (detach, or a newer agent took \
                         over); exiting",
                        daemon.instance.display()
                    );
                    return Ok("");
                }
            }
            r = &mut tasks.server => {
                daemon.generations.retire();
                return Err(task_ended("metrics endpoint", r));
            }
            r = &mut tasks.events => {
                daemon.generations.retire();
                return Err(task_ended("event reader", r));
            }
        }
        // A reload's old version is deleted once its answer is on its way: the
        // control socket's task writes it when this one yields.
        if daemon.generations.retiring() {
            tokio::task::yield_now().await;
            daemon.generations.retire();
            // A large version's config went with it: its pages go back to the system,
            // off this thread (the allocator locks each arena while it walks it).
            tokio::task::spawn_blocking(crate::sys::return_free_memory);
        }
    }
}

/// Ticks (seconds) between full re-resolutions of every configured cgroup when
/// inotify reports nothing.
const FULL_RESCAN_EVERY: u64 = 30;

/// Stopping on a signal: fine while the pins are on a bpffs (they keep enforcing);
/// an error while their mount is lost, since this exit ends enforcement, so that the
/// service manager sees a failure (and `Restart=on-failure` starts a new agent).
fn stop(daemon: &mut Daemon, signal: &'static str) -> anyhow::Result<&'static str> {
    daemon.generations.retire();
    match daemon.check_pins() {
        PinCheck::Lost => Err(anyhow::anyhow!(
            "{signal} while the BPF filesystem holding the pins is gone: enforcement ends \
             with this agent. Mount a bpffs at {} (or let the agent mount one: [agent] \
             mount_bpffs) and start the agent again",
            daemon.pin_path.display()
        )),
        PinCheck::Fine | PinCheck::Removed => Ok(signal),
    }
}

/// Why a task the agent needs ended.
fn task_ended(what: &str, r: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Err(e)) => anyhow::anyhow!("{what} failed: {e}"),
        Ok(Ok(())) => anyhow::anyhow!("{what} stopped"),
        Err(e) => anyhow::anyhow!("{what} panicked: {e}"),
    }
}

/// Resolves when the API watch changed what the agent knows of its pods; never
/// without `[kubernetes]`.
async fn pods_changed(node: Option<&crate::kubernetes::Node>) {
    match node {
        Some(n) => n.changed.notified().await,
        None => std::future::pending().await,
    }
}
