//! Many short-lived processes, each pinning once: every call forks a child
//! that makes one process_vm_writev into its own memory
//! (pin_user_pages_remote, FOLL_WRITE) and exits. For soak tests: it churns
//! through pids (per-process tables must stay bounded) while the GUP
//! counts stay exact.

use super::{Prepared, WorkloadError, WorkloadOptions, remote::ProcessVm};

/// A [`ProcessVm`] writer whose every call runs in a fresh child.
pub struct ForkWritev {
    inner: ProcessVm,
}

impl ForkWritev {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        Ok(Self {
            inner: ProcessVm::new(opts, true)?,
        })
    }
}

impl Prepared for ForkWritev {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        // SAFETY: the workload process is single-threaded; the child makes
        // one system call on memory it inherited and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(WorkloadError::last_os("fork"));
        }
        if pid == 0 {
            let code = i32::from(self.inner.run_once(opts).is_err());
            // SAFETY: leaves the child without running the parent's exit code.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(WorkloadError::last_os("waitpid"));
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(WorkloadError::sys("process_vm_writev in a forked child")(
                std::io::Error::other(format!("the child ended with wait status {status:#x}")),
            ));
        }
        Ok(())
    }
}
