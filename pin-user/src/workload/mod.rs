//! Workloads: drive one kernel GUP path from userspace with known counts,
//! for tests, demos and benchmarks.
//!
//! Each workload prepares its buffers first, then (optionally, for test
//! harnesses) waits for a line on stdin, then makes `calls` system calls and
//! reports exactly what it did: calls made, pages each call spans, the
//! buffer's alignment and whether it was cold. Which GUP variant the kernel
//! uses for a path, and how many GUP calls a syscall makes, depends on the
//! kernel; the report states the facts a test needs to compute that.

mod buffer;
mod fork;
mod futex;
mod odirect;
mod pipe;
mod populate;
mod remote;
mod stalled;
mod udmabuf;
mod uring;

use std::io::BufRead as _;

use serde::{Deserialize, Serialize};

pub use buffer::{PAGE_SIZE, UserBuffer};
pub use uring::application_ring;

/// The kernel paths a workload can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// process_vm_readv from this process's own memory (pin_user_pages_remote).
    ProcessVmReadv,
    /// process_vm_writev into this process's own memory (pin_user_pages_remote, FOLL_WRITE).
    ProcessVmWritev,
    /// Like process-vm-writev, each call from a fresh forked child that
    /// then exits (many short-lived processes, for soak tests).
    ForkWritev,
    /// O_DIRECT read into the buffer (6.3+: pin_user_pages_fast; older: get_user_pages_fast).
    OdirectRead,
    /// O_DIRECT write from the buffer (same paths as odirect-read).
    OdirectWrite,
    /// io_uring buffer registration then unregistration (pin_user_pages_fast, LONGTERM).
    IoUringRegister,
    /// io_uring buffer registration, one ring per call, kept: after the
    /// calls print {"holding":PID} and wait for a stdin line; `unregister`
    /// releases the pins, anything else exits holding them (the kernel
    /// releases them when it tears the rings down).
    IoUringHold,
    /// vmsplice of the buffer into a pipe (get_user_pages_fast, 16 pages per GUP call).
    Vmsplice,
    /// pread of /proc/self/mem (get_user_pages_remote, one GUP call per page).
    ProcMemRead,
    /// FUTEX_WAKE on a shared futex word (get_user_pages_fast, one page).
    FutexWake,
    /// madvise(MADV_POPULATE_WRITE) (__get_user_pages, no page array).
    Populate,
    /// mlock then munlock (__get_user_pages via __mm_populate).
    Mlock,
    /// process_vm_readv from `--threads` threads in lockstep rounds
    /// (pin_user_pages_remote): in the first round every call blocks inside
    /// GUP on a userfaultfd until all are in flight at once; `--calls`
    /// rounds, so threads x calls system calls.
    StalledReadv,
    /// process_vm_readv (pin_user_pages_remote) made by a second thread
    /// after the main thread has exited: the process outlives its leader.
    LeaderExitReadv,
    /// A udmabuf made of a memfd, then closed (memfd_pin_folios, 6.11+,
    /// LONGTERM; released by unpin_folio per folio). Needs /dev/udmabuf.
    Udmabuf,
}

/// What the user asked a workload to do.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Which path.
    pub kind: WorkloadKind,
    /// Number of system calls to make.
    pub calls: u64,
    /// Buffer size in pages (a byte count of `pages * PAGE_SIZE`).
    pub pages: u64,
    /// Byte offset of the buffer from a page boundary.
    pub offset: u64,
    /// Drop the buffer's pages before every call so the fast path must fall back.
    pub cold: bool,
    /// File or block device for the O_DIRECT workloads.
    pub file: Option<std::path::PathBuf>,
    /// Print `{"ready":PID}` after setup and wait for a line on stdin.
    pub wait_stdin: bool,
    /// Threads making calls at once (stalled-readv; 1 elsewhere).
    pub threads: u64,
    /// After the calls, the name to give the process (see
    /// [`rename_from_a_thread`]).
    pub rename_after: Option<String>,
}

impl WorkloadOptions {
    /// `calls` calls of workload `kind` on a one-page buffer at a page
    /// boundary, warm, from one thread: the smallest call there is (the
    /// self-check of `pinwatch probes`, the tests' single calls).
    pub fn one_page(kind: WorkloadKind, calls: u64) -> Self {
        Self {
            kind,
            calls,
            pages: 1,
            offset: 0,
            cold: false,
            file: None,
            wait_stdin: false,
            threads: 1,
            rename_after: None,
        }
    }
}

/// What a workload did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadReport {
    /// The workload.
    pub workload: WorkloadKind,
    /// Process that made the calls.
    pub pid: u32,
    /// System calls made (all succeeded in full, or the workload failed).
    pub calls: u64,
    /// Bytes each call covered.
    pub bytes_per_call: u64,
    /// Offset of the buffer from a page boundary.
    pub offset: u64,
    /// Pages each call spans (offset included).
    pub pages_per_call: u64,
    /// Whether the buffer's pages were dropped before every call.
    pub cold: bool,
    /// Whether the pages the kernel takes are never-written anonymous
    /// memory it maps to the shared zero page (pins of it are not counted
    /// in /proc/vmstat).
    pub zero_page: bool,
    /// Wall-clock time of the measured phase in nanoseconds.
    pub elapsed_ns: u64,
    /// Where the O_DIRECT workloads did their I/O.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Errors running a workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// A system call failed. The OS error is part of the message, not a
    /// `source`: the error chain would print it twice.
    #[error("{call}: {error}")]
    Sys {
        /// What was being done.
        call: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// A call did less than asked (a short transfer is a workload failure:
    /// the counts would no longer be exact).
    #[error("{call}: transferred {got} bytes, expected {want}")]
    Short {
        /// What was being done.
        call: &'static str,
        /// Bytes transferred.
        got: u64,
        /// Bytes wanted.
        want: u64,
    },
}

