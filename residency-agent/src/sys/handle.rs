//! `open_by_handle_at(2)`, which no kept crate wraps (neither rustix nor nix exposes
//! it): the cgroup2 filesystem's file handles are cgroup ids, so this turns the id in
//! an event into the cgroup's path.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

/// `open_by_handle_at(2)` on the cgroup2 mount with the id as a kernfs file handle, then
/// the path from `/proc/self/fd`. Needs CAP_DAC_READ_SEARCH, which the agent has.
pub fn cgroup_path(mount: &Path, id: u64) -> Option<String> {
    /// `FILEID_KERNFS` from include/linux/exportfs.h.
    const FILEID_KERNFS: i32 = 0xfe;
    #[repr(C)]
    struct Handle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    let mount_c = CString::new(mount.as_os_str().as_bytes()).ok()?;
    // SAFETY: plain syscalls on owned, NUL-terminated buffers; fds are closed below.
    unsafe {
        let mount_fd = libc::open(
            mount_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if mount_fd < 0 {
            return None;
        }
        let mut handle = Handle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        let fd = libc::open_by_handle_at(
            mount_fd,
            (&mut handle as *mut Handle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        libc::close(mount_fd);
        if fd < 0 {
            return None;
        }
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        libc::close(fd);
        // The link is the directory's path as this process sees it.
        path.map(|p| p.display().to_string())
    }
}
