//! What a failed test leaves behind: its agents and workloads, killed
//! before the next test runs beside them.

use std::sync::Mutex;

/// Kills and reaps what an earlier test left running: a test that fails
/// before stopping its agent or workload drops their `Child`, which
/// neither kills nor waits, and an agent left attached would run beside
/// every later test of the VM (its probes' cost, its samples, its port).
/// Done on a test's first call of [`crate::harness::harness`]: tests run
/// one at a time (`--test-threads=1`), each on a thread libtest names after
/// it; other threads (a test's own helpers) never reap, so that a test's
/// own children are safe.
pub fn reap_strays() {
    static LAST_TEST: Mutex<Option<String>> = Mutex::new(None);
    let Some(test) = std::thread::current().name().map(str::to_owned) else {
        return;
    };
    if !test.contains("::") {
        return;
    }
    let mut last = LAST_TEST.lock().unwrap_or_else(|e| e.into_inner());
    if last.as_deref() == Some(test.as_str()) {
        return;
    }
    let previous = last.replace(test);
    let me = std::process::id() as i32;
    let Ok(processes) = procfs::process::all_processes() else {
        return;
    };
    for process in processes.filter_map(Result::ok) {
        let Ok(stat) = process.stat() else { continue };
        if stat.ppid != me {
            continue;
        }
        if stat.state == 'Z' {
            // Exited, only never waited for: nothing left running.
            // SAFETY: reaping our own child, as below.
            unsafe { libc::waitpid(stat.pid, std::ptr::null_mut(), 0) };
            continue;
        }
        let cmdline = process.cmdline().unwrap_or_default().join(" ");
        eprintln!(
            "REAPED pid {} ({cmdline}), left running by {}",
            stat.pid,
            previous.as_deref().unwrap_or("the harness's start")
        );
        // SAFETY: signalling and reaping our own child, whose `Child`
        // handle (if any) was dropped without waiting.
        unsafe {
            libc::kill(stat.pid, libc::SIGKILL);
            libc::waitpid(stat.pid, std::ptr::null_mut(), 0);
        }
    }
}
