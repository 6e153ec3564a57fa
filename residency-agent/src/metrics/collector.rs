//! What `/metrics` reports: one [`Collector`] that reads the kernel's counters and
//! the agent's state at scrape time. Labels stay low-cardinality: policy, verdict,
//! family, sink, reason — never an address or port.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, atomic::Ordering},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};
use residency_common::Stat;

use super::{
    Telemetry,
    family::{counter, gauge},
};
use crate::{
    config::SinkKind,
    kernel::{KernelCounters, PacketCounts},
    kubernetes::Node,
    policy::Versioned,
};

/// Everything `/metrics` reports.
pub struct Metrics {
    pub versioned: Arc<RwLock<Versioned>>,
    pub kernel: Mutex<KernelCounters>,
    pub telemetry: Arc<Telemetry>,
    pub sinks: Vec<SinkKind>,
    pub instance: PathBuf,
    /// With `[kubernetes]` enabled: the node's pods and the watch's health.
    pub kubernetes: std::sync::OnceLock<Arc<Node>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Reports the Kubernetes watch from now on.
    pub fn set_kubernetes(&self, node: Arc<Node>) {
        let _ = self.kubernetes.set(node);
    }

    /// Healthy: the pinned instance (and so the attachment) exists and events flow.
    pub fn healthy(&self) -> bool {
        // With its mount lost, the instance is unreachable but still enforcing (the
        // agent holds the mount): degraded, not dead; a restart would end it.
        (self.instance.exists() || self.telemetry.pin_mount_lost.load(Ordering::Relaxed))
            && self.telemetry.reader_alive.load(Ordering::Relaxed)
    }

    /// Why reporting is behind while enforcement is fine ("" when it is not): the
    /// stalled sinks.
    pub fn degraded(&self) -> String {
        let mut why: Vec<String> = Vec::new();
        if self.telemetry.pin_mount_lost.load(Ordering::Relaxed) {
            why.push(
                "pin mount lost (enforcement held by this process only; do not restart it)"
                    .to_owned(),
            );
        }
        why.extend(
            self.telemetry
                .stalled_sinks()
                .iter()
                .map(|(k, d)| format!("sink {} stalled for {} s", k.as_str(), d.as_secs())),
        );
        why.join(", ")
    }
}

/// The kernel's health counters, read once per scrape.
struct KernelStats {
    lost_ring: u64,
    lost_rate: u64,
    parse_errors: u64,
    no_binding: u64,
    trie_lookups: u64,
    socket_denials: u64,
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let v = self.versioned.read().expect("policy lock");
        let (packets, k) = {
            let k = self.kernel.lock().expect("kernel counters lock");
            (
                k.packets(&v.ids),
                KernelStats {
                    lost_ring: k.stat(Stat::EventsLost),
                    lost_rate: k.stat(Stat::EventsRateLimited),
                    parse_errors: k.stat(Stat::ParseErrors),
                    no_binding: k.stat(Stat::NoBinding),
                    trie_lookups: k.stat(Stat::TrieLookups),
                    socket_denials: k.stat(Stat::SocketDenials),
                },
            )
        };
        self.encode_packets(&mut enc, &v, packets, &k)?;
        self.encode_events(&mut enc, &k)?;
        self.encode_state(&mut enc, &v)
    }
}

