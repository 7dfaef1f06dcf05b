//! The one raw `bpf(2)` call the agent makes itself, for the commands
//! aya 0.14 does not expose (batch lookups, link info by id, pins into a
//! private mount, the fentry check): the syscall and its errno, once.

/// `bpf(cmd, attr, size_of::<T>())`: the kernel's non-negative result (a
/// new descriptor for the commands that open one), or its errno.
///
/// # Safety
/// `attr` must be the kernel's layout for `cmd`, and every pointer in it
/// valid for what the kernel reads or writes through it during the call.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: the caller vouches for `attr`; the size passed is its own.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
