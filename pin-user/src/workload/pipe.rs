//! vmsplice of user memory into a pipe: iov_iter_get_pages2 ->
//! get_user_pages_fast (FOLL_GET), in batches of at most 16 pages.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use super::{PAGE_SIZE, Prepared, UserBuffer, WorkloadError, WorkloadOptions, expect_len};

pub struct Vmsplice {
    buf: UserBuffer,
    read_end: OwnedFd,
    write_end: OwnedFd,
    drain: Vec<u8>,
}

impl Vmsplice {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(WorkloadError::last_os("pipe"));
        }
        // SAFETY: fresh descriptors we own.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Room for the whole buffer (+1 page for an unaligned start), so a
        // call never blocks or comes up short.
        let want = ((opts.pages + 1) * PAGE_SIZE) as libc::c_int;
        // SAFETY: plain fcntl on our descriptor.
        if unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, want) } < 0 {
            return Err(WorkloadError::last_os(format!(
                "fcntl(F_SETPIPE_SZ, {want}) (see /proc/sys/fs/pipe-max-size)"
            )));
        }
        let mut buf = UserBuffer::new(opts.pages + 1)?;
        if !opts.cold {
            buf.warm();
        }
        Ok(Self {
            buf,
            read_end,
            write_end,
            drain: vec![0; (opts.pages * PAGE_SIZE) as usize],
        })
    }
}

impl Prepared for Vmsplice {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.buf.drop_pages()?;
        }
        let len = (opts.pages * PAGE_SIZE) as usize;
        let iov = libc::iovec {
            iov_base: self.buf.addr(opts.offset).cast(),
            iov_len: len,
        };
        // SAFETY: the iovec lies in our mapping; the pipe is ours.
        let got = unsafe { libc::vmsplice(self.write_end.as_raw_fd(), &iov, 1, 0) };
        expect_len("vmsplice", got, len)?;
        let mut drained = 0;
        while drained < len {
            // SAFETY: reading into our own Vec's spare room.
            let n = unsafe {
                libc::read(
                    self.read_end.as_raw_fd(),
                    self.drain[drained..].as_mut_ptr().cast(),
                    len - drained,
                )
            };
            if n <= 0 {
                return Err(WorkloadError::last_os("read (draining the pipe)"));
            }
            drained += n as usize;
        }
        Ok(())
    }

    fn zero_page(&self, opts: &WorkloadOptions) -> bool {
        opts.cold
    }
}
