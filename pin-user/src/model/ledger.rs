//! Release balancing: every pin taken must be released exactly once.

use std::collections::BTreeMap;

use serde::Serialize;

/// A release that does not match a pin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum LedgerError {
    /// The page was released more often than pinned.
    #[error("page {0:#x} released but not pinned")]
    NotPinned(u64),
}

/// Pins outstanding per page address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinLedger {
    outstanding: BTreeMap<u64, u64>,
}

impl PinLedger {
    /// Records pins of `pages` (one per address, repeats allowed).
    pub fn pin(&mut self, pages: &[u64]) {
        for &page in pages {
            *self.outstanding.entry(page).or_default() += 1;
        }
    }

    /// Releases one pin of each of `pages`.
    pub fn unpin(&mut self, pages: &[u64]) -> Result<(), LedgerError> {
        for &page in pages {
            match self.outstanding.get_mut(&page) {
                Some(count) if *count > 1 => *count -= 1,
                Some(_) => {
                    self.outstanding.remove(&page);
                }
                None => return Err(LedgerError::NotPinned(page)),
            }
        }
        Ok(())
    }

    /// Pins not yet released.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.values().sum()
    }

    /// Whether every pin was released.
    pub fn balanced(&self) -> bool {
        self.outstanding.is_empty()
    }
}
