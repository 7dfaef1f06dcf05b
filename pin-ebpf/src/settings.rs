//! What the agent told the probes: each traced function's settings, the
//! feature switches (callers, lifetimes) and the facts about the running
//! kernel the programs cannot find themselves, as read-only globals; and
//! what changes after load (`SETTINGS`: the start of pin lifetimes, the
//! fork record's layout).
//!
//! The globals are fixed before the object is loaded (aya's
//! `EbpfLoader::override_global`, names in `pin_common::settings`): they
//! live in the object's `.rodata`, which the loader freezes, so the
//! verifier knows their values and skips the code a switch turns off, and
//! no probe pays a map lookup for them.

use core::mem::MaybeUninit;

use aya_ebpf::Global;
use pin_common::{
    FUNC_COUNT, FuncConfig, FuncId,
    settings::{SETTING_FORK_CHILD_PID_OFFSET, SETTING_LIFETIMES},
};

use crate::maps::SETTINGS;

/// A read-only table the loader overwrites before load. `Global` would
/// copy the whole table to read one entry; this reads one.
/// `MaybeUninit`, as in `Global`, keeps the compiler from folding the
/// initial value into the code.
#[repr(transparent)]
pub struct ReadOnlyTable<T, const N: usize>(MaybeUninit<[T; N]>);

// SAFETY: never written after load (the loader freezes `.rodata`).
unsafe impl<T, const N: usize> Sync for ReadOnlyTable<T, N> {}

/// Each traced function's settings, by id
/// (`pin_common::settings::GLOBAL_FUNC_CONFIGS`): a program for one
/// function reads its entry at a constant offset of a frozen map, whose
/// value the verifier then knows, so the branches on it are decided at
/// load and no program looks the settings up in a map.
#[unsafe(no_mangle)]
static FUNC_CONFIGS: ReadOnlyTable<FuncConfig, FUNC_COUNT> =
    ReadOnlyTable(MaybeUninit::new([FuncConfig::UNSET; FUNC_COUNT]));

/// 1 when callers are attributed (`pin_common::settings::GLOBAL_CALLERS_ON`).
#[unsafe(no_mangle)]
static CALLERS_ON: Global<u64> = Global::new(0);

/// 1 when pin lifetimes are wanted
/// (`pin_common::settings::GLOBAL_LIFETIMES_ON`).
#[unsafe(no_mangle)]
static LIFETIMES_ON: Global<u64> = Global::new(0);

/// The kernel's `FOLL_PIN` bit (`pin_common::settings::GLOBAL_FOLL_PIN`).
#[unsafe(no_mangle)]
static FOLL_PIN: Global<u64> = Global::new(0);

/// The kernel's `FOLL_LONGTERM` bit, 0 when unknown
/// (`pin_common::settings::GLOBAL_FOLL_LONGTERM`).
#[unsafe(no_mangle)]
static FOLL_LONGTERM: Global<u64> = Global::new(0);

/// The kernel's return-probe trampoline, 0 when unknown
/// (`pin_common::settings::GLOBAL_RETURN_TRAMPOLINE`).
#[unsafe(no_mangle)]
static RETURN_TRAMPOLINE: Global<u64> = Global::new(0);

/// 1 + the offset of the task's pending return-probe instances in
/// `task_struct`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_RETURN_LIST_OFFSET`).
#[unsafe(no_mangle)]
static TASK_RETURN_LIST_OFFSET: Global<u64> = Global::new(0);

/// Offset of the list link in a return-probe instance
/// (`pin_common::settings::GLOBAL_RETURN_NODE_LINK_OFFSET`).
#[unsafe(no_mangle)]
static RETURN_NODE_LINK_OFFSET: Global<u64> = Global::new(0);

/// Offset of the replaced return address in a return-probe instance
/// (`pin_common::settings::GLOBAL_RETURN_NODE_RET_OFFSET`).
#[unsafe(no_mangle)]
static RETURN_NODE_RET_OFFSET: Global<u64> = Global::new(0);

/// Offset of the replaced word's stack address in a return-probe instance
/// (`pin_common::settings::GLOBAL_RETURN_NODE_SLOT_OFFSET`).
#[unsafe(no_mangle)]
static RETURN_NODE_SLOT_OFFSET: Global<u64> = Global::new(0);

/// 1 + the offset of `stack` in `task_struct`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_STACK_OFFSET`).
#[unsafe(no_mangle)]
static TASK_STACK_OFFSET: Global<u64> = Global::new(0);

