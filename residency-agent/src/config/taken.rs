//! The entries a policy has taken, by prefix and ports: a duplicate or an allow/deny
//! conflict is an error, and an IP-range source never overrides an entry written by
//! hand (nor an earlier source's).
//!
//! A policy can hold a million entries, and this index lives beside them while the
//! config is read: it stores only their positions in the policy's entry list (4 bytes
//! each, against 48 for a map of keys and values), hashed with foldhash.

use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use ipnetwork::IpNetwork;

use super::entry::{Entry, PortSpec};

/// Positions in one policy's entry list, found by `(prefix, ports)`.
pub(in crate::config) struct Taken {
    table: HashTable<u32>,
    /// Seeded per process: IP-range sources are downloaded lists, and a table keyed
    /// by their contents must not hash the same way on every run.
    hasher: foldhash::fast::RandomState,
}

type Key = (IpNetwork, Option<PortSpec>);

fn key_of(e: &Entry) -> Key {
    (e.network, e.ports)
}

impl Taken {
    /// An index with room for `n` entries before it grows.
    pub(in crate::config) fn with_capacity(n: usize) -> Taken {
        Taken {
            table: HashTable::with_capacity(n),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Room for `n` more entries (a source about to add its prefixes): one growth,
    /// not one per doubling.
    pub(in crate::config) fn reserve(&mut self, n: usize, entries: &[Entry]) {
        let hasher = self.hasher.clone();
        self.table
            .reserve(n, |&i| hasher.hash_one(key_of(&entries[i as usize])));
    }

    /// The position of the entry taken for `network` and `ports`, if any.
    pub(in crate::config) fn get(
        &self,
        entries: &[Entry],
        network: IpNetwork,
        ports: Option<PortSpec>,
    ) -> Option<usize> {
        let key = (network, ports);
        self.table
            .find(self.hasher.hash_one(key), |&i| {
                key_of(&entries[i as usize]) == key
            })
            .map(|&i| i as usize)
    }

    /// Takes `entries[i]`'s prefix and ports, unless an earlier entry has them: then
    /// that entry's position, and nothing is taken.
    pub(in crate::config) fn take(&mut self, entries: &[Entry], i: usize) -> Option<usize> {
        let key = key_of(&entries[i]);
        let hasher = self.hasher.clone();
        let position = u32::try_from(i).expect("a policy holds fewer than 2^32 entries");
        match self.table.entry(
            hasher.hash_one(key),
            |&j| key_of(&entries[j as usize]) == key,
            |&j| hasher.hash_one(key_of(&entries[j as usize])),
        ) {
            hashbrown::hash_table::Entry::Occupied(e) => Some(*e.get() as usize),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(position);
                None
            }
        }
    }
}
