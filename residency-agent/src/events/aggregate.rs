//! Aggregation of repeated events, so that a block storm cannot flood the journal.
//!
//! The first event of a key (policy, mode, protocol, destination, destination port) is
//! written at once; repeats of the same key within the window are counted, and when
//! the window closes one more event is written carrying their count. Memory is
//! bounded: with `max_keys` keys open, further events pass unaggregated.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::model::BlockEvent;

/// Policy, mode, hook, protocol, destination, port and cgroup: repeats of one
/// workload's attempt, never two workloads' (each keeps its own name in the summary).
/// Policy, audit, hook, protocol, destination, port, cgroup and socket option.
type Key = (
    String,
    bool,
    &'static str,
    String,
    Option<IpAddr>,
    u16,
    u64,
    Option<&'static str>,
);

struct Pending {
    started: Instant,
    /// When the window's first event was read, for the summary's `first_seen`.
    first: std::time::SystemTime,
    repeats: u32,
    last: BlockEvent,
}

pub struct Aggregator {
    window: Duration,
    max_keys: usize,
    open: HashMap<Key, Pending>,
}

impl Aggregator {
    pub fn new(window: Duration, max_keys: usize) -> Aggregator {
        Aggregator {
            window,
            max_keys,
            open: HashMap::new(),
        }
    }

    fn key(e: &BlockEvent) -> Key {
        (
            e.policy.clone(),
            e.audit,
            e.hook,
            e.protocol.clone(),
            e.dst,
            e.dst_port,
            e.cgroup_id,
            e.option,
        )
    }

    /// Takes one event; returns what to write now (the event itself, or nothing when it
    /// is a repeat inside an open window, plus a closed window's summary).
    pub fn offer(&mut self, event: BlockEvent, now: Instant) -> Vec<BlockEvent> {
        if self.window.is_zero() {
            return vec![event];
        }
        let key = Self::key(&event);
        let mut out = Vec::new();
        if let Some(p) = self.open.get_mut(&key) {
            if now.duration_since(p.started) < self.window {
                p.repeats += event.count;
                p.last = event;
                return out;
            }
            let p = self.open.remove(&key).expect("present");
            if p.repeats > 0 {
                out.push(summary(p));
            }
        }
        if self.open.len() < self.max_keys {
            self.open.insert(
                key,
                Pending {
                    started: now,
                    first: event.time,
                    repeats: 0,
                    last: event.clone(),
                },
            );
        }
        out.push(event);
        out
    }

    /// Closes every window that has run its length; returns their summaries.
    pub fn flush(&mut self, now: Instant) -> Vec<BlockEvent> {
        let expired: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= self.window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in expired {
            let p = self.open.remove(&k).expect("present");
            if p.repeats > 0 {
                out.push(summary(p));
            }
        }
        out
    }

    #[cfg(test)]
    fn open_keys(&self) -> usize {
        self.open.len()
    }
}

/// A closed window's summary: the last repeat, counting the repeats, and the
/// window's first and last event times (`first_seen`, and `time` as `last_seen`).
fn summary(p: Pending) -> BlockEvent {
    let mut e = p.last;
    e.count = p.repeats;
    e.first_seen = Some(p.first);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        host::{Hierarchy, PathCache},
    };

    fn ev(dst_last: u8, dport: u16) -> BlockEvent {
        let config = Config::parse("[[policy]]\nname = \"p\"\ncgroups = [\"x\"]\n", "t").unwrap();
        let mut paths = PathCache::new(Hierarchy { mount: "/c".into() }, []);
        let mut raw = crate::events::tests::event();
        raw.dst_addr[3] = dst_last;
        raw.dst_port = dport;
        BlockEvent::decode(&raw, &crate::policy::Versioned::initial(config), &mut paths)
    }

    #[test]
    fn repeats_are_reported_once_with_a_count() {
        let t0 = Instant::now();
        let w = Duration::from_secs(1);
        let mut a = Aggregator::new(w, 100);
        assert_eq!(a.offer(ev(9, 53), t0).len(), 1, "first is written at once");
        for i in 0..99 {
            assert!(a.offer(ev(9, 53), t0 + Duration::from_millis(i)).is_empty());
        }
        assert_eq!(
            a.offer(ev(9, 54), t0).len(),
            1,
            "another port is another key"
        );
        assert!(
            a.flush(t0 + Duration::from_millis(500)).is_empty(),
            "window still open"
        );
        let out = a.flush(t0 + w);
        assert_eq!(out.len(), 1, "only the key with repeats has a summary");
        assert_eq!(out[0].count, 99);
        // The summary says the window it covers.
        let line = out[0].line();
        assert!(
            line.contains(" count=99 first_seen=") && line.contains(" last_seen="),
            "{line}"
        );
        let json = out[0].json();
        assert!(
            json["first_seen"].is_string() && json["last_seen"].is_string(),
            "{json}"
        );
        let mut written = Vec::new();
        out[0].write_json(&mut written).unwrap();
        assert_eq!(
            written,
            serde_json::to_vec(&json).unwrap(),
            "the sink's bytes"
        );
        assert!(out[0].first_seen.unwrap() <= out[0].time);
        assert_eq!(a.open_keys(), 0);
    }

    #[test]
    fn memory_is_bounded_and_nothing_is_dropped() {
        let t0 = Instant::now();
        let mut a = Aggregator::new(Duration::from_secs(1), 10);
        let mut written = 0;
        for i in 0..50u8 {
            written += a.offer(ev(i, 53), t0).len();
        }
        assert_eq!(written, 50, "beyond max_keys events pass unaggregated");
        assert_eq!(a.open_keys(), 10);
        let mut a = Aggregator::new(Duration::ZERO, 10);
        assert_eq!(
            a.offer(ev(1, 1), t0).len() + a.offer(ev(1, 1), t0).len(),
            2,
            "window 0 disables"
        );
    }
}
