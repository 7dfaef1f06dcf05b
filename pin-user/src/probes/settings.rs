//! What the agent tells the probes: each traced function's settings, the
//! feature switches (callers, lifetimes, following, per-call events) and
//! the facts about this kernel that BPF programs cannot find themselves
//! (its FOLL_PIN bit, the return trampoline's address, where a task's
//! stack is) as read-only globals
//! fixed when the object is loaded ([`Globals`]); through the SETTINGS
//! map, what changes after load (the start of pin lifetimes, just before
//! the release hook attaches; where the fork tracepoint keeps the child's
//! pid, learnt once a process tree is followed); and the tracefs mount the
//! fork tracepoint needs.

use aya::EbpfLoader;
use pin_common::settings::{
    GLOBAL_CALLERS_ON, GLOBAL_CGROUP_FILTER_ON, GLOBAL_CRED_CAP_EFFECTIVE_OFFSET,
    GLOBAL_CTX_USER_OFFSET, GLOBAL_FOLL_LONGTERM, GLOBAL_FOLL_PIN, GLOBAL_FOLLOW_ON,
    GLOBAL_FUNC_CONFIGS, GLOBAL_LIFETIMES_ON, GLOBAL_MM_LOCKED_VM_OFFSET,
    GLOBAL_MM_PINNED_VM_OFFSET, GLOBAL_PER_CALL_EVENTS_ON, GLOBAL_RETURN_NODE_LINK_OFFSET,
    GLOBAL_RETURN_NODE_RET_OFFSET, GLOBAL_RETURN_NODE_SLOT_OFFSET, GLOBAL_RETURN_TRAMPOLINE,
    GLOBAL_SIGNAL_RLIM_OFFSET, GLOBAL_TASK_COMM_OFFSET, GLOBAL_TASK_CRED_OFFSET,
    GLOBAL_TASK_GROUP_LEADER_OFFSET, GLOBAL_TASK_MM_OFFSET, GLOBAL_TASK_PID_OFFSET,
    GLOBAL_TASK_RETURN_LIST_OFFSET, GLOBAL_TASK_SIGNAL_OFFSET, GLOBAL_TASK_STACK_OFFSET,
    GLOBAL_TASK_STACK_SIZE, GLOBAL_TASK_TGID_OFFSET, GLOBAL_USER_LOCKED_VM_OFFSET,
    SETTING_LIFETIMES,
};
use pin_common::{FUNC_COUNT, FuncConfig};

use super::{AttachError, AttachOptions, KernelMapsMut};
use crate::kernel::{KernelFacts, btf::Btf, foll::FollFlags};

/// The object's read-only globals (names in `pin_common::settings`): the
/// function table and the `u64` switches and offsets. Fixed before load,
/// so the verifier knows them and drops the code a switch turns off; no
/// probe looks them up in a map.
pub(super) struct Globals {
    /// Each traced function's settings, by id (`FuncConfig::UNSET` for
    /// one not configured: see [`Globals::with_functions`]).
    functions: [FuncConfig; FUNC_COUNT],
    callers: u64,
    lifetimes: u64,
    /// `None` when this kernel's FOLL_PIN is unknown: see
    /// [`Globals::start_lifetimes`].
    foll_pin: Option<u64>,
    /// 0 when unknown: failed calls then never show LONGTERM.
    foll_longterm: u64,
    return_trampoline: u64,
    return_instances: ReturnInstances,
    task_stack_offset: u64,
    task_stack_size: u64,
    cgroup_filter: u64,
    follow: u64,
    events: u64,
    /// Where process names are read: see [`TaskNames`].
    task_names: TaskNames,
    /// Where the memlock checks read: see [`LimitLayout`].
    pub(super) limit_layout: LimitLayout,
}

/// 1 + the offsets (0: unknown) of what the memlock checks read, from BTF:
/// `user_struct.locked_vm`, `mm_struct.locked_vm`, `task_struct.signal`,
/// `signal_struct.rlim`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct LimitLayout {
    pub user_locked_vm: u64,
    pub mm_locked_vm: u64,
    pub task_signal: u64,
    pub signal_rlim: u64,
    pub ctx_user: u64,
    pub task_mm: u64,
    pub mm_pinned_vm: u64,
    pub task_cred: u64,
    pub cred_cap_effective: u64,
}

/// Where a task keeps its pending return-probe instances, from BTF:
/// 1 + the list head's offset in `task_struct` (0: unknown), and the
/// offsets in an instance of its link, of the return address a kretprobe
/// replaced and of the stack slot it replaced it in. The probes read them
/// to tell a call still running under a kretprobe's trampoline from a
/// later call at the same place under another tracer's
/// (`frame::return_address` in pin-ebpf).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ReturnInstances {
    pub task_list: u64,
    pub link: u64,
    pub ret: u64,
    pub slot: u64,
}

