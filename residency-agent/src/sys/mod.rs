//! The system calls the agent makes itself, each behind a function that records what
//! failed. Kept crates (`nix`, `inotify`, aya) cover most; the raw calls left are the
//! ones no crate wraps: a map-of-maps update as an RCU barrier ([`bpf`]) and
//! `open_by_handle_at` ([`handle`]).

pub mod bpf;
pub mod fs;
pub mod handle;
pub mod notify;
pub mod users;
