//! Stopping without waiting for the kernel to detach.
//!
//! Closing a BPF link descriptor detaches it then and there: for a
//! trampoline that is an ftrace update, with RCU-tasks grace periods,
//! under locks every other detach waits for, so pinwatch's ~30 links took
//! 3-4 s to close on 6.12 under TCG however many threads closed them, and
//! the process could not end before. A link whose last reference is a
//! bpffs pin is freed otherwise: dropping the pin queues the free on a
//! kernel worker (always since 6.5; from the RCU callback that frees the
//! inode before), so the process ends at once and the kernel finishes
//! detaching on its own a few seconds later.
//!
//! So, once attached (while still privileged), [`Handoff::prepare`] mounts
//! a bpffs instance of its own that is attached nowhere (`fsopen`/
//! `fsmount`: no directory, nothing another process sees) and notes the
//! link descriptors. On stop, [`Handoff::pin_links`] pins each link there;
//! closing the descriptors then only drops a reference, and dropping the
//! handoff (the mount's descriptor) drops the pins. Nothing is pinned
//! before the stop, so a process that is killed leaves nothing behind: its
//! descriptors close, and the links with them, as they always did.
//! Where the kernel frees pins in the task that drops them (before 6.5),
//! or refuses the mount (no CAP_SYS_ADMIN), a child process takes the
//! last references instead and waits for the kernel once the agent has
//! gone ([`super::detacher`]); but not in a child PID namespace, where
//! that can hang the kernel ([`Handoff::hand_over`]): the agent closes
//! them itself there, the slow way.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use crate::kernel::bpf_sys::bpf;

/// `fsopen`'s and `fsmount`'s close-on-exec flags.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
/// `fsconfig`: create the superblock.
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `bpf(2)` command that pins an object at a path.
const BPF_OBJ_PIN: libc::c_long = 6;

/// A private bpffs mount and the link descriptors to pin into it on stop.
pub struct Handoff {
    /// The mount (a detached mount: closing it unmounts it); `None` where
    /// the kernel refused it.
    mount: Option<OwnedFd>,
    /// pinwatch's BPF link descriptors when attaching ended.
    links: Vec<RawFd>,
    /// Whether dropping a pin frees the link on a kernel worker (6.5+),
    /// rather than in the task that drops it.
    frees_on_worker: bool,
}

/// Where the links went on stop ([`Handoff::hand_over`]).
pub struct HandedOver {
    /// This process's descriptor of the mount, closed after the links'.
    mount: Option<OwnedFd>,
    /// What was done, for the log.
    summary: String,
}

impl Handoff {
    /// Mounts the private bpffs and notes the link descriptors open now,
    /// on kernel `release`. Needs CAP_SYS_ADMIN for the mount: call it
    /// before privileges are shed. Fails only where the descriptors cannot
    /// be listed.
    pub fn prepare(release: &str, others: &[RawFd]) -> Result<Self, String> {
        let mut links = link_descriptors().map_err(|e| format!("/proc/self/fdinfo: {e}"))?;
        // This attach's own links only: a process with other probes (the
        // VM tests attach several) must not hand theirs over.
        links.retain(|fd| !others.contains(fd));
        let mount = private_bpffs()
            .inspect_err(|e| log::info!("links cannot be pinned on stop: {e}"))
            .ok();
        let frees_on_worker = crate::kernel::parse_version(release).is_some_and(|v| v >= (6, 5));
        Ok(Self {
            mount,
            links,
            frees_on_worker,
        })
    }

    /// How many link descriptors it will hand over.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// On stop, before the descriptors are closed: pins every link into
    /// the private mount; then, unless the kernel frees them all on a
    /// worker, forks the child that keeps the last references until this
    /// process is gone ([`super::detacher`]).
    pub fn hand_over(self) -> HandedOver {
        let pinned = self.pin_links();
        let mut summary = format!("{pinned} of {} links pinned", self.links.len());
        if self.frees_on_worker && pinned == self.links.len() {
            summary.push_str(", freed by the kernel");
        } else if let Some(ns) = super::pid_namespace::child() {
            // A child that outlives the agent in a child PID namespace can
            // hang the kernel when the namespace ends: its init (the agent,
            // or whatever started it) waits for the child while exiting,
            // and the child's last close of a link waits for an RCU-tasks
            // grace period that waits for that exit. Seen on Debian 6.1:
            // `pinwatch-detach` and `rcu_tasks_kthread` blocked for good,
            // and every later detach on the host with them.
            summary.push_str(&format!(", closed here (no child process in {ns})"));
        } else if EXITS_AFTER_STOP.load(std::sync::atomic::Ordering::Relaxed) {
            let mut keep = self.links.clone();
            keep.extend(self.mount.as_ref().map(|m| m.as_raw_fd()));
            match super::detacher::spawn(&keep) {
                Ok(pid) => summary.push_str(&format!(", left to pinwatch-detach (pid {pid})")),
                Err(e) => summary.push_str(&format!(", closed here (no child: {e})")),
            }
        } else {
            summary.push_str(", closed here");
        }
        HandedOver {
            mount: self.mount,
            summary,
        }
    }

