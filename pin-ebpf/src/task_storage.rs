//! Per-thread state. Task local storage (`BPF_MAP_TYPE_TASK_STORAGE`,
//! Linux 5.11+) where the kernel has it: found through the task itself and
//! freed with it. The baseline object keeps it in an LRU hash by thread id
//! instead, removed when the thread exits ([`forget_current`]). Either
//! map is this module's own: the agent never reads it.
//!
//! aya-ebpf 0.2.1 declares the other local-storage maps (inode, socket,
//! cgroup) but not this one, so it is declared here the way aya-ebpf
//! declares those: a BTF map definition in `.maps`, whose field types carry
//! the map type, flags, key and value to the loader.

#[cfg(not(feature = "baseline"))]
use core::{ffi::c_void, ptr};

#[cfg(not(feature = "baseline"))]
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
};
#[cfg(feature = "baseline")]
use aya_ebpf::{macros::map, maps::LruHashMap};
#[cfg(not(feature = "baseline"))]
use pin_common::LATENCY_BUCKETS;
#[cfg(feature = "baseline")]
use pin_common::THREADS_CAPACITY;
use pin_common::{Health, TaskState};

use crate::counters::bump_health;

/// A task local storage map of `T`, one per thread.
#[cfg(not(feature = "baseline"))]
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders for the loader and are never
// dereferenced; the kernel serialises access to each task's value.
#[cfg(not(feature = "baseline"))]
unsafe impl<T> Sync for TaskStorage<T> {}

#[cfg(not(feature = "baseline"))]
impl<T> TaskStorage<T> {
    /// The placeholder definition the loader reads.
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The current thread's value, created zeroed when `create` is set and
    /// there is none yet; `None` when there is none (or the kernel could
    /// not allocate one, or refused a recursive use of the map).
    #[inline(always)]
    pub fn current(&self, create: bool) -> Option<&'static mut T> {
        let flags = if create {
            u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE)
        } else {
            0
        };
        // SAFETY: the helper takes this map and the current task's BTF
        // pointer; it returns a pointer to the task's value or null.
        let value = unsafe {
            bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast::<c_void>(),
                bpf_get_current_task_btf().cast(),
                ptr::null_mut(),
                flags,
            )
        }
        .cast::<T>();
        // SAFETY: non-null values point into the map for the task's life.
        unsafe { value.as_mut() }
    }
}

/// A thread's calls not yet in the shared rows, in two blocks of one key
/// each: `pending`'s to use, laid out here with the rest of the
/// per-thread state.
#[cfg(not(feature = "baseline"))]
#[repr(C)]
pub struct Pending {
    /// Who holds the blocks: `pending`'s `FREE`, `THREAD` or `FOLD`.
    pub(crate) lock: u64,
    /// Two keys, so that a thread whose first call was of another kind
    /// (exec's copy of its arguments, say) keeps the one it then makes
    /// over and over; a third key is accounted directly until the next
    /// fold frees them.
    pub(crate) blocks: [Block; 2],
}

/// Calls of one key not yet in the shared rows.
#[cfg(not(feature = "baseline"))]
#[repr(C)]
pub struct Block {
    /// 1 once the key below is set (the thread's first call under it was
    /// accounted directly).
    pub(crate) keyed: u32,
    /// The variant (outermost function).
    pub(crate) outer: u32,
    /// The call site (0: callers off or unknown).
    pub(crate) caller: u64,
    /// The cgroup v2 id.
    pub(crate) cgroup: u64,
    /// The thread's process.
    pub(crate) tgid: u64,
    /// Calls, each a full one (as many pages returned as asked for).
    pub(crate) calls: u64,
    /// Pages returned.
    pub(crate) pages: u64,
    /// Calls whose fast path fell back.
    pub(crate) fallbacks: u64,
    /// Pages by path.
    pub(crate) fast_pages: u64,
    pub(crate) slow_pages: u64,
    /// Latency sum and maximum.
    pub(crate) latency_sum_ns: u64,
    pub(crate) latency_max_ns: u64,
    /// Latency histogram (log2 buckets, as `GupStats::latency_log2`).
    pub(crate) latency_log2: [u64; LATENCY_BUCKETS],
}

