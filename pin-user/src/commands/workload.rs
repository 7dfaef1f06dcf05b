//! `pinwatch workload`: run a workload and print its report.

use std::{path::PathBuf, process::ExitCode};

use crate::workload::{self, WorkloadKind, WorkloadOptions};

/// Options of `pinwatch workload`.
#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// Which path.
    #[arg(value_enum)]
    pub name: WorkloadKind,
    /// Number of system calls.
    #[arg(long, default_value_t = 100)]
    pub calls: u64,
    /// Buffer size in pages.
    #[arg(long, default_value_t = 16)]
    pub pages: u64,
    /// Byte offset of the buffer from a page boundary.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Drop the buffer's pages before every call (forces fast-path fallback).
    #[arg(long)]
    pub cold: bool,
    /// File or block device for odirect-read/odirect-write.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// After setup print {"ready":PID} and wait for a line on stdin (for test harnesses).
    #[arg(long)]
    pub wait_stdin: bool,
    /// Threads calling at once (stalled-readv only).
    #[arg(long, default_value_t = 1)]
    pub threads: u64,
    /// After the calls, rename the process to NAME from a thread of its
    /// own, through /proc/self/comm (for tests of process names).
    #[arg(long, value_name = "NAME")]
    pub rename_after: Option<String>,
}

impl WorkloadArgs {
    /// What the workload is asked to do (all but the output format).
    pub fn options(self) -> WorkloadOptions {
        WorkloadOptions {
            kind: self.name,
            calls: self.calls,
            pages: self.pages,
            offset: self.offset,
            cold: self.cold,
            file: self.file,
            wait_stdin: self.wait_stdin,
            threads: self.threads,
            rename_after: self.rename_after,
        }
    }
}

/// Runs the workload and prints what it did.
pub fn run(args: WorkloadArgs) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let opts = args.options();
    if opts.kind == WorkloadKind::LeaderExitReadv {
        leave_it_to_a_thread(opts, json)
    }
    report(&opts, json)?;
    Ok(ExitCode::SUCCESS)
}

/// The main (leader) thread exits first; a second thread runs the
/// workload, reports, and ends the process with the outcome. The process
/// lives on without its leader, as one whose main thread called
/// `pthread_exit` does.
fn leave_it_to_a_thread(opts: WorkloadOptions, json: bool) -> ! {
    std::thread::spawn(move || {
        let code = match leader_gone().and_then(|()| report(&opts, json)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pinwatch: error: {e:#}");
                1
            }
        };
        std::process::exit(code)
    });
    // The exit system call (not exit_group) ends only the calling thread,
    // as pthread_exit would; pthread_exit itself unwinds, and Rust's main
    // aborts on that foreign unwind.
    // SAFETY: ends this thread at once, running nothing of it again; the
    // spawned thread owns everything it uses and ends the process.
    unsafe {
        libc::syscall(libc::SYS_exit, 0);
    }
    unreachable!("exit(2) returned")
}

/// Waits until the leader thread has exited (a zombie until the process
/// ends), so every call of the workload comes after it.
fn leader_gone() -> anyhow::Result<()> {
    let leader = procfs::process::Process::myself()?.task_main_thread()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while leader
        .stat()
        .is_ok_and(|s| s.state != 'Z' && s.state != 'X')
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the main thread did not exit within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

fn report(opts: &WorkloadOptions, json: bool) -> anyhow::Result<()> {
    let report = workload::run(opts)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} calls of {} bytes, buffer offset {} (spans {} pages per call){}{}, {:.3} ms",
            clap::ValueEnum::to_possible_value(&report.workload)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
            report.calls,
            report.bytes_per_call,
            report.offset,
            report.pages_per_call,
            if report.cold { ", cold" } else { ", warm" },
            if report.zero_page {
                ", zero-page backed"
            } else {
                ""
            },
            report.elapsed_ns as f64 / 1e6,
        );
    }
    Ok(())
}
