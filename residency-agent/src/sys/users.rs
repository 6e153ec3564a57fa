//! Users and groups (the control socket's `control_group`), through `nix`'s wrappers
//! of getgrnam_r, getpwuid_r and getgrouplist.

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

/// The id of group `name`, or `None` when no such group exists.
pub fn group_id(name: &str) -> Option<u32> {
    Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Whether user `uid` (primary group `gid`) is in group `group`, supplementary
/// membership included.
pub fn in_group(uid: u32, gid: u32, group: u32) -> bool {
    if gid == group {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, Gid::from_raw(gid))
        .is_ok_and(|groups| groups.contains(&Gid::from_raw(group)))
}
