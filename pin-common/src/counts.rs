//! The probes' counts of rare events ([`ProbeCounts`]): what they could
//! not account ([`Health`]) and the entries they created in the LRU
//! tables (`INSERTS_*`).

/// Index in [`ProbeCounts::inserts`]: entries created in `PROCS`.
pub const INSERTS_PROCS: u32 = 0;
/// Index in [`ProbeCounts::inserts`]: entries created in `CALLERS`.
pub const INSERTS_CALLERS: u32 = 1;
/// Index in [`ProbeCounts::inserts`]: entries created in `CGROUPS`.
pub const INSERTS_CGROUPS: u32 = 2;
/// Index in [`ProbeCounts::inserts`]: entries created in `FAILURES`.
pub const INSERTS_FAILURES: u32 = 3;
/// Length of [`ProbeCounts::inserts`].
pub const INSERTS_LEN: u32 = 4;

/// The probes' counts of rare events, added to atomically by every CPU:
/// the object's one writable global (its `.bss`, the map
/// [`crate::maps::PROBE_COUNTS`]). A global, not a map the probes look up: its
/// address is a constant of each program, where each lookup site of a map
/// is one more rewrite of the program at load (see `pin-ebpf`'s
/// `counters`). Shared, not per CPU: these events are rare.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCounts {
    /// Events the probes could not account, by [`Health`] index.
    pub health: [u64; HEALTH_COUNT],
    /// Entries created in the LRU tables, by `INSERTS_*` index (with the
    /// live entries they give the evictions).
    pub inserts: [u64; INSERTS_LEN as usize],
}

impl ProbeCounts {
    /// Nothing counted.
    pub const ZERO: Self = Self {
        health: [0; HEALTH_COUNT],
        inserts: [0; INSERTS_LEN as usize],
    };
}

/// Indexes of the agent-visible health counters in
/// [`ProbeCounts::health`]: events the probes could not account and why.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// The per-task state could not be created (allocation failure, or the
    /// kernel refused a recursive use of task local storage).
    TaskStateLost = 0,
    /// An exit probe ran without a matching entry (e.g. kretprobe misses,
    /// or probes attached while the task was already inside the call).
    UnmatchedExit = 1,
    /// A per-process entry could not be created.
    ProcStateLost = 2,
    /// A forked process of a followed tree could not be added to `TRACKED`.
    TrackLost = 3,
    /// A per-call event was dropped because the `EVENTS` ring was full.
    EventsLost = 4,
    /// An outermost call's stack did not show its caller.
    CallerUnknown = 5,
    /// Pinned pages beyond `LIFETIME_PAGES_PER_CALL` in one call, whose
    /// lifetime is not tracked.
    LifetimesTruncated = 6,
    /// Pinned pages not tracked because `PIN_LIFETIMES` was full.
    LifetimesFull = 7,
    /// FOLL_PIN releases of folios pinwatch did not see pinned (pinned
    /// before it started, or not tracked).
    UntrackedRelease = 8,
    /// Outermost calls never counted because their return was not seen
    /// (summed over variants; `GupStats::missed_returns` has them per
    /// variant).
    MissedReturn = 9,
    /// Per-thread nesting deeper than real GUP nesting can be: the state
    /// was reset (counted with [`Health::MissedReturn`] as well).
    DepthOverflow = 10,
    /// Releases made in interrupt context (e.g. an O_DIRECT completion)
    /// while a process tree is followed or one cgroup is chosen: the
    /// interrupted task says nothing about whose pins they are, so they are
    /// not in the tree's (or the cgroup's) counts.
    IrqReleaseNotFollowed = 11,
    /// A per-cgroup entry could not be created.
    CgroupStateLost = 12,
}

impl Health {
    /// Every health counter, in index order.
    pub const ALL: [Health; 13] = [
        Health::TaskStateLost,
        Health::UnmatchedExit,
        Health::ProcStateLost,
        Health::TrackLost,
        Health::EventsLost,
        Health::CallerUnknown,
        Health::LifetimesTruncated,
        Health::LifetimesFull,
        Health::UntrackedRelease,
        Health::MissedReturn,
        Health::DepthOverflow,
        Health::IrqReleaseNotFollowed,
        Health::CgroupStateLost,
    ];

    /// The counter's name wherever one word names it (the `reason` label of
    /// `pinwatch_probe_events_lost`, logs).
    pub const fn label(self) -> &'static str {
        match self {
            Health::TaskStateLost => "task_state_lost",
            Health::UnmatchedExit => "unmatched_exit",
            Health::ProcStateLost => "proc_state_lost",
            Health::TrackLost => "fork_not_followed",
            Health::EventsLost => "event_ring_full",
            Health::CallerUnknown => "caller_unknown",
            Health::LifetimesTruncated => "lifetime_per_call_limit",
            Health::LifetimesFull => "lifetime_table_full",
            Health::UntrackedRelease => "release_of_untracked_pin",
            Health::MissedReturn => "return_not_seen",
            Health::DepthOverflow => "nesting_overflow",
            Health::IrqReleaseNotFollowed => "irq_release_not_followed",
            Health::CgroupStateLost => "cgroup_state_lost",
        }
    }
}

/// Number of [`Health`] counters.
pub const HEALTH_COUNT: usize = Health::ALL.len();

// `Health::ALL` lists every counter at its own index.
const _: () = {
    let mut i = 0;
    while i < HEALTH_COUNT {
        assert!(Health::ALL[i] as usize == i);
        i += 1;
    }
};
