//! The host side of a policy: the cgroup v2 hierarchy ([`cgroup`]), where a config's
//! cgroups are on this host ([`resolve`]), cgroup paths for event ids ([`paths`]),
//! and the inotify watch that notices cgroups coming and going ([`watch`]).

pub mod cgroup;
pub mod paths;
pub mod resolve;
pub mod watch;

pub use cgroup::{CgroupError, Hierarchy, id_of};
pub use paths::PathCache;
pub use resolve::{
    BoundCgroup, MissingCgroup, ResolveError, attach_points, check_cgroups, resolve_cgroups,
};
pub use watch::DirWatch;
