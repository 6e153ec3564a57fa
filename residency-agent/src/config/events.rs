//! `[events]`: where block and audit events go (sinks, the syslog target) and how
//! they are thinned (aggregation window, per-CPU kernel rate limit, address masking).

use std::{net::SocketAddr, path::PathBuf};

use super::{ConfigError, locate::Locator, raw::RawEvents};

/// Where events go (`[events] sinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkKind {
    /// The systemd journal, native protocol, with structured `RESIDENCY_*` fields.
    Journal,
    /// RFC 5424 syslog, to the local socket or a UDP/TCP target.
    Syslog,
    /// JSON lines on stdout (Kubernetes log collectors).
    Json,
    /// The kernel log (`dmesg`, `journalctl -k`), like an iptables `LOG` target.
    Kmsg,
    /// logfmt lines on stdout.
    Text,
}

impl SinkKind {
    pub const ALL: [SinkKind; 5] = [
        SinkKind::Journal,
        SinkKind::Syslog,
        SinkKind::Json,
        SinkKind::Kmsg,
        SinkKind::Text,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Journal => "journal",
            SinkKind::Syslog => "syslog",
            SinkKind::Json => "json",
            SinkKind::Kmsg => "kmsg",
            SinkKind::Text => "text",
        }
    }
}

/// Where syslog lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogTarget {
    /// A local datagram socket, `/dev/log` by default.
    Unix(PathBuf),
    /// RFC 5426: one message per datagram.
    Udp(SocketAddr),
    /// RFC 6587 octet counting over TCP.
    Tcp(SocketAddr),
}

/// `[events]`: how blocks are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `None`: the default (journal when its socket exists, otherwise JSON).
    pub sinks: Option<Vec<SinkKind>>,
    /// Truncate logged addresses (IPv4 to /24, IPv6 to /48).
    pub mask_addresses: bool,
    /// Repeats of one policy + destination + port + protocol within this window are
    /// reported once, with a count. Zero disables aggregation.
    pub aggregate_window: std::time::Duration,
    /// Most distinct keys held for aggregation; beyond, events pass unaggregated.
    pub aggregate_max_keys: usize,
    /// Events each CPU may emit per second (kernel rate limit); 0 = unlimited.
    pub rate_limit_per_cpu: u32,
    /// Burst above that rate.
    pub rate_limit_burst: u32,
    pub syslog_target: SyslogTarget,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            sinks: None,
            mask_addresses: false,
            aggregate_window: std::time::Duration::from_secs(1),
            aggregate_max_keys: 10_000,
            rate_limit_per_cpu: 1000,
            rate_limit_burst: 200,
            syslog_target: SyslogTarget::Unix(PathBuf::from("/dev/log")),
        }
    }
}

pub(crate) fn parse_events(at: &Locator<'_>, raw: RawEvents) -> Result<EventsConfig, ConfigError> {
    let mut ev = EventsConfig::default();
    if let Some(list) = raw.sinks {
        let mut sinks = Vec::new();
        for item in list.get_ref() {
            let kind = SinkKind::ALL
                .into_iter()
                .find(|k| k.as_str() == item.get_ref())
                .ok_or_else(|| {
                    at.error(
                        item.span(),
                        "events.sinks",
                        &format!(
                            "unknown sink \"{}\"; use journal, syslog, json, kmsg or text",
                            item.get_ref()
                        ),
                    )
                })?;
            if sinks.contains(&kind) {
                return Err(at.error(
                    item.span(),
                    "events.sinks",
                    &format!("\"{}\" is listed twice", kind.as_str()),
                ));
            }
            sinks.push(kind);
        }
        if sinks.is_empty() {
            return Err(at.error(
                list.span(),
                "events.sinks",
                "is empty: name at least one sink",
            ));
        }
        ev.sinks = Some(sinks);
    }
    if let Some(m) = raw.mask_addresses {
        ev.mask_addresses = m;
    }
    if let Some(ms) = raw.aggregate_window_ms {
        ev.aggregate_window = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = raw.aggregate_max_keys {
        if *n.get_ref() == 0 || *n.get_ref() > 1_000_000 {
            return Err(at.error(
                n.span(),
                "events.aggregate_max_keys",
                "must be between 1 and 1000000",
            ));
        }
        ev.aggregate_max_keys = *n.get_ref() as usize;
    }
    if let Some(r) = raw.rate_limit_per_cpu {
        // The kernel's token bucket multiplies elapsed nanoseconds by the rate; a
        // million events per second and CPU keeps that far from overflowing.
        if *r.get_ref() > 1_000_000 {
            return Err(at.error(
                r.span(),
                "events.rate_limit_per_cpu",
                "must be at most 1000000 (0 = unlimited)",
            ));
        }
        ev.rate_limit_per_cpu = *r.get_ref();
    }
    if let Some(b) = raw.rate_limit_burst {
        if *b.get_ref() == 0 {
            return Err(at.error(b.span(), "events.rate_limit_burst", "must be at least 1"));
        }
        ev.rate_limit_burst = *b.get_ref();
    }
    if let Some(t) = raw.syslog_target {
        ev.syslog_target = parse_syslog_target(t.get_ref())
            .map_err(|reason| at.error(t.span(), "events.syslog_target", &reason))?;
    }
    Ok(ev)
}

/// `unix:/dev/log`, `udp://127.0.0.1:514` or `tcp://127.0.0.1:601`.
fn parse_syslog_target(text: &str) -> Result<SyslogTarget, String> {
    let addr = |a: &str| {
        a.parse::<SocketAddr>()
            .map_err(|_| format!("\"{a}\" is not an address:port (e.g. 127.0.0.1:514)"))
    };
    if let Some(p) = text.strip_prefix("unix:") {
        if !p.starts_with('/') {
            return Err(format!(
                "\"{text}\": the socket path must be absolute (unix:/dev/log)"
            ));
        }
        Ok(SyslogTarget::Unix(PathBuf::from(p)))
    } else if let Some(a) = text.strip_prefix("udp://") {
        Ok(SyslogTarget::Udp(addr(a)?))
    } else if let Some(a) = text.strip_prefix("tcp://") {
        Ok(SyslogTarget::Tcp(addr(a)?))
    } else {
        Err(format!(
            "\"{text}\" is not a syslog target: use unix:/PATH, udp://ADDR:PORT or tcp://ADDR:PORT"
        ))
    }
}
