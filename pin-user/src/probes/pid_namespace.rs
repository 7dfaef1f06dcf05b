//! Whether pinwatch runs in the host's PID namespace (the initial one).
//! Two things differ in a child namespace (a container without the host's
//! PID namespace): a task iterator walks only that namespace's tasks
//! ([`super::fold`]), and a child process that outlives the agent there can
//! hang the kernel when the namespace ends ([`super::handoff`]).

/// The inode number of the initial PID namespace (`PROC_PID_INIT_INO`,
/// fixed by the kernel).
const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;

/// `None` in the initial PID namespace; else the namespace pinwatch runs
/// in ("a child PID namespace (inode N)"), or why that is unknown.
pub(super) fn child() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(ns) if ns.ino() == INITIAL_PID_NAMESPACE => None,
        Ok(ns) => Some(format!("a child PID namespace (inode {})", ns.ino())),
        Err(e) => Some(format!(
            "a PID namespace it cannot identify (/proc/self/ns/pid: {e})"
        )),
    }
}
