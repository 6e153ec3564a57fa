//! Batched map writes (`BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH`): many entries
//! per system call. A version of a country-database policy is 100,000s of trie
//! entries; one call each would spend as much time entering the kernel as inserting.
//! The LPM trie has had the generic batch operations since Linux 5.6; aya 0.14 does
//! not wrap them.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use super::bpf::{Attr, bpf};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The bytes of a plain value (a map key or value type: `aya::Pod`, no padding
/// the kernel would read as garbage).
pub fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` is plain old data; the slice covers exactly the value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Writes `count` entries into `map`: `keys` and `values` hold them back to back.
/// On failure, the error and how many entries were written before it.
pub fn update(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), (std::io::Error, u32)> {
    let mut attr = Attr::new();
    // struct { in_batch, out_batch, keys, values; u32 count, map_fd; u64 elem_flags, flags }
    attr.u64_at(16, keys.as_ptr() as u64)
        .u64_at(24, values.as_ptr() as u64)
        .u32_at(32, count)
        .u32_at(36, map.as_raw_fd() as u32);
    bpf(BPF_MAP_UPDATE_BATCH, &mut attr)
        .map(|_| ())
        .map_err(|e| (e, attr.u32(32)))
}

/// Deletes `count` keys (back to back in `keys`) from `map`; stops at the first key
/// that is not there.
pub fn delete(map: BorrowedFd<'_>, keys: &[u8], count: u32) -> std::io::Result<()> {
    let mut attr = Attr::new();
    attr.u64_at(16, keys.as_ptr() as u64)
        .u32_at(32, count)
        .u32_at(36, map.as_raw_fd() as u32);
    bpf(BPF_MAP_DELETE_BATCH, &mut attr).map(|_| ())
}