impl ReturnInstances {
    /// This kernel's layout: rethook nodes (5.19+, where x86's kretprobes
    /// run on rethook), else kretprobe instances on a task list
    /// (5.11-5.18); unknown before (5.10 keeps them in a global table) and
    /// without BTF.
    pub(super) fn for_kernel(btf: Option<&Btf>) -> Self {
        let Some(btf) = btf else {
            return Self::default();
        };
        let layouts = [
            ("rethooks", "rethook_node", "frame"),
            ("kretprobe_instances", "kretprobe_instance", "fp"),
        ];
        layouts
            .iter()
            .find_map(|(list, node, slot)| {
                Some(Self {
                    task_list: u64::from(btf.member_offset("task_struct", list)?) + 1,
                    link: u64::from(btf.member_offset(node, "llist")?),
                    ret: u64::from(btf.member_offset(node, "ret_addr")?),
                    slot: u64::from(btf.member_offset(node, slot)?),
                })
            })
            .unwrap_or_else(|| {
                log::info!(
                    "no per-task return-probe instances in BTF: another tracer's kretprobe \
                     on these functions can make a missed return look like a call still running"
                );
                Self::default()
            })
    }
}

impl LimitLayout {
    /// This kernel's layout; zeros where BTF lacks a member (or BTF).
    fn for_kernel(facts: &KernelFacts) -> Self {
        let Ok(btf) = &facts.btf else {
            return Self::default();
        };
        let at = |name: &str, member: &str| {
            btf.member_offset(name, member)
                .map_or(0, |off| u64::from(off) + 1)
        };
        Self {
            user_locked_vm: at("user_struct", "locked_vm"),
            mm_locked_vm: at("mm_struct", "locked_vm"),
            task_signal: at("task_struct", "signal"),
            signal_rlim: at("signal_struct", "rlim"),
            ctx_user: at("io_ring_ctx", "user"),
            task_mm: at("task_struct", "mm"),
            mm_pinned_vm: at("mm_struct", "pinned_vm"),
            task_cred: at("task_struct", "cred"),
            cred_cap_effective: at("cred", "cap_effective"),
        }
    }

    /// What a check function of shape `shape` (`pin_common::limits::
    /// SHAPE_*`) needs and this kernel's BTF does not give, if anything.
    pub(super) fn missing_for(&self, shape: u32) -> Option<&'static str> {
        use pin_common::limits::{SHAPE_CTX_NR, SHAPE_MLOCK, SHAPE_MM_TASK};
        let mut needs = vec![
            (self.task_signal, "task_struct.signal"),
            (self.signal_rlim, "signal_struct.rlim"),
        ];
        if shape == SHAPE_MLOCK {
            needs.push((self.task_mm, "task_struct.mm"));
            needs.push((self.task_cred, "task_struct.cred"));
            needs.push((self.cred_cap_effective, "cred.cap_effective"));
        }
        if shape == SHAPE_MM_TASK || shape == SHAPE_MLOCK {
            needs.push((self.mm_locked_vm, "mm_struct.locked_vm"));
        } else {
            needs.push((self.user_locked_vm, "user_struct.locked_vm"));
        }
        if shape == SHAPE_CTX_NR {
            needs.push((self.ctx_user, "io_ring_ctx.user"));
        }
        needs
            .into_iter()
            .find_map(|(offset, name)| (offset == 0).then_some(name))
    }
}

impl Globals {
    /// The globals for `options` on this kernel.
    pub(super) fn for_kernel(facts: &KernelFacts, options: &AttachOptions) -> Self {
        let (task_stack_offset, task_stack_size) = task_stack(facts);
        Self {
            functions: [FuncConfig::UNSET; FUNC_COUNT],
            callers: u64::from(options.callers),
            lifetimes: u64::from(options.lifetimes),
            foll_pin: FollFlags::for_kernel(facts.btf.as_ref().ok()).value("FOLL_PIN"),
            foll_longterm: FollFlags::for_kernel(facts.btf.as_ref().ok())
                .value("FOLL_LONGTERM")
                .unwrap_or(0),
            return_trampoline: return_trampoline(facts),
            return_instances: ReturnInstances::for_kernel(facts.btf.as_ref().ok()),
            task_stack_offset,
            task_stack_size,
            cgroup_filter: u64::from(options.cgroup.is_some()),
            follow: u64::from(options.follow),
            events: u64::from(options.events),
            task_names: TaskNames::for_kernel(facts),
            limit_layout: LimitLayout::for_kernel(facts),
        }
    }

