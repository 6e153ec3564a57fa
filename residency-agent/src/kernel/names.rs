//! The policy names of each generation slot, pinned beside the maps
//! (`<pin_path>/v3/maps/RES_POLICY_NAMES`) so that what the kernel holds can be read
//! back by name without the agent that wrote it: the maps key every rule by policy id,
//! and ids are the agent's own (stable by name only within one agent's life).
//!
//! An `ARRAY` of `2 * MAX_POLICIES` names of [`NAME_BYTES`] bytes, NUL-padded, index
//! `slot * MAX_POLICIES + id`; no program reads it. Raw `bpf(2)` (`sys::bpf`) because
//! aya creates maps only from the object's definitions.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use residency_common::{GENERATION_SLOTS, MAX_POLICIES};

use crate::sys::bpf;

/// Name of the pin, beside the object's maps.
pub const POLICY_NAMES: &str = "RES_POLICY_NAMES";
/// Bytes per name: policy names are at most 64 characters of ASCII.
pub const NAME_BYTES: usize = 64;

/// The pinned names map.
pub struct PolicyNames {
    fd: OwnedFd,
}

impl PolicyNames {
    /// Adopts the map pinned in `maps_dir`, or creates and pins it.
    pub fn open_or_create(maps_dir: &Path) -> std::io::Result<PolicyNames> {
        let path = maps_dir.join(POLICY_NAMES);
        if path.exists() {
            return Ok(PolicyNames {
                fd: bpf::obj_get(&path)?,
            });
        }
        let fd = bpf::create_array(NAME_BYTES as u32, GENERATION_SLOTS * MAX_POLICIES)?;
        bpf::pin_fd(fd.as_fd(), &path)?;
        Ok(PolicyNames { fd })
    }

    /// Opens the map pinned in `maps_dir`, to read it.
    pub fn open(maps_dir: &Path) -> std::io::Result<PolicyNames> {
        Ok(PolicyNames {
            fd: bpf::obj_get(&maps_dir.join(POLICY_NAMES))?,
        })
    }

    /// Writes the names of `slot`: `names[i]` is policy id `ids[i]`; every other id of
    /// the slot is cleared.
    pub fn write(&self, slot: u32, ids: &[u32], names: &[&str]) -> std::io::Result<()> {
        let mut by_id: BTreeMap<u32, &str> = BTreeMap::new();
        for (id, name) in ids.iter().zip(names) {
            by_id.insert(*id, name);
        }
        for id in 0..MAX_POLICIES {
            let mut value = [0u8; NAME_BYTES];
            if let Some(name) = by_id.get(&id) {
                let n = name.len().min(NAME_BYTES);
                value[..n].copy_from_slice(&name.as_bytes()[..n]);
            }
            bpf::array_set(self.fd.as_fd(), slot * MAX_POLICIES + id, &value)?;
        }
        Ok(())
    }

    /// The names of `slot`, by policy id.
    pub fn read(&self, slot: u32) -> std::io::Result<BTreeMap<u32, String>> {
        let mut out = BTreeMap::new();
        for id in 0..MAX_POLICIES {
            let mut value = [0u8; NAME_BYTES];
            bpf::array_get(self.fd.as_fd(), slot * MAX_POLICIES + id, &mut value)?;
            let len = value.iter().position(|b| *b == 0).unwrap_or(NAME_BYTES);
            if len > 0 {
                out.insert(id, String::from_utf8_lossy(&value[..len]).into_owned());
            }
        }
        Ok(out)
    }
}
