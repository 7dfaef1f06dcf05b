//! A child process that detaches the links after the agent has gone.
//!
//! Where the kernel does not free handed-over links on a worker (before
//! 6.5, dropping a bpffs pin frees the link in the task that drops it; and
//! without CAP_SYS_ADMIN nothing is pinned at all), the last close of a
//! link waits for the ftrace update and its RCU-tasks grace periods: 3-4 s
//! for pinwatch's links under TCG, however many threads close them. So on
//! stop the agent forks a child that keeps only those descriptors (the
//! links, and the private bpffs mount holding their pins), waits until
//! the agent has exited, and exits itself: its exit drops the last
//! references and waits for the kernel instead of the agent. The agent's
//! own closes then only drop references, and it ends at once.
//!
//! Only a process that exits right after stopping its probes does this
//! (the `pinwatch` binary says so: `probes::exits_after_stop`); a library
//! user that goes on running gets its links closed when it drops them.
//!
//! The child runs nothing but system calls (the parent has other threads,
//! whose locks a forked child must not touch), is named
//! `pinwatch-detach` and sits in a session of its own (a terminal's ^C is
//! the agent's). A stop signal ends it as any exit would: detaching
//! first. Where anything fails, the child just exits: the agent then
//! holds the last references and closes them the slow way, as before.

use std::os::fd::RawFd;

/// The child's name in `ps` and `/proc/PID/comm`.
const NAME: &std::ffi::CStr = c"pinwatch-detach";

/// Forks the child that will hold `keep` (descriptors of this process)
/// until this process has exited. Returns its pid.
pub fn spawn(keep: &[RawFd]) -> std::io::Result<libc::pid_t> {
    // Everything the child uses is made here, before the fork: after it,
    // the child may not allocate.
    let closes = closes_sparing(keep);
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only makes system calls on memory prepared above
    // and ends with `_exit` ([`wait_for_parent_then_exit`]).
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        // SAFETY: in the freshly forked child, as the function requires.
        0 => unsafe { wait_for_parent_then_exit(parent, &closes) },
        child => Ok(child),
    }
}

/// The `close_range` calls (first, last; inclusive) that close every
/// descriptor except `keep`.
pub fn closes_sparing(keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::with_capacity(keep.len() + 1);
    let mut next = 0u32;
    for fd in keep {
        if fd > next {
            ranges.push((next, fd - 1));
        }
        next = fd + 1;
    }
    ranges.push((next, u32::MAX));
    ranges
}

/// The child: closes everything but what it keeps, leaves the agent's
/// session, waits for the agent to exit, exits.
///
/// # Safety
/// Only in the child right after `fork`; `closes` was allocated before it.
unsafe fn wait_for_parent_then_exit(parent: libc::pid_t, closes: &[(u32, u32)]) -> ! {
    // SAFETY (whole body): async-signal-safe system calls on memory that
    // was allocated before the fork.
    unsafe {
        for &(first, last) in closes {
            libc::syscall(libc::SYS_close_range, first, last, 0);
        }
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr());
        // The agent's handlers only write to descriptors closed above:
        // default actions, and nothing blocked, so a stop signal ends the
        // child (which detaches as it exits).
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let pidfd = libc::syscall(libc::SYS_pidfd_open, parent, 0);
        // Still the agent's child: the pidfd is the agent's, not a process
        // that took its pid after it exited (then the parent is init).
        if pidfd >= 0 && libc::getppid() == parent {
            // Readable once the agent's every thread has exited, which is
            // after its descriptors were released.
            let mut poll = libc::pollfd {
                fd: pidfd as RawFd,
                events: libc::POLLIN,
                revents: 0,
            };
            while libc::poll(&mut poll, 1, -1) < 0 && *libc::__errno_location() == libc::EINTR {}
        }
        libc::_exit(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_everything_between_the_kept_descriptors() {
        assert_eq!(
            closes_sparing(&[7, 3, 4, 7, 10]),
            vec![(0, 2), (5, 6), (8, 9), (11, u32::MAX)]
        );
        assert_eq!(closes_sparing(&[0]), vec![(1, u32::MAX)]);
        assert_eq!(closes_sparing(&[]), vec![(0, u32::MAX)]);
    }

    #[test]
    fn the_child_keeps_what_it_was_given_until_its_parent_exits() {
        use std::io::Read as _;
        use std::os::fd::AsRawFd as _;
        // The kept pipe's read end sees EOF only once the detacher has gone;
        // the other pipe's as soon as the detacher has closed its copy.
        let (kept_reader, kept) = std::io::pipe().unwrap();
        let (other_reader, other) = std::io::pipe().unwrap();
        // The detacher's parent: a middle process that spawns it, closes
        // its own copies, says so, and exits when the test closes `go`.
        let (go_reader, go) = std::io::pipe().unwrap();
        let (spawned_reader, spawned) = std::io::pipe().unwrap();
        // SAFETY: fork; the middle child ends with `_exit`.
        let middle = unsafe { libc::fork() };
        assert!(middle >= 0);
        if middle == 0 {
            let ok = spawn(&[kept.as_raw_fd()]).is_ok();
            // SAFETY: system calls on descriptors this process owns, then
            // `_exit` so that the test's destructors do not run twice.
            unsafe {
                libc::close(kept.as_raw_fd());
                libc::close(other.as_raw_fd());
                libc::close(go.as_raw_fd());
                libc::write(spawned.as_raw_fd(), [u8::from(ok)].as_ptr().cast(), 1);
                let mut byte = 0u8;
                libc::read(go_reader.as_raw_fd(), (&raw mut byte).cast(), 1);
                libc::_exit(0);
            }
        }
        drop((kept, other, go_reader, spawned));
        let mut byte = [0u8; 1];
        assert_eq!((&spawned_reader).read(&mut byte).unwrap(), 1);
        assert_eq!(byte[0], 1, "spawn failed in the middle process");
        // Not kept: closed by the detacher (the middle closed its copy).
        assert_eq!((&other_reader).read(&mut byte).unwrap(), 0);
        // Kept while its parent lives: nothing to read, and no EOF.
        // SAFETY: sets O_NONBLOCK on a descriptor the test owns.
        unsafe { libc::fcntl(kept_reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let err = (&kept_reader).read(&mut byte).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        // The parent exits: the detacher follows, and the pipe ends.
        drop(go);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(middle, &mut status, 0) }, middle);
        // SAFETY: back to blocking reads on a descriptor the test owns.
        unsafe { libc::fcntl(kept_reader.as_raw_fd(), libc::F_SETFL, 0) };
        assert_eq!((&kept_reader).read(&mut byte).unwrap(), 0);
    }
}