/// The size of a task's kernel stack
/// (`pin_common::settings::GLOBAL_TASK_STACK_SIZE`).
#[unsafe(no_mangle)]
static TASK_STACK_SIZE: Global<u64> = Global::new(0);

/// 1 when only the cgroup in `CGROUP_FILTER` is counted
/// (`pin_common::settings::GLOBAL_CGROUP_FILTER_ON`).
#[unsafe(no_mangle)]
static CGROUP_FILTER_ON: Global<u64> = Global::new(0);

/// 1 when a process tree may be followed
/// (`pin_common::settings::GLOBAL_FOLLOW_ON`).
#[unsafe(no_mangle)]
static FOLLOW_ON: Global<u64> = Global::new(0);

/// 1 when per-call events may be asked for
/// (`pin_common::settings::GLOBAL_PER_CALL_EVENTS_ON`).
#[unsafe(no_mangle)]
static PER_CALL_EVENTS_ON: Global<u64> = Global::new(0);

/// 1 + offset of `user_struct.locked_vm`, 0 when unknown
/// (`pin_common::settings::GLOBAL_USER_LOCKED_VM_OFFSET`).
#[unsafe(no_mangle)]
static USER_LOCKED_VM_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `mm_struct.locked_vm`, 0 when unknown
/// (`pin_common::settings::GLOBAL_MM_LOCKED_VM_OFFSET`).
#[unsafe(no_mangle)]
static MM_LOCKED_VM_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.signal`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_SIGNAL_OFFSET`).
#[unsafe(no_mangle)]
static TASK_SIGNAL_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `signal_struct.rlim`, 0 when unknown
/// (`pin_common::settings::GLOBAL_SIGNAL_RLIM_OFFSET`).
#[unsafe(no_mangle)]
static SIGNAL_RLIM_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `io_ring_ctx.user`, 0 when unknown
/// (`pin_common::settings::GLOBAL_CTX_USER_OFFSET`).
#[unsafe(no_mangle)]
static CTX_USER_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.mm`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_MM_OFFSET`).
#[unsafe(no_mangle)]
static TASK_MM_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.pid`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_PID_OFFSET`).
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.tgid`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_TGID_OFFSET`).
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.group_leader`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_GROUP_LEADER_OFFSET`).
#[unsafe(no_mangle)]
static TASK_GROUP_LEADER_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.comm`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_COMM_OFFSET`).
#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `mm_struct.pinned_vm`, 0 when unknown
/// (`pin_common::settings::GLOBAL_MM_PINNED_VM_OFFSET`).
#[unsafe(no_mangle)]
static MM_PINNED_VM_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `task_struct.cred`, 0 when unknown
/// (`pin_common::settings::GLOBAL_TASK_CRED_OFFSET`).
#[unsafe(no_mangle)]
static TASK_CRED_OFFSET: Global<u64> = Global::new(0);

/// 1 + offset of `cred.cap_effective`, 0 when unknown
/// (`pin_common::settings::GLOBAL_CRED_CAP_EFFECTIVE_OFFSET`).
#[unsafe(no_mangle)]
static CRED_CAP_EFFECTIVE_OFFSET: Global<u64> = Global::new(0);

/// Where the memlock checks' counters and limits sit (each 1 + the byte
/// offset, 0 when unknown), from the kernel's BTF.
#[derive(Clone, Copy)]
pub struct LimitLayout {
    /// `user_struct.locked_vm`.
    pub user_locked_vm: u64,
    /// `mm_struct.locked_vm`.
    pub mm_locked_vm: u64,
    /// `task_struct.signal`.
    pub task_signal: u64,
    /// `signal_struct.rlim`.
    pub signal_rlim: u64,
    /// `io_ring_ctx.user`.
    pub ctx_user: u64,
    /// `task_struct.mm`.
    pub task_mm: u64,
    /// `mm_struct.pinned_vm`.
    pub mm_pinned_vm: u64,
    /// `task_struct.cred`.
    pub task_cred: u64,
    /// `cred.cap_effective`.
    pub cred_cap_effective: u64,
}

/// The memlock checks' layout (see [`LimitLayout`]).
#[inline(always)]
pub fn limit_layout() -> LimitLayout {
    LimitLayout {
        user_locked_vm: USER_LOCKED_VM_OFFSET.load(),
        mm_locked_vm: MM_LOCKED_VM_OFFSET.load(),
        task_signal: TASK_SIGNAL_OFFSET.load(),
        signal_rlim: SIGNAL_RLIM_OFFSET.load(),
        ctx_user: CTX_USER_OFFSET.load(),
        task_mm: TASK_MM_OFFSET.load(),
        mm_pinned_vm: MM_PINNED_VM_OFFSET.load(),
        task_cred: TASK_CRED_OFFSET.load(),
        cred_cap_effective: CRED_CAP_EFFECTIVE_OFFSET.load(),
    }
}