    /// The same with each traced function's settings (`load::
    /// configure_functions`); without, no function is configured and no
    /// program counts anything (enough for the tables alone).
    pub(super) fn with_functions(self, functions: [FuncConfig; FUNC_COUNT]) -> Self {
        Self { functions, ..self }
    }

    /// Each `u64` global's name and value.
    fn entries(&self) -> [(&'static str, &u64); 27] {
        [
            (GLOBAL_CALLERS_ON, &self.callers),
            (GLOBAL_LIFETIMES_ON, &self.lifetimes),
            (GLOBAL_FOLL_PIN, self.foll_pin.as_ref().unwrap_or(&0)),
            (GLOBAL_RETURN_TRAMPOLINE, &self.return_trampoline),
            (GLOBAL_TASK_STACK_OFFSET, &self.task_stack_offset),
            (GLOBAL_TASK_STACK_SIZE, &self.task_stack_size),
            (GLOBAL_CGROUP_FILTER_ON, &self.cgroup_filter),
            (GLOBAL_FOLLOW_ON, &self.follow),
            (GLOBAL_PER_CALL_EVENTS_ON, &self.events),
            (
                GLOBAL_USER_LOCKED_VM_OFFSET,
                &self.limit_layout.user_locked_vm,
            ),
            (GLOBAL_MM_LOCKED_VM_OFFSET, &self.limit_layout.mm_locked_vm),
            (GLOBAL_TASK_SIGNAL_OFFSET, &self.limit_layout.task_signal),
            (GLOBAL_SIGNAL_RLIM_OFFSET, &self.limit_layout.signal_rlim),
            (GLOBAL_CTX_USER_OFFSET, &self.limit_layout.ctx_user),
            (GLOBAL_FOLL_LONGTERM, &self.foll_longterm),
            (GLOBAL_TASK_MM_OFFSET, &self.limit_layout.task_mm),
            (GLOBAL_MM_PINNED_VM_OFFSET, &self.limit_layout.mm_pinned_vm),
            (GLOBAL_TASK_CRED_OFFSET, &self.limit_layout.task_cred),
            (
                GLOBAL_CRED_CAP_EFFECTIVE_OFFSET,
                &self.limit_layout.cred_cap_effective,
            ),
            (
                GLOBAL_TASK_RETURN_LIST_OFFSET,
                &self.return_instances.task_list,
            ),
            (GLOBAL_RETURN_NODE_LINK_OFFSET, &self.return_instances.link),
            (GLOBAL_RETURN_NODE_RET_OFFSET, &self.return_instances.ret),
            (GLOBAL_RETURN_NODE_SLOT_OFFSET, &self.return_instances.slot),
            (GLOBAL_TASK_PID_OFFSET, &self.task_names.pid),
            (GLOBAL_TASK_TGID_OFFSET, &self.task_names.tgid),
            (
                GLOBAL_TASK_GROUP_LEADER_OFFSET,
                &self.task_names.group_leader,
            ),
            (GLOBAL_TASK_COMM_OFFSET, &self.task_names.comm),
        ]
    }

    /// Sets every global on `loader`, for the object it loads next; a
    /// global missing from the object fails the load.
    pub(super) fn apply<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(GLOBAL_FUNC_CONFIGS, &self.functions, true);
        for (name, value) in self.entries() {
            loader.override_global(name, value, true);
        }
    }

    /// What attach does after the get/pin functions attached, just before
    /// the release hook: fails when this kernel's FOLL_PIN bit is unknown
    /// (the hook could not tell pins from other references; checked here,
    /// not at load, so that the failure comes when it always has), and
    /// with `--lifetimes` starts them (`SETTING_LIFETIMES`).
    pub(super) fn start_lifetimes(&self, maps: &mut KernelMapsMut<'_>) -> Result<(), AttachError> {
        if self.foll_pin.is_none() {
            return Err(AttachError::Load(
                "the kernel's FOLL_PIN value is unknown".into(),
            ));
        }
        if self.lifetimes == 1 {
            set_setting(maps, SETTING_LIFETIMES, 1)?;
        }
        Ok(())
    }
}

/// Puts the cgroup `--cgroup` chose into `CGROUP_FILTER` (before any
/// probe attaches, so that nothing outside it is ever counted). The kernel
/// keeps its own reference to the cgroup: the directory is closed after.
pub(super) fn choose_cgroup(
    maps: &mut KernelMapsMut<'_>,
    dir: &std::path::Path,
) -> Result<(), AttachError> {
    let root = crate::cgroups::cgroup2_root();
    let chosen = crate::cgroups::CgroupFilter::open(&dir.to_string_lossy(), root)
        .map_err(|e| AttachError::Unavailable(format!("--cgroup: {e}")))?;
    maps.set_cgroup_filter(&chosen.dir)
        .map_err(|e| AttachError::Load(e.to_string()))
}

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

