//! Each sink on a thread of its own, behind a bounded queue, so that nothing a sink
//! talks to can hold up the agent: a journald that stopped reading, a syslog peer
//! that accepts and never reads, a stdout pipe whose reader paused. The event reader
//! only queues; a full queue drops the event and counts it
//! (`residency_events_lost_total{reason="sink_backlog"}`), and the runtime that serves
//! scrapes, the control socket, signals and the cgroup rescans never waits on a sink.
//!
//! A sink whose queue holds events and that has not finished a write for
//! [`STALL_AFTER`] is reported as stalled (`/healthz` says "degraded", the metric
//! `residency_sink_stalled` says which): reporting is behind, enforcement is not.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::Sink;
use crate::{config::SinkKind, events::model::BlockEvent, metrics::Telemetry};

/// Events a sink may have waiting; beyond it new events are dropped (and counted).
/// About 2 MiB per sink at the size of an event.
pub const QUEUE: usize = 8192;

/// A buffering sink is flushed at least every this many events.
const FLUSH_EVERY: u64 = 1024;

/// A sink with waiting events and no finished write for this long is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// How a writer thread is doing, for health and metrics.
#[derive(Debug)]
pub struct Progress {
    pub kind: SinkKind,
    /// Events queued and not yet written (or failed).
    pub queued: AtomicU64,
    /// Milliseconds since `epoch` at the last successful write or flush.
    last_ms: AtomicU64,
    epoch: Instant,
}

impl Progress {
    fn new(kind: SinkKind) -> Progress {
        Progress {
            kind,
            queued: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn moved(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Waiting events and nothing delivered for [`STALL_AFTER`]: since how long, if
    /// so.
    pub fn stalled_for(&self) -> Option<Duration> {
        if self.queued.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = self
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        (since >= STALL_AFTER).then_some(since)
    }
}

struct Writer {
    /// Events are shared by every sink's queue, not copied for each.
    queue: SyncSender<Arc<BlockEvent>>,
    progress: Arc<Progress>,
    thread: JoinHandle<()>,
}

/// The sinks' writer threads; the event reader hands each event to every one.
pub struct Writers {
    writers: Vec<Writer>,
    telemetry: Arc<Telemetry>,
}

impl Writers {
    /// Starts one thread per sink.
    pub fn start(sinks: Vec<Box<dyn Sink>>, telemetry: Arc<Telemetry>) -> std::io::Result<Writers> {
        let mut writers = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let (queue, events) = sync_channel(QUEUE);
            let progress = Arc::new(Progress::new(sink.kind()));
            let (p, t) = (progress.clone(), telemetry.clone());
            let thread = std::thread::Builder::new()
                .name(format!("sink-{}", sink.kind().as_str()))
                .spawn(move || write_all(sink, &events, &p, &t))?;
            writers.push(Writer {
                queue,
                progress,
                thread,
            });
        }
        Ok(Writers { writers, telemetry })
    }

    /// The writers' progress, for `/healthz` and the metrics.
    pub fn progress(&self) -> Vec<Arc<Progress>> {
        self.writers.iter().map(|w| w.progress.clone()).collect()
    }

    /// Queues `event` for every sink; never blocks.
    pub fn dispatch(&self, event: BlockEvent) {
        let event = Arc::new(event);
        for w in &self.writers {
            let i = Telemetry::sink_index(w.progress.kind);
            w.progress.queued.fetch_add(1, Ordering::Relaxed);
            match w.queue.try_send(Arc::clone(&event)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    w.progress.queued.fetch_sub(1, Ordering::Relaxed);
                    let n = self.telemetry.sink_backlog[i].fetch_add(1, Ordering::Relaxed);
                    if n.is_multiple_of(10_000) {
                        tracing::warn!(
                            sink = w.progress.kind.as_str(),
                            dropped = n + 1,
                            "a sink is not keeping up: its queue is full and events are dropped (counted as sink_backlog)"
                        );
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    // The writer thread is gone (it panicked): a failed write.
                    w.progress.queued.fetch_sub(1, Ordering::Relaxed);
                    self.telemetry.sink_errors[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Closes the queues and gives the writers until `deadline` to write what is
    /// queued; a stalled one is left behind (the process is ending).
    pub fn finish(self, within: Duration) {
        let deadline = Instant::now() + within;
        let threads: Vec<_> = self
            .writers
            .into_iter()
            .map(|w| {
                drop(w.queue);
                w.thread
            })
            .collect();
        for t in threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// A writer thread: writes what arrives, and flushes whenever the queue runs empty,
/// so a burst costs one flush and a lone event waits for none.
fn write_all(
    mut sink: Box<dyn Sink>,
    events: &Receiver<Arc<BlockEvent>>,
    progress: &Progress,
    telemetry: &Telemetry,
) {
    // A buffering sink's events stay counted as queued until flushed: a flush that
    // blocks (a paused pipe) shows as a stall.
    let buffered = sink.buffered();
    let mut unflushed: u64 = 0;
    let flush = |sink: &mut Box<dyn Sink>, unflushed: &mut u64| {
        if super::flush_one(sink.as_mut(), telemetry) {
            progress.moved();
        }
        progress.queued.fetch_sub(*unflushed, Ordering::Relaxed);
        *unflushed = 0;
    };
    while let Ok(first) = events.recv() {
        let mut next = Some(first);
        while let Some(event) = next {
            let ok = super::write_one(sink.as_mut(), &event, telemetry);
            if buffered {
                unflushed += 1;
            } else {
                if ok {
                    progress.moved();
                }
                progress.queued.fetch_sub(1, Ordering::Relaxed);
            }
            // In a storm the queue never runs empty: flush (and count) as we go.
            if unflushed == FLUSH_EVERY {
                flush(&mut sink, &mut unflushed);
            }
            next = events.try_recv().ok();
        }
        flush(&mut sink, &mut unflushed);
    }
}