/// What the full object keeps per thread: its nesting state and its
/// calls not yet in the shared rows (`pending`).
#[cfg(not(feature = "baseline"))]
#[repr(C)]
pub struct TaskSlot {
    /// Where the thread is inside the GUP family.
    pub state: TaskState,
    /// Its full calls not yet folded into the shared rows.
    pub pending: Pending,
}

/// What the baseline object keeps per thread: its nesting state.
#[cfg(feature = "baseline")]
#[repr(C)]
pub struct TaskSlot {
    /// Where the thread is inside the GUP family.
    pub state: TaskState,
}

/// Per thread: where it is inside the GUP family. Task local storage rather
/// than a hash keyed by thread id: found through the task without hashing
/// (the lookup every probe makes), and freed when the thread exits, so a
/// thread that dies mid-call leaves nothing behind.
#[cfg(not(feature = "baseline"))]
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "TASK_STATES")]
static TASK_STATES: TaskStorage<TaskSlot> = TaskStorage::new();

/// The baseline object's per-thread state: an LRU hash by thread id,
/// emptied by the thread-exit program (as task storage frees itself).
#[cfg(feature = "baseline")]
#[map]
static TASK_STATES: LruHashMap<u32, TaskSlot> = LruHashMap::with_max_entries(THREADS_CAPACITY, 0);

/// The current thread's slot (state and pending counts), created zeroed
/// when `create` is set and there is none yet.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub fn current_slot(create: bool) -> Option<&'static mut TaskSlot> {
    TASK_STATES.current(create)
}

/// The state of `task` (a `task_struct` pointer the verifier knows as
/// one), if it has any; never created.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub fn slot_of(task: *mut c_void) -> Option<&'static mut TaskSlot> {
    // SAFETY: the helper takes this map and a task's BTF pointer; it
    // returns a pointer to the task's value or null.
    let value = unsafe {
        bpf_task_storage_get(
            ptr::from_ref(&TASK_STATES).cast_mut().cast::<c_void>(),
            task.cast(),
            ptr::null_mut(),
            0,
        )
    }
    .cast::<TaskSlot>();
    // SAFETY: non-null values point into the map for the task's life.
    unsafe { value.as_mut() }
}

/// Nothing to do: task storage goes with its task.
#[cfg(not(feature = "baseline"))]
#[inline(always)]
pub fn forget_current() {}

/// The current thread's slot (its state), created zeroed when `create` is
/// set and there is none yet (baseline object: an LRU hash by thread id).
#[cfg(feature = "baseline")]
#[inline(always)]
pub fn current_slot(create: bool) -> Option<&'static mut TaskSlot> {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    // Every CPU's idle task is thread 0: it never calls GUP, and an
    // interrupt that releases pins there must not share one state.
    if tid == 0 {
        return None;
    }
    if let Some(state) = TASK_STATES.get_ptr_mut(&tid) {
        // SAFETY: a live map value; only this thread uses its entry.
        return unsafe { state.as_mut() };
    }
    if !create {
        return None;
    }
    let zero = TaskSlot {
        state: TaskState::default(),
    };
    TASK_STATES
        .insert(&tid, &zero, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .ok()?;
    // SAFETY: as above.
    TASK_STATES
        .get_ptr_mut(&tid)
        .and_then(|state| unsafe { state.as_mut() })
}

/// The exiting thread's state goes (task storage does that by itself).
#[cfg(feature = "baseline")]
#[inline(always)]
pub fn forget_current() {
    let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
    let _ = TASK_STATES.remove(&tid);
}

/// The current thread's nesting state, created on first use when `create`
/// (a failure to create it counted as a health event).
#[inline(always)]
pub(crate) fn task_state(create: bool) -> Option<&'static mut TaskState> {
    task_slot(create).map(|slot| &mut slot.state)
}

/// The current thread's slot, created on first use when `create` (a
/// failure to create it counted as a health event).
#[inline(always)]
pub(crate) fn task_slot(create: bool) -> Option<&'static mut TaskSlot> {
    let state = current_slot(create);
    if state.is_none() && create {
        // Allocation failed or the kernel refused a recursive use of the
        // storage (a probe firing inside another probe's lookup).
        bump_health(Health::TaskStateLost);
    }
    state
}
