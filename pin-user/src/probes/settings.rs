//! What the agent tells the probes before they run, through the SETTINGS
//! map: facts about this kernel that BPF programs cannot find themselves
//! (the return trampoline's address, where a task's stack is, where the
//! fork tracepoint keeps the child's pid), and the tracefs mount the fork
//! tracepoint needs.

use super::{AttachError, KernelMapsMut};
use crate::kernel::KernelFacts;

/// Mounts tracefs where the kernel has it but nobody mounted it (root
/// only; tracepoint attach needs it to look up event ids).
pub(super) fn ensure_tracefs() {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || !dir.exists() {
        return;
    }
    // SAFETY: plain mount(2) with static NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        log::warn!(
            "could not mount tracefs: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Offset of `child_pid` in the `sched_process_fork` record, from the
/// event's tracefs format (None where tracefs does not show it).
pub(super) fn fork_child_pid_offset() -> Option<u64> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            std::fs::read_to_string(format!("{root}/events/sched/sched_process_fork/format")).ok()
        })
        .and_then(|format| child_pid_offset_in(&format))
}

/// [`fork_child_pid_offset`] of a format file's text.
fn child_pid_offset_in(format: &str) -> Option<u64> {
    let line = format.lines().find(|l| l.contains(" child_pid;"))?;
    let offset = line.split("offset:").nth(1)?.split(';').next()?;
    offset.trim().parse().ok()
}

/// Tells the probes where the kernel's return-probe trampoline is: a
/// kretprobe writes its address over the return address of each call it
/// watches, and the probes must recognise that word to know that the call
/// is still running (see `TaskState::outer_mark`). Unknown (kallsyms
/// hidden), the probes check only frame positions.
pub(super) fn set_return_trampoline(
    maps: &mut KernelMapsMut<'_>,
    facts: &KernelFacts,
) -> Result<(), AttachError> {
    let address = facts
        .kallsyms()
        .address(&crate::kernel::kallsyms::RETURN_TRAMPOLINES)
        .unwrap_or(0);
    set_setting(
        maps,
        pin_common::attribution::SETTING_RETURN_TRAMPOLINE,
        address,
    )
}

/// Tells the probes where a task's kernel stack is, so that a release made
/// by an interrupt (an O_DIRECT completion) is told from one made by the
/// task it interrupted. Unknown (no BTF), releases are charged to the
/// current task.
pub(super) fn set_task_stack(
    maps: &mut KernelMapsMut<'_>,
    facts: &KernelFacts,
) -> Result<(), AttachError> {
    let Ok(btf) = &facts.btf else {
        return Ok(());
    };
    let Some(offset) = btf.member_offset("task_struct", "stack") else {
        log::warn!(
            "task_struct.stack not in BTF: interrupt-context releases are charged to the interrupted task"
        );
        return Ok(());
    };
    // x86-64 THREAD_SIZE: 16 KiB, doubled by KASAN.
    let size: u64 = if btf.has_func("kasan_check_range") {
        32 * 1024
    } else {
        16 * 1024
    };
    set_setting(maps, pin_common::attribution::SETTING_TASK_STACK_SIZE, size)?;
    set_setting(
        maps,
        pin_common::attribution::SETTING_TASK_STACK_OFFSET,
        u64::from(offset) + 1,
    )
}

/// Writes `value` at `index` of the SETTINGS map.
pub(super) fn set_setting(
    maps: &mut KernelMapsMut<'_>,
    index: u32,
    value: u64,
) -> Result<(), AttachError> {
    maps.settings()
        .map_err(|e| AttachError::Load(e.to_string()))?
        .set(index, value, 0)
        .map_err(|e| AttachError::Load(format!("{}: {e}", pin_common::maps::SETTINGS)))
}

#[cfg(test)]
mod tests {
    use super::child_pid_offset_in;

    #[test]
    fn fork_record_layouts() {
        // Linux 6.1 and 6.12: fixed-size comms.
        let classic = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                       \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                       \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                       \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(child_pid_offset_in(classic), Some(44));
        // 6.13+: the comms are __string()s.
        let strings = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                       \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                       \tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                       \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(child_pid_offset_in(strings), Some(20));
        assert_eq!(child_pid_offset_in("garbage"), None);
    }
}