impl Metrics {
    /// Packet verdicts and what the kernel program did with them.
    fn encode_packets(
        &self,
        enc: &mut DescriptorEncoder,
        v: &Versioned,
        packets: PacketCounts,
        k: &KernelStats,
    ) -> std::fmt::Result {
        let rows: Vec<_> = packets
            .into_iter()
            .map(|((p, verdict, family), n)| {
                (
                    vec![
                        (
                            "policy",
                            v.by_id(p).map(|p| p.name.clone()).unwrap_or_default(),
                        ),
                        ("verdict", verdict.as_str().to_owned()),
                        ("family", family.as_str().to_owned()),
                    ],
                    n,
                )
            })
            .collect();
        counter(
            enc,
            "residency_packets",
            "Egress packets judged, by policy, verdict and address family (exact, from per-CPU kernel counters).",
            &rows,
        )?;

        counter(
            enc,
            "residency_trie_lookups",
            "Packets judged from the policy (its lookup tables, else the rule tries) rather than the verdict cache: a flow's first packet (per CPU), or every packet with [agent] verdict_cache = false. The rest of residency_packets_total came from the kernel's verdict cache.",
            &[(vec![], k.trie_lookups)],
        )?;
        counter(
            enc,
            "residency_socket_denials",
            "connect() and sendto()/sendmsg() calls and packet socket creations refused (or, in audit mode, reported) by the socket-layer programs. Refused connect() and sendto() calls also count in residency_packets_total as blocked or audited.",
            &[(vec![], k.socket_denials)],
        )?;
        counter(
            enc,
            "residency_program_errors",
            "Packets the kernel program could not judge normally: parse (unparsable packet) and no_binding (no policy found; dropped).",
            &[
                (vec![("kind", "parse".to_owned())], k.parse_errors),
                (vec![("kind", "no_binding".to_owned())], k.no_binding),
            ],
        )?;

        Ok(())
    }

    /// Events: written per sink, lost, received and folded by aggregation.
    fn encode_events(&self, enc: &mut DescriptorEncoder, k: &KernelStats) -> std::fmt::Result {
        let t = &self.telemetry;
        let rows: Vec<_> = self
            .sinks
            .iter()
            .map(|k| {
                (
                    vec![("sink", k.as_str().to_owned())],
                    t.events[Telemetry::sink_index(*k)].load(Ordering::Relaxed),
                )
            })
            .collect();
        counter(
            enc,
            "residency_events",
            "Block and audit events written, by sink.",
            &rows,
        )?;

        let sink_errors: u64 = t
            .sink_errors
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let sink_backlog: u64 = t
            .sink_backlog
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        counter(
            enc,
            "residency_events_lost",
            "Events not delivered: ring_full (kernel ring buffer full), rate_limited (per-CPU kernel rate limit), sink_error (a sink failed to write), sink_backlog (a sink did not keep up and its queue was full). The packets themselves are always counted in residency_packets_total.",
            &[
                (vec![("reason", "ring_full".to_owned())], k.lost_ring),
                (vec![("reason", "rate_limited".to_owned())], k.lost_rate),
                (vec![("reason", "sink_error".to_owned())], sink_errors),
                (vec![("reason", "sink_backlog".to_owned())], sink_backlog),
            ],
        )?;
        let stalled = t.stalled_sinks();
        let rows: Vec<_> = self
            .sinks
            .iter()
            .map(|k| {
                let s = stalled.iter().any(|(kind, _)| kind == k);
                (vec![("sink", k.as_str().to_owned())], i64::from(s))
            })
            .collect();
        gauge(
            enc,
            "residency_sink_stalled",
            "1 while a sink has events waiting and has not finished a write for 5 s (a stopped journald, a syslog peer that does not read, a paused stdout reader). Enforcement is not affected; events beyond its queue are dropped and counted as sink_backlog.",
            &rows,
        )?;
        counter(
            enc,
            "residency_events_received",
            "Events the agent read from the kernel ring buffer.",
            &[(vec![], t.received.load(Ordering::Relaxed))],
        )?;
        counter(
            enc,
            "residency_events_aggregated",
            "Repeated events folded into the count of an aggregated event (reported, not lost).",
            &[(vec![], t.aggregated.load(Ordering::Relaxed))],
        )?;
        Ok(())
    }

