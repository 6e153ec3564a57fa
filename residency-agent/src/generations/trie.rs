//! The rule tries written and emptied in batches (`BPF_MAP_UPDATE_BATCH`/`DELETE_BATCH`,
//! `sys/batch.rs`): a million prefixes in about 120 system calls instead of a million.

use std::os::fd::AsFd as _;

use aya::maps::{IterableMap as _, LpmTrie, MapData, MapError, lpm_trie::Key};

use crate::{kernel::BpfError, sys::batch};

/// Entries per batched system call.
const BATCH: usize = 8192;

/// Fills `chunk` with the next [`BATCH`] items of `items`; false once none are left.
fn next_batch<T>(items: &mut impl Iterator<Item = T>, chunk: &mut Vec<T>) -> bool {
    chunk.clear();
    chunk.extend(items.by_ref().take(BATCH));
    !chunk.is_empty()
}

/// Writes the `total` `entries` into `trie` in batches, counting in `written` the
/// entries written (the first ones of `entries`, so that a failure half way can be
/// undone); says how far it has got every 100,000 entries.
pub(super) fn write_trie<K: aya::Pod + std::fmt::Debug, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    mut entries: impl Iterator<Item = (Key<K>, V)>,
    total: usize,
    name: &'static str,
    written: &mut usize,
) -> Result<(), BpfError> {
    let fd = trie.map().fd().as_fd();
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    let mut chunk = Vec::with_capacity(BATCH);
    while next_batch(&mut entries, &mut chunk) {
        keys.clear();
        values.clear();
        for (k, v) in &chunk {
            keys.extend_from_slice(batch::bytes_of(k));
            values.extend_from_slice(batch::bytes_of(v));
        }
        let result = batch::update(fd, &keys, &values, chunk.len() as u32);
        let done = match &result {
            Ok(()) => chunk.len(),
            Err((_, done)) => *done as usize,
        };
        *written += done;
        if let Err((e, _)) = result {
            let k = &chunk[done.min(chunk.len() - 1)].0;
            return Err(BpfError::MapFull {
                name,
                entry: format!("{:?}/{}", k.data(), k.prefix_len()),
                source: MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_update_batch",
                    io_error: e,
                }),
            });
        }
        if *written / 100_000 != (*written - done) / 100_000 {
            tracing::info!(
                map = name,
                done = *written,
                total,
                "writing the policy's prefixes into the idle slot"
            );
        }
    }
    Ok(())
}

/// Removes `keys` from `trie`, in batches; a key already gone is fine (deletion is
/// idempotent), the batch it was in is then deleted key by key.
pub(super) fn delete_trie<K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    mut keys: impl Iterator<Item = Key<K>>,
) {
    let mut bytes = Vec::new();
    let mut chunk = Vec::with_capacity(BATCH);
    while next_batch(&mut keys, &mut chunk) {
        bytes.clear();
        for k in &chunk {
            bytes.extend_from_slice(batch::bytes_of(k));
        }
        if batch::delete(trie.map().fd().as_fd(), &bytes, chunk.len() as u32).is_err() {
            for k in &chunk {
                let _ = trie.remove(k);
            }
        }
    }
}
