//! Page-aligned mappings whose residency the workloads and `validate`'s
//! scenarios control exactly (prefault, read-touch or drop pages, change
//! protection), which a Vec cannot promise.

use std::ops::Range;

use super::WorkloadError;

/// The page size of every kernel pinwatch supports (x86_64).
pub const PAGE_SIZE: u64 = 4096;

/// A private anonymous mapping of whole pages.
pub struct UserBuffer {
    ptr: *mut u8,
    len: usize,
}

impl UserBuffer {
    /// Maps `pages` private anonymous small pages (THP off: the counts
    /// assume small pages); they are not present until touched.
    pub fn new(pages: u64) -> Result<Self, WorkloadError> {
        let buf = Self::map(
            pages * PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )?;
        match buf.advise(libc::MADV_NOHUGEPAGE) {
            // A kernel without transparent huge pages (Debian's PREEMPT_RT
            // builds) refuses the advice: its pages are small anyway.
            Err(WorkloadError::Sys { error, .. })
                if error.raw_os_error() == Some(libc::EINVAL)
                    && !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() => {}
            other => other?,
        }
        Ok(buf)
    }

    /// Maps `len` bytes with mmap's `prot`, `flags` and `fd` (offset 0).
    pub fn map(len: u64, prot: i32, flags: i32, fd: i32) -> Result<Self, WorkloadError> {
        // SAFETY: a fresh mapping; the result is checked.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len as usize, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(WorkloadError::last_os("mmap"));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len: len as usize,
        })
    }

    /// Like [`Self::map`], at exactly `addr` when that range is free
    /// (MAP_FIXED_NOREPLACE: EEXIST when something is mapped there).
    pub fn map_at(
        addr: u64,
        len: u64,
        prot: i32,
        flags: i32,
        fd: i32,
    ) -> Result<Self, WorkloadError> {
        let flags = flags | libc::MAP_FIXED_NOREPLACE;
        // SAFETY: NOREPLACE never replaces an existing mapping; the result
        // is checked.
        let ptr = unsafe { libc::mmap(addr as *mut _, len as usize, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(WorkloadError::last_os("mmap"));
        }
        Ok(Self {
            ptr: ptr.cast(),
            len: len as usize,
        })
    }

    /// Writes every page so all are present, writable and not the zero page.
    pub fn warm(&mut self) {
        for off in (0..self.len).step_by(PAGE_SIZE as usize) {
            // SAFETY: within the mapping.
            unsafe { self.ptr.add(off).write_volatile(0x5a) };
        }
    }

    /// Reads every page: never-written anonymous ones map the zero page.
    pub fn touch_read(&self) {
        for off in (0..self.len).step_by(PAGE_SIZE as usize) {
            // SAFETY: within the mapping.
            unsafe { self.ptr.add(off).read_volatile() };
        }
    }

    /// Drops every page (MADV_DONTNEED): the next access faults.
    pub fn drop_pages(&mut self) -> Result<(), WorkloadError> {
        self.advise(libc::MADV_DONTNEED)
    }

    /// madvise(2) over the whole mapping.
    pub fn advise(&self, advice: i32) -> Result<(), WorkloadError> {
        // SAFETY: advising our own mapping.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, advice) } != 0 {
            return Err(WorkloadError::last_os(format!("madvise({advice})")));
        }
        Ok(())
    }

    /// mprotect(2) over the whole mapping.
    pub fn protect(&self, prot: i32) -> Result<(), WorkloadError> {
        // SAFETY: changing our own mapping's protection.
        if unsafe { libc::mprotect(self.ptr.cast(), self.len, prot) } != 0 {
            return Err(WorkloadError::last_os("mprotect"));
        }
        Ok(())
    }

    /// Address of the first byte.
    pub fn start(&self) -> u64 {
        self.ptr as u64
    }

    /// The mapped byte range.
    pub fn range(&self) -> Range<u64> {
        self.start()..self.start() + self.len as u64
    }

    /// Address of byte `offset`.
    pub fn addr(&self, offset: u64) -> *mut u8 {
        debug_assert!((offset as usize) < self.len);
        // SAFETY: within the mapping (checked by callers' sizing).
        unsafe { self.ptr.add(offset as usize) }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (never: at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for UserBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping what we mapped (munmap ignores parts a user of
        // the mapping already unmapped).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