/// Where the kernel's return-probe trampoline is (0: unknown): a
/// kretprobe writes its address over the return address of each call it
/// watches, and the probes must recognise that word to know that the call
/// is still running (see `TaskState::outer_mark`). Unknown (kallsyms
/// hidden), the probes check only frame positions.
fn return_trampoline(facts: &KernelFacts) -> u64 {
    facts
        .kallsyms()
        .address(&crate::kernel::kallsyms::RETURN_TRAMPOLINES)
        .unwrap_or(0)
}

/// 1 + the offsets (0: unknown) in `task_struct` of what process names
/// are read from, from BTF: the probes name a process after its group
/// leader (`group_leader`, `comm`) and tell, at a rename of another task,
/// whether it leads its group (`pid`, `tgid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TaskNames {
    pub pid: u64,
    pub tgid: u64,
    pub group_leader: u64,
    pub comm: u64,
}

impl TaskNames {
    /// This kernel's layout; zeros where BTF lacks a member (or BTF).
    fn for_kernel(facts: &KernelFacts) -> Self {
        let Ok(btf) = &facts.btf else {
            return Self::default();
        };
        let at = |member: &str| {
            btf.member_offset("task_struct", member)
                .map_or(0, |off| u64::from(off) + 1)
        };
        Self {
            pid: at("pid"),
            tgid: at("tgid"),
            group_leader: at("group_leader"),
            comm: at("comm"),
        }
    }
}

/// Where a task's kernel stack is (1 + the offset of `task_struct.stack`)
/// and its size, so that the probes tell a release made by an interrupt
/// (an O_DIRECT completion) from one made by the task it interrupted.
/// Unknown (no BTF: zeros), releases are charged to the current task.
fn task_stack(facts: &KernelFacts) -> (u64, u64) {
    let Ok(btf) = &facts.btf else {
        return (0, 0);
    };
    let Some(offset) = btf.member_offset("task_struct", "stack") else {
        log::warn!(
            "task_struct.stack not in BTF: interrupt-context releases are charged to the interrupted task"
        );
        return (0, 0);
    };
    // x86-64 THREAD_SIZE: 16 KiB, doubled by KASAN.
    let size: u64 = if btf.has_func("kasan_check_range") {
        32 * 1024
    } else {
        16 * 1024
    };
    (u64::from(offset) + 1, size)
}

/// Writes entry `index` of the SETTINGS map (see
/// `pin_common::settings::SETTING_*`).
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
    use std::collections::HashMap;

    use pin_common::settings::{GLOBAL_FUNC_CONFIGS, GLOBALS};
    use pin_common::{FUNC_COUNT, FuncConfig};

    use super::{Globals, child_pid_offset_in};

    /// Every global is in both embedded objects and is a `u64`: a renamed
    /// or retyped static fails here rather than at load.
    #[test]
    fn objects_hold_the_globals() {
        let value = [0u8; 8];
        for object in [super::super::EBPF_OBJECT, super::super::BASELINE_OBJECT] {
            let mut parsed = aya_obj::Object::parse(object).expect("the object parses");
            let globals: HashMap<&str, (&[u8], bool)> = GLOBALS
                .iter()
                .map(|name| (*name, (&value[..], true)))
                .collect();
            parsed
                .patch_map_data(globals)
                .expect("each global is in the object, 8 bytes long");
            let table = [0u8; size_of::<FuncConfig>() * FUNC_COUNT];
            parsed
                .patch_map_data(HashMap::from([(GLOBAL_FUNC_CONFIGS, (&table[..], true))]))
                .expect("the function table is in the object, one entry per function");
        }
    }

    /// The agent sets every global pin-common names, once.
    #[test]
    fn every_global_is_set() {
        let globals = Globals {
            functions: [FuncConfig::UNSET; FUNC_COUNT],
            callers: 1,
            lifetimes: 0,
            foll_pin: None,
            foll_longterm: 0,
            return_trampoline: 0,
            return_instances: super::ReturnInstances::default(),
            task_stack_offset: 0,
            task_stack_size: 0,
            cgroup_filter: 0,
            follow: 0,
            events: 0,
            task_names: super::TaskNames::default(),
            limit_layout: super::LimitLayout::default(),
        };
        let names: Vec<&str> = globals.entries().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, GLOBALS);
    }

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
