//! Running processes from a test: pinwatch started up to its start line,
//! other output read line by line, waits with a deadline, and signal
//! dispositions.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use crate::harness::pinwatch_bin;

/// Reads `reader`'s lines up to the first that contains `text` and returns
/// it, passing the lines before it on: a start right after a stop says
/// first that it waits for the kernel (`probes::earlier_run`). Panics when
/// the stream ends first.
pub fn read_until(reader: &mut impl std::io::BufRead, text: &str, what: &str) -> String {
    let mut before = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(n > 0, "{what}: no line with {text:?}, only {before:?}");
        if line.contains(text) {
            return line;
        }
        eprintln!("  | {}", line.trim_end());
        before.push(line);
    }
}

/// Starts `pinwatch ARGS` (stdout and stderr piped) and waits for its
/// stderr line that contains `started`: from then on it counts.
pub fn start_pinwatch(args: &[&str], started: &str) -> std::process::Child {
    let mut child = Command::new(pinwatch_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn pinwatch {args:?}: {e}"));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    read_until(
        &mut stderr,
        started,
        &format!("pinwatch {args:?}'s start line"),
    );
    // Keep reading, passing it on: a closed pipe would fail pinwatch's
    // later messages.
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("  | {line}");
        }
    });
    child
}

/// Reads `stream` line by line on a thread of its own, passing each line
/// on as it comes.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to `within` for a line containing `text`; all lines read so
/// far are in the panic message if none comes.
pub fn wait_for_line(rx: &Receiver<String>, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(text) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with {text:?} within {within:?} ({e}); got {seen:?}"),
        }
    }
}

/// Waits up to `within` for `child` to exit; kills it and fails the test
/// if it is still running then.
pub fn wait_within(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {within:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub use crate::signals::holds_signal;

/// Makes `cmd` start with `sig` ignored, as a non-interactive shell starts
/// a background job with SIGINT.
pub fn ignoring(cmd: &mut Command, sig: i32) -> &mut Command {
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(sig, libc::SIG_IGN);
            Ok(())
        })
    }
}
