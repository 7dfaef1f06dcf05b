//! FUTEX_WAKE on a process-shared futex word: get_futex_key ->
//! get_user_pages_fast(address, 1, FOLL_WRITE). One GUP call per wake.

use super::{Prepared, UserBuffer, WorkloadError, WorkloadOptions};

pub struct FutexWake {
    buf: UserBuffer,
}

impl FutexWake {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        if !opts.offset.is_multiple_of(4) {
            return Err(WorkloadError::Usage(format!(
                "a futex word must be 4-byte aligned: --offset {} is not",
                opts.offset
            )));
        }
        let mut buf = UserBuffer::new(1)?;
        if !opts.cold {
            buf.warm();
        }
        Ok(Self { buf })
    }
}

impl Prepared for FutexWake {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.buf.drop_pages()?;
        }
        let word = self.buf.addr(opts.offset);
        // SAFETY: FUTEX_WAKE without FUTEX_PRIVATE_FLAG on our own word.
        let woken = unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, 1, 0, 0, 0) };
        if woken < 0 {
            return Err(WorkloadError::last_os("futex(FUTEX_WAKE)"));
        }
        Ok(())
    }

    fn bytes_per_call(&self, _opts: &WorkloadOptions) -> u64 {
        4
    }
}
