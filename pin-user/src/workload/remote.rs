//! Paths that reach GUP on another mm (here: our own, addressed remotely):
//! process_vm_readv/writev (pin_user_pages_remote) and /proc/self/mem
//! (get_user_pages_remote through access_remote_vm).

use std::{fs::File, os::unix::fs::FileExt as _};

use super::{PAGE_SIZE, Prepared, UserBuffer, WorkloadError, WorkloadOptions, expect_len};

/// process_vm_readv / process_vm_writev between two buffers of this process.
pub struct ProcessVm {
    local: UserBuffer,
    remote: UserBuffer,
    write: bool,
}

impl ProcessVm {
    pub fn new(opts: &WorkloadOptions, write: bool) -> Result<Self, WorkloadError> {
        let mut local = UserBuffer::new(opts.pages + 1)?;
        local.warm();
        let mut remote = UserBuffer::new(opts.pages + 1)?;
        if !opts.cold {
            remote.warm();
        }
        Ok(Self {
            local,
            remote,
            write,
        })
    }
}

impl Prepared for ProcessVm {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.remote.drop_pages()?;
        }
        let len = (opts.pages * PAGE_SIZE) as usize;
        let local = libc::iovec {
            iov_base: self.local.addr(0).cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: self.remote.addr(opts.offset).cast(),
            iov_len: len,
        };
        // The calling thread's id, not the process id: once the leader
        // thread has exited (leader-exit-readv) the process id names a
        // zombie without memory, and process_vm_readv fails with ESRCH.
        // SAFETY: gettid has no preconditions.
        let pid = unsafe { libc::gettid() };
        // SAFETY: both iovecs lie inside our own live mappings.
        let got = unsafe {
            if self.write {
                libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
            } else {
                libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
            }
        };
        let call = if self.write {
            "process_vm_writev"
        } else {
            "process_vm_readv"
        };
        expect_len(call, got, len)
    }

    fn zero_page(&self, opts: &WorkloadOptions) -> bool {
        // Reading never-written anonymous memory maps the shared zero page.
        opts.cold && !self.write
    }
}

/// pread of /proc/self/mem over the buffer.
pub struct ProcMem {
    buf: UserBuffer,
    mem: File,
    dst: Vec<u8>,
}

impl ProcMem {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        let mut buf = UserBuffer::new(opts.pages + 1)?;
        if !opts.cold {
            buf.warm();
        }
        let mem =
            File::open("/proc/self/mem").map_err(WorkloadError::sys("open /proc/self/mem"))?;
        let mut dst = vec![0u8; (opts.pages * PAGE_SIZE) as usize];
        dst.fill(1);
        Ok(Self { buf, mem, dst })
    }
}

impl Prepared for ProcMem {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.buf.drop_pages()?;
        }
        let addr = self.buf.addr(opts.offset) as u64;
        let got = self
            .mem
            .read_at(&mut self.dst, addr)
            .map_err(WorkloadError::sys("pread /proc/self/mem"))?;
        expect_len("pread /proc/self/mem", got as isize, self.dst.len())
    }

    fn zero_page(&self, opts: &WorkloadOptions) -> bool {
        opts.cold
    }
}
