//! The reference pinning implementation: an executable model of the
//! documented get_user_pages contract (`reference/get_user_pages*.txt`) and
//! of the modern pin rules (FOLL_PIN vs FOLL_GET, pin accounting, the zero
//! page, LONGTERM restrictions, unsharing, release balancing).
//!
//! Given a model address space ([`AddressSpace`]) and a call ([`Call`]),
//! [`predict`] says what the kernel must return, which pages the fast path
//! takes and which fall back, the faults and COW breaks on the way, and the
//! pin counter deltas; [`paths`] expands the system calls pinwatch's
//! scenarios make into the GUP calls they must produce. Where a real kernel
//! departs from the documented contract the departure is a named
//! [`Deviation`] tied to kernel versions, never a silent adjustment.
//!
//! Nothing here touches the running kernel: the model is pure data in, data
//! out, and its tests (unit and proptest) run without root.

mod call;
mod ledger;
pub mod paths;
mod predict;
mod rules;
mod space;
#[cfg(test)]
mod tests;

pub use call::{Call, GupFlags, Variant};
pub use ledger::{LedgerError, PinLedger};
pub use predict::{GUP_PIN_COUNTING_BIAS, Prediction, predict};
pub use rules::{Deviation, KernelVersion, ProcMemForce, Rules};
pub use space::{
    AddressSpace, Backing, HUGE_PAGE_PAGES, PAGE_SIZE, PageState, Present, Vma, VmaShape,
};
