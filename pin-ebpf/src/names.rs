//! Process names. A per-process row shows its process's name, the comm of
//! the thread group leader (what `ps` and /proc/PID/comm show): read once,
//! when the row is created, and kept current by the `task_rename` hook,
//! which every change of a comm passes (exec and `prctl(PR_SET_NAME)` and
//! writes to /proc/PID/comm all go through `__set_task_comm`). So no
//! get/pin return reads a comm: that read and compare was 10 % of the
//! one-page call's in-kernel cost (BENCHMARKS.md, "In-kernel cost, part
//! by part").

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    bpf_probe_read_kernel_str_bytes,
};

use crate::{
    comm::current_comm,
    maps::PROCS,
    settings::{leader_comm_layout, task_ids_layout},
};

/// The current process's name: the current task's comm when it leads its
/// thread group, else its leader's (the current task's own comm where the
/// kernel's layout is unknown).
#[inline(always)]
pub(crate) fn process_comm() -> [u8; 16] {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 == (pid_tgid >> 32) as u32 {
        return current_comm();
    }
    let (leader_at, comm_at) = leader_comm_layout();
    if leader_at == 0 || comm_at == 0 {
        return current_comm();
    }
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: reads kernel memory through the checked helper.
    let leader = unsafe { bpf_probe_read_kernel((task + leader_at - 1) as *const u64) };
    match leader {
        Ok(leader) if leader != 0 => {
            unsafe { bpf_probe_read_kernel((leader + comm_at - 1) as *const [u8; 16]) }
                .unwrap_or_else(|_| current_comm())
        }
        _ => current_comm(),
    }
}

/// The thread group id of `task` when it leads its group, else `None`
/// (also where the kernel's layout is unknown and `task` is not current).
#[inline(always)]
fn leader_tgid(task: u64) -> Option<u32> {
    let (pid, tgid) = if task == unsafe { bpf_get_current_task() } {
        let pid_tgid = bpf_get_current_pid_tgid();
        (pid_tgid as u32, (pid_tgid >> 32) as u32)
    } else {
        // Another thread of the same process renamed it (through
        // /proc/self/comm or /proc/PID/task/TID/comm: the kernel lets
        // only a task's own process write its comm).
        let (pid_at, tgid_at) = task_ids_layout();
        if pid_at == 0 || tgid_at == 0 {
            return None;
        }
        // SAFETY: reads kernel memory through the checked helper.
        unsafe {
            (
                bpf_probe_read_kernel((task + pid_at - 1) as *const u32).ok()?,
                bpf_probe_read_kernel((task + tgid_at - 1) as *const u32).ok()?,
            )
        }
    };
    (pid == tgid).then_some(tgid)
}

/// `task_rename`: `task` takes the name at `name` (the tracepoint fires
/// before the copy). A group leader's new name goes into its process's
/// row, if it has one; another thread's name is its own, not its
/// process's.
#[inline(always)]
pub fn on_task_rename(task: u64, name: u64) {
    let Some(tgid) = leader_tgid(task) else {
        return;
    };
    let Some(row) = PROCS.get_ptr_mut(tgid) else {
        return;
    };
    // The kernel keeps at most 15 bytes and a NUL, zero-padded; so does
    // the helper, into a zeroed buffer of the same size.
    let mut comm = [0u8; 16];
    // SAFETY: reads a kernel string through the checked helper.
    if unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut comm) }.is_ok() {
        unsafe { (*row).comm = comm };
    }
}
