//! Populating page tables without taking references: MADV_POPULATE_WRITE
//! and mlock both walk the range with __get_user_pages and no page array.

use super::{PAGE_SIZE, Prepared, UserBuffer, WorkloadError, WorkloadOptions};

pub struct Populate {
    buf: UserBuffer,
    mlock: bool,
}

impl Populate {
    pub fn new(opts: &WorkloadOptions, mlock: bool) -> Result<Self, WorkloadError> {
        if opts.offset != 0 {
            return Err(WorkloadError::Usage(
                "madvise and mlock work on whole pages: --offset must be 0".into(),
            ));
        }
        let mut buf = UserBuffer::new(opts.pages)?;
        if !opts.cold {
            buf.warm();
        }
        Ok(Self { buf, mlock })
    }
}

impl Prepared for Populate {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.buf.drop_pages()?;
        }
        let addr = self.buf.addr(0).cast();
        let len = (opts.pages * PAGE_SIZE) as usize;
        // SAFETY: advising/locking our own mapping.
        unsafe {
            if self.mlock {
                if libc::mlock(addr, len) != 0 {
                    return Err(WorkloadError::last_os("mlock"));
                }
                if libc::munlock(addr, len) != 0 {
                    return Err(WorkloadError::last_os("munlock"));
                }
            } else if libc::madvise(addr, len, libc::MADV_POPULATE_WRITE) != 0 {
                return Err(WorkloadError::last_os("madvise(MADV_POPULATE_WRITE)"));
            }
        }
        Ok(())
    }
}
