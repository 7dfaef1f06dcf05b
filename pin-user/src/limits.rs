//! Memory-lock limits and accounting per process, from /proc: the
//! RLIMIT_MEMLOCK soft and hard limits, what the process has charged to
//! `mm->locked_vm` (`VmLck`: mlock, VFIO type1) and `mm->pinned_vm`
//! (`VmPin`: RDMA, io_uring, perf), and the headroom left before the next
//! charge against the soft limit fails. Which caller charges which counter
//! is in docs/limits.md; io_uring and AF_XDP also charge the user's
//! `locked_vm`, which /proc does not show.

use serde::Serialize;

/// A process is "near its limit" once a counter reaches this share of the
/// soft limit: the next registration of the usual size (a few MiB of
/// buffers against the common 8 MiB or 64 MiB default) would fail.
pub const NEAR_LIMIT_PERCENT: u64 = 90;

/// A process's memlock limit and the counters charged against it, in
/// bytes (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemlockState {
    /// RLIMIT_MEMLOCK soft limit (what the kernel checks).
    pub limit: Option<u64>,
    /// RLIMIT_MEMLOCK hard limit (how far the process may raise it).
    pub limit_hard: Option<u64>,
    /// `VmLck`: pages charged to `mm->locked_vm`.
    pub locked: u64,
    /// `VmPin`: pages charged to `mm->pinned_vm`.
    pub pinned: u64,
}

/// Why a process's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The process is gone or its /proc files are unreadable.
    #[error("reading /proc/{pid}: {source}")]
    Proc {
        /// The process.
        pid: u32,
        /// procfs's error.
        source: procfs::ProcError,
    },
}

/// Bytes of a limit value (`None`: unlimited).
fn bytes(value: procfs::process::LimitValue) -> Option<u64> {
    match value {
        procfs::process::LimitValue::Unlimited => None,
        procfs::process::LimitValue::Value(v) => Some(v),
    }
}

impl MemlockState {
    /// Reads process `pid`'s limits and status.
    pub fn read(pid: u32) -> Result<Self, LimitsError> {
        let error = |source| LimitsError::Proc { pid, source };
        let process = procfs::process::Process::new(pid as i32).map_err(error)?;
        let limit = process.limits().map_err(error)?.max_locked_memory;
        let status = process.status().map_err(error)?;
        Ok(Self {
            limit: bytes(limit.soft_limit),
            limit_hard: bytes(limit.hard_limit),
            locked: status.vmlck.unwrap_or(0) * 1024,
            pinned: status.vmpin.unwrap_or(0) * 1024,
        })
    }

    /// Bytes that can still be charged to `mm->locked_vm` (mlock, VFIO
    /// type1) before the soft limit refuses; `None` when unlimited.
    pub fn locked_headroom(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.locked))
    }

    /// Bytes that can still be charged to `mm->pinned_vm` (RDMA umem)
    /// before the soft limit refuses; `None` when unlimited.
    pub fn pinned_headroom(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.pinned))
    }

    /// Whether either counter has reached [`NEAR_LIMIT_PERCENT`] of the
    /// soft limit (never for an unlimited one; a limit of 0 with nothing
    /// charged is not "near": nothing was ever allowed).
    pub fn near_limit(&self) -> bool {
        match self.limit {
            None => false,
            Some(limit) => {
                let used = self.locked.max(self.pinned);
                used > 0 && used.saturating_mul(100) >= limit.saturating_mul(NEAR_LIMIT_PERCENT)
            }
        }
    }
}

/// A process holding locked or pinned memory, with its limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Its limit and counters.
    pub memlock: MemlockState,
}

/// The processes with the most memory charged to `VmLck` or `VmPin`
/// (the larger of the two, then pid), at most `limit`, and how many more
/// hold some. Processes that exit or turn unreadable during the walk are
/// skipped.
pub fn top_holders(limit: usize) -> Result<(Vec<Holder>, usize), procfs::ProcError> {
    let mut holders: Vec<Holder> = procfs::process::all_processes()?
        .flatten()
        .filter_map(|process| {
            let status = process.status().ok()?;
            let (locked, pinned) = (status.vmlck.unwrap_or(0), status.vmpin.unwrap_or(0));
            if locked == 0 && pinned == 0 {
                return None;
            }
            let pid = status.pid as u32;
            let limit = process.limits().ok()?.max_locked_memory;
            Some(Holder {
                pid,
                comm: status.name,
                memlock: MemlockState {
                    limit: bytes(limit.soft_limit),
                    limit_hard: bytes(limit.hard_limit),
                    locked: locked * 1024,
                    pinned: pinned * 1024,
                },
            })
        })
        .collect();
    holders.sort_by_key(|h| {
        (
            std::cmp::Reverse(h.memlock.locked.max(h.memlock.pinned)),
            h.pid,
        )
    });
    let more = holders.len().saturating_sub(limit);
    holders.truncate(limit);
    Ok((holders, more))
}

/// A size in bytes as a short text: `unlimited`, or KiB/MiB/GiB.
pub fn fmt_limit(bytes: Option<u64>) -> String {
    match bytes {
        None => "unlimited".to_string(),
        Some(b) if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        Some(b) if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        Some(b) => format!("{}K", b.div_ceil(1024)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: Option<u64>, locked: u64, pinned: u64) -> MemlockState {
        MemlockState {
            limit,
            limit_hard: limit,
            locked,
            pinned,
        }
    }

    #[test]
    fn reads_this_process_as_getrlimit_and_status_say() {
        let me = MemlockState::read(std::process::id()).unwrap();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) }, 0);
        let want = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
        assert_eq!(
            (me.limit, me.limit_hard),
            (want(rl.rlim_cur), want(rl.rlim_max))
        );
        let status = procfs::process::Process::myself()
            .unwrap()
            .status()
            .unwrap();
        assert_eq!(me.pinned, status.vmpin.unwrap() * 1024);
        assert!(matches!(
            MemlockState::read(u32::MAX >> 1),
            Err(LimitsError::Proc { .. })
        ));
    }

    #[test]
    fn headroom_and_nearness_follow_the_soft_limit() {
        let mib = 1 << 20;
        let s = state(Some(64 * mib), 8 * mib, 60 * mib);
        assert_eq!(s.locked_headroom(), Some(56 * mib));
        assert_eq!(s.pinned_headroom(), Some(4 * mib));
        assert!(s.near_limit(), "60 of 64 MiB is past 90%");
        assert!(!state(Some(64 * mib), 0, 57 * mib).near_limit());
        assert!(state(Some(64 * mib), 0, 58 * mib).near_limit());
        assert!(!state(None, 1 << 40, 1 << 40).near_limit());
        assert!(!state(Some(0), 0, 0).near_limit());
        assert_eq!(state(Some(mib), 0, 2 * mib).pinned_headroom(), Some(0));
    }

    #[test]
    fn limits_print_short() {
        assert_eq!(fmt_limit(None), "unlimited");
        assert_eq!(fmt_limit(Some(8 << 20)), "8M");
        assert_eq!(fmt_limit(Some(2 << 30)), "2G");
        assert_eq!(fmt_limit(Some(65536)), "64K");
        assert_eq!(fmt_limit(Some(1000)), "1K");
    }
}
