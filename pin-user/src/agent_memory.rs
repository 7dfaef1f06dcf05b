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

/// Sample-sized buffers get their own mappings, always. A sample's
/// temporaries grow with the tables it reads (the PROCS batch alone is 64
/// bytes per entry: 256 KiB at 4096 entries), and glibc's default mmap
/// threshold is dynamic: once such a mapped block is freed, the threshold
/// rises above it and later ones come from the heap, where a block placed
/// above a small long-lived allocation stays resident for good. Measured
/// in the soak test on 6.18: one +260 KiB RSS step two thirds into the
/// run, and 300 KiB more heap at the end in 2 of 3 runs than with the
/// threshold fixed. Setting it (here to glibc's initial 128 KiB) turns the
/// dynamic rise off, so every block that large is unmapped when freed.
/// musl's allocator maps large blocks itself and has no such switch.
pub fn large_blocks_mapped() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a parameter of the allocator; called
    // before the process starts its threads.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } == 0 {
        log::info!("the allocator kept its dynamic mmap threshold");
    }
}

/// The fixed mmap threshold: glibc's own starting value (128 KiB).
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

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
