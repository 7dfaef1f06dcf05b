//! `pinwatch workload`: run a workload and print its report.

use std::process::ExitCode;

use crate::workload::{self, WorkloadKind, WorkloadOptions};

/// Runs the workload and prints what it did.
pub fn run(opts: WorkloadOptions, json: bool) -> anyhow::Result<ExitCode> {
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
