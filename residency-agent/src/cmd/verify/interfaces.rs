//! The interfaces each policy names (`interfaces`), against `RES_INTERFACES` in the
//! slot in force: missing and extra names.

use std::collections::HashSet;

use aya::maps::{HashMap, MapData};
use residency_common::InterfaceKey;

use super::Report;
use crate::generations::interface_key;

/// Compares the names of `named` (policy id, its interfaces) with the map's entries
/// of `slot`; `name_of` names a policy id.
pub fn compare(
    map: &HashMap<MapData, InterfaceKey, u8>,
    named: &[(u32, &[String])],
    slot: u32,
    name_of: &dyn Fn(u32) -> String,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut want = HashSet::new();
    for (id, names) in named {
        for n in *names {
            let key = interface_key(slot, *id, n);
            if map.get(&key, 0).is_err() {
                report.mismatches.push(format!(
                    "policy \"{}\": interface {n}: in the config, missing from the kernel",
                    name_of(*id)
                ));
            }
            want.insert(key);
        }
    }
    for k in map.keys() {
        let k = k?;
        if u32::from(k.scope[0]) != slot || want.contains(&k) {
            continue;
        }
        let id = u32::from_be_bytes([0, k.scope[1], k.scope[2], k.scope[3]]);
        let len = k.name.iter().position(|b| *b == 0).unwrap_or(k.name.len());
        report.mismatches.push(format!(
            "policy \"{}\": interface {}: in the kernel, not in the config",
            name_of(id),
            String::from_utf8_lossy(&k.name[..len])
        ));
    }
    Ok(())
}