impl WorkloadError {
    fn sys(call: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let call = call.into();
        move |error| WorkloadError::Sys { call, error }
    }

    fn last_os(call: impl Into<String>) -> Self {
        WorkloadError::Sys {
            call: call.into(),
            error: std::io::Error::last_os_error(),
        }
    }
}

/// Checks a syscall's byte count.
fn expect_len(call: &'static str, got: isize, want: usize) -> Result<(), WorkloadError> {
    if got < 0 {
        return Err(WorkloadError::last_os(call));
    }
    if got as usize != want {
        return Err(WorkloadError::Short {
            call,
            got: got as u64,
            want: want as u64,
        });
    }
    Ok(())
}

/// A prepared workload: `run_once` makes one system call.
trait Prepared {
    fn run_once(&mut self, opts: &WorkloadOptions) -> Result<(), WorkloadError>;
    /// Whether the pages GUP takes are the zero page.
    fn zero_page(&self, _opts: &WorkloadOptions) -> bool {
        false
    }
    /// Bytes each call covers (default: the whole buffer).
    fn bytes_per_call(&self, opts: &WorkloadOptions) -> u64 {
        opts.pages * PAGE_SIZE
    }
    /// The file used, for the report.
    fn file(&self) -> Option<String> {
        None
    }
    /// System calls each `run_once` makes (default: one).
    fn calls_per_round(&self) -> u64 {
        1
    }
    /// Runs after the calls (workloads that keep what they took).
    fn after_calls(&mut self) -> Result<(), WorkloadError> {
        Ok(())
    }
}

fn prepare(opts: &WorkloadOptions) -> Result<Box<dyn Prepared>, WorkloadError> {
    Ok(match opts.kind {
        WorkloadKind::ProcessVmReadv => Box::new(remote::ProcessVm::new(opts, false)?),
        WorkloadKind::ProcessVmWritev => Box::new(remote::ProcessVm::new(opts, true)?),
        WorkloadKind::ForkWritev => Box::new(fork::ForkWritev::new(opts)?),
        WorkloadKind::ProcMemRead => Box::new(remote::ProcMem::new(opts)?),
        WorkloadKind::OdirectRead => Box::new(odirect::Odirect::new(opts, false)?),
        WorkloadKind::OdirectWrite => Box::new(odirect::Odirect::new(opts, true)?),
        WorkloadKind::IoUringRegister => Box::new(uring::Register::new(opts)?),
        WorkloadKind::IoUringHold => Box::new(uring::Hold::new(opts)?),
        WorkloadKind::Vmsplice => Box::new(pipe::Vmsplice::new(opts)?),
        WorkloadKind::FutexWake => Box::new(futex::FutexWake::new(opts)?),
        WorkloadKind::Populate => Box::new(populate::Populate::new(opts, false)?),
        WorkloadKind::Mlock => Box::new(populate::Populate::new(opts, true)?),
        WorkloadKind::StalledReadv => Box::new(stalled::Stalled::new(opts)?),
        WorkloadKind::LeaderExitReadv => Box::new(remote::ProcessVm::new(opts, false)?),
        WorkloadKind::Udmabuf => Box::new(udmabuf::Udmabuf::new(opts)?),
    })
}

/// Prepares and runs a workload, returning what it did.
pub fn run(opts: &WorkloadOptions) -> Result<WorkloadReport, WorkloadError> {
    if opts.pages == 0 || opts.pages > 1 << 20 {
        return Err(WorkloadError::Usage(format!(
            "--pages must be between 1 and {}, got {}",
            1 << 20,
            opts.pages
        )));
    }
    if opts.threads != 1 && opts.kind != WorkloadKind::StalledReadv {
        return Err(WorkloadError::Usage(
            "--threads is for stalled-readv only".to_string(),
        ));
    }
    if opts.offset >= PAGE_SIZE {
        return Err(WorkloadError::Usage(format!(
            "--offset must be below the page size ({PAGE_SIZE}), got {}",
            opts.offset
        )));
    }
    let mut prepared = prepare(opts)?;
    let pid = std::process::id();
    if opts.wait_stdin {
        println!("{{\"ready\":{pid}}}");
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(WorkloadError::sys("reading stdin"))?;
    }
    let started = std::time::Instant::now();
    for _ in 0..opts.calls {
        prepared.run_once(opts)?;
    }
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    prepared.after_calls()?;
    if let Some(name) = &opts.rename_after {
        rename_from_a_thread(name)?;
    }
    let bytes_per_call = prepared.bytes_per_call(opts);
    Ok(WorkloadReport {
        workload: opts.kind,
        pid,
        calls: opts.calls * prepared.calls_per_round(),
        bytes_per_call,
        offset: opts.offset,
        pages_per_call: (opts.offset + bytes_per_call).div_ceil(PAGE_SIZE),
        cold: opts.cold,
        zero_page: prepared.zero_page(opts),
        elapsed_ns,
        file: prepared.file(),
    })
}

/// Renames the process (its leader) to `name` from another of its threads,
/// through /proc/self/comm (the kernel lets only a process's own threads
/// write it): a rename of a task other than the one renaming, after the
/// last call, which only a rename hook can show in the process's row.
fn rename_from_a_thread(name: &str) -> Result<(), WorkloadError> {
    let written = std::thread::scope(|scope| {
        scope
            .spawn(|| std::fs::write("/proc/self/comm", name))
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the renaming thread panicked")))
    });
    written.map_err(WorkloadError::sys("rename through /proc/self/comm"))
}
