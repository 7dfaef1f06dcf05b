//! The kernel's own memlock verdicts: when a charge against
//! RLIMIT_MEMLOCK is refused, the probes on the function that decided
//! record what it compared (see docs/limits.md), keyed by process and
//! check, in `LIMIT_DENIALS`.

/// Capacity of `LIMIT_DENIALS` (LRU): refusals are rare and the key is
/// (process, check), so a few hundred rows cover any real host; the
/// oldest are evicted beyond this.
pub const DENIALS_CAPACITY: u32 = 256;

/// Capacity of the per-thread stash of a kprobe'd check's arguments,
/// read back by its kretprobe (threads inside a check at one time).
pub const CHECK_ARGS_CAPACITY: u32 = 1024;

/// `__io_account_mem(user, nr_pages)` (io_uring, 6.1+): charges
/// `user->locked_vm` of the ring's creator; -ENOMEM when it would pass
/// the registering task's RLIMIT_MEMLOCK.
pub const CHECK_IO_URING: u32 = 0;
/// `__account_locked_vm(mm, pages, inc, task, bypass_rlim)` (VFIO type1,
/// iommufd's MM mode, `account_locked_vm` users): charges `mm->locked_vm`;
/// -ENOMEM when it would pass `task`'s RLIMIT_MEMLOCK.
pub const CHECK_ACCOUNT_LOCKED_VM: u32 = 1;
/// `do_mlock(start, len, flags)` (mlock, mlock2): charges the caller's
/// `mm->locked_vm`; -ENOMEM when the range would pass its RLIMIT_MEMLOCK.
/// Its -ENOMEM also means "range not mapped", so only a return whose
/// numbers pass the limit counts as a refusal (see docs/limits.md).
pub const CHECK_MLOCK: u32 = 2;
/// Number of checks.
pub const CHECK_COUNT: u32 = 3;

/// pinwatch's name of each check, by check id.
pub const CHECK_NAMES: [&str; CHECK_COUNT as usize] = ["io_uring", "account_locked_vm", "mlock"];

/// The errno `do_mlock` returns for a refusal (and for an unmapped range).
pub const ENOMEM: i64 = 12;

/// log2 of the page size (x86-64, the only architecture pinwatch builds for).
pub const PAGE_SHIFT: u64 = 12;

/// `RLIMIT_MEMLOCK`'s index in `signal_struct.rlim` (include/uapi/asm-generic/resource.h).
pub const RLIMIT_MEMLOCK: u64 = 8;

/// Size of one `struct rlimit` (two `unsigned long`s: cur, max).
pub const RLIMIT_SIZE: u64 = 16;

/// What a kprobe'd check was asked, kept per thread in `CHECK_ARGS`
/// for its kretprobe (only the probes use it).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CheckArgs {
    /// Address of the charged counter (`&user->locked_vm`, `&mm->locked_vm`).
    pub counter: u64,
    /// Pages asked for.
    pub pages: u64,
    /// The task whose RLIMIT_MEMLOCK applies.
    pub task: u64,
    /// The check (`CHECK_*`).
    pub check: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Key of `LIMIT_DENIALS`: which process was refused by which check.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DenialKey {
    /// Process (tgid) whose charge was refused.
    pub tgid: u32,
    /// The check that refused it (`CHECK_*`).
    pub check: u32,
}

/// Where a probed check function keeps the charged object (how its
/// programs read their arguments): `(user, nr_pages)`.
pub const SHAPE_USER_NR: u32 = 0;
/// `(user, mm_account, nr_pages)` (`io_account_mem`, 6.19+).
pub const SHAPE_USER_MM_NR: u32 = 1;
/// `(ctx, nr_pages)`, the user being `ctx->user` (`io_account_mem`, 6.18).
pub const SHAPE_CTX_NR: u32 = 2;
/// `(mm, pages, inc, task, bypass_rlim)` (`__account_locked_vm`).
pub const SHAPE_MM_TASK: u32 = 3;
/// `(start, len, flags)` (`do_mlock`): the current task's `mm`, bytes
/// from `start` rounded out to whole pages.
pub const SHAPE_MLOCK: u32 = 4;

/// What a check compared when it refused a charge, for the most recent
/// refusal of its key, and how many there were.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    /// Refusals so far (atomic add).
    pub denials: u64,
    /// Pages the last refused charge asked for.
    pub pages: u64,
    /// The charged counter's value at the refusal, in pages
    /// (`user->locked_vm` or `mm->locked_vm`): what the kernel compared
    /// against the limit (a failed charge leaves it unchanged).
    pub counter: u64,
    /// The soft RLIMIT_MEMLOCK the kernel compared with, in bytes
    /// (`u64::MAX`: unlimited).
    pub limit_bytes: u64,
    /// The check's return value (a negative errno).
    pub ret: i64,
    /// When the last refusal happened (ns, monotonic).
    pub last_ns: u64,
    /// The refused task's `mm->pinned_vm` (VmPin) at the refusal, in pages.
    pub vm_pinned: u64,
    /// Its `mm->locked_vm` (VmLck), in pages.
    pub vm_locked: u64,
    /// Real uid of the refused task.
    pub uid: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// comm of the refused task.
    pub comm: [u8; 16],
}
