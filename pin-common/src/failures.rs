//! Failed and short get/pin calls: every outermost call that returned an
//! errno, nothing, or fewer pages than it asked for, counted in the kernel
//! by (call site, variant, outcome, flags) in `FAILURES`, for the error
//! view of `stat`, `top` and `/metrics`.

/// Capacity of `FAILURES` (LRU): distinct (call site, variant, outcome,
/// flags) combinations are few (tens); the coldest go first beyond this,
/// counted like the other LRU tables.
pub const FAILURES_CAPACITY: u32 = 512;

/// [`FailureKey::outcome`] of a call that returned 0 pages.
pub const OUTCOME_ZERO: i32 = 0;
/// [`FailureKey::outcome`] of a call that returned some pages, fewer than
/// asked for. (Negative outcomes are the errno the call returned.)
pub const OUTCOME_SHORT: i32 = 1;

/// [`FailureKey::flags`] bit: the caller passed FOLL_WRITE.
pub const FAILED_WRITE: u32 = 1;
/// [`FailureKey::flags`] bit: the caller passed FOLL_LONGTERM.
pub const FAILED_LONGTERM: u32 = 2;

/// Key of `FAILURES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailureKey {
    /// Return address in the caller (0: unknown, or callers off).
    pub caller: u64,
    /// [`crate::FuncId`] of the outermost get/pin function.
    pub func: u32,
    /// A negative errno, [`OUTCOME_ZERO`] or [`OUTCOME_SHORT`].
    pub outcome: i32,
    /// [`FAILED_WRITE`] and [`FAILED_LONGTERM`] as the caller passed them.
    pub flags: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Counters of one `FAILURES` key (shared by all CPUs: atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureStats {
    /// Calls that ended so.
    pub calls: u64,
    /// Pages they asked for.
    pub pages_requested: u64,
    /// Pages they got (positive returns).
    pub pages_returned: u64,
    /// The largest request among them (plain store: a lost race keeps
    /// the other, also real, value).
    pub max_requested: u64,
    /// When the latest ended (ns, monotonic).
    pub last_ns: u64,
    /// When the entry was created (ns, monotonic): tells a re-created
    /// (evicted) entry from the one read before.
    pub first_ns: u64,
    /// Process (tgid) of the latest.
    pub last_tgid: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// comm of the latest.
    pub comm: [u8; 16],
}
