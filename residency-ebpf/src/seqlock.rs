//! The guard of the per-CPU slots the programs write (the verdict cache, the binding
//! memo). Programs on one CPU can interrupt each other (a softirq sending in the middle
//! of a process's send; a preempted program on a preemptible kernel), and a
//! half-written slot must never be read as whole. There is no compare-and-swap in the
//! base BPF instruction set, so a slot's sequence word is odd while it is written: a
//! writer that finds it odd leaves the slot alone, and a reader accepts what it read
//! only when the word was even and unchanged around the read. The slots' own tags (a
//! hash of the rest) catch the mix of two writers that the word alone cannot.

use core::{
    ptr::{read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

/// What `read` gives, if no write of the slot was under way or happened meanwhile.
///
/// # Safety
/// `seq` points to the sequence word of a per-CPU slot, which `read` reads.
#[inline(always)]
pub unsafe fn read<T>(seq: *const u32, read: impl FnOnce() -> Option<T>) -> Option<T> {
    // SAFETY: the caller's pointer to an aligned u32.
    let before = unsafe { read_volatile(seq) };
    if before & 1 != 0 {
        return None;
    }
    // The fences keep the compiler from moving the slot's reads out of the bracket.
    compiler_fence(Ordering::SeqCst);
    let value = read()?;
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above.
    (unsafe { read_volatile(seq) } == before).then_some(value)
}

/// Runs `write` on the slot, unless another write to it is under way on this CPU (it
/// is then left to finish).
///
/// # Safety
/// `seq` points to the sequence word of a per-CPU slot, which `write` writes.
#[inline(always)]
pub unsafe fn write(seq: *mut u32, write: impl FnOnce()) {
    // SAFETY: the caller's pointer to an aligned u32.
    let before = unsafe { read_volatile(seq) };
    if before & 1 != 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { write_volatile(seq, before | 1) };
    compiler_fence(Ordering::SeqCst);
    write();
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { write_volatile(seq, before.wrapping_add(2)) };
}
