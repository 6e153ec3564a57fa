//! The lookup tables' metrics: which policies' first packets the tables judge, and how
//! much of each family's room the version in force takes. A policy without tables (they
//! did not fit, are off, or could not be written) is judged by its rule tries alone:
//! exactly, but at two to three times the cost of a first packet, which the agent logs
//! once and these gauges keep showing.

use prometheus_client::encoding::DescriptorEncoder;

use super::family::gauge;
use crate::{generations::ByFamily, policy::Versioned};

/// Each family's `T`, with the family's label.
fn by_family<T>(t: &ByFamily<T>) -> [(&'static str, &T); 2] {
    [("ipv4", &t.v4), ("ipv6", &t.v6)]
}

pub fn encode(enc: &mut DescriptorEncoder, v: &Versioned) -> std::fmt::Result {
    let mut in_tables = Vec::new();
    for (family, written) in by_family(&v.tables) {
        for (p, id) in v.config.policies.iter().zip(&v.ids) {
            in_tables.push((
                vec![("policy", p.name.clone()), ("family", family.to_owned())],
                i64::from(written.policies.contains(id)),
            ));
        }
    }
    gauge(
        enc,
        "residency_policy_lookup_tables",
        "1 when a policy's first packets of this family are judged from its lookup tables, 0 when its rule tries judge them alone (exactly, but slower): its tables did not fit in what was left of the room (the agent logs the chunks they need), the tables are off ([agent] ipv4_table_chunks or ipv6_table_chunks = 0), or they could not be written (the agent logs why).",
        &in_tables,
    )?;
    let chunks: Vec<_> = by_family(&v.tables)
        .into_iter()
        .map(|(family, w)| (vec![("family", family.to_owned())], i64::from(w.chunks)))
        .collect();
    gauge(
        enc,
        "residency_lookup_table_chunks",
        "1 KiB chunks of lookup tables the version in force uses, per family.",
        &chunks,
    )?;
    let room = by_family(&v.table_room)
        .into_iter()
        .map(|(family, n)| (vec![("family", family.to_owned())], i64::from(*n)))
        .collect::<Vec<_>>();
    gauge(
        enc,
        "residency_lookup_table_chunks_room",
        "1 KiB chunks of lookup tables a version may use, per family: the room of the maps in use ([agent] ipv4_table_chunks, ipv6_table_chunks when they were created; an agent that adopts pinned maps keeps their room until detach).",
        &room,
    )
}
