//! The BPF maps shared with the agent. Aggregation happens here, so that
//! nothing per event crosses to userspace: in per-CPU maps where every
//! call lands (the per-variant and health counters, small and hot), in
//! shared maps with atomic adds where the key spreads the calls (per
//! process, cgroup and call site), since a per-CPU hash costs its capacity
//! times the possible CPUs of kernel memory whether used or not. (The
//! per-thread state, which only the probes use, is `task_storage`'s; the
//! counts of rare events are a global, `counters`'.)
//!
//! A static's identifier is its map's name (aya-ebpf takes it from there);
//! the agent opens the maps by the names in `pin_common::maps`, which a
//! pin-user test checks against the built objects.

use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::{
    macros::map,
    maps::{Array, CgroupArray, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use pin_common::{
    CGROUPS_CAPACITY, CallerKey, CallerStats, CgroupStats, EVENT_FILTER_LEN, EVENTS_RING_BYTES,
    FUNC_COUNT, GUP_FUNC_COUNT, GupStats, PROCS_CAPACITY, PinBalance, PinRecord, ProcStats,
    ReleaseStats, TRACKED_CAPACITY,
    attribution::{CALLERS_CAPACITY, LIFETIMES_CAPACITY},
    failures::{FAILURES_CAPACITY, FailureKey, FailureStats},
    limits::{CHECK_ARGS_CAPACITY, CheckArgs, DENIALS_CAPACITY, Denial, DenialKey},
    release_hook::ReleaseAtHook,
    settings::SETTINGS_LEN,
};

/// Per outermost get/pin variant: counters and histograms.
#[map]
pub static GUP_STATS: PerCpuArray<GupStats> =
    PerCpuArray::with_max_entries(GUP_FUNC_COUNT as u32, 0);

/// Per release function: calls and pages.
#[map]
pub static RELEASE_STATS: PerCpuArray<ReleaseStats> =
    PerCpuArray::with_max_entries((FUNC_COUNT - GUP_FUNC_COUNT) as u32, 0);

/// Per process (tgid): calls, pages, pins and releases.
#[map]
pub static PROCS: LruHashMap<u32, ProcStats> = LruHashMap::with_max_entries(PROCS_CAPACITY, 0);

/// Per cgroup v2 id: calls, pages, pins, releases and errors (releases in
/// interrupt context are `PIN_BALANCE`'s `irq_released`).
#[map]
pub static CGROUPS: LruHashMap<u64, CgroupStats> =
    LruHashMap::with_max_entries(CGROUPS_CAPACITY, 0);

/// The cgroup whose tasks (and its descendants') alone are counted, in
/// slot 0, when `--cgroup` sets the `CGROUP_FILTER_ON` global.
#[map]
pub static CGROUP_FILTER: CgroupArray = CgroupArray::with_max_entries(1, 0);

/// 1 at index 0 when only the processes in `TRACKED` are counted
/// (`pinwatch record -- CMD`).
#[map]
pub static FILTER: Array<u32> = Array::with_max_entries(1, 0);

/// The followed process tree: tgids (and thread ids) forked from the
/// command, kept current by the fork/exit tracepoints. Not preallocated:
/// its entries come and go with the tree, which is usually small (the
/// agent also shrinks it to one entry when nothing is followed).
#[map]
pub static TRACKED: HashMap<u32, u8> =
    HashMap::with_max_entries(TRACKED_CAPACITY, BPF_F_NO_PREALLOC);

/// FOLL_PIN pages taken and released, side by side (see
/// [`pin_common::PinBalance`]).
#[map]
pub static PIN_BALANCE: PerCpuArray<PinBalance> = PerCpuArray::with_max_entries(1, 0);

/// Which release function the release hook counts, the code of those
/// counted at their own entry, and each CPU's interrupt marks (see
/// [`pin_common::release_hook::ReleaseAtHook`]).
#[map]
pub static RELEASE_AT_HOOK: PerCpuArray<ReleaseAtHook> = PerCpuArray::with_max_entries(1, 0);

/// Per-call events ([`pin_common::CallEvent`]) for the features that need
/// them; written only while `EVENT_FILTER[EVENTS_ON]` is 1. A full ring
/// drops the event and counts it (`Health::EventsLost`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Which calls become events: on/off, thread id, process id (see the
/// `EVENTS_*` indexes in pin-common).
#[map]
pub static EVENT_FILTER: Array<u32> = Array::with_max_entries(EVENT_FILTER_LEN, 0);

/// What the agent tells the probes after load: the start of pin
/// lifetimes and where the fork tracepoint's record keeps the child's pid
/// (see `SETTING_*` in `pin_common::settings`). What is fixed before load
/// is a read-only global instead (`settings`).
#[map]
pub static SETTINGS: Array<u64> = Array::with_max_entries(SETTINGS_LEN, 0);

/// Per (call site, outermost function): counters, latency and hold-time
/// histograms. LRU: a flood of distinct call sites evicts the coldest.
/// Shared: the one map where all CPUs can hit one entry (a hot call
/// site), but per-CPU it would be 196 MiB at 256 CPUs.
#[map]
pub static CALLERS: LruHashMap<CallerKey, CallerStats> =
    LruHashMap::with_max_entries(CALLERS_CAPACITY, 0);

/// An all-zero [`CallerStats`] to create `CALLERS` entries from (the
/// value is larger than the BPF stack). Per-CPU so that each CPU's
/// creation time, the one field set, is its own.
#[map]
pub static CALLER_ZERO: PerCpuArray<CallerStats> = PerCpuArray::with_max_entries(1, 0);

/// Outstanding pins by folio address (`--lifetimes`). Not LRU: an evicted
/// pin would vanish silently; a full map is counted instead. The agent
/// shrinks it to one entry when lifetimes are off.
#[map]
pub static PIN_LIFETIMES: HashMap<u64, PinRecord> =
    HashMap::with_max_entries(LIFETIMES_CAPACITY, 0);

/// The kernel's memlock refusals by (process, check): what the deciding
/// function compared at the latest one, and how many. Shared (not
/// per-CPU): refusals are rare; LRU: the oldest process's row goes first.
#[map]
pub static LIMIT_DENIALS: LruHashMap<DenialKey, Denial> =
    LruHashMap::with_max_entries(DENIALS_CAPACITY, 0);

/// A kprobe'd check's arguments by thread, until its kretprobe.
#[map]
pub static CHECK_ARGS: HashMap<u64, CheckArgs> = HashMap::with_max_entries(CHECK_ARGS_CAPACITY, 0);

/// Failed and short get/pin calls by (call site, variant, outcome,
/// flags). Shared, not per-CPU: such calls are the exception, and one
/// entry per key keeps the map small on many-CPU hosts.
#[map]
pub static FAILURES: LruHashMap<FailureKey, FailureStats> =
    LruHashMap::with_max_entries(FAILURES_CAPACITY, 0);
