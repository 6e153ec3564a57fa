//! Waiting for what an agent does in its own time (a refresh applied, a metric
//! counted, a journal entry written): poll until it holds, fail loudly if it never does.

use std::time::{Duration, Instant};

/// Polls `f` every 100 ms until it holds; panics naming `what` after `within`.
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
