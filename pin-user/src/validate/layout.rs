//! Memory layouts the scenarios build: mappings (the workloads'
//! [`UserBuffer`]) and a live fork that keeps pages shared (copy-on-write)
//! while it runs.

use crate::{model::PAGE_SIZE, workload::UserBuffer};

/// `-errno` for a failed libc call, else the value.
pub(super) fn rc(ret: isize) -> i64 {
    if ret < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        ret as i64
    }
}

/// Private anonymous small pages, untouched, for a scenario.
pub(super) fn anon(len: u64) -> Result<UserBuffer, String> {
    UserBuffer::new(len / PAGE_SIZE).map_err(|e| e.to_string())
}

/// Any mapping, for a scenario (see [`UserBuffer::map`]).
pub(super) fn map(len: u64, prot: i32, flags: i32, fd: i32) -> Result<UserBuffer, String> {
    UserBuffer::map(len, prot, flags, fd).map_err(|e| e.to_string())
}

/// A mapping at exactly `addr` (see [`UserBuffer::map_at`]).
pub(super) fn map_at(
    addr: u64,
    len: u64,
    prot: i32,
    flags: i32,
    fd: i32,
) -> Result<UserBuffer, String> {
    UserBuffer::map_at(addr, len, prot, flags, fd).map_err(|e| e.to_string())
}

/// A forked child that keeps this process's pages shared until dropped.
pub(super) struct LiveFork {
    pid: libc::pid_t,
    release: i32,
}

impl LiveFork {
    pub(super) fn start() -> Result<Self, String> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe fills the array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the child only calls async-signal-safe functions.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let mut b = 0u8;
            // SAFETY: async-signal-safe calls only, then _exit.
            unsafe {
                libc::close(fds[1]);
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(fds[0]) };
        Ok(Self {
            pid,
            release: fds[1],
        })
    }
}

impl Drop for LiveFork {
    fn drop(&mut self) {
        // SAFETY: closing the pipe lets the child exit; then reap it.
        unsafe {
            libc::close(self.release);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}