/// How to read traced function `id` on this kernel; `None` for a function
/// the agent did not configure.
#[inline(always)]
pub(crate) fn config(id: FuncId) -> Option<FuncConfig> {
    if id as usize >= FUNC_COUNT {
        return None;
    }
    // SAFETY: `id` is within the table; a volatile read, as `Global::load`
    // does, so that the compiler reads what the loader wrote.
    let config = unsafe {
        core::ptr::read_volatile(
            FUNC_CONFIGS
                .0
                .as_ptr()
                .cast::<FuncConfig>()
                .add(id as usize),
        )
    };
    (config.valid != 0).then_some(config)
}

/// Whether callers are attributed.
#[inline(always)]
pub fn callers_on() -> bool {
    CALLERS_ON.load() == 1
}

/// Whether only one cgroup's tasks are counted (`--cgroup`).
#[inline(always)]
pub fn cgroup_filter_on() -> bool {
    CGROUP_FILTER_ON.load() == 1
}

/// Whether a process tree may be followed (`record -- CMD`).
#[inline(always)]
pub fn follow_on() -> bool {
    FOLLOW_ON.load() == 1
}

/// Whether per-call events may be asked for (`trace`, `validate`).
#[inline(always)]
pub fn events_on() -> bool {
    PER_CALL_EVENTS_ON.load() == 1
}

/// Entry `index` of `SETTINGS` (0 until the agent writes it).
#[inline(always)]
fn setting(index: u32) -> u64 {
    SETTINGS.get(index).copied().unwrap_or(0)
}

/// Whether full calls may wait in the thread's pending counts (the agent
/// folds them: see `pending`).
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub fn defer_on() -> bool {
    setting(pin_common::settings::SETTING_DEFER) == 1
}

/// Whether pin lifetimes are recorded: wanted, and started (the global
/// first, so that without `--lifetimes` the verifier drops the rest).
#[inline(always)]
pub fn lifetimes_on() -> bool {
    LIFETIMES_ON.load() == 1 && setting(SETTING_LIFETIMES) == 1
}

/// The kernel's `FOLL_PIN` bit.
#[inline(always)]
pub fn foll_pin() -> u64 {
    FOLL_PIN.load()
}

/// The kernel's `FOLL_LONGTERM` bit (0: unknown).
#[inline(always)]
pub fn foll_longterm() -> u64 {
    FOLL_LONGTERM.load()
}

/// The address of the kernel's return-probe trampoline, which a kretprobe
/// writes over the return address of a call it watches (0: unknown).
#[inline(always)]
pub fn return_trampoline() -> u64 {
    RETURN_TRAMPOLINE.load()
}

/// Where a task keeps its pending return-probe instances: 1 + the list
/// head's offset in `task_struct` (0: unknown), then the offsets of an
/// instance's link, replaced return address and replaced slot.
#[inline(always)]
pub fn return_instance_layout() -> [u64; 4] {
    [
        TASK_RETURN_LIST_OFFSET.load(),
        RETURN_NODE_LINK_OFFSET.load(),
        RETURN_NODE_RET_OFFSET.load(),
        RETURN_NODE_SLOT_OFFSET.load(),
    ]
}

/// Where the current task's kernel stack pointer sits in `task_struct`
/// (offset + 1, 0 when unknown) and how big the stack is.
#[inline(always)]
pub fn task_stack_layout() -> (u64, u64) {
    (TASK_STACK_OFFSET.load(), TASK_STACK_SIZE.load())
}

/// Where a task's ids sit in `task_struct`: 1 + the offsets of `pid` and
/// `tgid` (0: unknown).
#[inline(always)]
pub fn task_ids_layout() -> (u64, u64) {
    (TASK_PID_OFFSET.load(), TASK_TGID_OFFSET.load())
}

/// Where a task's group leader and name sit in `task_struct`: 1 + the
/// offsets of `group_leader` and `comm` (0: unknown).
#[inline(always)]
pub fn leader_comm_layout() -> (u64, u64) {
    (TASK_GROUP_LEADER_OFFSET.load(), TASK_COMM_OFFSET.load())
}

/// Offset of `child_pid` in the `sched_process_fork` record.
#[inline(always)]
pub fn fork_child_pid_offset() -> usize {
    match setting(SETTING_FORK_CHILD_PID_OFFSET) {
        0 => pin_common::FORK_CHILD_PID_OFFSET,
        known => known as usize,
    }
}
