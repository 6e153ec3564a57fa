//! The agent's own counters and state (events per sink, reloads, attachment), as
//! atomics shared by the event pipeline, the daemon and the metrics endpoint.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, AtomicU64, AtomicUsize},
};

use crate::{config::SinkKind, events::sinks::writer::Progress};

/// The agent's own counters and state, shared by the event pipeline, the daemon and
/// the metrics endpoint.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Events written, per sink (index: position in [`SinkKind::ALL`]).
    pub events: [AtomicU64; 5],
    /// Events a sink failed to write, per sink.
    pub sink_errors: [AtomicU64; 5],
    /// Events dropped because a sink's queue was full, per sink.
    pub sink_backlog: [AtomicU64; 5],
    /// The sinks' writer threads, once started.
    pub sink_progress: OnceLock<Vec<Arc<Progress>>>,
    /// Repeats folded into an aggregated event's count (reported, not lost).
    pub aggregated: AtomicU64,
    /// Events the kernel handed over.
    pub received: AtomicU64,
    /// Set while the event reader runs.
    pub reader_alive: AtomicBool,
    /// Configured cgroups in force.
    pub attached_cgroups: AtomicUsize,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Whether the last reload (or the config watch's last attempt) was refused: the
    /// config on disk is not the one in force.
    pub last_reload_failed: AtomicBool,
    /// Unix time of the start, then of each successful reload.
    pub last_reload_success: AtomicU64,
    /// Per policy, in config order: (name, cgroups the config names, cgroups judged
    /// now — bound, below an attached program).
    pub policy_cgroups: std::sync::Mutex<Vec<(String, u64, u64)>>,
    /// Whether the packet socket guard (lsm_cgroup/socket_create) is attached.
    pub packet_socket_guard: AtomicBool,
    /// Set while the pin path's bpffs is gone and the pins live on only through the
    /// agent's hold on the lost mount.
    pub pin_mount_lost: AtomicBool,
    /// Woken after every change of what the kernel enforces: the self-verification
    /// runs once things settle.
    pub verify_request: tokio::sync::Notify,
    /// Changes asked to be verified so far ([`Telemetry::request_verification`]).
    pub verify_requests: AtomicU64,
    /// Self-verifications run, and those that found a difference or could not run.
    pub verifications: AtomicU64,
    pub verification_failures: AtomicU64,
    /// Unix time of the last self-verification that completed, and its mismatches.
    pub last_verification: AtomicU64,
    pub last_verification_mismatches: AtomicU64,
    /// Every policy's IP-range sources and their live refreshes.
    pub sources: std::sync::Mutex<Vec<super::sources::SourceState>>,
    /// Blocked destinations per policy (as events show them, masked or not), with the
    /// packets or calls refused; bounded per policy.
    pub blocked: std::sync::Mutex<
        std::collections::BTreeMap<String, std::collections::HashMap<String, u64>>,
    >,
}

/// Destinations tallied per policy; past it, a new destination replaces the least
/// blocked one, so a storm of distinct addresses cannot grow the agent.
const BLOCKED_TALLY: usize = 1024;

impl Telemetry {
    /// The sinks that are stalled (events waiting, no write finished for a while),
    /// with how long.
    pub fn stalled_sinks(&self) -> Vec<(SinkKind, std::time::Duration)> {
        self.sink_progress
            .get()
            .into_iter()
            .flatten()
            .filter_map(|p| p.stalled_for().map(|d| (p.kind, d)))
            .collect()
    }

    /// Asks for a verification of what the kernel enforces now.
    pub fn request_verification(&self) {
        self.verify_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.verify_request.notify_one();
    }

    /// Counts `count` refusals of `policy` to `destination`. Called for every event
    /// read, so nothing is allocated for a policy and destination already tallied.
    pub fn tally_blocked(&self, policy: &str, destination: &str, count: u64) {
        let mut all = self.blocked.lock().expect("lock");
        if !all.contains_key(policy) {
            all.insert(policy.to_owned(), Default::default());
        }
        let tally = all.get_mut(policy).expect("inserted");
        if let Some(n) = tally.get_mut(destination) {
            *n += count;
            return;
        }
        if tally.len() >= BLOCKED_TALLY
            && let Some(least) = tally
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(d, _)| d.clone())
        {
            tally.remove(&least);
        }
        tally.insert(destination.to_owned(), count);
    }

    /// The `n` most blocked destinations of each policy, most first (ties by name).
    pub fn top_blocked(&self, n: usize) -> std::collections::BTreeMap<String, Vec<(String, u64)>> {
        let all = self.blocked.lock().expect("lock");
        all.iter()
            .map(|(p, tally)| {
                let mut list: Vec<(String, u64)> =
                    tally.iter().map(|(d, c)| (d.clone(), *c)).collect();
                list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                list.truncate(n);
                (p.clone(), list)
            })
            .collect()
    }

    pub fn sink_index(kind: SinkKind) -> usize {
        SinkKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every sink is in ALL")
    }
}
