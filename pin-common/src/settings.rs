//! What the agent tells the probes.
//!
//! Whatever is fixed before the object is loaded (each traced function's
//! settings, the feature switches and facts about the running kernel) is a
//! read-only global of the object, named here and set with aya's
//! `EbpfLoader::override_global`: the verifier then knows its value and
//! skips the code it turns off, and no probe pays a map lookup for it.
//! What changes after load stays in the `SETTINGS` array.

/// Read-only global (`[FuncConfig; FUNC_COUNT]`): how to read each traced
/// function on this kernel, by id (`valid` 0 for a function not
/// configured). A program for one function reads its entry at a constant
/// offset, so the verifier knows every field (which measured neutral:
/// BENCHMARKS.md, "Start-up, eighth pass").
pub const GLOBAL_FUNC_CONFIGS: &str = "FUNC_CONFIGS";
/// Read-only global (`u64`): 1 when callers are attributed.
pub const GLOBAL_CALLERS_ON: &str = "CALLERS_ON";
/// Read-only global (`u64`): 1 when pin lifetimes are wanted
/// (`--lifetimes`); 0 lets the verifier drop their code. Recording starts
/// once [`SETTING_LIFETIMES`] turns 1 as well.
pub const GLOBAL_LIFETIMES_ON: &str = "LIFETIMES_ON";
/// Read-only global (`u64`): the kernel's `FOLL_PIN` bit.
pub const GLOBAL_FOLL_PIN: &str = "FOLL_PIN";
/// Read-only global (`u64`): the address of the kernel's return-probe
/// trampoline (`arch_rethook_trampoline`, `__kretprobe_trampoline` or
/// `kretprobe_trampoline`, by kernel), 0 when unknown.
pub const GLOBAL_RETURN_TRAMPOLINE: &str = "RETURN_TRAMPOLINE";
/// Read-only global (`u64`): 1 + the offset of `stack` in
/// `struct task_struct` (from BTF), 0 when unknown. With it the probes tell
/// code running on the current task's stack from code on an interrupt's.
pub const GLOBAL_TASK_STACK_OFFSET: &str = "TASK_STACK_OFFSET";
/// Read-only global (`u64`): the size of a task's kernel stack (x86-64
/// `THREAD_SIZE`: 16 KiB, 32 KiB with KASAN); 0 when unknown.
pub const GLOBAL_TASK_STACK_SIZE: &str = "TASK_STACK_SIZE";
/// Read-only global (`u64`): 1 when only tasks in the cgroup at slot 0 of
/// `CGROUP_FILTER` (or its descendants) are counted (`--cgroup`).
pub const GLOBAL_CGROUP_FILTER_ON: &str = "CGROUP_FILTER_ON";
/// Read-only global (`u64`): 1 when the agent may follow a process tree
/// (`record -- CMD`); 0 lets the verifier drop the `FILTER` test and every
/// probe skip its lookup. Following starts once `FILTER` turns 1 as well.
pub const GLOBAL_FOLLOW_ON: &str = "FOLLOW_ON";
/// Read-only global (`u64`): 1 when the agent may ask for per-call events
/// (`trace`, `validate`); 0 lets the verifier drop the event code and every
/// return skip the `EVENT_FILTER` lookup. Events start once the filter's
/// `EVENTS_ON` entry turns 1 as well.
pub const GLOBAL_PER_CALL_EVENTS_ON: &str = "PER_CALL_EVENTS_ON";

/// Read-only global (`u64`): 1 + the offset of `locked_vm` in
/// `struct user_struct` (BTF), 0 when unknown (no io_uring verdicts).
pub const GLOBAL_USER_LOCKED_VM_OFFSET: &str = "USER_LOCKED_VM_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `locked_vm` in
/// `struct mm_struct` (BTF), 0 when unknown.
pub const GLOBAL_MM_LOCKED_VM_OFFSET: &str = "MM_LOCKED_VM_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `signal` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_SIGNAL_OFFSET: &str = "TASK_SIGNAL_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `rlim` in
/// `struct signal_struct` (BTF), 0 when unknown.
pub const GLOBAL_SIGNAL_RLIM_OFFSET: &str = "SIGNAL_RLIM_OFFSET";

/// Read-only global (`u64`): 1 + the offset of `user` in
/// `struct io_ring_ctx` (BTF), 0 when unknown.
pub const GLOBAL_CTX_USER_OFFSET: &str = "CTX_USER_OFFSET";

/// Read-only global (`u64`): the kernel's `FOLL_LONGTERM` bit (0:
/// unknown), for the flags of failed calls.
pub const GLOBAL_FOLL_LONGTERM: &str = "FOLL_LONGTERM";

/// Read-only global (`u64`): 1 + the offset of `mm` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_MM_OFFSET: &str = "TASK_MM_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `pinned_vm` in
/// `struct mm_struct` (BTF), 0 when unknown.
pub const GLOBAL_MM_PINNED_VM_OFFSET: &str = "MM_PINNED_VM_OFFSET";

