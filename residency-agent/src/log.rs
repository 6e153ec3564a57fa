//! The agent's own log (`tracing`), so that its errors are stored as errors:
//!
//! - under systemd, where stderr is the journal's stream (`JOURNAL_STREAM` names it),
//!   natively through journald with each event's priority and fields
//!   (`tracing-journald`), identifier `residency-agent`;
//! - elsewhere, when stderr is not a terminal (a container's log, a file), each line
//!   starts with its syslog priority (`<3>` error … `<7>` debug, the sd-daemon
//!   convention log collectors and journald understand);
//! - on a terminal, plain lines (in colour).
//!
//! Filtered by `RESIDENCY_LOG` (tracing's env-filter syntax).

use std::io::IsTerminal as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// The log filter without `RESIDENCY_LOG`. kube-client's request trace logs every
/// failed API request at error level; the Kubernetes watch reports those failures
/// itself, once per outage, so the trace is off.
const DEFAULT_LOG: &str = "info,kube_client::client::builder=off";

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("RESIDENCY_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG))
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it connected to stdout/stderr.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

/// Sets up the log as the module doc says.
pub fn init() {
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        use tracing_journald::{Priority, PriorityMappings};
        // The same priorities as the prefixed lines (tracing-journald's default files
        // info as notice).
        let priorities = PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        };
        tracing_subscriber::registry()
            .with(
                journald
                    .with_syslog_identifier("residency-agent".into())
                    .with_priority_mappings(priorities)
                    .with_filter(filter()),
            )
            .init();
        return;
    }
    let terminal = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(terminal);
    if terminal {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter()))
            .init();
    } else {
        let fmt = fmt.event_format(Prefixed(
            tracing_subscriber::fmt::format().with_target(false),
        ));
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter()))
            .init();
    }
}

/// The syslog priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A format that starts each line with `<priority>`.
struct Prefixed<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // Every line of a multi-line message (a reload's list of changes) carries
        // the priority, or the reader files the rest at its default level.
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let p = priority(event.metadata().level());
        for l in line.lines() {
            writeln!(writer, "<{p}>{l}")?;
        }
        Ok(())
    }
}
