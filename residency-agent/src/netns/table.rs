//! The local address trie (`RES_LOCAL_ADDRS`) this task keeps.

use std::collections::{BTreeSet, HashMap};

use aya::maps::{LpmTrie, MapData, MapError, lpm_trie::Key};
use residency_common::LocalAddrKey;

use super::dump::Prefix;

/// The trie, taken from the loaded object, and what this agent wrote to it for each
/// namespace (so a new dump writes only the difference).
pub struct LocalMaps {
    addrs: LpmTrie<MapData, LocalAddrKey, u8>,
    written: HashMap<u64, BTreeSet<Prefix>>,
}

impl LocalMaps {
    pub fn new(addrs: LpmTrie<MapData, LocalAddrKey, u8>) -> LocalMaps {
        LocalMaps {
            addrs,
            written: HashMap::new(),
        }
    }

    /// Makes namespace `cookie`'s entries exactly `prefixes`: new ones are added before
    /// old ones go, so an address kept throughout never misses.
    pub fn set(&mut self, cookie: u64, prefixes: &[Prefix]) -> Result<(), MapError> {
        let new: BTreeSet<Prefix> = prefixes.iter().copied().collect();
        let old = self.written.remove(&cookie).unwrap_or_default();
        let key = |(addr, bits): &Prefix| {
            Key::new(
                LocalAddrKey::prefix_len(u32::from(*bits)),
                LocalAddrKey::new(cookie, *addr),
            )
        };
        let mut kept = BTreeSet::new();
        let mut failed = None;
        for p in new.difference(&old) {
            match self.addrs.insert(&key(p), 1, 0) {
                Ok(()) => {
                    kept.insert(*p);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        for p in old.difference(&new) {
            let _ = self.addrs.remove(&key(p));
        }
        kept.extend(old.intersection(&new).copied());
        if !kept.is_empty() {
            self.written.insert(cookie, kept);
        }
        failed.map_or(Ok(()), Err)
    }
}
