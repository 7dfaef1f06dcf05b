//! The kernel's verdicts on memlock charges, as views show them: for each
//! (process, check) in `LIMIT_DENIALS`, what the deciding function
//! compared at the latest refusal and the sentence that says why, e.g.
//! "io_uring charge of 32 pages refused ENOMEM: user locked_vm 0 + 32 >
//! RLIMIT_MEMLOCK 16 pages (64K), short by 16 pages (64K)".

use pin_common::limits::{CHECK_ACCOUNT_LOCKED_VM, CHECK_IO_URING, CHECK_MLOCK, Denial, DenialKey};
use serde::{Deserialize, Serialize};

use super::variant::errno_name;
use crate::limits::fmt_limit;
use crate::units::comm_text;

/// Bytes per page (x86-64; the probes report counters in pages).
const PAGE_SIZE: u64 = 4096;

/// One process's refusals by one check, as of the latest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Refused process (tgid).
    pub pid: u32,
    /// Its comm at the refusal.
    pub comm: String,
    /// Real uid of the refused task.
    pub uid: u32,
    /// What charged: `io_uring`, `account_locked_vm` or `mlock`.
    pub check: String,
    /// The counter it charges (`user locked_vm`, `mm locked_vm`).
    pub counter_name: String,
    /// Refusals so far.
    pub denials: u64,
    /// Pages the latest refused charge asked for.
    pub pages: u64,
    /// The counter's value it was compared with, in pages.
    pub counter_pages: u64,
    /// The soft RLIMIT_MEMLOCK compared with, in bytes (`None`: unlimited).
    pub limit_bytes: Option<u64>,
    /// The errno returned (`ENOMEM`).
    pub errno: String,
    /// The refused process's VmPin (`mm->pinned_vm`) at the refusal, in
    /// pages (0 where BTF did not give its place).
    pub vm_pinned_pages: u64,
    /// Its VmLck (`mm->locked_vm`), in pages.
    pub vm_locked_pages: u64,
    /// Pages over the limit the charge would have gone (0 when the
    /// numbers fit: a concurrent release in between, or the kernel refused
    /// for another reason).
    pub shortfall_pages: u64,
    /// When the latest refusal happened (ns, monotonic clock).
    pub last_ns: u64,
}

/// pinwatch's name of check `check`, and the counter it charges.
fn check_names(check: u32) -> (&'static str, &'static str) {
    match check {
        CHECK_IO_URING => ("io_uring", "user locked_vm"),
        CHECK_ACCOUNT_LOCKED_VM => ("account_locked_vm", "mm locked_vm"),
        CHECK_MLOCK => ("mlock", "mm locked_vm"),
        _ => ("unknown", "counter"),
    }
}

impl Verdict {
    /// The view of one `LIMIT_DENIALS` row.
    pub fn from_row(key: &DenialKey, row: &Denial) -> Self {
        let (check, counter_name) = check_names(key.check);
        let limit_bytes = (row.limit_bytes != u64::MAX).then_some(row.limit_bytes);
        let limit_pages = limit_bytes.map(|b| b / PAGE_SIZE);
        let wanted = row.counter.saturating_add(row.pages);
        Verdict {
            pid: key.tgid,
            comm: comm_text(&row.comm),
            uid: row.uid,
            check: check.to_string(),
            counter_name: counter_name.to_string(),
            denials: row.denials,
            pages: row.pages,
            counter_pages: row.counter,
            limit_bytes,
            errno: errno_name(row.ret.unsigned_abs() as usize),
            vm_pinned_pages: row.vm_pinned,
            vm_locked_pages: row.vm_locked,
            shortfall_pages: limit_pages.map_or(0, |l| wanted.saturating_sub(l)),
            last_ns: row.last_ns,
        }
    }

    /// Why the kernel refused, in one line.
    pub fn sentence(&self) -> String {
        let size = |pages: u64| fmt_limit(Some(pages * PAGE_SIZE));
        let limit = match self.limit_bytes {
            Some(b) => format!("{} pages ({})", b / PAGE_SIZE, fmt_limit(Some(b))),
            None => "unlimited".to_string(),
        };
        let mut line = format!(
            "{} charge of {} pages refused {}: {} {} + {} > RLIMIT_MEMLOCK {}",
            self.check,
            self.pages,
            self.errno,
            self.counter_name,
            self.counter_pages,
            self.pages,
            limit
        );
        if self.shortfall_pages > 0 {
            line += &format!(
                ", short by {} pages ({})",
                self.shortfall_pages,
                size(self.shortfall_pages)
            );
        }
        line += &format!(
            "; process VmPin {}, VmLck {}",
            size(self.vm_pinned_pages),
            size(self.vm_locked_pages)
        );
        line
    }
}

/// Every refusal on record, the latest first.
pub fn verdicts<'a>(rows: impl IntoIterator<Item = (&'a DenialKey, &'a Denial)>) -> Vec<Verdict> {
    let mut all: Vec<Verdict> = rows
        .into_iter()
        .map(|(k, r)| Verdict::from_row(k, r))
        .collect();
    all.sort_by(|a, b| b.last_ns.cmp(&a.last_ns).then(a.pid.cmp(&b.pid)));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pages: u64, counter: u64, limit_bytes: u64) -> Denial {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"ring");
        Denial {
            denials: 2,
            pages,
            counter,
            limit_bytes,
            ret: -12,
            last_ns: 5,
            vm_pinned: 3,
            vm_locked: 0,
            uid: 1000,
            _pad: 0,
            comm,
        }
    }

    #[test]
    fn io_uring_refusal_reads_as_the_kernel_compared() {
        let key = DenialKey {
            tgid: 42,
            check: CHECK_IO_URING,
        };
        let v = Verdict::from_row(&key, &row(32, 4, 65536));
        assert_eq!(v.shortfall_pages, 20);
        assert_eq!(v.errno, "ENOMEM");
        assert_eq!(
            v.sentence(),
            "io_uring charge of 32 pages refused ENOMEM: user locked_vm 4 + 32 > \
             RLIMIT_MEMLOCK 16 pages (64K), short by 20 pages (80K); process VmPin 12K, VmLck 0K"
        );
    }

    #[test]
    fn numbers_that_fit_claim_no_shortfall() {
        let key = DenialKey {
            tgid: 7,
            check: CHECK_ACCOUNT_LOCKED_VM,
        };
        let v = Verdict::from_row(&key, &row(1, 1, u64::MAX));
        assert_eq!(v.limit_bytes, None);
        assert_eq!(v.shortfall_pages, 0);
        assert!(
            v.sentence()
                .contains("mm locked_vm 1 + 1 > RLIMIT_MEMLOCK unlimited; process VmPin")
        );
    }

    #[test]
    fn latest_refusal_comes_first() {
        let a = (
            DenialKey { tgid: 1, check: 0 },
            Denial {
                last_ns: 1,
                ..row(1, 0, 0)
            },
        );
        let b = (
            DenialKey { tgid: 2, check: 0 },
            Denial {
                last_ns: 9,
                ..row(1, 0, 0)
            },
        );
        let v = verdicts([(&a.0, &a.1), (&b.0, &b.1)]);
        assert_eq!(v.iter().map(|v| v.pid).collect::<Vec<_>>(), [2, 1]);
    }
}
