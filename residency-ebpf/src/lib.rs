//! Library target of the kernel crate, empty on purpose. The agent names this crate as
//! a build dependency (`residency-agent/Cargo.toml`), so cargo reruns the agent's build
//! script, which rebuilds and embeds the kernel object, whenever this crate's library
//! or one of its dependencies (`residency-common`) changes; aya-build's own
//! `rerun-if-changed` on this crate's directory covers the program's sources. The
//! program itself is the `residency` binary in `main.rs`.
#![no_std]