    /// Pins every noted link into the private mount; returns how many
    /// were pinned. A link that cannot be pinned is left to be closed the
    /// slow way.
    fn pin_links(&self) -> usize {
        let Some(mount) = &self.mount else { return 0 };
        self.links
            .iter()
            .filter(|fd| {
                let path = format!("/proc/self/fd/{}/{}", mount.as_raw_fd(), fd);
                pin(**fd, &path)
                    .inspect_err(|e| log::debug!("link fd {fd} not pinned: {e}"))
                    .is_ok()
            })
            .count()
    }
}

impl HandedOver {
    /// Closes this process's descriptor of the mount (its pins go with
    /// the last one), once the links' own descriptors are closed; returns
    /// what was done, for the log.
    pub fn finish(self) -> String {
        drop(self.mount);
        self.summary
    }
}

/// Whether the process exits once its probes are stopped (the `pinwatch`
/// binary: [`exits_after_stop`]). Only then may a child keep the links
/// until the process is gone: a library user (the VM tests) goes on
/// running, and its dropped probes must be detached when dropped.
static EXITS_AFTER_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that this process exits once its probes are stopped, so that the
/// detach may finish in a child after it ([`super::detacher`]).
pub fn exits_after_stop() {
    EXITS_AFTER_STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The link descriptors open in this process now: what an attach that
/// starts now must not take for its own.
pub fn existing_links() -> Vec<RawFd> {
    link_descriptors().unwrap_or_default()
}

/// A bpffs superblock mounted nowhere: the descriptor is its mount.
fn private_bpffs() -> Result<OwnedFd, String> {
    // SAFETY: a NUL-terminated name and flags; the result is checked.
    let context = unsafe { libc::syscall(libc::SYS_fsopen, c"bpf".as_ptr(), FSOPEN_CLOEXEC) };
    if context < 0 {
        return Err(format!("fsopen(bpf): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let context = unsafe { OwnedFd::from_raw_fd(context as RawFd) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc < 0 {
        return Err(format!(
            "fsconfig(bpf): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a configured context; no mount attributes.
    let mount =
        unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mount < 0 {
        return Err(format!("fsmount(bpf): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(mount as RawFd) })
}

/// The descriptors of this process that are BPF links (their fdinfo has
/// a `link_type`; procfs does not parse BPF fdinfo).
fn link_descriptors() -> std::io::Result<Vec<RawFd>> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A descriptor closed meanwhile (the directory's own) is skipped.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if is_link_fdinfo(&text) {
            links.push(fd);
        }
    }
    links.sort_unstable();
    Ok(links)
}

/// Whether an fdinfo text is a BPF link's.
fn is_link_fdinfo(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("link_type:"))
}

/// `BPF_OBJ_PIN` of descriptor `fd` at `path`.
fn pin(fd: RawFd, path: &str) -> std::io::Result<()> {
    let path = std::ffi::CString::new(path).map_err(std::io::Error::other)?;
    // union bpf_attr's obj_pin: pathname (u64), bpf_fd (u32), file_flags
    // (u32), path_fd (u32, 6.5+; 0 with file_flags 0), padded to 8 bytes.
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: u32,
        pad: u32,
    }
    let mut attr = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: a valid obj_pin attribute whose path outlives the call.
    unsafe { bpf(BPF_OBJ_PIN, &mut attr) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_fdinfo_told_from_maps_and_programs() {
        let link = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\n\
                    link_type:\ttracing\nlink_id:\t7\nprog_tag:\t0123456789abcdef\nprog_id:\t40\n\
                    attach_type:\t24\ntarget_obj_id:\t1\ntarget_btf_id:\t5531\n";
        assert!(is_link_fdinfo(link));
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t9\nmemlock:\t1091968\nmap_id:\t12\n";
        assert!(!is_link_fdinfo(map));
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_id:\t40\n";
        assert!(!is_link_fdinfo(prog));
    }

    #[test]
    fn pinning_something_that_is_not_bpf_fails_cleanly() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(pin(file.as_raw_fd(), "/nonexistent/x").is_err());
    }
}
