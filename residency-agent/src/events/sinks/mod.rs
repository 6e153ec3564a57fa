//! Event sinks: where block and audit events go (`[events] sinks`).
//!
//! Every sink takes the same [`BlockEvent`]; each renders it in its own format, on a
//! thread of its own behind a bounded queue ([`writer`]). A sink that fails to write
//! counts the failure (`residency_events_lost_total{reason="sink_error"}`), one that
//! does not keep up drops and counts (`reason="sink_backlog"`), and the agent carries
//! on: reporting never holds up enforcement or the agent's other work.

mod journal;
mod kmsg;
mod stdout;
mod syslog;
pub mod writer;

use std::{path::Path, sync::atomic::Ordering};

use crate::{
    config::{EventsConfig, SinkKind},
    events::model::BlockEvent,
    metrics::Telemetry,
};

/// Path of journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// One destination for events.
pub trait Sink: Send {
    fn kind(&self) -> SinkKind;
    /// Delivers the event, or (a [`Sink::buffered`] sink) takes it into its buffer.
    fn write(&mut self, event: &BlockEvent) -> std::io::Result<()>;
    /// Writes out what `write` buffered, and says how many of those events were
    /// delivered whole and how many were lost. Called whenever the sink's queue runs
    /// empty (and every so many events in a storm), so a storm costs one system call
    /// per batch, not per event.
    fn flush(&mut self) -> Flushed {
        Flushed::default()
    }
    /// Whether `write` only buffers: its events count as delivered (or lost) when
    /// flushed, not when taken.
    fn buffered(&self) -> bool {
        false
    }
}

/// What a flush did with the buffered events.
#[derive(Debug, Default)]
pub struct Flushed {
    pub delivered: u64,
    pub lost: u64,
    /// Why events were lost.
    pub error: Option<std::io::Error>,
}

/// Flushes one sink, counting its buffered events as written or lost. Whether all
/// were delivered.
pub(crate) fn flush_one(sink: &mut dyn Sink, telemetry: &Telemetry) -> bool {
    let f = sink.flush();
    let i = Telemetry::sink_index(sink.kind());
    telemetry.events[i].fetch_add(f.delivered, Ordering::Relaxed);
    if f.lost > 0 || f.error.is_some() {
        let n = telemetry.sink_errors[i].fetch_add(f.lost.max(1), Ordering::Relaxed);
        if n.is_multiple_of(100) || f.lost > 1 {
            tracing::warn!(
                sink = sink.kind().as_str(),
                lost = f.lost,
                "writing events failed: {}",
                f.error.as_ref().map_or("?".to_owned(), ToString::to_string)
            );
        }
    }
    f.lost == 0 && f.error.is_none()
}

/// The configured sinks, or the default: the journal when its socket exists,
/// otherwise JSON lines on stdout.
pub fn selected(config: &EventsConfig) -> Vec<SinkKind> {
    match &config.sinks {
        Some(list) => list.clone(),
        None if Path::new(JOURNAL_SOCKET).exists() => vec![SinkKind::Journal],
        None => vec![SinkKind::Json],
    }
}

/// Opens every selected sink.
pub fn open(config: &EventsConfig, kinds: &[SinkKind]) -> std::io::Result<Vec<Box<dyn Sink>>> {
    kinds
        .iter()
        .map(|k| -> std::io::Result<Box<dyn Sink>> {
            Ok(match k {
                SinkKind::Journal => Box::new(journal::Journal),
                SinkKind::Syslog => Box::new(syslog::Syslog::open(&config.syslog_target)?),
                SinkKind::Json => Box::new(stdout::Stdout::new(true)),
                SinkKind::Text => Box::new(stdout::Stdout::new(false)),
                SinkKind::Kmsg => Box::new(kmsg::Kmsg::open()?),
            })
        })
        .collect()
}

/// RFC 5424 rendering, for unit tests elsewhere in the crate.
#[cfg(test)]
pub fn syslog_format_for_test(event: &BlockEvent) -> String {
    syslog::format(event, "host", 1, std::time::SystemTime::UNIX_EPOCH)
}

/// Writes one event to one sink, counting what was written and what failed. Whether
/// it was written.
pub(crate) fn write_one(sink: &mut dyn Sink, event: &BlockEvent, telemetry: &Telemetry) -> bool {
    let i = Telemetry::sink_index(sink.kind());
    match sink.write(event) {
        Ok(()) => {
            if !sink.buffered() {
                telemetry.events[i].fetch_add(1, Ordering::Relaxed);
            }
            true
        }
        Err(e) => {
            // Rare by nature (a full disk, a dead syslog server); say it once per
            // hundred so the agent's own log cannot flood either.
            let n = telemetry.sink_errors[i].fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(100) {
                tracing::warn!(
                    sink = sink.kind().as_str(),
                    errors = n + 1,
                    "writing an event failed: {e}"
                );
            }
            false
        }
    }
}
