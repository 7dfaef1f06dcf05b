//! Child-process sandboxes for fault tests (shared by `faults.rs` and the
//! VM suite): no privileges, no CAP_BPF, or bpf() denied by seccomp as
//! container runtimes do. Everything that runs between fork and exec is a
//! raw, async-signal-safe system call.

// Each test crate that includes this file uses only some of it.
#![allow(dead_code)]

use std::{collections::BTreeMap, os::unix::process::CommandExt as _, process::Command};

/// Drops to user and group 65534 (nobody) with no supplementary groups,
/// and so no capabilities.
pub fn become_nobody() -> std::io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(65534) != 0
            || libc::setuid(65534) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Removes CAP_BPF (39) and CAP_SYS_ADMIN (21) from the bounding set, so
/// the exec'd root process does not get them (raw prctl: async-signal-safe).
pub fn drop_cap_bpf() -> std::io::Result<()> {
    for cap in [21, 39] {
        // SAFETY: a plain prctl.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A seccomp program that fails bpf() with EPERM and allows the rest.
fn deny_bpf_filter() -> seccompiler::BpfProgram {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    SeccompFilter::new(
        BTreeMap::from([(libc::SYS_bpf, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .and_then(TryInto::try_into)
    .expect("seccomp filter")
}

/// Makes `cmd` run under a seccomp filter failing bpf() with EPERM.
pub fn deny_bpf(cmd: &mut Command) {
    let filter = deny_bpf_filter();
    // SAFETY: prctl and seccomp on a program built before fork.
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other))
    };
}

/// Makes `cmd` see an empty /sys/kernel/btf (a tmpfs over it, in a mount
/// namespace of its own), as on a kernel built without BTF.
pub fn hide_btf(cmd: &mut Command) {
    // SAFETY: unshare and mount(2) with static C strings, between fork and
    // exec; only the child's new namespace changes.
    unsafe {
        cmd.pre_exec(|| {
            let private = libc::MS_REC | libc::MS_PRIVATE;
            let null = std::ptr::null();
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(null, c"/".as_ptr(), null, private, null.cast()) != 0
                || libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/sys/kernel/btf".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    null.cast(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}
