//! The event pipeline's task: reads the kernel's ring buffer as it becomes readable,
//! decodes each record, aggregates repeats and hands every event to every sink.

use std::sync::{Arc, RwLock, atomic::Ordering};

use aya::maps::{MapData, RingBuf};
use residency_common::Event;
use tokio::io::unix::AsyncFd;

use super::{
    aggregate::Aggregator,
    model::BlockEvent,
    sinks::{Sink, writer::Writers},
    workload::Namer,
};
use crate::{config::EventsConfig, host::PathCache, metrics::Telemetry, policy::Versioned};

/// Registers a ring buffer (events, or aya-log's) with the tokio reactor for reads.
pub fn readable<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its map fd for its whole life and never swaps it, which is what
    // `register` asks of its caller.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The event pipeline: reads the ring buffer until the task is cancelled, aggregates
/// repeats and writes every event to every sink.
pub async fn run(
    ring: RingBuf<MapData>,
    version: Arc<RwLock<Versioned>>,
    mut paths: PathCache,
    sinks: Vec<Box<dyn Sink>>,
    telemetry: Arc<Telemetry>,
    events: EventsConfig,
    namer: Namer,
) -> std::io::Result<()> {
    let writers = Writers::start(sinks, telemetry.clone())?;
    let _ = telemetry.sink_progress.set(writers.progress());
    let writers = Finish(Some(writers));
    let mut fd = readable(ring)?;
    let mut aggregator = Aggregator::new(events.aggregate_window, events.aggregate_max_keys);
    // Each event's destination for the tally, written here rather than allocated.
    let mut destination = String::new();
    let tick = events
        .aggregate_window
        .max(std::time::Duration::from_millis(100))
        / 2;
    let mut flush = tokio::time::interval(tick);
    telemetry.reader_alive.store(true, Ordering::Relaxed);
    let _alive = AliveGuard(telemetry.clone());
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                let now = std::time::Instant::now();
                let mut taken = 0;
                // A storm must not keep the runtime (scrapes, control, rescans) from
                // running: at most BATCH records per turn, then the reader yields.
                while taken < BATCH && let Some(item) = ring.next() {
                    taken += 1;
                    if item.len() < size_of::<Event>() {
                        tracing::warn!(len = item.len(), "short event on the ring buffer; skipped");
                        continue;
                    }
                    // SAFETY: the kernel wrote a whole `Event` (checked length); read unaligned.
                    let raw: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    telemetry.received.fetch_add(1, Ordering::Relaxed);
                    // Decoded against the version in force when read: ids are stable
                    // by name across reloads, so an event a moment older still names
                    // its policy.
                    let mut event = BlockEvent::decode(&raw, &version.read().expect("policy lock"), &mut paths);
                    event.workload = namer.name(event.cgroup.as_deref());
                    if !event.audit {
                        event.write_destination(&mut destination);
                        telemetry.tally_blocked(&event.policy, &destination, u64::from(event.count));
                    }
                    namer.count(&event);
                    for e in aggregator.offer(event, now) {
                        telemetry.aggregated.fetch_add(u64::from(e.count.saturating_sub(1)), Ordering::Relaxed);
                        writers.dispatch(e);
                    }
                }
                if taken < BATCH {
                    guard.clear_ready();
                } else {
                    drop(guard);
                    tokio::task::yield_now().await;
                }
            }
            _ = flush.tick() => {
                for e in aggregator.flush(std::time::Instant::now()) {
                    telemetry.aggregated.fetch_add(u64::from(e.count.saturating_sub(1)), Ordering::Relaxed);
                    writers.dispatch(e);
                }
            }
        }
    }
}

/// Ring buffer records read per turn before the reader yields to the runtime.
const BATCH: usize = 4096;

/// The writers, given a moment to write out their queues however the reader ends
/// (the runtime drops the task at shutdown).
struct Finish(Option<Writers>);

impl std::ops::Deref for Finish {
    type Target = Writers;
    fn deref(&self) -> &Writers {
        self.0.as_ref().expect("writers until drop")
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.finish(std::time::Duration::from_secs(1));
        }
    }
}

/// Clears `reader_alive` however the reader ends (error, cancel, panic).
struct AliveGuard(Arc<Telemetry>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.reader_alive.store(false, Ordering::Relaxed);
    }
}
