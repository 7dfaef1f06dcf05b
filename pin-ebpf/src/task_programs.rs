//! The programs on a task's life, beside the get/pin and release ones in
//! `main.rs`: fork and exit for the followed process tree (`follow`),
//! exit for calls an exiting thread was never seen to return from
//! (`account`), and renames for process names (`names`).

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{account, follow, names};

/// sched:sched_process_fork, for following a process tree.
#[tracepoint]
fn track_fork(ctx: TracePointContext) -> u32 {
    follow::on_fork(&ctx);
    0
}

/// sched:sched_process_exit, for following a process tree.
#[tracepoint]
fn track_exit(_ctx: TracePointContext) -> u32 {
    follow::on_exit();
    0
}

/// sched_process_exit as a raw tracepoint (attached by name, no tracefs
/// needed), always on: a thread that exits with a call whose return was
/// never seen has that call counted as missed.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
fn task_exit(_ctx: RawTracePointContext) -> u32 {
    account::on_task_exit();
    0
}

/// task_rename as a raw tracepoint (`task`, new name), always on: keeps
/// each process row's name current (see `names`).
#[raw_tracepoint(tracepoint = "task_rename")]
fn task_rename(ctx: RawTracePointContext) -> u32 {
    names::on_task_rename(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

/// The task iterator the agent runs before it reads the maps at each
/// sample (full object): folds every thread's pending counts into the
/// shared rows (see `pending`). Its context is the kernel's
/// `struct bpf_iter__task { meta; task; }`, the task null once the walk
/// is over. No output: the agent reads the iterator to its end only to
/// run it. (aya-ebpf 0.2.1 has no macro for iterators; the section name
/// is what the loader goes by.)
#[cfg(not(feature = "baseline"))]
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn fold_tasks(ctx: *mut core::ffi::c_void) -> i32 {
    // SAFETY: the iterator's context, two pointers; the verifier allows
    // this constant-offset read of its `task` field.
    let task = unsafe { *ctx.cast::<*mut core::ffi::c_void>().add(1) };
    if task.is_null() {
        return 0;
    }
    if let Some(slot) = crate::task_storage::slot_of(task) {
        crate::pending::fold(&mut slot.pending);
    }
    0
}
