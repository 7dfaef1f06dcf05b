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
