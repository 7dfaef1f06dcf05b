//! The names of the BPF maps the agent opens, one constant each.
//!
//! aya-ebpf names a map after its static in `pin-ebpf/src/maps.rs` (the
//! identifier is the name), so these strings are the other half of that
//! contract: a renamed static would leave the agent asking for a map that
//! is not there. A pin-user test parses the embedded objects and checks
//! that every name in [`ALL`] is one of their maps. Maps only the probes
//! use (`TASK_STATES`, `CALLER_ZERO`) have no constant.

/// Per outermost get/pin variant: counters and histograms (`GupStats`).
pub const GUP_STATS: &str = "GUP_STATS";
/// Per release function: calls and pages (`ReleaseStats`).
pub const RELEASE_STATS: &str = "RELEASE_STATS";
/// Per process (tgid): calls, pages, pins and releases (`ProcStats`).
pub const PROCS: &str = "PROCS";
/// 1 at index 0 when only the processes in [`TRACKED`] are counted.
pub const FILTER: &str = "FILTER";
/// The followed process tree (`record -- CMD`).
pub const TRACKED: &str = "TRACKED";
/// Per cgroup v2 id: calls, pages, pins, releases, errors (`CgroupStats`).
pub const CGROUPS: &str = "CGROUPS";
/// The cgroup whose tasks alone are counted (`--cgroup`), slot 0 of a
/// cgroup array (read only when the filter global is on).
pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
/// FOLL_PIN pages taken and released, side by side (`PinBalance`).
pub const PIN_BALANCE: &str = "PIN_BALANCE";
/// The probes' counts of rare events (`ProbeCounts`: events they could
/// not account, entries created in the LRU tables): the object's `.bss`,
/// the one writable global, which aya makes a one-entry array named after
/// its section.
pub const PROBE_COUNTS: &str = ".bss";
/// The per-call event ring buffer (`CallEvent`).
pub const EVENTS: &str = "EVENTS";
/// Which calls become events, by `EVENTS_*` index.
pub const EVENT_FILTER: &str = "EVENT_FILTER";
/// What the agent tells the probes after load, by `SETTING_*` index
/// (what is fixed before load is a read-only global: see [`crate::settings`]).
pub const SETTINGS: &str = "SETTINGS";
/// Per (call site, outermost function) counters (`CallerStats`).
pub const CALLERS: &str = "CALLERS";
/// Outstanding pins by folio (`PinRecord`, `--lifetimes`).
pub const PIN_LIFETIMES: &str = "PIN_LIFETIMES";

/// The kernel's memlock refusals by (process, check) (`limits::Denial`).
pub const LIMIT_DENIALS: &str = "LIMIT_DENIALS";

/// Failed and short get/pin calls by (call site, variant, outcome, flags)
/// (`failures::FailureStats`).
pub const FAILURES: &str = "FAILURES";

/// What the release hook counts as a release function's own
/// (`ReleaseAtHook`, a per-CPU array of one entry: the same settings on
/// every CPU, and each CPU's own interrupt marks).
pub const RELEASE_AT_HOOK: &str = "RELEASE_AT_HOOK";

/// Every map the agent opens.
pub const ALL: [&str; 17] = [
    GUP_STATS,
    RELEASE_STATS,
    PROCS,
    CGROUPS,
    CGROUP_FILTER,
    FILTER,
    TRACKED,
    PIN_BALANCE,
    PROBE_COUNTS,
    EVENTS,
    EVENT_FILTER,
    SETTINGS,
    CALLERS,
    PIN_LIFETIMES,
    LIMIT_DENIALS,
    FAILURES,
    RELEASE_AT_HOOK,
];