/// Read-only global (`u64`): 1 + the offset of `cred` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_CRED_OFFSET: &str = "TASK_CRED_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `cap_effective` in
/// `struct cred` (BTF), 0 when unknown.
pub const GLOBAL_CRED_CAP_EFFECTIVE_OFFSET: &str = "CRED_CAP_EFFECTIVE_OFFSET";
/// Read-only global (`u64`): 1 + the offset in `struct task_struct` of
/// the task's list of pending return-probe instances (`rethooks` 5.19+,
/// `kretprobe_instances` 5.11-5.18; BTF), 0 when unknown (5.10 keeps them
/// in a global table). Each instance keeps the return address a
/// kretprobe's trampoline replaced, and the stack slot it replaced it in.
pub const GLOBAL_TASK_RETURN_LIST_OFFSET: &str = "TASK_RETURN_LIST_OFFSET";
/// Read-only global (`u64`): offset of the list link (`llist`) in a
/// return-probe instance (`rethook_node`, `kretprobe_instance`).
pub const GLOBAL_RETURN_NODE_LINK_OFFSET: &str = "RETURN_NODE_LINK_OFFSET";
/// Read-only global (`u64`): offset of the replaced return address
/// (`ret_addr`) in a return-probe instance.
pub const GLOBAL_RETURN_NODE_RET_OFFSET: &str = "RETURN_NODE_RET_OFFSET";
/// Read-only global (`u64`): offset of the replaced word's stack address
/// (`frame` in `rethook_node`, `fp` in `kretprobe_instance`).
pub const GLOBAL_RETURN_NODE_SLOT_OFFSET: &str = "RETURN_NODE_SLOT_OFFSET";

/// Read-only global (`u64`): 1 + the offset of `pid` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `tgid` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `group_leader` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_GROUP_LEADER_OFFSET: &str = "TASK_GROUP_LEADER_OFFSET";
/// Read-only global (`u64`): 1 + the offset of `comm` in
/// `struct task_struct` (BTF), 0 when unknown.
pub const GLOBAL_TASK_COMM_OFFSET: &str = "TASK_COMM_OFFSET";

/// Every read-only global the agent sets; all are `u64`.
pub const GLOBALS: [&str; 27] = [
    GLOBAL_CALLERS_ON,
    GLOBAL_LIFETIMES_ON,
    GLOBAL_FOLL_PIN,
    GLOBAL_RETURN_TRAMPOLINE,
    GLOBAL_TASK_STACK_OFFSET,
    GLOBAL_TASK_STACK_SIZE,
    GLOBAL_CGROUP_FILTER_ON,
    GLOBAL_FOLLOW_ON,
    GLOBAL_PER_CALL_EVENTS_ON,
    GLOBAL_USER_LOCKED_VM_OFFSET,
    GLOBAL_MM_LOCKED_VM_OFFSET,
    GLOBAL_TASK_SIGNAL_OFFSET,
    GLOBAL_SIGNAL_RLIM_OFFSET,
    GLOBAL_CTX_USER_OFFSET,
    GLOBAL_FOLL_LONGTERM,
    GLOBAL_TASK_MM_OFFSET,
    GLOBAL_MM_PINNED_VM_OFFSET,
    GLOBAL_TASK_CRED_OFFSET,
    GLOBAL_CRED_CAP_EFFECTIVE_OFFSET,
    GLOBAL_TASK_RETURN_LIST_OFFSET,
    GLOBAL_RETURN_NODE_LINK_OFFSET,
    GLOBAL_RETURN_NODE_RET_OFFSET,
    GLOBAL_RETURN_NODE_SLOT_OFFSET,
    GLOBAL_TASK_PID_OFFSET,
    GLOBAL_TASK_TGID_OFFSET,
    GLOBAL_TASK_GROUP_LEADER_OFFSET,
    GLOBAL_TASK_COMM_OFFSET,
];

/// Index in the `SETTINGS` array: offset of `child_pid` in the
/// `sched:sched_process_fork` record, from its tracefs format (0: the
/// classic [`crate::FORK_CHILD_PID_OFFSET`]; 6.13+ moved it when the comm
/// fields became `__string`s). A map entry: the agent reads the format
/// only once it follows a process tree (`record -- CMD`), after mounting
/// tracefs, long after the object was loaded.
pub const SETTING_FORK_CHILD_PID_OFFSET: u32 = 0;
/// Index in the `SETTINGS` array: 1 from when the agent, with
/// `--lifetimes`, is about to attach the release hook; pins are remembered
/// only from then on, so that hardly any is taken whose release the hook
/// cannot see yet. A map entry: it turns on after the get/pin functions
/// attached, not at load.
pub const SETTING_LIFETIMES: u32 = 1;
/// Index in the `SETTINGS` array: 1 once the agent can fold the probes'
/// per-thread pending counts (its task iterator and the thread-exit
/// watch both attached); until then every call is accounted directly. A
/// map entry: both attach after the get/pin functions.
pub const SETTING_DEFER: u32 = 2;
/// Number of entries in `SETTINGS`.
pub const SETTINGS_LEN: u32 = 3;
