//! Prometheus metrics and the health endpoint.
//!
//! Packet counts come straight from the kernel's per-CPU counters at scrape time
//! (`kernel::counters`), so they are exact and cost nothing between scrapes; the
//! agent's own counters are atomics in [`Telemetry`]. [`collector`] turns both into
//! metric families, [`http`] serves them.

pub mod collector;
mod family;
pub mod http;
mod kubernetes;
pub mod process;
pub mod sources;
mod tables;
pub mod telemetry;
mod verification;

pub use collector::Metrics;
pub use http::serve;
pub use telemetry::Telemetry;
