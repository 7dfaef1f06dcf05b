//! What the agent told the probes: each traced function's `CONFIG`
//! entry, the feature switches (callers, lifetimes) and the facts about
//! the running kernel the programs cannot find themselves (`SETTINGS`).

use pin_common::{
    FuncConfig, FuncId,
    attribution::{
        SETTING_CALLERS, SETTING_FOLL_PIN, SETTING_FORK_CHILD_PID_OFFSET, SETTING_LIFETIMES,
        SETTING_RETURN_TRAMPOLINE, SETTING_TASK_STACK_OFFSET, SETTING_TASK_STACK_SIZE,
    },
};

use crate::maps::{CONFIG, SETTINGS};

/// How to read traced function `id` on this kernel; `None` until the agent
/// filled its entry (a function it did not configure).
#[inline(always)]
pub(crate) fn config(id: FuncId) -> Option<FuncConfig> {
    match CONFIG.get(id) {
        Some(l) if l.valid != 0 => Some(*l),
        _ => None,
    }
}

#[inline(always)]
fn setting(index: u32) -> u64 {
    SETTINGS.get(index).copied().unwrap_or(0)
}

/// Whether callers are attributed.
#[inline(always)]
pub fn callers_on() -> bool {
    setting(SETTING_CALLERS) == 1
}

/// Whether pin lifetimes are recorded.
#[inline(always)]
pub fn lifetimes_on() -> bool {
    setting(SETTING_LIFETIMES) == 1
}

/// The kernel's `FOLL_PIN` bit (0 until the agent set it).
#[inline(always)]
pub fn foll_pin() -> u64 {
    setting(SETTING_FOLL_PIN)
}

/// The address of the kernel's return-probe trampoline, which a kretprobe
/// writes over the return address of a call it watches (0: unknown).
#[inline(always)]
pub fn return_trampoline() -> u64 {
    setting(SETTING_RETURN_TRAMPOLINE)
}

/// Where the current task's kernel stack pointer sits in `task_struct`
/// (offset + 1, 0 when unknown) and how big the stack is.
#[inline(always)]
pub fn task_stack_layout() -> (u64, u64) {
    (
        setting(SETTING_TASK_STACK_OFFSET),
        setting(SETTING_TASK_STACK_SIZE),
    )
}

/// Offset of `child_pid` in the `sched_process_fork` record.
#[inline(always)]
pub fn fork_child_pid_offset() -> usize {
    match setting(SETTING_FORK_CHILD_PID_OFFSET) {
        0 => pin_common::FORK_CHILD_PID_OFFSET,
        known => known as usize,
    }
}
