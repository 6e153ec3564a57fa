//! Every attach point has every program, through a pinned link the kernel still holds
//! attached to that cgroup (a link detached by hand reports cgroup id 0).

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::AsFd as _,
    path::PathBuf,
};

use residency_common::{
    PROGRAM_BIND4, PROGRAM_BIND6, PROGRAM_CONNECT4, PROGRAM_CONNECT6, PROGRAM_EGRESS,
    PROGRAM_INGRESS, PROGRAM_SENDMSG4, PROGRAM_SENDMSG6, PROGRAM_SETSOCKOPT, PROGRAM_SOCK_CREATE,
};

use super::Report;
use crate::{host::BoundCgroup, kernel::short_name, sys::bpf};

/// The programs every attach point has (the packet socket guard only where the kernel
/// runs BPF LSM programs, so it is not required).
const REQUIRED: &[&str] = &[
    PROGRAM_CONNECT4,
    PROGRAM_CONNECT6,
    PROGRAM_SENDMSG4,
    PROGRAM_SENDMSG6,
    PROGRAM_BIND4,
    PROGRAM_BIND6,
    PROGRAM_SOCK_CREATE,
    PROGRAM_SETSOCKOPT,
    PROGRAM_INGRESS,
    PROGRAM_EGRESS,
];

/// Checks the links of `points` among the pinned `instances`.
pub fn check(points: &[&BoundCgroup], instances: &[PathBuf], report: &mut Report) {
    // Which programs the links of each kind run: one, the agent's, at every point.
    let mut runs: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for point in points {
        for program in REQUIRED {
            let short = short_name(program);
            let file = format!("link-{}-{short}", point.id);
            let at = point.path.display();
            let Some(path) = instances.iter().map(|d| d.join(&file)).find(|p| p.exists()) else {
                report.mismatches.push(format!(
                    "cgroup {at}: program {short} is not attached (no pinned link)"
                ));
                continue;
            };
            report.links += 1;
            let attached = bpf::obj_get(&path)
                .and_then(|fd| bpf::cgroup_link_info(fd.as_fd()))
                .map(|i| i.cgroup_id);
            let link = path.display();
            if let Ok(info) = bpf::obj_get(&path).and_then(|fd| bpf::cgroup_link_info(fd.as_fd())) {
                runs.entry(short).or_default().insert(info.prog_id);
            }
            match attached {
                Ok(id) if id == point.id => {}
                Ok(0) => report.mismatches.push(format!(
                    "cgroup {at}: program {short}: its link {link} is detached"
                )),
                Ok(other) => report.mismatches.push(format!(
                    "cgroup {at}: program {short}: its link {link} is attached to cgroup id {other}"
                )),
                Err(e) => report.mismatches.push(format!(
                    "cgroup {at}: program {short}: its link {link} cannot be read: {e}"
                )),
            }
        }
    }
    for (short, ids) in runs {
        identify(short, &ids, report);
    }
}

/// Links of one kind must all run one program, and it must be residency's: a link
/// switched to another program (`BPF_LINK_UPDATE`) or a pin replaced by a link of
/// someone else's shows here.
fn identify(short: &str, ids: &BTreeSet<u32>, report: &mut Report) {
    if ids.len() > 1 {
        report.mismatches.push(format!(
            "program {short}: links of it run {} different programs (ids {ids:?}), not one",
            ids.len()
        ));
    }
    // The kernel keeps 15 bytes of a program's name.
    let want: String = REQUIRED
        .iter()
        .find(|p| short_name(p) == short)
        .map_or(short, |p| *p)
        .chars()
        .take(15)
        .collect();
    for id in ids {
        match bpf::prog_by_id(*id).and_then(|fd| bpf::prog_info(fd.as_fd())) {
            Ok(info) if info.name == want => {}
            Ok(info) => report.mismatches.push(format!(
                "program {short}: a link runs program id {id} named \"{}\", not residency's \"{want}\"",
                info.name
            )),
            Err(e) => report.mismatches.push(format!(
                "program {short}: the program its link runs (id {id}) cannot be read: {e}"
            )),
        }
    }
}
