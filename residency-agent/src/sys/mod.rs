//! The system calls the agent makes itself, each behind a function that records what
//! failed. Kept crates (`nix`, `inotify`, aya) cover most; the raw calls left are the
//! ones no crate wraps: a map-of-maps update as an RCU barrier ([`bpf`]), batched map
//! updates and deletes ([`batch`]) and `open_by_handle_at` ([`handle`]).

pub mod batch;
pub mod bpf;
pub mod fs;
pub mod handle;
pub mod notify;
pub mod users;

/// Gives the pages of freed heap memory back to the system. glibc keeps what a
/// large, short-lived step freed (the kernel's BTF parsed at load, a swapped-out
/// version's config) resident for reuse; an agent on every node should not hold it.
/// Called after load and after a reload's old version is retired.
pub fn return_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Restores SIGPIPE's default action (end the process), which the Rust runtime sets
/// to ignored: for the commands that print and whose reader may go away.
pub fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
