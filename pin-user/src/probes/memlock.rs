//! pinwatch's own memlock budget. Linux before 5.11 charges BPF maps and
//! programs to the user's `locked_vm` against RLIMIT_MEMLOCK, with no
//! capability bypass (docs/limits.md, "BPF"); aya raises the limit to
//! unlimited there before its first map, which needs CAP_SYS_RESOURCE
//! once the hard limit is below that. Where it could not, the kernel's
//! EPERM is this limit's doing, not a seccomp profile's. Commands that
//! start other programs (`record`) give them back the limit they had
//! before, so that a recorded workload meets its own memlock limit.

use aya::util::KernelVersion;

/// The calling process's RLIMIT_MEMLOCK (soft and hard), if readable.
pub fn current() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit.
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0).then_some(limit)
}

/// Sets RLIMIT_MEMLOCK to `limit`; async-signal-safe (for `pre_exec`).
/// Lowering a limit needs no privilege.
pub fn restore(limit: libc::rlimit) -> std::io::Result<()> {
    // SAFETY: setrlimit reads one struct rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the running kernel charges BPF memory to RLIMIT_MEMLOCK (the
/// test aya raises the limit by: before 5.11).
fn kernel_charges_bpf() -> bool {
    KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(5, 11, 0))
}

/// The limit that explains an EPERM from bpf() here, in bytes: on a
/// kernel that charges BPF memory to it, while it is still not unlimited
/// (aya could not raise it). `None` where the limit is not the cause.
pub(super) fn limiting() -> Option<u64> {
    let limit = current()?;
    (kernel_charges_bpf() && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `bytes` as the shell's `ulimit -l` and /proc/PID/limits users know it.
pub(super) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % 1024 == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_ulimit_shows_them() {
        assert_eq!(human(64 * 1024), "64 KiB");
        assert_eq!(human(8 << 20), "8 MiB");
        assert_eq!(human(1000), "1000 bytes");
    }

    #[test]
    fn the_current_limit_is_readable_and_restorable() {
        let limit = current().expect("getrlimit");
        restore(limit).expect("setting the same limit again");
        assert_eq!(current().map(|l| l.rlim_cur), Some(limit.rlim_cur));
    }
}
