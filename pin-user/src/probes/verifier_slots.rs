//! How many programs the kernel verifies at once while the functions
//! attach, each on a thread of its own: as many as the host has CPUs.
//!
//! Why: verifying is computing (about 13 µs per instruction walked under
//! TCG), attaching is mostly waiting for the kernel, which updates one
//! trampoline or kprobe at a time. With every thread verifying at once
//! the CPUs are shared among all of them, so all the verifications end
//! together and every attach waits until then; the updates then run one
//! after another with the CPUs idle. With a slot per CPU, verifications
//! end one by one and each function attaches while the next are verified.

use std::sync::{Condvar, Mutex, PoisonError};

/// A counting semaphore over the verifier.
pub(super) struct VerifierSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl VerifierSlots {
    /// One slot per CPU this process may run on.
    pub(super) fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Runs `load` (a program's load, which the kernel verifies) once a
    /// slot is free, holding the slot until it returns.
    pub(super) fn verify<R>(&self, load: impl FnOnce() -> R) -> R {
        let _slot = self.take();
        load()
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

/// A slot taken; given back when dropped (also when the load panics).
struct Slot<'a>(&'a VerifierSlots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// No more loads run at once than there are slots, and every one runs.
    #[test]
    fn at_most_the_slots_run_at_once() {
        let slots = VerifierSlots::new(2);
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let ran = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    slots.verify(|| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                });
            }
        });
        assert_eq!(ran.load(Ordering::SeqCst), 8);
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?} at once");
    }
}
