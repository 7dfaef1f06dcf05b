//! Kernel work run on a thread per item: attaching and detaching probes,
//! verifying the kprobe_multi programs. Under emulation and on busy hosts
//! most of it is spent waiting in the kernel (code patching, RCU grace
//! periods), so what the kernel does not serialize overlaps.

/// Runs `work` on every item, a thread per item so that items waiting in
/// the kernel overlap (rayon's pool has as many threads as CPUs, which is
/// right for computing, not for waiting), the caller's thread included;
/// where threads cannot be had, the started ones and the caller's take the
/// rest. Returns the results in `items`' order. Every thread has ended
/// when it returns.
pub(super) fn concurrently<T: Send, R: Send>(
    items: Vec<T>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    use std::sync::{Mutex, PoisonError};
    let count = items.len();
    let queue = Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let done = Mutex::new(Vec::with_capacity(count));
    let drain = || {
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((index, item)) = next else { break };
            let result = work(item);
            done.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((index, result));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..count {
            let started = std::thread::Builder::new()
                .name("pinwatch-probes".into())
                .spawn_scoped(scope, drain);
            if started.is_err() {
                break;
            }
        }
        drain();
    });
    let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrently_runs_every_item_at_once_and_keeps_their_order() {
        use std::sync::Barrier;
        assert_eq!(concurrently(Vec::<u32>::new(), |n| n), Vec::<u32>::new());
        // Each item waits for all the others: this ends only if every item
        // has a thread of its own, as waiting in the kernel needs.
        let items: Vec<u32> = (0..24).collect();
        let all_started = Barrier::new(items.len());
        let doubled = concurrently(items.clone(), |n| {
            all_started.wait();
            2 * n
        });
        assert_eq!(doubled, items.iter().map(|n| 2 * n).collect::<Vec<_>>());
    }
}
