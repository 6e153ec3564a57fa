//! Prometheus metrics and the health endpoint.
//!
//! Packet counts come straight from the kernel's per-CPU counters at scrape time, so
//! they are exact and cost nothing between scrapes; the agent's own counters (events
//! written per sink, events lost) are atomics in [`Telemetry`]. Labels stay
//! low-cardinality: policy, verdict, family, sink, reason — never an address or port.
//!
//! `/metrics` serves OpenMetrics to scrapers that ask for it and the classic Prometheus
//! text format otherwise; `/healthz` answers 200 while the
//! program is attached (its pinned instance exists) and the event reader runs.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use aya::maps::{MapData, PerCpuArray};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, prometheus_text, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use residency_common::{FAMILIES, Stat, Verdict, counter_index};

use crate::{config::SinkKind, policy::Versioned};

/// The kernel program's counters, taken out of the loaded object.
pub struct KernelCounters {
    pub counters: PerCpuArray<MapData, u64>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    /// Zeroes the packet counters of policy ids that now stand for another policy (a
    /// new policy taking a freed id, or counts adopted from an earlier agent whose ids
    /// differ), so that no series starts from someone else's count.
    pub fn reset(&mut self, ids: &[u32]) -> Result<(), aya::maps::MapError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| {
            aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            })
        })?;
        for &policy in ids {
            for verdict in [Verdict::Allowed, Verdict::Blocked, Verdict::Audited] {
                for family in 0..FAMILIES {
                    let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?;
                    self.counters
                        .set(counter_index(policy, verdict, family), zeros, 0)?;
                }
            }
        }
        Ok(())
    }

    /// Packets per `(policy id, verdict, family)` for the given policy ids, summed over
    /// CPUs; zeros included.
    pub fn packets(&self, ids: &[u32]) -> BTreeMap<(u32, &'static str, &'static str), u64> {
        let mut out = BTreeMap::new();
        for &policy in ids {
            for (verdict, name) in [
                (Verdict::Allowed, "allowed"),
                (Verdict::Blocked, "blocked"),
                (Verdict::Audited, "audited"),
            ] {
                for family in 0..FAMILIES {
                    let index = counter_index(policy, verdict, family);
                    let sum = self
                        .counters
                        .get(&index, 0)
                        .map(|v| v.iter().sum())
                        .unwrap_or(0);
                    out.insert(
                        (policy, name, if family == 0 { "ipv4" } else { "ipv6" }),
                        sum,
                    );
                }
            }
        }
        out
    }

    /// One health counter, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> u64 {
        self.stats
            .get(&(stat as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// The agent's own counters and state, shared by the event pipeline, the daemon and
/// the metrics endpoint.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Events written, per sink (index: position in [`SinkKind::ALL`]).
    pub events: [AtomicU64; 5],
    /// Events a sink failed to write, per sink.
    pub sink_errors: [AtomicU64; 5],
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
    /// Whether the packet socket guard (lsm_cgroup/socket_create) is attached.
    pub packet_socket_guard: AtomicBool,
}

impl Telemetry {
    pub fn sink_index(kind: SinkKind) -> usize {
        SinkKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every sink is in ALL")
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    pub versioned: Arc<RwLock<Versioned>>,
    pub kernel: Mutex<KernelCounters>,
    pub telemetry: Arc<Telemetry>,
    pub sinks: Vec<SinkKind>,
    pub instance: PathBuf,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Healthy: the pinned instance (and so the attachment) exists and events flow.
    pub fn healthy(&self) -> bool {
        self.instance.exists() && self.telemetry.reader_alive.load(Ordering::Relaxed)
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, i64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let v = self.versioned.read().expect("policy lock");
        let (packets, lost_ring, lost_rate, parse_errors, no_binding, trie_lookups, socket_denials) = {
            let k = self.kernel.lock().expect("kernel counters lock");
            (
                k.packets(&v.ids),
                k.stat(Stat::EventsLost),
                k.stat(Stat::EventsRateLimited),
                k.stat(Stat::ParseErrors),
                k.stat(Stat::NoBinding),
                k.stat(Stat::TrieLookups),
                k.stat(Stat::SocketDenials),
            )
        };
        let rows: Vec<_> = packets
            .into_iter()
            .map(|((p, verdict, family), n)| {
                (
                    vec![
                        (
                            "policy",
                            v.by_id(p).map(|p| p.name.clone()).unwrap_or_default(),
                        ),
                        ("verdict", verdict.to_owned()),
                        ("family", family.to_owned()),
                    ],
                    n,
                )
            })
            .collect();
        counter(
            &mut enc,
            "residency_packets",
            "Egress packets judged, by policy, verdict and address family (exact, from per-CPU kernel counters).",
            &rows,
        )?;

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
            &mut enc,
            "residency_events",
            "Block and audit events written, by sink.",
            &rows,
        )?;

        let sink_errors: u64 = t
            .sink_errors
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        counter(
            &mut enc,
            "residency_events_lost",
            "Events not delivered: ring_full (kernel ring buffer full), rate_limited (per-CPU kernel rate limit), sink_error (a sink failed to write). The packets themselves are always counted in residency_packets_total.",
            &[
                (vec![("reason", "ring_full".to_owned())], lost_ring),
                (vec![("reason", "rate_limited".to_owned())], lost_rate),
                (vec![("reason", "sink_error".to_owned())], sink_errors),
            ],
        )?;
        counter(
            &mut enc,
            "residency_trie_lookups",
            "Packets judged from the rule tries: a flow's first packet (per CPU), or every packet with [agent] verdict_cache = false. The rest of residency_packets_total came from the kernel's verdict cache.",
            &[(vec![], trie_lookups)],
        )?;
        counter(
            &mut enc,
            "residency_socket_denials",
            "connect() and sendto()/sendmsg() calls and packet socket creations refused (or, in audit mode, reported) by the socket-layer programs. Refused connect() and sendto() calls also count in residency_packets_total as blocked or audited.",
            &[(vec![], socket_denials)],
        )?;
        counter(
            &mut enc,
            "residency_events_received",
            "Events the agent read from the kernel ring buffer.",
            &[(vec![], t.received.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut enc,
            "residency_events_aggregated",
            "Repeated events folded into the count of an aggregated event (reported, not lost).",
            &[(vec![], t.aggregated.load(Ordering::Relaxed))],
        )?;
        counter(
            &mut enc,
            "residency_program_errors",
            "Packets the kernel program could not judge normally: parse (unparsable packet) and no_binding (no policy found; dropped).",
            &[
                (vec![("kind", "parse".to_owned())], parse_errors),
                (vec![("kind", "no_binding".to_owned())], no_binding),
            ],
        )?;

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
            &mut enc,
            "residency_policy_prefixes",
            "Prefixes (allow and deny entries) loaded per policy and family.",
            &rows,
        )?;
        counter(
            &mut enc,
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
        gauge(
            &mut enc,
            "residency_policy_generation",
            "Generation of the policy in force: 1 at start, one more per successful reload.",
            &[(vec![], v.generation as i64)],
        )?;
        gauge(
            &mut enc,
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
            &mut enc,
            "residency_packet_socket_guard",
            "1 when packet sockets (AF_PACKET, AF_XDP) are denied as policies say; 0 when this kernel cannot deny them (the agent logs which enforce policies are exposed).",
            &[(
                vec![],
                i64::from(t.packet_socket_guard.load(Ordering::Relaxed)),
            )],
        )?;
        gauge(
            &mut enc,
            "residency_build_info",
            "Build information; always 1.",
            &[(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], 1)],
        )?;
        Ok(())
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::{Router, http::StatusCode, http::header::CONTENT_TYPE, routing::get};

    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics.clone()));
    let registry = Arc::new(registry);
    let health = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let registry = registry.clone();
                async move {
                    // OpenMetrics for scrapers that ask for it (Prometheus does), the
                    // classic text format (0.0.4) for everything else (curl, promtool).
                    let openmetrics = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    let mut body = String::new();
                    let (result, content_type) = if openmetrics {
                        (
                            encode(&mut body, &registry),
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                    } else {
                        (
                            prometheus_text::encode(&mut body, &registry),
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                    };
                    match result {
                        Ok(()) => (StatusCode::OK, [(CONTENT_TYPE, content_type)], body),
                        Err(_) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                            "encoding failed\n".into(),
                        ),
                    }
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let ok = health.healthy();
                async move {
                    if ok {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not enforcing\n")
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}
