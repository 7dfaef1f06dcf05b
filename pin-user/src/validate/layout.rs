//! Memory layouts the scenarios build: mappings they control page by page,
//! and a live fork that keeps pages shared (copy-on-write) while it runs.

use std::ops::Range;

use crate::model::PAGE_SIZE;

/// `-errno` for a failed libc call, else the value.
pub(super) fn rc(ret: isize) -> i64 {
    if ret < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        ret as i64
    }
}

/// An mmap'd range unmapped on drop.
pub(super) struct Mapping {
    pub(super) addr: u64,
    pub(super) len: u64,
}

impl Mapping {
    pub(super) fn new(len: u64, prot: i32, flags: i32, fd: i32) -> Result<Self, String> {
        // SAFETY: a fresh mapping; the result is checked.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len as usize, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Self {
            addr: ptr as u64,
            len,
        })
    }

    /// Private anonymous small pages, untouched.
    pub(super) fn anon(len: u64) -> Result<Self, String> {
        let m = Self::new(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        )?;
        m.advise(libc::MADV_NOHUGEPAGE);
        Ok(m)
    }

    pub(super) fn advise(&self, advice: i32) -> i32 {
        // SAFETY: advising our own mapping.
        unsafe { libc::madvise(self.addr as *mut _, self.len as usize, advice) }
    }

    pub(super) fn range(&self) -> Range<u64> {
        self.addr..self.addr + self.len
    }

    /// Writes every page.
    pub(super) fn write_pages(&self) {
        for off in (0..self.len).step_by(PAGE_SIZE as usize) {
            // SAFETY: within the mapping, which is writable when called.
            unsafe { ((self.addr + off) as *mut u8).write_volatile(0x5a) };
        }
    }

    /// Reads every page.
    pub(super) fn read_pages(&self) {
        for off in (0..self.len).step_by(PAGE_SIZE as usize) {
            // SAFETY: within the mapping, which is readable when called.
            unsafe { ((self.addr + off) as *const u8).read_volatile() };
        }
    }

    pub(super) fn protect(&self, prot: i32) -> Result<(), String> {
        // SAFETY: changing our own mapping's protection.
        if unsafe { libc::mprotect(self.addr as *mut _, self.len as usize, prot) } != 0 {
            return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what we mapped (a partially unmapped range is
        // fine: munmap ignores holes).
        unsafe { libc::munmap(self.addr as *mut _, self.len as usize) };
    }
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
