//! Library target of the kernel crate. It exists so that the agent can name this crate
//! as a build dependency (cargo then rebuilds the agent when the program changes); the
//! program itself is the `residency` binary in `main.rs`.
#![no_std]
