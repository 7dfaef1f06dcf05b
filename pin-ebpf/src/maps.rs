//! The BPF maps shared with the agent. Aggregation happens here, in per-CPU
//! maps, so the hot path never contends and nothing per event crosses to
//! userspace.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use pin_common::{
    EVENT_FILTER_LEN, EVENTS_RING_BYTES, FUNC_COUNT, FuncConfig, GUP_FUNC_COUNT, GupStats,
    HEALTH_COUNT, PROCS_CAPACITY, ProcStats, ReleaseStats, TASKS_CAPACITY, TRACKED_CAPACITY,
    TaskState,
};

/// Per traced function: how to read it on this kernel. Filled by the agent
/// from the kernel's BTF before any program is attached.
#[map]
pub static CONFIG: Array<FuncConfig> = Array::with_max_entries(FUNC_COUNT as u32, 0);

/// Per outermost get/pin variant: counters and histograms.
#[map]
pub static GUP_STATS: PerCpuArray<GupStats> =
    PerCpuArray::with_max_entries(GUP_FUNC_COUNT as u32, 0);

/// Per release function: calls and pages.
#[map]
pub static RELEASE_STATS: PerCpuArray<ReleaseStats> =
    PerCpuArray::with_max_entries((FUNC_COUNT - GUP_FUNC_COUNT) as u32, 0);

/// Per thread: where it is inside the GUP family. LRU so that a thread that
/// dies mid-call (or a missed return probe) cannot fill the map.
#[map]
pub static TASKS: LruHashMap<u64, TaskState> = LruHashMap::with_max_entries(TASKS_CAPACITY, 0);

/// Per process (tgid): calls, pages, pins and releases.
#[map]
pub static PROCS: LruPerCpuHashMap<u32, ProcStats> =
    LruPerCpuHashMap::with_max_entries(PROCS_CAPACITY, 0);

/// 1 at index 0 when only the processes in `TRACKED` are counted
/// (`pinwatch record -- CMD`).
#[map]
pub static FILTER: Array<u32> = Array::with_max_entries(1, 0);

/// The followed process tree: tgids (and thread ids) forked from the
/// command, kept current by the fork/exit tracepoints.
#[map]
pub static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(TRACKED_CAPACITY, 0);

/// Events the probes could not account, by [`pin_common::Health`] index.
#[map]
pub static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(HEALTH_COUNT as u32, 0);

/// Per-call events ([`pin_common::CallEvent`]) for the features that need
/// them; written only while `EVENT_FILTER[EVENTS_ON]` is 1. A full ring
/// drops the event and counts it in `HEALTH`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Which calls become events: on/off, thread id, process id (see the
/// `EVENTS_*` indexes in pin-common).
#[map]
pub static EVENT_FILTER: Array<u32> = Array::with_max_entries(EVENT_FILTER_LEN, 0);
