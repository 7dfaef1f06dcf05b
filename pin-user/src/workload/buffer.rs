//! Anonymous page-aligned buffers whose residency the workloads control
//! exactly (prefault or drop pages), which a Vec cannot promise.

use super::WorkloadError;

/// The page size of every kernel pinwatch supports (x86_64).
pub const PAGE_SIZE: u64 = 4096;

/// A private anonymous mapping of whole pages.
pub struct UserBuffer {
    ptr: *mut u8,
    len: usize,
}

impl UserBuffer {
    /// Maps `pages` pages; they are not present until touched.
    pub fn new(pages: u64) -> Result<Self, WorkloadError> {
        let len = (pages * PAGE_SIZE) as usize;
        // SAFETY: a fresh anonymous mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(WorkloadError::last_os("mmap"));
        }
        let buf = Self {
            ptr: ptr.cast(),
            len,
        };
        // Keep THP out of it: the counts assume small pages.
        // SAFETY: advising our own mapping.
        unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        Ok(buf)
    }

    /// Writes every page so all are present, writable and not the zero page.
    pub fn warm(&mut self) {
        for off in (0..self.len).step_by(PAGE_SIZE as usize) {
            // SAFETY: within the mapping.
            unsafe { self.ptr.add(off).write_volatile(0x5a) };
        }
    }

    /// Drops every page (MADV_DONTNEED): the next access faults.
    pub fn drop_pages(&mut self) -> Result<(), WorkloadError> {
        // SAFETY: advising our own mapping.
        if unsafe { libc::madvise(self.ptr.cast(), self.len, libc::MADV_DONTNEED) } != 0 {
            return Err(WorkloadError::last_os("madvise(MADV_DONTNEED)"));
        }
        Ok(())
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
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
