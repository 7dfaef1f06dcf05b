//! Many threads inside GUP at once: `--threads` long-lived threads make
//! process_vm_readv calls (pin_user_pages_remote) in lockstep rounds. In
//! the first round every thread's source pages are registered with
//! userfaultfd, so every call blocks inside GUP on its first page; once the
//! workload has seen all of them waiting it closes the userfaultfd, which
//! wakes them all, and the calls complete normally. Later rounds read the
//! same (now mapped) pages.
//!
//! This is how a busy host looks to return probes: more calls in flight
//! than a kretprobe has instances (about max(10, 2 x CPUs)), so some
//! returns are never seen; the same threads then keep calling, which shows
//! whether a missed return leaves a thread uncounted.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, Barrier, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{PAGE_SIZE, Prepared, UserBuffer, WorkloadError, WorkloadOptions, expect_len};

/// `struct uffdio_api` (linux/userfaultfd.h).
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register` (linux/userfaultfd.h).
#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

const UFFD_API: u64 = 0xaa;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
/// (`libc::Ioctl`: an unsigned long on glibc, an int on musl; the bits are
/// what the kernel reads either way.)
const UFFDIO_API: libc::Ioctl = 0xc018_aa3f_u32 as libc::Ioctl;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::Ioctl = 0xc020_aa00_u32 as libc::Ioctl;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// Size of `struct uffd_msg`; a page-fault message carries the faulting
/// address at byte 16.
const UFFD_MSG_BYTES: usize = 32;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// How long the first round may take to get every thread waiting: far
/// more than spawning a few dozen threads and entering one system call
/// takes even under qemu's emulation; a bound so a kernel that does not
/// block (or a lost wake-up) fails the workload instead of hanging it.
const ALL_BLOCKED_WITHIN: Duration = Duration::from_secs(60);

/// What a round asks of the threads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Call,
    Stop,
}

/// What the workload shares with its calling threads: the barriers that
/// start and end a round, what the round asks, and the calls' errors.
#[derive(Clone)]
struct Rounds {
    start: Arc<Barrier>,
    done: Arc<Barrier>,
    order: Arc<Mutex<Order>>,
    errors: Arc<Mutex<Vec<WorkloadError>>>,
}

impl Rounds {
    /// Rounds for `threads` calling threads and the workload's own.
    fn new(threads: u64) -> Self {
        let parties = threads as usize + 1;
        Self {
            start: Arc::new(Barrier::new(parties)),
            done: Arc::new(Barrier::new(parties)),
            order: Arc::new(Mutex::new(Order::Call)),
            errors: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// Threads that pin in lockstep rounds, the first one blocked.
pub struct Stalled {
    threads: Vec<JoinHandle<()>>,
    rounds: Rounds,
    /// The userfaultfd holding the first round, until it is released.
    uffd: Option<OwnedFd>,
    count: u64,
    /// Kept mapped for as long as the threads use them (the threads get
    /// plain addresses: a mapping's pointer is not `Send`).
    _buffers: Vec<UserBuffer>,
}

fn sys(call: &str, rc: libc::c_long) -> Result<libc::c_long, WorkloadError> {
    if rc < 0 {
        Err(WorkloadError::last_os(call))
    } else {
        Ok(rc)
    }
}

/// The options stalled-readv refuses.
fn check(opts: &WorkloadOptions) -> Result<(), WorkloadError> {
    if opts.threads == 0 || opts.threads > 1024 {
        return Err(WorkloadError::Usage(format!(
            "--threads must be between 1 and 1024, got {}",
            opts.threads
        )));
    }
    if opts.offset != 0 || opts.cold {
        return Err(WorkloadError::Usage(
            "stalled-readv takes neither --offset nor --cold (its first round is cold by design)"
                .into(),
        ));
    }
    Ok(())
}

/// A userfaultfd on which the first fault of each of `remote`'s first
/// `len` bytes (never touched, so missing) waits.
fn register_missing(remote: &UserBuffer, len: u64) -> Result<OwnedFd, WorkloadError> {
    // SAFETY: plain system calls on a descriptor this function owns.
    let uffd = unsafe {
        let fd = sys(
            "userfaultfd",
            libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK),
        )?;
        OwnedFd::from_raw_fd(fd as i32)
    };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    let mut register = UffdioRegister {
        start: remote.addr(0) as u64,
        len,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: the ioctls read and write the structures passed.
    unsafe {
        sys(
            "ioctl(UFFDIO_API)",
            libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api).into(),
        )?;
        sys(
            "ioctl(UFFDIO_REGISTER)",
            libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut register).into(),
        )?;
    }
    Ok(uffd)
}

/// One calling thread, named `stalled-caller`, a name of its own (the
/// process's row keeps its leader's: `names` in the probes): see
/// [`call_each_round`].
fn spawn_caller(
    rounds: Rounds,
    local_at: usize,
    remote_at: usize,
    len: usize,
) -> Result<JoinHandle<()>, WorkloadError> {
    std::thread::Builder::new()
        .name("stalled-caller".into())
        .spawn(move || call_each_round(&rounds, local_at, remote_at, len))
        .map_err(WorkloadError::sys("spawn a calling thread"))
}

/// Each round, one process_vm_readv of `len` bytes from `remote_at` to
/// `local_at` (addresses in live mappings of ours), until a round orders
/// it to stop.
fn call_each_round(rounds: &Rounds, local_at: usize, remote_at: usize, len: usize) {
    loop {
        rounds.start.wait();
        if *rounds.order.lock().unwrap_or_else(|e| e.into_inner()) == Order::Stop {
            return;
        }
        let local = libc::iovec {
            iov_base: local_at as *mut libc::c_void,
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: remote_at as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: both iovecs lie inside live mappings of ours.
        let got =
            unsafe { libc::process_vm_readv(std::process::id() as i32, &local, 1, &remote, 1, 0) };
        if let Err(e) = expect_len("process_vm_readv", got, len) {
            rounds
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e);
        }
        rounds.done.wait();
    }
}

impl Stalled {
    /// Maps the source pages, registers them with a userfaultfd and starts
    /// the threads, each with its own warm destination buffer.
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        check(opts)?;
        let per_thread = opts.pages;
        let remote = UserBuffer::new(per_thread * opts.threads)?;
        let uffd = register_missing(&remote, per_thread * opts.threads * PAGE_SIZE)?;
        let remote_base = remote.addr(0) as usize;
        let mut buffers = vec![remote];
        let rounds = Rounds::new(opts.threads);
        let mut threads = Vec::new();
        for t in 0..opts.threads {
            let mut local = UserBuffer::new(per_thread)?;
            local.warm();
            let local_at = local.addr(0) as usize;
            buffers.push(local);
            let len = (per_thread * PAGE_SIZE) as usize;
            let remote_at = remote_base + (t * per_thread * PAGE_SIZE) as usize;
            threads.push(spawn_caller(rounds.clone(), local_at, remote_at, len)?);
        }
        Ok(Self {
            threads,
            rounds,
            uffd: Some(uffd),
            count: opts.threads,
            _buffers: buffers,
        })
    }

    /// Waits until `self.count` distinct pages have faulted into the
    /// userfaultfd (every thread is blocked inside GUP), then closes it,
    /// which wakes them all and lets the faults complete normally.
    fn release_when_all_blocked(&mut self) -> Result<(), WorkloadError> {
        let Some(uffd) = self.uffd.take() else {
            return Ok(());
        };
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + ALL_BLOCKED_WITHIN;
        while (seen.len() as u64) < self.count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WorkloadError::Usage(format!(
                    "only {} of {} threads blocked in GUP within {:?}",
                    seen.len(),
                    self.count,
                    ALL_BLOCKED_WITHIN
                )));
            }
            let mut poll = libc::pollfd {
                fd: uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd of ours.
            sys("poll(userfaultfd)", unsafe {
                libc::poll(&mut poll, 1, left.as_millis().min(1000) as i32).into()
            })?;
            let mut msg = [0u8; UFFD_MSG_BYTES];
            // SAFETY: reads at most the buffer's size.
            let got = unsafe { libc::read(uffd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
            if got == UFFD_MSG_BYTES as isize && msg[0] == UFFD_EVENT_PAGEFAULT {
                let address = u64::from_ne_bytes(msg[16..24].try_into().expect("8 bytes"));
                seen.insert(address & !(PAGE_SIZE - 1));
            }
        }
        drop(uffd);
        Ok(())
    }
}

impl Prepared for Stalled {
    fn run_once(&mut self, _opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        self.rounds.start.wait();
        self.release_when_all_blocked()?;
        self.rounds.done.wait();
        match self
            .rounds
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn zero_page(&self, _opts: &WorkloadOptions) -> bool {
        // Never-written anonymous memory, read: the shared zero page.
        true
    }

    fn calls_per_round(&self) -> u64 {
        self.count
    }

    fn after_calls(&mut self) -> Result<(), WorkloadError> {
        *self.rounds.order.lock().unwrap_or_else(|e| e.into_inner()) = Order::Stop;
        self.rounds.start.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        Ok(())
    }
}