    /// The policy in force and the agent's state: prefixes, reloads, generation,
    /// attachment, the packet socket guard, the build.
    fn encode_state(&self, enc: &mut DescriptorEncoder, v: &Versioned) -> std::fmt::Result {
        let t = &self.telemetry;
        let info: Vec<_> = v
            .config
            .policies
            .iter()
            .map(|p| {
                (
                    vec![
                        ("policy", p.name.clone()),
                        ("mode", p.mode.as_str().to_owned()),
                    ],
                    1,
                )
            })
            .collect();
        gauge(
            enc,
            "residency_policy_info",
            "1 for each policy in force, with its mode (enforce, or audit: reports and blocks nothing).",
            &info,
        )?;
        let cgroups = t.policy_cgroups.lock().expect("lock").clone();
        gauge(
            enc,
            "residency_policy_cgroups_configured",
            "Cgroups each policy should judge: those the config names (existing or not) and, on a Kubernetes node, the pods it selects.",
            &cgroups
                .iter()
                .map(|(p, c, _)| (vec![("policy", p.clone())], *c as i64))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "residency_policy_cgroups_attached",
            "Cgroups of each policy that exist and are judged now (bound, below an attached program); fewer than configured means some are missing or failed to attach.",
            &cgroups
                .iter()
                .map(|(p, _, a)| (vec![("policy", p.clone())], *a as i64))
                .collect::<Vec<_>>(),
        )?;
        gauge(
            enc,
            "residency_config_last_reload_successful",
            "1 when the last reload (reload, SIGHUP, or a watched config change) was applied, 0 when it was rejected: the config on disk is then not the one in force.",
            &[(
                vec![],
                i64::from(!t.last_reload_failed.load(Ordering::Relaxed)),
            )],
        )?;
        gauge(
            enc,
            "residency_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload (or of the start).",
            &[(vec![], t.last_reload_success.load(Ordering::Relaxed) as i64)],
        )?;
        super::verification::encode(enc, t)?;
        super::sources::encode(enc, t)?;
        super::process::Process::read().encode(enc)?;
        let mut rows = Vec::new();
        for p in &v.config.policies {
            let c = crate::policy::counts(p);
            rows.push((
                vec![("policy", p.name.clone()), ("family", "ipv4".to_owned())],
                (c.allow_v4 + c.deny_v4) as i64,
            ));
            rows.push((
                vec![("policy", p.name.clone()), ("family", "ipv6".to_owned())],
                (c.allow_v6 + c.deny_v6) as i64,
            ));
        }
        gauge(
            enc,
            "residency_policy_prefixes",
            "Prefixes (allow and deny entries) loaded per policy and family.",
            &rows,
        )?;
        super::tables::encode(enc, v)?;
        counter(
            enc,
            "residency_reloads",
            "Policy reloads, by result.",
            &[
                (
                    vec![("result", "success".to_owned())],
                    t.reloads_ok.load(Ordering::Relaxed),
                ),
                (
                    vec![("result", "failure".to_owned())],
                    t.reloads_failed.load(Ordering::Relaxed),
                ),
            ],
        )?;
        if let Some(node) = self.kubernetes.get() {
            super::kubernetes::encode(enc, node, v)?;
        }
        gauge(
            enc,
            "residency_policy_generation",
            "Generation of the policy in force: 1 at start, one more per successful reload.",
            &[(vec![], v.generation as i64)],
        )?;
        gauge(
            enc,
            "residency_attached_cgroups",
            "Configured cgroups the program judges (attached directly or through an attached ancestor).",
            &[(
                vec![],
                if self.instance.exists() {
                    t.attached_cgroups.load(Ordering::Relaxed) as i64
                } else {
                    0
                },
            )],
        )?;
        gauge(
            enc,
            "residency_packet_socket_guard",
            "1 when packet sockets (AF_PACKET, AF_XDP) are denied as policies say; 0 when this kernel cannot deny them (the agent logs which enforce policies are exposed).",
            &[(
                vec![],
                i64::from(t.packet_socket_guard.load(Ordering::Relaxed)),
            )],
        )?;
        gauge(
            enc,
            "residency_pin_mount_lost",
            "1 while the bpffs holding the agent's pins is gone (unmounted or covered): the program still enforces, held by this process alone, until the agent pins it again on a bpffs at pin_path. Do not restart the agent meanwhile.",
            &[(vec![], i64::from(t.pin_mount_lost.load(Ordering::Relaxed)))],
        )?;
        gauge(
            enc,
            "residency_build_info",
            "Build information; always 1.",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1)],
        )?;
        Ok(())
    }
}
