//! io_uring fixed-buffer registration: io_pin_pages -> pin_user_pages_fast
//! with FOLL_WRITE|FOLL_LONGTERM; unregistration releases the pins.
//!
//! Rings are set up as an unprivileged application's would be, so the
//! kernel accounts their buffers (see [`account_like_an_application`]).

use std::io::BufRead as _;

use io_uring::IoUring;

use super::{PAGE_SIZE, Prepared, UserBuffer, WorkloadError, WorkloadOptions};

/// Drops CAP_IPC_LOCK from this thread's effective set before a ring is set
/// up: io_uring exempts rings of its holders from memlock accounting, and
/// since 7.2 (df0a52537c0f, `io_buffer_account_pin` returns early without
/// `ctx->user`) no longer charges their `pinned_vm` either, so as root VmPin
/// would stay 0 kB. RLIMIT_MEMLOCK is raised to unlimited first (root may):
/// io_uring checks the per-user charge, which counts all of the user's
/// processes (on 5.10, pinwatch's own BPF maps too), against it.
fn account_like_an_application() -> Result<(), WorkloadError> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct. Refused without
    // CAP_SYS_RESOURCE: an unprivileged caller keeps its own limit, as any
    // application does.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    caps::drop(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_IPC_LOCK,
    )
    .map_err(|e| WorkloadError::sys("dropping CAP_IPC_LOCK")(std::io::Error::other(e.to_string())))
}

/// A 4-entry ring set up as an application's (see
/// [`account_like_an_application`]); this thread keeps CAP_IPC_LOCK
/// dropped from then on.
pub fn application_ring() -> Result<IoUring, WorkloadError> {
    account_like_an_application()?;
    IoUring::new(4).map_err(WorkloadError::sys("io_uring_setup"))
}

pub struct Register {
    ring: IoUring,
    buf: UserBuffer,
}

impl Register {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        let ring = application_ring()?;
        let mut buf = UserBuffer::new(opts.pages + 1)?;
        if !opts.cold {
            buf.warm();
        }
        Ok(Self { ring, buf })
    }
}

impl Prepared for Register {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        if opts.cold {
            self.buf.drop_pages()?;
        }
        let iov = libc::iovec {
            iov_base: self.buf.addr(opts.offset).cast(),
            iov_len: (opts.pages * PAGE_SIZE) as usize,
        };
        // SAFETY: the buffer outlives the registration, which ends below.
        unsafe { self.ring.submitter().register_buffers(&[iov]) }
            .map_err(WorkloadError::sys("io_uring_register(REGISTER_BUFFERS)"))?;
        self.ring
            .submitter()
            .unregister_buffers()
            .map_err(WorkloadError::sys("io_uring_register(UNREGISTER_BUFFERS)"))
    }
}

/// Registrations that stay: one ring per call, each with the buffer
/// registered, until [`Prepared::after_calls`] is told what to do.
pub struct Hold {
    rings: Vec<IoUring>,
    buf: UserBuffer,
}

impl Hold {
    pub fn new(opts: &WorkloadOptions) -> Result<Self, WorkloadError> {
        let mut buf = UserBuffer::new(opts.pages + 1)?;
        if !opts.cold {
            buf.warm();
        }
        Ok(Self {
            rings: Vec::new(),
            buf,
        })
    }
}

impl Prepared for Hold {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError> {
        let ring = application_ring()?;
        let iov = libc::iovec {
            iov_base: self.buf.addr(opts.offset).cast(),
            iov_len: (opts.pages * PAGE_SIZE) as usize,
        };
        // SAFETY: the buffer lives as long as this workload, which
        // outlives the rings (dropped first, or at process exit).
        unsafe { ring.submitter().register_buffers(&[iov]) }
            .map_err(WorkloadError::sys("io_uring_register(REGISTER_BUFFERS)"))?;
        self.rings.push(ring);
        Ok(())
    }

    fn after_calls(&mut self) -> Result<(), WorkloadError> {
        println!("{{\"holding\":{}}}", std::process::id());
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(WorkloadError::sys("reading stdin"))?;
        if line.trim() == "unregister" {
            for ring in &self.rings {
                ring.submitter()
                    .unregister_buffers()
                    .map_err(WorkloadError::sys("io_uring_register(UNREGISTER_BUFFERS)"))?;
            }
            return Ok(());
        }
        // Exit holding the pins: no destructor runs, the kernel releases
        // them when it tears the rings down.
        std::process::exit(0);
    }
}
