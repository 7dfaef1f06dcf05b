//! The agent's own resident memory: what the long-running commands (`top`,
//! `stat`, `trace`, `serve`, `record`) do so that RSS stays small on a host
//! that runs them for months. Measured on Debian 6.12 (`stat`, 2 vCPUs):
//! 60.5 MiB before issue 20's changes, 10.5 MiB with them (this module's
//! part: 8.5 MiB of it); BENCHMARKS.md has the table.

/// No transparent huge pages for the agent. Its heap is a few MiB of small,
/// scattered allocations; with THP "always" (Debian's default) the kernel
/// backs it with 2 MiB pages it fills only partly, which measured 7 MiB of
/// RSS with no gain. The setting is inherited across fork and exec, so a
/// command pinwatch starts (`record -- CMD`) turns it back on
/// ([`restore_huge_pages`]): its pages are what is being measured.
pub fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        log::info!(
            "transparent huge pages stay on for the agent: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Turns transparent huge pages back on for a command pinwatch starts:
/// async-signal-safe (for `pre_exec`).
pub fn restore_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl is a plain system call, async-signal-safe.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Hands the memory start-up freed back to the kernel. Parsing BTF (twice:
/// pinwatch's own reader and aya's) and loading the object allocate tens
/// of MiB that are all freed once the probes are attached, but glibc
/// returns freed heap to the kernel only from the top of the heap, and the
/// few allocations made since sit above it: measured on 6.12, `stat` kept
/// 20 MiB of freed heap resident without this. musl's allocator unmaps
/// freed memory itself.
pub fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The agent's heap in use, counted as it goes: every allocation and free
/// of the `pinwatch` binary goes through this wrapper of the system
/// allocator (`#[global_allocator]` in `main.rs`). RSS cannot say whether
/// the agent keeps something per process seen: it moves in steps of
/// 264-324 KiB as the heap's high-water mark moves (measured in the soak
/// test while the per-process table fills), and freed memory stays
/// resident. This count moves by the byte. One relaxed atomic add per
/// allocation and per free; the crates that do this (`stats_alloc`,
/// `cap`) keep more per call than the one figure pinwatch exports.
pub struct CountingAllocator;

/// Bytes allocated and not yet freed through [`CountingAllocator`].
static HEAP_IN_USE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only arithmetic on the sizes it was given.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let ptr = unsafe { std::alloc::System.alloc(layout) };
        if !ptr.is_null() {
            HEAP_IN_USE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let ptr = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            HEAP_IN_USE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        HEAP_IN_USE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let new = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HEAP_IN_USE.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
            HEAP_IN_USE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        new
    }
}

/// Bytes the agent has allocated and not freed, by [`CountingAllocator`]'s
/// count (0 where it is not the global allocator: the library's tests).
pub fn heap_in_use() -> u64 {
    HEAP_IN_USE.load(std::sync::atomic::Ordering::Relaxed) as u64
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc as _, Layout};

    use super::*;

    #[test]
    fn the_count_follows_allocations_reallocations_and_frees() {
        // Through the allocator directly: it is not the test binary's
        // global one, so nothing else moves the count meanwhile.
        let before = heap_in_use();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a non-zero layout; the pointer is freed with the layout
        // it was last given.
        unsafe {
            let ptr = CountingAllocator.alloc(layout);
            assert!(!ptr.is_null());
            assert_eq!(heap_in_use(), before + 1000);
            let ptr = CountingAllocator.realloc(ptr, layout, 5000);
            assert!(!ptr.is_null());
            assert_eq!(heap_in_use(), before + 5000);
            CountingAllocator.dealloc(ptr, Layout::from_size_align(5000, 8).unwrap());
        }
        assert_eq!(heap_in_use(), before);
    }
}
